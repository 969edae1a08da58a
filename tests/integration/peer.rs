//! The benchmark's DuckDB peer (`benches/peer.sql`) must apply the same rules as convbill, or
//! comparing their times says nothing: on a generated log both give the same sessions and
//! violations. Needs the Python package `duckdb` (`.ci/run` installs it).

use std::path::Path;
use std::process::Command;

use polars::prelude::*;

use crate::nightly::generate;
use crate::support::*;

/// The rows of `frame` as sorted text lines, times as microseconds since the epoch.
fn rows(frame: &DataFrame, columns: &[&str]) -> Vec<String> {
    let frame = frame
        .clone()
        .lazy()
        .select(
            columns
                .iter()
                .map(|name| match frame.column(name).unwrap().dtype() {
                    DataType::Datetime(_, _) => col(*name)
                        .cast(DataType::Datetime(TimeUnit::Microseconds, None))
                        .to_physical()
                        .cast(DataType::String),
                    _ => col(*name).cast(DataType::String),
                })
                .collect::<Vec<_>>(),
        )
        .collect()
        .unwrap();
    let columns: Vec<Vec<String>> = columns
        .iter()
        .map(|name| frame.column(name).unwrap())
        .map(|c| {
            c.str()
                .unwrap()
                .iter()
                .map(|v| v.unwrap_or("null").to_string())
                .collect()
        })
        .collect();
    let mut lines: Vec<String> = (0..frame.height())
        .map(|i| {
            columns
                .iter()
                .map(|c| c[i].as_str())
                .collect::<Vec<_>>()
                .join(",")
        })
        .collect();
    lines.sort();
    lines
}

/// Runs convbill (built-in card) and the peer on `log`; asserts they give the same sessions
/// and violations. Returns the number of sessions.
fn compare(log: &Path, dir: &Path) -> usize {
    let out = dir.join("convbill");
    crate::cli::run_command(log, &out).assert().success();
    let peer_out = dir.join("peer");
    let peer = Command::new("python3")
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/peer.py"))
        .arg(log)
        .arg(&peer_out)
        .output()
        .expect("python3 runs");
    assert!(
        peer.status.success(),
        "the peer failed (is the Python package duckdb installed?): {}",
        String::from_utf8_lossy(&peer.stderr)
    );
    // Every column of the spec's sessions but the id (the peer derives its own) and the
    // period (the peer's is UTC).
    let session_columns: Vec<&str> = convbill::sessions::SESSION_COLUMNS
        .into_iter()
        .filter(|c| !["session_id", "period"].contains(c))
        .collect();
    let ours = rows(&read_frame(&out.join("sessions.parquet")), &session_columns);
    let theirs = rows(
        &read_frame(&peer_out.join("sessions.parquet")),
        &session_columns,
    );
    assert_eq!(ours.len(), theirs.len());
    assert!(
        ours == theirs,
        "the peer's sessions differ on {}",
        log.display()
    );
    let violation_columns = ["account_id", "message_id", "timestamp", "reason"];
    let ours_violations = rows(
        &read_frame(&out.join("violations.parquet")),
        &violation_columns,
    );
    let theirs_violations = rows(
        &read_frame(&peer_out.join("violations.parquet")),
        &violation_columns,
    );
    assert!(
        ours_violations == theirs_violations,
        "the peer's violations differ on {}",
        log.display()
    );
    ours.len()
}

#[test]
fn the_duckdb_peer_derives_what_convbill_derives() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("log.parquet");
    generate(&log, 200_000, 4, 12, "2026-10-01", 10);
    assert!(compare(&log, &dir.path().join("generated")) > 10_000);
}

/// The edges: windows and sessions closed at exactly 24 hours, ties in time, duplicates,
/// failed deliveries, and the article's scenarios.
#[test]
fn the_duckdb_peer_agrees_on_the_edges() {
    let dir = tempfile::tempdir().unwrap();
    let edges = write_log(
        dir.path(),
        &[
            // WhatsApp: a reply exactly when the window closes is a violation; a template at
            // the session's end opens the next one; an inbound at the same time as a reply
            // comes first.
            inbound("w1", "Mon 10:00"),
            reply("w2", "Mon 11:00"),
            reply("w3", "Tue 10:00"),
            template("w4", "Tue 11:00"),
            inbound("w5", "Wed 09:00"),
            reply("w6", "Wed 09:00"),
            reply("w6", "Wed 09:30"),
            reply("w7", "Wed 10:00").status("failed"),
            // Messenger: a window restarted just before it closes, one closed exactly.
            inbound("m1", "Mon 10:00").on("messenger"),
            reply("m2", "Mon 12:00").on("messenger"),
            inbound("m3", "Tue 09:59").on("messenger"),
            inbound("m4", "Wed 09:59").on("messenger"),
            reply("m5", "Thu 09:59").on("messenger"),
            inbound("i1", "Mon 10:00").on("instagram").user("user-2"),
            reply("i2", "Tue 10:00").on("instagram").user("user-2"),
        ],
    );
    assert_eq!(compare(&edges, &dir.path().join("edges")), 5);
    let article =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("sample-data/article-scenarios.parquet");
    compare(&article, &dir.path().join("article"));
}
