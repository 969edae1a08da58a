//! Meta's pricing units of a group of accounts (SPEC-meta §2, §3).
//!
//! [`scan`] reads the WhatsApp events in event order, a conversation key at a time, keeping
//! the key's windows and open conversations in a handful of plain variables (the latest
//! inbound time, the click not answered yet, the end of the free entry point window, one
//! open conversation per category), and gives the units with their category and type.
//! [`price`] then does what spans keys: the markets, the WABA's free tier, the volume tiers of
//! an account's month, and the rates. [`super::reference`] reads the same rules event by event
//! for one key; a property test holds the two to the same answers.

use std::collections::{BTreeMap, HashMap};

use chrono::{Datelike, NaiveDate, TimeZone};
use chrono_tz::Tz;
use polars::prelude::*;
use rust_decimal::Decimal;
use sha2::{Digest, Sha256};

use super::config::MetaConfig;
use super::reference::Direction;
use super::{pricing, Category};
use crate::error::{InputError, Result};
use crate::schema::{self, Code};

const HOUR: i64 = 3_600_000_000_000;
/// The customer service window and a conversation: 24 hours.
const DAY: i64 = 24 * HOUR;
/// Time zones' offsets are whole quarter hours.
const QUARTER_HOUR: i64 = HOUR / 4;
/// A free entry point window: 72 hours.
const FREE_ENTRY: i64 = 72 * HOUR;

/// What an event is, in [`Events::what`].
pub const INBOUND: u8 = 0;
/// An inbound `ad_click` or `cta_click`.
pub const CLICK: u8 = 1;
/// A delivered free-form outbound message.
pub const MESSAGE: u8 = 2;
/// A delivered outbound template.
pub const TEMPLATE: u8 = 3;

/// The WhatsApp events of a group that Meta's pricing reads, in event order (key, time,
/// inbound first, message id): inbound events and delivered outbound messages. Failed
/// messages and violations are never delivered, so they are not here.
#[derive(Debug, Default, Clone)]
pub struct Events {
    /// The rank of the conversation key: keys sort as their strings.
    pub key: Vec<u32>,
    /// UTC nanoseconds.
    pub time: Vec<i64>,
    /// [`INBOUND`], [`CLICK`], [`MESSAGE`] or [`TEMPLATE`].
    pub what: Vec<u8>,
    /// A template's category (`schema::CATEGORY_*`); the loader refuses a delivered template
    /// without one when Meta prices the run.
    pub category: Vec<Code>,
    /// The row of the loader's frame the event comes from.
    pub source: Vec<IdxSize>,
}

/// How Meta prices a unit (`pricing_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum PricingType {
    Regular,
    FreeTier,
    FreeEntryPoint,
    FreeCustomerService,
}

impl PricingType {
    pub const ALL: [PricingType; 4] = [
        PricingType::Regular,
        PricingType::FreeTier,
        PricingType::FreeEntryPoint,
        PricingType::FreeCustomerService,
    ];

    /// The type [`PricingType::name`] names.
    pub fn parse(name: &str) -> Option<PricingType> {
        PricingType::ALL.into_iter().find(|p| p.name() == name)
    }

    pub fn name(self) -> &'static str {
        match self {
            PricingType::Regular => "regular",
            PricingType::FreeTier => "free_tier",
            PricingType::FreeEntryPoint => "free_entry_point",
            PricingType::FreeCustomerService => "free_customer_service",
        }
    }
}

/// The units of a group before pricing, in key order and, within a key, in the order they
/// opened.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Scanned {
    /// The event the unit is (per-message pricing) or that opened it (conversations).
    pub event: Vec<usize>,
    /// A conversation's end; `None` for a message priced by itself.
    pub end: Vec<Option<i64>>,
    pub category: Vec<Category>,
    /// `regular` for every conversation but a free entry point one: the free tier is
    /// decided by [`price`].
    pub pricing_type: Vec<PricingType>,
    /// A conversation's direction; `None` for a message.
    pub direction: Vec<Option<Direction>>,
    /// Conversations carried in open ([`UnitRef::Carried`]) that a free entry point closed:
    /// (the carried unit, its new end).
    pub cuts: Vec<(usize, i64)>,
}

/// An open conversation of a key: a unit of this scan, or one carried in from an earlier night
/// (its index among the carried units).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnitRef {
    New(usize),
    Carried(usize),
}

/// What a key's next events are priced by: its windows and open conversations. A nightly run
/// carries it across midnight ([`KeyState::after`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyState {
    /// The latest inbound message or click.
    pub last_inbound: Option<i64>,
    /// A click no delivered message has answered yet.
    pub click: Option<i64>,
    /// The end of the free entry point window (`i64::MIN` for none).
    pub free_entry_end: i64,
    /// The latest conversation of each category: (end, unit).
    pub open: [Option<(i64, UnitRef)>; Category::ALL.len()],
    /// The end of the free entry point conversation (`i64::MIN` for none).
    pub free_entry_conversation_end: i64,
}

