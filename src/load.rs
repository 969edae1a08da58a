//! Load and validate: message-log Parquet files in, one typed and deduplicated frame out.
//!
//! Every file's footer is checked against the input contract before any data is read, so a
//! schema problem names its file and column without reading gigabytes first. Values are then
//! checked column by column (nulls in required columns, unknown enumerated values, timestamps
//! convbill cannot represent), and the first offending row is named in the error.
//!
//! Output schema ([`Messages::frame`]):
//! `message_id`, `account_id`, `business_id`, `user_id`: String;
//! `channel`, `direction`, `kind`, `status`: UInt32 codes from [`crate::schema`];
//! `timestamp`: Int64 nanoseconds since the Unix epoch, UTC;
//! `file`: UInt32 index into [`Messages::files`]; `row`: UInt64 row number within that file.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

use parquet::basic::{ConvertedType, LogicalType, Type as PhysicalType};
use parquet::file::metadata::ParquetMetaDataReader;
use polars::prelude::*;
use sha2::{Digest, Sha256};

use crate::error::{Error, InputError, Result};
use crate::schema::{self, Enumeration};

/// Internal column names added by the loader.
pub const FILE: &str = "file";
pub const ROW: &str = "row";
/// The `file` of an event a nightly run carried over from an earlier night: it came from that
/// night's input files, which the `file` column of a later run does not list.
pub const EARLIER_NIGHT: u32 = u32::MAX;

/// One input file, as recorded in the manifest.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct InputFile {
    /// Path relative to the input root (`/`-separated), or the file name for a single file.
    pub path: String,
    pub bytes: u64,
    pub sha256: String,
    pub rows: u64,
    /// Modification time, nanoseconds since the Unix epoch (0 where the OS has none).
    #[serde(skip)]
    pub modified_ns: i64,
    #[serde(skip)]
    pub full_path: PathBuf,
    /// `key=value` folder names between the input root and the file.
    #[serde(skip)]
    pub hive: BTreeMap<String, String>,
}

/// Counts of what was read, for the manifest and the summary.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct InputStats {
    pub rows_read: u64,
    pub duplicates_dropped: u64,
    pub rows_rejected: u64,
    pub rows_used: u64,
    /// `--rejects`: rows set aside, by reason (`rows_rejected` is their sum).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub rejected_by_reason: BTreeMap<String, u64>,
}

/// The validated message log.
pub struct Messages {
    pub frame: DataFrame,
    pub files: Vec<InputFile>,
    pub stats: InputStats,
}

/// Reads every Parquet file at `input` (a file, or a folder searched recursively).
pub fn load(input: &Path) -> Result<Messages> {
    load_window(input, None)
}

/// Like [`load`], but keeps only rows whose timestamp lies in `[start, end)` (UTC
/// nanoseconds). The window is pushed down to the Parquet reader, so row groups outside it
/// are skipped by their statistics; values are checked in the rows kept.
pub fn load_window(input: &Path, window: Option<(i64, i64)>) -> Result<Messages> {
    let mut source = open(input)?;
    source.hash_files()?;
    let mut frames = Vec::new();
    let rows_read = source.read(window, u64::MAX, |frame| {
        frames.push(frame);
        Ok(())
    })?;
    let paths: Vec<String> = source.files.iter().map(|f| f.path.clone()).collect();
    let frame = deduplicate(concat_frames(frames)?, &paths)?;
    let rows_used = frame.height() as u64;
    Ok(Messages {
        frame,
        files: source.files,
        stats: InputStats {
            rows_read,
            duplicates_dropped: rows_read - rows_used,
            rows_rejected: 0,
            rows_used,
            rejected_by_reason: BTreeMap::new(),
        },
    })
}

/// One frame from several frames of the loader's schema (at least one).
pub(crate) fn concat_frames(mut frames: Vec<DataFrame>) -> Result<DataFrame> {
    Ok(match frames.len() {
        1 => frames.pop().expect("one frame"),
        _ => {
            let lazy: Vec<LazyFrame> = frames.into_iter().map(IntoLazy::lazy).collect();
            concat(lazy, UnionArgs::default())?.collect()?
        }
    })
}

/// The input files, found and their footers checked against the input contract; no data
/// read yet.
pub struct Source {
    pub files: Vec<InputFile>,
    layouts: Vec<Layout>,
    /// What rows must satisfy, and what happens to those that do not.
    pub checks: Checks,
    /// Only rows whose columns (of [`schema::REQUIRED_COLUMNS`]) hold these values are read
    /// and checked (`convbill explain`); each file is then read whole, so that the reader
    /// skips row groups by their statistics and decodes the other columns of matching rows
    /// only.
    pub only: Vec<(&'static str, String)>,
    /// With [`Checks::keep_rejects`]: the rows set aside so far ([`REJECT_COLUMNS`]).
    pub rejected: Vec<DataFrame>,
    /// `--shard`: only the rows of this shard's accounts are handed on, set aside or counted
    /// ([`open_shard`]).
    pub shard: Option<crate::shard::Shard>,
    /// Rows read so far, of every account (with a shard, before its rows were picked).
    pub rows_seen: u64,
    /// With a shard: every input file found, those of other buckets' folders too, as
    /// (relative path, bytes).
    pub listed: Vec<(String, u64)>,
}

/// Earliest plausible message time: 2010-01-01T00:00:00Z, in nanoseconds.
pub const EARLIEST_NS: i64 = 1_262_304_000 * 1_000_000_000;

/// What every row must satisfy, and what happens to a row that does not.
#[derive(Debug, Clone, Copy)]
pub struct Checks {
    /// Timestamps before this instant (UTC nanoseconds) are implausible.
    pub not_before: i64,
    /// Timestamps after this instant are implausible: a day after the run started.
    pub not_after: i64,
    /// `--rejects`: set failing rows aside (see [`Source::rejected`]) instead of stopping.
    pub keep_rejects: bool,
    /// Meta's pricing reads the rows (a rate card with `[meta]`): a delivered WhatsApp
    /// template needs a known `category`, and a WhatsApp `user_id` must be a phone number.
    pub meta: bool,
}

impl Checks {
    /// Strict checks for a run starting now.
    pub fn strict_now() -> Self {
        let now = chrono::Utc::now()
            .timestamp_nanos_opt()
            .expect("the clock is within the nanosecond range");
        Checks {
            not_before: EARLIEST_NS,
            not_after: now + schema::DAY_NS,
            keep_rejects: false,
            meta: false,
        }
    }
}

/// The schema of a rejected-rows frame ([`REJECT_COLUMNS`]), before `file` becomes a path.
pub fn rejects_schema() -> Schema {
    let text = |name: &str| Field::new(name.into(), DataType::String);
    Schema::from_iter([
        Field::new(FILE.into(), DataType::UInt32),
        Field::new(ROW.into(), DataType::UInt64),
        text("reason"),
        text("column"),
        text(schema::MESSAGE_ID),
        text(schema::ACCOUNT_ID),
        text(schema::CHANNEL),
        text(schema::BUSINESS_ID),
        text(schema::USER_ID),
        text(schema::DIRECTION),
        Field::new(
            schema::TIMESTAMP.into(),
            DataType::Datetime(TimeUnit::Nanoseconds, Some(TimeZone::UTC)),
        ),
        text(schema::KIND),
        text(schema::STATUS),
        text(schema::CATEGORY),
    ])
}

/// Why a row was set aside, as written to `rejects.parquet`.
pub mod reason {
    pub const NULL_VALUE: &str = "null_value";
    pub const UNKNOWN_VALUE: &str = "unknown_value";
    pub const KIND_NOT_ALLOWED: &str = "kind_not_allowed";
    pub const IMPLAUSIBLE_TIMESTAMP: &str = "implausible_timestamp";
    pub const CONFLICTING_DUPLICATE: &str = "conflicting_duplicate";
    pub const MISSING_CATEGORY: &str = "missing_category";
    pub const NOT_A_PHONE_NUMBER: &str = "not_a_phone_number";
}

/// Columns of a rejected-rows frame: where the row is, why it was set aside, and its values
/// as read (enumerated values as written in the file; `timestamp` in UTC). `file` is an index
/// into the run's files until the rejects are written.
pub const REJECT_COLUMNS: [&str; 14] = [
    FILE,
    ROW,
    "reason",
    "column",
    schema::MESSAGE_ID,
    schema::ACCOUNT_ID,
    schema::CHANNEL,
    schema::BUSINESS_ID,
    schema::USER_ID,
    schema::DIRECTION,
    schema::TIMESTAMP,
    schema::KIND,
    schema::STATUS,
    schema::CATEGORY,
];

/// Finds the Parquet files at `input` and checks every footer.
pub fn open(input: &Path) -> Result<Source> {
    Source::of(discover(input)?)
}

/// [`open`] for one shard: the files in another bucket's folder (`convbill_bucket=J`, a log
/// laid out by bucket) are left out unread, and [`Source::read`] keeps the rows of the shard's
/// accounts only.
pub fn open_shard(input: &Path, shard: Option<crate::shard::Shard>) -> Result<Source> {
    Source::of_shard(discover(input)?, shard)
}

impl Source {
    /// [`Source::of`] the files of `shard`: those in another bucket's folder are left out.
    pub fn of_shard(files: Vec<InputFile>, shard: Option<crate::shard::Shard>) -> Result<Source> {
        let mut files = files;
        let listed = files.iter().map(|f| (f.path.clone(), f.bytes)).collect();
        if let Some(shard) = shard {
            let mut kept = Vec::with_capacity(files.len());
            for file in files {
                match shard.folder_bucket(&file.hive, &file.full_path)? {
                    Some(bucket) if bucket != shard.index => {}
                    _ => kept.push(file),
                }
            }
            files = kept;
        }
        let mut source = Source::of(files)?;
        source.shard = shard;
        if shard.is_some() {
            source.listed = listed;
        }
        Ok(source)
    }
}

/// The rows of `files` whose timestamp lies in `window` (UTC nanoseconds, half-open), checked
/// strictly and not deduplicated, in the loader's schema (`file` indexes the returned files).
pub fn read_window(
    files: Vec<InputFile>,
    window: (i64, i64),
) -> Result<(DataFrame, Vec<InputFile>)> {
    let (rows, files, _) = read_window_checked(files, window, false)?;
    Ok((rows, files))
}

/// [`read_window`]; with `keep_rejects`, rows that fail a check are set aside and returned
/// ([`REJECT_COLUMNS`], `file` an index into the returned files) instead of stopping the read.
pub fn read_window_checked(
    files: Vec<InputFile>,
    window: (i64, i64),
    keep_rejects: bool,
) -> Result<(DataFrame, Vec<InputFile>, DataFrame)> {
    let mut source = Source::of(files)?;
    source.checks.keep_rejects = keep_rejects;
    let mut frames = Vec::new();
    source.read(Some(window), u64::MAX, |frame| {
        frames.push(frame);
        Ok(())
    })?;
    if frames.is_empty() {
        frames.push(empty_rows());
    }
    let rejected = rejects_of(std::mem::take(&mut source.rejected))?;
    Ok((concat_frames(frames)?, source.files, rejected))
}

/// Frames of rejected rows as one ([`REJECT_COLUMNS`]), in file and row order.
pub fn rejects_of(frames: Vec<DataFrame>) -> Result<DataFrame> {
    let columns = REJECT_COLUMNS.map(col);
    let rejected = match frames.len() {
        0 => DataFrame::empty_with_schema(&rejects_schema()).lazy(),
        _ => concat(
            frames.into_iter().map(IntoLazy::lazy).collect::<Vec<_>>(),
            UnionArgs::default(),
        )?,
    };
    Ok(rejected
        .select(columns)
        .sort([FILE, ROW], SortMultipleOptions::default())
        .collect()?)
}

/// Rejected rows as written: `file` the path of the input file (`paths[file]`) instead of
/// its index; and their number by reason.
pub fn rejects_with_paths(
    mut frame: DataFrame,
    paths: &[String],
) -> Result<(DataFrame, std::collections::BTreeMap<String, u64>)> {
    let names: Vec<Option<&str>> = frame
        .column(FILE)?
        .u32()?
        .iter()
        .map(|i| i.and_then(|i| paths.get(i as usize)).map(String::as_str))
        .collect();
    frame.with_column(Column::new(FILE.into(), names))?;
    let mut by_reason = std::collections::BTreeMap::new();
    for reason in frame.column("reason")?.str()?.iter().flatten() {
        *by_reason.entry(reason.to_string()).or_default() += 1;
    }
    Ok((frame, by_reason))
}

/// A frame of no rows in the loader's schema (see the module comment).
pub fn empty_rows() -> DataFrame {
    let text = |name: &str| Column::new_empty(name.into(), &DataType::String);
    let code = |name: &str| Column::new_empty(name.into(), &DataType::UInt32);
    DataFrame::new(
        0,
        vec![
            text(schema::MESSAGE_ID),
            text(schema::ACCOUNT_ID),
            text(schema::BUSINESS_ID),
            text(schema::USER_ID),
            code(schema::CHANNEL),
            code(schema::DIRECTION),
            code(schema::KIND),
            code(schema::STATUS),
            code(schema::CATEGORY),
            Column::new_empty(schema::TIMESTAMP.into(), &DataType::Int64),
            code(FILE),
            Column::new_empty(ROW.into(), &DataType::UInt64),
        ],
    )
    .expect("columns of equal length")
}

/// How many rows a file has, and the first and last of their times (UTC nanoseconds).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TimeRange {
    pub rows: u64,
    pub first: Option<i64>,
    pub last: Option<i64>,
}

