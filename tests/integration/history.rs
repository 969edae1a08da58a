//! Money-safe histories, as schedules abuse them: recomputes that are in place entirely or not
//! at all (failed at every step, killed at any moment), `final` only for complete periods, one
//! lock for every mode, the same bytes on every rerun, nights that must have input and must be
//! over, late input noticed, every dropped row counted, and money as numbers in Parquet.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use chrono::{Days, NaiveDate};
use convbill::schema::DAY_NS;
use polars::prelude::*;
use predicates::prelude::*;
use serde_json::Value;

use crate::cli::{copy_dir, run_command, snapshot};
use crate::nightly::{
    date, generate, history_lines, invoice_folders, invoice_path, night_command, nights,
};
use crate::support::*;

const SAMPLE_CARD: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/sample-data/rates.toml");

/// Writes `frame`'s rows under `root/date=D/name`, one file per UTC day, with zoned
/// timestamps in microseconds (as many landing zones have them).
fn split_by_day(frame: &DataFrame, root: &Path, name: &str) {
    let ns: Vec<i64> = frame
        .column("timestamp")
        .unwrap()
        .cast(&DataType::Datetime(TimeUnit::Nanoseconds, None))
        .unwrap()
        .to_physical_repr()
        .i64()
        .unwrap()
        .iter()
        .map(|v| v.unwrap())
        .collect();
    let days: BTreeSet<i64> = ns.iter().map(|t| t.div_euclid(DAY_NS)).collect();
    for day in days {
        let mask: BooleanChunked = ns.iter().map(|t| t.div_euclid(DAY_NS) == day).collect();
        let mut part = frame.filter(&mask).unwrap();
        let zoned = part
            .column("timestamp")
            .unwrap()
            .cast(&DataType::Datetime(
                TimeUnit::Microseconds,
                Some(TimeZone::UTC),
            ))
            .unwrap();
        part.with_column(zoned).unwrap();
        let date = NaiveDate::from_ymd_opt(1970, 1, 1).unwrap() + Days::new(day as u64);
        write_parquet(&root.join(format!("date={date}")).join(name), &mut part);
    }
}

/// The rows of a log frame before the instant `until` (UTC nanoseconds).
fn rows_before(frame: &DataFrame, until: i64) -> DataFrame {
    let ts = frame
        .column("timestamp")
        .unwrap()
        .cast(&DataType::Datetime(TimeUnit::Nanoseconds, None))
        .unwrap()
        .to_physical_repr();
    let mask: BooleanChunked = ts
        .i64()
        .unwrap()
        .iter()
        .map(|t| t.unwrap() < until)
        .collect();
    frame.filter(&mask).unwrap()
}

/// A generated log split into a landing zone of one folder per UTC day under `dir/logs`.
fn landing_zone(
    dir: &Path,
    seed: u64,
    start: &str,
    days: u64,
    accounts: u32,
    messages: u64,
) -> PathBuf {
    let log = dir.join(format!("generated-{seed}.parquet"));
    generate(&log, messages, seed, accounts, start, days);
    let logs = dir.join("logs");
    split_by_day(&read_frame(&log), &logs, &format!("part-{seed}.parquet"));
    std::fs::remove_file(&log).unwrap();
    logs
}

/// The nights of a landing zone: one per `date=` folder, in order.
fn days_of(logs: &Path) -> Vec<NaiveDate> {
    let mut days: Vec<NaiveDate> = std::fs::read_dir(logs)
        .unwrap()
        .filter_map(|e| {
            let name = e.unwrap().file_name().to_string_lossy().into_owned();
            name.strip_prefix("date=").map(|d| d.parse().unwrap())
        })
        .collect();
    days.sort();
    days
}

/// Runs every night of the landing zone, rated by the sample card.
fn bill_every_night(logs: &Path, out: &Path) {
    for day in days_of(logs) {
        night_command(logs, out, day)
            .arg("--rates")
            .arg(SAMPLE_CARD)
            .assert()
            .success();
    }
}

fn json(path: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

/// Every invoice of a history (closed periods and month-to-date): (account, period) → invoice.
fn invoices(out: &Path) -> std::collections::BTreeMap<(String, String), Value> {
    invoice_folders(out)
        .iter()
        .flat_map(|dir| snapshot(&dir.join("invoices")).into_values())
        .map(|bytes| {
            let invoice: Value = serde_json::from_slice(&bytes).unwrap();
            (
                (
                    invoice["account_id"].as_str().unwrap().to_string(),
                    invoice["period"].as_str().unwrap().to_string(),
                ),
                invoice,
            )
        })
        .collect()
}

/// A September history (four accounts, sample card) and a late file for 5 September that
/// arrived after the 11th had been billed. Returns (logs, history).
fn history_with_a_late_file(dir: &Path) -> (PathBuf, PathBuf) {
    let logs = landing_zone(dir, 21, "2026-09-03", 6, 4, 3_000);
    let out = dir.join("billing");
    bill_every_night(&logs, &out);
    let late = dir.join("late.parquet");
    generate(&late, 600, 99, 4, "2026-09-05", 1);
    let last = *days_of(&logs).last().unwrap();
    // Only the days already billed: the late file of a landing zone.
    let until = convbill::nightly::start_ns(last + Days::new(1));
    split_by_day(
        &rows_before(&read_frame(&late), until),
        &logs,
        "late.parquet",
    );
    (logs, out)
}

const RECOMPUTE: [&str; 6] = [
    "--date",
    "2026-09-05",
    "--recompute-later",
    "--allow-empty",
    "--rates",
    SAMPLE_CARD,
];

fn recompute(logs: &Path, out: &Path) -> assert_cmd::Command {
    let mut command = run_command(logs, out);
    command.args(RECOMPUTE);
    command
}

/// `convbill run --input INPUT --out OUT ARGS` as a process to start and stop.
fn process(input: &Path, out: &Path, args: &[&str]) -> std::process::Command {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_convbill"));
    command
        .arg("run")
        .arg("--input")
        .arg(input)
        .arg("--out")
        .arg(out)
        .args(args)
        .env_remove("CONVBILL_INPUT")
        .env_remove("CONVBILL_OUT")
        .env_remove("CONVBILL_RATES");
    command
}

#[test]
fn a_recompute_that_fails_at_any_step_leaves_the_old_history_and_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let (logs, out) = history_with_a_late_file(dir.path());
    let before = snapshot(&out);

    // What the complete recompute gives, in a copy of the history.
    let copy = dir.path().join("copy");
    copy_dir(&out, &copy);
    recompute(&logs, &copy)
        .assert()
        .success()
        .stderr(predicate::str::contains("changed: quota"));
    let after = snapshot(&copy);
    assert!(before != after, "the late file changes the history");

    let mut failures = 0;
    for steps in 0.. {
        let output = recompute(&logs, &out)
            .env("CONVBILL_FAIL_AFTER_FILES", steps.to_string())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        if output.status.success() {
            assert!(snapshot(&out) == after, "the recompute is complete");
            break;
        }
        assert_eq!(
            output.status.code(),
            Some(convbill::exit::INTERNAL),
            "{stderr}"
        );
        assert!(stderr.contains("injected failure"), "{stderr}");
        assert!(
            stderr.contains("the history in") && stderr.contains("is as it was before this run"),
            "{stderr}"
        );
        assert!(
            snapshot(&out) == before,
            "a failure after {steps} steps changed the history"
        );
        assert_eq!(hidden_entries(dir.path()), Vec::<String>::new());
        failures += 1;
        assert!(failures < 500, "the recompute never succeeds");
    }
    // Seven nights of eight files each, the month-to-date folder, the catalog, the switch.
    assert!(failures > 50, "only {failures} steps were tried");
    // The history does not remember how it got there: rerunning its last night after the
    // recompute gives the same bytes.
    let last = *days_of(&logs).last().unwrap();
    night_command(&logs, &out, last)
        .arg("--rates")
        .arg(SAMPLE_CARD)
        .assert()
        .success();
    assert!(
        snapshot(&out) == after,
        "a rerun after a recompute changed bytes"
    );
}

#[test]
fn a_recompute_killed_at_any_moment_leaves_the_old_history_or_the_new_one() {
    let dir = tempfile::tempdir().unwrap();
    let (logs, out) = history_with_a_late_file(dir.path());
    let before = snapshot(&out);
    let copy = dir.path().join("complete");
    copy_dir(&out, &copy);
    let started = Instant::now();
    recompute(&logs, &copy).assert().success();
    let takes = started.elapsed();
    let after = snapshot(&copy);

    let (mut old, mut new) = (0, 0);
    // Kills spread over the run's time; on a machine busier than when it was timed, later ones
    // until a kill has hit each side.
    let mut attempt = 0u32;
    while attempt < 12 || (old == 0 || new == 0) && attempt < 24 {
        let work = dir.path().join(format!("work-{attempt}"));
        copy_dir(&out, &work);
        let child = process(&logs, &work, &RECOMPUTE)
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let delay = match attempt {
            0..12 => takes * (attempt / 2) * 2 / 5,
            _ => takes * (attempt - 10),
        };
        std::thread::sleep(delay);
        // Every other attempt is a Ctrl-C, which the run handles; the others a kill.
        let signal = if attempt.is_multiple_of(2) {
            "-KILL"
        } else {
            "-INT"
        };
        let _ = std::process::Command::new("kill")
            .args([signal, &child.id().to_string()])
            .status();
        let output = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        let left = snapshot(&work);
        if left == before {
            old += 1;
        } else {
            assert!(left == after, "attempt {attempt}: a mix of old and new");
            new += 1;
        }
        if signal == "-INT" {
            match output.status.code() {
                Some(convbill::exit::INTERRUPTED) => {
                    assert!(stderr.contains("interrupted"), "{stderr}");
                    assert!(left == before, "an interrupted run put its work in place");
                    assert_eq!(hidden_entries(dir.path()), Vec::<String>::new());
                }
                Some(0) => assert!(left == after),
                // A Ctrl-C before the run installed its handler ends it like a kill.
                None => {}
                other => panic!("exit {other:?}: {stderr}"),
            }
        }
        // The next run cleans up and completes the recompute.
        recompute(&logs, &work).assert().success();
        assert!(snapshot(&work) == after);
        attempt += 1;
    }
    assert!(
        old > 0 && new > 0,
        "kills hit only one side: {old} old, {new} new"
    );
    assert_eq!(hidden_entries(dir.path()), Vec::<String>::new());
}

