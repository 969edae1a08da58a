//! `convbill reconcile`: a run's Meta units against Meta's analytics, through the binary.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use polars::prelude::*;
use rust_decimal::Decimal;
use serde_json::{json, Value};

use crate::cli::convbill;
use crate::support::*;

/// The sample card's Indonesian business: its display number, WABA and zone (UTC+7).
const BUSINESS: &str = "100000000001001";
const PHONE: &str = "6281100000001";
pub(crate) const WABA: &str = "acct-0001-indonesia";
const JAKARTA: i64 = 7 * 3600;

/// A string column's values, `""` for a missing one.
fn texts(frame: &DataFrame, name: &str) -> Vec<String> {
    let column = frame.column(name).unwrap().str().unwrap();
    column
        .iter()
        .map(|v| v.unwrap_or_default().to_string())
        .collect()
}

/// The sample month across the switch, priced with the sample card, into `dir/out`.
pub(crate) fn sample_run(dir: &Path) -> PathBuf {
    let out = dir.join("out");
    convbill()
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args([
            "run",
            "-q",
            "--input",
            "sample-data/meta/_switch-month",
            "--rates",
            "sample-data/meta/rates.toml",
            "--out",
        ])
        .arg(&out)
        .assert()
        .success();
    out
}

/// What Meta would report for the business's units, daily at Jakarta's midnight: one
/// `(analytics, data point)` per cell, summed here row by row from `meta_units.parquet`.
pub(crate) fn analytics_of(out: &Path) -> Vec<(&'static str, Value)> {
    let units = read_frame(&out.join("meta_units.parquet"));
    let text = |name: &str| texts(&units, name);
    let (business, model, country, category, pricing_type, direction, tier, cost) = (
        text("business_id"),
        text("model"),
        text("country"),
        text("category"),
        text("pricing_type"),
        text("direction"),
        text("tier"),
        text("cost"),
    );
    let started: Vec<i64> = units
        .column("started_at")
        .unwrap()
        .datetime()
        .unwrap()
        .physical()
        .into_no_null_iter()
        .map(|ns| ns.div_euclid(1_000_000_000))
        .collect();
    type Key = (&'static str, i64, String, String, String, String);
    let mut cells: BTreeMap<Key, (u64, Decimal)> = BTreeMap::new();
    for i in 0..units.height() {
        if business[i] != BUSINESS {
            continue;
        }
        let day = (started[i] + JAKARTA).div_euclid(86400) * 86400 - JAKARTA;
        let (api, last) = match model[i].as_str() {
            "CBP" => ("conversation_analytics", direction[i].to_uppercase()),
            _ => ("pricing_analytics", tier[i].clone()),
        };
        let key = (
            api,
            day,
            country[i].clone(),
            category[i].to_uppercase(),
            pricing_type[i].to_uppercase(),
            last,
        );
        let cell = cells.entry(key).or_default();
        cell.0 += 1;
        cell.1 += cost[i].parse::<Decimal>().unwrap();
    }
    cells
        .into_iter()
        .map(
            |((api, day, country, category, pricing_type, last), (n, cost))| {
                let mut point = json!({
                    "start": day,
                    "end": day + 86400,
                    "phone_number": PHONE,
                    "country": country,
                    "cost": cost.to_string().parse::<f64>().unwrap(),
                });
                let point_map = point.as_object_mut().unwrap();
                if api == "conversation_analytics" {
                    point_map.insert("conversation".into(), json!(n));
                    point_map.insert("conversation_category".into(), json!(category));
                    point_map.insert("conversation_type".into(), json!(pricing_type));
                    point_map.insert("conversation_direction".into(), json!(last));
                } else {
                    point_map.insert("volume".into(), json!(n));
                    point_map.insert("pricing_category".into(), json!(category));
                    point_map.insert("pricing_type".into(), json!(pricing_type));
                    if !last.is_empty() {
                        point_map.insert("tier".into(), json!(last));
                    }
                }
                (api, point)
            },
        )
        .collect()
}

/// [`analytics_of`], without `field` in any data point.
fn analytics_without(out: &Path, field: &str) -> Vec<(&'static str, Value)> {
    let mut points = analytics_of(out);
    for (_, point) in &mut points {
        point.as_object_mut().unwrap().remove(field);
    }
    points
}

/// Saves `points` as Meta's pages would come: per analytics, two pages of the WABA node,
/// the first with `paging.next`.
fn save(dir: &Path, points: &[(&'static str, Value)]) -> PathBuf {
    let folder = dir.join("analytics");
    let _ = std::fs::remove_dir_all(&folder);
    std::fs::create_dir_all(&folder).unwrap();
    for api in ["conversation_analytics", "pricing_analytics"] {
        let of_api: Vec<&Value> = points
            .iter()
            .filter(|(a, _)| *a == api)
            .map(|(_, p)| p)
            .collect();
        let (first, second) = of_api.split_at(of_api.len() / 2);
        for (i, page) in [first, second].into_iter().enumerate() {
            let mut edge = json!({ "data": [{ "data_points": page }] });
            if i == 0 {
                edge["paging"] = json!({ "next": format!("https://graph.facebook.com/v21.0/{WABA}/{api}?after=p{i}") });
            }
            let body = json!({ api: edge, "id": WABA });
            std::fs::write(
                folder.join(format!("{api}-{i}.json")),
                serde_json::to_string_pretty(&body).unwrap(),
            )
            .unwrap();
        }
    }
    folder
}

fn reconcile(out: &Path, analytics: &Path) -> assert_cmd::Command {
    let mut command = convbill();
    command
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args(["reconcile", "--out"])
        .arg(out)
        .arg("--meta-analytics")
        .arg(analytics);
    command
}

/// A row of the reconciliation that is not a match: `(status, analytics, country, category,
/// pricing type, Meta's count, convbill's count)`.
type Difference = (
    String,
    String,
    String,
    String,
    String,
    Option<i64>,
    Option<i64>,
);

/// The rows of the reconciliation that are not a match.
fn differences(out: &Path) -> Vec<Difference> {
    let rows = read_frame(&out.join("reconciliation/reconciliation.parquet"));
    let text = |name: &str| texts(&rows, name);
    let count = |name: &str| -> Vec<Option<i64>> {
        rows.column(name).unwrap().i64().unwrap().iter().collect()
    };
    let (status, api, country, category, pricing_type) = (
        text("status"),
        text("analytics"),
        text("country"),
        text("category"),
        text("pricing_type"),
    );
    let (meta, ours) = (count("meta_count"), count("convbill_count"));
    (0..rows.height())
        .filter(|&i| status[i] != "match")
        .map(|i| {
            (
                status[i].clone(),
                api[i].clone(),
                country[i].clone(),
                category[i].clone(),
                pricing_type[i].clone(),
                meta[i],
                ours[i],
            )
        })
        .collect()
}

#[test]
fn a_runs_own_analytics_reconcile_and_each_planted_difference_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let out = sample_run(dir.path());
    let points = analytics_of(&out);
    assert!(points.iter().any(|(a, _)| *a == "conversation_analytics"));
    assert!(points.iter().any(|(a, _)| *a == "pricing_analytics"));

    let clean = save(dir.path(), &points);
    let assert = reconcile(&out, &clean)
        .arg("--fail-on-difference")
        .assert()
        .success();
    let stderr = String::from_utf8(assert.get_output().stderr.clone()).unwrap();
    assert!(
        stderr.starts_with(&format!(
            "reconciled {n} cells: {n} match, 0 differ\n",
            n = points.len()
        )),
        "{stderr}"
    );
    assert!(differences(&out).is_empty());
    assert!(!stderr.contains("not compared"), "{stderr}");
    let csv = std::fs::read_to_string(out.join("reconciliation/reconciliation.csv")).unwrap();
    assert_eq!(csv.lines().count(), points.len() + 1);
    // The folder's manifest lists its two files, with their rows.
    let manifest = manifest_of(&out.join("reconciliation"));
    let outputs: Vec<(&str, u64)> = manifest["outputs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| (o["path"].as_str().unwrap(), o["rows"].as_u64().unwrap()))
        .collect();
    assert_eq!(
        outputs,
        [
            ("reconciliation.parquet", points.len() as u64),
            ("reconciliation.csv", points.len() as u64)
        ]
    );

    // One difference of each kind.
    let mut planted = points.clone();
    let describe = |p: &Value, field: &str| p[field].as_str().unwrap_or_default().to_lowercase();
    let pricing: Vec<usize> = (0..planted.len())
        .filter(|&i| planted[i].0 == "pricing_analytics")
        .collect();
    // A count: Meta one message more.
    let counted = pricing[0];
    planted[counted].1["volume"] = json!(planted[counted].1["volume"].as_u64().unwrap() + 1);
    // A cost: Meta a cent more, on a charged cell.
    let charged = *pricing
        .iter()
        .find(|&&i| planted[i].1["cost"].as_f64().unwrap() > 0.0 && i != counted)
        .unwrap();
    planted[charged].1["cost"] = json!(planted[charged].1["cost"].as_f64().unwrap() + 0.01);
    // A cell Meta does not have, and one convbill does not.
    // (A day in the middle: the first and last days bound the buckets compared.)
    let dropped = planted.remove(pricing[pricing.len() / 2]);
    let mut extra = planted[counted].1.clone();
    extra["country"] = json!("ZZ");
    planted.push(("pricing_analytics", extra));
    let with_differences = save(dir.path(), &planted);
    let assert = reconcile(&out, &with_differences)
        .arg("--fail-on-difference")
        .assert()
        .code(5);
    let stderr = String::from_utf8(assert.get_output().stderr.clone()).unwrap();
    assert!(
        stderr.contains(
            ", 4 differ (1 count_differs, 1 cost_differs, 1 only_in_meta, 1 only_in_convbill)"
        ),
        "{stderr}"
    );
    assert!(stderr.contains("largest differences:"), "{stderr}");
    let found = differences(&out);
    let kinds: Vec<&str> = found.iter().map(|d| d.0.as_str()).collect();
    let mut sorted_kinds = kinds.clone();
    sorted_kinds.sort();
    assert_eq!(
        sorted_kinds,
        [
            "cost_differs",
            "count_differs",
            "only_in_convbill",
            "only_in_meta"
        ]
    );
    let of = |kind: &str| found.iter().find(|d| d.0 == kind).unwrap().clone();
    let counted_point = &planted[counted].1;
    assert_eq!(
        of("count_differs").3,
        describe(counted_point, "pricing_category")
    );
    let volume = counted_point["volume"].as_i64().unwrap();
    assert_eq!(
        (of("count_differs").5, of("count_differs").6),
        (Some(volume), Some(volume - 1))
    );
    assert_eq!(of("only_in_meta").2, "ZZ");
    assert_eq!(
        (of("only_in_meta").5, of("only_in_meta").6),
        (Some(volume), None)
    );
    assert_eq!(
        of("only_in_convbill").2,
        describe(&dropped.1, "country").to_uppercase()
    );
    // Without `--fail-on-difference`, differences are a result.
    reconcile(&out, &with_differences).assert().success();
    // A tolerance of one unit and two cents takes all but the cells one side lacks.
    reconcile(&out, &with_differences)
        .args(["--tolerance", "1", "--fail-on-difference"])
        .assert()
        .code(5)
        .stderr(predicates::str::contains(
            "2 differ (1 only_in_meta, 1 only_in_convbill)",
        ));
}

#[test]
fn analytics_without_cost_reconcile_counts_only_and_say_so() {
    let dir = tempfile::tempdir().unwrap();
    let out = sample_run(dir.path());
    let points = analytics_without(&out, "cost");
    let folder = save(dir.path(), &points);
    reconcile(&out, &folder)
        .arg("--fail-on-difference")
        .assert()
        .success()
        .stderr(predicates::str::contains("0 differ"))
        .stderr(predicates::str::contains(
            "costs not compared: Meta's analytics give no cost",
        ));
    let rows = read_frame(&out.join("reconciliation/reconciliation.parquet"));
    assert_eq!(
        rows.column("meta_cost").unwrap().null_count(),
        rows.height()
    );
}

#[test]
fn analytics_that_cannot_be_reconciled_are_refused_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let out = sample_run(dir.path());
    let bad = dir.path().join("bad");
    std::fs::create_dir(&bad).unwrap();
    let refused = |name: &str, body: &str, code: i32, says: &str| {
        let file = bad.join(name);
        std::fs::write(&file, body).unwrap();
        reconcile(&out, &file)
            .assert()
            .code(code)
            .stderr(predicates::str::contains(format!(
                "error: Meta analytics `{}`",
                file.display()
            )))
            .stderr(predicates::str::contains(says.to_string()));
    };
    refused("truncated.json", "{\"data\": [", 3, "is not JSON");
    refused(
        "expired.json",
        &std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("tests/fixtures/meta-analytics/error-expired-token.json"),
        )
        .unwrap(),
        3,
        "is an error response from Meta, not analytics: Error validating access token",
    );
    // A year before the run.
    let mut points = analytics_of(&out);
    for (_, point) in &mut points {
        for bound in ["start", "end"] {
            point[bound] = json!(point[bound].as_i64().unwrap() - 365 * 86400);
        }
    }
    let earlier = save(&dir.path().join("earlier"), &points);
    reconcile(&out, &earlier)
        .assert()
        .code(3)
        .stderr(predicates::str::contains("they do not overlap"));
    // Display numbers no business of the card has.
    let mut points = analytics_of(&out);
    for (_, point) in &mut points {
        point["phone_number"] = json!("15550000000");
    }
    let stranger = save(&dir.path().join("stranger"), &points);
    reconcile(&out, &stranger)
        .assert()
        .code(3)
        .stderr(predicates::str::contains(
            "name the display numbers `15550000000`, which no business of the card has",
        ));
    // A run without Meta units.
    let plain = dir.path().join("plain");
    crate::cli::run_quietly(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("sample-data/article-scenarios.parquet"),
        &plain,
    );
    reconcile(&plain, &earlier)
        .assert()
        .code(2)
        .stderr(predicates::str::contains("no `[meta]` section"));
}

#[test]
fn units_outside_metas_buckets_are_counted_and_the_folder_waits_for_a_run() {
    let dir = tempfile::tempdir().unwrap();
    let out = sample_run(dir.path());
    let mut points = analytics_of(&out);
    // Meta's pages start a day later: the first day's units are left out, and said to be.
    let first = points
        .iter()
        .map(|(_, p)| p["start"].as_i64().unwrap())
        .min()
        .unwrap();
    points.retain(|(_, p)| p["start"].as_i64().unwrap() != first);
    let later = save(dir.path(), &points);
    reconcile(&out, &later)
        .arg("--fail-on-difference")
        .assert()
        .success()
        .stderr(predicates::str::contains("0 differ"))
        .stderr(predicates::str::is_match(
            "not compared: [0-9]+ of convbill's units for conversation_analytics of WABA acct-0001-indonesia start outside the buckets compared",
        ).unwrap());
    // A run working on the folder holds its lock: nothing is written meanwhile.
    std::fs::remove_dir_all(out.join("reconciliation")).unwrap();
    let folder = convbill::folder::OutFolder::new(&out).unwrap();
    let held = folder.lock().unwrap();
    reconcile(&out, &later)
        .assert()
        .code(convbill::exit::BUSY)
        .stderr(predicates::str::contains(
            "another convbill run is working on this output folder",
        ));
    assert!(!out.join("reconciliation").exists());
    drop(held);
    reconcile(&out, &later).assert().success();
    assert!(out.join("reconciliation/reconciliation.csv").is_file());
}

#[test]
fn a_folder_that_is_no_run_or_a_changed_card_is_a_usage_error() {
    let dir = tempfile::tempdir().unwrap();
    let out = sample_run(dir.path());
    let analytics = save(dir.path(), &analytics_of(&out));
    let empty = dir.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    reconcile(&empty, &analytics)
        .assert()
        .code(2)
        .stderr(predicates::str::contains(
            "holds no convbill run (no manifest.json)",
        ));
    // The run's card, edited since: its manifest no longer vouches for it.
    let card_dir = dir.path().join("card");
    std::fs::create_dir(&card_dir).unwrap();
    let sample = Path::new(env!("CARGO_MANIFEST_DIR")).join("sample-data/meta");
    for file in [
        "rates.toml",
        "rates-usd-2023-06.csv",
        "rates-usd-2025-07.csv",
    ] {
        std::fs::copy(sample.join(file), card_dir.join(file)).unwrap();
    }
    let card = card_dir.join("rates.toml");
    let run_with = |card: &Path| {
        convbill()
            .args(["run", "-q", "--input"])
            .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("sample-data/meta/_switch-month"))
            .arg("--rates")
            .arg(card)
            .arg("--out")
            .arg(&out)
            .assert()
            .success();
    };
    run_with(&card);
    reconcile(&out, &analytics).assert().success();
    let text = std::fs::read_to_string(&card).unwrap();
    std::fs::write(&card, format!("{text}\n# edited\n")).unwrap();
    reconcile(&out, &analytics)
        .assert()
        .code(2)
        .stderr(predicates::str::contains(
            "has changed since the run: pass `--rates`",
        ));
    reconcile(&out, &analytics)
        .arg("--rates")
        .arg(&card)
        .assert()
        .success();
}

