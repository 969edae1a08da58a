//! Nightly mode: night-by-night runs equal one whole run, reruns give the same bytes, and the
//! history is protected (missing nights, stale nights, concurrent runs, interrupted writes).

use std::path::{Path, PathBuf};

use chrono::{Days, NaiveDate};
use polars::prelude::*;
use predicates::prelude::*;

use crate::cli::{convbill, run_command, snapshot};
use crate::support::*;

pub fn read(path: &Path) -> DataFrame {
    ParquetReader::new(std::fs::File::open(path).unwrap())
        .finish()
        .unwrap()
}

/// All part files under `dir/<kind>/date=*/`, stacked, sorted by `by`.
pub fn partitions(dir: &Path, kind: &str, by: &[&str]) -> DataFrame {
    let mut frames = Vec::new();
    let mut nights: Vec<PathBuf> = std::fs::read_dir(dir.join(kind))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("date=")
        })
        .collect();
    nights.sort();
    for night in nights {
        frames.push(read(&night.join("part-0.parquet")).lazy());
    }
    stacked(frames, by)
}

/// `frames` one after another, sorted by `by`.
pub fn stacked(frames: Vec<LazyFrame>, by: &[&str]) -> DataFrame {
    sorted(
        concat(frames, UnionArgs::default())
            .unwrap()
            .collect()
            .unwrap(),
        by,
    )
}

pub fn sorted(frame: DataFrame, by: &[&str]) -> DataFrame {
    frame
        .lazy()
        .sort(by.iter().copied(), SortMultipleOptions::default())
        .collect()
        .unwrap()
}

/// A night as a schedule runs it that knows quiet days happen (`--allow-empty`), starting the
/// history (`--init`) when `out` holds none yet.
pub fn night(input: &Path, out: &Path, date: NaiveDate) -> assert_cmd::assert::Assert {
    night_command(input, out, date).assert()
}

pub fn night_command(input: &Path, out: &Path, date: NaiveDate) -> assert_cmd::Command {
    let mut command = run_command(input, out);
    command
        .arg("--date")
        .arg(date.to_string())
        .arg("--allow-empty");
    if convbill::nightly::nights_run(out)
        .unwrap_or_default()
        .is_empty()
    {
        command.arg("--init");
    }
    command
}

pub fn whole(input: &Path, out: &Path) {
    run_command(input, out).assert().success();
}

pub fn date(s: &str) -> NaiveDate {
    s.parse().unwrap()
}

/// Runs every night from `first` for `count` nights.
pub fn nights(input: &Path, out: &Path, first: NaiveDate, count: u64) {
    for d in 0..count {
        night(input, out, first + Days::new(d)).success();
    }
}

/// The folders of a history that hold invoices: each closed period's, then month-to-date.
pub fn invoice_folders(out: &Path) -> Vec<PathBuf> {
    let mut folders: Vec<PathBuf> = std::fs::read_dir(out.join("closed"))
        .map(|entries| entries.map(|e| e.unwrap().path()).collect())
        .unwrap_or_default();
    folders.sort();
    folders.push(out.join("month-to-date"));
    folders
}

/// Where a history holds the invoice of `account` for `period`: in its closed period's folder
/// once the period is closed, else in month-to-date.
pub fn invoice_path(out: &Path, period: &str, account: &str) -> PathBuf {
    let relative = format!("invoices/{period}/{account}.json");
    let closed = out.join(format!("closed/period={period}")).join(&relative);
    match closed.exists() {
        true => closed,
        false => out.join("month-to-date").join(relative),
    }
}

/// Every invoice line of a history (closed periods and month-to-date), in account and period
/// order as one run gives them.
pub fn history_lines(out: &Path) -> DataFrame {
    let frames: Vec<LazyFrame> = invoice_folders(out)
        .iter()
        .map(|dir| read(&dir.join("invoice_lines.parquet")).lazy())
        .collect();
    concat(frames, UnionArgs::default())
        .unwrap()
        .sort(
            ["account_id", "period"],
            SortMultipleOptions::default().with_maintain_order(true),
        )
        .collect()
        .unwrap()
}

/// Invoice lines without what depends on the coverage (status, coverage): a night-by-night
/// history and a whole run give the same lines, and the same statuses only where they cover
/// the same days and the history is complete.
fn lines_without_status(lines: DataFrame) -> DataFrame {
    lines.drop_many(["status", "coverage_start", "coverage_end"])
}