/// A file's rows and the range of their times, reading only its `timestamp` column (after
/// checking its footer like every file convbill reads). Every time must be there and be
/// plausible ([`Checks::strict_now`]): a row no day would ever read is refused here, naming
/// its file and row, rather than never billed.
pub fn timestamp_range(file: &InputFile) -> Result<TimeRange> {
    let layout = check_footer(file)?;
    let range = times_in(file)?;
    if range.rows < layout.rows {
        let row = first_row_where(file, |_| col(schema::TIMESTAMP).is_null())?;
        return Err(InputError::NullValue {
            path: file.full_path.clone(),
            column: schema::TIMESTAMP.into(),
            row,
        }
        .into());
    }
    let checks = Checks::strict_now();
    let outside = |t: Option<i64>| t.is_some_and(|t| t < checks.not_before || t > checks.not_after);
    if outside(range.first) || outside(range.last) {
        let row = first_row_where(file, |dtype| {
            let factor = unit_factor(dtype);
            let ts = || col(schema::TIMESTAMP).to_physical();
            ts().lt(lit(checks.not_before.div_euclid(factor)))
                .or(ts().gt(lit(checks.not_after.div_euclid(factor))))
        })?;
        let value = times_at(file, row)?;
        return Err(InputError::ImplausibleTimestamp {
            path: file.full_path.clone(),
            row,
            value: format_ns(value),
            earliest: format_ns(checks.not_before),
            latest: format_ns(checks.not_after),
        }
        .into());
    }
    Ok(TimeRange {
        rows: layout.rows,
        ..range
    })
}

/// The first row of a file (from 0) where `condition` (given the `timestamp` column's type)
/// holds; reads only that column.
fn first_row_where(file: &InputFile, condition: impl Fn(&DataType) -> Expr) -> Result<u64> {
    let (scan, dtype) = timestamp_scan(file)?;
    let found = collect_input(
        &file.full_path,
        scan.filter(condition(&dtype)).select([col(ROW)]).limit(1),
    )?;
    Ok(found
        .column(ROW)?
        .cast(&DataType::UInt64)?
        .u64()?
        .get(0)
        .unwrap_or(0))
}

/// The time (UTC nanoseconds, saturated) of a file's row `row`.
fn times_at(file: &InputFile, row: u64) -> Result<i64> {
    let (scan, dtype) = timestamp_scan(file)?;
    let factor = unit_factor(&dtype);
    let value = collect_input(
        &file.full_path,
        scan.slice(row as i64, 1)
            .select([col(schema::TIMESTAMP).to_physical()]),
    )?;
    Ok(value
        .column(schema::TIMESTAMP)?
        .cast(&DataType::Int64)?
        .i64()?
        .get(0)
        .unwrap_or(0)
        .saturating_mul(factor))
}

/// A scan of `file`'s `timestamp` column and row numbers ([`ROW`]), and the column's type.
fn timestamp_scan(file: &InputFile) -> Result<(LazyFrame, DataType)> {
    let path = &file.full_path;
    let unreadable = |e: PolarsError| InputError::Unreadable {
        path: path.clone(),
        reason: e.to_string(),
    };
    let mut scan = scan(path)
        .map_err(unreadable)?
        .select([col(schema::TIMESTAMP), col(ROW)]);
    let dtype = timestamp_dtype(&mut scan).map_err(unreadable)?;
    Ok((scan, dtype))
}

/// How many rows of a file have a time, and the first and last of them.
fn times_in(file: &InputFile) -> Result<TimeRange> {
    let path = &file.full_path;
    let (scan, dtype) = timestamp_scan(file)?;
    let factor = unit_factor(&dtype);
    let ts = || col(schema::TIMESTAMP).to_physical();
    let frame = collect_input(
        path,
        scan.select([
            // Rows with a time: nulls are not counted.
            col(schema::TIMESTAMP)
                .count()
                .cast(DataType::UInt64)
                .alias("rows"),
            ts().min().alias("first"),
            ts().max().alias("last"),
        ]),
    )?;
    let value = |name: &str| -> Result<Option<i64>> {
        Ok(frame
            .column(name)?
            .cast(&DataType::Int64)?
            .i64()?
            .get(0)
            .map(|v| v.saturating_mul(factor)))
    };
    Ok(TimeRange {
        rows: frame.column("rows")?.u64()?.get(0).unwrap_or(0),
        first: value("first")?,
        last: value("last")?,
    })
}

/// The type polars reads a scan's `timestamp` column as.
fn timestamp_dtype(scan: &mut LazyFrame) -> PolarsResult<DataType> {
    Ok(scan
        .collect_schema()?
        .get(schema::TIMESTAMP)
        .cloned()
        .unwrap_or(DataType::Null))
}

/// Nanoseconds per unit of a timestamp type.
fn unit_factor(dtype: &DataType) -> i64 {
    match dtype {
        DataType::Datetime(TimeUnit::Milliseconds, _) => 1_000_000,
        DataType::Datetime(TimeUnit::Microseconds, _) => 1_000,
        _ => 1,
    }
}

/// `start <= timestamp < end` for a column of `dtype`; the bounds are whole days, so they
/// divide exactly into any unit.
fn in_window(dtype: &DataType, start: i64, end: i64) -> Expr {
    let factor = unit_factor(dtype);
    let bound = |ns: i64| lit(ns / factor).cast(dtype.clone());
    col(schema::TIMESTAMP)
        .gt_eq(bound(start))
        .and(col(schema::TIMESTAMP).lt(bound(end)))
}

impl Source {
    /// `files`, their footers checked against the input contract; no data read yet.
    pub fn of(files: Vec<InputFile>) -> Result<Source> {
        let layouts = files.iter().map(check_footer).collect::<Result<Vec<_>>>()?;
        Ok(Source {
            files,
            layouts,
            checks: Checks::strict_now(),
            only: Vec::new(),
            rejected: Vec::new(),
            shard: None,
            rows_seen: 0,
            listed: Vec::new(),
        })
    }
}

impl Source {
    /// Rows in all files, as their footers list them.
    pub fn rows(&self) -> u64 {
        self.layouts.iter().map(|l| l.rows).sum()
    }

    /// Fills in every file's SHA-256.
    pub fn hash_files(&mut self) -> Result<()> {
        for file in &mut self.files {
            file.sha256 = sha256_of(&file.full_path)?;
        }
        Ok(())
    }

