//! Month-to-date: the history's counted lines of the periods still open and the latest
//! night's open sessions in; those periods' invoices (`final`, `draft` or `partial`), their
//! lines, the open sessions and a manifest out, in `month-to-date/` of the run's staging
//! folder. A period the nights have closed is written once, to `closed/period=P/`, and leaves
//! month-to-date: what a night reads and writes follows the periods still open, not the length
//! of the history.
//!
//! A night D closes a period P when P has ended by the end of D in every zone the rate card
//! bills in, and no session of P is still open after D: no later night can add to or change
//! its invoices then (only a recompute of D or an earlier night can). Each night's state keeps
//! the counted lines of the periods still open, summed over the history
//! (`lines_to_date.parquet`): the next night adds its own to them.
//!
//! Everything here follows from the history's state alone, not from which run brought the
//! history there: the same history gives the same bytes, whether its last night was run
//! alone, rerun, or recomputed with earlier nights.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use chrono::{Days, NaiveDate};
use polars::prelude::*;
use serde::Serialize;

use super::inputs::LateFile;
use super::night::{self, NightStats};
use super::{start_ns, Tree, MONTH_TO_DATE_DIR};
use crate::error::Result;
use crate::load::{InputFile, InputStats};
use crate::rates::RateCard;
use crate::rating::{self, revision, Invoices};
use crate::schema::DAY_NS;
use crate::write::{self, STATE_DIR};

/// A night's counted lines of the periods still open after it, summed over the history.
pub(crate) const LINES_TO_DATE: &str = "lines_to_date.parquet";
/// With `[meta]`: a night's Meta cost lines of the periods still open after it, summed over
/// the history.
pub(crate) const META_LINES_TO_DATE: &str = "meta_lines_to_date.json";
/// The folder of the periods the history has closed: `closed/period=P/`.
pub const CLOSED_DIR: &str = "closed";

/// `closed/period=P`, relative to the output folder.
pub fn closed_dir(period: &str) -> PathBuf {
    Path::new(CLOSED_DIR).join(format!("period={period}"))
}

/// What the month-to-date folder is made from.
pub(crate) struct Run<'a> {
    /// Every night of the history, in order, after this run.
    pub nights: &'a [NaiveDate],
    /// The nights this run computed, in order; the last is the history's last.
    pub computed: &'a [NaiveDate],
    /// What each computed night kept of its open sessions (the same as its state's
    /// [`night::OPEN`], rated).
    pub open: &'a std::collections::BTreeMap<NaiveDate, night::OpenSummary>,
    pub input: &'a Path,
    pub late: &'a [LateFile],
    pub card: &'a RateCard,
    /// A merge of shards' histories ([`super::merge`]): the shards, which the manifest lists.
    pub shards: &'a [write::MergedShard],
}

/// A period a night closed.
#[derive(Debug, Clone)]
pub struct ClosedPeriod {
    pub period: String,
    pub night: NaiveDate,
    /// Its invoices by status.
    pub by_status: std::collections::BTreeMap<&'static str, usize>,
    /// With `[meta]`, when the period had been closed before with another Meta cost: that
    /// cost and the new one, per currency (`closed/period=P/manifest.json`).
    pub meta_cost_changed: Option<(MetaCost, MetaCost)>,
}

/// Meta's cost per currency, as a manifest's `meta.cost` writes it.
pub type MetaCost = std::collections::BTreeMap<String, String>;

/// The `meta.cost` of the manifest in `dir`, if it has one.
fn meta_cost_in(dir: &Path) -> Option<MetaCost> {
    let manifest: serde_json::Value = write::read_json(&dir.join(write::MANIFEST_FILE)).ok()?;
    serde_json::from_value(manifest["meta"]["cost"].clone()).ok()
}

