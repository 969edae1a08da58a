//! Sessions: the validated message log in, sessions and violations out (rule set `quota`).
//!
//! The work is columnar and compares strings only to confirm equal hashes. A sort of the
//! rows' key hashes numbers the conversation keys (`account_id`, `channel`, `business_id`, `user_id`) and only the distinct
//! keys are sorted as strings, giving each row a `key` rank. A frame of numbers (key, time,
//! direction, codes, and the row each event comes from) is sorted by key, time, inbound
//! before outbound, then `message_id`; the strings stay in the loader's frame until the session
//! and violation rows gather them. Window columns over the sorted key then give:
//! - the service / standard window: the last inbound event at or before each row, so a row at
//!   `t` sees an open window when `t - last_inbound < 24h` (rules W1, M1);
//! - Messenger and Instagram sessions as gaps-and-islands: an inbound event more than 24 hours
//!   after the previous one starts a new island (M2); outbound rows join the island whose
//!   window is open at their time, or are violations (M3);
//! - WhatsApp violations: free-form outbound messages outside the service window (W4).
//!
//! Because rows are sorted by key, a window "over the key" is a forward fill over the whole
//! column, kept only where the filled value comes from the same key: no grouping.
//!
//! The WhatsApp session chain (W2: a session lasts exactly 24 hours from its opening message
//! and is never extended) depends on where the previous session ended, so it is a sequential
//! scan: [`whatsapp_chain`] runs it natively over the sorted columns, one key at a time.
//!
//! Finally each session is a run of consecutive rows (same key and session start), and one
//! pass over the runs builds the session rows.

use polars::prelude::*;
use sha2::{Digest, Sha256};

use crate::error::Result;
use crate::load::{decode, trues};
use crate::schema::{self, DAY_NS};

// Internal column names of the ordered event frame.
const KEY: &str = "key";
/// The row of the loader's frame an event comes from: strings stay there, and only the
/// session and violation rows gather them.
const SOURCE: &str = "source_row";
const INBOUND: &str = "is_inbound";
const DELIVERED_OUT: &str = "delivered_out";
const WINDOW_OPEN: &str = "window_open";
const REASON: &str = "reason";
const ELIGIBLE: &str = "eligible";
const IS_WHATSAPP: &str = "is_whatsapp";
const STANDARD_START: &str = "standard_start";
const NEW_ISLAND: &str = "new_island";
const SESSION_START: &str = "session_start";
const OPENS: &str = "opens";

/// Output column names of `sessions.parquet`, in order.
pub const SESSION_COLUMNS: [&str; 14] = [
    "session_id",
    "account_id",
    "channel",
    "business_id",
    "user_id",
    "initiation",
    "started_at",
    "ends_at",
    "opened_by",
    "inbound_messages",
    "outbound_messages",
    "billable",
    "quota",
    "period",
];

/// Output column names of `violations.parquet`, in order.
pub const VIOLATION_COLUMNS: [&str; 9] = [
    "account_id",
    "channel",
    "business_id",
    "user_id",
    "message_id",
    "kind",
    "timestamp",
    "reason",
    "period",
];

/// Counts from the session stage, for the manifest and the summary.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct SessionStats {
    pub conversation_keys: u64,
    pub sessions: u64,
    pub violations: u64,
    /// Outbound rows with `status = failed`: never open, join, bill or violate anything.
    pub failed_outbound: u64,
}

impl SessionStats {
    /// Adds the counts of another group of accounts.
    pub fn add(&mut self, other: &SessionStats) {
        self.conversation_keys += other.conversation_keys;
        self.sessions += other.sessions;
        self.violations += other.violations;
        self.failed_outbound += other.failed_outbound;
    }
}

/// The sessions and violations of one run, in deterministic order
/// (key, then time), with the columns of [`SESSION_COLUMNS`] and [`VIOLATION_COLUMNS`].
pub struct Sessions {
    pub sessions: DataFrame,
    pub violations: DataFrame,
    pub stats: SessionStats,
}

/// Derives the sessions and violations of a message log (the loader's schema, deduplicated;
/// see [`crate::load::Messages::frame`]) under rule set `quota`.
pub fn derive(messages: &DataFrame) -> Result<Sessions> {
    Ok(derive_events(messages)?.0)
}

