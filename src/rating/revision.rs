//! Revisions: the invoices the folder held before a run (its `invoices.parquet`) and the
//! register of every invoice that has been final in; each new invoice's `revision`, the
//! register brought up to date and the changes worth reporting out.
//!
//! An invoice keeps its id from run to run (it follows the account, the period and what the
//! rate card says of them). Its `revision` starts at 1 and goes up by one each time it is
//! `final` with other lines or totals than when it was last `final`: a late message taken in
//! by a recompute, say. So finance can tell a reissued invoice from the one it replaces. A
//! draft that grows night after night keeps its revision, and so does an invoice that late
//! input turns back into a draft, until it is final again.
//!
//! The register (`invoices_issued.parquet`) keeps each invoice id's last final issue, and
//! keeps it when the invoice is gone (a whole run over less input) or replaced by another id
//! (a changed rate card): an invoice that comes back goes on from its last revision, and a
//! revision number never names two different invoices.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;

use polars::prelude::*;
use rust_decimal::Decimal;
use serde::Serialize;
use sha2::{Digest, Sha256};

use super::frames::decimal_column;
use super::{Invoice, FINAL};
use crate::error::Result;

/// The file of the register, in a whole run's folder and in a history's `state/`.
pub const REGISTER_FILE: &str = "invoices_issued.parquet";
/// Decimal places of the register's amounts: every currency's minor unit fits.
const REGISTER_AMOUNT_SCALE: u32 = 3;

/// One invoice as a run wrote it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Issue {
    pub invoice_id: String,
    pub account_id: String,
    pub period: String,
    pub status: String,
    pub revision: u32,
    pub quota: i64,
    pub amount: Decimal,
    pub currency: String,
    /// [`content_sha256`] of the invoice.
    #[serde(skip)]
    pub content: Option<String>,
}

impl Issue {
    fn of(invoice: &Invoice) -> Issue {
        Issue {
            invoice_id: invoice.invoice_id.clone(),
            account_id: invoice.account_id.clone(),
            period: invoice.period.clone(),
            status: invoice.status.to_string(),
            revision: invoice.revision,
            quota: invoice.totals.quota,
            amount: invoice.totals.amount,
            currency: invoice.currency.clone(),
            content: Some(invoice.content_sha256.clone()),
        }
    }
}

/// The rows of a Parquet file of invoices (`invoices.parquet` or the register), as issues;
/// nothing if there is no file. Columns a file lacks read as unknown.
fn read_issues(path: &Path) -> Result<Vec<Issue>> {
    if !path.is_file() {
        return Ok(Vec::new());
    }
    let file = std::fs::File::open(path).map_err(crate::folder::io_error(path))?;
    let frame = ParquetReader::new(file).finish()?;
    let text = |name: &str| -> Vec<Option<String>> {
        match frame.column(name) {
            Ok(column) => (0..frame.height())
                .map(|i| match column.get(i) {
                    Ok(AnyValue::Null) | Err(_) => None,
                    Ok(value) => Some(value.str_value().to_string()),
                })
                .collect(),
            Err(_) => vec![None; frame.height()],
        }
    };
    let columns = [
        "invoice_id",
        "account_id",
        "period",
        "status",
        "revision",
        "quota",
        "amount",
        "currency",
        "content_sha256",
    ]
    .map(text);
    let [ids, accounts, periods, statuses, revisions, quota, amount, currency, content] = columns;
    Ok((0..frame.height())
        .map(|i| Issue {
            invoice_id: ids[i].clone().unwrap_or_default(),
            account_id: accounts[i].clone().unwrap_or_default(),
            period: periods[i].clone().unwrap_or_default(),
            status: statuses[i].clone().unwrap_or_else(|| FINAL.into()),
            revision: revisions[i]
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
        })
        .collect())
}

/// The invoices the folder held before this run, by (account, period).
#[derive(Debug, Clone, Default)]
pub struct Issued {
    by_key: BTreeMap<(String, String), Issue>,
}

impl Issued {
    /// Reads `invoices.parquet` at `path`; nothing if there is none.
    pub fn read(path: &Path) -> Result<Issued> {
        Ok(Issued {
            by_key: read_issues(path)?
                .into_iter()
                .map(|i| ((i.account_id.clone(), i.period.clone()), i))
                .collect(),
        })
    }

    /// Adds the invoices of another folder (of other periods).
    pub fn extend(&mut self, other: Issued) {
        self.by_key.extend(other.by_key);
    }
}

