//! Rate cards: a TOML file in, a checked [`RateCard`] out, before any message is read.
//!
//! A card has plans and accounts. A plan has a currency and price versions, each in force from
//! local midnight of its effective day, in the account's billing time zone, until the next
//! one's: the quota included per period, the price of each quota unit beyond it, and the
//! quota units each kind of session costs. An account
//! names its plan and billing time zone and may override the included quota or the unit
//! price; accounts not listed get the default plan and time zone. Money is decimal, never
//! floating point: prices are written as strings (`"0.0125"`).
//!
//! ```toml
//! default_plan = "standard"
//! default_time_zone = "UTC"
//!
//! [plans.standard]
//! currency = "USD"
//!
//! [[plans.standard.versions]]
//! effective = "2026-01-01"
//! included_quota = 1000
//! unit_price = "0.0500"
//!
//! [accounts.acme]
//! plan = "standard"
//! time_zone = "Asia/Jakarta"
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use chrono::{NaiveDate, TimeZone};
use chrono_tz::Tz;
use rust_decimal::Decimal;
use serde::Deserialize;
use sha2::{Digest, Sha256};

/// A problem with the rate card file: named before any data is read.
#[derive(Debug, thiserror::Error)]
pub enum RateCardError {
    #[error("cannot read rate card `{}`: {reason}", path.display())]
    Unreadable { path: PathBuf, reason: String },

    #[error("rate card `{}` is not valid: {reason}", path.display())]
    Invalid { path: PathBuf, reason: String },

    #[error("rate card `{}` has no price for account `{account_id}`: plan `{plan}` starts on {first}, and the account has a session on {day} ({time_zone})", path.display())]
    NoVersion {
        path: PathBuf,
        account_id: String,
        plan: String,
        day: NaiveDate,
        time_zone: String,
        first: NaiveDate,
    },
}

/// Quota units each kind of session costs. The default is the article's: 1 per session, 0
/// for a Messenger or Instagram session the business never answered.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct SessionQuota {
    pub whatsapp_user_initiated: i64,
    pub whatsapp_business_initiated: i64,
    pub messenger: i64,
    pub instagram: i64,
    /// Messenger and Instagram sessions without an outbound message.
    pub unanswered: i64,
}

impl Default for SessionQuota {
    fn default() -> Self {
        SessionQuota {
            whatsapp_user_initiated: 1,
            whatsapp_business_initiated: 1,
            messenger: 1,
            instagram: 1,
            unanswered: 0,
        }
    }
}

/// One price version of a plan.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct PriceVersion {
    /// First day the version is in force, from local midnight in the account's billing zone.
    pub effective: NaiveDate,
    /// Quota units included per period.
    pub included_quota: i64,
    /// Price of each quota unit beyond the included quota.
    #[serde(
        deserialize_with = "price",
        serialize_with = "rust_decimal::serde::str::serialize"
    )]
    pub unit_price: Decimal,
    #[serde(default)]
    pub quota: SessionQuota,
}

/// A price: a decimal written as a string (`"0.0125"`). A TOML float is refused: it would pass
/// through binary floating point.
fn price<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Decimal, D::Error> {
    let text = String::deserialize(d)?;
    text.trim()
        .parse::<Decimal>()
        .map_err(|e| serde::de::Error::custom(format!("`{text}` is not a decimal number ({e})")))
}

