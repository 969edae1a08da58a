//! Meta's rate cards as Meta publishes them: one CSV per currency, with rates per market and
//! category (SPEC-meta §4). A file opens with a preamble line (`Cost per message in USD,
//! effective July 1, 2025`) and note lines, which may have any number of cells; then a header
//! (`Market,Currency,Marketing,Utility,Authentication,Authentication-International,Service`,
//! whose cells may hold quoted line breaks); then a row per market. A rate is a decimal, or
//! `n/a` where Meta charges nothing of that category there (service under per-message
//! pricing). The currency is written as Meta writes it (`$US`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use chrono::NaiveDate;
use rust_decimal::Decimal;

use super::Category;

/// One of Meta's rate cards, in force from its `effective` day (in each WABA's zone).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetaRates {
    pub effective: NaiveDate,
    /// Where it was read from (relative to the rate card that names it, as written there).
    pub file: PathBuf,
    /// ISO 4217 code.
    pub currency: String,
    /// Market name → rate per category (indexed by [`Category::index`]); `None` is `n/a`.
    pub markets: BTreeMap<String, [Option<Decimal>; Category::ALL.len()]>,
}

impl MetaRates {
    /// The rate of `category` in `market`: `None` if the card has no such market, or `n/a`.
    pub fn rate(&self, market: &str, category: Category) -> Option<Decimal> {
        self.markets.get(market)?[category.index()]
    }
}

/// What is wrong with a Meta rate card file: its path, line and cell.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("Meta rate card `{}`{}: {reason}", path.display(), line.map(|l| format!(", line {l}")).unwrap_or_default())]
pub struct MetaRatesError {
    pub path: PathBuf,
    pub line: Option<u64>,
    pub reason: String,
}

/// The category a header cell names: its words, case, hyphens and underscores aside
/// (`Authentication-\nInternational` is `authentication_international`).
fn header_category(cell: &str) -> Option<Category> {
    let words: Vec<String> = cell
        .split(|c: char| c.is_whitespace() || c == '-' || c == '_')
        .filter(|w| !w.is_empty())
        .map(str::to_lowercase)
        .collect();
    Category::ALL
        .into_iter()
        .find(|c| c.name().split('_').eq(words.iter().map(String::as_str)))
}

/// The ISO 4217 code of a currency as Meta writes it.
fn currency_code(cell: &str) -> Option<String> {
    let cell = cell.trim();
    match cell {
        "$US" | "US$" | "$" => Some("USD".into()),
        "€" => Some("EUR".into()),
        "£" => Some("GBP".into()),
        "₹" => Some("INR".into()),
        "Rp" => Some("IDR".into()),
        "A$" | "$AU" => Some("AUD".into()),
        "MX$" | "$MX" => Some("MXN".into()),
        code if code.len() == 3 && code.chars().all(|c| c.is_ascii_alphabetic()) => {
            Some(code.to_ascii_uppercase())
        }
        _ => None,
    }
}