#[test]
fn a_nightly_history_reconciles_with_the_analytics_of_its_days() {
    let dir = tempfile::tempdir().unwrap();
    let points = analytics_of(&sample_run(dir.path()));
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let (input, card) = (
        root.join("sample-data/meta/_switch-month"),
        root.join("sample-data/meta/rates.toml"),
    );
    let nightly = dir.path().join("nightly");
    for day in ["2025-06-15", "2025-06-16", "2025-06-17"] {
        crate::nightly::night_command(&input, &nightly, crate::nightly::date(day))
            .arg("--rates")
            .arg(&card)
            .arg("-q")
            .assert()
            .success();
    }
    // The three UTC nights (2025-06-15 00:00 to 2025-06-18 00:00 UTC) hold Jakarta's June 16
    // and 17 whole (2025-06-15 17:00 to 2025-06-17 17:00 UTC), with every conversation they
    // start, ended (`meta_units/date=D/`) or still open (month-to-date).
    let (from, to) = (1750006800, 1750179600);
    let whole = points
        .iter()
        .filter(|(_, p)| from <= p["start"].as_i64().unwrap() && p["end"].as_i64().unwrap() <= to)
        .count();
    assert!(whole >= 4, "{whole}");
    let open = read_frame(&nightly.join("month-to-date/meta_open_units.parquet"));
    assert!(open.height() > 0);
    // The analytics of the whole month: the days the nights do not hold whole are not
    // compared, on either side, and said to be; they are no difference.
    reconcile(&nightly, &save(dir.path(), &points))
        .arg("--fail-on-difference")
        .assert()
        .success()
        .stderr(predicates::str::contains(format!(
            "reconciled {whole} cells: {whole} match, 0 differ"
        )))
        .stderr(predicates::str::contains(format!(
            "not compared: {} of Meta's data points for conversation_analytics of WABA {WABA} are of days the run does not cover whole (its nights, 2025-06-15 00:00 UTC to 2025-06-18 00:00 UTC)",
            points
                .iter()
                .filter(|(api, p)| *api == "conversation_analytics"
                    && !(from <= p["start"].as_i64().unwrap() && p["end"].as_i64().unwrap() <= to))
                .count()
        )))
        // Conversations of Jakarta's June 15 and 18 are in nights not held whole.
        .stderr(predicates::str::contains(
            "start outside the buckets compared",
        ));
}

