//! `convbill run --rates FILE`: the card is checked before any data is read; sessions are
//! rated by the version in force at their start, in the account's billing zone; the allowance
//! and the money on the invoices; deterministic ids; the sample card's invoices (insta).

use std::path::{Path, PathBuf};

use polars::prelude::*;
use predicates::prelude::*;
use serde_json::Value;
use sha2::Digest;

use crate::cli::{convbill, run_command, snapshot};
use crate::support::*;

/// Allowance 2 a month from 2025; the price goes from 0.0500 to 0.0550 on 15 October 2026.
const CARD: &str = r#"
default_plan = "standard"

[plans.standard]
currency = "USD"

[[plans.standard.versions]]
effective = "2025-01-01"
included_quota = 2
unit_price = "0.0500"

[[plans.standard.versions]]
effective = "2026-10-15"
included_quota = 2
unit_price = "0.0550"

[accounts.jkt]
time_zone = "Asia/Jakarta"

[accounts.nyc]
time_zone = "America/New_York"

[accounts.flat]
unit_price = "0.05"
"#;

/// A run with the card `text` in `dir` is refused with exit 2 and `needle` in its message,
/// before the input (which does not exist) is looked at; nothing is written.
fn card_refused(dir: &Path, text: &str, needle: &str) {
    let card = write_card(dir, text);
    let out = dir.join("out");
    run_command(&dir.join("no-such-log"), &out)
        .arg("--rates")
        .arg(&card)
        .assert()
        .code(2)
        .stderr(predicate::str::contains(needle))
        .stderr(predicate::str::contains("rate card"))
        .stderr(predicate::str::contains("no-such-log").not());
    assert!(!out.exists(), "{needle}");
}

