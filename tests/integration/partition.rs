//! Runs derived in groups of accounts (`--partition-rows`): the same bytes whatever the
//! grouping, nothing left behind, and errors that name file rows in any chunk.

use std::path::{Path, PathBuf};

use polars::prelude::*;

use crate::cli::{convbill, run_command, snapshot};
use crate::support::*;

/// A generated log of `messages` rows over `accounts` accounts and five days.
fn generated(dir: &Path, messages: u64, accounts: u32) -> PathBuf {
    let path = dir.join("log.parquet");
    convbill()
        .args(["generate", "--seed", "7", "--days", "5", "--messages"])
        .arg(messages.to_string())
        .arg("--accounts")
        .arg(accounts.to_string())
        .arg("--out")
        .arg(&path)
        .assert()
        .success();
    path
}

#[test]
fn outputs_are_the_same_bytes_whatever_the_grouping() {
    let dir = tempfile::tempdir().unwrap();
    let log = generated(dir.path(), 30_000, 9);
    // The log's chunks are read from several row groups each: a group's rows are gathered
    // from pieces read apart.
    assert!(footer(&log).num_row_groups() > 1);
    let whole = dir.path().join("whole");
    let report = convbill::run(&convbill::RunConfig::new(&log, &whole)).unwrap();
    assert_eq!(report.partitions, 1);

    // 1 row: every account is a group of its own; 2,500: small accounts share a group and
    // the largest ones exceed it.
    // Each grouping both kept in memory and spilled to disk.
    for (rows, memory_rows) in [(1u64, 0u64), (1, u64::MAX), (2_500, 0), (2_500, u64::MAX)] {
        let out = dir.path().join(format!("groups-{rows}-{memory_rows}"));
        let mut config = convbill::RunConfig::new(&log, &out);
        config.partition_rows = rows;
        config.memory_rows = memory_rows;
        let report = convbill::run(&config).unwrap();
        assert!(
            report.partitions > 2,
            "{rows}: {} groups",
            report.partitions
        );
        assert_eq!(
            snapshot(&whole),
            snapshot(&out),
            "--partition-rows {rows} changed the outputs"
        );
    }
    assert!(hidden_entries(dir.path()).is_empty());
}

#[test]
fn rated_outputs_are_the_same_bytes_whatever_the_grouping() {
    let dir = tempfile::tempdir().unwrap();
    let log = generated(dir.path(), 30_000, 4);
    // The sample card: accounts in Jakarta, New York and Berlin, a mid-October price change.
    let card = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("sample-data/rates.toml");
    let outputs: Vec<_> = [None, Some(1u64), Some(2_500)]
        .into_iter()
        .map(|rows| {
            let out = dir.path().join(format!("groups-{rows:?}"));
            let mut config = convbill::RunConfig::new(&log, &out);
            config.rates = Some(card.clone());
            if let Some(rows) = rows {
                config.partition_rows = rows;
            }
            convbill::run(&config).unwrap();
            snapshot(&out)
        })
        .collect();
    assert_eq!(outputs[0], outputs[1]);
    assert_eq!(outputs[0], outputs[2]);
}

#[test]
fn the_command_line_takes_the_group_size() {
    let dir = tempfile::tempdir().unwrap();
    let log = generated(dir.path(), 5_000, 4);
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    run_command(&log, &a).assert().success();
    run_command(&log, &b)
        .args(["--partition-rows", "100", "--memory-rows", "0"])
        .assert()
        .success();
    assert_eq!(snapshot(&a), snapshot(&b));
    run_command(&log, &dir.path().join("c"))
        .args(["--partition-rows", "0"])
        .assert()
        .code(2);
}

#[test]
fn a_failed_grouped_run_leaves_no_spill_or_staging_behind() {
    let dir = tempfile::tempdir().unwrap();
    let log = generated(dir.path(), 5_000, 4);
    let out = dir.path().join("out");
    run_command(&log, &out).assert().success();
    let before = snapshot(&out);

    // Fails while writing the invoices, after every group has been derived.
    run_command(&log, &out)
        .args(["--partition-rows", "100", "--memory-rows", "0"])
        .env("CONVBILL_FAIL_AFTER_FILES", "3")
        .assert()
        .code(1);
    assert_eq!(snapshot(&out), before);
    assert_eq!(hidden_entries(dir.path()), Vec::<String>::new());

    // Fails while reading: a second file with an unknown channel, after the first file has
    // been spilled into groups.
    let input = dir.path().join("input");
    std::fs::create_dir(&input).unwrap();
    std::fs::rename(&log, input.join("a.parquet")).unwrap();
    let mut bad = frame(&[inbound("x1", "Mon 09:00").on("telegram")]);
    write_parquet(&input.join("b.parquet"), &mut bad);
    run_command(&input, &out)
        .args(["--partition-rows", "100", "--memory-rows", "0"])
        .assert()
        .code(3)
        .stderr(predicates::str::contains("b.parquet"))
        .stderr(predicates::str::contains("telegram"));
    assert_eq!(snapshot(&out), before);
    assert_eq!(hidden_entries(dir.path()), Vec::<String>::new());
}

/// 50 events of one conversation, an hour apart.
fn hourly(n: usize) -> Vec<Ev> {
    (0..n)
        .map(|i| {
            inbound(&format!("m{i:03}"), "Mon 00:00")
                .at_ns(at("Mon 00:00") + i as i64 * 3_600_000_000_000)
        })
        .collect()
}

