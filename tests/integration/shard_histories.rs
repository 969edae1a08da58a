//! `convbill merge` of nightly shards' histories (`convbill run --date D --shard I/N`): merged,
//! they are the bytes of one unsharded history of the same nights (the month-to-date manifest
//! aside, which lists the shards), through closed periods, rows set aside, late files and
//! recomputes; histories that do not belong together are refused, named.

use polars::prelude::*;
use std::path::{Path, PathBuf};

use crate::cli::snapshot;
use crate::shards::{generate, merge, refused, run, CARD};
use crate::support::*;

const SHARDS: u32 = 3;

/// `convbill run -q --rates CARD --input INPUT --date DATE` plus `extra` on every history of
/// `outs` (each with its shard, if any) at once; each must succeed.
fn nights(input: &Path, outs: &[(&Path, Option<u32>)], date: &str, extra: &[&str]) {
    let children: Vec<_> = outs
        .iter()
        .map(|(out, shard)| {
            let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_convbill"));
            command
                .current_dir(env!("CARGO_MANIFEST_DIR"))
                .args(["run", "-q", "--rates", CARD, "--date", date, "--input"])
                .arg(input)
                .arg("--out")
                .arg(out)
                .args(extra)
                .env_remove("RUST_LOG");
            if let Some(i) = shard {
                command.arg("--shard").arg(format!("{i}/{SHARDS}"));
            }
            (out.to_path_buf(), command.output().unwrap())
        })
        .collect();
    for (out, output) in children {
        assert!(
            output.status.success(),
            "{date} on {}: {}",
            out.display(),
            String::from_utf8_lossy(&output.stderr)
        );
    }
}

/// `convbill merge --out OUT SHARDS...`, which must succeed; what it says on stderr.
fn merge_summary(out: &Path, shards: &[PathBuf]) -> String {
    let output = crate::cli::convbill()
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args(["merge", "--out"])
        .arg(out)
        .args(shards)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr).to_string();
    assert!(output.status.success(), "{stderr}");
    stderr
}

/// The file id (inode) of `relative` in `dir`.
fn file_id(dir: &Path, relative: &str) -> u64 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(dir.join(relative)).unwrap().ino()
}

fn month_to_date_manifest(dir: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(dir.join("month-to-date/manifest.json")).unwrap())
        .unwrap()
}