fn optional_price<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Decimal>, D::Error> {
    price(d).map(Some)
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
struct PlanFile {
    currency: String,
    versions: Vec<PriceVersion>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
struct AccountFile {
    plan: Option<String>,
    time_zone: Option<String>,
    included_quota: Option<i64>,
    #[serde(default, deserialize_with = "optional_price")]
    unit_price: Option<Decimal>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CardFile {
    default_plan: String,
    #[serde(default)]
    default_time_zone: Option<String>,
    plans: BTreeMap<String, PlanFile>,
    #[serde(default)]
    accounts: BTreeMap<String, AccountFile>,
    /// What Meta charges (SPEC-meta): optional.
    meta: Option<crate::meta::config::MetaFile>,
}

/// A plan: a currency and its price versions, sorted by effective date.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub name: String,
    pub currency: String,
    pub versions: Vec<PriceVersion>,
}

impl Plan {
    /// The version in force on `day` (a day in the account's zone), if any has started by then.
    pub fn version_on(&self, day: NaiveDate) -> Option<&PriceVersion> {
        self.index_on(day).map(|i| &self.versions[i])
    }

    /// The index of [`Plan::version_on`]'s version.
    fn index_on(&self, day: NaiveDate) -> Option<usize> {
        self.versions.iter().rposition(|v| v.effective <= day)
    }
}

/// What an account is billed by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountTerms {
    pub plan: String,
    pub time_zone: Tz,
    pub included_quota: Option<i64>,
    pub unit_price: Option<Decimal>,
}

/// A checked rate card.
#[derive(Debug, Clone, PartialEq)]
pub struct RateCard {
    pub plans: BTreeMap<String, Plan>,
    pub default_plan: String,
    pub default_time_zone: Tz,
    pub accounts: BTreeMap<String, AccountTerms>,
    /// The `[meta]` section, with Meta's rate cards read.
    pub meta: Option<crate::meta::config::MetaConfig>,
    /// Where the card was read from: its path, or [`BUILT_IN`].
    pub source: PathBuf,
    /// SHA-256 of the file's bytes, for the manifest.
    pub sha256: String,
}

/// The name [`RateCard::built_in`] gives as its source.
pub const BUILT_IN: &str = "built-in";

/// The card a run uses without `--rates`: the article's terms. One quota unit per session,
/// none for an unanswered Messenger or Instagram session, no allowance and no price; `XXX` is
/// ISO 4217's code for "no currency".
pub const BUILT_IN_TEXT: &str = r#"default_plan = "article"
default_time_zone = "UTC"

[plans.article]
currency = "XXX"

[[plans.article.versions]]
effective = "1970-01-01"
included_quota = 0
unit_price = "0"
"#;

impl RateCard {
    /// The article's card ([`BUILT_IN_TEXT`]).
    pub fn built_in() -> RateCard {
        parse(BUILT_IN_TEXT, Path::new(BUILT_IN)).expect("the built-in card is valid")
    }

    /// The plan of `terms`.
    pub fn plan(&self, terms: &AccountTerms) -> &Plan {
        &self.plans[&terms.plan]
    }

    /// The quota included in a period (`first` is its first day): the account's own, or the
    /// one of the version in force on the period's first day, or, when the plan starts later
    /// in the month, of its first version. A version that starts mid-period changes prices at
    /// once and the allowance from the next period on.
    pub fn allowance(&self, terms: &AccountTerms, first: NaiveDate) -> i64 {
        let plan = self.plan(terms);
        let version = plan.version_on(first).unwrap_or(&plan.versions[0]);
        terms.included_quota.unwrap_or(version.included_quota)
    }

    /// The price of a quota unit beyond the allowance under `version`: the account's own, or
    /// the version's.
    pub fn unit_price(&self, terms: &AccountTerms, version: &PriceVersion) -> Decimal {
        terms.unit_price.unwrap_or(version.unit_price)
    }

    /// A SHA-256 of what rates `account_id`'s sessions in the period from `first` to `last`
    /// (days in its zone): its plan, zone, own allowance and price, the plan's currency and
    /// the price versions in force during the period. Edits elsewhere in the card (another
    /// account, a version that starts after the period) leave it as it is.
    pub fn terms_fingerprint(&self, account_id: &str, first: NaiveDate, last: NaiveDate) -> String {
        let terms = self.terms_of(account_id);
        let plan = self.plan(&terms);
        let versions: Vec<&PriceVersion> = plan
            .versions
            .iter()
            .enumerate()
            .filter(|&(i, v)| {
                v.effective <= last
                    && plan
                        .versions
                        .get(i + 1)
                        .is_none_or(|next| next.effective > first)
            })
            .map(|(_, v)| v)
            .collect();
        fingerprint(&serde_json::json!({
            "terms": terms_json(&terms),
            "currency": plan.currency,
            "versions": versions,
        }))
    }

    /// A SHA-256 of what rates sessions up to `last` (a day in any account's zone): the
    /// defaults, every account's terms, and every plan's currency and versions effective by
    /// then. Adding a version that starts later leaves it as it is.
    pub fn history_fingerprint(&self, last: NaiveDate) -> String {
        let plans: BTreeMap<&str, serde_json::Value> = self
            .plans
            .iter()
            .map(|(name, plan)| {
                let versions: Vec<&PriceVersion> = plan
                    .versions
                    .iter()
                    .filter(|v| v.effective <= last)
                    .collect();
                (
                    name.as_str(),
                    serde_json::json!({ "currency": plan.currency, "versions": versions }),
                )
            })
            .collect();
        let accounts: BTreeMap<&str, serde_json::Value> = self
            .accounts
            .iter()
            .map(|(name, terms)| (name.as_str(), terms_json(terms)))
            .collect();
        let mut card = serde_json::json!({
            "default_plan": self.default_plan,
            "default_time_zone": self.default_time_zone.name(),
            "plans": plans,
            "accounts": accounts,
        });
        // What Meta charges, as far as it prices those days.
        if let Some(meta) = &self.meta {
            card["meta"] = meta.history_json(last);
        }
        fingerprint(&card)
    }

    /// Decimal places of the `unit_price` columns in Parquet: enough for every price the card
    /// holds, and at least 4.
    pub fn price_scale(&self) -> u32 {
        let versions = self.plans.values().flat_map(|p| &p.versions);
        let own = self.accounts.values().filter_map(|a| a.unit_price);
        versions
            .map(|v| v.unit_price.scale())
            .chain(own.map(|p| p.scale()))
            .fold(4, u32::max)
    }

    /// Decimal places of the `amount` columns in Parquet: the largest minor unit among the
    /// card's currencies (2 for USD, 3 if it also bills in KWD).
    pub fn amount_scale(&self) -> u32 {
        self.plans
            .values()
            .map(|p| minor_unit_digits(&p.currency))
            .max()
            .unwrap_or(2)
    }

    /// The first instant (UTC nanoseconds) after `period` has ended in every zone the card
    /// bills in (its accounts' and the default one) and, with `[meta]`, every WABA's zone;
    /// `None` for a name that is no period.
    pub fn period_end_everywhere(&self, period: &str) -> Option<i64> {
        let meta_zones = self.meta.iter().flat_map(|meta| {
            std::iter::once(meta.time_zone)
                .chain(meta.businesses.values().filter_map(|b| b.time_zone))
        });
        std::iter::once(self.default_time_zone)
            .chain(self.accounts.values().map(|terms| terms.time_zone))
            .chain(meta_zones)
            .map(|tz| period_bounds_ns(period, tz).map(|(_, end)| end))
            .collect::<Option<Vec<i64>>>()?
            .into_iter()
            .max()
    }

    /// The terms of `account_id`: its own, or the defaults.
    pub fn terms_of(&self, account_id: &str) -> AccountTerms {
        self.accounts
            .get(account_id)
            .cloned()
            .unwrap_or_else(|| AccountTerms {
                plan: self.default_plan.clone(),
                time_zone: self.default_time_zone,
                included_quota: None,
                unit_price: None,
            })
    }
}

fn terms_json(terms: &AccountTerms) -> serde_json::Value {
    serde_json::json!({
        "plan": terms.plan,
        "time_zone": terms.time_zone.name(),
        "included_quota": terms.included_quota,
        "unit_price": terms.unit_price.map(|p| p.to_string()),
    })
}

/// SHA-256 of a JSON value's text (object keys sorted), in hex.
fn fingerprint(value: &serde_json::Value) -> String {
    hex::encode(Sha256::digest(value.to_string().as_bytes()))
}

/// The billing period that contains the instant `ns` (UTC nanoseconds) for an account in
/// `tz`: the calendar month in that zone. Returns its name (`YYYY-MM`) and its first instant
/// and the first instant of the next period, in UTC nanoseconds. A session belongs to the
/// period that contains its start: 23:30 local on the last day of a month is in that month.
pub fn period_containing(ns: i64, tz: Tz) -> (String, i64, i64) {
    use chrono::Datelike;
    let local = tz.timestamp_nanos(ns);
    let first =
        NaiveDate::from_ymd_opt(local.year(), local.month(), 1).expect("a month's first day");
    let (start, end) = month_bounds(first, tz);
    (first.format("%Y-%m").to_string(), start, end)
}

/// The first instant of the month that starts on `first` and of the next one, in `tz`.
fn month_bounds(first: NaiveDate, tz: Tz) -> (i64, i64) {
    let next = first
        .checked_add_months(chrono::Months::new(1))
        .expect("within chrono's range");
    (local_midnight(first, tz), local_midnight(next, tz))
}

/// The first day of a period named `YYYY-MM`.
pub fn first_day(period: &str) -> Option<NaiveDate> {
    NaiveDate::parse_from_str(&format!("{period}-01"), "%Y-%m-%d").ok()
}

/// A period's first instant and the first instant after it, in `tz`, as RFC 3339 with the
/// zone's offset at that instant (`Z` for UTC).
pub fn period_bounds_rfc3339(period: &str, tz: Tz) -> Option<(String, String)> {
    let (start, end) = period_bounds_ns(period, tz)?;
    Some((rfc3339_in(start, tz), rfc3339_in(end, tz)))
}

/// A period's first instant and the first instant after it, in `tz`, in UTC nanoseconds.
pub fn period_bounds_ns(period: &str, tz: Tz) -> Option<(i64, i64)> {
    Some(month_bounds(first_day(period)?, tz))
}

/// An instant (UTC nanoseconds) as RFC 3339 with `tz`'s offset at that instant (`Z` for UTC),
/// to the second (or finer, when the instant has a fraction).
pub fn rfc3339_in(ns: i64, tz: Tz) -> String {
    tz.timestamp_nanos(ns)
        .to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)
}

