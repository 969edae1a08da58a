//! Generate: options in, a realistic message log (Parquet) out, the same bytes for the same
//! options. Used for the bundled sample month, the tests at scale and the benchmarks.
//!
//! The log has what real provider logs have: accounts of very different sizes (Zipf-like: a
//! few large, many small), WhatsApp threads that users start and agents answer minutes later,
//! template broadcasts to many users at once with some replies, Messenger and Instagram
//! threads (some started by ad or call-to-action clicks, some never answered), late replies
//! that fall outside the window, about 1% failed deliveries and 0.5% duplicate log rows.
//!
//! Rows are written in time order, a day at a time, so memory stays at about one day of events.

use std::fs::File;
use std::io::BufWriter;
use std::path::Path;

use chrono::NaiveDate;
use polars::prelude::*;
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::error::{Error, Result};
use crate::schema::{self, DAY_NS};

const MINUTE: i64 = 60_000_000_000;
const HOUR: i64 = 60 * MINUTE;

/// What to generate.
#[derive(Debug, Clone)]
pub struct Options {
    /// Rows to write, duplicates included.
    pub messages: u64,
    pub seed: u64,
    /// First day (UTC).
    pub start: NaiveDate,
    pub days: u32,
    /// Number of accounts; `None` grows it with `messages`.
    pub accounts: Option<u32>,
    /// WhatsApp users from more of Meta's markets ([`MARKET_NUMBERS`]), for Meta pricing.
    pub markets: bool,
}

/// One generated row, compact until it is written.
#[derive(Debug, Clone, Copy)]
struct Event {
    ts: i64,
    serial: u64,
    account: u32,
    channel: schema::Code,
    business: u8,
    user: u32,
    direction: schema::Code,
    kind: schema::Code,
    category: u8,
    status: schema::Code,
}

/// A conversation key, by index: (account, channel, business, user).
#[derive(Debug, Clone, Copy)]
struct Key {
    account: u32,
    channel: schema::Code,
    business: u8,
    user: u32,
}

struct Account {
    weight: f64,
    channels: Vec<schema::Code>,
    users: u32,
    businesses: u8,
}

struct Generator {
    rng: ChaCha8Rng,
    accounts: Vec<Account>,
    cumulative: Vec<f64>,
    serial: u64,
    remaining: u64,
    /// `--markets`: WhatsApp threads also start from ad and Page-button clicks.
    entries: bool,
}

/// Writes the log to `path`; returns the number of rows written.
pub fn write(path: &Path, options: &Options) -> Result<u64> {
    write_by(path, options, WRITE_ROWS)
}

/// [`write`], turning `write_rows` rows into strings at a time.
fn write_by(path: &Path, options: &Options, write_rows: usize) -> Result<u64> {
    let output_error = |source: std::io::Error| Error::Output {
        path: path.to_path_buf(),
        source,
    };
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(output_error)?;
    }
    let file = File::create(path).map_err(output_error)?;
    let mut writer = ParquetWriter::new(BufWriter::new(file)).batched(&output_schema())?;
    let mut generator = Generator::new(options);
    let start = options
        .start
        .and_hms_opt(0, 0, 0)
        .expect("midnight exists")
        .and_utc()
        .timestamp_nanos_opt()
        .expect("start date within the nanosecond range");
    let days = options.days.max(1) as u64;
    let mut pending: Vec<Event> = Vec::new();
    let mut written = 0u64;
    for day in 0..days {
        let day_start = start + day as i64 * DAY_NS;
        // Spread the budget evenly: by the end of day d, (d+1)/days of the rows are planned.
        let target = options.messages * (day + 1) / days;
        while options.messages - generator.remaining < target {
            generator.thread(day_start, &mut pending);
        }
        let day_end = day_start + DAY_NS;
        let (today, later): (Vec<Event>, Vec<Event>) =
            pending.into_iter().partition(|e| e.ts < day_end);
        pending = later;
        written += write_batch(&mut writer, today, options, write_rows)?;
    }
    written += write_batch(&mut writer, pending, options, write_rows)?;
    writer.finish()?;
    Ok(written)
}

fn output_schema() -> Schema {
    let text = |name: &str| Field::new(name.into(), DataType::String);
    Schema::from_iter([
        text(schema::MESSAGE_ID),
        text(schema::ACCOUNT_ID),
        text(schema::CHANNEL),
        text(schema::BUSINESS_ID),
        text(schema::USER_ID),
        text(schema::DIRECTION),
        Field::new(
            schema::TIMESTAMP.into(),
            DataType::Datetime(TimeUnit::Microseconds, Some(TimeZone::UTC)),
        ),
        text(schema::KIND),
        text("category"),
        text(schema::STATUS),
    ])
}

