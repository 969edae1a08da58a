//! End-to-end: the real `convbill` binary, its files, its exit codes.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use assert_cmd::Command;
use polars::prelude::*;
use predicates::prelude::*;
use sha2::Digest;

use crate::support::*;

pub fn convbill() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_convbill"));
    command.env_remove("RUST_LOG");
    command.env_remove("CONVBILL_INPUT");
    command.env_remove("CONVBILL_OUT");
    command.env_remove("CONVBILL_RATES");
    command.env_remove("META_ACCESS_TOKEN");
    command.env_remove("MIMALLOC_ALLOW_THP");
    command.env_remove("MIMALLOC_PURGE_DELAY");
    command
}

/// `convbill run -q --input LOG --out OUT`, which must succeed.
pub fn run_quietly(log: &Path, out: &Path) {
    convbill()
        .args(["run", "-q", "--input"])
        .arg(log)
        .arg("--out")
        .arg(out)
        .assert()
        .success();
}

pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

/// Every file under `dir`, relative path → bytes.
pub fn snapshot(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut files = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else {
                files.insert(
                    path.strip_prefix(dir).unwrap().to_path_buf(),
                    std::fs::read(&path).unwrap(),
                );
            }
        }
    }
    files
}

/// `convbill run --input INPUT --out OUT`.
pub fn run_command(input: &Path, out: &Path) -> Command {
    let mut command = convbill();
    command
        .arg("run")
        .arg("--input")
        .arg(input)
        .arg("--out")
        .arg(out);
    command
}

/// `convbill run --input INPUT --out OUT`, which must succeed.
fn run_ok(input: &Path, out: &Path) -> assert_cmd::assert::Assert {
    run_command(input, out).assert().success()
}

fn read_parquet(path: &Path) -> DataFrame {
    ParquetReader::new(std::fs::File::open(path).unwrap())
        .finish()
        .unwrap()
}

fn column_names(frame: &DataFrame) -> Vec<String> {
    frame
        .get_column_names()
        .iter()
        .map(|n| n.to_string())
        .collect()
}

fn article_log() -> Vec<Ev> {
    vec![
        template("t1", "Mon 13:00"),
        inbound("u1", "Mon 14:00"),
        reply("r1", "Mon 19:30"),
        inbound("u2", "Tue 14:00"),
        reply("r2", "Tue 14:05"),
        reply("r2", "Tue 14:05"),
        reply("late", "Thu 15:00"),
        inbound("x1", "Thu 14:00").on("messenger"),
        inbound("x2", "Thu 14:00").on("messenger").user("quiet"),
        reply("x3", "Thu 14:30").on("messenger"),
    ]
}