/// The first instant of `day` in `tz`, in UTC nanoseconds. Where a clock change skips
/// midnight, the day starts at the first local time that exists.
pub(crate) fn local_midnight(day: NaiveDate, tz: Tz) -> i64 {
    let midnight = day.and_hms_opt(0, 0, 0).expect("midnight");
    (0..=24 * 60)
        .find_map(|minutes| {
            tz.from_local_datetime(&(midnight + chrono::Duration::minutes(minutes)))
                .earliest()
        })
        .expect("a day has a local time that exists")
        .timestamp_nanos_opt()
        .expect("within the nanosecond range")
}

/// Digits after the decimal point of a currency's minor unit (ISO 4217): 2 unless listed.
pub fn minor_unit_digits(currency: &str) -> u32 {
    match currency {
        "BIF" | "CLP" | "DJF" | "GNF" | "ISK" | "JPY" | "KMF" | "KRW" | "PYG" | "RWF" | "UGX"
        | "UYI" | "VND" | "VUV" | "XAF" | "XOF" | "XPF" => 0,
        "BHD" | "IQD" | "JOD" | "KWD" | "LYD" | "OMR" | "TND" => 3,
        _ => 2,
    }
}

/// What one invoice line is charged.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LineCharge {
    /// Quota units covered by the period's allowance.
    pub allowance_quota: i64,
    /// Quota units beyond it.
    pub overage_quota: i64,
    /// The line's amount: overage units times the line's unit price, rounded once, half to
    /// even, to the currency's minor unit.
    pub amount: Decimal,
}