    /// Rows per `account_id` over all files, sorted by account. Reads only that column.
    /// A null `account_id` fails here, naming its file and row.
    pub fn account_rows(&self) -> Result<Vec<(String, u64)>> {
        self.account_rows_by(COUNT_CHUNK_ROWS)
    }

    /// [`Source::account_rows`], reading about `chunk_rows` rows at a time (whole row groups).
    pub fn account_rows_by(&self, chunk_rows: u64) -> Result<Vec<(String, u64)>> {
        let mut counts: BTreeMap<String, u64> = BTreeMap::new();
        for (file, layout) in self.files.iter().zip(&self.layouts) {
            if layout.from_hive.contains(&schema::ACCOUNT_ID) {
                *counts
                    .entry(file.hive[schema::ACCOUNT_ID].clone())
                    .or_default() += layout.rows;
                continue;
            }
            let path = &file.full_path;
            let unreadable = |e: PolarsError| InputError::Unreadable {
                path: path.clone(),
                reason: e.to_string(),
            };
            // A few row groups at a time; a small hash table of accounts per chunk.
            for (offset, length) in chunks(&layout.row_groups, chunk_rows) {
                let column = collect_input(
                    path,
                    scan(path)
                        .map_err(unreadable)?
                        .slice(offset as i64, length as IdxSize)
                        .select([col(schema::ACCOUNT_ID).cast(DataType::String)]),
                )?;
                let accounts = column.column(schema::ACCOUNT_ID)?.str()?;
                let mut chunk_counts: PlHashMap<&str, u64> = PlHashMap::new();
                for (position, account) in accounts.iter().enumerate() {
                    match account {
                        Some(account) => *chunk_counts.entry(account).or_default() += 1,
                        // Set aside when the rows are read.
                        None if self.checks.keep_rejects => {}
                        None => {
                            return Err(InputError::NullValue {
                                path: path.clone(),
                                column: schema::ACCOUNT_ID.to_string(),
                                row: offset + position as u64,
                            }
                            .into())
                        }
                    }
                }
                for (account, n) in chunk_counts {
                    if self.shard.is_some_and(|shard| !shard.holds(account)) {
                        continue;
                    }
                    match counts.get_mut(account) {
                        Some(count) => *count += n,
                        None => {
                            counts.insert(account.to_string(), n);
                        }
                    }
                }
            }
        }
        Ok(counts.into_iter().collect())
    }

    /// The (`account_id`, `message_id`) of every row, of `account` only if given, in file
    /// order, about `chunk_rows` rows at a time (whole row groups): those two columns alone,
    /// for finding a message by a fingerprint of them (`explain --session-id`). Nothing is
    /// checked; the rows found are read again, whole, through [`Source::read`].
    pub fn account_message_ids(
        &self,
        account: Option<&str>,
        chunk_rows: u64,
        mut f: impl FnMut(&StringChunked, &StringChunked) -> Result<()>,
    ) -> Result<()> {
        for (file, layout) in self.files.iter().zip(&self.layouts) {
            let path = &file.full_path;
            let unreadable = |e: PolarsError| InputError::Unreadable {
                path: path.clone(),
                reason: e.to_string(),
            };
            // A column from the file, or the value of its `key=value` folder.
            let column = |name: &'static str| match layout.from_hive.contains(&name) {
                true => lit(file.hive[name].clone()).alias(name),
                false => col(name).cast(DataType::String),
            };
            for (offset, length) in chunks(&layout.row_groups, chunk_rows) {
                let mut rows = scan(path)
                    .map_err(unreadable)?
                    .slice(offset as i64, length as IdxSize)
                    .select([column(schema::ACCOUNT_ID), column(schema::MESSAGE_ID)]);
                if let Some(account) = account {
                    rows = rows.filter(col(schema::ACCOUNT_ID).eq(lit(account.to_string())));
                }
                let rows = collect_input(path, rows)?;
                f(
                    rows.column(schema::ACCOUNT_ID)?.str()?,
                    rows.column(schema::MESSAGE_ID)?.str()?,
                )?;
            }
        }
        Ok(())
    }

    /// Reads the files in path order, in chunks of whole row groups of about `chunk_rows`
    /// rows (at least one chunk per file), validates each chunk and hands it to `f` in the
    /// loader's schema. With a `window`, keeps only rows whose timestamp lies in it (and with
    /// `chunk_rows` at `u64::MAX`, reads each file as one chunk). Returns the number of rows
    /// read (with a window, those in it; with a shard, those of its accounts).
    pub fn read(
        &mut self,
        window: Option<(i64, i64)>,
        chunk_rows: u64,
        mut f: impl FnMut(DataFrame) -> Result<()>,
    ) -> Result<u64> {
        let mut kept = 0;
        for (index, (file, layout)) in self.files.iter_mut().zip(&self.layouts).enumerate() {
            file.rows = layout.rows;
            let slices = match (window, chunk_rows) {
                // One read lets the filter skip row groups by their statistics.
                (Some(_), u64::MAX) => vec![None],
                _ if !self.only.is_empty() => vec![None],
                _ => chunks(&layout.row_groups, chunk_rows)
                    .into_iter()
                    .map(Some)
                    .collect(),
            };
            let mut file_rows = 0;
            for slice in slices {
                crate::error::check_interrupt()?;
                let rows = Rows {
                    window,
                    slice,
                    only: &self.only,
                };
                let (frame, rejected) = read_file(file, layout, index as u32, rows, &self.checks)?;
                let rows = (frame.height() + rejected.as_ref().map_or(0, |r| r.height())) as u64;
                file_rows += rows;
                self.rows_seen += rows;
                let (frame, rejected) = match self.shard {
                    Some(shard) => shard_rows(shard, file, frame, rejected)?,
                    None => (frame, rejected),
                };
                kept += (frame.height() + rejected.as_ref().map_or(0, |r| r.height())) as u64;
                self.rejected.extend(rejected);
                f(frame)?;
            }
            if window.is_none() && self.only.is_empty() && file_rows != layout.rows {
                return Err(InputError::Unreadable {
                    path: file.full_path.clone(),
                    reason: format!(
                        "the footer lists {} rows but {file_rows} were read",
                        layout.rows
                    ),
                }
                .into());
            }
        }
        Ok(kept)
    }
}

/// The rows (and rows set aside) of `shard`'s accounts ([`crate::shard::Shard::mask`]). A
/// file in a bucket's folder must hold that bucket's accounts only: a row of another is an
/// error naming the file, row and account (the log was laid out by another count or key).
fn shard_rows(
    shard: crate::shard::Shard,
    file: &InputFile,
    frame: DataFrame,
    rejected: Option<DataFrame>,
) -> Result<(DataFrame, Option<DataFrame>)> {
    let mask = shard.mask(&frame)?;
    if shard.folder_bucket(&file.hive, &file.full_path)?.is_some() {
        if let Some(position) = mask.iter().position(|kept| kept != Some(true)) {
            let account = frame
                .column(schema::ACCOUNT_ID)?
                .str()?
                .get(position)
                .unwrap_or_default()
                .to_string();
            let row = frame.column(ROW)?.u64()?.get(position).unwrap_or(0);
            return Err(InputError::Unreadable {
                path: file.full_path.clone(),
                reason: format!(
                    "row {row} holds account {account} of bucket {} of {}, in the folder of bucket {}: lay the log out by `pmod(xxhash64(account_id), {})` into `{}=I` folders",
                    crate::shard::Shard::bucket_of(&account, shard.count),
                    shard.count,
                    shard.index,
                    shard.count,
                    crate::shard::LAYOUT_KEY,
                ),
            }
            .into());
        }
        return Ok((frame, rejected));
    }
    let frame = if mask.all() {
        frame
    } else {
        frame.filter(&mask)?
    };
    let rejected = match rejected {
        Some(rejected) => Some(shard.keep(rejected)?),
        None => None,
    };
    Ok((frame, rejected))
}

/// Row-group sizes → `(offset, length)` slices of whole row groups of at least `chunk_rows`
/// rows (the last may be shorter); one empty slice for a file without rows.
fn chunks(row_groups: &[u64], chunk_rows: u64) -> Vec<(u64, u64)> {
    let mut slices = Vec::new();
    let (mut offset, mut length) = (0, 0);
    for rows in row_groups {
        length += rows;
        if length >= chunk_rows {
            slices.push((offset, length));
            offset += length;
            length = 0;
        }
    }
    if length > 0 || slices.is_empty() {
        slices.push((offset, length));
    }
    slices
}

/// Input reads in progress: while there are any, a panic inside polars is a corrupt file
/// (see [`quiet_reader_panics`]).
static READING: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// Runs a scan of an input file. Some corruptions make the Parquet decoder panic instead of
/// returning an error; such a panic becomes an [`InputError::Unreadable`] naming the file.
fn collect_input(path: &Path, scan: LazyFrame) -> Result<DataFrame> {
    use std::sync::atomic::Ordering;
    READING.fetch_add(1, Ordering::SeqCst);
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| scan.collect()));
    READING.fetch_sub(1, Ordering::SeqCst);
    let reason = match result {
        Ok(Ok(frame)) => return Ok(frame),
        Ok(Err(e)) => e.to_string(),
        Err(panic) => {
            let message = panic
                .downcast_ref::<String>()
                .map(String::as_str)
                .or_else(|| panic.downcast_ref::<&str>().copied())
                .unwrap_or("no message");
            format!("the Parquet decoder failed, the file is corrupt ({message})")
        }
    };
    Err(InputError::Unreadable {
        path: path.to_path_buf(),
        reason,
    }
    .into())
}

/// Keeps the default panic message for panics inside polars while an input file is read:
/// [`collect_input`] reports them as a corrupt file. Every other panic prints as usual.
/// Installed by the binary.
pub fn quiet_reader_panics() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let in_polars = info
            .location()
            .is_some_and(|l| l.file().contains("/polars-"));
        if in_polars && READING.load(std::sync::atomic::Ordering::SeqCst) > 0 {
            return;
        }
        default(info)
    }));
}

