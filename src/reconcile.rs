//! `convbill reconcile`: a run's Meta units against Meta's own analytics (SPEC-meta §5).
//!
//! Reads the units of a whole run (`meta_units.parquet`) or of a nightly history (every
//! night's `meta_units/date=D/part-0.parquet` and the conversations still open in
//! `month-to-date/`), the rate card the run used (for the businesses' display numbers, WABAs
//! and zones), and saved analytics pages. The pages are grouped by analytics and WABA; each
//! group is compared at the finest grain it has ([`crate::meta::reconcile`]), and the cells
//! are written to `DIR/reconciliation/` as Parquet and CSV.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::path::{Path, PathBuf};

use polars::prelude::*;
use rust_decimal::Decimal;

use crate::error::{Error, InputError, Result};
use crate::meta::analytics::{read_pages, Api, DataPoint, MetaCategory, Page, Values};
use crate::meta::config::MetaConfig;
use crate::meta::reconcile::{
    compare, convbill_side, meta_side, Dimensions, Granularity, Row, Status, Tolerance, Unit,
};
use crate::meta::reference::Direction;
use crate::meta::units::PricingType;
use crate::meta::Category;

/// The folder of a reconciliation, inside the run's output folder.
pub const RECONCILIATION_DIR: &str = "reconciliation";
pub const RECONCILIATION_FILE: &str = "reconciliation.parquet";
pub const RECONCILIATION_CSV_FILE: &str = "reconciliation.csv";

/// What to reconcile.
#[derive(Debug, Clone)]
pub struct ReconcileConfig {
    /// A run's output folder (whole or nightly).
    pub out: PathBuf,
    /// Saved analytics pages: files, or folders of `*.json` files.
    pub analytics: Vec<PathBuf>,
    /// The rate card; by default the one the run's manifest names, if unchanged.
    pub rates: Option<PathBuf>,
    pub tolerance: Tolerance,
    /// A row of the reconciliation to explain (its number in `reconciliation.csv`, from 1).
    pub explain: Option<usize>,
}

/// What lies behind one row of the reconciliation: Meta's data points and convbill's units.
#[derive(Debug, Clone)]
pub struct Explanation {
    /// The row's number in `reconciliation.csv` (1 for the first row after the header).
    pub number: usize,
    pub row: WabaRow,
    /// Meta's data points summed into the cell, with the file of each.
    pub points: Vec<(PathBuf, DataPoint)>,
    /// convbill's units summed into the cell, in start order.
    pub units: Vec<UnitDetail>,
    /// The run's message log, as its manifest names it.
    pub input: Option<String>,
    /// The rate card the run used, as its manifest names it (`None`: the built-in card).
    pub rates: Option<String>,
}

/// One of convbill's units, as `meta_units.parquet` has it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnitDetail {
    pub unit_id: String,
    pub account_id: String,
    pub business_id: String,
    pub user_id: String,
    /// The message that opened the conversation, or the message itself.
    pub message_id: String,
    /// `YYYY-MM-DD HH:MM:SS UTC`.
    pub started_at: String,
    pub category: String,
    pub pricing_type: String,
    pub tier: String,
    pub cost: String,
}

/// One compared cell, with the WABA it belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WabaRow {
    /// The WABA's id as the pages give it (`id`), or `-` for pages of the analytics edge.
    pub waba: String,
    pub row: Row,
}

/// What a reconciliation found.
#[derive(Debug, Clone)]
pub struct ReconcileReport {
    pub rows: Vec<WabaRow>,
    /// Whether Meta gave costs; without them (partner-billed WABAs) only counts are compared.
    pub costs_compared: bool,
    /// Per analytics and WABA: convbill's units left out because they start outside the
    /// buckets Meta's pages hold (`count`, first bucket start, last bucket end).
    pub outside: Vec<(Api, String, usize, i64, i64)>,
    /// Per analytics and WABA: Meta's data points left out because their buckets are outside
    /// what the run covers.
    pub meta_outside: Vec<(Api, String, usize, Coverage)>,
    /// The folder written.
    pub written: PathBuf,
    /// The row asked for with [`ReconcileConfig::explain`].
    pub explained: Option<Explanation>,
}

impl ReconcileReport {
    /// Cells by status.
    pub fn by_status(&self) -> BTreeMap<Status, usize> {
        let mut counts = BTreeMap::new();
        for row in &self.rows {
            *counts.entry(row.row.status).or_insert(0) += 1;
        }
        counts
    }

    /// Cells that are not a match.
    pub fn differences(&self) -> usize {
        self.rows
            .iter()
            .filter(|r| r.row.status != Status::Match)
            .count()
    }

