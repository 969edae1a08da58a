//! Meta's pricing in nightly runs: the nights of a history give the units, cost lines and
//! invoice costs of one whole run, across midnight, a month end and the 2025-07-01 switch,
//! and a rerun gives the same bytes.

use std::path::Path;

use chrono::{Days, NaiveDate};
use polars::prelude::*;
use predicates::prelude::*;

use crate::cli::{convbill, run_command, snapshot};
use crate::meta_pricing::{card, service_conversations, tpl, wa};
use crate::nightly::{date, invoice_folders, night_command, partitions, read, sorted, stacked};
use crate::support::*;

/// `convbill run --date DAY` of a history priced by `card`.
fn meta_night(input: &Path, out: &Path, day: NaiveDate, card: &Path) -> assert_cmd::Command {
    let mut command = night_command(input, out, day);
    command.arg("--rates").arg(card);
    command
}

/// Every unit of a history: those the nights wrote and those still open.
fn history_units(nightly: &Path) -> DataFrame {
    let mut units = partitions(nightly, "meta_units", &["unit_id"]);
    units
        .vstack_mut(&read(
            &nightly.join("month-to-date/meta_open_units.parquet"),
        ))
        .unwrap();
    sorted(units, &["unit_id"])
}

/// The rows of `file` in every invoice folder of a history, sorted by `by`.
fn history_table(nightly: &Path, file: &str, by: &[&str]) -> DataFrame {
    let frames = invoice_folders(nightly)
        .iter()
        .map(|dir| read(&dir.join(file)).lazy())
        .collect();
    stacked(frames, by)
}

/// The nights' Meta units, cost lines and invoice costs equal the whole run's.
fn assert_meta_same_as_whole(nightly: &Path, whole: &Path) {
    let nightly_units = history_units(nightly);
    let whole_units = sorted(read(&whole.join("meta_units.parquet")), &["unit_id"]);
    assert_eq!(nightly_units.height(), whole_units.height());
    assert!(
        nightly_units.equals_missing(&whole_units),
        "units differ:\n{nightly_units}\n{whole_units}"
    );
    // A line is its columns but the sums.
    let line_key: Vec<&str> = convbill::meta::cost::LINE_COLUMNS
        .into_iter()
        .filter(|c| !["units", "cost"].contains(c))
        .collect();
    let nightly_lines = history_table(nightly, "meta_cost_lines.parquet", &line_key);
    let whole_lines = sorted(read(&whole.join("meta_cost_lines.parquet")), &line_key);
    assert!(
        nightly_lines.equals_missing(&whole_lines),
        "cost lines differ:\n{nightly_lines}\n{whole_lines}"
    );
    let costs = |frame: DataFrame| {
        sorted(
            frame
                .select(["account_id", "period", "meta_cost", "margin"])
                .unwrap(),
            &["account_id", "period"],
        )
    };
    let by = ["account_id", "period"];
    let nightly_invoices = costs(history_table(nightly, "invoices.parquet", &by));
    let whole_invoices = costs(read(&whole.join("invoices.parquet")));
    assert!(
        nightly_invoices.equals_missing(&whole_invoices),
        "invoice costs differ:\n{nightly_invoices}\n{whole_invoices}"
    );
}

/// The values of a text column.
fn texts(frame: &DataFrame, name: &str) -> Vec<String> {
    frame
        .column(name)
        .unwrap()
        .cast(&DataType::String)
        .unwrap()
        .str()
        .unwrap()
        .iter()
        .map(|v| v.unwrap_or("-").to_string())
        .collect()
}