/// What a night needs of its events besides the sessions ([`derive_night`]).
pub struct NightRows {
    /// Every row of the messages, in event order.
    pub order: IdxCa,
    /// The rows the next night needs to derive the sessions still open at the night's end
    /// again, in event order: for every key with a session open at the end, the rows from the
    /// session's start, and for a WhatsApp key the last customer message before it; for a
    /// WhatsApp key without one, its last customer message of the last 24 hours, if any.
    pub carry: IdxCa,
}

/// [`derive`] for a night ending at `end` (UTC nanoseconds; no message is later): also gives
/// the rows in event order and the rows to carry to the next night.
pub fn derive_night(messages: &DataFrame, end: i64) -> Result<(Sessions, NightRows)> {
    let (sessions, events) = derive_events(messages)?;
    let rows = timed("found what to carry", || night_rows(&events, end))?;
    Ok((sessions, rows))
}

/// See [`NightRows::carry`]: one pass over the events, a key at a time.
fn night_rows(events: &DataFrame, end: i64) -> Result<NightRows> {
    let keys = events.column(KEY)?.u32()?;
    let keys = keys.cont_slice()?;
    let times = events.column(schema::TIMESTAMP)?.i64()?;
    let times = times.cont_slice()?;
    let starts = events.column(SESSION_START)?.i64()?;
    let starts: Vec<Option<i64>> = starts.iter().collect();
    let inbound = trues(events.column(INBOUND)?.bool()?);
    let whatsapp = trues(events.column(IS_WHATSAPP)?.bool()?);
    let sources = events.column(SOURCE)?.idx()?;
    let sources: Vec<IdxSize> = sources.into_no_null_iter().collect();
    let mut carry: Vec<IdxSize> = Vec::new();
    let n = keys.len();
    let mut lo = 0;
    while lo < n {
        let mut hi = lo + 1;
        while hi < n && keys[hi] == keys[lo] {
            hi += 1;
        }
        // Session starts never decrease within a key: the last session is the latest start.
        let last_start = (lo..hi).filter_map(|i| starts[i]).max();
        let carry_from = last_start.filter(|&start| {
            let ends = match whatsapp[lo] {
                true => start + DAY_NS,
                false => {
                    (lo..hi)
                        .filter(|&i| inbound[i] && starts[i] == Some(start))
                        .map(|i| times[i])
                        .max()
                        .unwrap_or(start)
                        + DAY_NS
                }
            };
            ends > end
        });
        if whatsapp[lo] {
            // The last customer message before the open session, or of the last 24 hours.
            let context = (lo..hi).rev().find(|&i| {
                inbound[i]
                    && match carry_from {
                        Some(from) => times[i] < from,
                        None => times[i] > end - DAY_NS,
                    }
            });
            carry.extend(context.map(|i| sources[i]));
        }
        if let Some(from) = carry_from {
            carry.extend((lo..hi).filter(|&i| times[i] >= from).map(|i| sources[i]));
        }
        lo = hi;
    }
    Ok(NightRows {
        order: IdxCa::from_vec(PlSmallStr::EMPTY, sources),
        carry: IdxCa::from_vec(PlSmallStr::EMPTY, carry),
    })
}

