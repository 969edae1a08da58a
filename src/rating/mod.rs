//! Rating: sessions in, priced invoice lines and per-account invoices out, by a rate card
//! ([`crate::rates`]; without `--rates`, the article's built-in card).
//!
//! Two steps, so that nightly runs can add up counts night by night and price them at the end:
//! - [`rate_sessions`] gives each session its billing period (the month holding its start in
//!   the account's zone), the price version in force at its start and its quota units;
//!   [`lines_of`] counts them per line ([`COUNT_COLUMNS`]).
//! - [`invoices_from_lines`] sums the counts, makes one invoice per account and period,
//!   spends the period's allowance and prices the rest ([`LINE_COLUMNS`]).
//!
//! A line is one (account, period, channel, initiation, price version, quota per session).
//! Every line is traceable: filtering `sessions.parquet` on the line's `account_id`, `period`,
//! `channel`, `initiation` and `price_version` gives its sessions; the billable ones cost
//! `quota_per_session` each, and the others nothing.

use std::collections::HashMap;

use chrono::NaiveDate;
use polars::prelude::*;
use rust_decimal::Decimal;
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::error::Result;

mod coverage;
pub(crate) mod frames;
pub mod revision;

use crate::rates::{self, Calendars, RateCard, RateCardError, SessionQuota};
use crate::schema;
use crate::sessions::SESSION_COLUMNS;
pub use coverage::Coverage;
pub(crate) use frames::decimal_column;
use frames::lines_frame;
pub use frames::{invoices_frame, MONEY_PRECISION};

/// The rule set this version implements.
pub const RULE_SET: &str = "quota";

/// Columns of `sessions.parquet`, in order: the derived sessions with their billing period,
/// the price version that rated them and the invoice they are on.
pub const RATED_SESSION_COLUMNS: [&str; 16] = rated_columns(SESSION_COLUMNS);

const fn rated_columns(columns: [&'static str; 14]) -> [&'static str; 16] {
    let mut rated = [INVOICE_ID; 16];
    rated[14] = PRICE_VERSION;
    let mut i = 0;
    while i < columns.len() {
        rated[i] = columns[i];
        i += 1;
    }
    rated
}

const PRICE_VERSION: &str = "price_version";
const INVOICE_ID: &str = "invoice_id";

/// Invoice statuses: the nights run (or the input) cover the whole period and nothing open
/// can change it any more.
pub const FINAL: &str = "final";
/// Nightly runs: the period has not been covered to its end yet, or an open session may still
/// change it; later nights make it `final`.
pub const DRAFT: &str = "draft";
/// The history or input does not cover the whole period (it starts after the period's first
/// instant, or, in a whole run, ends before it is over): it never becomes `final`.
pub const PARTIAL: &str = "partial";
const QUOTA_PER_SESSION: &str = "quota_per_session";

/// What makes an invoice line, besides its quota per session.
const LINE_KEY: [&str; 5] = [
    "account_id",
    "period",
    PRICE_VERSION,
    "channel",
    "initiation",
];

/// Columns of the counted lines [`lines_of`] gives (and nightly runs keep per night).
pub const COUNT_COLUMNS: [&str; 9] = [
    "account_id",
    "period",
    "channel",
    "initiation",
    PRICE_VERSION,
    QUOTA_PER_SESSION,
    "sessions",
    "billable_sessions",
    "quota",
];

/// Output columns of the invoice lines (`invoice_lines.parquet` and `.csv`), in order.
/// Money is Parquet `DECIMAL` in `invoice_lines.parquet` and decimal text in the CSV.
pub const LINE_COLUMNS: [&str; 18] = [
    INVOICE_ID,
    "account_id",
    "period",
    "status",
    "coverage_start",
    "coverage_end",
    "channel",
    "initiation",
    PRICE_VERSION,
    "sessions",
    "billable_sessions",
    QUOTA_PER_SESSION,
    "quota",
    "allowance_quota",
    "overage_quota",
    "unit_price",
    "amount",
    "currency",
];

/// The rate card, as recorded in the manifest.
#[derive(Debug, Clone, Serialize)]
pub struct RateCardInfo {
    /// The `--rates` path as given, or `built-in`.
    pub source: String,
    pub sha256: String,
    /// The files the card's `[meta]` section reads, each with its SHA-256 (part of `sha256`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub meta_files: Vec<crate::meta::config::MetaFileHash>,
    /// Whole runs: accounts the card names that have no invoice in the run (a misspelt
    /// account id would be one, its sessions billed by the default plan).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub accounts_without_invoices: Option<Vec<String>>,
}

impl RateCardInfo {
    pub fn of(card: &RateCard) -> Self {
        RateCardInfo {
            source: card.source.display().to_string(),
            sha256: card.sha256.clone(),
            meta_files: card.meta.as_ref().map_or(Vec::new(), |m| m.files.clone()),
            accounts_without_invoices: None,
        }
    }

    /// Also lists the card's accounts that none of `invoices` is for.
    pub fn with_invoices(card: &RateCard, invoices: &[Invoice]) -> Self {
        let invoiced: std::collections::HashSet<&str> =
            invoices.iter().map(|i| i.account_id.as_str()).collect();
        RateCardInfo {
            accounts_without_invoices: Some(
                card.accounts
                    .keys()
                    .filter(|a| !invoiced.contains(a.as_str()))
                    .cloned()
                    .collect(),
            ),
            ..RateCardInfo::of(card)
        }
    }
}

/// One invoice line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct InvoiceLine {
    pub account_id: String,
    pub period: String,
    pub channel: String,
    pub initiation: String,
    /// The `effective` day of the price version in force when its sessions started.
    pub price_version: String,
    pub sessions: i64,
    /// Sessions that cost quota.
    pub billable_sessions: i64,
    /// Quota units each billable session of the line costs.
    pub quota_per_session: i64,
    pub quota: i64,
    /// Quota covered by the period's allowance.
    pub allowance_quota: i64,
    /// Quota beyond it: `quota - allowance_quota`.
    pub overage_quota: i64,
    pub unit_price: Decimal,
    /// `overage_quota × unit_price`, rounded once, half to even, to the currency's minor unit.
    pub amount: Decimal,
    pub currency: String,
}

