//! The analytics Meta would report for a run's Meta units: the pages of
//! `conversation_analytics` and `pricing_analytics` per WABA, shaped as the Graph API returns
//! them (the WABA node first, then the edge's pages with `paging.previous` and `paging.next`),
//! so that `convbill reconcile` can be shown and measured end to end on a generated log.
//!
//! Each WABA gets a folder of its own. Its data points are the units summed by bucket (days or
//! months from the WABA zone's midnight) and by every dimension Meta gives: display number
//! (where the card gives every business of the WABA one), country, category, conversation or
//! pricing type, direction (conversations) and tier (charged messages).
//!
//! With planted differences, four cells are changed the way real discrepancies look, and the
//! changes are returned so that a demonstration can show each one found: one count one more,
//! one cost a cent more, one cell missing from Meta's side, and one marketing lite cell
//! (Meta's Marketing Messages API, which convbill never produces) only on Meta's side.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use rust_decimal::Decimal;
use serde_json::{json, Map, Value};

use super::analytics::{Api, MetaCategory};
use super::reconcile::{convbill_side, Cell, Dimensions, Granularity, Sum, Unit};
use super::reference::Direction;
use super::units::PricingType;
use crate::error::{Error, Result};

/// What the folder's marker says wrote it.
const WRITTEN_BY: &str = "convbill generate --meta-analytics";

/// Data points per page, as Meta's pages hold a few hundred.
pub const POINTS_PER_PAGE: usize = 250;

/// What was written.
#[derive(Debug, Clone, Default)]
pub struct Written {
    /// Folders (one per WABA), pages and data points.
    pub folders: usize,
    pub pages: usize,
    pub points: usize,
    /// The planted differences, described.
    pub planted: Vec<String>,
}

/// A cell of one WABA's analytics.
type Cells = BTreeMap<Cell, Sum>;

/// Writes the analytics of `units` into `dir` (replaced whole), one folder per WABA.
pub fn write(units: &[Unit], dir: &Path, granularity: Granularity, plant: bool) -> Result<Written> {
    let mut by_waba: BTreeMap<(Arc<str>, Api), Vec<&Unit>> = BTreeMap::new();
    for unit in units {
        by_waba
            .entry((unit.waba.clone(), unit.api))
            .or_default()
            .push(unit);
    }
    let mut groups: Vec<((Arc<str>, Api), Cells)> = by_waba
        .into_iter()
        .map(|((waba, api), units)| {
            let dimensions = Dimensions {
                phone_number: units.iter().all(|u| u.values.phone_number.is_some()),
                country: true,
                category: true,
                pricing_type: true,
                direction: api == Api::Conversations,
                tier: api == Api::Pricing,
            };
            let (cells, _) = convbill_side(
                units.iter().copied(),
                api,
                dimensions,
                granularity,
                (i64::MIN, i64::MAX),
            );
            ((waba, api), cells)
        })
        .collect();
    let planted = match plant {
        true => plant_differences(&mut groups),
        false => Vec::new(),
    };
    let folder = crate::folder::OutFolder::new(dir)?;
    let _lock = folder.lock()?;
    folder.recover()?;
    super::analytics::check_replaceable(dir, WRITTEN_BY)?;
    let staging = folder.create_staging()?;
    crate::write::write_bytes(
        &staging,
        super::analytics::MARKER,
        format!("{{\"written_by\": \"{WRITTEN_BY}\"}}\n").as_bytes(),
        0,
    )?;
    let mut written = Written {
        planted,
        ..Written::default()
    };
    let mut folders = std::collections::BTreeSet::new();
    for ((waba, api), cells) in &groups {
        let points: Vec<Value> = cells
            .iter()
            .map(|(cell, sum)| point(*api, cell, sum))
            .collect();
        folders.insert(folder_name(waba));
        let chunks: Vec<&[Value]> = points.chunks(POINTS_PER_PAGE).collect();
        for (i, chunk) in chunks.iter().enumerate() {
            let address = |page: usize, cursor: &str| {
                format!(
                    "https://graph.facebook.com/{}/{}/{}?limit={POINTS_PER_PAGE}&{cursor}=c{page}",
                    super::fetch::API_VERSION,
                    super::fetch::percent_encode(waba, b""),
                    api.name()
                )
            };
            let mut paging =
                json!({ "cursors": { "before": format!("c{i}"), "after": format!("c{}", i + 1) } });
            if i + 1 < chunks.len() {
                paging["next"] = json!(address(i + 1, "after"));
            }
            if i > 0 {
                paging["previous"] = json!(address(i - 1, "before"));
            }
            let edge = json!({ "data": [{ "data_points": chunk }], "paging": paging });
            let page = match i {
                0 => json!({ api.name(): edge, "id": &**waba }),
                _ => edge,
            };
            let name = format!(
                "{}/{}-page-{:04}.json",
                folder_name(waba),
                api.name(),
                i + 1
            );
            let text = serde_json::to_string_pretty(&page).expect("JSON values serialize");
            crate::write::write_bytes(&staging, &name, (text + "\n").as_bytes(), 1)?;
            written.pages += 1;
        }
        written.points += points.len();
    }
    written.folders = folders.len();
    crate::error::check_interrupt()?;
    folder.switch(&staging)?;
    Ok(written)
}