impl Default for KeyState {
    fn default() -> Self {
        KeyState {
            last_inbound: None,
            click: None,
            free_entry_end: i64::MIN,
            open: [None; Category::ALL.len()],
            free_entry_conversation_end: i64::MIN,
        }
    }
}

impl KeyState {
    /// What of the state can still price an event at or after `end`; `None` when nothing
    /// can: a key in that state prices its next event as a key never seen.
    pub fn after(&self, end: i64) -> Option<KeyState> {
        let within_day = |t: Option<i64>| t.filter(|t| t + DAY > end);
        let state = KeyState {
            last_inbound: within_day(self.last_inbound),
            click: within_day(self.click),
            free_entry_end: match self.free_entry_end > end {
                true => self.free_entry_end,
                false => i64::MIN,
            },
            open: self.open.map(|slot| slot.filter(|(e, _)| *e > end)),
            free_entry_conversation_end: match self.free_entry_conversation_end > end {
                true => self.free_entry_conversation_end,
                false => i64::MIN,
            },
        };
        (state != KeyState::default()).then_some(state)
    }
}

impl Scanned {
    fn push(
        &mut self,
        event: usize,
        end: Option<i64>,
        category: Category,
        pricing_type: PricingType,
        direction: Option<Direction>,
    ) -> usize {
        self.event.push(event);
        self.end.push(end);
        self.category.push(category);
        self.pricing_type.push(pricing_type);
        self.direction.push(direction);
        self.event.len() - 1
    }

    pub fn len(&self) -> usize {
        self.event.len()
    }

    pub fn is_empty(&self) -> bool {
        self.event.is_empty()
    }
}

/// The category of a template's code.
pub fn category_of(code: Code) -> Category {
    match code {
        schema::CATEGORY_UTILITY => Category::Utility,
        schema::CATEGORY_AUTHENTICATION => Category::Authentication,
        // The loader refuses a delivered template without a category under Meta's pricing.
        _ => Category::Marketing,
    }
}

/// The units of `events` (SPEC-meta §2, §3a rules 1 to 5, §3b without tiers). `switch_of`
/// gives, for a key's first event, the instant from which its business is priced by message
/// ([`MetaConfig::switch_of`]).
pub fn scan(events: &Events, switch_of: impl Fn(usize) -> i64) -> Scanned {
    scan_from(events, switch_of, |_| KeyState::default(), |_, _| {})
}

/// [`scan`], each key starting from `start_of(first event)` and ending in `end_of(first event,
/// state)`.
pub fn scan_from(
    events: &Events,
    switch_of: impl Fn(usize) -> i64,
    mut start_of: impl FnMut(usize) -> KeyState,
    mut end_of: impl FnMut(usize, KeyState),
) -> Scanned {
    let mut units = Scanned::default();
    let n = events.key.len();
    let mut lo = 0;
    while lo < n {
        let key = events.key[lo];
        let hi = lo + events.key[lo..].iter().take_while(|k| **k == key).count();
        let mut state = start_of(lo);
        scan_key(events, lo..hi, switch_of(lo), &mut units, &mut state);
        end_of(lo, state);
        lo = hi;
    }
    units
}

/// [`scan`] for the events `rows` of one key, from `state`.
fn scan_key(
    events: &Events,
    rows: std::ops::Range<usize>,
    switch: i64,
    units: &mut Scanned,
    state: &mut KeyState,
) {
    let KeyState {
        last_inbound,
        click,
        free_entry_end,
        open,
        free_entry_conversation_end,
    } = state;
    for i in rows {
        let t = events.time[i];
        let what = events.what[i];
        if what == INBOUND || what == CLICK {
            *last_inbound = Some(t);
            if what == CLICK {
                *click = Some(t);
            }
            continue;
        }
        let template = what == TEMPLATE;
        let category = match template {
            true => category_of(events.category[i]),
            false => Category::Service,
        };
        let service_window = last_inbound.is_some_and(|u| t < u + DAY);
        // A click is answered once, by the first delivered message after it.
        let opens_free_entry = click
            .take()
            .is_some_and(|u| u <= t && t < u + DAY && t >= *free_entry_end);
        if opens_free_entry {
            *free_entry_end = t + FREE_ENTRY;
        }
        let is_open = |slot: Option<(i64, UnitRef)>| slot.is_some_and(|(end, _)| t < end);
        if t >= switch {
            let pricing_type = if t < *free_entry_end {
                PricingType::FreeEntryPoint
            } else if !template
                || (category == Category::Utility
                    && (service_window || is_open(open[Category::Utility.index()])))
            {
                PricingType::FreeCustomerService
            } else {
                PricingType::Regular
            };
            units.push(i, None, category, pricing_type, None);
            continue;
        }
        let direction = match service_window {
            true => Direction::UserInitiated,
            false => Direction::BusinessInitiated,
        };
        if opens_free_entry {
            for slot in open.iter_mut() {
                if let Some((end, unit)) = slot.take() {
                    if t < end {
                        match unit {
                            UnitRef::New(unit) => units.end[unit] = Some(t),
                            UnitRef::Carried(unit) => units.cuts.push((unit, t)),
                        }
                    }
                }
            }
            *free_entry_conversation_end = t + FREE_ENTRY;
            units.push(
                i,
                Some(t + FREE_ENTRY),
                Category::Service,
                PricingType::FreeEntryPoint,
                Some(direction),
            );
            continue;
        }
        if t < *free_entry_conversation_end {
            continue;
        }
        let opens = match template {
            true => !is_open(open[category.index()]),
            false => !open.iter().any(|slot| is_open(*slot)),
        };
        if opens {
            let unit = units.push(
                i,
                Some(t + DAY),
                category,
                PricingType::Regular,
                Some(direction),
            );
            open[category.index()] = Some((t + DAY, UnitRef::New(unit)));
        }
    }
}

