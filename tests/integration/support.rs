//! Test fixtures built in code from readable literals: events with a default conversation
//! key, times written as `Mon 13:00` (the week of Monday 2024-01-01) or `2024-01-31 23:00`,
//! written to Parquet at test time.

use std::path::{Path, PathBuf};

use chrono::{NaiveDate, NaiveDateTime};
use convbill::schema::DAY_NS;
use polars::prelude::*;

/// One message event, as a log row.
#[derive(Debug, Clone, PartialEq)]
pub struct Ev {
    pub id: String,
    pub account: String,
    pub channel: String,
    pub business: String,
    pub user: String,
    pub direction: String,
    pub ts: i64,
    pub kind: Option<String>,
    pub status: Option<String>,
    /// A template's category (Meta's pricing); the log has a `category` column only when some
    /// event has one.
    pub category: Option<String>,
}

/// Parses `Mon 13:00` (week of Monday 2024-01-01; `Mon2` is the Monday after) or
/// `YYYY-MM-DD HH:MM[:SS]` into UTC nanoseconds.
pub fn at(when: &str) -> i64 {
    let parsed = NaiveDateTime::parse_from_str(when, "%Y-%m-%d %H:%M:%S")
        .or_else(|_| NaiveDateTime::parse_from_str(when, "%Y-%m-%d %H:%M"));
    let time = match parsed {
        Ok(t) => t,
        Err(_) => {
            let (day, clock) = when.split_once(' ').expect("`Day HH:MM`");
            let days = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"];
            let (name, week) = match day.len() {
                3 => (day, 0),
                _ => (&day[..3], day[3..].parse::<i64>().expect("week number") - 1),
            };
            let offset = days.iter().position(|d| *d == name).expect("day name") as i64 + 7 * week;
            let date =
                NaiveDate::from_ymd_opt(2024, 1, 1).unwrap() + chrono::Duration::days(offset);
            let clock = chrono::NaiveTime::parse_from_str(clock, "%H:%M")
                .or_else(|_| chrono::NaiveTime::parse_from_str(clock, "%H:%M:%S"))
                .expect("HH:MM");
            date.and_time(clock)
        }
    };
    time.and_utc().timestamp_nanos_opt().unwrap()
}

pub const HOUR: i64 = DAY_NS / 24;

fn event(id: &str, direction: &str, when: &str, kind: Option<&str>) -> Ev {
    Ev {
        id: id.into(),
        account: "acme".into(),
        channel: "whatsapp".into(),
        business: "biz-1".into(),
        user: "user-1".into(),
        direction: direction.into(),
        ts: at(when),
        kind: kind.map(Into::into),
        status: None,
        category: None,
    }
}

/// An inbound `message` on WhatsApp, account `acme`, business `biz-1`, user `user-1`.
pub fn inbound(id: &str, when: &str) -> Ev {
    event(id, "inbound", when, None)
}

/// A free-form outbound message (kind `message`) on the default key.
pub fn reply(id: &str, when: &str) -> Ev {
    event(id, "outbound", when, Some("message"))
}

/// An outbound template on the default key.
pub fn template(id: &str, when: &str) -> Ev {
    event(id, "outbound", when, Some("template"))
}

impl Ev {
    pub fn on(mut self, channel: &str) -> Self {
        self.channel = channel.into();
        self
    }
    pub fn account(mut self, account: &str) -> Self {
        self.account = account.into();
        self
    }
    pub fn business(mut self, business: &str) -> Self {
        self.business = business.into();
        self
    }
    pub fn user(mut self, user: &str) -> Self {
        self.user = user.into();
        self
    }
    pub fn kind(mut self, kind: &str) -> Self {
        self.kind = Some(kind.into());
        self
    }
    pub fn status(mut self, status: &str) -> Self {
        self.status = Some(status.into());
        self
    }
    pub fn category(mut self, category: &str) -> Self {
        self.category = Some(category.into());
        self
    }
    pub fn at_ns(mut self, ts: i64) -> Self {
        self.ts = ts;
        self
    }
}

/// The events as a frame with the input schema (timestamps naive, milliseconds... unless the
/// events need nanoseconds).
pub fn frame(events: &[Ev]) -> DataFrame {
    let text = |name: &str, f: &dyn Fn(&Ev) -> String| {
        Column::new(name.into(), events.iter().map(f).collect::<Vec<_>>())
    };
    let optional = |name: &str, f: &dyn Fn(&Ev) -> Option<String>| {
        Column::new(name.into(), events.iter().map(f).collect::<Vec<_>>())
    };
    let ts = Column::new(
        "timestamp".into(),
        events.iter().map(|e| e.ts).collect::<Vec<_>>(),
    )
    .cast(&DataType::Datetime(TimeUnit::Nanoseconds, None))
    .unwrap();
    let mut columns = vec![
        text("message_id", &|e| e.id.clone()),
        text("account_id", &|e| e.account.clone()),
        text("channel", &|e| e.channel.clone()),
        text("business_id", &|e| e.business.clone()),
        text("user_id", &|e| e.user.clone()),
        text("direction", &|e| e.direction.clone()),
        ts,
        optional("kind", &|e| e.kind.clone()),
        optional("status", &|e| e.status.clone()),
    ];
    if events.iter().any(|e| e.category.is_some()) {
        columns.push(optional("category", &|e| e.category.clone()));
    }
    DataFrame::new(events.len(), columns).unwrap()
}

