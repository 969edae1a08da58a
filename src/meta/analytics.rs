//! Meta's analytics of a WhatsApp Business Account, as a finance team saves the Graph API's
//! responses (SPEC-meta §5): `conversation_analytics` (conversation-based pricing, until
//! 2025-06-30) and `pricing_analytics` (per-message pricing, from 2025-07-01).
//!
//! A saved page is either the WABA node with the analytics field expanded
//! (`{"conversation_analytics": {"data": [...], "paging": {...}}, "id": "..."}`) or the
//! analytics edge itself, as the pages `paging.next` leads to (`{"data": [...], "paging":
//! {...}}`); each `data[]` entry holds `data_points[]`. The spellings Meta's surfaces use for the
//! same value are all accepted: `AUTHENTICATION_INTERNATIONAL`, `authentication_international`
//! and `authentication-international`; `FREE_ENTRY` and `FREE_ENTRY_POINT`.

use std::path::PathBuf;

use rust_decimal::Decimal;
use serde_json::Value;

use super::reference::Direction;
use super::units::PricingType;
use super::Category;

/// Which of Meta's analytics a page holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Api {
    /// `conversation_analytics`: conversations, by type, direction and category.
    Conversations,
    /// `pricing_analytics`: delivered messages, by pricing type, category and tier.
    Pricing,
}

impl Api {
    /// The field and edge name: `conversation_analytics` or `pricing_analytics`.
    pub fn name(self) -> &'static str {
        match self {
            Api::Conversations => "conversation_analytics",
            Api::Pricing => "pricing_analytics",
        }
    }

    /// The data point's field that counts: `conversation` or `volume`.
    fn count_field(self) -> &'static str {
        match self {
            Api::Conversations => "conversation",
            Api::Pricing => "volume",
        }
    }
}

/// A category as Meta's analytics report it: one convbill prices, or marketing lite (Meta's
/// Marketing Messages API), which convbill never produces.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum MetaCategory {
    Priced(Category),
    MarketingLite,
}

impl MetaCategory {
    pub fn name(self) -> &'static str {
        match self {
            MetaCategory::Priced(category) => category.name(),
            MetaCategory::MarketingLite => "marketing_lite",
        }
    }
}

/// One data point: a count (and cost) of the bucket `start..end` for the dimensions the
/// request asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataPoint {
    /// Bucket bounds, Unix seconds (a `DAILY` bucket starts at the WABA zone's midnight).
    pub start: i64,
    pub end: i64,
    /// Conversations (`conversation`) or delivered messages (`volume`).
    pub count: u64,
    /// `None` where Meta gives no cost (WABAs billed through a partner).
    pub cost: Option<Decimal>,
    pub values: Values,
}

/// The values of the analytics' dimensions, of a data point, a unit or a compared cell:
/// `None` for a dimension not given (or not compared).
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Values {
    /// The business's display number, as Meta writes it.
    pub phone_number: Option<String>,
    /// ISO 3166 alpha-2.
    pub country: Option<String>,
    pub category: Option<MetaCategory>,
    /// `conversation_type` or `pricing_type`.
    pub pricing_type: Option<PricingType>,
    /// `conversation_direction` (conversation analytics only).
    pub direction: Option<Direction>,
    /// `LOWER:UPPER` (`UPPER` may be `MAX`), charged messages only.
    pub tier: Option<String>,
}

/// One saved response page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page {
    pub api: Api,
    /// The WABA's id, where the page is the WABA node (`id`); the edge's pages do not say.
    pub waba: Option<String>,
    pub points: Vec<DataPoint>,
    /// `paging.next`: the next page's address, if there is one.
    pub next: Option<String>,
}

/// Why a saved page could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AnalyticsError {
    #[error("is not JSON: {reason} (line {line}, column {column})")]
    NotJson {
        reason: String,
        line: usize,
        column: usize,
    },
    #[error("is an error response from Meta, not analytics: {message}{}", code_text(*.code, .kind.as_deref()))]
    ErrorResponse {
        message: String,
        code: Option<i64>,
        kind: Option<String>,
    },
    #[error("holds no `conversation_analytics` or `pricing_analytics` data: {0}")]
    NotAnalytics(String),
    #[error("is not JSON: it is not UTF-8 text")]
    NotText,
    /// A file that holds a list of pages (as `convbill fetch-meta-analytics` saves them).
    #[error("page {number} of the list {reason}")]
    InList {
        number: usize,
        reason: Box<AnalyticsError>,
    },
    #[error("data point {index}: `{field}` {problem}")]
    BadPoint {
        index: usize,
        field: &'static str,
        problem: String,
    },
}

