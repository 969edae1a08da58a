//! convbill: derives Meta's 24-hour conversation sessions (WhatsApp, Messenger, Instagram)
//! from message logs and writes per-account quota invoices.
//!
//! The pipeline runs one way, each stage a module with a function from named inputs to named
//! outputs; I/O happens only at the two ends:
//!
//! [`rates`] (the rate card, checked first) → [`load`] (Parquet → validated frames, chunk by
//! chunk) → [`partition`] (groups of whole accounts) → per group [`sessions::derive`]
//! ([`sessions::Sessions`]) → [`rating::rate_sessions`] → [`rating::lines_of`] →
//! [`rating::invoices_from_lines`] ([`rating::Invoices`]) → [`write`] (the output folder;
//! sessions and violations are streamed to it group by group).

pub mod error;
pub mod generate;
pub mod load;
pub mod nightly;
pub mod partition;
pub mod rates;
pub mod rating;
pub mod schema;
pub mod sessions;
pub mod write;

use std::path::PathBuf;

pub use error::{check_interrupt, exit, interrupt, Error, InputError, NightError, Result};

/// A validated `convbill run`.
#[derive(Debug, Clone)]
pub struct RunConfig {
    /// A Parquet file, or a folder searched recursively for `*.parquet`.
    pub input: PathBuf,
    /// The output folder; replaced as a whole when the run succeeds.
    pub out: PathBuf,
    /// Rows derived at a time at most (whole accounts; see [`partition`]).
    pub partition_rows: u64,
    /// `--rejects`: set bad rows aside in `rejects.parquet` instead of stopping.
    pub rejects: bool,
    /// `--rates`: the rate card; `None` rates by the article ([`rates::RateCard::built_in`]).
    pub rates: Option<PathBuf>,
}

impl RunConfig {
    pub fn new(input: impl Into<PathBuf>, out: impl Into<PathBuf>) -> Self {
        RunConfig {
            input: input.into(),
            out: out.into(),
            partition_rows: partition::DEFAULT_MAX_ROWS,
            rejects: false,
            rates: None,
        }
    }
}

/// What a run did, for the summary line.
#[derive(Debug, Clone)]
pub struct RunReport {
    pub files: usize,
    pub input: load::InputStats,
    pub sessions: sessions::SessionStats,
    /// The invoices' heads and totals, in invoice order (without their lines).
    pub invoices: Vec<rating::Invoice>,
    pub written: Vec<write::WrittenFile>,
    /// Account groups derived one after the other.
    pub partitions: usize,
    /// Accounts the rate card names that have no invoice in this run.
    pub card_accounts_without_invoices: Vec<String>,
}

/// Rows read from the input at a time (whole row groups).
const CHUNK_ROWS: u64 = 2_000_000;

