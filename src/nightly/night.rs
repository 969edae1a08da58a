//! One night: the validated rows of the run's days and the previous night's state in; the
//! night's closed sessions, violations and state out, written into the run's staging folder.
//!
//! The state of night D (`state/date=D/`) carries raw events, not derived facts: for every
//! conversation key with a session or window still open at midnight, the events the next night
//! needs to derive the same sessions again:
//! - a WhatsApp key with an open session: its events from the session's start, plus the last
//!   customer message at or before that start (it decides the initiation);
//! - a WhatsApp key whose service window alone is open: its last customer message;
//! - a Messenger or Instagram key with an open session: the session's events.
//!
//! Beside them: the message ids the night used (duplicates of the next
//! [`super::DEDUP_NIGHTS`] nights are recognised by them), the invoice-line counts of the
//! sessions it closed, the sessions still open, the rate card's fingerprint, and the night's
//! counts (`night.json`). Every file's rows come in a fixed order, so a rerun writes the same
//! bytes.

use chrono::NaiveDate;
use polars::prelude::*;
use serde::{Deserialize, Serialize};

use super::{night_dir, read_parquet, start_ns, Tree, REJECTS_DIR, SESSIONS_DIR, VIOLATIONS_DIR};
use crate::error::{InputError, Result};
use crate::load;
use crate::rates::RateCard;
use crate::rating;
use crate::schema::{self, DAY_NS};
use crate::sessions::{self, timed};
use crate::write::{self, STATE_DIR};

pub(crate) const CARRIED: &str = "carried.parquet";
pub(crate) const SEEN: &str = "seen.parquet";
pub(crate) const LINES: &str = "lines.parquet";
pub(crate) const OPEN: &str = "open_sessions.parquet";
pub(crate) const STATS: &str = "night.json";
/// What the rate card a night was rated by says of the days up to the day after it
/// ([`crate::rates::RateCard::history_fingerprint`]).
pub(crate) const CARD: &str = "rate_card.fingerprint";
const PART: &str = "part-0.parquet";

/// What one night did. Every row of the night's day is counted once: `rows_read =
/// rows_rejected + duplicates_within_night + duplicates_of_earlier_nights + rows_used`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NightStats {
    pub date: NaiveDate,
    /// The input files that hold messages of the night's day, with their checksums.
    pub input_files: Vec<InputFileRecord>,
    /// Rows of the input whose timestamp falls on the night's day.
    pub rows_read: u64,
    /// `--rejects`: rows of the day set aside (in `rejects/date=D/`), by reason.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub rejected_by_reason: std::collections::BTreeMap<String, u64>,
    #[serde(default)]
    pub rows_rejected: u64,
    /// Rows dropped as copies of a message logged earlier the same night.
    pub duplicates_within_night: u64,
    /// Rows dropped as copies of a message an earlier night used.
    pub duplicates_of_earlier_nights: u64,
    pub rows_used: u64,
    /// Events carried in from the night before, and out to the next.
    pub carried_in: u64,
    pub carried_out: u64,
    pub sessions_closed: u64,
    pub sessions_open: u64,
    pub violations: u64,
}

/// An input file as a night records it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct InputFileRecord {
    pub path: String,
    pub bytes: u64,
    pub sha256: String,
    /// All its rows, of every day.
    pub rows: u64,
}

impl InputFileRecord {
    pub fn of(file: &load::InputFile) -> Self {
        InputFileRecord {
            path: file.path.clone(),
            bytes: file.bytes,
            sha256: file.sha256.clone(),
            rows: file.rows,
        }
    }
}

impl NightStats {
    /// What night `date` recorded, from its state folder.
    pub fn read(dir: &std::path::Path) -> Result<NightStats> {
        let path = dir.join(STATS);
        let bytes = std::fs::read(&path).map_err(write::io_error(&path))?;
        serde_json::from_slice(&bytes).map_err(|e| {
            write::io_error(&path)(std::io::Error::new(std::io::ErrorKind::InvalidData, e))
        })
    }

    pub fn duplicates(&self) -> u64 {
        self.duplicates_within_night + self.duplicates_of_earlier_nights
    }
}

