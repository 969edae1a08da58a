//! Ctrl-C (SIGINT) or SIGTERM mid-run: convbill stops at its next step with exit code 130,
//! removes its staging and spill folders, and leaves the previous outputs as they were.

use std::path::Path;
use std::time::{Duration, Instant};

use crate::cli::{convbill, snapshot};
use crate::support::hidden_entries;

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
    let run = |out: &Path| {
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_convbill"));
        command
            .args([
                "run",
                "-q",
                "--partition-rows",
                "5000",
                "--memory-rows",
                "0",
                "--input",
            ])
            .arg(&log)
            .arg("--out")
            .arg(out)
            .stderr(std::process::Stdio::piped());
        command
    };
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
    let output = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(
        output.status.code(),
        Some(convbill::exit::INTERRUPTED),
        "{stderr}"
    );
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
