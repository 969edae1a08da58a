//! `report.html`: the run's outputs summed up for people (finance, account managers), as one
//! self-contained page: no scripts, fonts, styles or images from elsewhere, so it opens from a
//! mail attachment or a file share. Charts are SVG drawn by `plotters`, inline.
//!
//! The page holds no wall-clock time: the same run gives the same bytes. Each chart is a
//! `<figure>` with `data-chart`, `data-series` and `data-points` attributes, one `<polyline>`
//! per series, and the same numbers in a table beneath it.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use plotters::prelude::*;
use polars::prelude::*;
use rust_decimal::Decimal;

use crate::error::Result;
use crate::rating::Invoice;
use crate::schema::{self, DAY_NS};
use crate::write::Manifest;

/// The file's name in the output folder.
pub const REPORT_FILE: &str = "report.html";

/// Accounts shown in the chart of quota against allowance and in the top list.
pub const TOP_ACCOUNTS: usize = 15;

/// Counts of the sessions and violations a run writes, gathered as they are written, each on
/// its day in its account's time zone: the days of a period are the days of its month.
#[derive(Debug, Clone, Default)]
pub struct Tally {
    /// Period → (local day from the epoch, `channel / initiation`) → sessions started that day.
    pub sessions: BTreeMap<String, BTreeMap<(i64, String), u64>>,
    /// Period → (local day, reason) → violations.
    pub violations: BTreeMap<String, BTreeMap<(i64, String), u64>>,
    zones: Zones,
}

/// Each account's time zone, as the rate card says (UTC for every account by default).
#[derive(Debug, Clone, Default)]
struct Zones {
    default: Option<chrono_tz::Tz>,
    accounts: std::collections::HashMap<String, chrono_tz::Tz>,
}

impl Zones {
    fn of(&self, account_id: &str) -> chrono_tz::Tz {
        self.accounts
            .get(account_id)
            .copied()
            .or(self.default)
            .unwrap_or(chrono_tz::UTC)
    }
}

/// The local days a UTC day overlaps in one zone: the first, and the instants (UTC
/// nanoseconds) the next two start.
#[derive(Debug, Clone, Copy)]
struct DaySplit {
    first: i64,
    next: [i64; 2],
}

impl DaySplit {
    fn new(tz: chrono_tz::Tz, utc_day: i64) -> Self {
        use chrono::TimeZone;
        let first = tz.timestamp_nanos(utc_day * DAY_NS).date_naive();
        let next = |days| {
            first
                .checked_add_days(chrono::Days::new(days))
                .map_or(i64::MAX, |day| crate::rates::local_midnight(day, tz))
        };
        DaySplit {
            first: epoch_day(first),
            next: [next(1), next(2)],
        }
    }

    /// The local day of `ns`, an instant of the UTC day.
    fn day_of(&self, ns: i64) -> i64 {
        self.first + i64::from(ns >= self.next[0]) + i64::from(ns >= self.next[1])
    }
}

/// Local days of instants: one [`DaySplit`] per account and UTC day met.
struct LocalDays<'a> {
    zones: &'a Zones,
    splits: PlHashMap<(&'a str, i64), DaySplit>,
}

impl<'a> LocalDays<'a> {
    fn new(zones: &'a Zones) -> Self {
        LocalDays {
            zones,
            splits: PlHashMap::default(),
        }
    }

    /// The day (from the epoch) in `account_id`'s zone that holds `ns`.
    fn day(&mut self, account_id: &'a str, ns: i64) -> i64 {
        let utc_day = ns.div_euclid(DAY_NS);
        self.splits
            .entry((account_id, utc_day))
            .or_insert_with(|| DaySplit::new(self.zones.of(account_id), utc_day))
            .day_of(ns)
    }
}

/// The date `day` days from the epoch ([`epoch_day`]'s inverse).
fn epoch_date(day: i64) -> Option<chrono::NaiveDate> {
    chrono::NaiveDate::default().checked_add_signed(chrono::TimeDelta::try_days(day)?)
}

/// A date as days from the epoch.
fn epoch_day(day: chrono::NaiveDate) -> i64 {
    day.signed_duration_since(chrono::NaiveDate::default())
        .num_days()
}

impl Tally {
    /// An empty tally that counts each account's sessions and violations on the days of its
    /// zone in `card`.
    pub fn in_zones_of(card: &crate::rates::RateCard) -> Self {
        Tally {
            zones: Zones {
                default: Some(card.default_time_zone),
                accounts: card
                    .accounts
                    .iter()
                    .map(|(account, terms)| (account.clone(), terms.time_zone))
                    .collect(),
            },
            ..Tally::default()
        }
    }

    /// Adds a piece of `sessions.parquet` and of `violations.parquet`.
    pub fn add(&mut self, sessions: &DataFrame, violations: &DataFrame) -> Result<()> {
        self.add_sessions(sessions)?;
        self.add_violations(violations)
    }

