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
    /// Each country's markets from days up to `last` ([`super::config::MetaConfig::history_json`]).
    pub fn history_json(&self, last: NaiveDate) -> serde_json::Value {
        let countries: BTreeMap<&str, Vec<(NaiveDate, &str)>> = self
            .countries
            .iter()
            .map(|(country, days)| {
                let days = days
                    .iter()
                    .filter(|(from, _)| *from <= last)
                    .map(|(from, market)| (*from, market.as_str()))
                    .collect();
                (country.as_str(), days)
            })
            .collect();
        serde_json::json!(countries)
    }

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

/// Whether `text` is 6 to 15 digits, the first not 0: an E.164 number without `+` (no
/// calling code starts with 0; `0812...` is a number written the local way).
pub fn is_phone_number(text: &str) -> bool {
    (6..=15).contains(&text.len())
        && text.bytes().all(|b| b.is_ascii_digit())
        && !text.starts_with('0')
}

/// The country (ISO 3166 alpha-2) of a WhatsApp `user_id`: the digits of an E.164 number
/// without `+`. The region libphonenumber gives the number; for a number no region claims,
/// its calling code's main country; `Ok(None)` for a calling code no country has.
pub fn country_of(user_id: &str) -> Result<Option<String>, NotAPhoneNumber> {
    if !is_phone_number(user_id) {
        return Err(NotAPhoneNumber::NotDigits);
    }
    match sole_country(user_id) {
        Some(country) => Ok(Some(country.to_string())),
        None => Ok(country_by_parsing(user_id)),
    }
}

/// [`country_of`] for many numbers: a calling code several countries share (+1, +7, +44...)
/// parses a number of each prefix and length once. Those countries are told apart by the
/// first six digits after the calling code (the area code and exchange of +1; Mayotte's
/// +262 639 xx from Réunion's +262 639 yy); the rest of the number does not change them (a
/// test checks this on random numbers of every shared code).
#[derive(Debug)]
pub struct Countries {
    /// By a number's first three digits, which hold its calling code (calling codes are
    /// prefix-free): what the code says, once looked up.
    codes: Vec<Option<CallingCode>>,
    by_prefix: std::collections::HashMap<(u64, usize), Option<u16>>,
    /// The countries met, by their number in [`Countries::name`].
    names: Vec<String>,
}

/// What a calling code says of a number's country.
#[derive(Debug, Clone, Copy)]
struct CallingCode {
    /// Its digits; `None` for digits no country's code starts.
    len: Option<usize>,
    /// The one country that uses it, if only one does.
    sole: Option<u16>,
}

impl Default for Countries {
    fn default() -> Self {
        Countries {
            codes: vec![None; 1000],
            by_prefix: Default::default(),
            names: Vec::new(),
        }
    }
}

/// Digits after the calling code that decide a number's country among those sharing it.
const DECIDING_DIGITS: usize = 6;

impl Countries {
    /// The number of the country of `user_id` ([`country_of`]), for [`Countries::name`].
    pub fn country_of(&mut self, user_id: &str) -> Result<Option<u16>, NotAPhoneNumber> {
        if !is_phone_number(user_id) {
            return Err(NotAPhoneNumber::NotDigits);
        }
        let first: usize = user_id[..3].parse().expect("digits");
        let code = match self.codes[first] {
            Some(code) => code,
            None => {
                let len = calling_code_len(user_id);
                let sole = sole_country(user_id).map(|c| self.number_of(c));
                let code = CallingCode { len, sole };
                self.codes[first] = Some(code);
                code
            }
        };
        let Some(len) = code.len else {
            return Ok(None);
        };
        if code.sole.is_some() {
            return Ok(code.sole);
        }
        let prefix = &user_id[..user_id.len().min(len + DECIDING_DIGITS)];
        let key = (prefix.parse().expect("digits"), user_id.len());
        if let Some(country) = self.by_prefix.get(&key) {
            return Ok(*country);
        }
        let country = country_by_parsing(user_id).map(|c| self.number_of(&c));
        self.by_prefix.insert(key, country);
        Ok(country)
    }

    /// The ISO 3166 code of a country [`Countries::country_of`] gave.
    pub fn name(&self, country: u16) -> &str {
        &self.names[country as usize]
    }

    fn number_of(&mut self, name: &str) -> u16 {
        match self.names.iter().position(|n| n == name) {
            Some(i) => i as u16,
            None => {
                self.names.push(name.to_string());
                (self.names.len() - 1) as u16
            }
        }
    }
}