/// `merged` holds the bytes of the history `whole`, but for its month-to-date manifest, which
/// is `whole`'s plus the shards.
pub(crate) fn same_history(merged: &Path, whole: &Path, shards: &[PathBuf]) {
    let manifest = Path::new("month-to-date/manifest.json");
    let (mut ours, mut theirs) = (snapshot(merged), snapshot(whole));
    ours.remove(manifest).unwrap();
    theirs.remove(manifest).unwrap();
    assert_eq!(
        ours.keys().collect::<Vec<_>>(),
        theirs.keys().collect::<Vec<_>>()
    );
    for (path, bytes) in &theirs {
        assert!(ours[path] == *bytes, "{} differs", path.display());
    }
    let mut ours = month_to_date_manifest(merged);
    let listed = ours.as_object_mut().unwrap().remove("shards").unwrap();
    assert_eq!(ours, month_to_date_manifest(whole));
    let listed: Vec<(String, String)> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["shard"].as_str().unwrap().to_string(),
                s["path"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let expected: Vec<(String, String)> = shards
        .iter()
        .enumerate()
        .map(|(i, dir)| (format!("{i}/{}", shards.len()), dir.display().to_string()))
        .collect();
    assert_eq!(listed, expected);
}

/// A generated month of February 2026 and a few days more, 40 accounts, in a folder. Some rows
/// of 5 February are dirty (one without an account), in a file of that day's own; the messages
/// of six accounts on 10 February are kept apart, in the frame returned, to land late.
fn february(dir: &Path) -> (PathBuf, DataFrame) {
    let generated = dir.join("generated.parquet");
    generate(&generated, 30_000, 40, "2026-02-01", 33, 11);
    let mut frame = read_frame(&generated);
    let day = |date: &str| at(&format!("{date} 00:00")) / 1_000;
    let times = timestamps(&frame);
    let fifth = day("2026-02-05")..day("2026-02-06");
    let tenth = day("2026-02-10")..day("2026-02-11");
    let accounts: Vec<String> = strings(&frame, "account_id");
    let mut dirty = 0;
    let channels: Vec<Option<String>> = strings(&frame, "channel")
        .into_iter()
        .enumerate()
        .map(
            |(i, channel)| match fifth.contains(&times[i]) && i % 50 == 0 {
                true => {
                    dirty += 1;
                    Some("sms".to_string())
                }
                false => Some(channel),
            },
        )
        .collect();
    assert!(dirty > 5, "{dirty}");
    let first_of_fifth = times.iter().position(|t| fifth.contains(t)).unwrap();
    let account_column: Vec<Option<String>> = accounts
        .iter()
        .enumerate()
        .map(|(i, a)| (i != first_of_fifth).then(|| a.clone()))
        .collect();
    frame
        .with_column(Column::new("channel".into(), channels))
        .unwrap();
    frame
        .with_column(Column::new("account_id".into(), account_column))
        .unwrap();
    let late: BooleanChunked = accounts
        .iter()
        .zip(&times)
        .map(|(a, t)| tenth.contains(t) && a.as_str() < "acct-0006")
        .collect();
    let late_rows = frame.filter(&late).unwrap();
    assert!(late_rows.height() > 20, "{}", late_rows.height());
    let of_fifth: BooleanChunked = times.iter().map(|t| fifth.contains(t)).collect();
    let input = dir.join("input");
    std::fs::create_dir(&input).unwrap();
    let mut dirty_day = frame.filter(&of_fifth).unwrap();
    write_parquet(&input.join("day-2026-02-05.parquet"), &mut dirty_day);
    let mut kept = frame.filter(&(!&late & !&of_fifth)).unwrap();
    write_parquet(&input.join("log.parquet"), &mut kept);
    (input, late_rows)
}

#[test]
fn nightly_shard_histories_merge_to_the_bytes_of_one_history() {
    let dir = tempfile::tempdir().unwrap();
    let (input, mut late) = february(dir.path());
    let whole = dir.path().join("whole");
    let shards: Vec<PathBuf> = (0..SHARDS)
        .map(|i| dir.path().join(format!("nightly-{i}")))
        .collect();
    let mut all: Vec<(&Path, Option<u32>)> = vec![(&whole, None)];
    all.extend(shards.iter().zip(0..).map(|(s, i)| (s.as_path(), Some(i))));
    nights(&input, &all, "2026-02-01", &["--init", "--rejects"]);
    nights(&input, &all, "2026-03-03", &["--catch-up", "--rejects"]);

    // Given in any order; February closed with final invoices, rows set aside on the 5th.
    let merged = dir.path().join("merged");
    let given = [shards[2].clone(), shards[0].clone(), shards[1].clone()];
    merge(&merged, &given).assert().success().stderr("");
    same_history(&merged, &whole, &shards);
    let closed = read_frame(&merged.join("closed/period=2026-02/invoices.parquet"));
    assert_eq!(strings(&closed, "status"), vec!["final"; 40]);
    let rejects = read_frame(&merged.join("rejects/date=2026-02-05/part-0.parquet"));
    assert!(rejects.height() > 5, "{}", rejects.height());
    let summary = merge_summary(&merged, &given);
    assert!(
        summary.contains("merged the histories of 3 shards, nights 2026-02-01 to 2026-03-03 (30 kept from the earlier merge)")
            && summary.contains("closed period(s) 2026-01, 2026-02"),
        "{summary}"
    );

    // Shard 0 runs the 4th before the late file lands: the others have not run it yet.
    let (first, rest) = all.split_at(2);
    nights(&input, &first[1..], "2026-03-04", &["--rejects"]);
    refused(
        dir.path(),
        &shards,
        &[
            "shard 1/3",
            "has not run the night 2026-03-04",
            "merge shards that have run the same nights",
        ],
    );
    // The late file lands; the others run the 4th and warn of it. Shard 0's catalog lacks it.
    write_parquet(&input.join("late.parquet"), &mut late);
    nights(&input, &[first[0]], "2026-03-04", &["--rejects"]);
    nights(&input, rest, "2026-03-04", &["--rejects"]);
    refused(
        dir.path(),
        &shards,
        &[
            "shard 0/3",
            "know the input files otherwise",
            "`late.parquet`",
        ],
    );
    // Rerun, shard 0's last night knows it too: merged over the earlier merge, the late file
    // counted as one history counts it (its messages, days and invoices).
    nights(&input, &first[1..], "2026-03-04", &["--rejects"]);
    let (early, late_night) = (
        "state/date=2026-02-01/seen.parquet",
        "sessions/date=2026-02-12/part-0.parquet",
    );
    let before = [file_id(&merged, early), file_id(&merged, late_night)];
    let summary = merge_summary(&merged, &shards);
    same_history(&merged, &whole, &shards);
    // It warns of the late file, as a night does, and says where to bill it.
    assert!(
        summary.contains("warning: `late.parquet` was added after night 2026-02-10 had run")
            && summary.contains("rerun `--date 2026-02-10 --recompute-later` on every shard"),
        "{summary}"
    );
    // The nights merged before are kept from the earlier merge, not merged again.
    assert_eq!(
        [file_id(&merged, early), file_id(&merged, late_night)],
        before
    );
    let late_input = &month_to_date_manifest(&whole)["late_input"];
    assert_eq!(late_input[0]["path"], "late.parquet", "{late_input}");
    let messages = late_input[0]["messages"].as_u64().unwrap();
    assert!(
        messages > 0 && messages <= late.height() as u64,
        "{late_input}"
    );
    let concerned = late_input[0]["invoices"].as_array().unwrap().len();
    assert!(concerned >= 6, "{late_input}");

    // A shard that set no rows aside on a night the others did.
    nights(&input, &all[2..3], "2026-03-04", &[]);
    refused(
        dir.path(),
        &shards,
        &[
            "set rows aside (`--rejects`) on the night 2026-03-04",
            "shard 1/3",
        ],
    );
    nights(&input, &all[2..3], "2026-03-04", &["--rejects"]);

    // The late file billed by a recompute from the 10th: February's final invoices of those
    // accounts are revised, in the merge as in one history.
    nights(
        &input,
        &all,
        "2026-02-10",
        &["--recompute-later", "--rejects"],
    );
    let before = [file_id(&merged, early), file_id(&merged, late_night)];
    let summary = merge_summary(&merged, &shards);
    same_history(&merged, &whole, &shards);
    // Kept up to the night the shards recomputed from; merged again from it.
    assert_eq!(file_id(&merged, early), before[0]);
    assert_ne!(file_id(&merged, late_night), before[1]);
    let closed = read_frame(&merged.join("closed/period=2026-02/invoices.parquet"));
    let revisions = closed.column("revision").unwrap().i64().unwrap();
    assert_eq!(revisions.max(), Some(2));
    // Each reissued invoice is said, as the run that reissues it says it.
    let reissued = revisions.iter().filter(|r| *r == Some(2)).count();
    assert!(reissued >= 1);
    assert_eq!(
        summary
            .matches("it had been final: revision 2 replaces it")
            .count(),
        reissued,
        "{summary}"
    );

    // One shard recomputed alone from an earlier night (its input unchanged) reads the late
    // file from that night on; the merge takes it as it is, from the other shards' night.
    nights(
        &input,
        &all[3..],
        "2026-02-05",
        &["--recompute-later", "--rejects"],
    );
    merge(&merged, &shards).assert().success();
    same_history(&merged, &whole, &shards);
    assert!(month_to_date_manifest(&merged)["late_input"]
        .as_array()
        .unwrap()
        .is_empty());

    // The merged history is a history: an unsharded night continues it as it continues the
    // whole one.
    let continued = dir.path().join("continued");
    crate::cli::copy_dir(&merged, &continued);
    nights(
        &input,
        &[(&continued, None), (&whole, None)],
        "2026-03-05",
        &["--rejects"],
    );
    assert_eq!(snapshot(&continued), snapshot(&whole));

    // A shard's history being written (its lock held): the merge waits for no one, exit 4.
    let held = convbill::folder::OutFolder::new(&shards[1])
        .unwrap()
        .lock()
        .unwrap();
    let before = snapshot(&merged);
    merge(&merged, &shards)
        .assert()
        .code(4)
        .stderr(predicates::str::contains(".nightly-1.convbill.lock"));
    assert_eq!(snapshot(&merged), before);
    drop(held);

    // Histories that do not belong together.
    refused(
        dir.path(),
        &[
            dir.path().join("nowhere"),
            shards[1].clone(),
            shards[2].clone(),
        ],
        &["`", "nowhere` does not exist"],
    );
    refused(
        dir.path(),
        &[
            shards[0].clone(),
            shards[1].clone(),
            shards[1].clone(),
            shards[2].clone(),
        ],
        &["shard 1/3 is given twice"],
    );
    refused(
        dir.path(),
        &shards[..2],
        &["shard 2/3 is missing", "a merge needs all 3 shards"],
    );
    refused(
        dir.path(),
        &[whole.clone(), shards[1].clone(), shards[2].clone()],
        &["holds an unsharded history", &whole.display().to_string()],
    );
    let run_shard = dir.path().join("run-shard");
    run(&input, &run_shard, &["--shard", "0/3", "--rejects"])
        .assert()
        .success();
    refused(
        dir.path(),
        &[run_shard.clone(), shards[1].clone(), shards[2].clone()],
        &["holds a nightly history and", "does not"],
    );
    // A merge is not written over a history of another kind, which stays as it was.
    let before = snapshot(&whole);
    let output = merge(&whole, &shards).output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("holds no merged history"), "{stderr}");
    assert_eq!(snapshot(&whole), before);
    // Nor over the merge of another input's histories.
    let other_input = dir.path().join("other-input");
    crate::cli::copy_dir(&input, &other_input);
    let other = dir.path().join("other-0");
    run(
        &other_input,
        &other,
        &["--date", "2026-02-01", "--init", "--shard", "0/1"],
    )
    .assert()
    .success();
    let before = snapshot(&merged);
    let output = merge(&merged, &[other]).output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("the merge of histories of another input"),
        "{stderr}"
    );
    assert_eq!(snapshot(&merged), before);
    // `--rates` finding the shards' card elsewhere: the merged history names it as they do.
    let card_copy = dir.path().join("card-copy");
    crate::cli::copy_dir(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("sample-data/meta"),
        &card_copy,
    );
    let elsewhere = dir.path().join("merged-elsewhere");
    merge(&elsewhere, &shards)
        .arg("--rates")
        .arg(card_copy.join("rates.toml"))
        .assert()
        .success();
    let mut ours = month_to_date_manifest(&elsewhere);
    let mut theirs = month_to_date_manifest(&merged);
    for manifest in [&mut ours, &mut theirs] {
        manifest.as_object_mut().unwrap().remove("shards");
    }
    assert_eq!(ours, theirs);
    assert_eq!(
        std::fs::read(elsewhere.join("month-to-date/report.html")).unwrap(),
        std::fs::read(merged.join("month-to-date/report.html")).unwrap()
    );
}