#[test]
fn pages_of_a_waba_without_display_numbers_are_compared_with_that_wabas_units() {
    let dir = tempfile::tempdir().unwrap();
    let out = sample_run(dir.path());
    let points = analytics_without(&out, "phone_number");
    // The node names the WABA: only its business's units are compared, not the others'.
    let own = save(dir.path(), &points);
    reconcile(&out, &own)
        .arg("--fail-on-difference")
        .assert()
        .success()
        .stderr(predicates::str::contains(", 0 differ"));
    let csv = out.join("reconciliation/reconciliation.csv");
    let before = std::fs::read(&csv).unwrap();
    // Another WABA's pages: said to be, not reported as everything missing.
    let other = dir.path().join("other");
    std::fs::create_dir(&other).unwrap();
    for entry in std::fs::read_dir(&own).unwrap() {
        let path = entry.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap();
        std::fs::write(
            other.join(path.file_name().unwrap()),
            text.replace(WABA, "102290129340398"),
        )
        .unwrap();
    }
    reconcile(&out, &other)
        .assert()
        .code(3)
        .stderr(predicates::str::contains(
            "are of WABA `102290129340398`, and the run's conversation_analytics units are of WABA `acct-0000/default`",
        ))
        .stderr(predicates::str::contains(format!("`{WABA}`")));
    assert_eq!(
        std::fs::read(&csv).unwrap(),
        before,
        "the earlier reconciliation stays"
    );
}