fn write_card(dir: &Path, text: &str) -> PathBuf {
    let path = dir.join("rates.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// One WhatsApp session per event: a template to a user of its own at `when` (UTC).
fn session(account: &str, n: usize, when: &str) -> Ev {
    template(&format!("{account}-{n}"), when)
        .account(account)
        .user(&format!("user-{n}"))
}

fn sessions(account: &str, times: &[&str]) -> Vec<Ev> {
    times
        .iter()
        .enumerate()
        .map(|(n, when)| session(account, n, when))
        .collect()
}

/// Runs the events with the card; returns the output folder.
fn rate(dir: &Path, events: &[Ev], card: &str) -> PathBuf {
    let input = write_log(dir, events);
    let card = write_card(dir, card);
    let out = dir.join("out");
    run_command(&input, &out)
        .arg("--rates")
        .arg(&card)
        .assert()
        .success();
    out
}

fn invoice(out: &Path, period: &str, account: &str) -> Value {
    let path = out.join(format!("invoices/{period}/{account}.json"));
    serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap()
}

/// (price_version, quota, allowance_quota, overage_quota, unit_price, amount) per line.
fn money(invoice: &Value) -> Vec<(String, i64, i64, i64, String, String)> {
    invoice["lines"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            (
                l["price_version"].as_str().unwrap().to_string(),
                l["quota"].as_i64().unwrap(),
                l["allowance_quota"].as_i64().unwrap(),
                l["overage_quota"].as_i64().unwrap(),
                l["unit_price"].as_str().unwrap().to_string(),
                l["amount"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

fn line(
    version: &str,
    quota: i64,
    allowance: i64,
    price: &str,
    amount: &str,
) -> (String, i64, i64, i64, String, String) {
    (
        version.into(),
        quota,
        allowance,
        quota - allowance,
        price.into(),
        amount.into(),
    )
}

#[test]
fn the_allowance_covers_exactly_its_quota_and_one_more_session_pays() {
    let dir = tempfile::tempdir().unwrap();
    let mut events = sessions("flat", &["2026-09-03 10:00", "2026-09-04 10:00"]);
    // October: one session more than the allowance.
    events.extend(
        sessions(
            "flat",
            &["2026-10-03 10:00", "2026-10-04 10:00", "2026-10-05 10:00"],
        )
        .into_iter()
        .map(|e| Ev {
            id: format!("oct-{}", e.id),
            user: format!("oct-{}", e.user),
            ..e
        }),
    );
    let out = rate(dir.path(), &events, CARD);

    let at = invoice(&out, "2026-09", "flat");
    assert_eq!(money(&at), vec![line("2025-01-01", 2, 2, "0.05", "0.00")]);
    assert_eq!(at["allowance"], 2);
    assert_eq!(at["totals"]["allowance_quota"], 2);
    assert_eq!(at["totals"]["overage_quota"], 0);
    assert_eq!(at["totals"]["amount"], "0.00");

    let over = invoice(&out, "2026-10", "flat");
    assert_eq!(money(&over), vec![line("2025-01-01", 3, 2, "0.05", "0.05")]);
    assert_eq!(over["totals"]["amount"], "0.05");
    assert_eq!(over["currency"], "USD");
    assert_eq!(over["plan"], "standard");
}

#[test]
fn a_price_change_mid_month_splits_the_lines_and_the_allowance_goes_first_to_the_old_price() {
    let dir = tempfile::tempdir().unwrap();
    // Jakarta is UTC+7: the new price is in force from 14 October 17:00 UTC.
    let events = sessions(
        "jkt",
        &[
            "2026-10-10 03:00",
            "2026-10-12 03:00",
            "2026-10-14 16:30", // 23:30 on the 14th in Jakarta: the old price
            "2026-10-14 17:30", // 00:30 on the 15th in Jakarta: the new price
            "2026-10-20 03:00",
        ],
    );
    let out = rate(dir.path(), &events, CARD);
    let october = invoice(&out, "2026-10", "jkt");
    assert_eq!(
        money(&october),
        vec![
            line("2025-01-01", 3, 2, "0.0500", "0.05"),
            // 2 × 0.0550 = 0.1100.
            line("2026-10-15", 2, 0, "0.0550", "0.11"),
        ]
    );
    assert_eq!(october["totals"]["quota"], 5);
    assert_eq!(october["totals"]["allowance_quota"], 2);
    assert_eq!(october["totals"]["overage_quota"], 3);
    assert_eq!(october["totals"]["amount"], "0.16");
    assert_eq!(
        october["price_versions"],
        serde_json::json!([
            {"effective": "2025-01-01", "unit_price": "0.0500"},
            {"effective": "2026-10-15", "unit_price": "0.0550"},
        ])
    );

    // Each session carries the version that rated it.
    let versions = session_texts(&out, "jkt", "price_version");
    assert_eq!(
        versions,
        [
            "2025-01-01",
            "2025-01-01",
            "2025-01-01",
            "2026-10-15",
            "2026-10-15"
        ]
    );
}

#[test]
fn periods_are_months_in_the_accounts_zone_across_a_month_end_and_a_clock_change() {
    let dir = tempfile::tempdir().unwrap();
    // A year back: the loader refuses timestamps more than a day after the run starts.
    let mut events = sessions(
        "jkt",
        &[
            "2025-10-31 16:30", // 23:30 on 31 October in Jakarta: October
            "2025-10-31 17:30", // 00:30 on 1 November in Jakarta: November
        ],
    );
    events.extend(sessions(
        "nyc",
        &[
            "2025-11-01 03:30", // 23:30 EDT on 31 October: October
            "2025-11-02 07:30", // 02:30 EST on 2 November, after the clocks went back
            "2025-12-01 04:30", // 23:30 EST on 30 November: November
        ],
    ));
    events.extend(sessions("utc", &["2025-10-31 23:30", "2025-11-01 00:30"]));
    let out = rate(dir.path(), &events, CARD);

    let quota =
        |period: &str, account: &str| invoice(&out, period, account)["totals"]["quota"].clone();
    assert_eq!(quota("2025-10", "jkt"), 1);
    assert_eq!(quota("2025-11", "jkt"), 1);
    assert_eq!(quota("2025-10", "nyc"), 1);
    assert_eq!(quota("2025-11", "nyc"), 2);
    assert!(!out.join("invoices/2025-12/nyc.json").exists());
    assert_eq!(quota("2025-10", "utc"), 1);
    assert_eq!(quota("2025-11", "utc"), 1);

    let jakarta = invoice(&out, "2025-10", "jkt");
    assert_eq!(jakarta["time_zone"], "Asia/Jakarta");
    assert_eq!(jakarta["period_start"], "2025-10-01T00:00:00+07:00");
    assert_eq!(jakarta["period_end"], "2025-11-01T00:00:00+07:00");
    // November in New York starts in summer time and ends in winter time: 30 days and 1 hour.
    let new_york = invoice(&out, "2025-11", "nyc");
    assert_eq!(new_york["period_start"], "2025-11-01T00:00:00-04:00");
    assert_eq!(new_york["period_end"], "2025-12-01T00:00:00-05:00");
    let utc = invoice(&out, "2025-10", "utc");
    assert_eq!(utc["time_zone"], "UTC");
    assert_eq!(utc["period_end"], "2025-11-01T00:00:00Z");

    // sessions.parquet says the same, session by session.
    let periods = session_texts(&out, "nyc", "period");
    assert_eq!(periods, ["2025-10", "2025-11", "2025-11"]);
}

#[test]
fn every_priced_line_traces_to_its_sessions_and_adds_up() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let sample = Path::new(env!("CARGO_MANIFEST_DIR")).join("sample-data");
    run_command(&sample, &out)
        .arg("--rates")
        .arg(sample.join("rates.toml"))
        .assert()
        .success();
    let sessions = read_frame(&out.join("sessions.parquet"));
    let lines = read_frame(&out.join("invoice_lines.parquet"));
    // Text columns, and the money columns (`DECIMAL`) as decimal text.
    let text = |name: &str, i: usize| {
        lines
            .column(name)
            .unwrap()
            .get(i)
            .unwrap()
            .str_value()
            .to_string()
    };
    let number = |name: &str, i: usize| lines.column(name).unwrap().i64().unwrap().get(i).unwrap();
    for i in 0..lines.height() {
        let mine = sessions
            .clone()
            .lazy()
            .filter(
                col("invoice_id")
                    .eq(lit(text("invoice_id", i)))
                    .and(col("channel").eq(lit(text("channel", i))))
                    .and(col("initiation").eq(lit(text("initiation", i))))
                    .and(col("price_version").eq(lit(text("price_version", i)))),
            )
            .collect()
            .unwrap();
        assert_eq!(mine.height() as i64, number("sessions", i));
        let quota: i64 = mine
            .column("quota")
            .unwrap()
            .i64()
            .unwrap()
            .sum()
            .unwrap_or(0);
        assert_eq!(quota, number("quota", i));
        let billable = mine
            .column("billable")
            .unwrap()
            .bool()
            .unwrap()
            .sum()
            .unwrap_or(0) as i64;
        assert_eq!(billable, number("billable_sessions", i));
        assert_eq!(
            number("quota", i),
            billable * number("quota_per_session", i)
        );
        assert_eq!(
            number("allowance_quota", i) + number("overage_quota", i),
            number("quota", i)
        );
        let exact: rust_decimal::Decimal = text("unit_price", i)
            .parse::<rust_decimal::Decimal>()
            .unwrap()
            * rust_decimal::Decimal::from(number("overage_quota", i));
        let amount: rust_decimal::Decimal = text("amount", i).parse().unwrap();
        assert!(
            (exact - amount).abs() <= "0.005".parse().unwrap(),
            "line {i}"
        );
    }
    // Invoices: the allowance is used up to its size, and totals are exact sums of lines; the
    // manifest sums the invoices per currency.
    let mut per_currency = std::collections::BTreeMap::<String, rust_decimal::Decimal>::new();
    for entry in walk_json(&out.join("invoices")) {
        let invoice: Value = serde_json::from_slice(&std::fs::read(&entry).unwrap()).unwrap();
        let lines = invoice["lines"].as_array().unwrap();
        let sum = |key: &str| lines.iter().map(|l| l[key].as_i64().unwrap()).sum::<i64>();
        let totals = &invoice["totals"];
        assert_eq!(totals["quota"].as_i64().unwrap(), sum("quota"));
        assert_eq!(
            totals["allowance_quota"].as_i64().unwrap(),
            sum("quota").min(invoice["allowance"].as_i64().unwrap())
        );
        let amounts: rust_decimal::Decimal = lines
            .iter()
            .map(|l| {
                l["amount"]
                    .as_str()
                    .unwrap()
                    .parse::<rust_decimal::Decimal>()
                    .unwrap()
            })
            .sum();
        assert_eq!(
            totals["amount"].as_str().unwrap(),
            amounts.to_string(),
            "{entry:?}"
        );
        *per_currency
            .entry(invoice["currency"].as_str().unwrap().to_string())
            .or_default() += amounts;
    }
    let manifest = manifest_of(&out);
    let recorded = manifest["invoices"]["amounts"].as_object().unwrap();
    assert_eq!(recorded.len(), per_currency.len());
    for (currency, amount) in per_currency {
        assert_eq!(recorded[&currency], amount.to_string(), "{currency}");
    }
}

/// A text column of one account's sessions, in order of start.
fn session_texts(out: &Path, account: &str, column: &str) -> Vec<String> {
    let sessions = read_frame(&out.join("sessions.parquet"))
        .lazy()
        .filter(col("account_id").eq(lit(account)))
        .sort(["started_at"], SortMultipleOptions::default())
        .collect()
        .unwrap();
    strings(&sessions, column)
}

fn walk_json(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = snapshot(dir).into_keys().map(|p| dir.join(p)).collect();
    files.retain(|p| p.extension().is_some_and(|e| e == "json"));
    files.sort();
    files
}

#[test]
fn reruns_give_the_same_ids_and_bytes_and_another_card_other_ids() {
    let dir = tempfile::tempdir().unwrap();
    let events = sessions("jkt", &["2026-10-10 03:00", "2026-10-20 03:00"]);
    let input = write_log(dir.path(), &events);
    let card = write_card(dir.path(), CARD);
    let run = |out: &str, card: &Path| {
        let out = dir.path().join(out);
        run_command(&input, &out)
            .arg("--rates")
            .arg(card)
            .assert()
            .success();
        out
    };
    let first = run("first", &card);
    let second = run("second", &card);
    assert_eq!(snapshot(&first), snapshot(&second));
    let id = |out: &Path| {
        invoice(out, "2026-10", "jkt")["invoice_id"]
            .as_str()
            .unwrap()
            .to_string()
    };
    assert!(id(&first).starts_with("2026-10-"));

    let manifest = manifest_of(&first);
    let sha = hex::encode(sha2::Sha256::digest(CARD.as_bytes()));
    assert_eq!(manifest["rate_card"]["sha256"], sha.as_str());
    assert_eq!(manifest["rate_card"]["source"], card.display().to_string());
    assert_eq!(
        invoice(&first, "2026-10", "jkt")["rate_card_sha256"],
        sha.as_str()
    );

    let changed = dir.path().join("changed.toml");
    std::fs::write(&changed, CARD.replace("\"0.0550\"", "\"0.0600\"")).unwrap();
    let other = run("other", &changed);
    assert_ne!(id(&first), id(&other));
    let built_in = dir.path().join("built-in");
    run_command(&input, &built_in).assert().success();
    assert_ne!(id(&first), id(&built_in));
    assert_eq!(manifest_of(&built_in)["rate_card"]["source"], "built-in");
}

#[test]
fn a_bad_card_is_refused_with_exit_2_before_any_data_is_read() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        (
            CARD.replace("default_plan = \"standard\"", "default_plan = \"gold\""),
            "unknown plan `gold`",
        ),
        (
            CARD.replace("\"America/New_York\"", "\"America/Gotham\""),
            "account `nyc` has unknown time zone `America/Gotham`",
        ),
        (
            CARD.replace("\"0.0500\"", "\"-0.05\""),
            "negative unit_price -0.05",
        ),
        (
            CARD.replace("2026-10-15", "2025-01-01"),
            "two price versions effective on 2025-01-01",
        ),
        (
            CARD.replace("unit_price = \"0.05\"", "unit_price = 0.05"),
            "expected a string",
        ),
        ("this is not toml".to_string(), "rates.toml"),
    ];
    for (text, needle) in cases {
        card_refused(dir.path(), &text, needle);
    }
    let missing = dir.path().join("missing.toml");
    run_command(&dir.path().join("no-such-log"), &dir.path().join("out"))
        .arg("--rates")
        .arg(&missing)
        .assert()
        .code(2)
        .stderr(predicate::str::contains("cannot read rate card"));
}

#[test]
fn a_session_before_the_plans_first_price_is_refused_and_nothing_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let events = sessions("nyc", &["2025-01-01 04:30"]); // 23:30 on 31 December in New York
    let input = write_log(dir.path(), &events);
    let card = write_card(dir.path(), CARD);
    let out = dir.path().join("out");
    run_command(&input, &out)
        .arg("--rates")
        .arg(&card)
        .assert()
        .code(2)
        .stderr(predicate::str::contains(
            "no price for account `nyc`: plan `standard` starts on 2025-01-01, and the account has a session on 2024-12-31 (America/New_York)",
        ));
    assert!(!out.exists());
    assert!(hidden_entries(dir.path()).is_empty());
}

/// The sample data rated by the sample card: every invoice and the lines, as reviewed
/// snapshots (`cargo insta review`, or `INSTA_UPDATE=always` to rewrite them).
#[test]
fn the_sample_card_invoices() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    // Relative paths, as the README runs it: the manifest records the card as given.
    convbill()
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args(["run", "--rates", "sample-data/rates.toml", "--out"])
        .arg(&out)
        .assert()
        .success()
        .stderr(predicate::str::contains(
            "acct-0001 2026-10: quota 3327 (1000 in allowance, 2327 over), 123.90 USD",
        ));
    insta::assert_snapshot!(
        "invoice_lines.csv",
        std::fs::read_to_string(out.join("invoice_lines.csv")).unwrap()
    );
    for path in walk_json(&out.join("invoices")) {
        let name = path
            .strip_prefix(out.join("invoices"))
            .unwrap()
            .to_string_lossy()
            .replace(['/', '\\'], "__");
        insta::assert_snapshot!(name, std::fs::read_to_string(&path).unwrap());
    }
}

/// The README's example invoice is the sample data's, under the sample card as it is now.
#[test]
fn the_readme_quotes_the_sample_invoice() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    convbill()
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args(["run", "-q", "--rates", "sample-data/rates.toml", "--out"])
        .arg(&out)
        .assert()
        .success();
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).unwrap();
    let example = invoice(&out, "2026-10", "acct-0001");
    let id = example["invoice_id"].as_str().unwrap();
    assert!(
        readme.contains(&format!("\"invoice_id\": \"{id}\"")),
        "{id}"
    );
    let sha = example["rate_card_sha256"].as_str().unwrap();
    assert!(readme.contains(&format!("\"rate_card_sha256\": \"{}…\"", &sha[..8])));
    assert!(readme.contains(&format!(
        "\"amount\": \"{}\"",
        example["totals"]["amount"].as_str().unwrap()
    )));
}

