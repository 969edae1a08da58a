//! Progress on a terminal: a bar with the stage, its units and the elapsed time while a run
//! works; nothing when stderr is not a terminal (cron, CI logs) or with `-q`. The terminal is
//! a real pseudo-terminal, made by util-linux `script`.

use std::path::Path;
use std::process::Command;

use predicates::prelude::*;

use crate::cli::{convbill, run_command};
use crate::nightly::generate;

/// Runs convbill with `args` on a pseudo-terminal; what the terminal received.
fn on_a_terminal(args: &[&str]) -> String {
    let binary = assert_cmd::cargo::cargo_bin("convbill");
    let mut line = format!("'{}'", binary.display());
    for arg in args {
        line.push_str(&format!(" '{arg}'"));
    }
    let output = Command::new("script")
        .args(["-qec", &line, "/dev/null"])
        .env_remove("RUST_LOG")
        .output()
        .expect("util-linux `script` runs");
    assert!(
        output.status.success(),
        "{line}: {}",
        String::from_utf8_lossy(&output.stdout)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[test]
fn a_run_on_a_terminal_shows_its_stages_and_nothing_elsewhere() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("log.parquet");
    generate(&log, 50_000, 2, 6, "2026-10-01", 3);
    let path = |p: &Path| p.to_str().unwrap().to_string();
    let out = dir.path().join("whole");
    let shown = on_a_terminal(&[
        "run",
        "--input",
        &path(&log),
        "--out",
        &path(&out),
        "--partition-rows",
        "10000",
    ]);
    for stage in [
        "counting rows",
        "reading rows: ",
        "50,000",
        "deriving groups: ",
        "writing outputs",
        "[0s]",
    ] {
        assert!(shown.contains(stage), "no `{stage}` in {shown:?}");
    }
    // The bar is taken away before the summary, which stays.
    let summary = shown
        .find("convbill: read 50000 messages")
        .expect("a summary");
    assert!(shown[summary..].contains("wrote"));
    assert!(!shown[summary..].contains("deriving groups"));

    // Nights too.
    let history = dir.path().join("history");
    let shown = on_a_terminal(&[
        "run",
        "--input",
        &path(&log),
        "--out",
        &path(&history),
        "--date",
        "2026-10-01",
        "--init",
    ]);
    for stage in [
        "checking input files",
        "night 2026-10-01: reading rows",
        "night 2026-10-01: computing groups",
        "writing month-to-date",
    ] {
        assert!(shown.contains(stage), "no `{stage}` in {shown:?}");
    }

    // `-q` on a terminal, and any run whose stderr is not a terminal, show none.
    let quiet = on_a_terminal(&[
        "-q",
        "run",
        "--input",
        &path(&log),
        "--out",
        &path(&dir.path().join("quiet")),
    ]);
    assert!(!quiet.contains("reading rows"), "{quiet:?}");
    run_command(&log, &dir.path().join("piped"))
        .assert()
        .success()
        .stderr(predicate::str::contains("reading rows").not());
    let _ = convbill;
}
