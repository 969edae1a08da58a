//! Sessions: the validated message log in, sessions and violations out (rule set `quota`).
//!
//! Strings are compared only to number the conversation keys: one pass through a hash table
//! numbers the keys (`account_id`, `channel`, `business_id`, `user_id`), and only the distinct
//! keys are sorted as strings, giving each row a `key` rank. Plain columns of numbers (key,
//! time, direction, codes, and the row each event comes from) are sorted by key, time, inbound
//! before outbound, then `message_id`; the strings stay in the loader's frame until the session
//! and violation rows gather them. One pass over the sorted events, a key at a time, then
//! finds:
//! - the service / standard window: the last inbound event at or before each row, so a row at
//!   `t` sees an open window when `t - last_inbound < 24h` (rules W1, M1);
//! - Messenger and Instagram sessions as gaps-and-islands: an inbound event more than 24 hours
//!   after the previous one starts a new island (M2); outbound rows join the island whose
//!   window is open at their time, or are violations (M3);
//! - WhatsApp violations: free-form outbound messages outside the service window (W4).
//!
//! The WhatsApp session chain (W2: a session lasts exactly 24 hours from its opening message
//! and is never extended) depends on where the previous session ended: [`whatsapp_chain`]
//! runs it over the sorted columns, one key at a time.
//!
//! Finally each session is a run of consecutive rows (same key and session start), and one
//! pass over the runs builds the session rows.

use polars::prelude::*;
use sha2::{Digest, Sha256};

use crate::error::Result;

use crate::schema::{self, DAY_NS};

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
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
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
    let ((sessions, _), _, _) = derive_events(messages, None, &[])?;
    Ok(sessions)
}

/// [`derive`] over the rows of `messages` where `keep` holds (all of them if `None`): a
/// group's duplicates are dropped without copying its frame.
pub fn derive_kept(messages: &DataFrame, keep: Option<&[bool]>) -> Result<Sessions> {
    let ((sessions, _), _, _) = derive_events(messages, keep, &[])?;
    Ok(sessions)
}

/// [`derive_kept`], and the WhatsApp events Meta's pricing reads ([`crate::meta::units::Events`]):
/// the same sorted events, without failed messages and violations (never delivered); and the
/// id columns of `messages` in one chunk ([`id_strings`]).
pub fn derive_kept_for_meta(
    messages: &DataFrame,
    keep: Option<&[bool]>,
) -> Result<(Sessions, crate::meta::units::Events, DataFrame)> {
    let ((sessions, strings), events, marks) = derive_events(messages, keep, &[])?;
    let meta = meta_events(messages, &events, &marks, i64::MIN)?;
    Ok((sessions, meta, strings))
}

/// The WhatsApp events of `events` from `from` on that Meta's pricing reads.
fn meta_events(
    messages: &DataFrame,
    events: &Events,
    marks: &Marks,
    from: i64,
) -> Result<crate::meta::units::Events> {
    use crate::meta::units;
    let categories = values(
        messages.column(schema::CATEGORY)?.u32()?,
        schema::CATEGORY_NONE,
    );
    let mut meta = units::Events::default();
    for i in 0..events.key.len() {
        if events.channel[i] != schema::WHATSAPP || events.time[i] < from {
            continue;
        }
        let what = match (events.direction[i], events.kind[i]) {
            (schema::INBOUND, schema::KIND_CTA_CLICK | schema::KIND_AD_CLICK) => units::CLICK,
            (schema::INBOUND, _) => units::INBOUND,
            _ if events.status[i] == schema::STATUS_FAILED || marks.reason[i].is_some() => continue,
            (_, schema::KIND_TEMPLATE) => units::TEMPLATE,
            _ => units::MESSAGE,
        };
        meta.key.push(events.key[i]);
        meta.time.push(events.time[i]);
        meta.what.push(what);
        meta.category.push(categories[events.source[i] as usize]);
        meta.source.push(events.source[i]);
    }
    Ok(meta)
}

/// What the derivation found for one message, for `convbill explain`: its own marks, not a
/// second reading of the rules.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventNote {
    /// The row of the messages frame the event comes from.
    pub row: IdxSize,
    /// The latest inbound message of the conversation before this one (UTC nanoseconds).
    pub previous_inbound: Option<i64>,
    /// The latest inbound message at or before this one (this one, if inbound): the customer
    /// service / standard window runs 24 hours from it.
    pub last_inbound: Option<i64>,
    /// That window is open at the message.
    pub window_open: bool,
    /// Why the message is a violation, if it is one.
    pub violation: Option<&'static str>,
    /// The session the message counts toward: its row in [`Sessions::sessions`].
    pub session: Option<usize>,
    /// The message opened that session.
    pub opens: bool,
}

/// [`derive_kept`], also giving what each kept message did, in event order (conversation key,
/// then time).
pub fn derive_explained(
    messages: &DataFrame,
    keep: Option<&[bool]>,
) -> Result<(Sessions, Vec<EventNote>)> {
    let ((sessions, _), events, marks) = derive_events(messages, keep, &[])?;
    let mut notes = Vec::with_capacity(events.key.len());
    // Sessions are runs of consecutive events of one key and start (see `session_runs`).
    let mut current: Option<(u32, i64)> = None;
    let mut session = None;
    let mut last_inbound = None;
    for i in 0..events.key.len() {
        if i == 0 || events.key[i] != events.key[i - 1] {
            last_inbound = None;
        }
        let previous_inbound = last_inbound;
        if marks.inbound[i] {
            last_inbound = Some(events.time[i]);
        }
        let belongs = marks.start[i].map(|start| {
            if current != Some((events.key[i], start)) {
                current = Some((events.key[i], start));
                session = Some(session.map_or(0, |s: usize| s + 1));
            }
            session.expect("set above")
        });
        notes.push(EventNote {
            row: events.source[i],
            previous_inbound,
            last_inbound,
            window_open: marks.window_open[i],
            violation: marks.reason[i],
            session: belongs,
            opens: marks.opens[i],
        });
    }
    Ok((sessions, notes))
}

