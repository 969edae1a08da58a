//! Shards (`convbill run --shard I/N`) and `convbill merge`: shards run apart (two at a time,
//! from the scheduler's environment, on a log laid out by bucket) and merged give the bytes of
//! one run; shards that do not belong together are refused, named.

use assert_cmd::Command;
use polars::prelude::*;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::cli::{convbill, snapshot};
use crate::support::*;

pub(crate) const CARD: &str = "sample-data/meta/rates.toml";

/// A month of 40 accounts' WhatsApp (Meta's markets), Messenger and Instagram traffic across
/// Meta's switch to per-message pricing, with duplicates.
pub(crate) fn month_log(dir: &Path, seed: u64) -> PathBuf {
    let path = dir.join(format!("log-{seed}.parquet"));
    generate(&path, 40_000, 40, "2025-06-15", 31, seed);
    path
}

/// `convbill generate --markets` of `messages` rows over `accounts` accounts and `days` days
/// from `start` into `path`.
pub(crate) fn generate(
    path: &Path,
    messages: u64,
    accounts: u32,
    start: &str,
    days: u32,
    seed: u64,
) {
    convbill()
        .args(["generate", "--markets", "--start", start])
        .arg("--messages")
        .arg(messages.to_string())
        .arg("--accounts")
        .arg(accounts.to_string())
        .arg("--days")
        .arg(days.to_string())
        .arg("--seed")
        .arg(seed.to_string())
        .arg("--out")
        .arg(path)
        .assert()
        .success();
}

/// `convbill run -q --input INPUT --rates CARD --out OUT` plus `extra`, from the source tree.
pub(crate) fn run(input: &Path, out: &Path, extra: &[&str]) -> Command {
    let mut command = convbill();
    command
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args(["run", "-q", "--rates", CARD, "--input"])
        .arg(input)
        .arg("--out")
        .arg(out)
        .args(extra);
    command
}

/// `convbill merge -q --out OUT SHARDS...`, from the source tree.
pub(crate) fn merge(out: &Path, shards: &[PathBuf]) -> Command {
    let mut command = convbill();
    command
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args(["merge", "-q", "--out"])
        .arg(out)
        .args(shards);
    command
}

/// Runs the `count` shards of `input`, `together` at a time; their folders.
fn run_shards(
    input: &Path,
    dir: &Path,
    count: u32,
    together: usize,
    extra: &[&str],
) -> Vec<PathBuf> {
    let folders: Vec<PathBuf> = (0..count)
        .map(|i| dir.join(format!("shard-{i}-of-{count}")))
        .collect();
    for batch in (0..count as usize).collect::<Vec<_>>().chunks(together) {
        let children: Vec<_> = batch
            .iter()
            .map(|&i| {
                std::process::Command::new(env!("CARGO_BIN_EXE_convbill"))
                    .current_dir(env!("CARGO_MANIFEST_DIR"))
                    .args(["run", "-q", "--rates", CARD, "--input"])
                    .arg(input)
                    .arg("--out")
                    .arg(&folders[i])
                    .args(extra)
                    .arg("--shard")
                    .arg(format!("{i}/{count}"))
                    .env_remove("RUST_LOG")
                    .spawn()
                    .unwrap()
            })
            .collect();
        for mut child in children {
            assert!(child.wait().unwrap().success());
        }
    }
    folders
}

/// A folder's files and bytes, its manifest left out.
fn outputs(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut files = snapshot(dir);
    assert!(files.remove(Path::new("manifest.json")).is_some());
    files
}

fn manifest(dir: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(dir.join("manifest.json")).unwrap()).unwrap()
}

fn same_outputs(merged: &Path, whole: &Path) {
    let (merged, whole) = (outputs(merged), outputs(whole));
    assert_eq!(
        merged.keys().collect::<Vec<_>>(),
        whole.keys().collect::<Vec<_>>()
    );
    for (path, bytes) in &whole {
        assert!(merged[path] == *bytes, "{} differs", path.display());
    }
}

