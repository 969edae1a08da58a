//! One night: the validated rows of the run's days and the previous night's state in; the
//! night's closed sessions, violations and state out, written into the run's staging folder.
//!
//! The state of night D (`state/date=D/`) carries raw events, not derived facts: for every
//! conversation key with a session or window still open at midnight, the few events the next
//! night needs to derive the same sessions again ([`sessions::NightRows::carry`]):
//! - a WhatsApp key with an open session: the message that opened it, the last customer
//!   message at or before it (it decides the initiation) and the key's last customer message;
//! - a WhatsApp key whose service window alone is open: its last customer message;
//! - a Messenger or Instagram key with an open session: its opening and last customer message.
//!
//! The opening message also stands for the session's messages not carried: their counts, by
//! direction, are its [`sessions::CARRIED_INBOUND`] and [`sessions::CARRIED_OUTBOUND`].
//!
//! Beside them: the message ids the night used, with a 64-bit fingerprint of each
//! ([`load::id_hashes`]; duplicates of the next [`super::DEDUP_NIGHTS`] nights are recognised
//! by them, the fingerprints compared first and the ids only where one matches), the
//! invoice-line counts of the sessions it closed, the sessions still open, the rate card's
//! fingerprint, and the night's counts (`night.json`). Every file's rows come in a fixed order
//! (events in event order, sessions by key and start), so a rerun writes the same bytes.
//!
//! A night works in groups of whole accounts, like a whole run ([`crate::partition`]): each
//! group reads its rows of the day, and its accounts' part of the carried events and of the
//! seen ids (state files are in account order, so a group reads only its row groups). The
//! groups' parts are appended in account order, cut into row groups of fixed size: a night in
//! groups writes the same bytes as in one piece.

use chrono::NaiveDate;
use polars::prelude::*;
use serde::{Deserialize, Serialize};

use super::{night_dir, read_parquet, start_ns, Tree, REJECTS_DIR, SESSIONS_DIR, VIOLATIONS_DIR};
use crate::error::{Error, InputError, Result};
use crate::load;
use crate::rates::RateCard;
use crate::rating;
use crate::schema::{self, DAY_NS};
use crate::sessions::{self, timed};
use crate::write::{self, STATE_DIR};

pub(crate) const CARRIED: &str = "carried.parquet";
pub(crate) const SEEN: &str = "seen.parquet";
pub(crate) const LINES: &str = "lines.parquet";
pub(crate) const OPEN: &str = "open_sessions.parquet";
pub(crate) const STATS: &str = "night.json";
/// What the rate card a night was rated by says of the days up to the day after it
/// ([`crate::rates::RateCard::history_fingerprint`]).
pub(crate) const CARD: &str = "rate_card.fingerprint";
pub(crate) const PART: &str = "part-0.parquet";

/// The tables a night writes a group at a time, in account order: (`dir`, file) for
/// [`table`], `dir` being the output folder's folder of the table (`None`: the night's state).
pub(crate) const TABLES: [(Option<&str>, &str); 5] = [
    (Some(SESSIONS_DIR), PART),
    (Some(VIOLATIONS_DIR), PART),
    (None, CARRIED),
    (None, SEEN),
    (None, OPEN),
];

/// [`TABLES`] of Meta's pricing, with `[meta]`.
pub(crate) const META_TABLES: [(Option<&str>, &str); 5] = [
    (Some(super::meta::UNITS_DIR), PART),
    (None, super::meta::OPEN_UNITS),
    (None, super::meta::KEYS),
    (None, super::meta::SERVICE_COUNTS),
    (None, super::meta::CHARGED_COUNTS),
];

/// The writer of night `night`'s table (`dir`, `file`) under `root`, set as the night writes it.
pub(crate) fn table(
    root: &std::path::Path,
    night: NaiveDate,
    dir: Option<&str>,
    file: &str,
) -> Result<write::TableWriter> {
    let name = night_dir(night);
    let folder = match dir {
        Some(dir) => root.join(dir).join(&name),
        None => root.join(STATE_DIR).join(&name),
    };
    let table = write::TableWriter::create(&folder, file.to_string())?;
    Ok(match (dir, file) {
        (None, CARRIED) => table
            .with_compression(ParquetCompression::Lz4Raw)
            .without_statistics()
            .without_checksum(),
        (None, SEEN) => table.without_statistics().without_checksum(),
        (Some(super::meta::UNITS_DIR), _) => table.without_statistics(),
        _ => table,
    })
}

/// What one night did. Every row of the night's day is counted once: `rows_read =
/// rows_rejected + duplicates_within_night + duplicates_of_earlier_nights + rows_used`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NightStats {
    pub date: NaiveDate,
    /// The input files that hold messages of the night's day, with their checksums.
    pub input_files: Vec<InputFileRecord>,
    /// Rows of the input whose timestamp falls on the night's day.
    pub rows_read: u64,
    /// `--rejects`: rows of the day set aside (in `rejects/date=D/`), by reason.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub rejected_by_reason: std::collections::BTreeMap<String, u64>,
    #[serde(default)]
    pub rows_rejected: u64,
    /// Rows dropped as copies of a message logged earlier the same night.
    pub duplicates_within_night: u64,
    /// Rows dropped as copies of a message an earlier night used.
    pub duplicates_of_earlier_nights: u64,
    pub rows_used: u64,
    /// Events carried in from the night before, and out to the next.
    pub carried_in: u64,
    pub carried_out: u64,
    pub sessions_closed: u64,
    pub sessions_open: u64,
    /// With `[meta]`: Meta's conversations still open after the night.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub meta_units_open: Option<u64>,
    pub violations: u64,
    /// The sessions the night closed and the violations of its day, per period, UTC day and
    /// series: the month-to-date report's charts add up the nights'.
    #[serde(default)]
    pub closed_tally: crate::report::TallyRows,
    /// The sessions still open after the night, likewise (the charts add the last night's).
    #[serde(default)]
    pub open_tally: crate::report::TallyRows,
}

