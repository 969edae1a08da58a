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
use crate::rates::{self, RateCard};
use crate::schema;
use crate::schema::DAY_NS;
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
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LateFile {
    pub path: String,
    /// `added` or `changed`.
    pub change: String,
    /// The first night that read this version of the file.
    pub read_from: NaiveDate,
    /// Its messages on nights before that one (within the history) that no night billed.
    pub messages: u64,
    /// A changed file: messages those nights billed that the input holds otherwise now (another
    /// status, time, kind...).
    pub altered: u64,
    /// A changed file: messages those nights billed that the input no longer holds.
    pub missing: u64,
    /// The nights concerned: the days of those messages.
    pub first_day: NaiveDate,
    pub last_day: NaiveDate,
    /// The invoices those messages can change: of their accounts, for the periods they fall in
    /// and of the sessions open when they begin. They stay `draft` until the file is billed.
    pub invoices: Vec<InvoiceKey>,
}

/// An invoice, by account and period.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
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
        let unbilled = format!(
            "{} of its messages fall on {days} and were not billed",
            self.messages
        );
        let mut parts = Vec::new();
        if self.messages > 0 {
            parts.push(unbilled);
        }
        if self.altered > 0 {
            parts.push(format!(
                "{} message(s) those nights billed are different now (status, time or kind)",
                self.altered
            ));
        }
        if self.missing > 0 {
            parts.push(format!(
                "{} message(s) those nights billed are no longer in the input",
                self.missing
            ));
        }
        let mut what = parts.join(", and ");
        if self.messages == 0 {
            what.push_str(&format!(" ({days})"));
        }
        format!(
            "`{}` was {} after night {} had run: {what}",
            self.path, self.change, self.first_day
        )
    }
}

/// The error `--strict-late-input` gives, if some of `late` hold messages no night billed, or
/// billed messages changed.
pub fn refusal(late: &[LateFile]) -> Option<LateInput> {
    let unbilled: Vec<&LateFile> = late
        .iter()
        .filter(|l| l.messages > 0 || l.altered > 0)
        .collect();
    Some(LateInput {
        files: unbilled.iter().map(|l| l.describe()).collect(),
        recompute_from: unbilled.iter().map(|l| l.first_day).min()?,
        accept_removed: unbilled.iter().any(|l| l.missing > 0),
    })
}

/// The late files of shards' histories (each counting its own accounts' messages) as one
/// history's: each file's counts summed, its days spanned and its invoices together, in the
/// order of `catalog`.
pub fn merge_late(catalog: &Catalog, shards: Vec<Vec<LateFile>>) -> Vec<LateFile> {
    let mut by_path: BTreeMap<String, LateFile> = BTreeMap::new();
    for late in shards.into_iter().flatten() {
        match by_path.get_mut(&late.path) {
            None => {
                by_path.insert(late.path.clone(), late);
            }
            Some(merged) => {
                merged.messages += late.messages;
                merged.altered += late.altered;
                merged.missing += late.missing;
                merged.first_day = merged.first_day.min(late.first_day);
                merged.last_day = merged.last_day.max(late.last_day);
                merged.invoices.extend(late.invoices);
                merged.invoices.sort();
                merged.invoices.dedup();
            }
        }
    }
    let mut merged: Vec<LateFile> = catalog
        .files
        .iter()
        .filter_map(|entry| by_path.remove(&entry.path))
        .collect();
    merged.extend(by_path.into_values());
    merged
}

/// The night to recompute from so that every late file is billed.
pub fn recompute_from(late: &[LateFile]) -> Option<NaiveDate> {
    late.iter().map(|l| l.first_day).min()
}

fn day_of(ns: i64) -> NaiveDate {
    chrono::DateTime::from_timestamp_nanos(ns).date_naive()
}

