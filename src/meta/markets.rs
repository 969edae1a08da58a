//! The user's market (SPEC-meta §1, §4): the country of the WhatsApp number, as
//! libphonenumber gives it (the `phonenumber` crate), then that country's market in Meta's
//! table, which changes on given days. Built in as data ([`BUILT_IN`]); a card may name its
//! own table.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use chrono::NaiveDate;

/// Meta's table as of late 2025, built into the program: `country,name,market,effective`.
pub const BUILT_IN: &str = include_str!("markets.csv");

/// The market of a country Meta's table does not list.
pub const OTHER: &str = "Other";

/// Meta's markets: for each country, the market it is in from each day on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MarketTable {
    /// Where it was read from, or `built-in`.
    pub source: PathBuf,
    /// Country → (first day, market), sorted by day.
    countries: BTreeMap<String, Vec<(NaiveDate, String)>>,
}

/// What is wrong with a market table: its path, line and value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("market table `{}`, line {line}: {reason}", path.display())]
pub struct MarketTableError {
    pub path: PathBuf,
    pub line: u64,
    pub reason: String,
}

impl MarketTable {
    /// The table built into the program.
    pub fn built_in() -> MarketTable {
        MarketTable::parse(BUILT_IN, Path::new("built-in")).expect("the built-in table is valid")
    }

    /// Reads a table: `country,name,market,effective` after `#` comment lines; `name` is for
    /// people. Two rows of one country on one day are refused.
    pub fn parse(text: &str, source: &Path) -> Result<MarketTable, MarketTableError> {
        let mut reader = csv::ReaderBuilder::new()
            .comment(Some(b'#'))
            .from_reader(text.as_bytes());
        let error = |line: u64, reason: String| MarketTableError {
            path: source.to_path_buf(),
            line,
            reason,
        };
        let headers = reader
            .headers()
            .map_err(|e| error(1, e.to_string()))?
            .clone();
        let column = |name: &str| {
            headers
                .iter()
                .position(|h| h.trim() == name)
                .ok_or_else(|| {
                    error(
                        1,
                        format!("no `{name}` column (expected `country,name,market,effective`)"),
                    )
                })
        };
        let (country_at, market_at, effective_at) =
            (column("country")?, column("market")?, column("effective")?);
        let mut countries: BTreeMap<String, Vec<(NaiveDate, String)>> = BTreeMap::new();
        for record in reader.records() {
            let record =
                record.map_err(|e| error(e.position().map_or(0, |p| p.line()), e.to_string()))?;
            let line = record.position().map_or(0, |p| p.line());
            let cell = |i: usize| record.get(i).unwrap_or("").trim();
            let country = cell(country_at);
            if country.len() != 2 || !country.chars().all(|c| c.is_ascii_uppercase()) {
                return Err(error(
                    line,
                    format!("country `{country}` is not an ISO 3166 alpha-2 code such as `ID`"),
                ));
            }
            let market = cell(market_at);
            if market.is_empty() {
                return Err(error(line, format!("country `{country}` has no market")));
            }
            let effective: NaiveDate = cell(effective_at).parse().map_err(|_| {
                error(
                    line,
                    format!(
                        "effective `{}` is not a day (YYYY-MM-DD)",
                        cell(effective_at)
                    ),
                )
            })?;
            let days = countries.entry(country.to_string()).or_default();
            if days.iter().any(|(day, _)| *day == effective) {
                return Err(error(
                    line,
                    format!("country `{country}` has two markets from {effective}"),
                ));
            }
            days.push((effective, market.to_string()));
            days.sort();
        }
        Ok(MarketTable {
            source: source.to_path_buf(),
            countries,
        })
    }

    /// The market of `country` on `day` (in the WABA's zone): [`OTHER`] for a country not
    /// listed, or listed only from a later day.
    pub fn market(&self, country: Option<&str>, day: NaiveDate) -> &str {
        country
            .and_then(|c| self.countries.get(c))
            .and_then(|days| days.iter().rev().find(|(from, _)| *from <= day))
            .map_or(OTHER, |(_, market)| market.as_str())
    }

    /// Every market the table names, [`OTHER`] among them.
    pub fn markets(&self) -> std::collections::BTreeSet<&str> {
        self.countries
            .values()
            .flatten()
            .map(|(_, market)| market.as_str())
            .chain([OTHER])
            .collect()
    }
}

/// Why a WhatsApp `user_id` has no country.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotAPhoneNumber {
    /// Not 6 to 15 digits (SPEC-meta §1: the reject reason `not_a_phone_number`).
    NotDigits,
}

/// Whether `text` is 6 to 15 digits: an E.164 number without `+`.
pub fn is_phone_number(text: &str) -> bool {
    (6..=15).contains(&text.len()) && text.bytes().all(|b| b.is_ascii_digit())
}