/// The rows `  row N: ... (status)` of the summary's largest differences: `(N, status)`.
fn largest_rows(stderr: &str) -> Vec<(usize, String)> {
    stderr
        .lines()
        .filter_map(|line| line.strip_prefix("  row "))
        .map(|line| {
            let (number, rest) = line.split_once(':').unwrap();
            let status = rest.rsplit_once('(').unwrap().1.trim_end_matches(')');
            (number.parse().unwrap(), status.to_string())
        })
        .collect()
}

#[test]
fn a_generated_logs_analytics_reconcile_and_each_planted_difference_is_explained() {
    let dir = tempfile::tempdir().unwrap();
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let card = root.join("sample-data/meta/rates.toml");
    let log = dir.path().join("log/messages.parquet");
    let generate = |analytics: &Path, plant: bool| {
        let mut command = convbill();
        command
            // The sample month's own options (sample-data/README.md), as the README shows.
            .args(["generate", "--messages", "60000", "--seed", "2025"])
            .args(["--start", "2025-06-15", "--days", "31", "--accounts", "4"])
            .args(["--markets", "--out"])
            .arg(&log)
            .arg("--meta-analytics")
            .arg(analytics)
            .arg("--rates")
            .arg(&card);
        if plant {
            command.arg("--plant-differences");
        }
        let assert = command.assert().success();
        String::from_utf8(assert.get_output().stderr.clone()).unwrap()
    };
    let clean = dir.path().join("analytics");
    let said = generate(&clean, false);
    assert_eq!(
        std::fs::read(&log).unwrap(),
        std::fs::read(root.join("sample-data/meta/_switch-month/messages.parquet")).unwrap(),
        "the log is the bundled sample month"
    );
    assert!(
        said.contains(&format!(
            "wrote Meta's analytics of the log to {}: ",
            clean.display()
        )),
        "{said}"
    );
    // One folder per WABA: the Indonesian business's own, and each account's default WABA.
    let mut folders: Vec<String> = std::fs::read_dir(&clean)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| !name.starts_with('.'))
        .collect();
    folders.sort();
    assert!(folders.contains(&WABA.to_string()), "{folders:?}");
    assert!(
        folders.contains(&"acct-0000_default".to_string()),
        "{folders:?}"
    );
    // The same options give the same pages.
    let again = dir.path().join("again");
    generate(&again, false);
    for folder in &folders {
        for entry in std::fs::read_dir(clean.join(folder)).unwrap() {
            let path = entry.unwrap().path();
            let twin = again.join(folder).join(path.file_name().unwrap());
            assert_eq!(std::fs::read(&path).unwrap(), std::fs::read(twin).unwrap());
        }
    }

    let out = dir.path().join("out");
    convbill()
        .args(["run", "-q", "--input"])
        .arg(&log)
        .arg("--rates")
        .arg(&card)
        .arg("--out")
        .arg(&out)
        .assert()
        .success();
    let assert = reconcile(&out, &clean)
        .arg("--fail-on-difference")
        .assert()
        .success();
    let stderr = String::from_utf8(assert.get_output().stderr.clone()).unwrap();
    assert!(stderr.contains(" match, 0 differ\n"), "{stderr}");
    assert!(!stderr.contains("not compared"), "{stderr}");

    // Planted differences: each found, and each explained down to units and messages.
    let planted_dir = dir.path().join("planted");
    let said = generate(&planted_dir, true);
    let planted: Vec<&str> = said.lines().filter(|l| l.starts_with("planted ")).collect();
    assert_eq!(planted.len(), 4, "{said}");
    let assert = reconcile(&out, &planted_dir)
        .arg("--fail-on-difference")
        .assert()
        .code(5);
    let stderr = String::from_utf8(assert.get_output().stderr.clone()).unwrap();
    assert!(
        stderr.contains(
            ", 4 differ (1 count_differs, 1 cost_differs, 1 only_in_meta, 1 only_in_convbill)"
        ),
        "{stderr}"
    );
    let rows = largest_rows(&stderr);
    assert_eq!(rows.len(), 4, "{stderr}");
    let units = read_frame(&out.join("meta_units.parquet"));
    let (unit_ids, message_ids) = (texts(&units, "unit_id"), texts(&units, "message_id"));
    let csv = std::fs::read_to_string(out.join("reconciliation/reconciliation.csv")).unwrap();
    for (number, status) in rows {
        // The row number is the CSV's: the line after the header.
        let line = csv.lines().nth(number).unwrap();
        assert!(line.contains(&status), "{line}");
        let assert = reconcile(&out, &planted_dir)
            .args(["--explain", &number.to_string()])
            .assert()
            .success();
        let stdout = String::from_utf8(assert.get_output().stdout.clone()).unwrap();
        assert!(
            stdout.starts_with(&format!("row {number}: pricing_analytics WABA ")),
            "{stdout}"
        );
        assert!(stdout.contains(&format!("({status})\n")), "{stdout}");
        let unit_lines: Vec<&str> = stdout
            .lines()
            .skip_while(|l| !l.starts_with("convbill: "))
            .skip(1)
            .take_while(|l| l.starts_with("  "))
            .collect();
        let convbill_line = stdout
            .lines()
            .find(|l| l.starts_with("convbill: "))
            .unwrap();
        match status.as_str() {
            "only_in_meta" => {
                assert!(
                    convbill_line.starts_with("convbill: none, from 0 units"),
                    "{stdout}"
                );
                assert!(stdout.contains("marketing_lite"), "{stdout}");
            }
            _ => {
                // Each unit is in meta_units.parquet, with the message that opened it.
                assert!(!unit_lines.is_empty(), "{stdout}");
                let count: usize = convbill_line
                    .strip_prefix("convbill: ")
                    .unwrap()
                    .split_whitespace()
                    .next()
                    .unwrap()
                    .parse()
                    .unwrap();
                assert_eq!(unit_lines.len(), count, "{stdout}");
                for unit in &unit_lines {
                    let words: Vec<&str> = unit.split_whitespace().collect();
                    let at = unit_ids.iter().position(|u| u == words[0]).unwrap();
                    let message = words[words.iter().position(|w| *w == "message").unwrap() + 1];
                    assert_eq!(message_ids[at], message);
                }
                if status == "only_in_convbill" {
                    assert!(stdout.contains("\nMeta: none\n"), "{stdout}");
                }
                // The trail ends at the messages: `convbill explain` of the first unit's.
                let command = stdout
                    .lines()
                    .find_map(|l| l.split_once(": convbill explain ").map(|(_, c)| c))
                    .unwrap();
                let args: Vec<&str> = command.split_whitespace().collect();
                assert_eq!(
                    args[..4],
                    [
                        "--input",
                        &*log.to_string_lossy(),
                        "--rates",
                        &*card.to_string_lossy()
                    ]
                );
                let message = args[args.iter().position(|a| *a == "--message-id").unwrap() + 1];
                convbill()
                    .arg("explain")
                    .args(&args)
                    .assert()
                    .success()
                    .stdout(predicates::str::contains(message));
                // Numbers in the CSV are numbers, a negative one too.
                if status == "count_differs" {
                    assert!(line.contains(",-1,"), "{line}");
                }
            }
        }
    }
    // Money and instants are typed in the Parquet file: decimals, UTC instants.
    let rows = read_frame(&out.join("reconciliation/reconciliation.parquet"));
    for money in ["meta_cost", "convbill_cost", "cost_difference"] {
        assert!(
            matches!(
                rows.column(money).unwrap().dtype(),
                DataType::Decimal(18, 4)
            ),
            "{money}: {:?}",
            rows.column(money).unwrap().dtype()
        );
    }
    for instant in ["start", "end"] {
        assert!(matches!(
            rows.column(instant).unwrap().dtype(),
            DataType::Datetime(_, Some(_))
        ));
    }
    // The tolerance used is recorded; a negative one is refused.
    reconcile(&out, &planted_dir)
        .args(["-q", "--tolerance", "1"])
        .assert()
        .success();
    let manifest = manifest_of(&out.join("reconciliation"));
    assert_eq!(manifest["tolerance"]["absolute"], "1");
    assert_eq!(manifest["tolerance"]["relative"], "0");
    reconcile(&out, &planted_dir)
        .args(["--tolerance", "-1"])
        .assert()
        .code(2)
        .stderr(predicates::str::contains("a tolerance cannot be negative"));
    // A row that is not there.
    reconcile(&out, &planted_dir)
        .args(["--explain", "100000"])
        .assert()
        .code(2)
        .stderr(predicates::str::contains(
            "there is no row 100000 to explain",
        ));
}

