//! `--rejects`: rows that fail a check are set aside in `rejects.parquet` with their values,
//! file, row and reason; the run goes on and the manifest's counts add up.

use std::path::Path;

use polars::prelude::*;

use crate::bad_input::{good_log, refused};
use crate::cli::{convbill, run_command};
use crate::support::*;

/// The good log followed by one bad row of each kind; (row, reason, column) of the bad ones.
fn dirty_log() -> (Vec<Ev>, Vec<(u64, &'static str, &'static str)>) {
    let mut events = good_log();
    let mut null_user = inbound("n1", "Wed 09:00");
    null_user.user = String::new();
    events.push(null_user); // row 4: made null below
    events.push(inbound("s1", "Wed 09:01").on("sms")); // row 5
    events.push(template("k1", "Wed 09:02").kind("cta_click")); // row 6
    events.push(inbound("f1", "Wed 09:03").at_ns(at("Mon 00:00") + 80 * 365 * 86_400_000_000_000)); // row 7: about 2104
    events.push(inbound("p1", "Wed 09:04").at_ns(1_000_000_000_000_000_000)); // row 8: 2001
    let bad = vec![
        (4, "null_value", "user_id"),
        (5, "unknown_value", "channel"),
        (6, "kind_not_allowed", "kind"),
        (7, "implausible_timestamp", "timestamp"),
        (8, "implausible_timestamp", "timestamp"),
    ];
    (events, bad)
}

fn write_dirty(dir: &Path) -> std::path::PathBuf {
    let (events, _) = dirty_log();
    let mut frame = frame(&events);
    let users: Vec<Option<String>> = events
        .iter()
        .map(|e| (!e.user.is_empty()).then(|| e.user.clone()))
        .collect();
    frame
        .with_column(Column::new("user_id".into(), users))
        .unwrap();
    let path = dir.join("log.parquet");
    write_parquet(&path, &mut frame);
    path
}

/// `convbill run --rejects` (plus `extra`), which must succeed; its `rejects.parquet`.
fn run_rejects(log: &Path, out: &Path, extra: &[&str]) -> DataFrame {
    run_command(log, out)
        .arg("--rejects")
        .args(extra)
        .assert()
        .success();
    read_frame(&out.join("rejects.parquet"))
}

fn rows_of(rejects: &DataFrame) -> Vec<u64> {
    rejects
        .column("row")
        .unwrap()
        .u64()
        .unwrap()
        .iter()
        .flatten()
        .collect()
}

/// A string column's non-null values.
fn texts(rejects: &DataFrame, column: &str) -> Vec<String> {
    rejects
        .column(column)
        .unwrap()
        .str()
        .unwrap()
        .iter()
        .flatten()
        .map(String::from)
        .collect()
}

