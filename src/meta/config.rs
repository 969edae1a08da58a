//! The `[meta]` section of a rate card: which of Meta's pricing models to apply, the WABAs'
//! time zones, Meta's rate cards (files beside the card) and volume tiers, and the market
//! table. Checked with the rest of the card, before any message is read.
//!
//! ```toml
//! [meta]
//! model = "auto"                     # auto | cbp-2023 | pmp-2025
//! time_zone = "America/Los_Angeles"  # WABA time zone of businesses not listed below
//! rate_cards = [
//!   { effective = "2023-06-01", file = "meta/rates-usd-2023-06.csv" },
//!   { effective = "2025-07-01", file = "meta/rates-usd-2025-07.csv" },
//! ]
//!
//! [[meta.tiers]]
//! market = "India"
//! category = "utility"
//! effective = "2025-07-01"
//! tiers = [ { from = 1, to = 750000, rate = "0.0014" }, { from = 750001, rate = "0.0010" } ]
//!
//! [meta.businesses."100000000000001"]
//! waba = "waba-1"
//! time_zone = "Asia/Jakarta"
//! phone_number = "6281100000001"
//! ```

use std::collections::BTreeMap;
use std::path::Path;

use chrono::NaiveDate;
use chrono_tz::Tz;
use rust_decimal::Decimal;
use serde::Deserialize;

use super::markets::MarketTable;
use super::rates::MetaRates;
use super::Category;

/// The WABA time zone of businesses the card does not list (SPEC-meta §1).
pub const DEFAULT_TIME_ZONE: Tz = chrono_tz::America::Los_Angeles;

/// The first day Meta pricing covers (conversation-based pricing as SPEC-meta states it).
/// The end of the name of an account's default WABA: `ACCOUNT/default`.
pub const DEFAULT_WABA: &str = "/default";

pub const CBP_FROM: NaiveDate = match NaiveDate::from_ymd_opt(2023, 6, 1) {
    Some(day) => day,
    None => panic!("a day"),
};

/// The first day of per-message pricing: under `auto`, the switch, at midnight in each WABA's
/// zone.
pub const PMP_FROM: NaiveDate = match NaiveDate::from_ymd_opt(2025, 7, 1) {
    Some(day) => day,
    None => panic!("a day"),
};

/// The `[meta]` section as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct MetaFile {
    model: Option<String>,
    time_zone: Option<String>,
    rate_cards: Vec<RateCardFile>,
    #[serde(default)]
    tiers: Vec<TierTableFile>,
    #[serde(default)]
    businesses: BTreeMap<String, BusinessFile>,
    /// A market table of its own instead of the built-in one.
    markets: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RateCardFile {
    effective: NaiveDate,
    file: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TierTableFile {
    market: String,
    category: String,
    effective: NaiveDate,
    tiers: Vec<TierFile>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TierFile {
    from: u64,
    to: Option<u64>,
    rate: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct BusinessFile {
    waba: Option<String>,
    time_zone: Option<String>,
    phone_number: Option<String>,
}

/// Which of Meta's models prices a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Model {
    /// Conversation-based pricing before 2025-07-01 (WABA time), per-message pricing from it.
    Auto,
    /// Conversation-based pricing for every message (what-if).
    Cbp2023,
    /// Per-message pricing for every message (what-if).
    Pmp2025,
}

impl Model {
    pub fn name(self) -> &'static str {
        match self {
            Model::Auto => "auto",
            Model::Cbp2023 => "cbp-2023",
            Model::Pmp2025 => "pmp-2025",
        }
    }
}

/// One volume tier: the `from`-th to the `to`-th charged message of a month (inclusive; the
/// top tier may be open), at `rate` each.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tier {
    pub from: u64,
    pub to: Option<u64>,
    pub rate: Decimal,
}

impl Tier {
    /// `from:to`, or `from:MAX` for an open top tier (SPEC-meta §6.6).
    pub fn label(&self) -> String {
        match self.to {
            Some(to) => format!("{}:{to}", self.from),
            None => format!("{}:MAX", self.from),
        }
    }
}

/// The volume tiers of one market and category, from a day on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TierTable {
    pub market: String,
    pub category: Category,
    pub effective: NaiveDate,
    pub tiers: Vec<Tier>,
}

