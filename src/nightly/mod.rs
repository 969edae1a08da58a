//! Nightly runs: one UTC day of the message log in; that day's closed sessions and violations,
//! refreshed month-to-date invoices and the state for the next night out.
//!
//! The state carries raw events, not derived facts: for every conversation key with a session
//! or window still open at midnight it keeps the events the next night needs to derive the
//! same sessions again through [`crate::sessions::derive`] (see [`night`]). A night D writes
//! the sessions that closed during its day (`D < ends_at <= D+1`) and the violations
//! timestamped that day; sessions still open are listed in the month-to-date folder and
//! written by the night they close. So the nights of a month, one after another, give the same
//! sessions and violations as one run over the month.
//!
//! Layout under the output folder:
//! - `sessions/date=D/part-0.parquet`, `violations/date=D/part-0.parquet`: per night;
//! - `month-to-date/`: the invoices of the periods still open (`final`, `draft` or
//!   `partial`), their lines, open sessions, manifest ([`month_to_date`]);
//! - `closed/period=P/`: the invoices of a period the history has closed, written once;
//! - `state/date=D/`: what night D carried forward; a night has run when its folder exists;
//! - `state/inputs.json`: the input files the history has read ([`inputs`]).
//!
//! Every run builds the whole new folder beside the old one (linking the files it keeps) and
//! exchanges the two in one atomic step ([`crate::folder`]): a run of several nights (a
//! recompute) is in place entirely or not at all.

pub mod inputs;
pub mod merge;
pub mod meta;
pub mod month_to_date;
pub mod night;

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

use chrono::{Days, NaiveDate};
use polars::prelude::*;

use crate::error::{Error, InputError, NightError, Result};
use crate::folder::{self, OutFolder};
use crate::load;
use crate::partition;
use crate::rates::RateCard;
use crate::rating::revision;
use crate::schema::DAY_NS;
use crate::sessions::timed;
use crate::write::{self, STATE_DIR};

pub use night::NightStats;

pub const MONTH_TO_DATE_DIR: &str = "month-to-date";
pub use month_to_date::CLOSED_DIR;
/// Duplicates are recognised against the message ids of this many previous nights.
pub const DEDUP_NIGHTS: u64 = 7;
const SESSIONS_DIR: &str = "sessions";
const VIOLATIONS_DIR: &str = "violations";
/// `--rejects`: each night's rows set aside.
pub const REJECTS_DIR: &str = "rejects";

/// A validated `convbill run --date`.
#[derive(Debug, Clone)]
pub struct NightConfig {
    pub input: PathBuf,
    pub out: PathBuf,
    pub date: NaiveDate,
    /// Rerunning an earlier night also recomputes every later night that has run.
    pub recompute_later: bool,
    /// `--rates`: the rate card; `None` rates by the article. A card that rates the nights
    /// already run otherwise is refused ([`NightError::RateCardChanged`]).
    pub rates: Option<PathBuf>,
    /// `--init`: start a new history (the output folder must not hold one).
    pub init: bool,
    /// `--allow-empty`: run the night even if the input has no messages on its day.
    pub allow_empty: bool,
    /// `--strict-late-input`: refuse to run while input files hold messages of nights already
    /// billed that those nights did not read, instead of warning.
    pub strict_late_input: bool,
    /// `--catch-up`: run every night missing before `date` first, in order, each one put in
    /// place on its own.
    pub catch_up: bool,
    /// `--accept-removed`: a recompute drops the messages the nights billed that the input no
    /// longer holds, instead of refusing.
    pub accept_removed: bool,
    /// `--rejects`: rows of the nights' days that fail a check are set aside in each night's
    /// `rejects/date=D/part-0.parquet` instead of stopping the run.
    pub rejects: bool,
    /// Rows of a night derived at a time at most, in groups of whole accounts (see
    /// [`crate::partition`]).
    pub partition_rows: u64,
    /// A night of more rows than this is spilled to disk by group instead of kept in memory.
    pub memory_rows: u64,
    /// `--shard I/N`: only the accounts of bucket `I` ([`crate::shard`]); the history in
    /// `out` is this shard's.
    pub shard: Option<crate::shard::Shard>,
}