/// An input file as a night records it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct InputFileRecord {
    pub path: String,
    pub bytes: u64,
    pub sha256: String,
    /// All its rows, of every day.
    pub rows: u64,
}

impl InputFileRecord {
    pub fn of(file: &load::InputFile) -> Self {
        InputFileRecord {
            path: file.path.clone(),
            bytes: file.bytes,
            sha256: file.sha256.clone(),
            rows: file.rows,
        }
    }
}

impl NightStats {
    /// What night `date` recorded, from its state folder.
    pub fn read(dir: &std::path::Path) -> Result<NightStats> {
        write::read_json(&dir.join(STATS))
    }

    pub fn duplicates(&self) -> u64 {
        self.duplicates_within_night + self.duplicates_of_earlier_nights
    }
}

/// The accounts of one group of a night: `account_id` from `from` (included) up to `until`
/// (excluded), either end open when `None`. A night's groups cover every account, so the
/// carried state and the seen ids of accounts without messages that night have a group too.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Accounts {
    pub from: Option<String>,
    pub until: Option<String>,
}

impl Accounts {
    /// The ranges of a partition plan's groups, in order: each from its first account to the
    /// next group's first.
    pub fn of_plan(plan: &crate::partition::Plan) -> Vec<Accounts> {
        let firsts: Vec<Option<String>> = plan.groups.iter().map(|g| g.first().cloned()).collect();
        (0..firsts.len())
            .map(|g| Accounts {
                from: if g == 0 { None } else { firsts[g].clone() },
                until: firsts.get(g + 1).cloned().flatten(),
            })
            .collect()
    }

    fn filter(&self) -> Option<Expr> {
        let account = || col(schema::ACCOUNT_ID);
        let from = self.from.as_ref().map(|a| account().gt_eq(lit(a.as_str())));
        let until = self.until.as_ref().map(|a| account().lt(lit(a.as_str())));
        match (from, until) {
            (Some(from), Some(until)) => Some(from.and(until)),
            (from, until) => from.or(until),
        }
    }
}

impl Accounts {
    fn contains(&self, account: &str) -> bool {
        self.from.as_deref().is_none_or(|from| account >= from)
            && self.until.as_deref().is_none_or(|until| account < until)
    }
}

/// `state/date=D/rows_by_account.json`: for each of the night's [`CARRIED`] and [`SEEN`]
/// files, its accounts in file order with their rows. The files are in account order and
/// written without column statistics (the min and max of long strings cost more to compute than
/// they save), so a group reads its accounts' rows as one range found here.
pub(crate) const ROWS_BY_ACCOUNT: &str = "rows_by_account.json";

type AccountRows = Vec<(String, u64)>;

/// Adds the accounts of `frame` (in account order) and their rows to `index`.
fn count_account_rows(index: &mut AccountRows, frame: &DataFrame) -> Result<()> {
    let accounts = frame.column(schema::ACCOUNT_ID)?.str()?;
    for account in accounts.iter() {
        let account = account.unwrap_or_default();
        match index.last_mut() {
            Some((last, rows)) if last == account => *rows += 1,
            _ => index.push((account.to_string(), 1)),
        }
    }
    Ok(())
}

/// The rows of the state file `path` whose account is among `accounts`: one range of rows by
/// [`ROWS_BY_ACCOUNT`] beside it; by a filter where a state has none.
pub(crate) fn read_accounts(path: &std::path::Path, accounts: &Accounts) -> Result<DataFrame> {
    read_columns_of_accounts(path, accounts, None)
}

/// [`read_accounts`], only `columns` (all when `None`).
fn read_columns_of_accounts(
    path: &std::path::Path,
    accounts: &Accounts,
    columns: Option<&[&str]>,
) -> Result<DataFrame> {
    let project = |scan: LazyFrame| match columns {
        Some(columns) => scan.select(columns.iter().map(|c| col(*c)).collect::<Vec<_>>()),
        None => scan,
    };
    if !path.is_file() {
        // Name the missing file as a plain read would.
        return read_parquet(path);
    }
    // `state/date=D/` is a folder name, not a column.
    let scan = load::scan_file(path, None)?;
    let Some(filter) = accounts.filter() else {
        return Ok(project(scan).collect()?);
    };
    let index_path = path.with_file_name(ROWS_BY_ACCOUNT);
    let file = path
        .file_name()
        .and_then(|f| f.to_str())
        .unwrap_or_default();
    let index =
        write::read_json_if_exists::<std::collections::BTreeMap<String, AccountRows>>(&index_path)?
            .and_then(|mut by_file| by_file.remove(file));
    let Some(index) = index else {
        return Ok(project(scan.filter(filter)).collect()?);
    };
    let mut offset = 0;
    let mut rows = 0;
    for (account, n) in &index {
        match accounts.contains(account) {
            true => rows += n,
            false if rows == 0 => offset += n,
            false => break,
        }
    }
    Ok(project(scan.slice(offset as i64, rows as IdxSize)).collect()?)
}

/// The fingerprints ([`load::id_hashes`]) of the seen ids of `path` among `accounts`, in the
/// order [`read_accounts`] gives their rows; computed from the ids where a state has none.
fn seen_id_hashes(path: &std::path::Path, accounts: &Accounts) -> Result<Vec<u64>> {
    let has_hashes = path.is_file()
        && load::scan_file(path, None)?
            .collect_schema()?
            .contains(load::ID_HASH);
    if !has_hashes {
        return load::id_hashes(&read_accounts(path, accounts)?);
    }
    let hashes = read_columns_of_accounts(path, accounts, Some(&[load::ID_HASH]))?;
    Ok(hashes
        .column(load::ID_HASH)?
        .u64()?
        .into_no_null_iter()
        .collect())
}