/// What [`write`] wrote.
pub(crate) struct Written {
    /// The month-to-date invoices.
    pub invoices: Invoices,
    /// The periods the run's nights closed, in order.
    pub closed: Vec<ClosedPeriod>,
    /// How the invoices (month-to-date and closed by this run) differ from the ones the
    /// folder held before.
    pub changes: Vec<revision::Change>,
    /// Folders the run rewrote, relative to the output folder.
    pub rewritten: Vec<PathBuf>,
    /// What Meta charged in the periods still open, with `[meta]`.
    pub meta: Option<crate::meta::cost::MetaSummary>,
}

/// `closed/period=P/manifest.json`.
#[derive(Debug, Serialize)]
struct ClosedManifest {
    program: write::Program,
    rule_set: &'static str,
    rate_card: rating::RateCardInfo,
    period: String,
    /// The night that closed the period.
    closed_by_night: NaiveDate,
    history: HistorySection,
    invoices: write::InvoiceSummary,
    /// What Meta charged in the period, with `[meta]`.
    #[serde(skip_serializing_if = "Option::is_none")]
    meta: Option<crate::meta::cost::MetaSummary>,
    outputs: Vec<write::WrittenFile>,
}

/// The counted lines of a period a night closed.
struct Closing {
    period: String,
    night: NaiveDate,
    lines: DataFrame,
    /// Its Meta cost lines (with `[meta]`).
    meta: MetaLines,
}

/// Meta's cost lines, when the card has `[meta]`.
type MetaLines = Option<crate::meta::cost::Lines>;

/// The Meta cost lines a night's state keeps in `file`; none in a state written without them.
fn read_meta_lines(state: &Path, file: &str) -> Result<crate::meta::cost::Lines> {
    let mut lines = crate::meta::cost::Lines::new();
    let path = state.join(file);
    if let Some(value) = write::read_json_if_exists::<serde_json::Value>(&path)? {
        crate::meta::cost::add_state(&mut lines, value).map_err(|problem| {
            polars::error::PolarsError::ComputeError(
                format!("`{}`: {problem}", path.display()).into(),
            )
        })?;
    }
    Ok(lines)
}

/// The history a month-to-date folder sums up.
#[derive(Debug, Serialize)]
struct HistorySection {
    first_night: NaiveDate,
    last_night: NaiveDate,
}

/// `month-to-date/manifest.json`.
#[derive(Debug, Serialize)]
struct MonthToDateManifest<'a> {
    program: write::Program,
    rule_set: &'static str,
    rate_card: rating::RateCardInfo,
    history: HistorySection,
    input: write::InputSection,
    /// What the last night read and did (every night's own is in its `state/date=D/night.json`).
    last_night: NightStats,
    /// Input files that hold messages of nights already billed that those nights did not read.
    late_input: &'a [LateFile],
    invoices: write::InvoiceSummary,
    /// What Meta charged in the periods still open, with `[meta]`.
    #[serde(skip_serializing_if = "Option::is_none")]
    meta: Option<crate::meta::cost::MetaSummary>,
    outputs: Vec<write::WrittenFile>,
    /// A merged history's shards.
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    shards: &'a [write::MergedShard],
}

/// What the month-to-date page shows and a closed period's does not.
#[derive(Default)]
struct MonthToDateParts {
    /// What the last night read and set aside.
    counts: Vec<(&'static str, &'static str, u64)>,
    nights: Option<Vec<(NaiveDate, Option<NightStats>)>>,
    late: Vec<String>,
    /// The periods closed, each linked.
    closed: Vec<String>,
    /// The month to date (not a closed period's page).
    continues: bool,
}

/// A history's page of `invoices` ([`crate::report`]): the month to date, or a closed
/// period's.
fn history_page(
    run: &Run,
    of: String,
    invoices: &Invoices,
    tally: &crate::report::Tally,
    parts: MonthToDateParts,
) -> String {
    let MonthToDateParts {
        counts,
        nights,
        late,
        closed,
        continues,
    } = parts;
    let rate_card = rating::RateCardInfo::of(run.card);
    crate::report::render_page(&crate::report::Page {
        of,
        program: &write::Program::current(),
        rule_set: rating::RULE_SET,
        rate_card: &rate_card.source,
        input: &run.input.display().to_string(),
        invoices: &invoices.invoices,
        summary: &write::InvoiceSummary::of(invoices),
        sessions: invoices
            .invoices
            .iter()
            .map(|i| i.totals.sessions)
            .sum::<i64>() as u64,
        counts,
        tally: Some(tally),
        nights,
        late,
        closed,
        continues,
        // A closed period's page is `closed/period=P/report.html`.
        back: (!continues).then_some("../../month-to-date/report.html"),
    })
}