/// A log of 1 to 4 February 2026 laid out by bucket of 2 and by day
/// (`convbill_bucket=I/date=D/part.parquet`), but for bucket 1's file of the 2nd, which is
/// returned to land late.
fn laid_out_days(dir: &Path) -> (PathBuf, PathBuf, DataFrame) {
    let generated = dir.join("generated.parquet");
    generate(&generated, 6_000, 20, "2026-02-01", 4, 3);
    let frame = read_frame(&generated);
    let times = timestamps(&frame);
    let buckets: Vec<u32> = strings(&frame, "account_id")
        .iter()
        .map(|a| convbill::shard::Shard::bucket_of(a, 2))
        .collect();
    let input = dir.join("laid-out");
    let mut late = None;
    for bucket in 0..2 {
        for day in 1..=4 {
            let start = at(&format!("2026-02-0{day} 00:00")) / 1_000;
            let of: BooleanChunked = times
                .iter()
                .zip(&buckets)
                .map(|(t, b)| *b == bucket && (start..start + 86_400_000_000).contains(t))
                .collect();
            let mut part = frame.filter(&of).unwrap();
            assert!(part.height() > 50, "{}", part.height());
            if (bucket, day) == (1, 2) {
                late = Some(part);
                continue;
            }
            let folder = input.join(format!("convbill_bucket={bucket}/date=2026-02-0{day}"));
            std::fs::create_dir_all(&folder).unwrap();
            write_parquet(&folder.join("part.parquet"), &mut part);
        }
    }
    let late_path = input.join("convbill_bucket=1/date=2026-02-02/part.parquet");
    (input, late_path, late.unwrap())
}