#[test]
fn four_shards_two_at_a_time_merge_to_the_bytes_of_one_run() {
    let dir = tempfile::tempdir().unwrap();
    let log = month_log(dir.path(), 3);
    let whole = dir.path().join("whole");
    run(&log, &whole, &[]).assert().success();
    let shards = run_shards(&log, dir.path(), 4, 2, &[]);

    // Each shard is a complete folder of its own accounts, and says which shard it is.
    let mut accounts = 0;
    for (i, shard) in shards.iter().enumerate() {
        let m = manifest(shard);
        assert_eq!(m["shard"]["shard"], format!("{i}/4"));
        assert_eq!(m["input"]["files"][0]["path"], "log-3.parquet");
        assert_eq!(m["rate_card"]["source"], CARD);
        let invoices = read_frame(&shard.join("invoices.parquet"));
        for account in invoices.column("account_id").unwrap().str().unwrap().iter() {
            assert_eq!(
                convbill::shard::Shard::bucket_of(account.unwrap(), 4),
                i as u32
            );
        }
        accounts += invoices.height();
        assert!(shard.join("report.html").is_file());
    }
    assert_eq!(
        accounts,
        read_frame(&whole.join("invoices.parquet")).height()
    );

    let merged = dir.path().join("merged");
    // In any order.
    let mut given = shards.clone();
    given.reverse();
    merge(&merged, &given).assert().success();
    same_outputs(&merged, &whole);
    let m = manifest(&merged);
    assert!(m.get("shard").is_none());
    let listed: Vec<&str> = m["shards"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["shard"].as_str().unwrap())
        .collect();
    assert_eq!(listed, ["0/4", "1/4", "2/4", "3/4"]);
    assert_eq!(m["input"], manifest(&whole)["input"]);
    assert_eq!(m["invoices"], manifest(&whole)["invoices"]);
    assert_eq!(m["meta"], manifest(&whole)["meta"]);

    // A rerun of the merge gives the same bytes (the invoices are not revised).
    merge(&merged, &shards).assert().success();
    same_outputs(&merged, &whole);
    assert!(hidden_entries(dir.path()).is_empty());

    // Another run working on the merged folder: the merge does nothing (exit 4).
    let folder = convbill::folder::OutFolder::new(&merged).unwrap();
    let held = folder.lock().unwrap();
    let before = snapshot(&merged);
    merge(&merged, &shards).assert().code(convbill::exit::BUSY);
    assert_eq!(snapshot(&merged), before);
    drop(held);

    // A merged folder that would replace a shard, or lie inside one: exit 2, nothing touched.
    for (out, says) in [
        (dir.path().to_path_buf(), "is or holds shard 0/4"),
        (shards[2].join("merged"), "lies inside shard 2/4"),
    ] {
        merge(&out, &shards)
            .assert()
            .code(2)
            .stderr(predicates::str::contains(says))
            .stderr(predicates::str::contains("write the merge elsewhere"));
    }
    assert!(!shards[2].join("merged").exists());
    assert_eq!(snapshot(&merged), before);

    // A shard's file copied over after it ran (another shard's sessions): refused, named.
    let tampered = dir.path().join("tampered-3");
    crate::cli::copy_dir(&shards[3], &tampered);
    std::fs::copy(
        shards[2].join("sessions.parquet"),
        tampered.join("sessions.parquet"),
    )
    .unwrap();
    let mut given = shards[..3].to_vec();
    given.push(tampered);
    refused(
        dir.path(),
        &given,
        &[
            "shard 3/4",
            "tampered-3",
            "`sessions.parquet` is not the file its manifest lists",
        ],
    );
}

#[test]
fn a_merge_revises_the_final_invoices_of_the_merge_it_replaces_as_a_run_does() {
    let dir = tempfile::tempdir().unwrap();
    // June whole, so that invoices are final; the log then changes in place.
    let log = dir.path().join("log.parquet");
    let month = |seed: u64| generate(&log, 8_000, 6, "2025-06-01", 30, seed);
    let (whole, merged) = (dir.path().join("whole"), dir.path().join("merged"));
    for seed in [8, 9] {
        month(seed);
        run(&log, &whole, &[]).assert().success();
        let shards = run_shards(&log, dir.path(), 2, 2, &[]);
        merge(&merged, &shards).assert().success();
        same_outputs(&merged, &whole);
    }
    let invoices = read_frame(&merged.join("invoices.parquet"));
    let revisions = invoices
        .column("revision")
        .unwrap()
        .cast(&DataType::Int64)
        .unwrap();
    assert!(
        revisions.i64().unwrap().into_no_null_iter().any(|r| r == 2),
        "no invoice was revised: {invoices}"
    );
}

