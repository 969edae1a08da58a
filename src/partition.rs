//! Partition: the validated log, chunk by chunk, in; groups of whole accounts out, one group
//! at a time, each small enough to derive on its own.
//!
//! Everything convbill derives stays inside one account: conversation keys start with
//! `account_id`, duplicates are one (`account_id`, `message_id`), invoices are per account.
//! So a log can be cut into groups of consecutive accounts (in `account_id` order) and each
//! group derived, rated and written before the next is read: peak memory follows the largest
//! group instead of the whole log, and the outputs, concatenated in group order, are in the
//! same order as one pass over everything would give.
//!
//! With one group the chunks stay in memory. With several, each chunk is split by group as it
//! is read and appended to one uncompressed Parquet spill file per group, in a hidden folder
//! beside the output folder that is removed when the run ends, whether it succeeds or not.

use std::fs::File;
use std::io::BufWriter;
use std::path::{Path, PathBuf};

use polars::prelude::*;

use crate::error::Result;
use crate::folder::{io_error, write_error};
use crate::load;
use crate::schema;

/// Rows a group holds at most, unless one account alone holds more. Smaller groups need less
/// memory and are also faster (their hash tables fit the caches better), down to about a
/// million rows.
pub const DEFAULT_MAX_ROWS: u64 = 1_000_000;

/// Rows of a log that is kept in memory, split by group, instead of spilled to disk (about
/// 3 GB of rows in the loader's schema), unless `--memory-rows` says otherwise.
pub const IN_MEMORY_ROWS: u64 = 25_000_000;

/// Groups at most: a larger log gets larger groups, so that the spill files stay few.
pub const MAX_GROUPS: u64 = 512;

/// Which accounts are derived together.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// Groups of consecutive accounts, in `account_id` order; never empty (a log without
    /// rows has one empty group).
    pub groups: Vec<Vec<String>>,
    /// Rows in each group.
    pub rows: Vec<u64>,
    /// The most rows a group holds unless one account alone holds more.
    pub max_rows: u64,
}

/// Cuts accounts (sorted by `account_id`, with their rows) into consecutive groups of at
/// most `max_rows` rows (or the total over [`MAX_GROUPS`], if larger); an account with more
/// rows than that is a group of its own.
pub fn plan(account_rows: &[(String, u64)], max_rows: u64) -> Plan {
    let total: u64 = account_rows.iter().map(|(_, rows)| rows).sum();
    let max_rows = max_rows.max(total.div_ceil(MAX_GROUPS));
    let mut plan = Plan {
        groups: vec![Vec::new()],
        rows: vec![0],
        max_rows,
    };
    for (account, rows) in account_rows {
        let last = plan.rows.len() - 1;
        if !plan.groups[last].is_empty() && plan.rows[last] + rows > max_rows {
            plan.groups.push(Vec::new());
            plan.rows.push(0);
        }
        let last = plan.rows.len() - 1;
        plan.groups[last].push(account.clone());
        plan.rows[last] += rows;
    }
    plan
}

impl Plan {
    /// Rows the groups at work together may hold ([`in_order`]'s budget): `workers` groups of
    /// [`Plan::max_rows`], or the largest group and `workers - 1` such groups if more. A group
    /// larger than the others (one large account) then leaves no core idle beside it, while
    /// two such groups are never derived at once.
    pub fn budget_rows(&self, workers: usize) -> u64 {
        let largest = self.rows.iter().copied().max().unwrap_or(0);
        let others = workers.saturating_sub(1) as u64 * self.max_rows;
        (largest + others).max(workers as u64 * self.max_rows)
    }
}

/// Chunks in, groups out: see the module documentation.
pub struct Parts {
    groups: usize,
    /// Rows in each group, as planned.
    rows: Vec<u64>,
    storage: Storage,
    /// The chunks' schema, for a group left without rows (all of them rejected).
    schema: Option<Schema>,
}

