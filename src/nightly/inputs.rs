//! The input files a history has read: the listing of `--input` in, the catalog of files with
//! their checksums and time ranges (`state/inputs.json`) and the late files out.
//!
//! Each run lists `--input` and compares every file with the catalog the previous run left:
//! a file with the same size and modification time is taken as unchanged and not read again;
//! only a new file, or one whose size or time changed, is hashed and its time range read. So
//! the work of a night follows the files that are new, not the length of the history.
//!
//! Every version of a file records `read_from`: the first night that read it. A file added
//! (or changed) after the nights of its messages had run holds messages those nights never
//! billed: it is *late* until a recompute from its first such night takes it in. Runs warn
//! about late files (or refuse, with `--strict-late-input`) and name the night to recompute.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use chrono::NaiveDate;
use serde::{Deserialize, Serialize};

use polars::prelude::*;

use super::start_ns;
use crate::error::{LateInput, Result};
use crate::load::{self, InputFile};
use crate::rates::{Calendars, RateCard};
use crate::schema;
use crate::write::{self, STATE_DIR};

const FILE_NAME: &str = "inputs.json";

/// One input file, as the catalog keeps it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Entry {
    /// Relative to `--input` (`/`-separated).
    pub path: String,
    pub bytes: u64,
    /// Modification time, nanoseconds since the Unix epoch.
    pub modified_ns: i64,
    pub sha256: String,
    pub rows: u64,
    /// The file's first and last message time (UTC), if it has any.
    pub first_event: Option<String>,
    pub last_event: Option<String>,
    /// The first night that read this version of the file.
    pub read_from: NaiveDate,
    /// This version replaced another one with other contents.
    pub changed: bool,
    #[serde(skip)]
    file: Option<InputFile>,
}

impl Entry {
    fn first_ns(&self) -> Option<i64> {
        self.first_event.as_deref().and_then(parse_ns)
    }

    fn last_ns(&self) -> Option<i64> {
        self.last_event.as_deref().and_then(parse_ns)
    }
}

fn parse_ns(text: &str) -> Option<i64> {
    chrono::DateTime::parse_from_rfc3339(text)
        .ok()
        .and_then(|t| t.timestamp_nanos_opt())
}

/// The input files a history has read, sorted by path.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Catalog {
    pub files: Vec<Entry>,
}

/// A file that holds messages of nights already billed that those nights did not read.
#[derive(Debug, Clone, Serialize)]
pub struct LateFile {
    pub path: String,
    /// `added` or `changed`.
    pub change: &'static str,
    /// The first night that read this version of the file.
    pub read_from: NaiveDate,
    /// Its messages on nights before that one (within the history) that no night billed, and
    /// their days.
    pub messages: u64,
    pub first_day: NaiveDate,
    pub last_day: NaiveDate,
    /// The invoices those messages can change: of their accounts, for the periods they fall in
    /// and of the sessions open when they begin. They stay `draft` until the file is billed.
    pub invoices: Vec<InvoiceKey>,
}

/// An invoice, by account and period.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct InvoiceKey {
    pub account_id: String,
    pub period: String,
}

impl LateFile {
    pub fn describe(&self) -> String {
        let days = match self.first_day == self.last_day {
            true => self.first_day.to_string(),
            false => format!("{} to {}", self.first_day, self.last_day),
        };
        format!(
            "`{}` was {} after night {} had run: {} of its messages fall on {days} and were not billed",
            self.path,
            self.change,
            self.first_day,
            self.messages,
        )
    }
}

/// The error `--strict-late-input` gives for `late` (not empty).
pub fn refusal(late: &[LateFile]) -> LateInput {
    LateInput {
        files: late.iter().map(LateFile::describe).collect(),
        recompute_from: late
            .iter()
            .map(|l| l.first_day)
            .min()
            .expect("some file is late"),
    }
}

/// The night to recompute from so that every late file is billed.
pub fn recompute_from(late: &[LateFile]) -> Option<NaiveDate> {
    late.iter().map(|l| l.first_day).min()
}

fn day_of(ns: i64) -> NaiveDate {
    chrono::DateTime::from_timestamp_nanos(ns).date_naive()
}

/// The invoices late messages (`account_id`, `message_id`, `timestamp`) can change: of their
/// accounts, for the periods they fall in and those of the sessions open at the start of
/// `first_day`, the day of the earliest.
fn concerned(
    messages: &DataFrame,
    history: &super::Tree,
    first_day: NaiveDate,
    card: &RateCard,
) -> Result<Vec<InvoiceKey>> {
    let accounts = messages.column(schema::ACCOUNT_ID)?.str()?;
    let times = messages.column(schema::TIMESTAMP)?.i64()?;
    let mut calendars = Calendars::new(card);
    let mut keys = BTreeSet::new();
    for (account, time) in accounts.iter().zip(times.iter()) {
        if let (Some(account), Some(time)) = (account, time) {
            let period = calendars.period_at(account, time);
            keys.insert(InvoiceKey {
                account_id: account.to_string(),
                period: calendars.periods()[period as usize].clone(),
            });
        }
    }
    let late_accounts: BTreeSet<&str> = accounts.iter().flatten().collect();
    if let Some(dir) = history.state(first_day - chrono::Days::new(1)) {
        let open = super::read_parquet(&dir.join(super::night::OPEN))?;
        let open_accounts = open.column(schema::ACCOUNT_ID)?.str()?;
        let open_periods = open.column("period")?.str()?;
        for (account, period) in open_accounts.iter().zip(open_periods.iter()) {
            if let (Some(account), Some(period)) = (account, period) {
                if late_accounts.contains(account) {
                    keys.insert(InvoiceKey {
                        account_id: account.to_string(),
                        period: period.to_string(),
                    });
                }
            }
        }
    }
    Ok(keys.into_iter().collect())
}