/// Rows of `account_id` counted at a time.
const COUNT_CHUNK_ROWS: u64 = 4_000_000;

/// A lazy scan of one file with the row index as [`ROW`].
fn scan(path: &Path) -> PolarsResult<LazyFrame> {
    scan_file(path, Some(ROW))
}

/// A lazy scan of one Parquet file, `key=value` folders in its path not read as columns,
/// with the row index as `row_index` if given.
pub(crate) fn scan_file(path: &Path, row_index: Option<&str>) -> PolarsResult<LazyFrame> {
    let args = ScanArgsParquet {
        // convbill reads `key=value` folders itself, and paths are never patterns.
        hive_options: HiveOptions {
            enabled: Some(false),
            ..Default::default()
        },
        glob: false,
        row_index: row_index.map(|name| RowIndex {
            name: name.into(),
            offset: 0,
        }),
        ..Default::default()
    };
    LazyFrame::scan_parquet(PlRefPath::new(path.to_string_lossy().as_ref()), args)
}

/// Lists the Parquet files at `input`, sorted by path so that runs are repeatable.
/// Files and folders whose names start with `.` or `_` (`_SUCCESS`, `.tmp`) are skipped.
/// Nothing is read but the folders and the files' sizes and times.
pub fn discover(input: &Path) -> Result<Vec<InputFile>> {
    let meta = std::fs::metadata(input).map_err(|_| InputError::NotFound {
        path: input.to_path_buf(),
    })?;
    let mut found = Vec::new();
    if meta.is_file() {
        let name = input
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        found.push(input_file(
            input.to_path_buf(),
            name,
            &meta,
            BTreeMap::new(),
        ));
    } else {
        walk(input, input, &mut found)?;
    }
    if found.is_empty() {
        return Err(InputError::NoFiles {
            path: input.to_path_buf(),
        }
        .into());
    }
    Ok(found)
}

fn input_file(
    full_path: PathBuf,
    path: String,
    meta: &std::fs::Metadata,
    hive: BTreeMap<String, String>,
) -> InputFile {
    let modified_ns = meta
        .modified()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_nanos() as i64);
    InputFile {
        path,
        bytes: meta.len(),
        sha256: String::new(),
        rows: 0,
        modified_ns,
        full_path,
        hive,
    }
}

fn walk(root: &Path, dir: &Path, found: &mut Vec<InputFile>) -> Result<()> {
    let unreadable = |e: std::io::Error| InputError::Unreadable {
        path: dir.to_path_buf(),
        reason: e.to_string(),
    };
    let mut entries = std::fs::read_dir(dir)
        .map_err(unreadable)?
        .collect::<std::io::Result<Vec<_>>>()
        .map_err(unreadable)?;
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') || name.starts_with('_') {
            continue;
        }
        let path = entry.path();
        let meta = std::fs::metadata(&path).map_err(|e| InputError::Unreadable {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        if meta.is_dir() {
            walk(root, &path, found)?;
        } else if name.ends_with(".parquet") {
            let rel = path.strip_prefix(root).unwrap_or(&path);
            let parts: Vec<String> = rel
                .components()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect();
            let hive = parts[..parts.len() - 1]
                .iter()
                .filter_map(|p| p.split_once('='))
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            found.push(input_file(path.clone(), parts.join("/"), &meta, hive));
        }
    }
    Ok(())
}

/// Where each column the run needs comes from in one file.
#[derive(Debug)]
struct Layout {
    /// Columns read from the file itself.
    in_file: Vec<&'static str>,
    /// Required columns whose value comes from a `key=value` folder name.
    from_hive: Vec<&'static str>,
    rows: u64,
    /// Rows in each row group, in file order.
    row_groups: Vec<u64>,
}

/// Checks one file's footer against the input contract, naming the file and column on failure.
fn check_footer(file: &InputFile) -> Result<Layout> {
    let path = &file.full_path;
    let unreadable = |reason: String| InputError::Unreadable {
        path: path.clone(),
        reason,
    };
    let handle = File::open(path).map_err(|e| unreadable(e.to_string()))?;
    let metadata = ParquetMetaDataReader::new()
        .parse_and_finish(&handle)
        .map_err(|e| unreadable(format!("not a readable Parquet file ({e})")))?;
    let root = metadata.file_metadata().schema_descr().root_schema();
    let fields: BTreeMap<&str, &parquet::schema::types::Type> = root
        .get_fields()
        .iter()
        .map(|f| (f.name(), f.as_ref()))
        .collect();

    let mut layout = Layout {
        in_file: Vec::new(),
        from_hive: Vec::new(),
        rows: metadata.file_metadata().num_rows().max(0) as u64,
        row_groups: metadata
            .row_groups()
            .iter()
            .map(|g| g.num_rows().max(0) as u64)
            .collect(),
    };
    let columns = schema::REQUIRED_COLUMNS
        .iter()
        .map(|c| (*c, true))
        .chain(schema::OPTIONAL_COLUMNS.iter().map(|c| (*c, false)));
    for (column, required) in columns {
        let is_timestamp = column == schema::TIMESTAMP;
        match fields.get(column) {
            Some(field) => {
                check_type(field, is_timestamp).map_err(|found| InputError::WrongType {
                    path: path.clone(),
                    column: column.to_string(),
                    found,
                    expected: if is_timestamp {
                        "a timestamp (INT64 with a TIMESTAMP annotation, any unit, or INT96)"
                    } else {
                        "a string (BYTE_ARRAY with a STRING annotation)"
                    },
                })?;
                layout.in_file.push(column);
            }
            None if !is_timestamp && file.hive.contains_key(column) => {
                layout.from_hive.push(column)
            }
            None if required => {
                return Err(InputError::MissingColumn {
                    path: path.clone(),
                    column: column.to_string(),
                    required: schema::REQUIRED_COLUMNS.join(", "),
                }
                .into())
            }
            None => {}
        }
    }
    Ok(layout)
}

/// `Ok` when a top-level Parquet field has the type the column needs; otherwise what it is.
fn check_type(field: &parquet::schema::types::Type, timestamp: bool) -> Result<(), String> {
    if field.is_group() {
        return Err("a nested group".into());
    }
    let physical = field.get_physical_type();
    let info = field.get_basic_info();
    let logical = info.logical_type_ref();
    let converted = info.converted_type();
    let ok = if timestamp {
        matches!(physical, PhysicalType::INT96)
            || (physical == PhysicalType::INT64
                && (matches!(logical, Some(LogicalType::Timestamp(_)))
                    || matches!(
                        converted,
                        ConvertedType::TIMESTAMP_MILLIS | ConvertedType::TIMESTAMP_MICROS
                    )))
    } else {
        physical == PhysicalType::BYTE_ARRAY
            && (matches!(logical, Some(LogicalType::String | LogicalType::Enum))
                || matches!(converted, ConvertedType::UTF8 | ConvertedType::ENUM))
    };
    if ok {
        return Ok(());
    }
    Err(match (logical, converted) {
        (Some(l), _) => format!("{physical} ({l:?})"),
        (None, ConvertedType::NONE) => format!("{physical} with no annotation"),
        (None, c) => format!("{physical} ({c})"),
    })
}

pub fn sha256_of(path: &Path) -> Result<String> {
    let unreadable = |e: std::io::Error| InputError::Unreadable {
        path: path.to_path_buf(),
        reason: e.to_string(),
    };
    let mut file = File::open(path).map_err(unreadable)?;
    let mut hasher = Sha256::new();
    let mut buffer = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buffer).map_err(unreadable)?;
        if n == 0 {
            break;
        }
        hasher.update(&buffer[..n]);
    }
    Ok(hex::encode(hasher.finalize()))
}

/// Which rows of a file [`read_file`] reads: those with a time in `window`, of the row groups
/// in `slice` (all if `None`), whose columns hold the values `only` gives.
struct Rows<'a> {
    window: Option<(i64, i64)>,
    slice: Option<(u64, u64)>,
    only: &'a [(&'static str, String)],
}