impl NightConfig {
    pub fn new(input: impl Into<PathBuf>, out: impl Into<PathBuf>, date: NaiveDate) -> Self {
        NightConfig {
            input: input.into(),
            out: out.into(),
            date,
            recompute_later: false,
            rates: None,
            init: false,
            allow_empty: false,
            strict_late_input: false,
            catch_up: false,
            accept_removed: false,
            rejects: false,
            partition_rows: crate::partition::DEFAULT_MAX_ROWS,
            memory_rows: crate::partition::IN_MEMORY_ROWS,
            shard: None,
        }
    }
}

/// What a nightly run did.
#[derive(Debug, Clone)]
pub struct NightReport {
    pub new_history: bool,
    /// What the run cleaned up after a run that crashed, if anything.
    pub recovered: Option<&'static str>,
    pub nights: Vec<NightStats>,
    /// Invoices whose quota or amount the run changed: all of them when it reran a night,
    /// else the final ones that changed (which only a rerun can do).
    pub invoice_changes: Vec<revision::Change>,
    /// The month-to-date invoices by status.
    pub invoices: BTreeMap<&'static str, usize>,
    /// The periods the run's nights closed (written to `closed/period=P/`), in order.
    pub closed: Vec<month_to_date::ClosedPeriod>,
    /// The history's first and last night, after this run.
    pub history: (NaiveDate, NaiveDate),
    /// Input files that hold messages of nights already billed that those nights did not read.
    pub late: Vec<inputs::LateFile>,
    /// `--accept-removed`: the recomputed nights and how many of the messages each had billed
    /// the input no longer held (dropped from the history).
    pub dropped: Vec<(NaiveDate, u64)>,
    /// With `[meta]`: what Meta charged in the periods still open (`month-to-date/`).
    pub meta: Option<crate::meta::cost::MetaSummary>,
}

fn night_dir(date: NaiveDate) -> String {
    format!("date={date}")
}

/// Midnight UTC at the start of `date`, in nanoseconds.
pub fn start_ns(date: NaiveDate) -> i64 {
    date.and_hms_opt(0, 0, 0)
        .expect("midnight exists")
        .and_utc()
        .timestamp_nanos_opt()
        .expect("dates within the nanosecond range")
}

/// The nights whose state exists under `out`, in order.
pub fn nights_run(out: &Path) -> Result<Vec<NaiveDate>> {
    let dir = out.join(STATE_DIR);
    if !dir.is_dir() {
        return Ok(Vec::new());
    }
    let mut nights = Vec::new();
    for entry in fs::read_dir(&dir).map_err(write::io_error(&dir))? {
        let entry = entry.map_err(write::io_error(&dir))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if let Some(date) = name.strip_prefix("date=") {
            if let Ok(date) = date.parse::<NaiveDate>() {
                if entry.path().is_dir() {
                    nights.push(date);
                }
            }
        }
    }
    nights.sort();
    Ok(nights)
}

/// Which nights a run of `config.date` computes, given the nights already run.
fn plan(config: &NightConfig, history: &[NaiveDate]) -> Result<Vec<NaiveDate>> {
    let date = config.date;
    let (Some(&first), Some(&last)) = (history.first(), history.last()) else {
        return Ok(vec![date]);
    };
    let next = last + Days::new(1);
    if date > next {
        return Err(NightError::MissingNight {
            date,
            missing: next,
            last,
        }
        .into());
    }
    if date < first {
        return Err(NightError::BeforeHistory { date, first }.into());
    }
    let later: Vec<NaiveDate> = history.iter().copied().filter(|d| *d > date).collect();
    if !later.is_empty() && !config.recompute_later {
        return Err(NightError::StaleNights { date, later }.into());
    }
    Ok(std::iter::once(date).chain(later).collect())
}