/// `convbill merge` with these shard folders fails with exit code 3, naming `named`, and
/// writes nothing.
pub(crate) fn refused(dir: &Path, shards: &[PathBuf], named: &[&str]) {
    let out = dir.join("refused");
    let output = merge(&out, shards).output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(3), "{stderr}");
    for name in named {
        assert!(stderr.contains(name), "{name} not in: {stderr}");
    }
    assert!(!out.exists(), "{stderr}");
}

#[test]
fn shards_that_do_not_belong_together_are_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let log = month_log(dir.path(), 3);
    let shards = run_shards(&log, dir.path(), 4, 2, &[]);

    refused(
        dir.path(),
        &[shards[0].clone(), shards[1].clone(), shards[3].clone()],
        &["shard 2/4 is missing"],
    );
    refused(
        dir.path(),
        &[
            shards[0].clone(),
            shards[1].clone(),
            shards[1].clone(),
            shards[2].clone(),
            shards[3].clone(),
        ],
        &["shard 1/4 is given twice", "shard-1-of-4"],
    );

    // Shard 1 run again after the log changed in place (a late rewrite): the same path,
    // other bytes.
    let original = std::fs::read(&log).unwrap();
    let other_dir = dir.path().join("other");
    std::fs::create_dir(&other_dir).unwrap();
    std::fs::copy(month_log(&other_dir, 4), &log).unwrap();
    let changed = dir.path().join("changed-1");
    run(&log, &changed, &["--shard", "1/4"]).assert().success();
    std::fs::write(&log, original).unwrap();
    refused(
        dir.path(),
        &[
            shards[0].clone(),
            changed,
            shards[2].clone(),
            shards[3].clone(),
        ],
        &[
            "`log-3.parquet` differs",
            "shard 0/4",
            "shard 1/4",
            "changed-1",
        ],
    );
    // Another log's shard.
    let others = run_shards(&other_dir.join("log-4.parquet"), &other_dir, 4, 2, &[]);
    refused(
        dir.path(),
        &[
            shards[0].clone(),
            others[1].clone(),
            shards[2].clone(),
            shards[3].clone(),
        ],
        &[
            "shard 1/4",
            "read the input",
            "log-4.parquet",
            "merge the shards of one input",
        ],
    );

    // Another count, another card, another version, an unsharded folder.
    let two = run_shards(&log, dir.path(), 2, 2, &[]);
    refused(
        dir.path(),
        &[two[0].clone(), shards[1].clone()],
        &["one of 4 shards", "one of 2"],
    );
    let sample_card = dir.path().join("card.toml");
    let text = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(CARD))
        .unwrap()
        .replace("unit_price = \"0.0450\"", "unit_price = \"0.0460\"")
        .replace(
            "\"rates-usd-",
            &format!(
                "\"{}/sample-data/meta/rates-usd-",
                env!("CARGO_MANIFEST_DIR")
            ),
        );
    std::fs::write(&sample_card, text).unwrap();
    let repriced = dir.path().join("repriced-2");
    convbill()
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args(["run", "-q", "--shard", "2/4", "--rates"])
        .arg(&sample_card)
        .arg("--input")
        .arg(&log)
        .arg("--out")
        .arg(&repriced)
        .assert()
        .success();
    refused(
        dir.path(),
        &[
            shards[0].clone(),
            shards[1].clone(),
            repriced,
            shards[3].clone(),
        ],
        &[
            "shard 2/4",
            "another rate card",
            "the card `",
            "card.toml` differs",
        ],
    );
    // A shard of another convbill version.
    let old = dir.path().join("old-3");
    crate::cli::copy_dir(&shards[3], &old);
    let text = std::fs::read_to_string(old.join("manifest.json")).unwrap();
    let version = format!("\"version\": \"{}\"", env!("CARGO_PKG_VERSION"));
    assert!(text.contains(&version));
    std::fs::write(
        old.join("manifest.json"),
        text.replacen(&version, "\"version\": \"0.0.1\"", 1),
    )
    .unwrap();
    refused(
        dir.path(),
        &[shards[0].clone(), shards[1].clone(), shards[2].clone(), old],
        &["shard 3/4", "old-3", "convbill 0.0.1", "one version"],
    );
    let unsharded = dir.path().join("unsharded");
    run(&log, &unsharded, &[]).assert().success();
    refused(
        dir.path(),
        &[unsharded.clone(), shards[1].clone()],
        &["not a shard's output", "unsharded"],
    );
    let empty = dir.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    refused(
        dir.path(),
        &[empty, shards[1].clone()],
        &["empty", "not a convbill output folder"],
    );
    // A Meta price file edited between two shards' runs: the file is named.
    let cards = dir.path().join("cards");
    crate::cli::copy_dir(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("sample-data/meta"),
        &cards,
    );
    let card = cards.join("rates.toml");
    let priced_run = |shard: &str, out: &Path| {
        convbill()
            .args(["run", "-q", "--shard", shard, "--rates"])
            .arg(&card)
            .arg("--input")
            .arg(&log)
            .arg("--out")
            .arg(out)
            .assert()
            .success();
    };
    let priced = [dir.path().join("priced-0"), dir.path().join("priced-1")];
    priced_run("0/2", &priced[0]);
    let prices = cards.join("rates-usd-2025-07.csv");
    let text = std::fs::read_to_string(&prices).unwrap();
    std::fs::write(&prices, text.replacen("illustrative", "made up", 1)).unwrap();
    priced_run("1/2", &priced[1]);
    merge(&dir.path().join("priced"), &priced)
        .arg("--rates")
        .arg(&card)
        .assert()
        .code(3)
        .stderr(predicates::str::contains(
            "the Meta price file `rates-usd-2025-07.csv` differs",
        ));
    // Merged from another folder: the card the manifests name (relative) is not found there.
    merge(&dir.path().join("elsewhere"), &shards)
        .current_dir(dir.path())
        .assert()
        .code(2)
        .stderr(predicates::str::contains(CARD))
        .stderr(predicates::str::contains("pass the card with `--rates`"));
}

