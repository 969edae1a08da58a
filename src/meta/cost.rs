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
    /// The invoices' amounts less Meta's cost, per currency Meta charges in that invoices
    /// bill in too.
    pub margin: BTreeMap<String, Decimal>,
    /// Invoices whose margin is negative: `account_id period`, in invoice order. A `draft`
    /// invoice (a nightly history's period still running) is not among them: its allowance
    /// may cover sessions that Meta charges already.
    pub negative_margins: Vec<String>,
    /// Meta's cost in an account's period that has no invoice (the WABA's month and the
    /// account's billing month differ at their edges): `account_id period`, with the cost per
    /// currency. It is in `cost` and `margin`, and in no invoice's `meta_cost`.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub without_invoice: BTreeMap<String, BTreeMap<String, Decimal>>,
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
        without_invoice: BTreeMap::new(),
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
    let zero = Decimal::new(0, meta.scale());
    let invoiced: std::collections::BTreeSet<(&str, &str)> = invoices
        .iter()
        .map(|i| (i.account_id.as_str(), i.period.as_str()))
        .collect();
    for ((account, period), cost) in &by_invoice {
        if !invoiced.contains(&(*account, *period)) {
            summary
                .without_invoice
                .insert(format!("{account} {period}"), cost.clone());
        }
    }
    let amounts = crate::write::amounts_by_currency(invoices);
    for (currency, cost) in &summary.cost {
        if let Some(amount) = amounts.get(currency) {
            summary.margin.insert(currency.clone(), amount - cost);
        }
    }
    for invoice in invoices {
        let cost = by_invoice
            .get(&(invoice.account_id.as_str(), invoice.period.as_str()))
            .cloned()
            .unwrap_or_else(|| BTreeMap::from([(meta_currency.clone(), zero)]));
        invoice.margin = cost
            .get(&invoice.currency)
            .map(|c| invoice.totals.amount - c);
        if let Some(margin) = invoice
            .margin
            .filter(|_| invoice.status != crate::rating::DRAFT)
        {
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

/// A line as a nightly state keeps it (`meta_lines.json`).
#[derive(Debug, Serialize, serde::Deserialize)]
struct StateLine {
    account_id: String,
    period: String,
    model: String,
    market: String,
    category: String,
    pricing_type: String,
    tier: Option<String>,
    currency: String,
    units: u64,
    cost: Decimal,
}

/// `lines` as a nightly state keeps them.
pub fn to_state(lines: &Lines) -> serde_json::Value {
    let rows: Vec<StateLine> = lines
        .iter()
        .map(|(k, s)| StateLine {
            account_id: k.account_id.clone(),
            period: k.period.clone(),
            model: k.model.to_string(),
            market: k.market.clone(),
            category: k.category.name().to_string(),
            pricing_type: k.pricing_type.name().to_string(),
            tier: k.tier.clone(),
            currency: k.currency.clone(),
            units: s.units,
            cost: s.cost,
        })
        .collect();
    serde_json::to_value(rows).expect("lines serialise")
}

/// The lines [`to_state`] kept, added to `into`.
pub fn add_state(into: &mut Lines, state: serde_json::Value) -> Result<(), String> {
    let rows: Vec<StateLine> = serde_json::from_value(state).map_err(|e| e.to_string())?;
    for row in rows {
        let model = match row.model.as_str() {
            "CBP" => "CBP",
            "PMP" => "PMP",
            other => return Err(format!("model `{other}`")),
        };
        let category = super::Category::parse(&row.category)
            .ok_or_else(|| format!("category `{}`", row.category))?;
        let pricing_type = super::units::PricingType::parse(&row.pricing_type)
            .ok_or_else(|| format!("pricing type `{}`", row.pricing_type))?;
        let sum = into
            .entry(LineKey {
                account_id: row.account_id,
                period: row.period,
                model,
                market: row.market,
                category,
                pricing_type,
                tier: row.tier,
                currency: row.currency,
            })
            .or_default();
        sum.units += row.units;
        sum.cost += row.cost;
    }
    Ok(())
}

/// `meta_cost_lines.parquet`'s rows; `cost` as `DECIMAL(18, scale)`.
pub fn frame(lines: &Lines, scale: u32) -> crate::Result<DataFrame> {
    let text = |name: &str, f: &dyn Fn(&LineKey, &LineSum) -> String| {
        Column::new(
            name.into(),
            lines.iter().map(|(k, s)| f(k, s)).collect::<Vec<String>>(),
        )
    };
    Ok(DataFrame::new(
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
            crate::rating::decimal_column("cost", lines.values().map(|s| s.cost), scale)?,
            text("currency", &|k, _| k.currency.clone()),
        ],
    )?)
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