/// Night-by-night outputs equal the whole run's: sessions (closed partitions plus the ones
/// still open), violations, and invoice lines.
pub fn assert_same_as_whole(nightly: &Path, whole: &Path) {
    let by = ["session_id"];
    let mut closed = partitions(nightly, "sessions", &by);
    let open = read(&nightly.join("month-to-date/open_sessions.parquet"));
    closed.vstack_mut(&open).unwrap();
    let nightly_sessions = sorted(closed, &by);
    let whole_sessions = sorted(read(&whole.join("sessions.parquet")), &by);
    assert_eq!(nightly_sessions.height(), whole_sessions.height());
    assert!(
        nightly_sessions.equals_missing(&whole_sessions),
        "sessions differ"
    );

    let by = [
        "account_id",
        "channel",
        "business_id",
        "user_id",
        "timestamp",
        "message_id",
    ];
    let nightly_violations = partitions(nightly, "violations", &by);
    let whole_violations = sorted(read(&whole.join("violations.parquet")), &by);
    assert!(
        nightly_violations.equals_missing(&whole_violations),
        "violations differ"
    );

    let nightly_lines = lines_without_status(history_lines(nightly));
    let whole_lines = lines_without_status(read(&whole.join("invoice_lines.parquet")));
    assert!(
        nightly_lines.equals_missing(&whole_lines),
        "invoice lines differ:\n{nightly_lines}\n{whole_lines}"
    );
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig { cases: 6, ..Default::default() })]

    /// Generated logs starting a few days before a month end; late replies and duplicates
    /// cross midnight, and sessions cross the month end. Nights in groups of accounts (small
    /// `--partition-rows`, in memory or spilled) write the same bytes as nights in one piece,
    /// state included.
    #[test]
    fn nights_one_after_another_equal_one_whole_run(
        seed in 0..1_000_000u64,
        start_offset in 0..4u64,
        days in 2..6u64,
        messages in 2_000..8_000u64,
        partition_rows in 100..1_500u64,
        spill in proptest::bool::ANY,
    ) {
        let dir = tempfile::tempdir().unwrap();
        let input = dir.path().join("log.parquet");
        let start = date("2026-10-27") + Days::new(start_offset);
        convbill()
            .args(["generate", "--messages", &messages.to_string(), "--seed", &seed.to_string()])
            .args(["--start", &start.to_string(), "--days", &days.to_string(), "--accounts", "5", "--out"])
            .arg(&input)
            .assert()
            .success();
        whole(&input, &dir.path().join("whole"));
        // The generator's late replies reach up to three days past its last day.
        nights(&input, &dir.path().join("nightly"), start, days + 3);
        assert_same_as_whole(&dir.path().join("nightly"), &dir.path().join("whole"));

        let grouped = dir.path().join("grouped");
        let memory_rows = if spill { "0" } else { "1000000" };
        for d in 0..days + 3 {
            night_command(&input, &grouped, start + Days::new(d))
                .args(["--partition-rows", &partition_rows.to_string()])
                .args(["--memory-rows", memory_rows])
                .assert()
                .success();
        }
        let (one_piece, in_groups) = (snapshot(&dir.path().join("nightly")), snapshot(&grouped));
        proptest::prop_assert_eq!(
            one_piece.keys().collect::<Vec<_>>(),
            in_groups.keys().collect::<Vec<_>>()
        );
        for (file, bytes) in &one_piece {
            proptest::prop_assert!(&in_groups[file] == bytes, "{} differs in groups", file.display());
        }
    }
}

#[test]
fn sessions_crossing_midnight_and_the_month_end_are_exact() {
    let dir = tempfile::tempdir().unwrap();
    let events = vec![
        // A WhatsApp session opened at 23:00 on the last day of the month.
        inbound("u1", "2024-01-31 22:00"),
        reply("r1", "2024-01-31 23:00"),
        inbound("u2", "2024-02-01 08:00"),
        reply("r2", "2024-02-01 09:00"),
        // Still in the service window, after the session ended: a new session on Feb 1.
        reply("r3", "2024-02-01 23:30"),
        // A Messenger session kept open for three days by the user.
        inbound("m1", "2024-01-30 10:00").on("messenger"),
        inbound("m2", "2024-01-31 09:00").on("messenger"),
        inbound("m3", "2024-02-01 08:00").on("messenger"),
        reply("m4", "2024-02-02 07:00").on("messenger"),
        // A duplicate logged after midnight.
        template("t1", "2024-01-31 23:59:59").user("user-2"),
        template("t1", "2024-02-01 00:00:03").user("user-2"),
    ];
    let input = write_log(dir.path(), &events);
    whole(&input, &dir.path().join("whole"));
    nights(&input, &dir.path().join("nightly"), date("2024-01-30"), 5);
    assert_same_as_whole(&dir.path().join("nightly"), &dir.path().join("whole"));
    let invoice: serde_json::Value = serde_json::from_slice(
        &std::fs::read(invoice_path(&dir.path().join("nightly"), "2024-01", "acme")).unwrap(),
    )
    .unwrap();
    // The history starts on 30 January: January is billed from then on, and says so.
    assert_eq!(invoice["status"], "partial");
    assert_eq!(invoice["coverage_start"], "2024-01-30T00:00:00Z");
    assert_eq!(invoice["coverage_end"], "2024-02-01T00:00:00Z");
    assert_eq!(invoice["totals"]["quota"], 3);
}