#[test]
fn switching_without_an_atomic_exchange_gives_the_same_history() {
    let dir = tempfile::tempdir().unwrap();
    let logs = landing_zone(dir.path(), 4, "2026-10-01", 3, 3, 1_500);
    let (plain, fallback) = (dir.path().join("plain"), dir.path().join("fallback"));
    bill_every_night(&logs, &plain);
    for day in days_of(&logs) {
        night_command(&logs, &fallback, day)
            .arg("--rates")
            .arg(SAMPLE_CARD)
            .env("CONVBILL_NO_EXCHANGE", "1")
            .assert()
            .success();
    }
    assert!(snapshot(&plain) == snapshot(&fallback));
    assert_eq!(hidden_entries(dir.path()), Vec::<String>::new());
}

#[test]
fn a_history_started_mid_month_bills_that_month_as_partial_for_good() {
    let dir = tempfile::tempdir().unwrap();
    let logs = landing_zone(dir.path(), 8, "2026-09-28", 5, 4, 3_000);
    let out = dir.path().join("billing");
    let days = days_of(&logs);
    assert!(days.len() >= 6 && days[0] == date("2026-09-28"));
    // A missed night's old hint led here: a new history from the 28th. It says what it is.
    night_command(&logs, &out, days[0])
        .arg("--rates")
        .arg(SAMPLE_CARD)
        .assert()
        .success()
        .stderr(
            predicate::str::contains("partial").and(predicate::str::contains(
                "the history starts on 2026-09-28, after their period began",
            )),
        );
    for day in &days[1..] {
        night_command(&logs, &out, *day)
            .arg("--rates")
            .arg(SAMPLE_CARD)
            .assert()
            .success();
    }
    let all = invoices(&out);
    let september: Vec<&Value> = all
        .iter()
        .filter(|((_, period), _)| period == "2026-09")
        .map(|(_, v)| v)
        .collect();
    assert!(september.len() >= 3);
    for invoice in &september {
        assert_eq!(invoice["status"], "partial", "{invoice}");
        assert_ne!(invoice["coverage_start"], invoice["period_start"]);
        assert_eq!(invoice["coverage_end"], invoice["period_end"]);
    }
    // A UTC account: billed from the 28th; New York: from 20:00 on the 27th, local time.
    let utc = &all[&("acct-0003".to_string(), "2026-09".to_string())];
    assert_eq!(utc["coverage_start"], "2026-09-28T00:00:00Z");
    let nyc = &all[&("acct-0001".to_string(), "2026-09".to_string())];
    assert_eq!(nyc["coverage_start"], "2026-09-27T20:00:00-04:00");
    // October started after the history did: a draft, complete once its month has run.
    for ((_, period), invoice) in &all {
        if period == "2026-10" {
            assert_eq!(invoice["status"], "draft", "{invoice}");
            assert_eq!(invoice["coverage_start"], invoice["period_start"]);
        }
    }
    // The lines say it too, and finance can filter on it.
    let lines = history_lines(&out);
    let statuses = strings(&lines, "status");
    let periods = strings(&lines, "period");
    assert!(statuses
        .iter()
        .zip(&periods)
        .all(|(s, p)| (p == "2026-09") == (s == "partial")));
}

#[test]
fn a_whole_run_marks_the_periods_its_input_does_not_cover_as_partial() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("log.parquet");
    // From 31 August (UTC) to the end of September, and late replies into October.
    generate(&log, 20_000, 12, 4, "2026-08-31", 31);
    let out = dir.path().join("whole");
    run_command(&log, &out)
        .arg("--rates")
        .arg(SAMPLE_CARD)
        .assert()
        .success()
        .stderr(predicate::str::contains("partial: covers"));
    let invoice = |account: &str, period: &str| -> Value {
        json(&out.join(format!("invoices/{period}/{account}.json")))
    };
    // August: one evening of it in New York, one day in UTC, none of Jakarta's start.
    let nyc = invoice("acct-0001", "2026-08");
    assert_eq!(nyc["status"], "partial");
    assert_eq!(nyc["coverage_start"], "2026-08-30T20:00:00-04:00");
    assert_eq!(nyc["coverage_end"], "2026-09-01T00:00:00-04:00");
    assert_eq!(invoice("acct-0003", "2026-08")["status"], "partial");
    // September is covered whole in UTC, and from its first instant in Jakarta.
    let utc = invoice("acct-0003", "2026-09");
    assert_eq!(utc["status"], "final");
    assert_eq!(utc["coverage_start"], utc["period_start"]);
    assert_eq!(
        invoice("acct-0000", "2026-09")["coverage_start"],
        "2026-09-01T00:00:00+07:00"
    );
    // October has only the late replies.
    assert_eq!(invoice("acct-0000", "2026-10")["status"], "partial");
    let manifest = manifest_of(&out);
    assert!(
        manifest["invoices"]["by_status"]["partial"]
            .as_u64()
            .unwrap()
            >= 3
    );
}

#[test]
fn a_whole_run_waits_for_no_one_it_exits_4_while_another_holds_the_folder() {
    let dir = tempfile::tempdir().unwrap();
    let log = write_log(dir.path(), &[template("t1", "Mon 13:00")]);
    let out = dir.path().join("out");
    let folder = convbill::folder::OutFolder::new(&out).unwrap();
    let held = folder.lock().unwrap();
    run_command(&log, &out)
        .assert()
        .code(convbill::exit::BUSY)
        .stderr(
            predicate::str::contains("another convbill run is working on this output folder")
                .and(predicate::str::contains("note:").not()),
        );
    // Nothing under or beside the folder was touched: no output, staging or spill.
    assert!(!out.exists());
    assert_eq!(
        hidden_entries(dir.path()),
        vec![".out.convbill.lock".to_string()]
    );
    drop(held);
    run_command(&log, &out).assert().success();
    assert_eq!(hidden_entries(dir.path()), Vec::<String>::new());
}

#[test]
fn two_whole_runs_started_together_one_works_and_the_other_exits_4() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("log.parquet");
    generate(&log, 400_000, 3, 20, "2026-10-01", 10);
    let out = dir.path().join("whole");
    let start = || {
        process(
            &log,
            &out,
            &["-q", "--partition-rows", "20000", "--memory-rows", "0"],
        )
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap()
    };
    let first = start();
    let lock = convbill::folder::OutFolder::new(&out).unwrap().lock_path();
    let started = Instant::now();
    while !lock.exists() {
        assert!(started.elapsed() < Duration::from_secs(30));
        std::thread::sleep(Duration::from_millis(1));
    }
    let second = start().wait_with_output().unwrap();
    let first = first.wait_with_output().unwrap();
    assert_eq!(
        second.status.code(),
        Some(convbill::exit::BUSY),
        "{}",
        String::from_utf8_lossy(&second.stderr)
    );
    assert!(
        first.status.success(),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
    // The outputs are the first run's, whole.
    let clean = dir.path().join("clean");
    run_command(&log, &clean).assert().success();
    assert!(snapshot(&out) == snapshot(&clean));
    assert_eq!(hidden_entries(dir.path()), Vec::<String>::new());
}

#[test]
fn rerunning_the_last_night_gives_the_same_bytes_state_included() {
    let dir = tempfile::tempdir().unwrap();
    let logs = landing_zone(dir.path(), 31, "2026-10-12", 4, 12, 40_000);
    let out = dir.path().join("billing");
    bill_every_night(&logs, &out);
    let first = snapshot(&out);
    let last = *days_of(&logs).last().unwrap();
    for _ in 0..4 {
        night_command(&logs, &out, last)
            .arg("--rates")
            .arg(SAMPLE_CARD)
            .assert()
            .success();
        let again = snapshot(&out);
        for (path, bytes) in &first {
            assert!(again.get(path) == Some(bytes), "{} changed", path.display());
        }
        assert_eq!(first.len(), again.len());
    }
}

/// A landing zone with one template a day (`t1` on the first day, at 13:00, and so on), one
/// file per day.
fn a_template_a_day(dir: &Path, days: &[&str]) -> PathBuf {
    let days: Vec<(&str, Vec<Ev>)> = days
        .iter()
        .enumerate()
        .map(|(n, day)| {
            let id = format!("t{}", n + 1);
            (*day, vec![template(&id, &format!("{day} 13:00"))])
        })
        .collect();
    days_with(dir, &days)
}

/// A landing zone with the messages of the given days, one file per day.
/// The log of one day, 2024-01-01, with one template message at 13:00, under `dir`.
fn one_message_log(dir: &Path) -> PathBuf {
    days_with(dir, &[("2024-01-01", vec![template("t1", "Mon 13:00")])])
}

fn days_with(dir: &Path, days: &[(&str, Vec<Ev>)]) -> PathBuf {
    let logs = dir.join("logs");
    for (day, events) in days {
        write_parquet(
            &logs.join(format!("date={day}")).join("part-0.parquet"),
            &mut frame(events),
        );
    }
    logs
}

#[test]
fn a_night_without_messages_is_refused_unless_allowed() {
    let dir = tempfile::tempdir().unwrap();
    let logs = a_template_a_day(dir.path(), &["2024-01-01", "2024-01-03"]);
    let out = dir.path().join("billing");
    run_command(&logs, &out)
        .args(["--date", "2024-01-01", "--init"])
        .assert()
        .success();
    let before = snapshot(&out);
    run_command(&logs, &out)
        .args(["--date", "2024-01-02"])
        .assert()
        .code(convbill::exit::DATA)
        .stderr(
            predicate::str::contains("has no messages on 2024-01-02")
                .and(predicate::str::contains("have not landed yet"))
                .and(predicate::str::contains("--allow-empty")),
        );
    assert!(snapshot(&out) == before, "a refused night changes nothing");
    run_command(&logs, &out)
        .args(["--date", "2024-01-02", "--allow-empty"])
        .assert()
        .success();
    run_command(&logs, &out)
        .args(["--date", "2024-01-03"])
        .assert()
        .success();
}

#[test]
fn a_night_that_has_not_ended_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let today = chrono::Utc::now().date_naive();
    let logs = days_with(dir.path(), &[]);
    std::fs::create_dir_all(&logs).unwrap();
    let out = dir.path().join("billing");
    for day in [today, today + Days::new(1), today + Days::new(2)] {
        run_command(&logs, &out)
            .args(["--date", &day.to_string(), "--init", "--allow-empty"])
            .assert()
            .code(convbill::exit::USAGE)
            .stderr(
                predicate::str::contains(format!("cannot run {day} yet"))
                    .and(predicate::str::contains("after this run's clock")),
            );
        assert!(!out.exists());
    }
    let yesterday = today - Days::new(1);
    write_parquet(
        &logs.join("today.parquet"),
        &mut frame(&[template("t1", "Mon 13:00")]),
    );
    run_command(&logs, &out)
        .args(["--date", &yesterday.to_string(), "--init", "--allow-empty"])
        .assert()
        .success();
}