pub fn write_parquet(path: &Path, frame: &mut DataFrame) {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).unwrap();
    }
    let file = std::fs::File::create(path).unwrap();
    ParquetWriter::new(file).finish(frame).unwrap();
}

/// Writes the events as `log.parquet` in `dir`; returns its path.
pub fn write_log(dir: &Path, events: &[Ev]) -> PathBuf {
    let path = dir.join("log.parquet");
    write_parquet(&path, &mut frame(events));
    path
}

/// One session, in the terms the rules speak of.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct S {
    pub account: String,
    pub channel: String,
    pub business: String,
    pub user: String,
    pub started_at: i64,
    pub ends_at: i64,
    pub initiation: String,
    pub opened_by: String,
    pub inbound: i64,
    pub outbound: i64,
    pub billable: bool,
    pub quota: i64,
    pub period: String,
}

/// One violation: (message id, reason).
pub type V = (String, String);

/// Derives sessions and violations with the library, through a Parquet file.
pub fn derive(events: &[Ev]) -> (Vec<S>, Vec<V>) {
    let dir = tempfile::tempdir().unwrap();
    let path = write_log(dir.path(), events);
    let messages = convbill::load::load(&path).unwrap();
    let derived = convbill::sessions::derive(&messages.frame).unwrap();
    (
        sessions_of(&derived.sessions),
        violations_of(&derived.violations),
    )
}

/// The `timestamp` column's values (in its own unit), none null.
pub fn timestamps(frame: &DataFrame) -> Vec<i64> {
    frame
        .column("timestamp")
        .unwrap()
        .to_physical_repr()
        .i64()
        .unwrap()
        .into_no_null_iter()
        .collect()
}

/// A string column without nulls, as owned strings.
pub fn strings(frame: &DataFrame, name: &str) -> Vec<String> {
    frame
        .column(name)
        .unwrap()
        .str()
        .unwrap()
        .iter()
        .map(|v| v.unwrap().to_string())
        .collect()
}

fn ints(frame: &DataFrame, name: &str) -> Vec<i64> {
    let column = frame
        .column(name)
        .unwrap()
        .as_materialized_series()
        .to_physical_repr();
    column
        .cast(&DataType::Int64)
        .unwrap()
        .i64()
        .unwrap()
        .iter()
        .map(|v| v.unwrap())
        .collect()
}

/// Reads a sessions frame (the library's output) into [`S`] rows.
pub fn sessions_of(frame: &DataFrame) -> Vec<S> {
    let account = strings(frame, "account_id");
    let channel = strings(frame, "channel");
    let business = strings(frame, "business_id");
    let user = strings(frame, "user_id");
    let initiation = strings(frame, "initiation");
    let opened_by = strings(frame, "opened_by");
    let period = strings(frame, "period");
    let started = ints(frame, "started_at");
    let ends = ints(frame, "ends_at");
    let inbound = ints(frame, "inbound_messages");
    let outbound = ints(frame, "outbound_messages");
    let quota = ints(frame, "quota");
    let billable: Vec<bool> = frame
        .column("billable")
        .unwrap()
        .bool()
        .unwrap()
        .iter()
        .map(|v| v.unwrap())
        .collect();
    (0..frame.height())
        .map(|i| S {
            account: account[i].clone(),
            channel: channel[i].clone(),
            business: business[i].clone(),
            user: user[i].clone(),
            started_at: started[i],
            ends_at: ends[i],
            initiation: initiation[i].clone(),
            opened_by: opened_by[i].clone(),
            inbound: inbound[i],
            outbound: outbound[i],
            billable: billable[i],
            quota: quota[i],
            period: period[i].clone(),
        })
        .collect()
}

pub fn violations_of(frame: &DataFrame) -> Vec<V> {
    strings(frame, "message_id")
        .into_iter()
        .zip(strings(frame, "reason"))
        .collect()
}

/// Names in `dir` that start with `.`: staging, spill or previous-output folders.
pub fn hidden_entries(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with('.'))
        .collect()
}

/// A Parquet file, read whole.
/// The footer of the Parquet file at `path`, as the `parquet` crate reads it.
pub fn footer(path: &Path) -> parquet::file::metadata::ParquetMetaData {
    let file = std::fs::File::open(path).unwrap();
    parquet::file::metadata::ParquetMetaDataReader::new()
        .parse_and_finish(&file)
        .unwrap()
}

pub fn read_frame(path: &Path) -> DataFrame {
    ParquetReader::new(std::fs::File::open(path).unwrap())
        .finish()
        .unwrap()
}

/// The `manifest.json` of an output folder.
pub fn manifest_of(out: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(out.join("manifest.json")).unwrap()).unwrap()
}