/// Messages a carried event stands for besides itself: the inbound and outbound messages of
/// its session that the night before no longer carried (see [`NightRows::carry`]). The
/// columns [`CARRIED_INBOUND`] and [`CARRIED_OUTBOUND`] of a night's carried events.
pub type Carried = (u32, u32);

/// See [`Carried`].
pub const CARRIED_INBOUND: &str = "carried_inbound";
/// See [`Carried`].
pub const CARRIED_OUTBOUND: &str = "carried_outbound";

/// What a night needs of its events besides the sessions ([`derive_night`]).
pub struct NightRows {
    /// Every row of the messages, in event order.
    pub order: IdxCa,
    /// The rows the next night needs to derive the sessions still open at the night's end
    /// again, in event order, for every key with a session open at the end:
    /// - WhatsApp: the message that opened it, the last customer message at or before that
    ///   (it decides the initiation) and the key's last customer message (it keeps the service
    ///   window open);
    /// - Messenger and Instagram: the customer message that opened it and the last (the next
    ///   night takes carried messages after the first of a key as part of its island).
    ///
    /// For a WhatsApp key without an open session: its last customer message of the last 24
    /// hours, if any.
    pub carry: IdxCa,
    /// For each row of `carry`: the messages of its session it stands for besides itself
    /// (those of the session not carried, on the row that opened it).
    pub carried: Vec<Carried>,
}

/// [`derive`] for a night ending at `end` (UTC nanoseconds; no message is later): also gives
/// the rows in event order and the rows to carry to the next night. The first rows of
/// `messages` may be carried from the night before: `carried` holds what each stands for.
///
/// With `meta_from`, also the events from then on that Meta's pricing reads, and the id
/// columns ([`derive_kept_for_meta`]).
pub fn derive_night(
    messages: &DataFrame,
    carried: &[Carried],
    end: i64,
    meta_from: Option<i64>,
) -> Result<(Sessions, NightRows, Option<MetaEvents>)> {
    let ((sessions, strings), events, marks) = derive_events(messages, None, carried)?;
    let rows = timed("found what to carry", || {
        Ok(night_rows(&events, &marks, carried, end))
    })?;
    let meta = match meta_from {
        Some(from) => Some((meta_events(messages, &events, &marks, from)?, strings)),
        None => None,
    };
    Ok((sessions, rows, meta))
}

/// The events Meta's pricing reads and the id columns of the messages ([`id_strings`]).
pub type MetaEvents = (crate::meta::units::Events, DataFrame);

/// See [`NightRows::carry`]: one pass over the events, a key at a time.
fn night_rows(events: &Events, marks: &Marks, carried: &[Carried], end: i64) -> NightRows {
    let (keys, times, starts) = (&events.key, &events.time, &marks.start);
    let (inbound, sources) = (&marks.inbound, &events.source);
    let mut carry: Vec<IdxSize> = Vec::new();
    let mut counts: Vec<Carried> = Vec::new();
    let mut kept: Vec<usize> = Vec::new();
    for (lo, hi) in key_runs(keys) {
        let whatsapp = events.channel[lo] == schema::WHATSAPP;
        // Session starts never decrease within a key: the last session is the latest start.
        let last_start = (lo..hi).filter_map(|i| starts[i]).max();
        let in_last = |i: usize| last_start.is_some() && starts[i] == last_start;
        let last_inbound = (lo..hi).rev().find(|&i| inbound[i]);
        let open = last_start.is_some_and(|start| {
            let ends = match whatsapp {
                true => start + DAY_NS,
                false => last_inbound.map_or(start, |i| times[i]) + DAY_NS,
            };
            ends > end
        });
        kept.clear();
        if !open {
            // A WhatsApp service window still open: its last customer message.
            if whatsapp {
                kept.extend(last_inbound.filter(|&i| times[i] > end - DAY_NS));
            }
        } else {
            let opener = (lo..hi)
                .find(|&i| marks.opens[i] && in_last(i))
                .expect("a session has the row that opened it");
            if whatsapp {
                kept.extend((lo..opener).rev().find(|&i| inbound[i]));
            }
            kept.push(opener);
            kept.extend(last_inbound.filter(|&i| i > opener));
        }
        // The open session's messages (the rows' own and those they stand for) less those
        // the kept rows are themselves: the opener stands for the rest.
        let opener_extra = open.then(|| {
            let (mut extra_in, mut extra_out) = (0, 0);
            for i in (lo..hi).filter(|&i| in_last(i)) {
                let dropped = kept.binary_search(&i).is_err();
                let (n_in, n_out) = messages_of(carried, sources[i], inbound[i], dropped);
                extra_in += n_in;
                extra_out += n_out;
            }
            (extra_in, extra_out)
        });
        for &i in &kept {
            carry.push(sources[i]);
            counts.push(match opener_extra {
                Some(extra) if marks.opens[i] && in_last(i) => extra,
                _ => (0, 0),
            });
        }
    }
    NightRows {
        order: IdxCa::from_slice(PlSmallStr::EMPTY, sources),
        carry: IdxCa::from_vec(PlSmallStr::EMPTY, carry),
        carried: counts,
    }
}

/// The inbound and outbound messages row `source` of the messages counts for in its session:
/// those it stands for ([`Carried`]) and, with `itself`, the row itself.
fn messages_of(carried: &[Carried], source: IdxSize, inbound: bool, itself: bool) -> Carried {
    let (rest_in, rest_out) = carried.get(source as usize).copied().unwrap_or((0, 0));
    (
        rest_in + (itself && inbound) as u32,
        rest_out + (itself && !inbound) as u32,
    )
}