/// [`derive`], also giving the ordered events it derived them from.
fn derive_events(messages: &DataFrame) -> Result<(Sessions, DataFrame)> {
    let sorted = timed("sorted events", || sort_events(messages))?;
    let mut events = timed("window columns", || ordered_events(sorted))?;
    timed("whatsapp chain", || add_whatsapp_chain(&mut events))?;
    let events = events
        .lazy()
        .with_columns([
            when(col(IS_WHATSAPP))
                .then(col("wa_start"))
                .otherwise(col(STANDARD_START))
                .alias(SESSION_START),
            when(col(IS_WHATSAPP))
                .then(col("wa_opens"))
                .otherwise(col(NEW_ISLAND))
                .alias(OPENS),
        ])
        .collect()?;

    let conversation_keys = match events.height() {
        0 => 0,
        _ => events.column(KEY)?.u32()?.max().map_or(0, |k| k as u64 + 1),
    };
    let outbound = events
        .column(schema::DIRECTION)?
        .u32()?
        .equal(schema::OUTBOUND);
    let failed = events
        .column(schema::STATUS)?
        .u32()?
        .equal(schema::STATUS_FAILED);
    let failed_outbound = (&outbound & &failed).sum().unwrap_or(0) as u64;
    let sessions = timed("aggregated sessions", || {
        aggregate_sessions(&events, messages)
    })?;
    let violations = timed("violations", || violations(&events, messages))?;
    let sessions = Sessions {
        stats: SessionStats {
            conversation_keys,
            sessions: sessions.height() as u64,
            violations: violations.height() as u64,
            failed_outbound,
        },
        sessions,
        violations,
    };
    Ok((sessions, events))
}

/// Runs one step, logging its wall time at debug level (`-vv`).
pub(crate) fn timed<T>(step: &str, f: impl FnOnce() -> Result<T>) -> Result<T> {
    let started = std::time::Instant::now();
    let result = f();
    tracing::debug!(ms = started.elapsed().as_millis() as u64, "{step}");
    result
}

/// Events sorted by [`sort_events`] → the same rows with window columns.
///
/// Adds: `is_inbound`, `delivered_out`, `window_open`,
/// `is_whatsapp`, `reason` (violation reason or null), `eligible` (a WhatsApp outbound that
/// may open or join a session), `new_island` and `standard_start` (Messenger/Instagram).
fn ordered_events(sorted: DataFrame) -> Result<DataFrame> {
    let ts = || col(schema::TIMESTAMP);
    let null_i64 = || lit(NULL).cast(DataType::Int64);
    // Rows are sorted by key, so a window "over the key" is a pass over the whole column whose
    // result is kept only where it comes from the same key: no grouping needed.
    let forward_fill = |e: Expr| e.fill_null_with_strategy(FillNullStrategy::Forward(None));
    let same_key = |from_key: Expr, value: Expr| {
        when(from_key.eq(col(KEY)))
            .then(value)
            .otherwise(null_i64())
    };
    // The value of `ts` at the last row at or before this one, in the same key, where `at` holds.
    let last_ts_where = |at: Expr| {
        same_key(
            forward_fill(
                when(at.clone())
                    .then(col(KEY))
                    .otherwise(lit(NULL).cast(DataType::UInt32)),
            ),
            forward_fill(when(at).then(ts()).otherwise(null_i64())),
        )
    };

    let last_inbound = last_ts_where(col(INBOUND));
    let previous_inbound = same_key(col(KEY).shift(lit(1)), col("last_inbound").shift(lit(1)));

    let ordered = sorted
        .lazy()
        .with_columns([
            col(schema::DIRECTION)
                .eq(lit(schema::INBOUND))
                .alias(INBOUND),
            col(schema::DIRECTION)
                .eq(lit(schema::OUTBOUND))
                .and(col(schema::STATUS).neq(lit(schema::STATUS_FAILED)))
                .alias(DELIVERED_OUT),
            col(schema::CHANNEL)
                .eq(lit(schema::WHATSAPP))
                .alias(IS_WHATSAPP),
        ])
        .with_column(last_inbound.alias("last_inbound"))
        .with_columns([
            (ts() - col("last_inbound"))
                .lt(lit(DAY_NS))
                .fill_null(lit(false))
                .alias(WINDOW_OPEN),
            col(INBOUND)
                .and(
                    previous_inbound
                        .clone()
                        .is_null()
                        .or((ts() - previous_inbound).gt_eq(lit(DAY_NS))),
                )
                .alias(NEW_ISLAND),
        ])
        .with_columns([
            when(col(DELIVERED_OUT).and(col(WINDOW_OPEN).not()))
                .then(
                    when(col(IS_WHATSAPP))
                        .then(
                            when(col(schema::KIND).eq(lit(schema::KIND_MESSAGE)))
                                .then(lit(schema::OUTSIDE_SERVICE_WINDOW))
                                .otherwise(lit(NULL).cast(DataType::String)),
                        )
                        .otherwise(lit(schema::OUTSIDE_STANDARD_WINDOW)),
                )
                .otherwise(lit(NULL).cast(DataType::String))
                .alias(REASON),
            last_ts_where(col(NEW_ISLAND)).alias("island_start"),
        ])
        .with_columns([
            col(IS_WHATSAPP)
                .and(col(DELIVERED_OUT))
                .and(col(REASON).is_null())
                .alias(ELIGIBLE),
            when(col(INBOUND).or(col(DELIVERED_OUT).and(col(WINDOW_OPEN))))
                .then(col("island_start"))
                .otherwise(null_i64())
                .alias(STANDARD_START),
        ])
        .collect()?;
    Ok(ordered)
}