    /// Adds sessions (`account_id`, `started_at`, `channel`, `initiation`, `period`). Rows
    /// are counted by their borrowed strings first: one owned key per distinct day and series,
    /// not per row.
    pub fn add_sessions(&mut self, sessions: &DataFrame) -> Result<()> {
        let accounts = sessions.column(schema::ACCOUNT_ID)?.str()?;
        let starts = sessions.column("started_at")?.to_physical_repr();
        let starts = starts.i64()?;
        let channels = sessions.column(schema::CHANNEL)?.str()?;
        let initiations = sessions.column("initiation")?.str()?;
        let periods = sessions.column("period")?.str()?;
        let mut days = LocalDays::new(&self.zones);
        let mut counts: PlHashMap<(&str, i64, &str, &str), u64> = PlHashMap::default();
        for ((((account, start), channel), initiation), period) in accounts
            .iter()
            .zip(starts.iter())
            .zip(channels.iter())
            .zip(initiations.iter())
            .zip(periods.iter())
        {
            if let (Some(account), Some(start), Some(channel), Some(initiation), Some(period)) =
                (account, start, channel, initiation, period)
            {
                let day = days.day(account, start);
                *counts
                    .entry((period, day, channel, initiation))
                    .or_default() += 1;
            }
        }
        for ((period, day, channel, initiation), n) in counts {
            *self
                .sessions
                .entry(period.to_string())
                .or_default()
                .entry((day, format!("{channel} / {initiation}")))
                .or_default() += n;
        }
        Ok(())
    }

    /// Adds violations (`account_id`, `timestamp`, `reason`, `period`).
    pub fn add_violations(&mut self, violations: &DataFrame) -> Result<()> {
        let accounts = violations.column(schema::ACCOUNT_ID)?.str()?;
        let times = violations.column(schema::TIMESTAMP)?.to_physical_repr();
        let times = times.i64()?;
        let reasons = violations.column("reason")?.str()?;
        let periods = violations.column("period")?.str()?;
        let mut days = LocalDays::new(&self.zones);
        let mut counts: PlHashMap<(&str, i64, &str), u64> = PlHashMap::default();
        for (((account, time), reason), period) in accounts
            .iter()
            .zip(times.iter())
            .zip(reasons.iter())
            .zip(periods.iter())
        {
            if let (Some(account), Some(time), Some(reason), Some(period)) =
                (account, time, reason, period)
            {
                *counts
                    .entry((period, days.day(account, time), reason))
                    .or_default() += 1;
            }
        }
        for ((period, day, reason), n) in counts {
            *self
                .violations
                .entry(period.to_string())
                .or_default()
                .entry((day, reason.to_string()))
                .or_default() += n;
        }
        Ok(())
    }

    /// The counts as rows, for a night's `night.json`.
    pub fn rows(&self) -> TallyRows {
        let rows = |counts: &BTreeMap<String, BTreeMap<(i64, String), u64>>| {
            counts
                .iter()
                .flat_map(|(period, days)| {
                    days.iter().map(move |((day, of), n)| TallyRow {
                        period: period.clone(),
                        day: epoch_date(*day).unwrap_or_default(),
                        of: of.clone(),
                        n: *n,
                    })
                })
                .collect()
        };
        TallyRows {
            sessions: rows(&self.sessions),
            violations: rows(&self.violations),
        }
    }

    /// Adds counts kept as [`Tally::rows`].
    pub fn add_rows(&mut self, rows: &TallyRows) {
        let add = |counts: &mut BTreeMap<String, BTreeMap<(i64, String), u64>>,
                   rows: &[TallyRow]| {
            for row in rows {
                *counts
                    .entry(row.period.clone())
                    .or_default()
                    .entry((epoch_day(row.day), row.of.clone()))
                    .or_default() += row.n;
            }
        };
        add(&mut self.sessions, &rows.sessions);
        add(&mut self.violations, &rows.violations);
    }
}

/// A [`Tally`] as rows: what a night keeps in its `night.json` for the month-to-date report.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TallyRows {
    /// Sessions per period, day of their start (in the account's zone) and
    /// `channel / initiation`.
    pub sessions: Vec<TallyRow>,
    /// Violations per period, day (in the account's zone) and reason.
    pub violations: Vec<TallyRow>,
}

/// One count of a [`TallyRows`].
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TallyRow {
    pub period: String,
    /// The day in the account's zone.
    pub day: chrono::NaiveDate,
    /// The series: `channel / initiation`, or the violation's reason.
    pub of: String,
    pub n: u64,
}

/// What a page shows: a whole run's or a nightly history's month to date.
pub struct Page<'a> {
    /// What the page is of, under its title.
    pub of: String,
    pub program: &'a crate::write::Program,
    pub rule_set: &'a str,
    pub rate_card: &'a str,
    pub input: &'a str,
    pub invoices: &'a [Invoice],
    pub summary: &'a crate::write::InvoiceSummary,
    /// Sessions on the invoices.
    pub sessions: u64,
    /// (element id, label, count) of what was read and set aside.
    pub counts: Vec<(&'static str, &'static str, u64)>,
    /// Sessions and violations per day (whole runs).
    pub tally: Option<&'a Tally>,
    /// The nights of a history, with what each read and did (if its state is kept).
    pub nights: Option<Vec<(chrono::NaiveDate, Option<crate::nightly::night::NightStats>)>>,
    /// Input files that arrived after the nights of their messages had run: what each holds
    /// that is not billed, and what to do.
    pub late: Vec<String>,
    /// The periods a history's nights have closed, each with its page under `closed/` (the
    /// month-to-date page links them).
    pub closed: Vec<String>,
    /// A history's month to date: later nights extend what its invoices cover.
    pub continues: bool,
    /// A closed period's page: the link back to the month to date.
    pub back: Option<&'static str>,
}

/// The page of a whole run, from its manifest, its invoices (with their lines) and the tally
/// of its sessions and violations.
pub fn render(manifest: &Manifest, invoices: &[Invoice], tally: &Tally) -> String {
    let stats = &manifest.input.stats;
    render_page(&Page {
        of: "a whole run".to_string(),
        program: &manifest.program,
        rule_set: manifest.rule_set,
        rate_card: &manifest.rate_card.source,
        input: &manifest.input.path,
        invoices,
        summary: &manifest.invoices,
        sessions: manifest.sessions.sessions,
        counts: vec![
            ("rows-read", "messages read", stats.rows_read),
            ("duplicates", "duplicates dropped", stats.duplicates_dropped),
            ("rejected", "rows rejected", stats.rows_rejected),
            ("violations", "violations", manifest.sessions.violations),
        ],
        tally: Some(tally),
        nights: None,
        late: Vec::new(),
        closed: Vec::new(),
        continues: false,
        back: None,
    })
}