#[test]
fn card_accounts_without_an_invoice_are_named_as_a_possible_misspelling() {
    let dir = tempfile::tempdir().unwrap();
    let events = sessions("jkt", &["2026-10-10 03:00"]);
    let input = write_log(dir.path(), &events);
    // `jkt` misspelt: the account is billed by the default plan and zone.
    let card = write_card(
        dir.path(),
        &CARD.replace("[accounts.jkt]", "[accounts.jtk]"),
    );
    let out = dir.path().join("out");
    run_command(&input, &out)
        .arg("--rates")
        .arg(&card)
        .assert()
        .success()
        .stderr(predicate::str::contains(
            "the rate card names 3 account(s) with no invoice in this run (first: `flat`)",
        ));
    assert_eq!(invoice(&out, "2026-10", "jkt")["time_zone"], "UTC");
    assert_eq!(
        manifest_of(&out)["rate_card"]["accounts_without_invoices"],
        serde_json::json!(["flat", "jtk", "nyc"])
    );
    // The sample card's accounts all have invoices: no note.
    let sample_out = dir.path().join("sample");
    convbill()
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args(["run", "--rates", "sample-data/rates.toml", "--out"])
        .arg(&sample_out)
        .assert()
        .success()
        .stderr(predicate::str::contains("no invoice in this run").not());
    assert_eq!(
        manifest_of(&sample_out)["rate_card"]["accounts_without_invoices"],
        serde_json::json!([])
    );
}