/// Messages → the same rows in event order ([`schema::EVENT_ORDER`]) with `key` (UInt32,
/// dense, in key order) added.
///
/// Sorting on the string key columns row by row is the costliest step of a run, so only the
/// distinct keys are sorted as strings; the rows are then sorted on numbers (key, time,
/// direction), and the rare runs of rows equal in all three are put in `message_id` order.
fn sort_events(messages: &DataFrame) -> Result<DataFrame> {
    let n = messages.height();
    let ranks = timed("ranked keys", || key_ranks(messages))?;
    // One sort of plain tuples (key rank, time, direction, row); message ids are compared
    // only where the rest ties.
    let order: Vec<IdxSize> = timed("sorted rows", || -> Result<Vec<IdxSize>> {
        let keys = ranks.idx()?;
        let times = messages.column(schema::TIMESTAMP)?.i64()?;
        let directions = messages.column(schema::DIRECTION)?.u32()?;
        let ids = messages.column(schema::MESSAGE_ID)?.str()?;
        let mut rows: Vec<(IdxSize, i64, u32, IdxSize)> = keys
            .iter()
            .zip(times.iter())
            .zip(directions.iter())
            .enumerate()
            .map(|(row, ((key, time), direction))| {
                (
                    key.unwrap_or_default(),
                    time.unwrap_or(i64::MIN),
                    direction.unwrap_or_default(),
                    row as IdxSize,
                )
            })
            .collect();
        rows.sort_unstable_by(|a, b| {
            (a.0, a.1, a.2)
                .cmp(&(b.0, b.1, b.2))
                .then_with(|| ids.get(a.3 as usize).cmp(&ids.get(b.3 as usize)))
                .then_with(|| a.3.cmp(&b.3))
        });
        Ok(rows.into_iter().map(|r| r.3).collect())
    })?;
    let numeric = DataFrame::new(
        n,
        vec![
            ranks,
            messages.column(schema::TIMESTAMP)?.clone(),
            messages.column(schema::DIRECTION)?.clone(),
            messages.column(schema::CHANNEL)?.clone(),
            messages.column(schema::KIND)?.clone(),
            messages.column(schema::STATUS)?.clone(),
            Column::new(SOURCE.into(), (0..n as IdxSize).collect::<Vec<_>>()),
        ],
    )?;
    let mut sorted = numeric.take(&IdxCa::from_vec(PlSmallStr::EMPTY, order))?;
    sorted.rechunk_mut();
    Ok(sorted)
}

