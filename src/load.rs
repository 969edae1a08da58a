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

use crate::error::{InputError, Result};
use crate::schema::{self, Enumeration};

/// Internal column names added by the loader.
pub const FILE: &str = "file";
pub const ROW: &str = "row";

/// One input file, as recorded in the manifest.
#[derive(Debug, Clone, serde::Serialize)]
pub struct InputFile {
    /// Path relative to the input root (`/`-separated), or the file name for a single file.
    pub path: String,
    pub bytes: u64,
    pub sha256: String,
    pub rows: u64,
    #[serde(skip)]
    pub full_path: PathBuf,
    /// `key=value` folder names between the input root and the file.
    #[serde(skip)]
    pub hive: BTreeMap<String, String>,
}

/// Counts of what was read, for the manifest and the summary.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct InputStats {
    pub rows_read: u64,
    pub duplicates_dropped: u64,
    pub rows_rejected: u64,
    pub rows_used: u64,
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
    let frame = deduplicate(concat_frames(frames)?)?;
    let rows_used = frame.height() as u64;
    Ok(Messages {
        frame,
        files: source.files,
        stats: InputStats {
            rows_read,
            duplicates_dropped: rows_read - rows_used,
            rows_rejected: 0,
            rows_used,
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
}

/// Finds the Parquet files at `input` and checks every footer.
pub fn open(input: &Path) -> Result<Source> {
    let files = discover(input)?;
    let layouts = files.iter().map(check_footer).collect::<Result<Vec<_>>>()?;
    Ok(Source { files, layouts })
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
                let column = scan(path)
                    .map_err(unreadable)?
                    .slice(offset as i64, length as IdxSize)
                    .select([col(schema::ACCOUNT_ID).cast(DataType::String)])
                    .collect()
                    .map_err(unreadable)?;
                let accounts = column.column(schema::ACCOUNT_ID)?.str()?;
                let mut chunk_counts: PlHashMap<&str, u64> = PlHashMap::new();
                for (position, account) in accounts.iter().enumerate() {
                    match account {
                        Some(account) => *chunk_counts.entry(account).or_default() += 1,
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

    /// Reads the files in path order, in chunks of whole row groups of about `chunk_rows`
    /// rows (at least one chunk per file), validates each chunk and hands it to `f` in the
    /// loader's schema. With a `window`, keeps only rows whose timestamp lies in it and reads
    /// each file as one chunk. Returns the number of rows read.
    pub fn read(
        &mut self,
        window: Option<(i64, i64)>,
        chunk_rows: u64,
        mut f: impl FnMut(DataFrame) -> Result<()>,
    ) -> Result<u64> {
        let mut total = 0;
        for (index, (file, layout)) in self.files.iter_mut().zip(&self.layouts).enumerate() {
            file.rows = layout.rows;
            let slices = match window {
                Some(_) => vec![None],
                None => chunks(&layout.row_groups, chunk_rows)
                    .into_iter()
                    .map(Some)
                    .collect(),
            };
            let mut file_rows = 0;
            for slice in slices {
                let frame = read_file(file, layout, index as u32, window, slice)?;
                file_rows += frame.height() as u64;
                f(frame)?;
            }
            if window.is_none() && file_rows != layout.rows {
                return Err(InputError::Unreadable {
                    path: file.full_path.clone(),
                    reason: format!(
                        "the footer lists {} rows but {file_rows} were read",
                        layout.rows
                    ),
                }
                .into());
            }
            total += file_rows;
        }
        Ok(total)
    }
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

/// Rows of `account_id` counted at a time.
const COUNT_CHUNK_ROWS: u64 = 4_000_000;

/// A lazy scan of one file with the row index as [`ROW`].
fn scan(path: &Path) -> PolarsResult<LazyFrame> {
    let args = ScanArgsParquet {
        // convbill reads `key=value` folders itself, and paths are never patterns.
        hive_options: HiveOptions {
            enabled: Some(false),
            ..Default::default()
        },
        glob: false,
        row_index: Some(RowIndex {
            name: ROW.into(),
            offset: 0,
        }),
        ..Default::default()
    };
    LazyFrame::scan_parquet(PlRefPath::new(path.to_string_lossy().as_ref()), args)
}

/// Lists the Parquet files at `input`, sorted by path so that runs are repeatable.
/// Files and folders whose names start with `.` or `_` (`_SUCCESS`, `.tmp`) are skipped.
fn discover(input: &Path) -> Result<Vec<InputFile>> {
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
            meta.len(),
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
    bytes: u64,
    hive: BTreeMap<String, String>,
) -> InputFile {
    InputFile {
        path,
        bytes,
        sha256: String::new(),
        rows: 0,
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
            found.push(input_file(path.clone(), parts.join("/"), meta.len(), hive));
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

/// Reads one file (the rows in `window`, or the `(offset, length)` slice, if given) into
/// the loader's output schema and validates its values.
fn read_file(
    file: &InputFile,
    layout: &Layout,
    index: u32,
    window: Option<(i64, i64)>,
    slice: Option<(u64, u64)>,
) -> Result<DataFrame> {
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
    if let Some((start, end)) = window {
        let dtype = scan
            .collect_schema()
            .map_err(unreadable)?
            .get(schema::TIMESTAMP)
            .cloned()
            .unwrap_or(DataType::Null);
        let factor = match dtype {
            DataType::Datetime(TimeUnit::Milliseconds, _) => 1_000_000,
            DataType::Datetime(TimeUnit::Microseconds, _) => 1_000,
            _ => 1,
        };
        // Window bounds are whole days, so they divide exactly into any unit.
        let bound = |ns: i64| lit(ns / factor).cast(dtype.clone());
        scan = scan.filter(
            col(schema::TIMESTAMP)
                .gt_eq(bound(start))
                .and(col(schema::TIMESTAMP).lt(bound(end))),
        );
    }
    let raw = scan.collect().map_err(unreadable)?;
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
    columns.push(timestamps_ns(path, raw.column(schema::TIMESTAMP)?, &rows)?);
    columns.push(Column::new_scalar(FILE.into(), Scalar::from(index), height));
    columns.push(rows);
    let strings = DataFrame::new(height, columns)?;

    for column in schema::REQUIRED_COLUMNS {
        let nulls = strings.column(column)?.is_null();
        if let Some(row) = first_true(&strings, &nulls)? {
            return Err(InputError::NullValue {
                path: path.clone(),
                column: column.to_string(),
                row,
            }
            .into());
        }
    }
    let coded = encode_enumerations(strings)?;
    check_enumerations(path, &coded)?;
    Ok(coded.drop_many(["channel_raw", "direction_raw", "kind_raw", "status_raw"]))
}

/// Converts any timestamp column to Int64 nanoseconds since the epoch, UTC. Zoned timestamps
/// are stored as UTC instants already; naive ones are taken as UTC.
/// `rows` names the file rows in errors.
fn timestamps_ns(path: &Path, column: &Column, rows: &Column) -> Result<Column> {
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
    let mut out: Vec<Option<i64>> = Vec::with_capacity(values.len());
    for (row, value) in values.iter().enumerate() {
        match value {
            None => out.push(None),
            Some(v) => match v.checked_mul(factor) {
                Some(ns) => out.push(Some(ns)),
                None => {
                    return Err(InputError::TimestampOutOfRange {
                        path: path.to_path_buf(),
                        row: rows.u64()?.get(row).unwrap_or(row as u64),
                    }
                    .into())
                }
            },
        }
    }
    Ok(Column::new(schema::TIMESTAMP.into(), out))
}

/// The file row number ([`ROW`] in `frame`) of the first `true` in `mask`.
fn first_true(frame: &DataFrame, mask: &BooleanChunked) -> Result<Option<u64>> {
    let Some(position) = mask.iter().position(|v| v == Some(true)) else {
        return Ok(None);
    };
    Ok(frame.column(ROW)?.u64()?.get(position))
}

/// `when(col == "a").then(code_a).otherwise(when(...)...)`: string to code; null when unknown
/// (or `default` when the value is null).
fn code_expr(e: &Enumeration, default: Option<schema::Code>) -> Expr {
    let source = col(e.column);
    let fallback = match default {
        Some(code) => when(source.clone().is_null())
            .then(code_lit(code))
            .otherwise(lit(NULL).cast(DataType::UInt32)),
        None => lit(NULL).cast(DataType::UInt32),
    };
    e.values
        .iter()
        .rev()
        .fold(fallback, |otherwise, (name, code)| {
            when(source.clone().eq(lit(*name)))
                .then(code_lit(*code))
                .otherwise(otherwise)
        })
        .alias(e.column)
}

/// `channel` strings → codes (null when unknown), for frames convbill wrote itself.
pub(crate) fn encode_channel() -> Expr {
    code_expr(&schema::CHANNELS, None)
}

/// A typed `UInt32` literal (plain integer literals are untyped in polars).
fn code_lit(code: schema::Code) -> Expr {
    lit(code).cast(DataType::UInt32)
}

/// Replaces the enumerated string columns by their codes, keeping the strings as `*_raw`
/// until they have been checked.
fn encode_enumerations(frame: DataFrame) -> Result<DataFrame> {
    let raw = |c: &str| col(c).alias(format!("{c}_raw"));
    Ok(frame
        .lazy()
        .with_columns([
            raw(schema::CHANNEL),
            raw(schema::DIRECTION),
            raw(schema::KIND),
            raw(schema::STATUS),
        ])
        .with_columns([
            code_expr(&schema::CHANNELS, None),
            code_expr(&schema::DIRECTIONS, None),
            code_expr(&schema::KINDS, Some(schema::KIND_MESSAGE)),
            code_expr(&schema::STATUSES, Some(schema::STATUS_DELIVERED)),
        ])
        .collect()?)
}

/// Fails on the first unknown enumerated value, and on a `kind` that its direction does not allow.
fn check_enumerations(path: &Path, coded: &DataFrame) -> Result<()> {
    for e in [
        &schema::CHANNELS,
        &schema::DIRECTIONS,
        &schema::KINDS,
        &schema::STATUSES,
    ] {
        let raw_name = format!("{}_raw", e.column);
        let raw = coded.column(&raw_name)?.str()?;
        let unknown = &coded.column(e.column)?.is_null() & &raw.is_not_null();
        let position = unknown.iter().position(|v| v == Some(true));
        if let Some(position) = position {
            return Err(InputError::UnknownValue {
                path: path.to_path_buf(),
                column: e.column.to_string(),
                row: first_true(coded, &unknown)?.unwrap_or(position as u64),
                value: raw.get(position).unwrap_or_default().to_string(),
                accepted: e.accepted(),
            }
            .into());
        }
    }
    let direction = coded.column(schema::DIRECTION)?.u32()?;
    let kind = coded.column(schema::KIND)?.u32()?;
    let inbound = direction.equal(schema::INBOUND);
    let bad_inbound = &inbound & &kind.equal(schema::KIND_TEMPLATE);
    let bad_outbound =
        &!&inbound & &(kind.equal(schema::KIND_CTA_CLICK) | kind.equal(schema::KIND_AD_CLICK));
    for (mask, direction, accepted) in [
        (
            bad_inbound,
            "inbound",
            "`message`, `cta_click` or `ad_click`",
        ),
        (bad_outbound, "outbound", "`message` or `template`"),
    ] {
        let position = mask.iter().position(|v| v == Some(true));
        if let Some(position) = position {
            let raw = coded.column("kind_raw")?.str()?;
            return Err(InputError::KindForDirection {
                path: path.to_path_buf(),
                column: schema::KIND.into(),
                row: first_true(coded, &mask)?.unwrap_or(position as u64),
                value: raw.get(position).unwrap_or_default().to_string(),
                direction,
                accepted,
            }
            .into());
        }
    }
    Ok(())
}

/// Keeps one row per (`account_id`, `message_id`): the earliest `timestamp`, and among equal
/// timestamps the first read (files in path order, rows in file order). Rows come out in no
/// particular order.
///
/// Duplicates are rare, so one hash pass over `message_id` alone first sets aside the rows
/// whose id occurs once (they are kept as they are); only the rest are sorted and compared.
pub(crate) fn deduplicate(frame: DataFrame) -> Result<DataFrame> {
    let repeated = repeated_ids(&frame)?;
    if !repeated.any() {
        return Ok(frame);
    }
    let once = frame.filter(&!&repeated)?;
    let kept = frame
        .filter(&repeated)?
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
        .collect()?;
    concat_frames(vec![once, kept])
}

/// `true` for each row whose `message_id` occurs more than once in `frame`. One pass: the
/// table remembers each id's first row, marked when a second one comes.
fn repeated_ids(frame: &DataFrame) -> Result<BooleanChunked> {
    let ids = frame.column(schema::MESSAGE_ID)?.str()?;
    let mut first_row: PlHashMap<&str, usize> = PlHashMap::with_capacity(ids.len());
    let mut repeated = vec![false; ids.len()];
    for (row, id) in ids.iter().enumerate() {
        let Some(id) = id else { continue };
        let first = *first_row.entry(id).or_insert(row);
        if first != row {
            repeated[first] = true;
            repeated[row] = true;
        }
    }
    Ok(BooleanChunked::from_slice(PlSmallStr::EMPTY, &repeated))
}