#[test]
fn a_new_history_is_started_only_with_init() {
    let dir = tempfile::tempdir().unwrap();
    let logs = one_message_log(dir.path());
    // A typo in `--out` under `-q`: refused, loudly, and nothing is made.
    let typo = dir.path().join("biling");
    run_command(&logs, &typo)
        .args(["-q", "--date", "2024-01-01"])
        .assert()
        .code(convbill::exit::USAGE)
        .stderr(
            predicate::str::contains("holds no nightly history")
                .and(predicate::str::contains("hint: check the `--out` path"))
                .and(predicate::str::contains("--init")),
        );
    assert!(!typo.exists());
    assert_eq!(hidden_entries(dir.path()), Vec::<String>::new());
    // An empty folder needs `--init` too.
    let empty = dir.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    run_command(&logs, &empty)
        .args(["--date", "2024-01-01"])
        .assert()
        .code(convbill::exit::USAGE)
        .stderr(predicate::str::contains("add `--init`"));
    run_command(&logs, &empty)
        .args(["--date", "2024-01-01", "--init"])
        .assert()
        .success()
        .stderr(predicate::str::contains("starting a new history"));
    // `--init` never restarts a history.
    let before = snapshot(&empty);
    run_command(&logs, &empty)
        .args(["--date", "2024-01-01", "--init"])
        .assert()
        .code(convbill::exit::USAGE)
        .stderr(predicate::str::contains(
            "already holds one (nights 2024-01-01 to 2024-01-01)",
        ));
    assert!(snapshot(&empty) == before);
    // A rerun of the first night is a rerun.
    run_command(&logs, &empty)
        .args(["--date", "2024-01-01"])
        .assert()
        .success();
}

#[test]
fn an_out_that_is_a_file_is_a_usage_error_in_both_modes() {
    let dir = tempfile::tempdir().unwrap();
    let logs = one_message_log(dir.path());
    let file = dir.path().join("billing");
    std::fs::write(&file, "notes").unwrap();
    for extra in [&[][..], &["--date", "2024-01-01", "--init"][..]] {
        run_command(&logs, &file)
            .args(extra)
            .assert()
            .code(convbill::exit::USAGE)
            .stderr(predicate::str::contains("is a file, not a folder"));
        assert_eq!(std::fs::read_to_string(&file).unwrap(), "notes");
    }
}

#[test]
fn late_files_are_named_with_the_night_to_recompute_and_strict_runs_refuse() {
    let dir = tempfile::tempdir().unwrap();
    let logs = a_template_a_day(
        dir.path(),
        &[
            "2024-01-01",
            "2024-01-02",
            "2024-01-03",
            "2024-01-04",
            "2024-01-05",
        ],
    );
    let out = dir.path().join("billing");
    nights(&logs, &out, date("2024-01-01"), 3);
    // Two messages of Monday land on Wednesday night, after Monday was billed.
    write_parquet(
        &logs.join("date=2024-01-01/late.parquet"),
        &mut frame(&[
            template("late-1", "Mon 15:00").user("user-2"),
            template("late-2", "Mon 16:00").user("user-3"),
        ]),
    );
    let before = snapshot(&out);
    run_command(&logs, &out)
        .args(["--date", "2024-01-04", "--strict-late-input"])
        .assert()
        .code(convbill::exit::DATA)
        .stderr(
            predicate::str::contains("`date=2024-01-01/late.parquet` was added after night 2024-01-01 had run: 2 of its messages fall on 2024-01-01 and were not billed")
                .and(predicate::str::contains("rerun `--date 2024-01-01 --recompute-later`")),
        );
    assert!(snapshot(&out) == before);
    run_command(&logs, &out)
        .args(["--date", "2024-01-04"])
        .assert()
        .success()
        .stderr(
            predicate::str::contains("warning: `date=2024-01-01/late.parquet` was added").and(
                predicate::str::contains(
                    "hint: rerun `--date 2024-01-01 --recompute-later` to bill them",
                ),
            ),
        );
    let manifest = json(&out.join("month-to-date/manifest.json"));
    assert_eq!(
        manifest["late_input"][0]["path"],
        "date=2024-01-01/late.parquet"
    );
    assert_eq!(manifest["late_input"][0]["messages"], 2);
    // Read first by this night, of messages of Monday.
    assert_eq!(manifest["late_input"][0]["read_from"], "2024-01-04");
    assert_eq!(manifest["late_input"][0]["first_day"], "2024-01-01");
    assert_eq!(manifest["late_input"][0]["change"], "added");
    // The report says so too, with what to do; after the recompute below it no longer does.
    let report = || std::fs::read_to_string(out.join("month-to-date/report.html")).unwrap();
    let page = report();
    let late = &page[page
        .find("id=\"late-input\"")
        .expect("a late input section")..];
    let late = &late[..late.find("</ul>").unwrap()];
    assert!(late.contains("`date=2024-01-01/late.parquet` was added after night 2024-01-01 had run: 2 of its messages fall on 2024-01-01 and were not billed"), "{late}");
    assert!(
        late.contains("rerun `--date 2024-01-01 --recompute-later`"),
        "{late}"
    );
    // Until they are billed, every night says so again.
    run_command(&logs, &out)
        .args(["--date", "2024-01-04"])
        .assert()
        .success()
        .stderr(predicate::str::contains("late.parquet` was added"));
    // The recompute takes them in, and the warning is gone.
    run_command(&logs, &out)
        .args([
            "--date",
            "2024-01-01",
            "--recompute-later",
            "--strict-late-input",
        ])
        .assert()
        .success()
        .stderr(
            predicate::str::contains("invoice acme 2024-01 changed: quota 4 -> 6")
                .and(predicate::str::contains("warning").not()),
        );
    assert!(!report().contains("late-input"));
    // A file of Tuesday rewritten with one more message is a changed file, with one message
    // no night billed.
    let tuesday = logs.join("date=2024-01-02/part-0.parquet");
    write_parquet(
        &tuesday,
        &mut frame(&[
            template("t2", "Tue 13:00"),
            template("t2b", "Tue 14:00").user("user-4"),
        ]),
    );
    run_command(&logs, &out)
        .args(["--date", "2024-01-05"])
        .assert()
        .success()
        .stderr(predicate::str::contains(
            "`date=2024-01-02/part-0.parquet` was changed after night 2024-01-02 had run: 1 of its messages fall on 2024-01-02 and were not billed",
        ));
    // Billed by a recompute, then written again with its messages in another order, it holds
    // nothing unbilled: no warning. Without `t2b`, it lacks a billed message: named, and a
    // strict run goes on.
    run_command(&logs, &out)
        .args(["--date", "2024-01-02", "--recompute-later"])
        .assert()
        .success();
    write_parquet(
        &tuesday,
        &mut frame(&[
            template("t2b", "Tue 14:00").user("user-4"),
            template("t2", "Tue 13:00"),
        ]),
    );
    run_command(&logs, &out)
        .args(["--date", "2024-01-05", "--strict-late-input"])
        .assert()
        .success()
        .stderr(predicate::str::contains("warning").not());
    write_parquet(
        &tuesday,
        &mut frame(&[template("t2", "Tue 13:00"), template("t2", "Tue 13:00")]),
    );
    run_command(&logs, &out)
        .args(["--date", "2024-01-05", "--strict-late-input"])
        .assert()
        .success()
        .stderr(predicate::str::contains(
            "1 message(s) those nights billed are no longer in the input",
        ));
}

/// A history whose first night (2024-01-01) billed `m1`, and a landing zone whose next day
/// holds `m2` and a copy of `m1` with another user (file row 1).
fn billed_then_copied_with_another_user(dir: &Path) -> (PathBuf, PathBuf) {
    let logs = days_with(
        dir,
        &[
            ("2024-01-01", vec![template("m1", "Mon 13:00")]),
            (
                "2024-01-02",
                vec![
                    template("m2", "Tue 09:00"),
                    template("m1", "Tue 10:00").user("someone-else"),
                ],
            ),
        ],
    );
    let out = dir.join("billing");
    nights(&logs, &out, date("2024-01-01"), 1);
    (logs, out)
}

/// A copy of a message billed on an earlier night that does not repeat the same event is bad
/// input, as it is in a whole run.
#[test]
fn a_conflicting_copy_of_an_earlier_nights_message_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (logs, out) = billed_then_copied_with_another_user(dir.path());
    let before = snapshot(&out);
    run_command(&logs, &out)
        .args(["--date", "2024-01-02"])
        .assert()
        .code(convbill::exit::DATA)
        .stderr(predicate::str::contains(
            "message `m1` of account `acme` was billed on night 2024-01-01, and is logged again with different contents (channel, business, user, direction or kind) in `date=2024-01-02/part-0.parquet` row 1",
        ));
    assert!(snapshot(&out) == before);
    // The whole run says the same of the same log.
    run_command(&logs, &dir.path().join("whole"))
        .assert()
        .code(convbill::exit::DATA)
        .stderr(predicate::str::contains(
            "is logged twice with different `user_id`",
        ));
}