/// The runs of equal keys in sorted `keys`, as `(first, end)` row ranges.
fn key_runs(keys: &[u32]) -> impl Iterator<Item = (usize, usize)> + '_ {
    let mut lo = 0;
    std::iter::from_fn(move || {
        if lo >= keys.len() {
            return None;
        }
        let hi = lo + keys[lo..].iter().take_while(|&&k| k == keys[lo]).count();
        let run = (lo, hi);
        lo = hi;
        Some(run)
    })
}

/// The columns of the loader's frame that sessions, violations and Meta's units take
/// (`account_id`, `business_id`, `user_id`, `message_id`), in one chunk: a gather from one
/// chunk moves only the strings' views, one across chunks copies every string it takes.
fn id_strings(messages: &DataFrame) -> Result<DataFrame> {
    let mut strings = messages.select([
        schema::ACCOUNT_ID,
        schema::BUSINESS_ID,
        schema::USER_ID,
        schema::MESSAGE_ID,
    ])?;
    strings.rechunk_mut();
    Ok(strings)
}

/// [`derive`], also giving [`id_strings`], the ordered events it derived them from and their
/// marks. `carried`: what the first rows of `messages` stand for ([`derive_night`]).
fn derive_events(
    messages: &DataFrame,
    keep: Option<&[bool]>,
    carried: &[Carried],
) -> Result<((Sessions, DataFrame), Events, Marks)> {
    let events = timed("sorted events", || sort_events(messages, keep))?;
    let marks = timed("window pass", || Ok(window_pass(&events, carried.len())))?;
    // Rows not kept have ranks too: count the keys of the events.
    let conversation_keys = key_runs(&events.key).count() as u64;
    let failed_outbound = (0..events.key.len())
        .filter(|&i| {
            events.direction[i] == schema::OUTBOUND && events.status[i] == schema::STATUS_FAILED
        })
        .count() as u64;
    let strings = id_strings(messages)?;
    let sessions = timed("aggregated sessions", || {
        aggregate_sessions(&events, &marks, &strings, carried)
    })?;
    let violations = timed("violations", || violations(&events, &marks, &strings))?;
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
    Ok(((sessions, strings), events, marks))
}

/// Runs one step, logging its wall time at debug level (`-vv`).
pub(crate) fn timed<T>(step: &str, f: impl FnOnce() -> Result<T>) -> Result<T> {
    let started = std::time::Instant::now();
    let result = f();
    tracing::debug!(ms = started.elapsed().as_millis() as u64, "{step}");
    result
}

/// The messages as plain columns in event order ([`schema::EVENT_ORDER`]): `key` is the rank
/// of the row's conversation key, `source` the row of the loader's frame it comes from (the
/// strings stay there until the session and violation rows gather them).
struct Events {
    key: Vec<u32>,
    time: Vec<i64>,
    direction: Vec<schema::Code>,
    channel: Vec<schema::Code>,
    kind: Vec<schema::Code>,
    status: Vec<schema::Code>,
    source: Vec<IdxSize>,
}

/// What the window pass finds for each event (see the module's documentation).
struct Marks {
    inbound: Vec<bool>,
    /// The service / standard window is open at the event: `t - last_inbound < 24h`.
    window_open: Vec<bool>,
    /// Why the event is a violation, if it is one.
    reason: Vec<Option<&'static str>>,
    /// The start of the session the event counts toward, if any.
    start: Vec<Option<i64>>,
    /// The event opened its session.
    opens: Vec<bool>,
}

/// [`values`], read in place when the column is one chunk without nulls.
pub(crate) fn values_in_place<T>(
    ca: &ChunkedArray<T>,
    default: T::Native,
) -> std::borrow::Cow<'_, [T::Native]>
where
    T: PolarsNumericType,
{
    match ca.cont_slice() {
        Ok(slice) => slice.into(),
        Err(_) => values(ca, default).into(),
    }
}

/// The values of a column of the loader's frame as one vector (nulls, which the loader
/// refuses in the columns read here, as `default`).
pub(crate) fn values<T>(ca: &ChunkedArray<T>, default: T::Native) -> Vec<T::Native>
where
    T: PolarsNumericType,
{
    if ca.null_count() > 0 {
        return ca.iter().map(|v| v.unwrap_or(default)).collect();
    }
    let mut out = Vec::with_capacity(ca.len());
    for array in ca.downcast_iter() {
        out.extend_from_slice(array.values());
    }
    out
}

/// [`values`] of a string column (nulls as "").
pub(crate) fn strings<'a>(frame: &'a DataFrame, name: &str) -> Result<Vec<&'a str>> {
    let ca = frame.column(name)?.str()?;
    let mut out = Vec::with_capacity(ca.len());
    for array in ca.downcast_iter() {
        out.extend(array.iter().map(|v| v.unwrap_or_default()));
    }
    Ok(out)
}

/// The values of a string column in row order (nulls, which the loader refuses in the key
/// columns, as whatever the array holds under them).
fn in_row_order(ca: &StringChunked) -> impl Iterator<Item = &str> {
    ca.downcast_iter().flat_map(|array| array.values_iter())
}