/// What the card says of one business (a phone-number id).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Business {
    /// Its WABA; unset, the account's default WABA (SPEC-meta §6.3).
    pub waba: Option<String>,
    pub time_zone: Option<Tz>,
    /// Its display number, as Meta's analytics name it.
    pub phone_number: Option<String>,
}

/// A checked `[meta]` section, with Meta's rate cards and the market table read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetaConfig {
    pub model: Model,
    /// The WABA time zone of businesses not listed.
    pub time_zone: Tz,
    /// Sorted by effective day.
    pub rate_cards: Vec<MetaRates>,
    /// Sorted by market, category, then effective day.
    pub tiers: Vec<TierTable>,
    pub businesses: BTreeMap<String, Business>,
    pub markets: MarketTable,
    /// The files the section reads (the markets table, if any, then the rate cards by
    /// effective day): their paths as the card names them, and SHA-256.
    pub files: Vec<MetaFileHash>,
}

/// A file `[meta]` reads, for the manifest and the card's SHA-256.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct MetaFileHash {
    pub path: String,
    pub sha256: String,
}

fn hash_of(path: &str, text: &str) -> MetaFileHash {
    use sha2::Digest;
    MetaFileHash {
        path: path.to_string(),
        sha256: hex::encode(sha2::Sha256::digest(text.as_bytes())),
    }
}

impl MetaConfig {
    /// What the section says of the days up to `last`, for a nightly history's fingerprint:
    /// a Meta rate card, tier table or market that takes effect later leaves it unchanged (a
    /// rate with more decimal places does not: every rate is written at [`MetaConfig::scale`]).
    pub fn history_json(&self, last: NaiveDate) -> serde_json::Value {
        use serde_json::json;
        let businesses: BTreeMap<&str, serde_json::Value> = self
            .businesses
            .iter()
            .map(|(id, b)| {
                let zone = b.time_zone.map(|z| z.name());
                (id.as_str(), json!({ "waba": b.waba, "time_zone": zone }))
            })
            .collect();
        let rate_cards: Vec<serde_json::Value> = self
            .rate_cards
            .iter()
            .filter(|c| c.effective <= last)
            .map(|c| {
                let markets: BTreeMap<&str, Vec<Option<String>>> = c
                    .markets
                    .iter()
                    .map(|(m, rates)| {
                        (
                            m.as_str(),
                            rates.iter().map(|r| r.map(|r| r.to_string())).collect(),
                        )
                    })
                    .collect();
                json!({ "effective": c.effective, "currency": c.currency, "markets": markets })
            })
            .collect();
        let tiers: Vec<serde_json::Value> = self
            .tiers
            .iter()
            .filter(|t| t.effective <= last)
            .map(|t| {
                let tiers: Vec<(u64, Option<u64>, String)> =
                    t.tiers.iter().map(|x| (x.from, x.to, x.rate.to_string())).collect();
                json!({ "market": t.market, "category": t.category.name(), "effective": t.effective, "tiers": tiers })
            })
            .collect();
        json!({
            "model": self.model.name(),
            "time_zone": self.time_zone.name(),
            "scale": self.scale(),
            "businesses": businesses,
            "rate_cards": rate_cards,
            "tiers": tiers,
            "markets": self.markets.history_json(last),
        })
    }

    /// The WABA time zone of `business_id`.
    pub fn time_zone_of(&self, business_id: &str) -> Tz {
        self.businesses
            .get(business_id)
            .and_then(|b| b.time_zone)
            .unwrap_or(self.time_zone)
    }

    /// The WABA of `business_id` of `account_id`: the card's, or else the account's default
    /// WABA, which holds every business of the account the card does not place (SPEC-meta
    /// §6.3), named after the account.
    pub fn waba_of(&self, account_id: &str, business_id: &str) -> String {
        match self
            .businesses
            .get(business_id)
            .and_then(|b| b.waba.as_deref())
        {
            Some(waba) => waba.to_string(),
            None => format!("{account_id}{DEFAULT_WABA}"),
        }
    }

