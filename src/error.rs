//! The library's errors. Each one names what a user needs to find the problem (file, column,
//! row, value) and maps to one documented exit code.

use std::path::{Path, PathBuf};

/// The input a run or `explain` reads when given no `--input`: the sample in the source tree.
pub const DEFAULT_INPUT: &str = "sample-data";

/// Exit codes of the `convbill` binary. Documented in the README; asserted in the tests.
pub mod exit {
    /// The run finished and wrote all its outputs.
    pub const SUCCESS: i32 = 0;
    /// An unexpected failure: a bug, or the output could not be written.
    pub const INTERNAL: i32 = 1;
    /// The command line or the rate card was wrong (clap's own code for usage errors).
    pub const USAGE: i32 = 2;
    /// The input data was refused: missing files, a bad schema, a bad value.
    pub const DATA: i32 = 3;
    /// Nothing was done: another convbill run holds the output folder's lock.
    pub const BUSY: i32 = 4;
    /// `convbill reconcile --fail-on-difference`: convbill's Meta units and Meta's analytics
    /// differ beyond the tolerance (the reconciliation is written).
    pub const DIFFERENCES: i32 = 5;
    /// `convbill fetch-meta-analytics`: Meta's Graph API refused the request (an expired token,
    /// a missing permission) or kept failing (rate limits, server errors) after every attempt.
    pub const META_API: i32 = 6;
    /// Interrupted (Ctrl-C, SIGTERM): stopped without writing anything.
    pub const INTERRUPTED: i32 = 130;
}

/// A nightly run that does not fit the history kept in the output folder.
#[derive(Debug, thiserror::Error)]
pub enum NightError {
    #[error("cannot run {date}: night {missing} has not run (the history ends with night {last})")]
    MissingNight {
        date: chrono::NaiveDate,
        missing: chrono::NaiveDate,
        last: chrono::NaiveDate,
    },

    #[error("cannot run {date}: the history in this output folder starts on {first}")]
    BeforeHistory {
        date: chrono::NaiveDate,
        first: chrono::NaiveDate,
    },

    #[error("rerunning {date} would make later nights stale: {}", later.iter().map(|d| d.to_string()).collect::<Vec<_>>().join(", "))]
    StaleNights {
        date: chrono::NaiveDate,
        later: Vec<chrono::NaiveDate>,
    },

    #[error("the input lacks {missing} message(s) that night {date} read before (for example `{account_id}` / `{message_id}`); recomputing it would drop them")]
    InputLacksNight {
        date: chrono::NaiveDate,
        missing: u64,
        account_id: String,
        message_id: String,
        /// The input files the night read that the input no longer holds (by path).
        absent_files: Vec<String>,
    },

    #[error("`{}` is not empty and holds no nightly history (no `state/`)", path.display())]
    NotAHistory { path: PathBuf },

    #[error("`{}` holds {}; this run is {}: each shard keeps its own history, in its own `--out`", path.display(), history.as_ref().map_or("an unsharded history".to_string(), |s| format!("the history of shard {s}")), asked.as_ref().map_or("unsharded (no `--shard`)".to_string(), |s| format!("shard {s}")))]
    ShardChanged {
        path: PathBuf,
        history: Option<String>,
        asked: Option<String>,
    },

    #[error("`{}` holds no nightly history", path.display())]
    NoHistory { path: PathBuf, exists: bool },

    #[error("`--init` starts a new history, but `{}` already holds one (nights {first} to {last})", path.display())]
    AlreadyAHistory {
        path: PathBuf,
        first: chrono::NaiveDate,
        last: chrono::NaiveDate,
    },

    #[error("cannot run {date} yet: the night ends at {ends}, after this run's clock ({now})")]
    NotEnded {
        date: chrono::NaiveDate,
        ends: String,
        now: String,
    },