/// Every invoice id that has been final, with its last final issue.
#[derive(Debug, Clone, Default)]
pub struct Register {
    by_id: BTreeMap<String, Issue>,
}

impl Register {
    /// Reads the register at `path`; empty if there is none.
    pub fn read(path: &Path) -> Result<Register> {
        Ok(Register {
            by_id: read_issues(path)?
                .into_iter()
                .map(|i| (i.invoice_id.clone(), i))
                .collect(),
        })
    }

    /// Adds the invoices of another register (of other accounts).
    pub fn extend(&mut self, other: Register) {
        self.by_id.extend(other.by_id);
    }

    /// The register as a table, in invoice id order: `invoice_id`, `account_id`, `period`,
    /// `revision`, `content_sha256`, `quota`, `amount` (`DECIMAL(18, 3)`), `currency`.
    pub fn frame(&self) -> Result<DataFrame> {
        let issues: Vec<&Issue> = self.by_id.values().collect();
        let text = |name: &str, f: &dyn Fn(&Issue) -> String| {
            Column::new(name.into(), issues.iter().map(|i| f(i)).collect::<Vec<_>>())
        };
        let columns = vec![
            text("invoice_id", &|i| i.invoice_id.clone()),
            text("account_id", &|i| i.account_id.clone()),
            text("period", &|i| i.period.clone()),
            Column::new(
                "revision".into(),
                issues
                    .iter()
                    .map(|i| i64::from(i.revision))
                    .collect::<Vec<_>>(),
            ),
            text("content_sha256", &|i| i.content.clone().unwrap_or_default()),
            Column::new(
                "quota".into(),
                issues.iter().map(|i| i.quota).collect::<Vec<_>>(),
            ),
            decimal_column(
                "amount",
                issues.iter().map(|i| i.amount),
                REGISTER_AMOUNT_SCALE,
            )?,
            text("currency", &|i| i.currency.clone()),
        ];
        Ok(DataFrame::new(issues.len(), columns)?)
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

/// Gives each invoice its revision by the register: a `final` invoice whose content differs
/// from its id's last final issue is the next revision; every other keeps its id's last
/// revision (1 for an id never final). Final invoices enter the register. An invoice whose
/// account and period had an invoice with another id in the folder before (the rate card says
/// otherwise of them now) `replaces` it.
pub fn revise(invoices: &mut [Invoice], before: &Issued, register: &mut Register) {
    for invoice in invoices {
        let key = (invoice.account_id.clone(), invoice.period.clone());
        invoice.replaces = before
            .by_key
            .get(&key)
            .filter(|b| b.invoice_id != invoice.invoice_id)
            .map(|b| b.invoice_id.clone());
        let last_final = register.by_id.get(&invoice.invoice_id);
        let mut revision = last_final.map_or(1, |r| r.revision);
        let changed =
            last_final.is_some_and(|r| r.content.as_ref() != Some(&invoice.content_sha256));
        if invoice.status == FINAL && changed {
            revision += 1;
        }
        invoice.revision = revision;
        if invoice.status == FINAL {
            register
                .by_id
                .insert(invoice.invoice_id.clone(), Issue::of(invoice));
        }
    }
}

/// An invoice whose content or status a run changed, or that appeared or went.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Change {
    pub account_id: String,
    pub period: String,
    /// As the folder held it before the run.
    pub before: Option<Issue>,
    /// As the run wrote it.
    pub after: Option<Issue>,
    /// The last final issue (before the run) of the invoice the folder held, or, if it held
    /// none, of the one the run wrote.
    pub last_final: Option<Issue>,
    /// The invoice the run wrote has another id than the one the folder held, and is final
    /// as it was when that id was last final (a card change undone).
    pub back_as_it_was: bool,
}

impl Change {
    /// The change touches an invoice that had been final: it is reissued, replaced by another
    /// id, no longer final, gone, or back. Finance must hear of it.
    pub fn touches_a_final_invoice(&self) -> bool {
        self.last_final.is_some()
    }