/// A night carries a few events per open session, not all of them: the opening message, the
/// customer messages that keep the window or island open, and the counts of the rest. Nights
/// one after another still give the whole run's sessions, message counts included.
#[test]
fn open_sessions_carry_few_events_and_count_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let mut events = vec![
        // WhatsApp: a customer message at the very instant the session opens decides the
        // initiation, and many messages follow before and after midnight.
        inbound("w0", "2024-01-01 23:00"),
        reply("w1", "2024-01-01 23:00"),
    ];
    for minute in 1..40 {
        let at = |hour: u32| format!("2024-01-0{} {hour:02}:{minute:02}", 1 + (hour < 23) as u32);
        events.push(inbound(&format!("wi{minute}"), &at(23)));
        events.push(reply(&format!("wo{minute}"), &at(23)));
        events.push(reply(&format!("wn{minute}"), &at(8)));
    }
    // Messenger: an island kept open for a week by a customer writing every 20 hours, with
    // replies in between; it carries about one customer message per night, not all of them.
    let start = at("2024-01-01 06:00");
    for step in 0..9 {
        let t = start + step * 20 * HOUR;
        events.push(
            inbound(&format!("m{step}"), "2024-01-01 00:00")
                .on("messenger")
                .at_ns(t),
        );
        for k in 1..4 {
            let reply_at = t + k * HOUR;
            events.push(
                reply(&format!("r{step}-{k}"), "2024-01-01 00:00")
                    .on("messenger")
                    .at_ns(reply_at),
            );
        }
    }
    let input = write_log(dir.path(), &events);
    let (nightly, whole_out) = (dir.path().join("nightly"), dir.path().join("whole"));
    whole(&input, &whole_out);
    nights(&input, &nightly, date("2024-01-01"), 9);
    assert_same_as_whole(&nightly, &whole_out);

    let sessions = sessions_of(&read(&whole_out.join("sessions.parquet")));
    let island = sessions.iter().find(|s| s.channel == "messenger").unwrap();
    assert_eq!((island.inbound, island.outbound), (9, 27));
    for day in 1..=8 {
        let stats: serde_json::Value = serde_json::from_slice(
            &std::fs::read(nightly.join(format!("state/date=2024-01-0{day}/night.json"))).unwrap(),
        )
        .unwrap();
        let carried = stats["carried_out"].as_u64().unwrap();
        assert!(carried <= 5, "night {day} carried {carried} events");
    }
}

#[test]
fn an_invoice_is_draft_until_its_month_has_run_and_settled() {
    let dir = tempfile::tempdir().unwrap();
    let events = vec![
        template("t1", "2024-01-30 10:00"),
        // Unanswered on Jan 31: quota 0 for now, but a reply on Feb 1 will bill it.
        inbound("m1", "2024-01-31 20:00").on("messenger"),
        reply("m2", "2024-02-01 09:00").on("messenger"),
    ];
    let input = write_log(dir.path(), &events);
    let out = dir.path().join("out");
    // The history covers January from its first instant.
    nights(&input, &out, date("2024-01-01"), 29);
    let status = |out: &Path| -> (String, i64) {
        let json: serde_json::Value =
            serde_json::from_slice(&std::fs::read(invoice_path(out, "2024-01", "acme")).unwrap())
                .unwrap();
        (
            json["status"].as_str().unwrap().into(),
            json["totals"]["quota"].as_i64().unwrap(),
        )
    };
    night(&input, &out, date("2024-01-30")).success();
    assert_eq!(status(&out), ("draft".into(), 1));
    night(&input, &out, date("2024-01-31")).success();
    assert_eq!(
        status(&out),
        ("draft".into(), 1),
        "an open unanswered session may still bill"
    );
    night(&input, &out, date("2024-02-01")).success();
    assert_eq!(status(&out), ("final".into(), 2));
}