    /// The instant (UTC nanoseconds) from which `business_id`'s messages are priced by
    /// message: midnight of 2025-07-01 in its WABA's zone under `auto`; never under
    /// `cbp-2023`, always under `pmp-2025`.
    pub fn switch_of(&self, business_id: &str) -> i64 {
        match self.model {
            Model::Auto => crate::rates::local_midnight(PMP_FROM, self.time_zone_of(business_id)),
            Model::Cbp2023 => i64::MAX,
            Model::Pmp2025 => i64::MIN,
        }
    }

    /// Refuses a message before 2023-06-01 in its WABA's zone: Meta pricing starts there.
    pub fn check_priced(&self, business_id: &str, ns: i64) -> Result<(), String> {
        let tz = self.time_zone_of(business_id);
        if ns < crate::rates::local_midnight(CBP_FROM, tz) {
            return Err(format!(
                "a message of business `{business_id}` at {} is before {CBP_FROM} in its WABA's zone ({}), where Meta pricing starts",
                crate::rates::rfc3339_in(ns, chrono_tz::UTC),
                tz.name()
            ));
        }
        Ok(())
    }

    /// Decimal places of Meta's rates and costs in the outputs: the most any rate of the
    /// cards or tier tables has, at least 4.
    pub fn scale(&self) -> u32 {
        let cards = self
            .rate_cards
            .iter()
            .flat_map(|c| c.markets.values().flatten().flatten());
        let tiers = self
            .tiers
            .iter()
            .flat_map(|t| t.tiers.iter().map(|t| &t.rate));
        cards.chain(tiers).map(|r| r.scale()).fold(4, u32::max)
    }

    /// The rate card in force on `day` (in the WABA's zone): the latest whose effective day
    /// is on or before it (SPEC-meta §6.9).
    pub fn rate_card_on(&self, day: NaiveDate) -> Option<&MetaRates> {
        self.rate_cards.iter().rev().find(|c| c.effective <= day)
    }

    /// The tier table of `market` and `category` in force on `day`, if any.
    pub fn tiers_on(&self, market: &str, category: Category, day: NaiveDate) -> Option<&TierTable> {
        self.tiers
            .iter()
            .rev()
            .find(|t| t.market == market && t.category == category && t.effective <= day)
    }
}