/// Sums each night this run computed into the lines to date of the periods still open,
/// closing the periods it can ([`LINES_TO_DATE`] into each night's state in the staging
/// folder). Returns the last night's lines to date, what it kept of its open sessions, and
/// the periods closed.
fn close_periods<'a>(
    tree: &Tree,
    run: &Run<'a>,
) -> Result<(DataFrame, MetaLines, &'a night::OpenSummary, Vec<Closing>)> {
    let first = *run.nights.first().expect("a night has run");
    let mut to_date: Option<DataFrame> = None;
    let mut meta_to_date: MetaLines = None;
    let mut last_open: Option<&night::OpenSummary> = None;
    let mut closings = Vec::new();
    for &night in run.computed {
        let state = tree.state(night).expect("a computed night has a state");
        let lines = super::read_parquet(&state.join(night::LINES))?;
        let previous = match to_date.take() {
            Some(frame) => frame,
            None if night == first => lines.clear(),
            None => {
                let before = night - Days::new(1);
                let dir = tree.state(before).expect("the night before has a state");
                super::read_parquet(&dir.join(LINES_TO_DATE))?
            }
        };
        let summed = rating::sum_counted(
            concat([previous.lazy(), lines.lazy()], UnionArgs::default())?.collect()?,
        )?;
        let meta_summed = match run.card.meta {
            None => None,
            Some(_) => {
                let mut summed = match meta_to_date.take() {
                    Some(lines) => lines,
                    None if night == first => Default::default(),
                    None => {
                        let before = night - Days::new(1);
                        let dir = tree.state(before).expect("the night before has a state");
                        read_meta_lines(&dir, META_LINES_TO_DATE)?
                    }
                };
                for (key, sum) in read_meta_lines(&state, crate::nightly::meta::LINES)? {
                    let line = summed.entry(key).or_default();
                    line.units += sum.units;
                    line.cost += sum.cost;
                }
                Some(summed)
            }
        };
        let open = &run.open[&night];
        // Every open session counts in one of its lines: their periods are the lines'.
        let still_open: BTreeSet<&str> = open
            .lines
            .column("period")?
            .str()?
            .iter()
            .flatten()
            .collect();
        let night_end = start_ns(night) + DAY_NS;
        let mut periods: BTreeSet<&str> =
            summed.column("period")?.str()?.iter().flatten().collect();
        periods.extend(meta_summed.iter().flatten().map(|(k, _)| k.period.as_str()));
        let closing: Vec<String> = periods
            .into_iter()
            .filter(|p| !still_open.contains(p))
            .filter(|p| {
                run.card
                    .period_end_everywhere(p)
                    .is_some_and(|end| end <= night_end)
            })
            .map(str::to_string)
            .collect();
        let of_period = |period: &str| col("period").eq(lit(period.to_string()));
        let closed_mask = closing
            .iter()
            .map(|p| of_period(p))
            .reduce(|a, b| a.or(b))
            .unwrap_or(lit(false));
        let mut meta_kept = meta_summed;
        for period in closing {
            let meta = meta_kept.as_mut().map(|lines| {
                let (of, rest) = std::mem::take(lines)
                    .into_iter()
                    .partition(|(k, _)| k.period == period);
                *lines = rest;
                of
            });
            closings.push(Closing {
                lines: summed.clone().lazy().filter(of_period(&period)).collect()?,
                period,
                night,
                meta,
            });
        }
        let mut kept = summed.lazy().filter(closed_mask.not()).collect()?;
        write::write_parquet(&state, LINES_TO_DATE, &mut kept)?;
        to_date = Some(kept);
        if let Some(lines) = &meta_kept {
            write::write_json(
                &state,
                META_LINES_TO_DATE,
                &crate::meta::cost::to_state(lines),
            )?;
        }
        meta_to_date = meta_kept;
        last_open = Some(open);
    }
    let computed = "a run computes a night";
    Ok((
        to_date.expect(computed),
        meta_to_date,
        last_open.expect(computed),
        closings,
    ))
}

