//! The bundled `sample-data/`: the Parquet twin of `article-scenarios.csv` holds the same
//! rows, its sessions are the ones `sample-data/README.md` describes, and the generated month
//! is what its documented command produces.
//!
//! `CONVBILL_BLESS=1 cargo test --release sample_data` rewrites the Parquet twin from the CSV.

use std::path::{Path, PathBuf};

use polars::prelude::*;

use crate::support::*;

fn sample(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("sample-data")
        .join(name)
}

/// The CSV as a frame with the input schema (timestamps zoned UTC, milliseconds).
fn csv_frame() -> DataFrame {
    let mut reader = csv::Reader::from_path(sample("article-scenarios.csv")).unwrap();
    let headers: Vec<String> = reader.headers().unwrap().iter().map(Into::into).collect();
    let rows: Vec<csv::StringRecord> = reader.records().map(Result::unwrap).collect();
    let columns = headers
        .iter()
        .enumerate()
        .map(|(i, name)| {
            if name == "timestamp" {
                let ms: Vec<i64> = rows
                    .iter()
                    .map(|r| {
                        chrono::DateTime::parse_from_rfc3339(&r[i])
                            .unwrap()
                            .timestamp_millis()
                    })
                    .collect();
                Column::new(name.into(), ms)
                    .cast(&DataType::Datetime(
                        TimeUnit::Milliseconds,
                        Some(TimeZone::UTC),
                    ))
                    .unwrap()
            } else {
                let values: Vec<Option<&str>> = rows
                    .iter()
                    .map(|r| Some(&r[i]).filter(|v| !v.is_empty()))
                    .collect();
                Column::new(name.into(), values)
            }
        })
        .collect();
    DataFrame::new(rows.len(), columns).unwrap()
}

#[test]
fn the_parquet_twin_holds_the_csv_rows() {
    let path = sample("article-scenarios.parquet");
    let expected = csv_frame();
    if std::env::var_os("CONVBILL_BLESS").is_some() {
        write_parquet(&path, &mut expected.clone());
    }
    let actual = ParquetReader::new(std::fs::File::open(&path).unwrap())
        .finish()
        .unwrap();
    assert!(actual.equals_missing(&expected), "{actual}\n!=\n{expected}");
}

#[test]
fn the_article_scenarios_give_the_sessions_the_readme_describes() {
    let messages = convbill::load::load(&sample("article-scenarios.parquet")).unwrap();
    assert_eq!(messages.stats.duplicates_dropped, 1);
    let derived = convbill::sessions::derive(&messages.frame).unwrap();
    let got: Vec<(String, String, String, String, i64, i64, i64)> = sessions_of(&derived.sessions)
        .into_iter()
        .map(|s| {
            let time = |ns: i64| {
                chrono::DateTime::from_timestamp_nanos(ns)
                    .format("%a %d %H:%M")
                    .to_string()
            };
            (
                s.user,
                s.initiation,
                time(s.started_at),
                time(s.ends_at),
                s.inbound,
                s.outbound,
                s.quota,
            )
        })
        .collect();
    let row = |user: &str, initiation: &str, start: &str, end: &str, inbound, outbound, quota| {
        (
            user.to_string(),
            initiation.to_string(),
            start.to_string(),
            end.to_string(),
            inbound,
            outbound,
            quota,
        )
    };
    assert_eq!(
        got,
        vec![
            row(
                "6281200000001",
                "business_initiated",
                "Mon 01 13:00",
                "Tue 02 13:00",
                2,
                3,
                1
            ),
            row(
                "6281200000001",
                "user_initiated",
                "Tue 02 14:05",
                "Wed 03 14:05",
                0,
                1,
                1
            ),
            row(
                "6281200000002",
                "business_initiated",
                "Mon 01 13:00",
                "Tue 02 13:00",
                0,
                1,
                1
            ),
            row(
                "6281200000002",
                "business_initiated",
                "Tue 02 15:00",
                "Wed 03 15:00",
                0,
                1,
                1
            ),
            row(
                "6281200000003",
                "user_initiated",
                "Thu 04 14:30",
                "Fri 05 14:30",
                1,
                2,
                1
            ),
            row(
                "1000000000000001",
                "standard",
                "Wed 03 09:00",
                "Thu 04 09:00",
                1,
                1,
                1
            ),
            row(
                "1000000000000002",
                "standard",
                "Wed 03 10:00",
                "Thu 04 10:00",
                1,
                0,
                0
            ),
        ]
    );
    assert_eq!(
        violations_of(&derived.violations),
        vec![("s3-a3".into(), "outside_service_window".into())]
    );
    assert_eq!(derived.stats.failed_outbound, 1);
}

/// The command in `sample-data/README.md` that makes the generated month.
pub const GENERATED_MONTH_ARGS: [&str; 12] = [
    "generate",
    "--messages",
    "60000",
    "--seed",
    "2026",
    "--start",
    "2026-10-01",
    "--days",
    "31",
    "--accounts",
    "6",
    "--out",
];