/// Writes `log`'s rows into `dir/convbill_bucket=I/part-0.parquet` by bucket of `count`, as a
/// Spark job's `partitionBy` lays a log out (the bucket only in the folder name), leaving out
/// the rows of 20 June but bucket 0's: only shard 0 has messages that day.
fn lay_out(log: &Path, dir: &Path, count: u32) {
    let frame = read_frame(log);
    // `convbill generate` writes microseconds.
    let day = (at("2025-06-20 00:00") / 1_000)..(at("2025-06-21 00:00") / 1_000);
    let times = timestamps(&frame);
    let buckets: Vec<u32> = frame
        .column("account_id")
        .unwrap()
        .str()
        .unwrap()
        .iter()
        .map(|a| convbill::shard::Shard::bucket_of(a.unwrap(), count))
        .collect();
    for bucket in 0..count {
        let mask: BooleanChunked = buckets
            .iter()
            .zip(&times)
            .map(|(b, t)| *b == bucket && (bucket == 0 || !day.contains(t)))
            .collect();
        let mut part = frame.filter(&mask).unwrap();
        let folder = dir.join(format!("convbill_bucket={bucket}"));
        std::fs::create_dir_all(&folder).unwrap();
        write_parquet(&folder.join("part-0.parquet"), &mut part);
    }
}

