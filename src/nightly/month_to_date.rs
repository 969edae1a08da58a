//! Month-to-date: every night's counted lines and the latest night's open sessions in; the
//! history's invoices (`final`, `draft` or `partial`), their lines, the open sessions and a
//! manifest out, in `month-to-date/` of the run's staging folder.
//!
//! Everything in it follows from the history's state alone, not from which run brought the
//! history there: the same history gives the same bytes, whether its last night was run
//! alone, rerun, or recomputed with earlier nights.

use std::path::Path;

use chrono::NaiveDate;
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

/// What the month-to-date folder is made from.
pub(crate) struct Run<'a> {
    /// Every night of the history, in order, after this run.
    pub nights: &'a [NaiveDate],
    pub input: &'a Path,
    pub late: &'a [LateFile],
    pub card: &'a RateCard,
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
    outputs: Vec<write::WrittenFile>,
}

/// Rewrites `month-to-date/` in the staging folder from every night's lines and the latest
/// night's open sessions; returns the invoices, and how they differ from the ones the
/// history held before this run.
pub(crate) fn write(tree: &Tree, run: &Run) -> Result<(Invoices, Vec<revision::Change>)> {
    let card = run.card;
    let (first, latest) = (
        *run.nights.first().expect("a night has run"),
        *run.nights.last().expect("a night has run"),
    );
    let mut lines = Vec::with_capacity(run.nights.len() + 1);
    for &night in run.nights {
        let dir = tree
            .state(night)
            .expect("every night of the history has a state");
        lines.push(super::read_parquet(&dir.join(night::LINES))?.lazy());
    }
    let latest_state = tree.state(latest).expect("the latest night has a state");
    let open = super::read_parquet(&latest_state.join(night::OPEN))?;
    let open_rows = open.height() as u64;
    let open_rated = rating::rate_sessions(open, card)?;
    lines.push(rating::lines_of(&open_rated)?.lazy());
    let mut coverage = rating::Coverage {
        continues: true,
        ..rating::Coverage::from_to(start_ns(first), start_ns(latest) + DAY_NS)
    };
    coverage.unsettled = rating::unsettled(&open_rated, &coverage)?;
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
    let issued = revision::Issued::read(
        &tree
            .out
            .join(MONTH_TO_DATE_DIR)
            .join(write::INVOICES_PARQUET_FILE),
    )?;
    let register_path = Path::new(STATE_DIR).join(revision::REGISTER_FILE);
    let mut register = revision::Register::read(&tree.out.join(&register_path))?;
    let register_before = register.clone();
    revision::revise(&mut invoices.invoices, &issued, &mut register);
    let changes = revision::changes(&issued, &invoices.invoices, &register_before);
    write::write_parquet(
        &tree.staging.join(STATE_DIR),
        revision::REGISTER_FILE,
        &mut register.frame()?,
    )?;

    let dir = tree.staging.join(MONTH_TO_DATE_DIR);
    let mut written = write::write_invoices(&dir, &mut invoices, card)?;
    // The latest night's state holds the same sessions, written by this run.
    written.push(write::link_file(
        &latest_state.join(night::OPEN),
        &dir,
        night::OPEN,
        open_rows,
    )?);
    let last_night = NightStats::read(&latest_state)?;
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
    let manifest = MonthToDateManifest {
        program: write::Program::current(),
        rule_set: rating::RULE_SET,
        rate_card: rating::RateCardInfo::of(card),
        history: HistorySection {
            first_night: first,
            last_night: latest,
        },
        input: write::InputSection {
            path: run.input.display().to_string(),
            files,
            stats,
        },
        last_night,
        late_input: run.late,
        invoices: write::InvoiceSummary::of(&invoices),
        outputs: written,
    };
    write::write_json(&dir, write::MANIFEST_FILE, &manifest)?;
    Ok((invoices, changes))
}