/// Reads the [`Rows`] of one file into the loader's output schema and checks their values:
/// the rows that pass, and (with [`Checks::keep_rejects`]) the rows set aside. In strict mode
/// the first failing row stops the run, naming the file, row, column and value.
fn read_file(
    file: &InputFile,
    layout: &Layout,
    index: u32,
    rows: Rows,
    checks: &Checks,
) -> Result<(DataFrame, Option<DataFrame>)> {
    let Rows {
        window,
        slice,
        only,
    } = rows;
    let path = &file.full_path;
    let unreadable = |e: PolarsError| InputError::Unreadable {
        path: path.clone(),
        reason: e.to_string(),
    };
    let mut columns: Vec<Expr> = layout.in_file.iter().map(|c| col(*c)).collect();
    columns.push(col(ROW));
    let mut scan = scan(path).map_err(unreadable)?;
    if let Some((offset, length)) = slice {
        scan = scan.slice(offset as i64, length as IdxSize);
    }
    let mut scan = scan.select(columns);
    for (column, value) in only {
        scan = scan.filter(match layout.from_hive.contains(column) {
            true => lit(file.hive[*column] == *value),
            false => col(*column).cast(DataType::String).eq(lit(value.as_str())),
        });
    }
    let mut in_memory_window = None;
    if let Some((start, end)) = window {
        let dtype = timestamp_dtype(&mut scan).map_err(unreadable)?;
        match slice {
            // A whole file: the reader skips row groups outside the window by their statistics.
            None => scan = scan.filter(in_window(&dtype, start, end)),
            // A slice of row groups is filtered once read: filtering inside the reader decodes
            // dictionary-encoded strings row by row, many times slower.
            Some(_) => in_memory_window = Some(in_window(&dtype, start, end)),
        }
    }
    let mut raw = collect_input(path, scan)?;
    if let Some(in_window) = in_memory_window {
        // Logs come by day: most slices lie inside the window whole and are kept as read.
        let mask = raw
            .clone()
            .lazy()
            .select([in_window.alias("in_window")])
            .collect()?;
        let mask = mask.column("in_window")?.bool()?;
        if !mask.all() {
            raw = raw.filter(mask)?;
        }
    }
    let height = raw.height();
    let rows = raw.column(ROW)?.cast(&DataType::UInt64)?;

    let mut columns: Vec<Column> = Vec::with_capacity(12);
    for column in [
        schema::MESSAGE_ID,
        schema::ACCOUNT_ID,
        schema::BUSINESS_ID,
        schema::USER_ID,
        schema::CHANNEL,
        schema::DIRECTION,
        schema::KIND,
        schema::STATUS,
        schema::CATEGORY,
    ] {
        let strings = if layout.from_hive.contains(&column) {
            Column::new_scalar(
                column.into(),
                Scalar::from(PlSmallStr::from(file.hive[column].as_str())),
                height,
            )
        } else if layout.in_file.contains(&column) {
            raw.column(column)?
                .cast(&DataType::String)
                .map_err(unreadable)?
        } else {
            Column::full_null(column.into(), height, &DataType::String)
        };
        columns.push(strings);
    }
    let (timestamps, unrepresentable) = timestamps_ns(path, raw.column(schema::TIMESTAMP)?)?;
    columns.push(timestamps);
    columns.push(Column::new_scalar(FILE.into(), Scalar::from(index), height));
    columns.push(rows);
    let strings = DataFrame::new(height, columns)?;

    // Every check that some row fails gives the mask of its failing rows; the first failing
    // check names a row's reason. Most chunks fail none, and build no mask.
    let mut failures: Vec<(Problem, Vec<bool>)> = Vec::new();
    let mut check = |problem: Problem, mask: BooleanChunked| {
        if mask.any() {
            failures.push((problem, trues(&mask)));
        }
    };
    let any_unrepresentable = unrepresentable.iter().any(|u| *u);
    for column in schema::REQUIRED_COLUMNS {
        let values = strings.column(column)?;
        if values.null_count() == 0 {
            continue;
        }
        let mut nulls = values.is_null();
        if column == schema::TIMESTAMP && any_unrepresentable {
            nulls = &nulls & &!&BooleanChunked::from_slice(PlSmallStr::EMPTY, &unrepresentable);
        }
        check(Problem::Null(column), nulls);
    }
    let mut coded = encode_enumerations(strings)?;
    for e in [
        &schema::CHANNELS,
        &schema::DIRECTIONS,
        &schema::KINDS,
        &schema::STATUSES,
    ] {
        let codes = coded.column(e.column)?;
        let raw = coded.column(&format!("{}_raw", e.column))?;
        // A null code is an unknown value, or a null one without a default.
        if codes.null_count() > 0 {
            check(Problem::Unknown(e), &codes.is_null() & &raw.is_not_null());
        }
    }
    let direction = coded.column(schema::DIRECTION)?.u32()?;
    let kind = coded.column(schema::KIND)?.u32()?;
    let inbound = direction.equal(schema::INBOUND);
    let outbound = direction.equal(schema::OUTBOUND);
    check(
        Problem::KindFor("inbound"),
        &inbound & &kind.equal(schema::KIND_TEMPLATE),
    );
    check(
        Problem::KindFor("outbound"),
        &outbound & &(kind.equal(schema::KIND_CTA_CLICK) | kind.equal(schema::KIND_AD_CLICK)),
    );
    // Only Meta's pricing reads `category`, of delivered WhatsApp templates: there it must be
    // known; anywhere else an unknown one is none (filled in below).
    let category_codes = coded.column(schema::CATEGORY)?.clone();
    if checks.meta {
        let category = category_codes.u32()?;
        let whatsapp = coded
            .column(schema::CHANNEL)?
            .u32()?
            .equal(schema::WHATSAPP);
        let status = coded.column(schema::STATUS)?.u32()?;
        let delivered_template = &(&(&outbound & &kind.equal(schema::KIND_TEMPLATE))
            & &status.not_equal(schema::STATUS_FAILED))
            & &whatsapp;
        let raw_null = coded.column("category_raw")?.is_null();
        check(
            Problem::Unknown(&schema::CATEGORIES),
            &(&delivered_template & &category_codes.is_null()) & &!&raw_null,
        );
        check(
            Problem::MissingCategory,
            &(&delivered_template & &category.equal(schema::CATEGORY_NONE)) & &raw_null,
        );
        let users = coded.column(schema::USER_ID)?.str()?;
        let not_a_number: BooleanChunked = users
            .iter()
            .zip(whatsapp.iter())
            .map(|(user, whatsapp)| {
                whatsapp == Some(true)
                    && user.is_some_and(|u| !crate::meta::markets::is_phone_number(u))
            })
            .collect();
        check(Problem::NotAPhoneNumber, not_a_number);
    }
    let times = coded.column(schema::TIMESTAMP)?.i64()?;
    let plausible =
        |t: Option<i64>| t.is_none_or(|t| t >= checks.not_before && t <= checks.not_after);
    if any_unrepresentable || !plausible(times.min()) || !plausible(times.max()) {
        let implausible: BooleanChunked = times
            .iter()
            .zip(&unrepresentable)
            .map(|(t, unrepresentable)| *unrepresentable || !plausible(t))
            .collect();
        check(Problem::Timestamp, implausible);
    }

    if category_codes.null_count() > 0 {
        coded.with_column(category_codes.fill_null(FillNullStrategy::Zero)?)?;
    }
    if !checks.keep_rejects {
        // The first bad row, by its first failing check.
        let first = failures
            .iter()
            .filter_map(|(problem, mask)| Some((mask.iter().position(|f| *f)?, problem)))
            .min_by_key(|(position, _)| *position);
        if let Some((position, problem)) = first {
            return Err(problem.error(path, &coded, position, checks)?);
        }
        return Ok((drop_raw(coded)?, None));
    }
    let mut reasons: Vec<Option<&'static str>> = vec![None; height];
    let mut columns: Vec<Option<&'static str>> = vec![None; height];
    for (problem, mask) in &failures {
        for (row, failed) in mask.iter().enumerate() {
            if *failed && reasons[row].is_none() {
                reasons[row] = Some(problem.reason());
                columns[row] = Some(problem.column());
            }
        }
    }
    let rejected_mask =
        BooleanChunked::from_iter_values(PlSmallStr::EMPTY, reasons.iter().map(Option::is_some));
    if !rejected_mask.any() {
        return Ok((drop_raw(coded)?, None));
    }
    let mut with_reasons = coded;
    with_reasons.with_column(Column::new("reason".into(), reasons))?;
    with_reasons.with_column(Column::new("column".into(), columns))?;
    let rejected = with_reasons.filter(&rejected_mask)?;
    let kept = with_reasons.filter(&!&rejected_mask)?;
    let rejected = rejected
        .lazy()
        .with_columns([
            col("channel_raw").alias(schema::CHANNEL),
            col("direction_raw").alias(schema::DIRECTION),
            col("kind_raw").alias(schema::KIND),
            col("status_raw").alias(schema::STATUS),
            col("category_raw").alias(schema::CATEGORY),
            col(schema::TIMESTAMP).cast(DataType::Datetime(
                TimeUnit::Nanoseconds,
                Some(TimeZone::UTC),
            )),
        ])
        .select(REJECT_COLUMNS.map(col))
        .collect()?;
    Ok((
        drop_raw(kept.drop_many(["reason", "column"]))?,
        Some(rejected),
    ))
}

fn drop_raw(coded: DataFrame) -> Result<DataFrame> {
    Ok(coded.drop_many([
        "channel_raw",
        "direction_raw",
        "kind_raw",
        "status_raw",
        "category_raw",
    ]))
}

/// `true` where the mask is `true` (nulls are `false`).
pub(crate) fn trues(mask: &BooleanChunked) -> Vec<bool> {
    mask.iter().map(|v| v == Some(true)).collect()
}

/// One row-level check.
enum Problem {
    Null(&'static str),
    Unknown(&'static Enumeration),
    KindFor(&'static str),
    Timestamp,
    /// A delivered WhatsApp template without a `category` ([`Checks::meta`]).
    MissingCategory,
    /// A WhatsApp `user_id` that is not 6 to 15 digits ([`Checks::meta`]).
    NotAPhoneNumber,
}

impl Problem {
    fn reason(&self) -> &'static str {
        match self {
            Problem::Null(_) => reason::NULL_VALUE,
            Problem::Unknown(_) => reason::UNKNOWN_VALUE,
            Problem::KindFor(_) => reason::KIND_NOT_ALLOWED,
            Problem::Timestamp => reason::IMPLAUSIBLE_TIMESTAMP,
            Problem::MissingCategory => reason::MISSING_CATEGORY,
            Problem::NotAPhoneNumber => reason::NOT_A_PHONE_NUMBER,
        }
    }

    fn column(&self) -> &'static str {
        match self {
            Problem::Null(column) => column,
            Problem::Unknown(e) => e.column,
            Problem::KindFor(_) => schema::KIND,
            Problem::Timestamp => schema::TIMESTAMP,
            Problem::MissingCategory => schema::CATEGORY,
            Problem::NotAPhoneNumber => schema::USER_ID,
        }
    }

    /// The strict-mode error for the row at `position` of `coded`.
    fn error(
        &self,
        path: &Path,
        coded: &DataFrame,
        position: usize,
        checks: &Checks,
    ) -> Result<Error> {
        let path = path.to_path_buf();
        let row = coded.column(ROW)?.u64()?.get(position).unwrap_or(0);
        let raw = |column: &str| -> Result<String> {
            Ok(coded
                .column(&format!("{column}_raw"))?
                .str()?
                .get(position)
                .unwrap_or_default()
                .to_string())
        };
        Ok(match self {
            Problem::Null(column) => InputError::NullValue {
                path,
                column: column.to_string(),
                row,
            },
            Problem::Unknown(e) => InputError::UnknownValue {
                path,
                column: e.column.to_string(),
                row,
                value: raw(e.column)?,
                accepted: e.accepted(),
            },
            Problem::KindFor(direction) => InputError::KindForDirection {
                path,
                column: schema::KIND.into(),
                row,
                value: raw(schema::KIND)?,
                direction,
                accepted: if *direction == "inbound" {
                    "`message`, `cta_click` or `ad_click`"
                } else {
                    "`message` or `template`"
                },
            },
            Problem::MissingCategory => InputError::MissingCategory { path, row },
            Problem::NotAPhoneNumber => InputError::NotAPhoneNumber {
                path,
                row,
                value: coded
                    .column(schema::USER_ID)?
                    .str()?
                    .get(position)
                    .unwrap_or_default()
                    .to_string(),
            },
            Problem::Timestamp => match coded.column(schema::TIMESTAMP)?.i64()?.get(position) {
                None => InputError::TimestampOutOfRange { path, row },
                Some(ns) => InputError::ImplausibleTimestamp {
                    path,
                    row,
                    value: format_ns(ns),
                    earliest: format_ns(checks.not_before),
                    latest: format_ns(checks.not_after),
                },
            },
        }
        .into())
    }
}

/// An instant as RFC 3339 in UTC.
pub fn format_ns(ns: i64) -> String {
    chrono::DateTime::from_timestamp_nanos(ns).to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)
}