/// With `--rejects`, a conflicting copy of an earlier night's message is set aside like a
/// conflicting duplicate within the night, and counted; the rest of the night is billed.
#[test]
fn with_rejects_a_conflicting_copy_of_an_earlier_nights_message_is_set_aside() {
    let dir = tempfile::tempdir().unwrap();
    let (logs, out) = billed_then_copied_with_another_user(dir.path());
    run_command(&logs, &out)
        .args(["--date", "2024-01-02", "--rejects", "-q"])
        .assert()
        .success();
    let rejects = read_frame(&out.join("rejects/date=2024-01-02/part-0.parquet"));
    assert_eq!(strings(&rejects, "message_id"), vec!["m1"]);
    assert_eq!(strings(&rejects, "reason"), vec!["conflicting_duplicate"]);
    assert_eq!(strings(&rejects, "user_id"), vec!["someone-else"]);
    assert_eq!(
        strings(&rejects, "file"),
        vec!["date=2024-01-02/part-0.parquet"]
    );
    let stats: Value = serde_json::from_slice(
        &std::fs::read(out.join("state/date=2024-01-02/night.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(stats["rows_read"], 2);
    assert_eq!(stats["rows_rejected"], 1);
    assert_eq!(stats["rejected_by_reason"]["conflicting_duplicate"], 1);
    assert_eq!(stats["duplicates_of_earlier_nights"], 0);
    assert_eq!(stats["rows_used"], 1);
}

#[test]
fn unchanged_input_files_are_not_read_or_hashed_again() {
    let dir = tempfile::tempdir().unwrap();
    let logs = a_template_a_day(
        dir.path(),
        &["2024-01-01", "2024-01-02", "2024-01-03", "2024-01-04"],
    );
    let out = dir.path().join("billing");
    nights(&logs, &out, date("2024-01-01"), 2);
    // Monday's file is overwritten with junk of the same size, its time put back: a night
    // that hashed or read it would notice.
    let monday = logs.join("date=2024-01-01/part-0.parquet");
    let modified = std::fs::metadata(&monday).unwrap().modified().unwrap();
    let size = std::fs::metadata(&monday).unwrap().len();
    std::fs::write(&monday, vec![b'x'; size as usize]).unwrap();
    std::fs::File::options()
        .write(true)
        .open(&monday)
        .unwrap()
        .set_modified(modified)
        .unwrap();
    let catalog = |out: &Path| json(&out.join("state/inputs.json"));
    let sha_before = catalog(&out)["files"][0]["sha256"].clone();
    run_command(&logs, &out)
        .args(["--date", "2024-01-03"])
        .assert()
        .success();
    assert_eq!(catalog(&out)["files"][0]["sha256"], sha_before);
    // Once its time changes, it is hashed and read again, and the junk is named.
    std::fs::File::options()
        .write(true)
        .open(&monday)
        .unwrap()
        .set_modified(modified + Duration::from_secs(60))
        .unwrap();
    run_command(&logs, &out)
        .args(["--date", "2024-01-04"])
        .assert()
        .code(convbill::exit::DATA)
        .stderr(predicate::str::contains("date=2024-01-01/part-0.parquet"));
}

#[test]
fn every_dropped_row_is_counted_in_the_summary_the_log_and_the_manifest() {
    let dir = tempfile::tempdir().unwrap();
    let logs = days_with(
        dir.path(),
        &[
            (
                "2024-01-01",
                vec![
                    template("m1", "Mon 13:00"),
                    template("m2", "Mon 14:00").user("user-2"),
                    template("m2", "Mon 14:01").user("user-2"),
                ],
            ),
            (
                "2024-01-02",
                vec![
                    // A copy of Monday's m1, logged again on Tuesday.
                    template("m1", "Tue 00:10"),
                    template("m3", "Tue 10:00").user("user-3"),
                    template("m3", "Tue 10:00").user("user-3"),
                    template("m4", "Tue 11:00").user("user-4"),
                ],
            ),
        ],
    );
    let out = dir.path().join("billing");
    run_command(&logs, &out)
        .args(["--date", "2024-01-01", "--init"])
        .assert()
        .success()
        .stderr(predicate::str::contains(
            "3 messages, 1 duplicate(s) dropped (1 within the night, 0 of earlier nights)",
        ));
    run_command(&logs, &out)
        .args(["-v", "--date", "2024-01-02"])
        .assert()
        .success()
        .stderr(
            predicate::str::contains(
                "4 messages, 2 duplicate(s) dropped (1 within the night, 1 of earlier nights)",
            )
            .and(predicate::str::contains("duplicates_within_night=1"))
            .and(predicate::str::contains("duplicates_of_earlier_nights=1")),
        );
    let manifest = json(&out.join("month-to-date/manifest.json"));
    let night = &manifest["last_night"];
    assert_eq!(night["rows_read"], 4);
    assert_eq!(night["duplicates_within_night"], 1);
    assert_eq!(night["duplicates_of_earlier_nights"], 1);
    assert_eq!(night["rows_used"], 2);
    assert_eq!(manifest["input"]["duplicates_dropped"], 2);
    assert_eq!(
        manifest["input"]["files"][0]["path"],
        "date=2024-01-02/part-0.parquet"
    );
    assert_eq!(manifest["input"]["files"][0]["rows"], 4);
    let stats = json(&out.join("state/date=2024-01-01/night.json"));
    assert_eq!(stats["duplicates_within_night"], 1);
    assert_eq!(stats["rows_used"], 2);
}

/// A night's seen ids carry their fingerprints (`id_hash`), which later nights compare first;
/// a history written before they were kept has none, and its copies are still dropped.
#[test]
fn copies_are_dropped_against_seen_ids_without_fingerprints() {
    let dir = tempfile::tempdir().unwrap();
    let logs = days_with(
        dir.path(),
        &[
            ("2024-01-01", vec![template("m1", "Mon 13:00")]),
            (
                "2024-01-02",
                vec![
                    template("m1", "Tue 00:10"),
                    template("m2", "Tue 10:00").user("user-2"),
                ],
            ),
        ],
    );
    let out = dir.path().join("billing");
    nights(&logs, &out, date("2024-01-01"), 1);
    let seen_path = out.join("state/date=2024-01-01/seen.parquet");
    let seen = read_frame(&seen_path);
    assert_eq!(
        seen.get_column_names(),
        ["account_id", "message_id", "content", "event", "id_hash"]
    );
    write_parquet(&seen_path, &mut seen.drop("id_hash").unwrap());
    run_command(&logs, &out)
        .args(["--date", "2024-01-02"])
        .assert()
        .success();
    let stats = json(&out.join("state/date=2024-01-02/night.json"));
    assert_eq!(stats["duplicates_of_earlier_nights"], 1);
    assert_eq!(stats["rows_used"], 1);
}

/// The fingerprint kept with the seen ids is part of the state's format: FNV-1a (64-bit) over
/// the account's bytes, 0x1f, the message id's bytes, 0x1f; a history written by one version
/// is read by the next.
#[test]
fn the_id_fingerprint_is_fnv_1a_of_account_and_message_id() {
    fn fnv(parts: &[&str]) -> u64 {
        let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
        for part in parts {
            for byte in part.bytes().chain([0x1f]) {
                hash ^= u64::from(byte);
                hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
            }
        }
        hash
    }
    let frame = df!(
        "account_id" => ["acme", "acme", "ac"],
        "message_id" => ["wamid.1", "wamid.2", "mewamid.1"],
    )
    .unwrap();
    let hashes = convbill::load::id_hashes(&frame).unwrap();
    assert_eq!(
        hashes,
        vec![
            fnv(&["acme", "wamid.1"]),
            fnv(&["acme", "wamid.2"]),
            fnv(&["ac", "mewamid.1"]),
        ]
    );
    assert_eq!(hashes[0], 0x52a0_b635_39d2_2fe4);
}

/// The seen ids, the largest state file (every message id of the night), are compressed with
/// zstd, like the outputs: a 10M-message night's are 269 MB where LZ4 made them 361 MB, at
/// about the same CPU time.
#[test]
fn a_night_compresses_its_seen_ids_with_zstd() {
    let dir = tempfile::tempdir().unwrap();
    let logs = one_message_log(dir.path());
    let out = dir.path().join("billing");
    nights(&logs, &out, date("2024-01-01"), 1);
    let metadata = footer(&out.join("state/date=2024-01-01/seen.parquet"));
    let group = metadata.row_group(0);
    let ids = group
        .columns()
        .iter()
        .find(|c| c.column_descr().name() == "message_id")
        .unwrap();
    assert!(
        matches!(ids.compression(), parquet::basic::Compression::ZSTD(_)),
        "{:?}",
        ids.compression()
    );
}

/// The Parquet logical type of `column` in `path`, as the `parquet` crate reads the footer.
fn logical_type(path: &Path, column: &str) -> String {
    let metadata = footer(path);
    let schema = metadata.file_metadata().schema_descr();
    let field = schema
        .columns()
        .iter()
        .find(|c| c.name() == column)
        .unwrap_or_else(|| panic!("no column {column}"));
    format!(
        "{:?} {:?}",
        field.physical_type(),
        field.logical_type_ref().cloned()
    )
}

#[test]
fn money_is_a_decimal_number_in_parquet_and_every_row_names_its_invoice() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let sample = Path::new(env!("CARGO_MANIFEST_DIR")).join("sample-data");
    run_command(&sample, &out)
        .arg("--rates")
        .arg(SAMPLE_CARD)
        .assert()
        .success();
    let lines_path = out.join("invoice_lines.parquet");
    assert_eq!(
        logical_type(&lines_path, "unit_price"),
        "INT64 Some(Decimal(DecimalType { scale: 4, precision: 18 }))"
    );
    assert_eq!(
        logical_type(&lines_path, "amount"),
        "INT64 Some(Decimal(DecimalType { scale: 2, precision: 18 }))"
    );
    assert_eq!(
        logical_type(&out.join("invoices.parquet"), "amount"),
        "INT64 Some(Decimal(DecimalType { scale: 2, precision: 18 }))"
    );
    // `sum(amount)` is a sum of decimals, and it is the manifest's total.
    let lines = read_frame(&lines_path);
    assert_eq!(
        lines.column("amount").unwrap().dtype(),
        &DataType::Decimal(18, 2)
    );
    let usd = lines
        .clone()
        .lazy()
        .filter(col("currency").eq(lit("USD")))
        .select([col("amount").sum()])
        .collect()
        .unwrap();
    let total = usd
        .column("amount")
        .unwrap()
        .get(0)
        .unwrap()
        .str_value()
        .to_string();
    assert_eq!(
        Value::String(total),
        manifest_of(&out)["invoices"]["amounts"]["USD"]
    );
    // The CSV keeps decimal text.
    let csv = std::fs::read_to_string(out.join("invoice_lines.csv")).unwrap();
    assert!(csv
        .lines()
        .next()
        .unwrap()
        .starts_with("invoice_id,account_id,period,status"));
    assert!(csv.contains(",0.0500,") && csv.contains(",24.25,"), "{csv}");

    // One join from a session to its invoice, and the lines of an invoice count its sessions.
    let sessions = read_frame(&out.join("sessions.parquet"));
    let invoices = read_frame(&out.join("invoices.parquet"));
    let per_invoice = |frame: DataFrame, sum: Expr| {
        frame
            .lazy()
            .group_by([col("invoice_id")])
            .agg([sum.alias("n")])
            .sort(["invoice_id"], Default::default())
            .collect()
            .unwrap()
    };
    let from_sessions = per_invoice(sessions, len().cast(DataType::Int64));
    let from_lines = per_invoice(lines, col("sessions").sum());
    let from_invoices = invoices
        .lazy()
        .select([col("invoice_id"), col("sessions").alias("n")])
        .sort(["invoice_id"], Default::default())
        .collect()
        .unwrap();
    assert!(from_sessions.equals(&from_lines));
    assert!(from_sessions.equals(&from_invoices));
}

/// The README's schedule: the first night with `--init`, then the cron line and the CI job's
/// step, run as cron would (its `PATH`, `sh`) with only the paths replaced, after a night the
/// schedule missed.
#[test]
fn the_readme_schedule_runs_as_written() {
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).unwrap();
    let section = &readme[readme.find("### On a schedule").unwrap()..];
    let section = &section[..section.find("\n## ").unwrap()];
    let init = section
        .lines()
        .map(str::trim)
        .find(|l| l.contains("convbill run") && l.contains("--init"))
        .expect("the README starts a history");
    let cron = section
        .lines()
        .map(str::trim)
        .find(|l| l.starts_with("30 2 * * *"))
        .expect("the README has a cron line");
    assert!(section.contains("CRON_TZ=UTC"), "cron's times are UTC");
    let step = section[section.find("- run: |").expect("the CI job runs a step")..]
        .lines()
        .skip(1)
        .take_while(|l| !l.starts_with("```"))
        .collect::<Vec<_>>()
        .join("\n");

    let dir = tempfile::tempdir().unwrap();
    let today = chrono::Utc::now().date_naive();
    let first = today - Days::new(3);
    let log = dir.path().join("generated.parquet");
    generate(&log, 3_000, 17, 4, &first.to_string(), 3);
    let logs = dir.path().join("data/logs");
    let until = convbill::nightly::start_ns(today);
    split_by_day(
        &rows_before(&read_frame(&log), until),
        &logs,
        "part-0.parquet",
    );
    let out = dir.path().join("data/billing");
    let paths = |command: &str| {
        command
            .replace("/usr/local/bin/convbill", env!("CARGO_BIN_EXE_convbill"))
            .replace("/data/logs", &logs.display().to_string())
            .replace("/data/billing", &out.display().to_string())
            .replace("/etc/convbill/rates.toml", SAMPLE_CARD)
    };
    // As cron runs a command: `sh -c`, `PATH=/usr/bin:/bin`, little else; what it prints is
    // mailed, so a good night prints nothing.
    let sh = |script: &str| {
        let output = std::process::Command::new("/bin/sh")
            .arg("-c")
            .arg(script)
            .env_clear()
            .env("PATH", "/usr/bin:/bin")
            .env("HOME", dir.path())
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "{script}\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stderr).into_owned()
    };
    let init_date = init
        .split_whitespace()
        .skip_while(|w| *w != "--date")
        .nth(1)
        .unwrap();
    sh(&paths(init).replace(init_date, &first.to_string()));
    // The night after `first` is missed; the cron line catches up. Cron turns `\%` into `%`.
    let command = cron.splitn(6, ' ').nth(5).unwrap().replace("\\%", "%");
    assert_eq!(
        sh(&paths(&command)),
        "",
        "a good night prints nothing to mail"
    );
    assert_eq!(
        convbill::nightly::nights_run(&out).unwrap(),
        vec![first, first + Days::new(1), first + Days::new(2)]
    );
    let billed = snapshot(&out);
    // The CI job's step bills yesterday again: the same bytes.
    sh(&paths(&step));
    assert!(snapshot(&out) == billed);
}

/// The README's example of a nightly summary is what the sample data gives.
#[test]
fn the_readme_nightly_summary_is_the_sample_datas() {
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).unwrap();
    let example = readme
        .lines()
        .map(str::trim)
        .find(|l| l.starts_with("convbill: night 2026-10-06:"))
        .expect("the README shows a nightly summary");
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("nightly");
    let sample = Path::new(env!("CARGO_MANIFEST_DIR")).join("sample-data");
    run_command(&sample, &out)
        .args(["-q", "--date", "2026-10-01", "--init"])
        .assert()
        .success();
    for day in 2..6 {
        run_command(&sample, &out)
            .args(["-q", "--date", &format!("2026-10-0{day}")])
            .assert()
            .success();
    }
    let output = run_command(&sample, &out)
        .args(["--date", "2026-10-06"])
        .output()
        .unwrap();
    let stderr =
        String::from_utf8_lossy(&output.stderr).replace(&format!("{}/", out.display()), "nightly/");
    assert!(stderr.contains(example), "{stderr}");
}