#[test]
fn bare_convbill_runs_the_bundled_sample_data_into_out() {
    let dir = tempfile::tempdir().unwrap();
    copy_dir(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("sample-data"),
        &dir.path().join("sample-data"),
    );
    convbill()
        .current_dir(dir.path())
        .assert()
        .success()
        .stderr(predicate::str::contains("sessions").and(predicate::str::contains("quota")));
    let out = dir.path().join("out");
    for file in [
        "sessions.parquet",
        "violations.parquet",
        "invoice_lines.parquet",
        "invoice_lines.csv",
        "manifest.json",
    ] {
        assert!(out.join(file).is_file(), "{file} missing");
    }
    let invoices = snapshot(&out.join("invoices"));
    assert!(
        invoices.keys().any(|p| p.ends_with("article-demo.json")),
        "{:?}",
        invoices.keys()
    );
    // The article account: see sample-data/README.md (7 sessions, quota 6).
    let json: serde_json::Value = serde_json::from_slice(
        &std::fs::read(out.join("invoices/2024-01/article-demo.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(json["totals"]["quota"], 6);
}

#[test]
fn an_explicit_run_writes_every_output_with_the_spec_columns() {
    let dir = tempfile::tempdir().unwrap();
    let input = write_log(dir.path(), &article_log());
    let out = dir.path().join("result");
    run_ok(&input, &out);

    let sessions = read_parquet(&out.join("sessions.parquet"));
    assert_eq!(
        column_names(&sessions),
        convbill::rating::RATED_SESSION_COLUMNS
    );
    assert_eq!(sessions.height(), 4);
    assert_eq!(
        sessions.column("started_at").unwrap().dtype(),
        &DataType::Datetime(TimeUnit::Nanoseconds, Some(TimeZone::UTC))
    );
    let violations = read_parquet(&out.join("violations.parquet"));
    assert_eq!(
        column_names(&violations),
        convbill::sessions::VIOLATION_COLUMNS
    );
    assert_eq!(violations.height(), 1);
    let lines = read_parquet(&out.join("invoice_lines.parquet"));
    assert_eq!(column_names(&lines), convbill::rating::LINE_COLUMNS);

    let invoice: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("invoices/2024-01/acme.json")).unwrap())
            .unwrap();
    // The log covers 1 to 4 January: the invoice is partial, and each line says so.
    let id = invoice["invoice_id"].as_str().unwrap();
    let head = format!("{id},acme,2024-01,partial,2024-01-01T00:00:00Z,2024-01-05T00:00:00Z");
    let csv = std::fs::read_to_string(out.join("invoice_lines.csv")).unwrap();
    assert_eq!(
        csv,
        format!(
            "invoice_id,account_id,period,status,coverage_start,coverage_end,channel,initiation,price_version,sessions,billable_sessions,quota_per_session,quota,allowance_quota,overage_quota,unit_price,amount,currency\n\
             {head},messenger,standard,1970-01-01,2,1,1,1,0,1,0,0.00,XXX\n\
             {head},whatsapp,business_initiated,1970-01-01,1,1,1,1,0,1,0,0.00,XXX\n\
             {head},whatsapp,user_initiated,1970-01-01,1,1,1,1,0,1,0,0.00,XXX\n"
        )
    );
    assert_eq!(invoice["status"], "partial");
    assert_eq!(invoice["coverage_start"], "2024-01-01T00:00:00Z");
    assert_eq!(invoice["coverage_end"], "2024-01-05T00:00:00Z");
    assert_eq!(invoice["period_start"], "2024-01-01T00:00:00Z");
    assert_eq!(invoice["period_end"], "2024-02-01T00:00:00Z");
    assert_eq!(invoice["totals"]["sessions"], 4);
    assert_eq!(invoice["totals"]["quota"], 3);
    assert_eq!(invoice["lines"].as_array().unwrap().len(), 3);

    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("manifest.json")).unwrap()).unwrap();
    assert_eq!(manifest["rule_set"], "quota");
    assert_eq!(manifest["input"]["rows_read"], 10);
    assert_eq!(manifest["input"]["duplicates_dropped"], 1);
    assert_eq!(manifest["input"]["rows_rejected"], 0);
    assert_eq!(manifest["input"]["rows_used"], 9);
    assert_eq!(manifest["input"]["files"][0]["path"], "log.parquet");
    assert_eq!(
        manifest["input"]["files"][0]["sha256"]
            .as_str()
            .unwrap()
            .len(),
        64
    );
    let outputs: Vec<&str> = manifest["outputs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["path"].as_str().unwrap())
        .collect();
    assert_eq!(
        outputs,
        [
            "sessions.parquet",
            "violations.parquet",
            "invoice_lines.parquet",
            "invoice_lines.csv",
            "invoices.parquet",
            "invoices/2024-01/acme.json",
            "invoices_issued.parquet",
            "report.html"
        ]
    );
    assert_eq!(manifest["outputs"][0]["rows"], 4);
    for output in manifest["outputs"].as_array().unwrap() {
        let bytes = std::fs::read(out.join(output["path"].as_str().unwrap())).unwrap();
        assert_eq!(output["bytes"], bytes.len() as u64, "{output}");
        assert_eq!(
            output["sha256"],
            hex::encode(sha2::Sha256::digest(&bytes)),
            "{output}"
        );
    }
    let input_bytes = std::fs::read(&input).unwrap();
    assert_eq!(
        manifest["input"]["files"][0]["bytes"],
        input_bytes.len() as u64
    );
    assert_eq!(
        manifest["input"]["files"][0]["sha256"],
        hex::encode(sha2::Sha256::digest(&input_bytes))
    );
}