/// Converts any timestamp column to Int64 nanoseconds since the epoch, UTC. Zoned timestamps
/// are stored as UTC instants already; naive ones are taken as UTC. Values nanoseconds cannot
/// represent become null, marked `true` in the returned mask.
fn timestamps_ns(path: &Path, column: &Column) -> Result<(Column, Vec<bool>)> {
    let series = column.as_materialized_series();
    let factor: i64 = match series.dtype() {
        DataType::Datetime(TimeUnit::Nanoseconds, _) => 1,
        DataType::Datetime(TimeUnit::Microseconds, _) => 1_000,
        DataType::Datetime(TimeUnit::Milliseconds, _) => 1_000_000,
        other => {
            return Err(InputError::WrongType {
                path: path.to_path_buf(),
                column: schema::TIMESTAMP.into(),
                found: other.to_string(),
                expected: "a timestamp",
            }
            .into())
        }
    };
    let physical = series.to_physical_repr();
    let values = physical.i64()?;
    if factor == 1 {
        let times = values.clone().with_name(schema::TIMESTAMP.into());
        return Ok((times.into_column(), vec![false; values.len()]));
    }
    let mut out: Vec<Option<i64>> = Vec::with_capacity(values.len());
    let mut unrepresentable = vec![false; values.len()];
    for (row, value) in values.iter().enumerate() {
        let ns = value.and_then(|v| v.checked_mul(factor));
        unrepresentable[row] = value.is_some() && ns.is_none();
        out.push(ns);
    }
    Ok((Column::new(schema::TIMESTAMP.into(), out), unrepresentable))
}

/// The codes of an enumerated string column: null for an unknown value, and for a null one
/// unless there is a `default`.
///
/// The names are short: a string column holds each in its 16-byte view (length, then the
/// bytes, zero-padded), so a row's view is compared as one number with the names' views. A
/// view that matches none (a longer string, an unknown value) is compared as a string.
fn codes(strings: &StringChunked, e: &Enumeration, default: Option<schema::Code>) -> Column {
    let inline: Vec<(u128, schema::Code)> = e
        .values
        .iter()
        .filter_map(|(name, code)| Some((inline_view(name)?, *code)))
        .collect();
    let by_name = |value: &str| {
        e.values
            .iter()
            .find(|(name, _)| *name == value)
            .map(|(_, code)| *code)
    };
    let code_of = |value: Option<&str>| value.map_or(default, by_name);
    let name = e.column.into();
    // An optional column the file lacks is all null: its default, without a look at each row.
    if strings.null_count() == strings.len() {
        return match default {
            Some(code) => UInt32Chunked::full(name, code, strings.len()),
            None => UInt32Chunked::full_null(name, strings.len()),
        }
        .into_column();
    }
    if strings.null_count() > 0 {
        return UInt32Chunked::from_iter_options(name, strings.iter().map(code_of)).into_column();
    }
    let mut codes = Vec::with_capacity(strings.len());
    for array in strings.downcast_iter() {
        for (row, view) in array.views().iter().enumerate() {
            let bits = view.as_u128();
            match inline.iter().find(|(name, _)| *name == bits) {
                Some((_, code)) => codes.push(*code),
                None => match by_name(array.value(row)) {
                    Some(code) => codes.push(code),
                    // An unknown value: the rows are checked, rarely the fast way.
                    None => {
                        let codes = strings.iter().map(code_of);
                        return UInt32Chunked::from_iter_options(name, codes).into_column();
                    }
                },
            }
        }
    }
    UInt32Chunked::from_vec(name, codes).into_column()
}

/// The 16 bytes of a string column's view of `name` as one number, if `name` is short enough
/// to lie inside it: its length (`u32`, native order), then its bytes, zero-padded to 12.
fn inline_view(name: &str) -> Option<u128> {
    let bytes = name.as_bytes();
    if bytes.len() > 12 {
        return None;
    }
    let mut view = [0u8; 16];
    view[..4].copy_from_slice(&(bytes.len() as u32).to_ne_bytes());
    view[4..4 + bytes.len()].copy_from_slice(bytes);
    Some(u128::from_ne_bytes(view))
}

/// `code → name` for an enumerated column (null for a code not in the table): the inverse of
/// the loader's encoding, for outputs.
pub(crate) fn decode(e: &Enumeration) -> Expr {
    let source = col(e.column);
    e.values
        .iter()
        .rev()
        .fold(
            lit(NULL).cast(DataType::String),
            |otherwise, (name, code)| {
                when(source.clone().eq(lit(*code)))
                    .then(lit(*name))
                    .otherwise(otherwise)
            },
        )
        .alias(e.column)
}

/// Replaces the enumerated string columns by their codes, keeping the strings as `*_raw`
/// until they have been checked.
fn encode_enumerations(mut frame: DataFrame) -> Result<DataFrame> {
    for (e, default) in [
        (&schema::CHANNELS, None),
        (&schema::DIRECTIONS, None),
        (&schema::KINDS, Some(schema::KIND_MESSAGE)),
        (&schema::STATUSES, Some(schema::STATUS_DELIVERED)),
        (&schema::CATEGORIES, Some(schema::CATEGORY_NONE)),
    ] {
        let raw = frame.column(e.column)?.clone();
        let coded = codes(raw.str()?, e, default);
        frame.with_column(raw.with_name(format!("{}_raw", e.column).into()))?;
        frame.with_column(coded)?;
    }
    Ok(frame)
}

/// Keeps one row per (`account_id`, `message_id`): the earliest `timestamp`, and among equal
/// timestamps the first read (files in path order, rows in file order). Rows come out in no
/// particular order. A conflicting duplicate (see [`deduplicate_checked`]) stops the run;
/// `files` names the files of the `file` column in its message.
pub fn deduplicate(frame: DataFrame, files: &[String]) -> Result<DataFrame> {
    Ok(deduplicate_checked(frame, files, false)?.0)
}

/// Columns a duplicate must repeat: the same event logged twice has the same key, direction
/// and kind. Its `timestamp` and `status` may differ (a later log line, a delivery receipt).
const DUPLICATE_MUST_MATCH: [&str; 5] = [
    schema::CHANNEL,
    schema::BUSINESS_ID,
    schema::USER_ID,
    schema::DIRECTION,
    schema::KIND,
];

/// [`deduplicate`], and the rows of conflicting duplicates: rows with the same (`account_id`,
/// `message_id`) that differ in a column of [`DUPLICATE_MUST_MATCH`]. Strict, the first one
/// stops the run, naming both rows; with `keep_rejects` all rows of such an id are set aside
/// ([`REJECT_COLUMNS`], reason `conflicting_duplicate`).
///
/// Duplicates are rare, so one pass over hashes of `message_id` alone first sets aside the
/// rows whose id surely occurs once (they are kept as they are); only the rest are sorted and
/// compared.
pub fn deduplicate_checked(
    frame: DataFrame,
    files: &[String],
    keep_rejects: bool,
) -> Result<(DataFrame, Option<DataFrame>)> {
    let (keep, rejected) = duplicates_checked(&frame, files, keep_rejects)?;
    Ok(match keep {
        None => (frame, rejected),
        Some(keep) => (
            frame.filter(&BooleanChunked::from_slice(PlSmallStr::EMPTY, &keep))?,
            rejected,
        ),
    })
}

/// [`deduplicate_checked`] without copying the frame: the rows to keep (`None`: all of them),
/// and the rows set aside.
pub fn duplicates_checked(
    frame: &DataFrame,
    files: &[String],
    keep_rejects: bool,
) -> Result<(Option<Vec<bool>>, Option<DataFrame>)> {
    let repeated = repeated_ids(frame)?;
    if !repeated.contains(&true) {
        return Ok((None, None));
    }
    // The candidates, with their rows in `frame`.
    let rows = IdxCa::from_iter_values(
        CANDIDATE.into(),
        (0..repeated.len())
            .filter(|&row| repeated[row])
            .map(|row| row as IdxSize),
    );
    let mut candidates = frame.take(&rows)?;
    candidates.with_column(rows.into_column())?;
    let mut candidates = candidates
        .lazy()
        .sort(
            [
                schema::ACCOUNT_ID,
                schema::MESSAGE_ID,
                schema::TIMESTAMP,
                FILE,
                ROW,
            ],
            SortMultipleOptions::default().with_maintain_order(true),
        )
        .collect()?;
    candidates.rechunk_mut();
    let (conflicting, first_conflict) = conflicts(&candidates)?;
    let mut rejected = None;
    if let Some((first, second, column)) = first_conflict {
        if !keep_rejects {
            return Err(conflict_error(&candidates, files, first, second, column)?);
        }
        let mask = BooleanChunked::from_slice(PlSmallStr::EMPTY, &conflicting);
        let rows = candidates.filter(&mask)?;
        candidates = candidates.filter(&!&mask)?;
        rejected = Some(as_rejects(rows, reason::CONFLICTING_DUPLICATE, column)?);
    }
    let kept = candidates
        .lazy()
        .sort(
            [schema::TIMESTAMP, FILE, ROW],
            SortMultipleOptions::default().with_maintain_order(true),
        )
        .unique_stable(
            Some(by_name(
                [schema::ACCOUNT_ID, schema::MESSAGE_ID],
                true,
                false,
            )),
            UniqueKeepStrategy::First,
        )
        .select([col(CANDIDATE)])
        .collect()?;
    let mut keep: Vec<bool> = repeated.iter().map(|r| !r).collect();
    for row in kept.column(CANDIDATE)?.idx()?.into_no_null_iter() {
        keep[row as usize] = true;
    }
    Ok((Some(keep), rejected))
}