/// `key` for each row: the rank of its conversation key (`account_id`, `channel` code,
/// `business_id`, `user_id`) among the log's distinct keys in that order. Rows are numbered by
/// key through a sort of their keys' hashes; only the distinct keys are then sorted, comparing
/// strings.
fn key_ranks(messages: &DataFrame) -> Result<Column> {
    use std::hash::BuildHasher;
    let accounts = messages.column(schema::ACCOUNT_ID)?.str()?;
    let channels = messages.column(schema::CHANNEL)?.u32()?;
    let businesses = messages.column(schema::BUSINESS_ID)?.str()?;
    let users = messages.column(schema::USER_ID)?.str()?;
    type Key<'a> = (&'a str, u32, &'a str, &'a str);
    // The loader refuses nulls in key columns.
    let keys: Vec<Key> = accounts
        .iter()
        .zip(channels.iter())
        .zip(businesses.iter())
        .zip(users.iter())
        .map(|(((account, channel), business), user)| {
            (
                account.unwrap_or_default(),
                channel.unwrap_or_default(),
                business.unwrap_or_default(),
                user.unwrap_or_default(),
            )
        })
        .collect();
    let state = PlRandomState::default();
    let (number_of_row, distinct) = number_keys(&keys, |key| state.hash_one(key));
    // Accounts and businesses are few: ranked once each, the keys compare as numbers but for
    // `user_id`.
    let account_rank = rank_strings(distinct.iter().map(|k| k.0));
    let business_rank = rank_strings(distinct.iter().map(|k| k.2));
    let mut in_order: Vec<(u32, u32, u32, &str, IdxSize)> = distinct
        .iter()
        .enumerate()
        .map(|(number, key)| {
            (
                account_rank[key.0],
                key.1,
                business_rank[key.2],
                key.3,
                number as IdxSize,
            )
        })
        .collect();
    in_order.sort_unstable();
    let mut rank = vec![0 as IdxSize; distinct.len()];
    for (position, key) in in_order.into_iter().enumerate() {
        rank[key.4 as usize] = position as IdxSize;
    }
    let keys: Vec<IdxSize> = number_of_row
        .into_iter()
        .map(|n| rank[n as usize])
        .collect();
    Ok(Column::new(KEY.into(), keys))
}

/// Numbers the distinct values among `keys`: each row's number, and the values by number.
/// Equal values have equal hashes, so sorting (hash, row) pairs brings each value's rows
/// together; a run of equal hashes is one value unless two values collide, which comparing
/// the values notices (such a run is then sorted by the values themselves).
fn number_keys<K: Ord + Copy>(keys: &[K], hash: impl Fn(&K) -> u64) -> (Vec<IdxSize>, Vec<K>) {
    let mut hashed: Vec<(u64, IdxSize)> = keys
        .iter()
        .enumerate()
        .map(|(row, key)| (hash(key), row as IdxSize))
        .collect();
    hashed.sort_unstable();
    let mut number_of_row = vec![0 as IdxSize; keys.len()];
    let mut distinct: Vec<K> = Vec::new();
    for run in hashed.chunk_by_mut(|a, b| a.0 == b.0) {
        let first = keys[run[0].1 as usize];
        if run.iter().any(|(_, row)| keys[*row as usize] != first) {
            run.sort_unstable_by_key(|(_, row)| keys[*row as usize]);
        }
        for same in run.chunk_by(|a, b| keys[a.1 as usize] == keys[b.1 as usize]) {
            let number = distinct.len() as IdxSize;
            distinct.push(keys[same[0].1 as usize]);
            for (_, row) in same {
                number_of_row[*row as usize] = number;
            }
        }
    }
    (number_of_row, distinct)
}

/// Each distinct string among `values` → its rank in byte order.
fn rank_strings<'a>(values: impl Iterator<Item = &'a str>) -> PlHashMap<&'a str, u32> {
    let mut distinct: Vec<&str> = values.collect::<PlHashSet<_>>().into_iter().collect();
    distinct.sort_unstable();
    distinct
        .into_iter()
        .enumerate()
        .map(|(rank, value)| (value, rank as u32))
        .collect()
}

/// Runs [`whatsapp_chain`] over the ordered events and adds `wa_start` (Int64, the start of
/// the WhatsApp session a row counts toward, or null) and `wa_opens` (Boolean).
fn add_whatsapp_chain(events: &mut DataFrame) -> Result<()> {
    events.rechunk_mut();
    let keys = events.column(KEY)?.u32()?;
    let times = events.column(schema::TIMESTAMP)?.i64()?;
    let bools = |name: &str| -> Result<Vec<bool>> { Ok(trues(events.column(name)?.bool()?)) };
    let chain = whatsapp_chain(
        keys.cont_slice()?,
        times.cont_slice()?,
        &bools(INBOUND)?,
        &bools(ELIGIBLE)?,
        &bools(IS_WHATSAPP)?,
    );
    events.with_column(Column::new("wa_start".into(), chain.start))?;
    events.with_column(Column::new("wa_opens".into(), chain.opens))?;
    Ok(())
}