#[test]
fn every_invoice_line_traces_to_its_sessions() {
    let dir = tempfile::tempdir().unwrap();
    let input = write_log(dir.path(), &article_log());
    let out = dir.path().join("out");
    run_ok(&input, &out);
    let sessions = read_parquet(&out.join("sessions.parquet"));
    let lines = read_parquet(&out.join("invoice_lines.parquet"));
    for i in 0..lines.height() {
        let text = |name: &str| {
            lines
                .column(name)
                .unwrap()
                .str()
                .unwrap()
                .get(i)
                .unwrap()
                .to_string()
        };
        let mine = sessions
            .clone()
            .lazy()
            .filter(
                col("account_id")
                    .eq(lit(text("account_id")))
                    .and(col("period").eq(lit(text("period"))))
                    .and(col("channel").eq(lit(text("channel"))))
                    .and(col("initiation").eq(lit(text("initiation")))),
            )
            .collect()
            .unwrap();
        let line_sessions = lines
            .column("sessions")
            .unwrap()
            .i64()
            .unwrap()
            .get(i)
            .unwrap();
        let line_quota = lines
            .column("quota")
            .unwrap()
            .i64()
            .unwrap()
            .get(i)
            .unwrap();
        assert_eq!(mine.height() as i64, line_sessions);
        assert_eq!(
            mine.column("quota").unwrap().i64().unwrap().sum().unwrap(),
            line_quota
        );
    }
}

#[test]
fn a_rerun_gives_the_same_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let input = write_log(dir.path(), &article_log());
    let out = dir.path().join("out");
    let run = || {
        run_ok(&input, &out);
        snapshot(&out)
    };
    let first = run();
    let second = run();
    assert_eq!(
        first.keys().collect::<Vec<_>>(),
        second.keys().collect::<Vec<_>>()
    );
    assert!(first == second, "outputs differ between reruns");
    // No staging or previous folders are left beside the output.
    let leftovers: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains("convbill"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[test]
fn an_unrelated_output_folder_is_never_replaced() {
    let dir = tempfile::tempdir().unwrap();
    let input = write_log(dir.path(), &article_log());
    let out = dir.path().join("documents");
    std::fs::create_dir(&out).unwrap();
    std::fs::write(out.join("thesis.txt"), "precious").unwrap();
    convbill()
        .arg("run")
        .arg("--input")
        .arg(&input)
        .arg("--out")
        .arg(&out)
        .assert()
        .code(convbill::exit::USAGE)
        .stderr(
            predicate::str::contains("refusing to replace")
                .and(predicate::str::contains("documents")),
        );
    assert_eq!(
        std::fs::read_to_string(out.join("thesis.txt")).unwrap(),
        "precious"
    );
}

#[test]
fn help_documents_the_exit_codes() {
    convbill()
        .arg("--help")
        .assert()
        .success()
        .stdout(predicate::str::contains("Exit codes").and(predicate::str::contains("3 input")));
}

#[test]
fn a_usage_error_exits_2() {
    convbill()
        .args(["run", "--frobnicate"])
        .assert()
        .code(convbill::exit::USAGE);
}

#[test]
fn generate_is_deterministic_and_writes_exactly_the_requested_rows() {
    let dir = tempfile::tempdir().unwrap();
    let make = |name: &str, seed: &str| {
        let path = dir.path().join(name);
        convbill()
            .args([
                "generate",
                "--messages",
                "20000",
                "--seed",
                seed,
                "--days",
                "10",
                "--accounts",
                "20",
                "--out",
            ])
            .arg(&path)
            .assert()
            .success();
        path
    };
    let a = make("a.parquet", "7");
    let b = make("b.parquet", "7");
    let c = make("c.parquet", "8");
    assert_eq!(std::fs::read(&a).unwrap(), std::fs::read(&b).unwrap());
    assert_ne!(std::fs::read(&a).unwrap(), std::fs::read(&c).unwrap());

    let messages = convbill::load::load(&a).unwrap();
    assert_eq!(messages.stats.rows_read, 20_000);
    assert!(
        messages.stats.duplicates_dropped > 0,
        "the generator logs some rows twice"
    );
    let derived = convbill::sessions::derive(&messages.frame).unwrap();
    assert!(derived.stats.failed_outbound > 0);
    assert!(derived.stats.violations > 0);
    let sessions = sessions_of(&derived.sessions);
    for initiation in ["user_initiated", "business_initiated", "standard"] {
        assert!(
            sessions.iter().any(|s| s.initiation == initiation),
            "{initiation}"
        );
    }
    assert!(
        sessions
            .iter()
            .any(|s| s.channel == "standard" || !s.billable),
        "unanswered sessions"
    );
    let mut per_account = BTreeMap::<String, usize>::new();
    for s in &sessions {
        *per_account.entry(s.account.clone()).or_default() += 1;
    }
    let (small, large) = (
        per_account.values().min().unwrap(),
        per_account.values().max().unwrap(),
    );
    assert!(
        large / small.max(&1) >= 5,
        "account sizes vary: {per_account:?}"
    );
}

#[test]
fn an_empty_log_gives_empty_outputs_not_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let input = write_log(dir.path(), &[]);
    let out = dir.path().join("out");
    run_ok(&input, &out).stderr(predicate::str::contains("read 0 messages"));
    assert_eq!(read_parquet(&out.join("sessions.parquet")).height(), 0);
    assert_eq!(
        column_names(&read_parquet(&out.join("sessions.parquet"))),
        convbill::rating::RATED_SESSION_COLUMNS
    );
    assert_eq!(
        std::fs::read_to_string(out.join("invoice_lines.csv")).unwrap(),
        format!("{}\n", convbill::rating::LINE_COLUMNS.join(","))
    );
    assert!(!out.join("invoices").exists());
}