/// Reads a rate card as Meta publishes it. `file` is the path as the rate card wrote it,
/// `path` where it is read from.
pub fn parse(
    text: &str,
    file: &Path,
    path: &Path,
    effective: NaiveDate,
) -> Result<MetaRates, MetaRatesError> {
    let error = |line: Option<u64>, reason: String| MetaRatesError {
        path: path.to_path_buf(),
        line,
        reason,
    };
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .from_reader(text.as_bytes());
    // The header's columns: the market is the first.
    struct Header {
        currency: usize,
        categories: Vec<(usize, Category)>,
    }
    let mut header: Option<Header> = None;
    let mut currency: Option<String> = None;
    let mut markets = BTreeMap::new();
    for record in reader.records() {
        let record = record.map_err(|e| {
            error(
                e.position().map(|p| p.line()),
                format!("not CSV as Meta writes it ({e})"),
            )
        })?;
        let line = record.position().map(|p| p.line());
        let cell = |i: usize| record.get(i).unwrap_or("").trim();
        let Some(Header {
            currency: currency_at,
            categories,
        }) = &header
        else {
            // Before the header: the preamble and notes, read as nothing.
            if cell(0).eq_ignore_ascii_case("market") {
                let mut categories = Vec::new();
                let mut currency_at = None;
                for (i, name) in record.iter().enumerate() {
                    if let Some(category) = header_category(name) {
                        if categories.iter().any(|(_, c)| *c == category) {
                            return Err(error(
                                line,
                                format!("the header names `{}` twice", category.name()),
                            ));
                        }
                        categories.push((i, category));
                    } else if name.trim().eq_ignore_ascii_case("currency") {
                        currency_at = Some(i);
                    }
                }
                let currency_at = currency_at
                    .ok_or_else(|| error(line, "the header has no `Currency` column".into()))?;
                if categories.is_empty() {
                    return Err(error(
                        line,
                        "the header names no category (`Marketing`, `Utility`, `Authentication`, `Authentication-International`, `Service`)".into(),
                    ));
                }
                header = Some(Header {
                    currency: currency_at,
                    categories,
                });
            }
            continue;
        };
        let market = cell(0);
        let rates: Vec<&str> = categories.iter().map(|(i, _)| cell(*i)).collect();
        // A blank line, or a note beneath the table.
        if market.is_empty() || rates.iter().all(|r| r.is_empty()) {
            continue;
        }
        let code = currency_code(cell(*currency_at)).ok_or_else(|| {
            error(
                line,
                format!(
                    "market `{market}` has currency `{}`, which is not one Meta writes (`$US`, or an ISO 4217 code)",
                    cell(*currency_at)
                ),
            )
        })?;
        match &currency {
            Some(known) if *known != code => {
                return Err(error(
                    line,
                    format!("market `{market}` is in {code}, the markets above it in {known}: one file holds one currency"),
                ))
            }
            _ => currency = Some(code),
        }
        let mut row = [None; Category::ALL.len()];
        for ((_, category), text) in categories.iter().zip(&rates) {
            let value = text.trim_start_matches('$');
            row[category.index()] = match value {
                "n/a" | "N/A" | "" => None,
                value => {
                    let rate: Decimal = value.parse().map_err(|_| {
                        error(
                            line,
                            format!(
                                "market `{market}`, {}: `{text}` is neither a rate nor `n/a`",
                                category.name()
                            ),
                        )
                    })?;
                    if rate.is_sign_negative() {
                        return Err(error(
                            line,
                            format!(
                                "market `{market}`, {}: negative rate {rate}",
                                category.name()
                            ),
                        ));
                    }
                    if let Err(reason) = crate::rates::check_rate_digits(rate) {
                        return Err(error(
                            line,
                            format!("market `{market}`, {}: {reason}", category.name()),
                        ));
                    }
                    Some(rate)
                }
            };
        }
        if markets.insert(market.to_string(), row).is_some() {
            return Err(error(line, format!("market `{market}` is listed twice")));
        }
    }
    if header.is_none() {
        return Err(error(
            None,
            "no header line (`Market,Currency,Marketing,...`) was found".into(),
        ));
    }
    let currency = currency.ok_or_else(|| error(None, "the file lists no market".into()))?;
    Ok(MetaRates {
        effective,
        file: file.to_path_buf(),
        currency,
        markets,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(text: &str) -> Result<MetaRates, MetaRatesError> {
        parse(
            text,
            Path::new("meta/r.csv"),
            Path::new("cards/meta/r.csv"),
            "2023-06-01".parse().unwrap(),
        )
    }

    fn rate(text: &str) -> Decimal {
        text.parse().unwrap()
    }

    #[test]
    fn the_sample_card_reads_as_meta_publishes_it() {
        // A preamble with more cells than the header, notes, a header cell with a quoted line
        // break, `$US`, `n/a`, a blank line and a note beneath the table.
        let path =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("sample-data/meta/rates-usd-2023-06.csv");
        let text = std::fs::read_to_string(&path).unwrap();
        let card = read(&text).unwrap();
        assert_eq!(card.currency, "USD");
        assert_eq!(card.markets.len(), 24 + 8);
        // The rates SPEC-meta quotes.
        let indonesia = [
            (Category::Marketing, "0.0411"),
            (Category::Utility, "0.0200"),
            (Category::Authentication, "0.0300"),
            (Category::Service, "0.0190"),
        ];
        for (category, expected) in indonesia {
            assert_eq!(card.rate("Indonesia", category), Some(rate(expected)));
        }
        assert_eq!(
            card.rate("Malaysia", Category::Marketing),
            Some(rate("0.0860"))
        );
        assert_eq!(card.rate("Other", Category::Service), Some(rate("0.0145")));
        assert_eq!(
            card.rate("Indonesia", Category::AuthenticationInternational),
            None
        );
        assert_eq!(card.rate("Atlantis", Category::Marketing), None);
        // Every market of the built-in table has its rates.
        let table = crate::meta::markets::MarketTable::built_in();
        for market in table.markets() {
            assert!(card.markets.contains_key(market), "{market}");
        }
    }

    #[test]
    fn header_cells_are_read_by_their_words() {
        let card = read(
            "Cost per message in USD, effective July 1, 2025,,,,,,,,,\nmarket,CURRENCY,service,authentication_international,Utility\nIndia,USD,n/a,0.0280,$0.0014\n",
        )
        .unwrap();
        assert_eq!(card.rate("India", Category::Utility), Some(rate("0.0014")));
        assert_eq!(
            card.rate("India", Category::AuthenticationInternational),
            Some(rate("0.0280"))
        );
        assert_eq!(card.rate("India", Category::Service), None);
        assert_eq!(card.rate("India", Category::Marketing), None);
    }

    #[test]
    fn a_bad_card_is_refused_with_its_file_and_line() {
        let header = "Market,Currency,Marketing,Utility\n";
        let error = |text: &str| read(text).unwrap_err().to_string();
        assert_eq!(
            error(&format!("{header}India,$US,0.0099,cheap\n")),
            "Meta rate card `cards/meta/r.csv`, line 2: market `India`, utility: `cheap` is neither a rate nor `n/a`"
        );
        assert_eq!(
            error(&format!("{header}India,$US,-0.1,0.1\n")),
            "Meta rate card `cards/meta/r.csv`, line 2: market `India`, marketing: negative rate -0.1"
        );
        assert_eq!(
            error(&format!("{header}India,$US,0.1,0.1\nBrazil,EUR,0.1,0.1\n")),
            "Meta rate card `cards/meta/r.csv`, line 3: market `Brazil` is in EUR, the markets above it in USD: one file holds one currency"
        );
        assert_eq!(
            error(&format!("{header}India,dollars,0.1,0.1\n")),
            "Meta rate card `cards/meta/r.csv`, line 2: market `India` has currency `dollars`, which is not one Meta writes (`$US`, or an ISO 4217 code)"
        );
        assert_eq!(
            error(&format!("{header}India,$US,0.1,0.1\nIndia,$US,0.2,0.2\n")),
            "Meta rate card `cards/meta/r.csv`, line 3: market `India` is listed twice"
        );
        assert_eq!(
            error("Country,Price\nIndia,0.1\n"),
            "Meta rate card `cards/meta/r.csv`: no header line (`Market,Currency,Marketing,...`) was found"
        );
        assert!(error("Market,Marketing\nIndia,0.1\n")
            .contains("line 1: the header has no `Currency` column"));
        assert!(error("Market,Currency,Price\n").contains("the header names no category"));
        assert!(error(header).contains("the file lists no market"));
    }
}