fn code_text(code: Option<i64>, kind: Option<&str>) -> String {
    match (kind, code) {
        (Some(kind), Some(code)) => format!(" ({kind}, code {code})"),
        (None, Some(code)) => format!(" (code {code})"),
        (Some(kind), None) => format!(" ({kind})"),
        (None, None) => String::new(),
    }
}

/// The hidden file that marks a folder of analytics pages as convbill's (written by
/// `fetch-meta-analytics` and `generate --meta-analytics`), so that it may be replaced whole.
pub const MARKER: &str = ".convbill-analytics";

/// Checks that `out` may be replaced whole by a folder of analytics pages that `written_by`
/// writes: it does not exist, is empty, or holds the [`MARKER`] `written_by` wrote and
/// nothing but pages (`*.json`, in folders too).
pub fn check_replaceable(out: &std::path::Path, written_by: &str) -> crate::error::Result<()> {
    if !out.is_dir() {
        return Ok(());
    }
    let output = |source| crate::error::Error::Output {
        path: out.to_path_buf(),
        source,
    };
    let marked = std::fs::read_to_string(out.join(MARKER))
        .is_ok_and(|text| text.contains(&format!("\"{written_by}\"")));
    let mut names: Vec<String> = Vec::new();
    let mut folders = vec![out.to_path_buf()];
    while let Some(folder) = folders.pop() {
        for entry in std::fs::read_dir(&folder).map_err(output)? {
            let path = entry.map_err(output)?.path();
            let name = path
                .strip_prefix(out)
                .unwrap_or(&path)
                .to_string_lossy()
                .into_owned();
            let page = path.is_file()
                && path
                    .extension()
                    .is_some_and(|e| e.eq_ignore_ascii_case("json"));
            match (marked, path.is_dir()) {
                (true, true) => folders.push(path),
                (true, false) if page || path == out.join(MARKER) => {}
                _ => names.push(name),
            }
        }
    }
    if names.is_empty() {
        return Ok(());
    }
    names.sort();
    let shown: Vec<String> = names.iter().take(3).map(|n| format!("`{n}`")).collect();
    Err(crate::error::Error::AnalyticsNotOurs {
        path: out.to_path_buf(),
        found: match names.len() {
            1..=3 => shown.join(", "),
            n => format!("{} and {} more", shown.join(", "), n - 3),
        },
    })
}

/// Reads the saved pages of `paths`: files, and the `*.json` files in folders and the folders
/// below them (hidden ones aside), each folder's in path order. An error names the file.
pub fn read_pages(paths: &[PathBuf]) -> crate::error::Result<Vec<(PathBuf, Page)>> {
    use crate::error::InputError;
    let mut files = Vec::new();
    for path in paths {
        let unreadable = |e: std::io::Error| InputError::Unreadable {
            path: path.clone(),
            reason: e.to_string(),
        };
        if !path.exists() {
            return Err(InputError::NotFound { path: path.clone() }.into());
        }
        if !path.is_dir() {
            files.push(path.clone());
            continue;
        }
        let mut inside = Vec::new();
        json_files(path, &mut inside).map_err(unreadable)?;
        if inside.is_empty() {
            return Err(InputError::NoAnalytics { path: path.clone() }.into());
        }
        inside.sort();
        files.extend(inside);
    }
    files
        .into_iter()
        .map(|path| {
            let text = match std::fs::read_to_string(&path) {
                Ok(text) => text,
                Err(e) if e.kind() == std::io::ErrorKind::InvalidData => {
                    return Err(InputError::MetaAnalytics {
                        path,
                        reason: AnalyticsError::NotText,
                    }
                    .into())
                }
                Err(e) => {
                    return Err(InputError::Unreadable {
                        path: path.clone(),
                        reason: e.to_string(),
                    }
                    .into())
                }
            };
            match parse_pages(&text) {
                Ok(pages) => Ok(pages.into_iter().map(|page| (path.clone(), page)).collect()),
                Err(reason) => Err(InputError::MetaAnalytics { path, reason }.into()),
            }
        })
        .collect::<crate::error::Result<Vec<Vec<_>>>>()
        .map(|files| files.into_iter().flatten().collect())
}