#[test]
fn the_first_night_says_it_starts_a_new_history() {
    let dir = tempfile::tempdir().unwrap();
    let input = write_log(dir.path(), &[template("t1", "Mon 13:00")]);
    let out = dir.path().join("out");
    run_command(&input, &out)
        .args(["--date", "2024-01-01", "--init"])
        .assert()
        .success()
        .stderr(predicate::str::contains(format!(
            "starting a new history in {} on 2024-01-01",
            out.display()
        )));
}

#[test]
fn a_night_whose_previous_night_has_not_run_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let input = write_log(dir.path(), &[template("t1", "Mon 13:00")]);
    let out = dir.path().join("out");
    night(&input, &out, date("2024-01-01")).success();
    let before = snapshot(&out);
    night(&input, &out, date("2024-01-04"))
        .code(convbill::exit::USAGE)
        .stderr(
            predicate::str::contains("cannot run 2024-01-04")
                .and(predicate::str::contains(
                    "night 2024-01-02 has not run (the history ends with night 2024-01-01)",
                ))
                .and(predicate::str::contains(
                    "hint: run the missing nights in order, starting with `--date 2024-01-02`, or add `--catch-up`",
                )),
        );
    assert!(snapshot(&out) == before, "a refused run changes nothing");
}

#[test]
fn rerunning_a_night_gives_the_same_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let input = write_log(
        dir.path(),
        &[
            inbound("u1", "Mon 22:00"),
            reply("r1", "Mon 23:00"),
            reply("r2", "Tue 01:00"),
        ],
    );
    let out = dir.path().join("out");
    nights(&input, &out, date("2024-01-01"), 2);
    let first = snapshot(&out);
    night(&input, &out, date("2024-01-02")).success();
    let second = snapshot(&out);
    assert_eq!(
        first.keys().collect::<Vec<_>>(),
        second.keys().collect::<Vec<_>>()
    );
    assert!(first == second, "a rerun changed bytes");
}

#[test]
fn rerunning_an_earlier_night_is_refused_unless_later_nights_are_recomputed() {
    let dir = tempfile::tempdir().unwrap();
    let mut events = vec![template("t1", "Mon 13:00"), template("t2", "Wed 13:00")];
    let input = write_log(dir.path(), &events);
    let out = dir.path().join("out");
    nights(&input, &out, date("2024-01-01"), 3);
    night(&input, &out, date("2024-01-02"))
        .code(convbill::exit::USAGE)
        .stderr(
            predicate::str::contains("would make later nights stale: 2024-01-03")
                .and(predicate::str::contains("--recompute-later")),
        );

    // Late-arriving messages for Tuesday: rerun Tuesday and everything after it.
    events.push(template("late", "Tue 15:00").user("user-9"));
    events.push(template("late-2", "Tue 16:00").account("newco"));
    let input = write_log(dir.path(), &events);
    run_command(&input, &out)
        .args(["--date", "2024-01-02", "--recompute-later"])
        .assert()
        .success()
        .stderr(
            predicate::str::contains("invoice acme 2024-01 changed: quota 2 -> 3")
                .and(predicate::str::contains(
                    "invoice newco 2024-01 changed: quota none -> 1",
                ))
                .and(predicate::str::contains(
                    "nights 2024-01-02 to 2024-01-03 (2)",
                )),
        );
    whole(&input, &dir.path().join("whole"));
    assert_same_as_whole(&out, &dir.path().join("whole"));
}

#[test]
fn a_second_run_on_the_same_folder_is_refused_while_the_first_holds_the_lock() {
    let dir = tempfile::tempdir().unwrap();
    let input = write_log(dir.path(), &[template("t1", "Mon 13:00")]);
    let out = dir.path().join("out");
    let lock_path = convbill::folder::OutFolder::new(&out).unwrap().lock_path();
    let held = std::fs::File::create(&lock_path).unwrap();
    held.try_lock().unwrap();
    night(&input, &out, date("2024-01-01"))
        .code(convbill::exit::BUSY)
        .stderr(predicate::str::contains(
            "another convbill run is working on this output folder",
        ));
    assert!(!out.exists(), "nothing was touched");
    drop(held);
    // A lock left by a run that died is no obstacle: the OS released it.
    night(&input, &out, date("2024-01-01")).success();
}

