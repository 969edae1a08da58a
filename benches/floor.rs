//! The benchmark's floor: the time polars alone takes to read a message log's columns and sort
//! them by conversation key and time, the least any session derivation has to do.
//!
//! `cargo bench --bench floor -- FILE` prints the wall time in seconds on stdout.

use std::time::Instant;

use polars::prelude::*;

fn main() -> PolarsResult<()> {
    let path = std::env::args()
        .nth(1)
        .filter(|a| a != "--bench")
        .or_else(|| std::env::args().nth(2))
        .expect("usage: floor FILE");
    let started = Instant::now();
    let columns = [
        "account_id",
        "channel",
        "business_id",
        "user_id",
        "timestamp",
        "direction",
        "message_id",
    ];
    let sorted = LazyFrame::scan_parquet(PlRefPath::new(&path), ScanArgsParquet::default())?
        .select(columns.map(col))
        .sort(columns, SortMultipleOptions::default())
        .collect()?;
    let seconds = started.elapsed().as_secs_f64();
    eprintln!("floor: read and sorted {} rows of {path}", sorted.height());
    println!("{seconds:.3}");
    Ok(())
}
