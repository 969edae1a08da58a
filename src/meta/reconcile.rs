//! Reconciliation of convbill's Meta units with Meta's analytics (SPEC-meta §5): both sides
//! summed to the finest grain both have (the bucket, and each dimension every data point of
//! Meta's side carries), then compared cell by cell.

use std::collections::BTreeMap;

use chrono::{Datelike, NaiveDate, TimeZone};
use chrono_tz::Tz;
use rust_decimal::Decimal;

use super::analytics::{Api, DataPoint, Page, Values};

/// The dimensions compared: those every data point of Meta's side has.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Dimensions {
    pub phone_number: bool,
    pub country: bool,
    pub category: bool,
    pub pricing_type: bool,
    pub direction: bool,
    pub tier: bool,
}

impl Dimensions {
    /// The dimensions all of `points` carry. A tier is carried by charged messages only, so
    /// it is compared where any point has one.
    pub fn of<'a>(points: impl Iterator<Item = &'a DataPoint> + Clone) -> Dimensions {
        let all = |has: fn(&DataPoint) -> bool| points.clone().all(has);
        Dimensions {
            phone_number: all(|p| p.values.phone_number.is_some()),
            country: all(|p| p.values.country.is_some()),
            category: all(|p| p.values.category.is_some()),
            pricing_type: all(|p| p.values.pricing_type.is_some()),
            direction: all(|p| p.values.direction.is_some()),
            tier: points.clone().any(|p| p.values.tier.is_some()),
        }
    }
}

/// A cell of the grain: a bucket, and the values of the compared dimensions (`None` for the
/// others).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Cell {
    pub api: Api,
    /// Bucket bounds, Unix seconds.
    pub start: i64,
    pub end: i64,
    pub values: Values,
}

impl Dimensions {
    /// The values of `values` in the compared dimensions; `None` in the others.
    pub fn kept(self, values: &Values) -> Values {
        fn kept<T: Clone>(compared: bool, value: &Option<T>) -> Option<T> {
            value.clone().filter(|_| compared)
        }
        Values {
            phone_number: kept(self.phone_number, &values.phone_number),
            country: kept(self.country, &values.country),
            category: kept(self.category, &values.category),
            pricing_type: kept(self.pricing_type, &values.pricing_type),
            direction: kept(self.direction, &values.direction),
            tier: kept(self.tier, &values.tier),
        }
    }
}

/// One side's sum over a cell.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Sum {
    pub count: u64,
    /// `None` where Meta gives no cost (partner-billed WABAs).
    pub cost: Option<Decimal>,
}

/// Meta's side: the data points of `pages` that `keep` keeps, summed by cell. A cell's cost
/// is `None` when any of its points has none.
pub fn meta_side<'a>(
    pages: impl IntoIterator<Item = &'a Page>,
    dimensions: Dimensions,
    keep: impl Fn(&DataPoint) -> bool,
) -> BTreeMap<Cell, Sum> {
    let mut cells: BTreeMap<Cell, Sum> = BTreeMap::new();
    for page in pages {
        for point in page.points.iter().filter(|p| keep(p)) {
            let cell = Cell {
                api: page.api,
                start: point.start,
                end: point.end,
                values: dimensions.kept(&point.values),
            };
            let first = !cells.contains_key(&cell);
            let sum = cells.entry(cell).or_default();
            sum.count += point.count;
            sum.cost = match (first, sum.cost, point.cost) {
                (true, _, cost) => cost,
                (false, Some(a), Some(b)) => Some(a + b),
                _ => None,
            };
        }
    }
    cells
}

/// One of convbill's Meta units, as reconciliation reads it from `meta_units.parquet`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unit {
    /// `CBP` conversations reconcile with `conversation_analytics`, `PMP` messages with
    /// `pricing_analytics`.
    pub api: Api,
    /// Unix seconds.
    pub started_at: i64,
    /// Its category and pricing type (always given); the business's display number from the
    /// card (`None` if the card gives none), the user's country, the direction of a
    /// conversation and the tier of a charged message.
    pub values: Values,
    pub cost: Decimal,
    /// The WABA zone of its business, where its day and month are.
    pub zone: Tz,
    /// Its business's WABA (`waba` in `[meta.businesses]`, or the account's default WABA).
    pub waba: std::sync::Arc<str>,
    /// Its place among the units read (for explaining a cell).
    pub index: usize,
}