    #[error("cannot run {date} with this rate card: it rates the days up to {until} otherwise than the card night {previous} was rated by (plans, accounts, time zones or price versions in force by then differ; with `[meta]`, also Meta's model, WABAs and their zones, and the Meta rates, tiers and markets in force by then)")]
    RateCardChanged {
        date: chrono::NaiveDate,
        previous: chrono::NaiveDate,
        until: chrono::NaiveDate,
    },
}

/// A problem with the input data. Nothing is written when one occurs.
#[derive(Debug, thiserror::Error)]
pub enum InputError {
    #[error("input `{}` does not exist", path.display())]
    NotFound { path: PathBuf },

    #[error("no Parquet files (`*.parquet`) found under `{}`", path.display())]
    NoFiles { path: PathBuf },

    #[error("failed to read `{}`: {reason}", path.display())]
    Unreadable { path: PathBuf, reason: String },

    #[error("no saved Meta analytics (`*.json`) found under `{}`", path.display())]
    NoAnalytics { path: PathBuf },

    #[error("Meta analytics {} {problem}", files.join(", "))]
    MetaAnalyticsOutside { files: Vec<String>, problem: String },

    #[error("Meta analytics `{}` {reason}", path.display())]
    MetaAnalytics {
        path: PathBuf,
        reason: crate::meta::analytics::AnalyticsError,
    },

    #[error("`{}` has no column `{column}` (required columns: {required})", path.display())]
    MissingColumn {
        path: PathBuf,
        column: String,
        required: String,
    },

    #[error("column `{column}` in `{}` is {found}, expected {expected}", path.display())]
    WrongType {
        path: PathBuf,
        column: String,
        found: String,
        expected: &'static str,
    },

    #[error("column `{column}` in `{}` is null at row {row}; the column is required", path.display())]
    NullValue {
        path: PathBuf,
        column: String,
        row: u64,
    },

    #[error("column `{column}` in `{}` has unknown value `{value}` at row {row} (accepted: {accepted})", path.display())]
    UnknownValue {
        path: PathBuf,
        column: String,
        row: u64,
        value: String,
        accepted: String,
    },

    #[error("column `{column}` in `{}` has value `{value}` at row {row}, which is not valid for an {direction} message (accepted: {accepted})", path.display())]
    KindForDirection {
        path: PathBuf,
        column: String,
        row: u64,
        value: String,
        direction: &'static str,
        accepted: &'static str,
    },

    #[error("column `category` in `{}` is missing at row {row}, a delivered WhatsApp template: Meta's pricing (the rate card's `[meta]`) needs `marketing`, `utility` or `authentication`", path.display())]
    MissingCategory { path: PathBuf, row: u64 },

    #[error("column `user_id` in `{}` has value `{value}` at row {row}, which is not a WhatsApp number: Meta's pricing (the rate card's `[meta]`) needs the digits of an E.164 number without `+`: 6 to 15 of them, the first not 0", path.display())]
    NotAPhoneNumber {
        path: PathBuf,
        row: u64,
        value: String,
    },

    #[error("message `{message_id}` of account `{account_id}` cannot be priced by Meta's rules: {reason} ({place})")]
    MetaUnpriced {
        account_id: String,
        message_id: String,
        reason: String,
        /// The message's file and row.
        place: String,
    },

    #[error("column `timestamp` in `{}` at row {row} is outside the range convbill can represent (years 1678 to 2261)", path.display())]
    TimestampOutOfRange { path: PathBuf, row: u64 },

    #[error("message `{message_id}` of account `{account_id}` was billed on night {night}, and is logged again with different contents (channel, business, user, direction or kind) in {place} (a duplicate must repeat the same event)")]
    ConflictsWithEarlierNight {
        account_id: String,
        message_id: String,
        night: String,
        place: String,
    },

    #[error("message `{}` of account `{}` is logged twice with different `{}`: `{}` in {}, `{}` in {} (a duplicate must repeat the same event)", .0.message_id, .0.account_id, .0.column, .0.first_value, .0.first, .0.second_value, .0.second)]
    ConflictingDuplicate(Box<Conflict>),

