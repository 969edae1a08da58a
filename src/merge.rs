//! Merge: the output folders of the shards of one run (`convbill run --shard I/N`) in; one
//! output folder out, the same bytes as a run over the whole log (its manifest aside, which
//! lists the shards).
//!
//! A shard's folder holds its accounts' sessions, violations, Meta units and rows set aside,
//! each in account (or file and row) order, and under `shard/` the counted lines its invoices
//! come from and Meta's cost lines. Every account lies in one shard, so the merge interleaves
//! the shards' rows by account, sums their counts, and runs the last stage of a run
//! ([`crate::complete`]) on the result: invoices judged by the days of all shards' rows
//! together, revised against the folder being replaced, then report and manifest.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::path::{Path, PathBuf};

use polars::prelude::*;
use serde::Deserialize;

use crate::error::{Error, Result};
use crate::folder::OutFolder;
use crate::load::{InputFile, InputStats};
use crate::sessions::SessionStats;
use crate::write::{self, MergedShard, ShardSection};
use crate::{load, progress, rates, rating, schema, RunReport};

/// A shard's counted lines ([`crate::rating::lines_of`]), in account order.
pub const SHARD_LINES_FILE: &str = "shard/lines.parquet";
/// A shard's Meta cost lines, as JSON rows ([`meta_lines_json`]).
pub const SHARD_META_LINES_FILE: &str = "shard/meta_cost_lines.json";

/// A validated `convbill merge`.
#[derive(Debug, Clone)]
pub struct MergeConfig {
    /// The merged folder; replaced as a whole when the merge succeeds.
    pub out: PathBuf,
    /// The shards' output folders, in any order.
    pub shards: Vec<PathBuf>,
    /// The rate card; by default the one the shards' manifests name.
    pub rates: Option<PathBuf>,
}

/// What every shard's manifest (a run's, or a history's month-to-date) says of how it was
/// written: by which convbill, rule set and rate card.
#[derive(Debug, Deserialize)]
pub(crate) struct WrittenBy {
    pub program: ProgramRead,
    pub rule_set: String,
    pub rate_card: CardRead,
}

/// What the merge reads of a shard's `manifest.json`.
#[derive(Debug, Deserialize)]
struct ShardManifest {
    #[serde(flatten)]
    written_by: WrittenBy,
    input: InputRead,
    sessions: SessionStats,
    shard: Option<ShardSection>,
    outputs: Vec<OutputRead>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct ProgramRead {
    name: String,
    version: String,
}

#[derive(Debug, Deserialize)]
pub(crate) struct CardRead {
    source: String,
    sha256: String,
    /// The Meta price files the card reads, each with its SHA-256.
    #[serde(default)]
    meta_files: Vec<MetaFileRead>,
}

#[derive(Debug, PartialEq, Eq, Deserialize)]
struct MetaFileRead {
    path: String,
    sha256: String,
}

impl CardRead {
    /// What differs between two cards' fingerprints, where the manifests tell: a Meta price
    /// file with bytes the other card reads in none, or else the card itself.
    fn difference(&self, other: &CardRead) -> String {
        let unknown = |a: &CardRead, b: &CardRead| {
            a.meta_files
                .iter()
                .find(|f| !b.meta_files.iter().any(|g| g.sha256 == f.sha256))
                .map(|f| f.path.clone())
        };
        let changed = unknown(self, other).or_else(|| unknown(other, self));
        match changed {
            Some(path) => format!("the Meta price file `{path}` differs"),
            None => format!("the card `{}` differs", self.source),
        }
    }
}

#[derive(Debug, Deserialize)]
struct InputRead {
    path: String,
    files: Vec<FileRead>,
    #[serde(flatten)]
    stats: InputStats,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
struct FileRead {
    path: String,
    bytes: u64,
    sha256: String,
    rows: u64,
}

#[derive(Debug, Deserialize)]
struct OutputRead {
    path: String,
    #[serde(default)]
    sha256: String,
}

/// One shard's folder and what its manifest says.
struct Found {
    dir: PathBuf,
    manifest: ShardManifest,
    section: ShardSection,
    manifest_sha256: String,
}

impl Found {
    fn name(&self) -> String {
        format!("shard {} (`{}`)", self.section.shard, self.dir.display())
    }

    fn wrote(&self, relative: &str) -> bool {
        self.manifest.outputs.iter().any(|o| o.path == relative)
    }