#[test]
fn a_bad_meta_section_is_refused_before_any_message_is_read() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("meta")).unwrap();
    let sample =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("sample-data/meta/rates-usd-2023-06.csv");
    std::fs::copy(&sample, dir.path().join("meta/rates.csv")).unwrap();
    std::fs::write(
        dir.path().join("meta/bad.csv"),
        "Cost per conversation in USD,,,\nMarket,Currency,Marketing,Utility\nIndia,$US,0.0099,cheap\n",
    )
    .unwrap();
    let meta = |cards: &str| format!("{CARD}\n[meta]\nrate_cards = [ {cards} ]\n");
    let cases = [
        (
            meta("{ effective = \"2023-06-01\", file = \"meta/bad.csv\" }"),
            "line 3: market `India`, utility: `cheap` is neither a rate nor `n/a`",
        ),
        (
            meta("{ effective = \"2023-06-01\", file = \"meta/nope.csv\" }"),
            "[meta] rate card effective 2023-06-01: cannot read",
        ),
        (
            format!(
                "{}model = \"cbp\"\n",
                meta("{ effective = \"2023-06-01\", file = \"meta/rates.csv\" }")
            ),
            "[meta] model `cbp` is not one of",
        ),
    ];
    for (text, needle) in cases {
        card_refused(dir.path(), &text, needle);
    }
    // A good section: the run goes on, and the quota invoices are the same as without it.
    let events: Vec<Ev> = sessions("jkt", &["2026-10-20 10:00", "2026-10-21 10:00"])
        .into_iter()
        .enumerate()
        .map(|(n, e)| e.category("utility").user(&format!("62811000000{n}")))
        .collect();
    let input = write_log(dir.path(), &events);
    let with = write_card(
        dir.path(),
        &meta("{ effective = \"2023-06-01\", file = \"meta/rates.csv\" }"),
    );
    run_command(&input, &dir.path().join("with"))
        .arg("--rates")
        .arg(&with)
        .assert()
        .success();
    let without = write_card(dir.path(), CARD);
    run_command(&input, &dir.path().join("without"))
        .arg("--rates")
        .arg(&without)
        .assert()
        .success();
    assert_eq!(
        std::fs::read(dir.path().join("with/invoice_lines.csv")).unwrap(),
        std::fs::read(dir.path().join("without/invoice_lines.csv")).unwrap()
    );
}
