//! Write: the run's results in, one output folder on disk out, all or nothing.
//!
//! Every file is written into a staging folder beside the output folder, flushed to disk,
//! and only then swapped into place by renames. A run that fails or is killed part way leaves
//! the previous outputs as they were, and at most a hidden staging folder that the next run
//! removes. Outputs hold no wall-clock times, so a rerun on the same input gives the same bytes.

use std::fs::{self, File};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use polars::prelude::*;
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};
use crate::load::{InputFile, InputStats};
use crate::rating::{Invoice, Invoices, RateCard};
use crate::sessions::SessionStats;

pub const SESSIONS_FILE: &str = "sessions.parquet";
pub const VIOLATIONS_FILE: &str = "violations.parquet";
pub const LINES_PARQUET_FILE: &str = "invoice_lines.parquet";
pub const LINES_CSV_FILE: &str = "invoice_lines.csv";
pub const INVOICES_DIR: &str = "invoices";
pub const MANIFEST_FILE: &str = "manifest.json";

/// Everything one run writes.
pub struct Outputs<'a> {
    pub sessions: &'a mut DataFrame,
    pub violations: &'a mut DataFrame,
    pub invoices: &'a mut Invoices,
    pub manifest: Manifest,
}

/// `manifest.json`: what was read, how it was rated, what was written.
#[derive(Debug, Serialize)]
pub struct Manifest {
    pub program: Program,
    pub rule_set: &'static str,
    pub rate_card: RateCard,
    pub input: InputSection,
    pub sessions: SessionStats,
    pub invoices: InvoiceSummary,
    /// Filled in by [`write`]: every other file of the output folder.
    pub outputs: Vec<WrittenFile>,
}

#[derive(Debug, Serialize)]
pub struct Program {
    pub name: &'static str,
    pub version: &'static str,
}

impl Program {
    pub fn current() -> Self {
        Program {
            name: env!("CARGO_PKG_NAME"),
            version: env!("CARGO_PKG_VERSION"),
        }
    }
}

#[derive(Debug, Serialize)]
pub struct InputSection {
    /// The input path as given on the command line.
    pub path: String,
    pub files: Vec<InputFile>,
    #[serde(flatten)]
    pub stats: InputStats,
}

#[derive(Debug, Serialize)]
pub struct InvoiceSummary {
    pub invoices: u64,
    pub lines: u64,
    pub quota: i64,
}

#[derive(Debug, Clone, Serialize)]
pub struct WrittenFile {
    /// Path relative to the output folder, `/`-separated.
    pub path: String,
    pub bytes: u64,
    pub sha256: String,
    pub rows: u64,
}

/// Fails early when `out` exists and is neither empty nor an earlier convbill output.
pub fn check_output_folder(out: &Path) -> Result<()> {
    if !out.exists() {
        return Ok(());
    }
    if out.join(crate::nightly::STATE_DIR).is_dir() {
        return Err(Error::NightlyHistory {
            path: out.to_path_buf(),
        });
    }
    let ours = out.join(MANIFEST_FILE).is_file();
    let empty = out.is_dir()
        && fs::read_dir(out)
            .map_err(|source| Error::Output {
                path: out.to_path_buf(),
                source,
            })?
            .next()
            .is_none();
    if ours || empty {
        Ok(())
    } else {
        Err(Error::OutputNotOurs {
            path: out.to_path_buf(),
        })
    }
}

/// Writes all outputs into `out`, replacing an earlier run's outputs only once all are written.
pub fn write(out: &Path, outputs: Outputs<'_>) -> Result<Vec<WrittenFile>> {
    check_output_folder(out)?;
    let name = out
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "out".into());
    let parent = match out.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    fs::create_dir_all(&parent).map_err(io_error(&parent))?;
    let staging = parent.join(format!(".{name}.convbill-staging"));
    if staging.exists() {
        fs::remove_dir_all(&staging).map_err(io_error(&staging))?;
    }
    fs::create_dir(&staging).map_err(io_error(&staging))?;

    let written = match write_all(&staging, outputs) {
        Ok(written) => written,
        Err(e) => {
            let _ = fs::remove_dir_all(&staging);
            return Err(e);
        }
    };
    swap_into_place(&staging, out, &parent, &name)?;
    Ok(written)
}

pub(crate) fn io_error(path: &Path) -> impl Fn(std::io::Error) -> Error + '_ {
    move |source| Error::Output {
        path: path.to_path_buf(),
        source,
    }
}

/// Replaces `out` by `staging`: two renames, with the old folder removed last.
pub(crate) fn swap_into_place(staging: &Path, out: &Path, parent: &Path, name: &str) -> Result<()> {
    if out.exists() {
        let old = parent.join(format!(".{name}.convbill-previous"));
        if old.exists() {
            fs::remove_dir_all(&old).map_err(io_error(&old))?;
        }
        fs::rename(out, &old).map_err(io_error(out))?;
        fs::rename(staging, out).map_err(io_error(out))?;
        fs::remove_dir_all(&old).map_err(io_error(&old))?;
    } else {
        fs::rename(staging, out).map_err(io_error(out))?;
    }
    Ok(())
}

fn write_all(dir: &Path, outputs: Outputs<'_>) -> Result<Vec<WrittenFile>> {
    let mut written = vec![
        write_parquet(dir, SESSIONS_FILE, outputs.sessions)?,
        write_parquet(dir, VIOLATIONS_FILE, outputs.violations)?,
        write_parquet(dir, LINES_PARQUET_FILE, &mut outputs.invoices.lines)?,
        write_lines_csv(dir, &outputs.invoices.invoices)?,
    ];
    for invoice in &outputs.invoices.invoices {
        written.push(write_invoice(dir, invoice)?);
    }
    let mut manifest = outputs.manifest;
    manifest.outputs = written.clone();
    let json = serde_json::to_vec_pretty(&manifest).expect("the manifest serializes");
    write_bytes(dir, MANIFEST_FILE, &[json.as_slice(), b"\n"].concat(), 0)?;
    Ok(written)
}

