//! `convbill fetch-meta-analytics`: a WABA's analytics from Meta's Graph API, saved as the raw
//! response pages `convbill reconcile` reads (SPEC-meta §5).
//!
//! Days before 2025-07-01 are asked of `conversation_analytics`, days from then on of
//! `pricing_analytics` (a period across the switch is two requests), with every dimension
//! reconciliation compares. Each request follows `paging.next` to its last page. A rate limit
//! (HTTP 429, Graph API codes 4, 17, 32, 613, 80007, 130429), a server error (HTTP 5xx, or an
//! error Meta marks `is_transient`), a failed connection or a page cut short is tried again
//! after a wait that doubles each time; any other error response (an expired token, a missing
//! permission, a bad parameter) stops at once and names Meta's message and code.
//!
//! The access token comes from `META_ACCESS_TOKEN` and goes in the `Authorization` header
//! only: it is never printed, and the saved pages hold `REDACTED` where Meta echoed it (its
//! `paging.next` addresses carry it). `paging.next` is followed only to the Graph API's own
//! address, so the token is never sent elsewhere. Nothing is written until every page has
//! been fetched; then the pages replace the output whole.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::NaiveDate;
use chrono_tz::Tz;
use serde_json::Value;

use super::analytics::{parse_page, AnalyticsError, Api};
use super::config::PMP_FROM;
use super::reconcile::Granularity;
use crate::error::{Error, Result};

/// The Graph API's address.
pub const GRAPH_URL: &str = "https://graph.facebook.com";
/// The Graph API version asked for.
pub const API_VERSION: &str = "v21.0";
/// The environment variable that holds the access token.
pub const TOKEN_VARIABLE: &str = "META_ACCESS_TOKEN";
/// What the saved pages hold where Meta echoed the token.
pub const REDACTED: &str = "REDACTED";

/// Graph API error codes that mean "too many calls": wait and try again.
const RATE_LIMIT_CODES: [i64; 8] = [4, 17, 32, 613, 80004, 80007, 130429, 131056];
/// Graph API error codes Meta documents as temporary (an unknown error, a service down).
const TRANSIENT_CODES: [i64; 2] = [1, 2];
/// The longest wait between two attempts, whatever the backoff or `Retry-After` says.
const LONGEST_WAIT: Duration = Duration::from_secs(900);
/// The most pages one request may take (a month of a large WABA's daily analytics is a few
/// hundred).
const MOST_PAGES: usize = 20_000;
/// What the folder's marker says wrote it.
const WRITTEN_BY: &str = "convbill fetch-meta-analytics";
/// The largest page accepted.
const LARGEST_PAGE: u64 = 256 << 20;

/// What to fetch, and where to.
#[derive(Debug, Clone)]
pub struct FetchConfig {
    /// The WhatsApp Business Account's id.
    pub waba: String,
    /// The first and last day (both included), in `time_zone`.
    pub from: NaiveDate,
    pub to: NaiveDate,
    pub granularity: Granularity,
    /// The WABA's zone: its days start at its midnight.
    pub time_zone: Tz,
    /// A folder (one file per page, replaced whole) or a `.json` file (the page, or the list
    /// of pages).
    pub out: PathBuf,
    /// The Graph API's address (`https://graph.facebook.com`).
    pub graph_url: String,
    pub api_version: String,
    pub token: String,
    /// Attempts per page, the first included.
    pub attempts: u32,
    /// The wait before the second attempt; it doubles for each one after.
    pub retry_wait: Duration,
    /// The longest a request may take.
    pub timeout: Duration,
}

/// One request: an analytics over whole days.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub api: Api,
    pub from: NaiveDate,
    pub to: NaiveDate,
    /// Unix seconds: the WABA's midnight starting `from`, and the one ending `to`.
    pub start: i64,
    pub end: i64,
}

/// What a fetch did.
#[derive(Debug, Clone)]
pub struct FetchReport {
    /// Per request: the request, its pages and their data points.
    pub requests: Vec<(Request, usize, usize)>,
    /// Attempts tried again after a rate limit or a server error.
    pub retries: u32,
    /// The files written.
    pub written: Vec<PathBuf>,
}