#[test]
fn an_account_id_too_long_for_a_file_name_is_billed_under_a_shortened_name() {
    let dir = tempfile::tempdir().unwrap();
    let long = "<&>".repeat(40) + &"x".repeat(200);
    let log = write_log(
        dir.path(),
        &[
            inbound("u1", "Mon 10:00").account(&long),
            reply("r1", "Mon 10:05").account(&long),
        ],
    );
    let out = dir.path().join("out");
    run_quietly(&log, &out);
    let names: Vec<String> = std::fs::read_dir(out.join("invoices/2024-01"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(names.len(), 1);
    assert!(names[0].starts_with("%3C%26%3E"), "{names:?}");
    assert!(names[0].contains('~') && names[0].len() <= 255, "{names:?}");
    let invoice: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(out.join("invoices/2024-01").join(&names[0])).unwrap(),
    )
    .unwrap();
    assert_eq!(invoice["account_id"], long.as_str());
}

#[test]
fn freed_memory_is_kept_and_huge_pages_off_unless_the_environment_says_otherwise() {
    let dir = tempfile::tempdir().unwrap();
    let log = write_log(dir.path(), &[inbound("m1", "2026-03-01 10:00")]);
    let stderr = |env: Option<(&str, &str)>| {
        let mut command = convbill();
        if let Some((name, value)) = env {
            command.env(name, value);
        }
        let output = command
            .args(["run", "-vv", "--input"])
            .arg(&log)
            .arg("--out")
            .arg(dir.path().join("out"))
            .output()
            .unwrap();
        assert!(output.status.success());
        String::from_utf8(output.stderr).unwrap()
    };
    let default = stderr(None);
    assert!(
        default.contains("freed memory: kept; transparent huge pages: off"),
        "{default}"
    );
    let thp = stderr(Some(("MIMALLOC_ALLOW_THP", "1")));
    assert!(
        thp.contains("freed memory: kept; transparent huge pages: on"),
        "{thp}"
    );
    let purge = stderr(Some(("MIMALLOC_PURGE_DELAY", "1000")));
    assert!(
        purge.contains("freed memory: handed back; transparent huge pages: off"),
        "{purge}"
    );
}

#[test]
fn csv_cells_a_spreadsheet_would_run_as_formulas_are_written_as_text() {
    let dir = tempfile::tempdir().unwrap();
    let log = write_log(
        dir.path(),
        &[
            inbound("=m1", "2026-03-01 10:00")
                .account("=HYPERLINK(\"x\")")
                .user("+31612345678"),
            reply("@m2", "2026-03-01 10:05")
                .account("=HYPERLINK(\"x\")")
                .user("+31612345678"),
        ],
    );
    let out = dir.path().join("out");
    run_quietly(&log, &out);
    // The Parquet outputs keep the values as read; the CSV quotes them for spreadsheets.
    let sessions = read_frame(&out.join("sessions.parquet"));
    assert_eq!(strings(&sessions, "account_id"), ["=HYPERLINK(\"x\")"]);
    let csv = std::fs::read_to_string(out.join("invoice_lines.csv")).unwrap();
    let line = csv.lines().nth(1).unwrap();
    assert!(line.contains(",\"'=HYPERLINK(\"\"x\"\")\","), "{line}");
    assert!(!csv.lines().skip(1).any(|l| l.starts_with('=')), "{csv}");

    let explained = convbill()
        .args([
            "explain",
            "--format",
            "csv",
            "--account==HYPERLINK(\"x\")",
            "--input",
        ])
        .arg(&log)
        .output()
        .unwrap();
    assert!(explained.status.success(), "{explained:?}");
    let text = String::from_utf8(explained.stdout).unwrap();
    let mut reader = csv::Reader::from_reader(text.as_bytes());
    let headers = reader.headers().unwrap().clone();
    let column = |name: &str| headers.iter().position(|h| h == name).unwrap();
    let rows: Vec<csv::StringRecord> = reader.records().map(Result::unwrap).collect();
    assert_eq!(rows.len(), 2);
    for row in &rows {
        assert_eq!(&row[column("account_id")], "'=HYPERLINK(\"x\")");
        assert_eq!(&row[column("user_id")], "'+31612345678");
    }
    assert_eq!(&rows[0][column("message_id")], "'=m1");
    assert_eq!(&rows[1][column("message_id")], "'@m2");
}

/// The summary the README shows is the one the sample data gives.
#[test]
fn the_readmes_summary_is_the_sample_runs() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    let shown: Vec<&str> = readme
        .lines()
        .skip_while(|l| !l.starts_with("    convbill: read 60019 messages"))
        .take_while(|l| l.trim() != "...")
        .map(|l| l.strip_prefix("    ").unwrap())
        .collect();
    assert!(shown.len() >= 4, "{shown:?}");
    let dir = tempfile::tempdir().unwrap();
    let output = run_command(Path::new("sample-data"), &dir.path().join("out"))
        .current_dir(root)
        .args(["--rates", "sample-data/rates.toml"])
        .output()
        .unwrap();
    assert!(output.status.success());
    let printed = String::from_utf8(output.stderr).unwrap();
    let printed: Vec<&str> = printed.lines().take(shown.len()).collect();
    assert_eq!(printed, shown);
}