/// Checks the output folder against `--init`: a new history only with it, an existing one only
/// without it, and never in a folder that holds something else.
fn check_folder(config: &NightConfig, history: &[NaiveDate]) -> Result<()> {
    let out = &config.out;
    if let (Some(&first), Some(&last)) = (history.first(), history.last()) {
        if config.init {
            return Err(NightError::AlreadyAHistory {
                path: out.clone(),
                first,
                last,
            }
            .into());
        }
        return Ok(());
    }
    if !out.exists() {
        return match config.init {
            true => Ok(()),
            false => Err(NightError::NoHistory {
                path: out.clone(),
                exists: false,
            }
            .into()),
        };
    }
    let mut entries = fs::read_dir(out).map_err(write::io_error(out))?;
    // An empty folder, or one whose only entry is an empty `state/`.
    let empty = entries.all(|e| {
        e.is_ok_and(|e| {
            e.file_name() == STATE_DIR
                && fs::read_dir(e.path()).is_ok_and(|mut inner| inner.next().is_none())
        })
    });
    match (empty, config.init) {
        (true, true) => Ok(()),
        (true, false) => Err(NightError::NoHistory {
            path: out.clone(),
            exists: true,
        }
        .into()),
        (false, _) => Err(NightError::NotAHistory { path: out.clone() }.into()),
    }
}

/// Refuses a night that has not ended yet by the run's clock.
fn check_ended(date: NaiveDate) -> Result<()> {
    let ends = start_ns(date) + DAY_NS;
    let now = chrono::Utc::now()
        .timestamp_nanos_opt()
        .expect("the clock is within the nanosecond range");
    if ends <= now {
        return Ok(());
    }
    Err(NightError::NotEnded {
        date,
        ends: load::format_ns(ends),
        now: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
    }
    .into())
}

/// Where a run reads the history: what it has written so far in its staging folder, else the
/// output folder as it was.
pub(crate) struct Tree<'a> {
    pub out: &'a Path,
    pub staging: &'a Path,
}

impl Tree<'_> {
    /// The state folder of `night`, if that night has run (or was just computed).
    pub fn state(&self, night: NaiveDate) -> Option<PathBuf> {
        let relative = Path::new(STATE_DIR).join(night_dir(night));
        [self.staging, self.out]
            .iter()
            .map(|root| root.join(&relative))
            .find(|dir| dir.is_dir())
    }
}

/// Removes the staging folder unless the run put it in place.
struct Build<'a> {
    folder: &'a OutFolder,
    staging: PathBuf,
    switched: bool,
}

impl Drop for Build<'_> {
    fn drop(&mut self) {
        if !self.switched {
            let _ = fs::remove_dir_all(&self.staging);
        }
    }
}

impl Build<'_> {
    /// Links what the run did not rewrite from the old folder and puts the new one in place.
    fn switch(mut self, rewritten: &BTreeSet<PathBuf>) -> Result<()> {
        folder::link_tree(&self.folder.out, &self.staging, rewritten)?;
        crate::error::check_interrupt()?;
        self.folder.switch(&self.staging)?;
        self.switched = true;
        Ok(())
    }
}