/// The message ids the nights from `first` up to (not including) `until` used, with their
/// fingerprints ([`load::CONTENT`], [`load::EVENT`]) and the night as `night` (text); `None`
/// when none of those nights has run. With `among`, only the ids whose [`load::id_hashes`] is
/// one of these (a night none of whose ids is, is not read further; `None` when none is).
pub(crate) fn billed_ids(
    tree: &Tree,
    first: NaiveDate,
    until: NaiveDate,
    accounts: &Accounts,
    among: Option<&PlHashSet<u64>>,
) -> Result<Option<DataFrame>> {
    let mut frames = Vec::new();
    for night in first.iter_days().take_while(|d| *d < until) {
        if let Some(dir) = tree.state(night) {
            let path = dir.join(SEEN);
            let hits = match among {
                None => None,
                Some(among) => {
                    let hits: Vec<bool> = seen_id_hashes(&path, accounts)?
                        .iter()
                        .map(|hash| among.contains(hash))
                        .collect();
                    if !hits.contains(&true) {
                        continue;
                    }
                    Some(BooleanChunked::from_slice(PlSmallStr::EMPTY, &hits))
                }
            };
            let mut seen = read_accounts(&path, accounts)?;
            if let Some(hits) = hits {
                seen = seen.filter(&hits)?;
            }
            // Nights run before fingerprints were kept have none: nothing to compare.
            for name in [load::CONTENT, load::EVENT] {
                if seen.column(name).is_err() {
                    seen.with_column(Column::full_null(
                        name.into(),
                        seen.height(),
                        &DataType::UInt64,
                    ))?;
                }
            }
            frames.push(
                seen.lazy()
                    .select([
                        col(schema::ACCOUNT_ID),
                        col(schema::MESSAGE_ID),
                        col(load::CONTENT),
                        col(load::EVENT),
                    ])
                    .with_column(lit(night.to_string()).alias(NIGHT)),
            );
        }
    }
    if frames.is_empty() {
        return Ok(None);
    }
    Ok(Some(concat(frames, UnionArgs::default())?.collect()?))
}

const NIGHT: &str = "night";

/// Drops the rows of `day` (the night's rows, without duplicates among them) whose message an
/// earlier night used (`billed`, from [`billed_ids`]). A copy that does not repeat the same
/// event stops the run, naming the night and the file and row; with `keep_rejects` such copies
/// are set aside instead ([`load::REJECT_COLUMNS`], reason `conflicting_duplicate`).
fn drop_billed(
    day: DataFrame,
    billed: DataFrame,
    paths: &[String],
    keep_rejects: bool,
) -> Result<(DataFrame, Option<DataFrame>)> {
    let ids = || [col(schema::ACCOUNT_ID), col(schema::MESSAGE_ID)];
    let mut day = day;
    day.with_column(load::content_hash(&day)?)?;
    let joined = day
        .lazy()
        .join(
            billed.lazy().select([
                col(schema::ACCOUNT_ID),
                col(schema::MESSAGE_ID),
                col(load::CONTENT).alias("billed_content"),
                col(NIGHT),
            ]),
            ids(),
            ids(),
            JoinArgs::new(JoinType::Left),
        )
        .collect()?;
    let conflicts = joined
        .clone()
        .lazy()
        .filter(
            col("billed_content")
                .is_not_null()
                .and(col("billed_content").neq(col(load::CONTENT))),
        )
        .sort([load::FILE, load::ROW], SortMultipleOptions::default())
        .collect()?;
    let mut rejected = None;
    if conflicts.height() > 0 && keep_rejects {
        let rows = conflicts.drop_many(["billed_content", NIGHT, load::CONTENT]);
        rejected = Some(load::as_rejects(
            rows,
            load::reason::CONFLICTING_DUPLICATE,
            "one of channel, business_id, user_id, direction, kind",
        )?);
    } else if conflicts.height() > 0 {
        let text = |name: &str| -> Result<String> {
            Ok(conflicts.column(name)?.get(0)?.str_value().to_string())
        };
        let file = conflicts.column(load::FILE)?.u32()?.get(0).unwrap_or(0);
        let row = conflicts.column(load::ROW)?.u64()?.get(0).unwrap_or(0);
        let file = paths.get(file as usize).cloned().unwrap_or_default();
        return Err(InputError::ConflictsWithEarlierNight {
            account_id: text(schema::ACCOUNT_ID)?,
            message_id: text(schema::MESSAGE_ID)?,
            night: text(NIGHT)?,
            place: format!("`{file}` row {row}"),
        }
        .into());
    }
    let kept = joined
        .lazy()
        .filter(col(NIGHT).is_null())
        .drop(by_name(
            ["billed_content", NIGHT, load::CONTENT],
            true,
            false,
        ))
        .collect()?;
    Ok((kept, rejected))
}

/// [`drop_billed`] comparing only the rows of `day` whose fingerprint (`day_ids`, from
/// [`load::id_hashes`]) one of `billed` shares; the rows kept keep their order, and the
/// fingerprints come back with them.
fn drop_billed_among(
    day: DataFrame,
    day_ids: Vec<u64>,
    billed: DataFrame,
    paths: &[String],
    keep_rejects: bool,
) -> Result<(DataFrame, Vec<u64>, Option<DataFrame>)> {
    const DAY_ROW: &str = "day_row";
    let billed_ids: PlHashSet<u64> = load::id_hashes(&billed)?.into_iter().collect();
    let candidates: Vec<IdxSize> = (0..day_ids.len())
        .filter(|&row| billed_ids.contains(&day_ids[row]))
        .map(|row| row as IdxSize)
        .collect();
    if candidates.is_empty() {
        return Ok((day, day_ids, None));
    }
    let rows = IdxCa::from_vec(DAY_ROW.into(), candidates);
    let mut compared = day.take(&rows)?;
    compared.with_column(rows.clone().into_column())?;
    let (kept, rejected) = drop_billed(compared, billed, paths, keep_rejects)?;
    let mut keep = vec![true; day.height()];
    for row in rows.into_no_null_iter() {
        keep[row as usize] = false;
    }
    for row in kept.column(DAY_ROW)?.idx()?.into_no_null_iter() {
        keep[row as usize] = true;
    }
    if !keep.contains(&false) {
        return Ok((day, day_ids, rejected));
    }
    let kept_ids = day_ids
        .iter()
        .zip(&keep)
        .filter(|(_, k)| **k)
        .map(|(id, _)| *id);
    Ok((
        day.filter(&BooleanChunked::from_slice(PlSmallStr::EMPTY, &keep))?,
        kept_ids.collect(),
        rejected,
    ))
}