enum Storage {
    Memory(Vec<DataFrame>),
    /// A log of at most `in_memory_rows` rows: each chunk split by group, kept in memory.
    Split {
        group_of: PlHashMap<String, u32>,
        pieces: Vec<Vec<DataFrame>>,
    },
    Spill {
        /// Removed on drop.
        dir: SpillDir,
        /// `account_id` → group.
        group_of: PlHashMap<String, u32>,
        writers: Vec<Option<SpillWriter>>,
    },
}

impl Parts {
    /// Prepares to receive chunks for `plan`; spill files, if needed, go into the folder
    /// `spill_dir` (replaced if a killed run left it, removed when done).
    pub fn new(plan: &Plan, spill_dir: &Path, in_memory_rows: u64) -> Result<Self> {
        let groups = plan.groups.len();
        if groups == 1 {
            return Ok(Parts {
                groups,
                rows: plan.rows.clone(),
                storage: Storage::Memory(Vec::new()),
                schema: None,
            });
        }
        let group_of = plan
            .groups
            .iter()
            .enumerate()
            .flat_map(|(g, accounts)| accounts.iter().map(move |a| (a.clone(), g as u32)))
            .collect();
        if plan.rows.iter().sum::<u64>() <= in_memory_rows {
            return Ok(Parts {
                groups,
                rows: plan.rows.clone(),
                schema: None,
                storage: Storage::Split {
                    group_of,
                    pieces: vec![Vec::new(); groups],
                },
            });
        }
        let dir = SpillDir::create(spill_dir)?;
        Ok(Parts {
            groups,
            rows: plan.rows.clone(),
            schema: None,
            storage: Storage::Spill {
                dir,
                group_of,
                writers: (0..groups).map(|_| None).collect(),
            },
        })
    }

    /// Number of groups.
    pub fn groups(&self) -> usize {
        self.groups
    }

    /// Takes one validated chunk (the loader's schema).
    pub fn push(&mut self, chunk: DataFrame) -> Result<()> {
        if self.schema.is_none() {
            self.schema = Some(chunk.schema().as_ref().clone());
        }
        match &mut self.storage {
            Storage::Memory(chunks) => chunks.push(chunk),
            Storage::Split { group_of, pieces } => {
                for (group, piece) in split(&chunk, group_of, pieces.len())? {
                    pieces[group].push(piece);
                }
            }
            Storage::Spill {
                dir,
                group_of,
                writers,
            } => {
                let mut pieces = split(&chunk, group_of, writers.len())?;
                pieces.sort_by_key(|(_, piece)| std::cmp::Reverse(piece.height()));
                let mut bins: [Vec<(usize, DataFrame, Option<SpillWriter>)>; 2] =
                    Default::default();
                let mut loads = [0usize; 2];
                for (group, piece) in pieces {
                    let bin = if loads[0] <= loads[1] { 0 } else { 1 };
                    loads[bin] += piece.height();
                    let writer = writers[group].take();
                    bins[bin].push((group, piece, writer));
                }
                let dir = dir.path();
                let written: Vec<Result<Vec<(usize, SpillWriter)>>> = std::thread::scope(|scope| {
                    let handles: Vec<_> = bins
                        .into_iter()
                        .map(|bin| scope.spawn(move || write_pieces(dir, bin)))
                        .collect();
                    handles
                        .into_iter()
                        .map(|h| h.join().expect("spill writing does not panic"))
                        .collect()
                });
                for bin in written {
                    for (group, writer) in bin? {
                        writers[group] = Some(writer);
                    }
                }
            }
        }
        Ok(())
    }