/// Per-row result of the WhatsApp session chain.
#[derive(Debug, PartialEq)]
pub struct Chain {
    /// The start of the session the row counts toward (an inbound event inside it, or an
    /// outbound message that opened or joined it).
    pub start: Vec<Option<i64>>,
    /// The row opened its session.
    pub opens: Vec<bool>,
}

/// The WhatsApp session chain (rules W2 and W5) over rows sorted by key, time, inbound first.
///
/// For each key: an eligible outbound message at `t` opens a session `[t, t+24h)` unless one
/// is open at `t`, else joins it. Inbound events count toward the session whose interval
/// contains them, including one opened later at the same instant. Rows of keys that are not
/// WhatsApp are left alone.
pub fn whatsapp_chain(
    keys: &[u32],
    times: &[i64],
    inbound: &[bool],
    eligible: &[bool],
    whatsapp: &[bool],
) -> Chain {
    let n = keys.len();
    let mut chain = Chain {
        start: vec![None; n],
        opens: vec![false; n],
    };
    let mut starts: Vec<i64> = Vec::new();
    let mut lo = 0;
    while lo < n {
        let mut hi = lo + 1;
        while hi < n && keys[hi] == keys[lo] {
            hi += 1;
        }
        if whatsapp[lo] {
            starts.clear();
            let mut end = i64::MIN;
            for i in lo..hi {
                if !eligible[i] {
                    continue;
                }
                if times[i] >= end {
                    starts.push(times[i]);
                    end = times[i] + DAY_NS;
                    chain.opens[i] = true;
                }
                chain.start[i] = starts.last().copied();
            }
            let mut current = 0;
            for i in (lo..hi).filter(|&i| inbound[i]) {
                while current + 1 < starts.len() && starts[current + 1] <= times[i] {
                    current += 1;
                }
                if let Some(&start) = starts.get(current) {
                    if start <= times[i] && times[i] < start + DAY_NS {
                        chain.start[i] = Some(start);
                    }
                }
            }
        }
        lo = hi;
    }
    chain
}

fn utc_timestamp(e: Expr) -> Expr {
    e.cast(DataType::Datetime(
        TimeUnit::Nanoseconds,
        Some(TimeZone::UTC),
    ))
}

fn period_of(e: Expr) -> Expr {
    e.cast(DataType::Datetime(TimeUnit::Nanoseconds, None))
        .dt()
        .strftime("%Y-%m")
}

/// Ordered events → one row per session ([`SESSION_COLUMNS`]), ordered by key and start.
fn aggregate_sessions(events: &DataFrame, messages: &DataFrame) -> Result<DataFrame> {
    let in_session = session_runs(events, messages)?
        .lazy()
        .with_columns([
            when(col(schema::CHANNEL).eq(lit(schema::WHATSAPP)))
                .then(
                    when(col("opener_in_window"))
                        .then(lit(schema::USER_INITIATED))
                        .otherwise(lit(schema::BUSINESS_INITIATED)),
                )
                .otherwise(lit(schema::STANDARD))
                .alias("initiation"),
            utc_timestamp(col(SESSION_START)).alias("started_at"),
            utc_timestamp(
                when(col(schema::CHANNEL).eq(lit(schema::WHATSAPP)))
                    .then(col(SESSION_START))
                    .otherwise(col("last_inbound"))
                    + lit(DAY_NS),
            )
            .alias("ends_at"),
            col(schema::CHANNEL)
                .eq(lit(schema::WHATSAPP))
                .or(col("outbound_messages").gt(lit(0i64)))
                .alias("billable"),
            period_of(col(SESSION_START)).alias("period"),
        ])
        .with_columns([
            col("billable").cast(DataType::Int64).alias("quota"),
            decode(&schema::CHANNELS),
        ])
        .collect()?;
    let ids = session_ids(&in_session)?;
    let mut sessions = in_session;
    sessions.with_column(ids)?;
    Ok(sessions.select(SESSION_COLUMNS)?)
}

