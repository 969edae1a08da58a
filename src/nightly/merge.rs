//! Merge of nightly histories: the histories of a schedule's shards (`convbill run --date D
//! --shard I/N`, each in its own `--out`) in; one history out, the same bytes as an unsharded
//! history of the same nights (`month-to-date/manifest.json` aside, which lists the shards).
//!
//! Every file of a night is in account order or a sum over accounts, and every account lies in
//! one shard: the merge interleaves each night's tables by account, sums its counts, Meta cost
//! lines and charts, and then runs the month-to-date stage of a history over those nights
//! ([`super::month_to_date::write`]): lines to date, closed periods, invoices revised by the
//! shards' registers together, report and manifest. Over an earlier merge, the first nights
//! whose files are the same in every shard as it read them are kept from it, linked, as a
//! nightly run keeps the nights it does not rerun. The merged folder is a history like any
//! other: an unsharded `convbill run --date` continues it.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use chrono::NaiveDate;
use serde::Deserialize;

use super::inputs::{self, LateFile};
use super::month_to_date::{self, CLOSED_DIR};
use super::night::{self, NightStats};
use super::{night_dir, nights_run, Tree, MONTH_TO_DATE_DIR, REJECTS_DIR};
use crate::error::{Error, Result};
use crate::merge::{refused, Member, MergeConfig, WrittenBy};
use crate::rates::RateCard;
use crate::rating::{self, revision};
use crate::shard::Shard;
use crate::write::{self, MergedShard, STATE_DIR};

/// What a merge of histories did.
#[derive(Debug)]
pub struct HistoryReport {
    pub shards: usize,
    /// The first and last night of the merged history.
    pub nights: (NaiveDate, NaiveDate),
    /// The first nights kept from the earlier merge in the folder (not merged again).
    pub kept: usize,
    /// The month-to-date invoices by status.
    pub invoices: BTreeMap<&'static str, usize>,
    /// The periods the history has closed.
    pub closed: Vec<String>,
    /// How the invoices that had been final differ from the earlier merge's in the folder.
    pub changes: Vec<revision::Change>,
    /// The input files late for some shard's accounts.
    pub late: Vec<LateFile>,
}

/// What the merge reads of a shard's `month-to-date/manifest.json`.
#[derive(Debug, Deserialize)]
struct MonthToDateRead {
    #[serde(flatten)]
    written_by: WrittenBy,
    input: InputPathRead,
    #[serde(default)]
    late_input: Vec<LateFile>,
}

#[derive(Debug, Deserialize)]
struct InputPathRead {
    path: String,
}

/// One shard's history.
struct History {
    dir: PathBuf,
    shard: Shard,
    nights: Vec<NaiveDate>,
    manifest: MonthToDateRead,
    manifest_sha256: String,
    catalog: inputs::Catalog,
}

impl Member for History {
    fn name(&self) -> String {
        format!("shard {} (`{}`)", self.shard, self.dir.display())
    }
    fn dir(&self) -> &Path {
        &self.dir
    }
    fn shard(&self) -> Shard {
        self.shard
    }
    fn written_by(&self) -> &WrittenBy {
        &self.manifest.written_by
    }
    fn input_path(&self) -> &str {
        &self.manifest.input.path
    }
    fn card_hint(&self) -> &'static str {
        ": a history names the card of its last run; rerun the last night, with the card meant, on the shards that ran it with another"
    }
}

impl History {
    fn state(&self, night: NaiveDate) -> PathBuf {
        self.dir.join(STATE_DIR).join(night_dir(night))
    }
}