/// The requests of a period: `conversation_analytics` for its days before 2025-07-01,
/// `pricing_analytics` for the days from then on.
pub fn requests(from: NaiveDate, to: NaiveDate, zone: Tz) -> Vec<Request> {
    let request = |api, from: NaiveDate, to: NaiveDate| Request {
        api,
        from,
        to,
        start: crate::rates::local_midnight(from, zone) / 1_000_000_000,
        end: crate::rates::local_midnight(to.succ_opt().expect("within chrono's range"), zone)
            / 1_000_000_000,
    };
    let last_cbp = PMP_FROM.pred_opt().expect("within chrono's range");
    let mut requests = Vec::new();
    if from < PMP_FROM {
        requests.push(request(Api::Conversations, from, to.min(last_cbp)));
    }
    if to >= PMP_FROM {
        requests.push(request(Api::Pricing, from.max(PMP_FROM), to));
    }
    requests
}

impl FetchConfig {
    /// Checks what can be checked before any request: the WABA id, the days, the address.
    fn check(&self) -> Result<()> {
        let usage = |problem: String| Err(Error::MetaApiSetup { problem });
        if self.waba.is_empty()
            || !self
                .waba
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return usage(format!(
                "`--waba {}` is not a WhatsApp Business Account id (letters, digits, `-` and `_`, such as 102290129340398)",
                self.waba
            ));
        }
        if self.from > self.to {
            return usage(format!(
                "`--from {}` is after `--to {}`",
                self.from, self.to
            ));
        }
        if self.token.is_empty() {
            return usage(format!(
                "{TOKEN_VARIABLE} is not set: give the access token of a user or system user with `whatsapp_business_management` on the WABA"
            ));
        }
        if let Some(c) = self.token.chars().find(|c| !c.is_ascii_graphic()) {
            return usage(format!(
                "{TOKEN_VARIABLE} holds {}, which no access token has: set the token alone",
                match c {
                    ' ' => "a space".to_string(),
                    '\n' | '\r' => "a line break".to_string(),
                    c if c.is_control() => format!("the control character U+{:04X}", c as u32),
                    c => format!("the character `{c}`"),
                }
            ));
        }
        let version_ok = self.api_version.strip_prefix('v').is_some_and(|v| {
            v.split_once('.').is_some_and(|(major, minor)| {
                [major, minor]
                    .iter()
                    .all(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_digit()))
            })
        });
        if !version_ok {
            return usage(format!(
                "`--api-version {}` is not a Graph API version (such as `{API_VERSION}`)",
                self.api_version
            ));
        }
        let begins = crate::rates::local_midnight(self.from, self.time_zone) / 1_000_000_000;
        if begins > chrono::Utc::now().timestamp() {
            return usage(format!(
                "`--from {}` has not begun in {}: there is nothing to fetch yet",
                self.from, self.time_zone
            ));
        }
        let Some((scheme, host)) = origin(&self.graph_url) else {
            return usage(format!(
                "`--graph-url {}` is not an http:// or https:// address",
                self.graph_url
            ));
        };
        let local = ["127.0.0.1", "localhost", "[::1]"]
            .iter()
            .any(|h| host == *h || host.starts_with(&format!("{h}:")));
        if scheme == "http" && !local {
            return usage(format!(
                "`--graph-url {}` is plain http: the access token would cross the network unencrypted; use https (http is accepted for this machine only)",
                self.graph_url
            ));
        }
        Ok(())
    }

    /// The first page's address of a request.
    fn first_address(&self, request: &Request) -> String {
        let dimensions = match request.api {
            Api::Conversations => {
                r#"["CONVERSATION_CATEGORY","CONVERSATION_TYPE","CONVERSATION_DIRECTION","COUNTRY","PHONE"]"#
            }
            Api::Pricing => r#"["PRICING_CATEGORY","PRICING_TYPE","COUNTRY","PHONE","TIER"]"#,
        };
        let granularity = match self.granularity {
            Granularity::Daily => "DAILY",
            Granularity::Monthly => "MONTHLY",
        };
        let fields = format!(
            "{}.start({}).end({}).granularity({granularity}).dimensions({dimensions})",
            request.api.name(),
            request.start,
            request.end
        );
        format!(
            "{}/{}/{}?fields={}",
            self.graph_url.trim_end_matches('/'),
            self.api_version,
            self.waba,
            percent_encode(&fields, b"(),")
        )
    }
}