    /// The shard's file `relative`, checked against the SHA-256 its manifest lists: a file
    /// changed or copied over since the shard ran is refused, named.
    fn verified(&self, relative: &str) -> Result<PathBuf> {
        let path = self.dir.join(relative);
        let listed = self
            .manifest
            .outputs
            .iter()
            .find(|o| o.path == relative)
            .ok_or_else(|| {
                refused(format!(
                    "{} lists no `{relative}` in its manifest: it is not a whole shard's folder",
                    self.name()
                ))
            })?;
        if !listed.sha256.is_empty() {
            let found = load::sha256_of(&path).map_err(|e| {
                refused(format!(
                    "{}: `{relative}` cannot be read ({e})",
                    self.name()
                ))
            })?;
            if found != listed.sha256 {
                return Err(refused(format!(
                    "{}: `{relative}` is not the file its manifest lists (SHA-256 {found}, listed {}): it changed after the shard ran; run the shard again",
                    self.name(),
                    listed.sha256
                )));
            }
        }
        Ok(path)
    }
}

pub(crate) fn refused(problem: impl Into<String>) -> Error {
    Error::Merge {
        problem: problem.into(),
    }
}

/// What a merge merged.
pub enum Merged {
    /// The shards of a whole run.
    Run(RunReport),
    /// Shards' nightly histories.
    History(crate::nightly::merge::HistoryReport),
}

/// Merges the shards' folders into `config.out`: whole runs' folders, or nightly histories.
pub fn merge(config: &MergeConfig) -> Result<Merged> {
    if config.shards.is_empty() {
        return Err(refused("no shard folders to merge"));
    }
    for dir in &config.shards {
        if !dir.is_dir() {
            return Err(refused(format!(
                "`{}` {}: give the shards' output folders (or nightly histories)",
                dir.display(),
                match dir.exists() {
                    true => "is not a folder",
                    false => "does not exist",
                }
            )));
        }
    }
    let history = |dir: &PathBuf| dir.join(write::STATE_DIR).is_dir();
    match (
        config.shards.iter().find(|d| history(d)),
        config.shards.iter().find(|d| !history(d)),
    ) {
        (None, _) => merge_runs(config).map(Merged::Run),
        (Some(_), None) => crate::nightly::merge::merge(config).map(Merged::History),
        (Some(_), Some(run)) if !run.join(write::MANIFEST_FILE).is_file() => Err(refused(format!(
            "`{}` holds neither a nightly history nor a shard's output: give the shards' output folders (or nightly histories)",
            run.display()
        ))),
        (Some(nightly), Some(run)) => Err(refused(format!(
            "`{}` holds a nightly history and `{}` does not: merge the folders of whole runs' shards, or the histories of nightly shards",
            nightly.display(),
            run.display()
        ))),
    }
}

/// The rate card of a merge: `--rates`, or the one the shards' manifests name; its
/// fingerprint must be theirs.
pub(crate) fn load_card(config: &MergeConfig, theirs: &CardRead) -> Result<rates::RateCard> {
    let card_path = match &config.rates {
        Some(path) => Some(path.clone()),
        None if theirs.source == crate::rates::BUILT_IN => None,
        None => Some(PathBuf::from(&theirs.source)),
    };
    let card = match rates::load_or_built_in(card_path.as_deref()) {
        Err(error) if config.rates.is_none() => {
            return Err(Error::Usage {
                problem: format!(
                    "{error}: the shards' manifests name that card as their runs were given it; run the merge from the folder they ran in, or pass the card with `--rates`"
                ),
            })
        }
        card => card?,
    };
    if card.sha256 != theirs.sha256 {
        return Err(refused(format!(
            "the rate card `{}` is not the one the shards were rated by (its fingerprint, over the card and the Meta price files it reads, is {}, theirs {}); pass the card they read with `--rates`",
            card.source.display(),
            card.sha256,
            theirs.sha256
        )));
    }
    // The outputs name the card as the shards were given it, wherever `--rates` found it.
    let mut card = card;
    card.source = PathBuf::from(&theirs.source);
    Ok(card)
}

/// The merged folder, refused when it is one of the shards, holds one or lies inside one:
/// replacing it replaces all it holds.
pub(crate) fn out_apart<M: Member>(config: &MergeConfig, found: &[M]) -> Result<OutFolder> {
    let folder = OutFolder::new(&config.out)?;
    // Replacing `--out` replaces all it holds: never a shard, or a folder inside one.
    let out = std::fs::canonicalize(&folder.parent)
        .map(|parent| parent.join(&folder.name))
        .unwrap_or_else(|_| folder.out.clone());
    for shard in found {
        let dir = std::fs::canonicalize(shard.dir()).unwrap_or_else(|_| shard.dir().to_path_buf());
        if dir.starts_with(&out) || out.starts_with(&dir) {
            return Err(Error::Usage {
                problem: format!(
                    "the merged folder `{}` {} {}: write the merge elsewhere",
                    config.out.display(),
                    if dir.starts_with(&out) {
                        "is or holds"
                    } else {
                        "lies inside"
                    },
                    shard.name()
                ),
            });
        }
    }
    Ok(folder)
}

/// Merges the folders of a whole run's shards into `config.out`.
fn merge_runs(config: &MergeConfig) -> Result<RunReport> {
    let mut found = config
        .shards
        .iter()
        .map(|dir| read_shard(dir))
        .collect::<Result<Vec<_>>>()?;
    found.sort_by_key(|f| f.section.index);
    check_together(&found)?;
    let first = &found[0].manifest;
    let card = load_card(config, &first.written_by.rate_card)?;
    let folder = out_apart(config, &found)?;
    if folder.out.join(write::STATE_DIR).is_dir() {
        return Err(Error::Usage {
            problem: format!(
                "refusing to replace `{}`: it holds a nightly history (`state/`); write the merge to a folder of its own",
                config.out.display()
            ),
        });
    }
    let _lock = folder.lock()?;
    if let Some(done) = folder.recover()? {
        tracing::warn!("{done} (beside `{}`)", config.out.display());
    }
    let mut staging = write::Staging::create(&folder, &card)?;

    let days: BTreeSet<i64> = found
        .iter()
        .flat_map(|f| f.section.days.iter())
        .flat_map(|[first, last]| day_number(*first)..=day_number(*last))
        .collect();
    let mut coverage = rating::Coverage::of_days(days);

    // The large tables a few row groups at a time: sessions, then violations, then units.
    progress::stage("merging sessions", None);
    let mut unsettled = BTreeSet::new();
    by_account(&found, write::SESSIONS_FILE, |sessions| {
        unsettled.extend(rating::unsettled(&sessions, &coverage)?);
        staging.append_sessions(&sessions)
    })?;
    coverage.unsettled = unsettled;
    by_account(&found, write::VIOLATIONS_FILE, |violations| {
        staging.append_violations(&violations)
    })?;
    if card.meta.is_some() {
        by_account(&found, write::META_UNITS_FILE, |units| {
            staging.append_meta(&units)
        })?;
    }

    let mut lines = Vec::new();
    by_account(&found, SHARD_LINES_FILE, |piece| {
        lines.push(piece);
        Ok(())
    })?;
    let lines = stacked(lines)?;
    let mut meta_lines = crate::meta::cost::Lines::new();
    for shard in &found {
        if shard.wrote(SHARD_META_LINES_FILE) {
            meta_lines.extend(read_meta_lines(&shard.verified(SHARD_META_LINES_FILE)?)?);
        }
    }
    let files = union_of_files(&found);
    let rejects = match found[0].wrote(write::REJECTS_FILE) {
        true => Some(merged_rejects(&found, &files)?),
        false => None,
    };
    let mut stats = InputStats::default();
    let mut session_stats = SessionStats::default();
    for shard in &found {
        let read = &shard.manifest.input.stats;
        stats.rows_read += read.rows_read;
        stats.duplicates_dropped += read.duplicates_dropped;
        stats.rows_rejected += read.rows_rejected;
        stats.rows_used += read.rows_used;
        for (reason, n) in &read.rejected_by_reason {
            *stats.rejected_by_reason.entry(reason.clone()).or_default() += n;
        }
        session_stats.add(&shard.manifest.sessions);
    }
    let shards = found
        .iter()
        .map(|f| MergedShard {
            shard: f.section.shard.clone(),
            path: f.dir.display().to_string(),
            manifest_sha256: f.manifest_sha256.clone(),
            nights: Default::default(),
        })
        .collect();
    progress::stage("writing outputs", None);
    crate::complete(
        &folder,
        &card,
        staging,
        crate::Reduced {
            input_path: first.input.path.clone(),
            files,
            stats,
            sessions: session_stats,
            lines,
            coverage,
            meta_lines,
            rejects,
            shard: None,
            shards,
        },
    )
}

/// Reads a shard's manifest; a folder that is not a whole run's shard is refused, named.
fn read_shard(dir: &Path) -> Result<Found> {
    let path = dir.join(write::MANIFEST_FILE);
    let bytes = std::fs::read(&path).map_err(|e| {
        refused(format!(
            "`{}` is not a convbill output folder: its manifest `{}` cannot be read ({e})",
            dir.display(),
            path.display()
        ))
    })?;
    let manifest: ShardManifest = serde_json::from_slice(&bytes).map_err(|e| {
        refused(format!(
            "`{}` is not a manifest this convbill can read ({e})",
            path.display()
        ))
    })?;
    let Some(section) = manifest.shard.clone() else {
        return Err(refused(format!(
            "`{}` is not a shard's output: its manifest has no `shard` section (run with `--shard I/N`)",
            dir.display()
        )));
    };
    use sha2::Digest;
    Ok(Found {
        dir: dir.to_path_buf(),
        manifest,
        section,
        manifest_sha256: hex::encode(sha2::Sha256::digest(&bytes)),
    })
}

/// What the shards of one merge share, whether whole runs' folders or nightly histories.
pub(crate) trait Member {
    /// `shard I/N (`DIR`)`.
    fn name(&self) -> String;
    fn dir(&self) -> &Path;
    fn shard(&self) -> crate::shard::Shard;
    fn written_by(&self) -> &WrittenBy;
    fn input_path(&self) -> &str;
    /// What to do when its card is not the others'.
    fn card_hint(&self) -> &'static str {
        ""
    }
}

impl Member for Found {
    fn name(&self) -> String {
        Found::name(self)
    }
    fn dir(&self) -> &Path {
        &self.dir
    }
    fn shard(&self) -> crate::shard::Shard {
        crate::shard::Shard {
            index: self.section.index,
            count: self.section.count,
        }
    }
    fn written_by(&self) -> &WrittenBy {
        &self.manifest.written_by
    }
    fn input_path(&self) -> &str {
        &self.manifest.input.path
    }
}

/// Checks that the shards (sorted by index) are one run's: the same count, every bucket once,
/// the same program, rule set, rate card, options and input.
fn check_together(found: &[Found]) -> Result<()> {
    check_members(found, same_options)?;
    check_inputs(found)
}

/// The shard was run with the options of the first.
fn same_options(shard: &Found, first: &Found) -> Result<()> {
    let rejects = shard.wrote(write::REJECTS_FILE);
    if rejects == first.wrote(write::REJECTS_FILE) {
        return Ok(());
    }
    let (with, without) = if rejects {
        (shard, first)
    } else {
        (first, shard)
    };
    Err(refused(format!(
        "{} set rows aside (`--rejects`) and {} did not: run every shard with the same options",
        with.name(),
        without.name()
    )))
}

/// Checks that the shards (sorted by index) belong together: the same count, every bucket
/// once, the same program, rule set, rate card, options (`options(shard, first)`) and input
/// path.
pub(crate) fn check_members<M: Member>(
    found: &[M],
    options: impl Fn(&M, &M) -> Result<()>,
) -> Result<()> {
    let first = &found[0];
    let count = first.shard().count;
    for shard in found {
        if shard.shard().count != count {
            return Err(refused(format!(
                "{} is one of {} shards, {} one of {count}: merge the shards of one run",
                shard.name(),
                shard.shard().count,
                first.name()
            )));
        }
    }
    for pair in found.windows(2) {
        if pair[0].shard().index == pair[1].shard().index {
            return Err(refused(format!(
                "shard {} is given twice: `{}` and `{}`",
                pair[0].shard(),
                pair[0].dir().display(),
                pair[1].dir().display()
            )));
        }
    }
    let have: BTreeSet<u32> = found.iter().map(|f| f.shard().index).collect();
    let missing: Vec<String> = (0..count)
        .filter(|i| !have.contains(i))
        .map(|i| format!("{i}/{count}"))
        .collect();
    if !missing.is_empty() {
        return Err(refused(format!(
            "shard{} {} {} missing: a merge needs all {count} shards",
            if missing.len() > 1 { "s" } else { "" },
            missing.join(", "),
            if missing.len() > 1 { "are" } else { "is" }
        )));
    }
    let current = write::Program::current();
    for shard in found {
        let WrittenBy {
            program,
            rule_set,
            rate_card: card,
        } = shard.written_by();
        if program.name != current.name || program.version != current.version {
            return Err(refused(format!(
                "{} was written by {} {}, this merge is {} {}: run every shard and the merge with one version",
                shard.name(),
                program.name,
                program.version,
                current.name,
                current.version
            )));
        }
        if rule_set != rating::RULE_SET {
            return Err(refused(format!(
                "{} was derived by rule set {}, this merge's is {}",
                shard.name(),
                rule_set,
                rating::RULE_SET
            )));
        }
        let first_card = &first.written_by().rate_card;
        if card.sha256 != first_card.sha256 {
            return Err(refused(format!(
                "{} was rated by another rate card than {}: {} (`{}`, fingerprint {}, against `{}`, {}; the fingerprint covers the card and the Meta price files it reads, each listed with its SHA-256 under the manifests' `rate_card`){}",
                shard.name(),
                first.name(),
                card.difference(first_card),
                card.source,
                card.sha256,
                first_card.source,
                first_card.sha256,
                shard.card_hint()
            )));
        }
        options(shard, first)?;
        if shard.input_path() != first.input_path() {
            return Err(refused(format!(
                "{} read the input `{}`, {} `{}`: merge the shards of one input",
                shard.name(),
                shard.input_path(),
                first.name(),
                first.input_path()
            )));
        }
    }
    Ok(())
}

/// Each input file a shard read: the same bytes in every shard that read it; a file in a
/// bucket's folder read by that bucket's shard alone, any other by every shard. And every shard
/// found the same files, read or not: a file that arrived in another bucket's folder after a
/// shard ran would be billed by no one.
fn check_inputs(found: &[Found]) -> Result<()> {
    let mut seen: BTreeMap<&str, (&Found, &FileRead)> = BTreeMap::new();
    for shard in found {
        for file in &shard.manifest.input.files {
            match seen.get(file.path.as_str()) {
                Some((other, theirs)) if theirs.sha256 != file.sha256 => {
                    return Err(refused(format!(
                        "the input file `{}` differs between {} (SHA-256 {}) and {} ({}): it changed while the shards ran; run them again",
                        file.path,
                        other.name(),
                        theirs.sha256,
                        shard.name(),
                        file.sha256
                    )));
                }
                Some(_) => {}
                None => {
                    seen.insert(&file.path, (shard, file));
                }
            }
        }
    }
    for (path, (reader, _)) in &seen {
        let bucket = layout_bucket(path);
        for shard in found {
            let read = shard.manifest.input.files.iter().any(|f| f.path == *path);
            let should = bucket.is_none_or(|b| b == shard.section.index);
            if read && !should {
                return Err(refused(format!(
                    "{} read `{path}`, which lies in the folder of bucket {}",
                    shard.name(),
                    bucket.unwrap_or_default()
                )));
            }
            if should && !read {
                return Err(refused(format!(
                    "{} did not read the input file `{path}`, which {} read: the input changed between the shards' runs (a file arrived late?); run them again",
                    shard.name(),
                    reader.name()
                )));
            }
        }
    }
    let first = &found[0];
    for shard in &found[1..] {
        let (theirs, ours) = (&first.section.found, &shard.section.found);
        if theirs != ours {
            let only = |a: &[write::FoundFile], b: &[write::FoundFile]| {
                a.iter().find(|f| !b.contains(f)).map(|f| f.path.clone())
            };
            let (file, seen, unseen) = match only(ours, theirs) {
                Some(file) => (file, shard, first),
                None => (only(theirs, ours).unwrap_or_default(), first, shard),
            };
            return Err(refused(format!(
                "{} found the input file `{file}` (or found it of another size) and {} did not: the input changed between the shards' runs (a file arrived late?); run them again",
                seen.name(),
                unseen.name()
            )));
        }
    }
    Ok(())
}

/// The bucket folder (`convbill_bucket=I`) of an input file's relative path, if any.
pub(crate) fn layout_bucket(path: &str) -> Option<u32> {
    let prefix = format!("{}=", crate::shard::LAYOUT_KEY);
    let mut parts: Vec<&str> = path.split('/').collect();
    parts.pop();
    parts
        .iter()
        .find_map(|p| p.strip_prefix(prefix.as_str()))
        .and_then(|b| b.parse().ok())
}

/// The input files of all shards, once each, in the order a run over the whole input lists
/// them (folder by folder, names in byte order).
fn union_of_files(found: &[Found]) -> Vec<InputFile> {
    let mut files: BTreeMap<Vec<String>, InputFile> = BTreeMap::new();
    for shard in found {
        for file in &shard.manifest.input.files {
            let key = file.path.split('/').map(str::to_string).collect();
            files.entry(key).or_insert_with(|| InputFile {
                path: file.path.clone(),
                bytes: file.bytes,
                sha256: file.sha256.clone(),
                rows: file.rows,
                ..Default::default()
            });
        }
    }
    files.into_values().collect()
}

/// Days since 1970-01-01.
fn day_number(day: chrono::NaiveDate) -> i64 {
    day.signed_duration_since(chrono::NaiveDate::default())
        .num_days()
}

pub(crate) fn read_table(path: &Path) -> Result<DataFrame> {
    let unreadable = |reason: String| {
        refused(format!(
            "the shard file `{}` cannot be read: {reason}",
            path.display()
        ))
    };
    let file = File::open(path).map_err(|e| unreadable(e.to_string()))?;
    ParquetReader::new(file)
        .finish()
        .map_err(|e| unreadable(e.to_string()))
}

/// The rows of `relative` of every shard, interleaved by `account_id` (each shard's in its
/// order, and each account in one shard), handed to `f` piece by piece in that order (no rows:
/// one empty piece). Only a row group or two of each shard is held at a time.
fn by_account(
    found: &[Found],
    relative: &str,
    f: impl FnMut(DataFrame) -> Result<()>,
) -> Result<()> {
    let paths = found
        .iter()
        .map(|shard| shard.verified(relative))
        .collect::<Result<Vec<_>>>()?;
    interleaved(&paths, f)
}

/// [`by_account`] of the tables at `paths`.
pub(crate) fn interleaved(
    paths: &[PathBuf],
    mut f: impl FnMut(DataFrame) -> Result<()>,
) -> Result<()> {
    let mut cursors = paths
        .iter()
        .map(|path| Cursor::open(path))
        .collect::<Result<Vec<_>>>()?;
    let mut handed = false;
    loop {
        crate::error::check_interrupt()?;
        for cursor in &mut cursors {
            while cursor.buffered() == 0 && !cursor.exhausted() {
                cursor.read_next()?;
            }
        }
        // Rows of accounts before the last one each shard still reading holds are complete.
        let bound = cursors
            .iter()
            .filter(|c| !c.exhausted())
            .filter_map(Cursor::last_account)
            .min();
        let mut pieces = Vec::new();
        for cursor in &mut cursors {
            pieces.extend(cursor.take_below(bound.as_deref())?);
        }
        if !pieces.is_empty() {
            let merged = stacked(pieces)?.sort(
                [schema::ACCOUNT_ID],
                SortMultipleOptions::default().with_maintain_order(true),
            )?;
            f(merged)?;
            handed = true;
        }
        let Some(bound) = bound else {
            if !handed {
                f(cursors[0].empty()?)?;
            }
            return Ok(());
        };
        // The shards whose rows reach the bound read on.
        for cursor in &mut cursors {
            if !cursor.exhausted() && cursor.last_account().as_deref() == Some(bound.as_str()) {
                cursor.read_next()?;
            }
        }
    }
}

/// Frames of one schema, one after the other.
pub(crate) fn stacked(frames: Vec<DataFrame>) -> Result<DataFrame> {
    let mut frames = frames.into_iter();
    let mut all = frames.next().expect("at least one frame");
    for frame in frames {
        all.vstack_mut(&frame)?;
    }
    Ok(all)
}

/// One shard's table (in account order), read a row group at a time.
struct Cursor {
    path: PathBuf,
    /// `(offset, rows)` of the row groups not read yet.
    groups: std::collections::VecDeque<(u64, u64)>,
    /// Rows read and not handed on yet.
    buffer: Option<DataFrame>,
}

impl Cursor {
    fn open(path: &Path) -> Result<Cursor> {
        let unreadable = |reason: String| {
            refused(format!(
                "the shard file `{}` cannot be read: {reason}",
                path.display()
            ))
        };
        let file = File::open(path).map_err(|e| unreadable(e.to_string()))?;
        let metadata = parquet::file::metadata::ParquetMetaDataReader::new()
            .parse_and_finish(&file)
            .map_err(|e| unreadable(e.to_string()))?;
        let mut offset = 0;
        let mut groups = std::collections::VecDeque::new();
        for group in metadata.row_groups() {
            let rows = group.num_rows().max(0) as u64;
            groups.push_back((offset, rows));
            offset += rows;
        }
        Ok(Cursor {
            path: path.to_path_buf(),
            groups,
            buffer: None,
        })
    }

