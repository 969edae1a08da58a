//! convbill: derives Meta's 24-hour conversation sessions (WhatsApp, Messenger, Instagram)
//! from message logs and writes per-account quota invoices.
//!
//! The pipeline runs one way, each stage a module with a function from named inputs to named
//! outputs; I/O happens only at the two ends:
//!
//! [`load`] (Parquet → validated frames, chunk by chunk) → [`partition`] (groups of whole
//! accounts) → per group [`sessions::derive`] ([`sessions::Sessions`]) → [`rating::lines_of`]
//! → [`rating::invoices_from_lines`] ([`rating::Invoices`]) → [`write`] (the output folder;
//! sessions and violations are streamed to it group by group).

pub mod error;
pub mod generate;
pub mod load;
pub mod nightly;
pub mod partition;
pub mod rating;
pub mod schema;
pub mod sessions;
pub mod write;

use std::path::PathBuf;

pub use error::{exit, Error, InputError, NightError, Result};

/// A validated `convbill run`.
#[derive(Debug, Clone)]
pub struct RunConfig {
    /// A Parquet file, or a folder searched recursively for `*.parquet`.
    pub input: PathBuf,
    /// The output folder; replaced as a whole when the run succeeds.
    pub out: PathBuf,
    /// Rows derived at a time at most (whole accounts; see [`partition`]).
    pub partition_rows: u64,
}

impl RunConfig {
    pub fn new(input: impl Into<PathBuf>, out: impl Into<PathBuf>) -> Self {
        RunConfig {
            input: input.into(),
            out: out.into(),
            partition_rows: partition::DEFAULT_MAX_ROWS,
        }
    }
}

/// What a run did, for the summary line.
#[derive(Debug, Clone)]
pub struct RunReport {
    pub files: usize,
    pub input: load::InputStats,
    pub sessions: sessions::SessionStats,
    /// (account, period, quota), in invoice order.
    pub quota: Vec<(String, String, i64)>,
    pub written: Vec<write::WrittenFile>,
    /// Account groups derived one after the other.
    pub partitions: usize,
}

/// Rows read from the input at a time (whole row groups).
const CHUNK_ROWS: u64 = 2_000_000;

/// Runs the whole pipeline: load, partition, and per group of accounts derive sessions and
/// rate them, streaming sessions and violations to the output; then invoices and manifest.
pub fn run(config: &RunConfig) -> Result<RunReport> {
    let mut staging = write::Staging::create(&config.out)?;
    let mut source = load::open(&config.input)?;
    let paths: Vec<PathBuf> = source.files.iter().map(|f| f.full_path.clone()).collect();
    // The input checksums are for the manifest only: compute them beside the real work.
    let (hashes, result) = std::thread::scope(|scope| {
        let hashes = scope.spawn(|| {
            paths
                .iter()
                .map(|p| load::sha256_of(p))
                .collect::<Result<Vec<_>>>()
        });
        let result = derive_in_groups(config, &mut source, &mut staging);
        (hashes.join().expect("hashing does not panic"), result)
    });
    let (stats, session_stats, lines, partitions) = result?;
    for (file, hash) in source.files.iter_mut().zip(hashes?) {
        file.sha256 = hash;
    }
    let mut invoices = rating::invoices_from_lines(lines)?;
    let quota = invoices
        .invoices
        .iter()
        .map(|i| (i.account_id.clone(), i.period.clone(), i.totals.quota))
        .collect();
    let manifest = write::Manifest {
        program: write::Program::current(),
        rule_set: rating::RULE_SET,
        rate_card: rating::ARTICLE_RATE_CARD,
        input: write::InputSection {
            path: config.input.display().to_string(),
            files: source.files.clone(),
            stats: stats.clone(),
        },
        sessions: session_stats.clone(),
        invoices: write::InvoiceSummary {
            invoices: invoices.invoices.len() as u64,
            lines: invoices.lines.height() as u64,
            quota: invoices.invoices.iter().map(|i| i.totals.quota).sum(),
        },
        outputs: Vec::new(),
    };
    let written = staging.finish(&mut invoices, manifest)?;
    Ok(RunReport {
        files: source.files.len(),
        input: stats,
        sessions: session_stats,
        quota,
        written,
        partitions,
    })
}

/// Reads the input into account groups, then derives and rates one group at a time,
/// appending its sessions and violations to `staging`. Returns the input counts, the session
/// counts, the invoice lines of all groups and the number of groups.
fn derive_in_groups(
    config: &RunConfig,
    source: &mut load::Source,
    staging: &mut write::Staging,
) -> Result<(
    load::InputStats,
    sessions::SessionStats,
    polars::prelude::DataFrame,
    usize,
)> {
    use polars::prelude::*;

    use sessions::timed;
    let account_rows = timed("counted rows per account", || source.account_rows())?;
    let plan = partition::plan(&account_rows, config.partition_rows);
    let mut parts = partition::Parts::new(&plan, staging.parent())?;
    let rows_read = timed("read, checked and partitioned", || {
        source.read(None, CHUNK_ROWS, |chunk| parts.push(chunk))
    })?;
    let partitions = parts.groups();
    tracing::info!(rows = rows_read, partitions, "read and partitioned");
    let mut groups = parts.finish()?;

    let mut rows_used = 0;
    let mut stats = sessions::SessionStats::default();
    let mut lines = Vec::with_capacity(partitions);
    while let Some(frame) = timed("read a group", || groups.next_group())? {
        let frame = timed("dropped duplicates", || load::deduplicate(frame))?;
        rows_used += frame.height() as u64;
        let derived = sessions::derive(&frame)?;
        stats.add(&derived.stats);
        lines.push(rating::lines_of(&derived.sessions)?.lazy());
        timed("appended sessions and violations", || {
            staging.append(&derived.sessions, &derived.violations)
        })?;
    }
    tracing::info!(
        sessions = stats.sessions,
        violations = stats.violations,
        "derived sessions"
    );
    let input = load::InputStats {
        rows_read,
        duplicates_dropped: rows_read - rows_used,
        rows_rejected: 0,
        rows_used,
    };
    Ok((
        input,
        stats,
        concat(lines, UnionArgs::default())?.collect()?,
        partitions,
    ))
}