/// The invoices late messages (`account_id`, `message_id`, `timestamp`) can change: of their
/// accounts, for every period from the start of `first_day` (the day of the earliest) to a day
/// after the account's last late message (a customer message opens a 24-hour window that
/// decides the initiation of sessions opening in it), and for the periods of the sessions
/// open at the start of `first_day`.
fn concerned(
    messages: &DataFrame,
    history: &super::Tree,
    first_day: NaiveDate,
    card: &RateCard,
) -> Result<Vec<InvoiceKey>> {
    let accounts = messages.column(schema::ACCOUNT_ID)?.str()?;
    let times = messages.column(schema::TIMESTAMP)?.i64()?;
    let mut last: BTreeMap<&str, i64> = BTreeMap::new();
    for (account, time) in accounts.iter().zip(times.iter()) {
        if let (Some(account), Some(time)) = (account, time) {
            let latest = last.entry(account).or_insert(time);
            *latest = (*latest).max(time);
        }
    }
    let mut keys = BTreeSet::new();
    for (account, latest) in &last {
        let zone = card.terms_of(account).time_zone;
        let mut at = start_ns(first_day);
        while at <= latest + DAY_NS {
            let (period, _, end) = rates::period_containing(at, zone);
            keys.insert(InvoiceKey {
                account_id: account.to_string(),
                period,
            });
            at = end;
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

/// No messages, as (`account_id`, `message_id`, `timestamp`).
fn no_messages() -> Result<DataFrame> {
    Ok(load::empty_rows().select([schema::ACCOUNT_ID, schema::MESSAGE_ID, schema::TIMESTAMP])?)
}

/// The rows of `rows` whose (`account_id`, `message_id`) is not among `billed`.
fn not_in(rows: DataFrame, billed: Option<DataFrame>) -> Result<DataFrame> {
    let ids = || [col(schema::ACCOUNT_ID), col(schema::MESSAGE_ID)];
    let Some(billed) = billed else {
        return Ok(rows);
    };
    Ok(rows
        .lazy()
        .join(
            billed
                .lazy()
                .select(ids())
                .unique(None, UniqueKeepStrategy::Any)
                .with_column(lit(true).alias("billed")),
            ids(),
            ids(),
            JoinArgs::new(JoinType::Left),
        )
        .filter(col("billed").is_null())
        .drop(by_name(["billed"], true, false))
        .collect()?)
}

impl Catalog {
    /// `state/inputs.json`, relative to the output folder.
    pub fn relative_path() -> PathBuf {
        Path::new(STATE_DIR).join(FILE_NAME)
    }

    /// The catalog the last run left under `out` (empty for a new history).
    pub fn read(out: &Path) -> Result<Catalog> {
        let path = out.join(Self::relative_path());
        Ok(write::read_json_if_exists(&path)?.unwrap_or_default())
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
            // A new or changed file is hashed on one core while its time range is read on
            // the other (a file touched without a change does not need the range).
            let (sha256, range) = match unchanged {
                Some(sha) => (sha, None),
                None => std::thread::scope(|scope| {
                    let sha256 = scope.spawn(|| load::sha256_of(&file.full_path));
                    let range = load::timestamp_range(&file);
                    let sha256 = sha256.join().expect("hashing does not panic")?;
                    Ok::<_, crate::error::Error>((sha256, Some(range)))
                })?,
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
                    let range = range.expect("read for a new or changed file")?;
                    // A changed file spans the days of both versions: the nights the old one
                    // was read for are the ones its removed messages were billed by.
                    let (mut first, mut last) = (range.first, range.last);
                    if let Some(p) = prior {
                        first = [first, p.first_ns()].into_iter().flatten().min();
                        last = [last, p.last_ns()].into_iter().flatten().max();
                    }
                    Entry {
                        path: file.path.clone(),
                        bytes: file.bytes,
                        modified_ns: file.modified_ns,
                        sha256,
                        rows: range.rows,
                        first_event: first.map(load::format_ns),
                        last_event: last.map(load::format_ns),
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

    /// The messages night `night` used that the input's files no longer hold on its day, and
    /// those they hold otherwise now (another status, time, kind...), as (`account_id`,
    /// `message_id`, `timestamp`), the time being the end of the night.
    fn changed_on(
        &self,
        night: NaiveDate,
        history: &super::Tree,
    ) -> Result<(DataFrame, DataFrame)> {
        let Some(used) = super::night::billed_ids(
            history,
            night,
            night + chrono::Days::new(1),
            &Default::default(),
            None,
        )?
        else {
            return Ok((no_messages()?, no_messages()?));
        };
        let day = (start_ns(night), start_ns(night) + DAY_NS);
        let (present, files) = load::read_window(self.files_overlapping(day), day)?;
        let paths: Vec<String> = files.iter().map(|f| f.path.clone()).collect();
        let mut present = load::deduplicate(present, &paths)?;
        present.with_column(load::event_hash(&present)?)?;
        let ids = || [col(schema::ACCOUNT_ID), col(schema::MESSAGE_ID)];
        let compared = used
            .lazy()
            .join(
                present
                    .lazy()
                    .select([
                        col(schema::ACCOUNT_ID),
                        col(schema::MESSAGE_ID),
                        col(load::EVENT).alias("now"),
                    ])
                    .unique(None, UniqueKeepStrategy::Any),
                ids(),
                ids(),
                JoinArgs::new(JoinType::Left),
            )
            .with_column(lit(day.1 - 1).alias(schema::TIMESTAMP));
        let pick = |condition: Expr| -> Result<DataFrame> {
            Ok(compared
                .clone()
                .filter(condition)
                .select([
                    col(schema::ACCOUNT_ID),
                    col(schema::MESSAGE_ID),
                    col(schema::TIMESTAMP),
                ])
                .collect()?)
        };
        let gone = pick(col("now").is_null())?;
        // Nights run before the fingerprint was kept have none: nothing to compare.
        let other = pick(
            col("now")
                .is_not_null()
                .and(col(load::EVENT).is_not_null())
                .and(col("now").neq(col(load::EVENT))),
        )?;
        Ok((gone, other))
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
    /// them are opened, and only those rows are read. A shard's history counts the messages of
    /// its own accounts only.
    pub fn late_files(
        &self,
        history_start: NaiveDate,
        out: &Path,
        card: &RateCard,
        shard: Option<crate::shard::Shard>,
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
            let unbilled = match rows.column(schema::TIMESTAMP)?.i64()?.min() {
                None => rows.clear(),
                Some(earliest) => {
                    let since = day_of(earliest) - chrono::Days::new(super::DEDUP_NIGHTS);
                    let billed = super::night::billed_ids(
                        &history,
                        since,
                        entry.read_from,
                        &Default::default(),
                        None,
                    )?;
                    // The nights looked at follow the file's earliest message of any account,
                    // so that a shard looks at the nights a whole history would.
                    let rows = match shard {
                        Some(shard) => shard.keep(rows)?,
                        None => rows,
                    };
                    not_in(rows, billed)?
                        .lazy()
                        .group_by([col(schema::ACCOUNT_ID), col(schema::MESSAGE_ID)])
                        .agg([col(schema::TIMESTAMP).min()])
                        .collect()?
                }
            };
            // What the nights this version was not read by billed that the input lacks now, or
            // holds otherwise.
            let (mut missing, mut altered) = (no_messages()?, no_messages()?);
            if entry.changed {
                let nights = day_of(first.max(from))
                    .iter_days()
                    .take_while(|d| *d < entry.read_from && start_ns(*d) <= last);
                for night in nights {
                    let (gone, other) = self.changed_on(night, &history)?;
                    missing.vstack_mut(&gone)?;
                    altered.vstack_mut(&other)?;
                }
            }
            let all = unbilled.vstack(&missing)?.vstack(&altered)?;
            let times = all.column(schema::TIMESTAMP)?.i64()?;
            let (Some(first_at), Some(last_at)) = (times.min(), times.max()) else {
                continue;
            };
            late.push(LateFile {
                path: entry.path.clone(),
                change: if entry.changed { "changed" } else { "added" }.to_string(),
                read_from: entry.read_from,
                messages: unbilled.height() as u64,
                altered: altered.height() as u64,
                missing: missing.height() as u64,
                first_day: day_of(first_at),
                last_day: day_of(last_at),
                invoices: concerned(&all, &history, day_of(first_at), card)?,
            });
        }
        Ok(late)
    }
}
