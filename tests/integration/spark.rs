//! The PySpark job (`integrations/spark/convbill_spark.py`) on real Spark in local mode: it
//! lays the log out by bucket, runs one shard per task and merges them, and bills exactly what
//! one convbill run bills, even when task attempts die mid-run and mid-publish.
//!
//! Needs PySpark with pyarrow and a JDK (`.ci/run` installs them).

use std::path::{Path, PathBuf};
use std::process::Command;

use polars::prelude::*;

use crate::cli::{convbill, snapshot};
use crate::shards::{month_log, CARD};
use crate::support::*;

fn source_tree() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The rows of a table Spark wrote (a folder of part files), sorted by `by`.
fn spark_table(dir: &Path, by: &[&str]) -> DataFrame {
    let mut parts: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "parquet"))
        .collect();
    parts.sort();
    assert!(!parts.is_empty(), "no part files in {}", dir.display());
    let frames: Vec<LazyFrame> = parts.iter().map(|p| read_frame(p).lazy()).collect();
    sorted(
        concat(frames, UnionArgs::default())
            .unwrap()
            .collect()
            .unwrap(),
        by,
    )
}

/// The Spark job in local mode (`master`) with `shards` shards on `input`, rated by `card`.
fn job(
    master: &str,
    shards: u32,
    input: &Path,
    card: &Path,
    work: &Path,
    output: &Path,
) -> Command {
    let mut command = Command::new("python3");
    command
        .arg(source_tree().join("integrations/spark/convbill_spark.py"))
        .args([
            "--master",
            master,
            "--shards",
            &shards.to_string(),
            "--input",
        ])
        .arg(input)
        .arg("--rates")
        .arg(card)
        .arg("--work")
        .arg(work)
        .arg("--output")
        .arg(output)
        .arg("--convbill")
        .arg(env!("CARGO_BIN_EXE_convbill"))
        .env_remove("RUST_LOG");
    command
}

fn sorted(frame: DataFrame, by: &[&str]) -> DataFrame {
    frame
        .sort(by.to_vec(), SortMultipleOptions::default())
        .unwrap()
}