/// The carried events, then the night's rows (`day`, their fingerprints `day_ids` from
/// [`load::id_hashes`]), without copies as [`load::deduplicate`] drops them, and what the
/// carried events kept stand for (`counts`, one per carried event). Neither side repeats an
/// id: only the rows whose fingerprint the other side shares are compared.
fn with_carried(
    carried: DataFrame,
    counts: Vec<sessions::Carried>,
    day: DataFrame,
    day_ids: &[u64],
    paths: &[String],
) -> Result<(DataFrame, Vec<sessions::Carried>)> {
    let carried_ids: Vec<u64> = load::id_hashes(&carried)?;
    let in_carried: PlHashSet<u64> = carried_ids.iter().copied().collect();
    let shared: PlHashSet<u64> = day_ids
        .iter()
        .copied()
        .filter(|id| in_carried.contains(id))
        .collect();
    let events = concat([carried.lazy(), day.lazy()], UnionArgs::default())?.collect()?;
    if shared.is_empty() {
        return Ok((events, counts));
    }
    let rows: Vec<IdxSize> = carried_ids
        .iter()
        .chain(day_ids)
        .enumerate()
        .filter(|(_, id)| shared.contains(*id))
        .map(|(row, _)| row as IdxSize)
        .collect();
    let rows = IdxCa::from_vec(PlSmallStr::EMPTY, rows);
    let (Some(kept), _) = load::duplicates_checked(&events.take(&rows)?, paths, false)? else {
        return Ok((events, counts));
    };
    let mut keep = vec![true; events.height()];
    for (row, kept) in rows.into_no_null_iter().zip(kept) {
        keep[row as usize] = kept;
    }
    let counts = counts.into_iter().zip(&keep).filter(|(_, k)| **k);
    Ok((
        events.filter(&BooleanChunked::from_slice(PlSmallStr::EMPTY, &keep))?,
        counts.map(|(c, _)| c).collect(),
    ))
}

/// Splits the columns [`sessions::CARRIED_INBOUND`] and [`sessions::CARRIED_OUTBOUND`] off
/// carried events. States written before carried events stood for others have none: each
/// event stands for itself.
///
/// States written before the loader read `category` have none: their events get none, and
/// the loader's column order.
fn split_counts(carried: DataFrame) -> Result<(DataFrame, Vec<sessions::Carried>)> {
    let mut carried = carried;
    if carried.column(schema::CATEGORY).is_err() {
        carried.with_column(Column::new_scalar(
            schema::CATEGORY.into(),
            Scalar::from(schema::CATEGORY_NONE),
            carried.height(),
        ))?;
        let mut order: Vec<PlSmallStr> = load::empty_rows().get_column_names_owned();
        order.extend(
            carried
                .get_column_names()
                .into_iter()
                .filter(|c| !order.contains(c))
                .cloned()
                .collect::<Vec<_>>(),
        );
        carried = carried.select(order)?;
    }
    let names = [sessions::CARRIED_INBOUND, sessions::CARRIED_OUTBOUND];
    if carried.column(names[0]).is_err() {
        let n = carried.height();
        return Ok((carried, vec![(0, 0); n]));
    }
    let column =
        |name: &str| -> Result<Vec<u32>> { Ok(sessions::values(carried.column(name)?.u32()?, 0)) };
    let counts = column(names[0])?
        .into_iter()
        .zip(column(names[1])?)
        .collect();
    Ok((carried.drop_many(names), counts))
}

/// What one group of a night gives: its part of every file the night writes, and its counts.
pub(crate) struct GroupNight {
    closed: DataFrame,
    violations: DataFrame,
    carried: DataFrame,
    seen: DataFrame,
    lines: DataFrame,
    open: DataFrame,
    open_summary: OpenSummary,
    /// `--rejects`: rows of conflicting duplicates ([`load::REJECT_COLUMNS`]).
    conflicting: Option<DataFrame>,
    /// Rows of the night's day that passed the checks.
    checked: u64,
    duplicates_within_night: u64,
    rows_used: u64,
    carried_in: u64,
    /// A rerun night: the messages the night billed before that the input no longer holds, and
    /// the first of them (account, message id).
    missing: Option<(u64, String, String)>,
    /// Meta's pricing, when the card has `[meta]`.
    meta: Option<super::meta::GroupMeta>,
}

/// What the month-to-date of a night needs of its open sessions ([`OPEN`]), rated: their
/// counted lines ([`rating::lines_of`]) and the unanswered ones ([`rating::unanswered`]).
/// Kept from the night's groups, so that the run that computed the night need not read its
/// open sessions back and rate them again.
#[derive(Debug, Clone)]
pub(crate) struct OpenSummary {
    pub lines: DataFrame,
    pub unanswered: DataFrame,
}

impl OpenSummary {
    /// The summaries of a night's groups (disjoint accounts) as one, in group order.
    fn of_groups(groups: Vec<OpenSummary>) -> Result<OpenSummary> {
        let mut lines = Vec::with_capacity(groups.len());
        let mut unanswered = Vec::with_capacity(groups.len());
        for group in groups {
            lines.push(group.lines);
            unanswered.push(group.unanswered);
        }
        Ok(OpenSummary {
            lines: load::concat_frames(lines)?,
            unanswered: load::concat_frames(unanswered)?,
        })
    }
}

