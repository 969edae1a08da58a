//! Write: the run's results in, one output folder on disk out, all or nothing.
//!
//! Every file is written into a staging folder beside the output folder, flushed to disk,
//! and only then put in place of the old folder in one atomic step ([`crate::folder`]). A run
//! that fails or is killed part way leaves the previous outputs as they were, and at most a
//! hidden staging folder that the next run removes. Outputs hold no wall-clock times, so a
//! rerun on the same input gives the same bytes.

use std::fs::{self, File};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use polars::prelude::*;
use polars_arrow::array::Utf8ViewArray;
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};
use crate::folder::OutFolder;
pub(crate) use crate::folder::{io_error, write_error};
use crate::load::{InputFile, InputStats};
use crate::rating::{Invoice, Invoices, RateCardInfo};
use crate::sessions::SessionStats;

pub const SESSIONS_FILE: &str = "sessions.parquet";
pub const VIOLATIONS_FILE: &str = "violations.parquet";
pub const LINES_PARQUET_FILE: &str = "invoice_lines.parquet";
pub const LINES_CSV_FILE: &str = "invoice_lines.csv";
pub const INVOICES_DIR: &str = "invoices";
/// One row per invoice, with its totals.
pub const INVOICES_PARQUET_FILE: &str = "invoices.parquet";
/// The folder of a nightly history that holds what each night carried forward; a whole run
/// never replaces a folder that has one.
pub const STATE_DIR: &str = "state";
pub const MANIFEST_FILE: &str = "manifest.json";
/// `--rejects` only: the rows set aside, with their reasons.
pub const REJECTS_FILE: &str = "rejects.parquet";
/// Meta's pricing units, one row each (with `[meta]`).
pub const META_UNITS_FILE: &str = "meta_units.parquet";
/// Meta's cost summed per account, period, model, market, category, pricing type and tier.
pub const META_LINES_FILE: &str = "meta_cost_lines.parquet";
pub const META_LINES_CSV_FILE: &str = "meta_cost_lines.csv";

/// `manifest.json`: what was read, how it was rated, what was written.
#[derive(Debug, Serialize)]
pub struct Manifest {
    pub program: Program,
    pub rule_set: &'static str,
    pub rate_card: RateCardInfo,
    pub input: InputSection,
    pub sessions: SessionStats,
    pub invoices: InvoiceSummary,
    /// What Meta charges, when the rate card has `[meta]`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub meta: Option<crate::meta::cost::MetaSummary>,
    /// A shard's run (`--shard I/N`): which shard, and what its input covers.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shard: Option<ShardSection>,
    /// `convbill merge`: the shards put together.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub shards: Vec<MergedShard>,
    /// Filled in by [`write`]: every other file of the output folder.
    pub outputs: Vec<WrittenFile>,
}

/// The manifest's `shard` section: a shard's run.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct ShardSection {
    /// `I/N`.
    pub shard: String,
    pub index: u32,
    pub count: u32,
    /// The UTC days its rows fall on, as `[first, last]` stretches of consecutive days: a
    /// merge judges the invoices by the days of all shards' rows together.
    pub days: Vec<[chrono::NaiveDate; 2]>,
    /// Every input file the shard found, read or not (another bucket's folder), with its
    /// size: the shards of one run must have found the same.
    #[serde(default)]
    pub found: Vec<FoundFile>,
}

/// An input file a shard found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct FoundFile {
    pub path: String,
    pub bytes: u64,
}

impl ShardSection {
    pub fn new(
        shard: crate::shard::Shard,
        coverage: &crate::rating::Coverage,
        found: &[(String, u64)],
    ) -> Self {
        let day = |ns: i64| chrono::DateTime::from_timestamp_nanos(ns).date_naive();
        ShardSection {
            shard: shard.to_string(),
            index: shard.index,
            count: shard.count,
            days: coverage
                .stretches
                .iter()
                .map(|(start, end)| [day(*start), day(end - 1)])
                .collect(),
            found: found
                .iter()
                .map(|(path, bytes)| FoundFile {
                    path: path.clone(),
                    bytes: *bytes,
                })
                .collect(),
        }
    }
}

/// One shard of a merge, as the merged manifest lists it.
#[derive(Debug, Clone, Serialize)]
pub struct MergedShard {
    /// `I/N`.
    pub shard: String,
    /// Its output folder, as given to `convbill merge`.
    pub path: String,
    /// The SHA-256 of its `manifest.json` (which holds every file's).
    pub manifest_sha256: String,
    /// A merge of nightly histories: each night's files in the shard, as a digest of their
    /// sizes, modification times and file ids (a later merge keeps the nights whose files are
    /// the same).
    #[serde(skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub nights: std::collections::BTreeMap<chrono::NaiveDate, String>,
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
    /// Invoices by status (`final`, `draft`, `partial`).
    pub by_status: std::collections::BTreeMap<&'static str, u64>,
    pub lines: u64,
    pub quota: i64,
    /// The invoices' amounts summed per currency (decimal text).
    pub amounts: std::collections::BTreeMap<String, rust_decimal::Decimal>,
}

impl InvoiceSummary {
    pub fn of(invoices: &Invoices) -> Self {
        let mut by_status = std::collections::BTreeMap::new();
        for invoice in &invoices.invoices {
            *by_status.entry(invoice.status).or_default() += 1;
        }
        InvoiceSummary {
            invoices: invoices.invoices.len() as u64,
            by_status,
            lines: invoices.lines.height() as u64,
            quota: invoices.invoices.iter().map(|i| i.totals.quota).sum(),
            amounts: amounts_by_currency(&invoices.invoices),
        }
    }
}

