//! Rating: sessions in, invoice lines and per-account invoices out (rule set `quota`, the
//! built-in article rate card: 1 quota per billable session).
//!
//! An invoice is one account's one period; its lines are one per (channel, initiation); its
//! totals are the sums of its lines. Every line is traceable: filtering `sessions.parquet` on
//! the line's `account_id`, `period`, `channel` and `initiation` gives exactly its sessions.
//!
//! Line frame schema ([`LINE_COLUMNS`]): `account_id`, `period`, `channel`, `initiation`:
//! String; `sessions`, `billable_sessions`, `quota_per_session`, `quota`: Int64.

use chrono::{Datelike, NaiveDate};
use polars::prelude::*;
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::error::Result;

/// The rule set this version implements.
pub const RULE_SET: &str = "quota";
/// Quota units a billable session costs on the built-in rate card.
pub const QUOTA_PER_SESSION: i64 = 1;

/// What makes an invoice line: one per account, period, channel and initiation.
const LINE_KEY: [&str; 4] = ["account_id", "period", "channel", "initiation"];

/// Output column names of the invoice lines, in order.
pub const LINE_COLUMNS: [&str; 8] = [
    "account_id",
    "period",
    "channel",
    "initiation",
    "sessions",
    "billable_sessions",
    "quota_per_session",
    "quota",
];

/// The built-in rate card, as recorded in the manifest.
#[derive(Debug, Clone, Serialize)]
pub struct RateCard {
    pub name: &'static str,
    pub quota_per_billable_session: i64,
    pub note: &'static str,
}

pub const ARTICLE_RATE_CARD: RateCard = RateCard {
    name: "article",
    quota_per_billable_session: QUOTA_PER_SESSION,
    note: "1 quota per WhatsApp session; 1 per answered Messenger/Instagram session, 0 unanswered",
};

/// One invoice line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct InvoiceLine {
    pub account_id: String,
    pub period: String,
    pub channel: String,
    pub initiation: String,
    pub sessions: i64,
    pub billable_sessions: i64,
    pub quota_per_session: i64,
    pub quota: i64,
}

/// Sums of an invoice's lines.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Totals {
    pub sessions: i64,
    pub billable_sessions: i64,
    pub quota: i64,
}

/// One account's invoice for one calendar month (UTC).
#[derive(Debug, Clone, Serialize)]
pub struct Invoice {
    pub invoice_id: String,
    pub account_id: String,
    pub period: String,
    /// First instant of the period (inclusive), RFC 3339.
    pub period_start: String,
    /// First instant after the period (exclusive), RFC 3339.
    pub period_end: String,
    pub rule_set: &'static str,
    /// Nightly runs only: `draft` until the period is complete, then `final`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<&'static str>,
    pub lines: Vec<InvoiceLine>,
    pub totals: Totals,
}

/// All invoices of a run, ordered by account then period; `lines` is the same lines as a frame.
pub struct Invoices {
    pub invoices: Vec<Invoice>,
    pub lines: DataFrame,
}

/// Sessions ([`crate::sessions::SESSION_COLUMNS`]) → invoice lines and invoices.
pub fn rate(sessions: &DataFrame) -> Result<Invoices> {
    invoices_from_lines(lines_of(sessions)?)
}

/// Sessions → invoice lines ([`LINE_COLUMNS`]), one per (account, period, channel, initiation).
pub fn lines_of(sessions: &DataFrame) -> Result<DataFrame> {
    Ok(sessions
        .clone()
        .lazy()
        .group_by(LINE_KEY.map(col))
        .agg([
            len().cast(DataType::Int64).alias("sessions"),
            col("billable")
                .sum()
                .cast(DataType::Int64)
                .alias("billable_sessions"),
            col("quota").sum().cast(DataType::Int64).alias("quota"),
        ])
        .with_column(
            lit(QUOTA_PER_SESSION)
                .cast(DataType::Int64)
                .alias("quota_per_session"),
        )
        .select(LINE_COLUMNS.map(col))
        .collect()?)
}

/// Invoice lines, possibly several per (account, period, channel, initiation) (for example
/// one per night) → summed, sorted lines and the invoices they make.
pub fn invoices_from_lines(lines: DataFrame) -> Result<Invoices> {
    let lines = lines
        .lazy()
        .group_by(
            LINE_KEY
                .map(col)
                .into_iter()
                .chain([col("quota_per_session")])
                .collect::<Vec<_>>(),
        )
        .agg([
            col("sessions").sum(),
            col("billable_sessions").sum(),
            col("quota").sum(),
        ])
        .sort(LINE_KEY, SortMultipleOptions::default())
        .select(LINE_COLUMNS.map(col))
        .collect()?;
    let invoices = group_lines(line_records(&lines)?);
    Ok(Invoices { invoices, lines })
}