    /// The `n` differing cells with the largest cost difference (then count difference), with
    /// their row numbers (from 1, as in `reconciliation.csv`).
    pub fn largest(&self, n: usize) -> Vec<(usize, &WabaRow)> {
        let mut differing: Vec<(usize, &WabaRow)> = self
            .rows
            .iter()
            .enumerate()
            .filter(|(_, r)| r.row.status != Status::Match)
            .map(|(i, r)| (i + 1, r))
            .collect();
        differing.sort_by_key(|(number, r)| {
            (
                std::cmp::Reverse((
                    cost_difference(&r.row).abs(),
                    count_difference(&r.row).abs(),
                )),
                *number,
            )
        });
        differing.truncate(n);
        differing
    }
}

/// convbill's count minus Meta's.
pub fn count_difference(row: &Row) -> i64 {
    let count = |s: Option<crate::meta::reconcile::Sum>| s.map_or(0, |s| s.count as i64);
    count(row.convbill) - count(row.meta)
}

/// convbill's cost minus Meta's (zero where Meta gives none).
pub fn cost_difference(row: &Row) -> Decimal {
    match (row.meta.map(|s| s.cost), row.convbill.and_then(|s| s.cost)) {
        (Some(None), _) => Decimal::ZERO,
        (meta, convbill) => convbill.unwrap_or_default() - meta.flatten().unwrap_or_default(),
    }
}

/// Reconciles and writes `DIR/reconciliation/`, holding the output folder's lock.
pub fn reconcile(config: &ReconcileConfig) -> Result<ReconcileReport> {
    let tolerance = config.tolerance;
    if tolerance.absolute.is_sign_negative() || tolerance.relative.is_sign_negative() {
        return Err(problem(format!(
            "a tolerance cannot be negative (`--tolerance {}`, `--tolerance-relative {}`)",
            tolerance.absolute, tolerance.relative
        )));
    }
    let folder = crate::folder::OutFolder::new(&config.out)?;
    let _lock = folder.lock()?;
    let card = card_of(config)?;
    let Some(meta) = card.meta.as_ref() else {
        return Err(problem(
            "the rate card has no `[meta]` section: there are no Meta units to reconcile",
        ));
    };
    let units = read_units(&config.out, meta)?;
    let pages = read_pages(&config.analytics)?;
    let index = UnitIndex::of(&units);
    // The instants the run's units start in: analytics outside them cover nothing of the run.
    let span = units
        .iter()
        .map(|u| u.started_at)
        .fold(None, |span: Option<(i64, i64)>, t| {
            Some(span.map_or((t, t), |(a, b)| (a.min(t), b.max(t))))
        });
    let coverage = coverage_of(&config.out, span);
    let mut rows = Vec::new();
    let mut costs_compared = false;
    let mut outside = Vec::new();
    let mut meta_outside = Vec::new();
    let mut explained = None;
    let (mut overlapping, mut not_overlapping) = (false, None);
    for ((api, waba, granularity), group) in groups(&pages) {
        let files: Vec<&Path> = group.iter().map(|(path, _)| path.as_path()).collect();
        let pages: Vec<&Page> = group.iter().map(|(_, page)| page).collect();
        let points = || pages.iter().flat_map(|p| p.points.iter());
        if points().next().is_none() {
            continue;
        }
        check_no_twice(&group)?;
        costs_compared |= points().any(|p| p.cost.is_some());
        let dimensions = Dimensions::of(points());
        let (from, to) = points().fold((i64::MAX, i64::MIN), |(from, to), p| {
            (from.min(p.start), to.max(p.end))
        });
        if !span.is_some_and(|(first, last)| from <= last && first < to) {
            // Nothing of the run: said, and an error if no analytics given cover any of it.
            let error = InputError::MetaAnalyticsOutside {
                files: files.iter().map(|p| format!("`{}`", p.display())).collect(),
                problem: period_problem(from, to, span),
            };
            if let Some(coverage) = coverage {
                let waba = waba.clone().unwrap_or_else(|| "-".into());
                meta_outside.push((api, waba, points().count(), coverage));
            }
            not_overlapping.get_or_insert(error);
            continue;
        }
        overlapping = true;
        // Meta's buckets the run does not cover are left out, and counted.
        let covered = |p: &DataPoint| coverage.is_none_or(|c| c.covers(p.start, p.end));
        let beyond = points().filter(|p| !covered(p)).count();
        if let (Some(coverage), true) = (coverage, beyond > 0) {
            meta_outside.push((
                api,
                waba.clone().unwrap_or_else(|| "-".into()),
                beyond,
                coverage,
            ));
        }
        let (from, to) = points()
            .filter(|p| covered(p))
            .fold((i64::MAX, i64::MIN), |(from, to), p| {
                (from.min(p.start), to.max(p.end))
            });
        let mine = units_of(&index, api, waba.as_deref(), &pages, &files)?;
        let (ours, left_out) = convbill_side(
            mine.iter().copied(),
            api,
            dimensions,
            granularity,
            (from, to),
        );
        if left_out > 0 {
            outside.push((
                api,
                waba.clone().unwrap_or_else(|| "-".into()),
                left_out,
                from,
                to,
            ));
        }
        let theirs = meta_side(pages.iter().copied(), dimensions, covered);
        let first_row = rows.len();
        rows.extend(
            compare(&theirs, &ours, config.tolerance)
                .into_iter()
                .map(|row| WabaRow {
                    waba: waba.clone().unwrap_or_else(|| "-".into()),
                    row,
                }),
        );
        let asked = config.explain.and_then(|n| n.checked_sub(1));
        if let Some(index) = asked.filter(|i| (first_row..rows.len()).contains(i)) {
            let cell = &rows[index].row.cell;
            let in_cell = |start: i64, end: i64, values: &Values| {
                (start, end) == (cell.start, cell.end) && dimensions.kept(values) == cell.values
            };
            let points = group
                .iter()
                .flat_map(|(path, page)| {
                    page.points
                        .iter()
                        .filter(|p| in_cell(p.start, p.end, &p.values))
                        .map(|p| (path.clone(), p.clone()))
                })
                .collect();
            let mut indexes: Vec<(i64, usize)> = mine
                .iter()
                .filter(|u| {
                    let (start, end) = granularity.bucket(u.zone, u.started_at);
                    in_cell(start, end, &u.values)
                })
                .map(|u| (u.started_at, u.index))
                .collect();
            indexes.sort_unstable();
            explained = Some((index, points, indexes));
        }
    }
    if let (false, Some(error)) = (overlapping, not_overlapping) {
        return Err(error.into());
    }
    let explained = match (config.explain, explained) {
        (None, _) => None,
        (Some(number), None) => {
            return Err(problem(format!(
                "there is no row {number} to explain: the reconciliation has {} rows (numbered from 1, as in reconciliation.csv)",
                rows.len()
            )))
        }
        (Some(number), Some((index, points, indexes))) => Some(Explanation {
            number,
            row: rows[index].clone(),
            points,
            units: unit_details(&config.out, &indexes)?,
            input: run_input(&config.out).0,
            rates: run_input(&config.out).1,
        }),
    };
    let written = write(&folder, &rows, config.tolerance)?;
    Ok(ReconcileReport {
        rows,
        costs_compared,
        outside,
        meta_outside,
        written,
        explained,
    })
}