#[test]
fn the_generated_month_is_what_its_documented_command_makes() {
    let bundled = sample("generated/month=2026-10/messages.parquet");
    let dir = tempfile::tempdir().unwrap();
    let fresh = dir.path().join("messages.parquet");
    crate::cli::convbill()
        .args(GENERATED_MONTH_ARGS)
        .arg(&fresh)
        .assert()
        .success();
    if std::env::var_os("CONVBILL_BLESS").is_some() {
        std::fs::create_dir_all(bundled.parent().unwrap()).unwrap();
        std::fs::copy(&fresh, &bundled).unwrap();
    }
    assert!(std::fs::read(&bundled).unwrap() == std::fs::read(&fresh).unwrap());
}

#[test]
fn the_sample_rate_card_is_valid() {
    let card = convbill::rates::load(&sample("rates.toml")).unwrap();
    assert_eq!(card.default_plan, "standard");
    assert_eq!(card.terms_of("acct-0003").plan, "standard");
    assert_eq!(
        card.terms_of("acct-0000").time_zone,
        chrono_tz::Asia::Jakarta
    );
    assert_eq!(card.terms_of("acct-0000").included_quota, Some(5000));
    assert_eq!(card.terms_of("article-demo").plan, "article");
    assert_eq!(card.plans["growth"].versions.len(), 2);
    assert_eq!(card.sha256.len(), 64);
}

/// The command in `sample-data/README.md` that makes the sample month across Meta's switch.
pub const META_MONTH_ARGS: [&str; 13] = [
    "generate",
    "--messages",
    "60000",
    "--seed",
    "2025",
    "--start",
    "2025-06-15",
    "--days",
    "31",
    "--accounts",
    "4",
    "--markets",
    "--out",
];

#[test]
fn the_meta_month_is_what_its_documented_command_makes_and_meta_prices_it() {
    let bundled = sample("meta/_switch-month/messages.parquet");
    let dir = tempfile::tempdir().unwrap();
    let fresh = dir.path().join("messages.parquet");
    crate::cli::convbill()
        .args(META_MONTH_ARGS)
        .arg(&fresh)
        .assert()
        .success();
    if std::env::var_os("CONVBILL_BLESS").is_some() {
        std::fs::copy(&fresh, &bundled).unwrap();
    }
    assert!(std::fs::read(&bundled).unwrap() == std::fs::read(&fresh).unwrap());

    // The command of the card's comment: both models, every kind of unit the month can have.
    let out = dir.path().join("out-meta");
    crate::cli::convbill()
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args([
            "run",
            "--input",
            "sample-data/meta/_switch-month",
            "--rates",
            "sample-data/meta/rates.toml",
            "--out",
        ])
        .arg(&out)
        .assert()
        .success()
        .stderr(predicates::function::function(|stderr: &str| {
            // The README quotes the summary's Meta lines.
            let readme = include_str!("../../README.md");
            let quoted: Vec<&str> = readme
                .lines()
                .filter(|l| {
                    l.starts_with("    convbill: Meta (")
                        || l.starts_with("    convbill: warning: 4 invoice(s) cost more")
                })
                .map(str::trim_start)
                .collect();
            quoted.len() == 2 && quoted.iter().all(|l| stderr.lines().any(|s| s == *l))
        }));
    let units = read_frame(&out.join("meta_units.parquet"));
    let distinct = |name: &str| {
        strings(&units, name)
            .into_iter()
            .collect::<std::collections::BTreeSet<String>>()
    };
    assert_eq!(distinct("model"), ["CBP", "PMP"].map(String::from).into());
    assert_eq!(
        distinct("pricing_type"),
        ["free_customer_service", "free_entry_point", "regular"]
            .map(String::from)
            .into()
    );
    let tiers: std::collections::BTreeSet<&str> = units
        .column("tier")
        .unwrap()
        .str()
        .unwrap()
        .iter()
        .flatten()
        .collect();
    assert_eq!(tiers, ["0:MAX", "1:25", "26:MAX"].into());
    // The Jakarta business's units are on Jakarta's days.
    let (businesses, days, started) = (
        strings(&units, "business_id"),
        strings(&units, "day"),
        strings(
            &units
                .clone()
                .lazy()
                .select([col("started_at").cast(DataType::String)])
                .collect()
                .unwrap(),
            "started_at",
        ),
    );
    let jakarta = (0..units.height())
        .find(|&i| businesses[i] == "100000000001001" && started[i][11..13] >= *"17")
        .expect("a unit after 17:00 UTC");
    assert_ne!(
        days[jakarta],
        started[jakarta][..10],
        "the next day in Jakarta"
    );
}

#[test]
fn the_sample_meta_card_is_valid() {
    let card = convbill::rates::load(&sample("meta/rates.toml")).unwrap();
    let meta = card.meta.expect("[meta]");
    assert_eq!(meta.rate_cards.len(), 2);
    assert_eq!(
        meta.time_zone_of("100000000001001"),
        chrono_tz::Asia::Jakarta
    );
}