    #[error("the input `{}` has no messages on {date}: the night has nothing to bill", path.display())]
    EmptyNight {
        path: PathBuf,
        date: chrono::NaiveDate,
    },

    #[error(transparent)]
    Late(Box<LateInput>),

    #[error("column `timestamp` in `{}` has implausible value `{value}` at row {row} (accepted: {earliest} to {latest}, a day after the run started)", path.display())]
    ImplausibleTimestamp {
        path: PathBuf,
        row: u64,
        value: String,
        earliest: String,
        latest: String,
    },
}

/// Input files added or changed under nights already billed (see [`crate::nightly`]).
#[derive(Debug, thiserror::Error)]
#[error("{} input file(s) hold messages of nights already billed that those nights did not read: {}", files.len(), files.join("; "))]
pub struct LateInput {
    /// One description per file: its path, what happened to it, and the days it holds.
    pub files: Vec<String>,
    /// The earliest night to recompute.
    pub recompute_from: chrono::NaiveDate,
    /// Some of the files also lack messages the nights billed: the recompute must accept that.
    pub accept_removed: bool,
}

/// Two rows with the same (`account_id`, `message_id`) and different contents.
#[derive(Debug)]
pub struct Conflict {
    pub account_id: String,
    pub message_id: String,
    /// The first column in which they differ.
    pub column: String,
    /// Where the first row is (file and row) and its value in `column`.
    pub first: String,
    pub first_value: String,
    pub second: String,
    pub second_value: String,
}

/// Every error the library returns.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Input(#[from] InputError),

    #[error(transparent)]
    Night(#[from] NightError),

    #[error(transparent)]
    RateCard(#[from] crate::rates::RateCardError),

    #[error("failed to write `{}`", path.display())]
    Output {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("another convbill run is working on this output folder (lock `{}` is held)", path.display())]
    Busy { path: PathBuf },

    #[error("`--out` `{}` is a file, not a folder", path.display())]
    OutIsFile { path: PathBuf },

    #[error("`--out` `{}` is inside `--input` `{}`: convbill would read its own outputs as messages", out.display(), input.display())]
    OutInsideInput { out: PathBuf, input: PathBuf },

    #[error("`--out` `{}` does not name a folder", path.display())]
    OutUnnamed { path: PathBuf },

    #[error("`--out` `{}` is a mount point, which cannot be replaced as a whole", path.display())]
    OutIsMountPoint { path: PathBuf },

    #[error("refusing to replace `{}`: it exists and is not a convbill output folder (no manifest.json)", path.display())]
    OutputNotOurs { path: PathBuf },

    #[error("refusing to replace `{}`: it holds {found}, which convbill did not write there (no `.convbill-analytics`)", path.display())]
    AnalyticsNotOurs { path: PathBuf, found: String },

    #[error("refusing to replace `{}`: it holds a nightly history (`state/`)", path.display())]
    NightlyHistory { path: PathBuf },

    #[error(transparent)]
    Polars(#[from] polars::error::PolarsError),

    #[error("interrupted: stopped before writing anything; the output folder is as it was")]
    Interrupted,

    /// `convbill explain`: a selection that names no messages, or too many conversations (then
    /// listed as `candidates`), or a bad value.
    #[error("{problem}{}", candidates.iter().map(|c| format!("\n  {c}")).collect::<String>())]
    Explain {
        problem: String,
        candidates: Vec<String>,
    },

    /// A command line that cannot be carried out as given (found after parsing it: a shard
    /// index the scheduler's environment does not give).
    #[error("{problem}")]
    Usage { problem: String },

    /// `convbill merge`: shard folders that do not make one run together, or cannot be read.
    #[error("{problem}")]
    Merge { problem: String },

    /// `convbill reconcile`: an output folder or rate card it cannot reconcile with.
    #[error("{problem}")]
    Reconcile { problem: String },

    /// `convbill fetch-meta-analytics`: a request it will not make (no token, a bad WABA id or
    /// period, an address the token must not go to).
    #[error("{problem}")]
    MetaApiSetup { problem: String },

    /// `convbill fetch-meta-analytics`: Meta's Graph API refused a request, or kept failing
    /// after every attempt. Nothing is written.
    #[error("Meta's Graph API, {what}: {problem}")]
    MetaApi {
        what: String,
        problem: String,
        hint: Option<String>,
    },

    /// An interrupted catch-up: the nights before `failed` are in place.
    #[error(
        "interrupted: caught up nights {first} to {last}, which are in place; night {failed} did not run"
    )]
    CatchUpInterrupted {
        first: chrono::NaiveDate,
        last: chrono::NaiveDate,
        failed: chrono::NaiveDate,
    },

    #[error("caught up nights {first} to {last}; night {failed} did not run")]
    CatchUpStopped {
        first: chrono::NaiveDate,
        last: chrono::NaiveDate,
        failed: chrono::NaiveDate,
        #[source]
        source: Box<Error>,
    },
}