    /// One line for the summary:
    /// `invoice acme 2024-01 changed: quota 2 -> 3, amount 0.05 -> 0.10 USD`, with what became
    /// of a once-final invoice; `invoice acme 2024-01 is final now (was draft)` when only its
    /// status changed.
    pub fn describe(&self) -> String {
        // What finance knows of a once-final invoice is its last final issue.
        let from = match self.touches_a_final_invoice() {
            true => self.last_final.as_ref(),
            false => self.before.as_ref(),
        };
        let same_content = matches!((from, &self.after),
            (Some(b), Some(a)) if b.invoice_id == a.invoice_id && b.content.is_some() && b.content == a.content);
        let mut text = match (from, &self.after, same_content) {
            (Some(_), Some(after), true) if after.status == FINAL && self.last_final.is_some() => {
                format!(
                    "invoice {} {} is final again, as its revision {}",
                    self.account_id, self.period, after.revision
                )
            }
            (Some(before), Some(after), true) => format!(
                "invoice {} {} is {} now (was {})",
                self.account_id, self.period, after.status, before.status
            ),
            _ => self.describe_totals(from),
        };
        if let (Some(last_final), false) = (&self.last_final, same_content) {
            text.push_str(&match &self.after {
                None => format!(
                    "; it had been final (`{}` revision {}), and is gone",
                    last_final.invoice_id, last_final.revision
                ),
                Some(after) if after.invoice_id != last_final.invoice_id => format!(
                    "; it had been final as `{}` revision {}: `{}` replaces it{}",
                    last_final.invoice_id,
                    last_final.revision,
                    after.invoice_id,
                    match self.back_as_it_was {
                        true => format!(", final again as its revision {}", after.revision),
                        false => String::new(),
                    }
                ),
                Some(after) if after.status != FINAL => format!(
                    "; it had been final (revision {}), and is {} now",
                    last_final.revision, after.status
                ),
                Some(after) => format!(
                    "; it had been final: revision {} replaces it",
                    after.revision
                ),
            });
        }
        text
    }

    /// `invoice acme 2024-01 changed: quota 2 -> 3, amount 0.05 -> 0.10 USD`, from `from`.
    fn describe_totals(&self, from: Option<&Issue>) -> String {
        let quota = |i: Option<&Issue>| i.map_or("none".into(), |i| i.quota.to_string());
        let mut text = format!(
            "invoice {} {} changed: quota {} -> {}",
            self.account_id,
            self.period,
            quota(from),
            quota(self.after.as_ref())
        );
        // `XXX` is the built-in card's "no currency": quota only.
        // The register keeps amounts to 3 places: shown to the places of the invoice now.
        let places = self.after.as_ref().map_or(0, |a| a.amount.scale());
        let amount = |i: Option<&Issue>| {
            i.map_or("none".into(), |i| {
                let mut amount = i.amount.normalize();
                if amount.scale() < places {
                    amount.rescale(places);
                }
                amount.to_string()
            })
        };
        let currency = self.after.as_ref().or(from).map(|i| i.currency.as_str());
        if let Some(currency) = currency.filter(|c| *c != "XXX") {
            text.push_str(&format!(
                ", amount {} -> {} {currency}",
                amount(from),
                amount(self.after.as_ref())
            ));
        }
        let same_totals = matches!((from, &self.after),
            (Some(b), Some(a)) if b.quota == a.quota && b.amount == a.amount);
        if same_totals {
            text.push_str(" (its lines changed, not its totals)");
        }
        text
    }
}

/// The invoices that differ between the folder before the run (`before`) and the run
/// (`invoices`), in id, content or status, or that are in only one of them, by (account,
/// period); with each the last final issue the `register` held before the run.
pub fn changes(before: &Issued, invoices: &[Invoice], register: &Register) -> Vec<Change> {
    let after: HashMap<(String, String), Issue> = invoices
        .iter()
        .map(|i| ((i.account_id.clone(), i.period.clone()), Issue::of(i)))
        .collect();
    let keys: BTreeSet<&(String, String)> = before.by_key.keys().chain(after.keys()).collect();
    keys.into_iter()
        .filter_map(|key| {
            let (was, now) = (before.by_key.get(key), after.get(key));
            let last_final = was
                .or(now)
                .and_then(|i| register.by_id.get(&i.invoice_id))
                .cloned();
            let same = match (was, now) {
                (Some(b), Some(a)) => {
                    b.invoice_id == a.invoice_id
                        && b.quota == a.quota
                        && b.amount == a.amount
                        && b.status == a.status
                        && (b.content.is_none() || b.content == a.content)
                }
                // An invoice back that was as it is now the last time it was final.
                _ => false,
            };
            let back_as_it_was = match (was, now) {
                (Some(b), Some(a)) if b.invoice_id != a.invoice_id && a.status == FINAL => register
                    .by_id
                    .get(&a.invoice_id)
                    .is_some_and(|f| f.content == a.content),
                _ => false,
            };
            (!same).then(|| Change {
                back_as_it_was,
                account_id: key.0.clone(),
                period: key.1.clone(),
                before: was.cloned(),
                after: now.cloned(),
                last_final,
            })
        })
        .collect()
}