/// Runs the whole pipeline: load, partition, and per group of accounts derive sessions and
/// rate them, streaming sessions and violations to the output; then invoices and manifest.
pub fn run(config: &RunConfig) -> Result<RunReport> {
    // The rate card is checked before anything else is touched.
    let card = rates::load_or_built_in(config.rates.as_deref())?;
    let mut staging = write::Staging::create(&config.out)?;
    let mut source = load::open(&config.input)?;
    source.checks.keep_rejects = config.rejects;
    let paths: Vec<PathBuf> = source.files.iter().map(|f| f.full_path.clone()).collect();
    // The input checksums are for the manifest only: compute them beside the real work.
    let (hashes, result) = std::thread::scope(|scope| {
        let hashes = scope.spawn(|| {
            paths
                .iter()
                .map(|p| load::sha256_of(p))
                .collect::<Result<Vec<_>>>()
        });
        let result = derive_in_groups(config, &card, &mut source, &mut staging);
        (hashes.join().expect("hashing does not panic"), result)
    });
    let (mut stats, session_stats, lines, partitions) = result?;
    for (file, hash) in source.files.iter_mut().zip(hashes?) {
        file.sha256 = hash;
    }
    let mut rejects = match config.rejects {
        true => Some(rejects_frame(&source, &mut stats)?),
        false => None,
    };
    let mut invoices = rating::invoices_from_lines(lines, &card)?;
    let rate_card = rating::RateCardInfo::with_invoices(&card, &invoices.invoices);
    let card_accounts_without_invoices = rate_card
        .accounts_without_invoices
        .clone()
        .unwrap_or_default();
    let manifest = write::Manifest {
        program: write::Program::current(),
        rule_set: rating::RULE_SET,
        rate_card,
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
            amounts: write::amounts_by_currency(&invoices.invoices),
        },
        outputs: Vec::new(),
    };
    let written = staging.finish(&mut invoices, rejects.as_mut(), manifest)?;
    // The report keeps the invoices' heads and totals; their lines are written.
    let mut heads = invoices.invoices;
    for invoice in &mut heads {
        invoice.lines = Vec::new();
    }
    Ok(RunReport {
        files: source.files.len(),
        input: stats,
        sessions: session_stats,
        invoices: heads,
        written,
        partitions,
        card_accounts_without_invoices,
    })
}

/// Groups of accounts derived at the same time: two keep both cores busy through the
/// single-threaded steps of each group.
const WORKERS: usize = 2;

/// What one group of accounts gives.
struct GroupResult {
    rows_used: u64,
    /// `--rejects`: rows of conflicting duplicates.
    rejected: Option<polars::prelude::DataFrame>,
    stats: sessions::SessionStats,
    lines: polars::prelude::DataFrame,
    sessions: polars::prelude::DataFrame,
    violations: polars::prelude::DataFrame,
}

/// Reads the input into account groups, then derives and rates the groups ([`WORKERS`] at a
/// time), appending their sessions and violations to `staging` in group order. Returns the
/// input counts, the session counts, the invoice lines of all groups and the number of groups.
fn derive_in_groups(
    config: &RunConfig,
    card: &rates::RateCard,
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
    let mut parts = partition::Parts::new(&plan, &staging.spill_dir())?;
    let rows_read = timed("read, checked and partitioned", || {
        read_into(source, &mut parts)
    })?;
    let partitions = parts.groups();
    tracing::info!(rows = rows_read, partitions, "read and partitioned");
    let groups = std::sync::Mutex::new(parts.finish()?);
    let paths: Vec<String> = source.files.iter().map(|f| f.path.clone()).collect();
    let keep_rejects = source.checks.keep_rejects;

    let mut rows_used = 0;
    let mut stats = sessions::SessionStats::default();
    let mut lines = Vec::with_capacity(partitions);
    std::thread::scope(|scope| -> Result<()> {
        let (done, results) = std::sync::mpsc::channel::<(usize, Result<GroupResult>)>();
        for _ in 0..WORKERS {
            let (done, groups, paths) = (done.clone(), &groups, &paths);
            scope.spawn(move || loop {
                if let Err(e) = check_interrupt() {
                    let _ = done.send((usize::MAX, Err(e)));
                    return;
                }
                let (index, frame) = {
                    let mut groups = groups.lock().expect("no worker panicked");
                    let index = groups.next_index();
                    (index, timed("read a group", || groups.next_group()))
                };
                let result = match frame {
                    Ok(None) => return,
                    Ok(Some(frame)) => derive_group(frame, paths, keep_rejects, card),
                    Err(e) => Err(e),
                };
                let failed = result.is_err();
                if done.send((index, result)).is_err() || failed {
                    return;
                }
            });
        }
        drop(done);
        // Results arrive in any order; they are appended in group order.
        let mut waiting = std::collections::BTreeMap::new();
        for (index, result) in results {
            waiting.insert(index, result?);
            while let Some(group) = waiting.remove(&(lines.len())) {
                rows_used += group.rows_used;
                source.rejected.extend(group.rejected);
                stats.add(&group.stats);
                lines.push(group.lines.lazy());
                timed("appended sessions and violations", || {
                    staging.append(&group.sessions, &group.violations)
                })?;
            }
        }
        Ok(())
    })?;
    tracing::info!(
        sessions = stats.sessions,
        violations = stats.violations,
        "derived sessions"
    );
    let rows_rejected: u64 = source.rejected.iter().map(|r| r.height() as u64).sum();
    let input = load::InputStats {
        rows_read,
        duplicates_dropped: rows_read - rows_used - rows_rejected,
        rows_rejected,
        rows_used,
        rejected_by_reason: Default::default(),
    };
    Ok((
        input,
        stats,
        concat(lines, UnionArgs::default())?.collect()?,
        partitions,
    ))
}