/// The `*.json` files in `folder` and below it, hidden files and folders aside.
fn json_files(folder: &std::path::Path, files: &mut Vec<PathBuf>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(folder)? {
        let path = entry?.path();
        let hidden = path
            .file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with('.'));
        if hidden {
            continue;
        }
        if path.is_dir() {
            json_files(&path, files)?;
        } else if path.is_file()
            && path
                .extension()
                .is_some_and(|e| e.eq_ignore_ascii_case("json"))
        {
            files.push(path);
        }
    }
    Ok(())
}

/// Reads a saved file: one page, or a list of pages (`[page, page, ...]`).
pub fn parse_pages(text: &str) -> Result<Vec<Page>, AnalyticsError> {
    match json(text)? {
        Value::Array(pages) => pages
            .iter()
            .enumerate()
            .map(|(index, page)| {
                page_of(page).map_err(|reason| AnalyticsError::InList {
                    number: index + 1,
                    reason: Box::new(reason),
                })
            })
            .collect(),
        page => Ok(vec![page_of(&page)?]),
    }
}

/// Reads one saved page.
pub fn parse_page(text: &str) -> Result<Page, AnalyticsError> {
    page_of(&json(text)?)
}

fn json(text: &str) -> Result<Value, AnalyticsError> {
    serde_json::from_str(text).map_err(|e| AnalyticsError::NotJson {
        reason: e
            .to_string()
            .split(" at line")
            .next()
            .unwrap_or("")
            .to_string(),
        line: e.line(),
        column: e.column(),
    })
}

/// The WABA a paging address names: `.../v21.0/{WABA}/pricing_analytics?after=...`.
pub fn waba_in(address: &str, api: Api) -> Option<String> {
    let path = address.split(['?', '#']).next()?;
    let segments: Vec<&str> = path.split('/').collect();
    let at = segments.iter().position(|s| *s == api.name())?;
    let waba = decode(segments.get(at.checked_sub(1)?)?)?;
    (!waba.is_empty() && !waba.contains(':')).then_some(waba)
}

/// A percent-encoded path segment, decoded (`None` if it is not UTF-8).
fn decode(segment: &str) -> Option<String> {
    let bytes = segment.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(byte)) => {
                decoded.push(byte);
                i += 3;
            }
            (byte, _) => {
                decoded.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8(decoded).ok()
}

fn page_of(value: &Value) -> Result<Page, AnalyticsError> {
    let Value::Object(object) = value else {
        return Err(AnalyticsError::NotAnalytics(
            "the document is not an object".into(),
        ));
    };
    if let Some(error) = object.get("error") {
        return Err(AnalyticsError::ErrorResponse {
            message: error
                .get("message")
                .and_then(Value::as_str)
                .unwrap_or("(no message)")
                .to_string(),
            code: error.get("code").and_then(Value::as_i64),
            kind: error
                .get("type")
                .and_then(Value::as_str)
                .map(str::to_string),
        });
    }
    let waba = object.get("id").and_then(Value::as_str).map(str::to_string);
    // The WABA node with one analytics field expanded, or the edge's own page.
    let (named, edge) = match (
        object.get(Api::Conversations.name()),
        object.get(Api::Pricing.name()),
    ) {
        (Some(_), Some(_)) => {
            return Err(AnalyticsError::NotAnalytics(
                "it holds both `conversation_analytics` and `pricing_analytics`; save each response on its own".into(),
            ))
        }
        (Some(edge), None) => (Some(Api::Conversations), edge),
        (None, Some(edge)) => (Some(Api::Pricing), edge),
        (None, None) => (None, value),
    };
    let Some(data) = edge.get("data").and_then(Value::as_array) else {
        return Err(AnalyticsError::NotAnalytics(
            "there is no `data` list".into(),
        ));
    };
    let points: Vec<&Value> = data
        .iter()
        .flat_map(|entry| {
            entry
                .get("data_points")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
        })
        .collect();
    let api = match named {
        Some(api) => api,
        // An edge page says which analytics it holds by its points' count field.
        None => match points.first() {
            Some(point) if point.get("conversation").is_some() => Api::Conversations,
            Some(point) if point.get("volume").is_some() => Api::Pricing,
            Some(_) => {
                return Err(AnalyticsError::NotAnalytics(
                    "its data points count neither `conversation` nor `volume`".into(),
                ))
            }
            // An empty edge page: its paging addresses may tell; it counts nothing either way.
            None => match ["next", "previous"].into_iter().any(|field| {
                edge.get("paging")
                    .and_then(|paging| paging.get(field))
                    .and_then(Value::as_str)
                    .is_some_and(|address| address.contains(Api::Conversations.name()))
            }) {
                true => Api::Conversations,
                false => Api::Pricing,
            },
        },
    };
    let points = points
        .iter()
        .enumerate()
        .map(|(index, point)| parse_point(api, index, point))
        .collect::<Result<_, _>>()?;
    let paging = |field: &str| {
        edge.get("paging")
            .and_then(|paging| paging.get(field))
            .and_then(Value::as_str)
    };
    let next = paging("next").map(str::to_string);
    // The edge's pages do not carry the WABA's id, but their paging addresses name it.
    let waba = waba.or_else(|| {
        ["next", "previous"]
            .into_iter()
            .find_map(|field| paging(field).and_then(|address| waba_in(address, api)))
    });
    Ok(Page {
        api,
        waba,
        points,
        next,
    })
}