#[test]
fn a_bucket_file_landing_late_is_billed_by_its_shard_alone() {
    let dir = tempfile::tempdir().unwrap();
    let (input, late_path, mut late) = laid_out_days(dir.path());
    let whole = dir.path().join("whole");
    let shards: Vec<PathBuf> = (0..2)
        .map(|i| dir.path().join(format!("bucket-{i}")))
        .collect();
    let run_on = |out: &Path, shard: Option<u32>, date: &str, extra: &[&str]| {
        let mut command = run(&input, out, &["--date", date]);
        if let Some(i) = shard {
            command.arg("--shard").arg(format!("{i}/2"));
        }
        command.args(extra).assert().success();
    };
    let histories = [(&whole, None), (&shards[0], Some(0)), (&shards[1], Some(1))];
    for (out, shard) in histories {
        run_on(out, shard, "2026-02-01", &["--init"]);
        run_on(out, shard, "2026-02-03", &["--catch-up"]);
    }
    // Bucket 1's file of the 2nd lands after the 3rd: every history runs the 4th; then shard
    // 1 bills it alone (shard 0's accounts have nothing in it), as the whole history does.
    std::fs::create_dir_all(late_path.parent().unwrap()).unwrap();
    write_parquet(&late_path, &mut late);
    for (out, shard) in histories {
        run_on(out, shard, "2026-02-04", &[]);
    }
    run_on(&whole, None, "2026-02-02", &["--recompute-later"]);
    run_on(&shards[1], Some(1), "2026-02-02", &["--recompute-later"]);
    let merged = dir.path().join("merged");
    merge(&merged, &shards).assert().success();
    same_history(&merged, &whole, &shards);
    let stats: serde_json::Value = serde_json::from_slice(
        &std::fs::read(merged.join("state/date=2026-02-02/night.json")).unwrap(),
    )
    .unwrap();
    assert!(
        stats["input_files"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f["path"] == "convbill_bucket=1/date=2026-02-02/part.parquet"),
        "{stats}"
    );
}