/// Checks the section; files are read relative to the folder of the card (`dir`). Errors are
/// the reasons the card is not valid.
pub(crate) fn check(file: MetaFile, dir: &Path) -> Result<MetaConfig, String> {
    let model = match file.model.as_deref().unwrap_or("auto") {
        "auto" => Model::Auto,
        "cbp-2023" => Model::Cbp2023,
        "pmp-2025" => Model::Pmp2025,
        other => {
            return Err(format!(
                "[meta] model `{other}` is not one of `auto`, `cbp-2023`, `pmp-2025`"
            ))
        }
    };
    let time_zone = match &file.time_zone {
        Some(name) => crate::rates::time_zone(name, "[meta]")?,
        None => DEFAULT_TIME_ZONE,
    };
    let time_zone_default = time_zone;
    let mut files = Vec::new();
    let markets = match &file.markets {
        Some(name) => {
            let path = dir.join(name);
            let text = std::fs::read_to_string(&path)
                .map_err(|e| format!("[meta] markets: cannot read `{}`: {e}", path.display()))?;
            files.push(hash_of(name, &text));
            MarketTable::parse(&text, &path).map_err(|e| e.to_string())?
        }
        None => MarketTable::built_in(),
    };
    if file.rate_cards.is_empty() {
        return Err(
            "[meta] rate_cards is empty: name at least one of Meta's rate card files".into(),
        );
    }
    let mut rate_cards = Vec::with_capacity(file.rate_cards.len());
    let mut card_files = Vec::with_capacity(file.rate_cards.len());
    for card in &file.rate_cards {
        let path = dir.join(&card.file);
        let text = std::fs::read_to_string(&path).map_err(|e| {
            format!(
                "[meta] rate card effective {}: cannot read `{}`: {e}",
                card.effective,
                path.display()
            )
        })?;
        let rates = super::rates::parse(&text, Path::new(&card.file), &path, card.effective)
            .map_err(|e| e.to_string())?;
        card_files.push((card.effective, hash_of(&card.file, &text)));
        rate_cards.push(rates);
    }
    rate_cards.sort_by_key(|c| c.effective);
    card_files.sort_by_key(|(effective, _)| *effective);
    files.extend(card_files.into_iter().map(|(_, file)| file));
    for pair in rate_cards.windows(2) {
        if pair[0].effective == pair[1].effective {
            return Err(format!(
                "[meta] has two rate cards effective on {}",
                pair[0].effective
            ));
        }
    }
    let mut tiers = Vec::with_capacity(file.tiers.len());
    for table in file.tiers {
        let at = format!(
            "[[meta.tiers]] {} / {} from {}",
            table.market, table.category, table.effective
        );
        let category = Category::parse(&table.category)
            .filter(|c| *c != Category::Marketing && *c != Category::Service)
            .ok_or_else(|| {
                format!(
                    "{at}: volume tiers are for `utility` and `authentication`, not `{}`",
                    table.category
                )
            })?;
        if !markets.markets().contains(table.market.as_str()) {
            return Err(format!(
                "{at}: market `{}` is not in the market table `{}`",
                table.market,
                markets.source.display()
            ));
        }
        let mut checked: Vec<Tier> = Vec::with_capacity(table.tiers.len());
        for (i, tier) in table.tiers.iter().enumerate() {
            let expected = checked
                .last()
                .map_or(Some(1), |t: &Tier| t.to.map(|to| to + 1));
            if Some(tier.from) != expected {
                return Err(match expected {
                    Some(expected) => format!(
                        "{at}: tier {} starts at {}; expected {expected} (tiers start at 1 and follow each other without a gap)",
                        i + 1,
                        tier.from
                    ),
                    None => format!("{at}: only the last tier may leave out `to`"),
                });
            }
            if tier.to.is_some_and(|to| to < tier.from) {
                return Err(format!("{at}: tier {} ends before it starts", i + 1));
            }
            let rate: Decimal = tier.rate.parse().map_err(|_| {
                format!(
                    "{at}: tier {} has rate `{}`, not a decimal",
                    i + 1,
                    tier.rate
                )
            })?;
            if rate.is_sign_negative() {
                return Err(format!("{at}: tier {} has a negative rate {rate}", i + 1));
            }
            crate::rates::check_rate_digits(rate)
                .map_err(|reason| format!("{at}: tier {}: {reason}", i + 1))?;
            checked.push(Tier {
                from: tier.from,
                to: tier.to,
                rate,
            });
        }
        if checked.is_empty() {
            return Err(format!("{at}: no tiers"));
        }
        tiers.push(TierTable {
            market: table.market,
            category,
            effective: table.effective,
            tiers: checked,
        });
    }
    tiers.sort_by(|a, b| {
        (&a.market, a.category, a.effective).cmp(&(&b.market, b.category, b.effective))
    });
    for pair in tiers.windows(2) {
        if (&pair[0].market, pair[0].category, pair[0].effective)
            == (&pair[1].market, pair[1].category, pair[1].effective)
        {
            return Err(format!(
                "[[meta.tiers]] {} / {} has two tables effective on {}",
                pair[0].market,
                pair[0].category.name(),
                pair[0].effective
            ));
        }
    }
    let mut businesses = BTreeMap::new();
    for (id, business) in file.businesses {
        let whose = format!("[meta.businesses.\"{id}\"]");
        if let Some(number) = &business.phone_number {
            if !super::markets::is_phone_number(number) {
                return Err(format!(
                    "{whose}: phone_number `{number}` is not 6 to 15 digits (E.164 without `+`)"
                ));
            }
        }
        if business.waba.as_deref().is_some_and(str::is_empty) {
            return Err(format!("{whose}: waba is empty"));
        }
        let time_zone = business
            .time_zone
            .as_deref()
            .map(|name| crate::rates::time_zone(name, &whose))
            .transpose()?;
        if let Some(waba) = business
            .waba
            .as_deref()
            .filter(|w| w.ends_with(DEFAULT_WABA))
        {
            return Err(format!(
                "{whose}: waba `{waba}` ends in `{DEFAULT_WABA}`, which names an account's default WABA (the businesses the card does not place); give the business a WABA of its own or leave `waba` out"
            ));
        }
        // An account's default WABA has the section's zone: a business in another zone is in
        // a WABA of its own.
        if business.waba.is_none() && time_zone.is_some_and(|z| z != time_zone_default) {
            return Err(format!(
                "{whose}: time_zone `{}` without a waba: the business would be in its account's default WABA, whose zone is `{}`; a WABA has one zone, so give it a `waba`",
                time_zone.expect("checked").name(),
                time_zone_default.name()
            ));
        }
        businesses.insert(
            id,
            Business {
                waba: business.waba,
                time_zone,
                phone_number: business.phone_number,
            },
        );
    }
    // A WABA has one zone: its businesses agree.
    let mut zones: BTreeMap<&str, (&str, Tz)> = BTreeMap::new();
    for (id, business) in &businesses {
        let Some(waba) = business.waba.as_deref() else {
            continue;
        };
        let zone = business.time_zone.unwrap_or(time_zone_default);
        match zones.get(waba) {
            Some((other, other_zone)) if *other_zone != zone => {
                return Err(format!(
                    "[meta.businesses]: WABA `{waba}` has businesses in two time zones (`{other}` in `{}`, `{id}` in `{}`); a WABA has one zone",
                    other_zone.name(),
                    zone.name()
                ));
            }
            _ => {
                zones.insert(waba, (id, zone));
            }
        }
    }
    Ok(MetaConfig {
        model,
        time_zone,
        rate_cards,
        tiers,
        businesses,
        markets,
        files,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A card with `meta` as its `[meta]` section, in a folder with Meta's sample rate card.
    fn card(meta: &str) -> Result<crate::rates::RateCard, String> {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("meta")).unwrap();
        std::fs::copy(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("sample-data/meta/rates-usd-2023-06.csv"),
            dir.path().join("meta/rates-usd-2023-06.csv"),
        )
        .unwrap();
        let text = format!(
            "default_plan = \"p\"\n[plans.p]\ncurrency = \"USD\"\n[[plans.p.versions]]\neffective = \"2023-01-01\"\nincluded_quota = 0\nunit_price = \"0\"\n{meta}"
        );
        crate::rates::parse(&text, &dir.path().join("rates.toml")).map_err(|e| e.to_string())
    }

    const RATES: &str =
        "rate_cards = [ { effective = \"2023-06-01\", file = \"meta/rates-usd-2023-06.csv\" } ]\n";

    #[test]
    fn the_issues_example_section_is_read() {
        let card = card(&format!(
            "[meta]\nmodel = \"auto\"\ntime_zone = \"America/Los_Angeles\"\n{RATES}\n[[meta.tiers]]\nmarket = \"India\"\ncategory = \"utility\"\neffective = \"2025-07-01\"\ntiers = [ {{ from = 1, to = 750000, rate = \"0.0014\" }}, {{ from = 750001, rate = \"0.0010\" }} ]\n\n[meta.businesses.\"100000000000001\"]\nwaba = \"waba-1\"\ntime_zone = \"Asia/Jakarta\"\nphone_number = \"6281100000001\"\n"
        ))
        .unwrap();
        let meta = card.meta.unwrap();
        assert_eq!(meta.model, Model::Auto);
        assert_eq!(
            meta.time_zone_of("100000000000001"),
            chrono_tz::Asia::Jakarta
        );
        assert_eq!(
            meta.time_zone_of("elsewhere"),
            chrono_tz::America::Los_Angeles
        );
        let day = |d: &str| d.parse::<NaiveDate>().unwrap();
        assert!(meta.rate_card_on(day("2023-05-31")).is_none());
        assert_eq!(
            meta.rate_card_on(day("2024-01-01")).unwrap().currency,
            "USD"
        );
        let india = meta
            .tiers_on("India", Category::Utility, day("2025-07-01"))
            .unwrap();
        let labels: Vec<String> = india.tiers.iter().map(Tier::label).collect();
        assert_eq!(labels, ["1:750000", "750001:MAX"]);
        assert!(meta
            .tiers_on("India", Category::Utility, day("2025-06-30"))
            .is_none());
        assert_eq!(
            meta.businesses["100000000000001"].waba.as_deref(),
            Some("waba-1")
        );
    }

    #[test]
    fn the_switch_is_midnight_of_1_july_2025_in_each_wabas_zone() {
        let section = |model: &str| {
            card(&format!(
                "[meta]\nmodel = \"{model}\"\n{RATES}[meta.businesses.\"jkt\"]\ntime_zone = \"Asia/Jakarta\"\nwaba = \"w-1\"\n"
            ))
            .unwrap()
            .meta
            .unwrap()
        };
        let ns = |text: &str| {
            chrono::DateTime::parse_from_rfc3339(text)
                .unwrap()
                .timestamp_nanos_opt()
                .unwrap()
        };
        let auto = section("auto");
        assert_eq!(auto.switch_of("jkt"), ns("2025-06-30T17:00:00Z"));
        // Businesses not listed: Los Angeles, in daylight saving time on 1 July.
        assert_eq!(auto.switch_of("other"), ns("2025-07-01T07:00:00Z"));
        assert_eq!(section("cbp-2023").switch_of("jkt"), i64::MAX);
        assert_eq!(section("pmp-2025").switch_of("jkt"), i64::MIN);
        // WABAs: the card's, or the account's default one.
        assert_eq!(auto.waba_of("acct-1", "jkt"), "w-1");
        assert_eq!(auto.waba_of("acct-1", "other"), "acct-1/default");
        // Before 1 June 2023 in the WABA's zone, nothing is priced.
        assert!(auto.check_priced("jkt", ns("2023-05-31T17:00:00Z")).is_ok());
        let refused = auto
            .check_priced("jkt", ns("2023-05-31T16:59:59Z"))
            .unwrap_err();
        assert_eq!(
            refused,
            "a message of business `jkt` at 2023-05-31T16:59:59Z is before 2023-06-01 in its WABA's zone (Asia/Jakarta), where Meta pricing starts"
        );
    }

    #[test]
    fn a_card_without_the_section_has_no_meta_pricing() {
        assert!(card("").unwrap().meta.is_none());
    }

    #[test]
    fn a_bad_section_is_refused_with_what_is_wrong() {
        let bad = |meta: &str| card(meta).unwrap_err();
        assert!(bad(&format!("[meta]\nmodel = \"cbp\"\n{RATES}"))
            .contains("[meta] model `cbp` is not one of `auto`, `cbp-2023`, `pmp-2025`"));
        assert!(bad(&format!("[meta]\ntime_zone = \"Mars/Base\"\n{RATES}"))
            .contains("[meta] has unknown time zone `Mars/Base`"));
        assert!(bad("[meta]\nrate_cards = []\n").contains("rate_cards is empty"));
        let missing = bad(
            "[meta]\nrate_cards = [ { effective = \"2023-06-01\", file = \"meta/nope.csv\" } ]\n",
        );
        assert!(
            missing.contains("[meta] rate card effective 2023-06-01: cannot read `")
                && missing.contains("meta/nope.csv"),
            "{missing}"
        );
        let tier = |category: &str, market: &str, tiers: &str| {
            bad(&format!("[meta]\n{RATES}[[meta.tiers]]\nmarket = \"{market}\"\ncategory = \"{category}\"\neffective = \"2025-07-01\"\ntiers = [ {tiers} ]\n"))
        };
        let one = "{ from = 1, rate = \"0.01\" }";
        assert!(tier("marketing", "India", one)
            .contains("volume tiers are for `utility` and `authentication`, not `marketing`"));
        assert!(tier("utility", "Atlantis", one)
            .contains("market `Atlantis` is not in the market table `built-in`"));
        assert!(tier("utility", "India", "{ from = 2, rate = \"0.01\" }")
            .contains("tier 1 starts at 2; expected 1"));
        assert!(tier(
            "utility",
            "India",
            "{ from = 1, to = 10, rate = \"0.01\" }, { from = 12, rate = \"0.01\" }"
        )
        .contains("tier 2 starts at 12; expected 11"));
        assert!(tier(
            "utility",
            "India",
            "{ from = 1, rate = \"0.01\" }, { from = 2, rate = \"0.01\" }"
        )
        .contains("only the last tier may leave out `to`"));
        assert!(tier("utility", "India", "{ from = 1, rate = \"cheap\" }")
            .contains("tier 1 has rate `cheap`, not a decimal"));
        assert!(bad(&format!(
            "[meta]\n{RATES}[meta.businesses.\"1\"]\nphone_number = \"+62811\"\n"
        ))
        .contains("phone_number `+62811` is not 6 to 15 digits"));
        assert!(
            bad(&format!("[meta]\n{RATES}colour = \"blue\"\n")).contains("unknown field `colour`")
        );
    }
}