fn line_records(lines: &DataFrame) -> Result<Vec<InvoiceLine>> {
    let text = |name: &str| -> Result<Vec<String>> {
        Ok(lines
            .column(name)?
            .str()?
            .iter()
            .map(|v| v.unwrap_or_default().to_string())
            .collect())
    };
    let number = |name: &str| -> Result<Vec<i64>> {
        Ok(lines
            .column(name)?
            .i64()?
            .iter()
            .map(|v| v.unwrap_or(0))
            .collect())
    };
    let (accounts, periods, channels, initiations) = (
        text("account_id")?,
        text("period")?,
        text("channel")?,
        text("initiation")?,
    );
    let (sessions, billable, per, quota) = (
        number("sessions")?,
        number("billable_sessions")?,
        number("quota_per_session")?,
        number("quota")?,
    );
    Ok((0..lines.height())
        .map(|i| InvoiceLine {
            account_id: accounts[i].clone(),
            period: periods[i].clone(),
            channel: channels[i].clone(),
            initiation: initiations[i].clone(),
            sessions: sessions[i],
            billable_sessions: billable[i],
            quota_per_session: per[i],
            quota: quota[i],
        })
        .collect())
}

/// Sorted lines → one invoice per (account, period), totals summed from the lines.
fn group_lines(lines: Vec<InvoiceLine>) -> Vec<Invoice> {
    let mut invoices: Vec<Invoice> = Vec::new();
    for line in lines {
        let same = invoices
            .last()
            .is_some_and(|i| i.account_id == line.account_id && i.period == line.period);
        if !same {
            invoices.push(new_invoice(&line.account_id, &line.period));
        }
        let invoice = invoices.last_mut().expect("pushed above");
        invoice.totals.sessions += line.sessions;
        invoice.totals.billable_sessions += line.billable_sessions;
        invoice.totals.quota += line.quota;
        invoice.lines.push(line);
    }
    invoices
}

fn new_invoice(account_id: &str, period: &str) -> Invoice {
    let (start, end) = period_bounds(period);
    let mut hasher = Sha256::new();
    for part in [RULE_SET, account_id, period] {
        hasher.update(part.as_bytes());
        hasher.update([0x1f]);
    }
    Invoice {
        invoice_id: format!("{period}-{}", hex::encode(&hasher.finalize()[..6])),
        account_id: account_id.to_string(),
        period: period.to_string(),
        period_start: start,
        period_end: end,
        rule_set: RULE_SET,
        status: None,
        lines: Vec::new(),
        totals: Totals::default(),
    }
}

/// `YYYY-MM` → (first instant, first instant of the next month), RFC 3339 in UTC.
fn period_bounds(period: &str) -> (String, String) {
    let start = NaiveDate::parse_from_str(&format!("{period}-01"), "%Y-%m-%d")
        .expect("periods are formatted by convbill as YYYY-MM");
    let end = if start.month() == 12 {
        NaiveDate::from_ymd_opt(start.year() + 1, 1, 1)
    } else {
        NaiveDate::from_ymd_opt(start.year(), start.month() + 1, 1)
    }
    .expect("first of a month exists");
    let fmt = |d: NaiveDate| format!("{}T00:00:00Z", d.format("%Y-%m-%d"));
    (fmt(start), fmt(end))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(account: &str, period: &str, channel: &str, quota: i64) -> InvoiceLine {
        InvoiceLine {
            account_id: account.into(),
            period: period.into(),
            channel: channel.into(),
            initiation: "user_initiated".into(),
            sessions: quota + 1,
            billable_sessions: quota,
            quota_per_session: 1,
            quota,
        }
    }

    #[test]
    fn invoices_group_lines_and_sum_them() {
        let invoices = group_lines(vec![
            line("a", "2026-10", "messenger", 2),
            line("a", "2026-10", "whatsapp", 3),
            line("a", "2026-11", "whatsapp", 1),
            line("b", "2026-10", "whatsapp", 4),
        ]);
        assert_eq!(invoices.len(), 3);
        assert_eq!(invoices[0].lines.len(), 2);
        assert_eq!(
            invoices[0].totals,
            Totals {
                sessions: 7,
                billable_sessions: 5,
                quota: 5
            }
        );
        assert_eq!(invoices[2].account_id, "b");
    }

    #[test]
    fn period_bounds_are_half_open_and_cross_the_year() {
        assert_eq!(
            period_bounds("2026-12"),
            ("2026-12-01T00:00:00Z".into(), "2027-01-01T00:00:00Z".into())
        );
    }

    #[test]
    fn invoice_ids_are_deterministic_and_distinct() {
        assert_eq!(
            new_invoice("a", "2026-10").invoice_id,
            new_invoice("a", "2026-10").invoice_id
        );
        assert_ne!(
            new_invoice("a", "2026-10").invoice_id,
            new_invoice("b", "2026-10").invoice_id
        );
        assert!(new_invoice("a", "2026-10")
            .invoice_id
            .starts_with("2026-10-"));
    }
}
