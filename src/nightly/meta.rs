//! Meta's pricing in nightly runs (a rate card with `[meta]`): each night prices the units that
//! start on its day as a whole run prices them, and writes the units complete by its end to
//! `meta_units/date=D/part-0.parquet`.
//!
//! The state of night D carries what can still price a later event, not the events
//! themselves:
//! - per conversation key ([`KEYS`]), what [`units::KeyState::after`] keeps at midnight: the
//!   latest inbound message or click of the last 24 hours, a click not answered yet, the end
//!   of the free entry point window and of its conversation;
//! - the conversations still open, priced ([`OPEN_UNITS`]): a free entry point can still close
//!   them early, so they are written by the night they end in, and until then they hold their
//!   key's slot of their category;
//! - the counts a month's free tier and volume tiers go on from ([`units::Counts`]; months
//!   that can still get units only);
//! - the cost lines of the units the night priced ([`LINES`]): the month to date sums them.
//!
//! Every file's rows are sorted by account and key, so a night in groups writes the same bytes
//! as in one piece, and a rerun the same bytes again.

use chrono::NaiveDate;
use polars::prelude::*;

use super::night::{read_accounts, Accounts};
use super::Tree;
use crate::error::Result;
use crate::meta::config::MetaConfig;
use crate::meta::cost::Lines;
use crate::meta::units::{self, Carry, Counts, KeyState, UnitRef};
use crate::meta::Category;
use crate::schema;

/// `meta_units/date=D/`: the units a night wrote.
pub const UNITS_DIR: &str = "meta_units";
/// The keys' states at the night's end.
pub(crate) const KEYS: &str = "meta_keys.parquet";
/// The conversations open at the night's end, priced (`meta_units.parquet`'s columns).
pub const OPEN_UNITS: &str = "meta_open_units.parquet";
/// Regular service conversations per account, WABA and month ([`Counts::service`]).
pub(crate) const SERVICE_COUNTS: &str = "meta_service_counts.parquet";
/// Charged messages per account, month, market and category ([`Counts::charged`]).
pub(crate) const CHARGED_COUNTS: &str = "meta_charged_counts.parquet";
/// The cost lines of the units the night priced.
pub(crate) const LINES: &str = "meta_lines.json";

const LAST_INBOUND: &str = "last_inbound";
const CLICK: &str = "click";
const FREE_ENTRY_END: &str = "free_entry_end";
const FREE_ENTRY_CONVERSATION_END: &str = "free_entry_conversation_end";
const WABA: &str = "waba";
const MONTH: &str = "month";
const COUNT: &str = "count";

/// What one group of a night gives of Meta's pricing.
pub(crate) struct GroupMeta {
    /// The units complete by the night's end: its messages, and the conversations that ended.
    pub units: DataFrame,
    pub open: DataFrame,
    pub keys: DataFrame,
    pub service: DataFrame,
    pub charged: DataFrame,
    pub lines: Lines,
}

