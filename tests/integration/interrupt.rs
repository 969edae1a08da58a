//! Ctrl-C (SIGINT) or SIGTERM mid-run: convbill stops at its next step with exit code 130,
//! removes its staging and spill folders, and leaves the previous outputs as they were.

use std::path::Path;
use std::time::{Duration, Instant};

use crate::cli::{convbill, snapshot};
use crate::support::hidden_entries;

/// Waits for a signalled run: it exits 130. Returns its stderr.
fn interrupted(child: std::process::Child) -> String {
    let output = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert_eq!(
        output.status.code(),
        Some(convbill::exit::INTERRUPTED),
        "{stderr}"
    );
    stderr
}

/// `convbill run -q` of `log` into `out` in groups of `partition_rows` rows, spilled to disk,
/// with `args`; stderr piped.
fn spilling_run(
    log: &Path,
    out: &Path,
    partition_rows: u32,
    args: &[&str],
) -> std::process::Command {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_convbill"));
    command
        .args(["run", "-q", "--memory-rows", "0", "--partition-rows"])
        .arg(partition_rows.to_string())
        .arg("--input")
        .arg(log)
        .arg("--out")
        .arg(out)
        .args(args)
        .stderr(std::process::Stdio::piped());
    command
}

fn interrupted_mid_run(signal: &str) {
    interrupted_mid_run_by(&[signal]);
}

/// Sends each of `signals` in turn, a few milliseconds apart, once the run is spilling.
fn interrupted_mid_run_by(signals: &[&str]) {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("log.parquet");
    convbill()
        .args(["generate", "--messages", "1000000", "--seed", "5", "--out"])
        .arg(&log)
        .assert()
        .success();
    let out = dir.path().join("out");
    let run = |out: &Path| spilling_run(&log, out, 5000, &[]);
    assert!(run(&out).status().unwrap().success());
    let before = snapshot(&out);

    // Signal the run once it is spilling groups: well before it could finish.
    let child = run(&out).spawn().unwrap();
    let started = Instant::now();
    while !hidden_entries(dir.path())
        .iter()
        .any(|n| n.ends_with(".convbill-spill"))
    {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "no spill folder appeared"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
    for signal in signals {
        let killed = std::process::Command::new("kill")
            .args([*signal, &child.id().to_string()])
            .status()
            .unwrap();
        assert!(killed.success());
        std::thread::sleep(Duration::from_millis(5));
    }
    let stderr = interrupted(child);
    assert!(
        stderr.contains("interrupted: stopped before writing anything"),
        "{stderr}"
    );
    assert_eq!(snapshot(&out), before, "the previous outputs are untouched");
    assert_eq!(hidden_entries(dir.path()), Vec::<String>::new());
}

#[test]
fn ctrl_c_mid_run_leaves_the_previous_outputs_and_no_leftovers() {
    interrupted_mid_run("-INT");
}

#[test]
fn sigterm_mid_run_is_handled_the_same_way() {
    interrupted_mid_run("-TERM");
}

/// `timeout -s INT` signals the run and its process group: the same Ctrl-C arrives twice at
/// once, and is handled as one (a second Ctrl-C a second or more later stops at once).
#[test]
fn the_same_signal_delivered_twice_is_handled_as_one() {
    interrupted_mid_run_by(&["-INT", "-INT"]);
}

/// A catch-up interrupted after some nights says which nights are in place, and they are.
#[test]
fn an_interrupted_catch_up_names_the_nights_in_place() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("log.parquet");
    convbill()
        .args(["generate", "--messages", "600000", "--seed", "5"])
        .args(["--start", "2026-10-01", "--days", "12", "--out"])
        .arg(&log)
        .assert()
        .success();
    let out = dir.path().join("out");
    let night = |args: &[&str]| spilling_run(&log, &out, 2000, args);
    assert!(night(&["--date", "2026-10-01", "--init"])
        .status()
        .unwrap()
        .success());
    let child = night(&["--date", "2026-10-12", "--catch-up"])
        .spawn()
        .unwrap();
    let started = Instant::now();
    while !out.join("state/date=2026-10-03").is_dir() {
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "night 2026-10-03 never ran"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let stderr = interrupted(child);
    assert!(!stderr.contains("as it was"), "{stderr}");
    let said = stderr
        .split("interrupted: caught up nights 2026-10-02 to ")
        .nth(1)
        .unwrap_or_else(|| panic!("{stderr}"));
    let (last, failed) = (
        &said[..10],
        &said[said.find("; night ").unwrap() + 8..][..10],
    );
    assert!(said.contains(", which are in place; night "), "{stderr}");
    assert!(out.join(format!("state/date={last}")).is_dir(), "{stderr}");
    assert!(
        !out.join(format!("state/date={failed}")).exists(),
        "{stderr}"
    );
    assert_eq!(hidden_entries(dir.path()), Vec::<String>::new());
}