/// A row no night would ever read (no time, or a time no night can have) is not left unbilled
/// in silence: the first night that sees its file refuses, naming the file and row.
#[test]
fn a_new_input_file_with_a_row_no_night_would_read_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let logs = one_message_log(dir.path());
    let out = dir.path().join("billing");
    nights(&logs, &out, date("2024-01-01"), 1);
    let bad = logs.join("date=2024-01-02/part-0.parquet");
    let mut events = frame(&[
        template("t2", "Tue 13:00"),
        template("t3", "Tue 14:00").at_ns(at("2103-12-05 00:00")),
    ]);
    write_parquet(&bad, &mut events);
    run_command(&logs, &out)
        .args(["--date", "2024-01-02"])
        .assert()
        .code(convbill::exit::DATA)
        .stderr(
            predicate::str::contains("date=2024-01-02/part-0.parquet").and(
                predicate::str::contains("implausible value `2103-12-05T00:00:00Z` at row 1"),
            ),
        );
    let ts = Column::new("timestamp".into(), [None, Some(at("Tue 14:00"))])
        .cast(&DataType::Datetime(TimeUnit::Nanoseconds, None))
        .unwrap();
    events.with_column(ts).unwrap();
    write_parquet(&bad, &mut events);
    run_command(&logs, &out)
        .args(["--date", "2024-01-02"])
        .assert()
        .code(convbill::exit::DATA)
        .stderr(
            predicate::str::contains("column `timestamp` in")
                .and(predicate::str::contains("is null at row 0")),
        );
}

/// An `--out` that is a symbolic link (to a folder on a big volume, say) stays a link: the
/// folder it leads to holds the history, whichever name a night uses.
#[cfg(unix)]
#[test]
fn an_out_that_is_a_link_keeps_leading_to_the_history() {
    let dir = tempfile::tempdir().unwrap();
    let logs = a_template_a_day(dir.path(), &["2024-01-01", "2024-01-02"]);
    let real = dir.path().join("volume-billing");
    let link = dir.path().join("billing");
    std::fs::create_dir(&real).unwrap();
    std::os::unix::fs::symlink(&real, &link).unwrap();
    run_command(&logs, &link)
        .args(["--date", "2024-01-01", "--init"])
        .assert()
        .success();
    run_command(&logs, &real)
        .args(["--date", "2024-01-02"])
        .assert()
        .success();
    assert!(std::fs::symlink_metadata(&link)
        .unwrap()
        .file_type()
        .is_symlink());
    assert_eq!(
        convbill::nightly::nights_run(&real).unwrap(),
        vec![date("2024-01-01"), date("2024-01-02")]
    );
    // A link to a folder that does not exist yet: no history there without `--init`; with
    // it, the folder is made where the link leads.
    let later = dir.path().join("later-billing");
    std::os::unix::fs::symlink(dir.path().join("volume-2/billing"), &later).unwrap();
    std::fs::create_dir(dir.path().join("volume-2")).unwrap();
    run_command(&logs, &later)
        .args(["--date", "2024-01-01"])
        .assert()
        .code(convbill::exit::USAGE)
        .stderr(predicate::str::contains("holds no nightly history"));
    run_command(&logs, &later)
        .args(["--date", "2024-01-01", "--init"])
        .assert()
        .success();
    assert!(dir.path().join("volume-2/billing/state").is_dir());
    assert!(std::fs::symlink_metadata(&later)
        .unwrap()
        .file_type()
        .is_symlink());
}

/// A final invoice that a recompute changes keeps its id and gets the next revision, and the
/// run says so; while the late file is pending, the invoice it concerns is not final.
#[test]
fn a_final_invoice_changed_by_a_recompute_is_a_new_revision() {
    let dir = tempfile::tempdir().unwrap();
    let logs = days_with(
        dir.path(),
        &[
            ("2024-01-10", vec![template("t1", "2024-01-10 13:00")]),
            (
                "2024-01-20",
                vec![template("t2", "2024-01-20 13:00").account("other")],
            ),
        ],
    );
    let card = a_usd_card(dir.path(), "rates.toml", "0.05");
    let out = dir.path().join("billing");
    for day in 0..32 {
        night_command(&logs, &out, date("2024-01-01") + Days::new(day))
            .arg("--rates")
            .arg(&card)
            .assert()
            .success();
    }
    // The night of 31 January closed January: its invoices are in `closed/period=2024-01/`.
    let closed = out.join("closed/period=2024-01");
    assert_eq!(
        json(&closed.join("manifest.json"))["closed_by_night"],
        "2024-01-31"
    );
    let invoice = |account: &str| json(&closed.join(format!("invoices/2024-01/{account}.json")));
    let before = invoice("acme");
    assert_eq!(before["status"], "final");
    assert_eq!(before["revision"], 1);
    // A message of 10 January lands late: the closed invoice stays as issued until a
    // recompute bills it, and the run names the file and the invoice it concerns.
    write_parquet(
        &logs.join("date=2024-01-10/late.parquet"),
        &mut frame(&[template("late", "2024-01-10 15:00").user("user-2")]),
    );
    let closed_before = snapshot(&closed);
    night_command(&logs, &out, date("2024-02-01"))
        .arg("--rates")
        .arg(&card)
        .assert()
        .success()
        .stderr(predicate::str::contains(
            "`date=2024-01-10/late.parquet` was added after night 2024-01-10 had run",
        ));
    assert!(snapshot(&closed) == closed_before);
    let manifest = json(&out.join("month-to-date/manifest.json"));
    assert_eq!(
        manifest["late_input"][0]["invoices"][0],
        serde_json::json!({"account_id": "acme", "period": "2024-01"})
    );
    run_command(&logs, &out)
        .args(["--date", "2024-01-10", "--recompute-later", "--allow-empty"])
        .arg("--rates")
        .arg(&card)
        .assert()
        .success()
        .stderr(predicate::str::contains(
            "invoice acme 2024-01 changed: quota 1 -> 2, amount 0.05 -> 0.10 USD; it had been final: revision 2 replaces it",
        ));
    let after = invoice("acme");
    assert_eq!(after["status"], "final");
    assert_eq!(after["revision"], 2);
    assert_eq!(after["invoice_id"], before["invoice_id"]);
    assert_ne!(after["content_sha256"], before["content_sha256"]);
    assert_eq!(invoice("other")["revision"], 1);
    let table = read_frame(&closed.join("invoices.parquet"));
    assert!(strings(&table, "content_sha256")
        .contains(&after["content_sha256"].as_str().unwrap().to_string()));
}

