//! Revisions: the invoices an earlier run issued (the `invoices.parquet` of the folder a run
//! replaces) in; each new invoice's `revision` and the changes worth reporting out.
//!
//! An invoice keeps its id from run to run (it follows the account, the period and what the
//! rate card says of them). Its `revision` starts at 1 and goes up by one each time it is
//! `final` with other lines or totals than when it was last `final`: a late message taken in
//! by a recompute, say. So finance can tell a reissued invoice from the one it replaces. A
//! draft that grows night after night keeps its revision, and so does an invoice that late
//! input turns back into a draft, until it is final again.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;

use polars::prelude::*;
use rust_decimal::Decimal;
use serde::Serialize;
use sha2::{Digest, Sha256};

use super::{Invoice, FINAL};
use crate::error::Result;

/// What an earlier run wrote of one invoice.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Issue {
    pub invoice_id: String,
    pub status: String,
    pub revision: u32,
    pub quota: i64,
    pub amount: Decimal,
    pub currency: String,
    /// [`content_sha256`] of the invoice.
    #[serde(skip)]
    pub content: Option<String>,
    /// [`content_sha256`] of the invoice when its revision was final; `None` if it has not
    /// been final yet.
    #[serde(skip)]
    pub final_content: Option<String>,
}

impl Issue {
    fn of(invoice: &Invoice) -> Issue {
        Issue {
            invoice_id: invoice.invoice_id.clone(),
            status: invoice.status.to_string(),
            revision: invoice.revision,
            quota: invoice.totals.quota,
            amount: invoice.totals.amount,
            currency: invoice.currency.clone(),
            content: Some(invoice.content_sha256.clone()),
            final_content: invoice.final_content_sha256.clone(),
        }
    }
}

/// The invoices an earlier run issued, by (account, period).
#[derive(Debug, Clone, Default)]
pub struct Issued {
    by_key: BTreeMap<(String, String), Issue>,
}

impl Issued {
    /// Reads `invoices.parquet` at `path`; nothing if there is none.
    pub fn read(path: &Path) -> Result<Issued> {
        if !path.is_file() {
            return Ok(Issued::default());
        }
        let file = std::fs::File::open(path).map_err(crate::folder::io_error(path))?;
        let frame = ParquetReader::new(file).finish()?;
        let text = |name: &str| -> Result<Vec<Option<String>>> {
            Ok(match frame.column(name) {
                Ok(column) => (0..frame.height())
                    .map(|i| match column.get(i) {
                        Ok(AnyValue::Null) | Err(_) => None,
                        Ok(value) => Some(value.str_value().to_string()),
                    })
                    .collect(),
                Err(_) => vec![None; frame.height()],
            })
        };
        let (ids, accounts, periods, statuses) = (
            text("invoice_id")?,
            text("account_id")?,
            text("period")?,
            text("status")?,
        );
        let (quota, amount, currency) = (text("quota")?, text("amount")?, text("currency")?);
        let (revision, final_content) = (text("revision")?, text("final_content_sha256")?);
        let content = text("content_sha256")?;
        let mut by_key = BTreeMap::new();
        for i in 0..frame.height() {
            let (Some(account), Some(period)) = (accounts[i].clone(), periods[i].clone()) else {
                continue;
            };
            by_key.insert(
                (account, period),
                Issue {
                    invoice_id: ids[i].clone().unwrap_or_default(),
                    status: statuses[i].clone().unwrap_or_default(),
                    revision: revision[i]
                        .as_deref()
                        .and_then(|r| r.parse().ok())
                        .unwrap_or(1),
                    quota: quota[i]
                        .as_deref()
                        .and_then(|q| q.parse().ok())
                        .unwrap_or(0),
                    amount: amount[i]
                        .as_deref()
                        .and_then(|a| a.parse().ok())
                        .unwrap_or_default(),
                    currency: currency[i].clone().unwrap_or_default(),
                    content: content[i].clone(),
                    final_content: final_content[i].clone(),
                },
            );
        }
        Ok(Issued { by_key })
    }
}

/// A SHA-256 of what an invoice bills (allowance, currency, price versions, lines, totals),
/// not of its status or coverage: a draft that becomes final without a change keeps it.
pub fn content_sha256(invoice: &Invoice) -> String {
    let content = serde_json::json!({
        "allowance": invoice.allowance,
        "currency": invoice.currency,
        "price_versions": invoice.price_versions,
        "lines": invoice.lines,
        "totals": invoice.totals,
    });
    hex::encode(Sha256::digest(content.to_string().as_bytes()))
}

/// Gives each invoice its revision, from what was issued before: a `final` invoice whose
/// content differs from the last time it was final is the next revision; every other keeps its
/// revision (1 for a new one). An invoice whose account and period had an invoice with another
/// id (the rate card says otherwise of them now) `replaces` it.
pub fn revise(invoices: &mut [Invoice], issued: &Issued) {
    for invoice in invoices {
        let key = (invoice.account_id.clone(), invoice.period.clone());
        let (mut revision, mut final_content) = match issued.by_key.get(&key) {
            Some(before) if before.invoice_id == invoice.invoice_id => {
                invoice.replaces = None;
                (before.revision, before.final_content.clone())
            }
            Some(before) => {
                invoice.replaces = Some(before.invoice_id.clone());
                (1, None)
            }
            None => (1, None),
        };
        if invoice.status == FINAL {
            if final_content
                .as_deref()
                .is_some_and(|c| c != invoice.content_sha256)
            {
                revision += 1;
            }
            final_content = Some(invoice.content_sha256.clone());
        }
        invoice.revision = revision;
        invoice.final_content_sha256 = final_content;
    }
}