/// What every group of a night shares.
pub(crate) struct NightInput<'a> {
    pub night: NaiveDate,
    /// The paths of the `file` column's indexes.
    pub paths: &'a [String],
    pub keep_rejects: bool,
    pub tree: &'a Tree<'a>,
    pub card: &'a RateCard,
    /// The night ran before this run: its old state is checked against the input.
    pub rerun: bool,
}

/// Computes one group of accounts of a night from its rows of the night's day (validated, not
/// deduplicated) and the state of the night before.
pub(crate) fn compute_group(
    input: &NightInput,
    accounts: &Accounts,
    rows: DataFrame,
) -> Result<GroupNight> {
    let NightInput {
        night,
        paths,
        keep_rejects,
        tree,
        card,
        rerun,
    } = *input;
    let (start, end) = (start_ns(night), start_ns(night) + DAY_NS);
    let missing = match rerun {
        true => missing_ids(
            &tree.out.join(STATE_DIR).join(night_dir(night)),
            &rows,
            accounts,
        )?,
        false => None,
    };
    let checked = rows.height() as u64;
    // Later steps read the rows' strings in order and gather them: from one chunk.
    let mut rows = rows;
    rows.rechunk_mut();
    // A conflicting duplicate within the night stops the run, naming both rows, or with
    // `--rejects` is set aside.
    let (day, conflicting) = timed("dropped the night's duplicates", || {
        load::deduplicate_checked(rows, paths, keep_rejects)
    })?;
    let conflicting_rows = conflicting.as_ref().map_or(0, |c| c.height() as u64);
    let duplicates_within_night = checked - conflicting_rows - day.height() as u64;
    let earlier = night - chrono::Days::new(super::DEDUP_NIGHTS);
    // Only the rows whose fingerprint an earlier night's id shares can be copies: the others
    // are not compared. A first night has none to compare with.
    let first_night = earlier
        .iter_days()
        .take_while(|d| *d < night)
        .all(|d| tree.state(d).is_none());
    let day_ids = match first_night {
        true => Vec::new(),
        false => load::id_hashes(&day)?,
    };
    let (day, day_ids, conflicting) = match timed("read earlier nights' ids", || {
        if first_night {
            return Ok(None);
        }
        let among: PlHashSet<u64> = day_ids.iter().copied().collect();
        billed_ids(tree, earlier, night, accounts, Some(&among))
    })? {
        None => (day, day_ids, conflicting),
        Some(billed) => {
            let (day, day_ids, with_earlier) =
                timed("dropped copies of earlier nights' messages", || {
                    drop_billed_among(day, day_ids, billed, paths, keep_rejects)
                })?;
            let conflicting = match (conflicting, with_earlier) {
                (Some(within), Some(with_earlier)) => {
                    Some(load::rejects_of(vec![within, with_earlier])?)
                }
                (within, with_earlier) => within.or(with_earlier),
            };
            (day, day_ids, conflicting)
        }
    };

    let carried = match tree.state(night - chrono::Days::new(1)) {
        Some(dir) => Some(timed("read the carried events", || {
            read_accounts(&dir.join(CARRIED), accounts)
        })?),
        None => None,
    };
    let carried_in = carried.as_ref().map_or(0, |c| c.height() as u64);
    // A copy of a carried event (older than the nights whose ids are kept) is dropped here.
    let (events, counts) = match carried {
        Some(carried) => timed("dropped copies of carried events", || {
            let (carried, counts) = split_counts(carried)?;
            with_carried(carried, counts, day, &day_ids, paths)
        })?,
        None => (day, Vec::new()),
    };
    let rows_used = events.height() as u64 - carried_in;
    let (derived, rows, meta_events) =
        sessions::derive_night(&events, &counts, end, card.meta.is_some().then_some(start))?;
    let meta = match (meta_events, &card.meta) {
        (Some(meta_events), Some(meta)) => Some(timed("priced by Meta", || {
            super::meta::compute_group(tree, night, accounts, &events, meta_events, meta, paths)
        })?),
        _ => None,
    };
    let rated = timed("rated sessions", || {
        rating::rate_sessions(derived.sessions, card)
    })?;

    // Sessions and violations come in their fixed order (key, then time) and keep it; the
    // counted lines are sorted by `lines_of`; carried events and seen ids are in event order:
    // every file is the same bytes on a rerun, and the same in groups or in one piece.
    let ends = || col("ends_at").to_physical();
    let (closed, lines, open, open_summary) = timed("split closed and open sessions", || {
        let closed = rated
            .clone()
            .lazy()
            .filter(ends().gt(lit(start)).and(ends().lt_eq(lit(end))))
            .collect()?;
        let lines = rating::lines_of(&closed)?;
        let closed = closed.select(rating::RATED_SESSION_COLUMNS)?;
        let open = rated.lazy().filter(ends().gt(lit(end))).collect()?;
        let open_summary = OpenSummary {
            lines: rating::lines_of(&open)?,
            unanswered: rating::unanswered(&open)?,
        };
        let open = open.select(rating::RATED_SESSION_COLUMNS)?;
        Ok::<_, Error>((closed, lines, open, open_summary))
    })?;
    let violations = rating::rate_violations(derived.violations, card)?
        .lazy()
        .filter(col("timestamp").to_physical().gt_eq(lit(start)))
        .collect()?;
    let carried = timed("took the carried events", || {
        let mut carried = events.take(&rows.carry)?;
        // `file` is no file of a later run.
        carried.with_column(Column::new_scalar(
            load::FILE.into(),
            Scalar::from(load::EARLIER_NIGHT),
            carried.height(),
        ))?;
        let (inbound, outbound): (Vec<u32>, Vec<u32>) = rows.carried.iter().copied().unzip();
        carried.with_column(Column::new(sessions::CARRIED_INBOUND.into(), inbound))?;
        carried.with_column(Column::new(sessions::CARRIED_OUTBOUND.into(), outbound))?;
        Ok::<_, Error>(carried)
    })?;
    // The ids the night used, in event order, with their fingerprints: hashed in the rows'
    // own order (where their strings lie one after the other), then put in event order.
    let seen = timed("fingerprinted the seen ids", || {
        let (content, event) = load::content_and_event_hashes(&events)?;
        let mut seen =
            events.select([schema::ACCOUNT_ID, schema::MESSAGE_ID, schema::TIMESTAMP])?;
        seen.with_column(content)?;
        seen.with_column(event)?;
        seen.with_column(Column::new(load::ID_HASH.into(), load::id_hashes(&events)?))?;
        Ok::<_, Error>(seen)
    })?;
    let seen = timed("put the seen ids in event order", || {
        seen.take(&rows.order)?
            .lazy()
            .filter(col(schema::TIMESTAMP).gt_eq(lit(start)))
            .select([
                col(schema::ACCOUNT_ID),
                col(schema::MESSAGE_ID),
                col(load::CONTENT),
                col(load::EVENT),
                col(load::ID_HASH),
            ])
            .collect()
            .map_err(Error::from)
    })?;
    Ok(GroupNight {
        closed,
        violations,
        carried,
        seen,
        lines,
        open,
        open_summary,
        conflicting,
        checked,
        duplicates_within_night,
        rows_used,
        carried_in,
        missing,
        meta,
    })
}