fn parse_point(api: Api, index: usize, point: &Value) -> Result<DataPoint, AnalyticsError> {
    let bad = |field: &'static str, problem: String| AnalyticsError::BadPoint {
        index,
        field,
        problem,
    };
    let integer = |field: &'static str| -> Result<i64, AnalyticsError> {
        let value = point
            .get(field)
            .ok_or_else(|| bad(field, "is missing".into()))?;
        value
            .as_i64()
            .or_else(|| value.as_str().and_then(|s| s.parse().ok()))
            .ok_or_else(|| bad(field, format!("is not a whole number: {value}")))
    };
    let text = |field: &'static str| text_of(point, index, field);
    let (start, end) = (integer("start")?, integer("end")?);
    let count_field = api.count_field();
    let count = integer(count_field)?;
    let count =
        u64::try_from(count).map_err(|_| bad(count_field, format!("is negative: {count}")))?;
    let cost = match point.get("cost") {
        None | Some(Value::Null) => None,
        Some(Value::Number(number)) => Some(
            // The shortest text that reads back as the same number: the text Meta wrote.
            number
                .to_string()
                .parse::<Decimal>()
                .or_else(|_| Decimal::from_scientific(&number.to_string()))
                .map_err(|e| bad("cost", format!("is not a decimal: {number} ({e})")))?,
        ),
        Some(Value::String(s)) => Some(
            s.parse::<Decimal>()
                .map_err(|e| bad("cost", format!("is not a decimal: `{s}` ({e})")))?,
        ),
        Some(other) => return Err(bad("cost", format!("is not a number: {other}"))),
    };
    let (category_field, type_field) = match api {
        Api::Conversations => ("conversation_category", "conversation_type"),
        Api::Pricing => ("pricing_category", "pricing_type"),
    };
    Ok(DataPoint {
        start,
        end,
        count,
        cost,
        values: Values {
            phone_number: text("phone_number")?,
            country: text("country")?,
            category: named(point, index, category_field, category_of)?,
            pricing_type: named(point, index, type_field, pricing_type_of)?,
            direction: match api {
                Api::Conversations => named(point, index, "conversation_direction", direction_of)?,
                Api::Pricing => None,
            },
            tier: text("tier")?,
        },
    })
}

/// The text field `field` of a data point, if present.
fn text_of(
    point: &Value,
    index: usize,
    field: &'static str,
) -> Result<Option<String>, AnalyticsError> {
    match point.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(other) => Err(AnalyticsError::BadPoint {
            index,
            field,
            problem: format!("is not text: {other}"),
        }),
    }
}