/// The rows of `date`'s UTC day among `rows` (the loader's schema). When all of them fall on
/// it (a run of one night), they are shared, not copied.
fn day_of(rows: &DataFrame, date: NaiveDate) -> Result<DataFrame> {
    let (start, end) = (start_ns(date), start_ns(date) + DAY_NS);
    let times = rows.column(schema::TIMESTAMP)?.i64()?;
    if let (Some(first), Some(last)) = (times.min(), times.max()) {
        if first >= start && last < end && times.null_count() == 0 {
            return Ok(rows.clone());
        }
    }
    let ts = || col(schema::TIMESTAMP);
    Ok(rows
        .clone()
        .lazy()
        .filter(ts().gt_eq(lit(start)).and(ts().lt(lit(end))))
        .collect()?)
}

/// How many of `rows` fall on `date`'s UTC day.
pub(crate) fn rows_on(rows: &DataFrame, date: NaiveDate) -> Result<u64> {
    let (start, end) = (start_ns(date), start_ns(date) + DAY_NS);
    let times = rows.column(schema::TIMESTAMP)?.i64()?;
    Ok(times
        .iter()
        .flatten()
        .filter(|t| *t >= start && *t < end)
        .count() as u64)
}

/// The message ids the nights from `first` up to (not including) `until` used, with their
/// fingerprints ([`load::CONTENT`], [`load::EVENT`]) and the night as `night` (text); `None`
/// when none of those nights has run.
pub(crate) fn billed_ids(
    tree: &Tree,
    first: NaiveDate,
    until: NaiveDate,
) -> Result<Option<DataFrame>> {
    let mut frames = Vec::new();
    for night in first.iter_days().take_while(|d| *d < until) {
        if let Some(dir) = tree.state(night) {
            let mut seen = read_parquet(&dir.join(SEEN))?;
            // Nights run before fingerprints were kept have none: nothing to compare.
            for name in [load::CONTENT, load::EVENT] {
                if seen.column(name).is_err() {
                    seen.with_column(Column::full_null(
                        name.into(),
                        seen.height(),
                        &DataType::UInt64,
                    ))?;
                }
            }
            frames.push(
                seen.lazy()
                    .select([
                        col(schema::ACCOUNT_ID),
                        col(schema::MESSAGE_ID),
                        col(load::CONTENT),
                        col(load::EVENT),
                    ])
                    .with_column(lit(night.to_string()).alias(NIGHT)),
            );
        }
    }
    if frames.is_empty() {
        return Ok(None);
    }
    Ok(Some(concat(frames, UnionArgs::default())?.collect()?))
}

const NIGHT: &str = "night";

/// Drops the rows of `day` (the night's rows, without duplicates among them) whose message an
/// earlier night used (`billed`, from [`billed_ids`]). A copy that does not repeat the same
/// event stops the run, naming the night and the file and row.
fn drop_billed(day: DataFrame, billed: DataFrame, paths: &[String]) -> Result<DataFrame> {
    let ids = || [col(schema::ACCOUNT_ID), col(schema::MESSAGE_ID)];
    let mut day = day;
    day.with_column(load::content_hash(&day)?)?;
    let joined = day
        .lazy()
        .join(
            billed.lazy().select([
                col(schema::ACCOUNT_ID),
                col(schema::MESSAGE_ID),
                col(load::CONTENT).alias("billed_content"),
                col(NIGHT),
            ]),
            ids(),
            ids(),
            JoinArgs::new(JoinType::Left),
        )
        .collect()?;
    let conflicts = joined
        .clone()
        .lazy()
        .filter(
            col("billed_content")
                .is_not_null()
                .and(col("billed_content").neq(col(load::CONTENT))),
        )
        .sort([load::FILE, load::ROW], SortMultipleOptions::default())
        .collect()?;
    if conflicts.height() > 0 {
        let text = |name: &str| -> Result<String> {
            Ok(conflicts.column(name)?.get(0)?.str_value().to_string())
        };
        let file = conflicts.column(load::FILE)?.u32()?.get(0).unwrap_or(0);
        let row = conflicts.column(load::ROW)?.u64()?.get(0).unwrap_or(0);
        let file = paths.get(file as usize).cloned().unwrap_or_default();
        return Err(InputError::ConflictsWithEarlierNight {
            account_id: text(schema::ACCOUNT_ID)?,
            message_id: text(schema::MESSAGE_ID)?,
            night: text(NIGHT)?,
            place: format!("`{file}` row {row}"),
        }
        .into());
    }
    Ok(joined
        .lazy()
        .filter(col(NIGHT).is_null())
        .drop(by_name(
            ["billed_content", NIGHT, load::CONTENT],
            true,
            false,
        ))
        .collect()?)
}