/// Ordered events → one row per (key, `session_start`), with the columns the session rows are
/// made of: the key's columns, `opened_by` and `opener_in_window` (from the row that opened the
/// session), `inbound_messages`, `outbound_messages` and `last_inbound`.
///
/// The rows of one session are consecutive: events are sorted by key and time, and within a
/// key a later row never belongs to an earlier session (WhatsApp sessions follow each other;
/// a Messenger/Instagram island's rows precede the next island's). So one pass finds each
/// session's run of rows; it checks that order and fails rather than split a session.
fn session_runs(events: &DataFrame, messages: &DataFrame) -> Result<DataFrame> {
    let keys = events.column(KEY)?.u32()?;
    let starts = events.column(SESSION_START)?.i64()?;
    let times = events.column(schema::TIMESTAMP)?.i64()?;
    let flags = |name: &str| -> Result<Vec<bool>> { Ok(trues(events.column(name)?.bool()?)) };
    let (inbound, opens) = (flags(INBOUND)?, flags(OPENS)?);

    let mut first: Vec<IdxSize> = Vec::new();
    let mut opener: Vec<Option<IdxSize>> = Vec::new();
    let mut run_start: Vec<i64> = Vec::new();
    let mut inbound_messages: Vec<i64> = Vec::new();
    let mut outbound_messages: Vec<i64> = Vec::new();
    let mut last_inbound: Vec<Option<i64>> = Vec::new();
    let mut current: Option<(u32, i64)> = None;
    for (i, ((key, start), time)) in keys.iter().zip(starts.iter()).zip(times.iter()).enumerate() {
        let (Some(key), Some(start)) = (key, start) else {
            continue;
        };
        if current != Some((key, start)) {
            if let Some((previous_key, previous_start)) = current {
                if previous_key == key && previous_start > start {
                    return Err(PolarsError::ComputeError(
                        format!("session rows out of order in conversation key {key}").into(),
                    )
                    .into());
                }
            }
            current = Some((key, start));
            first.push(i as IdxSize);
            opener.push(None);
            run_start.push(start);
            inbound_messages.push(0);
            outbound_messages.push(0);
            last_inbound.push(None);
        }
        let run = first.len() - 1;
        if opens[i] && opener[run].is_none() {
            opener[run] = Some(i as IdxSize);
        }
        if inbound[i] {
            inbound_messages[run] += 1;
            last_inbound[run] = time.max(last_inbound[run]);
        } else {
            outbound_messages[run] += 1;
        }
    }

    let sources = events.column(SOURCE)?.idx()?;
    let source_of = |rows: &IdxCa| -> Result<IdxCa> { Ok(sources.take(rows)?) };
    let first = IdxCa::from_vec(PlSmallStr::EMPTY, first);
    let opener = IdxCa::from_iter_options(PlSmallStr::EMPTY, opener.into_iter());
    let mut columns = events
        .select([KEY, schema::CHANNEL])?
        .take(&first)?
        .into_columns();
    columns.extend(
        messages
            .select([schema::ACCOUNT_ID, schema::BUSINESS_ID, schema::USER_ID])?
            .take(&source_of(&first)?)?
            .into_columns(),
    );
    let at_opener = events.select([WINDOW_OPEN])?.take(&opener)?;
    let opened_by = messages
        .column(schema::MESSAGE_ID)?
        .take(&source_of(&opener)?)?;
    columns.push(Column::new(SESSION_START.into(), run_start));
    columns.push(opened_by.with_name("opened_by".into()));
    columns.push(
        at_opener
            .column(WINDOW_OPEN)?
            .clone()
            .with_name("opener_in_window".into()),
    );
    columns.push(Column::new("inbound_messages".into(), inbound_messages));
    columns.push(Column::new("outbound_messages".into(), outbound_messages));
    columns.push(Column::new("last_inbound".into(), last_inbound));
    Ok(DataFrame::new(first.len(), columns)?)
}

/// `session_id`: the first 16 bytes of SHA-256 over the opening event's (`account_id`,
/// `message_id`), in hex. Stable across reruns and independent of the rest of the log.
fn session_ids(sessions: &DataFrame) -> Result<Column> {
    let accounts = sessions.column(schema::ACCOUNT_ID)?.str()?;
    let openers = sessions.column("opened_by")?.str()?;
    let ids: Vec<String> = accounts
        .iter()
        .zip(openers.iter())
        .map(|(account, opener)| session_id(account.unwrap_or(""), opener.unwrap_or("")))
        .collect();
    Ok(Column::new("session_id".into(), ids))
}