#[test]
fn bad_rows_are_set_aside_with_their_reasons_and_the_rest_is_billed() {
    let dir = tempfile::tempdir().unwrap();
    let log = write_dirty(dir.path());
    let out = dir.path().join("out");
    run_command(&log, &out)
        .arg("--rejects")
        .assert()
        .success()
        .stderr(predicates::str::contains(
            "5 row(s) set aside in rejects.parquet, 2 implausible_timestamp, 1 kind_not_allowed, 1 null_value, 1 unknown_value",
        ));

    let rejects = read_frame(&out.join("rejects.parquet"));
    let (rows, reasons, columns) = (
        rows_of(&rejects),
        texts(&rejects, "reason"),
        texts(&rejects, "column"),
    );
    let (_, expected) = dirty_log();
    assert_eq!(rows, expected.iter().map(|e| e.0).collect::<Vec<_>>());
    assert_eq!(reasons, expected.iter().map(|e| e.1).collect::<Vec<_>>());
    assert_eq!(columns, expected.iter().map(|e| e.2).collect::<Vec<_>>());
    // Original values, and the file they came from.
    let channel = rejects.column("channel").unwrap().str().unwrap();
    assert_eq!(channel.get(1), Some("sms"));
    let kind = rejects.column("kind").unwrap().str().unwrap();
    assert_eq!(kind.get(2), Some("cta_click"));
    assert!(rejects
        .column("user_id")
        .unwrap()
        .str()
        .unwrap()
        .get(0)
        .is_none());
    let files = rejects.column("file").unwrap().str().unwrap();
    assert!(files.iter().all(|f| f == Some("log.parquet")));

    // The good rows give the same sessions as the good log alone.
    let sessions = sessions_of(&read_frame(&out.join("sessions.parquet")));
    assert_eq!(sessions, derive(&good_log()).0);

    // The manifest's counts add up.
    let manifest = manifest_of(&out);
    let input = &manifest["input"];
    let count = |k: &str| input[k].as_u64().unwrap();
    assert_eq!(count("rows_read"), 9);
    assert_eq!(count("rows_rejected"), 5);
    assert_eq!(
        count("rows_read"),
        count("rows_used") + count("duplicates_dropped") + count("rows_rejected")
    );
    assert_eq!(input["rejected_by_reason"]["implausible_timestamp"], 2);
    assert_eq!(input["rejected_by_reason"]["null_value"], 1);
    let listed: Vec<&str> = manifest["outputs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["path"].as_str().unwrap())
        .collect();
    assert!(listed.contains(&"rejects.parquet"));
}

#[test]
fn strict_mode_stops_at_the_first_bad_row_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let log = write_dirty(dir.path());
    refused(
        dir.path(),
        &log,
        &["log.parquet", "`user_id`", "null at row 4"],
    );
    // The same rows backwards: the first bad row is now the one of 2001, whatever its check.
    let mut backwards = read_frame(&log).reverse();
    let reversed = dir.path().join("backwards.parquet");
    write_parquet(&reversed, &mut backwards);
    refused(
        dir.path(),
        &reversed,
        &["backwards.parquet", "`timestamp`", "row 0"],
    );
}

#[test]
fn implausible_timestamps_are_refused_with_the_accepted_range() {
    let dir = tempfile::tempdir().unwrap();
    for (ns, shown) in [
        (at("Mon 00:00") + 80 * 365 * 86_400_000_000_000, "2103-"),
        (1_000_000_000_000_000_000, "2001-09-09T01:46:40Z"),
    ] {
        let mut events = good_log();
        events.push(inbound("x", "Mon 00:00").at_ns(ns));
        let path = write_log(dir.path(), &events);
        refused(
            dir.path(),
            &path,
            &[
                "`timestamp`",
                "at row 4",
                shown,
                "accepted: 2010-01-01T00:00:00Z to ",
            ],
        );
    }
}

#[test]
fn a_clean_log_gives_an_empty_rejects_file() {
    let dir = tempfile::tempdir().unwrap();
    let log = write_log(dir.path(), &good_log());
    let out = dir.path().join("out");
    let rejects = run_rejects(&log, &out, &[]);
    assert_eq!(rejects.height(), 0);
    assert!(rejects.column("reason").is_ok());
}

#[test]
fn an_account_whose_rows_are_all_rejected_leaves_an_empty_group() {
    let dir = tempfile::tempdir().unwrap();
    let mut events = good_log();
    events.push(inbound("z1", "Mon 11:00").account("zeta").on("sms"));
    events.push(inbound("z2", "Mon 12:00").account("zeta").on("fax"));
    let log = write_log(dir.path(), &events);
    // Kept in memory, and spilled.
    for memory_rows in ["1000", "0"] {
        let out = dir.path().join(format!("out-{memory_rows}"));
        let args = ["--partition-rows", "1", "--memory-rows", memory_rows];
        assert_eq!(run_rejects(&log, &out, &args).height(), 2);
        assert_eq!(
            sessions_of(&read_frame(&out.join("sessions.parquet"))),
            derive(&good_log()).0
        );
    }
}