/// The enumerated field `field` of a data point, in any of Meta's spellings ([`token`]).
fn named<T>(
    point: &Value,
    index: usize,
    field: &'static str,
    read: fn(&str) -> Option<T>,
) -> Result<Option<T>, AnalyticsError> {
    text_of(point, index, field)?
        .map(|value| {
            read(&token(&value)).ok_or_else(|| AnalyticsError::BadPoint {
                index,
                field,
                problem: format!("has unknown value `{value}`"),
            })
        })
        .transpose()
}

/// A value as one spelling: lower case, `_` for `-`, trimmed.
fn token(value: &str) -> String {
    value.trim().to_ascii_lowercase().replace('-', "_")
}

fn category_of(token: &str) -> Option<MetaCategory> {
    match token {
        "marketing_lite" => Some(MetaCategory::MarketingLite),
        _ => Category::ALL
            .into_iter()
            .find(|c| c.name() == token)
            .map(MetaCategory::Priced),
    }
}

fn pricing_type_of(token: &str) -> Option<PricingType> {
    match token {
        // The analytics filter's spelling of the response's `FREE_ENTRY_POINT`.
        "free_entry" => Some(PricingType::FreeEntryPoint),
        _ => PricingType::ALL.into_iter().find(|p| p.name() == token),
    }
}

