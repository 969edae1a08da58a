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
pub mod explain;
pub mod folder;
pub mod generate;
pub mod load;
pub mod merge;
pub mod meta;
pub mod nightly;
pub mod partition;
pub mod progress;
pub mod rates;
pub mod rating;
pub mod reconcile;
pub mod report;
pub mod schema;
pub mod sessions;
pub mod shard;
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
    /// A log of more rows than this is spilled to disk by group instead of kept in memory
    /// (see [`partition`]).
    pub memory_rows: u64,
    /// `--rejects`: set bad rows aside in `rejects.parquet` instead of stopping.
    pub rejects: bool,
    /// `--rates`: the rate card; `None` rates by the article ([`rates::RateCard::built_in`]).
    pub rates: Option<PathBuf>,
    /// `--shard I/N`: only the accounts of bucket `I` ([`shard`]).
    pub shard: Option<shard::Shard>,
}

impl RunConfig {
    pub fn new(input: impl Into<PathBuf>, out: impl Into<PathBuf>) -> Self {
        RunConfig {
            input: input.into(),
            out: out.into(),
            partition_rows: partition::DEFAULT_MAX_ROWS,
            memory_rows: partition::IN_MEMORY_ROWS,
            rejects: false,
            rates: None,
            shard: None,
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
    /// Changes to invoices that had been final in the folder this run replaced.
    pub reissued: Vec<rating::revision::Change>,
    /// What Meta charges, when the rate card has `[meta]`.
    pub meta: Option<meta::cost::MetaSummary>,
}

/// Rows read from the input at a time (whole row groups).
pub(crate) const CHUNK_ROWS: u64 = 2_000_000;

/// Runs the whole pipeline: load, partition, and per group of accounts derive sessions and
/// rate them, streaming sessions and violations to the output; then invoices and manifest.
pub fn run(config: &RunConfig) -> Result<RunReport> {
    // The rate card is checked before anything else is touched; then the output folder's
    // lock is taken before anything under or beside it is.
    let card = rates::load_or_built_in(config.rates.as_deref())?;
    let folder = folder::OutFolder::new(&config.out)?;
    folder.check_apart_from(&config.input)?;
    let _lock = folder.lock()?;
    if let Some(done) = folder.recover()? {
        tracing::warn!("{done} (beside `{}`)", config.out.display());
    }
    let mut staging = write::Staging::create(&folder, &card)?;
    let mut source = load::open_shard(&config.input, config.shard)?;
    source.checks.keep_rejects = config.rejects;
    source.checks.meta = card.meta.is_some();
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
    let Derived {
        input: mut stats,
        sessions: session_stats,
        lines,
        partitions,
        coverage,
        meta_lines,
    } = result?;
    progress::stage("writing outputs", None);
    for (file, hash) in source.files.iter_mut().zip(hashes?) {
        file.sha256 = hash;
    }
    let rejects = match config.rejects {
        true => Some(rejects_frame(&source, &mut stats)?),
        false => None,
    };
    let shard = config
        .shard
        .map(|shard| write::ShardSection::new(shard, &coverage, &source.listed));
    let report = complete(
        &folder,
        &card,
        staging,
        Reduced {
            input_path: config.input.display().to_string(),
            files: source.files,
            stats,
            sessions: session_stats,
            lines,
            coverage,
            meta_lines,
            rejects,
            shard,
            shards: Vec::new(),
        },
    )?;
    Ok(RunReport {
        partitions,
        ..report
    })
}

/// What the derivation of a log hands to the last stage ([`complete`]): from one run, or put
/// together from the shards of one ([`merge`]).
pub(crate) struct Reduced {
    /// The input path as given on the command line.
    pub input_path: String,
    pub files: Vec<load::InputFile>,
    pub stats: load::InputStats,
    pub sessions: sessions::SessionStats,
    /// The counted lines of every account ([`rating::lines_of`]), in account order.
    pub lines: polars::prelude::DataFrame,
    pub coverage: rating::Coverage,
    pub meta_lines: meta::cost::Lines,
    /// `--rejects`: the rows set aside, as `rejects.parquet` holds them.
    pub rejects: Option<polars::prelude::DataFrame>,
    /// A shard's run: what `convbill merge` needs besides its outputs.
    pub shard: Option<write::ShardSection>,
    /// A merge: the shards put together.
    pub shards: Vec<write::MergedShard>,
}

/// The last stage of a run, once its sessions, violations and Meta units are in `staging`:
/// invoices (revised against those of the folder being replaced), report and manifest, then
/// the folder put in place.
pub(crate) fn complete(
    folder: &folder::OutFolder,
    card: &rates::RateCard,
    mut staging: write::Staging,
    reduced: Reduced,
) -> Result<RunReport> {
    let Reduced {
        input_path,
        files,
        stats,
        sessions: session_stats,
        mut lines,
        coverage,
        meta_lines,
        mut rejects,
        shard,
        shards,
    } = reduced;
    if shard.is_some() {
        staging.add_parquet(merge::SHARD_LINES_FILE, &mut lines)?;
        staging.add_bytes(
            merge::SHARD_META_LINES_FILE,
            &merge::meta_lines_json(&meta_lines),
            meta_lines.len() as u64,
        )?;
    }
    let mut invoices = rating::invoices_from_lines(lines, card, &coverage)?;
    let meta = card
        .meta
        .as_ref()
        .map(|meta| meta::cost::attach(&mut invoices.invoices, &meta_lines, meta));
    // The folder being replaced holds what was issued before: a final invoice that changed is
    // a new revision.
    use rating::revision::{self, Issued, Register};
    let issued = Issued::read(&folder.out.join(write::INVOICES_PARQUET_FILE))?;
    let mut register = Register::read(&folder.out.join(revision::REGISTER_FILE))?;
    let register_before = register.clone();
    revision::revise(&mut invoices.invoices, &issued, &mut register);
    let reissued: Vec<revision::Change> =
        revision::changes(&issued, &invoices.invoices, &register_before)
            .into_iter()
            .filter(|c| c.touches_a_final_invoice())
            .collect();
    let rate_card = rating::RateCardInfo::with_invoices(card, &invoices.invoices);
    let card_accounts_without_invoices = rate_card
        .accounts_without_invoices
        .clone()
        .unwrap_or_default();
    let manifest = write::Manifest {
        program: write::Program::current(),
        rule_set: rating::RULE_SET,
        rate_card,
        input: write::InputSection {
            path: input_path,
            files: files.clone(),
            stats: stats.clone(),
        },
        sessions: session_stats.clone(),
        invoices: write::InvoiceSummary::of(&invoices),
        meta: meta.clone(),
        shard,
        shards,
        outputs: Vec::new(),
    };
    let mut register = register.frame()?;
    let written = sessions::timed("wrote the invoices and put the folder in place", || {
        staging.finish(
            &mut invoices,
            card,
            &mut register,
            rejects.as_mut(),
            &meta_lines,
            manifest,
        )
    })?;
    // The report keeps the invoices' heads and totals; their lines are written.
    let mut heads = invoices.invoices;
    for invoice in &mut heads {
        invoice.lines = Vec::new();
    }
    Ok(RunReport {
        files: files.len(),
        input: stats,
        sessions: session_stats,
        invoices: heads,
        written,
        partitions: 0,
        card_accounts_without_invoices,
        reissued,
        meta,
    })
}

/// Groups of accounts derived at the same time: two keep both cores busy through the
/// single-threaded steps of each group.
pub(crate) const WORKERS: usize = 2;

/// What one group of accounts gives.
struct GroupResult {
    rows_used: u64,
    /// `--rejects`: rows of conflicting duplicates.
    rejected: Option<polars::prelude::DataFrame>,
    stats: sessions::SessionStats,
    lines: polars::prelude::DataFrame,
    sessions: polars::prelude::DataFrame,
    violations: polars::prelude::DataFrame,
    /// (account, period) of sessions still open at the end of the input's coverage that can
    /// still change their quota.
    unsettled: std::collections::BTreeSet<(String, String)>,
    /// Meta's pricing units, when the card has `[meta]`.
    meta: Option<meta::units::Priced>,
}

/// What deriving every group gives.
struct Derived {
    input: load::InputStats,
    sessions: sessions::SessionStats,
    /// The invoice lines of all groups.
    lines: polars::prelude::DataFrame,
    partitions: usize,
    /// What the input covers.
    coverage: rating::Coverage,
    /// Meta's cost lines of all groups (empty without `[meta]`).
    meta_lines: meta::cost::Lines,
}

/// Reads the input into account groups, then derives and rates the groups ([`WORKERS`] at a
/// time), appending their sessions, violations and Meta units to `staging` in group order.
fn derive_in_groups(
    config: &RunConfig,
    card: &rates::RateCard,
    source: &mut load::Source,
    staging: &mut write::Staging,
) -> Result<Derived> {
    use polars::prelude::*;
    use sessions::timed;

    progress::stage("counting rows", None);
    let account_rows = timed("counted rows per account", || source.account_rows())?;
    let plan = partition::plan(&account_rows, config.partition_rows);
    progress::stage(
        "reading rows",
        Some(account_rows.iter().map(|(_, rows)| rows).sum()),
    );
    let mut parts = partition::Parts::new(&plan, &staging.spill_dir(), config.memory_rows)?;
    let (rows_read, days) = timed("read, checked and partitioned", || {
        read_into(source, None, &mut parts)
    })?;
    // The input covers the UTC days it has messages on (logs land by day).
    let mut coverage = rating::Coverage::of_days(days);
    let partitions = parts.groups();
    tracing::info!(rows = rows_read, partitions, "read and partitioned");
    let groups = parts.finish()?;
    progress::stage("deriving groups", Some(partitions as u64));
    let paths: Vec<String> = source.files.iter().map(|f| f.path.clone()).collect();
    let keep_rejects = source.checks.keep_rejects;

    let mut rows_used = 0;
    let mut unsettled = std::collections::BTreeSet::new();
    let mut stats = sessions::SessionStats::default();
    let mut lines = Vec::with_capacity(partitions);
    let mut meta_lines = meta::cost::Lines::new();
    partition::in_order(
        groups,
        WORKERS,
        plan.budget_rows(WORKERS),
        |_, frame| derive_group(frame, &paths, keep_rejects, card, &coverage),
        |_, group: GroupResult| {
            progress::advance(1);
            rows_used += group.rows_used;
            source.rejected.extend(group.rejected);
            stats.add(&group.stats);
            unsettled.extend(group.unsettled);
            lines.push(group.lines.lazy());
            if let Some(priced) = group.meta {
                meta_lines.extend(priced.lines);
                timed("appended Meta units", || staging.append_meta(&priced.units))?;
            }
            timed("appended sessions and violations", || {
                staging.append(&group.sessions, &group.violations)
            })
        },
    )?;
    tracing::info!(
        sessions = stats.sessions,
        violations = stats.violations,
        "derived sessions"
    );
    coverage.unsettled = unsettled;
    let rows_rejected: u64 = source.rejected.iter().map(|r| r.height() as u64).sum();
    let input = load::InputStats {
        rows_read,
        duplicates_dropped: rows_read - rows_used - rows_rejected,
        rows_rejected,
        rows_used,
        rejected_by_reason: Default::default(),
    };
    Ok(Derived {
        input,
        sessions: stats,
        lines: concat(lines, UnionArgs::default())?.collect()?,
        partitions,
        coverage,
        meta_lines,
    })
}

/// The rows set aside, as `rejects.parquet` holds them: in file and row order, `file` as the
/// path relative to the input. Also counts them by reason into `stats`.
fn rejects_frame(
    source: &load::Source,
    stats: &mut load::InputStats,
) -> Result<polars::prelude::DataFrame> {
    let paths: Vec<String> = source.files.iter().map(|f| f.path.clone()).collect();
    let (frame, by_reason) =
        load::rejects_with_paths(load::rejects_of(source.rejected.clone())?, &paths)?;
    for (reason, n) in by_reason {
        *stats.rejected_by_reason.entry(reason).or_default() += n;
    }
    Ok(frame)
}

/// Reads and checks the input's chunks (the rows in `window`, if given) on a second thread
/// while this one partitions them. Returns the rows read and the UTC days (numbered from the
/// epoch) the rows kept fall on.
pub(crate) fn read_into(
    source: &mut load::Source,
    window: Option<(i64, i64)>,
    parts: &mut partition::Parts,
) -> Result<(u64, std::collections::BTreeSet<i64>)> {
    let mut days = std::collections::BTreeSet::new();
    std::thread::scope(|scope| {
        let (chunks, received) = std::sync::mpsc::sync_channel(1);
        let reader = scope.spawn(move || {
            source.read(window, CHUNK_ROWS, |chunk| {
                chunks.send(chunk).map_err(|_| {
                    Error::Polars(polars::prelude::PolarsError::ComputeError(
                        "partitioning stopped".into(),
                    ))
                })
            })
        });
        let pushed = received.iter().try_for_each(|chunk| {
            add_days(&mut days, chunk.column(schema::TIMESTAMP)?.i64()?);
            progress::advance(chunk.height() as u64);
            parts.push(chunk)
        });
        // On a partitioning error the reader stops at its next chunk: report the first cause.
        drop(received);
        let read = reader.join().expect("the reader does not panic");
        pushed?;
        Ok((read?, days))
    })
}

/// Adds the UTC days of `times` (UTC nanoseconds) to `days`. Logs come mostly in time order,
/// so the set is touched only when the day changes.
fn add_days(days: &mut std::collections::BTreeSet<i64>, times: &polars::prelude::Int64Chunked) {
    let mut last = None;
    // Rows kept have a time: the checks set aside or refuse the others.
    for chunk in times.downcast_iter() {
        for time in chunk.values().iter() {
            let day = time.div_euclid(schema::DAY_NS);
            if last != Some(day) {
                days.insert(day);
                last = Some(day);
            }
        }
    }
}

/// Drops duplicates, derives sessions and rates them, for one group of accounts. `coverage`
/// is what the input covers: sessions open at the end of it may still change.
fn derive_group(
    frame: polars::prelude::DataFrame,
    paths: &[String],
    keep_rejects: bool,
    card: &rates::RateCard,
    coverage: &rating::Coverage,
) -> Result<GroupResult> {
    // The frame stays in the chunks it came in: joining them would copy every string's view,
    // while the sessions and violations gather only their own rows' strings.
    let (keep, rejected) = sessions::timed("dropped duplicates", || {
        load::duplicates_checked(&frame, paths, keep_rejects)
    })?;
    let rows_used = match &keep {
        Some(keep) => keep.iter().filter(|k| **k).count(),
        None => frame.height(),
    };
    let (derived, meta) = match &card.meta {
        None => (sessions::derive_kept(&frame, keep.as_deref())?, None),
        Some(meta) => {
            let (derived, events, ids) = sessions::derive_kept_for_meta(&frame, keep.as_deref())?;
            let priced = sessions::timed("priced by Meta", || {
                meta::units::price(&frame, &ids, &events, meta, paths, &Default::default())
            })?;
            (derived, Some(priced))
        }
    };
    let rated = rating::rate_sessions(derived.sessions, card)?;
    Ok(GroupResult {
        rows_used: rows_used as u64,
        rejected,
        lines: rating::lines_of(&rated)?,
        unsettled: rating::unsettled(&rated, coverage)?,
        stats: derived.stats,
        sessions: rated.select(rating::RATED_SESSION_COLUMNS)?,
        violations: rating::rate_violations(derived.violations, card)?,
        meta,
    })
}