/// Reads a shard's history; one that is not a sharded history is refused, named.
fn read_history(dir: &Path) -> Result<History> {
    let record: Option<super::ShardRecord> =
        write::read_json_if_exists(&dir.join(STATE_DIR).join(super::SHARD_FILE))?;
    let Some(record) = record else {
        return Err(refused(format!(
            "`{}` holds an unsharded history: merge the histories of `convbill run --date D --shard I/N`",
            dir.display()
        )));
    };
    let shard: Shard = record.shard.parse().map_err(|e: String| {
        refused(format!(
            "`{}`: its `state/{}` names no shard ({e})",
            dir.display(),
            super::SHARD_FILE
        ))
    })?;
    let nights = nights_run(dir)?;
    if nights.is_empty() {
        return Err(refused(format!(
            "`{}` holds no night of shard {shard}'s history",
            dir.display()
        )));
    }
    let path = dir.join(MONTH_TO_DATE_DIR).join(write::MANIFEST_FILE);
    let bytes = std::fs::read(&path).map_err(|e| {
        refused(format!(
            "`{}` is not a whole history: its `{}` cannot be read ({e})",
            dir.display(),
            path.display()
        ))
    })?;
    let manifest: MonthToDateRead = serde_json::from_slice(&bytes).map_err(|e| {
        refused(format!(
            "`{}` is not a manifest this convbill can read ({e})",
            path.display()
        ))
    })?;
    use sha2::Digest;
    Ok(History {
        dir: dir.to_path_buf(),
        shard,
        nights,
        manifest,
        manifest_sha256: hex::encode(sha2::Sha256::digest(&bytes)),
        catalog: inputs::Catalog::read(dir)?,
    })
}

/// The files of a night's state the merge knows how to put together.
fn state_files(meta: bool) -> Vec<&'static str> {
    let mut files = vec![
        night::CARRIED,
        night::SEEN,
        night::OPEN,
        night::LINES,
        month_to_date::LINES_TO_DATE,
        night::ROWS_BY_ACCOUNT,
        night::CARD,
        night::STATS,
    ];
    if meta {
        files.extend([
            super::meta::OPEN_UNITS,
            super::meta::KEYS,
            super::meta::SERVICE_COUNTS,
            super::meta::CHARGED_COUNTS,
            super::meta::LINES,
            month_to_date::META_LINES_TO_DATE,
        ]);
    }
    files
}