    /// Ends the input; the groups can now be read, in any order.
    pub fn finish(self) -> Result<Groups> {
        let storage = match self.storage {
            Storage::Memory(chunks) if chunks.is_empty() => {
                GroupStorage::Memory(Some(load::empty_rows()))
            }
            Storage::Memory(chunks) => GroupStorage::Memory(Some(load::concat_frames(chunks)?)),
            Storage::Split { pieces, .. } => GroupStorage::Split {
                pieces,
                schema: self
                    .schema
                    .unwrap_or_else(|| load::empty_rows().schema().as_ref().clone()),
            },
            Storage::Spill { dir, writers, .. } => {
                let mut present = Vec::with_capacity(writers.len());
                for (group, writer) in writers.into_iter().enumerate() {
                    present.push(match writer {
                        Some(writer) => {
                            let path = spill_path(dir.path(), group);
                            writer.finish().map_err(write_error(&path))?;
                            true
                        }
                        None => false,
                    });
                }
                GroupStorage::Spill {
                    dir,
                    present,
                    schema: self
                        .schema
                        .unwrap_or_else(|| load::empty_rows().schema().as_ref().clone()),
                }
            }
        };
        Ok(Groups {
            started: vec![false; self.groups],
            rows: self.rows,
            storage,
        })
    }
}

/// The chunk's rows by group, for the groups that have rows (rows keep their order within a
/// group). Each piece of the chunk as it was read (one Parquet row group) is put in group order
/// by one gather and cut into its groups' slices: a gather within one piece moves only the
/// strings' views, while one across pieces would copy every string.
fn split(
    chunk: &DataFrame,
    group_of: &PlHashMap<String, u32>,
    groups: usize,
) -> Result<Vec<(usize, DataFrame)>> {
    let accounts = chunk.column(schema::ACCOUNT_ID)?.str()?;
    let mut pieces: Vec<Vec<DataFrame>> = vec![Vec::new(); groups];
    let mut rows_of: Vec<Vec<IdxSize>> = vec![Vec::new(); groups];
    let mut start = 0;
    for array in accounts.downcast_iter() {
        for rows in &mut rows_of {
            rows.clear();
        }
        for (row, account) in array.iter().enumerate() {
            let group = account.and_then(|a| group_of.get(a)).ok_or_else(|| {
                PolarsError::ComputeError(
                    format!("account {account:?} is missing from the partition plan").into(),
                )
            })?;
            rows_of[*group as usize].push(row as IdxSize);
        }
        let order = IdxCa::from_vec(PlSmallStr::EMPTY, rows_of.concat());
        let ordered = chunk.slice(start as i64, array.len()).take(&order)?;
        start += array.len();
        let mut offset = 0;
        for (group, rows) in rows_of.iter().enumerate() {
            if !rows.is_empty() {
                pieces[group].push(ordered.slice(offset as i64, rows.len()));
                offset += rows.len();
            }
        }
    }
    pieces
        .into_iter()
        .enumerate()
        .filter(|(_, pieces)| !pieces.is_empty())
        .map(|(group, pieces)| Ok((group, load::concat_frames(pieces)?)))
        .collect()
}

type SpillWriter = crate::write::Encoder<BufWriter<File>>;

/// Appends each piece to its group's spill file, creating the file on first use.
fn write_pieces(
    dir: &Path,
    pieces: Vec<(usize, DataFrame, Option<SpillWriter>)>,
) -> Result<Vec<(usize, SpillWriter)>> {
    let mut writers = Vec::with_capacity(pieces.len());
    for (group, mut piece, writer) in pieces {
        let path = spill_path(dir, group);
        let mut writer = match writer {
            Some(writer) => writer,
            None => {
                let file = File::create(&path).map_err(io_error(&path))?;
                // Not compressed: the dictionaries the writer builds already make the files
                // about as small as LZ4 would (3.5 against 3.2 GB at 100M rows), at a sixth
                // less of the reading stage's time. Message ids hardly repeat: they are
                // written plain, without hashing each to find out.
                crate::write::Encoder::new(
                    BufWriter::new(file),
                    piece.schema(),
                    ParquetCompression::Uncompressed,
                    StatisticsOptions::empty(),
                    |name, _| match name == schema::MESSAGE_ID {
                        true => crate::write::Layout::Plain,
                        false => crate::write::Layout::Polars,
                    },
                )
                .map_err(write_error(&path))?
            }
        };
        // One row group per piece, not one per piece of the chunk as read.
        piece.rechunk_mut();
        writer.write(&piece).map_err(write_error(&path))?;
        writers.push((group, writer));
    }
    Ok(writers)
}