/// A whole run that replaces a folder whose final invoice it changes says so and gives it the
/// next revision; a rerun on the same input keeps it.
#[test]
fn a_whole_run_that_changes_a_final_invoice_reissues_it() {
    let dir = tempfile::tempdir().unwrap();
    let logs = dir.path().join("logs");
    generate(&logs.join("a.parquet"), 6_000, 2, 2, "2026-10-01", 31);
    let out = dir.path().join("whole");
    run_command(&logs, &out)
        .arg("--rates")
        .arg(SAMPLE_CARD)
        .assert()
        .success();
    let invoice = || json(&out.join("invoices/2026-10/acct-0001.json"));
    assert_eq!(invoice()["status"], "final");
    assert_eq!(invoice()["revision"], 1);
    write_parquet(
        &logs.join("b.parquet"),
        &mut frame(&[template("more", "2026-10-12 10:00").account("acct-0001")]),
    );
    run_command(&logs, &out)
        .arg("--rates")
        .arg(SAMPLE_CARD)
        .assert()
        .success()
        .stderr(
            predicate::str::contains("invoice acct-0001 2026-10 changed: quota").and(
                predicate::str::contains("it had been final: revision 2 replaces it"),
            ),
        );
    assert_eq!(invoice()["revision"], 2);
    let reissued = snapshot(&out);
    run_command(&logs, &out)
        .arg("--rates")
        .arg(SAMPLE_CARD)
        .assert()
        .success()
        .stderr(predicate::str::contains("replaces it").not());
    assert!(snapshot(&out) == reissued);
}

/// A schedule that missed nights catches up with `--catch-up`: every missing night runs, in
/// order, each put in place on its own, and a night that cannot run stops it there.
#[test]
fn catch_up_runs_the_missing_nights_in_order_and_stops_at_one_that_cannot_run() {
    let dir = tempfile::tempdir().unwrap();
    let logs = days_with(
        dir.path(),
        &[
            ("2024-01-01", vec![template("t1", "Mon 13:00")]),
            ("2024-01-02", vec![template("t2", "Tue 13:00")]),
            ("2024-01-03", vec![template("t3", "Wed 13:00")]),
            ("2024-01-05", vec![template("t5", "Fri 13:00")]),
        ],
    );
    let out = dir.path().join("billing");
    nights(&logs, &out, date("2024-01-01"), 1);
    run_command(&logs, &out)
        .args(["--date", "2024-01-03", "--catch-up"])
        .assert()
        .success()
        .stderr(predicate::str::contains(
            "nights 2024-01-02 to 2024-01-03 (2): 2 messages, 0 duplicate(s) dropped (0 each within its night, 0 of earlier nights)",
        ));
    // Thursday's logs have not landed: Friday's catch-up stops at Thursday, and the history
    // keeps the nights it ran.
    run_command(&logs, &out)
        .args(["--date", "2024-01-05", "--catch-up"])
        .assert()
        .code(convbill::exit::DATA)
        .stderr(
            predicate::str::contains("has no messages on 2024-01-04").and(
                predicate::str::contains("hint: if the logs of 2024-01-04 have not landed yet"),
            ),
        );
    assert_eq!(
        convbill::nightly::nights_run(&out).unwrap().last(),
        Some(&date("2024-01-03"))
    );
    write_parquet(
        &logs.join("date=2024-01-04/part-0.parquet"),
        &mut frame(&[template("t4", "Thu 13:00")]),
    );
    write_parquet(
        &logs.join("date=2024-01-06/part-0.parquet"),
        &mut frame(&[template("t6", "Sat 13:00")]),
    );
    // With `--rejects`, each night sets its rows aside in its own partition.
    run_command(&logs, &out)
        .args(["--date", "2024-01-05", "--catch-up", "--rejects"])
        .assert()
        .success()
        .stderr(predicate::str::contains(
            "0 row(s) set aside in rejects/date=2024-01-04/ to date=2024-01-05/ (part-0.parquet in each)",
        ));
    for night in ["2024-01-04", "2024-01-05"] {
        assert!(out
            .join(format!("rejects/date={night}/part-0.parquet"))
            .is_file());
    }
    // A stop after some nights ran says which.
    run_command(&logs, &out)
        .args(["--date", "2024-01-08", "--catch-up"])
        .assert()
        .code(convbill::exit::DATA)
        .stderr(
            predicate::str::contains(
                "caught up nights 2024-01-06 to 2024-01-06; night 2024-01-07 did not run",
            )
            .and(predicate::str::contains(
                "note: the history ends with night 2024-01-06; the nights from 2024-01-07 on have not run",
            )),
        );
    // Every message of the nights run is billed once.
    let nightly = read_frame(&out.join("month-to-date/invoices.parquet"));
    assert_eq!(
        nightly.column("sessions").unwrap().i64().unwrap().get(0),
        Some(6)
    );
}

/// A whole run over a landing zone with a day missing bills the month as partial and names
/// the hole, in the account's zone.
#[test]
fn a_whole_run_names_the_days_its_input_lacks() {
    let dir = tempfile::tempdir().unwrap();
    let logs = landing_zone(dir.path(), 6, "2026-10-01", 31, 4, 20_000);
    std::fs::remove_dir_all(logs.join("date=2026-10-15")).unwrap();
    let out = dir.path().join("whole");
    run_command(&logs, &out)
        .arg("--rates")
        .arg(SAMPLE_CARD)
        .assert()
        .success()
        .stderr(predicate::str::contains(
            "but not 2026-10-15T00:00:00Z to 2026-10-16T00:00:00Z",
        ));
    let utc = json(&out.join("invoices/2026-10/acct-0003.json"));
    assert_eq!(utc["status"], "partial");
    assert_eq!(utc["coverage_start"], "2026-10-01T00:00:00Z");
    assert_eq!(
        utc["uncovered"],
        serde_json::json!([{"from": "2026-10-15T00:00:00Z", "to": "2026-10-16T00:00:00Z"}])
    );
    let jakarta = json(&out.join("invoices/2026-10/acct-0000.json"));
    assert_eq!(jakarta["uncovered"][0]["from"], "2026-10-15T07:00:00+07:00");
    let table = read_frame(&out.join("invoices.parquet"));
    assert!(strings(&table, "uncovered")
        .contains(&"2026-10-15T00:00:00Z/2026-10-16T00:00:00Z".to_string()));
}

/// A file rewritten without some messages the nights billed, and with new ones: both are
/// named, a strict run refuses, and a recompute drops the gone ones only when told to.
#[test]
fn a_rewritten_file_that_lost_billed_messages_is_named_and_a_recompute_can_accept_it() {
    let dir = tempfile::tempdir().unwrap();
    let logs = a_template_a_day(
        dir.path(),
        &["2024-01-01", "2024-01-02", "2024-01-03", "2024-01-04"],
    );
    let tuesday = logs.join("date=2024-01-02/part-0.parquet");
    write_parquet(
        &tuesday,
        &mut frame(&[
            template("t2", "Tue 13:00"),
            template("gone", "Tue 14:00").user("user-5"),
        ]),
    );
    let out = dir.path().join("billing");
    nights(&logs, &out, date("2024-01-01"), 3);
    // The provider rewrites Tuesday: `gone` is gone, `new` is new.
    write_parquet(
        &tuesday,
        &mut frame(&[
            template("t2", "Tue 13:00"),
            template("new", "Tue 15:00").user("user-6"),
        ]),
    );
    let described = "`date=2024-01-02/part-0.parquet` was changed after night 2024-01-02 had run: 1 of its messages fall on 2024-01-02 and were not billed, and 1 message(s) those nights billed are no longer in the input";
    run_command(&logs, &out)
        .args(["--date", "2024-01-04", "--strict-late-input"])
        .assert()
        .code(convbill::exit::DATA)
        .stderr(
            predicate::str::contains(described).and(predicate::str::contains(
                "rerun `--date 2024-01-02 --recompute-later --accept-removed`",
            )),
        );
    run_command(&logs, &out)
        .args(["--date", "2024-01-02", "--recompute-later"])
        .assert()
        .code(convbill::exit::USAGE)
        .stderr(
            predicate::str::contains("lacks 1 message(s) that night 2024-01-02 read before")
                .and(predicate::str::contains(
                    "the files night 2024-01-02 read were rewritten without these messages: if they were withdrawn for good, add `--accept-removed`",
                )),
        );
    run_command(&logs, &out)
        .args([
            "--date",
            "2024-01-02",
            "--recompute-later",
            "--accept-removed",
        ])
        .assert()
        .success()
        .stderr(predicate::str::contains(
            "dropped 1 message(s) night 2024-01-02 had billed, which the input no longer holds",
        ));
    run_command(&logs, &out)
        .args(["--date", "2024-01-04", "--strict-late-input"])
        .assert()
        .success()
        .stderr(predicate::str::contains("warning").not());
    // t1 to t4 and `new`; `gone` is no longer billed.
    let sessions = read_frame(&out.join("month-to-date/invoices.parquet"));
    assert_eq!(
        sessions.column("sessions").unwrap().i64().unwrap().get(0),
        Some(5)
    );
    // A rewrite that only loses messages is named too, but does not stop a strict run.
    write_parquet(&tuesday, &mut frame(&[template("t2", "Tue 13:00")]));
    run_command(&logs, &out)
        .args(["--date", "2024-01-04", "--strict-late-input"])
        .assert()
        .success()
        .stderr(predicate::str::contains(
            "was changed after night 2024-01-02 had run: 1 message(s) those nights billed are no longer in the input (2024-01-02)",
        ).and(predicate::str::contains("to bring the history in line with its input")));
}

