use polars::prelude::*;
use std::time::Instant;
fn scan(path: &str, row_index: bool) -> LazyFrame {
    let args = ScanArgsParquet {
        row_index: row_index.then(|| RowIndex {
            name: "row".into(),
            offset: 0,
        }),
        ..Default::default()
    };
    LazyFrame::scan_parquet(PlRefPath::new(path), args).unwrap()
}
fn main() {
    let path = std::env::args().nth(1).unwrap();
    for ri in [false, true] {
        let t = Instant::now();
        let mut aggs = vec![len().alias("rows")];
        if ri {
            aggs.push(col("row").min());
        }
        let df = scan(&path, ri)
            .select(if ri {
                vec![col("account_id"), col("row")]
            } else {
                vec![col("account_id")]
            })
            .group_by([col("account_id")])
            .agg(aggs)
            .collect()
            .unwrap();
        eprintln!(
            "count row_index={ri}: {} groups {:?}",
            df.height(),
            t.elapsed()
        );
    }
    let t = Instant::now();
    let df = scan(&path, false)
        .select([col("account_id")])
        .collect()
        .unwrap();
    eprintln!("read account_id: {} {:?}", df.height(), t.elapsed());
    let t = Instant::now();
    let df = scan(&path, true).slice(0, 3_300_000).collect().unwrap();
    eprintln!(
        "read first slice all cols: {} {:?}",
        df.height(),
        t.elapsed()
    );
    let t = Instant::now();
    let df = scan(&path, true)
        .slice(50_000_000, 3_300_000)
        .collect()
        .unwrap();
    eprintln!(
        "read middle slice all cols: {} {:?}",
        df.height(),
        t.elapsed()
    );
}