/// The invoices' total amounts, per currency.
pub fn amounts_by_currency(
    invoices: &[Invoice],
) -> std::collections::BTreeMap<String, rust_decimal::Decimal> {
    let mut amounts = std::collections::BTreeMap::new();
    for invoice in invoices {
        *amounts
            .entry(invoice.currency.clone())
            .or_insert(rust_decimal::Decimal::ZERO) += invoice.totals.amount;
    }
    amounts
}

#[derive(Debug, Clone, Serialize)]
pub struct WrittenFile {
    /// Path relative to the output folder, `/`-separated.
    pub path: String,
    pub bytes: u64,
    /// Empty for a file written without one ([`TableWriter::without_checksum`]).
    pub sha256: String,
    pub rows: u64,
}

/// Fails early when `out` exists and is neither empty nor an earlier convbill output.
pub fn check_output_folder(out: &Path) -> Result<()> {
    if !out.exists() {
        return Ok(());
    }
    if out.join(STATE_DIR).is_dir() {
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

/// Rows per row group of `sessions.parquet` and `violations.parquet`. Row groups are cut at
/// fixed row counts, so the files' bytes do not depend on how the run was partitioned.
pub const ROW_GROUP_ROWS: usize = 512 * 512;

/// An output folder being written: a hidden staging folder beside `out` until
/// [`Staging::finish`] puts it in place. Dropped unfinished (an error, a panic), it removes
/// the staging folder and leaves `out` as it was.
pub struct Staging {
    folder: OutFolder,
    dir: PathBuf,
    sessions: TableWriter,
    violations: TableWriter,
    /// `meta_units.parquet`, when the rate card has `[meta]`.
    meta_units: Option<TableWriter>,
    /// What `report.html` charts of the sessions and violations.
    tally: crate::report::Tally,
    /// Files written besides the outputs every run writes ([`Staging::add_parquet`]).
    extra: Vec<WrittenFile>,
    finished: bool,
}

impl Staging {
    /// Checks `out` and creates the staging folder beside it. Call with the folder's lock
    /// held. The report counts each account's sessions on the days of its zone in `card`.
    pub fn create(folder: &OutFolder, card: &crate::rates::RateCard) -> Result<Self> {
        check_output_folder(&folder.out)?;
        let dir = folder.create_staging()?;
        let mut staging = Staging {
            folder: folder.clone(),
            sessions: TableWriter::new(&dir, SESSIONS_FILE),
            violations: TableWriter::new(&dir, VIOLATIONS_FILE),
            meta_units: card
                .meta
                .is_some()
                // Without column statistics: computing them for 20 columns of a row per unit
                // costs a quarter of the file's writing (1 s of a 10M-message month's 4.4 s).
                .then(|| TableWriter::new(&dir, META_UNITS_FILE).without_statistics()),
            dir,
            tally: crate::report::Tally::in_zones_of(card),
            extra: Vec::new(),
            finished: false,
        };
        staging.sessions.open()?;
        staging.violations.open()?;
        if let Some(units) = &mut staging.meta_units {
            units.open()?;
        }
        Ok(staging)
    }

    /// A hidden folder beside the output for the run's spill files: `.NAME.convbill-spill`.
    pub fn spill_dir(&self) -> PathBuf {
        self.folder.spill_path()
    }

    /// Appends sessions and violations, in output order.
    pub fn append(&mut self, sessions: &DataFrame, violations: &DataFrame) -> Result<()> {
        self.append_sessions(sessions)?;
        self.append_violations(violations)
    }

    /// Appends sessions, in output order.
    pub fn append_sessions(&mut self, sessions: &DataFrame) -> Result<()> {
        self.tally.add_sessions(sessions)?;
        self.sessions.append(sessions)
    }

    /// Appends violations, in output order.
    pub fn append_violations(&mut self, violations: &DataFrame) -> Result<()> {
        self.tally.add_violations(violations)?;
        self.violations.append(violations)
    }

    /// Writes `frame` to `relative` in the folder, listed in the manifest with the others.
    pub fn add_parquet(&mut self, relative: &str, frame: &mut DataFrame) -> Result<()> {
        self.extra.push(write_parquet(&self.dir, relative, frame)?);
        Ok(())
    }

    /// Writes `bytes` (`rows` rows) to `relative`, listed in the manifest with the others.
    pub fn add_bytes(&mut self, relative: &str, bytes: &[u8], rows: u64) -> Result<()> {
        self.extra
            .push(write_bytes(&self.dir, relative, bytes, rows)?);
        Ok(())
    }

    /// Appends Meta's pricing units, in output order.
    pub fn append_meta(&mut self, units: &DataFrame) -> Result<()> {
        match &mut self.meta_units {
            Some(writer) => writer.append(units),
            None => Ok(()),
        }
    }

    /// Writes the invoices, the register of issued invoices
    /// ([`crate::rating::revision::Register`]) and the manifest, then puts the folder in place.
    pub fn finish(
        mut self,
        invoices: &mut Invoices,
        card: &crate::rates::RateCard,
        register: &mut DataFrame,
        rejects: Option<&mut DataFrame>,
        meta_lines: &crate::meta::cost::Lines,
        manifest: Manifest,
    ) -> Result<Vec<WrittenFile>> {
        let dir = self.dir.clone();
        let mut written = vec![self.sessions.finish()?, self.violations.finish()?];
        if let Some(units) = &mut self.meta_units {
            written.push(units.finish()?);
            written.extend(write_meta_lines(&dir, meta_lines, card)?);
        }
        written.extend(write_invoices(&dir, invoices, card)?);
        written.push(write_parquet(
            &dir,
            crate::rating::revision::REGISTER_FILE,
            register,
        )?);
        if let Some(rejects) = rejects {
            written.push(write_parquet(&dir, REJECTS_FILE, rejects)?);
        }
        written.append(&mut self.extra);
        let report = crate::report::render(&manifest, &invoices.invoices, &self.tally);
        written.push(write_bytes(
            &dir,
            crate::report::REPORT_FILE,
            report.as_bytes(),
            0,
        )?);
        let mut manifest = manifest;
        manifest.outputs = written.clone();
        write_json(&dir, MANIFEST_FILE, &manifest)?;
        crate::error::check_interrupt()?;
        self.folder.switch(&dir)?;
        self.finished = true;
        Ok(written)
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        if !self.finished {
            let _ = fs::remove_dir_all(&self.dir);
        }
    }
}

/// The compression of the outputs: zstd at level 1, which compresses them about as well as
/// polars' default level at a fraction of its time.
pub(crate) fn output_compression() -> ParquetCompression {
    ParquetCompression::Zstd(Some(
        polars_utils::compression::ZstdLevel::try_new(1).expect("1 is a zstd level"),
    ))
}

/// One Parquet output written in pieces, cut into row groups of [`ROW_GROUP_ROWS`] rows: the
/// same rows give the same bytes however they arrive.
pub(crate) struct TableWriter {
    relative: String,
    path: PathBuf,
    file: Option<SharedFile>,
    writer: Option<Encoder<SharedFile>>,
    pending: Vec<DataFrame>,
    pending_rows: usize,
    rows: u64,
    row_group_rows: usize,
    statistics: StatisticsOptions,
    compression: ParquetCompression,
}

impl TableWriter {
    fn new(dir: &Path, relative: impl Into<String>) -> Self {
        let relative = relative.into();
        TableWriter {
            path: dir.join(&relative),
            relative,
            file: None,
            writer: None,
            pending: Vec::new(),
            pending_rows: 0,
            rows: 0,
            row_group_rows: ROW_GROUP_ROWS,
            compression: output_compression(),
            statistics: StatisticsOptions::default(),
        }
    }

    /// Creates `relative` under `dir` (and its folders), to be written by
    /// [`TableWriter::append`] and completed by [`TableWriter::finish`].
    pub(crate) fn create(dir: &Path, relative: impl Into<String>) -> Result<Self> {
        let mut table = TableWriter::new(dir, relative);
        table.open()?;
        Ok(table)
    }

    /// Compresses with `compression` instead of [`output_compression`]: LZ4 for files only
    /// convbill reads again, where speed matters more than size.
    pub(crate) fn with_compression(mut self, compression: ParquetCompression) -> Self {
        self.compression = compression;
        self
    }

    /// Writes no column statistics (min, max, nulls): for files convbill reads again whole or
    /// by row ranges, where computing the statistics of long strings costs more than they give.
    pub(crate) fn without_statistics(mut self) -> Self {
        self.statistics = StatisticsOptions::empty();
        self
    }

    /// Computes no SHA-256 of the file (its [`WrittenFile::sha256`] is empty): for state files
    /// no manifest lists, hundreds of megabytes a night. Before the first append.
    pub(crate) fn without_checksum(self) -> Self {
        let file = self.file.as_ref().expect("opened by TableWriter::create");
        let mut file = file.0.lock().expect("no writer panicked holding the file");
        assert_eq!(file.bytes, 0, "without_checksum before the first append");
        file.hasher = None;
        drop(file);
        self
    }

    fn open(&mut self) -> Result<()> {
        let file = create_file(&self.path)?;
        self.file = Some(SharedFile(std::sync::Arc::new(std::sync::Mutex::new(file))));
        Ok(())
    }

    /// Appends rows, in output order.
    pub(crate) fn append(&mut self, frame: &DataFrame) -> Result<()> {
        if self.writer.is_none() {
            let file = self.file.clone().expect("opened by Staging::create");
            self.writer = Some(
                Encoder::new(
                    file,
                    frame.schema(),
                    self.compression,
                    self.statistics,
                    |_, dtype| match dtype {
                        ArrowDataType::Utf8View => Layout::Runs,
                        ArrowDataType::BinaryView => Layout::Plain,
                        _ => Layout::Polars,
                    },
                )
                .map_err(write_error(&self.path))?,
            );
        }
        self.rows += frame.height() as u64;
        self.pending_rows += frame.height();
        self.pending.push(frame.clone());
        let size = self.row_group_rows;
        while self.pending_rows >= size {
            let all = crate::load::concat_frames(std::mem::take(&mut self.pending))?;
            let mut group = all.slice(0, size);
            group.rechunk_mut();
            self.write_group(&group)?;
            let rest = all.slice(size as i64, all.height() - size);
            self.pending_rows = rest.height();
            self.pending.push(rest);
        }
        Ok(())
    }

    fn write_group(&mut self, group: &DataFrame) -> Result<()> {
        let writer = self.writer.as_mut().expect("created by append");
        writer.write(group).map_err(write_error(&self.path))?;
        let file = self.file.as_ref().expect("opened by TableWriter::create");
        let mut file = file.0.lock().expect("no writer panicked holding the file");
        file.inner.flush().map_err(io_error(&self.path))?;
        start_writeback(file.inner.get_ref());
        Ok(())
    }

    /// Writes what is pending and flushes the file to disk. At least one append (of any
    /// number of rows) must have come before.
    pub(crate) fn finish(&mut self) -> Result<WrittenFile> {
        let pending = std::mem::take(&mut self.pending);
        if !pending.is_empty() {
            let mut rest = crate::load::concat_frames(pending)?;
            if rest.height() > 0 {
                rest.rechunk_mut();
                self.write_group(&rest)?;
            }
        }
        let writer = self
            .writer
            .take()
            .expect("at least one append before finish");
        // The writer's copy of the shared file is dropped here.
        writer.finish().map_err(write_error(&self.path))?;
        let shared = self.file.take().expect("opened by Staging::create");
        let file = std::sync::Arc::try_unwrap(shared.0)
            .ok()
            .expect("the Parquet writer is gone")
            .into_inner()
            .expect("no writer panicked holding the file");
        complete_file(&self.path, &self.relative, self.rows, file)
    }
}

/// How [`Encoder`] writes a column.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Layout {
    /// As polars chooses: for strings, a dictionary if hashing every value finds few; for
    /// integers, a dictionary if they span at most [`DICTIONARY_SPAN`] (plain otherwise,
    /// where polars would hash every value to count how many differ).
    Polars,
    /// Plain values, left to the page compression.
    Plain,
    /// Strings: a dictionary built from runs of equal values (each run costs one comparison
    /// per row and one lookup), if a row group holds at most [`RUN_DICTIONARY_VALUES`]
    /// different ones; plain otherwise.
    Runs,
}

/// The span of integers (largest minus smallest) that polars' writer turns into a dictionary
/// without hashing each value.
pub(crate) const DICTIONARY_SPAN: u64 = u16::MAX as u64;

/// Whether `array` holds integers spanning more than [`DICTIONARY_SPAN`].
fn wide_integers(array: &dyn polars_arrow::array::Array) -> bool {
    use polars_arrow::array::PrimitiveArray;
    use polars_arrow::types::{NativeType, PrimitiveType};
    fn span<T: NativeType + Into<i128>>(array: &dyn polars_arrow::array::Array) -> u64 {
        let array = array
            .as_any()
            .downcast_ref::<PrimitiveArray<T>>()
            .expect("the array's physical type");
        let mut values = array.non_null_values_iter().map(Into::into);
        let Some(first) = values.next() else {
            return 0;
        };
        let (low, high) = values.fold((first, first), |(l, h), v| (l.min(v), h.max(v)));
        u64::try_from(high - low).unwrap_or(u64::MAX)
    }
    let span = match array.dtype().to_physical_type() {
        polars_arrow::datatypes::PhysicalType::Primitive(primitive) => match primitive {
            PrimitiveType::Int32 => span::<i32>(array),
            PrimitiveType::Int64 => span::<i64>(array),
            PrimitiveType::UInt32 => span::<u32>(array),
            PrimitiveType::UInt64 => span::<u64>(array),
            _ => 0,
        },
        _ => 0,
    };
    span > DICTIONARY_SPAN
}

/// Different values a [`Layout::Runs`] column may hold in one row group and still be written
/// as a dictionary.
pub(crate) const RUN_DICTIONARY_VALUES: usize = 4096;

/// Parquet's own writer, with each column's encoding chosen here. polars' writer tries a
/// dictionary for every string column: it hashes each value to estimate how many differ, then
/// again to build the dictionary. Outputs instead build a dictionary from runs of equal values
/// ([`Layout::Runs`]): the names that repeat on every row of an account (accounts, channels,
/// periods, invoice ids) are written once per row group, and ids that rarely repeat are
/// written plain after a few thousand rows' look, for the page compression to find repeats.
pub(crate) struct Encoder<W: Write> {
    file: polars_parquet::write::FileWriter<W>,
    encodings: Vec<Vec<polars_parquet::write::Encoding>>,
    /// Columns written as [`Layout::Runs`].
    runs: Vec<bool>,
    options: polars_parquet::write::WriteOptions,
}

impl<W: Write> Encoder<W> {
    /// A writer of frames of `schema` into `file`, each column in the layout `layout` (given
    /// its name and type) chooses for it.
    pub(crate) fn new(
        file: W,
        schema: &Schema,
        compression: ParquetCompression,
        statistics: StatisticsOptions,
        layout: impl Fn(&str, &ArrowDataType) -> Layout,
    ) -> PolarsResult<Encoder<W>> {
        use polars_parquet::write::{get_dtype_encoding, Encoding, Version, WriteOptions};
        let schema = schema.to_arrow(CompatLevel::newest());
        let layouts: Vec<Layout> = schema
            .iter_values()
            .map(|field| match layout(field.name.as_str(), field.dtype()) {
                Layout::Runs if field.dtype() != &ArrowDataType::Utf8View => Layout::Plain,
                chosen => chosen,
            })
            .collect();
        let encodings = schema
            .iter_values()
            .zip(&layouts)
            .map(|(field, layout)| match layout {
                Layout::Polars => get_dtype_encoding(field.dtype()),
                Layout::Plain | Layout::Runs => vec![Encoding::Plain],
            })
            .collect();
        let runs = layouts.iter().map(|l| *l == Layout::Runs).collect();
        let options = WriteOptions {
            statistics,
            version: Version::V1,
            compression: compression.into(),
            data_page_size: None,
        };
        Ok(Encoder {
            file: polars_parquet::write::FileWriter::try_new(file, schema, options)?,
            encodings,
            runs,
            options,
        })
    }

    /// Writes `frame`, one row group per chunk.
    pub(crate) fn write(&mut self, frame: &DataFrame) -> PolarsResult<()> {
        let fields = self.file.parquet_schema().fields().to_vec();
        for batch in frame.iter_chunks(CompatLevel::newest(), false) {
            let rows = batch.len() as u64;
            if rows == 0 {
                continue;
            }
            let mut encodings = self.encodings.clone();
            let (schema, mut arrays) = batch.into_schema_and_arrays();
            for (i, array) in arrays.iter_mut().enumerate() {
                if encodings[i] == [polars_parquet::write::Encoding::RleDictionary]
                    && wide_integers(array.as_ref())
                {
                    encodings[i] = vec![polars_parquet::write::Encoding::Plain];
                }
                if !self.runs[i] {
                    continue;
                }
                let strings = array
                    .as_any()
                    .downcast_ref::<Utf8ViewArray>()
                    .expect("a Runs column holds strings");
                if let Some(dictionary) = run_dictionary(strings, RUN_DICTIONARY_VALUES) {
                    *array = dictionary.boxed();
                    encodings[i] = vec![polars_parquet::write::Encoding::RleDictionary];
                }
            }
            let batch =
                polars_arrow::record_batch::RecordBatchT::new(rows as usize, schema, arrays);
            let group = polars_parquet::write::row_group_iter(
                batch,
                encodings.into(),
                fields.clone(),
                self.options,
            );
            self.file.write(rows, group)?;
        }
        Ok(())
    }

    /// Writes the footer, flushes the file and gives it back.
    pub(crate) fn finish(mut self) -> PolarsResult<W> {
        self.file.end(None)?;
        let mut file = self.file.into_inner();
        file.flush()?;
        Ok(file)
    }
}

/// `strings` as a dictionary of its values in order of first appearance, found run by run:
/// a row whose view equals the one before (the same inline text, or the same place in the same
/// buffer) costs one 16-byte comparison, one whose text does costs a string comparison.
/// Missing values stay missing. `None` if there are more than `most` different values.
fn run_dictionary(
    strings: &Utf8ViewArray,
    most: usize,
) -> Option<polars_arrow::array::DictionaryArray<u32>> {
    use polars_arrow::array::{Array, DictionaryArray, PrimitiveArray};
    use polars_arrow::datatypes::IntegerType;
    let mut keys = Vec::with_capacity(strings.len());
    let mut values: Vec<&str> = Vec::new();
    let mut known: PlHashMap<&str, u32> = PlHashMap::new();
    let mut last: Option<(polars_arrow::array::View, &str, u32)> = None;
    let validity = strings.validity();
    for (i, view) in strings.views().iter().enumerate() {
        if validity.is_some_and(|valid| !valid.get_bit(i)) {
            keys.push(0);
            continue;
        }
        let key = match last {
            Some((previous, _, key)) if previous == *view => key,
            _ => {
                // SAFETY: `i` is below the array's length.
                let value = unsafe { strings.value_unchecked(i) };
                let key = match last {
                    Some((_, previous, key)) if previous == value => key,
                    _ => match known.get(value) {
                        Some(&key) => key,
                        None if values.len() == most => return None,
                        None => {
                            let key = values.len() as u32;
                            values.push(value);
                            known.insert(value, key);
                            key
                        }
                    },
                };
                last = Some((*view, value, key));
                key
            }
        };
        keys.push(key);
    }
    let dtype = ArrowDataType::Dictionary(
        IntegerType::UInt32,
        Box::new(ArrowDataType::Utf8View),
        false,
    );
    let keys = PrimitiveArray::from_vec(keys).with_validity(validity.cloned());
    let values = Utf8ViewArray::from_slice_values(values).boxed();
    Some(DictionaryArray::try_new(dtype, keys, values).expect("every key indexes the values"))
}

/// A [`Hashing`] file that the Parquet writer and [`TableWriter`] share.
#[derive(Clone)]
struct SharedFile(std::sync::Arc<std::sync::Mutex<Hashing<BufWriter<File>>>>);

impl Write for SharedFile {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("not poisoned").write(buf)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.0.lock().expect("not poisoned").flush()
    }
}