const CATEGORIES: [&str; 3] = ["marketing", "utility", "authentication"];

/// Rows turned into strings and written at a time: a day of 100M messages does not need its
/// strings in memory all at once.
const WRITE_ROWS: usize = 4_000_000;

/// Writes `events` in time order, `write_rows` at a time.
fn write_batch(
    writer: &mut polars::io::parquet::write::BatchedWriter<BufWriter<File>>,
    mut events: Vec<Event>,
    options: &Options,
    write_rows: usize,
) -> Result<u64> {
    events.sort_by_key(|e| (e.ts, e.serial));
    for slice in events.chunks(write_rows) {
        write_slice(writer, slice, options)?;
    }
    Ok(events.len() as u64)
}

fn write_slice(
    writer: &mut polars::io::parquet::write::BatchedWriter<BufWriter<File>>,
    events: &[Event],
    options: &Options,
) -> Result<()> {
    let n = events.len();
    let mut message_id = Vec::with_capacity(n);
    let mut account_id = Vec::with_capacity(n);
    let mut channel = Vec::with_capacity(n);
    let mut business_id = Vec::with_capacity(n);
    let mut user_id = Vec::with_capacity(n);
    let mut direction = Vec::with_capacity(n);
    let mut timestamp = Vec::with_capacity(n);
    let mut kind = Vec::with_capacity(n);
    let mut category = Vec::with_capacity(n);
    let mut status = Vec::with_capacity(n);
    for e in events {
        message_id.push(message_id_of(e, options.seed));
        account_id.push(format!("acct-{:04}", e.account));
        channel.push(schema::CHANNELS.name_of(e.channel));
        business_id.push(business_id_of(e));
        user_id.push(user_id_of(e, options.markets));
        direction.push(schema::DIRECTIONS.name_of(e.direction));
        timestamp.push(e.ts / 1_000);
        kind.push(schema::KINDS.name_of(e.kind));
        category.push((e.kind == schema::KIND_TEMPLATE).then(|| CATEGORIES[e.category as usize]));
        status.push(schema::STATUSES.name_of(e.status));
    }
    let timestamp = Column::new(schema::TIMESTAMP.into(), timestamp).cast(&DataType::Datetime(
        TimeUnit::Microseconds,
        Some(TimeZone::UTC),
    ))?;
    let frame = DataFrame::new(
        n,
        vec![
            Column::new(schema::MESSAGE_ID.into(), message_id),
            Column::new(schema::ACCOUNT_ID.into(), account_id),
            Column::new(schema::CHANNEL.into(), channel),
            Column::new(schema::BUSINESS_ID.into(), business_id),
            Column::new(schema::USER_ID.into(), user_id),
            Column::new(schema::DIRECTION.into(), direction),
            timestamp,
            Column::new(schema::KIND.into(), kind),
            Column::new("category".into(), category),
            Column::new(schema::STATUS.into(), status),
        ],
    )?;
    writer.write_batch(&frame)?;
    Ok(())
}