/// Checks, beside [`crate::merge::check_members`], that the histories (sorted by index) are one
/// schedule's: the same nights, each read from the same input files (those of a bucket's
/// folder matter to its shard only) with a card that rates it alike and with the same
/// `--rejects`, and the same catalog of input files (a file that arrived between the shards'
/// runs would be billed by some only).
fn check_histories(found: &[History], meta: bool) -> Result<()> {
    let first = &found[0];
    let span = |h: &History| match (h.nights.first(), h.nights.last()) {
        (Some(a), Some(b)) if a == b => format!("the night {a}"),
        (Some(a), Some(b)) => format!("the nights {a} to {b} ({})", h.nights.len()),
        _ => "no night".to_string(),
    };
    for shard in &found[1..] {
        if shard.nights != first.nights {
            let missing = first
                .nights
                .iter()
                .find(|n| !shard.nights.contains(n))
                .map(|n| (shard, *n))
                .or_else(|| {
                    shard
                        .nights
                        .iter()
                        .find(|n| !first.nights.contains(n))
                        .map(|n| (first, *n))
                });
            let hint = match missing {
                Some((lacking, night)) => {
                    format!("; {} has not run the night {night}", lacking.name())
                }
                None => String::new(),
            };
            return Err(refused(format!(
                "{} has run {}, {} {}: merge shards that have run the same nights{hint}",
                shard.name(),
                span(shard),
                first.name(),
                span(first)
            )));
        }
    }
    let known = state_files(meta);
    for &date in &first.nights {
        let read = |shard: &History, file: &str| -> Result<Vec<u8>> {
            let path = shard.state(date).join(file);
            std::fs::read(&path).map_err(|e| {
                refused(format!(
                    "{}: the night {date}'s `{}` cannot be read ({e})",
                    shard.name(),
                    path.display()
                ))
            })
        };
        let first_stats = NightStats::read(&first.state(date))?;
        let first_card = read(first, night::CARD)?;
        let first_rejects = rejects_of(first, date).is_file();
        for shard in found {
            let dir = shard.state(date);
            for entry in std::fs::read_dir(&dir).map_err(crate::folder::io_error(&dir))? {
                let name = entry
                    .map_err(crate::folder::io_error(&dir))?
                    .file_name()
                    .to_string_lossy()
                    .into_owned();
                if !known.contains(&name.as_str()) {
                    return Err(refused(format!(
                        "{}: the night {date}'s state holds `{name}`, which this merge does not know (written by another version, or by hand)",
                        shard.name()
                    )));
                }
            }
            let stats = NightStats::read(&dir)?;
            let shared = |stats: &NightStats| -> Vec<night::InputFileRecord> {
                stats
                    .input_files
                    .iter()
                    .filter(|f| crate::merge::layout_bucket(&f.path).is_none())
                    .cloned()
                    .collect()
            };
            let (ours, theirs) = (shared(&stats), shared(&first_stats));
            if ours != theirs {
                let differs = ours
                    .iter()
                    .find(|f| !theirs.contains(f))
                    .or_else(|| theirs.iter().find(|f| !ours.contains(f)))
                    .map(|f| f.path.clone())
                    .unwrap_or_default();
                return Err(refused(format!(
                    "{} and {} read the night {date} from other input files (`{differs}` differs): the input changed between their runs; rerun the night on each shard with `--recompute-later`",
                    shard.name(),
                    first.name()
                )));
            }
            if read(shard, night::CARD)? != first_card {
                return Err(refused(format!(
                    "{} rated the night {date} by a card that says otherwise of it than {}'s: run every shard with the same `--rates`",
                    shard.name(),
                    first.name()
                )));
            }
            if rejects_of(shard, date).is_file() != first_rejects {
                let (with, without) = match first_rejects {
                    true => (first, shard),
                    false => (shard, first),
                };
                return Err(refused(format!(
                    "{} set rows aside (`--rejects`) on the night {date} and {} did not: run every shard with the same options",
                    with.name(),
                    without.name()
                )));
            }
        }
    }
    // The first night that read a file can differ: a shard recomputed from an earlier night
    // read it from then on (see [`merged_catalog`]).
    for shard in &found[1..] {
        let key = |e: &inputs::Entry| {
            (
                e.path.clone(),
                e.bytes,
                e.sha256.clone(),
                e.rows,
                e.first_event.clone(),
                e.last_event.clone(),
                e.changed,
            )
        };
        let theirs: Vec<_> = first.catalog.files.iter().map(key).collect();
        let ours: Vec<_> = shard.catalog.files.iter().map(key).collect();
        if theirs != ours {
            let differs = ours
                .iter()
                .find(|e| !theirs.contains(e))
                .or_else(|| theirs.iter().find(|e| !ours.contains(e)))
                .map(|e| e.0.clone())
                .unwrap_or_default();
            return Err(refused(format!(
                "{} and {} know the input files otherwise (`{differs}` differs between their `state/inputs.json`): the input changed between their runs (a file arrived late?); rerun the last night on the shards that ran it before the change (or on every shard)",
                shard.name(),
                first.name()
            )));
        }
    }
    Ok(())
}

/// The shards' catalogs of input files (the same files) as one: a file of a bucket's folder
/// read from the first night its shard read it, any other from the latest of the shards' first
/// nights. A file some shard has not billed from its earlier nights on stays late for the
/// merged history, as it is for that shard's accounts.
fn merged_catalog(found: &[History]) -> inputs::Catalog {
    let mut catalog = found[0].catalog.clone();
    for (i, entry) in catalog.files.iter_mut().enumerate() {
        let firsts = found
            .iter()
            .map(|h| (h.shard.index, h.catalog.files[i].read_from));
        entry.read_from = match crate::merge::layout_bucket(&entry.path) {
            Some(bucket) => firsts
                .filter(|(index, _)| *index == bucket)
                .map(|(_, first)| first)
                .next()
                .unwrap_or(entry.read_from),
            None => firsts
                .map(|(_, first)| first)
                .max()
                .unwrap_or(entry.read_from),
        };
    }
    catalog
}

fn rejects_of(shard: &History, date: NaiveDate) -> PathBuf {
    shard
        .dir
        .join(REJECTS_DIR)
        .join(night_dir(date))
        .join(night::PART)
}

/// Removes the staging folder unless the merge put it in place.
struct Staging {
    dir: PathBuf,
    switched: bool,
}