/// How long Meta's buckets are.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Granularity {
    Daily,
    Monthly,
}

impl Granularity {
    /// The granularity of a bucket `start..end`: a day is 23 to 25 hours in a zone with
    /// daylight saving time.
    pub fn of_bucket(start: i64, end: i64) -> Granularity {
        match end - start <= 25 * 3600 {
            true => Granularity::Daily,
            false => Granularity::Monthly,
        }
    }

    /// The bucket, in `zone`, that holds the instant `at` (Unix seconds): from the local
    /// midnight that starts its day or month to the one that ends it.
    pub fn bucket(self, zone: Tz, at: i64) -> (i64, i64) {
        let day = zone
            .timestamp_opt(at, 0)
            .single()
            .expect("an instant is one local time")
            .date_naive();
        let (first, next) = match self {
            Granularity::Daily => (day, day.succ_opt().expect("within chrono's range")),
            Granularity::Monthly => {
                let first = day.with_day(1).expect("day 1 exists");
                let next = match first.month() {
                    12 => NaiveDate::from_ymd_opt(first.year() + 1, 1, 1),
                    m => NaiveDate::from_ymd_opt(first.year(), m + 1, 1),
                }
                .expect("the first of a month exists");
                (first, next)
            }
        };
        (
            crate::rates::local_midnight(first, zone) / 1_000_000_000,
            crate::rates::local_midnight(next, zone) / 1_000_000_000,
        )
    }
}

/// convbill's side: the `units` of `api` that start in a bucket within `period` (Unix
/// seconds, end excluded), summed by cell; and how many of them start outside it.
pub fn convbill_side<'a>(
    units: impl IntoIterator<Item = &'a Unit>,
    api: Api,
    dimensions: Dimensions,
    granularity: Granularity,
    period: (i64, i64),
) -> (BTreeMap<Cell, Sum>, usize) {
    let mut cells: BTreeMap<Cell, Sum> = BTreeMap::new();
    let mut outside = 0;
    for unit in units.into_iter().filter(|u| u.api == api) {
        let (start, end) = granularity.bucket(unit.zone, unit.started_at);
        if start < period.0 || period.1 < end {
            outside += 1;
            continue;
        }
        let cell = Cell {
            api,
            start,
            end,
            values: dimensions.kept(&unit.values),
        };
        let sum = cells.entry(cell).or_insert(Sum {
            count: 0,
            cost: Some(Decimal::ZERO),
        });
        sum.count += 1;
        sum.cost = sum.cost.map(|cost| cost + unit.cost);
    }
    (cells, outside)
}

/// How a cell compares.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Status {
    Match,
    CountDiffers,
    CostDiffers,
    OnlyInMeta,
    OnlyInConvbill,
}

impl Status {
    pub fn name(self) -> &'static str {
        match self {
            Status::Match => "match",
            Status::CountDiffers => "count_differs",
            Status::CostDiffers => "cost_differs",
            Status::OnlyInMeta => "only_in_meta",
            Status::OnlyInConvbill => "only_in_convbill",
        }
    }
}

/// Differences small enough to count as a match: at most `absolute`, or at most `relative`
/// times Meta's figure, whichever allows more. Zero by default.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Tolerance {
    pub relative: Decimal,
    pub absolute: Decimal,
}

impl Tolerance {
    fn allows(&self, meta: Decimal, convbill: Decimal) -> bool {
        let difference = (convbill - meta).abs();
        difference <= self.absolute || difference <= self.relative * meta.abs()
    }
}

/// One compared cell.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    pub cell: Cell,
    pub meta: Option<Sum>,
    pub convbill: Option<Sum>,
    pub status: Status,
}