/// Output column names of `meta_units.parquet`, in order.
pub const UNIT_COLUMNS: [&str; 20] = [
    "unit_id",
    "account_id",
    "business_id",
    "user_id",
    "model",
    "started_at",
    "ends_at",
    "message_id",
    "category",
    "pricing_type",
    "direction",
    "country",
    "market",
    "tier",
    "rate",
    "cost",
    "currency",
    "rate_card",
    "day",
    "period",
];

/// One line of `meta_cost_lines`: what is summed over.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct LineKey {
    pub account_id: String,
    pub period: String,
    pub model: &'static str,
    pub market: String,
    pub category: Category,
    pub pricing_type: PricingType,
    pub tier: Option<String>,
    pub currency: String,
}

/// The units and cost of one [`LineKey`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LineSum {
    pub units: u64,
    pub cost: Decimal,
}

/// A group's priced units: the `meta_units.parquet` rows, and their sums by line.
#[derive(Debug, Clone)]
pub struct Priced {
    pub units: DataFrame,
    pub lines: BTreeMap<LineKey, LineSum>,
    /// Each key's state after its events: (the row of its first event, the state); nightly
    /// pricing only ([`Carry::nightly`]).
    pub states: Vec<(IdxSize, KeyState)>,
    /// Carried conversations a free entry point closed ([`Scanned::cuts`]).
    pub cuts: Vec<(usize, i64)>,
    /// The counts of [`Carry`], with this group's units added.
    pub counted: Counts,
}

/// A conversation key: account, business and user.
pub type KeyStrings = (String, String, String);

/// What a group's units are counted after, per account: Meta's free tier and volume tiers
/// count across the nights of a month.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Counts {
    /// Regular service conversations of a WABA's month: (account, WABA, month).
    pub service: BTreeMap<(String, String, i32), u64>,
    /// Charged messages numbered in a volume tier's count: (account, month, market, category).
    pub charged: BTreeMap<(String, i32, String, Category), u64>,
}

/// What a nightly run carries into a group's pricing from the nights before.
#[derive(Debug, Clone, Default)]
pub struct Carry {
    /// A night's pricing: [`Priced::states`] are kept (a whole run has no use for them).
    pub nightly: bool,
    /// Each key's state at midnight; its open conversations are [`UnitRef::Carried`].
    pub states: HashMap<KeyStrings, KeyState>,
    pub counts: Counts,
}

impl Carry {
    /// What a night's first group starts from before anything is read: nothing carried.
    pub fn night() -> Carry {
        Carry {
            nightly: true,
            ..Carry::default()
        }
    }
}

/// What the card says of one business of an account, looked up once per key.
struct BusinessInfo {
    zone: Tz,
    /// Its WABA, as an index into the group's WABAs.
    waba: usize,
    /// From this instant its messages are priced by message ([`MetaConfig::switch_of`]).
    switch: i64,
    /// Meta's pricing starts at this instant in its zone ([`MetaConfig::check_priced`]).
    priced_from: i64,
}

/// A charged unit's tier: `(from, to)`, `to` `None` for an open top tier (marketing's single
/// tier is `(0, None)`).
type TierBounds = (u64, Option<u64>);

fn tier_label((from, to): TierBounds) -> String {
    match to {
        Some(to) => format!("{from}:{to}"),
        None => format!("{from}:MAX"),
    }
}

/// A line of [`LineKey`], borrowing its strings while a group is priced.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct LineRef<'a> {
    account: &'a str,
    month: i32,
    conversation: bool,
    market: &'a str,
    category: Category,
    pricing_type: PricingType,
    tier: Option<TierBounds>,
    currency: &'a str,
}

/// `model` of a unit: `CBP` for a conversation, `PMP` for a message priced by itself.
pub fn model_name(conversation: bool) -> &'static str {
    match conversation {
        true => "CBP",
        false => "PMP",
    }
}

/// A WABA-local day's month, as one number (`year * 12 + month - 1`).
pub fn month_of(day: NaiveDate) -> i32 {
    day.year() * 12 + day.month0() as i32
}

/// `YYYY-MM` of [`month_of`].
fn period_name(month: i32) -> String {
    format!(
        "{:04}-{:02}",
        month.div_euclid(12),
        month.rem_euclid(12) + 1
    )
}