/// Sums of an invoice's lines.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Totals {
    pub sessions: i64,
    pub billable_sessions: i64,
    pub quota: i64,
    pub allowance_quota: i64,
    pub overage_quota: i64,
    pub amount: Decimal,
}

/// Output columns of `invoices.parquet`, one row per invoice, in order. `amount` is Parquet
/// `DECIMAL`.
pub const INVOICE_COLUMNS: [&str; 25] = [
    INVOICE_ID,
    "account_id",
    "period",
    "status",
    "revision",
    "time_zone",
    "period_start",
    "period_end",
    "coverage_start",
    "coverage_end",
    "uncovered",
    "rule_set",
    "plan",
    "currency",
    "allowance",
    "lines",
    "sessions",
    "billable_sessions",
    "quota",
    "allowance_quota",
    "overage_quota",
    "amount",
    "rate_card_sha256",
    "content_sha256",
    "replaces",
];

/// One account's invoice for one billing period.
#[derive(Debug, Clone, Serialize)]
pub struct Invoice {
    /// Derived from the rule set, account, period and what the rate card says of this
    /// account and period ([`RateCard::terms_fingerprint`]): a rerun gives the same id, and
    /// so does a card edited elsewhere (another account, a price version starting later).
    pub invoice_id: String,
    pub account_id: String,
    pub period: String,
    /// The account's billing time zone (IANA name); the period is a month there.
    pub time_zone: String,
    /// First instant of the period (inclusive), RFC 3339 with the zone's offset.
    pub period_start: String,
    /// First instant after the period (exclusive), RFC 3339 with the zone's offset.
    pub period_end: String,
    /// The part of the period the input or the nights run cover, RFC 3339 with the zone's
    /// offset: `period_start` to `period_end` when the whole period is covered.
    pub coverage_start: String,
    pub coverage_end: String,
    /// Stretches between `coverage_start` and `coverage_end` that are not covered (a whole
    /// run's input without a message on some day); absent when there are none.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub uncovered: Vec<Stretch>,
    /// [`FINAL`], [`DRAFT`] or [`PARTIAL`].
    pub status: &'static str,
    /// 1, and one more each time a run changed the invoice after it was final
    /// ([`revision`]).
    pub revision: u32,
    /// What it bills, as a SHA-256 ([`revision::content_sha256`]): a changed invoice has
    /// another.
    pub content_sha256: String,
    /// The id of the invoice an earlier run issued for this account and period, when it had
    /// another (the rate card says otherwise of them now); absent otherwise.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub replaces: Option<String>,
    pub rule_set: &'static str,
    pub plan: String,
    pub currency: String,
    /// Quota included in the period.
    pub allowance: i64,
    /// The price versions the lines were rated by, in order, with the unit price each gave.
    pub price_versions: Vec<PriceVersionUsed>,
    pub rate_card_sha256: String,
    pub lines: Vec<InvoiceLine>,
    pub totals: Totals,
    /// What Meta charges the provider for the account's WhatsApp traffic of the period (in
    /// each WABA's zone), per currency; only when the rate card has `[meta]`. The provider's
    /// cost, not the customer's: it is not part of [`Invoice::content_sha256`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub meta_cost: Option<std::collections::BTreeMap<String, Decimal>>,
    /// `totals.amount` less `meta_cost` in the invoice's currency, where Meta charges in it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub margin: Option<Decimal>,
}