/// The messages the night whose old state is `state` billed (among `accounts`) that `rows`
/// (the night's rows now) lack: how many, and the first in (account, message id) order.
fn missing_ids(
    state: &std::path::Path,
    rows: &DataFrame,
    accounts: &Accounts,
) -> Result<Option<(u64, String, String)>> {
    let ids = [col(schema::ACCOUNT_ID), col(schema::MESSAGE_ID)];
    let present = rows
        .clone()
        .lazy()
        .select(ids.clone())
        .unique(None, UniqueKeepStrategy::Any)
        .with_column(lit(true).alias("present"));
    let missing = read_accounts(&state.join(SEEN), accounts)?
        .lazy()
        .join(present, ids.clone(), ids, JoinArgs::new(JoinType::Left))
        .filter(col("present").is_null())
        .sort(
            [schema::ACCOUNT_ID, schema::MESSAGE_ID],
            SortMultipleOptions::default(),
        )
        .collect()?;
    if missing.height() == 0 {
        return Ok(None);
    }
    let first = |name: &str| -> Result<String> {
        Ok(missing
            .column(name)?
            .str()?
            .get(0)
            .unwrap_or_default()
            .to_string())
    };
    Ok(Some((
        missing.height() as u64,
        first(schema::ACCOUNT_ID)?,
        first(schema::MESSAGE_ID)?,
    )))
}

/// A night's files in the staging folder, written group by group.
pub(crate) struct NightWriter {
    night: NaiveDate,
    closed: write::TableWriter,
    violations: write::TableWriter,
    carried: write::TableWriter,
    seen: write::TableWriter,
    /// The accounts of `carried` and `seen` with their rows ([`ROWS_BY_ACCOUNT`]).
    carried_accounts: AccountRows,
    seen_accounts: AccountRows,
    open: write::TableWriter,
    open_summaries: Vec<OpenSummary>,
    /// What `closed` and `violations` hold, and `open`, for the report's charts.
    closed_tally: crate::report::Tally,
    open_tally: crate::report::Tally,
    lines: Vec<DataFrame>,
    conflicting: Vec<DataFrame>,
    checked: u64,
    duplicates_within_night: u64,
    rows_used: u64,
    carried_in: u64,
    /// How many messages the night billed before are missing from the input, and the first.
    pub missing: Option<(u64, String, String)>,
    meta: Option<MetaWriter>,
}

/// A night's files of Meta's pricing ([`super::meta`]).
struct MetaWriter {
    units: write::TableWriter,
    open: write::TableWriter,
    keys: write::TableWriter,
    service: write::TableWriter,
    charged: write::TableWriter,
    lines: crate::meta::cost::Lines,
}

impl MetaWriter {
    fn append(&mut self, group: super::meta::GroupMeta) -> Result<()> {
        self.units.append(&group.units)?;
        self.open.append(&group.open)?;
        self.keys.append(&group.keys)?;
        self.service.append(&group.service)?;
        self.charged.append(&group.charged)?;
        for (key, sum) in group.lines {
            let line = self.lines.entry(key).or_default();
            line.units += sum.units;
            line.cost += sum.cost;
        }
        Ok(())
    }

    /// Completes the files; returns how many conversations are still open.
    fn finish(mut self, state: &std::path::Path) -> Result<u64> {
        let open = self.open.finish()?.rows;
        for table in [
            &mut self.units,
            &mut self.keys,
            &mut self.service,
            &mut self.charged,
        ] {
            table.finish()?;
        }
        write::write_json(
            state,
            super::meta::LINES,
            &crate::meta::cost::to_state(&self.lines),
        )?;
        Ok(open)
    }
}

impl NightWriter {
    pub fn create(night: NaiveDate, tree: &Tree, card: &RateCard) -> Result<NightWriter> {
        let [closed, violations, carried, seen, open] =
            TABLES.map(|(dir, file)| table(tree.staging, night, dir, file));
        Ok(NightWriter {
            night,
            closed: closed?,
            violations: violations?,
            carried: carried?,
            seen: seen?,
            carried_accounts: Vec::new(),
            seen_accounts: Vec::new(),
            open: open?,
            open_summaries: Vec::new(),
            closed_tally: crate::report::Tally::in_zones_of(card),
            open_tally: crate::report::Tally::in_zones_of(card),
            lines: Vec::new(),
            conflicting: Vec::new(),
            checked: 0,
            duplicates_within_night: 0,
            rows_used: 0,
            carried_in: 0,
            missing: None,
            meta: match card.meta {
                None => None,
                Some(_) => {
                    let [units, open, keys, service, charged] =
                        META_TABLES.map(|(dir, file)| table(tree.staging, night, dir, file));
                    Some(MetaWriter {
                        units: units?,
                        open: open?,
                        keys: keys?,
                        service: service?,
                        charged: charged?,
                        lines: Default::default(),
                    })
                }
            },
        })
    }