/// The state of the night before `night` among `accounts`: what pricing goes on from, and the
/// open conversations its [`UnitRef::Carried`] point into.
fn carried(
    tree: &Tree,
    night: NaiveDate,
    accounts: &Accounts,
) -> Result<(Carry, Option<DataFrame>)> {
    let Some(dir) = tree.state(night - chrono::Days::new(1)) else {
        return Ok((Carry::night(), None));
    };
    let read = |file: &str| -> Result<Option<DataFrame>> {
        let path = dir.join(file);
        match path.is_file() {
            true => Ok(Some(read_accounts(&path, accounts)?)),
            false => Ok(None),
        }
    };
    let mut carry = Carry::night();
    let strings = |frame: &DataFrame, name: &str| -> Result<Vec<String>> {
        let strings = crate::sessions::strings(frame, name)?;
        Ok(strings.into_iter().map(str::to_string).collect())
    };
    let times = |frame: &DataFrame, name: &str| -> Result<Vec<Option<i64>>> {
        Ok(frame
            .column(name)?
            .to_physical_repr()
            .i64()?
            .iter()
            .collect())
    };
    let key_strings = |frame: &DataFrame| -> Result<Vec<units::KeyStrings>> {
        let (a, b, u) = (
            strings(frame, schema::ACCOUNT_ID)?,
            strings(frame, schema::BUSINESS_ID)?,
            strings(frame, schema::USER_ID)?,
        );
        Ok(a.into_iter()
            .zip(b)
            .zip(u)
            .map(|((a, b), u)| (a, b, u))
            .collect())
    };
    if let Some(keys) = read(KEYS)? {
        let (inbound, click, window, conversation) = (
            times(&keys, LAST_INBOUND)?,
            times(&keys, CLICK)?,
            times(&keys, FREE_ENTRY_END)?,
            times(&keys, FREE_ENTRY_CONVERSATION_END)?,
        );
        for (i, key) in key_strings(&keys)?.into_iter().enumerate() {
            carry.states.insert(
                key,
                KeyState {
                    last_inbound: inbound[i],
                    click: click[i],
                    free_entry_end: window[i].unwrap_or(i64::MIN),
                    free_entry_conversation_end: conversation[i].unwrap_or(i64::MIN),
                    ..KeyState::default()
                },
            );
        }
    }
    let open = read(OPEN_UNITS)?;
    if let Some(open) = &open {
        let ends = times(open, "ends_at")?;
        let categories = strings(open, "category")?;
        let types = strings(open, "pricing_type")?;
        for (i, key) in key_strings(open)?.into_iter().enumerate() {
            // A free entry point conversation holds no category's slot: its end is the key's.
            if types[i] == units::PricingType::FreeEntryPoint.name() {
                continue;
            }
            let category = Category::parse(&categories[i]).ok_or_else(|| {
                state_error(format!(
                    "{OPEN_UNITS} of the night before {night}: category `{}`",
                    categories[i]
                ))
            })?;
            let end = ends[i].ok_or_else(|| {
                state_error(format!(
                    "{OPEN_UNITS} of the night before {night}: a conversation without an end"
                ))
            })?;
            carry.states.entry(key).or_default().open[category.index()] =
                Some((end, UnitRef::Carried(i)));
        }
    }
    if let Some(service) = read(SERVICE_COUNTS)? {
        let (accounts, wabas) = (
            strings(&service, schema::ACCOUNT_ID)?,
            strings(&service, WABA)?,
        );
        let months = service.column(MONTH)?.i32()?.into_no_null_iter();
        let counts = service.column(COUNT)?.u64()?.into_no_null_iter();
        for (((account, waba), month), count) in
            accounts.into_iter().zip(wabas).zip(months).zip(counts)
        {
            carry.counts.service.insert((account, waba, month), count);
        }
    }
    if let Some(charged) = read(CHARGED_COUNTS)? {
        let (accounts, markets, categories) = (
            strings(&charged, schema::ACCOUNT_ID)?,
            strings(&charged, "market")?,
            strings(&charged, "category")?,
        );
        let months: Vec<i32> = charged.column(MONTH)?.i32()?.into_no_null_iter().collect();
        let counts: Vec<u64> = charged.column(COUNT)?.u64()?.into_no_null_iter().collect();
        for (i, account) in accounts.into_iter().enumerate() {
            let category = Category::parse(&categories[i]).ok_or_else(|| {
                state_error(format!(
                    "{CHARGED_COUNTS} of the night before {night}: category `{}`",
                    categories[i]
                ))
            })?;
            carry.counts.charged.insert(
                (account, months[i], markets[i].clone(), category),
                counts[i],
            );
        }
    }
    Ok((carry, open))
}