#[test]
fn only_a_missing_default_input_gets_the_hint_about_sample_data() {
    let dir = tempfile::tempdir().unwrap();
    // No `sample-data` here: the default input is missing, and the hint says what to pass.
    let output = convbill()
        .current_dir(dir.path())
        .args(["run", "--out", "out"])
        .assert()
        .code(convbill::exit::DATA);
    let stderr = String::from_utf8(output.get_output().stderr.clone()).unwrap();
    assert!(
        stderr.contains("input `sample-data` does not exist"),
        "{stderr}"
    );
    assert!(
        stderr.contains("hint: `sample-data` (the default input) is the sample folder in convbill's source tree: run from there, or pass `--input PATH`"),
        "{stderr}"
    );
    // A path the user gave is named, without the hint, by `run` and by `explain`.
    for args in [
        &["run", "--input", "nothere", "--out", "out"][..],
        &["explain", "--input", "nothere", "--account", "a"][..],
    ] {
        let output = convbill()
            .current_dir(dir.path())
            .args(args)
            .assert()
            .code(convbill::exit::DATA);
        let stderr = String::from_utf8(output.get_output().stderr.clone()).unwrap();
        assert!(
            stderr.contains("input `nothere` does not exist"),
            "{stderr}"
        );
        assert!(!stderr.contains("hint"), "{stderr}");
    }
}