static INTERRUPTED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Asks the running pipeline to stop at its next step (called by the binary's signal handler).
pub fn interrupt() {
    INTERRUPTED.store(true, std::sync::atomic::Ordering::SeqCst);
}

/// `Err(Error::Interrupted)` once [`interrupt`] has been called. The pipeline checks it
/// between chunks, between groups and before it swaps outputs into place.
pub fn check_interrupt() -> Result<()> {
    match INTERRUPTED.load(std::sync::atomic::Ordering::SeqCst) {
        true => Err(Error::Interrupted),
        false => Ok(()),
    }
}

impl Error {
    /// The exit code the binary uses for this error.
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::Input(_) | Error::Merge { .. } => exit::DATA,
            Error::Busy { .. } => exit::BUSY,
            Error::Night(_) | Error::RateCard(_) => exit::USAGE,
            Error::OutputNotOurs { .. }
            | Error::AnalyticsNotOurs { .. }
            | Error::NightlyHistory { .. }
            | Error::OutIsFile { .. }
            | Error::OutInsideInput { .. }
            | Error::OutIsMountPoint { .. }
            | Error::OutUnnamed { .. }
            | Error::Explain { .. }
            | Error::Reconcile { .. }
            | Error::Usage { .. }
            | Error::MetaApiSetup { .. } => exit::USAGE,
            Error::MetaApi { .. } => exit::META_API,
            Error::Output { .. } | Error::Polars(_) => exit::INTERNAL,
            Error::Interrupted | Error::CatchUpInterrupted { .. } => exit::INTERRUPTED,
            Error::CatchUpStopped { source, .. } => source.exit_code(),
        }
    }

    /// A one-line suggestion printed after the error, where there is one.
    pub fn hint(&self) -> Option<String> {
        match self {
            Error::CatchUpStopped { source, .. } => source.hint(),
            Error::MetaApi { hint, .. } => hint.clone(),
            // Only the default path gets the hint: a path the user gave is named in the error.
            Error::Input(InputError::NotFound { path }) if path == Path::new(DEFAULT_INPUT) => {
                Some(
                    "`sample-data` (the default input) is the sample folder in convbill's source \
                     tree: run from there, or pass `--input PATH`"
                        .into(),
                )
            }
            Error::Input(InputError::NoFiles { .. }) => Some(
                "convbill reads files ending in `.parquet`, in the folder and all folders below it"
                    .into(),
            ),
            Error::Input(InputError::MissingColumn { .. }) => Some(
                "column names are exact and lower case; see the input schema in the README".into(),
            ),
            Error::Input(InputError::EmptyNight { date, .. }) => Some(format!(
                "if the logs of {date} have not landed yet, run again once they have; if the day truly had no traffic, add `--allow-empty`"
            )),
            Error::Input(InputError::Late(late)) => Some(format!(
                "rerun `--date {} --recompute-later{}` to bill them, or leave out `--strict-late-input` to go on with a warning",
                late.recompute_from,
                if late.accept_removed { " --accept-removed" } else { "" }
            )),
            Error::Night(NightError::MissingNight { missing, .. }) => Some(format!(
                "run the missing nights in order, starting with `--date {missing}`, or add `--catch-up` to run them all first"
            )),
            Error::Night(NightError::BeforeHistory { first, .. }) => Some(format!(
                "a history cannot grow backwards; to bill from an earlier day, start a new history there in a new `--out` with `--init` and run every night up to {first} and on"
            )),
            Error::Night(NightError::NoHistory { exists: false, .. }) => Some(
                "check the `--out` path; to start a new history there, add `--init` (once, on its first night)".into(),
            ),
            Error::Night(NightError::NoHistory { exists: true, .. }) => Some(
                "to start a new history in this empty folder, add `--init` (once, on its first night)".into(),
            ),
            Error::Night(NightError::AlreadyAHistory { .. }) => Some(
                "leave out `--init` to continue or rerun this history; a new history needs a new `--out`".into(),
            ),
            Error::Night(NightError::NotEnded { .. }) => Some(
                "a night is billed once it is over: schedule the run after midnight UTC for the day before".into(),
            ),
            Error::Night(NightError::StaleNights { .. }) => Some(
                "add `--recompute-later` to rerun this night and then every later night, in order, from the same `--input`"
                    .into(),
            ),
            Error::Night(NightError::InputLacksNight {
                date, absent_files, ..
            }) if !absent_files.is_empty() => Some(format!(
                "the input no longer holds {} that night {date} read: pass an `--input` that holds every night being recomputed (for example the archive of all days), or put the files back (`state/date={date}/night.json` lists them with their checksums); `--accept-removed` is for messages withdrawn from the logs, not for files that expired",
                quote_list(absent_files)
            )),
            Error::Night(NightError::InputLacksNight { date, .. }) => Some(format!(
                "the files night {date} read were rewritten without these messages: if they were withdrawn for good, add `--accept-removed` to drop them from the history; otherwise put back what the night read (`state/date={date}/night.json` lists its input files with their checksums)"
            )),
            Error::Night(NightError::NotAHistory { .. }) => Some(
                "a nightly history needs its own folder: choose a new or empty `--out`".into(),
            ),
            Error::Night(NightError::RateCardChanged { .. }) => Some(
                "pass the card the history was rated by (adding price versions, Meta rate cards or tier tables that start later is fine); to rate the history by a changed card, rerun its first night with `--recompute-later`, or start a new `--out` folder"
                    .into(),
            ),
            Error::Busy { .. } => Some(
                "wait for the other run to finish; a run that died releases the lock by itself"
                    .into(),
            ),
            Error::OutInsideInput { .. } => Some(
                "choose an `--out` outside the input folder (the folder beside it, say)".into(),
            ),
            Error::OutIsFile { .. } | Error::OutUnnamed { .. } => {
                Some("`--out` names the output folder, which convbill creates if needed".into())
            }
            Error::OutIsMountPoint { path } => Some(format!(
                "use a folder inside the mounted volume, such as `{}/billing`",
                path.display()
            )),
            Error::OutputNotOurs { .. } => {
                Some("choose an empty or new folder with `--out`".into())
            }
            Error::AnalyticsNotOurs { path, .. } => Some(format!(
                "the folder is replaced whole: give Meta's analytics a folder of their own, such as `{}`",
                path.join("WABA").display()
            )),
            Error::NightlyHistory { .. } => Some(
                "a whole run writes its own folder: choose another `--out`, or add `--date` to continue the history"
                    .into(),
            ),
            _ => None,
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// `` `a` ``, `` `a` and `b` `` or `` `a`, `b` and 3 more file(s) ``.
fn quote_list(items: &[String]) -> String {
    let quoted: Vec<String> = items.iter().take(2).map(|i| format!("`{i}`")).collect();
    match items.len() {
        0 | 1 => quoted.concat(),
        2 => quoted.join(" and "),
        n => format!("{} and {} more file(s)", quoted.join(", "), n - 2),
    }
}