/// Prices one group's night: `messages` is the frame the night derived sessions from,
/// `events` and `id_strings` what [`crate::sessions::derive_night`] gave for Meta.
#[allow(clippy::too_many_arguments)]
pub(crate) fn compute_group(
    tree: &Tree,
    night: NaiveDate,
    accounts: &Accounts,
    messages: &DataFrame,
    (events, id_strings): crate::sessions::MetaEvents,
    meta: &MetaConfig,
    paths: &[String],
) -> Result<GroupMeta> {
    let end = super::start_ns(night) + schema::DAY_NS;
    let (carry, open_before) = carried(tree, night, accounts)?;
    let priced = units::price(messages, &id_strings, &events, meta, paths, &carry)?;

    // The keys' states at the night's end: those with events tonight from the scan, the others
    // as they were.
    let mut states: std::collections::BTreeMap<units::KeyStrings, KeyState> =
        std::collections::BTreeMap::new();
    {
        use crate::sessions::strings;
        let (accounts, businesses, users) = (
            strings(&id_strings, schema::ACCOUNT_ID)?,
            strings(&id_strings, schema::BUSINESS_ID)?,
            strings(&id_strings, schema::USER_ID)?,
        );
        for (row, state) in &priced.states {
            let row = *row as usize;
            states.insert(
                (
                    accounts[row].to_string(),
                    businesses[row].to_string(),
                    users[row].to_string(),
                ),
                *state,
            );
        }
    }
    for (key, state) in carry.states {
        states.entry(key).or_insert(state);
    }
    let states: Vec<(units::KeyStrings, KeyState)> = states
        .into_iter()
        .filter_map(|(key, state)| state.after(end).map(|s| (key, s)))
        .collect();
    let keys = keys_frame(&states)?;

    // The conversations carried in, with the ends free entry points gave them tonight.
    let open_before = match open_before {
        Some(mut open) if !priced.cuts.is_empty() => {
            let mut ends: Vec<Option<i64>> = open
                .column("ends_at")?
                .to_physical_repr()
                .i64()?
                .iter()
                .collect();
            for &(unit, cut) in &priced.cuts {
                ends[unit] = Some(cut);
            }
            open.with_column(utc("ends_at", ends))?;
            Some(open)
        }
        open => open,
    };
    let ends = || col("ends_at").to_physical();
    let complete = || ends().is_null().or(ends().lt_eq(lit(end)));
    let split = |frame: DataFrame| -> Result<(DataFrame, DataFrame)> {
        Ok((
            frame.clone().lazy().filter(complete()).collect()?,
            frame.lazy().filter(complete().not()).collect()?,
        ))
    };
    let (mut done, mut open) = split(priced.units)?;
    if let Some(before) = open_before {
        let (done_before, open_before) = split(before)?;
        done = crate::load::concat_frames(vec![done_before, done])?;
        open = crate::load::concat_frames(vec![open_before, open])?;
    }
    let order = [
        schema::ACCOUNT_ID,
        schema::BUSINESS_ID,
        schema::USER_ID,
        "started_at",
        schema::MESSAGE_ID,
    ];
    let sorted = |frame: DataFrame| -> Result<DataFrame> {
        let mut frame = frame.sort(order, SortMultipleOptions::default())?;
        frame.rechunk_mut();
        Ok(frame)
    };

    // Counts of months that can still get units: a unit after the night's end falls on the
    // night's day or later in every zone.
    let from = units::month_of(night);
    let Counts { service, charged } = priced.counted;
    let service: Vec<_> = service
        .into_iter()
        .filter(|((_, _, m), _)| *m >= from)
        .collect();
    let charged: Vec<_> = charged
        .into_iter()
        .filter(|((_, m, _, _), _)| *m >= from)
        .collect();
    let service = DataFrame::new(
        service.len(),
        vec![
            Column::new(
                schema::ACCOUNT_ID.into(),
                service
                    .iter()
                    .map(|((a, _, _), _)| a.as_str())
                    .collect::<Vec<_>>(),
            ),
            Column::new(
                WABA.into(),
                service
                    .iter()
                    .map(|((_, w, _), _)| w.as_str())
                    .collect::<Vec<_>>(),
            ),
            Column::new(
                MONTH.into(),
                service
                    .iter()
                    .map(|((_, _, m), _)| *m)
                    .collect::<Vec<i32>>(),
            ),
            Column::new(
                COUNT.into(),
                service.iter().map(|(_, c)| *c).collect::<Vec<u64>>(),
            ),
        ],
    )?;
    let charged = DataFrame::new(
        charged.len(),
        vec![
            Column::new(
                schema::ACCOUNT_ID.into(),
                charged
                    .iter()
                    .map(|((a, ..), _)| a.as_str())
                    .collect::<Vec<_>>(),
            ),
            Column::new(
                MONTH.into(),
                charged
                    .iter()
                    .map(|((_, m, ..), _)| *m)
                    .collect::<Vec<i32>>(),
            ),
            Column::new(
                "market".into(),
                charged
                    .iter()
                    .map(|((_, _, m, _), _)| m.as_str())
                    .collect::<Vec<_>>(),
            ),
            Column::new(
                "category".into(),
                charged
                    .iter()
                    .map(|((.., c), _)| c.name())
                    .collect::<Vec<_>>(),
            ),
            Column::new(
                COUNT.into(),
                charged.iter().map(|(_, c)| *c).collect::<Vec<u64>>(),
            ),
        ],
    )?;
    Ok(GroupMeta {
        units: sorted(done)?,
        open: sorted(open)?,
        keys,
        service,
        charged,
        lines: priced.lines,
    })
}

fn utc(name: &str, values: Vec<Option<i64>>) -> Column {
    crate::sessions::utc_column(
        name,
        Int64Chunked::from_iter_options(name.into(), values.into_iter()),
    )
}

/// [`KEYS`]'s rows.
fn keys_frame(states: &[(units::KeyStrings, KeyState)]) -> Result<DataFrame> {
    let text = |name: &str, f: fn(&units::KeyStrings) -> &str| {
        Column::new(
            name.into(),
            states.iter().map(|(k, _)| f(k)).collect::<Vec<&str>>(),
        )
    };
    let time = |name: &str, f: fn(&KeyState) -> Option<i64>| {
        utc(name, states.iter().map(|(_, s)| f(s)).collect())
    };
    let set = |t: i64| (t != i64::MIN).then_some(t);
    Ok(DataFrame::new(
        states.len(),
        vec![
            text(schema::ACCOUNT_ID, |k| &k.0),
            text(schema::BUSINESS_ID, |k| &k.1),
            text(schema::USER_ID, |k| &k.2),
            time(LAST_INBOUND, |s| s.last_inbound),
            time(CLICK, |s| s.click),
            utc(
                FREE_ENTRY_END,
                states.iter().map(|(_, s)| set(s.free_entry_end)).collect(),
            ),
            utc(
                FREE_ENTRY_CONVERSATION_END,
                states
                    .iter()
                    .map(|(_, s)| set(s.free_entry_conversation_end))
                    .collect(),
            ),
        ],
    )?)
}

/// A state file that does not hold what a night wrote.
fn state_error(problem: String) -> crate::Error {
    PolarsError::ComputeError(problem.into()).into()
}