/// A stretch of time, RFC 3339 in the account's zone, half-open.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Stretch {
    pub from: String,
    pub to: String,
}

/// A price version an invoice's lines were rated by.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PriceVersionUsed {
    /// Its `effective` day, as the lines' `price_version` names it.
    pub effective: String,
    /// The price of a quota unit beyond the allowance (the account's own, where it has one).
    pub unit_price: Decimal,
}

/// All invoices of a run, ordered by account then period; `lines` is the same lines as a frame
/// ([`LINE_COLUMNS`]).
pub struct Invoices {
    pub invoices: Vec<Invoice>,
    pub lines: DataFrame,
}

/// Sessions ([`crate::sessions::SESSION_COLUMNS`]) → the same sessions rated by `card`:
/// `period` is the month holding the start in the account's zone, `price_version` the version
/// in force then, `quota` the units it costs under that version, `billable` whether that is
/// more than none; plus a `quota_per_session` column for [`lines_of`] (what a billable session
/// of the session's line costs). [`RATED_SESSION_COLUMNS`] selects what is written.
pub fn rate_sessions(sessions: DataFrame, card: &RateCard) -> Result<DataFrame> {
    let height = sessions.height();
    let accounts = sessions.column(schema::ACCOUNT_ID)?.str()?;
    let starts = sessions.column("started_at")?.to_physical_repr();
    let channels = sessions.column(schema::CHANNEL)?.str()?;
    let initiations = sessions.column("initiation")?.str()?;
    // Answered: the business sent a delivered message (always so for WhatsApp). Read from the
    // counts rather than `billable`, so rating a rated frame again gives the same frame.
    let answered = sessions.column("outbound_messages")?.i64()?;
    let mut calendars = Calendars::new(card);
    let mut versions = Names::default();
    let mut invoices = InvoiceIds::default();
    let mut invoice_ids = Vec::with_capacity(height);
    let (mut periods, mut version_ids) = (Vec::with_capacity(height), Vec::with_capacity(height));
    let (mut quota, mut per) = (Vec::with_capacity(height), Vec::with_capacity(height));
    let rows = accounts
        .iter()
        .zip(starts.i64()?.iter())
        .zip(channels.iter().zip(initiations.iter()))
        .zip(answered.iter());
    for (((account, start), (channel, initiation)), outbound) in rows {
        let (Some(account), Some(start), Some(channel), Some(initiation), Some(outbound)) =
            (account, start, channel, initiation, outbound)
        else {
            unreachable!("derived sessions have no nulls");
        };
        let (period, version) = calendars.at(account, start)?;
        let (units, line_units) = units(&version.quota, channel, initiation, outbound > 0);
        invoice_ids.push(invoices.id(card, account, &calendars.periods()[period as usize]));
        periods.push(period);
        version_ids.push(versions.id(version.effective));
        quota.push(units);
        per.push(line_units);
    }
    let mut rated = sessions;
    rated.with_column(period_column(&calendars, &periods))?;
    rated.with_column(versions.column(PRICE_VERSION, &version_ids))?;
    let billable: BooleanChunked = quota.iter().map(|&q| q > 0).collect();
    rated.with_column(Column::new("billable".into(), billable.into_series()))?;
    rated.with_column(Column::new("quota".into(), quota))?;
    rated.with_column(Column::new(QUOTA_PER_SESSION.into(), per))?;
    rated.with_column(invoices.column(&invoice_ids))?;
    Ok(rated)
}

