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
    let mut units = Scanned::default();
    let n = events.key.len();
    let mut lo = 0;
    while lo < n {
        let key = events.key[lo];
        let hi = lo + events.key[lo..].iter().take_while(|k| **k == key).count();
        scan_key(events, lo..hi, switch_of(lo), &mut units);
        lo = hi;
    }
    units
}

/// [`scan`] for the events `rows` of one key.
fn scan_key(events: &Events, rows: std::ops::Range<usize>, switch: i64, units: &mut Scanned) {
    let mut last_inbound: Option<i64> = None;
    let mut click: Option<i64> = None;
    let mut free_entry_end = i64::MIN;
    // The latest conversation of each category: (end, unit); and the end of the free entry
    // point conversation.
    let mut open: [Option<(i64, usize)>; Category::ALL.len()] = [None; Category::ALL.len()];
    let mut free_entry_conversation_end = i64::MIN;
    for i in rows {
        let t = events.time[i];
        let what = events.what[i];
        if what == INBOUND || what == CLICK {
            last_inbound = Some(t);
            if what == CLICK {
                click = Some(t);
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
            .is_some_and(|u| u <= t && t < u + DAY && t >= free_entry_end);
        if opens_free_entry {
            free_entry_end = t + FREE_ENTRY;
        }
        let is_open = |slot: Option<(i64, usize)>| slot.is_some_and(|(end, _)| t < end);
        if t >= switch {
            let pricing_type = if t < free_entry_end {
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
                        units.end[unit] = Some(t);
                    }
                }
            }
            free_entry_conversation_end = t + FREE_ENTRY;
            units.push(
                i,
                Some(t + FREE_ENTRY),
                Category::Service,
                PricingType::FreeEntryPoint,
                Some(direction),
            );
            continue;
        }
        if t < free_entry_conversation_end {
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
            open[category.index()] = Some((t + DAY, unit));
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
}

/// What the card says of one business, looked up once.
struct BusinessInfo {
    zone: Tz,
    waba: String,
    switch: i64,
}

/// Prices the units of a group: `messages` is the loader's frame the `events` point into.
pub fn price(messages: &DataFrame, events: &Events, meta: &MetaConfig) -> Result<Priced> {
    use crate::sessions::strings;
    let accounts = strings(messages, schema::ACCOUNT_ID)?;
    let businesses = strings(messages, schema::BUSINESS_ID)?;
    let users = strings(messages, schema::USER_ID)?;
    let ids = strings(messages, schema::MESSAGE_ID)?;
    let mut info: HashMap<(&str, &str), BusinessInfo> = HashMap::new();
    let mut info_of = |row: usize| -> (Tz, i64, String) {
        let (account, business) = (accounts[row], businesses[row]);
        let b = info
            .entry((account, business))
            .or_insert_with(|| BusinessInfo {
                zone: meta.time_zone_of(business),
                waba: meta.waba_of(account, business),
                switch: meta.switch_of(business),
            });
        (b.zone, b.switch, b.waba.clone())
    };
    let switches: Vec<i64> = {
        let mut first_of_key = HashMap::new();
        let mut lo = 0;
        while lo < events.key.len() {
            let key = events.key[lo];
            first_of_key.insert(lo, info_of(events.source[lo] as usize).1);
            lo += events.key[lo..].iter().take_while(|k| **k == key).count();
        }
        let mut switches = vec![0; events.key.len()];
        for (lo, switch) in first_of_key {
            switches[lo] = switch;
        }
        switches
    };
    let scanned = scan(events, |lo| switches[lo]);

    // Each unit's place: its row, WABA-local day, country and market.
    let n = scanned.len();
    let mut rows = Vec::with_capacity(n);
    let mut days = Vec::with_capacity(n);
    let mut wabas = Vec::with_capacity(n);
    let mut countries: Vec<Option<String>> = Vec::with_capacity(n);
    let mut markets: Vec<String> = Vec::with_capacity(n);
    let mut country_of_key: Option<(u32, Option<String>)> = None;
    for u in 0..n {
        let event = scanned.event[u];
        let row = events.source[event] as usize;
        let start = events.time[event];
        let (zone, _, waba) = info_of(row);
        meta.check_priced(businesses[row], start)
            .map_err(|reason| unpriced(accounts[row], ids[row], reason))?;
        let day = zone.timestamp_nanos(start).date_naive();
        let key = events.key[event];
        if country_of_key.as_ref().is_none_or(|(k, _)| *k != key) {
            let country = super::markets::country_of(users[row]).map_err(|_| {
                unpriced(
                    accounts[row],
                    ids[row],
                    format!("user `{}` is not a phone number", users[row]),
                )
            })?;
            country_of_key = Some((key, country));
        }
        let country = country_of_key.as_ref().and_then(|(_, c)| c.clone());
        markets.push(meta.markets.market(country.as_deref(), day).to_string());
        countries.push(country);
        rows.push(row);
        days.push(day);
        wabas.push(waba);
    }
    let mut pricing_type = scanned.pricing_type.clone();

    // The free tier: a WABA's first 1,000 regular service conversations of a month, by start
    // then key, until 2024-10-31.
    let month = |day: NaiveDate| day.year() * 12 + day.month0() as i32;
    // (start, key, unit) of each WABA's months.
    type Starts = Vec<(i64, u32, usize)>;
    let mut service: BTreeMap<(&str, i32), Starts> = BTreeMap::new();
    for u in 0..n {
        if scanned.end[u].is_some()
            && scanned.category[u] == Category::Service
            && pricing_type[u] == PricingType::Regular
            && !pricing::service_is_free(days[u])
        {
            let event = scanned.event[u];
            service
                .entry((wabas[u].as_str(), month(days[u])))
                .or_default()
                .push((events.time[event], events.key[event], u));
        }
    }
    for mut month in service.into_values() {
        month.sort_unstable();
        for (_, _, u) in month.into_iter().take(pricing::FREE_TIER_CONVERSATIONS) {
            pricing_type[u] = PricingType::FreeTier;
        }
    }

    // Volume tiers: an account's charged messages of a month, market and category, numbered
    // in event order (ties: business, user, message id).
    let mut numbered = vec![0u64; n];
    type Tally<'a> = (&'a str, i32, &'a str, Category);
    let mut charged: BTreeMap<Tally, Vec<usize>> = BTreeMap::new();
    for u in 0..n {
        if scanned.end[u].is_none() && pricing_type[u] == PricingType::Regular {
            let row = rows[u];
            charged
                .entry((
                    accounts[row],
                    month(days[u]),
                    markets[u].as_str(),
                    scanned.category[u],
                ))
                .or_default()
                .push(u);
        }
    }
    for mut month in charged.into_values() {
        month.sort_unstable_by_key(|&u| {
            let row = rows[u];
            (
                events.time[scanned.event[u]],
                businesses[row],
                users[row],
                ids[row],
            )
        });
        for (i, u) in month.into_iter().enumerate() {
            numbered[u] = i as u64 + 1;
        }
    }

    // Rates, and the rows.
    let mut lines: BTreeMap<LineKey, LineSum> = BTreeMap::new();
    let mut unit_id = Vec::with_capacity(n);
    let mut model = Vec::with_capacity(n);
    let mut started = Vec::with_capacity(n);
    let mut ends = Vec::with_capacity(n);
    let mut tiers: Vec<Option<String>> = Vec::with_capacity(n);
    let mut rates = Vec::with_capacity(n);
    let mut currencies = Vec::with_capacity(n);
    let mut rate_cards: Vec<Option<String>> = Vec::with_capacity(n);
    let mut periods = Vec::with_capacity(n);
    for u in 0..n {
        let row = rows[u];
        let category = scanned.category[u];
        let day = days[u];
        let market = markets[u].as_str();
        let card = meta.rate_card_on(day);
        let conversation = scanned.end[u].is_some();
        let (rate, tier, effective) = match pricing_type[u] {
            PricingType::Regular if conversation && category == Category::Service => {
                match pricing::service_is_free(day) {
                    true => (Decimal::ZERO, None, card.map(|c| c.effective)),
                    false => {
                        let (rate, effective) = pricing::card_rate(meta, market, category, day)
                            .map_err(|r| unpriced(accounts[row], ids[row], r))?;
                        (rate, None, Some(effective))
                    }
                }
            }
            PricingType::Regular if !conversation => match meta.tiers_on(market, category, day) {
                Some(table) => {
                    let tier = pricing::tier_of(table, numbered[u]).ok_or_else(|| {
                            unpriced(
                                accounts[row],
                                ids[row],
                                format!(
                                    "it is charged {} message number {} of {} in {market}, past the last volume tier of the card's table (effective {})",
                                    category.name(),
                                    numbered[u],
                                    &periods_of(day),
                                    table.effective
                                ),
                            )
                        })?;
                    (tier.rate, Some(tier.label()), Some(table.effective))
                }
                None => {
                    let (rate, effective) = pricing::card_rate(meta, market, category, day)
                        .map_err(|r| unpriced(accounts[row], ids[row], r))?;
                    let tier = (category == Category::Marketing).then(|| "0:MAX".to_string());
                    (rate, tier, Some(effective))
                }
            },
            PricingType::Regular => {
                let (rate, effective) = pricing::card_rate(meta, market, category, day)
                    .map_err(|r| unpriced(accounts[row], ids[row], r))?;
                (rate, None, Some(effective))
            }
            _ => (Decimal::ZERO, None, card.map(|c| c.effective)),
        };
        let currency = card.unwrap_or(&meta.rate_cards[0]).currency.clone();
        let period = periods_of(day);
        let sum = lines
            .entry(LineKey {
                account_id: accounts[row].to_string(),
                period: period.clone(),
                model: if conversation { "CBP" } else { "PMP" },
                market: market.to_string(),
                category,
                pricing_type: pricing_type[u],
                tier: tier.clone(),
                currency: currency.clone(),
            })
            .or_default();
        sum.units += 1;
        sum.cost += rate;
        unit_id.push(unit_id_of(accounts[row], ids[row]));
        model.push(if conversation { "CBP" } else { "PMP" });
        started.push(events.time[scanned.event[u]]);
        ends.push(scanned.end[u]);
        tiers.push(tier);
        rates.push(rate);
        currencies.push(currency);
        rate_cards.push(effective.map(|d| d.to_string()));
        periods.push(period);
    }

    let text = |name: &str, values: Vec<&str>| Column::new(name.into(), values);
    fn of_rows<'a>(rows: &[usize], values: &[&'a str]) -> Vec<&'a str> {
        rows.iter().map(|r| values[*r]).collect()
    }
    let utc = |name: &str, values: Int64Chunked| {
        values
            .with_name(name.into())
            .into_datetime(TimeUnit::Nanoseconds, Some(polars::prelude::TimeZone::UTC))
            .into_column()
    };
    let decimal_text: Vec<String> = rates.iter().map(Decimal::to_string).collect();
    let columns = vec![
        Column::new("unit_id".into(), unit_id),
        text("account_id", of_rows(&rows, &accounts)),
        text("business_id", of_rows(&rows, &businesses)),
        text("user_id", of_rows(&rows, &users)),
        text("model", model),
        utc("started_at", Int64Chunked::from_vec("".into(), started)),
        utc(
            "ends_at",
            Int64Chunked::from_iter_options("".into(), ends.into_iter()),
        ),
        text("message_id", of_rows(&rows, &ids)),
        text(
            "category",
            scanned.category.iter().map(|c| c.name()).collect(),
        ),
        text(
            "pricing_type",
            pricing_type.iter().map(|p| p.name()).collect(),
        ),
        Column::new(
            "direction".into(),
            scanned
                .direction
                .iter()
                .map(|d| {
                    d.map(|d| match d {
                        Direction::UserInitiated => schema::USER_INITIATED,
                        Direction::BusinessInitiated => schema::BUSINESS_INITIATED,
                    })
                })
                .collect::<Vec<Option<&str>>>(),
        ),
        Column::new("country".into(), countries),
        Column::new("market".into(), markets),
        Column::new("tier".into(), tiers),
        Column::new("rate".into(), decimal_text.clone()),
        Column::new("cost".into(), decimal_text),
        Column::new("currency".into(), currencies),
        Column::new("rate_card".into(), rate_cards),
        Column::new(
            "day".into(),
            days.iter().map(|d| d.to_string()).collect::<Vec<String>>(),
        ),
        Column::new("period".into(), periods),
    ];
    Ok(Priced {
        units: DataFrame::new(n, columns)?,
        lines,
    })
}

/// The `YYYY-MM` period of a WABA-local day.
fn periods_of(day: NaiveDate) -> String {
    day.format("%Y-%m").to_string()
}

/// A unit's id: 32 hex digits of the SHA-256 of its account and the message that is it or
/// opened it (a message opens at most one unit).
pub fn unit_id_of(account_id: &str, message_id: &str) -> String {
    let mut hasher = Sha256::new();
    hasher.update(b"meta");
    hasher.update([0x1f]);
    hasher.update(account_id.as_bytes());
    hasher.update([0x1f]);
    hasher.update(message_id.as_bytes());
    hex::encode(&hasher.finalize()[..16])
}

fn unpriced(account_id: &str, message_id: &str, reason: String) -> crate::Error {
    InputError::MetaUnpriced {
        account_id: account_id.to_string(),
        message_id: message_id.to_string(),
        reason,
    }
    .into()
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

    #[test]
    fn unit_ids_differ_from_session_ids_of_the_same_message() {
        assert_ne!(unit_id_of("a", "m"), crate::sessions::session_id("a", "m"));
        assert_eq!(unit_id_of("a", "m").len(), 32);
    }
}