/// What of time a run covers: its Meta analytics' buckets outside it are not compared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Coverage {
    /// A nightly history: its nights, whole UTC days (Unix seconds, end excluded). A bucket
    /// is compared if it lies within them.
    Nights(i64, i64),
    /// A whole run: the first and last start of its units. A bucket is compared if it holds
    /// any instant between them.
    Units(i64, i64),
}

impl Coverage {
    fn covers(self, start: i64, end: i64) -> bool {
        match self {
            Coverage::Nights(from, to) => from <= start && end <= to,
            Coverage::Units(first, last) => start <= last && first < end,
        }
    }

    /// `2025-06-15 00:00 UTC to 2025-07-17 00:00 UTC`, as the summary says it.
    pub fn text(self) -> String {
        match self {
            Coverage::Nights(from, to) => {
                format!("its nights, {} to {}", utc_minute(from), utc_minute(to))
            }
            Coverage::Units(first, last) => format!(
                "its units, which start from {} to {}",
                utc_minute(first),
                utc_minute(last)
            ),
        }
    }
}

/// A nightly history's nights (from its month-to-date manifest), or the span of the units.
fn coverage_of(out: &Path, span: Option<(i64, i64)>) -> Option<Coverage> {
    let manifest = out
        .join(crate::nightly::MONTH_TO_DATE_DIR)
        .join(crate::write::MANIFEST_FILE);
    let nights = manifest
        .is_file()
        .then(|| crate::write::read_json(&manifest).ok())
        .flatten()
        .and_then(|m: serde_json::Value| {
            let day = |field: &str| {
                m["history"][field]
                    .as_str()
                    .and_then(|d| d.parse::<chrono::NaiveDate>().ok())
            };
            let midnight =
                |d: chrono::NaiveDate| d.and_hms_opt(0, 0, 0).map(|t| t.and_utc().timestamp());
            Some(Coverage::Nights(
                midnight(day("first_night")?)?,
                midnight(day("last_night")?.succ_opt()?)?,
            ))
        });
    nights.or(span.map(|(first, last)| Coverage::Units(first, last)))
}