/// The invoice id of (account, period): derived from the rule set, the account, the period
/// and what the card says of them ([`RateCard::terms_fingerprint`]), so a rerun gives the same
/// id, and so does a card edited elsewhere (another account, a version starting later).
pub fn invoice_id(card: &RateCard, account_id: &str, period: &str) -> String {
    let first = rates::first_day(period).expect("periods are formatted by convbill as YYYY-MM");
    let last = first
        .checked_add_months(chrono::Months::new(1))
        .and_then(|next| next.pred_opt())
        .expect("within chrono's range");
    let terms_fingerprint = card.terms_fingerprint(account_id, first, last);
    let mut hasher = Sha256::new();
    for part in [RULE_SET, account_id, period, &terms_fingerprint] {
        hasher.update(part.as_bytes());
        hasher.update([0x1f]);
    }
    format!("{period}-{}", hex::encode(&hasher.finalize()[..6]))
}

/// Interns invoice ids for a string column; sessions of one account come together, so the
/// last one is remembered.
#[derive(Default)]
struct InvoiceIds {
    last: Option<(String, String, u32)>,
    ids: HashMap<(String, String), u32>,
    names: Vec<String>,
}

impl InvoiceIds {
    fn id(&mut self, card: &RateCard, account_id: &str, period: &str) -> u32 {
        if let Some((a, p, id)) = &self.last {
            if a == account_id && p == period {
                return *id;
            }
        }
        let key = (account_id.to_string(), period.to_string());
        let id = match self.ids.get(&key) {
            Some(&id) => id,
            None => {
                self.names.push(invoice_id(card, account_id, period));
                let id = self.names.len() as u32 - 1;
                self.ids.insert(key.clone(), id);
                id
            }
        };
        self.last = Some((key.0, key.1, id));
        id
    }

    fn column(&self, ids: &[u32]) -> Column {
        StringChunked::from_iter_values(
            INVOICE_ID.into(),
            ids.iter().map(|&i| self.names[i as usize].as_str()),
        )
        .into_series()
        .into()
    }
}

/// Violations ([`crate::sessions::VIOLATION_COLUMNS`]) with `period` read in each account's
/// billing time zone, like the sessions'.
pub fn rate_violations(violations: DataFrame, card: &RateCard) -> Result<DataFrame> {
    let accounts = violations.column(schema::ACCOUNT_ID)?.str()?;
    let times = violations.column(schema::TIMESTAMP)?.to_physical_repr();
    let mut calendars = Calendars::new(card);
    let periods: Vec<u32> = accounts
        .iter()
        .zip(times.i64()?.iter())
        .map(|(account, ns)| {
            calendars.period_at(
                account.expect("no nulls"),
                ns.expect("violations have a time"),
            )
        })
        .collect();
    let mut rated = violations;
    rated.with_column(period_column(&calendars, &periods))?;
    Ok(rated)
}

/// The `period` column of period ids from `calendars`.
fn period_column(calendars: &Calendars, ids: &[u32]) -> Column {
    let names = calendars.periods();
    StringChunked::from_iter_values(
        "period".into(),
        ids.iter().map(|&p| names[p as usize].as_str()),
    )
    .into_series()
    .into()
}

