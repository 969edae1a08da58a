//! What Meta charges, summed: `meta_cost_lines` (per account, period, model, market,
//! category, pricing type and tier), each invoice's `meta_cost` and `margin`, and the
//! manifest's totals.

use std::collections::BTreeMap;

use polars::prelude::*;
use rust_decimal::Decimal;
use serde::Serialize;

use super::config::MetaConfig;
use super::units::{LineKey, LineSum};
use crate::rating::Invoice;

/// The cost lines of a run, in line order.
pub type Lines = BTreeMap<LineKey, LineSum>;

/// Output column names of `meta_cost_lines.parquet` and `.csv`, in order.
pub const LINE_COLUMNS: [&str; 10] = [
    "account_id",
    "period",
    "model",
    "market",
    "category",
    "pricing_type",
    "tier",
    "units",
    "cost",
    "currency",
];

/// The manifest's `meta` section.
#[derive(Debug, Clone, Serialize)]
pub struct MetaSummary {
    /// `auto`, `cbp-2023` or `pmp-2025`.
    pub model: &'static str,
    /// Units priced (free ones included).
    pub units: u64,
    /// Their cost per currency.
    pub cost: BTreeMap<String, Decimal>,
    /// The invoices' margins summed per currency (invoices whose currency is Meta's).
    pub margin: BTreeMap<String, Decimal>,
    /// Invoices whose margin is negative: `account_id period`, in invoice order.
    pub negative_margins: Vec<String>,
}

/// Gives each invoice its `meta_cost` (the lines of its account and period; Meta's currency
/// at 0 when it has none) and `margin`; returns the manifest's section.
pub fn attach(invoices: &mut [Invoice], lines: &Lines, meta: &MetaConfig) -> MetaSummary {
    let mut by_invoice: BTreeMap<(&str, &str), BTreeMap<String, Decimal>> = BTreeMap::new();
    let mut summary = MetaSummary {
        model: meta.model.name(),
        units: 0,
        cost: BTreeMap::new(),
        margin: BTreeMap::new(),
        negative_margins: Vec::new(),
    };
    for (key, sum) in lines {
        *by_invoice
            .entry((&key.account_id, &key.period))
            .or_default()
            .entry(key.currency.clone())
            .or_default() += sum.cost;
        summary.units += sum.units;
        *summary.cost.entry(key.currency.clone()).or_default() += sum.cost;
    }
    let meta_currency = &meta.rate_cards[0].currency;
    for invoice in invoices {
        let cost = by_invoice
            .get(&(invoice.account_id.as_str(), invoice.period.as_str()))
            .cloned()
            .unwrap_or_else(|| BTreeMap::from([(meta_currency.clone(), Decimal::ZERO)]));
        invoice.margin = cost
            .get(&invoice.currency)
            .map(|c| invoice.totals.amount - c);
        if let Some(margin) = invoice.margin {
            *summary.margin.entry(invoice.currency.clone()).or_default() += margin;
            if margin.is_sign_negative() && !margin.is_zero() {
                summary
                    .negative_margins
                    .push(format!("{} {}", invoice.account_id, invoice.period));
            }
        }
        invoice.meta_cost = Some(cost);
    }
    summary
}

/// `meta_cost_lines.parquet`'s rows; `cost` as decimal text.
pub fn frame(lines: &Lines) -> PolarsResult<DataFrame> {
    let text = |name: &str, f: &dyn Fn(&LineKey, &LineSum) -> String| {
        Column::new(
            name.into(),
            lines.iter().map(|(k, s)| f(k, s)).collect::<Vec<String>>(),
        )
    };
    DataFrame::new(
        lines.len(),
        vec![
            text("account_id", &|k, _| k.account_id.clone()),
            text("period", &|k, _| k.period.clone()),
            text("model", &|k, _| k.model.to_string()),
            text("market", &|k, _| k.market.clone()),
            text("category", &|k, _| k.category.name().to_string()),
            text("pricing_type", &|k, _| k.pricing_type.name().to_string()),
            Column::new(
                "tier".into(),
                lines.keys().map(|k| k.tier.clone()).collect::<Vec<_>>(),
            ),
            Column::new(
                "units".into(),
                lines.values().map(|s| s.units).collect::<Vec<u64>>(),
            ),
            text("cost", &|_, s| s.cost.to_string()),
            text("currency", &|k, _| k.currency.clone()),
        ],
    )
}

/// `meta_cost_lines.csv`: the same rows; ids as [`crate::write::spreadsheet_text`].
pub fn csv(lines: &Lines) -> Vec<u8> {
    let mut writer = csv::Writer::from_writer(Vec::new());
    let failed = "writing to memory cannot fail";
    writer.write_record(LINE_COLUMNS).expect(failed);
    for (k, s) in lines {
        writer
            .write_record([
                &*crate::write::spreadsheet_text(&k.account_id),
                &k.period,
                k.model,
                &k.market,
                k.category.name(),
                k.pricing_type.name(),
                k.tier.as_deref().unwrap_or(""),
                &s.units.to_string(),
                &s.cost.to_string(),
                &k.currency,
            ])
            .expect(failed);
    }
    writer.into_inner().expect(failed)
}