/// Messages → [`Events`].
///
/// Sorting on the string key columns row by row is the costliest step of a run. Where every
/// `user_id` is digits only (Meta's ids are) or short, each row's key becomes one number
/// that sorts as its strings do, and the rows are sorted on numbers alone ([`packed_order`]).
/// Otherwise the rows are numbered by key through a hash table first and only the distinct
/// keys sorted as strings ([`key_ranks`]). Either way the rare runs of rows equal in key,
/// time and direction are then put in `message_id` order.
fn sort_events(messages: &DataFrame, keep: Option<&[bool]>) -> Result<Events> {
    let times = values(messages.column(schema::TIMESTAMP)?.i64()?, i64::MIN);
    let directions = values(messages.column(schema::DIRECTION)?.u32()?, 0);
    let ids = messages.column(schema::MESSAGE_ID)?.str()?;
    let kept = |row: &usize| keep.is_none_or(|keep| keep[*row]);
    let numeric = timed("sorted rows by packed keys", || {
        packed_order(messages, &times, &directions, keep)
    })?;
    let mut rows = match numeric {
        Some(rows) => rows,
        None => {
            let ranks = timed("ranked keys", || key_ranks(messages))?;
            // One sort of plain tuples (key rank, time, direction, row); message ids are
            // compared only where the rest ties.
            timed("sorted rows", || {
                let mut rows: Vec<(u32, i64, u32, IdxSize)> = (0..ranks.len())
                    .filter(kept)
                    .map(|row| (ranks[row], times[row], directions[row], row as IdxSize))
                    .collect();
                sort_rows(&mut rows);
                Ok(rows)
            })?
        }
    };
    order_ties(&mut rows, ids);
    let codes = |name: &str| -> Result<Vec<schema::Code>> {
        let all = values(messages.column(name)?.u32()?, 0);
        Ok(rows.iter().map(|r| all[r.3 as usize]).collect())
    };
    Ok(Events {
        channel: codes(schema::CHANNEL)?,
        kind: codes(schema::KIND)?,
        status: codes(schema::STATUS)?,
        key: rows.iter().map(|r| r.0).collect(),
        time: rows.iter().map(|r| r.1).collect(),
        direction: rows.iter().map(|r| r.2).collect(),
        source: rows.iter().map(|r| r.3).collect(),
    })
}

/// Rows can be packed into 128 bits (direction 0 or 1, row below 2^31).
fn packable(rows: usize, directions: &[u32]) -> bool {
    rows < 1 << 31 && directions.iter().all(|d| *d <= 1)
}

/// Time with its sign bit flipped, direction and row as one 128-bit number that sorts like
/// the tuple.
fn pack_time(time: i64, direction: u32, row: IdxSize) -> u128 {
    (((time as u64) ^ (1 << 63)) as u128) << 32 | (direction as u128) << 31 | row as u128
}

fn unpack_time(p: u128) -> (i64, u32, IdxSize) {
    (
        (((p >> 32) as u64) ^ (1 << 63)) as i64,
        ((p >> 31) & 1) as u32,
        (p & ((1 << 31) - 1)) as IdxSize,
    )
}

/// Sorts (key rank, time, direction, row) tuples. Each is packed into one 128-bit number, so
/// the sort compares plain integers.
fn sort_rows(rows: &mut [(u32, i64, u32, IdxSize)]) {
    // 31 bits for the row (its place in the frame) and one for the direction.
    if rows.len() >= 1 << 31 || rows.iter().any(|r| r.2 > 1 || r.3 >= 1 << 31) {
        rows.sort_unstable();
        return;
    }
    let pack = |r: &(u32, i64, u32, IdxSize)| (r.0 as u128) << 96 | pack_time(r.1, r.2, r.3);
    let mut packed: Vec<u128> = rows.iter().map(pack).collect();
    packed.sort_unstable();
    for (row, p) in rows.iter_mut().zip(&packed) {
        let (time, direction, source) = unpack_time(*p);
        *row = ((p >> 96) as u32, time, direction, source);
    }
}

/// Puts the runs of rows equal in key, time and direction in `message_id` order, then row.
/// Such runs are rare: their ids are looked up one by one.
fn order_ties(rows: &mut [(u32, i64, u32, IdxSize)], ids: &StringChunked) {
    for run in rows.chunk_by_mut(|a, b| (a.0, a.1, a.2) == (b.0, b.1, b.2)) {
        if run.len() > 1 {
            let id = |row: IdxSize| ids.get(row as usize).unwrap_or_default();
            run.sort_unstable_by(|a, b| id(a.3).cmp(id(b.3)).then(a.3.cmp(&b.3)));
        }
    }
}

/// How a group's `user_id`s become numbers that sort as the strings do (byte order), below
/// 2^101: equal for equal strings only.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum UserCode {
    /// Digits only, at most 24 of them (Meta's ids): one 4-bit digit each, left-aligned and
    /// zero-padded to 24, then the length: `"10" < "9"`, `"1" < "10"`, `"01" < "1"`.
    Digits,
    /// At most 12 bytes: the bytes, left-aligned and zero-padded to 12, then the length.
    Short,
}

impl UserCode {
    /// `user`'s number, if it has this code.
    fn code(self, user: &str) -> Option<u128> {
        let bytes = user.as_bytes();
        match self {
            UserCode::Digits => {
                if bytes.len() > 24 {
                    return None;
                }
                let mut digits = 0u128;
                for &byte in bytes {
                    let digit = byte.wrapping_sub(b'0');
                    if digit > 9 {
                        return None;
                    }
                    digits = digits << 4 | digit as u128;
                }
                Some(digits << (4 * (24 - bytes.len())) << 5 | bytes.len() as u128)
            }
            UserCode::Short => {
                if bytes.len() > 12 {
                    return None;
                }
                let mut padded = [0u8; 16];
                padded[..bytes.len()].copy_from_slice(bytes);
                Some((u128::from_be_bytes(padded) >> 32) << 4 | bytes.len() as u128)
            }
        }
    }
}