#[test]
fn the_spark_job_bills_exactly_what_one_run_does_when_tasks_die() {
    let probe = Command::new("python3")
        .args(["-c", "import pyspark, pyarrow"])
        .output()
        .unwrap();
    assert!(
        probe.status.success(),
        "PySpark is missing: run .ci/run, or `pip install pyspark pyarrow` and a JDK 17 ({})",
        String::from_utf8_lossy(&probe.stderr)
    );
    let dir = tempfile::tempdir().unwrap();
    let logs = dir.path().join("logs");
    std::fs::create_dir(&logs).unwrap();
    let log = month_log(&logs, 7);
    let (work, output) = (dir.path().join("work"), dir.path().join("output"));
    let card = source_tree().join(CARD);
    let run = job("local[2,4]", 4, &logs, &card, &work, &output)
        // Shard 1's first attempt dies with convbill running, shard 2's halfway through
        // putting its folder in place, shard 3's right after: Spark runs them again.
        .env(
            "CONVBILL_SPARK_TEST_KILL",
            "1:running,2:publishing,3:published",
        )
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(run.status.success(), "{stderr}");
    assert!(work.join(".killed-1-running").is_file());
    assert!(work.join(".killed-2-publishing").is_file());
    assert!(work.join(".killed-3-published").is_file());
    let summary: serde_json::Value =
        serde_json::from_slice(run.stdout.rsplit(|b| *b == b'\n').nth(1).unwrap()).unwrap();
    for stage in [
        "layout_seconds",
        "shards_seconds",
        "merge_seconds",
        "outputs_seconds",
    ] {
        assert!(summary["timings"][stage].as_f64().is_some(), "{summary}");
    }

    // The merged folder is the bytes of one run over the laid-out log (the tasks' input).
    let laid = work.join("input");
    let buckets: Vec<String> = std::fs::read_dir(&laid)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("convbill_bucket="))
        .collect();
    assert_eq!(buckets.len(), 4, "{buckets:?}");
    let single = dir.path().join("single");
    convbill()
        .args(["run", "-q", "--rates"])
        .arg(&card)
        .arg("--input")
        .arg(&laid)
        .arg("--out")
        .arg(&single)
        .assert()
        .success();
    let mut merged = snapshot(&work.join("merged"));
    let mut one = snapshot(&single);
    merged.remove(Path::new("manifest.json"));
    one.remove(Path::new("manifest.json"));
    assert_eq!(
        merged.keys().collect::<Vec<_>>(),
        one.keys().collect::<Vec<_>>()
    );
    for (path, bytes) in &one {
        assert!(merged[path] == *bytes, "{} differs", path.display());
    }

    // Spark's tables hold the sessions and invoice lines of one run over the original log.
    let original = dir.path().join("original");
    convbill()
        .args(["run", "-q", "--rates"])
        .arg(&card)
        .arg("--input")
        .arg(&log)
        .arg("--out")
        .arg(&original)
        .assert()
        .success();
    let sessions = sorted(
        read_frame(&original.join("sessions.parquet")),
        &["session_id"],
    );
    let spark_sessions = spark_table(&output.join("sessions"), &["session_id"]);
    assert!(sessions.height() > 1000);
    assert_eq!(spark_sessions.height(), sessions.height());
    for name in [
        "session_id",
        "account_id",
        "channel",
        "initiation",
        "quota",
        "period",
        "invoice_id",
    ] {
        assert!(
            spark_sessions
                .column(name)
                .unwrap()
                .equals_missing(sessions.column(name).unwrap()),
            "sessions.{name}"
        );
    }
    let starts = |frame: &DataFrame| -> Vec<i64> {
        let column = frame.column("started_at").unwrap();
        let unit = match column.dtype() {
            DataType::Datetime(unit, _) => *unit,
            other => panic!("started_at is {other}"),
        };
        let per_ns = match unit {
            TimeUnit::Nanoseconds => 1,
            TimeUnit::Microseconds => 1_000,
            TimeUnit::Milliseconds => 1_000_000,
        };
        column
            .to_physical_repr()
            .i64()
            .unwrap()
            .into_no_null_iter()
            .map(|t| t * per_ns)
            .collect()
    };
    assert_eq!(starts(&spark_sessions), starts(&sessions));
    let key = [
        "account_id",
        "period",
        "channel",
        "initiation",
        "price_version",
    ];
    let lines = sorted(read_frame(&original.join("invoice_lines.parquet")), &key);
    let spark_lines = spark_table(&output.join("invoice_lines"), &key);
    assert_eq!(spark_lines.height(), lines.height());
    for name in [
        "invoice_id",
        "account_id",
        "period",
        "status",
        "sessions",
        "quota",
        "overage_quota",
        "amount",
    ] {
        let text = |frame: &DataFrame| -> Vec<Option<String>> {
            let column = frame.column(name).unwrap().cast(&DataType::String).unwrap();
            column
                .str()
                .unwrap()
                .iter()
                .map(|v| v.map(str::to_string))
                .collect()
        };
        assert_eq!(text(&spark_lines), text(&lines), "invoice_lines.{name}");
    }
    // One invoice per account and period: none partial, none twice.
    let invoices = spark_table(&output.join("invoices"), &["account_id", "period"]);
    assert_eq!(
        invoices.height(),
        read_frame(&original.join("invoices.parquet")).height()
    );
    assert!(!invoices
        .select(["account_id", "period"])
        .unwrap()
        .is_duplicated()
        .unwrap()
        .any());

    // A card convbill refuses fails the job before the shuffle, with convbill's message.
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "default_plan = \"nope\"\n").unwrap();
    let work = dir.path().join("work-bad");
    let refused = job(
        "local[2]",
        2,
        &logs,
        &bad,
        &work,
        &dir.path().join("output-bad"),
    )
    .output()
    .unwrap();
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success());
    assert!(
        stderr.contains("convbill refuses the rate card"),
        "{stderr}"
    );
    assert!(stderr.contains("bad.toml"), "{stderr}");
    assert!(!work.join("input").exists());
}