/// Writes the invoices of a run into `dir`: `invoice_lines.parquet` and `.csv`,
/// `invoices.parquet`, and one JSON document per invoice.
pub(crate) fn write_invoices(
    dir: &Path,
    invoices: &mut Invoices,
    card: &crate::rates::RateCard,
) -> Result<Vec<WrittenFile>> {
    let mut written = vec![
        write_parquet(dir, LINES_PARQUET_FILE, &mut invoices.lines)?,
        write_lines_csv(dir, &invoices.invoices)?,
        write_parquet(
            dir,
            INVOICES_PARQUET_FILE,
            &mut crate::rating::invoices_frame(&invoices.invoices, card)?,
        )?,
    ];
    written.extend(write_invoice_documents(dir, &invoices.invoices)?);
    Ok(written)
}

/// `meta_cost_lines.parquet` and `.csv` of `lines`, at the scale of the card's Meta rates.
pub(crate) fn write_meta_lines(
    dir: &Path,
    lines: &crate::meta::cost::Lines,
    card: &crate::rates::RateCard,
) -> Result<Vec<WrittenFile>> {
    let scale = card.meta.as_ref().map_or(4, |meta| meta.scale());
    let mut frame = crate::meta::cost::frame(lines, scale)?;
    Ok(vec![
        write_parquet(dir, META_LINES_FILE, &mut frame)?,
        write_bytes(
            dir,
            META_LINES_CSV_FILE,
            &crate::meta::cost::csv(lines),
            lines.len() as u64,
        )?,
    ])
}