/// What a night reads.
pub(crate) struct Input<'a> {
    /// Validated, not deduplicated rows of the run's days. Taken, so that the last night of
    /// a run frees them early (a frame's clone shares its columns).
    pub rows: DataFrame,
    /// The paths of the `file` column's indexes.
    pub paths: &'a [String],
    /// `--rejects`: the rows of the night's day set aside by the checks
    /// ([`load::REJECT_COLUMNS`], `file` an index); `None` without `--rejects`.
    pub rejected: Option<DataFrame>,
    /// The files that hold the night's day.
    pub input_files: Vec<InputFileRecord>,
}

/// The rejected rows among `rejected` ([`load::REJECT_COLUMNS`]) whose time falls on `night`.
pub(crate) fn rejected_on(rejected: &DataFrame, night: NaiveDate) -> Result<DataFrame> {
    let (start, end) = (start_ns(night), start_ns(night) + DAY_NS);
    let ts = || col(schema::TIMESTAMP).to_physical();
    Ok(rejected
        .clone()
        .lazy()
        .filter(ts().gt_eq(lit(start)).and(ts().lt(lit(end))))
        .collect()?)
}

/// Computes `night` from its input and the state of the night before it, and writes its
/// folders into the staging folder of `tree`.
pub(crate) fn compute(
    night: NaiveDate,
    input: Input,
    tree: &Tree,
    card: &RateCard,
) -> Result<NightStats> {
    let Input {
        rows,
        paths,
        rejected,
        input_files,
    } = input;
    let (start, end) = (start_ns(night), start_ns(night) + DAY_NS);
    let day = timed("took the night's rows", || day_of(&rows, night))?;
    drop(rows);
    let checked = day.height() as u64;
    let rejected_by_checks = rejected.as_ref().map_or(0, |r| r.height() as u64);
    // A conflicting duplicate within the night stops the run, naming both rows, or with
    // `--rejects` is set aside.
    let (day, conflicting) = timed("dropped the night's duplicates", || {
        load::deduplicate_checked(day, paths, rejected.is_some())
    })?;
    let conflicting_rows = conflicting.as_ref().map_or(0, |c| c.height() as u64);
    let rejected = match (rejected, conflicting) {
        (Some(rejected), Some(conflicting)) => Some(load::rejects_of(vec![rejected, conflicting])?),
        (rejected, _) => rejected,
    };
    let rows_rejected = rejected_by_checks + conflicting_rows;
    let rows_read = checked + rejected_by_checks;
    let duplicates_within_night = checked - conflicting_rows - day.height() as u64;
    let earlier = night - chrono::Days::new(super::DEDUP_NIGHTS);
    let day = match timed("read earlier nights' ids", || {
        billed_ids(tree, earlier, night)
    })? {
        None => day,
        Some(billed) => timed("dropped copies of earlier nights' messages", || {
            drop_billed(day, billed, paths)
        })?,
    };

    let carried = match tree.state(night - chrono::Days::new(1)) {
        Some(dir) => Some(read_parquet(&dir.join(CARRIED))?),
        None => None,
    };
    let carried_in = carried.as_ref().map_or(0, |c| c.height() as u64);
    // A copy of a carried event (older than the nights whose ids are kept) is dropped here.
    let events = match carried {
        Some(carried) => load::deduplicate(
            concat([carried.lazy(), day.clone().lazy()], UnionArgs::default())?.collect()?,
            paths,
        )?,
        None => day,
    };
    let rows_used = events.height() as u64 - carried_in;
    let duplicates_of_earlier_nights =
        rows_read - rows_rejected - duplicates_within_night - rows_used;
    let derived = sessions::derive(&events)?;
    let rated = timed("rated sessions", || {
        rating::rate_sessions(derived.sessions, card)
    })?;

    // Sessions and violations come in their fixed order (key, then time) and keep it; the
    // counted lines are sorted by `lines_of`; the message ids keep the order of the input's
    // files and rows: every file is the same bytes on a rerun.
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
    let mut carried_out = timed("took what to carry", || carry(&events, &open, end))?;
    let mut seen = events
        .clone()
        .lazy()
        .filter(col(schema::TIMESTAMP).gt_eq(lit(start)))
        .collect()?;
    seen.with_column(load::content_hash(&seen)?)?;
    seen.with_column(load::event_hash(&seen)?)?;
    let mut seen = seen.select([
        schema::ACCOUNT_ID,
        schema::MESSAGE_ID,
        load::CONTENT,
        load::EVENT,
    ])?;

    let (mut rejected, rejected_by_reason) = match rejected {
        Some(rejected) => {
            let (frame, by_reason) = load::rejects_with_paths(rejected, paths)?;
            (Some(frame), by_reason)
        }
        None => (None, Default::default()),
    };
    let stats = NightStats {
        date: night,
        input_files,
        rows_read,
        rejected_by_reason,
        rows_rejected,
        duplicates_within_night,
        duplicates_of_earlier_nights,
        rows_used,
        carried_in,
        carried_out: carried_out.height() as u64,
        sessions_closed: closed.height() as u64,
        sessions_open: open.height() as u64,
        violations: violations.height() as u64,
    };
    tracing::info!(
        date = %night,
        rows = stats.rows_read,
        duplicates_within_night = stats.duplicates_within_night,
        duplicates_of_earlier_nights = stats.duplicates_of_earlier_nights,
        rejected = stats.rows_rejected,
        used = stats.rows_used,
        carried_in = stats.carried_in,
        carried_out = stats.carried_out,
        "night computed"
    );

    timed("wrote the night", || {
        write_night(
            night,
            tree,
            card,
            &stats,
            NightFiles {
                closed: &mut closed,
                violations: &mut violations,
                carried: &mut carried_out,
                seen: &mut seen,
                lines: &mut lines,
                open: &mut open,
                rejected: rejected.as_mut(),
            },
        )
    })?;
    Ok(stats)
}