/// The quota units a session costs, and what each billable session of its line costs.
/// Unanswered Messenger and Instagram sessions cost `unanswered` units; when that is none,
/// they stay on the line of the answered ones as sessions that are not billable.
fn units(quota: &SessionQuota, channel: &str, initiation: &str, answered: bool) -> (i64, i64) {
    let kind = match channel {
        "whatsapp" if initiation == schema::USER_INITIATED => quota.whatsapp_user_initiated,
        "whatsapp" => quota.whatsapp_business_initiated,
        "messenger" => quota.messenger,
        _ => quota.instagram,
    };
    if channel == "whatsapp" || answered {
        (kind, kind)
    } else if quota.unanswered > 0 {
        (quota.unanswered, quota.unanswered)
    } else {
        (0, kind)
    }
}

/// Interns effective days as text for a string column.
#[derive(Default)]
struct Names {
    ids: HashMap<NaiveDate, u32>,
    names: Vec<String>,
}

impl Names {
    fn id(&mut self, day: NaiveDate) -> u32 {
        *self.ids.entry(day).or_insert_with(|| {
            self.names.push(day.format("%Y-%m-%d").to_string());
            self.names.len() as u32 - 1
        })
    }

    fn column(&self, name: &str, ids: &[u32]) -> Column {
        StringChunked::from_iter_values(
            name.into(),
            ids.iter().map(|&i| self.names[i as usize].as_str()),
        )
        .into_series()
        .into()
    }
}

/// (account, period) of the rated sessions still open at the end of the stretch of
/// `coverage` they started in: a Messenger or Instagram session nobody has answered yet may be
/// answered after it and bill. (A WhatsApp session costs what it costs from the moment it
/// opens.)
pub fn unsettled(
    sessions: &DataFrame,
    coverage: &Coverage,
) -> Result<std::collections::BTreeSet<(String, String)>> {
    unsettled_of_unanswered(&unanswered(sessions)?, coverage)
}

/// The rated sessions nobody has answered that [`unsettled`] looks at, as the columns it
/// needs (a small part of a night's open sessions, kept for its month-to-date).
pub fn unanswered(sessions: &DataFrame) -> Result<DataFrame> {
    Ok(sessions
        .clone()
        .lazy()
        .filter(
            col(schema::CHANNEL)
                .neq(lit("whatsapp"))
                .and(col("outbound_messages").eq(lit(0i64))),
        )
        .select([
            col(schema::ACCOUNT_ID),
            col("period"),
            col("started_at").to_physical().alias("start"),
            col("ends_at").to_physical().alias("end"),
        ])
        .collect()?)
}

/// [`unsettled`] of the sessions [`unanswered`] picked.
pub fn unsettled_of_unanswered(
    unanswered: &DataFrame,
    coverage: &Coverage,
) -> Result<std::collections::BTreeSet<(String, String)>> {
    let accounts = unanswered.column(schema::ACCOUNT_ID)?.str()?;
    let periods = unanswered.column("period")?.str()?;
    let starts = unanswered.column("start")?.i64()?;
    let ends = unanswered.column("end")?.i64()?;
    let mut open = std::collections::BTreeSet::new();
    for i in 0..unanswered.height() {
        let (Some(start), Some(end)) = (starts.get(i), ends.get(i)) else {
            continue;
        };
        if coverage.stretch_at(start).is_none_or(|s| end > s.1) {
            open.insert((
                accounts.get(i).unwrap_or_default().to_string(),
                periods.get(i).unwrap_or_default().to_string(),
            ));
        }
    }
    Ok(open)
}

/// Rated sessions ([`rate_sessions`]) → counted lines ([`COUNT_COLUMNS`]), in their fixed
/// order.
pub fn lines_of(sessions: &DataFrame) -> Result<DataFrame> {
    Ok(sessions
        .clone()
        .lazy()
        .group_by(count_key())
        .agg([
            len().cast(DataType::Int64).alias("sessions"),
            col("billable")
                .sum()
                .cast(DataType::Int64)
                .alias("billable_sessions"),
            col("quota").sum().cast(DataType::Int64).alias("quota"),
        ])
        .select(COUNT_COLUMNS.map(col))
        .sort(count_key_names(), SortMultipleOptions::default())
        .collect()?)
}