/// Threads that write invoice documents at once: each document is flushed to disk on its own,
/// and the file system commits flushes that wait together in one go.
const DOCUMENT_WRITERS: usize = 8;

/// One JSON document per invoice ([`write_invoice`]), written by [`DOCUMENT_WRITERS`] threads;
/// described in invoice order.
fn write_invoice_documents(dir: &Path, invoices: &[Invoice]) -> Result<Vec<WrittenFile>> {
    let share = invoices.len().div_ceil(DOCUMENT_WRITERS).max(1);
    std::thread::scope(|scope| {
        let writers: Vec<_> = invoices
            .chunks(share)
            .map(|invoices| {
                scope.spawn(move || {
                    invoices
                        .iter()
                        .map(|invoice| write_invoice(dir, invoice))
                        .collect::<Result<Vec<_>>>()
                })
            })
            .collect();
        let mut written = Vec::with_capacity(invoices.len());
        for writer in writers {
            written.extend(writer.join().expect("writing a document does not panic")?);
        }
        Ok(written)
    })
}

/// Reads a JSON document convbill wrote; `None` if there is none. A document that does not
/// parse is an error naming its file.
pub(crate) fn read_json_if_exists<T: serde::de::DeserializeOwned>(
    path: &Path,
) -> Result<Option<T>> {
    match fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| io_error(path)(std::io::Error::new(std::io::ErrorKind::InvalidData, e))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io_error(path)(e)),
    }
}