/// Prices the units of a group: `messages` is the loader's frame the `events` point into,
/// `id_strings` its id columns in one chunk ([`crate::sessions::derive_kept_for_meta`]).
///
/// Per unit only numbers and borrowed strings are kept; each distinct text of the outputs
/// (periods, days, rates, tiers) is formatted once.
pub fn price(
    messages: &DataFrame,
    id_strings: &DataFrame,
    events: &Events,
    meta: &MetaConfig,
    paths: &[String],
    carry: &Carry,
) -> Result<Priced> {
    use crate::sessions::{strings, values};
    let accounts = strings(id_strings, schema::ACCOUNT_ID)?;
    let businesses = strings(id_strings, schema::BUSINESS_ID)?;
    let users = strings(id_strings, schema::USER_ID)?;
    let ids = strings(id_strings, schema::MESSAGE_ID)?;
    let files = values(messages.column(crate::load::FILE)?.u32()?, 0);
    let file_rows = values(messages.column(crate::load::ROW)?.u64()?, 0);
    // A message that cannot be priced, named with its place in the input.
    let unpriced = |row: usize, reason: String| -> crate::Error {
        let file = paths.get(files[row] as usize).map_or("?", String::as_str);
        InputError::MetaUnpriced {
            account_id: accounts[row].to_string(),
            message_id: ids[row].to_string(),
            reason,
            place: format!("`{file}`, row {}", file_rows[row]),
        }
        .into()
    };
    let scale = meta.scale();

    // Each key's business, looked up once per (account, business). A WABA never spans
    // accounts (SPEC-meta §6.3): one the card names for businesses of two accounts is two.
    let mut waba_index: HashMap<(&str, String), usize> = HashMap::new();
    let mut info: Vec<BusinessInfo> = Vec::new();
    // The account of each `info`: a unit's account is looked up here, not in its row.
    let mut info_accounts: Vec<&str> = Vec::new();
    let mut info_index: HashMap<(&str, &str), usize> = HashMap::new();
    // (first event, info) of each key's run.
    let mut runs: Vec<(usize, usize)> = Vec::new();
    let mut lo = 0;
    while lo < events.key.len() {
        let key = events.key[lo];
        let row = events.source[lo] as usize;
        let (account, business) = (accounts[row], businesses[row]);
        let index = *info_index.entry((account, business)).or_insert_with(|| {
            let zone = meta.time_zone_of(business);
            let next = waba_index.len();
            let waba = *waba_index
                .entry((account, meta.waba_of(account, business)))
                .or_insert(next);
            info_accounts.push(account);
            info.push(BusinessInfo {
                zone,
                waba,
                switch: meta.switch_of(business),
                priced_from: crate::rates::local_midnight(super::config::CBP_FROM, zone),
            });
            info.len() - 1
        });
        runs.push((lo, index));
        lo += events.key[lo..].iter().take_while(|k| **k == key).count();
    }
    let mut switches = vec![0; events.key.len()];
    for &(lo, index) in &runs {
        switches[lo] = info[index].switch;
    }
    let mut states = Vec::with_capacity(if carry.nightly { runs.len() } else { 0 });
    // Each step's wall time, at trace level (`RUST_LOG=convbill=trace`).
    let mut clock = std::time::Instant::now();
    let mut lap = |step: &str| {
        tracing::trace!(
            step,
            ms = clock.elapsed().as_millis() as u64,
            "Meta pricing"
        );
        clock = std::time::Instant::now();
    };
    let scanned = scan_from(
        events,
        |lo| switches[lo],
        |lo| {
            if carry.states.is_empty() {
                return KeyState::default();
            }
            let row = events.source[lo] as usize;
            let key = (
                accounts[row].to_string(),
                businesses[row].to_string(),
                users[row].to_string(),
            );
            carry.states.get(&key).copied().unwrap_or_default()
        },
        |lo, state| {
            if carry.nightly {
                states.push((events.source[lo], state));
            }
        },
    );

    lap("scanned");
    // Each unit's place: its row, business, WABA-local day, country and market.
    let mut day_of: PlHashMap<(Tz, i64), NaiveDate> = PlHashMap::new();
    let mut market_of: PlHashMap<(Option<u16>, NaiveDate), &str> = PlHashMap::new();
    let n = scanned.len();
    let mut rows = Vec::with_capacity(n);
    let mut days = Vec::with_capacity(n);
    let mut unit_info = Vec::with_capacity(n);
    let mut unit_country: Vec<Option<u16>> = Vec::with_capacity(n);
    let mut markets: Vec<&str> = Vec::with_capacity(n);
    // The countries of the group's keys.
    let mut countries = super::markets::Countries::default();
    let mut run = 0;
    let mut current_key: Option<(usize, Option<u16>)> = None;
    for u in 0..n {
        let event = scanned.event[u];
        let row = events.source[event] as usize;
        let start = events.time[event];
        while run + 1 < runs.len() && runs[run + 1].0 <= event {
            run += 1;
        }
        let business = &info[runs[run].1];
        if start < business.priced_from {
            let reason = meta
                .check_priced(businesses[row], start)
                .expect_err("before Meta's pricing");
            return Err(unpriced(row, reason));
        }
        // A zone's offsets are whole quarter hours: one day per zone and quarter hour.
        let day = *day_of
            .entry((business.zone, start.div_euclid(QUARTER_HOUR)))
            .or_insert_with(|| business.zone.timestamp_nanos(start).date_naive());
        if current_key.is_none_or(|(r, _)| r != run) {
            let user = users[row];
            let country = countries
                .country_of(user)
                .map_err(|_| unpriced(row, format!("user `{user}` is not a phone number")))?;
            current_key = Some((run, country));
        }
        let country = current_key.expect("set above").1;
        markets.push(
            market_of
                .entry((country, day))
                .or_insert_with(|| meta.markets.market(country.map(|c| countries.name(c)), day)),
        );
        unit_country.push(country);
        unit_info.push(runs[run].1);
        rows.push(row);
        days.push(day);
    }
    lap("found days and markets");
    let months: Vec<i32> = days.iter().map(|d| month_of(*d)).collect();
    let mut pricing_type = scanned.pricing_type.clone();

    // The free tier: a WABA's first 1,000 regular service conversations of a month, by start
    // then key, until 2024-10-31.
    type Starts = Vec<(i64, u32, usize)>;
    // (start, key, unit) of each WABA's months.
    let mut service: HashMap<(usize, i32), Starts> = HashMap::new();
    for u in 0..n {
        if scanned.end[u].is_some()
            && scanned.category[u] == Category::Service
            && pricing_type[u] == PricingType::Regular
            && !pricing::service_is_free(days[u])
        {
            let event = scanned.event[u];
            service
                .entry((info[unit_info[u]].waba, months[u]))
                .or_default()
                .push((events.time[event], events.key[event], u));
        }
    }
    let mut waba_names = vec![""; waba_index.len()];
    for ((_, name), index) in &waba_index {
        waba_names[*index] = name.as_str();
    }
    let mut counted = carry.counts.clone();
    for ((waba, month), mut starts) in service {
        let account = accounts[rows[starts[0].2]];
        let count = counted
            .service
            .entry((account.to_string(), waba_names[waba].to_string(), month))
            .or_default();
        let free = (pricing::FREE_TIER_CONVERSATIONS as u64).saturating_sub(*count);
        *count += starts.len() as u64;
        starts.sort_unstable();
        for (_, _, u) in starts.into_iter().take(free as usize) {
            pricing_type[u] = PricingType::FreeTier;
        }
    }

    // Volume tiers: an account's charged messages of a month, market and category, numbered
    // in event order (ties: business, user, message id).
    let mut numbered = vec![0u64; n];
    let mut charged: HashMap<(&str, i32, &str, Category), Vec<usize>> = HashMap::new();
    for u in 0..n {
        if scanned.end[u].is_none() && pricing_type[u] == PricingType::Regular {
            charged
                .entry((
                    info_accounts[unit_info[u]],
                    months[u],
                    markets[u],
                    scanned.category[u],
                ))
                .or_default()
                .push(u);
        }
    }
    for ((account, month_number, market, category), mut month) in charged {
        let count = counted
            .charged
            .entry((
                account.to_string(),
                month_number,
                market.to_string(),
                category,
            ))
            .or_default();
        let before = *count;
        *count += month.len() as u64;
        // Within an account, keys rank as (business, user): the strings are compared only
        // where time and key tie.
        let at = |u: usize| {
            let event = scanned.event[u];
            (events.time[event], events.key[event])
        };
        month.sort_unstable_by(|&a, &b| {
            at(a)
                .cmp(&at(b))
                .then_with(|| ids[rows[a]].cmp(ids[rows[b]]))
        });
        for (i, u) in month.into_iter().enumerate() {
            numbered[u] = before + i as u64 + 1;
        }
    }

    // A closed tier table's first message past its last tier stops the run: the lowest
    // number past it is named.
    let past_last_tier = (0..n)
        .filter(|&u| scanned.end[u].is_none() && pricing_type[u] == PricingType::Regular)
        .filter(|&u| {
            meta.tiers_on(markets[u], scanned.category[u], days[u])
                .is_some_and(|table| pricing::tier_of(table, numbered[u]).is_none())
        })
        .min_by_key(|&u| numbered[u]);
    let mut order: Vec<usize> = (0..n).collect();
    if let Some(u) = past_last_tier {
        // Priced first, it gives the error.
        order.swap(0, u);
    }

    lap("counted free and volume tiers");
    // Rates, and the lines.
    let mut lines: PlHashMap<LineRef, LineSum> = PlHashMap::new();
    // The card's rate of each market, category and day, looked up once.
    type CardRate = std::result::Result<(Decimal, NaiveDate), String>;
    let mut card_rates: PlHashMap<(&str, Category, NaiveDate), CardRate> = PlHashMap::new();
    let (mut rates, mut tiers, mut currencies, mut rate_cards) = (
        vec![Decimal::ZERO; n],
        vec![None; n],
        vec![""; n],
        vec![None; n],
    );
    for &u in &order {
        let row = rows[u];
        let category = scanned.category[u];
        let day = days[u];
        let market = markets[u];
        let card = meta.rate_card_on(day);
        let conversation = scanned.end[u].is_some();
        let mut card_rate = || {
            card_rates
                .entry((market, category, day))
                .or_insert_with(|| pricing::card_rate(meta, market, category, day))
                .clone()
                .map_err(|r| unpriced(row, r))
        };
        let (rate, tier, effective) = match pricing_type[u] {
            PricingType::Regular if conversation && category == Category::Service => {
                match pricing::service_is_free(day) {
                    true => (Decimal::ZERO, None, card.map(|c| c.effective)),
                    false => {
                        let (rate, effective) = card_rate()?;
                        (rate, None, Some(effective))
                    }
                }
            }
            PricingType::Regular if !conversation => match meta.tiers_on(market, category, day) {
                Some(table) => {
                    let tier = pricing::tier_of(table, numbered[u]).ok_or_else(|| {
                            unpriced(
                                row,
                                format!(
                                    "it is charged {} message number {} of {} in {market}, past the last volume tier of the card's table (effective {})",
                                    category.name(),
                                    numbered[u],
                                    period_name(months[u]),
                                    table.effective
                                ),
                            )
                        })?;
                    (tier.rate, Some((tier.from, tier.to)), Some(table.effective))
                }
                None => {
                    let (rate, effective) = card_rate()?;
                    let tier = (category == Category::Marketing).then_some((0, None));
                    (rate, tier, Some(effective))
                }
            },
            PricingType::Regular => {
                let (rate, effective) = card_rate()?;
                (rate, None, Some(effective))
            }
            _ => (Decimal::ZERO, None, card.map(|c| c.effective)),
        };
        let mut rate = rate;
        rate.rescale(scale);
        let currency = card.unwrap_or(&meta.rate_cards[0]).currency.as_str();
        let sum = lines
            .entry(LineRef {
                account: info_accounts[unit_info[u]],
                month: months[u],
                conversation,
                market,
                category,
                pricing_type: pricing_type[u],
                tier,
                currency,
            })
            .or_default();
        sum.units += 1;
        sum.cost += rate;
        rates[u] = rate;
        tiers[u] = tier;
        currencies[u] = currency;
        rate_cards[u] = effective;
    }

    lap("rated");
    // The ids, gathered from one chunk: only the strings' views move.
    let gathered = id_strings.take(&IdxCa::from_vec(
        "".into(),
        rows.iter().map(|r| *r as IdxSize).collect(),
    ))?;
    let of_rows = |name: &str| -> Result<Column> { Ok(gathered.column(name)?.clone()) };
    lap("gathered");
    let unit_ids = unit_id_column(&rows, &accounts, &ids);
    lap("unit ids");
    let utc = crate::sessions::utc_column;
    let conversation = |u: usize| scanned.end[u].is_some();
    let (rate_names, rate_of) = interned((0..n).map(|u| Some(rates[u])), |r| r.to_string());
    let rate = text("rate", &rate_names, &rate_of);
    let columns = vec![
        unit_ids,
        of_rows(schema::ACCOUNT_ID)?,
        of_rows(schema::BUSINESS_ID)?,
        of_rows(schema::USER_ID)?,
        texts("model", (0..n).map(|u| Some(conversation(u))), |c| {
            model_name(c).to_string()
        }),
        utc(
            "started_at",
            Int64Chunked::from_iter_values(
                "".into(),
                scanned.event.iter().map(|e| events.time[*e]),
            ),
        ),
        utc(
            "ends_at",
            Int64Chunked::from_iter_options("".into(), scanned.end.iter().copied()),
        ),
        of_rows(schema::MESSAGE_ID)?,
        texts("category", scanned.category.iter().map(|c| Some(*c)), |c| {
            c.name().to_string()
        }),
        texts("pricing_type", pricing_type.iter().map(|p| Some(*p)), |p| {
            p.name().to_string()
        }),
        texts("direction", scanned.direction.iter().copied(), |d| {
            match d {
                Direction::UserInitiated => schema::USER_INITIATED,
                Direction::BusinessInitiated => schema::BUSINESS_INITIATED,
            }
            .to_string()
        }),
        texts("country", unit_country.iter().copied(), |c| {
            countries.name(c).to_string()
        }),
        texts("market", markets.iter().map(|m| Some(*m)), str::to_string),
        texts("tier", tiers.iter().copied(), tier_label),
        rate.clone(),
        rate.with_name("cost".into()),
        texts(
            "currency",
            currencies.iter().map(|c| Some(*c)),
            str::to_string,
        ),
        texts("rate_card", rate_cards.iter().copied(), |d| d.to_string()),
        texts("day", days.iter().map(|d| Some(*d)), |d| d.to_string()),
        texts("period", months.iter().map(|m| Some(*m)), period_name),
    ];
    lap("built columns");
    let lines = lines
        .into_iter()
        .map(|(line, sum)| {
            (
                LineKey {
                    account_id: line.account.to_string(),
                    period: period_name(line.month),
                    model: model_name(line.conversation),
                    market: line.market.to_string(),
                    category: line.category,
                    pricing_type: line.pricing_type,
                    tier: line.tier.map(tier_label),
                    currency: line.currency.to_string(),
                },
                sum,
            )
        })
        .collect();
    Ok(Priced {
        units: DataFrame::new(n, columns)?,
        lines,
        states,
        cuts: scanned.cuts,
        counted,
    })
}