/// Nights take `--rejects` too: each night's rows set aside land in its own
/// `rejects/date=D/part-0.parquet`, counted in its `night.json`, the month-to-date manifest
/// and the summary; without it the same night stops at the first bad row.
#[test]
fn a_night_sets_its_bad_rows_aside_in_its_own_partition() {
    let dir = tempfile::tempdir().unwrap();
    let mut events = good_log();
    events.push(inbound("s1", "Tue 09:01").on("sms")); // row 4
    events.push(template("k1", "Tue 09:02").kind("cta_click")); // row 5
    events.push(inbound("d1", "Tue 10:00")); // row 6
    events.push(inbound("d1", "Tue 10:00").user("user-9")); // row 7: conflicts with row 6
    let log = write_log(dir.path(), &events);
    let out = dir.path().join("billing");
    let night = |date: &str| {
        let mut command = run_command(&log, &out);
        command.args(["--date", date]);
        if date == "2024-01-01" {
            command.arg("--init");
        }
        command
    };
    night("2024-01-01").arg("--rejects").assert().success();
    // Without --rejects, Tuesday stops at its first bad row and nothing changes.
    night("2024-01-02")
        .assert()
        .code(convbill::exit::DATA)
        .stderr(predicates::str::contains("sms"));
    night("2024-01-02")
        .arg("--rejects")
        .assert()
        .success()
        .stderr(predicates::str::contains(
            "convbill: 4 row(s) set aside in rejects/date=2024-01-02/part-0.parquet, 2 conflicting_duplicate, 1 kind_not_allowed, 1 unknown_value",
        ));
    let monday = read_frame(&out.join("rejects/date=2024-01-01/part-0.parquet"));
    assert_eq!(monday.height(), 0);
    let tuesday = read_frame(&out.join("rejects/date=2024-01-02/part-0.parquet"));
    assert_eq!(rows_of(&tuesday), [4, 5, 6, 7]);
    assert_eq!(
        strings(&tuesday, "reason"),
        [
            "unknown_value",
            "kind_not_allowed",
            "conflicting_duplicate",
            "conflicting_duplicate"
        ]
    );
    assert_eq!(strings(&tuesday, "file"), ["log.parquet"; 4]);
    let night_json: serde_json::Value = serde_json::from_slice(
        &std::fs::read(out.join("state/date=2024-01-02/night.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(night_json["rows_rejected"], 4);
    assert_eq!(night_json["rows_read"], 6);
    assert_eq!(night_json["rows_used"], 2);
    let manifest = manifest_of(&out.join("month-to-date"));
    assert_eq!(manifest["last_night"]["rows_rejected"], 4);
    assert_eq!(
        manifest["last_night"]["rejected_by_reason"]["conflicting_duplicate"],
        2
    );
    // The good rows were billed as a whole run of the good log bills them.
    let whole = dir.path().join("whole");
    let good = dir.path().join("good");
    std::fs::create_dir(&good).unwrap();
    run_command(&write_log(&good, &good_log()), &whole)
        .assert()
        .success();
    let sessions_of_history: Vec<_> = ["2024-01-01", "2024-01-02"]
        .iter()
        .flat_map(|d| {
            sessions_of(&read_frame(
                &out.join(format!("sessions/date={d}/part-0.parquet")),
            ))
        })
        .chain(sessions_of(&read_frame(
            &out.join("month-to-date/open_sessions.parquet"),
        )))
        .collect();
    let mut sessions_of_history = sessions_of_history;
    sessions_of_history.sort_by(|a, b| format!("{a:?}").cmp(&format!("{b:?}")));
    let mut expected = sessions_of(&read_frame(&whole.join("sessions.parquet")));
    expected.sort_by(|a, b| format!("{a:?}").cmp(&format!("{b:?}")));
    assert_eq!(sessions_of_history, expected);

    // Rerun without --rejects on a clean log: the night keeps no rejects of the run before.
    std::fs::remove_file(&log).unwrap();
    write_log(dir.path(), &good_log());
    night("2024-01-02").assert().success();
    assert!(!out.join("rejects/date=2024-01-02").exists());
    // A row whose time no night can have still stops the run: no partition could hold it.
    let input = dir.path().join("input");
    std::fs::create_dir(&input).unwrap();
    std::fs::copy(&log, input.join("log.parquet")).unwrap();
    write_parquet(
        &input.join("z.parquet"),
        &mut frame(&[inbound("old", "Wed 09:00").at_ns(1_000_000_000_000_000_000)]),
    );
    run_command(&input, &out)
        .args(["--date", "2024-01-03", "--rejects", "--allow-empty"])
        .assert()
        .code(convbill::exit::DATA)
        .stderr(predicates::str::contains("z.parquet"));
    let _ = convbill;
}

/// The good log, and `u1` logged again later by another user (a conflict, not a duplicate),
/// and `r1` logged again later with another status (a plain duplicate).
fn log_with_a_conflict() -> Vec<Ev> {
    let mut events = good_log();
    events.push(inbound("u1", "Mon 10:01").user("user-2"));
    events.push(reply("r1", "Mon 10:06").status("read"));
    events
}

#[test]
fn a_conflicting_duplicate_names_both_rows() {
    let dir = tempfile::tempdir().unwrap();
    let log = write_log(dir.path(), &log_with_a_conflict());
    refused(
        dir.path(),
        &log,
        &[
            "message `u1` of account `acme`",
            "different `user_id`",
            "`user-1` in `log.parquet` row 0",
            "`user-2` in `log.parquet` row 4",
        ],
    );
}

#[test]
fn conflicting_duplicates_are_rejected_whole_and_plain_ones_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let log = write_log(dir.path(), &log_with_a_conflict());
    let out = dir.path().join("out");
    let rejects = run_rejects(&log, &out, &[]);
    assert_eq!(rows_of(&rejects), vec![0, 4]);
    assert_eq!(texts(&rejects, "reason"), vec!["conflicting_duplicate"; 2]);
    assert_eq!(
        rejects.column("channel").unwrap().str().unwrap().get(0),
        Some("whatsapp")
    );

    let manifest = manifest_of(&out);
    let input = &manifest["input"];
    assert_eq!(input["rows_read"], 6);
    assert_eq!(input["rows_rejected"], 2);
    assert_eq!(input["duplicates_dropped"], 1);
    assert_eq!(input["rows_used"], 3);
    assert_eq!(input["rejected_by_reason"]["conflicting_duplicate"], 2);
    // WhatsApp and Messenger with `user-1`: the rejected copy's `user-2` is not a conversation.
    assert_eq!(manifest["sessions"]["conversation_keys"], 2);
}

#[test]
fn a_timestamp_nanoseconds_cannot_hold_is_refused_or_set_aside() {
    let dir = tempfile::tempdir().unwrap();
    // Microseconds in the year 3000: beyond what nanoseconds since 1970 can hold.
    let year_3000_us = 32_503_680_000_000_000i64;
    let mut frame = frame(&good_log());
    let micros: Vec<i64> = (0..4)
        .map(|i| {
            if i == 2 {
                year_3000_us
            } else {
                at("Mon 10:00") / 1_000 + i
            }
        })
        .collect();
    frame
        .with_column(
            Column::new("timestamp".into(), micros)
                .cast(&DataType::Datetime(TimeUnit::Microseconds, None))
                .unwrap(),
        )
        .unwrap();
    let path = dir.path().join("log.parquet");
    write_parquet(&path, &mut frame);
    refused(
        dir.path(),
        &path,
        &[
            "`timestamp`",
            "at row 2",
            "outside the range convbill can represent",
        ],
    );

    let out = dir.path().join("out");
    let rejects = run_rejects(&path, &out, &[]);
    assert_eq!(rows_of(&rejects).first(), Some(&2));
    assert_eq!(texts(&rejects, "reason")[0], "implausible_timestamp");
    assert!(rejects
        .column("timestamp")
        .unwrap()
        .get(0)
        .unwrap()
        .is_null());
}