/// The country of a number whose calling code only one country uses (most of them): the
/// country libphonenumber gives the number, or for a number it does not hold valid, the
/// calling code's main country, which is the same one. Parsing the number is what costs.
fn sole_country(digits: &str) -> Option<&'static str> {
    let mut countries = countries_of_code(digits)?.into_iter();
    let first = countries.next()?;
    countries.next().is_none().then_some(first)
}

/// The countries of the number's calling code (calling codes are prefix-free), the main one
/// first; `None` for a calling code no country has.
fn countries_of_code(digits: &str) -> Option<Vec<&'static str>> {
    let len = calling_code_len(digits)?;
    let code: u16 = digits[..len].parse().ok()?;
    let regions = phonenumber::metadata::DATABASE.region(&code)?;
    Some(regions.into_iter().filter(|r| *r != "001").collect())
}

/// The number of digits of the number's calling code, if it has one.
fn calling_code_len(digits: &str) -> Option<usize> {
    (1..=3).find(|len| {
        digits
            .get(..*len)
            .and_then(|code| code.parse::<u16>().ok())
            .is_some_and(|code| phonenumber::metadata::DATABASE.region(&code).is_some())
    })
}

/// [`country_of`] by parsing the number with libphonenumber. A number it cannot parse (too
/// short for its country) takes its calling code's main country too.
fn country_by_parsing(user_id: &str) -> Option<String> {
    let Ok(number) = phonenumber::parse(None, format!("+{user_id}")) else {
        return countries_of_code(user_id)?.first().map(|c| c.to_string());
    };
    if let Some(id) = number.country().id() {
        return Some(id.as_ref().to_string());
    }
    let code = number.country().code();
    phonenumber::metadata::DATABASE
        .region(&code)
        .and_then(|regions| regions.into_iter().find(|r| *r != "001"))
        .map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn day(text: &str) -> NaiveDate {
        text.parse().unwrap()
    }

    #[test]
    fn a_calling_code_of_one_country_gives_what_parsing_gives() {
        // Numbers of 6 to 15 digits under every calling code from 1 to 999, of several
        // lengths and leading digits.
        let mut checked = 0;
        for code in 1..1000u32 {
            for rest in [
                "0000",
                "1234567",
                "2025550123",
                "98765432109",
                "55512345678901",
            ] {
                let number = format!("{code}{rest}");
                if !is_phone_number(&number) {
                    continue;
                }
                if let Some(country) = sole_country(&number) {
                    assert_eq!(
                        Some(country.to_string()),
                        country_by_parsing(&number),
                        "{number}"
                    );
                    checked += 1;
                }
            }
        }
        assert!(checked > 500, "{checked}");
    }

    #[test]
    fn numbers_of_a_shared_calling_code_are_told_apart_by_their_first_digits() {
        use rand::{RngExt, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
        let mut countries = Countries::default();
        let mut checked = 0;
        for code in 1..1000u32 {
            let digits = code.to_string();
            if countries_of_code(&digits).is_none_or(|c| c.len() < 2) {
                continue;
            }
            // Random first digits, each with several random rests of a few lengths.
            for _ in 0..150 {
                let mut prefix = digits.clone();
                while prefix.len() < digits.len() + DECIDING_DIGITS {
                    prefix.push(char::from(b'0' + rng.random_range(0..10u8)));
                }
                for _ in 0..6 {
                    let len = rng.random_range(10..=12usize);
                    let mut number = prefix.clone();
                    while number.len() < len {
                        number.push(char::from(b'0' + rng.random_range(0..10u8)));
                    }
                    let country = countries.country_of(&number).unwrap();
                    assert_eq!(
                        country.map(|c| countries.name(c).to_string()),
                        country_by_parsing(&number),
                        "{number}"
                    );
                    checked += 1;
                }
            }
        }
        assert!(checked > 4000, "{checked}");
    }

    #[test]
    fn regions_the_table_does_not_list_are_other() {
        let table = MarketTable::built_in();
        let day = day("2025-08-01");
        for (number, country) in [
            ("447797123456", "JE"),
            ("358181234567", "AX"),
            ("12423221234", "BS"),
        ] {
            let found = country_of(number).unwrap();
            assert_eq!(found.as_deref(), Some(country), "{number}");
            assert_eq!(table.market(found.as_deref(), day), OTHER, "{number}");
        }
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