/// The message log the run read, as its manifest names it.
/// The message log and the rate card the run read, as its manifest names them (the card
/// `None` when it is the built-in one).
fn run_input(out: &Path) -> (Option<String>, Option<String>) {
    let manifest: Option<serde_json::Value> = [
        out.join(crate::write::MANIFEST_FILE),
        out.join(crate::nightly::MONTH_TO_DATE_DIR)
            .join(crate::write::MANIFEST_FILE),
    ]
    .iter()
    .filter(|m| m.is_file())
    .find_map(|m| crate::write::read_json(m).ok());
    let Some(manifest) = manifest else {
        return (None, None);
    };
    let text = |value: &serde_json::Value| value.as_str().map(str::to_string);
    (
        text(&manifest["input"]["path"]),
        text(&manifest["rate_card"]["source"]).filter(|s| s != crate::rates::BUILT_IN),
    )
}

/// The units at `indexes` (`(start, index)` in the order [`read_units`] reads them), as
/// `meta_units.parquet` has them.
fn unit_details(out: &Path, indexes: &[(i64, usize)]) -> Result<Vec<UnitDetail>> {
    let mut details = vec![None; indexes.len()];
    let mut offset = 0;
    for path in unit_files(out)? {
        let frame = read_columns(
            &path,
            &[
                "unit_id",
                "account_id",
                "business_id",
                "user_id",
                "message_id",
                "started_at",
                "category",
                "pricing_type",
                "tier",
                "cost",
            ],
        )?;
        let height = frame.height();
        let text = |name: &str, row: usize| -> Result<String> {
            Ok(frame
                .column(name)?
                .str()?
                .get(row)
                .unwrap_or_default()
                .to_string())
        };
        for (slot, (started_at, index)) in indexes.iter().enumerate() {
            if !(offset..offset + height).contains(index) {
                continue;
            }
            let row = index - offset;
            details[slot] = Some(UnitDetail {
                unit_id: text("unit_id", row)?,
                account_id: text("account_id", row)?,
                business_id: text("business_id", row)?,
                user_id: text("user_id", row)?,
                message_id: text("message_id", row)?,
                started_at: chrono::DateTime::from_timestamp(*started_at, 0)
                    .map(|t| t.format("%Y-%m-%d %H:%M:%S UTC").to_string())
                    .unwrap_or_default(),
                category: text("category", row)?,
                pricing_type: text("pricing_type", row)?,
                tier: text("tier", row)?,
                cost: text("cost", row)?,
            });
        }
        offset += height;
    }
    Ok(details.into_iter().flatten().collect())
}