#[test]
fn nights_priced_by_meta_equal_a_whole_run_across_a_month_end_and_the_switch() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("log.parquet");
    // Threads from 28 June 2025 for four days: conversations before the switch (in Los
    // Angeles and, for one business, Jakarta), messages after it, clicks answered within and
    // after a day, and India's utility tiers of the sample card.
    convbill()
        .args([
            "generate",
            "--messages",
            "9000",
            "--seed",
            "21",
            "--accounts",
            "3",
        ])
        .args(["--start", "2025-06-28", "--days", "4", "--markets", "--out"])
        .arg(&input)
        .assert()
        .success();
    let card = Path::new(env!("CARGO_MANIFEST_DIR")).join("sample-data/meta/rates.toml");
    let whole = dir.path().join("whole");
    run_command(&input, &whole)
        .arg("--rates")
        .arg(&card)
        .assert()
        .success();
    let nightly = dir.path().join("nightly");
    let first = date("2025-06-28");
    // The generator's late replies reach three days past its last day.
    for d in 0..7 {
        meta_night(&input, &nightly, first + Days::new(d), &card)
            .args(["--partition-rows", "700"])
            .assert()
            .success();
    }
    crate::nightly::assert_same_as_whole(&nightly, &whole);
    assert_meta_same_as_whole(&nightly, &whole);

    // The log has what the nights must carry across midnight.
    let units = read(&whole.join("meta_units.parquet"));
    let (models, types) = (texts(&units, "model"), texts(&units, "pricing_type"));
    let (starts, ends) = (texts(&units, "started_at"), texts(&units, "ends_at"));
    assert!(models.contains(&"CBP".to_string()) && models.contains(&"PMP".to_string()));
    assert!(types.contains(&"free_entry_point".to_string()));
    let crossing = (0..units.height())
        .filter(|&i| models[i] == "CBP" && ends[i][..10] != starts[i][..10])
        .count();
    assert!(crossing > 100, "{crossing} conversations cross midnight");
    assert!(texts(&units, "tier").iter().any(|t| t == "1:25"));

    // A rerun of an earlier night, recomputing the later ones, gives the same bytes; so do
    // the nights in one piece.
    let before = snapshot(&nightly);
    meta_night(&input, &nightly, date("2025-06-30"), &card)
        .arg("--recompute-later")
        .assert()
        .success();
    assert!(before == snapshot(&nightly), "a rerun changed bytes");
    let one_piece = dir.path().join("one-piece");
    for d in 0..7 {
        meta_night(&input, &one_piece, first + Days::new(d), &card)
            .assert()
            .success();
    }
    assert!(
        before == snapshot(&one_piece),
        "nights in groups and in one piece differ"
    );
}

/// Runs `events` whole and night by night from `first` for `nights` nights, with the card of
/// `extra`; checks the two agree and returns the whole run's units.
fn whole_and_nights(dir: &Path, events: &[Ev], extra: &str, first: &str, nights: u64) -> DataFrame {
    let input = write_log(dir, events);
    let card = card(dir, extra);
    let whole = dir.join("whole");
    run_command(&input, &whole)
        .arg("--rates")
        .arg(&card)
        .assert()
        .success();
    let nightly = dir.join("nightly");
    for d in 0..nights {
        night_command(&input, &nightly, date(first) + Days::new(d))
            .arg("--rates")
            .arg(&card)
            .assert()
            .success();
    }
    assert_meta_same_as_whole(&nightly, &whole);
    sorted(
        read(&whole.join("meta_units.parquet")),
        &["started_at", "message_id"],
    )
}

#[test]
fn the_free_tier_counts_on_across_nights_and_a_free_entry_point_closes_a_conversation_carried_in() {
    let dir = tempfile::tempdir().unwrap();
    let mut events = Vec::new();
    // 600 service conversations on each of two nights: the WABA's first 1,000 of March are
    // free, the last 200 of the second night are not.
    for night in ["2024-03-02", "2024-03-03"] {
        events.extend(service_conversations(night, night, 600));
    }
    // A marketing conversation opened at 20:00 is closed the next night at 02:00 by a free
    // entry point conversation: a click at 01:00 answered at 02:00.
    events.push(tpl("mkt", "2024-03-04 20:00", "marketing"));
    events.push(wa(inbound("click", "2024-03-05 01:00").kind("ad_click")));
    events.push(wa(reply("answer", "2024-03-05 02:00")));
    // A click at 23:00 answered the next night.
    let other = "6281100000002";
    events.push(
        inbound("late-click", "2024-03-06 23:00")
            .kind("cta_click")
            .user(other),
    );
    events.push(reply("late-answer", "2024-03-07 01:00").user(other));
    let units = whole_and_nights(dir.path(), &events, "", "2024-03-02", 8);

    let ids = texts(&units, "message_id");
    let types = texts(&units, "pricing_type");
    let of = |id: &str| ids.iter().position(|i| i == id).unwrap();
    let free = types.iter().filter(|t| *t == "free_tier").count();
    assert_eq!(free, 1000);
    assert_eq!(types[of("2024-03-03-r399")], "free_tier");
    assert_eq!(types[of("2024-03-03-r400")], "regular");
    let ends = texts(&units, "ends_at");
    assert_eq!(ends[of("mkt")], "2024-03-05 02:00:00.000000000+00:00");
    assert_eq!(types[of("answer")], "free_entry_point");
    assert_eq!(types[of("late-answer")], "free_entry_point");
}