    /// Appends the next group's part, in group order.
    pub fn append(&mut self, group: GroupNight) -> Result<()> {
        // The tables are separate files: the state (nearly the whole day on a one-day log) is
        // written on two more threads while this one writes the rest.
        count_account_rows(&mut self.carried_accounts, &group.carried)?;
        count_account_rows(&mut self.seen_accounts, &group.seen)?;
        let (carried, seen) = (&mut self.carried, &mut self.seen);
        std::thread::scope(|scope| -> Result<()> {
            let carried = scope.spawn(|| carried.append(&group.carried));
            let seen = scope.spawn(|| seen.append(&group.seen));
            self.closed.append(&group.closed)?;
            self.violations.append(&group.violations)?;
            self.open.append(&group.open)?;
            carried.join().expect("writing does not panic")?;
            seen.join().expect("writing does not panic")
        })?;
        if let (Some(writer), Some(meta)) = (&mut self.meta, group.meta) {
            writer.append(meta)?;
        }
        self.closed_tally.add(&group.closed, &group.violations)?;
        self.open_tally.add_sessions(&group.open)?;
        self.lines.push(group.lines);
        self.open_summaries.push(group.open_summary);
        self.conflicting.extend(group.conflicting);
        self.checked += group.checked;
        self.duplicates_within_night += group.duplicates_within_night;
        self.rows_used += group.rows_used;
        self.carried_in += group.carried_in;
        if let Some((n, account, message)) = group.missing {
            self.missing = Some(match self.missing.take() {
                None => (n, account, message),
                Some((so_far, account, message)) => (so_far + n, account, message),
            });
        }
        Ok(())
    }

    /// Rows of the night's day that passed the checks, so far.
    pub fn checked(&self) -> u64 {
        self.checked
    }

