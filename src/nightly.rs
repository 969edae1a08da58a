//! Nightly runs: one UTC day of the message log in; that day's closed sessions and violations,
//! refreshed month-to-date invoices and the state for the next night out.
//!
//! The state carries raw events, not derived facts: for every conversation key with a session
//! or window still open at midnight it keeps the events the next night needs to derive the
//! same sessions again through [`sessions::derive`]:
//! - a WhatsApp key with an open session: its events from the session's start, plus the last
//!   customer message at or before that start (it decides the initiation);
//! - a WhatsApp key whose service window alone is open: its last customer message;
//! - a Messenger or Instagram key with an open session: the session's events.
//!
//! A night D writes the sessions that closed during its day (`D < ends_at <= D+1`) and the
//! violations timestamped that day; sessions still open are listed in the month-to-date folder
//! and written by the night they close. So the nights of a month, one after another, give the
//! same sessions and violations as one run over the month.
//!
//! Layout under the output folder:
//! - `sessions/date=D/part-0.parquet`, `violations/date=D/part-0.parquet`: per night;
//! - `month-to-date/`: invoices (`draft` or `final`), invoice lines, open sessions, manifest;
//!   replaced as a whole by every night;
//! - `state/date=D/`: what night D carried forward. Written last: a night has run when its
//!   state folder exists;
//! - `.convbill.lock`: held while a run works (the OS releases it if the run dies).

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::path::{Path, PathBuf};

use chrono::{Days, NaiveDate};
use polars::prelude::*;
use serde::Serialize;

use crate::error::{Error, NightError, Result};
use crate::load::{self, Messages};
use crate::rating::{self, Invoices};
use crate::schema::{self, DAY_NS};
use crate::sessions;
use crate::write;

pub const STATE_DIR: &str = "state";
pub const MONTH_TO_DATE_DIR: &str = "month-to-date";
pub const LOCK_FILE: &str = ".convbill.lock";
/// Duplicates are recognised against the message ids of this many previous nights.
pub const DEDUP_NIGHTS: u64 = 7;

const CARRIED: &str = "carried.parquet";
const SEEN: &str = "seen.parquet";
const LINES: &str = "lines.parquet";
const OPEN: &str = "open_sessions.parquet";
/// What the rate card a night was rated by says of the days up to the day after it
/// ([`crate::rates::RateCard::history_fingerprint`]).
const CARD: &str = "rate_card.fingerprint";

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
}

/// What one night did.
#[derive(Debug, Clone, Serialize)]
pub struct NightStats {
    pub date: NaiveDate,
    pub rows_of_the_day: u64,
    pub duplicates_of_earlier_nights: u64,
    pub carried_in: u64,
    pub carried_out: u64,
    pub sessions_closed: u64,
    pub sessions_open: u64,
    pub violations: u64,
}

/// An invoice whose quota a run changed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct InvoiceChange {
    pub account_id: String,
    pub period: String,
    pub old_quota: Option<i64>,
    pub new_quota: Option<i64>,
}

/// What a nightly run did.
#[derive(Debug, Clone)]
pub struct NightReport {
    pub new_history: bool,
    pub nights: Vec<NightStats>,
    pub invoice_changes: Vec<InvoiceChange>,
    pub invoices: usize,
    pub drafts: usize,
}

fn night_dir(date: NaiveDate) -> String {
    format!("date={date}")
}

