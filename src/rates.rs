//! Rate cards: a TOML file in, a checked [`RateCard`] out, before any message is read.
//!
//! A card has plans and accounts. A plan has a currency and price versions, each in force from
//! its effective date (UTC) until the next one: the quota included per period, the price of
//! each quota unit beyond it, and the quota units each kind of session costs. An account
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

use chrono::NaiveDate;
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
    /// First day (UTC) the version is in force.
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
}

/// A plan: a currency and its price versions, sorted by effective date.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub name: String,
    pub currency: String,
    pub versions: Vec<PriceVersion>,
}

impl Plan {
    /// The version in force on `day`, if any has started by then.
    pub fn version_on(&self, day: NaiveDate) -> Option<&PriceVersion> {
        self.versions.iter().rev().find(|v| v.effective <= day)
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
    /// SHA-256 of the file's bytes, for the manifest.
    pub sha256: String,
}

impl RateCard {
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

/// The billing period that contains the instant `ns` (UTC nanoseconds) for an account in
/// `tz`: the calendar month in that zone. Returns its name (`YYYY-MM`) and its first instant
/// and the first instant of the next period, in UTC nanoseconds. A session belongs to the
/// period that contains its start: 23:30 local on the last day of a month is in that month.
pub fn period_containing(ns: i64, tz: Tz) -> (String, i64, i64) {
    use chrono::Datelike;
    let local = chrono::DateTime::from_timestamp_nanos(ns).with_timezone(&tz);
    let first =
        NaiveDate::from_ymd_opt(local.year(), local.month(), 1).expect("a month's first day");
    let next = first
        .checked_add_months(chrono::Months::new(1))
        .expect("within chrono's range");
    let name = format!("{:04}-{:02}", first.year(), first.month());
    (name, local_midnight(first, tz), local_midnight(next, tz))
}

/// The first instant of `day` in `tz`, in UTC nanoseconds. Where a clock change skips
/// midnight, the day starts at the first local time that exists.
fn local_midnight(day: NaiveDate, tz: Tz) -> i64 {
    use chrono::TimeZone;
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

/// One session of an account's period, as the money computation sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Charge {
    /// When the session started (UTC nanoseconds): the allowance goes to earlier sessions first.
    pub started_at: i64,
    /// A tie-breaker among sessions that start together (the session id).
    pub session_id: String,
    /// Quota units the session costs.
    pub units: i64,
    /// Price of a unit beyond the allowance, from the version in force at its start.
    pub unit_price: Decimal,
    /// The invoice line it belongs to.
    pub line: usize,
}

/// What one invoice line is charged.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LineCharge {
    /// Units covered by the period's allowance.
    pub allowance_units: i64,
    /// Units beyond it.
    pub overage_units: i64,
    /// The line's amount: overage units times their unit price, rounded once, half to even,
    /// to the currency's minor unit.
    pub amount: Decimal,
}

/// Spends `allowance` units on the sessions in order of start, then prices the rest, and sums
/// per line (`lines` lines). An invoice's total is the exact sum of its lines' amounts.
pub fn charge_lines(
    sessions: &[Charge],
    allowance: i64,
    lines: usize,
    currency: &str,
) -> Vec<LineCharge> {
    let mut order: Vec<&Charge> = sessions.iter().collect();
    order.sort_by(|a, b| (a.started_at, &a.session_id).cmp(&(b.started_at, &b.session_id)));
    let mut left = allowance.max(0);
    let mut charges = vec![LineCharge::default(); lines];
    let mut exact = vec![Decimal::ZERO; lines];
    for session in order {
        let covered = session.units.min(left);
        left -= covered;
        let over = session.units - covered;
        let line = &mut charges[session.line];
        line.allowance_units += covered;
        line.overage_units += over;
        exact[session.line] += Decimal::from(over) * session.unit_price;
    }
    let digits = minor_unit_digits(currency);
    for (line, amount) in charges.iter_mut().zip(exact) {
        line.amount = amount
            .round_dp_with_strategy(digits, rust_decimal::RoundingStrategy::MidpointNearestEven);
    }
    charges
}

/// Reads and checks a rate card file.
pub fn load(path: &Path) -> Result<RateCard, RateCardError> {
    let bytes = std::fs::read(path).map_err(|e| RateCardError::Unreadable {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    let invalid = |reason: String| RateCardError::Invalid {
        path: path.to_path_buf(),
        reason,
    };
    let text = std::str::from_utf8(&bytes).map_err(|e| invalid(format!("not UTF-8 ({e})")))?;
    let file: CardFile = toml::from_str(text).map_err(|e| invalid(e.to_string().trim().into()))?;
    check(file, hex::encode(Sha256::digest(&bytes))).map_err(invalid)
}

fn time_zone(name: &str, whose: &str) -> Result<Tz, String> {
    name.parse::<Tz>().map_err(|_| {
        format!("{whose} has unknown time zone `{name}` (use an IANA name such as `Europe/Berlin` or `UTC`)")
    })
}

fn check(file: CardFile, sha256: String) -> Result<RateCard, String> {
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
    Ok(RateCard {
        plans,
        default_plan: file.default_plan,
        default_time_zone,
        accounts,
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
        check(file, String::new())
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

    fn session(minute: i64, units: i64, price: &str, line: usize) -> Charge {
        Charge {
            started_at: minute * 60_000_000_000,
            session_id: format!("s{minute}"),
            units,
            unit_price: price.parse().unwrap(),
            line,
        }
    }

    fn dec(text: &str) -> Decimal {
        text.parse().unwrap()
    }

    #[test]
    fn the_allowance_is_spent_exactly_then_each_unit_is_priced() {
        let sessions: Vec<Charge> = (0..3).map(|m| session(m, 1, "0.05", 0)).collect();
        let at = charge_lines(&sessions, 3, 1, "USD");
        assert_eq!(
            at[0],
            LineCharge {
                allowance_units: 3,
                overage_units: 0,
                amount: dec("0.00")
            }
        );
        let one_over = charge_lines(&sessions, 2, 1, "USD");
        assert_eq!(
            one_over[0],
            LineCharge {
                allowance_units: 2,
                overage_units: 1,
                amount: dec("0.05")
            }
        );
    }

    #[test]
    fn earlier_sessions_use_the_allowance_and_later_ones_pay_their_own_price() {
        // Two sessions under the old price, then two under the new one (lines 0 and 1); the
        // allowance of 3 covers the first three.
        let sessions = vec![
            session(40, 1, "0.055", 1),
            session(10, 1, "0.050", 0),
            session(20, 1, "0.050", 0),
            session(30, 1, "0.055", 1),
        ];
        let lines = charge_lines(&sessions, 3, 2, "USD");
        assert_eq!(
            lines[0],
            LineCharge {
                allowance_units: 2,
                overage_units: 0,
                amount: dec("0.00")
            }
        );
        assert_eq!(
            lines[1],
            LineCharge {
                allowance_units: 1,
                overage_units: 1,
                amount: dec("0.06")
            }
        );
    }

    #[test]
    fn each_line_is_rounded_once_half_to_even_and_totals_are_exact_sums() {
        // 1,001 units at 0.0125 = 12.5125 -> 12.51. Midpoints go to the even digit:
        // 2 units = 0.025 -> 0.02 (half-up would give 0.03); 6 units = 0.075 -> 0.08.
        let mut sessions: Vec<Charge> = (0..1001).map(|m| session(m, 1, "0.0125", 0)).collect();
        sessions.extend((2000..2002).map(|m| session(m, 1, "0.0125", 1)));
        sessions.extend((3000..3006).map(|m| session(m, 1, "0.0125", 2)));
        let lines = charge_lines(&sessions, 0, 3, "USD");
        let amounts: Vec<Decimal> = lines.iter().map(|l| l.amount).collect();
        assert_eq!(amounts, vec![dec("12.51"), dec("0.02"), dec("0.08")]);
        assert_eq!(amounts.iter().sum::<Decimal>(), dec("12.61"));
        // Yen have no minor unit; dinars have three.
        assert_eq!(
            charge_lines(&sessions[..3], 0, 1, "JPY")[0].amount,
            dec("0")
        );
        assert_eq!(
            charge_lines(&sessions[..3], 0, 1, "KWD")[0].amount,
            dec("0.038")
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