/// The groups of a partitioned log, read one at a time.
pub struct Groups {
    /// Which groups [`Groups::take`] gave out.
    started: Vec<bool>,
    /// Rows in each group, as planned.
    rows: Vec<u64>,
    storage: GroupStorage,
}

enum GroupStorage {
    Memory(Option<DataFrame>),
    Split {
        pieces: Vec<Vec<DataFrame>>,
        schema: Schema,
    },
    Spill {
        dir: SpillDir,
        present: Vec<bool>,
        schema: Schema,
    },
}

impl Groups {
    /// The group to derive next, given the rows `busy` holds: the first group not started if
    /// it fits in `budget_rows` beside the groups at work (or none is at work); otherwise the
    /// first later one that fits beside the groups at work and the results not yet taken.
    /// `None`: wait for room. `Some(None)`: every group has started.
    fn choose(&self, busy: &Busy, budget_rows: u64) -> Option<Option<usize>> {
        let mut waiting = (0..self.started.len()).filter(|&g| !self.started[g]);
        let Some(first) = waiting.next() else {
            return Some(None);
        };
        if busy.at_work == 0 || busy.at_work + self.rows[first] <= budget_rows {
            return Some(Some(first));
        }
        let held = busy.at_work + busy.untaken;
        waiting
            .find(|&g| held + self.rows[g] <= budget_rows)
            .map(Some)
    }

    /// The rows of group `group` (the loader's schema). A spill file is removed once read.
    fn take(&mut self, group: usize) -> Result<DataFrame> {
        assert!(!self.started[group], "a group is taken once");
        self.started[group] = true;
        match &mut self.storage {
            GroupStorage::Memory(frame) => Ok(frame.take().expect("one group, taken once")),
            GroupStorage::Split { pieces, schema } => {
                let pieces = std::mem::take(&mut pieces[group]);
                match pieces.is_empty() {
                    // Every row of the group's accounts was set aside (`--rejects`).
                    true => Ok(DataFrame::empty_with_schema(schema)),
                    false => load::concat_frames(pieces),
                }
            }
            GroupStorage::Spill {
                dir,
                present,
                schema,
            } => {
                if !present[group] {
                    // Every row of the group's accounts was set aside (`--rejects`).
                    return Ok(DataFrame::empty_with_schema(schema));
                }
                let path = spill_path(dir.path(), group);
                let file = File::open(&path).map_err(io_error(&path))?;
                let frame = ParquetReader::new(file).finish()?;
                std::fs::remove_file(&path).map_err(io_error(&path))?;
                Ok(frame)
            }
        }
    }
}

/// Rows of the groups at work, and of the results not yet taken.
#[derive(Debug, Default)]
struct Busy {
    at_work: u64,
    untaken: u64,
}