/// The page.
pub fn render_page(p: &Page) -> String {
    let invoices = p.invoices;
    let mut page = String::new();
    page.push_str(HEAD);
    let _ = write!(
        page,
        "<h1>convbill report</h1>\n<p class=\"meta\">{} &middot; {} {} &middot; rule set {} &middot; rate card {} &middot; input <code>{}</code></p>\n",
        esc(&p.of),
        esc(p.program.name),
        esc(p.program.version),
        esc(p.rule_set),
        esc(p.rate_card),
        esc(p.input),
    );
    if let Some(back) = p.back {
        let _ = writeln!(
            page,
            "<p id=\"back\"><a href=\"{back}\">The month to date</a> links every closed period.</p>"
        );
    }
    if p.rate_card == crate::rates::BUILT_IN {
        // Its quota has no allowance and no price: every unit would read as overage.
        page.push_str(
            "<p class=\"note\" id=\"built-in-card\">Rated by the built-in rate card: every \
             account in UTC, no allowance and no price, so all quota shows as overage at 0 \
             (currency XXX, none). Give <code>--rates</code> with the accounts' plans for \
             allowances and amounts.</p>\n",
        );
    }
    if !p.late.is_empty() {
        page.push_str("<h2>Late input</h2>\n<ul class=\"note\" id=\"late-input\">\n");
        for late in &p.late {
            let _ = writeln!(page, "<li>{}</li>", esc(late));
        }
        page.push_str("</ul>\n");
    }
    totals_section(&mut page, p);
    if let Some(nights) = &p.nights {
        nights_section(&mut page, nights);
    }
    if !p.closed.is_empty() {
        let links: Vec<String> = p
            .closed
            .iter()
            .map(|period| {
                format!(
                    "<a href=\"../closed/period={0}/report.html\">{0}</a>",
                    esc(period)
                )
            })
            .collect();
        let _ = writeln!(
            page,
            "<p id=\"closed-periods\">Periods the nights have closed, each on its own page with its invoices as closed: {}.</p>",
            links.join(", ")
        );
    }
    let mut by_period: BTreeMap<&str, Vec<&Invoice>> = BTreeMap::new();
    for invoice in invoices {
        by_period.entry(&invoice.period).or_default().push(invoice);
    }
    let empty = BTreeMap::new();
    for (period, list) in by_period {
        let _ = writeln!(page, "<h2 id=\"period-{0}\">Period {0}</h2>", esc(period));
        let Some(tally) = p.tally else {
            quota_section(&mut page, period, list);
            continue;
        };
        let sessions = tally.sessions.get(period).unwrap_or(&empty);
        let violations = tally.violations.get(period).unwrap_or(&empty);
        // Both charts of a period span the days of its month; a day the input (or the nights)
        // did not cover for any of its invoices is left out of the lines, not drawn as 0.
        let covered = covered_days(&list);
        let counted: std::collections::BTreeSet<i64> = sessions
            .keys()
            .chain(violations.keys())
            .map(|(day, _)| *day)
            .collect();
        let days = chart_days(period, &counted);
        let covered: Vec<Cover> = days
            .iter()
            .map(|day| match covered.get(day) {
                Some(cover) => *cover,
                None if counted.contains(day) => Cover::Part,
                None => Cover::None,
            })
            .collect();
        page.push_str("<h3>Sessions per day, by channel and initiation</h3>\n");
        page.push_str(&line_chart(
            &format!("sessions-{period}"),
            "sessions started per day",
            "sessions",
            (&days, &covered),
            sessions,
        ));
        page.push_str("<h3>Violations per day, by reason</h3>\n");
        page.push_str(&line_chart(
            &format!("violations-{period}"),
            "violations per day",
            "violations",
            (&days, &covered),
            violations,
        ));
        quota_section(&mut page, period, list);
    }
    invoices_section(&mut page, invoices, p.continues);
    page.push_str("</body>\n</html>\n");
    page
}