/// Fetches every page of the period and writes them (see the module documentation).
pub fn fetch(config: &FetchConfig) -> Result<FetchReport> {
    config.check()?;
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .max_redirects(0)
        .timeout_global(Some(config.timeout))
        .user_agent(concat!("convbill/", env!("CARGO_PKG_VERSION")))
        .build()
        .into();
    let mut retries = 0;
    let mut done = Vec::new();
    let mut pages: Vec<(Request, usize, String)> = Vec::new();
    // The output is claimed before the first request: a second fetch into it stops at once.
    let file_wanted = !config.out.is_dir()
        && config
            .out
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("json"));
    let _lock = match file_wanted {
        true => {
            if config.out.is_file() {
                let text = std::fs::read_to_string(&config.out).unwrap_or_default();
                if super::analytics::parse_pages(&text).is_err() {
                    return Err(Error::MetaApiSetup {
                        problem: format!(
                            "refusing to replace `{}`: it is not saved analytics",
                            config.out.display()
                        ),
                    });
                }
            }
            crate::folder::lock_file(&config.out)?
        }
        false => {
            let folder = crate::folder::OutFolder::new(&config.out)?;
            let lock = folder.lock()?;
            folder.recover()?;
            super::analytics::check_replaceable(&config.out, WRITTEN_BY)?;
            lock
        }
    };
    let requests = requests(config.from, config.to, config.time_zone);
    if requests
        .last()
        .is_some_and(|last| last.end > chrono::Utc::now().timestamp())
    {
        tracing::warn!(
            "{} has not ended in {}: Meta's figures for the days up to it are partial (and Meta's analytics lag by hours); fetch them again once they have ended",
            config.to,
            config.time_zone
        );
    }
    for request in requests {
        let mut address = config.first_address(&request);
        let (mut count, mut points) = (0, 0);
        let mut asked = std::collections::HashSet::new();
        let mut cursors = std::collections::HashSet::new();
        loop {
            count += 1;
            let what = format!(
                "{} of WABA {} from {} to {}, page {count}",
                request.api.name(),
                config.waba,
                request.from,
                request.to
            );
            let cursor_seen = cursor(&address).is_some_and(|c| !cursors.insert(c.to_string()));
            if !asked.insert(address.clone()) || cursor_seen {
                return Err(Error::MetaApi {
                    what,
                    problem: "`paging.next` leads back to a page already fetched: Meta's pages go round in a circle".into(),
                    hint: Some("run it again later; if it persists, fetch shorter periods".into()),
                });
            }
            if count > MOST_PAGES {
                return Err(Error::MetaApi {
                    what,
                    problem: format!(
                        "more than {MOST_PAGES} pages: Meta's pagination does not end"
                    ),
                    hint: Some("fetch shorter periods".into()),
                });
            }
            let (body, tried_again) = get(&agent, &address, config, &what)?;
            retries += tried_again;
            let page = parse_page(&body).map_err(|e| Error::MetaApi {
                what: what.clone(),
                problem: format!("the response is not analytics: {e}"),
                hint: None,
            })?;
            tracing::info!("fetched {what}: {} data points", page.points.len());
            points += page.points.len();
            pages.push((request.clone(), count, body));
            let Some(next) = page.next else { break };
            address = follow(&next, config).map_err(|problem| Error::MetaApi {
                what: what.clone(),
                problem,
                hint: None,
            })?;
        }
        done.push((request, count, points));
    }
    crate::error::check_interrupt()?;
    let written = write(config, file_wanted, &pages)?;
    Ok(FetchReport {
        requests: done,
        retries,
        written,
    })
}

/// `text` without the token: as given, and every `access_token=` value of an address however
/// it is encoded (Meta's `paging.next` addresses carry it).
fn redact(text: &str, token: &str) -> String {
    const PARAMETER: &str = "access_token=";
    let text = text.replace(token, REDACTED);
    let mut redacted = String::with_capacity(text.len());
    let mut rest = text.as_str();
    while let Some(at) = rest.find(PARAMETER) {
        let value_at = at + PARAMETER.len();
        redacted.push_str(&rest[..value_at]);
        let value = &rest[value_at..];
        let end = value
            .find(|c: char| matches!(c, '&' | '"' | '\'' | '#' | '<' | '>') || c.is_whitespace())
            .unwrap_or(value.len());
        if end > 0 {
            redacted.push_str(REDACTED);
        }
        rest = &value[end..];
    }
    redacted.push_str(rest);
    redacted
}