#[test]
fn a_run_that_fails_mid_write_leaves_the_previous_night_intact() {
    let dir = tempfile::tempdir().unwrap();
    let events = vec![
        inbound("u1", "Mon 22:00"),
        reply("r1", "Mon 23:00"),
        reply("r2", "Tue 10:00"),
    ];
    let input = write_log(dir.path(), &events);
    let out = dir.path().join("out");
    night(&input, &out, date("2024-01-01")).success();
    let after_monday = snapshot(&out);

    run_command(&input, &out)
        .env("CONVBILL_FAIL_AFTER_FILES", "1")
        .args(["--date", "2024-01-02"])
        .assert()
        .code(convbill::exit::INTERNAL)
        .stderr(predicate::str::contains("injected failure"));
    assert!(
        snapshot(&out) == after_monday,
        "outputs, invoices and state as after Monday"
    );
    assert_eq!(
        convbill::nightly::nights_run(&out).unwrap(),
        vec![date("2024-01-01")]
    );

    night(&input, &out, date("2024-01-02")).success();
    let clean = dir.path().join("clean");
    nights(&input, &clean, date("2024-01-01"), 2);
    assert!(
        snapshot(&out) == snapshot(&clean),
        "the next run is correct"
    );
}

#[test]
fn whole_runs_and_nightly_histories_never_replace_each_other() {
    let dir = tempfile::tempdir().unwrap();
    let input = write_log(dir.path(), &[template("t1", "Mon 13:00")]);
    let history = dir.path().join("history");
    night(&input, &history, date("2024-01-01")).success();
    let before = snapshot(&history);
    run_command(&input, &history)
        .assert()
        .code(convbill::exit::USAGE)
        .stderr(
            predicate::str::contains("holds a nightly history")
                .and(predicate::str::contains("--date")),
        );
    assert!(snapshot(&history) == before);

    let single = dir.path().join("single");
    whole(&input, &single);
    let before = snapshot(&single);
    night(&input, &single, date("2024-01-01"))
        .code(convbill::exit::USAGE)
        .stderr(predicate::str::contains("holds no nightly history"));
    assert!(snapshot(&single) == before);
}

#[test]
fn recomputing_from_an_input_that_lacks_a_later_night_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let input = write_log(
        dir.path(),
        &[template("t1", "Mon 13:00"), template("t2", "Tue 13:00")],
    );
    let out = dir.path().join("out");
    nights(&input, &out, date("2024-01-01"), 2);
    let before = snapshot(&out);
    // Only Monday's messages: recomputing Tuesday from it would drop t2.
    let monday_only = dir.path().join("monday");
    std::fs::create_dir(&monday_only).unwrap();
    let monday = write_log(&monday_only, &[template("t1", "Mon 13:00")]);
    run_command(&monday, &out)
        .args(["--date", "2024-01-01", "--recompute-later"])
        .assert()
        .code(convbill::exit::USAGE)
        .stderr(
            predicate::str::contains("lacks 1 message(s) that night 2024-01-02 read")
                .and(predicate::str::contains("`t2`")),
        );
    assert!(snapshot(&out) == before, "nothing changed");
}

/// `convbill generate` into `out`.
pub fn generate(out: &Path, messages: u64, seed: u64, accounts: u32, start: &str, days: u64) {
    convbill()
        .args(["generate", "--messages", &messages.to_string()])
        .args([
            "--seed",
            &seed.to_string(),
            "--accounts",
            &accounts.to_string(),
        ])
        .args(["--start", start, "--days", &days.to_string(), "--out"])
        .arg(out)
        .assert()
        .success();
}

#[test]
fn nights_rated_by_a_card_equal_one_whole_run_by_it() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("log.parquet");
    // The sample card bills acct-0000 in Jakarta and acct-0001 in New York, and changes the
    // growth plan's price on 15 October; the nights cross that day and the month end.
    generate(&input, 6000, 11, 4, "2026-10-13", 3);
    let card = Path::new(env!("CARGO_MANIFEST_DIR")).join("sample-data/rates.toml");
    let (whole_out, nightly_out) = (dir.path().join("whole"), dir.path().join("nightly"));
    run_command(&input, &whole_out)
        .arg("--rates")
        .arg(&card)
        .assert()
        .success();
    for d in 0..6 {
        night_command(&input, &nightly_out, date("2026-10-13") + Days::new(d))
            .args(["--rates"])
            .arg(&card)
            .assert()
            .success();
    }
    assert_same_as_whole(&nightly_out, &whole_out);
    let lines = std::fs::read_to_string(whole_out.join("invoice_lines.csv")).unwrap();
    assert!(lines.contains(",2026-10-15,") && lines.contains(",2026-01-01,"));
}

