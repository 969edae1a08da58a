//! Frames: invoices as the tables written to Parquet, money as `DECIMAL`.

use polars::prelude::*;
use rust_decimal::Decimal;

use super::{Invoice, InvoiceLine, INVOICE_ID, PRICE_VERSION, QUOTA_PER_SESSION};
use crate::error::Result;
use crate::rates::RateCard;

/// The lines of all invoices as a frame ([`LINE_COLUMNS`]), money as `DECIMAL(18, s)` with
/// the card's scales ([`RateCard::price_scale`], [`RateCard::amount_scale`]).
pub(super) fn lines_frame(invoices: &[Invoice], card: &RateCard) -> Result<DataFrame> {
    let lines: Vec<(&Invoice, &InvoiceLine)> = invoices
        .iter()
        .flat_map(|i| i.lines.iter().map(move |l| (i, l)))
        .collect();
    type Row<'a> = (&'a Invoice, &'a InvoiceLine);
    let text = |name: &str, f: &dyn Fn(Row) -> String| {
        Column::new(name.into(), lines.iter().map(|&r| f(r)).collect::<Vec<_>>())
    };
    let number = |name: &str, f: &dyn Fn(&InvoiceLine) -> i64| {
        Column::new(
            name.into(),
            lines.iter().map(|(_, l)| f(l)).collect::<Vec<_>>(),
        )
    };
    let columns = vec![
        text(INVOICE_ID, &|(i, _)| i.invoice_id.clone()),
        text("account_id", &|(_, l)| l.account_id.clone()),
        text("period", &|(_, l)| l.period.clone()),
        text("status", &|(i, _)| i.status.to_string()),
        text("coverage_start", &|(i, _)| i.coverage_start.clone()),
        text("coverage_end", &|(i, _)| i.coverage_end.clone()),
        text("channel", &|(_, l)| l.channel.clone()),
        text("initiation", &|(_, l)| l.initiation.clone()),
        text(PRICE_VERSION, &|(_, l)| l.price_version.clone()),
        number("sessions", &|l| l.sessions),
        number("billable_sessions", &|l| l.billable_sessions),
        number(QUOTA_PER_SESSION, &|l| l.quota_per_session),
        number("quota", &|l| l.quota),
        number("allowance_quota", &|l| l.allowance_quota),
        number("overage_quota", &|l| l.overage_quota),
        decimal_column(
            "unit_price",
            lines.iter().map(|(_, l)| l.unit_price),
            card.price_scale(),
        )?,
        decimal_column(
            "amount",
            lines.iter().map(|(_, l)| l.amount),
            card.amount_scale(),
        )?,
        text("currency", &|(_, l)| l.currency.clone()),
    ];
    Ok(DataFrame::new(lines.len(), columns)?)
}

/// One row per invoice ([`INVOICE_COLUMNS`]), `amount` as `DECIMAL(18, s)`.
pub fn invoices_frame(invoices: &[Invoice], card: &RateCard) -> Result<DataFrame> {
    let text = |name: &str, f: &dyn Fn(&Invoice) -> String| {
        Column::new(name.into(), invoices.iter().map(f).collect::<Vec<_>>())
    };
    let number = |name: &str, f: &dyn Fn(&Invoice) -> i64| {
        Column::new(name.into(), invoices.iter().map(f).collect::<Vec<_>>())
    };
    let mut columns = vec![
        text(INVOICE_ID, &|i| i.invoice_id.clone()),
        text("account_id", &|i| i.account_id.clone()),
        text("period", &|i| i.period.clone()),
        text("status", &|i| i.status.to_string()),
        number("revision", &|i| i64::from(i.revision)),
        text("time_zone", &|i| i.time_zone.clone()),
        text("period_start", &|i| i.period_start.clone()),
        text("period_end", &|i| i.period_end.clone()),
        text("coverage_start", &|i| i.coverage_start.clone()),
        text("coverage_end", &|i| i.coverage_end.clone()),
        text("uncovered", &|i| {
            i.uncovered
                .iter()
                .map(|s| format!("{}/{}", s.from, s.to))
                .collect::<Vec<_>>()
                .join(" ")
        }),
        text("rule_set", &|i| i.rule_set.to_string()),
        text("plan", &|i| i.plan.clone()),
        text("currency", &|i| i.currency.clone()),
        number("allowance", &|i| i.allowance),
        number("lines", &|i| i.lines.len() as i64),
        number("sessions", &|i| i.totals.sessions),
        number("billable_sessions", &|i| i.totals.billable_sessions),
        number("quota", &|i| i.totals.quota),
        number("allowance_quota", &|i| i.totals.allowance_quota),
        number("overage_quota", &|i| i.totals.overage_quota),
        decimal_column(
            "amount",
            invoices.iter().map(|i| i.totals.amount),
            card.amount_scale(),
        )?,
        text("rate_card_sha256", &|i| i.rate_card_sha256.clone()),
        text("content_sha256", &|i| i.content_sha256.clone()),
        Column::new(
            "replaces".into(),
            invoices
                .iter()
                .map(|i| i.replaces.clone())
                .collect::<Vec<_>>(),
        ),
    ];
    // With `[meta]`: Meta's cost in the invoice's currency and the margin (null where Meta
    // charges in no such currency).
    if let Some(meta) = &card.meta {
        let scale = meta.scale();
        let in_currency = |i: &Invoice| {
            i.meta_cost
                .as_ref()
                .and_then(|c| c.get(&i.currency))
                .copied()
        };
        columns.push(optional_decimal_column(
            "meta_cost",
            invoices.iter().map(in_currency),
            scale,
        )?);
        columns.push(optional_decimal_column(
            "margin",
            invoices.iter().map(|i| i.margin),
            scale,
        )?);
    }
    Ok(DataFrame::new(invoices.len(), columns)?)
}

/// A decimal's digits at `scale` places, as a `DECIMAL(_, scale)` column stores them.
fn mantissa(mut value: Decimal, scale: u32) -> i128 {
    value.rescale(scale);
    value.mantissa()
}

/// [`decimal_column`] of values that may be missing (null).
pub(crate) fn optional_decimal_column(
    name: &str,
    values: impl Iterator<Item = Option<Decimal>>,
    scale: u32,
) -> Result<Column> {
    let units = Int128Chunked::from_iter_options(
        name.into(),
        values.map(|value| value.map(|value| mantissa(value, scale))),
    );
    Ok(units
        .into_decimal(MONEY_PRECISION, scale as usize)?
        .into_series()
        .into())
}

/// Total digits of the money columns: `DECIMAL(18, s)` is stored as a Parquet INT64.
pub const MONEY_PRECISION: usize = 18;

/// Decimals → a `DECIMAL(18, scale)` column. The values have at most `scale` places (the card's
/// scales are chosen so); one too large for 18 digits is an error, not a rounding.
pub(crate) fn decimal_column(
    name: &str,
    values: impl Iterator<Item = Decimal>,
    scale: u32,
) -> Result<Column> {
    let units: Vec<i128> = values.map(|value| mantissa(value, scale)).collect();
    let decimals = Int128Chunked::from_vec(name.into(), units)
        .into_decimal(MONEY_PRECISION, scale as usize)?;
    Ok(decimals.into_series().into())
}
