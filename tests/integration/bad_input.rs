//! Bad input stops the run with a message naming the file, column and value, exit code 3,
//! and no output folder. Accepted input variants load to the same sessions.

use std::path::Path;

use polars::prelude::*;

use crate::cli::convbill;
use crate::support::*;

pub fn good_log() -> Vec<Ev> {
    vec![
        inbound("u1", "Mon 10:00"),
        reply("r1", "Mon 10:05"),
        template("t1", "Tue 13:00"),
        inbound("u2", "Tue 13:30").on("messenger"),
    ]
}

/// Runs convbill on `input` and checks: exit 3, stderr mentions every `needle`, no outputs.
pub fn refused(dir: &Path, input: &Path, needles: &[&str]) {
    let out = dir.join("out");
    let assert = convbill()
        .arg("run")
        .arg("--input")
        .arg(input)
        .arg("--out")
        .arg(&out)
        .assert()
        .code(convbill::exit::DATA);
    let stderr = String::from_utf8_lossy(&assert.get_output().stderr).into_owned();
    for needle in needles {
        assert!(
            stderr.contains(needle),
            "stderr lacks {needle:?}:\n{stderr}"
        );
    }
    assert!(!out.exists(), "no outputs may be written");
    let leftovers = std::fs::read_dir(dir)
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .contains("convbill")
        })
        .count();
    assert_eq!(leftovers, 0, "no staging folder may be left behind");
}

fn with_frame(dir: &Path, change: impl FnOnce(DataFrame) -> DataFrame) -> std::path::PathBuf {
    let path = dir.join("log.parquet");
    write_parquet(&path, &mut change(frame(&good_log())));
    path
}

#[test]
fn a_missing_required_column_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let path = with_frame(dir.path(), |f| f.drop("user_id").unwrap());
    refused(dir.path(), &path, &["log.parquet", "`user_id`", "hint:"]);
}

#[test]
fn a_mistyped_timestamp_column_is_named_with_its_type() {
    let dir = tempfile::tempdir().unwrap();
    let path = with_frame(dir.path(), |mut f| {
        let text = f
            .column("timestamp")
            .unwrap()
            .cast(&DataType::String)
            .unwrap();
        f.with_column(text).unwrap();
        f
    });
    refused(
        dir.path(),
        &path,
        &[
            "log.parquet",
            "`timestamp`",
            "BYTE_ARRAY",
            "expected a timestamp",
        ],
    );
}

#[test]
fn a_mistyped_string_column_is_named_with_its_type() {
    let dir = tempfile::tempdir().unwrap();
    let path = with_frame(dir.path(), |mut f| {
        f.with_column(Column::new("channel".into(), [1i64, 2, 3, 4]))
            .unwrap();
        f
    });
    refused(
        dir.path(),
        &path,
        &["`channel`", "INT64", "expected a string"],
    );
}

#[test]
fn a_null_in_a_required_column_names_the_row() {
    let dir = tempfile::tempdir().unwrap();
    let path = with_frame(dir.path(), |mut f| {
        f.with_column(Column::new(
            "account_id".into(),
            [Some("acme"), Some("acme"), None, Some("acme")],
        ))
        .unwrap();
        f
    });
    refused(
        dir.path(),
        &path,
        &["log.parquet", "`account_id`", "null at row 2"],
    );
}

#[test]
fn unknown_enumerated_values_are_named_with_the_accepted_ones() {
    for (column, value, accepted) in [
        ("channel", "sms", "`whatsapp`, `messenger` or `instagram`"),
        ("direction", "both", "`inbound` or `outbound`"),
        ("kind", "sticker", "`template`"),
        ("status", "bounced", "`failed`"),
        ("channel", "WhatsApp", "`whatsapp`"),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let path = with_frame(dir.path(), |mut f| {
            let mut values: Vec<Option<String>> = f
                .column(column)
                .unwrap()
                .str()
                .unwrap()
                .iter()
                .map(|v| v.map(Into::into))
                .collect();
            values[3] = Some(value.into());
            f.with_column(Column::new(column.into(), values)).unwrap();
            f
        });
        refused(
            dir.path(),
            &path,
            &[
                &format!("`{column}`"),
                &format!("`{value}`"),
                "row 3",
                accepted,
            ],
        );
    }
}

#[test]
fn a_kind_that_does_not_fit_the_direction_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = good_log();
    log[0] = log[0].clone().kind("template");
    let path = write_log(dir.path(), &log);
    refused(
        dir.path(),
        &path,
        &["`kind`", "`template`", "row 0", "inbound"],
    );
}

#[test]
fn a_file_that_is_not_parquet_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("broken.parquet");
    std::fs::write(&path, b"message_id,account_id\nm1,acme\n").unwrap();
    refused(
        dir.path(),
        &path,
        &["broken.parquet", "not a readable Parquet file"],
    );
}

#[test]
fn a_truncated_file_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_log(dir.path(), &good_log());
    let bytes = std::fs::read(&path).unwrap();
    std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
    refused(dir.path(), &path, &["log.parquet"]);
}

#[test]
fn a_folder_without_parquet_files_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("logs");
    std::fs::create_dir(&input).unwrap();
    std::fs::write(input.join("notes.csv"), "a,b\n").unwrap();
    refused(dir.path(), &input, &["no Parquet files", "logs"]);
}