/// An invoice whose content a run changed, or that appeared or went.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Change {
    pub account_id: String,
    pub period: String,
    pub before: Option<Issue>,
    pub after: Option<Issue>,
}

impl Change {
    /// An invoice that had been final is final again with other content: a new revision.
    pub fn reissues_a_final_invoice(&self) -> bool {
        matches!((&self.before, &self.after), (Some(b), Some(a)) if a.revision > b.revision)
    }

    /// The change touches an invoice that had been final: it is reissued, replaced by another
    /// id, no longer final, or gone. Finance must hear of it.
    pub fn touches_a_final_invoice(&self) -> bool {
        let Some(before) = &self.before else {
            return false;
        };
        before.final_content.is_some()
            && match &self.after {
                None => true,
                Some(after) => {
                    after.invoice_id != before.invoice_id
                        || after.status != FINAL
                        || self.reissues_a_final_invoice()
                }
            }
    }

    /// One line for the summary:
    /// `invoice acme 2024-01 changed: quota 2 -> 3, amount 0.05 -> 0.10 USD`, or, when only its
    /// status changed, `invoice acme 2024-01 is final now (was draft)`.
    pub fn describe(&self) -> String {
        let same_content = matches!((&self.before, &self.after),
            (Some(b), Some(a)) if b.invoice_id == a.invoice_id && b.content.is_some() && b.content == a.content);
        let mut text = match (&self.before, &self.after, same_content) {
            (Some(before), Some(after), true) => format!(
                "invoice {} {} is {} now (was {})",
                self.account_id, self.period, after.status, before.status
            ),
            _ => self.describe_totals(),
        };
        if let (Some(before), true) = (&self.before, self.touches_a_final_invoice()) {
            text.push_str(&match &self.after {
                None => format!(
                    "; it had been final (`{}` revision {}), and is gone",
                    before.invoice_id, before.revision
                ),
                Some(after) if after.invoice_id != before.invoice_id => format!(
                    "; it had been final as `{}` revision {}: `{}` replaces it",
                    before.invoice_id, before.revision, after.invoice_id
                ),
                Some(after) if after.status != FINAL => format!(
                    "; it had been final (revision {}), and is {} now",
                    before.revision, after.status
                ),
                Some(after) => format!(
                    "; it had been final: revision {} replaces it",
                    after.revision
                ),
            });
        }
        text
    }

    /// `invoice acme 2024-01 changed: quota 2 -> 3, amount 0.05 -> 0.10 USD`.
    fn describe_totals(&self) -> String {
        let quota = |i: &Option<Issue>| i.as_ref().map_or("none".into(), |i| i.quota.to_string());
        let mut text = format!(
            "invoice {} {} changed: quota {} -> {}",
            self.account_id,
            self.period,
            quota(&self.before),
            quota(&self.after)
        );
        // `XXX` is the built-in card's "no currency": quota only.
        let amount = |i: &Option<Issue>| i.as_ref().map_or("none".into(), |i| i.amount.to_string());
        let currency = self
            .after
            .as_ref()
            .or(self.before.as_ref())
            .map(|i| i.currency.as_str());
        if let Some(currency) = currency.filter(|c| *c != "XXX") {
            text.push_str(&format!(
                ", amount {} -> {} {currency}",
                amount(&self.before),
                amount(&self.after)
            ));
        }
        let same_totals = matches!((&self.before, &self.after),
            (Some(b), Some(a)) if b.quota == a.quota && b.amount == a.amount);
        if same_totals {
            text.push_str(" (its lines changed, not its totals)");
        }
        text
    }
}

/// The invoices that differ between `issued` and `invoices` (id, content, quota, amount or
/// status), or that are in only one of them, by (account, period).
pub fn changes(issued: &Issued, invoices: &[Invoice]) -> Vec<Change> {
    let after: HashMap<(String, String), Issue> = invoices
        .iter()
        .map(|i| ((i.account_id.clone(), i.period.clone()), Issue::of(i)))
        .collect();
    let keys: BTreeSet<&(String, String)> = issued.by_key.keys().chain(after.keys()).collect();
    keys.into_iter()
        .filter_map(|key| {
            let (before, now) = (issued.by_key.get(key), after.get(key));
            let same = match (before, now) {
                (Some(b), Some(a)) => {
                    b.invoice_id == a.invoice_id
                        && b.quota == a.quota
                        && b.amount == a.amount
                        && b.status == a.status
                        && (b.content.is_none() || b.content == a.content)
                }
                _ => false,
            };
            (!same).then(|| Change {
                account_id: key.0.clone(),
                period: key.1.clone(),
                before: before.cloned(),
                after: now.cloned(),
            })
        })
        .collect()
}