fn count_key() -> Vec<Expr> {
    LINE_KEY
        .iter()
        .chain(&[QUOTA_PER_SESSION])
        .map(|c| col(*c))
        .collect()
}

fn count_key_names() -> Vec<&'static str> {
    LINE_KEY
        .iter()
        .chain(&[QUOTA_PER_SESSION])
        .copied()
        .collect()
}

/// Counted lines ([`COUNT_COLUMNS`]), possibly several per line (one per group of accounts, or
/// per night) → summed, sorted, priced lines and the invoices they make, each with its status
/// by `coverage`.
pub fn invoices_from_lines(
    lines: DataFrame,
    card: &RateCard,
    coverage: &Coverage,
) -> Result<Invoices> {
    let counted = sum_counted(lines)?;
    let mut invoices = group_lines(line_records(&counted)?, card, coverage)?;
    for invoice in &mut invoices {
        price(invoice, card)?;
        invoice.content_sha256 = revision::content_sha256(invoice);
    }
    let lines = lines_frame(&invoices, card)?;
    Ok(Invoices { invoices, lines })
}

/// Counted lines ([`COUNT_COLUMNS`]), possibly several per line → one per line, summed, in
/// their fixed order.
pub fn sum_counted(lines: DataFrame) -> Result<DataFrame> {
    Ok(lines
        .lazy()
        .group_by(count_key())
        .agg([
            col("sessions").sum(),
            col("billable_sessions").sum(),
            col("quota").sum(),
        ])
        .select(COUNT_COLUMNS.map(col))
        .sort(count_key_names(), SortMultipleOptions::default())
        .collect()?)
}

/// Counted lines → records, money not yet filled in.
fn line_records(lines: &DataFrame) -> Result<Vec<InvoiceLine>> {
    let text = |name: &str| crate::sessions::strings(lines, name);
    let number = |name: &str| -> Result<Vec<i64>> {
        Ok(crate::sessions::values(lines.column(name)?.i64()?, 0))
    };
    let (accounts, periods, channels, initiations, versions) = (
        text("account_id")?,
        text("period")?,
        text("channel")?,
        text("initiation")?,
        text(PRICE_VERSION)?,
    );
    let (sessions, billable, per, quota) = (
        number("sessions")?,
        number("billable_sessions")?,
        number(QUOTA_PER_SESSION)?,
        number("quota")?,
    );
    Ok((0..lines.height())
        .map(|i| InvoiceLine {
            account_id: accounts[i].to_string(),
            period: periods[i].to_string(),
            channel: channels[i].to_string(),
            initiation: initiations[i].to_string(),
            price_version: versions[i].to_string(),
            sessions: sessions[i],
            billable_sessions: billable[i],
            quota_per_session: per[i],
            quota: quota[i],
            allowance_quota: 0,
            overage_quota: 0,
            unit_price: Decimal::ZERO,
            amount: Decimal::ZERO,
            currency: String::new(),
        })
        .collect())
}

/// Sorted lines → one invoice per (account, period).
fn group_lines(
    lines: Vec<InvoiceLine>,
    card: &RateCard,
    coverage: &Coverage,
) -> Result<Vec<Invoice>> {
    let mut invoices: Vec<Invoice> = Vec::new();
    for line in lines {
        let same = invoices
            .last()
            .is_some_and(|i| i.account_id == line.account_id && i.period == line.period);
        if !same {
            invoices.push(new_invoice(&line.account_id, &line.period, card, coverage)?);
        }
        invoices.last_mut().expect("pushed above").lines.push(line);
    }
    Ok(invoices)
}