/// Spends `allowance` quota units on the lines in the order given, then prices the rest of
/// each line at its own unit price; amounts have exactly the currency's minor-unit digits. `lines` holds each line's (quota, unit price); invoice
/// lines come sorted by price version first, so the allowance goes to the earlier prices.
/// An invoice's total is the exact sum of its lines' amounts.
pub fn charge_lines(lines: &[(i64, Decimal)], allowance: i64, currency: &str) -> Vec<LineCharge> {
    let digits = minor_unit_digits(currency);
    let mut left = allowance.max(0);
    lines
        .iter()
        .map(|&(quota, unit_price)| {
            let covered = quota.clamp(0, left);
            left -= covered;
            let overage = quota - covered;
            LineCharge {
                allowance_quota: covered,
                overage_quota: overage,
                amount: rounded(Decimal::from(overage) * unit_price, digits),
            }
        })
        .collect()
}

/// `amount` rounded half to even to `digits` decimal places, written with exactly that many.
fn rounded(amount: Decimal, digits: u32) -> Decimal {
    let mut amount =
        amount.round_dp_with_strategy(digits, rust_decimal::RoundingStrategy::MidpointNearestEven);
    amount.rescale(digits);
    amount
}

/// A stretch of time with one billing period and one price version, for one account.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Segment {
    /// UTC nanoseconds, half-open.
    start: i64,
    end: i64,
    /// Index into [`Calendars::periods`].
    period: u32,
    /// Index into the plan's versions; `None` before its first.
    version: Option<u32>,
}

/// One account as [`Calendars`] knows it.
struct AccountCalendar<'a> {
    account_id: String,
    time_zone: Tz,
    plan: &'a Plan,
    /// Disjoint, sorted by start.
    segments: Vec<Segment>,
}

/// Maps (account, instant) to the billing period and the price version in force, for many
/// rows. It remembers, per account, the stretches of time it has already worked out, so a row
/// costs a binary search and the time zone is consulted only at a new period or version.
pub struct Calendars<'a> {
    card: &'a RateCard,
    accounts: Vec<AccountCalendar<'a>>,
    index: std::collections::HashMap<String, usize>,
    current: usize,
    periods: Vec<String>,
    period_ids: std::collections::HashMap<String, u32>,
}

impl<'a> Calendars<'a> {
    pub fn new(card: &'a RateCard) -> Self {
        Calendars {
            card,
            accounts: Vec::new(),
            index: Default::default(),
            current: usize::MAX,
            periods: Vec::new(),
            period_ids: Default::default(),
        }
    }

    /// The names of the period ids [`Calendars::at`] returned.
    pub fn periods(&self) -> &[String] {
        &self.periods
    }

    /// The billing period (an id into [`Calendars::periods`]) of `account_id` at `ns` (UTC
    /// nanoseconds) and the price version in force then. Both are read in the account's time
    /// zone: a version is in force from the local midnight of its `effective` day.
    pub fn at(
        &mut self,
        account_id: &str,
        ns: i64,
    ) -> Result<(u32, &'a PriceVersion), RateCardError> {
        let segment = self.segment(account_id, ns);
        let account = &self.accounts[self.current];
        match segment.version {
            Some(version) => Ok((segment.period, &account.plan.versions[version as usize])),
            None => Err(RateCardError::NoVersion {
                path: self.card.source.clone(),
                account_id: account.account_id.clone(),
                plan: account.plan.name.clone(),
                day: account.time_zone.timestamp_nanos(ns).date_naive(),
                time_zone: account.time_zone.name().to_string(),
                first: account.plan.versions[0].effective,
            }),
        }
    }

    /// The billing period (an id into [`Calendars::periods`]) of `account_id` at `ns`,
    /// whether or not a price version is in force then.
    pub fn period_at(&mut self, account_id: &str, ns: i64) -> u32 {
        self.segment(account_id, ns).period
    }

    fn segment(&mut self, account_id: &str, ns: i64) -> Segment {
        let same = self
            .accounts
            .get(self.current)
            .is_some_and(|a| a.account_id == account_id);
        if !same {
            self.current = match self.index.get(account_id) {
                Some(&i) => i,
                None => {
                    let terms = self.card.terms_of(account_id);
                    self.accounts.push(AccountCalendar {
                        account_id: account_id.to_string(),
                        time_zone: terms.time_zone,
                        plan: self.card.plan(&terms),
                        segments: Vec::new(),
                    });
                    self.index
                        .insert(account_id.to_string(), self.accounts.len() - 1);
                    self.accounts.len() - 1
                }
            };
        }
        let segments = &self.accounts[self.current].segments;
        let after = segments.partition_point(|s| s.start <= ns);
        if let Some(s) = after.checked_sub(1).map(|i| segments[i]) {
            if ns < s.end {
                return s;
            }
        }
        let segment = self.work_out(ns);
        self.accounts[self.current].segments.insert(after, segment);
        segment
    }

    /// The stretch around `ns` for the current account.
    fn work_out(&mut self, ns: i64) -> Segment {
        let account = &self.accounts[self.current];
        let (tz, plan) = (account.time_zone, account.plan);
        let (name, period_start, period_end) = period_containing(ns, tz);
        let day = tz.timestamp_nanos(ns).date_naive();
        let version = plan.index_on(day);
        let (version_start, version_end) = match version {
            Some(v) => (
                local_midnight(plan.versions[v].effective, tz),
                plan.versions
                    .get(v + 1)
                    .map_or(i64::MAX, |next| local_midnight(next.effective, tz)),
            ),
            None => (i64::MIN, local_midnight(plan.versions[0].effective, tz)),
        };
        let period = match self.period_ids.get(&name) {
            Some(&id) => id,
            None => {
                let id = self.periods.len() as u32;
                self.period_ids.insert(name.clone(), id);
                self.periods.push(name);
                id
            }
        };
        Segment {
            start: period_start.max(version_start),
            end: period_end.min(version_end),
            period,
            version: version.map(|v| v as u32),
        }
    }
}