/// The kept rows as (key rank, time, direction, row), sorted, when their `user_id`s have one
/// [`UserCode`] (else `None`). Each row's key becomes one number that sorts as the key's
/// strings do: the rank of its (account, channel, business), which are few, above its user's
/// code. The distinct keys (a conversation has several rows) are numbered through a hash
/// table and sorted; the rows are then placed by key with a counting sort, which keeps them in
/// row order within a key, and a key's rows are sorted by (time, direction, row) only where
/// the log did not already have them in that order.
#[allow(clippy::type_complexity)]
fn packed_order(
    messages: &DataFrame,
    times: &[i64],
    directions: &[u32],
    keep: Option<&[bool]>,
) -> Result<Option<Vec<(u32, i64, u32, IdxSize)>>> {
    if !packable(times.len(), directions) {
        return Ok(None);
    }
    // The strings are read in row order, where they lie.
    let column = |name: &str| -> Result<_> { Ok(in_row_order(messages.column(name)?.str()?)) };
    let channels = values(messages.column(schema::CHANNEL)?.u32()?, 0);
    let kept = |row: &usize| keep.is_none_or(|keep| keep[*row]);
    // (account, channel, business), numbered in row order, then ranked in key order.
    let mut prefixes: PlHashMap<(&str, u32, &str), u32> = PlHashMap::default();
    let prefix_of_row: Vec<u32> = column(schema::ACCOUNT_ID)?
        .zip(&channels)
        .zip(column(schema::BUSINESS_ID)?)
        .map(|((account, channel), business)| {
            let next = prefixes.len() as u32;
            *prefixes
                .entry((account, *channel, business))
                .or_insert(next)
        })
        .collect();
    if prefixes.len() >= 1 << 27 {
        return Ok(None);
    }
    let mut in_order: Vec<((&str, u32, &str), u32)> = prefixes.into_iter().collect();
    in_order.sort_unstable();
    let mut prefix_rank = vec![0u32; in_order.len()];
    for (rank, (_, number)) in in_order.iter().enumerate() {
        prefix_rank[*number as usize] = rank as u32;
    }
    // Each kept row's key as a number, then the keys numbered in row order.
    let rows: Vec<IdxSize> = (0..times.len())
        .filter(kept)
        .map(|row| row as IdxSize)
        .collect();
    let users = messages.column(schema::USER_ID)?.str()?;
    let codes = |user_code: UserCode| -> Option<Vec<u128>> {
        in_row_order(users)
            .enumerate()
            .filter(|(row, _)| kept(row))
            .map(|(row, user)| {
                let prefix = prefix_rank[prefix_of_row[row] as usize] as u128;
                Some(prefix << 101 | user_code.code(user)?)
            })
            .collect()
    };
    let Some(codes) = codes(UserCode::Digits).or_else(|| codes(UserCode::Short)) else {
        return Ok(None);
    };
    let (number_of_row, distinct) = number_keys(&codes, PlRandomState::default());
    drop(codes);
    let mut by_code: Vec<(u128, IdxSize)> = distinct
        .into_iter()
        .enumerate()
        .map(|(number, code)| (code, number as IdxSize))
        .collect();
    by_code.sort_unstable();
    let mut rank_of = vec![0 as IdxSize; by_code.len()];
    for (rank, (_, number)) in by_code.iter().enumerate() {
        rank_of[*number as usize] = rank as IdxSize;
    }
    // Counting sort by key rank: each key's rows get consecutive places, in row order.
    let mut next = vec![0usize; rank_of.len() + 1];
    for number in &number_of_row {
        next[rank_of[*number as usize] as usize + 1] += 1;
    }
    for rank in 1..next.len() {
        next[rank] += next[rank - 1];
    }
    let mut sorted = vec![(0u32, 0i64, 0u32, 0 as IdxSize); rows.len()];
    for (&row, number) in rows.iter().zip(&number_of_row) {
        let rank = rank_of[*number as usize];
        let place = &mut next[rank as usize];
        let r = row as usize;
        sorted[*place] = (rank, times[r], directions[r], row);
        *place += 1;
    }
    for run in sorted.chunk_by_mut(|a, b| a.0 == b.0) {
        if !run.is_sorted() {
            run.sort_unstable();
        }
    }
    Ok(Some(sorted))
}

/// One pass over the events, a key at a time, for the window columns of the module's
/// documentation; then the WhatsApp chain.
///
/// The first `carried` rows of the messages were carried from the night before: of a Messenger
/// or Instagram key they are its open island's opening message and later messages of it (not
/// all of them), so none but the first starts an island.
fn window_pass(events: &Events, carried: usize) -> Marks {
    let n = events.key.len();
    let mut inbound = vec![false; n];
    let mut window_open = vec![false; n];
    let mut reason = vec![None; n];
    let mut eligible = vec![false; n];
    let mut whatsapp = vec![false; n];
    let mut standard_start = vec![None; n];
    let mut new_island = vec![false; n];
    for (lo, hi) in key_runs(&events.key) {
        let is_whatsapp = events.channel[lo] == schema::WHATSAPP;
        // The last inbound event so far, and the start of the current island.
        let mut last_inbound: Option<i64> = None;
        let mut island: Option<i64> = None;
        for i in lo..hi {
            let t = events.time[i];
            let is_inbound = events.direction[i] == schema::INBOUND;
            let delivered_out = events.direction[i] == schema::OUTBOUND
                && events.status[i] != schema::STATUS_FAILED;
            let previous_inbound = last_inbound;
            if is_inbound {
                last_inbound = Some(t);
            }
            let open = matches!(last_inbound, Some(last) if t - last < DAY_NS);
            let fresh = is_inbound
                && match previous_inbound {
                    Some(_) if (events.source[i] as usize) < carried => false,
                    Some(previous) => t - previous >= DAY_NS,
                    None => true,
                };
            if fresh {
                island = Some(t);
            }
            let why = match (delivered_out && !open, is_whatsapp) {
                (false, _) => None,
                (true, true) => (events.kind[i] == schema::KIND_MESSAGE)
                    .then_some(schema::OUTSIDE_SERVICE_WINDOW),
                (true, false) => Some(schema::OUTSIDE_STANDARD_WINDOW),
            };
            inbound[i] = is_inbound;
            window_open[i] = open;
            reason[i] = why;
            whatsapp[i] = is_whatsapp;
            eligible[i] = is_whatsapp && delivered_out && why.is_none();
            new_island[i] = fresh;
            if is_inbound || (delivered_out && open) {
                standard_start[i] = island;
            }
        }
    }
    let chain = whatsapp_chain(&events.key, &events.time, &inbound, &eligible, &whatsapp);
    let start = (0..n)
        .map(|i| match whatsapp[i] {
            true => chain.start[i],
            false => standard_start[i],
        })
        .collect();
    let opens = (0..n)
        .map(|i| match whatsapp[i] {
            true => chain.opens[i],
            false => new_island[i],
        })
        .collect();
    Marks {
        inbound,
        window_open,
        reason,
        start,
        opens,
    }
}