/// A WABA's folder: its id, with `/` (of an account's default WABA) as `_`.
fn folder_name(waba: &str) -> String {
    waba.replace(['/', '\\'], "_")
}

/// A cell as Meta's data point: its fields in Meta's spellings (upper case), the cost as a
/// number.
fn point(api: Api, cell: &Cell, sum: &Sum) -> Value {
    let mut point = Map::new();
    point.insert("start".into(), json!(cell.start));
    point.insert("end".into(), json!(cell.end));
    let count = match api {
        Api::Conversations => "conversation",
        Api::Pricing => "volume",
    };
    point.insert(count.into(), json!(sum.count));
    let values = &cell.values;
    let upper = |text: &str| text.to_ascii_uppercase();
    if let Some(phone) = &values.phone_number {
        point.insert("phone_number".into(), json!(phone));
    }
    if let Some(country) = &values.country {
        point.insert("country".into(), json!(country));
    }
    let (category, kind) = match api {
        Api::Conversations => ("conversation_category", "conversation_type"),
        Api::Pricing => ("pricing_category", "pricing_type"),
    };
    if let Some(c) = values.category {
        point.insert(category.into(), json!(upper(c.name())));
    }
    if let Some(p) = values.pricing_type {
        point.insert(kind.into(), json!(upper(p.name())));
    }
    if let Some(d) = values.direction {
        let direction = match d {
            Direction::UserInitiated => "USER_INITIATED",
            Direction::BusinessInitiated => "BUSINESS_INITIATED",
        };
        point.insert("conversation_direction".into(), json!(direction));
    }
    if let Some(tier) = &values.tier {
        point.insert("tier".into(), json!(tier));
    }
    match sum.cost {
        // Meta writes costs as JSON numbers: `0` for free ones, otherwise the shortest
        // decimal that reads back the same.
        Some(cost) if cost.is_zero() => {
            point.insert("cost".into(), json!(0));
        }
        Some(cost) => {
            let number = cost
                .normalize()
                .to_string()
                .parse::<f64>()
                .expect("a decimal reads as a number");
            point.insert("cost".into(), json!(number));
        }
        None => {}
    }
    Value::Object(point)
}