/// The card of `--rates`: the file's, or without one the built-in card.
pub fn load_or_built_in(path: Option<&Path>) -> Result<RateCard, RateCardError> {
    path.map_or_else(|| Ok(RateCard::built_in()), load)
}

/// Reads and checks a rate card file.
pub fn load(path: &Path) -> Result<RateCard, RateCardError> {
    let bytes = std::fs::read(path).map_err(|e| RateCardError::Unreadable {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    let text = std::str::from_utf8(&bytes).map_err(|e| RateCardError::Invalid {
        path: path.to_path_buf(),
        reason: format!("not UTF-8 ({e})"),
    })?;
    parse(text, path)
}

/// Reads and checks a rate card's text; `source` names it in errors and the manifest.
pub fn parse(text: &str, source: &Path) -> Result<RateCard, RateCardError> {
    let invalid = |reason: String| RateCardError::Invalid {
        path: source.to_path_buf(),
        reason,
    };
    let file: CardFile = toml::from_str(text).map_err(|e| invalid(e.to_string().trim().into()))?;
    check(
        file,
        source.to_path_buf(),
        hex::encode(Sha256::digest(text.as_bytes())),
    )
    .map_err(invalid)
}

pub(crate) fn time_zone(name: &str, whose: &str) -> Result<Tz, String> {
    name.parse::<Tz>().map_err(|_| {
        format!("{whose} has unknown time zone `{name}` (use an IANA name such as `Europe/Berlin` or `UTC`)")
    })
}

/// Decimal places a price may have: `DECIMAL(18, 10)` holds it with 8 digits before the point.
pub const MAX_PRICE_DIGITS: u32 = 10;

/// A rate of Meta's (a card's cell or a tier's `rate`) as a price: at most
/// [`MAX_PRICE_DIGITS`] decimal places and 8 digits before the point.
pub(crate) fn check_rate_digits(rate: Decimal) -> Result<(), String> {
    if rate.scale() > MAX_PRICE_DIGITS {
        return Err(format!(
            "rate {rate} has more than {MAX_PRICE_DIGITS} decimal places"
        ));
    }
    if rate >= Decimal::from(100_000_000) {
        return Err(format!(
            "rate {rate} is too large (at most 8 digits before the decimal point)"
        ));
    }
    Ok(())
}

fn check_price_digits(price: Decimal, at: &str) -> Result<(), String> {
    if price.scale() > MAX_PRICE_DIGITS {
        return Err(format!(
            "{at}: unit_price {price} has more than {MAX_PRICE_DIGITS} decimal places"
        ));
    }
    if price >= Decimal::from(100_000_000) {
        return Err(format!(
            "{at}: unit_price {price} is too large (at most 8 digits before the decimal point)"
        ));
    }
    Ok(())
}

fn check(file: CardFile, source: PathBuf, sha256: String) -> Result<RateCard, String> {
    let mut plans = BTreeMap::new();
    for (name, plan) in file.plans {
        if plan.currency.len() != 3 || !plan.currency.chars().all(|c| c.is_ascii_uppercase()) {
            return Err(format!(
                "plan `{name}` has currency `{}`; expected a three-letter ISO 4217 code such as `USD`",
                plan.currency
            ));
        }
        if plan.versions.is_empty() {
            return Err(format!("plan `{name}` has no price versions"));
        }
        let mut versions = plan.versions;
        versions.sort_by_key(|v| v.effective);
        for pair in versions.windows(2) {
            if pair[0].effective == pair[1].effective {
                return Err(format!(
                    "plan `{name}` has two price versions effective on {}",
                    pair[0].effective
                ));
            }
        }
        for v in &versions {
            let at = format!("plan `{name}`, version effective {}", v.effective);
            if v.unit_price.is_sign_negative() {
                return Err(format!("{at}: negative unit_price {}", v.unit_price));
            }
            check_price_digits(v.unit_price, &at)?;
            if v.included_quota < 0 {
                return Err(format!(
                    "{at}: negative included_quota {}",
                    v.included_quota
                ));
            }
            let q = &v.quota;
            let units = [
                q.whatsapp_user_initiated,
                q.whatsapp_business_initiated,
                q.messenger,
                q.instagram,
                q.unanswered,
            ];
            if units.iter().any(|u| *u < 0) {
                return Err(format!("{at}: negative quota units per session"));
            }
        }
        plans.insert(
            name.clone(),
            Plan {
                name,
                currency: plan.currency,
                versions,
            },
        );
    }
    if !plans.contains_key(&file.default_plan) {
        return Err(unknown_plan(&file.default_plan, "default_plan", &plans));
    }
    let default_time_zone = match &file.default_time_zone {
        Some(name) => time_zone(name, "default_time_zone")?,
        None => Tz::UTC,
    };
    let mut accounts = BTreeMap::new();
    for (account, terms) in file.accounts {
        let whose = format!("account `{account}`");
        let plan = terms.plan.unwrap_or_else(|| file.default_plan.clone());
        if !plans.contains_key(&plan) {
            return Err(unknown_plan(&plan, &whose, &plans));
        }
        if terms.unit_price.is_some_and(|p| p.is_sign_negative()) {
            return Err(format!("{whose}: negative unit_price"));
        }
        if let Some(price) = terms.unit_price {
            check_price_digits(price, &whose)?;
        }
        if terms.included_quota.is_some_and(|q| q < 0) {
            return Err(format!("{whose}: negative included_quota"));
        }
        let time_zone = match &terms.time_zone {
            Some(name) => time_zone(name, &whose)?,
            None => default_time_zone,
        };
        accounts.insert(
            account,
            AccountTerms {
                plan,
                time_zone,
                included_quota: terms.included_quota,
                unit_price: terms.unit_price,
            },
        );
    }
    // Files the section names are beside the card.
    let meta = file
        .meta
        .map(|meta| crate::meta::config::check(meta, source.parent().unwrap_or(Path::new(""))))
        .transpose()?;
    // With `[meta]` the card is its text and the files the section reads: a changed Meta
    // rate card is another card.
    let sha256 = match &meta {
        None => sha256,
        Some(meta) => {
            let mut hasher = Sha256::new();
            hasher.update(sha256.as_bytes());
            for file in &meta.files {
                hasher.update([0x1f]);
                hasher.update(file.path.as_bytes());
                hasher.update([0x1f]);
                hasher.update(file.sha256.as_bytes());
            }
            hex::encode(hasher.finalize())
        }
    };
    Ok(RateCard {
        plans,
        default_plan: file.default_plan,
        default_time_zone,
        accounts,
        meta,
        source,
        sha256,
    })
}

fn unknown_plan(name: &str, whose: &str, plans: &BTreeMap<String, Plan>) -> String {
    let known: Vec<String> = plans.keys().map(|k| format!("`{k}`")).collect();
    format!(
        "{whose} names unknown plan `{name}` (plans: {})",
        known.join(", ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn card(text: &str) -> Result<RateCard, String> {
        let file: CardFile = toml::from_str(text).map_err(|e| e.to_string())?;
        check(file, PathBuf::from("test.toml"), String::new())
    }

    const GOOD: &str = r#"
        default_plan = "standard"
        default_time_zone = "UTC"

        [plans.standard]
        currency = "USD"

        [[plans.standard.versions]]
        effective = "2026-01-01"
        included_quota = 1000
        unit_price = "0.0500"

        [[plans.standard.versions]]
        effective = "2026-10-15"
        included_quota = 1000
        unit_price = "0.0550"

        [accounts.acme]
        time_zone = "Asia/Jakarta"
        unit_price = "0.04"
    "#;

    #[test]
    fn a_good_card_is_read_with_exact_decimals_and_zones() {
        let card = card(GOOD).unwrap();
        let acme = card.terms_of("acme");
        assert_eq!(acme.time_zone, chrono_tz::Asia::Jakarta);
        assert_eq!(acme.unit_price, Some(Decimal::new(4, 2)));
        assert_eq!(card.terms_of("other").plan, "standard");
        assert_eq!(card.terms_of("other").time_zone, Tz::UTC);
        let plan = &card.plans["standard"];
        let day = |d: &str| NaiveDate::parse_from_str(d, "%Y-%m-%d").unwrap();
        assert_eq!(
            plan.version_on(day("2026-10-14")).unwrap().unit_price,
            Decimal::new(500, 4)
        );
        assert_eq!(
            plan.version_on(day("2026-10-15")).unwrap().unit_price,
            Decimal::new(550, 4)
        );
        assert!(plan.version_on(day("2025-12-31")).is_none());
        assert_eq!(plan.versions[0].quota, SessionQuota::default());
    }

    fn utc(text: &str) -> i64 {
        chrono::DateTime::parse_from_rfc3339(text)
            .unwrap()
            .timestamp_nanos_opt()
            .unwrap()
    }

    #[test]
    fn periods_are_months_in_the_accounts_zone() {
        let jakarta = chrono_tz::Asia::Jakarta;
        // 23:30 local on 31 October is October; 00:30 local on 1 November is November.
        assert_eq!(
            period_containing(utc("2026-10-31T16:30:00Z"), jakarta).0,
            "2026-10"
        );
        assert_eq!(
            period_containing(utc("2026-10-31T17:30:00Z"), jakarta).0,
            "2026-11"
        );
        let (_, start, end) = period_containing(utc("2026-10-31T16:30:00Z"), jakarta);
        assert_eq!(
            (start, end),
            (utc("2026-09-30T17:00:00Z"), utc("2026-10-31T17:00:00Z"))
        );
    }

    #[test]
    fn periods_follow_daylight_saving_time() {
        let new_york = chrono_tz::America::New_York;
        // 1 November 2026 03:30 UTC is 31 October 23:30 EDT: still October.
        assert_eq!(
            period_containing(utc("2026-11-01T03:30:00Z"), new_york).0,
            "2026-10"
        );
        // November starts at midnight EDT and ends at midnight EST: 30 days and one hour.
        let (name, start, end) = period_containing(utc("2026-11-15T12:00:00Z"), new_york);
        assert_eq!(name, "2026-11");
        assert_eq!(start, utc("2026-11-01T04:00:00Z"));
        assert_eq!(end, utc("2026-12-01T05:00:00Z"));
        assert_eq!((end - start) / 3_600_000_000_000, 30 * 24 + 1);
        // March loses an hour.
        let (_, start, end) = period_containing(utc("2026-03-15T12:00:00Z"), new_york);
        assert_eq!((end - start) / 3_600_000_000_000, 31 * 24 - 1);
    }

    #[test]
    fn a_month_whose_midnight_does_not_exist_starts_at_the_first_local_time() {
        // Havana skips from 00:00 to 01:00 on the second Sunday of March.
        let havana = chrono_tz::America::Havana;
        assert_eq!(
            local_midnight(NaiveDate::from_ymd_opt(2026, 3, 8).unwrap(), havana),
            utc("2026-03-08T05:00:00Z")
        );
    }

    fn dec(text: &str) -> Decimal {
        text.parse().unwrap()
    }

    fn charge(allowance: i64, overage: i64, amount: &str) -> LineCharge {
        LineCharge {
            allowance_quota: allowance,
            overage_quota: overage,
            amount: dec(amount),
        }
    }

    #[test]
    fn the_allowance_is_spent_exactly_then_each_unit_is_priced() {
        let line = [(3, dec("0.05"))];
        assert_eq!(charge_lines(&line, 3, "USD"), vec![charge(3, 0, "0.00")]);
        assert_eq!(charge_lines(&line, 2, "USD"), vec![charge(2, 1, "0.05")]);
        assert_eq!(charge_lines(&line, 4, "USD"), vec![charge(3, 0, "0.00")]);
    }

    #[test]
    fn earlier_lines_use_the_allowance_and_later_ones_pay_their_own_price() {
        // Old price lines first (as invoices sort them), then the new price's.
        let lines = [
            (2, dec("0.050")),
            (1, dec("0.050")),
            (2, dec("0.055")),
            (4, dec("0.055")),
        ];
        assert_eq!(
            charge_lines(&lines, 4, "USD"),
            vec![
                charge(2, 0, "0.00"),
                charge(1, 0, "0.00"),
                charge(1, 1, "0.06"), // 0.055 -> 0.06, the even neighbour
                charge(0, 4, "0.22"),
            ]
        );
    }

    #[test]
    fn each_line_is_rounded_once_half_to_even_and_totals_are_exact_sums() {
        // 1,001 units at 0.0125 = 12.5125 -> 12.51. Midpoints go to the even digit:
        // 2 units = 0.025 -> 0.02 (half-up would give 0.03); 6 units = 0.075 -> 0.08.
        let price = dec("0.0125");
        let lines = [(1001, price), (2, price), (6, price)];
        let amounts: Vec<Decimal> = charge_lines(&lines, 0, "USD")
            .iter()
            .map(|l| l.amount)
            .collect();
        assert_eq!(amounts, vec![dec("12.51"), dec("0.02"), dec("0.08")]);
        assert_eq!(amounts.iter().sum::<Decimal>(), dec("12.61"));
        // Many small amounts: a line prices its sessions together and rounds once, so
        // 100,001 sessions at 0.00049 make 49.00049 -> 49.00; rounding each session's price
        // first would have made every one 0.00.
        let small = [(100_001, dec("0.00049"))];
        assert_eq!(charge_lines(&small, 0, "USD")[0].amount, dec("49.00"));
        // 0.1 + 0.2 is exactly 0.3 in decimals.
        let tenths = [(1, dec("0.1")), (1, dec("0.2"))];
        let sum: Decimal = charge_lines(&tenths, 0, "USD")
            .iter()
            .map(|l| l.amount)
            .sum();
        assert_eq!(sum, dec("0.3"));
        // Yen have no minor unit; dinars have three.
        assert_eq!(charge_lines(&[(3, price)], 0, "JPY")[0].amount, dec("0"));
        assert_eq!(
            charge_lines(&[(3, price)], 0, "KWD")[0].amount,
            dec("0.038")
        );
    }

    fn card_with_jakarta_and_new_york() -> RateCard {
        card(&format!(
            "{GOOD}\n[accounts.ny]\ntime_zone = \"America/New_York\"\n"
        ))
        .unwrap()
    }

    #[test]
    fn calendars_read_periods_and_versions_in_the_accounts_zone() {
        let card = card_with_jakarta_and_new_york();
        let mut calendars = Calendars::new(&card);
        let mut at = |account: &str, time: &str| {
            let (period, version) = calendars.at(account, utc(time)).unwrap();
            (period, version.unit_price.to_string())
        };
        // The new price is effective on 15 October, from local midnight: 17:00 UTC the day
        // before in Jakarta (UTC+7), 04:00 UTC in New York (UTC-4 in October).
        let jakarta_before = at("acme", "2026-10-14T16:59:59Z");
        let jakarta_after = at("acme", "2026-10-14T17:00:00Z");
        assert_eq!(jakarta_before.1, "0.0500");
        assert_eq!(jakarta_after.1, "0.0550");
        assert_eq!(jakarta_before.0, jakarta_after.0);
        assert_eq!(at("ny", "2026-10-15T03:59:59Z").1, "0.0500");
        assert_eq!(at("ny", "2026-10-15T04:00:00Z").1, "0.0550");
        // Asked again, the remembered stretches give the same answers.
        assert_eq!(at("acme", "2026-10-14T16:59:59Z"), jakarta_before);
        // Month ends: 31 October 23:30 local is October in both zones.
        let october = at("acme", "2026-10-31T16:30:00Z").0;
        let november = at("acme", "2026-10-31T17:00:00Z").0;
        assert_ne!(october, november);
        assert_eq!(at("ny", "2026-11-01T03:30:00Z").0, october);
        // New York's clocks go back on 1 November at 02:00 EDT: December starts at 05:00 UTC.
        assert_eq!(at("ny", "2026-12-01T04:59:59Z").0, november);
        let december = calendars.at("ny", utc("2026-12-01T05:00:00Z")).unwrap().0;
        let names = calendars.periods();
        assert_eq!(names[october as usize], "2026-10");
        assert_eq!(names[november as usize], "2026-11");
        assert_eq!(names[december as usize], "2026-12");
    }

    #[test]
    fn a_session_before_the_plans_first_version_is_named() {
        let card = card_with_jakarta_and_new_york();
        let mut calendars = Calendars::new(&card);
        // 1 January 2026 00:30 in Jakarta is 31 December 17:30 UTC: the plan has started.
        assert!(calendars.at("acme", utc("2025-12-31T17:30:00Z")).is_ok());
        let error = calendars
            .at("ny", utc("2026-01-01T04:59:00Z"))
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("account `ny`")
                && error.contains("plan `standard` starts on 2026-01-01")
                && error.contains("session on 2025-12-31 (America/New_York)"),
            "{error}"
        );
        // The period is known all the same (violations have one).
        let period = calendars.period_at("ny", utc("2026-01-01T04:59:00Z"));
        assert_eq!(calendars.periods()[period as usize], "2025-12");
    }

    #[test]
    fn the_allowance_is_the_one_in_force_on_the_periods_first_day() {
        let text = GOOD.replace(
            "effective = \"2026-10-15\"\n        included_quota = 1000",
            "effective = \"2026-10-15\"\n        included_quota = 2000",
        );
        let card = card(&text).unwrap();
        let day = |d: &str| NaiveDate::parse_from_str(d, "%Y-%m-%d").unwrap();
        let other = card.terms_of("other");
        assert_eq!(card.allowance(&other, day("2026-10-01")), 1000);
        assert_eq!(card.allowance(&other, day("2026-11-01")), 2000);
        // Before the plan starts, its first version's.
        assert_eq!(card.allowance(&other, day("2025-12-01")), 1000);
        // An account's own allowance and price win.
        let acme = card.terms_of("acme");
        assert_eq!(
            card.unit_price(&acme, &card.plans["standard"].versions[1]),
            dec("0.04")
        );
        assert_eq!(
            card.unit_price(&other, &card.plans["standard"].versions[1]),
            dec("0.0550")
        );
    }

    #[test]
    fn the_built_in_card_is_the_articles() {
        let card = RateCard::built_in();
        assert_eq!(card.default_plan, "article");
        let plan = &card.plans["article"];
        assert_eq!(plan.currency, "XXX");
        assert_eq!(plan.versions[0].quota, SessionQuota::default());
        assert_eq!(plan.versions[0].included_quota, 0);
        assert_eq!(card.source, PathBuf::from(BUILT_IN));
        assert_eq!(
            card.sha256,
            hex::encode(Sha256::digest(BUILT_IN_TEXT.as_bytes()))
        );
    }

    #[test]
    fn mistakes_are_named() {
        let cases = [
            (
                GOOD.replace("default_plan = \"standard\"", "default_plan = \"gold\""),
                "unknown plan `gold`",
            ),
            (
                GOOD.replace(
                    "time_zone = \"Asia/Jakarta\"",
                    "time_zone = \"Mars/Olympus\"",
                ),
                "unknown time zone `Mars/Olympus`",
            ),
            (
                GOOD.replace("\"0.0550\"", "\"-0.01\""),
                "negative unit_price",
            ),
            (
                GOOD.replace("2026-10-15", "2026-01-01"),
                "two price versions effective on 2026-01-01",
            ),
            (GOOD.replace("\"USD\"", "\"dollars\""), "currency `dollars`"),
            (
                GOOD.replace("unit_price = \"0.0500\"", "unit_price = 0.05"),
                "expected a string",
            ),
            (
                GOOD.replace("\"0.0500\"", "\"five cents\""),
                "`five cents` is not a decimal number",
            ),
            (
                GOOD.replace("[accounts.acme]", "[accounts.acme]\nplan = \"pro\""),
                "account `acme` names unknown plan `pro`",
            ),
            (
                GOOD.replace(
                    "included_quota = 1000\n        unit_price = \"0.0500\"",
                    "included_quota = -1\n        unit_price = \"0.0500\"",
                ),
                "negative included_quota",
            ),
            (
                GOOD.replace("default_time_zone", "default_timezone"),
                "default_timezone",
            ),
        ];
        for (text, needle) in cases {
            let error = card(&text).unwrap_err();
            assert!(error.contains(needle), "{needle:?} not in {error:?}");
        }
    }
}