/// A late customer message on the last evening of a month decides the initiation of a
/// session the next morning, in the next month: both months' invoices are concerned, and the
/// recompute says that the next month's lines changed though its totals did not.
#[test]
fn late_input_concerns_the_invoices_of_the_sessions_it_can_change() {
    let dir = tempfile::tempdir().unwrap();
    let logs = days_with(
        dir.path(),
        &[
            ("2024-01-30", vec![template("t1", "2024-01-30 10:00")]),
            ("2024-02-01", vec![template("t2", "2024-02-01 10:00")]),
        ],
    );
    let out = dir.path().join("billing");
    for day in 0..4 {
        night_command(&logs, &out, date("2024-01-30") + Days::new(day))
            .assert()
            .success();
    }
    write_parquet(
        &logs.join("date=2024-01-31/late.parquet"),
        &mut frame(&[inbound("hello", "2024-01-31 23:00")]),
    );
    night_command(&logs, &out, date("2024-02-03"))
        .assert()
        .success();
    let manifest = json(&out.join("month-to-date/manifest.json"));
    assert_eq!(
        manifest["late_input"][0]["invoices"],
        serde_json::json!([
            {"account_id": "acme", "period": "2024-01"},
            {"account_id": "acme", "period": "2024-02"},
        ])
    );
    run_command(&logs, &out)
        .args(["--date", "2024-01-31", "--recompute-later", "--allow-empty"])
        .assert()
        .success()
        .stderr(predicate::str::contains(
            "invoice acme 2024-02 changed: quota 1 -> 1 (its lines changed, not its totals)",
        ));
}

/// A whole run that replaces a folder says what became of its final invoices: one the input
/// no longer covers whole is partial now; one the card rates otherwise is replaced by another
/// id, which names the one it replaces.
#[test]
fn a_whole_run_says_what_became_of_the_final_invoices_it_replaces() {
    let dir = tempfile::tempdir().unwrap();
    let logs = landing_zone(dir.path(), 6, "2026-10-01", 31, 4, 20_000);
    let out = dir.path().join("whole");
    run_command(&logs, &out)
        .arg("--rates")
        .arg(SAMPLE_CARD)
        .assert()
        .success();
    assert_eq!(
        json(&out.join("invoices/2026-10/acct-0003.json"))["status"],
        "final"
    );
    // The card rates acct-0001 otherwise: its October is another invoice.
    let card = dir.path().join("rates.toml");
    std::fs::write(
        &card,
        std::fs::read_to_string(SAMPLE_CARD).unwrap().replace(
            "[accounts.acct-0001]",
            "[accounts.acct-0001]\nunit_price = \"0.0600\"",
        ),
    )
    .unwrap();
    let old = json(&out.join("invoices/2026-10/acct-0001.json"));
    assert_eq!(old["status"], "final");
    let output = run_command(&logs, &out)
        .arg("--rates")
        .arg(&card)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    let new = json(&out.join("invoices/2026-10/acct-0001.json"));
    assert_ne!(new["invoice_id"], old["invoice_id"]);
    assert_eq!(new["replaces"], old["invoice_id"]);
    assert!(
        stderr.contains(&format!(
            "it had been final as `{}` revision 1: `{}` replaces it",
            old["invoice_id"].as_str().unwrap(),
            new["invoice_id"].as_str().unwrap()
        )),
        "{stderr}"
    );
    // A day of the input goes missing: October is partial now, and the run says so.
    std::fs::remove_dir_all(logs.join("date=2026-10-15")).unwrap();
    run_command(&logs, &out)
        .arg("--rates")
        .arg(&card)
        .assert()
        .success()
        .stderr(
            predicate::str::contains("invoice acct-0003 2026-10 changed: quota").and(
                predicate::str::contains("; it had been final (revision 1), and is partial now"),
            ),
        );
}

/// A file rewritten with a billed message changed (a delivery now `failed`, another time) is
/// named: a strict run refuses, and the recompute bills the message as it is now.
#[test]
fn a_billed_message_rewritten_otherwise_is_noticed() {
    let dir = tempfile::tempdir().unwrap();
    let logs = a_template_a_day(dir.path(), &["2024-01-01", "2024-01-02", "2024-01-03"]);
    let out = dir.path().join("billing");
    nights(&logs, &out, date("2024-01-01"), 2);
    write_parquet(
        &logs.join("date=2024-01-02/part-0.parquet"),
        &mut frame(&[template("t2", "Tue 13:00").status("failed")]),
    );
    run_command(&logs, &out)
        .args(["--date", "2024-01-03", "--strict-late-input"])
        .assert()
        .code(convbill::exit::DATA)
        .stderr(predicate::str::contains(
            "`date=2024-01-02/part-0.parquet` was changed after night 2024-01-02 had run: 1 message(s) those nights billed are different now (status, time or kind) (2024-01-02)",
        ).and(predicate::str::contains("rerun `--date 2024-01-02 --recompute-later`")));
    run_command(&logs, &out)
        .args(["--date", "2024-01-02", "--recompute-later"])
        .assert()
        .success()
        .stderr(predicate::str::contains(
            "invoice acme 2024-01 changed: quota 2 -> 1",
        ));
    run_command(&logs, &out)
        .args(["--date", "2024-01-03", "--strict-late-input"])
        .assert()
        .success()
        .stderr(predicate::str::contains("warning").not());
}

/// A template for acme every day from `first` for `days` days, at 13:00, in one file.
fn a_template_every_day(path: &Path, first: &str, days: u64, extra: Option<Ev>) {
    let first = date(first);
    let mut events: Vec<Ev> = (0..days)
        .map(|n| {
            let day = first + Days::new(n);
            template(&format!("t-{day}"), &format!("{day} 13:00"))
        })
        .collect();
    events.extend(extra);
    write_parquet(path, &mut frame(&events));
}

/// A revision number never names two different invoices: an invoice a whole run drops and a
/// later one brings back goes on from its last revision, and a change line compares with the
/// last final issue, not with a partial one in between.
#[test]
fn an_invoice_that_goes_and_comes_back_keeps_its_revisions() {
    let dir = tempfile::tempdir().unwrap();
    let logs = dir.path().join("logs");
    let aside = dir.path().join("aside");
    std::fs::create_dir_all(&aside).unwrap();
    a_template_every_day(&logs.join("jan.parquet"), "2024-01-01", 31, None);
    a_template_every_day(&logs.join("feb.parquet"), "2024-02-01", 29, None);
    let out = dir.path().join("whole");
    let february = || json(&out.join("invoices/2024-02/acme.json"));
    let whole_run = || run_command(&logs, &out).assert().success();
    whole_run();
    let first = february();
    assert_eq!(
        (first["status"].as_str(), first["revision"].as_i64()),
        (Some("final"), Some(1))
    );
    let register = read_frame(&out.join("invoices_issued.parquet"));
    assert_eq!(strings(&register, "period"), ["2024-01", "2024-02"]);

    // February's file is moved away: its invoice is gone, and the register keeps it.
    std::fs::rename(logs.join("feb.parquet"), aside.join("feb.parquet")).unwrap();
    whole_run().stderr(predicate::str::contains(format!(
        "invoice acme 2024-02 changed: quota 29 -> none; it had been final (`{}` revision 1), and is gone",
        first["invoice_id"].as_str().unwrap()
    )));
    assert!(!out.join("invoices/2024-02").exists());
    assert_eq!(
        strings(&read_frame(&out.join("invoices_issued.parquet")), "period"),
        ["2024-01", "2024-02"]
    );

    // Back as it was: revision 1 again, and said so.
    std::fs::rename(aside.join("feb.parquet"), logs.join("feb.parquet")).unwrap();
    whole_run().stderr(predicate::str::contains(
        "invoice acme 2024-02 is final again, as its revision 1",
    ));
    assert_eq!(february(), first);

    // A day goes missing (partial, 28), then comes back with a message more: the change is
    // told from the final 29, and it is revision 2.
    a_template_every_day(&logs.join("feb.parquet"), "2024-02-01", 28, None);
    whole_run().stderr(predicate::str::contains(
        "invoice acme 2024-02 changed: quota 29 -> 28; it had been final (revision 1), and is partial now",
    ));
    let extra = template("extra", "2024-02-10 14:00").user("user-2");
    a_template_every_day(
        &logs.join("feb.parquet"),
        "2024-02-01",
        29,
        Some(extra.clone()),
    );
    whole_run().stderr(predicate::str::contains(
        "invoice acme 2024-02 changed: quota 29 -> 30; it had been final: revision 2 replaces it",
    ));
    let second = february();
    assert_eq!(second["revision"], 2);

    // Gone and back with revision 1's content: that is revision 3, not a second revision 1.
    std::fs::rename(logs.join("feb.parquet"), aside.join("feb.parquet")).unwrap();
    whole_run();
    a_template_every_day(&logs.join("feb.parquet"), "2024-02-01", 29, None);
    whole_run().stderr(predicate::str::contains(
        "invoice acme 2024-02 changed: quota 30 -> 29; it had been final: revision 3 replaces it",
    ));
    assert_eq!(february()["revision"], 3);
    assert_eq!(february()["content_sha256"], first["content_sha256"]);
    // And a rerun changes nothing.
    let settled = snapshot(&out);
    whole_run().stderr(predicate::str::contains("invoice acme").not());
    assert!(snapshot(&out) == settled);
}

/// A history rerated by another card and then by the first again: each invoice id keeps its
/// revisions, and the one back says it is final again as the revision it was.
#[test]
fn a_card_change_undone_gives_back_the_invoice_as_it_was() {
    let dir = tempfile::tempdir().unwrap();
    let logs = a_template_a_day(dir.path(), &["2024-01-10", "2024-02-01"]);
    let (first, second) = (
        a_usd_card(dir.path(), "a.toml", "0.05"),
        a_usd_card(dir.path(), "b.toml", "0.06"),
    );
    let out = dir.path().join("billing");
    for day in 0..32 {
        let night = date("2024-01-01") + Days::new(day);
        night_command(&logs, &out, night)
            .arg("--rates")
            .arg(&first)
            .assert()
            .success();
    }
    let january = || json(&invoice_path(&out, "2024-01", "acme"));
    let rated_first = january();
    assert_eq!(rated_first["status"], "final");
    let rerate = |card: &Path| {
        run_command(&logs, &out)
            .args(["--date", "2024-01-01", "--recompute-later", "--allow-empty"])
            .arg("--rates")
            .arg(card)
            .assert()
            .success()
    };
    let id = |invoice: &Value| invoice["invoice_id"].as_str().unwrap().to_string();
    rerate(&second).stderr(predicate::str::contains(format!(
        "invoice acme 2024-01 changed: quota 1 -> 1, amount 0.05 -> 0.06 USD; it had been final as `{}` revision 1:",
        id(&rated_first)
    )));
    let rated_second = january();
    assert_ne!(id(&rated_second), id(&rated_first));
    assert_eq!(rated_second["revision"], 1);
    rerate(&first).stderr(predicate::str::contains(format!(
        "invoice acme 2024-01 changed: quota 1 -> 1, amount 0.06 -> 0.05 USD; it had been final as `{}` revision 1: `{}` replaces it, final again as its revision 1",
        id(&rated_second),
        id(&rated_first)
    )));
    let back = january();
    assert_eq!(back["replaces"].as_str(), Some(id(&rated_second).as_str()));
    let without_replaces = |mut invoice: Value| {
        invoice.as_object_mut().unwrap().remove("replaces");
        invoice
    };
    assert_eq!(without_replaces(back), rated_first);
    let register = read_frame(&out.join("state/invoices_issued.parquet"));
    let mut ids = strings(&register, "invoice_id");
    ids.sort();
    let mut expected = vec![id(&rated_first), id(&rated_second)];
    expected.sort();
    assert_eq!(ids, expected);
    rerate(&second).stderr(predicate::str::contains(format!(
        "`{}` replaces it, final again as its revision 1",
        id(&rated_second)
    )));
    assert_eq!(without_replaces(january()), without_replaces(rated_second));
}