#[test]
fn chunks_name_file_rows_in_errors() {
    let dir = tempfile::tempdir().unwrap();
    let mut events = hourly(50);
    events[37].channel = "telegram".into();
    let path = dir.path().join("log.parquet");
    let file = std::fs::File::create(&path).unwrap();
    ParquetWriter::new(file)
        .with_row_group_size(Some(10))
        .finish(&mut frame(&events))
        .unwrap();

    let mut source = convbill::load::open(&path).unwrap();
    let mut chunks = 0;
    let error = source
        .read(None, 10, |_| {
            chunks += 1;
            Ok(())
        })
        .unwrap_err()
        .to_string();
    assert_eq!(
        chunks, 3,
        "rows 0-29 pass in three chunks before the bad one"
    );
    assert!(error.contains("at row 37"), "{error}");
}

#[test]
fn chunks_together_are_the_whole_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("log.parquet");
    let file = std::fs::File::create(&path).unwrap();
    ParquetWriter::new(file)
        .with_row_group_size(Some(7))
        .finish(&mut frame(&hourly(50)))
        .unwrap();

    let mut source = convbill::load::open(&path).unwrap();
    let mut rows = Vec::new();
    let mut heights = Vec::new();
    let read = source
        .read(None, 20, |chunk| {
            heights.push(chunk.height());
            rows.extend(chunk.column("row")?.u64()?.into_no_null_iter());
            Ok(())
        })
        .unwrap();
    assert_eq!(read, 50);
    // Whole row groups of 7 until at least 20 rows: 21, 21, then the last 8.
    assert_eq!(heights, vec![21, 21, 8]);
    assert_eq!(rows, (0..50).collect::<Vec<u64>>());
}

#[test]
fn rows_per_account_are_counted_and_a_null_account_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("log.parquet");
    let mut events = hourly(50);
    for event in events.iter_mut().skip(20) {
        event.account = "zeta".into();
    }
    let write = |events: &[Ev]| {
        let file = std::fs::File::create(&path).unwrap();
        ParquetWriter::new(file)
            .with_row_group_size(Some(10))
            .finish(&mut frame(events))
            .unwrap();
    };
    write(&events);
    let source = convbill::load::open(&path).unwrap();
    assert_eq!(
        source.account_rows_by(10).unwrap(),
        vec![("acme".to_string(), 20), ("zeta".to_string(), 30)]
    );

    let mut nulls = frame(&events);
    let accounts: Vec<Option<&str>> = (0..50).map(|i| (i != 43).then_some("acme")).collect();
    nulls
        .with_column(Column::new("account_id".into(), accounts))
        .unwrap();
    let file = std::fs::File::create(&path).unwrap();
    ParquetWriter::new(file)
        .with_row_group_size(Some(10))
        .finish(&mut nulls)
        .unwrap();
    let error = convbill::load::open(&path)
        .unwrap()
        .account_rows_by(10)
        .unwrap_err()
        .to_string();
    assert!(error.contains("null at row 43"), "{error}");
}

#[test]
fn a_crashed_runs_spill_and_staging_folders_are_removed_by_the_next_run() {
    let dir = tempfile::tempdir().unwrap();
    let log = generated(dir.path(), 3_000, 3);
    for stale in [".out.convbill-spill", ".out.convbill-staging"] {
        std::fs::create_dir(dir.path().join(stale)).unwrap();
        std::fs::write(dir.path().join(stale).join("group-00000.parquet"), b"junk").unwrap();
    }
    run_command(&log, &dir.path().join("out"))
        .args(["--partition-rows", "100", "--memory-rows", "0"])
        .assert()
        .success();
    assert_eq!(hidden_entries(dir.path()), Vec::<String>::new());
}

/// A night works in groups too: `-vv` says how many; one that fails mid-write, grouped and
/// spilled, leaves the history as it was and nothing beside it; the rerun that succeeds gives
/// the bytes of the night in one piece.
#[test]
fn a_night_works_in_groups_and_a_failed_one_leaves_nothing_behind() {
    let dir = tempfile::tempdir().unwrap();
    let log = generated(dir.path(), 8_000, 6);
    let (grouped, one_piece) = (dir.path().join("grouped"), dir.path().join("one"));
    let night = |out: &Path, date: &str, grouped: bool| {
        let mut command = run_command(&log, out);
        command.args(["--date", date]);
        if !out.exists() {
            command.arg("--init");
        }
        if grouped {
            command.args(["--partition-rows", "200", "--memory-rows", "0", "-vv"]);
        }
        command
    };
    for out in [&grouped, &one_piece] {
        night(out, "2026-10-01", out == &grouped).assert().success();
    }
    let before = snapshot(&grouped);
    night(&grouped, "2026-10-02", true)
        .env("CONVBILL_FAIL_AFTER_FILES", "4")
        .assert()
        .code(1);
    assert_eq!(snapshot(&grouped), before);
    assert_eq!(hidden_entries(dir.path()), Vec::<String>::new());

    let done = night(&grouped, "2026-10-02", true).assert().success();
    let stderr = String::from_utf8_lossy(&done.get_output().stderr).into_owned();
    let groups: u64 = stderr
        .split("read the night")
        .nth(1)
        .and_then(|rest| rest.split("groups=").nth(1))
        .and_then(|n| n.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no group count in {stderr}"));
    assert!(groups >= 3, "{groups} groups");
    night(&one_piece, "2026-10-02", false).assert().success();
    assert_eq!(snapshot(&grouped), snapshot(&one_piece));
    assert_eq!(hidden_entries(dir.path()), Vec::<String>::new());
}