impl Catalog {
    /// `state/inputs.json`, relative to the output folder.
    pub fn relative_path() -> PathBuf {
        Path::new(STATE_DIR).join(FILE_NAME)
    }

    /// The catalog the last run left under `out` (empty for a new history).
    pub fn read(out: &Path) -> Result<Catalog> {
        let path = out.join(Self::relative_path());
        match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| {
                write::io_error(&path)(std::io::Error::new(std::io::ErrorKind::InvalidData, e))
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Catalog::default()),
            Err(e) => Err(write::io_error(&path)(e)),
        }
    }

    /// Writes the catalog into the staging folder `dir`.
    pub fn write(&self, dir: &Path) -> Result<()> {
        write::write_json(&dir.join(STATE_DIR), FILE_NAME, self)?;
        Ok(())
    }

    /// The catalog for a run whose first night is `first_night`, from the files `listing`
    /// finds now: unchanged files keep what `previous` knows of them; new and changed ones are
    /// hashed and their time range read. A run reads every file's messages from its first
    /// night on, so no version's `read_from` is later than that.
    pub fn update(
        previous: &Catalog,
        listing: Vec<InputFile>,
        first_night: NaiveDate,
    ) -> Result<Catalog> {
        let known: BTreeMap<&str, &Entry> = previous
            .files
            .iter()
            .map(|e| (e.path.as_str(), e))
            .collect();
        let mut files = Vec::with_capacity(listing.len());
        for mut file in listing {
            let prior = known.get(file.path.as_str()).copied();
            let unchanged = prior
                .filter(|p| p.bytes == file.bytes && p.modified_ns == file.modified_ns)
                .map(|p| p.sha256.clone());
            let sha256 = match unchanged {
                Some(sha) => sha,
                None => load::sha256_of(&file.full_path)?,
            };
            file.sha256 = sha256.clone();
            let entry = match prior.filter(|p| p.sha256 == sha256) {
                Some(p) => Entry {
                    bytes: file.bytes,
                    modified_ns: file.modified_ns,
                    read_from: p.read_from.min(first_night),
                    file: None,
                    ..p.clone()
                },
                None => {
                    tracing::debug!(path = %file.path, "new or changed input file");
                    let range = load::timestamp_range(&file)?;
                    Entry {
                        path: file.path.clone(),
                        bytes: file.bytes,
                        modified_ns: file.modified_ns,
                        sha256,
                        rows: range.rows,
                        first_event: range.first.map(load::format_ns),
                        last_event: range.last.map(load::format_ns),
                        read_from: first_night,
                        changed: prior.is_some(),
                        file: None,
                    }
                }
            };
            file.rows = entry.rows;
            files.push(Entry {
                file: Some(file),
                ..entry
            });
        }
        Ok(Catalog { files })
    }

    /// The files that can hold messages in `window` (UTC nanoseconds, half-open).
    pub fn files_overlapping(&self, window: (i64, i64)) -> Vec<InputFile> {
        self.files
            .iter()
            .filter(|e| {
                matches!((e.first_ns(), e.last_ns()), (Some(first), Some(last)) if first < window.1 && last >= window.0)
            })
            .filter_map(|e| e.file.clone())
            .collect()
    }

    /// The late files of the history in `out` that starts on `history_start` (see the module
    /// comment): the files with messages of nights that ran before the file was first read,
    /// which none of those nights (nor the nights before, whose ids duplicates are checked
    /// against) used. Only files whose time range reaches before the night that first read
    /// them are opened, and only those rows are read.
    pub fn late_files(
        &self,
        history_start: NaiveDate,
        out: &Path,
        card: &RateCard,
    ) -> Result<Vec<LateFile>> {
        let history = super::Tree { out, staging: out };
        let mut late = Vec::new();
        for entry in &self.files {
            let (Some(first), Some(last), Some(file)) =
                (entry.first_ns(), entry.last_ns(), entry.file.as_ref())
            else {
                continue;
            };
            let (from, until) = (start_ns(history_start), start_ns(entry.read_from));
            if from >= until || first >= until || last < from {
                continue;
            }
            let (rows, _) = load::read_window(vec![file.clone()], (from, until))?;
            let Some(earliest) = rows.column(schema::TIMESTAMP)?.i64()?.min() else {
                continue;
            };
            let since = day_of(earliest) - chrono::Days::new(super::DEDUP_NIGHTS);
            let ids = || [col(schema::ACCOUNT_ID), col(schema::MESSAGE_ID)];
            let mut unbilled = rows.lazy();
            if let Some(billed) = super::night::billed_ids(&history, since, entry.read_from)? {
                unbilled = unbilled
                    .join(
                        billed
                            .lazy()
                            .select(ids())
                            .with_column(lit(true).alias("billed")),
                        ids(),
                        ids(),
                        JoinArgs::new(JoinType::Left),
                    )
                    .filter(col("billed").is_null());
            }
            let unbilled = unbilled
                .group_by(ids())
                .agg([col(schema::TIMESTAMP).min()])
                .collect()?;
            let times = unbilled.column(schema::TIMESTAMP)?.i64()?;
            let (Some(first), Some(last)) = (times.min(), times.max()) else {
                continue;
            };
            late.push(LateFile {
                path: entry.path.clone(),
                change: if entry.changed { "changed" } else { "added" },
                read_from: entry.read_from,
                messages: unbilled.height() as u64,
                first_day: day_of(first),
                last_day: day_of(last),
                invoices: concerned(&unbilled, &history, day_of(first), card)?,
            });
        }
        Ok(late)
    }
}