/// A writer that hashes and counts what passes through it, so no output is read back.
struct Hashing<W> {
    inner: W,
    hasher: Sha256,
    bytes: u64,
}

impl<W: Write> Write for Hashing<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// Testing hook: with `CONVBILL_FAIL_AFTER_FILES=N`, writing fails after N files, as a full
/// disk or a kill would, so tests can check that nothing half-written is left behind.
fn injected_failure(path: &Path) -> Result<()> {
    use std::sync::atomic::{AtomicU64, Ordering};
    static WRITTEN: AtomicU64 = AtomicU64::new(0);
    let limit = std::env::var("CONVBILL_FAIL_AFTER_FILES")
        .ok()
        .and_then(|v| v.parse::<u64>().ok());
    match limit {
        Some(limit) if WRITTEN.fetch_add(1, Ordering::SeqCst) >= limit => Err(Error::Output {
            path: path.to_path_buf(),
            source: std::io::Error::other("injected failure (CONVBILL_FAIL_AFTER_FILES)"),
        }),
        _ => Ok(()),
    }
}

/// Creates `relative` under `dir`, lets `fill` write it, and flushes it to disk.
fn write_file(
    dir: &Path,
    relative: &str,
    rows: u64,
    fill: impl FnOnce(&mut Hashing<BufWriter<File>>) -> Result<()>,
) -> Result<WrittenFile> {
    let path = dir.join(relative);
    injected_failure(&path)?;
    if let Some(folder) = path.parent() {
        fs::create_dir_all(folder).map_err(io_error(folder))?;
    }
    let file = File::create(&path).map_err(io_error(&path))?;
    let mut writer = Hashing {
        inner: BufWriter::new(file),
        hasher: Sha256::new(),
        bytes: 0,
    };
    fill(&mut writer)?;
    let file = writer
        .inner
        .into_inner()
        .map_err(|e| io_error(&path)(e.into_error()))?;
    file.sync_all().map_err(io_error(&path))?;
    Ok(WrittenFile {
        path: relative.to_string(),
        bytes: writer.bytes,
        sha256: hex::encode(writer.hasher.finalize()),
        rows,
    })
}

pub(crate) fn write_bytes(
    dir: &Path,
    relative: &str,
    bytes: &[u8],
    rows: u64,
) -> Result<WrittenFile> {
    write_file(dir, relative, rows, |w| {
        w.write_all(bytes).map_err(io_error(&dir.join(relative)))
    })
}

pub(crate) fn write_parquet(
    dir: &Path,
    relative: &str,
    frame: &mut DataFrame,
) -> Result<WrittenFile> {
    let rows = frame.height() as u64;
    write_file(dir, relative, rows, |w| {
        ParquetWriter::new(w).finish(frame)?;
        Ok(())
    })
}

pub(crate) fn write_lines_csv(dir: &Path, invoices: &[Invoice]) -> Result<WrittenFile> {
    let mut writer = csv::Writer::from_writer(Vec::new());
    let mut rows = 0;
    for line in invoices.iter().flat_map(|i| &i.lines) {
        writer.serialize(line).map_err(|e| Error::Output {
            path: dir.join(LINES_CSV_FILE),
            source: e.into(),
        })?;
        rows += 1;
    }
    if rows == 0 {
        writer
            .write_record(crate::rating::LINE_COLUMNS)
            .map_err(|e| Error::Output {
                path: dir.join(LINES_CSV_FILE),
                source: e.into(),
            })?;
    }
    let bytes = writer.into_inner().expect("writing to memory cannot fail");
    write_bytes(dir, LINES_CSV_FILE, &bytes, rows)
}

pub(crate) fn write_invoice(dir: &Path, invoice: &Invoice) -> Result<WrittenFile> {
    let relative = format!(
        "{INVOICES_DIR}/{}/{}.json",
        invoice.period,
        file_name_for(&invoice.account_id)
    );
    let json = serde_json::to_vec_pretty(invoice).expect("invoices serialize");
    write_bytes(
        dir,
        &relative,
        &[json.as_slice(), b"\n"].concat(),
        invoice.lines.len() as u64,
    )
}

/// An account id as a safe file name: ASCII letters, digits, `-` and `_` stay, every other
/// byte becomes `%XX` (so `.`, `/` and `%` cannot escape the folder or collide).
pub fn file_name_for(account_id: &str) -> String {
    let mut name = String::with_capacity(account_id.len());
    for byte in account_id.bytes() {
        if byte.is_ascii_alphanumeric() || byte == b'-' || byte == b'_' {
            name.push(byte as char);
        } else {
            name.push_str(&format!("%{byte:02X}"));
        }
    }
    if name.is_empty() {
        name.push_str("%00");
    }
    name
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn account_ids_become_safe_file_names() {
        assert_eq!(file_name_for("acme-01_x"), "acme-01_x");
        assert_eq!(file_name_for("../etc"), "%2E%2E%2Fetc");
        assert_eq!(file_name_for("a b%"), "a%20b%25");
        assert_eq!(file_name_for(""), "%00");
    }

    #[test]
    fn an_unrelated_folder_is_not_replaced() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("notes.txt"), "keep me").unwrap();
        assert!(matches!(
            check_output_folder(dir.path()),
            Err(Error::OutputNotOurs { .. })
        ));
        fs::remove_file(dir.path().join("notes.txt")).unwrap();
        assert!(check_output_folder(dir.path()).is_ok());
    }
}