/// The frames a night writes.
struct NightFiles<'a> {
    closed: &'a mut DataFrame,
    violations: &'a mut DataFrame,
    carried: &'a mut DataFrame,
    seen: &'a mut DataFrame,
    lines: &'a mut DataFrame,
    open: &'a mut DataFrame,
    /// `--rejects` only.
    rejected: Option<&'a mut DataFrame>,
}

/// Writes a night's partitions and state into the staging folder of `tree`.
fn write_night(
    night: NaiveDate,
    tree: &Tree,
    card: &RateCard,
    stats: &NightStats,
    files: NightFiles,
) -> Result<()> {
    let name = night_dir(night);
    let staging = tree.staging;
    write::write_parquet(&staging.join(SESSIONS_DIR).join(&name), PART, files.closed)?;
    write::write_parquet(
        &staging.join(VIOLATIONS_DIR).join(&name),
        PART,
        files.violations,
    )?;
    if let Some(rejected) = files.rejected {
        write::write_parquet(&staging.join(REJECTS_DIR).join(&name), PART, rejected)?;
    }
    let state = staging.join(STATE_DIR).join(&name);
    write::write_parquet(&state, CARRIED, files.carried)?;
    write::write_parquet(&state, SEEN, files.seen)?;
    write::write_parquet(&state, LINES, files.lines)?;
    write::write_parquet(&state, OPEN, files.open)?;
    let fingerprint = super::card_fingerprint(card, night);
    write::write_bytes(&state, CARD, format!("{fingerprint}\n").as_bytes(), 0)?;
    write::write_json(&state, STATS, stats)?;
    Ok(())
}

/// The events the next night needs (see the module comment), from the night's events and the
/// sessions still open at `end`. Same schema as the loader's rows, sorted in event order;
/// `file` is [`load::EARLIER_NIGHT`], since the files of a later run are others.
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
        .map(|c| match c.as_str() {
            load::FILE => lit(load::EARLIER_NIGHT)
                .cast(DataType::UInt32)
                .alias(load::FILE),
            name => col(name),
        })
        .collect();
    Ok(concat(
        [in_open.select(&columns), context.select(&columns)],
        UnionArgs::default(),
    )?
    .sort(schema::EVENT_ORDER, SortMultipleOptions::default())
    .collect()?)
}