fn read_columns(path: &Path, columns: &[&str]) -> Result<DataFrame> {
    let file = File::open(path).map_err(|e| InputError::Unreadable {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    Ok(ParquetReader::new(file)
        .with_columns(Some(columns.iter().map(|c| c.to_string()).collect()))
        .finish()?)
}

fn problem(text: impl Into<String>) -> Error {
    Error::Reconcile {
        problem: text.into(),
    }
}

/// The card: `--rates`, or the one the run's manifest names if it is unchanged.
fn card_of(config: &ReconcileConfig) -> Result<crate::rates::RateCard> {
    if let Some(path) = &config.rates {
        return Ok(crate::rates::load(path)?);
    }
    let manifests = [
        config.out.join(crate::write::MANIFEST_FILE),
        config
            .out
            .join(crate::nightly::MONTH_TO_DATE_DIR)
            .join(crate::write::MANIFEST_FILE),
    ];
    let Some(manifest) = manifests.iter().find(|m| m.is_file()) else {
        return Err(problem(format!(
            "`{}` holds no convbill run (no manifest.json): reconcile the output folder of a run",
            config.out.display()
        )));
    };
    let manifest: serde_json::Value = crate::write::read_json(manifest)?;
    let card = &manifest["rate_card"];
    let (Some(source), Some(sha256)) = (card["source"].as_str(), card["sha256"].as_str()) else {
        return Err(problem(
            "the run's manifest names no rate card file: pass `--rates`",
        ));
    };
    let path = (source != crate::rates::BUILT_IN).then(|| Path::new(source));
    match crate::rates::load_or_built_in(path) {
        // The card's checksum covers the Meta rate cards and markets it reads too.
        Ok(card) if card.sha256 == sha256 => Ok(card),
        Ok(_) => Err(problem(format!(
            "the rate card `{source}` has changed since the run: pass `--rates` with the card the run used"
        ))),
        Err(e) => Err(problem(format!(
            "the run's rate card `{source}` cannot be read ({e}): pass `--rates`"
        ))),
    }
}

/// The run's units, each in its business's zone.
pub(crate) fn read_units(out: &Path, meta: &MetaConfig) -> Result<Vec<Unit>> {
    let mut units = Vec::new();
    for path in unit_files(out)? {
        let frame = read_columns(
            &path,
            &[
                "account_id",
                "business_id",
                "model",
                "started_at",
                "country",
                "category",
                "pricing_type",
                "direction",
                "tier",
                "cost",
            ],
        )?;
        let offset = units.len();
        units.extend(units_of_frame(&frame, meta, offset)?);
    }
    Ok(units)
}

/// The files of the run's units: `meta_units.parquet`, or a nightly history's nights and
/// open conversations.
fn unit_files(out: &Path) -> Result<Vec<PathBuf>> {
    let whole = out.join(crate::write::META_UNITS_FILE);
    let mut files = Vec::new();
    if whole.is_file() {
        files.push(whole);
    } else {
        let nightly = out.join("meta_units");
        if let Ok(entries) = std::fs::read_dir(&nightly) {
            let mut nights: Vec<PathBuf> = entries
                .filter_map(|e| e.ok().map(|e| e.path().join("part-0.parquet")))
                .filter(|p| p.is_file())
                .collect();
            nights.sort();
            files.extend(nights);
        }
        let open = out
            .join(crate::nightly::MONTH_TO_DATE_DIR)
            .join(crate::nightly::meta::OPEN_UNITS);
        if open.is_file() {
            files.push(open);
        }
    }
    if files.is_empty() {
        return Err(problem(format!(
            "`{}` holds no Meta units (`meta_units.parquet`, or `meta_units/` of a nightly history): run with a rate card that has `[meta]`",
            out.display()
        )));
    }
    Ok(files)
}

/// The units of one file; `offset`: how many units the files before it hold.
fn units_of_frame(frame: &DataFrame, meta: &MetaConfig, offset: usize) -> Result<Vec<Unit>> {
    let text = |name: &str| -> Result<Vec<Option<&str>>> {
        Ok(frame.column(name)?.str()?.iter().collect())
    };
    let (accounts, businesses, models) =
        (text("account_id")?, text("business_id")?, text("model")?);
    let (countries, categories, types) =
        (text("country")?, text("category")?, text("pricing_type")?);
    let (directions, tiers, costs) = (text("direction")?, text("tier")?, text("cost")?);
    let starts: Vec<Option<i64>> = frame
        .column("started_at")?
        .datetime()?
        .physical()
        .iter()
        .collect();
    type Seen = (Option<String>, chrono_tz::Tz, std::sync::Arc<str>);
    let mut businesses_seen: BTreeMap<(&str, &str), Seen> = BTreeMap::new();
    (0..frame.height())
        .map(|i| {
            let (account, business) = (
                accounts[i].unwrap_or_default(),
                businesses[i].unwrap_or_default(),
            );
            let (phone, zone, waba) = businesses_seen
                .entry((account, business))
                .or_insert_with(|| {
                    (
                        meta.businesses
                            .get(business)
                            .and_then(|b| b.phone_number.clone()),
                        meta.time_zone_of(business),
                        meta.waba_of(account, business).into(),
                    )
                })
                .clone();
            let category = categories[i].unwrap_or_default();
            let unit = Unit {
                api: match models[i] {
                    Some("CBP") => Api::Conversations,
                    _ => Api::Pricing,
                },
                started_at: starts[i].unwrap_or_default().div_euclid(1_000_000_000),
                values: Values {
                    phone_number: phone,
                    country: countries[i].map(str::to_string),
                    category: Some(MetaCategory::Priced(
                        Category::ALL
                            .into_iter()
                            .find(|c| c.name() == category)
                            .unwrap_or(Category::Service),
                    )),
                    pricing_type: Some(
                        types[i]
                            .and_then(PricingType::parse)
                            .unwrap_or(PricingType::Regular),
                    ),
                    direction: match directions[i] {
                        Some(crate::schema::USER_INITIATED) => Some(Direction::UserInitiated),
                        Some(crate::schema::BUSINESS_INITIATED) => {
                            Some(Direction::BusinessInitiated)
                        }
                        _ => None,
                    },
                    tier: tiers[i].map(str::to_string),
                },
                cost: costs[i].and_then(|c| c.parse().ok()).unwrap_or_default(),
                zone,
                waba,
                index: offset + i,
            };
            Ok(unit)
        })
        .collect()
}

/// Saved pages of one analytics and WABA, with their files.
type Group<'a> = Vec<&'a (PathBuf, Page)>;

/// Refuses a data point that two pages hold: the same bucket and values twice (the same
/// analytics saved twice, or overlapping fetches), which would count Meta's figures twice.
fn check_no_twice(group: &[&(PathBuf, Page)]) -> Result<()> {
    let mut seen: std::collections::HashMap<(i64, i64, &Values), &Path> =
        std::collections::HashMap::new();
    for (path, page) in group {
        for point in &page.points {
            if let Some(earlier) = seen.insert((point.start, point.end, &point.values), path) {
                if earlier == path.as_path() {
                    return Err(InputError::MetaAnalyticsOutside {
                        files: vec![format!("`{}`", path.display())],
                        problem: "is read twice (given twice, or also in a folder given): its figures would be counted twice".into(),
                    }
                    .into());
                }
                return Err(InputError::MetaAnalyticsOutside {
                    files: vec![format!("`{}`", earlier.display()), format!("`{}`", path.display())],
                    problem: format!(
                        "both hold the {} data point of {} to {} with the same values: the same analytics saved twice (or overlapping fetches) would be counted twice; keep one",
                        page.api.name(),
                        utc_minute(point.start),
                        utc_minute(point.end)
                    ),
                }
                .into());
            }
        }
    }
    Ok(())
}

/// A group of pages: analytics, WABA (`None` where no page names it) and buckets.
type GroupKey = (Api, Option<String>, Granularity);

/// The pages by analytics, WABA and granularity, in that order: daily and monthly pages of
/// the same WABA are compared each on their own. A page that names no WABA (an edge page
/// without paging addresses) belongs to the one WABA the other pages of its analytics name,
/// if they name exactly one.
fn groups(pages: &[(PathBuf, Page)]) -> BTreeMap<GroupKey, Group<'_>> {
    let named: BTreeMap<Api, BTreeSet<&str>> =
        pages.iter().fold(BTreeMap::new(), |mut named, (_, page)| {
            if let Some(waba) = page.waba.as_deref() {
                named
                    .entry(page.api)
                    .or_insert_with(BTreeSet::new)
                    .insert(waba);
            }
            named
        });
    let mut groups: BTreeMap<GroupKey, Group<'_>> = BTreeMap::new();
    for page in pages {
        let granularity = page.1.points.first().map_or(Granularity::Daily, |p| {
            Granularity::of_bucket(p.start, p.end)
        });
        let waba = page
            .1
            .waba
            .clone()
            .or_else(|| match named.get(&page.1.api) {
                Some(wabas) if wabas.len() == 1 => wabas.first().map(|w| w.to_string()),
                _ => None,
            });
        groups
            .entry((page.1.api, waba, granularity))
            .or_default()
            .push(page);
    }
    groups
}

/// The run's units by analytics: all of them, by WABA and by display number.
struct UnitIndex<'a> {
    all: BTreeMap<Api, Vec<&'a Unit>>,
    by_waba: BTreeMap<(Api, &'a str), Vec<&'a Unit>>,
    by_phone: std::collections::HashMap<(Api, &'a str), Vec<&'a Unit>>,
}

impl<'a> UnitIndex<'a> {
    fn of(units: &'a [Unit]) -> Self {
        let mut index = UnitIndex {
            all: BTreeMap::new(),
            by_waba: BTreeMap::new(),
            by_phone: std::collections::HashMap::new(),
        };
        for unit in units {
            index.all.entry(unit.api).or_default().push(unit);
            index
                .by_waba
                .entry((unit.api, &*unit.waba))
                .or_default()
                .push(unit);
            if let Some(phone) = unit.values.phone_number.as_deref() {
                index
                    .by_phone
                    .entry((unit.api, phone))
                    .or_default()
                    .push(unit);
            }
        }
        index
    }
}

/// The units of `api` a group of pages is compared with. For the pages of one WABA: where
/// they name display numbers, the units of the businesses the card gives those numbers;
/// otherwise the units of that WABA (`waba` in `[meta.businesses]`). Pages that name no WABA
/// are compared with all the units.
fn units_of<'a>(
    index: &UnitIndex<'a>,
    api: Api,
    waba: Option<&str>,
    pages: &[&Page],
    files: &[&Path],
) -> Result<Vec<&'a Unit>> {
    let Some(waba) = waba else {
        return Ok(index.all.get(&api).cloned().unwrap_or_default());
    };
    let listed = |files: &[&Path]| files.iter().map(|p| format!("`{}`", p.display())).collect();
    let numbers: BTreeSet<&str> = pages
        .iter()
        .flat_map(|p| p.points.iter())
        .filter_map(|p| p.values.phone_number.as_deref())
        .collect();
    if numbers.is_empty() {
        if let Some(mine) = index.by_waba.get(&(api, waba)) {
            return Ok(mine.clone());
        }
        let wabas: Vec<String> = index
            .by_waba
            .keys()
            .filter(|(a, _)| *a == api)
            .map(|(_, w)| format!("`{w}`"))
            .collect();
        return Err(InputError::MetaAnalyticsOutside {
            files: listed(files),
            problem: format!(
                "are of WABA `{waba}`, and the run's {} units are of {}: give that WABA's businesses `waba = \"{waba}\"` in `[meta.businesses]`, or fetch the analytics with the `PHONE` dimension",
                api.name(),
                match wabas.len() {
                    0 => "no WABA".to_string(),
                    1..=10 => format!("WABA {}", wabas.join(", ")),
                    n => format!("WABA {} and {} more", wabas[..10].join(", "), n - 10),
                }
            ),
        }
        .into());
    }
    let mine: Vec<&Unit> = numbers
        .iter()
        .filter_map(|n| index.by_phone.get(&(api, *n)))
        .flatten()
        .copied()
        .collect();
    if mine.is_empty() {
        return Err(InputError::MetaAnalyticsOutside {
            files: listed(files),
            problem: format!(
                "name the display numbers {}, which no business of the card has (`phone_number` in `[meta.businesses]`) among the run's {} units",
                numbers.iter().map(|n| format!("`{n}`")).collect::<Vec<_>>().join(", "),
                api.name()
            ),
        }
        .into());
    }
    Ok(mine)
}

