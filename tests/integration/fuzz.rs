//! Fuzz-style properties: corrupted Parquet files and random values never make convbill panic
//! or leave partial outputs. It either succeeds or fails with a message and a documented code.

use std::path::Path;

use proptest::prelude::*;

use crate::bad_input::good_log;
use crate::support::*;

/// Runs the binary; returns (exit code, stderr). Checks what must hold whatever the input:
/// no panic, a documented exit code, an `error:` line on failure, and on failure no output
/// folder and no leftovers beside it.
fn run_checked(dir: &Path, input: &Path, extra: &[&str]) -> (i32, String) {
    let out = dir.join("out");
    let _ = std::fs::remove_dir_all(&out);
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_convbill"))
        .args(["run", "-q", "--input"])
        .arg(input)
        .arg("--out")
        .arg(&out)
        .args(extra)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    let Some(code) = output.status.code() else {
        // The one documented crash: a corrupt page length that makes polars' decoder ask for
        // an impossible allocation, which aborts the process. Nothing may be written.
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(output.status.signal(), Some(6), "killed: {stderr}");
        assert!(stderr.contains("memory allocation of"), "{stderr}");
        assert!(!out.exists(), "an aborted run wrote outputs");
        return (134, stderr);
    };
    assert!(!stderr.contains("panicked"), "panic: {stderr}");
    assert!(
        [convbill::exit::SUCCESS, convbill::exit::DATA].contains(&code),
        "exit {code}: {stderr}"
    );
    let leftovers = hidden_entries(dir);
    assert!(leftovers.is_empty(), "left behind: {leftovers:?}");
    if code == 0 {
        assert!(out.join("manifest.json").is_file());
    } else {
        assert!(stderr.starts_with("error: "), "{stderr}");
        assert!(!out.exists(), "a failed run wrote outputs");
    }
    (code, stderr)
}

/// A valid log of a few hundred rows in several row groups, as bytes.
fn valid_log_bytes() -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    let mut events = Vec::new();
    for i in 0..300i64 {
        let user = format!("user-{}", i % 17);
        events.push(
            inbound(&format!("m{i}"), "Mon 00:00")
                .user(&user)
                .at_ns(at("Mon 00:00") + i * 600_000_000_000),
        );
    }
    events.extend(good_log());
    let path = dir.path().join("log.parquet");
    let file = std::fs::File::create(&path).unwrap();
    polars::prelude::ParquetWriter::new(file)
        .with_row_group_size(Some(64))
        .finish(&mut frame(&events))
        .unwrap();
    std::fs::read(path).unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    #[test]
    fn corrupted_files_fail_cleanly(
        cut in prop::option::of(0.0f64..1.0),
        flips in prop::collection::vec((0.0f64..1.0, 1u8..=255), 0..6),
    ) {
        let mut bytes = valid_log_bytes();
        for (at, mask) in &flips {
            let i = (*at * bytes.len() as f64) as usize % bytes.len();
            bytes[i] ^= mask;
        }
        if let Some(cut) = cut {
            bytes.truncate((cut * bytes.len() as f64) as usize);
        }
        let dir = tempfile::tempdir().unwrap();
        let input = dir.path().join("input");
        std::fs::create_dir(&input).unwrap();
        std::fs::write(input.join("log.parquet"), &bytes).unwrap();
        let (code, stderr) = run_checked(dir.path(), &input, &[]);
        if code == convbill::exit::DATA {
            prop_assert!(stderr.contains("log.parquet"), "the message names the file: {}", stderr);
        }
        run_checked(dir.path(), &input, &["--rejects"]);
    }

    #[test]
    fn random_values_in_every_column_are_checked_or_set_aside(
        rows in prop::collection::vec(
            (
                prop::option::of("[a-z]{0,3}"),
                prop::option::of(prop_oneof![Just("acme".to_string()), "[a-z ]{0,4}"]),
                prop::option::of(prop_oneof![Just("whatsapp".to_string()), Just("messenger".to_string()), "[A-Za-z ]{0,9}"]),
                prop::option::of(prop_oneof![Just("inbound".to_string()), Just("outbound".to_string()), "[a-z]{0,8}"]),
                prop::option::of(prop_oneof![Just("template".to_string()), Just("cta_click".to_string()), "[a-z_]{0,9}"]),
                prop::option::of(prop_oneof![Just("failed".to_string()), "[a-z]{0,6}"]),
                prop::option::of(prop_oneof![
                    Just(i64::MIN), Just(i64::MAX), Just(0i64),
                    (1_500_000_000_000_000i64..1_800_000_000_000_000),
                ]),
            ),
            1..30,
        )
    ) {
        use polars::prelude::*;
        let n = rows.len();
        let text = |f: &dyn Fn(&_) -> Option<String>| -> Vec<Option<String>> { rows.iter().map(f).collect() };
        let micros: Vec<Option<i64>> = rows.iter().map(|r| r.6).collect();
        let mut frame = DataFrame::new(n, vec![
            Column::new("message_id".into(), text(&|r| r.0.clone())),
            Column::new("account_id".into(), text(&|r| r.1.clone())),
            Column::new("channel".into(), text(&|r| r.2.clone())),
            Column::new("business_id".into(), vec![Some("b1"); n]),
            Column::new("user_id".into(), vec![Some("u1"); n]),
            Column::new("direction".into(), text(&|r| r.3.clone())),
            Column::new("timestamp".into(), micros)
                .cast(&DataType::Datetime(TimeUnit::Microseconds, None)).unwrap(),
            Column::new("kind".into(), text(&|r| r.4.clone())),
            Column::new("status".into(), text(&|r| r.5.clone())),
        ]).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log.parquet");
        write_parquet(&path, &mut frame);
        run_checked(dir.path(), &path, &[]);
        let (code, stderr) = run_checked(dir.path(), &path, &["--rejects"]);
        // Row-level problems never stop a --rejects run.
        prop_assert_eq!(code, 0, "{}", stderr);
        let manifest = manifest_of(&dir.path().join("out"));
        let input = &manifest["input"];
        let count = |k: &str| input[k].as_u64().unwrap();
        prop_assert_eq!(count("rows_read"), n as u64);
        prop_assert_eq!(
            count("rows_read"),
            count("rows_used") + count("duplicates_dropped") + count("rows_rejected")
        );
    }
}