/// Changes four cells (see the module documentation); returns what was changed.
fn plant_differences(groups: &mut [((Arc<str>, Api), Cells)]) -> Vec<String> {
    let mut planted = Vec::new();
    let describe = |waba: &str, cell: &Cell| {
        let values = &cell.values;
        let parts: Vec<String> = [
            Some(crate::reconcile::utc_minute(cell.start)),
            values.phone_number.clone(),
            values.country.clone(),
            values.category.map(|c| c.name().to_string()),
            values.pricing_type.map(|p| p.name().to_string()),
            values.tier.clone(),
        ]
        .into_iter()
        .flatten()
        .collect();
        format!("{} WABA {waba} {}", cell.api.name(), parts.join(" "))
    };
    // The largest group's cells are changed: the planted cells land in one folder of pages.
    let Some(((waba, _), cells)) = groups
        .iter_mut()
        .filter(|((_, api), _)| *api == Api::Pricing)
        .max_by_key(|(_, cells)| cells.len())
    else {
        return planted;
    };
    let keys: Vec<Cell> = cells.keys().cloned().collect();
    if keys.len() < 4 {
        return planted;
    }
    let counted = keys[keys.len() / 4].clone();
    if let Some(sum) = cells.get_mut(&counted) {
        sum.count += 1;
        planted.push(format!(
            "count: Meta counts one more in {}",
            describe(waba, &counted)
        ));
    }
    let charged = keys[keys.len() / 2..]
        .iter()
        .find(|cell| **cell != counted && cells[*cell].cost.is_some_and(|c| c > Decimal::ZERO))
        .cloned();
    if let Some(charged) = &charged {
        if let Some(sum) = cells.get_mut(charged) {
            sum.cost = sum.cost.map(|c| c + Decimal::new(1, 2));
            planted.push(format!(
                "cost: Meta charges 0.01 more in {}",
                describe(waba, charged)
            ));
        }
    }
    let dropped = keys[3 * keys.len() / 4..]
        .iter()
        .find(|cell| **cell != counted && Some(*cell) != charged.as_ref())
        .cloned();
    if let Some(dropped) = dropped {
        cells.remove(&dropped);
        planted.push(format!(
            "missing: Meta reports nothing in {}",
            describe(waba, &dropped)
        ));
    }
    // Marketing lite: the first cell's bucket and display number, a message Meta sent
    // through its Marketing Messages API.
    let mut lite = keys[0].clone();
    lite.values.category = Some(MetaCategory::MarketingLite);
    lite.values.pricing_type = Some(PricingType::Regular);
    lite.values.tier = None;
    planted.push(format!(
        "extra: Meta reports a marketing lite message in {}",
        describe(waba, &lite)
    ));
    cells.insert(
        lite,
        Sum {
            count: 1,
            cost: Some(Decimal::new(250, 4)),
        },
    );
    planted
}

/// The analytics Meta would report for the message log `log` priced by the card `rates`
/// (which must have `[meta]`), written into `dir` by [`write`]. The log is run through the
/// whole pipeline in a work folder beside `dir`, removed afterwards.
pub fn of_log(
    log: &Path,
    rates: &Path,
    dir: &Path,
    granularity: Granularity,
    plant: bool,
) -> Result<Written> {
    let card = crate::rates::load(rates)?;
    let Some(meta) = card.meta.as_ref() else {
        return Err(Error::Reconcile {
            problem: format!(
                "the rate card `{}` has no `[meta]` section: there are no Meta units to report analytics of",
                rates.display()
            ),
        });
    };
    let folder = crate::folder::OutFolder::new(dir)?;
    // Before the pipeline runs: a folder that cannot be replaced is said at once.
    super::analytics::check_replaceable(dir, WRITTEN_BY)?;
    let work = folder.parent.join(format!(".{}.convbill-run", folder.name));
    let run = crate::run(&crate::RunConfig {
        rates: Some(rates.to_path_buf()),
        ..crate::RunConfig::new(log, &work)
    });
    let written = run.and_then(|_| {
        let units = crate::reconcile::read_units(&work, meta)?;
        write(&units, dir, granularity, plant)
    });
    let _ = std::fs::remove_dir_all(&work);
    written
}