/// The rows set aside, as `rejects.parquet` holds them: in file and row order, `file` as the
/// path relative to the input. Also counts them by reason into `stats`.
fn rejects_frame(
    source: &load::Source,
    stats: &mut load::InputStats,
) -> Result<polars::prelude::DataFrame> {
    use polars::prelude::*;
    let columns = load::REJECT_COLUMNS.map(col);
    let rejected = match source.rejected.len() {
        0 => DataFrame::empty_with_schema(&load::rejects_schema()).lazy(),
        _ => concat(
            source
                .rejected
                .iter()
                .cloned()
                .map(IntoLazy::lazy)
                .collect::<Vec<_>>(),
            UnionArgs::default(),
        )?,
    };
    let mut frame = rejected
        .select(columns)
        .sort([load::FILE, load::ROW], SortMultipleOptions::default())
        .collect()?;
    let paths: Vec<Option<&str>> = frame
        .column(load::FILE)?
        .u32()?
        .iter()
        .map(|i| {
            i.and_then(|i| source.files.get(i as usize))
                .map(|f| f.path.as_str())
        })
        .collect();
    frame.with_column(Column::new(load::FILE.into(), paths))?;
    for reason in frame.column("reason")?.str()?.iter().flatten() {
        *stats
            .rejected_by_reason
            .entry(reason.to_string())
            .or_default() += 1;
    }
    Ok(frame)
}

/// Reads and checks the input's chunks on a second thread while this one partitions them.
fn read_into(source: &mut load::Source, parts: &mut partition::Parts) -> Result<u64> {
    std::thread::scope(|scope| {
        let (chunks, received) = std::sync::mpsc::sync_channel(1);
        let reader = scope.spawn(move || {
            source.read(None, CHUNK_ROWS, |chunk| {
                chunks.send(chunk).map_err(|_| {
                    Error::Polars(polars::prelude::PolarsError::ComputeError(
                        "partitioning stopped".into(),
                    ))
                })
            })
        });
        let pushed = received.iter().try_for_each(|chunk| parts.push(chunk));
        // On a partitioning error the reader stops at its next chunk: report the first cause.
        drop(received);
        let read = reader.join().expect("the reader does not panic");
        pushed?;
        read
    })
}

/// Drops duplicates, derives sessions and rates them, for one group of accounts.
fn derive_group(
    frame: polars::prelude::DataFrame,
    paths: &[String],
    keep_rejects: bool,
    card: &rates::RateCard,
) -> Result<GroupResult> {
    let (frame, rejected) = sessions::timed("dropped duplicates", || {
        load::deduplicate_checked(frame, paths, keep_rejects)
    })?;
    let derived = sessions::derive(&frame)?;
    let rated = rating::rate_sessions(derived.sessions, card)?;
    Ok(GroupResult {
        rows_used: frame.height() as u64,
        rejected,
        lines: rating::lines_of(&rated)?,
        stats: derived.stats,
        sessions: rated.select(rating::RATED_SESSION_COLUMNS)?,
        violations: rating::rate_violations(derived.violations, card)?,
    })
}