const HEAD: &str = r#"<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>convbill report</title>
<style>
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1000px; color: #222; }
h1 { margin-bottom: 0.2em; }
h2 { margin-top: 2em; border-bottom: 1px solid #ccc; }
.meta { color: #555; }
.note { background: #fff6d6; padding: 0.4em 0.6em; }
table { border-collapse: collapse; margin: 0.5em 0 1em; font-size: 0.9em; }
th, td { border: 1px solid #ddd; padding: 0.2em 0.5em; text-align: right; }
th:first-child, td:first-child, td.text { text-align: left; }
td { overflow-wrap: anywhere; }
thead th { background: #f3f3f3; }
figure { margin: 0.5em 0; }
figure svg { max-width: 100%; height: auto; }
.legend span { display: inline-block; width: 1em; height: 0.6em; margin: 0 0.3em 0 1em; }
details { margin: 0.2em 0; }
</style>
</head>
<body>
"#;

/// HTML text: `&`, `<`, `>` and `"` escaped.
fn esc(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// The anchor of an invoice's lines.
fn anchor(invoice_id: &str) -> String {
    format!("invoice-{}", esc(invoice_id))
}

/// The totals per period, then the run's input counts.
fn totals_section(page: &mut String, p: &Page) {
    let invoices = p.invoices;
    #[derive(Default)]
    struct Sums {
        invoices: u64,
        sessions: i64,
        billable: i64,
        quota: i64,
        amounts: BTreeMap<String, Decimal>,
        statuses: BTreeMap<&'static str, u64>,
    }
    let mut periods: BTreeMap<&str, Sums> = BTreeMap::new();
    for invoice in invoices {
        let sums = periods.entry(&invoice.period).or_default();
        sums.invoices += 1;
        sums.sessions += invoice.totals.sessions;
        sums.billable += invoice.totals.billable_sessions;
        sums.quota += invoice.totals.quota;
        *sums.amounts.entry(invoice.currency.clone()).or_default() += invoice.totals.amount;
        *sums.statuses.entry(invoice.status).or_default() += 1;
    }
    page.push_str("<h2>Totals</h2>\n<table id=\"totals\">\n<thead><tr><th>period</th><th>invoices</th><th>status</th><th>sessions</th><th>billable</th><th>quota</th><th>amount</th></tr></thead>\n<tbody>\n");
    for (period, sums) in &periods {
        let _ = writeln!(
            page,
            "<tr><td>{}</td><td>{}</td><td class=\"text\">{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(period),
            grouped(sums.invoices),
            sums.statuses
                .iter()
                .map(|(status, n)| format!("{} {status}", grouped(n)))
                .collect::<Vec<_>>()
                .join(", "),
            grouped(sums.sessions),
            grouped(sums.billable),
            grouped(sums.quota),
            amounts(&sums.amounts),
        );
    }
    let summary = p.summary;
    let _ = writeln!(
        page,
        "</tbody>\n<tfoot><tr><th>all</th><td id=\"total-invoices\">{}</td><td></td><td id=\"total-sessions\">{}</td><td>{}</td><td id=\"total-quota\">{}</td><td id=\"total-amount\">{}</td></tr></tfoot>\n</table>",
        grouped(summary.invoices),
        grouped(p.sessions),
        grouped(periods.values().map(|s| s.billable).sum::<i64>()),
        grouped(summary.quota),
        amounts(&summary.amounts),
    );
    if p.counts.is_empty() {
        return;
    }
    page.push_str("<table id=\"input\">\n<tbody>\n");
    for (id, label, n) in &p.counts {
        let _ = writeln!(
            page,
            "<tr><td>{label}</td><td id=\"{id}\">{}</td></tr>",
            grouped(n)
        );
    }
    page.push_str("</tbody>\n</table>\n");
}

/// The nights the nights table shows, the newest.
pub const NIGHTS_SHOWN: usize = 31;

/// The nights of a history, newest first, with what each read and did: the last
/// [`NIGHTS_SHOWN`], then how many earlier ones there are.
fn nights_section(
    page: &mut String,
    nights: &[(chrono::NaiveDate, Option<crate::nightly::night::NightStats>)],
) {
    let (Some(first), Some(last)) = (nights.first(), nights.last()) else {
        return;
    };
    let _ = writeln!(
        page,
        "<h2>Nights</h2>\n<p id=\"nights\">{} nights have run, from {} to {}.</p>",
        grouped(nights.len()),
        first.0,
        last.0
    );
    page.push_str("<table id=\"nights-table\">\n<thead><tr><th>night</th><th>messages read</th><th>duplicates</th><th>rejected</th><th>sessions closed</th><th>sessions open</th><th>violations</th></tr></thead>\n<tbody>\n");
    for (night, stats) in nights.iter().rev().take(NIGHTS_SHOWN) {
        match stats {
            Some(s) => {
                let _ = writeln!(
                    page,
                    "<tr><td>{night}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                    grouped(s.rows_read),
                    grouped(s.duplicates_within_night + s.duplicates_of_earlier_nights),
                    grouped(s.rows_rejected),
                    grouped(s.sessions_closed),
                    grouped(s.sessions_open),
                    grouped(s.violations),
                );
            }
            None => {
                let _ = writeln!(
                    page,
                    "<tr><td>{night}</td><td colspan=\"6\">(its state is no longer kept)</td></tr>"
                );
            }
        }
    }
    page.push_str("</tbody>\n</table>\n");
    if let Some(earlier) = nights.len().checked_sub(NIGHTS_SHOWN).filter(|n| *n > 0) {
        let _ = writeln!(
            page,
            "<p id=\"earlier-nights\">The table shows the last {NIGHTS_SHOWN} nights; the {} before them, from {} to {}, are in <code>state/date=YYYY-MM-DD/night.json</code>.</p>",
            count(earlier as u64, "night"),
            first.0,
            nights[earlier - 1].0
        );
    }
}

/// Amounts per currency as text: `1,012.50 EUR, 3.00 USD`.
fn amounts(amounts: &BTreeMap<String, Decimal>) -> String {
    let parts: Vec<String> = amounts
        .iter()
        .map(|(currency, amount)| format!("{} {}", grouped(amount), esc(currency)))
        .collect();
    parts.join(", ")
}

/// `n noun(s)`, the number grouped.
fn count(n: impl Into<i128>, noun: &str) -> String {
    match n.into() {
        1 => format!("1 {noun}"),
        n => format!("{} {noun}s", grouped(n)),
    }
}

/// A number as people read it: its whole part in groups of three digits (`12,345`,
/// `-1,234.50`); the files keep the plain digits.
fn grouped(number: impl std::fmt::Display) -> String {
    let text = number.to_string();
    let (sign, rest) = match text.strip_prefix('-') {
        Some(rest) => ("-", rest),
        None => ("", text.as_str()),
    };
    let (whole, fraction) = match rest.find('.') {
        Some(at) => rest.split_at(at),
        None => (rest, ""),
    };
    let mut out = String::from(sign);
    for (i, digit) in whole.chars().enumerate() {
        if i > 0 && (whole.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(digit);
    }
    out.push_str(fraction);
    out
}

/// A line chart of `counts` ((day, series) → count): one line per series over `days`
/// (consecutive; a covered day without a count is 0, a day not covered is a gap in the lines
/// and says so in the table), then the numbers as a table.
fn line_chart(
    id: &str,
    caption: &str,
    what: &str,
    (days, covered): (&[i64], &[Cover]),
    counts: &BTreeMap<(i64, String), u64>,
) -> String {
    let mut series: BTreeMap<&str, Vec<u64>> = BTreeMap::new();
    for ((day, name), count) in counts {
        let values = series
            .entry(name.as_str())
            .or_insert_with(|| vec![0; days.len()]);
        let at = days
            .binary_search(day)
            .expect("the chart's days hold every day counted");
        values[at] = *count;
    }
    if series.is_empty() || days.is_empty() {
        return format!(
            "<figure data-chart=\"{id}\" data-series=\"0\" data-points=\"0\">\n<figcaption>none</figcaption>\n</figure>\n"
        );
    }
    // The runs of consecutive covered days, as ranges of `days`' indices.
    let mut runs: Vec<std::ops::Range<usize>> = Vec::new();
    for (at, _) in covered
        .iter()
        .enumerate()
        .filter(|(_, c)| **c != Cover::None)
    {
        match runs.last_mut() {
            Some(run) if run.end == at => run.end = at + 1,
            _ => runs.push(at..at + 1),
        }
    }
    let mut out = format!(
        "<figure data-chart=\"{id}\" data-series=\"{}\" data-points=\"{}\" data-covered=\"{}\" data-part=\"{}\">\n",
        series.len(),
        days.len(),
        covered.iter().filter(|c| **c != Cover::None).count(),
        covered.iter().filter(|c| **c == Cover::Part).count(),
    );
    let top = series.values().flatten().copied().max().unwrap_or(0).max(1);
    let (first, last) = (days[0], days[days.len() - 1]);
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (960, 360)).into_drawing_area();
        root.fill(&WHITE).expect("drawing into a string");
        let mut chart = ChartBuilder::on(&root)
            .caption(caption, ("sans-serif", 20))
            .margin(12)
            .margin_right(40)
            .x_label_area_size(45)
            .y_label_area_size(80)
            .build_cartesian_2d(first..last.max(first + 1), 0..top + top / 10 + 1)
            .expect("a chart's ranges are not empty");
        chart
            .configure_mesh()
            // The first day and every seventh after it: the 1st, 8th, 15th ... of a month.
            .x_labels(days.len())
            .x_label_formatter(&|day| match (*day - first).rem_euclid(7) {
                0 => day_name(*day),
                _ => String::new(),
            })
            .y_label_formatter(&|count| grouped(count))
            .x_desc("day, in each account's time zone")
            .y_desc(what)
            .label_style(("sans-serif", 16))
            .axis_desc_style(("sans-serif", 17))
            .draw()
            .expect("drawing into a string");
        for (i, values) in series.values().enumerate() {
            for run in &runs {
                let points: Vec<(i64, u64)> =
                    run.clone().map(|at| (days[at], values[at])).collect();
                chart
                    .draw_series(LineSeries::new(points.clone(), color(i).stroke_width(2)))
                    .expect("drawing into a string");
                // A dot on each day, hollow on a day covered in part: a series of one day is
                // seen too.
                chart
                    .draw_series(points.into_iter().zip(run.clone()).map(|(p, at)| {
                        match covered[at] {
                            Cover::Whole => Circle::new(p, 3, color(i).filled()),
                            _ => Circle::new(p, 6, color(i).stroke_width(2)),
                        }
                    }))
                    .expect("drawing into a string");
            }
        }
        root.present().expect("drawing into a string");
    }
    out.push_str(&svg);
    out.push_str("\n<figcaption class=\"legend\">");
    for (i, name) in series.keys().enumerate() {
        let c = color(i);
        let _ = write!(
            out,
            "<span style=\"background: rgb({}, {}, {})\"></span>{}",
            c.0,
            c.1,
            c.2,
            esc(name)
        );
    }
    if runs.len() != 1 || runs[0] != (0..days.len()) {
        out.push_str(
            "<br>A gap in the lines: days the input (or the nights run so far) does not cover.",
        );
    }
    if covered.contains(&Cover::Part) {
        out.push_str("<br>A hollow dot: a day covered only in part (some account's day starts or ends outside what the input or the nights cover), so its counts are not the whole day's.");
    }
    out.push_str("</figcaption>\n</figure>\n<details><summary>the numbers</summary>\n<table>\n<thead><tr><th>day</th>");
    for name in series.keys() {
        let _ = write!(out, "<th>{}</th>", esc(name));
    }
    out.push_str("</tr></thead>\n<tbody>\n");
    for (at, day) in days.iter().enumerate() {
        if covered[at] == Cover::None {
            let _ = writeln!(
                out,
                "<tr class=\"uncovered\"><td>{}</td><td class=\"text\" colspan=\"{}\">not covered</td></tr>",
                day_name(*day),
                series.len()
            );
            continue;
        }
        let part = match covered[at] {
            Cover::Part => " (part of the day)",
            _ => "",
        };
        let _ = write!(out, "<tr><td>{}{part}</td>", day_name(*day));
        for values in series.values() {
            let _ = write!(out, "<td>{}</td>", grouped(values[at]));
        }
        out.push_str("</tr>\n");
    }
    out.push_str("</tbody>\n</table>\n</details>\n");
    out
}

/// The i-th series' colour.
fn color(i: usize) -> RGBColor {
    const COLORS: [RGBColor; 8] = [
        RGBColor(31, 119, 180),
        RGBColor(255, 127, 14),
        RGBColor(44, 160, 44),
        RGBColor(214, 39, 40),
        RGBColor(148, 103, 189),
        RGBColor(140, 86, 75),
        RGBColor(227, 119, 194),
        RGBColor(127, 127, 127),
    ];
    COLORS[i % COLORS.len()]
}

/// A day from the epoch as `YYYY-MM-DD`.
fn day_name(day: i64) -> String {
    epoch_date(day)
        .map(|d| d.format("%Y-%m-%d").to_string())
        .unwrap_or_default()
}

/// The days (from the epoch) a period's charts span: the days of its month, and any other
/// day with a count (a night kept by an earlier version counted UTC days, and the first or
/// last may fall outside).
fn chart_days(period: &str, counted: &std::collections::BTreeSet<i64>) -> Vec<i64> {
    let month = crate::rates::first_day(period).map(|first| {
        let next = first
            .checked_add_months(chrono::Months::new(1))
            .unwrap_or(first);
        (epoch_day(first), epoch_day(next) - 1)
    });
    let counted = counted.first().zip(counted.last());
    match (month, counted) {
        (Some((first, last)), Some((least, most))) => {
            (first.min(*least)..=last.max(*most)).collect()
        }
        (Some((first, last)), None) => (first..=last).collect(),
        (None, Some((least, most))) => (*least..=*most).collect(),
        (None, None) => Vec::new(),
    }
}

/// How much of a day the charts' counts cover.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cover {
    /// No invoice of the period covers any of it.
    None,
    /// Some invoice covers only part of it: its counts are not the whole day's.
    Part,
    /// Every invoice that reaches into it covers all of it.
    Whole,
}

/// The days (from the epoch, in each account's zone) that `invoices` cover, in part or whole:
/// each invoice covers its `coverage_start` to its `coverage_end` less the stretches it says
/// are `uncovered`. A day one invoice covers whole and another not at all (its coverage ends
/// before the day starts in its zone) is whole: only the invoices that reach into it count.
fn covered_days(invoices: &[&Invoice]) -> BTreeMap<i64, Cover> {
    use chrono::{NaiveDateTime, NaiveTime};
    let local = |text: &str| {
        chrono::DateTime::parse_from_rfc3339(text)
            .ok()
            .map(|t| t.naive_local())
    };
    let mut days: BTreeMap<i64, Cover> = BTreeMap::new();
    for invoice in invoices {
        let (Some(start), Some(end)) =
            (local(&invoice.coverage_start), local(&invoice.coverage_end))
        else {
            continue;
        };
        let gaps: Vec<(NaiveDateTime, NaiveDateTime)> = invoice
            .uncovered
            .iter()
            .filter_map(|s| Some((local(&s.from)?, local(&s.to)?)))
            .collect();
        let mut day = start.date();
        while day.and_time(NaiveTime::MIN) < end {
            let Some(next) = day.succ_opt() else { break };
            let (from, to) = (day.and_time(NaiveTime::MIN), next.and_time(NaiveTime::MIN));
            // The part of the day within the coverage; a gap may take some or all of it.
            let (a, b) = (from.max(start), to.min(end));
            let gapped = gaps.iter().any(|(g, h)| *g < b && a < *h);
            let lost = gaps.iter().any(|(g, h)| *g <= a && b <= *h);
            let cover = match (lost, a == from && b == to && !gapped) {
                (true, _) => Cover::None,
                (false, true) => Cover::Whole,
                (false, false) => Cover::Part,
            };
            if cover != Cover::None {
                let known = days.entry(epoch_day(day)).or_insert(cover);
                if cover == Cover::Part {
                    *known = Cover::Part;
                }
            }
            day = next;
        }
    }
    days
}

/// The period's accounts with the most quota against their allowance (a bar chart), and
/// the same accounts by amount.
fn quota_section(page: &mut String, period: &str, mut list: Vec<&Invoice>) {
    let _ = writeln!(
        page,
        "<h3>Quota against allowance: the {TOP_ACCOUNTS} accounts with the most quota</h3>"
    );
    list.sort_by(|a, b| {
        b.totals
            .quota
            .cmp(&a.totals.quota)
            .then(a.account_id.cmp(&b.account_id))
    });
    list.truncate(TOP_ACCOUNTS);
    page.push_str(&bar_chart(&format!("quota-{period}"), &list));
    // Amounts compare within a currency only; `#` is the account's place on the chart.
    let mut by_amount: Vec<(usize, &Invoice)> = list
        .iter()
        .enumerate()
        .map(|(rank, i)| (rank + 1, *i))
        .collect();
    by_amount.sort_by(|(_, a), (_, b)| {
        a.currency
            .cmp(&b.currency)
            .then(b.totals.amount.cmp(&a.totals.amount))
            .then(a.account_id.cmp(&b.account_id))
    });
    page.push_str("<h3>Those accounts by currency and amount</h3>\n<table class=\"top\">\n<thead><tr><th>account</th><th>#</th><th>sessions</th><th>quota</th><th>allowance</th><th>overage</th><th>amount</th></tr></thead>\n<tbody>\n");
    for (rank, invoice) in by_amount {
        let _ = writeln!(
            page,
            "<tr><td><a href=\"#{}\">{}</a></td><td>{rank}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{} {}</td></tr>",
            anchor(&invoice.invoice_id),
            esc(&invoice.account_id),
            grouped(invoice.totals.sessions),
            grouped(invoice.totals.quota),
            grouped(invoice.allowance),
            grouped(invoice.totals.overage_quota),
            grouped(invoice.totals.amount),
            esc(&invoice.currency),
        );
    }
    page.push_str("</tbody>\n</table>\n");
}

/// The bar chart's areas for the labels beneath and left of its plot, in pixels.
const BAR_CHART_X_LABELS: u32 = 55;
const BAR_CHART_Y_LABELS: u32 = 80;

/// The width and height of the bar chart's plot, in pixels: the drawing (960 by 360) less its
/// margins and the axis labels' areas.
const BAR_CHART_PLOT_WIDTH: usize = 960 - 2 * 12 - BAR_CHART_Y_LABELS as usize;
const BAR_CHART_PLOT_HEIGHT: u32 = 360 - 2 * 12 - BAR_CHART_X_LABELS;

/// The width of a character of an axis label, in pixels, at most (labels are about 13 pixels
/// high, plotters' size 16; digits and most letters are narrower).
const LABEL_CHAR_WIDTH: usize = 9;

/// `name` in at most `room` characters: cut short with `…` when longer.
fn fitted(name: &str, room: usize) -> String {
    match name.chars().count() > room {
        true => name.chars().take(room - 1).chain(['…']).collect(),
        false => name.to_string(),
    }
}

/// Quota and allowance of each account, as two bars side by side (`data-series` 2, a point
/// per account).
fn bar_chart(id: &str, accounts: &[&Invoice]) -> String {
    let mut out = format!(
        "<figure data-chart=\"{id}\" data-series=\"2\" data-points=\"{}\">\n",
        accounts.len()
    );
    if accounts.is_empty() {
        out.push_str("<figcaption>none</figcaption>\n</figure>\n");
        return out;
    }
    let series: [(&str, Vec<i64>); 2] = [
        ("quota", accounts.iter().map(|i| i.totals.quota).collect()),
        ("allowance", accounts.iter().map(|i| i.allowance).collect()),
    ];
    let top = series
        .iter()
        .flat_map(|(_, v)| v)
        .copied()
        .max()
        .unwrap_or(0)
        .max(1) as f64;
    // Each bar's place on the chart, then its account's name, fitted to its bars' width or
    // cut short with `…`: the table beneath gives the same place and the name in full.
    let room = (BAR_CHART_PLOT_WIDTH / accounts.len() / LABEL_CHAR_WIDTH).max(3);
    let names: Vec<String> = accounts
        .iter()
        .enumerate()
        .map(|(rank, i)| fitted(&format!("{} {}", rank + 1, i.account_id), room))
        .collect();
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (960, 360)).into_drawing_area();
        root.fill(&WHITE).expect("drawing into a string");
        let n = accounts.len() as f64;
        let mut chart = ChartBuilder::on(&root)
            .margin(12)
            .x_label_area_size(BAR_CHART_X_LABELS)
            .y_label_area_size(BAR_CHART_Y_LABELS)
            .build_cartesian_2d(-0.5..n - 0.5, 0.0..top * 1.1)
            .expect("a chart's ranges are not empty");
        chart
            .configure_mesh()
            .disable_x_mesh()
            .x_labels(accounts.len())
            .x_label_formatter(&|x| {
                let rank = x.round();
                match (rank - x).abs() < 1e-6 && rank >= 0.0 {
                    true => names.get(rank as usize).cloned().unwrap_or_default(),
                    false => String::new(),
                }
            })
            // Quota is whole: a label between two whole numbers would repeat one of them.
            .y_labels((top as usize + 1).min(10))
            .y_label_formatter(&|y| match y.fract() == 0.0 {
                true => grouped(format!("{y:.0}")),
                false => String::new(),
            })
            .x_desc("account, by quota (# in the table beneath)")
            .y_desc("quota units")
            .label_style(("sans-serif", 16))
            .axis_desc_style(("sans-serif", 17))
            .draw()
            .expect("drawing into a string");
        // A bar of a count more than 0 is at least a few pixels high, however large the
        // others: a quota of 2 beside an allowance of 100,000 is still seen.
        let least = top * 1.1 * 3.0 / f64::from(BAR_CHART_PLOT_HEIGHT);
        for (i, (_, values)) in series.iter().enumerate() {
            let offset = i as f64 * 0.4 - 0.4;
            chart
                .draw_series(values.iter().enumerate().map(|(rank, value)| {
                    let x = rank as f64 + offset;
                    let height = match *value > 0 {
                        true => (*value as f64).max(least),
                        false => 0.0,
                    };
                    Rectangle::new([(x, 0.0), (x + 0.4, height)], color(i).filled())
                }))
                .expect("drawing into a string");
        }
        // Each quota bar's number above it.
        let label = TextStyle::from(("sans-serif", 16).into_font()).pos(
            plotters::style::text_anchor::Pos::new(
                plotters::style::text_anchor::HPos::Center,
                plotters::style::text_anchor::VPos::Bottom,
            ),
        );
        chart
            .draw_series(series[0].1.iter().enumerate().map(|(rank, value)| {
                let x = rank as f64 - 0.2;
                let y = (*value as f64).max(least);
                Text::new(grouped(value), (x, y), label.clone())
            }))
            .expect("drawing into a string");
        root.present().expect("drawing into a string");
    }
    out.push_str(&svg);
    out.push_str("\n<figcaption class=\"legend\">");
    for (i, (name, _)) in series.iter().enumerate() {
        let c = color(i);
        let _ = write!(
            out,
            "<span style=\"background: rgb({}, {}, {})\"></span>{name}",
            c.0, c.1, c.2
        );
    }
    out.push_str("</figcaption>\n</figure>\n");
    out
}

/// Every invoice, with its lines under an anchor.
fn invoices_section(page: &mut String, invoices: &[Invoice], continues: bool) {
    let _ = writeln!(
        page,
        "<h2>Invoices</h2>\n<p>{}</p>",
        match invoices.len() {
            0 => "No invoices.".to_string(),
            n => format!("{}; each opens to its lines.", count(n as u64, "invoice")),
        }
    );
    for invoice in invoices {
        // What a draft covers so far; what a partial invoice covers, and the stretches it is
        // missing.
        let coverage = match invoice.status {
            crate::rating::DRAFT => esc(&format!(
                " (covers {} to {} so far)",
                invoice.coverage_start, invoice.coverage_end
            )),
            crate::rating::PARTIAL => {
                let missing: Vec<String> = invoice
                    .uncovered
                    .iter()
                    .map(|s| format!("{} to {}", s.from, s.to))
                    .collect();
                let whole = invoice.coverage_start == invoice.period_start
                    && invoice.coverage_end == invoice.period_end
                    && missing.is_empty();
                let text = match whole {
                    // Then only a session left open can make it partial.
                    true => " (covers its whole period; a session still open and unanswered where the input ends may still change its quota)".to_string(),
                    false => {
                        let mut text = format!(
                            " (covers {} to {}",
                            invoice.coverage_start, invoice.coverage_end
                        );
                        if !missing.is_empty() {
                            let _ = write!(text, "; missing {}", missing.join(", "));
                        }
                        // A history started after the period's first day: later nights extend
                        // it.
                        if continues {
                            text.push_str(" so far");
                        }
                        text.push(')');
                        text
                    }
                };
                esc(&text)
            }
            _ => String::new(),
        };
        let _ = writeln!(
            page,
            "<details id=\"{}\"><summary>{} &middot; {} &middot; {}{coverage} &middot; {}, quota {} of {} allowed, {} {} &middot; invoice {}</summary>",
            anchor(&invoice.invoice_id),
            esc(&invoice.account_id),
            esc(&invoice.period),
            invoice.status,
            count(invoice.totals.sessions, "session"),
            grouped(invoice.totals.quota),
            grouped(invoice.allowance),
            grouped(invoice.totals.amount),
            esc(&invoice.currency),
            esc(&invoice.invoice_id),
        );
        let _ = writeln!(
            page,
            "<table class=\"lines\">\n<thead><tr><th>channel / initiation / price version</th><th>sessions</th><th>billable</th><th>quota</th><th>within allowance</th><th>overage</th><th>unit price</th><th>amount</th></tr></thead>\n<tbody>"
        );
        for line in &invoice.lines {
            let _ = writeln!(
                page,
                "<tr><td>{} / {} / {}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{} {}</td><td>{} {}</td></tr>",
                esc(&line.channel),
                esc(&line.initiation),
                esc(&line.price_version),
                grouped(line.sessions),
                grouped(line.billable_sessions),
                grouped(line.quota),
                grouped(line.allowance_quota),
                grouped(line.overage_quota),
                grouped(line.unit_price),
                esc(&line.currency),
                grouped(line.amount),
                esc(&line.currency),
            );
        }
        page.push_str("</tbody>\n</table>\n</details>\n");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn day(text: &str) -> i64 {
        epoch_day(text.parse().unwrap())
    }

    fn ns(text: &str) -> i64 {
        chrono::DateTime::parse_from_rfc3339(text)
            .unwrap()
            .timestamp_nanos_opt()
            .unwrap()
    }

    #[test]
    fn a_periods_charts_span_its_month_and_any_day_counted_outside_it() {
        let none = std::collections::BTreeSet::new();
        let february = chart_days("2024-02", &none);
        assert_eq!(
            (february.len(), february[0], february[28]),
            (29, day("2024-02-01"), day("2024-02-29"))
        );
        // A UTC day a night of an earlier version counted, the day before the month.
        let before = std::collections::BTreeSet::from([day("2024-01-31"), day("2024-02-10")]);
        let days = chart_days("2024-02", &before);
        assert_eq!((days.len(), days[0]), (30, day("2024-01-31")));
        assert!(chart_days("not a period", &none).is_empty());
    }

    #[test]
    fn an_instant_is_counted_on_its_day_in_the_accounts_zone() {
        let zones = Zones {
            default: Some(chrono_tz::UTC),
            accounts: [
                ("ktm".to_string(), chrono_tz::Asia::Kathmandu),
                ("nyc".to_string(), chrono_tz::America::New_York),
            ]
            .into(),
        };
        let mut days = LocalDays::new(&zones);
        for (account, instant, expected) in [
            // Kathmandu is 5:45 ahead: its 1 March starts at 18:15 UTC on 29 February.
            ("ktm", "2024-02-29T18:14:59Z", "2024-02-29"),
            ("ktm", "2024-02-29T18:15:00Z", "2024-03-01"),
            ("utc", "2024-02-29T18:15:00Z", "2024-02-29"),
            // New York on the day clocks go forward (10 March 2024, 23 hours long): its
            // 10 March starts at 05:00 UTC, its 11 March at 04:00 UTC.
            ("nyc", "2024-03-10T04:59:59Z", "2024-03-09"),
            ("nyc", "2024-03-10T05:00:00Z", "2024-03-10"),
            ("nyc", "2024-03-11T03:59:59Z", "2024-03-10"),
            ("nyc", "2024-03-11T04:00:00Z", "2024-03-11"),
        ] {
            assert_eq!(
                days.day(account, ns(instant)),
                day(expected),
                "{account} {instant}"
            );
        }
    }
}