#[test]
fn a_history_is_continued_only_by_a_card_that_rates_its_past_the_same() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("log.parquet");
    generate(&input, 2000, 5, 3, "2026-10-13", 2);
    let sample = Path::new(env!("CARGO_MANIFEST_DIR")).join("sample-data/rates.toml");
    let sample_text = std::fs::read_to_string(&sample).unwrap();
    let card = |name: &str, text: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path
    };
    let out = dir.path().join("nightly");
    let run_night = |day: &str, card: Option<&Path>| {
        let mut command = night_command(&input, &out, date(day));
        if let Some(card) = card {
            command.arg("--rates").arg(card);
        }
        command.assert()
    };

    // Rated by the built-in card, the history is not continued by the sample card.
    run_night("2026-10-13", None).success();
    let before = snapshot(&out);
    run_night("2026-10-14", Some(&sample))
        .code(2)
        .stderr(predicate::str::contains(
            "cannot run 2026-10-14 with this rate card: it rates the days up to 2026-10-14 otherwise than the card night 2026-10-13 was rated by",
        ));
    assert_eq!(before, snapshot(&out));
    // Rerating the history from its first night with the new card is the way on.
    run_night("2026-10-13", Some(&sample)).success();
    run_night("2026-10-14", Some(&sample)).success();

    // A card that only adds a price version from January continues it, and changes no
    // invoice id.
    let ids = |out: &Path| -> Vec<String> {
        let mut ids: Vec<String> = snapshot(&out.join("month-to-date/invoices"))
            .into_values()
            .map(|bytes| {
                let json: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
                json["invoice_id"].as_str().unwrap().to_string()
            })
            .collect();
        ids.sort();
        ids
    };
    let ids_before = ids(&out);
    let later = card(
        "later.toml",
        &format!(
            "{sample_text}\n[[plans.growth.versions]]\neffective = \"2027-01-01\"\nincluded_quota = 1000\nunit_price = \"0.0600\"\n"
        ),
    );
    run_night("2026-10-15", Some(&later)).success();
    assert_eq!(ids_before, ids(&out));
    // A card that changes a price already in force does not.
    let repriced = card(
        "repriced.toml",
        &sample_text.replace("\"0.0550\"", "\"0.0600\""),
    );
    run_night("2026-10-16", Some(&repriced)).code(2);
    // Nor does one that moves an account to another zone.
    let moved = card(
        "moved.toml",
        &sample_text.replace("\"America/New_York\"", "\"America/Chicago\""),
    );
    run_night("2026-10-16", Some(&moved)).code(2);
    run_night("2026-10-16", Some(&later)).success();
}

#[test]
fn a_month_in_new_york_is_final_only_after_the_utc_night_its_last_hours_fall_in() {
    let dir = tempfile::tempdir().unwrap();
    let events = vec![
        template("t1", "2024-01-30 10:00").account("east"),
        template("t2", "2024-01-30 10:00").account("utc"),
    ];
    let input = write_log(dir.path(), &events);
    let card = dir.path().join("rates.toml");
    std::fs::write(
        &card,
        r#"
default_plan = "basic"
[plans.basic]
currency = "USD"
[[plans.basic.versions]]
effective = "2020-01-01"
included_quota = 0
unit_price = "0.01"
[accounts.east]
time_zone = "America/New_York"
"#,
    )
    .unwrap();
    let out = dir.path().join("out");
    let status = |account: &str| -> String {
        let json: serde_json::Value =
            serde_json::from_slice(&std::fs::read(invoice_path(&out, "2024-01", account)).unwrap())
                .unwrap();
        json["status"].as_str().unwrap().into()
    };
    // The history starts on 1 January (UTC), before January starts in New York (05:00Z).
    for day in 0..31 {
        night_command(&input, &out, date("2024-01-01") + Days::new(day))
            .arg("--rates")
            .arg(&card)
            .assert()
            .success();
    }
    // January ends at 2024-02-01T00:00Z in UTC, and at 05:00Z in New York.
    assert_eq!(status("utc"), "final");
    assert_eq!(status("east"), "draft");
    night_command(&input, &out, date("2024-02-01"))
        .arg("--rates")
        .arg(&card)
        .assert()
        .success();
    assert_eq!(status("east"), "final");
}