/// A bijective scramble of the serial number, so ids look random but never collide.
fn message_id_of(e: &Event, seed: u64) -> String {
    let mixed = (e.serial ^ seed.rotate_left(32)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    match e.channel {
        schema::WHATSAPP => format!("wamid.{mixed:016x}"),
        schema::MESSENGER => format!("m_{mixed:016x}"),
        _ => format!("ig_{mixed:016x}"),
    }
}

fn business_id_of(e: &Event) -> String {
    let base = 100_000_000_000_000u64 + e.account as u64 * 1_000 + e.business as u64;
    match e.channel {
        schema::WHATSAPP => format!("{base}"),
        schema::MESSENGER => format!("{}", base + 200_000_000_000_000),
        _ => format!("{}", 17_000_000_000_000_000u64 + base),
    }
}

/// The start of WhatsApp numbers and how many digits follow, with `--markets`: mobile numbers
/// of Indonesia, India, Brazil, Mexico, the United States, the Dominican Republic (Rest of
/// Latin America), Iceland (Other) and Zimbabwe (Other until 2025-10-01, then Rest of Africa).
pub const MARKET_NUMBERS: [(&str, u32); 8] = [
    ("62812", 8),
    ("9198", 8),
    ("55119", 8),
    ("5255", 8),
    ("14152", 6),
    ("18092", 6),
    ("3546", 6),
    ("26377", 7),
];

fn user_id_of(e: &Event, markets: bool) -> String {
    let n = (e.account as u64) << 24 | e.user as u64;
    let digits = n.wrapping_mul(2_654_435_761) % 10_000_000_000;
    match e.channel {
        schema::WHATSAPP if markets => {
            let (start, rest) = MARKET_NUMBERS[(n % MARKET_NUMBERS.len() as u64) as usize];
            format!(
                "{start}{:0width$}",
                digits % 10u64.pow(rest),
                width = rest as usize
            )
        }
        schema::WHATSAPP => {
            const CODES: [&str; 5] = ["62", "1", "44", "91", "55"];
            format!("{}{digits:010}", CODES[(n % 5) as usize])
        }
        schema::MESSENGER => format!("{:016}", 1_000_000_000_000_000u64 + n),
        _ => format!("{:017}", 17_000_000_000_000_000u64 + n),
    }
}

impl Generator {
    fn new(options: &Options) -> Self {
        let mut rng = ChaCha8Rng::seed_from_u64(options.seed);
        let count = options
            .accounts
            .unwrap_or_else(|| (options.messages / 25_000).clamp(3, 2_000) as u32)
            .max(1);
        let weights: Vec<f64> = (0..count)
            .map(|i| 1.0 / (i as f64 + 1.0).powf(1.1))
            .collect();
        let total: f64 = weights.iter().sum();
        let mut accounts = Vec::with_capacity(count as usize);
        let mut cumulative = Vec::with_capacity(count as usize);
        let mut running = 0.0;
        for weight in weights {
            let share = weight / total;
            running += share;
            cumulative.push(running);
            let mut channels = vec![schema::WHATSAPP];
            if rng.random_bool(0.6) {
                channels.push(schema::MESSENGER);
            }
            if rng.random_bool(0.4) {
                channels.push(schema::INSTAGRAM);
            }
            // About 12 messages per user over the log: users come back, keys get several sessions.
            let users = ((share * options.messages as f64) / 12.0).ceil().max(5.0) as u32;
            accounts.push(Account {
                weight: share,
                channels,
                users: users.min(1 << 24),
                businesses: rng.random_range(1..=3),
            });
        }
        Generator {
            rng,
            accounts,
            cumulative,
            serial: 0,
            remaining: options.messages,
            entries: options.markets,
        }
    }

    fn pick_account(&mut self) -> u32 {
        let x: f64 = self.rng.random();
        let i = self.cumulative.partition_point(|c| *c < x);
        i.min(self.accounts.len() - 1) as u32
    }

    /// A time of day with more traffic in the daytime, as an offset into the day.
    fn time_of_day(&mut self) -> i64 {
        let hour = if self.rng.random_bool(0.8) {
            self.rng.random_range(8..22)
        } else {
            self.rng.random_range(0..24)
        };
        hour * HOUR + self.rng.random_range(0..HOUR)
    }

    fn status(&mut self, direction: schema::Code) -> schema::Code {
        if direction == schema::INBOUND {
            return schema::STATUS_DELIVERED;
        }
        match self.rng.random_range(0..1000) {
            0..=9 => schema::STATUS_FAILED,
            10..=49 => schema::STATUS_SENT,
            50..=399 => schema::STATUS_READ,
            _ => schema::STATUS_DELIVERED,
        }
    }

    /// Adds one event (and sometimes a duplicate log row of it) while the budget lasts.
    fn push(
        &mut self,
        out: &mut Vec<Event>,
        key: Key,
        ts: i64,
        direction: schema::Code,
        kind: schema::Code,
    ) {
        if self.remaining == 0 {
            return;
        }
        self.remaining -= 1;
        self.serial += 1;
        let event = Event {
            ts,
            serial: self.serial,
            account: key.account,
            channel: key.channel,
            business: key.business,
            user: key.user,
            direction,
            kind,
            category: self.rng.random_range(0..3),
            status: self.status(direction),
        };
        out.push(event);
        if self.remaining > 0 && self.rng.random_bool(0.005) {
            // Logged twice: at-least-once delivery, sometimes with a later log time.
            self.remaining -= 1;
            let delay = if self.rng.random_bool(0.5) {
                0
            } else {
                self.rng.random_range(1..6) * 1_000_000_000
            };
            out.push(Event {
                ts: ts + delay,
                ..event
            });
        }
    }

    /// Generates one conversation thread (or one broadcast) starting on the given day.
    fn thread(&mut self, day_start: i64, out: &mut Vec<Event>) {
        let account = self.pick_account();
        let a = &self.accounts[account as usize];
        let channel = a.channels[self.rng.random_range(0..a.channels.len())];
        let business = self.rng.random_range(0..a.businesses);
        let users = a.users;
        let large = a.weight > 0.02;
        let t0 = day_start + self.time_of_day();
        let user = self.rng.random_range(0..users);
        let key = Key {
            account,
            channel,
            business,
            user,
        };
        if channel == schema::WHATSAPP {
            if self.rng.random_bool(if large { 0.012 } else { 0.006 }) {
                self.broadcast(out, t0, key, users);
            } else {
                self.whatsapp_thread(out, t0, key);
            }
        } else {
            self.standard_thread(out, t0, key);
        }
    }

    fn exchanges(&mut self, out: &mut Vec<Event>, mut t: i64, key: Key, rounds: u32) -> i64 {
        for _ in 0..rounds {
            t += self.rng.random_range(MINUTE..20 * MINUTE);
            self.push(out, key, t, schema::INBOUND, schema::KIND_MESSAGE);
            t += self.rng.random_range(MINUTE / 2..15 * MINUTE);
            self.push(out, key, t, schema::OUTBOUND, schema::KIND_MESSAGE);
        }
        t
    }

    fn whatsapp_thread(&mut self, out: &mut Vec<Event>, t0: i64, key: Key) {
        // With `--markets`, one thread in ten starts from a click-to-WhatsApp ad or a Page
        // button (a free entry point when answered within 24 hours); a quarter of those are
        // answered by a template a day later (too late for one).
        let entry = match self.entries && self.rng.random_bool(0.1) {
            true => match self.rng.random_bool(0.5) {
                true => schema::KIND_AD_CLICK,
                false => schema::KIND_CTA_CLICK,
            },
            false => schema::KIND_MESSAGE,
        };
        self.push(out, key, t0, schema::INBOUND, entry);
        if entry != schema::KIND_MESSAGE && self.rng.random_bool(0.25) {
            let late = t0 + self.rng.random_range(25 * HOUR..30 * HOUR);
            self.push(out, key, late, schema::OUTBOUND, schema::KIND_TEMPLATE);
            return;
        }
        let reply = t0 + self.rng.random_range(MINUTE..30 * MINUTE);
        self.push(out, key, reply, schema::OUTBOUND, schema::KIND_MESSAGE);
        let rounds = self.rng.random_range(0..6);
        let t = self.exchanges(out, reply, key, rounds);
        match self.rng.random_range(0..100) {
            // A late free-form reply after the service window closed: a violation.
            0..=7 => {
                let late = t + self.rng.random_range(25 * HOUR..48 * HOUR);
                self.push(out, key, late, schema::OUTBOUND, schema::KIND_MESSAGE);
            }
            // A follow-up template the next day: a business-initiated session.
            8..=15 => {
                let follow = t + self.rng.random_range(24 * HOUR..40 * HOUR);
                self.push(out, key, follow, schema::OUTBOUND, schema::KIND_TEMPLATE);
            }
            // The user writes again 20 to 30 hours later, across the session's end.
            16..=25 => {
                let back = t0 + self.rng.random_range(20 * HOUR..30 * HOUR);
                self.push(out, key, back, schema::INBOUND, schema::KIND_MESSAGE);
                let answer = back + self.rng.random_range(MINUTE..10 * MINUTE);
                self.push(out, key, answer, schema::OUTBOUND, schema::KIND_MESSAGE);
            }
            _ => {}
        }
    }

    fn broadcast(&mut self, out: &mut Vec<Event>, t0: i64, key: Key, users: u32) {
        let audience = self.rng.random_range(5..=users.clamp(5, 400));
        let first = self.rng.random_range(0..users);
        for i in 0..audience {
            if self.remaining == 0 {
                return;
            }
            let key = Key {
                user: (first + i) % users,
                ..key
            };
            let sent = t0 + self.rng.random_range(0..90) * 1_000_000_000;
            self.push(out, key, sent, schema::OUTBOUND, schema::KIND_TEMPLATE);
            if self.rng.random_bool(0.2) {
                let replied = sent + self.rng.random_range(MINUTE..6 * HOUR);
                self.push(out, key, replied, schema::INBOUND, schema::KIND_MESSAGE);
                if self.rng.random_bool(0.7) {
                    let rounds = self.rng.random_range(0..3);
                    let answer = replied + self.rng.random_range(MINUTE..20 * MINUTE);
                    self.push(out, key, answer, schema::OUTBOUND, schema::KIND_MESSAGE);
                    self.exchanges(out, answer, key, rounds);
                }
            }
        }
    }

    fn standard_thread(&mut self, out: &mut Vec<Event>, t0: i64, key: Key) {
        let kind = match self.rng.random_range(0..10) {
            0 => schema::KIND_AD_CLICK,
            1 => schema::KIND_CTA_CLICK,
            _ => schema::KIND_MESSAGE,
        };
        self.push(out, key, t0, schema::INBOUND, kind);
        match self.rng.random_range(0..100) {
            // Nobody answers: a session with quota 0.
            0..=14 => {}
            // The answer comes too late: a violation.
            15..=19 => {
                let late = t0 + self.rng.random_range(25 * HOUR..60 * HOUR);
                self.push(out, key, late, schema::OUTBOUND, schema::KIND_MESSAGE);
            }
            _ => {
                let reply = t0 + self.rng.random_range(MINUTE..3 * HOUR);
                self.push(out, key, reply, schema::OUTBOUND, schema::KIND_MESSAGE);
                let rounds = self.rng.random_range(0..5);
                self.exchanges(out, reply, key, rounds);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_day_written_in_slices_holds_the_same_rows() {
        let dir = tempfile::tempdir().unwrap();
        let options = Options {
            markets: false,
            messages: 3_000,
            seed: 4,
            start: NaiveDate::from_ymd_opt(2026, 10, 1).unwrap(),
            days: 1,
            accounts: Some(3),
        };
        let read = |path: &Path| {
            ParquetReader::new(File::open(path).unwrap())
                .finish()
                .unwrap()
        };
        let (whole, sliced) = (dir.path().join("whole"), dir.path().join("sliced"));
        let rows = write_by(&whole, &options, usize::MAX).unwrap();
        assert_eq!(write_by(&sliced, &options, 700).unwrap(), rows);
        assert!(rows >= 3_000);
        assert!(read(&whole).equals_missing(&read(&sliced)));
    }

    #[test]
    fn with_markets_whatsapp_users_come_from_each_of_them() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log.parquet");
        let options = Options {
            markets: true,
            messages: 20_000,
            seed: 7,
            start: NaiveDate::from_ymd_opt(2025, 9, 20).unwrap(),
            days: 20,
            accounts: Some(4),
        };
        write(&path, &options).unwrap();
        let frame = ParquetReader::new(File::open(&path).unwrap())
            .finish()
            .unwrap();
        let channels = frame.column(schema::CHANNEL).unwrap().str().unwrap();
        let users = frame.column(schema::USER_ID).unwrap().str().unwrap();
        let table = crate::meta::markets::MarketTable::built_in();
        let day = |d: &str| d.parse::<NaiveDate>().unwrap();
        let mut before = std::collections::BTreeSet::new();
        let mut after = std::collections::BTreeSet::new();
        for (channel, user) in channels.iter().zip(users.iter()) {
            if channel != Some("whatsapp") {
                continue;
            }
            // Every number is one libphonenumber gives a country.
            let country = crate::meta::markets::country_of(user.unwrap())
                .unwrap()
                .unwrap_or_else(|| panic!("{user:?}"));
            before.insert(table.market(Some(&country), day("2025-09-30")).to_string());
            after.insert(table.market(Some(&country), day("2025-10-01")).to_string());
        }
        let mut expected: std::collections::BTreeSet<String> = [
            "Brazil",
            "India",
            "Indonesia",
            "Mexico",
            "North America",
            "Other",
            "Rest of Latin America",
        ]
        .map(String::from)
        .into();
        assert_eq!(before, expected);
        // Zimbabwe's numbers move to Rest of Africa on 1 October 2025.
        expected.insert("Rest of Africa".into());
        assert_eq!(after, expected);
        // WhatsApp threads also start from both kinds of click.
        let kinds = frame.column(schema::KIND).unwrap().str().unwrap();
        for click in ["ad_click", "cta_click"] {
            let on_whatsapp = channels
                .iter()
                .zip(kinds.iter())
                .filter(|(c, k)| *c == Some("whatsapp") && *k == Some(click))
                .count();
            assert!(on_whatsapp > 20, "{click}: {on_whatsapp}");
        }
    }
}