    /// Completes the night's files; `rejected` holds the rows the checks set aside (`--rejects`
    /// only), `input_files` the files that hold the night's day.
    pub fn finish(
        mut self,
        tree: &Tree,
        card: &RateCard,
        paths: &[String],
        rejected: Option<Vec<DataFrame>>,
        input_files: Vec<InputFileRecord>,
    ) -> Result<(NightStats, OpenSummary)> {
        let night = self.night;
        let name = night_dir(night);
        let staging = tree.staging;
        // Every table's rows are counted as written.
        let sessions_closed = self.closed.finish()?.rows;
        let violations = self.violations.finish()?.rows;
        let carried_out = self.carried.finish()?.rows;
        self.seen.finish()?;
        let sessions_open = self.open.finish()?.rows;
        let meta_units_open = match self.meta.take() {
            Some(meta) => Some(meta.finish(&staging.join(STATE_DIR).join(&name))?),
            None => None,
        };
        let rejected_by_checks: u64 = rejected.iter().flatten().map(|r| r.height() as u64).sum();
        let conflicting_rows: u64 = self.conflicting.iter().map(|r| r.height() as u64).sum();
        let rejected_by_reason = match rejected {
            Some(mut rejected) => {
                rejected.append(&mut self.conflicting);
                let (mut frame, by_reason) =
                    load::rejects_with_paths(load::rejects_of(rejected)?, paths)?;
                write::write_parquet(&staging.join(REJECTS_DIR).join(&name), PART, &mut frame)?;
                by_reason
            }
            None => Default::default(),
        };
        let rows_rejected = rejected_by_checks + conflicting_rows;
        let rows_read = self.checked + rejected_by_checks;
        let duplicates_of_earlier_nights =
            rows_read - rows_rejected - self.duplicates_within_night - self.rows_used;
        let stats = NightStats {
            date: night,
            input_files,
            rows_read,
            rejected_by_reason,
            rows_rejected,
            duplicates_within_night: self.duplicates_within_night,
            duplicates_of_earlier_nights,
            rows_used: self.rows_used,
            carried_in: self.carried_in,
            carried_out,
            sessions_closed,
            sessions_open,
            violations,
            meta_units_open,
            closed_tally: self.closed_tally.rows(),
            open_tally: self.open_tally.rows(),
        };
        tracing::info!(
            date = %night,
            rows = stats.rows_read,
            duplicates_within_night = stats.duplicates_within_night,
            duplicates_of_earlier_nights = stats.duplicates_of_earlier_nights,
            rejected = stats.rows_rejected,
            used = stats.rows_used,
            carried_in = stats.carried_in,
            carried_out = stats.carried_out,
            "night computed"
        );
        let state = staging.join(STATE_DIR).join(&name);
        let mut lines = concat(
            self.lines.drain(..).map(IntoLazy::lazy).collect::<Vec<_>>(),
            UnionArgs::default(),
        )?
        .collect()?;
        write::write_parquet(&state, LINES, &mut lines)?;
        let rows_by_account: std::collections::BTreeMap<&str, &AccountRows> = [
            (CARRIED, &self.carried_accounts),
            (SEEN, &self.seen_accounts),
        ]
        .into();
        write::write_json(&state, ROWS_BY_ACCOUNT, &rows_by_account)?;
        let fingerprint = super::card_fingerprint(card, night);
        write::write_bytes(&state, CARD, format!("{fingerprint}\n").as_bytes(), 0)?;
        write::write_json(&state, STATS, &stats)?;
        let open = OpenSummary::of_groups(std::mem::take(&mut self.open_summaries))?;
        Ok((stats, open))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Rows in the loader's schema: (account, message id, user, timestamp, file, row).
    fn rows(rows: &[(&str, &str, &str, i64, u32, u64)]) -> DataFrame {
        let n = rows.len();
        let text = |field: usize| -> Vec<String> {
            let value = |r: &(&str, &str, &str, i64, u32, u64)| [r.0, r.1, r.2][field].to_string();
            rows.iter().map(value).collect()
        };
        let code = |value: u32| vec![value; n];
        DataFrame::new(
            n,
            vec![
                Column::new(schema::MESSAGE_ID.into(), text(1)),
                Column::new(schema::ACCOUNT_ID.into(), text(0)),
                Column::new(schema::BUSINESS_ID.into(), vec!["biz"; n]),
                Column::new(schema::USER_ID.into(), text(2)),
                Column::new(schema::CHANNEL.into(), code(schema::WHATSAPP)),
                Column::new(schema::DIRECTION.into(), code(schema::INBOUND)),
                Column::new(schema::KIND.into(), code(schema::KIND_MESSAGE)),
                Column::new(schema::STATUS.into(), code(schema::STATUS_DELIVERED)),
                Column::new(schema::CATEGORY.into(), code(schema::CATEGORY_NONE)),
                Column::new(
                    schema::TIMESTAMP.into(),
                    rows.iter().map(|r| r.3).collect::<Vec<_>>(),
                ),
                Column::new(
                    load::FILE.into(),
                    rows.iter().map(|r| r.4).collect::<Vec<_>>(),
                ),
                Column::new(
                    load::ROW.into(),
                    rows.iter().map(|r| r.5).collect::<Vec<_>>(),
                ),
            ],
        )
        .unwrap()
    }

    fn ids(frame: &DataFrame) -> Vec<(String, String, i64)> {
        let text = |name: &str| -> Vec<String> {
            let column = frame.column(name).unwrap().str().unwrap();
            column.iter().map(|v| v.unwrap().to_string()).collect()
        };
        let times: Vec<i64> = frame
            .column(schema::TIMESTAMP)
            .unwrap()
            .i64()
            .unwrap()
            .into_no_null_iter()
            .collect();
        let (accounts, messages) = (text(schema::ACCOUNT_ID), text(schema::MESSAGE_ID));
        let mut rows: Vec<_> = accounts
            .into_iter()
            .zip(messages)
            .zip(times)
            .map(|((a, m), t)| (a, m, t))
            .collect();
        rows.sort();
        rows
    }

    /// Carried events keep what they stand for beside them; those of a state written before
    /// they did stand for themselves only.
    #[test]
    fn carried_counts_are_split_off_and_default_to_none() {
        let earlier = load::EARLIER_NIGHT;
        let old = rows(&[
            ("acme", "a", "u1", 10, earlier, 0),
            ("acme", "b", "u1", 20, earlier, 1),
        ]);
        let (frame, counts) = split_counts(old.clone()).unwrap();
        assert_eq!(counts, vec![(0, 0), (0, 0)]);
        assert_eq!(frame.get_column_names(), old.get_column_names());

        let mut new = old.clone();
        new.with_column(Column::new(sessions::CARRIED_INBOUND.into(), vec![3u32, 0]))
            .unwrap();
        new.with_column(Column::new(
            sessions::CARRIED_OUTBOUND.into(),
            vec![7u32, 0],
        ))
        .unwrap();
        let (frame, counts) = split_counts(new).unwrap();
        assert_eq!(counts, vec![(3, 7), (0, 0)]);
        assert_eq!(frame.get_column_names(), old.get_column_names());

        // A state from before `category`: its events get none, in the loader's order.
        let before = old.drop(schema::CATEGORY).unwrap();
        let (frame, _) = split_counts(before).unwrap();
        assert_eq!(frame.get_column_names(), old.get_column_names());
        assert!(frame
            .column(schema::CATEGORY)
            .unwrap()
            .u32()
            .unwrap()
            .into_no_null_iter()
            .all(|c| c == schema::CATEGORY_NONE));
    }

    /// Comparing only the rows whose fingerprint the other side shares drops exactly what
    /// deduplicating the whole concatenation drops, and a conflicting copy stops it alike.
    #[test]
    fn carried_copies_are_dropped_as_deduplicating_everything_drops_them() {
        let earlier = load::EARLIER_NIGHT;
        let carried = rows(&[
            ("acme", "a", "u1", 10, earlier, 0),
            ("acme", "b", "u1", 20, earlier, 1),
            ("zeta", "a", "u2", 30, earlier, 2),
        ]);
        let day = rows(&[
            ("acme", "b", "u1", 120, 0, 0),
            ("acme", "c", "u1", 130, 0, 1),
            ("zeta", "b", "u2", 140, 0, 2),
            ("zeta", "a", "u2", 150, 0, 3),
        ]);
        let paths = ["log.parquet".to_string()];
        let day_ids: Vec<u64> = load::id_hashes(&day).unwrap();
        let none = |frame: &DataFrame| vec![(0, 0); frame.height()];
        let (fast, _) = with_carried(
            carried.clone(),
            none(&carried),
            day.clone(),
            &day_ids,
            &paths,
        )
        .unwrap();
        let all = concat([carried.clone().lazy(), day.lazy()], UnionArgs::default())
            .unwrap()
            .collect()
            .unwrap();
        let expected = load::deduplicate(all, &paths).unwrap();
        assert_eq!(ids(&fast), ids(&expected));
        assert_eq!(
            fast.height(),
            5,
            "acme/b and zeta/a are copies of carried events"
        );

        // Nothing shared: everything is kept.
        let fresh = rows(&[("acme", "d", "u1", 160, 0, 0)]);
        let fresh_ids: Vec<u64> = load::id_hashes(&fresh).unwrap();
        let (kept, _) =
            with_carried(carried.clone(), none(&carried), fresh, &fresh_ids, &paths).unwrap();
        assert_eq!(kept.height(), 4);

        // A copy that names another user conflicts.
        let conflicting = rows(&[("acme", "a", "someone-else", 170, 0, 0)]);
        let conflicting_ids: Vec<u64> = load::id_hashes(&conflicting).unwrap();
        let counts = none(&carried);
        let refused = with_carried(carried, counts, conflicting, &conflicting_ids, &paths);
        assert!(refused.unwrap_err().to_string().contains("`a`"));
    }
}