/// `key` for each row: the rank of its conversation key (`account_id`, `channel` code,
/// `business_id`, `user_id`) among the log's distinct keys in that order. Rows are numbered by
/// key through a hash table ([`number_keys`]); only the distinct keys are then sorted,
/// comparing strings.
fn key_ranks(messages: &DataFrame) -> Result<Vec<u32>> {
    let accounts = strings(messages, schema::ACCOUNT_ID)?;
    let channels = values(messages.column(schema::CHANNEL)?.u32()?, 0);
    let businesses = strings(messages, schema::BUSINESS_ID)?;
    let users = strings(messages, schema::USER_ID)?;
    type Key<'a> = (&'a str, u32, &'a str, &'a str);
    // The loader refuses nulls in key columns.
    let keys: Vec<Key> = (0..accounts.len())
        .map(|row| (accounts[row], channels[row], businesses[row], users[row]))
        .collect();
    let (number_of_row, distinct) = number_keys(&keys, PlRandomState::default());
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
    Ok(number_of_row
        .into_iter()
        .map(|n| rank[n as usize])
        .collect())
}

/// Numbers the distinct values among `keys` in order of first appearance: each row's number,
/// and the values by number. One pass in row order through a hash table of the values seen
/// (a row's strings are read where they lie, in order; a table entry points at the strings of
/// the value's first row, which is usually still in cache for a conversation's next rows).
fn number_keys<K, S>(keys: &[K], hasher: S) -> (Vec<IdxSize>, Vec<K>)
where
    K: std::hash::Hash + Eq + Copy,
    S: std::hash::BuildHasher,
{
    let mut numbers: std::collections::HashMap<K, IdxSize, S> =
        std::collections::HashMap::with_capacity_and_hasher(keys.len() / 4, hasher);
    let mut distinct: Vec<K> = Vec::new();
    let number_of_row = keys
        .iter()
        .map(|key| {
            *numbers.entry(*key).or_insert_with(|| {
                distinct.push(*key);
                (distinct.len() - 1) as IdxSize
            })
        })
        .collect();
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

/// A `Datetime(ns, UTC)` column of UTC nanoseconds.
pub(crate) fn utc_column(name: &str, times: Int64Chunked) -> Column {
    times
        .with_name(name.into())
        .into_datetime(TimeUnit::Nanoseconds, Some(TimeZone::UTC))
        .into_column()
}

/// A string column each row of which is one of a few `names`, or null: the names are stored
/// once and each row is a view of one, so no row's text is copied, and the writer's run
/// dictionary ([`crate::write::Layout::Runs`]) tells equal rows by their views alone.
pub(crate) fn repeated_text(
    name: &str,
    names: &[&str],
    rows: impl ExactSizeIterator<Item = Option<usize>>,
) -> Column {
    use polars_arrow::array::{Utf8ViewArray, View};
    use polars_arrow::bitmap::MutableBitmap;
    let mut buffer: Vec<u8> = Vec::new();
    let name_views: Vec<View> = names
        .iter()
        .map(|name| {
            let offset = u32::try_from(buffer.len()).expect("a few names fit a buffer");
            buffer.extend_from_slice(name.as_bytes());
            View::new_from_bytes(name.as_bytes(), 0, offset)
        })
        .collect();
    let mut views = Vec::with_capacity(rows.len());
    let mut validity = MutableBitmap::with_capacity(rows.len());
    for row in rows {
        views.push(row.map_or_else(View::default, |i| name_views[i]));
        validity.push(row.is_some());
    }
    let validity = (validity.unset_bits() > 0).then(|| validity.into());
    let buffers = match buffer.is_empty() {
        true => Vec::new(),
        false => vec![buffer.into()],
    };
    // SAFETY: each view is a null's default view or was made by `View::new_from_bytes` of a
    // name (UTF-8, being a `&str`) at its offset in `buffer`, the array's only buffer.
    let array = unsafe {
        Utf8ViewArray::new_unchecked_unknown_md(
            ArrowDataType::Utf8View,
            views.into(),
            buffers.into(),
            validity,
            None,
        )
    };
    StringChunked::with_chunk(name.into(), array).into_column()
}

/// A string column of the names of `codes` in `enumeration`.
fn names_column(
    enumeration: &schema::Enumeration,
    codes: impl Iterator<Item = schema::Code>,
) -> Column {
    StringChunked::from_iter_values(
        enumeration.column.into(),
        codes.map(|code| enumeration.name_of(code)),
    )
    .into_column()
}

/// The `period` column (`YYYY-MM`, UTC) of UTC nanoseconds: [`crate::rates::period_containing`]
/// once per month met, its bounds telling which later times share it.
fn period_column(times: impl Iterator<Item = i64>) -> Column {
    let mut periods: Vec<(String, i64, i64)> = Vec::new();
    let mut last = 0;
    let of_time: Vec<usize> = times
        .map(|time| {
            let within = |(_, start, end): &(String, i64, i64)| *start <= time && time < *end;
            if !periods.get(last).is_some_and(within) {
                last = match periods.iter().position(within) {
                    Some(known) => known,
                    None => {
                        periods.push(crate::rates::period_containing(time, chrono_tz::UTC));
                        periods.len() - 1
                    }
                };
            }
            last
        })
        .collect();
    StringChunked::from_iter_values(
        "period".into(),
        of_time.iter().map(|p| periods[*p].0.as_str()),
    )
    .into_column()
}

/// One session: a run of consecutive events with the same key and session start.
struct Run {
    first: usize,
    opener: Option<usize>,
    start: i64,
    inbound_messages: i64,
    outbound_messages: i64,
    last_inbound: Option<i64>,
}

/// The sessions of the events, in event order.
///
/// The rows of one session are consecutive: events are sorted by key and time, and within a
/// key a later row never belongs to an earlier session (WhatsApp sessions follow each other;
/// a Messenger/Instagram island's rows precede the next island's). So one pass finds each
/// session's run of rows; it checks that order and fails rather than split a session.
fn session_runs(events: &Events, marks: &Marks, carried: &[Carried]) -> Result<Vec<Run>> {
    let mut runs: Vec<Run> = Vec::new();
    let mut current: Option<(u32, i64)> = None;
    for i in 0..events.key.len() {
        let (key, Some(start)) = (events.key[i], marks.start[i]) else {
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
            runs.push(Run {
                first: i,
                opener: None,
                start,
                inbound_messages: 0,
                outbound_messages: 0,
                last_inbound: None,
            });
        }
        let run = runs.last_mut().expect("a run was pushed");
        if marks.opens[i] && run.opener.is_none() {
            run.opener = Some(i);
        }
        if marks.inbound[i] {
            run.last_inbound = Some(events.time[i]).max(run.last_inbound);
        }
        let (n_in, n_out) = messages_of(carried, events.source[i], marks.inbound[i], true);
        run.inbound_messages += n_in as i64;
        run.outbound_messages += n_out as i64;
    }
    Ok(runs)
}

/// `strings` taken from a group's rows (see [`aggregate_sessions`]) with their bytes copied
/// together in row order. Taken strings longer than a view holds lie scattered over the
/// group's buffers; copied together once, the session ids and the writer read them one after
/// the other instead of each looking for them again.
fn compacted(strings: StringChunked) -> StringChunked {
    StringChunked::from_chunk_iter(
        strings.name().clone(),
        strings.downcast_iter().map(|array| array.clone().gc()),
    )
}

/// Ordered events → one row per session ([`SESSION_COLUMNS`]), ordered by key and start.
fn aggregate_sessions(
    events: &Events,
    marks: &Marks,
    messages: &DataFrame,
    carried: &[Carried],
) -> Result<DataFrame> {
    let runs = session_runs(events, marks, carried)?;
    let n = runs.len();
    let source = |i: usize| events.source[i];
    let firsts = IdxCa::from_iter_values(PlSmallStr::EMPTY, runs.iter().map(|r| source(r.first)));
    let openers =
        IdxCa::from_iter_options(PlSmallStr::EMPTY, runs.iter().map(|r| r.opener.map(source)));
    let mut keys = messages
        .select([schema::ACCOUNT_ID, schema::BUSINESS_ID, schema::USER_ID])?
        .take(&firsts)?;
    let users = compacted(keys.column(schema::USER_ID)?.str()?.clone());
    keys.with_column(users.into_column())?;
    let opened_by = compacted(messages.column(schema::MESSAGE_ID)?.str()?.take(&openers)?)
        .with_name("opened_by".into())
        .into_column();
    let whatsapp = |r: &Run| events.channel[r.first] == schema::WHATSAPP;
    let session_ids: StringChunked = {
        let accounts = strings(&keys, schema::ACCOUNT_ID)?;
        let openers = opened_by.str()?;
        let mut hex = [0u8; 32];
        let mut builder = StringChunkedBuilder::new("session_id".into(), accounts.len());
        for (account, opener) in accounts.iter().zip(openers.iter()) {
            builder.append_value(session_id_into(account, opener.unwrap_or(""), &mut hex));
        }
        builder.finish()
    };
    let initiation = StringChunked::from_iter_values(
        "initiation".into(),
        runs.iter().map(|r| match whatsapp(r) {
            true if r.opener.is_some_and(|o| marks.window_open[o]) => schema::USER_INITIATED,
            true => schema::BUSINESS_INITIATED,
            false => schema::STANDARD,
        }),
    );
    let ends_at = Int64Chunked::from_iter_options(
        PlSmallStr::EMPTY,
        runs.iter().map(|r| match whatsapp(r) {
            true => Some(r.start + DAY_NS),
            false => r.last_inbound.map(|last| last + DAY_NS),
        }),
    );
    let billable: Vec<bool> = runs
        .iter()
        .map(|r| whatsapp(r) || r.outbound_messages > 0)
        .collect();
    let columns = vec![
        session_ids.with_name("session_id".into()).into_column(),
        keys.column(schema::ACCOUNT_ID)?.clone(),
        names_column(
            &schema::CHANNELS,
            runs.iter().map(|r| events.channel[r.first]),
        ),
        keys.column(schema::BUSINESS_ID)?.clone(),
        keys.column(schema::USER_ID)?.clone(),
        initiation.into_column(),
        utc_column(
            "started_at",
            Int64Chunked::from_iter_values(PlSmallStr::EMPTY, runs.iter().map(|r| r.start)),
        ),
        utc_column("ends_at", ends_at),
        opened_by,
        Column::new(
            "inbound_messages".into(),
            runs.iter().map(|r| r.inbound_messages).collect::<Vec<_>>(),
        ),
        Column::new(
            "outbound_messages".into(),
            runs.iter().map(|r| r.outbound_messages).collect::<Vec<_>>(),
        ),
        Column::new(
            "quota".into(),
            billable.iter().map(|b| *b as i64).collect::<Vec<_>>(),
        ),
        Column::new("billable".into(), billable),
        period_column(runs.iter().map(|r| r.start)),
    ];
    Ok(DataFrame::new(n, columns)?.select(SESSION_COLUMNS)?)
}

/// See [`session_ids`].
pub fn session_id(account_id: &str, opened_by: &str) -> String {
    session_id_into(account_id, opened_by, &mut [0u8; 32]).to_string()
}

/// Whether [`session_id`] of (`account_id`, `opened_by`) starts with `prefix`, without
/// allocating.
pub fn session_id_starts_with(account_id: &str, opened_by: &str, prefix: &str) -> bool {
    session_id_into(account_id, opened_by, &mut [0u8; 32]).starts_with(prefix)
}

/// [`session_id`], written into `hex`.
fn session_id_into<'a>(account_id: &str, opened_by: &str, hex: &'a mut [u8; 32]) -> &'a str {
    let mut hasher = Sha256::new();
    hasher.update(account_id.as_bytes());
    hasher.update([0x1f]);
    hasher.update(opened_by.as_bytes());
    hex::encode_to_slice(&hasher.finalize()[..16], hex).expect("16 bytes fit 32 hex digits");
    std::str::from_utf8(hex).expect("hex digits are UTF-8")
}