fn start_ns(date: NaiveDate) -> i64 {
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
        let name = entry
            .map_err(write::io_error(&dir))?
            .file_name()
            .to_string_lossy()
            .into_owned();
        if let Some(date) = name.strip_prefix("date=") {
            if let Ok(date) = date.parse::<NaiveDate>() {
                nights.push(date);
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

/// Holds the output folder's lock for the life of the value.
struct Lock {
    _file: File,
}

fn lock(out: &Path) -> Result<Lock> {
    fs::create_dir_all(out).map_err(write::io_error(out))?;
    let path = out.join(LOCK_FILE);
    let file = File::create(&path).map_err(write::io_error(&path))?;
    match file.try_lock() {
        Ok(()) => Ok(Lock { _file: file }),
        Err(fs::TryLockError::WouldBlock) => Err(NightError::Locked { path }.into()),
        Err(fs::TryLockError::Error(source)) => Err(Error::Output { path, source }),
    }
}

/// Refuses an output folder that holds something other than a nightly history.
fn check_folder(out: &Path) -> Result<()> {
    if !out.exists() || out.join(STATE_DIR).is_dir() {
        return Ok(());
    }
    let mut entries = fs::read_dir(out).map_err(write::io_error(out))?;
    let only_lock = entries.all(|e| e.is_ok_and(|e| e.file_name() == LOCK_FILE));
    if only_lock {
        Ok(())
    } else {
        Err(NightError::NotAHistory {
            path: out.to_path_buf(),
        }
        .into())
    }
}

/// Runs the night `config.date` (and, when asked, every later night already run).
pub fn run(config: &NightConfig) -> Result<NightReport> {
    // The rate card is checked before anything else is touched.
    let card = crate::rates::load_or_built_in(config.rates.as_deref())?;
    check_folder(&config.out)?;
    let _lock = lock(&config.out)?;
    let history = nights_run(&config.out)?;
    let nights = plan(config, &history)?;
    check_card(&config.out, nights[0], &card)?;
    let new_history = history.is_empty();
    // Only a rerun of a night that had run can change an invoice behind finance's back.
    let rerun = nights.iter().any(|n| history.contains(n));
    let old_quota = quota_by_invoice(&config.out)?;

    // Only the nights' own days are read: row groups outside them are skipped.
    let first = *nights.first().expect("a plan has a night");
    let last = *nights.last().expect("a plan has a night");
    let window = (start_ns(first), start_ns(last) + DAY_NS);
    let messages = load::load_window(&config.input, Some(window))?;
    for night in nights.iter().filter(|n| history.contains(n)) {
        check_input_covers(*night, &messages, &config.out)?;
    }
    let mut stats = Vec::with_capacity(nights.len());
    for night in &nights {
        stats.push(run_one(*night, &messages, &config.out, &card)?);
    }
    let latest = *nights_run(&config.out)?.last().expect("a night has run");
    let input = config.input.display().to_string();
    let (invoices, drafts) =
        write_month_to_date(&config.out, latest, &input, &messages, &stats, &card)?;
    let new_quota = quota_by_invoice(&config.out)?;
    Ok(NightReport {
        new_history,
        nights: stats,
        invoice_changes: if rerun {
            changes(&old_quota, &new_quota)
        } else {
            Vec::new()
        },
        invoices,
        drafts,
    })
}

/// (account, period) → quota of the month-to-date invoices under `out`.
fn quota_by_invoice(out: &Path) -> Result<BTreeMap<(String, String), i64>> {
    let path = out.join(MONTH_TO_DATE_DIR).join(write::LINES_PARQUET_FILE);
    let mut totals = BTreeMap::new();
    if !path.is_file() {
        return Ok(totals);
    }
    let lines = read_parquet(&path)?;
    let accounts = lines.column("account_id")?.str()?;
    let periods = lines.column("period")?.str()?;
    let quota = lines.column("quota")?.i64()?;
    for i in 0..lines.height() {
        let key = (
            accounts.get(i).unwrap_or_default().to_string(),
            periods.get(i).unwrap_or_default().to_string(),
        );
        *totals.entry(key).or_insert(0) += quota.get(i).unwrap_or(0);
    }
    Ok(totals)
}

fn changes(
    old: &BTreeMap<(String, String), i64>,
    new: &BTreeMap<(String, String), i64>,
) -> Vec<InvoiceChange> {
    let keys: std::collections::BTreeSet<_> = old.keys().chain(new.keys()).collect();
    keys.into_iter()
        .filter(|k| old.get(*k) != new.get(*k))
        .map(|(account, period)| InvoiceChange {
            account_id: account.clone(),
            period: period.clone(),
            old_quota: old.get(&(account.clone(), period.clone())).copied(),
            new_quota: new.get(&(account.clone(), period.clone())).copied(),
        })
        .collect()
}

fn read_parquet(path: &Path) -> Result<DataFrame> {
    let file = File::open(path).map_err(write::io_error(path))?;
    Ok(ParquetReader::new(file).finish()?)
}

/// Refuses to recompute `night` from an input that lacks messages the night read before.
fn check_input_covers(night: NaiveDate, messages: &Messages, out: &Path) -> Result<()> {
    let (start, end) = (start_ns(night), start_ns(night) + DAY_NS);
    let ids = [col(schema::ACCOUNT_ID), col(schema::MESSAGE_ID)];
    let present = messages
        .frame
        .clone()
        .lazy()
        .filter(
            col(schema::TIMESTAMP)
                .gt_eq(lit(start))
                .and(col(schema::TIMESTAMP).lt(lit(end))),
        )
        .select(ids.clone())
        .with_column(lit(true).alias("present"));
    let seen = out.join(STATE_DIR).join(night_dir(night)).join(SEEN);
    let missing = read_parquet(&seen)?
        .lazy()
        .join(present, ids.clone(), ids, JoinArgs::new(JoinType::Left))
        .filter(col("present").is_null())
        .collect()?;
    if missing.height() == 0 {
        return Ok(());
    }
    let first = |name: &str| -> Result<String> {
        Ok(missing
            .column(name)?
            .str()?
            .get(0)
            .unwrap_or_default()
            .to_string())
    };
    Err(NightError::InputLacksNight {
        date: night,
        missing: missing.height() as u64,
        account_id: first(schema::ACCOUNT_ID)?,
        message_id: first(schema::MESSAGE_ID)?,
    }
    .into())
}

/// The fingerprint a night records: what the card says of every day its sessions can fall on
/// in any zone (up to the day after the UTC night).
fn card_fingerprint(card: &crate::rates::RateCard, night: NaiveDate) -> String {
    card.history_fingerprint(night + Days::new(1))
}

/// Refuses to continue a history with a card that rates its earlier nights otherwise (other
/// zones, plans, accounts' terms, or price versions in force by then). A card that only adds
/// versions starting later continues it.
fn check_card(out: &Path, night: NaiveDate, card: &crate::rates::RateCard) -> Result<()> {
    let Some(dir) = previous_state(out, night)? else {
        return Ok(());
    };
    let previous_night = night - Days::new(1);
    // A state written before rate cards existed records none: it cannot be continued either.
    let previous = fs::read_to_string(dir.join(CARD))
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

/// The state of the night before `night`, or nothing for the first night of a history.
fn previous_state(out: &Path, night: NaiveDate) -> Result<Option<PathBuf>> {
    let dir = out.join(STATE_DIR).join(night_dir(night - Days::new(1)));
    Ok(dir.is_dir().then_some(dir))
}

/// Message ids of the nights before `night` that duplicates are checked against.
fn seen_before(out: &Path, night: NaiveDate) -> Result<Option<DataFrame>> {
    let mut frames = Vec::new();
    for back in 1..=DEDUP_NIGHTS {
        let path = out
            .join(STATE_DIR)
            .join(night_dir(night - Days::new(back)))
            .join(SEEN);
        if path.is_file() {
            frames.push(read_parquet(&path)?.lazy());
        }
    }
    if frames.is_empty() {
        return Ok(None);
    }
    Ok(Some(concat(frames, UnionArgs::default())?.collect()?))
}

/// Computes one night from the loaded input and the previous night's state, and writes it.
fn run_one(
    night: NaiveDate,
    messages: &Messages,
    out: &Path,
    card: &crate::rates::RateCard,
) -> Result<NightStats> {
    let (start, end) = (start_ns(night), start_ns(night) + DAY_NS);
    let ts = || col(schema::TIMESTAMP);
    let day = messages
        .frame
        .clone()
        .lazy()
        .filter(ts().gt_eq(lit(start)).and(ts().lt(lit(end))))
        .collect()?;
    let rows_of_the_day = day.height() as u64;
    let day = match seen_before(out, night)? {
        None => day,
        Some(seen) => day
            .lazy()
            .join(
                seen.lazy().with_column(lit(true).alias("seen")),
                [col(schema::ACCOUNT_ID), col(schema::MESSAGE_ID)],
                [col(schema::ACCOUNT_ID), col(schema::MESSAGE_ID)],
                JoinArgs::new(JoinType::Left),
            )
            .filter(col("seen").is_null())
            .drop(by_name(["seen"], true, false))
            .collect()?,
    };
    let duplicates_of_earlier_nights = rows_of_the_day - day.height() as u64;

    let carried = match previous_state(out, night)? {
        Some(dir) => Some(read_parquet(&dir.join(CARRIED))?),
        None => None,
    };
    let carried_in = carried.as_ref().map_or(0, |c| c.height() as u64);
    let events = match carried {
        Some(carried) => load::deduplicate(
            concat([carried.lazy(), day.clone().lazy()], UnionArgs::default())?.collect()?,
            &messages
                .files
                .iter()
                .map(|f| f.path.clone())
                .collect::<Vec<_>>(),
        )?,
        None => day.clone(),
    };
    let derived = sessions::derive(&events)?;
    let rated = rating::rate_sessions(derived.sessions, card)?;

    let ends = || col("ends_at").to_physical();
    let closed = rated
        .clone()
        .lazy()
        .filter(ends().gt(lit(start)).and(ends().lt_eq(lit(end))))
        .collect()?;
    let mut lines = rating::lines_of(&closed)?;
    let mut closed = closed.select(rating::RATED_SESSION_COLUMNS)?;
    let mut open = rated
        .lazy()
        .filter(ends().gt(lit(end)))
        .select(rating::RATED_SESSION_COLUMNS.map(col))
        .collect()?;
    let mut violations = rating::rate_violations(derived.violations, card)?
        .lazy()
        .filter(col("timestamp").to_physical().gt_eq(lit(start)))
        .collect()?;
    let mut carried_out = carry(&events, &open, end)?;
    let mut seen = day.select([schema::ACCOUNT_ID, schema::MESSAGE_ID])?;

    // Stage every folder of the night first; swap them in only when all are written, the
    // state last: once it exists, the night has run.
    let name = night_dir(night);
    let mut staged = Vec::new();
    let result = (|| {
        for (folder, frame) in [("sessions", &mut closed), ("violations", &mut violations)] {
            let target = out.join(folder).join(&name);
            staged.push((
                stage_folder(&target, |dir| {
                    write::write_parquet(dir, "part-0.parquet", frame)?;
                    Ok(())
                })?,
                target,
            ));
        }
        let target = out.join(STATE_DIR).join(&name);
        staged.push((
            stage_folder(&target, |dir| {
                write::write_parquet(dir, CARRIED, &mut carried_out)?;
                write::write_parquet(dir, SEEN, &mut seen)?;
                write::write_parquet(dir, LINES, &mut lines)?;
                write::write_parquet(dir, OPEN, &mut open)?;
                let fingerprint = card_fingerprint(card, night);
                write::write_bytes(dir, CARD, format!("{fingerprint}\n").as_bytes(), 0)?;
                Ok(())
            })?,
            target,
        ));
        crate::error::check_interrupt()
    })();
    if let Err(e) = result {
        for (staging, _) in &staged {
            let _ = fs::remove_dir_all(staging);
        }
        return Err(e);
    }
    for (staging, target) in &staged {
        commit_folder(staging, target)?;
    }
    Ok(NightStats {
        date: night,
        rows_of_the_day,
        duplicates_of_earlier_nights,
        carried_in,
        carried_out: carried_out.height() as u64,
        sessions_closed: closed.height() as u64,
        sessions_open: open.height() as u64,
        violations: violations.height() as u64,
    })
}

/// Writes a folder's files into a staging folder beside it; [`commit_folder`] swaps it in.
fn stage_folder(target: &Path, fill: impl FnOnce(&Path) -> Result<()>) -> Result<PathBuf> {
    let parent = target.parent().expect("night folders have a parent");
    let name = target
        .file_name()
        .expect("night folders have a name")
        .to_string_lossy();
    fs::create_dir_all(parent).map_err(write::io_error(parent))?;
    let staging = parent.join(format!(".{name}.convbill-staging"));
    if staging.exists() {
        fs::remove_dir_all(&staging).map_err(write::io_error(&staging))?;
    }
    fs::create_dir(&staging).map_err(write::io_error(&staging))?;
    if let Err(e) = fill(&staging) {
        let _ = fs::remove_dir_all(&staging);
        return Err(e);
    }
    Ok(staging)
}

fn commit_folder(staging: &Path, target: &Path) -> Result<()> {
    let parent = target.parent().expect("night folders have a parent");
    let name = target.file_name().expect("named").to_string_lossy();
    write::swap_into_place(staging, target, parent, &name)
}

/// Stages and commits one folder.
fn write_folder(target: &Path, fill: impl FnOnce(&Path) -> Result<()>) -> Result<()> {
    let staging = stage_folder(target, fill)?;
    commit_folder(&staging, target)
}

/// The events the next night needs (see the module comment), from the night's events and the
/// sessions still open at `end`. Same schema as [`Messages::frame`].
fn carry(events: &DataFrame, open: &DataFrame, end: i64) -> Result<DataFrame> {
    let key = schema::KEY_COLUMNS;
    let key_cols = || key.map(col);
    let open_keys = open.clone().lazy().select([
        col(schema::ACCOUNT_ID),
        load::encode_channel().alias(schema::CHANNEL),
        col(schema::BUSINESS_ID),
        col(schema::USER_ID),
        col("started_at").to_physical().alias("carry_from"),
    ]);
    let with_open = events.clone().lazy().join(
        open_keys,
        key_cols(),
        key_cols(),
        JoinArgs::new(JoinType::Left),
    );
    let ts = || col(schema::TIMESTAMP);
    let inbound = || col(schema::DIRECTION).eq(lit(schema::INBOUND));
    let whatsapp = || col(schema::CHANNEL).eq(lit(schema::WHATSAPP));
    // Events of open sessions, from their start.
    let in_open = with_open.clone().filter(
        col("carry_from")
            .is_not_null()
            .and(ts().gt_eq(col("carry_from"))),
    );
    // The last customer message before an open WhatsApp session, or of a WhatsApp key whose
    // service window is still open without a session.
    let context = with_open
        .filter(
            whatsapp().and(inbound()).and(
                col("carry_from")
                    .is_not_null()
                    .and(ts().lt(col("carry_from")))
                    .or(col("carry_from").is_null().and(ts().gt(lit(end - DAY_NS)))),
            ),
        )
        .sort(
            [schema::TIMESTAMP, schema::MESSAGE_ID],
            SortMultipleOptions::default(),
        )
        .unique_stable(Some(by_name(key, true, false)), UniqueKeepStrategy::Last);
    let columns: Vec<Expr> = events
        .get_column_names()
        .iter()
        .map(|c| col(c.as_str()))
        .collect();
    Ok(concat(
        [in_open.select(&columns), context.select(&columns)],
        UnionArgs::default(),
    )?
    .sort(schema::EVENT_ORDER, SortMultipleOptions::default())
    .collect()?)
}

/// Month-to-date manifest of a nightly output folder.
#[derive(Debug, Serialize)]
struct MonthToDateManifest {
    program: write::Program,
    rule_set: &'static str,
    rate_card: rating::RateCardInfo,
    latest_night: NaiveDate,
    nights_in_this_run: Vec<NightStats>,
    input: write::InputSection,
    outputs: Vec<write::WrittenFile>,
}

/// Rewrites `month-to-date/` from every night's lines and the latest night's open sessions.
/// Returns the number of invoices and of drafts among them.
fn write_month_to_date(
    out: &Path,
    latest: NaiveDate,
    input: &str,
    messages: &Messages,
    stats: &[NightStats],
    card: &crate::rates::RateCard,
) -> Result<(usize, usize)> {
    let state = out.join(STATE_DIR);
    let mut lines = Vec::new();
    for night in nights_run(out)? {
        lines.push(read_parquet(&state.join(night_dir(night)).join(LINES))?.lazy());
    }
    let mut open = read_parquet(&state.join(night_dir(latest)).join(OPEN))?;
    lines.push(rating::lines_of(&rating::rate_sessions(open.clone(), card)?)?.lazy());
    let mut invoices: Invoices =
        rating::invoices_from_lines(concat(lines, UnionArgs::default())?.collect()?, card)?;

    // A period is final once its last day has run and no open session of it can still change
    // its quota (an open Messenger or Instagram session nobody has answered yet).
    let unsettled = open
        .clone()
        .lazy()
        .filter(
            col("channel")
                .neq(lit("whatsapp"))
                .and(col("outbound_messages").eq(lit(0i64))),
        )
        .select([col("account_id"), col("period")])
        .collect()?;
    let unsettled: std::collections::BTreeSet<(String, String)> = unsettled
        .column("account_id")?
        .str()?
        .iter()
        .zip(unsettled.column("period")?.str()?.iter())
        .map(|(a, p)| (a.unwrap_or_default().into(), p.unwrap_or_default().into()))
        .collect();
    let mut drafts = 0;
    for invoice in &mut invoices.invoices {
        // The period is over once the latest night's end (UTC) reaches its end instant.
        let period_end = chrono::DateTime::parse_from_rfc3339(&invoice.period_end)
            .expect("period ends are RFC 3339")
            .timestamp_nanos_opt()
            .expect("within the nanosecond range");
        let over = start_ns(latest) + DAY_NS >= period_end;
        let settled = !unsettled.contains(&(invoice.account_id.clone(), invoice.period.clone()));
        let status = if over && settled {
            "final"
        } else {
            drafts += 1;
            "draft"
        };
        invoice.status = Some(status);
    }

    let target = out.join(MONTH_TO_DATE_DIR);
    let count = invoices.invoices.len();
    write_folder(&target, |dir| {
        let mut written = vec![
            write::write_parquet(dir, write::LINES_PARQUET_FILE, &mut invoices.lines)?,
            write::write_lines_csv(dir, &invoices.invoices)?,
            write::write_parquet(dir, OPEN, &mut open)?,
        ];
        for invoice in &invoices.invoices {
            written.push(write::write_invoice(dir, invoice)?);
        }
        let manifest = MonthToDateManifest {
            program: write::Program::current(),
            rule_set: rating::RULE_SET,
            rate_card: rating::RateCardInfo::of(card),
            latest_night: latest,
            nights_in_this_run: stats.to_vec(),
            input: write::InputSection {
                path: input.to_string(),
                files: messages.files.clone(),
                stats: messages.stats.clone(),
            },
            outputs: written,
        };
        let json = serde_json::to_vec_pretty(&manifest).expect("the manifest serializes");
        write::write_bytes(
            dir,
            write::MANIFEST_FILE,
            &[json.as_slice(), b"\n"].concat(),
            0,
        )?;
        Ok(())
    })?;
    Ok((count, drafts))
}