/// The `after` cursor of an address, if it has one.
fn cursor(address: &str) -> Option<&str> {
    let query = address.split_once('?')?.1;
    query
        .split('&')
        .find_map(|pair| pair.strip_prefix("after="))
}

/// `scheme` and `host[:port]` of an address, lower case.
fn origin(address: &str) -> Option<(String, String)> {
    let (scheme, rest) = address.split_once("://")?;
    let scheme = scheme.to_ascii_lowercase();
    if scheme != "http" && scheme != "https" {
        return None;
    }
    let host = rest.split(['/', '?', '#']).next()?.to_ascii_lowercase();
    (!host.is_empty()).then_some((scheme, host))
}

/// The address of `paging.next` to ask for: on the Graph API's own origin only, without the
/// `access_token` Meta puts in it (the token goes in the header).
fn follow(next: &str, config: &FetchConfig) -> std::result::Result<String, String> {
    if origin(next).is_none() || origin(next) != origin(&config.graph_url) {
        let shown = next.split('?').next().unwrap_or_default();
        return Err(format!(
            "`paging.next` leads to `{shown}`, not to the Graph API at `{}`: not sending the access token there",
            config.graph_url
        ));
    }
    Ok(match next.split_once('?') {
        None => next.to_string(),
        Some((path, query)) => {
            let kept: Vec<&str> = query
                .split('&')
                .filter(|pair| !pair.starts_with("access_token="))
                .collect();
            match kept.is_empty() {
                true => path.to_string(),
                false => format!("{path}?{}", kept.join("&")),
            }
        }
    })
}

/// Percent-encodes `text` for an address: all but unreserved characters and those of `keep`.
pub(crate) fn percent_encode(text: &str, keep: &[u8]) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            b if keep.contains(&b) => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Why an attempt failed.
enum Failure {
    /// Worth another attempt, after at least the given wait (`Retry-After`).
    Again(String, Option<Duration>),
    /// Not: Meta refused the request.
    Refused(String, Option<String>),
}

/// One page, tried up to `config.attempts` times; returns its body and the attempts tried
/// again.
fn get(
    agent: &ureq::Agent,
    address: &str,
    config: &FetchConfig,
    what: &str,
) -> Result<(String, u32)> {
    let mut attempt = 1;
    loop {
        crate::error::check_interrupt()?;
        let (problem, at_least) = match attempt_once(agent, address, &config.token) {
            Ok(body) => return Ok((body, attempt - 1)),
            Err(Failure::Refused(problem, hint)) => {
                return Err(Error::MetaApi {
                    what: what.to_string(),
                    problem,
                    hint,
                })
            }
            Err(Failure::Again(problem, at_least)) => (problem, at_least),
        };
        if attempt >= config.attempts {
            return Err(Error::MetaApi {
                what: what.to_string(),
                problem: format!("gave up after {attempt} attempts: {problem}"),
                hint: Some("Meta's limits or an outage outlasted the retries: run it again later, or with more `--attempts`".into()),
            });
        }
        let backoff = config
            .retry_wait
            .saturating_mul(2u32.saturating_pow(attempt - 1));
        let wait = backoff.max(at_least.unwrap_or_default()).min(LONGEST_WAIT);
        tracing::warn!(
            "{what}: {problem}; trying again in {:.1} s (attempt {} of {})",
            wait.as_secs_f64(),
            attempt + 1,
            config.attempts
        );
        sleep(wait)?;
        attempt += 1;
    }
}

/// Sleeps, waking for an interruption.
fn sleep(wait: Duration) -> Result<()> {
    let until = std::time::Instant::now() + wait;
    while let Some(left) = until.checked_duration_since(std::time::Instant::now()) {
        crate::error::check_interrupt()?;
        std::thread::sleep(left.min(Duration::from_millis(100)));
    }
    Ok(())
}