#[test]
fn daily_and_monthly_pages_are_compared_each_at_their_grain_and_pages_saved_twice_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let out = sample_run(dir.path());
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let generate = |granularity: &str| {
        let analytics = dir.path().join(granularity);
        convbill()
            .args(["generate", "-q", "--messages", "60000", "--seed", "2025"])
            .args(["--start", "2025-06-15", "--days", "31", "--accounts", "4"])
            .args(["--markets", "--granularity", granularity, "--out"])
            .arg(dir.path().join("log.parquet"))
            .arg("--meta-analytics")
            .arg(&analytics)
            .arg("--rates")
            .arg(root.join("sample-data/meta/rates.toml"))
            .assert()
            .success();
        analytics
    };
    // A folder of other files is never replaced by the analytics.
    let foreign = dir.path().join("foreign");
    std::fs::create_dir(&foreign).unwrap();
    std::fs::write(foreign.join("notes.txt"), "mine").unwrap();
    convbill()
        .args(["generate", "-q", "--messages", "1000", "--out"])
        .arg(dir.path().join("small.parquet"))
        .arg("--meta-analytics")
        .arg(&foreign)
        .arg("--rates")
        .arg(root.join("sample-data/meta/rates.toml"))
        .assert()
        .code(2)
        .stderr(predicates::str::contains(
            "it holds `notes.txt`, which convbill did not write there",
        ));
    assert_eq!(
        std::fs::read_to_string(foreign.join("notes.txt")).unwrap(),
        "mine"
    );
    let (daily, monthly) = (generate("DAILY"), generate("MONTHLY"));
    reconcile(&out, &daily)
        .arg(&monthly)
        .arg("--fail-on-difference")
        .assert()
        .success()
        .stderr(predicates::str::contains(" match, 0 differ\n"));
    let rows = read_frame(&out.join("reconciliation/reconciliation.parquet"));
    let grains = texts(&rows, "granularity");
    let counts: Vec<i64> = rows
        .column("meta_count")
        .unwrap()
        .i64()
        .unwrap()
        .into_no_null_iter()
        .collect();
    let total = |grain: &str| -> i64 {
        (0..rows.height())
            .filter(|&i| grains[i] == grain)
            .map(|i| counts[i])
            .sum()
    };
    // Every unit counted once at each grain, in fewer cells by the month.
    let units = read_frame(&out.join("meta_units.parquet")).height() as i64;
    assert_eq!((total("DAILY"), total("MONTHLY")), (units, units));
    let cells = |grain: &str| grains.iter().filter(|g| *g == grain).count();
    assert!(0 < cells("MONTHLY") && cells("MONTHLY") < cells("DAILY"));
    // A history of one night against the month's analytics of every WABA: the days it does
    // not cover are no difference; five WABAs of each kind are named, the rest counted.
    let nightly = dir.path().join("nightly");
    crate::nightly::night_command(
        &root.join("sample-data/meta/_switch-month"),
        &nightly,
        crate::nightly::date("2025-06-15"),
    )
    .arg("--rates")
    .arg(root.join("sample-data/meta/rates.toml"))
    .arg("-q")
    .assert()
    .success();
    let assert = reconcile(&nightly, &daily)
        .arg("--fail-on-difference")
        .assert()
        .success();
    let stderr = String::from_utf8(assert.get_output().stderr.clone()).unwrap();
    let named = stderr
        .lines()
        .filter(|l| l.starts_with("not compared: ") && l.contains(" of WABA "))
        .count();
    assert_eq!(named, 10, "{stderr}");
    assert!(
        stderr.contains("not compared: ")
            && stderr.contains("more of Meta's data points, of 5 more WABAs' analytics, are of days the run does not cover whole"),
        "{stderr}"
    );
    // The same pages twice would count Meta's figures twice: refused, naming the files.
    reconcile(&out, &daily)
        .arg(&daily)
        .assert()
        .code(3)
        .stderr(predicates::str::contains(
            "is read twice (given twice, or also in a folder given)",
        ));
    let copy = dir.path().join("copy");
    std::fs::create_dir(&copy).unwrap();
    let page = daily.join("acct-0000_default/conversation_analytics-page-0001.json");
    std::fs::copy(&page, copy.join("saved-again.json")).unwrap();
    reconcile(&out, &daily)
        .arg(&copy)
        .assert()
        .code(3)
        .stderr(predicates::str::contains(format!(
            "`{}`, `{}` both hold the conversation_analytics data point of 2025-06-14 07:00 UTC to 2025-06-15 07:00 UTC with the same values: the same analytics saved twice",
            page.display(),
            copy.join("saved-again.json").display()
        )));
}

