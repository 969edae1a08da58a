//! The benchmark's floor: the least any session derivation has to do. polars reads the columns
//! the rules need; each row's conversation key (`account_id`, `channel`, `business_id`,
//! `user_id`) is hashed to one number (on both cores); the rows are sorted by (hash, time).
//!
//! `cargo bench --bench floor -- FILE` prints the wall time in seconds on stdout.

use std::hash::BuildHasher;
use std::time::Instant;

use polars::prelude::*;

const COLUMNS: [&str; 9] = [
    "account_id",
    "channel",
    "business_id",
    "user_id",
    "timestamp",
    "direction",
    "kind",
    "status",
    "message_id",
];

fn main() -> PolarsResult<()> {
    let path = std::env::args()
        .nth(1)
        .filter(|a| a != "--bench")
        .or_else(|| std::env::args().nth(2))
        .expect("usage: floor FILE");
    let started = Instant::now();
    let mut frame = LazyFrame::scan_parquet(PlRefPath::new(&path), ScanArgsParquet::default())?
        .select(COLUMNS.map(col))
        .collect()?;
    frame.rechunk_mut();
    eprintln!("floor: read in {:.3} s", started.elapsed().as_secs_f64());
    let hashes = key_hashes(&frame)?;
    eprintln!("floor: hashed in {:.3} s", started.elapsed().as_secs_f64());
    // The order is what a derivation needs: rows by (hash, time), the row number last for a
    // fixed order; the string columns are not moved. Two halves sorted on two threads, merged.
    let times = frame.column("timestamp")?.to_physical_repr();
    let mut keys: Vec<(u64, i64, u32)> = hashes
        .iter()
        .zip(times.i64()?.iter())
        .enumerate()
        .map(|(row, (hash, time))| (*hash, time.unwrap_or(i64::MIN), row as u32))
        .collect();
    let middle = keys.len() / 2;
    let (left, right) = keys.split_at_mut(middle);
    std::thread::scope(|scope| {
        scope.spawn(|| left.sort_unstable());
        right.sort_unstable();
    });
    let order = merge(&keys[..middle], &keys[middle..]);
    let sorted = DataFrame::new(order.len(), vec![Column::new("row".into(), order)])?;
    let seconds = started.elapsed().as_secs_f64();
    eprintln!("floor: read and sorted {} rows of {path}", sorted.height());
    println!("{seconds:.3}");
    Ok(())
}

/// One hash of the four key columns per row, half the rows on each of two threads.
fn key_hashes(frame: &DataFrame) -> PolarsResult<Vec<u64>> {
    let key: Vec<&StringChunked> = COLUMNS[..4]
        .iter()
        .map(|name| frame.column(name)?.str())
        .collect::<PolarsResult<_>>()?;
    let state = PlRandomState::default();
    let rows = frame.height();
    let hash_range = |from: usize, to: usize| -> Vec<u64> {
        let slices: Vec<StringChunked> = key
            .iter()
            .map(|c| c.slice(from as i64, to - from))
            .collect();
        let iters = slices.iter().map(|c| c.iter());
        let mut iters: Vec<_> = iters.collect();
        (from..to)
            .map(|_| {
                let parts: [Option<&str>; 4] = std::array::from_fn(|i| iters[i].next().flatten());
                state.hash_one(parts)
            })
            .collect()
    };
    let middle = rows / 2;
    let (mut first, second) = std::thread::scope(|scope| {
        let second = scope.spawn(|| hash_range(middle, rows));
        (
            hash_range(0, middle),
            second.join().expect("hashing thread"),
        )
    });
    first.extend(second);
    Ok(first)
}

/// The row numbers of two sorted runs, merged.
fn merge(left: &[(u64, i64, u32)], right: &[(u64, i64, u32)]) -> Vec<u32> {
    let mut merged = Vec::with_capacity(left.len() + right.len());
    let (mut i, mut j) = (0, 0);
    while i < left.len() && j < right.len() {
        if left[i] <= right[j] {
            merged.push(left[i].2);
            i += 1;
        } else {
            merged.push(right[j].2);
            j += 1;
        }
    }
    merged.extend(left[i..].iter().map(|k| k.2));
    merged.extend(right[j..].iter().map(|k| k.2));
    merged
}