/// The periods closed in the folder before the run (`closed/period=P/`), sorted.
fn closed_in(out: &Path) -> Result<Vec<String>> {
    let dir = out.join(CLOSED_DIR);
    if !dir.is_dir() {
        return Ok(Vec::new());
    }
    let mut periods = Vec::new();
    for entry in std::fs::read_dir(&dir).map_err(write::io_error(&dir))? {
        let entry = entry.map_err(write::io_error(&dir))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if let Some(period) = name.strip_prefix("period=") {
            periods.push(period.to_string());
        }
    }
    periods.sort();
    Ok(periods)
}

/// The periods closed by the nights from `from` on, in the folder before the run.
fn closed_since(out: &Path, from: NaiveDate) -> Result<Vec<String>> {
    let mut periods = Vec::new();
    for period in closed_in(out)? {
        let manifest: serde_json::Value =
            write::read_json(&out.join(closed_dir(&period)).join(write::MANIFEST_FILE))?;
        let night = manifest["closed_by_night"]
            .as_str()
            .and_then(|d| d.parse::<NaiveDate>().ok());
        if night.is_none_or(|night| night >= from) {
            periods.push(period);
        }
    }
    Ok(periods)
}

/// Rewrites `month-to-date/` in the staging folder from the lines to date of the periods still
/// open and the latest night's open sessions, and writes the periods the run's nights closed
/// to `closed/`; returns what it wrote, and how the invoices differ from the ones the folder
/// held before this run.
pub(crate) fn write(tree: &Tree, run: &Run) -> Result<Written> {
    let card = run.card;
    let (first, latest) = (
        *run.nights.first().expect("a night has run"),
        *run.nights.last().expect("a night has run"),
    );
    let (to_date, meta_to_date, open, closings) = close_periods(tree, run)?;
    let latest_state = tree.state(latest).expect("the latest night has a state");
    let lines = vec![to_date.lazy(), open.lines.clone().lazy()];
    let history_to = |night: NaiveDate| rating::Coverage {
        continues: true,
        ..rating::Coverage::from_to(start_ns(first), start_ns(night) + DAY_NS)
    };
    let mut coverage = history_to(latest);
    coverage.unsettled = rating::unsettled_of_unanswered(&open.unanswered, &coverage)?;
    // Late input not billed yet can change the invoices it concerns.
    for late in run.late {
        for key in &late.invoices {
            coverage
                .unsettled
                .insert((key.account_id.clone(), key.period.clone()));
        }
    }
    let mut invoices = rating::invoices_from_lines(
        concat(lines, UnionArgs::default())?.collect()?,
        card,
        &coverage,
    )?;
    // A closed period's invoices are final or partial: nothing of them is open any more.
    // What Meta charged, with each invoice's share.
    let attach = |invoices: &mut Invoices, lines: &MetaLines| match (&card.meta, lines) {
        (Some(meta), Some(lines)) => Some(crate::meta::cost::attach(
            &mut invoices.invoices,
            lines,
            meta,
        )),
        _ => None,
    };
    let meta_summary = attach(&mut invoices, &meta_to_date);
    let mut closed = closings
        .into_iter()
        .map(|c| {
            let mut invoices = rating::invoices_from_lines(c.lines, card, &history_to(c.night))?;
            let summary = attach(&mut invoices, &c.meta);
            Ok((
                c.period,
                c.night,
                invoices,
                c.meta.map(|lines| (lines, summary)),
            ))
        })
        .collect::<Result<Vec<_>>>()?;

    // What the folder issued before: the month-to-date invoices, and those of the periods
    // closed by the nights this run recomputed.
    let mut issued = revision::Issued::read(
        &tree
            .out
            .join(MONTH_TO_DATE_DIR)
            .join(write::INVOICES_PARQUET_FILE),
    )?;
    let first_computed = *run.computed.first().expect("a run computes a night");
    let mut rewritten: Vec<PathBuf> = Vec::new();
    for period in closed_since(tree.out, first_computed)? {
        let dir = closed_dir(&period);
        issued.extend(revision::Issued::read(
            &tree.out.join(&dir).join(write::INVOICES_PARQUET_FILE),
        )?);
        rewritten.push(dir);
    }
    let register_path = Path::new(STATE_DIR).join(revision::REGISTER_FILE);
    // The register the folder kept, or the one a merge of histories put together.
    let register_file = [tree.staging, tree.out]
        .map(|root| root.join(&register_path))
        .into_iter()
        .find(|path| path.is_file())
        .unwrap_or_else(|| tree.out.join(&register_path));
    let mut register = revision::Register::read(&register_file)?;
    // What the folder had issued before: its own register (a merge of histories revises by
    // the shards' registers put together).
    let register_before = match register_file == tree.out.join(&register_path) {
        true => register.clone(),
        false => revision::Register::read(&tree.out.join(&register_path))?,
    };
    revision::revise(&mut invoices.invoices, &issued, &mut register);
    for (_, _, invoices, _) in &mut closed {
        revision::revise(&mut invoices.invoices, &issued, &mut register);
    }
    let all: Vec<rating::Invoice> = closed
        .iter()
        .flat_map(|(_, _, c, _)| c.invoices.iter())
        .chain(&invoices.invoices)
        .cloned()
        .collect();
    let changes = revision::changes(&issued, &all, &register_before);
    write::write_parquet(
        &tree.staging.join(STATE_DIR),
        revision::REGISTER_FILE,
        &mut register.frame()?,
    )?;

    let nights: Vec<(NaiveDate, Option<NightStats>)> = run
        .nights
        .iter()
        .map(|night| {
            let stats = tree
                .state(*night)
                .and_then(|dir| NightStats::read(&dir).ok());
            (*night, stats)
        })
        .collect();
    // Every session the month-to-date holds was closed by one night or is open after the
    // last; every violation is of one night's day.
    let last_night = NightStats::read(&latest_state)?;
    let mut tally = crate::report::Tally::default();
    for (_, stats) in &nights {
        if let Some(stats) = stats {
            tally.add_rows(&stats.closed_tally);
        }
    }
    tally.add_rows(&last_night.open_tally);
    let mut closed_periods = Vec::with_capacity(closed.len());
    for (period, night, mut invoices, meta) in closed {
        let relative = closed_dir(&period);
        let dir = tree.staging.join(&relative);
        let mut outputs = write::write_invoices(&dir, &mut invoices, card)?;
        let meta = match meta {
            Some((lines, summary)) => {
                outputs.extend(write::write_meta_lines(&dir, &lines, card)?);
                summary
            }
            None => None,
        };
        let summary = write::InvoiceSummary::of(&invoices);
        // The period's own page, as the month-to-date one showed it: no later night changes it.
        let page = history_page(
            run,
            format!("period {period}, closed by the night of {night}"),
            &invoices,
            &tally,
            MonthToDateParts::default(),
        );
        outputs.push(write::write_bytes(
            &dir,
            crate::report::REPORT_FILE,
            page.as_bytes(),
            0,
        )?);
        let by_status = summary
            .by_status
            .iter()
            .map(|(status, n)| (*status, *n as usize))
            .collect();
        let manifest = ClosedManifest {
            program: write::Program::current(),
            rule_set: rating::RULE_SET,
            rate_card: rating::RateCardInfo::of(card),
            period: period.clone(),
            closed_by_night: night,
            history: HistorySection {
                first_night: first,
                last_night: night,
            },
            invoices: summary,
            meta,
            outputs,
        };
        write::write_json(&dir, write::MANIFEST_FILE, &manifest)?;
        // A recompute can change what Meta charged in a period finance has closed.
        let meta_cost_changed = manifest.meta.as_ref().and_then(|meta| {
            let before = meta_cost_in(&tree.out.join(&relative))?;
            let now: MetaCost = meta
                .cost
                .iter()
                .map(|(currency, cost)| (currency.clone(), cost.to_string()))
                .collect();
            (before != now).then_some((before, now))
        });
        rewritten.push(relative);
        closed_periods.push(ClosedPeriod {
            period,
            night,
            by_status,
            meta_cost_changed,
        });
    }

    // Every period the history has closed: before this run, and by its nights.
    let mut every_closed = closed_in(tree.out)?;
    every_closed.extend(closed_periods.iter().map(|c| c.period.clone()));
    every_closed.sort();
    every_closed.dedup();
    let dir = tree.staging.join(MONTH_TO_DATE_DIR);
    let mut written = write::write_invoices(&dir, &mut invoices, card)?;
    // The latest night's state holds the same sessions, written by this run.
    written.push(write::link_file(
        &latest_state.join(night::OPEN),
        &dir,
        night::OPEN,
        last_night.sessions_open,
    )?);
    if let Some(lines) = &meta_to_date {
        written.extend(write::write_meta_lines(&dir, lines, card)?);
        let open_units = crate::nightly::meta::OPEN_UNITS;
        written.push(write::link_file(
            &latest_state.join(open_units),
            &dir,
            open_units,
            last_night.meta_units_open.unwrap_or_default(),
        )?);
    }
    let stats = InputStats {
        rows_read: last_night.rows_read,
        duplicates_dropped: last_night.duplicates(),
        rows_used: last_night.rows_used,
        ..InputStats::default()
    };
    let files = last_night
        .input_files
        .iter()
        .map(|f| InputFile {
            path: f.path.clone(),
            bytes: f.bytes,
            sha256: f.sha256.clone(),
            rows: f.rows,
            ..InputFile::default()
        })
        .collect();
    let summary = write::InvoiceSummary::of(&invoices);
    let program = write::Program::current();
    let rate_card = rating::RateCardInfo::of(card);
    let input_path = run.input.display().to_string();
    let report = history_page(
        run,
        format!("month to date after the night of {latest}"),
        &invoices,
        &tally,
        MonthToDateParts {
            counts: vec![
                (
                    "rows-read",
                    "messages read by the last night",
                    last_night.rows_read,
                ),
                (
                    "duplicates",
                    "duplicates dropped by the last night",
                    last_night.duplicates(),
                ),
                (
                    "rejected",
                    "rows rejected by the last night",
                    last_night.rows_rejected,
                ),
                (
                    "violations",
                    "violations of the last night",
                    last_night.violations,
                ),
            ],
            nights: Some(nights),
            late: run.late
                .iter()
                .map(|late| {
                    format!(
                        "{}. The {} invoice(s) its messages can change stay draft until it is billed: rerun `--date {} --recompute-later`.",
                        late.describe(),
                        late.invoices.len(),
                        late.first_day
                    )
                })
                .collect(),
            closed: every_closed,
            continues: true,
        },
    );
    written.push(write::write_bytes(
        &dir,
        crate::report::REPORT_FILE,
        report.as_bytes(),
        0,
    )?);
    let manifest = MonthToDateManifest {
        program,
        rule_set: rating::RULE_SET,
        rate_card,
        history: HistorySection {
            first_night: first,
            last_night: latest,
        },
        input: write::InputSection {
            path: input_path,
            files,
            stats,
        },
        last_night,
        late_input: run.late,
        invoices: summary,
        meta: meta_summary.clone(),
        outputs: written,
        shards: run.shards,
    };
    write::write_json(&dir, write::MANIFEST_FILE, &manifest)?;
    Ok(Written {
        invoices,
        closed: closed_periods,
        changes,
        rewritten,
        meta: meta_summary,
    })
}