    fn exhausted(&self) -> bool {
        self.groups.is_empty()
    }

    /// No rows, in the table's schema.
    fn empty(&self) -> Result<DataFrame> {
        load::scan_file(&self.path, None)
            .and_then(|scan| scan.slice(0, 0).collect())
            .map_err(|e| {
                refused(format!(
                    "the shard file `{}` cannot be read: {e}",
                    self.path.display()
                ))
            })
    }

    fn buffered(&self) -> usize {
        self.buffer.as_ref().map_or(0, DataFrame::height)
    }

    /// Reads the next row group into the buffer.
    fn read_next(&mut self) -> Result<()> {
        let Some((offset, rows)) = self.groups.pop_front() else {
            return Ok(());
        };
        let read = load::scan_file(&self.path, None)
            .and_then(|scan| scan.slice(offset as i64, rows as IdxSize).collect())
            .map_err(|e| {
                refused(format!(
                    "the shard file `{}` cannot be read: {e}",
                    self.path.display()
                ))
            })?;
        match &mut self.buffer {
            Some(buffer) if buffer.height() > 0 => {
                buffer.vstack_mut(&read)?;
            }
            _ => self.buffer = Some(read),
        }
        Ok(())
    }

    fn last_account(&self) -> Option<String> {
        let buffer = self.buffer.as_ref()?;
        let accounts = buffer.column(schema::ACCOUNT_ID).ok()?.str().ok()?;
        accounts
            .get(buffer.height().checked_sub(1)?)
            .map(str::to_string)
    }