/// The country (ISO 3166 alpha-2) of a WhatsApp `user_id`: the digits of an E.164 number
/// without `+`. The region libphonenumber gives the number; for a number no region claims,
/// its calling code's main country; `Ok(None)` for a calling code no country has.
pub fn country_of(user_id: &str) -> Result<Option<String>, NotAPhoneNumber> {
    if !is_phone_number(user_id) {
        return Err(NotAPhoneNumber::NotDigits);
    }
    let Ok(number) = phonenumber::parse(None, format!("+{user_id}")) else {
        return Ok(None);
    };
    if let Some(id) = number.country().id() {
        return Ok(Some(id.as_ref().to_string()));
    }
    let code = number.country().code();
    Ok(phonenumber::metadata::DATABASE
        .region(&code)
        .and_then(|regions| regions.into_iter().find(|r| *r != "001"))
        .map(str::to_string))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn day(text: &str) -> NaiveDate {
        text.parse().unwrap()
    }

    #[test]
    fn numbers_give_their_countries() {
        let country = |n: &str| country_of(n).unwrap();
        assert_eq!(country("6281100000001").as_deref(), Some("ID"));
        assert_eq!(country("919876543210").as_deref(), Some("IN"));
        assert_eq!(country("5511987654321").as_deref(), Some("BR"));
        assert_eq!(country("5215512345678").as_deref(), Some("MX"));
        assert_eq!(country("14155552671").as_deref(), Some("US"));
        assert_eq!(country("16135550123").as_deref(), Some("CA"));
        // +1 numbers of the Caribbean are their own countries.
        assert_eq!(country("18095551234").as_deref(), Some("DO"));
        assert_eq!(country("18295551234").as_deref(), Some("DO"));
        assert_eq!(country("18495551234").as_deref(), Some("DO"));
        assert_eq!(country("18765551234").as_deref(), Some("JM"));
        assert_eq!(country("16585551234").as_deref(), Some("JM"));
        assert_eq!(country("17875551234").as_deref(), Some("PR"));
        assert_eq!(country("19395551234").as_deref(), Some("PR"));
        assert_eq!(country("447400123456").as_deref(), Some("GB"));
        // libphonenumber puts +44 7911 1 in Guernsey, which Meta's table does not list.
        assert_eq!(country("447911123456").as_deref(), Some("GG"));
        assert_eq!(country("263771234567").as_deref(), Some("ZW"));
    }

    #[test]
    fn a_number_no_region_claims_takes_its_codes_main_country() {
        // +1 555 is no area code any region claims: the United States, +1's main country.
        assert_eq!(country_of("15555550123").unwrap().as_deref(), Some("US"));
        // +7 000 ...: Russia, +7's main country (Kazakhstan shares the code).
        assert_eq!(country_of("70001234567").unwrap().as_deref(), Some("RU"));
    }

    #[test]
    fn what_is_not_6_to_15_digits_is_not_a_phone_number() {
        for bad in [
            "12345",
            "1234567890123456",
            "+6281100000001",
            "62 811",
            "abcdefg",
            "",
        ] {
            assert_eq!(country_of(bad), Err(NotAPhoneNumber::NotDigits), "{bad}");
        }
    }

    #[test]
    fn the_built_in_table_gives_each_country_its_market_on_each_day() {
        let table = MarketTable::built_in();
        let on = |country: &str, d: &str| table.market(Some(country), day(d)).to_string();
        assert_eq!(on("ID", "2025-07-01"), "Indonesia");
        assert_eq!(on("US", "2025-07-01"), "North America");
        assert_eq!(on("CA", "2024-01-01"), "North America");
        assert_eq!(on("DO", "2025-07-01"), "Rest of Latin America");
        assert_eq!(on("JM", "2025-07-01"), "Rest of Latin America");
        assert_eq!(on("PR", "2025-07-01"), "Rest of Latin America");
        assert_eq!(on("KE", "2025-07-01"), "Rest of Africa");
        assert_eq!(on("FI", "2025-07-01"), "Rest of Western Europe");
        // Zimbabwe moved from Other to Rest of Africa on 1 October 2025.
        assert_eq!(on("ZW", "2025-09-30"), "Other");
        assert_eq!(on("ZW", "2025-10-01"), "Rest of Africa");
        // Not listed, or no country at all: Other.
        assert_eq!(on("IS", "2025-07-01"), "Other");
        assert_eq!(on("GG", "2025-07-01"), "Other");
        assert_eq!(table.market(None, day("2025-07-01")), "Other");
        // The 24 countries with their own rates, and 8 regions with Other.
        assert_eq!(table.markets().len(), 24 + 8, "{:?}", table.markets());
    }

    #[test]
    fn a_bad_table_is_refused_with_its_line() {
        let bad = |text: &str| {
            MarketTable::parse(text, Path::new("m.csv"))
                .unwrap_err()
                .to_string()
        };
        let header = "country,name,market,effective\n";
        assert_eq!(
            bad(&format!("{header}Indonesia,Indonesia,Indonesia,2023-06-01\n")),
            "market table `m.csv`, line 2: country `Indonesia` is not an ISO 3166 alpha-2 code such as `ID`"
        );
        assert_eq!(
            bad(&format!("{header}ID,Indonesia,Indonesia,June 2023\n")),
            "market table `m.csv`, line 2: effective `June 2023` is not a day (YYYY-MM-DD)"
        );
        assert_eq!(
            bad(&format!(
                "{header}ID,Indonesia,Indonesia,2023-06-01\nID,Indonesia,Other,2023-06-01\n"
            )),
            "market table `m.csv`, line 3: country `ID` has two markets from 2023-06-01"
        );
        assert!(bad("country,market\nID,Indonesia\n").contains("no `effective` column"));
    }
}