fn attempt_once(
    agent: &ureq::Agent,
    address: &str,
    token: &str,
) -> std::result::Result<String, Failure> {
    let mut response = agent
        .get(address)
        .header("Authorization", format!("Bearer {token}"))
        .call()
        .map_err(|e| Failure::Again(redact(&format!("the request failed: {e}"), token), None))?;
    let status = response.status().as_u16();
    let retry_after = response
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Duration::from_secs);
    let body = response
        .body_mut()
        .with_config()
        .limit(LARGEST_PAGE)
        .read_to_string()
        .map_err(|e| Failure::Again(format!("HTTP {status}, the body was cut short: {e}"), None))?;
    let body = redact(&body, token);
    if (300..400).contains(&status) {
        let location = response
            .headers()
            .get("location")
            .and_then(|v| v.to_str().ok())
            .map(|l| redact(l, token))
            .unwrap_or_default();
        return Err(Failure::Refused(
            format!("HTTP {status}: a redirect to `{location}`, not followed (the Graph API answers where it is asked)"),
            None,
        ));
    }
    if status == 200 {
        return match parse_page(&body) {
            Ok(_) => Ok(body),
            // A page cut short on the way: ask again.
            Err(e @ AnalyticsError::NotJson { .. }) => {
                Err(Failure::Again(format!("HTTP 200, but the page {e}"), None))
            }
            // Checked again by the caller, which names the page.
            Err(_) => Ok(body),
        };
    }
    let error = serde_json::from_str::<Value>(&body)
        .ok()
        .and_then(|v| v.get("error").cloned());
    let code = error
        .as_ref()
        .and_then(|e| e.get("code"))
        .and_then(Value::as_i64);
    let transient = error
        .as_ref()
        .and_then(|e| e.get("is_transient"))
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let problem = match &error {
        Some(error) => {
            let text = |field: &str| error.get(field).and_then(Value::as_str);
            let mut problem = format!(
                "HTTP {status}: {}",
                text("message").unwrap_or("(no message)")
            );
            let details: Vec<String> = [
                text("type").map(str::to_string),
                code.map(|c| format!("code {c}")),
                error
                    .get("error_subcode")
                    .and_then(Value::as_i64)
                    .map(|c| format!("subcode {c}")),
                text("fbtrace_id").map(|t| format!("fbtrace_id {t}")),
            ]
            .into_iter()
            .flatten()
            .collect();
            if !details.is_empty() {
                problem.push_str(&format!(" ({})", details.join(", ")));
            }
            problem
        }
        None => {
            let start: String = body.chars().take(200).collect();
            format!("HTTP {status}: {}", start.trim())
        }
    };
    let limited = code.is_some_and(|c| RATE_LIMIT_CODES.contains(&c));
    if status == 429 || status >= 500 || limited || transient {
        return Err(Failure::Again(problem, retry_after));
    }
    if code.is_some_and(|c| TRANSIENT_CODES.contains(&c)) {
        return Err(Failure::Again(problem, retry_after));
    }
    let hint = match code {
        Some(190) => Some(format!(
            "the access token in {TOKEN_VARIABLE} has expired or is not valid: set a new one (a system user's token need not expire)"
        )),
        Some(10 | 200..=299) => Some(
            "the token lacks a permission on this WABA: it needs `whatsapp_business_management`"
                .to_string(),
        ),
        Some(100) => Some(
            "Meta refused a parameter: check `--waba` (the WABA's id, not a phone number id) and the days".to_string(),
        ),
        _ => None,
    };
    Err(Failure::Refused(problem, hint))
}

/// Writes the pages: into a folder, one file each, replacing it whole; or into a `.json` file
/// (the page itself, or the list of pages).
fn write(
    config: &FetchConfig,
    file_wanted: bool,
    pages: &[(Request, usize, String)],
) -> Result<Vec<PathBuf>> {
    let out = &config.out;
    if file_wanted {
        let text = match pages {
            [(_, _, page)] => page.clone(),
            _ => format!(
                "[\n{}\n]\n",
                pages
                    .iter()
                    .map(|(_, _, page)| page.trim_end())
                    .collect::<Vec<_>>()
                    .join(",\n")
            ),
        };
        write_file(out, text.as_bytes())?;
        return Ok(vec![out.to_path_buf()]);
    }
    // The caller holds the folder's lock.
    let folder = crate::folder::OutFolder::new(out)?;
    let staging = folder.create_staging()?;
    let marker = serde_json::json!({
        "written_by": WRITTEN_BY,
        "waba": config.waba,
        "from": config.from.to_string(),
        "to": config.to.to_string(),
        "time_zone": config.time_zone.name(),
        "granularity": match config.granularity {
            Granularity::Daily => "DAILY",
            Granularity::Monthly => "MONTHLY",
        },
        "pages": pages.len(),
    });
    crate::write::write_bytes(
        &staging,
        super::analytics::MARKER,
        format!("{marker:#}\n").as_bytes(),
        0,
    )?;
    let written: Vec<PathBuf> = pages
        .iter()
        .map(|(request, number, page)| {
            let name = format!(
                "{}-{}-{}-page-{number:04}.json",
                request.api.name(),
                request.from,
                request.to
            );
            crate::write::write_bytes(&staging, &name, page.as_bytes(), 1)?;
            Ok(out.join(name))
        })
        .collect::<Result<_>>()?;
    crate::error::check_interrupt()?;
    folder.switch(&staging)?;
    Ok(written)
}