#[test]
fn volume_tiers_count_on_across_nights() {
    let dir = tempfile::tempdir().unwrap();
    let tiers = r#"[[meta.tiers]]
market = "India"
category = "utility"
effective = "2025-07-01"
tiers = [ { from = 1, to = 3, rate = "0.0020" }, { from = 4, rate = "0.0010" } ]
"#;
    let india = "919800000001";
    let mut events = Vec::new();
    for (night, n) in [("2025-07-02", 2), ("2025-07-03", 3)] {
        for i in 0..n {
            let id = format!("{night}-u{i}");
            let when = format!("{night} 1{i}:00");
            events.push(template(&id, &when).category("utility").user(india));
        }
    }
    let units = whole_and_nights(dir.path(), &events, tiers, "2025-07-02", 2);
    assert_eq!(
        texts(&units, "tier"),
        vec!["1:3", "1:3", "1:3", "4:MAX", "4:MAX"]
    );
    assert_eq!(
        texts(&units, "cost"),
        vec!["0.0020", "0.0020", "0.0020", "0.0010", "0.0010"]
    );
}

#[test]
fn a_history_priced_by_meta_is_continued_only_by_a_card_that_prices_its_past_the_same() {
    let dir = tempfile::tempdir().unwrap();
    let input = write_log(
        dir.path(),
        &[
            tpl("t1", "2025-08-04 10:00", "marketing"),
            tpl("t2", "2025-08-05 10:00", "marketing"),
        ],
    );
    let first = card(dir.path(), "");
    let out = dir.path().join("nightly");
    let run = |day: &str, card: &Path| meta_night(&input, &out, date(day), card).assert();
    run("2025-08-04", &first).success();
    let other = dir.path().join("other");
    std::fs::create_dir_all(&other).unwrap();
    let changed = card(&other, "model = \"cbp-2023\"");
    let before = snapshot(&out);
    run("2025-08-05", &changed).code(2).stderr(
        predicate::str::contains("cannot run 2025-08-05 with this rate card")
            .and(predicate::str::contains("with `[meta]`, also Meta's model")),
    );
    assert!(before == snapshot(&out));
    // A tier table in force from a day already run is a change; one from next month is not.
    let tiers = |effective: &str| {
        format!("[[meta.tiers]]\nmarket = \"India\"\ncategory = \"utility\"\neffective = \"{effective}\"\ntiers = [ {{ from = 1, rate = \"0.0010\" }} ]\n")
    };
    let in_force = dir.path().join("in-force");
    std::fs::create_dir_all(&in_force).unwrap();
    run("2025-08-05", &card(&in_force, &tiers("2025-08-01"))).code(2);
    let later = dir.path().join("later");
    std::fs::create_dir_all(&later).unwrap();
    run("2025-08-05", &card(&later, &tiers("2025-09-01"))).success();
    assert_eq!(
        partitions(&out, "meta_units", &["unit_id"]).height(),
        2,
        "both nights priced"
    );
}

#[test]
fn nights_priced_by_meta_check_categories_as_a_whole_run_does() {
    let dir = tempfile::tempdir().unwrap();
    let input = write_log(
        dir.path(),
        &[
            tpl("t1", "2025-08-04 10:00", "marketing"),
            wa(template("no-category", "2025-08-04 11:00")),
        ],
    );
    let card = card(dir.path(), "");
    let out = dir.path().join("nightly");
    meta_night(&input, &out, date("2025-08-04"), &card)
        .assert()
        .code(3)
        .stderr(
            predicate::str::contains("`category` in")
                .and(predicate::str::contains("is missing at row 1")),
        );
    meta_night(&input, &out, date("2025-08-04"), &card)
        .arg("--rejects")
        .assert()
        .success();
    let rejects = read(&out.join("rejects/date=2025-08-04/part-0.parquet"));
    assert_eq!(texts(&rejects, "message_id"), vec!["no-category"]);
    assert_eq!(texts(&rejects, "reason"), vec!["missing_category"]);
    let units = partitions(&out, "meta_units", &["unit_id"]);
    assert_eq!(texts(&units, "message_id"), vec!["t1"]);
}