/// Runs the night `config.date` (and, when asked, every later night already run).
pub fn run(config: &NightConfig) -> Result<NightReport> {
    // The rate card is checked before anything else is touched; then the output folder's
    // lock is taken before anything under or beside it is.
    let card = crate::rates::load_or_built_in(config.rates.as_deref())?;
    let folder = OutFolder::new(&config.out)?;
    folder.check_apart_from(&config.input)?;
    let _lock = folder.lock()?;
    let recovered = folder.recover()?;
    let history = nights_run(&config.out)?;
    check_folder(config, &history)?;
    check_ended(config.date)?;
    // `--catch-up`: the missing nights up to `date`, one after another.
    let dates: Vec<NaiveDate> = match (config.catch_up, history.last()) {
        (true, Some(&last)) if config.date > last + Days::new(1) => (last + Days::new(1))
            .iter_days()
            .take_while(|d| *d <= config.date)
            .collect(),
        _ => vec![config.date],
    };
    let mut report: Option<NightReport> = None;
    for (i, &date) in dates.iter().enumerate() {
        let step = NightConfig {
            date,
            ..config.clone()
        };
        let history = match i {
            0 => history.clone(),
            _ => nights_run(&config.out)?,
        };
        let done = crate::error::check_interrupt()
            .and_then(|()| run_nights(&step, &card, &folder, &history));
        let done = match done {
            Ok(done) => done,
            Err(Error::Interrupted) if i > 0 => {
                return Err(Error::CatchUpInterrupted {
                    first: dates[0],
                    last: dates[i - 1],
                    failed: date,
                })
            }
            Err(e) if i > 0 => {
                return Err(Error::CatchUpStopped {
                    first: dates[0],
                    last: dates[i - 1],
                    failed: date,
                    source: Box::new(e),
                })
            }
            Err(e) => return Err(e),
        };
        report = Some(match report {
            None => done,
            Some(mut so_far) => {
                so_far.nights.extend(done.nights);
                so_far.invoice_changes.extend(done.invoice_changes);
                so_far.dropped.extend(done.dropped);
                so_far.closed.extend(done.closed);
                NightReport {
                    nights: so_far.nights,
                    invoice_changes: so_far.invoice_changes,
                    dropped: so_far.dropped,
                    closed: so_far.closed,
                    ..done
                }
            }
        });
    }
    let mut report = report.expect("at least one night ran");
    report.recovered = recovered;
    report.new_history = history.is_empty();
    Ok(report)
}

/// Runs the night `config.date` (and, when asked, every later night already run) on the
/// history `history` of the locked `folder`, and puts the result in place.
fn run_nights(
    config: &NightConfig,
    card: &RateCard,
    folder: &OutFolder,
    history: &[NaiveDate],
) -> Result<NightReport> {
    let nights = plan(config, history)?;
    check_card(&config.out, nights[0], card)?;
    if !history.is_empty() {
        check_shard(&config.out, config.shard)?;
    }
    let new_history = history.is_empty();
    let history_start = history.first().copied().unwrap_or(config.date);
    let first = *nights.first().expect("a plan has a night");

    // The input files: only new or changed ones are hashed, only those that can hold the
    // nights' days are read.
    crate::progress::stage("checking input files", None);
    let catalog = timed("listed, hashed and catalogued the input files", || {
        inputs::Catalog::update(
            &inputs::Catalog::read(&config.out)?,
            load::discover(&config.input)?,
            first,
        )
    })?;
    let late = timed("looked for late files", || {
        catalog.late_files(history_start, &config.out, card, config.shard)
    })?;
    if config.strict_late_input {
        if let Some(refusal) = inputs::refusal(&late) {
            return Err(InputError::Late(Box::new(refusal)).into());
        }
    }
    // Only a rerun of a night that had run can change an invoice behind finance's back.
    let rerun = nights.iter().any(|n| history.contains(n));

    let build = Build {
        folder,
        staging: folder.create_staging()?,
        switched: false,
    };
    let tree = Tree {
        out: &config.out,
        staging: &build.staging,
    };
    let mut rewritten = BTreeSet::new();
    let mut stats = Vec::with_capacity(nights.len());
    let mut open = BTreeMap::new();
    let mut dropped = Vec::new();
    for &date in &nights {
        crate::error::check_interrupt()?;
        let night = run_night(
            config,
            date,
            &catalog,
            &tree,
            card,
            &folder.spill_path(),
            history.contains(&date),
        )?;
        if let Some((missing, account_id, message_id)) = night.missing {
            if !config.accept_removed {
                let state = config.out.join(STATE_DIR).join(night_dir(date));
                let held: BTreeSet<&str> = catalog.files.iter().map(|f| f.path.as_str()).collect();
                let absent_files = NightStats::read(&state)?
                    .input_files
                    .into_iter()
                    .map(|f| f.path)
                    .filter(|path| !held.contains(path.as_str()))
                    .collect();
                return Err(NightError::InputLacksNight {
                    date,
                    missing,
                    account_id,
                    message_id,
                    absent_files,
                }
                .into());
            }
            dropped.push((date, missing));
        }
        // A shard's night is empty when no file it read holds a message of the day, of any
        // account: its own accounts may have had none.
        if date == config.date
            && !config.allow_empty
            && night.checked == 0
            && (config.shard.is_none() || night.seen == 0)
        {
            return Err(InputError::EmptyNight {
                path: config.input.clone(),
                date,
            }
            .into());
        }
        stats.push(night.stats);
        open.insert(date, night.open);
        // A night rerun without `--rejects` keeps no rejects of an earlier run.
        for kind in [
            SESSIONS_DIR,
            VIOLATIONS_DIR,
            STATE_DIR,
            REJECTS_DIR,
            meta::UNITS_DIR,
        ] {
            rewritten.insert(Path::new(kind).join(night_dir(date)));
        }
    }
    let all_nights: Vec<NaiveDate> = history
        .iter()
        .copied()
        .chain(nights.iter().copied())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let history_span = (history_start, *all_nights.last().expect("a night has run"));
    crate::progress::stage("writing month-to-date", None);
    let written = timed("wrote month-to-date", || {
        month_to_date::write(
            &tree,
            &month_to_date::Run {
                nights: &all_nights,
                computed: &nights,
                open: &open,
                input: &config.input,
                late: &late,
                card,
                shards: &[],
            },
        )
    })?;
    rewritten.extend(written.rewritten);
    rewritten.insert(PathBuf::from(MONTH_TO_DATE_DIR));
    rewritten.insert(Path::new(STATE_DIR).join(revision::REGISTER_FILE));
    catalog.write(&build.staging)?;
    rewritten.insert(inputs::Catalog::relative_path());
    if let Some(shard) = config.shard {
        let record = ShardRecord {
            shard: shard.to_string(),
        };
        write::write_json(&build.staging.join(STATE_DIR), SHARD_FILE, &record)?;
        rewritten.insert(Path::new(STATE_DIR).join(SHARD_FILE));
    }
    timed("linked the rest and switched", || build.switch(&rewritten))?;

    let mut by_status = BTreeMap::new();
    for invoice in &written.invoices.invoices {
        *by_status.entry(invoice.status).or_default() += 1;
    }
    Ok(NightReport {
        new_history,
        recovered: None,
        nights: stats,
        invoice_changes: written
            .changes
            .into_iter()
            .filter(|c| rerun || c.touches_a_final_invoice())
            .collect(),
        invoices: by_status,
        closed: written.closed,
        history: history_span,
        late,
        dropped,
        meta: written.meta,
    })
}