/// Writes a file whole: a temporary file beside it, flushed, then renamed into place.
fn write_file(path: &Path, bytes: &[u8]) -> Result<()> {
    let output = |source: std::io::Error| Error::Output {
        path: path.to_path_buf(),
        source,
    };
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(output)?;
    }
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let temporary = path.with_file_name(format!(".{name}.convbill-{}", std::process::id()));
    let result = (|| {
        let mut file = std::fs::File::create(&temporary)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        std::fs::rename(&temporary, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&temporary);
    }
    result.map_err(output)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn day(text: &str) -> NaiveDate {
        text.parse().unwrap()
    }

    #[test]
    fn a_period_across_the_switch_is_two_requests_at_the_wabas_midnights() {
        let zone: Tz = "Asia/Jakarta".parse().unwrap();
        let both = requests(day("2025-06-29"), day("2025-07-02"), zone);
        assert_eq!(both.len(), 2);
        assert_eq!(
            (both[0].api, both[0].from, both[0].to),
            (Api::Conversations, day("2025-06-29"), day("2025-06-30"))
        );
        assert_eq!(
            (both[1].api, both[1].from, both[1].to),
            (Api::Pricing, day("2025-07-01"), day("2025-07-02"))
        );
        // Jakarta is UTC+7: its 2025-06-29 starts at 2025-06-28 17:00 UTC.
        assert_eq!(both[0].start, 1_751_130_000);
        assert_eq!(both[0].end, both[1].start);
        assert_eq!(both[1].end - both[1].start, 2 * 86_400);
        let before = requests(day("2025-06-01"), day("2025-06-30"), zone);
        assert_eq!(before.len(), 1);
        assert_eq!(before[0].api, Api::Conversations);
        let after = requests(day("2025-07-01"), day("2025-07-01"), zone);
        assert_eq!(
            after.iter().map(|r| r.api).collect::<Vec<_>>(),
            [Api::Pricing]
        );
    }

    #[test]
    fn next_pages_stay_on_the_graph_api_and_lose_the_token() {
        let config = FetchConfig {
            waba: "1".into(),
            from: day("2025-07-01"),
            to: day("2025-07-01"),
            granularity: Granularity::Daily,
            time_zone: chrono_tz::UTC,
            out: "out".into(),
            graph_url: "https://graph.facebook.com".into(),
            api_version: API_VERSION.into(),
            token: "secret".into(),
            attempts: 1,
            retry_wait: Duration::ZERO,
            timeout: Duration::from_secs(1),
        };
        assert_eq!(
            follow(
                "https://graph.facebook.com/v21.0/1/pricing_analytics?access_token=secret&after=QVF",
                &config
            )
            .unwrap(),
            "https://graph.facebook.com/v21.0/1/pricing_analytics?after=QVF"
        );
        let elsewhere = follow("https://evil.example/v21.0/1?access_token=x", &config).unwrap_err();
        assert!(
            elsewhere.contains("`https://evil.example/v21.0/1`"),
            "{elsewhere}"
        );
        assert!(!elsewhere.contains("access_token"), "{elsewhere}");
        assert!(follow("https://graph.facebook.com.evil.example/x", &config).is_err());
        let plain = FetchConfig {
            graph_url: "http://graph.facebook.com".into(),
            ..config.clone()
        };
        assert!(plain
            .check()
            .unwrap_err()
            .to_string()
            .contains("plain http"));
        let local = FetchConfig {
            graph_url: "http://127.0.0.1:8080".into(),
            ..config.clone()
        };
        local.check().unwrap();
        assert!(config
            .first_address(&requests(config.from, config.to, config.time_zone)[0])
            .ends_with("?fields=pricing_analytics.start(1751328000).end(1751414400).granularity(DAILY).dimensions(%5B%22PRICING_CATEGORY%22,%22PRICING_TYPE%22,%22COUNTRY%22,%22PHONE%22,%22TIER%22%5D)"));
    }
}