/// Each distinct value of `values` named once, and each row's place among the names (`None`
/// stays `None`). A row equal to the one before costs a comparison, not a lookup.
fn interned<K: Copy + Eq + std::hash::Hash>(
    values: impl Iterator<Item = Option<K>>,
    name: impl Fn(K) -> String,
) -> (Vec<String>, Vec<Option<usize>>) {
    let mut names = Vec::new();
    let mut known: PlHashMap<K, usize> = PlHashMap::new();
    let mut last: Option<(K, usize)> = None;
    let places = values
        .map(|value| {
            let value = value?;
            let place = match last {
                Some((previous, place)) if previous == value => place,
                _ => *known.entry(value).or_insert_with(|| {
                    names.push(name(value));
                    names.len() - 1
                }),
            };
            last = Some((value, place));
            Some(place)
        })
        .collect();
    (names, places)
}

/// The column `name` of interned texts ([`interned`]).
fn text(name: &str, names: &[String], places: &[Option<usize>]) -> Column {
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    crate::sessions::repeated_text(name, &names, places.iter().copied())
}

/// The column `name` of the texts of `values`, each distinct one named once by `name_of`.
fn texts<K: Copy + Eq + std::hash::Hash>(
    name: &str,
    values: impl Iterator<Item = Option<K>>,
    name_of: impl Fn(K) -> String,
) -> Column {
    let (names, places) = interned(values, name_of);
    text(name, &names, &places)
}