/// The column of a duplicate candidate's row in the frame [`duplicates_checked`] looks at.
const CANDIDATE: &str = "candidate_row";

/// Over rows sorted by account and id: `true` for every row of an id whose rows differ in a
/// column of [`DUPLICATE_MUST_MATCH`]; and the first such difference (two positions, column).
#[allow(clippy::type_complexity)]
fn conflicts(sorted: &DataFrame) -> Result<(Vec<bool>, Option<(usize, usize, &'static str)>)> {
    let accounts = sorted.column(schema::ACCOUNT_ID)?.str()?;
    let ids = sorted.column(schema::MESSAGE_ID)?.str()?;
    let values: Vec<&Column> = DUPLICATE_MUST_MATCH
        .iter()
        .map(|c| sorted.column(c))
        .collect::<PolarsResult<_>>()?;
    // Two copies naming different categories contradict each other too; one without a
    // category (a delivery receipt, say) does not.
    let categories = sorted.column(schema::CATEGORY)?.u32()?;
    let named = |row: usize| categories.get(row).filter(|c| *c != schema::CATEGORY_NONE);
    let n = sorted.height();
    let mut conflicting = vec![false; n];
    let mut first_conflict = None;
    let mut start = 0;
    while start < n {
        let mut end = start + 1;
        while end < n && accounts.get(end) == accounts.get(start) && ids.get(end) == ids.get(start)
        {
            end += 1;
        }
        'rows: for row in start + 1..end {
            for (column, values) in DUPLICATE_MUST_MATCH.iter().zip(&values) {
                if values.get(row)? != values.get(start)? {
                    conflicting[start..end].iter_mut().for_each(|c| *c = true);
                    first_conflict.get_or_insert((start, row, *column));
                    break 'rows;
                }
            }
            if let (Some(a), Some(b)) = (named(start), named(row)) {
                if a != b {
                    conflicting[start..end].iter_mut().for_each(|c| *c = true);
                    first_conflict.get_or_insert((start, row, schema::CATEGORY));
                    break 'rows;
                }
            }
        }
        start = end;
    }
    Ok((conflicting, first_conflict))
}

fn conflict_error(
    sorted: &DataFrame,
    files: &[String],
    first: usize,
    second: usize,
    column: &'static str,
) -> Result<Error> {
    let text = |name: &str, at: usize| -> Result<String> {
        let value = sorted.column(name)?.get(at)?;
        let code = match &value {
            AnyValue::UInt32(code) => Some(*code),
            _ => None,
        };
        Ok(match (name, code) {
            (schema::CHANNEL, Some(c)) => schema::CHANNELS.name_of(c).to_string(),
            (schema::DIRECTION, Some(c)) => schema::DIRECTIONS.name_of(c).to_string(),
            (schema::KIND, Some(c)) => schema::KINDS.name_of(c).to_string(),
            (schema::CATEGORY, Some(c)) => schema::CATEGORIES.name_of(c).to_string(),
            _ => value.str_value().to_string(),
        })
    };
    let place = |at: usize| -> Result<String> {
        let file = sorted
            .column(FILE)?
            .get(at)?
            .extract::<u32>()
            .unwrap_or(u32::MAX);
        let row = sorted.column(ROW)?.get(at)?.extract::<u64>().unwrap_or(0);
        Ok(match files.get(file as usize) {
            Some(name) => format!("`{name}` row {row}"),
            None => "a night already billed".to_string(),
        })
    };
    Ok(
        InputError::ConflictingDuplicate(Box::new(crate::error::Conflict {
            account_id: text(schema::ACCOUNT_ID, first)?,
            message_id: text(schema::MESSAGE_ID, first)?,
            column: column.to_string(),
            first_value: text(column, first)?,
            first: place(first)?,
            second_value: text(column, second)?,
            second: place(second)?,
        }))
        .into(),
    )
}

/// Loader rows → rejected rows ([`REJECT_COLUMNS`]) with one reason and column; enumerated
/// codes are written back as their names.
pub(crate) fn as_rejects(rows: DataFrame, why: &str, column: &str) -> Result<DataFrame> {
    Ok(rows
        .lazy()
        .with_columns([
            lit(why).alias("reason"),
            lit(column.to_string()).alias("column"),
            decode(&schema::CHANNELS),
            decode(&schema::DIRECTIONS),
            decode(&schema::KINDS),
            decode(&schema::STATUSES),
            decode(&schema::CATEGORIES),
            col(schema::TIMESTAMP).cast(DataType::Datetime(
                TimeUnit::Nanoseconds,
                Some(TimeZone::UTC),
            )),
        ])
        .select(REJECT_COLUMNS.map(col))
        .collect()?)
}

/// The column [`content_hash`] adds.
pub const CONTENT: &str = "content";
/// The column [`event_hash`] adds.
pub const EVENT: &str = "event";

/// A 64-bit fingerprint (FNV-1a) of what a duplicate must repeat ([`DUPLICATE_MUST_MATCH`]),
/// per row of a frame in the loader's schema, as the column [`CONTENT`]: two copies of one
/// event have the same, a conflicting duplicate another. Nightly runs keep it with the message
/// ids of each night, so that a copy logged on a later night is checked too. The function is
/// part of the state's format: it must not change.
pub fn content_hash(frame: &DataFrame) -> Result<Column> {
    Ok(Column::new(CONTENT.into(), row_hashes(frame, false)?.0))
}

/// [`content_hash`] and the row's `status` and `timestamp` too, as the column [`EVENT`]: all
/// that bills. Nightly runs keep it with the message ids of each night, so that a file
/// rewritten with a billed message changed (a delivery now `failed`, say) is noticed. Part of
/// the state's format too.
pub fn event_hash(frame: &DataFrame) -> Result<Column> {
    let (_, event) = row_hashes(frame, true)?;
    Ok(Column::new(EVENT.into(), event))
}

/// [`content_hash`] and [`event_hash`] in one pass: the event hash goes on from the content
/// hash.
pub fn content_and_event_hashes(frame: &DataFrame) -> Result<(Column, Column)> {
    let (content, event) = row_hashes(frame, true)?;
    Ok((
        Column::new(CONTENT.into(), content),
        Column::new(EVENT.into(), event),
    ))
}

/// The column nightly state keeps [`id_hashes`] in.
pub const ID_HASH: &str = "id_hash";

/// A 64-bit fingerprint (FNV-1a) of each row's (`account_id`, `message_id`). Nightly runs
/// keep it with each night's message ids: a later night compares its rows' fingerprints with
/// these numbers first and reads the ids themselves only where one matches. Part of the
/// state's format: it must not change.
pub fn id_hashes(frame: &DataFrame) -> Result<Vec<u64>> {
    let accounts = frame.column(schema::ACCOUNT_ID)?.str()?;
    let ids = frame.column(schema::MESSAGE_ID)?.str()?;
    Ok(accounts
        .iter()
        .zip(ids.iter())
        .map(|(account, id)| {
            let mut hash = FNV_OFFSET;
            fnv_feed(&mut hash, account.unwrap_or_default().as_bytes());
            fnv_feed(&mut hash, id.unwrap_or_default().as_bytes());
            hash
        })
        .collect())
}

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;

/// Feeds `bytes` and a separator (so that ("ab", "c") and ("a", "bc") differ) to an FNV-1a
/// hash.
fn fnv_feed(hash: &mut u64, bytes: &[u8]) {
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    for byte in bytes {
        *hash ^= u64::from(*byte);
        *hash = hash.wrapping_mul(PRIME);
    }
    *hash ^= 0x1f;
    *hash = hash.wrapping_mul(PRIME);
}

/// The content hash of every row, and with `whole_event` its event hash (else empty).
fn row_hashes(frame: &DataFrame, whole_event: bool) -> Result<(Vec<u64>, Vec<u64>)> {
    use crate::sessions::values_in_place;
    let code =
        |name: &str| -> Result<_> { Ok(values_in_place(frame.column(name)?.u32()?, u32::MAX)) };
    let (channel, direction, kind) = (
        code(schema::CHANNEL)?,
        code(schema::DIRECTION)?,
        code(schema::KIND)?,
    );
    let (status, times) = match whole_event {
        true => (
            code(schema::STATUS)?,
            values_in_place(frame.column(schema::TIMESTAMP)?.i64()?, i64::MIN),
        ),
        false => (Vec::new().into(), Vec::new().into()),
    };
    let business = frame.column(schema::BUSINESS_ID)?.str()?;
    let user = frame.column(schema::USER_ID)?.str()?;
    let mut content = Vec::with_capacity(frame.height());
    let mut event = Vec::with_capacity(if whole_event { frame.height() } else { 0 });
    for (i, (business, user)) in business.iter().zip(user.iter()).enumerate() {
        let mut hash = FNV_OFFSET;
        fnv_feed(&mut hash, &channel[i].to_le_bytes());
        fnv_feed(&mut hash, business.unwrap_or_default().as_bytes());
        fnv_feed(&mut hash, user.unwrap_or_default().as_bytes());
        fnv_feed(&mut hash, &direction[i].to_le_bytes());
        fnv_feed(&mut hash, &kind[i].to_le_bytes());
        content.push(hash);
        if whole_event {
            fnv_feed(&mut hash, &status[i].to_le_bytes());
            fnv_feed(&mut hash, &times[i].to_le_bytes());
            event.push(hash);
        }
    }
    Ok((content, event))
}