#[test]
fn metas_documented_shapes_are_read_through_the_binary() {
    let dir = tempfile::tempdir().unwrap();
    let out = sample_run(dir.path());
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/meta-analytics");
    // An edge page of pricing_analytics without cost: Meta's spellings of one category
    // (`AUTHENTICATION_INTERNATIONAL`, `authentication-international`), `FREE_ENTRY_POINT`,
    // `MARKETING_LITE`, tiers; its bucket is Los Angeles' 2025-07-01, like the default WABAs'.
    reconcile(&out, &fixtures.join("pricing-daily-no-cost.json"))
        .assert()
        .success()
        .stderr(predicates::str::contains("costs not compared"));
    let csv = std::fs::read_to_string(out.join("reconciliation/reconciliation.csv")).unwrap();
    let header: Vec<&str> = csv.lines().next().unwrap().split(',').collect();
    let rows: Vec<BTreeMap<&str, &str>> = csv
        .lines()
        .skip(1)
        .map(|line| header.iter().copied().zip(line.split(',')).collect())
        .collect();
    let mut metas: Vec<(&str, &str, &str, &str, &str)> = rows
        .iter()
        .filter(|r| !r["meta_count"].is_empty())
        .map(|r| {
            assert_eq!(
                (r["start"], r["end"], r["status"]),
                (
                    "2025-07-01T07:00:00Z",
                    "2025-07-02T07:00:00Z",
                    "only_in_meta"
                )
            );
            (
                r["category"],
                r["pricing_type"],
                r["tier"],
                r["meta_count"],
                r["meta_cost"],
            )
        })
        .collect();
    metas.sort();
    assert_eq!(
        metas,
        [
            (
                "authentication_international",
                "free_entry_point",
                "",
                "3",
                ""
            ),
            (
                "authentication_international",
                "regular",
                "1:250000",
                "1",
                ""
            ),
            ("marketing_lite", "free_customer_service", "", "40", ""),
            ("utility", "regular", "250001:MAX", "7", ""),
        ]
    );
    // The default WABAs' messages of that day, which name no display number, are convbill's
    // only.
    assert!(rows
        .iter()
        .filter(|r| r["meta_count"].is_empty())
        .all(|r| r["status"] == "only_in_convbill" && r["phone_number"].is_empty()));
    // The WABA node's page of conversation_analytics, from 2024: a year before the run.
    reconcile(&out, &fixtures.join("conversation-daily-page-1.json"))
        .assert()
        .code(3)
        .stderr(predicates::str::contains(
            "cover 2024-06-01 07:00 UTC to 2024-06-02 07:00 UTC, and the run's Meta units start from 2025-06-15",
        ));
}