/// The `unit_id` column of units opened by the rows `rows` ([`unit_id_of`]). The ids are
/// hashed in row order, so the account and message texts are read front to back, and written
/// into one buffer that every row's view points into.
fn unit_id_column(rows: &[usize], accounts: &[&str], messages: &[&str]) -> Column {
    use polars_arrow::array::{Utf8ViewArray, View};
    const LEN: usize = 32;
    let n = rows.len();
    let mut by_row: Vec<u32> = (0..n as u32).collect();
    by_row.sort_unstable_by_key(|&u| rows[u as usize]);
    let mut buffer = vec![0u8; n * LEN];
    for u in by_row {
        let (u, row) = (u as usize, rows[u as usize]);
        let hex: &mut [u8; LEN] = (&mut buffer[u * LEN..(u + 1) * LEN])
            .try_into()
            .expect("LEN bytes");
        unit_id_into(accounts[row], messages[row], hex);
    }
    let offset = |u: usize| u32::try_from(u * LEN).expect("a group's unit ids fit 4 GiB");
    let views: Vec<View> = (0..n)
        .map(|u| View::new_from_bytes(&buffer[u * LEN..(u + 1) * LEN], 0, offset(u)))
        .collect();
    // SAFETY: each view was made by `View::new_from_bytes` of its hex digits (ASCII) at their
    // offset in `buffer`, the array's only buffer.
    let array = unsafe {
        Utf8ViewArray::new_unchecked_unknown_md(
            ArrowDataType::Utf8View,
            views.into(),
            vec![buffer.into()].into(),
            None,
            None,
        )
    };
    StringChunked::with_chunk("unit_id".into(), array).into_column()
}