#[test]
fn a_recompute_that_changes_a_closed_periods_meta_cost_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let input = write_log(
        dir.path(),
        &[
            tpl("june", "2024-06-29 10:00", "marketing"),
            tpl("july", "2024-07-02 10:00", "marketing"),
        ],
    );
    let first = card(dir.path(), "");
    let out = dir.path().join("nightly");
    let run = |day: &str, card: &Path| {
        meta_night(&input, &out, date(day), card)
            .arg("--recompute-later")
            .assert()
    };
    for day in ["2024-06-29", "2024-06-30", "2024-07-01", "2024-07-02"] {
        run(day, &first).success();
    }
    let closed = out.join("closed/period=2024-06/meta_cost_lines.csv");
    assert!(std::fs::read_to_string(&closed)
        .unwrap()
        .contains(",0.0411,USD"));
    // Indonesia's marketing rate of the June 2023 card, changed: the history is recomputed
    // from its first night and June closes again at another cost.
    let other = dir.path().join("other");
    std::fs::create_dir_all(&other).unwrap();
    let changed = card(&other, "");
    let csv = other.join("meta/rates-usd-2023-06.csv");
    let text = std::fs::read_to_string(&csv).unwrap();
    std::fs::write(
        &csv,
        text.replace("Indonesia,$US,0.0411", "Indonesia,$US,0.0511"),
    )
    .unwrap();
    run("2024-06-29", &changed)
        .success()
        .stderr(predicate::str::contains(
        "warning: Meta's cost of closed period 2024-06 changed: 0.0411 USD before, 0.0511 USD now",
    ));
    assert!(std::fs::read_to_string(&closed)
        .unwrap()
        .contains(",0.0511,USD"));
    // Recomputed again with the same card, nothing changed: no warning.
    run("2024-06-29", &changed)
        .success()
        .stderr(predicate::str::contains("Meta's cost of closed period").not());
}

#[test]
fn a_draft_invoice_is_not_named_for_a_negative_margin_until_its_period_has_run() {
    let dir = tempfile::tempdir().unwrap();
    // A marketing template to Germany costs 0.1365 at Meta and bills 0.05.
    let germany = "4915100000001";
    let input = write_log(
        dir.path(),
        &[
            template("t1", "2024-07-02 10:00")
                .category("marketing")
                .user(germany),
            template("t2", "2024-07-30 10:00")
                .category("marketing")
                .user(germany),
        ],
    );
    let card = card(dir.path(), "");
    let out = dir.path().join("nightly");
    let run = |day: &str| {
        meta_night(&input, &out, date(day), &card)
            .arg("--catch-up")
            .assert()
            .success()
    };
    // The first night's invoice is partial (the history starts after 1 July): named.
    run("2024-07-02").stderr(predicate::str::contains(
        "warning: 1 invoice(s) cost more at Meta than they bill: acme 2024-07",
    ));
    let fresh = dir.path().join("fresh");
    let input_august = write_log(
        &dir.path().join("august"),
        &[
            template("a1", "2024-08-01 10:00")
                .category("marketing")
                .user(germany),
            template("a2", "2024-08-02 10:00")
                .category("marketing")
                .user(germany),
        ],
    );
    // A history from 1 August: its August invoice is draft until the month has run.
    for day in ["2024-08-01", "2024-08-02"] {
        meta_night(&input_august, &fresh, date(day), &card)
            .assert()
            .success()
            .stderr(predicate::str::contains("cost more at Meta").not());
    }
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(fresh.join("month-to-date/manifest.json")).unwrap())
            .unwrap();
    assert_eq!(manifest["meta"]["negative_margins"], serde_json::json!([]));
    let invoice: serde_json::Value = serde_json::from_slice(
        &std::fs::read(fresh.join("month-to-date/invoices/2024-08/acme.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(invoice["status"], "draft");
    assert!(invoice["margin"].as_str().unwrap().starts_with('-'));
}

#[test]
fn a_period_closes_once_it_has_ended_in_every_waba_zone_too() {
    let dir = tempfile::tempdir().unwrap();
    let input = write_log(dir.path(), &[tpl("t", "2024-06-29 10:00", "marketing")]);
    // Billed in UTC; the WABA is in Los Angeles, where June ends at 07:00 UTC on 1 July.
    let card = card(dir.path(), "");
    let text = std::fs::read_to_string(&card).unwrap();
    let in_los_angeles = text.replace(
        "[meta]\ntime_zone = \"UTC\"",
        "[meta]\ntime_zone = \"America/Los_Angeles\"",
    );
    assert_ne!(text, in_los_angeles);
    std::fs::write(&card, in_los_angeles).unwrap();
    let out = dir.path().join("nightly");
    let closed = out.join("closed/period=2024-06");
    for day in ["2024-06-29", "2024-06-30"] {
        meta_night(&input, &out, date(day), &card)
            .assert()
            .success();
    }
    assert!(!closed.exists(), "June has not ended in Los Angeles");
    meta_night(&input, &out, date("2024-07-01"), &card)
        .assert()
        .success()
        .stderr(predicate::str::contains(
            "night 2024-07-01 closed period 2024-06",
        ));
    assert!(closed.join("meta_cost_lines.csv").exists());
}