/// Unix seconds as `YYYY-MM-DD HH:MM UTC`, as messages name bucket bounds.
pub fn utc_minute(t: i64) -> String {
    chrono::DateTime::from_timestamp(t, 0)
        .map(|t| t.format("%Y-%m-%d %H:%M UTC").to_string())
        .unwrap_or_default()
}

fn period_problem(from: i64, to: i64, span: Option<(i64, i64)>) -> String {
    let utc = utc_minute;
    match span {
        Some((first, last)) => format!(
            "cover {} to {}, and the run's Meta units start from {} to {}: they do not overlap",
            utc(from),
            utc(to),
            utc(first),
            utc(last)
        ),
        None => format!(
            "cover {} to {}, and the run has no Meta units",
            utc(from),
            utc(to)
        ),
    }
}

/// Writes the cells into `DIR/reconciliation/`, replacing an earlier reconciliation whole.
fn write(
    folder: &crate::folder::OutFolder,
    rows: &[WabaRow],
    tolerance: Tolerance,
) -> Result<PathBuf> {
    let target = crate::folder::OutFolder::new(&folder.out.join(RECONCILIATION_DIR))?;
    crate::write::check_output_folder(&target.out)?;
    let staging = target.create_staging()?;
    let result = (|| -> Result<()> {
        let mut frame = frame(rows)?;
        let parquet = crate::write::write_parquet(&staging, RECONCILIATION_FILE, &mut frame)?;
        let csv = crate::write::write_bytes(
            &staging,
            RECONCILIATION_CSV_FILE,
            &csv(rows),
            rows.len() as u64,
        )?;
        crate::write::write_json(
            &staging,
            crate::write::MANIFEST_FILE,
            &serde_json::json!({
                "tolerance": {
                    "absolute": tolerance.absolute.to_string(),
                    "relative": tolerance.relative.to_string(),
                },
                "outputs": [parquet, csv],
            }),
        )?;
        crate::error::check_interrupt()?;
        target.switch(&staging)
    })();
    if result.is_err() {
        let _ = std::fs::remove_dir_all(&staging);
    }
    result.map(|()| target.out)
}