fn new_invoice(
    account_id: &str,
    period: &str,
    card: &RateCard,
    coverage: &Coverage,
) -> Result<Invoice> {
    let terms = card.terms_of(account_id);
    let plan = card.plan(&terms);
    let tz = terms.time_zone;
    let first = rates::first_day(period).expect("periods are formatted by convbill as YYYY-MM");
    let (start, end) = rates::period_bounds_ns(period, tz).expect("a valid period name");
    let (covered_from, covered_to) = coverage.within(start, end);
    Ok(Invoice {
        invoice_id: invoice_id(card, account_id, period),
        account_id: account_id.to_string(),
        period: period.to_string(),
        time_zone: tz.name().to_string(),
        period_start: rates::rfc3339_in(start, tz),
        period_end: rates::rfc3339_in(end, tz),
        coverage_start: rates::rfc3339_in(covered_from, tz),
        coverage_end: rates::rfc3339_in(covered_to, tz),
        uncovered: coverage
            .holes(start, end)
            .into_iter()
            .map(|(from, to)| Stretch {
                from: rates::rfc3339_in(from, tz),
                to: rates::rfc3339_in(to, tz),
            })
            .collect(),
        status: coverage.status(account_id, period, start, end),
        revision: 1,
        content_sha256: String::new(),
        replaces: None,
        rule_set: RULE_SET,
        plan: plan.name.clone(),
        currency: plan.currency.clone(),
        allowance: card.allowance(&terms, first),
        price_versions: Vec::new(),
        rate_card_sha256: card.sha256.clone(),
        lines: Vec::new(),
        totals: Totals::default(),
        meta_cost: None,
        margin: None,
    })
}