#[test]
fn shards_of_a_log_laid_out_by_bucket_read_their_own_folder_only() {
    let dir = tempfile::tempdir().unwrap();
    let log = month_log(dir.path(), 5);
    let laid = dir.path().join("laid");
    lay_out(&log, &laid, 3);
    let whole = dir.path().join("whole");
    run(&laid, &whole, &[]).assert().success();
    let shards = run_shards(&laid, dir.path(), 3, 2, &[]);
    for (i, shard) in shards.iter().enumerate() {
        let files = &manifest(shard)["input"]["files"];
        assert_eq!(files.as_array().unwrap().len(), 1);
        assert_eq!(
            files[0]["path"],
            format!("convbill_bucket={i}/part-0.parquet")
        );
    }
    // Shard 1's own invoices miss 20 June; the merge judges them by every shard's days.
    let uncovered = |out: &Path| {
        let invoices = read_frame(&out.join("invoices.parquet"));
        let uncovered = invoices.column("uncovered").unwrap().str().unwrap().clone();
        let found = uncovered
            .iter()
            .any(|u| u.is_some_and(|u| u.contains("2025-06-20")));
        found
    };
    assert!(uncovered(&shards[1]));
    assert!(!uncovered(&whole));
    let merged = dir.path().join("merged");
    merge(&merged, &shards).assert().success();
    same_outputs(&merged, &whole);

    // A file in the wrong bucket's folder: refused, naming it, its row and the account.
    std::fs::rename(
        laid.join("convbill_bucket=1/part-0.parquet"),
        laid.join("convbill_bucket=2/part-1.parquet"),
    )
    .unwrap();
    let output = run(&laid, &dir.path().join("wrong"), &["--shard", "2/3"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(3), "{stderr}");
    assert!(
        stderr.contains("convbill_bucket=2/part-1.parquet"),
        "{stderr}"
    );
    assert!(stderr.contains("row 0 holds account"), "{stderr}");
    assert!(stderr.contains("of bucket 1 of 3"), "{stderr}");
    std::fs::rename(
        laid.join("convbill_bucket=2/part-1.parquet"),
        laid.join("convbill_bucket=1/part-0.parquet"),
    )
    .unwrap();

    // A file that lands in bucket 2's folder after shard 2 ran: the other shards found it,
    // and the merge refuses rather than bill it nowhere.
    let late_dir = dir.path().join("late");
    std::fs::create_dir(&late_dir).unwrap();
    let late = run_shards(&laid, &late_dir, 3, 1, &[]);
    std::fs::copy(
        laid.join("convbill_bucket=2/part-0.parquet"),
        laid.join("convbill_bucket=2/part-9.parquet"),
    )
    .unwrap();
    let rerun = dir.path().join("rerun-0");
    run(&laid, &rerun, &["--shard", "0/3"]).assert().success();
    refused(
        dir.path(),
        &[rerun, late[1].clone(), late[2].clone()],
        &[
            "convbill_bucket=2/part-9.parquet",
            "shard 0/3",
            "did not",
            "arrived late",
        ],
    );
    std::fs::remove_file(laid.join("convbill_bucket=2/part-9.parquet")).unwrap();

    // A night on which shard 1's accounts have no messages, but bucket 0's folder has: not
    // refused as empty.
    run(
        &laid,
        &dir.path().join("night-1"),
        &["--shard", "1/3", "--date", "2025-06-20", "--init"],
    )
    .assert()
    .success();
}

/// The log of [`month_log`] with bad rows among the accounts: an unknown channel, a null
/// user and a null account.
fn dirty_log(dir: &Path) -> PathBuf {
    let mut frame = read_frame(&month_log(dir, 6));
    let height = frame.height();
    let channels: Vec<Option<String>> = frame
        .column("channel")
        .unwrap()
        .str()
        .unwrap()
        .iter()
        .enumerate()
        .map(|(i, c)| match i % 997 {
            5 => Some("sms".to_string()),
            _ => c.map(str::to_string),
        })
        .collect();
    let users: Vec<Option<String>> = frame
        .column("user_id")
        .unwrap()
        .str()
        .unwrap()
        .iter()
        .enumerate()
        .map(|(i, u)| (i % 1999 != 7).then(|| u.unwrap().to_string()))
        .collect();
    let accounts: Vec<Option<String>> = frame
        .column("account_id")
        .unwrap()
        .str()
        .unwrap()
        .iter()
        .enumerate()
        .map(|(i, a)| (i != height / 2).then(|| a.unwrap().to_string()))
        .collect();
    frame
        .with_column(Column::new("channel".into(), channels))
        .unwrap();
    frame
        .with_column(Column::new("user_id".into(), users))
        .unwrap();
    frame
        .with_column(Column::new("account_id".into(), accounts))
        .unwrap();
    let path = dir.join("dirty.parquet");
    write_parquet(&path, &mut frame);
    path
}

#[test]
fn rows_set_aside_merge_in_file_and_row_order() {
    let dir = tempfile::tempdir().unwrap();
    let log = dirty_log(dir.path());
    let whole = dir.path().join("whole");
    run(&log, &whole, &["--rejects"]).assert().success();
    let rejects = read_frame(&whole.join("rejects.parquet"));
    assert!(rejects.height() > 40, "{}", rejects.height());
    let shards = run_shards(&log, dir.path(), 3, 2, &["--rejects"]);
    // The row without an account is shard 0's.
    let held: Vec<usize> = shards
        .iter()
        .map(|s| read_frame(&s.join("rejects.parquet")).height())
        .collect();
    assert_eq!(held.iter().sum::<usize>(), rejects.height());
    let merged = dir.path().join("merged");
    merge(&merged, &shards).assert().success();
    same_outputs(&merged, &whole);
    assert_eq!(
        manifest(&merged)["input"]["rejected_by_reason"],
        manifest(&whole)["input"]["rejected_by_reason"]
    );

    // A shard run without `--rejects` (of a clean log: its checks would stop it otherwise)
    // among shards run with it: refused, both named.
    let plain = dir.path().join("plain");
    run(&month_log(dir.path(), 6), &plain, &["--shard", "1/3"])
        .assert()
        .success();
    refused(
        dir.path(),
        &[shards[0].clone(), plain, shards[2].clone()],
        &["set rows aside (`--rejects`)", "shard 0/3", "shard 1/3"],
    );
}

#[test]
fn the_shard_comes_from_the_schedulers_environment() {
    let dir = tempfile::tempdir().unwrap();
    let log = month_log(dir.path(), 3);
    let given = dir.path().join("given");
    run(&log, &given, &["--shard", "1/3"]).assert().success();
    for (name, value, extra) in [
        ("JOB_COMPLETION_INDEX", "1", None),
        ("AWS_BATCH_JOB_ARRAY_INDEX", "1", None),
        (
            "SLURM_ARRAY_TASK_ID",
            "2",
            Some(("SLURM_ARRAY_TASK_MIN", "1")),
        ),
    ] {
        let out = dir.path().join(name);
        let mut command = run(&log, &out, &["--shard-from-env", "3"]);
        command.env(name, value);
        if let Some((n, v)) = extra {
            command.env(n, v);
        }
        command.assert().success();
        assert_eq!(snapshot(&out), snapshot(&given), "{name}");
    }
    // No variable, or an index the count does not have: exit 2, nothing written.
    let out = dir.path().join("none");
    let output = run(&log, &out, &["--shard-from-env", "3"])
        .env_remove("JOB_COMPLETION_INDEX")
        .env_remove("SLURM_ARRAY_TASK_ID")
        .env_remove("AWS_BATCH_JOB_ARRAY_INDEX")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("JOB_COMPLETION_INDEX"));
    let output = run(&log, &out, &["--shard-from-env", "3"])
        .env("JOB_COMPLETION_INDEX", "3")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("0 to 2"));
    assert!(!out.exists());
    // `--shard` checks its value too.
    let output = run(&log, &out, &["--shard", "3/3"]).output().unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("shard 3/3 does not exist"));
}