#[test]
fn a_missing_input_path_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    refused(
        dir.path(),
        &dir.path().join("nowhere"),
        &["`", "nowhere", "does not exist"],
    );
}

#[test]
fn one_bad_file_among_good_ones_stops_the_whole_run() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("logs");
    write_parquet(&input.join("day=1/a.parquet"), &mut frame(&good_log()));
    let mut bad = frame(&good_log()).drop("direction").unwrap();
    write_parquet(&input.join("day=2/b.parquet"), &mut bad);
    refused(dir.path(), &input, &["b.parquet", "`direction`"]);
}

// ---- Accepted variants ----

fn sessions_from(path: &Path) -> Vec<S> {
    let messages = convbill::load::load(path).unwrap();
    sessions_of(
        &convbill::sessions::derive(&messages.frame)
            .unwrap()
            .sessions,
    )
}

#[test]
fn every_timestamp_unit_and_zone_gives_the_same_sessions() {
    let dir = tempfile::tempdir().unwrap();
    let expected = derive(&good_log()).0;
    for (i, unit) in [
        TimeUnit::Milliseconds,
        TimeUnit::Microseconds,
        TimeUnit::Nanoseconds,
    ]
    .into_iter()
    .enumerate()
    {
        for zone in [
            None,
            Some("UTC"),
            Some("Asia/Jakarta"),
            Some("America/New_York"),
        ] {
            let path = dir.path().join(format!(
                "{i}-{}.parquet",
                zone.unwrap_or("naive").replace('/', "_")
            ));
            let mut ts = col("timestamp").cast(DataType::Datetime(unit, None));
            if let Some(zone) = zone {
                // Zoned timestamps hold the same instants; only the display zone differs.
                let zone = TimeZone::opt_try_new(Some(zone)).unwrap().unwrap();
                ts = col("timestamp")
                    .cast(DataType::Datetime(unit, Some(TimeZone::UTC)))
                    .dt()
                    .convert_time_zone(zone);
            }
            let mut f = frame(&good_log()).lazy().with_column(ts).collect().unwrap();
            write_parquet(&path, &mut f);
            assert_eq!(sessions_from(&path), expected, "{unit:?} {zone:?}");
        }
    }
}

#[test]
fn dictionary_encoded_strings_and_extra_columns_are_accepted() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("dict.parquet");
    let mut f = frame(&good_log());
    for column in ["account_id", "channel", "direction"] {
        let cat = f
            .column(column)
            .unwrap()
            .cast(&DataType::from_categories(Categories::global()))
            .unwrap();
        f.with_column(cat).unwrap();
    }
    f.with_column(Column::new("country".into(), ["ID", "ID", "US", "BR"]))
        .unwrap();
    f.with_column(Column::new(
        "category".into(),
        [None, None, Some("utility"), None::<&str>],
    ))
    .unwrap();
    write_parquet(&path, &mut f);
    assert_eq!(sessions_from(&path), derive(&good_log()).0);
}

#[test]
fn hive_folders_are_read_recursively_and_supply_missing_key_columns() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("logs");
    let log = good_log();
    let mut first = frame(&log[..2]).drop("account_id").unwrap();
    write_parquet(
        &input.join("account_id=acme/date=2024-01-01/part-0.parquet"),
        &mut first,
    );
    write_parquet(
        &input.join("account_id=acme/date=2024-01-02/part-0.parquet"),
        &mut frame(&log[2..]),
    );
    // Hidden and underscore files are not data.
    std::fs::write(input.join("_SUCCESS"), "").unwrap();
    let messages = convbill::load::load(&input).unwrap();
    assert_eq!(messages.files.len(), 2);
    assert_eq!(
        messages.files[0].path,
        "account_id=acme/date=2024-01-01/part-0.parquet"
    );
    assert_eq!(
        sessions_of(
            &convbill::sessions::derive(&messages.frame)
                .unwrap()
                .sessions
        ),
        derive(&log).0
    );
}

#[test]
fn an_empty_file_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("empty.parquet");
    std::fs::write(&path, b"").unwrap();
    refused(
        dir.path(),
        &path,
        &["empty.parquet", "not a readable Parquet file"],
    );
}

#[test]
fn an_output_folder_that_cannot_be_made_is_named_and_nothing_is_left() {
    let dir = tempfile::tempdir().unwrap();
    let log = write_log(dir.path(), &good_log());
    let blocker = dir.path().join("not-a-folder");
    std::fs::write(&blocker, b"a file where a folder should be").unwrap();
    let out = blocker.join("out");
    let assert = convbill()
        .arg("run")
        .arg("--input")
        .arg(&log)
        .arg("--out")
        .arg(&out)
        .assert()
        .code(convbill::exit::INTERNAL);
    let stderr = String::from_utf8_lossy(&assert.get_output().stderr).into_owned();
    assert!(stderr.contains("failed to write"), "{stderr}");
    assert!(stderr.contains("not-a-folder"), "{stderr}");
    assert_eq!(
        std::fs::read(&blocker).unwrap(),
        b"a file where a folder should be"
    );
}