/// Every cell of either side, in cell order. Costs are compared only where Meta gives one.
pub fn compare(
    meta: &BTreeMap<Cell, Sum>,
    convbill: &BTreeMap<Cell, Sum>,
    tolerance: Tolerance,
) -> Vec<Row> {
    let mut cells: Vec<&Cell> = meta.keys().chain(convbill.keys()).collect();
    cells.sort();
    cells.dedup();
    cells
        .into_iter()
        .map(|cell| {
            let (m, c) = (meta.get(cell).copied(), convbill.get(cell).copied());
            let status = match (m, c) {
                (Some(_), None) => Status::OnlyInMeta,
                (None, _) => Status::OnlyInConvbill,
                (Some(m), Some(c)) => {
                    if !tolerance.allows(Decimal::from(m.count), Decimal::from(c.count)) {
                        Status::CountDiffers
                    } else {
                        match (m.cost, c.cost) {
                            (Some(a), Some(b)) if !tolerance.allows(a, b) => Status::CostDiffers,
                            _ => Status::Match,
                        }
                    }
                }
            };
            Row {
                cell: cell.clone(),
                meta: m,
                convbill: c,
                status,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::meta::analytics::{parse_page, MetaCategory};
    use crate::meta::reference::Direction;
    use crate::meta::units::PricingType;
    use crate::meta::Category;

    fn fixture(name: &str) -> Page {
        let path = format!(
            "{}/tests/fixtures/meta-analytics/{name}",
            env!("CARGO_MANIFEST_DIR")
        );
        parse_page(&std::fs::read_to_string(path).unwrap()).unwrap()
    }

    fn la() -> Tz {
        "America/Los_Angeles".parse().unwrap()
    }

    fn conversation(at: i64, category: Category, pricing_type: PricingType, cost: &str) -> Unit {
        Unit {
            api: Api::Conversations,
            started_at: at,
            values: Values {
                phone_number: Some("16505550111".into()),
                country: Some("US".into()),
                category: Some(MetaCategory::Priced(category)),
                pricing_type: Some(pricing_type),
                direction: Some(match pricing_type {
                    PricingType::FreeEntryPoint => Direction::UserInitiated,
                    _ => Direction::BusinessInitiated,
                }),
                tier: None,
            },
            cost: cost.parse().unwrap(),
            zone: la(),
            waba: "102290129340398".into(),
            index: 0,
        }
    }

    #[test]
    fn daily_buckets_run_from_the_waba_zones_midnight() {
        // 2024-06-02 06:59:59 UTC is 23:59:59 on June 1 in Los Angeles.
        let bucket = Granularity::Daily.bucket(la(), 1717311599);
        assert_eq!(bucket, (1717225200, 1717311600));
        assert_eq!(Granularity::Daily.bucket(la(), 1717311600).0, 1717311600);
        // The day daylight saving time starts is 23 hours long; a month is a month.
        let (start, end) = Granularity::Daily.bucket(la(), 1710061200);
        assert_eq!(end - start, 23 * 3600);
        assert_eq!(Granularity::of_bucket(start, end), Granularity::Daily);
        let (start, end) = Granularity::Monthly.bucket(la(), 1717311599);
        assert_eq!((start, end), (1717225200, 1719817200));
        assert_eq!(Granularity::of_bucket(start, end), Granularity::Monthly);
    }

    #[test]
    fn a_conversation_page_reconciles_cell_by_cell() {
        let pages = [fixture("conversation-daily-page-1.json")];
        let dimensions = Dimensions::of(pages.iter().flat_map(|p| p.points.iter()));
        assert_eq!(
            dimensions,
            Dimensions {
                tier: false,
                ..Dimensions {
                    phone_number: true,
                    country: true,
                    category: true,
                    pricing_type: true,
                    direction: true,
                    tier: true,
                }
            }
        );
        let meta = meta_side(&pages, dimensions, |_| true);
        // 5,250 marketing conversations on June 1 (LA) costing 45.0484 in all, as Meta
        // reports; one free entry point less than Meta counts, the last ones just before the
        // local midnight; and one conversation on June 2, which Meta does not have.
        let june_1 = 1717225200;
        let mut units: Vec<Unit> = (0..5250)
            .map(|i| {
                let cost = if i == 0 { "45.0484" } else { "0" };
                conversation(
                    june_1 + i * 16,
                    Category::Marketing,
                    PricingType::Regular,
                    cost,
                )
            })
            .collect();
        units.extend((0..11).map(|i| {
            conversation(
                june_1 + 86399 - i,
                Category::Service,
                PricingType::FreeEntryPoint,
                "0",
            )
        }));
        units.push(conversation(
            june_1 + 86400,
            Category::Marketing,
            PricingType::Regular,
            "0.01",
        ));
        let (ours, _) = convbill_side(
            &units,
            Api::Conversations,
            dimensions,
            Granularity::Daily,
            (june_1, june_1 + 2 * 86400),
        );
        let rows = compare(&meta, &ours, Tolerance::default());
        let statuses: Vec<(Status, Option<u64>, Option<u64>)> = rows
            .iter()
            .map(|r| {
                (
                    r.status,
                    r.meta.map(|s| s.count),
                    r.convbill.map(|s| s.count),
                )
            })
            .collect();
        assert_eq!(
            statuses,
            [
                (Status::Match, Some(5250), Some(5250)),
                (Status::CountDiffers, Some(12), Some(11)),
                (Status::OnlyInConvbill, None, Some(1)),
            ]
        );
        // A tolerance of one conversation matches the free entry points.
        let tolerant = Tolerance {
            absolute: Decimal::ONE,
            ..Tolerance::default()
        };
        assert_eq!(compare(&meta, &ours, tolerant)[1].status, Status::Match);
    }

    #[test]
    fn costs_differ_only_where_meta_gives_one() {
        let cell = |tier: &str| Cell {
            api: Api::Pricing,
            start: 0,
            end: 86400,
            values: Values {
                tier: Some(tier.into()),
                ..Values::default()
            },
        };
        let sum = |count, cost: Option<&str>| Sum {
            count,
            cost: cost.map(|c| c.parse().unwrap()),
        };
        let meta = BTreeMap::from([
            (cell("a"), sum(2, Some("0.0270"))),
            (cell("b"), sum(2, None)),
            (cell("c"), sum(2, Some("1.00"))),
            (cell("d"), sum(1, Some("0.5"))),
        ]);
        let ours = BTreeMap::from([
            (cell("a"), sum(2, Some("0.027"))),
            (cell("b"), sum(2, Some("9.99"))),
            (cell("c"), sum(2, Some("1.02"))),
        ]);
        let statuses = |tolerance| -> Vec<Status> {
            compare(&meta, &ours, tolerance)
                .iter()
                .map(|r| r.status)
                .collect()
        };
        use Status::*;
        assert_eq!(
            statuses(Tolerance::default()),
            [Match, Match, CostDiffers, OnlyInMeta]
        );
        // 2% of Meta's 1.00 allows 1.02.
        let relative = Tolerance {
            relative: "0.02".parse().unwrap(),
            ..Tolerance::default()
        };
        assert_eq!(statuses(relative), [Match, Match, Match, OnlyInMeta]);
    }

    #[test]
    fn a_dimension_some_points_lack_is_summed_over() {
        let mut page = fixture("pricing-daily-no-cost.json");
        page.points[1].values.country = None;
        let dimensions = Dimensions::of(page.points.iter());
        assert!(!dimensions.country && dimensions.tier && dimensions.phone_number);
        let meta = meta_side(&[page], dimensions, |_| true);
        assert!(meta.keys().all(|cell| cell.values.country.is_none()));
        assert_eq!(meta.values().map(|s| s.count).sum::<u64>(), 51);
        assert!(meta.values().all(|s| s.cost.is_none()));
    }
}