/// The sessions of every night of a nightly history, in one frame.
fn nightly_sessions(out: &Path) -> DataFrame {
    let mut frames = Vec::new();
    let mut nights: Vec<PathBuf> = std::fs::read_dir(out.join("sessions"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    nights.sort();
    for night in nights {
        frames.push(read_frame(&night.join("part-0.parquet")).lazy());
    }
    concat(frames, UnionArgs::default())
        .unwrap()
        .sort(["session_id"], Default::default())
        .collect()
        .unwrap()
}

#[test]
fn nightly_shards_keep_their_own_history_and_together_bill_the_same_sessions() {
    let dir = tempfile::tempdir().unwrap();
    // On 17 June only the accounts of shard 0 of 2 have messages; 18 June has none at all.
    let frame = read_frame(&month_log(dir.path(), 3));
    // `convbill generate` writes microseconds.
    assert!(matches!(
        frame.column("timestamp").unwrap().dtype(),
        DataType::Datetime(TimeUnit::Microseconds, _)
    ));
    let day = |date: &str| at(&format!("{date} 00:00")) / 1_000;
    let (seventeenth, eighteenth, nineteenth) =
        (day("2025-06-17"), day("2025-06-18"), day("2025-06-19"));
    let times = timestamps(&frame);
    let keep: BooleanChunked = frame
        .column("account_id")
        .unwrap()
        .str()
        .unwrap()
        .iter()
        .zip(&times)
        .map(|(account, &t)| {
            let bucket = convbill::shard::Shard::bucket_of(account.unwrap(), 2);
            !((seventeenth..eighteenth).contains(&t) && bucket != 0
                || (eighteenth..nineteenth).contains(&t))
        })
        .collect();
    let mut frame = frame.filter(&keep).unwrap();
    let log = dir.path().join("log.parquet");
    write_parquet(&log, &mut frame);
    let nights = ["2025-06-15", "2025-06-16", "2025-06-17"];
    let night = |out: &Path, date: &str, extra: &[&str]| {
        let mut command = run(&log, out, &["--date", date]);
        if date == nights[0] {
            command.arg("--init");
        }
        command.args(extra).assert().success();
    };
    let whole = dir.path().join("whole");
    let shards: Vec<PathBuf> = (0..2)
        .map(|i| dir.path().join(format!("night-{i}")))
        .collect();
    for date in nights {
        night(&whole, date, &[]);
        for (i, shard) in shards.iter().enumerate() {
            night(shard, date, &["--shard", &format!("{i}/2")]);
        }
    }
    let mut together = nightly_sessions(&shards[0]);
    together.vstack_mut(&nightly_sessions(&shards[1])).unwrap();
    let together = together.sort(["session_id"], Default::default()).unwrap();
    let whole_sessions = nightly_sessions(&whole);
    assert!(whole_sessions.height() > 100);
    assert!(together.equals_missing(&whole_sessions));
    // Shard 1 ran the 17th without messages of its own (another shard's were there); the
    // 18th has none at all: refused as a whole history would be.
    for out in [&whole, &shards[1]] {
        let mut command = run(&log, out, &["--date", "2025-06-18"]);
        if out == &shards[1] {
            command.args(["--shard", "1/2"]);
        }
        command
            .assert()
            .code(3)
            .stderr(predicates::str::contains("2025-06-18"));
    }
    // Merged, the shards' histories are the whole one.
    let merged = dir.path().join("merged");
    merge(&merged, &shards).assert().success();
    crate::shard_histories::same_history(&merged, &whole, &shards);
    // Nor is a merge written over a nightly history (without a hint about `--date`).
    let two = run_shards(&log, dir.path(), 2, 2, &[]);
    let output = merge(&whole, &two).output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("holds a nightly history"), "{stderr}");
    assert!(stderr.contains("a folder of its own"), "{stderr}");
    assert!(!stderr.contains("--date"), "{stderr}");
    // A history is continued only by its own shard: another one, none, or one on an
    // unsharded history is refused (exit 2), and the history stays as it was.
    let before = snapshot(&shards[0]);
    for (out, extra, says) in [
        (
            &shards[0],
            vec!["--shard", "1/2"],
            "holds the history of shard 0/2; this run is shard 1/2",
        ),
        (
            &shards[0],
            vec![],
            "holds the history of shard 0/2; this run is unsharded",
        ),
        (
            &whole,
            vec!["--shard", "0/2"],
            "holds an unsharded history; this run is shard 0/2",
        ),
    ] {
        run(&log, out, &["--date", "2025-06-18"])
            .args(extra)
            .assert()
            .code(2)
            .stderr(predicates::str::contains(says));
    }
    assert_eq!(snapshot(&shards[0]), before);
}