/// The output columns, in order.
pub const COLUMNS: [&str; 18] = [
    "waba",
    "analytics",
    "start",
    "end",
    "phone_number",
    "country",
    "category",
    "pricing_type",
    "direction",
    "tier",
    "meta_count",
    "convbill_count",
    "count_difference",
    "meta_cost",
    "convbill_cost",
    "cost_difference",
    "status",
    "granularity",
];

/// A row's texts, in [`COLUMNS`] order (`None` for a missing value).
fn texts(row: &WabaRow) -> Vec<Option<String>> {
    let r = &row.row;
    let utc = |t: i64| {
        chrono::DateTime::from_timestamp(t, 0).map(|t| t.format("%Y-%m-%dT%H:%M:%SZ").to_string())
    };
    let cost =
        |s: Option<crate::meta::reconcile::Sum>| s.and_then(|s| s.cost).map(|c| c.to_string());
    vec![
        Some(row.waba.clone()),
        Some(r.cell.api.name().to_string()),
        utc(r.cell.start),
        utc(r.cell.end),
        r.cell.values.phone_number.clone(),
        r.cell.values.country.clone(),
        r.cell.values.category.map(|c| c.name().to_string()),
        r.cell.values.pricing_type.map(|p| p.name().to_string()),
        r.cell.values.direction.map(|d| match d {
            Direction::UserInitiated => crate::schema::USER_INITIATED.to_string(),
            Direction::BusinessInitiated => crate::schema::BUSINESS_INITIATED.to_string(),
        }),
        r.cell.values.tier.clone(),
        r.meta.map(|s| s.count.to_string()),
        r.convbill.map(|s| s.count.to_string()),
        Some(count_difference(r).to_string()),
        cost(r.meta),
        cost(r.convbill),
        Some(cost_difference(r).to_string()),
        Some(r.status.name().to_string()),
        Some(
            match Granularity::of_bucket(r.cell.start, r.cell.end) {
                Granularity::Daily => "DAILY",
                Granularity::Monthly => "MONTHLY",
            }
            .to_string(),
        ),
    ]
}