/// What [`run_night`] did.
struct NightRun {
    stats: NightStats,
    /// What its month-to-date needs of the night's open sessions.
    open: night::OpenSummary,
    /// A rerun night: how many of the messages it billed before the input lacks, and the
    /// first of them.
    missing: Option<(u64, String, String)>,
    /// Rows of the night's day that passed the checks.
    checked: u64,
    /// Rows of the night's day read, of every account (a shard keeps only its own), plus the
    /// files of other buckets' folders that hold the day.
    seen: u64,
}

/// Reads the rows of `date`'s day into groups of whole accounts, computes the night group by
/// group and writes it into the staging folder of `tree`. `rerun`: the night ran before.
fn run_night(
    config: &NightConfig,
    date: NaiveDate,
    catalog: &inputs::Catalog,
    tree: &Tree,
    card: &RateCard,
    spill_dir: &Path,
    rerun: bool,
) -> Result<NightRun> {
    let day = (start_ns(date), start_ns(date) + DAY_NS);
    let files = catalog.files_overlapping(day);
    let input_files = files.iter().map(night::InputFileRecord::of).collect();
    let overlapping = files.len();
    let mut source = load::Source::of_shard(files, config.shard)?;
    // A shard of a log laid out by bucket: other buckets' files that hold the day.
    let elsewhere = (overlapping - source.files.len()) as u64;
    source.checks.keep_rejects = config.rejects;
    source.checks.meta = card.meta.is_some();
    crate::progress::stage(&format!("night {date}: counting rows"), None);
    let account_rows = timed("counted rows per account", || source.account_rows())?;
    let plan = partition::plan(&account_rows, config.partition_rows);
    let accounts = night::Accounts::of_plan(&plan);
    let mut parts = partition::Parts::new(&plan, spill_dir, config.memory_rows)?;
    crate::progress::stage(
        &format!("night {date}: reading rows"),
        Some(account_rows.iter().map(|(_, rows)| rows).sum()),
    );
    let (read, _) = timed("read and checked the night's rows", || {
        crate::read_into(&mut source, Some(day), &mut parts)
    })?;
    tracing::debug!(rows = read, groups = plan.groups.len(), "read the night");
    let paths: Vec<String> = source.files.iter().map(|f| f.path.clone()).collect();
    let input = night::NightInput {
        night: date,
        paths: &paths,
        keep_rejects: config.rejects,
        tree,
        card,
        rerun,
    };
    let mut writer = night::NightWriter::create(date, tree, card)?;
    crate::progress::stage(
        &format!("night {date}: computing groups"),
        Some(plan.groups.len() as u64),
    );
    partition::in_order(
        parts.finish()?,
        crate::WORKERS,
        plan.budget_rows(crate::WORKERS),
        |group, rows| night::compute_group(&input, &accounts[group], rows),
        |_, part| {
            crate::progress::advance(1);
            timed("appended the group's part", || writer.append(part))
        },
    )?;
    let (missing, checked) = (writer.missing.clone(), writer.checked());
    let rejected = config.rejects.then(|| std::mem::take(&mut source.rejected));
    let (stats, open) = timed("wrote the night", || {
        writer.finish(tree, card, &paths, rejected, input_files)
    })?;
    Ok(NightRun {
        stats,
        open,
        missing,
        checked,
        seen: source.rows_seen + elsewhere,
    })
}