/// A unit's id: 32 hex digits of the SHA-256 of its account and the message that is it or
/// opened it (a message opens at most one unit).
pub fn unit_id_of(account_id: &str, message_id: &str) -> String {
    unit_id_into(account_id, message_id, &mut [0u8; 32]).to_string()
}

/// [`unit_id_of`], written into `hex`.
fn unit_id_into<'a>(account_id: &str, message_id: &str, hex: &'a mut [u8; 32]) -> &'a str {
    let mut hasher = Sha256::new();
    hasher.update(b"meta");
    hasher.update([0x1f]);
    hasher.update(account_id.as_bytes());
    hasher.update([0x1f]);
    hasher.update(message_id.as_bytes());
    hex::encode_to_slice(&hasher.finalize()[..16], hex).expect("16 bytes fit 32 hex digits");
    std::str::from_utf8(hex).expect("hex digits are UTF-8")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn events(rows: &[(u32, f64, u8, Code)]) -> Events {
        Events {
            key: rows.iter().map(|r| r.0).collect(),
            time: rows.iter().map(|r| (r.1 * HOUR as f64) as i64).collect(),
            what: rows.iter().map(|r| r.2).collect(),
            category: rows.iter().map(|r| r.3).collect(),
            source: (0..rows.len() as IdxSize).collect(),
        }
    }

    #[test]
    fn a_free_entry_point_conversation_closes_the_open_ones_and_covers_what_follows() {
        let none = schema::CATEGORY_NONE;
        let e = events(&[
            (0, 0.0, TEMPLATE, schema::CATEGORY_MARKETING),
            (0, 1.0, CLICK, none),
            (0, 2.0, MESSAGE, none),
            (0, 3.0, TEMPLATE, schema::CATEGORY_UTILITY),
            (0, 80.0, MESSAGE, none),
        ]);
        let units = scan(&e, |_| i64::MAX);
        assert_eq!(units.event, vec![0, 2, 4]);
        assert_eq!(units.end[0], Some(2 * HOUR));
        assert_eq!(units.pricing_type[1], PricingType::FreeEntryPoint);
        assert_eq!(units.end[1], Some(74 * HOUR));
        assert_eq!(units.category[2], Category::Service);
        assert_eq!(
            units.direction[2],
            Some(Direction::BusinessInitiated),
            "the click at hour 1 is 79 hours old"
        );
    }

    proptest::proptest! {
        /// A key's events scanned in two pieces, the second from the state the first ended
        /// in at the cut (as a nightly run carries it across midnight, its open conversations
        /// carried and closed by a later free entry point), give the units of one scan.
        #[test]
        fn a_scan_carried_across_any_instant_gives_the_units_of_one_scan(
            rows in proptest::collection::vec((0..2000u32, 0..4u8, 1..4u32), 1..40),
            cut in 0..2100u32,
            switch in proptest::option::of(0..2100u32),
        ) {
            // Times in tenths of an hour, over about 8 days.
            let mut rows: Vec<(u32, f64, u8, Code)> = rows
                .into_iter()
                .map(|(t, what, category)| (0, t as f64 / 10.0, what, category))
                .collect();
            rows.sort_by(|a, b| a.1.total_cmp(&b.1));
            let all = events(&rows);
            let switch = switch.map_or(i64::MAX, |s| s as i64 * HOUR / 10);
            let cut = cut as i64 * HOUR / 10;
            let whole = scan(&all, |_| switch);

            let split = rows.partition_point(|r| ((r.1 * HOUR as f64) as i64) < cut);
            let (first, second) = (events(&rows[..split]), events(&rows[split..]));
            let mut state = KeyState::default();
            let mut before = scan_from(&first, |_| switch, |_| KeyState::default(), |_, s| state = s);
            let mut carried = state.after(cut).unwrap_or_default();
            for slot in carried.open.iter_mut().flatten() {
                if let UnitRef::New(u) = slot.1 {
                    slot.1 = UnitRef::Carried(u);
                }
            }
            let after = scan_from(&second, |_| switch, |_| carried, |_, _| {});
            for &(unit, end) in &after.cuts {
                before.end[unit] = Some(end);
            }
            let units = |scanned: &Scanned, offset: usize| {
                (0..scanned.len())
                    .map(|u| {
                        (
                            scanned.event[u] + offset,
                            scanned.end[u],
                            scanned.category[u],
                            scanned.pricing_type[u],
                            scanned.direction[u],
                        )
                    })
                    .collect::<Vec<_>>()
            };
            let mut pieces = units(&before, 0);
            pieces.extend(units(&after, split));
            proptest::prop_assert_eq!(pieces, units(&whole, 0));
        }
    }

    #[test]
    fn unit_id_columns_hold_the_id_of_each_units_row() {
        let accounts = ["a", "b", "a"];
        let messages = ["m-1", "a message id longer than a view", "m-3"];
        let rows = [2, 0, 1, 2];
        let column = unit_id_column(&rows, &accounts, &messages);
        let ids: Vec<&str> = column.str().unwrap().iter().map(Option::unwrap).collect();
        let expected: Vec<String> = rows
            .iter()
            .map(|&r| unit_id_of(accounts[r], messages[r]))
            .collect();
        assert_eq!(ids, expected);
    }

    #[test]
    fn interned_texts_name_each_value_of_their_rows() {
        let values = [Some(3), Some(3), None, Some(1), Some(3), Some(2)];
        let column = texts("n", values.iter().copied(), |v: u8| {
            "x".repeat(v as usize * 5)
        });
        let read: Vec<Option<String>> = column
            .str()
            .unwrap()
            .iter()
            .map(|v| v.map(str::to_string))
            .collect();
        let expected: Vec<Option<String>> = values
            .iter()
            .map(|v| v.map(|v| "x".repeat(v as usize * 5)))
            .collect();
        assert_eq!(read, expected);
        assert_eq!(column.null_count(), 1);
    }

    #[test]
    fn unit_ids_differ_from_session_ids_of_the_same_message() {
        assert_ne!(unit_id_of("a", "m"), crate::sessions::session_id("a", "m"));
        assert_eq!(unit_id_of("a", "m").len(), 32);
    }
}