/// The columns written as numbers (never given a spreadsheet's text mark in the CSV), and in
/// the Parquet file as integers, decimals or UTC instants.
const NUMBERS: [&str; 8] = [
    "start",
    "end",
    "meta_count",
    "convbill_count",
    "count_difference",
    "meta_cost",
    "convbill_cost",
    "cost_difference",
];

fn frame(rows: &[WabaRow]) -> Result<DataFrame> {
    let texts: Vec<Vec<Option<String>>> = rows.iter().map(texts).collect();
    let costs = |side: fn(&Row) -> Option<crate::meta::reconcile::Sum>| {
        rows.iter().map(move |r| side(&r.row).and_then(|s| s.cost))
    };
    // Costs as DECIMAL(18, s): s the most places any cost has (Meta's or the card's), at
    // least 4 and at most 10.
    let scale = costs(|r| r.meta)
        .chain(costs(|r| r.convbill))
        .flatten()
        .map(|c| c.normalize().scale())
        .max()
        .unwrap_or(0)
        .clamp(4, 10);
    let money = |name: &str, values: Vec<Option<Decimal>>| {
        crate::rating::frames::optional_decimal_column(
            name,
            values.into_iter().map(|v| v.map(|v| v.round_dp(scale))),
            scale,
        )
    };
    let instant = |name: &str, at: fn(&Row) -> i64| -> Result<Column> {
        Ok(Int64Chunked::from_vec(
            name.into(),
            rows.iter().map(|r| at(&r.row) * 1_000_000_000).collect(),
        )
        .into_datetime(TimeUnit::Nanoseconds, Some(TimeZone::UTC))
        .into_series()
        .into())
    };
    let count = |side: fn(&Row) -> Option<crate::meta::reconcile::Sum>| -> Vec<Option<i64>> {
        rows.iter()
            .map(|r| side(&r.row).map(|s| s.count as i64))
            .collect()
    };
    let columns = COLUMNS
        .iter()
        .enumerate()
        .map(|(i, name)| {
            Ok(match *name {
                "meta_count" => Column::new((*name).into(), count(|r| r.meta)),
                "convbill_count" => Column::new((*name).into(), count(|r| r.convbill)),
                "count_difference" => Column::new(
                    (*name).into(),
                    rows.iter()
                        .map(|r| count_difference(&r.row))
                        .collect::<Vec<i64>>(),
                ),
                "start" => instant(name, |r| r.cell.start)?,
                "end" => instant(name, |r| r.cell.end)?,
                "meta_cost" => money(name, costs(|r| r.meta).collect())?,
                "convbill_cost" => money(name, costs(|r| r.convbill).collect())?,
                "cost_difference" => money(
                    name,
                    rows.iter().map(|r| Some(cost_difference(&r.row))).collect(),
                )?,
                _ => Column::new(
                    (*name).into(),
                    texts.iter().map(|t| t[i].as_deref()).collect::<Vec<_>>(),
                ),
            })
        })
        .collect::<Result<Vec<Column>>>()?;
    Ok(DataFrame::new(rows.len(), columns)?)
}

fn csv(rows: &[WabaRow]) -> Vec<u8> {
    let mut writer = csv::Writer::from_writer(Vec::new());
    writer.write_record(COLUMNS).expect("writing to memory");
    for row in rows {
        writer
            .write_record(texts(row).iter().zip(COLUMNS).map(|(t, name)| {
                let text = t.as_deref().unwrap_or_default();
                match NUMBERS.contains(&name) {
                    true => text.to_string(),
                    false => crate::write::spreadsheet_text(text).into_owned(),
                }
            }))
            .expect("writing to memory");
    }
    writer.into_inner().expect("writing to memory")
}