/// See [`session_ids`].
pub fn session_id(account_id: &str, opened_by: &str) -> String {
    let mut hasher = Sha256::new();
    hasher.update(account_id.as_bytes());
    hasher.update([0x1f]);
    hasher.update(opened_by.as_bytes());
    hex::encode(&hasher.finalize()[..16])
}

/// Ordered events → one row per violating message ([`VIOLATION_COLUMNS`]), in event order.
fn violations(events: &DataFrame, messages: &DataFrame) -> Result<DataFrame> {
    let mut violating = events.filter(&events.column(REASON)?.is_not_null())?;
    let strings = messages
        .select([
            schema::ACCOUNT_ID,
            schema::BUSINESS_ID,
            schema::USER_ID,
            schema::MESSAGE_ID,
        ])?
        .take(violating.column(SOURCE)?.idx()?)?;
    violating.hstack_mut(strings.columns())?;
    Ok(violating
        .lazy()
        .with_columns([
            period_of(col(schema::TIMESTAMP)).alias("period"),
            utc_timestamp(col(schema::TIMESTAMP)),
            decode(&schema::CHANNELS),
            decode(&schema::KINDS),
        ])
        .select(VIOLATION_COLUMNS.map(col))
        .collect()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    const H: i64 = 3_600_000_000_000;

    #[test]
    fn chain_opens_a_new_session_exactly_24_hours_later() {
        let chain = whatsapp_chain(
            &[0, 0, 0],
            &[0, 23 * H, 24 * H],
            &[false, false, false],
            &[true, true, true],
            &[true, true, true],
        );
        assert_eq!(chain.start, vec![Some(0), Some(0), Some(24 * H)]);
        assert_eq!(chain.opens, vec![true, false, true]);
    }

    #[test]
    fn chain_counts_an_inbound_event_at_the_opening_instant() {
        // Sorted inbound first: the inbound row precedes the outbound that opens at the same time.
        let chain = whatsapp_chain(
            &[0, 0, 0],
            &[5 * H, 5 * H, 29 * H],
            &[true, false, true],
            &[false, true, false],
            &[true, true, true],
        );
        assert_eq!(chain.start, vec![Some(5 * H), Some(5 * H), None]);
    }

    #[test]
    fn chain_restarts_for_each_key_and_skips_other_channels() {
        let chain = whatsapp_chain(
            &[0, 1, 2],
            &[10 * H, 11 * H, 12 * H],
            &[false, false, false],
            &[true, true, false],
            &[true, true, false],
        );
        assert_eq!(chain.start, vec![Some(10 * H), Some(11 * H), None]);
        assert_eq!(chain.opens, vec![true, true, false]);
    }

    #[test]
    fn chain_ignores_ineligible_outbound_messages() {
        let chain = whatsapp_chain(
            &[0, 0],
            &[0, H],
            &[false, false],
            &[false, true],
            &[true, true],
        );
        assert_eq!(chain.start, vec![None, Some(H)]);
    }

    #[test]
    fn keys_are_numbered_by_value_even_when_their_hashes_collide() {
        let keys = ["b", "a", "b", "c", "a"];
        for hash in [|k: &&str| k.len() as u64, |k: &&str| k.as_bytes()[0] as u64] {
            let (numbers, distinct) = number_keys(&keys, hash);
            let by_row: Vec<&str> = numbers.iter().map(|n| distinct[*n as usize]).collect();
            assert_eq!(by_row, keys);
            assert_eq!(distinct.len(), 3);
        }
    }

    #[test]
    fn session_ids_are_stable_and_distinct() {
        assert_eq!(session_id("acme", "m1"), session_id("acme", "m1"));
        assert_ne!(session_id("acme", "m1"), session_id("acme", "m2"));
        assert_ne!(session_id("acm", "em1"), session_id("acme", "m1"));
        assert_eq!(session_id("acme", "m1").len(), 32);
    }
}