/// A landing zone that let a day's files expire cannot recompute that night: the hint names
/// the files and asks for an input that holds them, not for `--accept-removed`.
#[test]
fn a_recompute_over_expired_files_asks_for_the_archive() {
    let dir = tempfile::tempdir().unwrap();
    let logs = a_template_a_day(dir.path(), &["2024-01-01", "2024-01-02", "2024-01-03"]);
    let out = dir.path().join("billing");
    nights(&logs, &out, date("2024-01-01"), 3);
    let archive = dir.path().join("archive");
    copy_dir(&logs, &archive);
    std::fs::remove_dir_all(logs.join("date=2024-01-01")).unwrap();
    let before = snapshot(&out);
    let refused = run_command(&logs, &out)
        .args(["--date", "2024-01-01", "--recompute-later"])
        .assert()
        .code(convbill::exit::USAGE)
        .stderr(predicate::str::contains(
            "hint: the input no longer holds `date=2024-01-01/part-0.parquet` that night 2024-01-01 read: pass an `--input` that holds every night being recomputed (for example the archive of all days)",
        ));
    let stderr = String::from_utf8_lossy(&refused.get_output().stderr).into_owned();
    assert!(!stderr.contains("add `--accept-removed`"), "{stderr}");
    assert!(snapshot(&out) == before);
    run_command(&archive, &out)
        .args(["--date", "2024-01-01", "--recompute-later"])
        .assert()
        .success();
}

/// Every failed run (exit 1, 2 or 3) says what it left of `--out`: nothing, when it was not
/// there; the folder or history as it was, when it was.
#[test]
fn a_failed_run_says_the_folder_is_as_it_was() {
    let dir = tempfile::tempdir().unwrap();
    let logs = a_template_a_day(dir.path(), &["2024-01-01", "2024-01-02"]);
    let bad_card = dir.path().join("bad.toml");
    std::fs::write(&bad_card, "default_plan = \"nope\"\n").unwrap();
    let whole = dir.path().join("whole");
    run_command(&logs, &whole)
        .arg("--rates")
        .arg(&bad_card)
        .assert()
        .code(convbill::exit::USAGE)
        .stderr(predicate::str::contains(format!(
            "note: nothing was written to `{}`",
            whole.display()
        )));
    run_command(&logs, &whole).assert().success();
    std::fs::write(logs.join("date=2024-01-02/bad.parquet"), b"not parquet").unwrap();
    run_command(&logs, &whole)
        .assert()
        .code(convbill::exit::DATA)
        .stderr(predicate::str::contains(format!(
            "note: the output folder `{}` is as it was before this run",
            whole.display()
        )));
    std::fs::remove_file(logs.join("date=2024-01-02/bad.parquet")).unwrap();

    let history = dir.path().join("billing");
    nights(&logs, &history, date("2024-01-01"), 2);
    let note = format!(
        "note: the history in `{}` is as it was before this run",
        history.display()
    );
    // Exit 2: an earlier night without `--recompute-later`; exit 3: a night without messages.
    run_command(&logs, &history)
        .args(["--date", "2024-01-01"])
        .assert()
        .code(convbill::exit::USAGE)
        .stderr(predicate::str::contains(note.as_str()));
    run_command(&logs, &history)
        .args(["--date", "2024-01-03"])
        .assert()
        .code(convbill::exit::DATA)
        .stderr(predicate::str::contains(note.as_str()));
}

/// A card billing every account in USD at `price` a session from 2024, with no allowance.
fn a_usd_card(dir: &Path, name: &str, price: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(
        &path,
        format!("default_plan = \"p\"\n[plans.p]\ncurrency = \"USD\"\n[[plans.p.versions]]\neffective = \"2024-01-01\"\nincluded_quota = 0\nunit_price = \"{price}\"\n"),
    )
    .unwrap();
    path
}

/// An `--out` inside the input folder would have a run read its own outputs as messages:
/// refused in both modes, before anything is written.
#[test]
fn an_out_inside_the_input_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let logs = a_template_a_day(dir.path(), &["2024-01-01"]);
    let out = logs.join("billing");
    for args in [vec![], vec!["--date", "2024-01-01", "--init"]] {
        run_command(&logs, &out)
            .args(&args)
            .assert()
            .code(convbill::exit::USAGE)
            .stderr(
                predicate::str::contains("is inside `--input`").and(predicate::str::contains(
                    "hint: choose an `--out` outside the input folder",
                )),
            );
        assert!(!out.exists());
        assert!(hidden_entries(&logs).is_empty());
    }
    run_command(&logs, &dir.path().join("billing"))
        .args(["--date", "2024-01-01", "--init"])
        .assert()
        .success();
}

/// What a night reads and writes follows the periods still open: a period ended in every zone
/// of the card with no session of it open is closed by that night, written once to
/// `closed/period=P/` and dropped from month-to-date and from the lines carried to date. The
/// closed periods and month-to-date together bill what one whole run bills, and a recompute
/// of the whole history writes the same bytes.
#[test]
fn closed_periods_leave_month_to_date_and_are_written_once() {
    let dir = tempfile::tempdir().unwrap();
    let logs = dir.path().join("logs");
    generate(&logs.join("a.parquet"), 6_000, 4, 3, "2026-09-01", 70);
    let out = dir.path().join("billing");
    let run = |args: &[&str]| {
        run_command(&logs, &out)
            .args(args)
            .args(["--allow-empty", "--rates", SAMPLE_CARD])
            .assert()
            .success()
    };
    run(&["--date", "2026-09-01", "--init"]);
    // September ends last in New York, at 04:00Z on 1 October.
    let output = run(&["--date", "2026-10-05", "--catch-up"])
        .get_output()
        .clone();
    let stderr = String::from_utf8_lossy(&output.stderr);
    let closing = stderr
        .lines()
        .find(|l| l.contains("closed period 2026-09"))
        .unwrap_or_else(|| panic!("{stderr}"));
    let night: NaiveDate = closing["convbill: night ".len()..][..10].parse().unwrap();
    assert!(night >= date("2026-10-01"), "{closing}");
    // Jakarta's and New York's September began before the history's first night: partial.
    assert!(
        closing.contains("3 invoices (1 final, 2 partial) in"),
        "{closing}"
    );
    let september = out.join("closed/period=2026-09");
    assert_eq!(
        json(&september.join("manifest.json"))["closed_by_night"],
        night.to_string()
    );
    let written_once = snapshot(&september);
    // The log ends on 9 November; replies to its last messages come later.
    run(&["--date", "2026-11-12", "--catch-up"]);
    assert!(snapshot(&september) == written_once);
    assert!(out.join("closed/period=2026-10/invoices.parquet").is_file());
    let periods_in = |path: &Path| -> BTreeSet<String> {
        strings(&read_frame(path), "period").into_iter().collect()
    };
    let open = BTreeSet::from(["2026-11".to_string()]);
    assert_eq!(
        periods_in(&out.join("month-to-date/invoices.parquet")),
        open
    );
    assert_eq!(
        periods_in(&out.join("state/date=2026-11-12/lines_to_date.parquet")),
        open
    );

    let whole = dir.path().join("whole");
    run_command(&logs, &whole)
        .args(["--rates", SAMPLE_CARD])
        .assert()
        .success();
    crate::nightly::assert_same_as_whole(&out, &whole);

    let before = snapshot(&out);
    run(&["--date", "2026-09-01", "--recompute-later"]);
    assert!(
        snapshot(&out) == before,
        "a recompute writes the same bytes"
    );
}

/// Messages dated before a history's first night are outside the history: no night reads
/// them, and a file of them landing later is not late input.
#[test]
fn messages_before_the_first_night_are_outside_the_history() {
    let dir = tempfile::tempdir().unwrap();
    let logs = days_with(
        dir.path(),
        &[
            ("2024-01-01", vec![template("old", "2024-01-01 10:00")]),
            ("2024-01-02", vec![template("t1", "2024-01-02 10:00")]),
        ],
    );
    let out = dir.path().join("billing");
    night_command(&logs, &out, date("2024-01-02"))
        .assert()
        .success()
        .stderr(predicate::str::contains("warning").not());
    let night = json(&out.join("state/date=2024-01-02/night.json"));
    assert_eq!(night["rows_read"], 1);
    write_parquet(
        &logs.join("date=2024-01-01/later.parquet"),
        &mut frame(&[template("older", "2024-01-01 11:00").user("user-2")]),
    );
    night_command(&logs, &out, date("2024-01-03"))
        .assert()
        .success()
        .stderr(predicate::str::contains("warning").not());
    let manifest = json(&out.join("month-to-date/manifest.json"));
    assert_eq!(manifest["late_input"], serde_json::json!([]));
}

/// The month-to-date report after a late file is recomputed is the report of a history that had
/// the file from the start: its charts add up the recomputed nights' counts, not stale ones.
#[test]
fn a_recomputed_history_reports_what_one_with_the_late_file_from_the_start_reports() {
    let dir = tempfile::tempdir().unwrap();
    let (logs, out) = history_with_a_late_file(dir.path());
    let page = |out: &Path| std::fs::read_to_string(out.join("month-to-date/report.html")).unwrap();
    let before = page(&out);
    recompute(&logs, &out).assert().success();
    let recomputed = page(&out);
    assert_ne!(before, recomputed, "the late file changes the report");
    let fresh = dir.path().join("fresh");
    bill_every_night(&logs, &fresh);
    assert_eq!(recomputed, page(&fresh));
    // Its chart counts each session of the invoices once.
    let charted = crate::report::chart_total(&recomputed, "sessions-2026-09");
    let (_, invoiced) =
        crate::report::invoiced_sessions(&out.join("month-to-date/invoices/2026-09"));
    assert!(invoiced > 0);
    assert_eq!(charted, invoiced);
}