/// Fills in an invoice's money: the allowance is spent on the lines in their order (price
/// version first), the rest priced at each line's unit price; totals are the lines' sums.
fn price(invoice: &mut Invoice, card: &RateCard) -> Result<()> {
    let terms = card.terms_of(&invoice.account_id);
    let plan = card.plan(&terms);
    let mut quantities = Vec::with_capacity(invoice.lines.len());
    for line in &invoice.lines {
        let effective = line.price_version.parse::<NaiveDate>().ok();
        let version = plan
            .versions
            .iter()
            .find(|v| Some(v.effective) == effective)
            .ok_or_else(|| RateCardError::Invalid {
                path: card.source.clone(),
                reason: format!(
                    "plan `{}` has no price version effective {}, which rated sessions of account `{}` in {} (was the card changed during the month?)",
                    plan.name, line.price_version, line.account_id, line.period
                ),
            })?;
        let unit_price = card.unit_price(&terms, version);
        if invoice
            .price_versions
            .last()
            .is_none_or(|v| v.effective != line.price_version)
        {
            invoice.price_versions.push(PriceVersionUsed {
                effective: line.price_version.clone(),
                unit_price,
            });
        }
        quantities.push((line.quota, unit_price));
    }
    let charges = rates::charge_lines(&quantities, invoice.allowance, &invoice.currency);
    // The amounts all have the currency's digits, and so has their sum.
    let mut totals = Totals::default();
    totals
        .amount
        .rescale(rates::minor_unit_digits(&invoice.currency));
    for ((line, charge), (_, unit_price)) in invoice.lines.iter_mut().zip(charges).zip(quantities) {
        line.allowance_quota = charge.allowance_quota;
        line.overage_quota = charge.overage_quota;
        line.unit_price = unit_price;
        line.amount = charge.amount;
        line.currency = invoice.currency.clone();
        totals.sessions += line.sessions;
        totals.billable_sessions += line.billable_sessions;
        totals.quota += line.quota;
        totals.allowance_quota += line.allowance_quota;
        totals.overage_quota += line.overage_quota;
        totals.amount += line.amount;
    }
    invoice.totals = totals;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rates;

    fn line(account: &str, period: &str, version: &str, quota: i64) -> InvoiceLine {
        InvoiceLine {
            account_id: account.into(),
            period: period.into(),
            channel: "whatsapp".into(),
            initiation: "user_initiated".into(),
            price_version: version.into(),
            sessions: quota + 1,
            billable_sessions: quota,
            quota_per_session: 1,
            quota,
            allowance_quota: 0,
            overage_quota: 0,
            unit_price: Decimal::ZERO,
            amount: Decimal::ZERO,
            currency: String::new(),
        }
    }

    #[test]
    fn invoices_group_lines_and_sum_them() {
        let card = RateCard::built_in();
        let covered = Coverage::from_to(0, i64::MAX);
        let mut invoices = group_lines(
            vec![
                line("a", "2026-10", "1970-01-01", 2),
                line("a", "2026-10", "1970-01-01", 3),
                line("a", "2026-11", "1970-01-01", 1),
                line("b", "2026-10", "1970-01-01", 4),
            ],
            &card,
            &covered,
        )
        .unwrap();
        for invoice in &mut invoices {
            price(invoice, &card).unwrap();
        }
        assert_eq!(invoices.len(), 3);
        assert_eq!(invoices[0].lines.len(), 2);
        assert_eq!(
            invoices[0].totals,
            Totals {
                sessions: 7,
                billable_sessions: 5,
                quota: 5,
                allowance_quota: 0,
                overage_quota: 5,
                amount: Decimal::new(0, 2),
            }
        );
        assert_eq!(invoices[0].totals.amount.to_string(), "0.00");
        assert_eq!(invoices[2].account_id, "b");
        assert_eq!(invoices[0].period_start, "2026-10-01T00:00:00Z");
        assert_eq!(invoices[0].period_end, "2026-11-01T00:00:00Z");
    }

    #[test]
    fn invoice_ids_follow_what_the_card_says_of_their_account_and_period() {
        const CARD: &str = r#"
            default_plan = "p"
            [plans.p]
            currency = "USD"
            [[plans.p.versions]]
            effective = "2026-01-01"
            included_quota = 10
            unit_price = "0.05"
            [accounts.b]
            time_zone = "Asia/Jakarta"
        "#;
        let card = |text: &str| rates::parse(text, std::path::Path::new("t.toml")).unwrap();
        let id = |account: &str, text: &str| invoice_id(&card(text), account, "2026-10");
        assert_eq!(id("a", CARD), id("a", CARD));
        assert_ne!(id("a", CARD), id("b", CARD));
        assert!(id("a", CARD).starts_with("2026-10-"));
        // Edits elsewhere keep the id: another account's zone, a version from November,
        // a comment.
        let elsewhere = CARD.replace("Asia/Jakarta", "Europe/Berlin")
            + "[[plans.p.versions]]\neffective = \"2026-11-01\"\nincluded_quota = 5\nunit_price = \"0.07\"\n# note\n";
        assert_eq!(id("a", CARD), id("a", &elsewhere));
        assert_ne!(id("b", CARD), id("b", &elsewhere));
        // What rates October changes it: its price, its allowance, the account's terms, a
        // version that starts within October.
        for changed in [
            CARD.replace("\"0.05\"", "\"0.06\""),
            CARD.replace("included_quota = 10", "included_quota = 11"),
            CARD.replace("[accounts.b]", "[accounts.a]\nunit_price = \"0.01\"\n[accounts.b]"),
            CARD.to_string()
                + "[[plans.p.versions]]\neffective = \"2026-10-31\"\nincluded_quota = 10\nunit_price = \"0.05\"\n",
        ] {
            assert_ne!(id("a", CARD), id("a", &changed), "{changed}");
        }
    }

    #[test]
    fn unanswered_sessions_cost_the_unanswered_units() {
        let article = SessionQuota::default();
        assert_eq!(units(&article, "messenger", "standard", false), (0, 1));
        assert_eq!(units(&article, "instagram", "standard", true), (1, 1));
        assert_eq!(
            units(&article, "whatsapp", "business_initiated", true),
            (1, 1)
        );
        let card = SessionQuota {
            whatsapp_business_initiated: 3,
            messenger: 2,
            unanswered: 1,
            ..SessionQuota::default()
        };
        assert_eq!(units(&card, "whatsapp", "business_initiated", true), (3, 3));
        assert_eq!(units(&card, "whatsapp", "user_initiated", true), (1, 1));
        assert_eq!(units(&card, "messenger", "standard", true), (2, 2));
        assert_eq!(units(&card, "messenger", "standard", false), (1, 1));
    }
}