impl Drop for Staging {
    fn drop(&mut self) {
        if !self.switched {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// Merges the histories `config.shards` into `config.out`.
pub fn merge(config: &MergeConfig) -> Result<HistoryReport> {
    // Each history is read under its lock: the merge never reads one a night is writing, and
    // a shard's night started meanwhile is refused as another run's would be (exit 4).
    // (A folder given twice is locked once: the merge refuses it by name below.)
    let mut locked = BTreeSet::new();
    let mut _shard_locks = Vec::new();
    for dir in &config.shards {
        if locked.insert(std::fs::canonicalize(dir).unwrap_or_else(|_| dir.clone())) {
            _shard_locks.push(crate::folder::OutFolder::new(dir)?.lock()?);
        }
    }
    let mut found = config
        .shards
        .iter()
        .map(|dir| read_history(dir))
        .collect::<Result<Vec<_>>>()?;
    found.sort_by_key(|h| h.shard.index);
    crate::merge::check_members(&found, |_, _| Ok(()))?;
    let card = crate::merge::load_card(config, &found[0].manifest.written_by.rate_card)?;
    let meta = card.meta.is_some();
    check_histories(&found, meta)?;
    let folder = crate::merge::out_apart(config, &found)?;
    let before = before(&folder.out)?;
    let merged_input = match &before {
        Before::Merge(manifest) => manifest["input"]["path"].as_str(),
        _ => None,
    };
    if let Some(other) = merged_input.filter(|i| *i != found[0].input_path()) {
        return Err(Error::Usage {
            problem: format!(
                "refusing to replace `{}`: it holds the merge of histories of another input (`{other}`; these shards read `{}`); write this merge to a folder of its own",
                config.out.display(),
                found[0].input_path()
            ),
        });
    }
    if matches!(before, Before::Other) {
        return Err(Error::Usage {
            problem: format!(
                "refusing to replace `{}`: it is not empty and holds no merged history; write the merge of histories to a folder of its own (each night's merge replaces the last)",
                config.out.display()
            ),
        });
    }
    let _lock = folder.lock()?;
    if let Some(done) = folder.recover()? {
        tracing::warn!("{done} (beside `{}`)", config.out.display());
    }
    let mut staging = Staging {
        dir: folder.create_staging()?,
        switched: false,
    };
    let nights = found[0].nights.clone();
    let digests = found
        .iter()
        .map(|h| {
            nights
                .iter()
                .map(|&night| Ok((night, night_digest(&h.dir, night)?)))
                .collect::<Result<BTreeMap<_, _>>>()
        })
        .collect::<Result<Vec<_>>>()?;
    // The first nights whose files are in every shard what an earlier merge in `--out` merged
    // are kept from it (the last night is merged again in any case).
    let earlier = match &before {
        Before::Merge(manifest) => earlier_merge(manifest, &card, &found),
        _ => None,
    };
    let kept = match &earlier {
        None => 0,
        Some(earlier) => nights
            .iter()
            .take_while(|night| {
                found.iter().zip(&digests).all(|(h, digests)| {
                    earlier
                        .get(&h.shard.to_string())
                        .and_then(|merged| merged.get(night))
                        == digests.get(night)
                })
            })
            .count()
            .min(nights.len() - 1),
    };
    let computed = &nights[kept..];
    let mut open = BTreeMap::new();
    for (i, &date) in computed.iter().enumerate() {
        crate::error::check_interrupt()?;
        crate::progress::stage(
            &format!("merging night {date} ({} of {})", i + 1, computed.len()),
            None,
        );
        open.insert(date, merge_night(&found, date, &staging.dir, &card)?);
    }
    let mut register = revision::Register::default();
    for shard in &found {
        register.extend(revision::Register::read(
            &shard.dir.join(STATE_DIR).join(revision::REGISTER_FILE),
        )?);
    }
    write::write_parquet(
        &staging.dir.join(STATE_DIR),
        revision::REGISTER_FILE,
        &mut register.frame()?,
    )?;
    let catalog = merged_catalog(&found);
    let late = inputs::merge_late(
        &catalog,
        found
            .iter()
            .map(|h| h.manifest.late_input.clone())
            .collect(),
    );
    let shards: Vec<MergedShard> = found
        .iter()
        .zip(digests)
        .map(|(h, nights)| MergedShard {
            shard: h.shard.to_string(),
            path: h.dir.display().to_string(),
            manifest_sha256: h.manifest_sha256.clone(),
            nights,
        })
        .collect();
    crate::progress::stage("writing month-to-date", None);
    // Over an earlier merge, the history reads the nights kept from it and revises the
    // invoices it issued, as a nightly run over its history; else it reads what it has
    // written so far. Either way by the shards' registers put together.
    let earlier_exists = matches!(before, Before::Merge(_));
    let tree = Tree {
        out: if earlier_exists {
            &folder.out
        } else {
            &staging.dir
        },
        staging: &staging.dir,
    };
    let input = PathBuf::from(&found[0].manifest.input.path);
    let written = month_to_date::write(
        &tree,
        &month_to_date::Run {
            nights: &nights,
            computed,
            open: &open,
            input: &input,
            late: &late,
            card: &card,
            shards: &shards,
        },
    )?;
    catalog.write(&staging.dir)?;
    if kept > 0 {
        // What the merge did not write again is linked from the earlier one: the nights
        // kept and the periods they closed.
        let mut rewritten: BTreeSet<PathBuf> = written.rewritten.into_iter().collect();
        rewritten.insert(PathBuf::from(MONTH_TO_DATE_DIR));
        rewritten.insert(Path::new(STATE_DIR).join(revision::REGISTER_FILE));
        rewritten.insert(inputs::Catalog::relative_path());
        for night in nights_run(&folder.out)?
            .into_iter()
            .chain(nights.iter().copied())
        {
            if night >= computed[0] {
                for kind in NIGHT_FOLDERS {
                    rewritten.insert(Path::new(kind).join(night_dir(night)));
                }
            }
        }
        crate::folder::link_tree(&folder.out, &staging.dir, &rewritten)?;
    }
    crate::error::check_interrupt()?;
    folder.switch(&staging.dir)?;
    staging.switched = true;
    let mut invoices = BTreeMap::new();
    for invoice in &written.invoices.invoices {
        *invoices.entry(invoice.status).or_default() += 1;
    }
    let mut closed: Vec<String> = Vec::new();
    let closed_dir = config.out.join(CLOSED_DIR);
    if let Ok(entries) = std::fs::read_dir(&closed_dir) {
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if let Some(period) = name.strip_prefix("period=") {
                closed.push(period.to_string());
            }
        }
    }
    closed.sort();
    Ok(HistoryReport {
        shards: found.len(),
        nights: (nights[0], *nights.last().expect("a history has a night")),
        kept,
        changes: match earlier_exists {
            true => written
                .changes
                .into_iter()
                .filter(|c| c.touches_a_final_invoice())
                .collect(),
            false => Vec::new(),
        },
        late,
        invoices,
        closed,
    })
}

/// The folders of a history that hold a night's files, each in `KIND/date=D/`.
const NIGHT_FOLDERS: [&str; 5] = [
    super::SESSIONS_DIR,
    super::VIOLATIONS_DIR,
    STATE_DIR,
    REJECTS_DIR,
    super::meta::UNITS_DIR,
];

/// A digest of night `night`'s files in the history `dir`: their paths, sizes, modification
/// times and file ids. A night a run wrote again has new files; one it kept, the same (a
/// history links what it does not rewrite).
fn night_digest(dir: &Path, night: NaiveDate) -> Result<String> {
    use sha2::Digest;
    let mut digest = sha2::Sha256::new();
    for kind in NIGHT_FOLDERS {
        let folder = dir.join(kind).join(night_dir(night));
        let Ok(entries) = std::fs::read_dir(&folder) else {
            continue;
        };
        let mut files = entries
            .map(|entry| entry.map(|e| e.path()))
            .collect::<std::io::Result<Vec<_>>>()
            .map_err(crate::folder::io_error(&folder))?;
        files.sort();
        for path in files {
            let metadata = std::fs::metadata(&path).map_err(crate::folder::io_error(&path))?;
            let modified = metadata
                .modified()
                .ok()
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                .map_or(0, |d| d.as_nanos());
            #[cfg(unix)]
            let id = {
                use std::os::unix::fs::MetadataExt;
                (metadata.dev(), metadata.ino())
            };
            #[cfg(not(unix))]
            let id = (0u64, 0u64);
            let relative = path.strip_prefix(dir).unwrap_or(&path);
            digest.update(
                format!(
                    "{}\t{}\t{modified}\t{}:{}\n",
                    relative.display(),
                    metadata.len(),
                    id.0,
                    id.1
                )
                .as_bytes(),
            );
        }
    }
    Ok(hex::encode(digest.finalize()))
}

/// The nights' digests by shard that the earlier merge (its month-to-date `manifest`)
/// recorded, if this merge can continue it: written by this convbill with this card, of as
/// many shards.
fn earlier_merge(
    manifest: &serde_json::Value,
    card: &RateCard,
    found: &[History],
) -> Option<BTreeMap<String, BTreeMap<NaiveDate, String>>> {
    let current = write::Program::current();
    if manifest["program"]["version"].as_str() != Some(current.version)
        || manifest["rate_card"]["sha256"].as_str() != Some(card.sha256.as_str())
    {
        return None;
    }
    let mut earlier = BTreeMap::new();
    for shard in manifest["shards"].as_array().into_iter().flatten() {
        let (Some(name), Ok(nights)) = (
            shard["shard"].as_str(),
            serde_json::from_value::<BTreeMap<NaiveDate, String>>(shard["nights"].clone()),
        ) else {
            return None;
        };
        earlier.insert(name.to_string(), nights);
    }
    (earlier.len() == found.len()).then_some(earlier)
}

/// What `--out` holds before a merge of histories.
enum Before {
    /// Nothing: it is absent or empty.
    Nothing,
    /// An earlier merge of histories: its month-to-date manifest (which lists shards).
    Merge(serde_json::Value),
    /// Anything else.
    Other,
}

fn before(dir: &Path) -> Result<Before> {
    if !dir.exists() {
        return Ok(Before::Nothing);
    }
    let mut entries = std::fs::read_dir(dir).map_err(crate::folder::io_error(dir))?;
    if entries.next().is_none() {
        return Ok(Before::Nothing);
    }
    let manifest = dir.join(MONTH_TO_DATE_DIR).join(write::MANIFEST_FILE);
    let value: Option<serde_json::Value> = write::read_json_if_exists(&manifest).ok().flatten();
    Ok(match value {
        Some(value)
            if dir.join(STATE_DIR).is_dir()
                && value["shards"].as_array().is_some_and(|s| !s.is_empty()) =>
        {
            Before::Merge(value)
        }
        _ => Before::Other,
    })
}

/// Writes night `date` of the shards' histories together into `staging`; returns what its
/// month-to-date needs of its open sessions.
fn merge_night(
    found: &[History],
    date: NaiveDate,
    staging: &Path,
    card: &RateCard,
) -> Result<night::OpenSummary> {
    let name = night_dir(date);
    let state = staging.join(STATE_DIR).join(&name);
    let mut tables: Vec<(Option<&str>, &str)> = night::TABLES.to_vec();
    if card.meta.is_some() {
        tables.extend(night::META_TABLES);
    }
    for (dir, file) in tables {
        let relative = |root: &Path| match dir {
            Some(dir) => root.join(dir).join(&name).join(file),
            None => root.join(STATE_DIR).join(&name).join(file),
        };
        let paths: Vec<PathBuf> = found.iter().map(|h| relative(&h.dir)).collect();
        let mut writer = night::table(staging, date, dir, file)?;
        crate::merge::interleaved(&paths, |piece| writer.append(&piece))?;
        writer.finish()?;
    }
    // The counted lines of the sessions the night closed.
    let mut lines = Vec::new();
    let paths: Vec<PathBuf> = found
        .iter()
        .map(|h| h.state(date).join(night::LINES))
        .collect();
    crate::merge::interleaved(&paths, |piece| {
        lines.push(piece);
        Ok(())
    })?;
    write::write_parquet(&state, night::LINES, &mut crate::merge::stacked(lines)?)?;
    if card.meta.is_some() {
        let mut lines = crate::meta::cost::Lines::new();
        for shard in found {
            let path = shard.state(date).join(super::meta::LINES);
            let value: serde_json::Value = write::read_json(&path)?;
            crate::meta::cost::add_state(&mut lines, value)
                .map_err(|problem| refused(format!("`{}`: {problem}", path.display())))?;
        }
        write::write_json(
            &state,
            super::meta::LINES,
            &crate::meta::cost::to_state(&lines),
        )?;
    }
    // Each carried and seen file's accounts with their rows, in account order.
    let mut rows_by_account: BTreeMap<String, Vec<(String, u64)>> = BTreeMap::new();
    for shard in found {
        let path = shard.state(date).join(night::ROWS_BY_ACCOUNT);
        let of_shard: BTreeMap<String, Vec<(String, u64)>> = write::read_json(&path)?;
        for (file, accounts) in of_shard {
            rows_by_account.entry(file).or_default().extend(accounts);
        }
    }
    for accounts in rows_by_account.values_mut() {
        accounts.sort();
    }
    write::write_json(&state, night::ROWS_BY_ACCOUNT, &rows_by_account)?;
    let fingerprint = std::fs::read(found[0].state(date).join(night::CARD))
        .map_err(crate::folder::io_error(&found[0].state(date)))?;
    write::write_bytes(&state, night::CARD, &fingerprint, 0)?;

    let mut stats = found
        .iter()
        .map(|h| NightStats::read(&h.state(date)))
        .collect::<Result<Vec<_>>>()?;
    // The files that held the night's day: those of every bucket's folder as its shard found
    // them (another shard may have run the night before a bucket's file landed).
    let mut files: BTreeMap<Vec<String>, night::InputFileRecord> = BTreeMap::new();
    for (i, shard) in found.iter().enumerate() {
        for file in &stats[i].input_files {
            let bucket = crate::merge::layout_bucket(&file.path);
            if bucket.is_none_or(|b| b == shard.shard.index) {
                let key = file.path.split('/').map(str::to_string).collect();
                files.entry(key).or_insert_with(|| file.clone());
            }
        }
    }
    stats[0].input_files = files.into_values().collect();
    let rejected = rejects_of(&found[0], date).is_file();
    if rejected {
        let frames = found
            .iter()
            .map(|h| crate::merge::read_table(&rejects_of(h, date)))
            .collect::<Result<Vec<_>>>()?;
        let paths: Vec<&str> = stats[0]
            .input_files
            .iter()
            .map(|f| f.path.as_str())
            .collect();
        let mut frame = crate::merge::in_file_order(frames, &paths)?;
        write::write_parquet(
            &staging.join(REJECTS_DIR).join(&name),
            night::PART,
            &mut frame,
        )?;
    }
    write::write_json(&state, night::STATS, &sum_stats(stats))?;

    // Rated again (the night's card rates it alike: its fingerprint says so).
    let open = rating::rate_sessions(super::read_parquet(&state.join(night::OPEN))?, card)?;
    Ok(night::OpenSummary {
        lines: rating::lines_of(&open)?,
        unanswered: rating::unanswered(&open)?,
    })
}

/// The shards' counts of one night, summed (their input files are the same).
fn sum_stats(stats: Vec<NightStats>) -> NightStats {
    let mut stats = stats.into_iter();
    let mut sum = stats.next().expect("a merge has a shard");
    let mut closed = crate::report::Tally::default();
    let mut open = crate::report::Tally::default();
    closed.add_rows(&sum.closed_tally);
    open.add_rows(&sum.open_tally);
    for other in stats {
        sum.rows_read += other.rows_read;
        for (reason, n) in other.rejected_by_reason {
            *sum.rejected_by_reason.entry(reason).or_default() += n;
        }
        sum.rows_rejected += other.rows_rejected;
        sum.duplicates_within_night += other.duplicates_within_night;
        sum.duplicates_of_earlier_nights += other.duplicates_of_earlier_nights;
        sum.rows_used += other.rows_used;
        sum.carried_in += other.carried_in;
        sum.carried_out += other.carried_out;
        sum.sessions_closed += other.sessions_closed;
        sum.sessions_open += other.sessions_open;
        sum.meta_units_open = match (sum.meta_units_open, other.meta_units_open) {
            (None, None) => None,
            (a, b) => Some(a.unwrap_or_default() + b.unwrap_or_default()),
        };
        sum.violations += other.violations;
        closed.add_rows(&other.closed_tally);
        open.add_rows(&other.open_tally);
    }
    sum.closed_tally = closed.rows();
    sum.open_tally = open.rows();
    sum
}