fn direction_of(token: &str) -> Option<Direction> {
    match token {
        "business_initiated" => Some(Direction::BusinessInitiated),
        "user_initiated" => Some(Direction::UserInitiated),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> String {
        let path = format!(
            "{}/tests/fixtures/meta-analytics/{name}",
            env!("CARGO_MANIFEST_DIR")
        );
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
    }

    #[test]
    fn pages_are_read_from_files_and_folders_and_errors_name_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let folder = dir.path().join("waba-1");
        std::fs::create_dir(&folder).unwrap();
        let fixtures = format!(
            "{}/tests/fixtures/meta-analytics",
            env!("CARGO_MANIFEST_DIR")
        );
        std::fs::write(folder.join("2.json"), fixture("pricing-daily-no-cost.json")).unwrap();
        std::fs::write(
            folder.join("1.json"),
            fixture("conversation-daily-page-1.json"),
        )
        .unwrap();
        std::fs::write(folder.join("notes.txt"), "not a page").unwrap();
        let single = PathBuf::from(&fixtures).join("conversation-daily-page-1.json");
        let pages = read_pages(&[folder.clone(), single.clone()]).unwrap();
        let read: Vec<(PathBuf, Api)> = pages
            .iter()
            .map(|(p, page)| (p.clone(), page.api))
            .collect();
        assert_eq!(
            read,
            [
                (folder.join("1.json"), Api::Conversations),
                (folder.join("2.json"), Api::Pricing),
                (single, Api::Conversations),
            ]
        );
        let error = PathBuf::from(&fixtures).join("error-expired-token.json");
        let message = read_pages(&[folder.clone(), error.clone()])
            .unwrap_err()
            .to_string();
        assert!(
            message.starts_with(&format!(
                "Meta analytics `{}` is an error response",
                error.display()
            )),
            "{message}"
        );
        let empty = dir.path().join("empty");
        std::fs::create_dir(&empty).unwrap();
        assert!(read_pages(&[empty])
            .unwrap_err()
            .to_string()
            .starts_with("no saved Meta analytics"));
        assert!(read_pages(&[dir.path().join("missing")])
            .unwrap_err()
            .to_string()
            .contains("does not exist"));
    }

    #[test]
    fn a_conversation_page_of_the_waba_node_reads_with_its_next_page() {
        let page = parse_page(&fixture("conversation-daily-page-1.json")).unwrap();
        assert_eq!(page.api, Api::Conversations);
        assert_eq!(page.waba.as_deref(), Some("102290129340398"));
        assert_eq!(
            page.next.as_deref(),
            Some("https://graph.facebook.com/v21.0/102290129340398/conversation_analytics?after=QVFIUjZA")
        );
        assert_eq!(
            page.points[0],
            DataPoint {
                start: 1717225200,
                end: 1717311600,
                count: 5250,
                cost: Some("45.0484".parse().unwrap()),
                values: Values {
                    phone_number: Some("16505550111".into()),
                    country: Some("US".into()),
                    category: Some(MetaCategory::Priced(Category::Marketing)),
                    pricing_type: Some(PricingType::Regular),
                    direction: Some(Direction::BusinessInitiated),
                    tier: None,
                },
            }
        );
        // The filter's spelling `FREE_ENTRY` is the response's `FREE_ENTRY_POINT`.
        assert_eq!(
            page.points[1].values.pricing_type,
            Some(PricingType::FreeEntryPoint)
        );
        assert_eq!(page.points[1].cost, Some(Decimal::ZERO));
    }

    #[test]
    fn a_pricing_edge_page_without_cost_reads_every_spelling() {
        let page = parse_page(&fixture("pricing-daily-no-cost.json")).unwrap();
        assert_eq!(
            (page.api, page.waba.as_deref(), page.next.as_deref()),
            (Api::Pricing, None, None)
        );
        let international = Some(MetaCategory::Priced(Category::AuthenticationInternational));
        let read: Vec<_> = page
            .points
            .iter()
            .map(|p| {
                (
                    p.count,
                    p.cost,
                    p.values.category,
                    p.values.pricing_type,
                    p.values.tier.as_deref(),
                )
            })
            .collect();
        assert_eq!(
            read,
            [
                (
                    1,
                    None,
                    international,
                    Some(PricingType::Regular),
                    Some("1:250000")
                ),
                (
                    3,
                    None,
                    international,
                    Some(PricingType::FreeEntryPoint),
                    None
                ),
                (
                    40,
                    None,
                    Some(MetaCategory::MarketingLite),
                    Some(PricingType::FreeCustomerService),
                    None
                ),
                (
                    7,
                    None,
                    Some(MetaCategory::Priced(Category::Utility)),
                    Some(PricingType::Regular),
                    Some("250001:MAX")
                ),
            ]
        );
        assert!(page.points.iter().all(|p| p.values.direction.is_none()));
    }

    #[test]
    fn an_error_response_is_named_with_its_message_and_code() {
        let error = parse_page(&fixture("error-expired-token.json")).unwrap_err();
        assert_eq!(
            error.to_string(),
            "is an error response from Meta, not analytics: Error validating access token: \
             Session has expired on Tuesday, 01-Jul-25 10:00:00 PDT. (OAuthException, code 190)"
        );
    }

    #[test]
    fn pages_that_are_not_analytics_say_why() {
        let not_json = parse_page("{\"data\": [\n  {\"data_points\": [}\n]}").unwrap_err();
        assert!(
            matches!(not_json, AnalyticsError::NotJson { line: 2, .. }),
            "{not_json}"
        );
        assert!(matches!(
            parse_page("[1, 2]").unwrap_err(),
            AnalyticsError::NotAnalytics(_)
        ));
        assert!(matches!(
            parse_page("{\"id\": \"1\"}").unwrap_err(),
            AnalyticsError::NotAnalytics(_)
        ));
        let unknown = parse_page(
            r#"{"pricing_analytics": {"data": [{"data_points": [
                {"start": 1, "end": 2, "volume": 1, "pricing_category": "MARKETING"},
                {"start": 1, "end": 2, "volume": 1, "pricing_category": "PROMOTIONAL"}
            ]}]}}"#,
        )
        .unwrap_err();
        assert_eq!(
            unknown.to_string(),
            "data point 1: `pricing_category` has unknown value `PROMOTIONAL`"
        );
        let negative = parse_page(
            r#"{"data": [{"data_points": [{"start": 1, "end": 2, "conversation": -4}]}]}"#,
        )
        .unwrap_err();
        assert_eq!(
            negative.to_string(),
            "data point 0: `conversation` is negative: -4"
        );
    }

    #[test]
    fn costs_read_as_the_decimals_meta_wrote() {
        for cost in ["0.0135", "45.0484", "1e-4", "12", "0.1"] {
            let page = parse_page(&format!(
                r#"{{"data": [{{"data_points": [{{"start": 1, "end": 2, "volume": 1, "cost": {cost}}}]}}]}}"#
            ))
            .unwrap();
            let expected = match cost {
                "1e-4" => "0.0001".parse().unwrap(),
                _ => cost.parse::<Decimal>().unwrap(),
            };
            assert_eq!(page.points[0].cost, Some(expected), "{cost}");
        }
    }
}