pub(crate) fn read_parquet(path: &Path) -> Result<DataFrame> {
    let file = fs::File::open(path).map_err(write::io_error(path))?;
    Ok(ParquetReader::new(file).finish()?)
}

/// The fingerprint a night records: what the card says of every day its sessions can fall on
/// in any zone (up to the day after the UTC night).
fn card_fingerprint(card: &RateCard, night: NaiveDate) -> String {
    card.history_fingerprint(night + Days::new(1))
}

/// `state/shard.json`: the shard a sharded history bills (absent for an unsharded one).
pub(crate) const SHARD_FILE: &str = "shard.json";

#[derive(serde::Serialize, serde::Deserialize)]
pub(crate) struct ShardRecord {
    /// `I/N`.
    pub shard: String,
}

/// Refuses to continue a history with another shard than the one it bills (or with a shard,
/// an unsharded one, or without, a sharded one): its state holds only that shard's accounts.
fn check_shard(out: &Path, shard: Option<crate::shard::Shard>) -> Result<()> {
    let recorded: Option<ShardRecord> =
        write::read_json_if_exists(&out.join(STATE_DIR).join(SHARD_FILE))?;
    let history = recorded.map(|r| r.shard);
    let asked = shard.map(|s| s.to_string());
    if history == asked {
        return Ok(());
    }
    Err(NightError::ShardChanged {
        path: out.to_path_buf(),
        history,
        asked,
    }
    .into())
}

/// Refuses to continue a history with a card that rates its earlier nights otherwise (other
/// zones, plans, accounts' terms, or price versions in force by then). A card that only adds
/// versions starting later continues it.
fn check_card(out: &Path, night: NaiveDate, card: &RateCard) -> Result<()> {
    let previous_night = night - Days::new(1);
    let dir = out.join(STATE_DIR).join(night_dir(previous_night));
    if !dir.is_dir() {
        return Ok(());
    }
    // A state written before rate cards existed records none: it cannot be continued either.
    let previous = fs::read_to_string(dir.join(night::CARD))
        .map(|text| text.trim().to_string())
        .unwrap_or_else(|_| "none recorded".into());
    if previous == card_fingerprint(card, previous_night) {
        return Ok(());
    }
    Err(NightError::RateCardChanged {
        date: night,
        previous: previous_night,
        until: night,
    }
    .into())
}