/// `true` for each row whose `message_id` may occur more than once in `frame`: rows whose
/// id's 64-bit hash repeats (a superset of the repeated ids; the caller compares the ids
/// themselves). Hashing and sorting numbers is several times faster than a table of strings,
/// and most ids are seen once: a table of bits, [`REPEAT_BITS`] per row, marks the hashes'
/// slots seen twice, and only the rows in such slots (about one in 16) are sorted.
fn repeated_ids(frame: &DataFrame) -> Result<Vec<bool>> {
    use std::hash::BuildHasher;
    let ids = frame.column(schema::MESSAGE_ID)?.str()?;
    let state = PlRandomState::default();
    // Nulls (refused before this in the key columns) repeat nothing.
    let hashes: Vec<Option<u64>> = ids
        .iter()
        .map(|id| id.map(|id| state.hash_one(id)))
        .collect();
    let slots = (hashes.len() * REPEAT_BITS).next_power_of_two().max(64);
    let shift = 64 - slots.trailing_zeros();
    let slot = |hash: u64| {
        (
            (hash >> shift) as usize / 64,
            1u64 << ((hash >> shift) % 64),
        )
    };
    let (mut once, mut twice) = (vec![0u64; slots / 64], vec![0u64; slots / 64]);
    for hash in hashes.iter().flatten() {
        let (word, bit) = slot(*hash);
        twice[word] |= once[word] & bit;
        once[word] |= bit;
    }
    let mut candidates: Vec<(u64, IdxSize)> = hashes
        .iter()
        .enumerate()
        .filter_map(|(row, hash)| {
            let hash = (*hash)?;
            let (word, bit) = slot(hash);
            (twice[word] & bit != 0).then_some((hash, row as IdxSize))
        })
        .collect();
    candidates.sort_unstable();
    let mut repeated = vec![false; ids.len()];
    for run in candidates.chunk_by(|a, b| a.0 == b.0) {
        if run.len() > 1 {
            for (_, row) in run {
                repeated[*row as usize] = true;
            }
        }
    }
    Ok(repeated)
}

/// Bits per row of [`repeated_ids`]' table: a row's slot is shared with another id's in about
/// one case in this many.
const REPEAT_BITS: usize = 16;

#[cfg(test)]
mod tests {
    use super::*;

    fn coded(
        values: &[Option<&str>],
        e: &Enumeration,
        default: Option<schema::Code>,
    ) -> Vec<Option<u32>> {
        let strings = StringChunked::from_iter_options("s".into(), values.iter().copied());
        codes(&strings, e, default).u32().unwrap().iter().collect()
    }

    #[test]
    fn enumerated_values_are_coded_whatever_their_length_chunks_or_nulls() {
        let kinds = &schema::KINDS;
        let known = [
            Some("message"),
            Some("ad_click"),
            Some("template"),
            Some("cta_click"),
        ];
        let want: Vec<Option<u32>> = known
            .iter()
            .map(|v| {
                kinds
                    .values
                    .iter()
                    .find(|(n, _)| Some(*n) == *v)
                    .map(|(_, c)| *c)
            })
            .collect();
        assert!(want.iter().all(Option::is_some));
        assert_eq!(coded(&known, kinds, None), want);
        // Unknown values, short and longer than a view holds, and a prefix of a name.
        let odd = [
            Some("messag"),
            Some("message "),
            Some("a_much_longer_kind_name"),
            Some(""),
        ];
        assert_eq!(coded(&odd, kinds, None), vec![None; 4]);
        // A null takes the default, if any.
        let with_null = [Some("template"), None];
        assert_eq!(
            coded(&with_null, kinds, Some(schema::KIND_MESSAGE)),
            vec![want[2], Some(schema::KIND_MESSAGE)]
        );
        assert_eq!(coded(&with_null, kinds, None), vec![want[2], None]);
        // Several chunks, one of them a slice starting mid-array.
        let mut strings =
            StringChunked::from_iter_values("s".into(), ["read", "failed"].into_iter());
        let tail =
            StringChunked::from_iter_values("s".into(), ["sent", "delivered", "sent"].into_iter());
        strings.append(&tail.slice(1, 2)).unwrap();
        let got: Vec<Option<u32>> = codes(&strings, &schema::STATUSES, None)
            .u32()
            .unwrap()
            .iter()
            .collect();
        let status = |name: &str| {
            schema::STATUSES
                .values
                .iter()
                .find(|(n, _)| *n == name)
                .map(|(_, c)| *c)
        };
        assert_eq!(
            got,
            vec![
                status("read"),
                status("failed"),
                status("delivered"),
                status("sent")
            ]
        );
    }

    #[test]
    fn a_name_longer_than_a_view_holds_has_no_inline_view() {
        assert!(inline_view("twelve_bytes").is_some());
        assert!(inline_view("thirteen_byte").is_none());
        assert_ne!(inline_view("read"), inline_view("sent"));
    }

    /// The fingerprints are part of the state's format: each is FNV-1a of its row's fields,
    /// each followed by 0x1f, whatever the rows' lengths, their number and chunks.
    #[test]
    fn fingerprints_are_fnv_1a_of_each_rows_fields() {
        fn reference(fields: &[&[u8]]) -> u64 {
            let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
            for field in fields {
                for byte in field.iter().chain(&[0x1f]) {
                    hash ^= u64::from(*byte);
                    hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
                }
            }
            hash
        }
        for rows in [0usize, 1, 3, 4, 5, 9, 23] {
            let text = |i: usize, salt: usize| "x7".repeat((i * 5 + salt) % 13);
            let accounts: Vec<String> = (0..rows).map(|i| format!("acct{}", text(i, 1))).collect();
            let ids: Vec<String> = (0..rows)
                .map(|i| format!("wamid.{i}{}", text(i, 2)))
                .collect();
            let businesses: Vec<String> = (0..rows).map(|i| text(i, 3)).collect();
            let users: Vec<String> = (0..rows).map(|i| format!("{}{i}", text(i, 4))).collect();
            let codes = |k: u32| (0..rows as u32).map(|i| (i * k) % 3).collect::<Vec<u32>>();
            let times: Vec<i64> = (0..rows as i64).map(|i| i * 1_000_000_007 - 5).collect();
            let mut frame = df!(
                schema::ACCOUNT_ID => &accounts,
                schema::MESSAGE_ID => &ids,
                schema::BUSINESS_ID => &businesses,
                schema::USER_ID => &users,
                schema::CHANNEL => codes(1),
                schema::DIRECTION => codes(2),
                schema::KIND => codes(5),
                schema::STATUS => codes(7),
                schema::TIMESTAMP => &times,
            )
            .unwrap();
            if rows > 2 {
                // Two chunks, split off center.
                let (head, tail) = frame.split_at(2);
                frame = head.vstack(&tail).unwrap();
            }
            let ids_want: Vec<u64> = (0..rows)
                .map(|i| reference(&[accounts[i].as_bytes(), ids[i].as_bytes()]))
                .collect();
            assert_eq!(id_hashes(&frame).unwrap(), ids_want, "{rows} rows");
            // The content's fields, then with `event` the status and time too.
            let want = |event: bool| -> Vec<u64> {
                (0..rows)
                    .map(|i| {
                        let mut fields: Vec<Vec<u8>> = vec![
                            codes(1)[i].to_le_bytes().to_vec(),
                            businesses[i].as_bytes().to_vec(),
                            users[i].as_bytes().to_vec(),
                            codes(2)[i].to_le_bytes().to_vec(),
                            codes(5)[i].to_le_bytes().to_vec(),
                        ];
                        if event {
                            fields.push(codes(7)[i].to_le_bytes().to_vec());
                            fields.push(times[i].to_le_bytes().to_vec());
                        }
                        reference(&fields.iter().map(Vec::as_slice).collect::<Vec<_>>())
                    })
                    .collect()
            };
            let (content_want, event_want) = (want(false), want(true));
            let (content, event) = row_hashes(&frame, true).unwrap();
            assert_eq!(content, content_want, "{rows} rows");
            assert_eq!(event, event_want, "{rows} rows");
            assert_eq!(row_hashes(&frame, false).unwrap(), (content_want, vec![]));
        }
    }

    /// Every row of a repeated id is a candidate, first and last rows too, over chunks and
    /// nulls; ids seen once are not (their 64-bit hashes do not collide at this size).
    #[test]
    fn repeated_ids_are_the_rows_of_ids_seen_more_than_once() {
        for rows in [0usize, 1, 2, 100, 10_000] {
            let distinct = (rows * 7 / 10).max(1);
            let ids: Vec<Option<String>> = (0..rows)
                .map(|i| (i % 97 != 5).then(|| format!("wamid.{}", i % distinct)))
                .collect();
            let mut frame = df!(schema::MESSAGE_ID => &ids).unwrap();
            if rows > 3 {
                let (head, tail) = frame.split_at(3);
                frame = head.vstack(&tail).unwrap();
            }
            let mut seen = std::collections::HashMap::new();
            for id in ids.iter().flatten() {
                *seen.entry(id).or_insert(0) += 1;
            }
            let want: Vec<bool> = ids
                .iter()
                .map(|id| id.as_ref().is_some_and(|id| seen[id] > 1))
                .collect();
            assert_eq!(repeated_ids(&frame).unwrap(), want, "{rows} rows");
            if rows == 10_000 {
                assert_eq!(want.iter().filter(|r| **r).count(), 5_876);
            }
        }
    }
}