    /// Hands on the buffered rows of accounts before `bound` (all of them without one).
    fn take_below(&mut self, bound: Option<&str>) -> Result<Option<DataFrame>> {
        let Some(buffer) = self.buffer.take() else {
            return Ok(None);
        };
        let cut = match bound {
            None => buffer.height(),
            Some(bound) => {
                let accounts = buffer.column(schema::ACCOUNT_ID)?.str()?;
                accounts
                    .iter()
                    .position(|a| a.is_some_and(|a| a >= bound))
                    .unwrap_or(buffer.height())
            }
        };
        let taken = buffer.slice(0, cut);
        let rest = buffer.slice(cut as i64, buffer.height() - cut);
        if rest.height() > 0 {
            self.buffer = Some(rest);
        } else {
            self.buffer = Some(rest.clear());
        }
        Ok((taken.height() > 0).then_some(taken))
    }
}

/// The shards' `rejects.parquet` together, in file and row order over the whole input.
fn merged_rejects(found: &[Found], files: &[InputFile]) -> Result<DataFrame> {
    let frames = found
        .iter()
        .map(|shard| read_table(&shard.verified(write::REJECTS_FILE)?))
        .collect::<Result<Vec<_>>>()?;
    let paths: Vec<&str> = files.iter().map(|f| f.path.as_str()).collect();
    in_file_order(frames, &paths)
}

/// Rows set aside (of one schema) together, in the order of their files in `paths`, then of
/// their rows.
pub(crate) fn in_file_order(frames: Vec<DataFrame>, paths: &[&str]) -> Result<DataFrame> {
    let all = stacked(frames)?;
    let rank: BTreeMap<&str, u32> = paths
        .iter()
        .enumerate()
        .map(|(i, path)| (*path, i as u32))
        .collect();
    let order: Vec<Option<u32>> = all
        .column(load::FILE)?
        .str()?
        .iter()
        .map(|path| path.and_then(|p| rank.get(p).copied()))
        .collect();
    let mut keyed = all.clone();
    keyed.with_column(Column::new("__file_rank".into(), order))?;
    Ok(keyed
        .sort(
            ["__file_rank", load::ROW],
            SortMultipleOptions::default().with_maintain_order(true),
        )?
        .drop("__file_rank")?)
}

/// A run's Meta cost lines as JSON rows (as a nightly state keeps them), for
/// `shard/meta_cost_lines.json`.
pub fn meta_lines_json(lines: &crate::meta::cost::Lines) -> Vec<u8> {
    let mut json =
        serde_json::to_vec(&crate::meta::cost::to_state(lines)).expect("cost lines serialize");
    json.push(b'\n');
    json
}

/// Reads `shard/meta_cost_lines.json` back.
fn read_meta_lines(path: &Path) -> Result<crate::meta::cost::Lines> {
    let bad = |reason: String| {
        refused(format!(
            "the shard file `{}` cannot be read: {reason}",
            path.display()
        ))
    };
    let bytes = std::fs::read(path).map_err(|e| bad(e.to_string()))?;
    let state = serde_json::from_slice(&bytes).map_err(|e| bad(e.to_string()))?;
    let mut lines = crate::meta::cost::Lines::new();
    crate::meta::cost::add_state(&mut lines, state).map_err(bad)?;
    Ok(lines)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_folders_are_recognised_in_paths() {
        assert_eq!(layout_bucket("convbill_bucket=3/part-0.parquet"), Some(3));
        assert_eq!(
            layout_bucket("day=1/convbill_bucket=12/a.parquet"),
            Some(12)
        );
        assert_eq!(layout_bucket("convbill_bucket=3.parquet"), None);
        assert_eq!(layout_bucket("logs/part-0.parquet"), None);
    }

    /// Tables of several row groups, accounts spanning them: interleaved by account, each
    /// table's rows in their order, a row group or so at a time.
    #[test]
    fn tables_interleave_by_account_across_row_groups() {
        let dir = tempfile::tempdir().unwrap();
        let tables = [
            vec![
                ("a", 1),
                ("a", 2),
                ("a", 3),
                ("a", 4),
                ("d", 5),
                ("g", 6),
                ("g", 7),
            ],
            vec![
                ("b", 8),
                ("c", 9),
                ("c", 10),
                ("c", 11),
                ("c", 12),
                ("c", 13),
                ("h", 14),
            ],
            vec![],
            vec![
                ("e", 15),
                ("f", 16),
                ("i", 17),
                ("i", 18),
                ("i", 19),
                ("i", 20),
                ("i", 21),
            ],
        ];
        let mut paths = Vec::new();
        for (i, rows) in tables.iter().enumerate() {
            let mut frame = df!(
                schema::ACCOUNT_ID => rows.iter().map(|r| r.0).collect::<Vec<_>>(),
                "n" => rows.iter().map(|r| r.1).collect::<Vec<_>>(),
            )
            .unwrap();
            let path = dir.path().join(format!("{i}.parquet"));
            ParquetWriter::new(File::create(&path).unwrap())
                .with_row_group_size(Some(2))
                .finish(&mut frame)
                .unwrap();
            paths.push(path);
        }
        let mut pieces = Vec::new();
        interleaved(&paths, |piece| {
            pieces.push(piece);
            Ok(())
        })
        .unwrap();
        assert!(pieces.len() > 3, "{} pieces", pieces.len());
        assert!(pieces.iter().all(|p| p.height() <= 8));
        let all = stacked(pieces).unwrap();
        let accounts: Vec<&str> = all
            .column(schema::ACCOUNT_ID)
            .unwrap()
            .str()
            .unwrap()
            .iter()
            .map(Option::unwrap)
            .collect();
        let n: Vec<i64> = all
            .column("n")
            .unwrap()
            .i64()
            .unwrap()
            .into_no_null_iter()
            .collect();
        let mut expected: Vec<(&str, i64)> = tables.iter().flatten().copied().collect();
        expected.sort_by_key(|r| r.0);
        assert_eq!(accounts.into_iter().zip(n).collect::<Vec<_>>(), expected);

        // No rows at all: one empty piece, in the tables' schema.
        let mut pieces = Vec::new();
        interleaved(&paths[2..3], |piece| {
            pieces.push(piece);
            Ok(())
        })
        .unwrap();
        assert_eq!(pieces.len(), 1);
        assert_eq!(pieces[0].height(), 0);
        assert_eq!(pieces[0].width(), 2);
    }

    #[test]
    fn days_are_numbered_from_the_epoch() {
        let day = |s: &str| day_number(s.parse().unwrap());
        assert_eq!(day("1970-01-01"), 0);
        assert_eq!(day("2025-06-01"), 20_240);
        assert_eq!(day("1969-12-31"), -1);
    }
}