/// Runs `work` on every group (its index and rows), up to `workers` groups at a time, and hands
/// the results to `take` in group order. A group starts only while the groups at work hold at
/// most `budget_rows` rows with it, or when none is at work: two accounts larger than the
/// groups are never derived at once. While the next group waits for room, a later one that
/// fits beside the groups at work and the results not yet taken goes first, so that a large
/// account does not leave a core idle and the results held stay within the budget too. Stops
/// at the first error in group order (so the error reported is the same whatever the timing),
/// or when the run is interrupted.
pub fn in_order<T: Send>(
    groups: Groups,
    workers: usize,
    budget_rows: u64,
    work: impl Fn(usize, DataFrame) -> Result<T> + Sync,
    mut take: impl FnMut(usize, T) -> Result<()>,
) -> Result<()> {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    let rows_of = groups.rows.clone();
    let groups = std::sync::Mutex::new(groups);
    // Rows of the groups at work and of the results not yet taken, and a signal when some
    // are done or taken, or the run stops.
    let busy_rows = std::sync::Mutex::new(Busy::default());
    let room = std::sync::Condvar::new();
    // No group after the first one that failed is started.
    let first_failed = AtomicUsize::new(usize::MAX);
    // Set when results are no longer taken: workers stop waiting for room.
    let stopped = AtomicBool::new(false);
    struct Stop<'a>(
        &'a AtomicBool,
        &'a std::sync::Mutex<Busy>,
        &'a std::sync::Condvar,
    );
    impl Drop for Stop<'_> {
        fn drop(&mut self) {
            let _busy = self.1.lock();
            self.0.store(true, Ordering::SeqCst);
            self.2.notify_all();
        }
    }
    std::thread::scope(|scope| -> Result<()> {
        let (done, results) = std::sync::mpsc::sync_channel::<(usize, Result<T>)>(workers);
        for _ in 0..workers.max(1) {
            let (done, groups, work, first_failed, busy_rows, room, stopped) = (
                done.clone(),
                &groups,
                &work,
                &first_failed,
                &busy_rows,
                &room,
                &stopped,
            );
            scope.spawn(move || loop {
                if let Err(e) = crate::error::check_interrupt() {
                    let _ = done.send((usize::MAX, Err(e)));
                    return;
                }
                let (index, rows, frame) = {
                    // Holding the groups, this worker alone waits for room.
                    let mut groups = groups.lock().expect("no worker panicked");
                    let mut busy = busy_rows.lock().expect("no worker panicked");
                    let index = loop {
                        if stopped.load(Ordering::SeqCst) {
                            return;
                        }
                        match groups.choose(&busy, budget_rows) {
                            Some(index) => break index,
                            None => busy = room.wait(busy).expect("no worker panicked"),
                        }
                    };
                    let Some(index) = index else {
                        return;
                    };
                    if index > first_failed.load(Ordering::SeqCst) {
                        return;
                    }
                    let rows = groups.rows[index];
                    busy.at_work += rows;
                    drop(busy);
                    let frame = crate::sessions::timed("read a group", || groups.take(index));
                    (index, rows, frame)
                };
                let result = frame.and_then(|frame| work(index, frame));
                {
                    let mut busy = busy_rows.lock().expect("no worker panicked");
                    busy.at_work -= rows;
                    busy.untaken += rows;
                }
                room.notify_all();
                if result.is_err() {
                    // The groups before this one still run: the error reported is the first.
                    first_failed.fetch_min(index, Ordering::SeqCst);
                }
                if done.send((index, result)).is_err() {
                    return;
                }
            });
        }
        drop(done);
        let _stop = Stop(&stopped, &busy_rows, &room);
        // Results arrive in any order; they are taken in group order. Returning early stops
        // the workers before their next group.
        let mut waiting = std::collections::BTreeMap::new();
        let mut next = 0;
        for (index, result) in results {
            if index == usize::MAX {
                return result.map(|_| ());
            }
            waiting.insert(index, result);
            while let Some(result) = waiting.remove(&next) {
                take(next, result?)?;
                busy_rows.lock().expect("no worker panicked").untaken -= rows_of[next];
                room.notify_all();
                next += 1;
            }
        }
        // Every group before the first that failed ran, so a result left waiting is an error.
        match waiting.into_values().next() {
            Some(result) => result.map(|_| ()),
            None => Ok(()),
        }
    })
}

/// The spill folder: created empty, removed on drop (success, error or panic).
struct SpillDir(PathBuf);