/// Ordered events → one row per violating message ([`VIOLATION_COLUMNS`]), in event order.
fn violations(events: &Events, marks: &Marks, messages: &DataFrame) -> Result<DataFrame> {
    let rows: Vec<usize> = (0..events.key.len())
        .filter(|&i| marks.reason[i].is_some())
        .collect();
    let sources =
        IdxCa::from_iter_values(PlSmallStr::EMPTY, rows.iter().map(|&i| events.source[i]));
    let strings = messages
        .select([
            schema::ACCOUNT_ID,
            schema::BUSINESS_ID,
            schema::USER_ID,
            schema::MESSAGE_ID,
        ])?
        .take(&sources)?;
    let times = || rows.iter().map(|&i| events.time[i]);
    let columns = vec![
        strings.column(schema::ACCOUNT_ID)?.clone(),
        names_column(&schema::CHANNELS, rows.iter().map(|&i| events.channel[i])),
        strings.column(schema::BUSINESS_ID)?.clone(),
        strings.column(schema::USER_ID)?.clone(),
        strings.column(schema::MESSAGE_ID)?.clone(),
        names_column(&schema::KINDS, rows.iter().map(|&i| events.kind[i])),
        utc_column(
            schema::TIMESTAMP,
            Int64Chunked::from_iter_values(PlSmallStr::EMPTY, times()),
        ),
        StringChunked::from_iter_values(
            "reason".into(),
            rows.iter().map(|&i| marks.reason[i].unwrap_or_default()),
        )
        .into_column(),
        period_column(times()),
    ];
    Ok(DataFrame::new(rows.len(), columns)?)
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
        /// Every value hashes alike.
        #[derive(Default)]
        struct Collide;
        impl std::hash::Hasher for Collide {
            fn finish(&self) -> u64 {
                7
            }
            fn write(&mut self, _: &[u8]) {}
        }
        let keys = ["b", "a", "b", "c", "a"];
        let colliding = number_keys(&keys, std::hash::BuildHasherDefault::<Collide>::default());
        let hashed = number_keys(&keys, PlRandomState::default());
        for (numbers, distinct) in [colliding, hashed] {
            assert_eq!(distinct, ["b", "a", "c"]);
            assert_eq!(numbers, [0, 1, 0, 2, 1]);
        }
    }

    #[test]
    fn rows_sort_by_key_time_direction_then_message_id() {
        let ids = StringChunked::from_iter_values(
            PlSmallStr::EMPTY,
            ["m3", "m1", "m2", "m0", "m4", "m5"].into_iter(),
        );
        let mut rows = vec![
            (1, -5, 1, 0),
            (1, -5, 1, 1),
            (0, 7, 1, 2),
            (0, 7, 0, 3),
            (0, i64::MIN, 1, 4),
            (1, i64::MAX, 0, 5),
        ];
        sort_rows(&mut rows);
        order_ties(&mut rows, &ids);
        let order: Vec<IdxSize> = rows.iter().map(|r| r.3).collect();
        // Key 0: the earliest time, then inbound before outbound; key 1: at -5, `m1` before
        // `m3`, then the latest time.
        assert_eq!(order, [4, 3, 2, 1, 0, 5]);
        assert_eq!(rows[0], (0, i64::MIN, 1, 4));
        assert_eq!(rows[5], (1, i64::MAX, 0, 5));
    }

    #[test]
    fn user_codes_are_equal_for_equal_strings_and_sort_as_the_strings() {
        let digits = [
            "",
            "0",
            "00",
            "01",
            "1",
            "10",
            "100000000000000000000000",
            "9",
            "99",
        ];
        let short = ["", "a", "a\0", "ab", "u1", "u10", "u9", "zzzzzzzzzzzz"];
        for (code, users) in [
            (UserCode::Digits, &digits[..]),
            (UserCode::Short, &short[..]),
        ] {
            let codes: Vec<u128> = users.iter().map(|u| code.code(u).unwrap()).collect();
            // The lists are in byte order, and distinct.
            assert!(codes.windows(2).all(|w| w[0] < w[1]), "{code:?}: {codes:?}");
            assert!(codes.iter().all(|c| *c < 1 << 101));
        }
        assert_eq!(UserCode::Digits.code("1a"), None);
        assert_eq!(UserCode::Digits.code("1000000000000000000000000"), None);
        assert_eq!(UserCode::Short.code("thirteen char"), None);
    }

    #[test]
    fn session_ids_are_stable_and_distinct() {
        assert_eq!(session_id("acme", "m1"), session_id("acme", "m1"));
        assert_ne!(session_id("acme", "m1"), session_id("acme", "m2"));
        assert_ne!(session_id("acm", "em1"), session_id("acme", "m1"));
        assert_eq!(session_id("acme", "m1").len(), 32);
    }
}