/// [`read_json_if_exists`], for a document that must exist.
pub(crate) fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T> {
    read_json_if_exists(path)?
        .ok_or_else(|| io_error(path)(std::io::Error::from(std::io::ErrorKind::NotFound)))
}

/// Writes a value as pretty JSON with a final newline.
pub(crate) fn write_json(
    dir: &Path,
    relative: &str,
    value: &impl Serialize,
) -> Result<WrittenFile> {
    let json = serde_json::to_vec_pretty(value).expect("convbill's documents serialize");
    write_bytes(dir, relative, &[json.as_slice(), b"\n"].concat(), 0)
}

/// A writer that hashes and counts what passes through it, so no output is read back; without
/// a hasher it only counts (files no manifest lists).
struct Hashing<W> {
    inner: W,
    hasher: Option<Sha256>,
    bytes: u64,
}

impl<W: Write> Write for Hashing<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        if let Some(hasher) = &mut self.hasher {
            hasher.update(&buf[..n]);
        }
        self.bytes += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// Starts writing what `file` holds in the page cache to disk, without waiting: the flush to
/// disk when the file is complete then waits for little, and the disk works while the run
/// computes. Best effort (Linux only).
fn start_writeback(file: &File) {
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd;
        // SAFETY: a valid open descriptor; the call only schedules writeback.
        unsafe {
            libc::sync_file_range(file.as_raw_fd(), 0, 0, libc::SYNC_FILE_RANGE_WRITE);
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = file;
}

/// Creates `path` (and its folder) behind a hashing writer.
fn create_file(path: &Path) -> Result<Hashing<BufWriter<File>>> {
    crate::folder::injected_failure(path)?;
    if let Some(folder) = path.parent() {
        fs::create_dir_all(folder).map_err(io_error(folder))?;
    }
    let file = File::create(path).map_err(io_error(path))?;
    Ok(Hashing {
        inner: BufWriter::new(file),
        hasher: Some(Sha256::new()),
        bytes: 0,
    })
}

/// Flushes a file made by [`create_file`] to disk and describes it.
fn complete_file(
    path: &Path,
    relative: &str,
    rows: u64,
    writer: Hashing<BufWriter<File>>,
) -> Result<WrittenFile> {
    let file = writer
        .inner
        .into_inner()
        .map_err(|e| io_error(path)(e.into_error()))?;
    file.sync_all().map_err(io_error(path))?;
    Ok(WrittenFile {
        path: relative.to_string(),
        bytes: writer.bytes,
        sha256: writer
            .hasher
            .map(|hasher| hex::encode(hasher.finalize()))
            .unwrap_or_default(),
        rows,
    })
}

/// Creates `relative` under `dir`, lets `fill` write it, and flushes it to disk.
fn write_file(
    dir: &Path,
    relative: &str,
    rows: u64,
    fill: impl FnOnce(&mut Hashing<BufWriter<File>>) -> Result<()>,
) -> Result<WrittenFile> {
    let path = dir.join(relative);
    let mut writer = create_file(&path)?;
    fill(&mut writer).map_err(|e| match e {
        Error::Polars(e) => write_error(&path)(e),
        e => e,
    })?;
    complete_file(&path, relative, rows, writer)
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

/// Puts the file `from` (`rows` rows), already written by this run, at `relative` under `dir`
/// too: a hard link (a copy where the file system has none). Files are never changed once
/// written, so the two names can share it.
pub(crate) fn link_file(from: &Path, dir: &Path, relative: &str, rows: u64) -> Result<WrittenFile> {
    let path = dir.join(relative);
    crate::folder::injected_failure(&path)?;
    if let Some(folder) = path.parent() {
        fs::create_dir_all(folder).map_err(io_error(folder))?;
    }
    if fs::hard_link(from, &path).is_err() {
        fs::copy(from, &path).map_err(io_error(&path))?;
    }
    let bytes = fs::metadata(&path).map_err(io_error(&path))?.len();
    Ok(WrittenFile {
        path: relative.to_string(),
        bytes,
        sha256: crate::load::sha256_of(&path)?,
        rows,
    })
}

pub(crate) fn write_parquet(
    dir: &Path,
    relative: &str,
    frame: &mut DataFrame,
) -> Result<WrittenFile> {
    let rows = frame.height() as u64;
    write_file(dir, relative, rows, |w| {
        ParquetWriter::new(w)
            .with_compression(output_compression())
            .finish(frame)?;
        Ok(())
    })
}

/// A CSV cell that a spreadsheet shows as the text it is. Excel, LibreOffice and Google Sheets
/// run a cell that starts with `=`, `+`, `-` or `@` (or a tab or carriage return before one) as
/// a formula; such a value gets a leading `'`, which they take as "text" and do not show. Only
/// values that come from the input (ids, file names) go through it: numbers convbill writes
/// stay numbers. The Parquet outputs keep every value as read.
pub fn spreadsheet_text(value: &str) -> std::borrow::Cow<'_, str> {
    match value.chars().next() {
        Some('=' | '+' | '-' | '@' | '\t' | '\r') => format!("'{value}").into(),
        _ => value.into(),
    }
}

/// `invoice_lines.csv`: the columns of `invoice_lines.parquet`, money as decimal text; ids as
/// [`spreadsheet_text`].
pub(crate) fn write_lines_csv(dir: &Path, invoices: &[Invoice]) -> Result<WrittenFile> {
    let failed = |e: csv::Error| Error::Output {
        path: dir.join(LINES_CSV_FILE),
        source: e.into(),
    };
    let mut writer = csv::Writer::from_writer(Vec::new());
    writer
        .write_record(crate::rating::LINE_COLUMNS)
        .map_err(failed)?;
    let mut rows = 0;
    for invoice in invoices {
        for line in &invoice.lines {
            writer
                .write_record([
                    &*spreadsheet_text(&invoice.invoice_id),
                    &*spreadsheet_text(&line.account_id),
                    &line.period,
                    invoice.status,
                    &invoice.coverage_start,
                    &invoice.coverage_end,
                    &line.channel,
                    &line.initiation,
                    &line.price_version,
                    &line.sessions.to_string(),
                    &line.billable_sessions.to_string(),
                    &line.quota_per_session.to_string(),
                    &line.quota.to_string(),
                    &line.allowance_quota.to_string(),
                    &line.overage_quota.to_string(),
                    &line.unit_price.to_string(),
                    &line.amount.to_string(),
                    &line.currency,
                ])
                .map_err(failed)?;
            rows += 1;
        }
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

/// Characters of an encoded account id kept in a file name before it is shortened.
const FILE_NAME_KEPT: usize = 160;

/// An account id as a safe file name: ASCII letters, digits, `-` and `_` stay, every other
/// byte becomes `%XX` (so `.`, `/` and `%` cannot escape the folder or collide). A name longer
/// than [`FILE_NAME_KEPT`] characters (file systems allow 255 bytes) keeps its first ones and
/// ends in `~` and 16 hex digits of the id's SHA-256: `~` is never written as itself, so such a
/// name cannot be another account's.
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
    if name.len() > FILE_NAME_KEPT {
        // Cut before a `%XX` that would straddle the limit.
        let mut cut = FILE_NAME_KEPT;
        while name[..cut].ends_with('%') || name[..cut - 1].ends_with('%') {
            cut -= 1;
        }
        let digest = Sha256::digest(account_id.as_bytes());
        name = format!("{}~{}", &name[..cut], hex::encode(&digest[..8]));
    }
    name
}

/// Whether each column of the first row group of the Parquet file `path` is
/// dictionary-encoded, in column order.
#[cfg(test)]
pub(crate) fn dictionary_encoded(path: &Path) -> Vec<bool> {
    let metadata = parquet::file::metadata::ParquetMetaDataReader::new()
        .parse_and_finish(&File::open(path).unwrap())
        .unwrap();
    metadata
        .row_group(0)
        .columns()
        .iter()
        .map(|c| {
            c.encodings()
                .any(|e| e == parquet::basic::Encoding::RLE_DICTIONARY)
        })
        .collect()
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
        // Long ids keep their start and a hash of the whole id, within the file system's
        // 255 bytes, never cutting a `%XX`.
        for long in [
            "a".repeat(300),
            "<&>".repeat(100),
            format!("{}é", "b".repeat(159)),
        ] {
            let name = file_name_for(&long);
            assert!(name.len() + ".json".len() <= 255, "{name}");
            let (start, hash) = name.rsplit_once('~').unwrap();
            assert_eq!(hash.len(), 16);
            assert!(!start.ends_with('%') && !start[..start.len() - 1].ends_with('%'));
        }
        assert_ne!(
            file_name_for(&"a".repeat(300)),
            file_name_for(&"a".repeat(301))
        );
    }

    fn table_bytes(pieces: &[(i64, i64)], row_group_rows: usize) -> Vec<u8> {
        let dir = tempfile::tempdir().unwrap();
        let mut table = TableWriter::new(dir.path(), "t.parquet");
        table.row_group_rows = row_group_rows;
        table.open().unwrap();
        for piece in pieces {
            let values: Vec<i64> = (piece.0..piece.1).collect();
            let names: Vec<String> = values.iter().map(|v| format!("s{v}")).collect();
            let frame = DataFrame::new(
                values.len(),
                vec![
                    Column::new("n".into(), values),
                    Column::new("s".into(), names),
                ],
            )
            .unwrap();
            table.append(&frame).unwrap();
        }
        let written = table.finish().unwrap();
        assert_eq!(written.rows, 9);
        let bytes = fs::read(dir.path().join("t.parquet")).unwrap();
        assert_eq!(written.bytes, bytes.len() as u64);
        assert_eq!(written.sha256, hex::encode(Sha256::digest(&bytes)));
        bytes
    }

    #[test]
    fn values_a_spreadsheet_would_run_are_quoted_as_text() {
        for formula in ["=1+1", "+31", "-2", "@SUM(A1)", "\t=1", "\r=1"] {
            assert_eq!(spreadsheet_text(formula), format!("'{formula}"));
        }
        for text in ["acme", "a=b", "", "'quoted", " =1", "100000000000001"] {
            assert_eq!(spreadsheet_text(text), text);
        }
    }

    #[test]
    fn a_table_without_checksum_is_the_same_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let frame = DataFrame::new(
            2,
            vec![
                Column::new("s".into(), ["a", "b"]),
                Column::new("n".into(), [1i64, 2]),
            ],
        )
        .unwrap();
        let mut checked = TableWriter::create(dir.path(), "checked.parquet").unwrap();
        let mut unchecked = TableWriter::create(dir.path(), "unchecked.parquet")
            .unwrap()
            .without_checksum();
        checked.append(&frame).unwrap();
        unchecked.append(&frame).unwrap();
        let (checked, unchecked) = (checked.finish().unwrap(), unchecked.finish().unwrap());
        let bytes = fs::read(dir.path().join("unchecked.parquet")).unwrap();
        assert_eq!(bytes, fs::read(dir.path().join("checked.parquet")).unwrap());
        assert_eq!(checked.sha256, hex::encode(Sha256::digest(&bytes)));
        assert_eq!(unchecked.sha256, "");
        assert_eq!((unchecked.bytes, unchecked.rows), (bytes.len() as u64, 2));
    }

    #[test]
    fn strings_that_repeat_become_a_dictionary_and_read_back_the_same() {
        let dir = tempfile::tempdir().unwrap();
        let mut table = TableWriter::create(dir.path(), "t.parquet").unwrap();
        let rows = RUN_DICTIONARY_VALUES + 1;
        // Runs of repeated names, and a name that comes back after others.
        let names: Vec<&str> = (0..rows)
            .map(|i| match i % 7 {
                0..=2 => "whatsapp",
                3 | 4 => "a much longer name than a view",
                5 => "instagram",
                _ => "whatsapp",
            })
            .collect();
        // One more different value than a dictionary may hold: written plain.
        let ids: Vec<String> = (0..rows).map(|i| format!("m{i:05}")).collect();
        let missing: Vec<Option<&str>> = (0..rows).map(|i| (i % 3 == 0).then_some("x")).collect();
        let frame = DataFrame::new(
            rows,
            vec![
                Column::new("s".into(), names),
                Column::new("n".into(), vec![3i64; rows]),
                Column::new("o".into(), missing),
                Column::new("id".into(), ids),
                // Few different times, but spanning more than a dictionary of integers may.
                Column::new(
                    "t".into(),
                    (0..rows as i64)
                        .map(|i| (i % 2) * (DICTIONARY_SPAN as i64 + 1))
                        .collect::<Vec<_>>(),
                ),
            ],
        )
        .unwrap();
        table.append(&frame).unwrap();
        table.finish().unwrap();
        let path = dir.path().join("t.parquet");
        // Repeated strings by runs (missing values among them too), integers of a narrow span
        // as polars chooses; too many different ones and a wide span plain.
        assert_eq!(dictionary_encoded(&path), [true, true, true, false, false]);
        let read = ParquetReader::new(File::open(&path).unwrap())
            .finish()
            .unwrap();
        assert_eq!(read.schema(), frame.schema());
        assert!(read.equals_missing(&frame), "{read}");
        // The statistics of a dictionary column are those of its values.
        let metadata = parquet::file::metadata::ParquetMetaDataReader::new()
            .parse_and_finish(&File::open(&path).unwrap())
            .unwrap();
        let statistics = metadata.row_group(0).column(0).statistics().unwrap();
        assert_eq!(
            statistics.min_bytes_opt().unwrap(),
            b"a much longer name than a view"
        );
        assert_eq!(statistics.max_bytes_opt().unwrap(), b"whatsapp");
        let statistics = metadata.row_group(0).column(2).statistics().unwrap();
        assert_eq!(statistics.null_count_opt(), Some(rows as u64 * 2 / 3));
    }

    #[test]
    fn a_run_dictionary_tells_equal_texts_apart_from_equal_views() {
        // The same text at two places of a buffer, and a missing value between equal ones.
        let strings = Utf8ViewArray::from_slice([
            Some("a longer text than a view"),
            Some("a longer text than a view"),
            None,
            Some("a longer text than a view"),
            Some("short"),
        ]);
        let dictionary = run_dictionary(&strings, 2).unwrap();
        let keys: Vec<Option<u32>> = dictionary.keys().iter().map(|k| k.copied()).collect();
        assert_eq!(keys, [Some(0), Some(0), None, Some(0), Some(1)]);
        assert!(run_dictionary(&strings, 1).is_none());
    }

    #[test]
    fn tables_are_the_same_bytes_however_they_arrive() {
        let whole = table_bytes(&[(0, 9)], 4);
        assert_eq!(table_bytes(&[(0, 3), (3, 8), (8, 9)], 4), whole);
        assert_eq!(table_bytes(&[(0, 0), (0, 1), (1, 9), (9, 9)], 4), whole);
        // A different row-group size is a different layout: the cut is what makes them equal.
        assert_ne!(table_bytes(&[(0, 9)], 5), whole);
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