impl SpillDir {
    fn create(path: &Path) -> Result<Self> {
        if path.exists() {
            std::fs::remove_dir_all(path).map_err(io_error(path))?;
        }
        std::fs::create_dir_all(path).map_err(io_error(path))?;
        Ok(SpillDir(path.to_path_buf()))
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for SpillDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn spill_path(dir: &Path, group: usize) -> PathBuf {
    dir.join(format!("group-{group:05}.parquet"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn accounts(rows: &[(&str, u64)]) -> Vec<(String, u64)> {
        rows.iter().map(|(a, r)| (a.to_string(), *r)).collect()
    }

    #[test]
    fn spilled_message_ids_are_plain_and_the_rest_may_be_dictionaries() {
        let dir = tempfile::tempdir().unwrap();
        let rows = 300;
        let piece = DataFrame::new(
            rows,
            vec![
                Column::new(
                    schema::MESSAGE_ID.into(),
                    // Repeated, so only the rule, not their number, keeps them plain.
                    (0..rows)
                        .map(|i| format!("wamid.{:08}", i % 10))
                        .collect::<Vec<_>>(),
                ),
                Column::new(schema::ACCOUNT_ID.into(), vec!["acct-0001"; rows]),
            ],
        )
        .unwrap();
        let written = write_pieces(dir.path(), vec![(3, piece.clone(), None)]).unwrap();
        let (group, writer) = written.into_iter().next().unwrap();
        writer.finish().unwrap();
        let path = spill_path(dir.path(), group);
        // Message ids plain; a repeated account a dictionary.
        assert_eq!(crate::write::dictionary_encoded(&path), [false, true]);
        let read = ParquetReader::new(File::open(&path).unwrap())
            .finish()
            .unwrap();
        assert!(read.equals(&piece));
    }

    #[test]
    fn groups_are_consecutive_accounts_under_the_limit() {
        let plan = plan(&accounts(&[("a", 3), ("b", 4), ("c", 2), ("d", 1)]), 7);
        assert_eq!(plan.groups, vec![vec!["a", "b"], vec!["c", "d"]]);
        assert_eq!(plan.rows, vec![7, 3]);
    }

    #[test]
    fn an_account_over_the_limit_is_a_group_of_its_own() {
        let plan = plan(&accounts(&[("a", 1), ("big", 20), ("c", 1)]), 5);
        assert_eq!(plan.groups, vec![vec!["a"], vec!["big"], vec!["c"]]);
    }

    #[test]
    fn groups_grow_to_keep_their_number_bounded() {
        let many: Vec<(String, u64)> = (0..2 * MAX_GROUPS)
            .map(|i| (format!("a{i:05}"), 1))
            .collect();
        let plan = plan(&many, 1);
        assert_eq!(plan.groups.len() as u64, MAX_GROUPS);
        assert!(plan.rows.iter().all(|r| *r == 2));
    }

    /// The groups of a log of `rows` (account, rows), planned with `max_rows`.
    fn groups_of(rows: &[(&str, u64)], max_rows: u64) -> Groups {
        let plan = plan(&accounts(rows), max_rows);
        let dir = tempfile::tempdir().unwrap();
        let mut parts = Parts::new(&plan, &dir.path().join("spill"), u64::MAX).unwrap();
        let ids: Vec<&str> = rows
            .iter()
            .flat_map(|(a, n)| std::iter::repeat_n(*a, *n as usize))
            .collect();
        parts
            .push(
                DataFrame::new(ids.len(), vec![Column::new(schema::ACCOUNT_ID.into(), ids)])
                    .unwrap(),
            )
            .unwrap();
        parts.finish().unwrap()
    }

    /// A signal from one group's work to another's: [`Signal::give`], and [`Signal::wait`]
    /// (at most a minute, then an error, so that a test that fails does not hang).
    struct Signal(
        std::sync::Mutex<std::sync::mpsc::Sender<()>>,
        std::sync::Mutex<std::sync::mpsc::Receiver<()>>,
    );

    impl Signal {
        fn new() -> Signal {
            let (give, wait) = std::sync::mpsc::channel();
            Signal(std::sync::Mutex::new(give), std::sync::Mutex::new(wait))
        }

        fn give(&self) {
            self.0.lock().unwrap().send(()).unwrap();
        }

        fn wait(&self) -> Result<()> {
            let wait = self.1.lock().unwrap();
            wait.recv_timeout(std::time::Duration::from_secs(60))
                .map_err(|_| crate::Error::Interrupted)
        }
    }

    /// Two groups that do not fit together in a budget of 5 rows, then two small ones.
    const LARGE_THEN_SMALL: [(&str, u64); 4] = [("a", 4), ("b", 4), ("c", 1), ("d", 1)];

    /// Runs [`in_order`] on `groups` with two workers and `budget` rows, calling `during` in
    /// each group's work: the (group, rows) taken, in order, and the most rows at work at once.
    fn run_watched(
        groups: Groups,
        budget: u64,
        during: impl Fn(usize) -> Result<()> + Sync,
    ) -> (Vec<(usize, u64)>, u64) {
        use std::sync::atomic::{AtomicU64, Ordering};
        let (at_work, most) = (AtomicU64::new(0), AtomicU64::new(0));
        let mut order = Vec::new();
        in_order(
            groups,
            2,
            budget,
            |index, frame| {
                let n = frame.height() as u64;
                most.fetch_max(at_work.fetch_add(n, Ordering::SeqCst) + n, Ordering::SeqCst);
                during(index)?;
                at_work.fetch_sub(n, Ordering::SeqCst);
                Ok(n)
            },
            |index, n| {
                order.push((index, n));
                Ok(())
            },
        )
        .unwrap();
        (order, most.into_inner())
    }

    #[test]
    fn groups_larger_than_the_budget_are_never_at_work_together() {
        let groups = groups_of(&[("a", 5), ("b", 5), ("c", 1), ("d", 1), ("e", 1)], 1);
        let (order, most) = run_watched(groups, 2, |_| {
            std::thread::sleep(std::time::Duration::from_millis(30));
            Ok(())
        });
        assert_eq!(order, vec![(0, 5), (1, 5), (2, 1), (3, 1), (4, 1)]);
        assert_eq!(most, 5);
    }

    #[test]
    fn a_later_group_that_fits_goes_first_and_results_come_in_order() {
        // a and b do not fit together; c fits beside a, d not beside a and c's result.
        let c_started = Signal::new();
        let (order, most) = run_watched(groups_of(&LARGE_THEN_SMALL, 1), 5, |index| {
            match index {
                // a is done only once c has started beside it.
                0 => c_started.wait()?,
                2 => c_started.give(),
                _ => {}
            }
            Ok(())
        });
        assert_eq!(order, vec![(0, 4), (1, 4), (2, 1), (3, 1)]);
        assert_eq!(most, 5);
    }

    #[test]
    fn the_error_reported_is_the_first_in_group_order_when_a_later_group_failed_first() {
        let c_failed = Signal::new();
        let failure = |group: &str| crate::Error::Output {
            path: PathBuf::from(group),
            source: std::io::Error::other("failed"),
        };
        let mut taken = Vec::new();
        let result = in_order(
            groups_of(&LARGE_THEN_SMALL, 1),
            2,
            5,
            |index, _| match index {
                // c, started beside a, fails before a is done and b starts; b fails too.
                0 => c_failed.wait().map(|_| index),
                1 => Err(failure("b")),
                2 => {
                    c_failed.give();
                    Err(failure("c"))
                }
                _ => Ok(index),
            },
            |index, _| {
                taken.push(index);
                Ok(())
            },
        );
        match result {
            Err(crate::Error::Output { path, .. }) => assert_eq!(path, PathBuf::from("b")),
            other => panic!("{other:?}"),
        }
        assert_eq!(taken, vec![0]);
    }

    #[test]
    fn the_budget_holds_the_largest_group_beside_a_usual_one() {
        let plan = plan(&accounts(&[("a", 9), ("b", 1), ("c", 5), ("d", 2)]), 3);
        assert_eq!(plan.rows, vec![9, 1, 5, 2]);
        // a and b or d, never a and c.
        assert_eq!(plan.budget_rows(2), 12);
        assert_eq!(plan.budget_rows(1), 9);
        let small = super::plan(&accounts(&[("a", 1), ("b", 1)]), 3);
        assert_eq!(small.budget_rows(2), 6);
    }

    #[test]
    fn no_accounts_make_one_empty_group() {
        let plan = plan(&[], 5);
        assert_eq!(plan.groups, vec![Vec::<String>::new()]);
        assert_eq!(plan.rows, vec![0]);
    }
}
