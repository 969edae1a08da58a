//! Explain: why the messages of a conversation gave the sessions, violations and invoice lines
//! they did (`convbill explain`).
//!
//! The selected conversations are derived again through the same code as a run: the loader's
//! checks, [`load::duplicates_checked`], [`sessions::derive_explained`] (the derivation's own
//! marks for each message, not a second reading of the rules) and [`rating::rate_sessions`].
//! A conversation is derived whole, whatever `--from` and `--to` show of it: a WhatsApp
//! session can depend on where the one before it ended, however long ago.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use chrono::NaiveDate;
use chrono_tz::Tz;
use polars::prelude::*;
use serde::Serialize;

use crate::error::{Error, Result};
use crate::schema::{self, DAY_NS};
use crate::{load, rates, rating, sessions};

/// Conversations shown at most: a selection matching more lists them instead.
pub const MAX_CONVERSATIONS: usize = 20;

/// The shortest prefix of a session id `--session-id` accepts.
pub const MIN_SESSION_PREFIX: usize = 8;

/// `value` as a shell word: as it is when it needs no quoting, in single quotes when it has
/// no control characters, else in `$'...'` with those written as `\xNN`.
pub fn quoted(value: &str) -> String {
    let plain = !value.is_empty()
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.:/@+=%,".contains(&b));
    if plain {
        return value.to_string();
    }
    if !value.chars().any(char::is_control) {
        return format!("'{}'", value.replace('\'', "'\\''"));
    }
    let mut out = String::from("$'");
    for c in value.chars() {
        match c {
            '\\' | '\'' => {
                out.push('\\');
                out.push(c);
            }
            c if c.is_control() => {
                let mut bytes = [0u8; 4];
                for byte in c.encode_utf8(&mut bytes).bytes() {
                    out.push_str(&format!("\\x{byte:02x}"));
                }
            }
            c => out.push(c),
        }
    }
    out.push('\'');
    out
}

/// `flag value` for the shell: `flag=value` when the value starts with `-`, which would
/// otherwise read as a flag.
pub fn flag(flag: &str, value: &str) -> String {
    match value.starts_with('-') {
        true => format!("{flag}={}", quoted(value)),
        false => format!("{flag} {}", quoted(value)),
    }
}

/// `value` for the terminal: control characters (which could recolour it or move the cursor)
/// written as `\u{..}`.
fn printable(value: &str) -> String {
    match value.chars().any(char::is_control) {
        false => value.to_string(),
        true => value.escape_default().to_string(),
    }
}

/// Which messages to explain: the conversations of an account (narrowed by user, channel or
/// business), of a message id, or of a session id. `from` and `to` limit the days shown.
#[derive(Debug, Clone, Default)]
pub struct Selection {
    pub account: Option<String>,
    pub user: Option<String>,
    pub channel: Option<String>,
    pub business: Option<String>,
    pub message_id: Option<String>,
    pub session_id: Option<String>,
    /// First and last UTC day shown (inclusive).
    pub from: Option<NaiveDate>,
    pub to: Option<NaiveDate>,
}

impl Selection {
    /// The selection as the command line gave it, for messages.
    pub fn describe(&self) -> String {
        let parts: Vec<String> = [
            ("--account", &self.account),
            ("--channel", &self.channel),
            ("--business", &self.business),
            ("--user", &self.user),
            ("--message-id", &self.message_id),
            ("--session-id", &self.session_id),
        ]
        .into_iter()
        .filter_map(|(name, value)| value.as_ref().map(|v| flag(name, v)))
        .collect();
        parts.join(" ")
    }

    /// The session id asked for, if any: a whole id or a prefix of at least
    /// [`MIN_SESSION_PREFIX`] characters (the text format shows the first 12).
    fn session_prefix(&self) -> Result<Option<String>> {
        let Some(id) = &self.session_id else {
            return Ok(None);
        };
        let id = id.to_ascii_lowercase();
        if id.len() < MIN_SESSION_PREFIX
            || id.len() > 32
            || !id.bytes().all(|b| b.is_ascii_hexdigit())
        {
            return Err(Error::Explain {
                problem: format!(
                    "`--session-id {}` is not a session id: give the 32 hex digits of `session_id`, or at least their first {MIN_SESSION_PREFIX}",
                    quoted(&id)
                ),
                candidates: Vec::new(),
            });
        }
        Ok(Some(id))
    }

    /// The values the selection's rows must hold, by column (the message id with `ids`).
    fn only(&self, ids: bool) -> Result<Vec<(&'static str, String)>> {
        if let Some(channel) = &self.channel {
            if schema::CHANNELS.code_of(channel).is_none() {
                return Err(Error::Explain {
                    problem: format!(
                        "`--channel {channel}` is not a channel (accepted: {})",
                        schema::CHANNELS.accepted()
                    ),
                    candidates: Vec::new(),
                });
            }
        }
        Ok([
            (schema::ACCOUNT_ID, &self.account),
            (schema::CHANNEL, &self.channel),
            (schema::BUSINESS_ID, &self.business),
            (schema::USER_ID, &self.user),
            (
                schema::MESSAGE_ID,
                if ids { &self.message_id } else { &None },
            ),
        ]
        .into_iter()
        .filter_map(|(column, value)| value.clone().map(|v| (column, v)))
        .collect())
    }
}

/// What `explain` found: each selected conversation's messages and sessions.
#[derive(Debug, Clone, Serialize)]
pub struct Explanation {
    /// The rate card the sessions were rated by: its path, or `built-in`.
    pub rate_card: String,
    pub conversations: Vec<Conversation>,
    /// Conversations of the selection left out because `--from` and `--to` show none of
    /// their messages or sessions.
    pub conversations_outside_days: u64,
}

/// One conversation: its key, the time zone its account is billed in, what each message did
/// (in the order the rules read them) and its sessions.
#[derive(Debug, Clone, Serialize)]
pub struct Conversation {
    pub account_id: String,
    pub channel: String,
    pub business_id: String,
    pub user_id: String,
    pub time_zone: String,
    pub messages: Vec<Step>,
    pub sessions: Vec<Session>,
    /// The conversation's messages (dropped copies among them) and sessions, all of them:
    /// `--from` and `--to` may show fewer.
    pub messages_in_conversation: u64,
    pub sessions_in_conversation: u64,
}

/// What one message did.
#[derive(Debug, Clone, Serialize)]
pub struct Step {
    pub message_id: String,
    /// The input file (relative to the input) and row the message was read from.
    pub file: String,
    pub row: u64,
    pub time: String,
    pub local_time: String,
    pub direction: String,
    pub kind: String,
    /// The delivery status of an outbound message (`None` for inbound ones).
    pub status: Option<String>,
    /// `--message-id` named this message.
    pub selected: bool,
    /// `opened`, `joined`, `violation`, `no_session`, `ignored` or `dropped`.
    pub action: &'static str,
    /// The session it opened or counts in (`session_id`).
    pub session_id: Option<String>,
    /// The violation's reason, as `violations.parquet` has it.
    pub reason: Option<&'static str>,
    /// Why, in words.
    pub why: String,
}

/// One session, as `sessions.parquet` has it, and the invoice line it lands on.
#[derive(Debug, Clone, Serialize)]
pub struct Session {
    pub session_id: String,
    /// `--session-id` named this session.
    pub selected: bool,
    pub initiation: String,
    pub started_at: String,
    pub ends_at: String,
    /// `started_at` and `ends_at` in the account's zone.
    pub local_started_at: String,
    pub local_ends_at: String,
    pub opened_by: String,
    pub inbound_messages: i64,
    pub outbound_messages: i64,
    pub billable: bool,
    pub quota: i64,
    pub period: String,
    pub price_version: String,
    pub invoice_id: String,
    /// The invoice line: `channel / initiation / price_version`.
    pub invoice_line: String,
}

/// Explains the conversations `selection` names in the log at `input`, rated by the card at
/// `rates` (the built-in card if `None`).
pub fn explain(input: &Path, selection: &Selection, rates: Option<&Path>) -> Result<Explanation> {
    if let (Some(from), Some(to)) = (selection.from, selection.to) {
        if from > to {
            return Err(Error::Explain {
                problem: format!("`--from {from}` is after `--to {to}`"),
                candidates: Vec::new(),
            });
        }
    }
    let card = rates::load_or_built_in(rates)?;
    let mut source = load::open(input)?;
    let paths: Vec<String> = source.files.iter().map(|f| f.path.clone()).collect();
    let nothing = || Error::Explain {
        problem: format!(
            "no messages in `{}` match {}",
            input.display(),
            selection.describe()
        ),
        candidates: Vec::new(),
    };
    // A message or session id names a conversation: find it first.
    let session_prefix = selection.session_prefix()?;
    let by_id = selection.message_id.is_some() || session_prefix.is_some();
    source.only = match by_id {
        false => selection.only(true)?,
        true => {
            let (keys, sessions) =
                conversations_of(&mut source, selection, session_prefix.as_deref())?;
            if keys.len() > 1 {
                let how = match &session_prefix {
                    Some(_) => format!(
                        "give more of the session id ({}), or name the conversation with",
                        sessions.join(", ")
                    ),
                    None => "name one with".to_string(),
                };
                return Err(Error::Explain {
                    problem: format!(
                        "{} is used in {} conversations; {how} --account (and --user, --channel or --business):",
                        selection.describe(),
                        keys.len()
                    ),
                    candidates: keys.iter().map(Key::describe).collect(),
                });
            }
            let key = keys.into_iter().next().ok_or_else(nothing)?;
            vec![
                (schema::ACCOUNT_ID, key.account),
                (
                    schema::CHANNEL,
                    schema::CHANNELS.name_of(key.channel).to_string(),
                ),
                (schema::BUSINESS_ID, key.business),
                (schema::USER_ID, key.user),
            ]
        }
    };
    let mut pieces = Vec::new();
    source.read(None, crate::CHUNK_ROWS, |chunk| {
        if chunk.height() > 0 {
            pieces.push(chunk);
        }
        Ok(())
    })?;
    if pieces.is_empty() {
        return Err(nothing());
    }
    let frame = load::concat_frames(pieces)?;
    if let (Some(id), Some(_)) = (&selection.message_id, &session_prefix) {
        if !sessions::strings(&frame, schema::MESSAGE_ID)?.contains(&id.as_str()) {
            return Err(Error::Explain {
                problem: format!(
                    "{}: the message is not in the session's conversation",
                    selection.describe()
                ),
                candidates: Vec::new(),
            });
        }
    }
    let found = keys_of(&frame)?;
    if found.len() > MAX_CONVERSATIONS {
        let mut counts: Vec<(&Key, &u64)> = found.iter().collect();
        counts.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
        return Err(Error::Explain {
            problem: format!(
                "{} matches {} conversations (at most {MAX_CONVERSATIONS} are explained at once); name one with --user, --channel or --business; those with the most messages:",
                selection.describe(),
                found.len()
            ),
            candidates: counts
                .into_iter()
                .take(MAX_CONVERSATIONS)
                .map(|(key, n)| format!("{} ({})", key.describe(), count(*n, "message")))
                .collect(),
        });
    }
    if !by_id {
        refuse_ids_logged_elsewhere(&mut source, selection, &frame, &paths)?;
    }
    let (keep, _) = load::duplicates_checked(&frame, &paths, false)?;
    let (derived, notes) = sessions::derive_explained(&frame, keep.as_deref())?;
    let rated = rating::rate_sessions(derived.sessions, &card)?;
    let window = (
        selection.from.map(crate::nightly::start_ns),
        selection.to.map(|d| crate::nightly::start_ns(d) + DAY_NS),
    );
    let asked = Asked {
        message_id: selection.message_id.as_deref(),
        session_prefix: session_prefix.as_deref(),
    };
    let explanation = build(
        &frame,
        &paths,
        keep.as_deref(),
        &notes,
        &rated,
        &card,
        window,
        &asked,
    )?;
    if explanation.conversations.is_empty() {
        let times = sessions::values(frame.column(schema::TIMESTAMP)?.i64()?, 0);
        let day = |ns: i64| rates::rfc3339_in(ns, Tz::UTC)[..10].to_string();
        let (first, last) = (times.iter().min(), times.iter().max());
        let days = match (selection.from, selection.to) {
            (Some(from), Some(to)) => format!(" from {from} to {to} (inclusive)"),
            (Some(from), None) => format!(" on or after {from}"),
            (None, Some(to)) => format!(" on or before {to}"),
            (None, None) => String::new(),
        };
        return Err(Error::Explain {
            problem: format!(
                "{} has no messages{days}; its first and last messages are on {} and {} (UTC days)",
                selection.describe(),
                first.map(|t| day(*t)).unwrap_or_default(),
                last.map(|t| day(*t)).unwrap_or_default(),
            ),
            candidates: Vec::new(),
        });
    }
    Ok(explanation)
}

/// What the command line asked for by id: marked in the explanation and shown whatever
/// `--from` and `--to` say.
struct Asked<'a> {
    message_id: Option<&'a str>,
    session_prefix: Option<&'a str>,
}

impl Asked<'_> {
    fn message(&self, id: &str) -> bool {
        self.message_id == Some(id)
    }

    fn session(&self, id: &str) -> bool {
        self.session_prefix.is_some_and(|p| id.starts_with(p))
    }
}

/// A conversation key: account, channel, business, user.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Key {
    account: String,
    channel: schema::Code,
    business: String,
    user: String,
}

impl Key {
    fn describe(&self) -> String {
        [
            flag("--account", &self.account),
            flag("--channel", schema::CHANNELS.name_of(self.channel)),
            flag("--business", &self.business),
            flag("--user", &self.user),
        ]
        .join(" ")
    }
}

/// The frame's columns a step reads, by row.
struct Columns<'a> {
    message: Vec<&'a str>,
    account: Vec<&'a str>,
    business: Vec<&'a str>,
    user: Vec<&'a str>,
    channel: Vec<schema::Code>,
    direction: Vec<schema::Code>,
    kind: Vec<schema::Code>,
    status: Vec<schema::Code>,
    time: Vec<i64>,
    file: Vec<u32>,
    row: Vec<u64>,
}

impl<'a> Columns<'a> {
    fn of(frame: &'a DataFrame) -> Result<Self> {
        let text = |name: &str| sessions::strings(frame, name);
        let code = |name: &str| -> Result<Vec<u32>> {
            Ok(sessions::values(frame.column(name)?.u32()?, 0))
        };
        Ok(Columns {
            message: text(schema::MESSAGE_ID)?,
            account: text(schema::ACCOUNT_ID)?,
            business: text(schema::BUSINESS_ID)?,
            user: text(schema::USER_ID)?,
            channel: code(schema::CHANNEL)?,
            direction: code(schema::DIRECTION)?,
            kind: code(schema::KIND)?,
            status: code(schema::STATUS)?,
            time: sessions::values(frame.column(schema::TIMESTAMP)?.i64()?, 0),
            file: code(load::FILE)?,
            row: sessions::values(frame.column(load::ROW)?.u64()?, 0),
        })
    }

    fn key(&self, row: usize) -> Key {
        Key {
            account: self.account[row].to_string(),
            channel: self.channel[row],
            business: self.business[row].to_string(),
            user: self.user[row].to_string(),
        }
    }
}

/// The conversation keys of the frame's rows, with their row counts.
fn keys_of(frame: &DataFrame) -> Result<BTreeMap<Key, u64>> {
    let columns = Columns::of(frame)?;
    let mut keys = BTreeMap::new();
    for row in 0..frame.height() {
        *keys.entry(columns.key(row)).or_default() += 1;
    }
    Ok(keys)
}

/// The conversations of the selection's session id (by its opening message; `session_prefix`
/// is the id or its start) or else its message id, within its account, user, channel and
/// business, if given. A message id logged in two conversations of one account is a
/// conflicting duplicate, refused as a run refuses it.
/// With a session id, also the whole ids it matches.
fn conversations_of(
    source: &mut load::Source,
    selection: &Selection,
    session_prefix: Option<&str>,
) -> Result<(BTreeSet<Key>, Vec<String>)> {
    if let Some(prefix) = session_prefix {
        return conversations_of_session(source, selection, prefix);
    }
    source.only = selection.only(true)?;
    let mut keys = BTreeSet::new();
    let mut rows = Vec::new();
    source.read(None, crate::CHUNK_ROWS, |chunk| {
        let columns = Columns::of(&chunk)?;
        keys.extend((0..chunk.height()).map(|row| columns.key(row)));
        rows.push(chunk);
        Ok(())
    })?;
    if keys.len() > 1 {
        let paths: Vec<String> = source.files.iter().map(|f| f.path.clone()).collect();
        load::duplicates_checked(&load::concat_frames(rows)?, &paths, false)?;
    }
    Ok((keys, Vec::new()))
}

/// Refuses, as a run refuses it, a message id of `frame` (the conversations of an account that
/// `--user`, `--channel` or `--business` narrow) that the account also logs in another
/// conversation: a conflicting duplicate. Only the account's message ids are read for it, then
/// the rows of the first such id.
fn refuse_ids_logged_elsewhere(
    source: &mut load::Source,
    selection: &Selection,
    frame: &DataFrame,
    paths: &[String],
) -> Result<()> {
    let Some(account) = selection.account.as_deref() else {
        return Ok(());
    };
    if selection.user.is_none() && selection.channel.is_none() && selection.business.is_none() {
        // The frame is the whole account: its own check sees every copy.
        return Ok(());
    }
    let mut selected: PlHashMap<&str, (u64, u64)> = PlHashMap::default();
    for id in frame.column(schema::MESSAGE_ID)?.str()?.iter().flatten() {
        selected.entry(id).or_default().0 += 1;
    }
    source.account_message_ids(Some(account), crate::CHUNK_ROWS, |_, ids| {
        for id in ids.iter().flatten() {
            if let Some((_, in_account)) = selected.get_mut(id) {
                *in_account += 1;
            }
        }
        Ok(())
    })?;
    let Some(id) = selected
        .iter()
        .filter(|(_, (in_frame, in_account))| in_account > in_frame)
        .map(|(id, _)| *id)
        .min()
    else {
        return Ok(());
    };
    source.only = vec![
        (schema::ACCOUNT_ID, account.to_string()),
        (schema::MESSAGE_ID, id.to_string()),
    ];
    let mut rows = Vec::new();
    source.read(None, crate::CHUNK_ROWS, |chunk| {
        rows.push(chunk);
        Ok(())
    })?;
    load::duplicates_checked(&load::concat_frames(rows)?, paths, false)?;
    Ok(())
}

/// The conversations of the messages whose session id (were they to open one) starts with
/// `prefix`. A session id is a hash of (`account_id`, `message_id`): those two columns alone
/// are read and hashed first, on both cores; then the rows that match (a start of 8 hex
/// digits matches one message in 4 billion by chance) are read whole.
fn conversations_of_session(
    source: &mut load::Source,
    selection: &Selection,
    prefix: &str,
) -> Result<(BTreeSet<Key>, Vec<String>)> {
    let mut found: BTreeSet<(String, String)> = BTreeSet::new();
    source.account_message_ids(
        selection.account.as_deref(),
        crate::CHUNK_ROWS,
        |accounts, ids| {
            let rows: Vec<(&str, &str)> = accounts
                .iter()
                .zip(ids.iter())
                .filter_map(|(account, id)| Some((account?, id?)))
                .collect();
            let matching = |rows: &[(&str, &str)]| -> Vec<(String, String)> {
                rows.iter()
                    .filter(|(account, id)| sessions::session_id_starts_with(account, id, prefix))
                    .map(|(account, id)| (account.to_string(), id.to_string()))
                    .collect()
            };
            let (left, right) = rows.split_at(rows.len() / 2);
            let (left, right) = std::thread::scope(|scope| {
                let left = scope.spawn(|| matching(left));
                let right = matching(right);
                (left.join().expect("hashing does not panic"), right)
            });
            found.extend(left);
            found.extend(right);
            Ok(())
        },
    )?;
    let filters: Vec<(&'static str, String)> = selection
        .only(false)?
        .into_iter()
        .filter(|(column, _)| *column != schema::ACCOUNT_ID)
        .collect();
    let mut keys = BTreeSet::new();
    let mut ids = Vec::new();
    for (account, id) in found {
        source.only = filters.clone();
        source.only.push((schema::ACCOUNT_ID, account.clone()));
        source.only.push((schema::MESSAGE_ID, id.clone()));
        let before = keys.len();
        source.read(None, crate::CHUNK_ROWS, |chunk| {
            let columns = Columns::of(&chunk)?;
            keys.extend((0..chunk.height()).map(|row| columns.key(row)));
            Ok(())
        })?;
        if keys.len() > before {
            ids.push(sessions::session_id(&account, &id));
        }
    }
    Ok((keys, ids))
}

/// The explanation of the derived frame: each conversation's steps (notes in event order, with
/// the dropped copies after the message they repeat) and sessions. Only steps within `window`
/// (UTC nanoseconds) are shown, and the sessions they touch or that start within it, and
/// always what `asked` names.
#[allow(clippy::too_many_arguments)]
fn build(
    frame: &DataFrame,
    paths: &[String],
    keep: Option<&[bool]>,
    notes: &[sessions::EventNote],
    rated: &DataFrame,
    card: &rates::RateCard,
    window: (Option<i64>, Option<i64>),
    asked: &Asked,
) -> Result<Explanation> {
    let columns = Columns::of(frame)?;
    let mut sessions = session_rows(rated, card)?;
    for s in &mut sessions {
        s.session.selected = asked.session(&s.session.session_id);
    }
    let within = |t: i64| window.0.is_none_or(|s| t >= s) && window.1.is_none_or(|e| t < e);
    // The kept row of each (account, message id) that has dropped copies.
    let mut kept_row: BTreeMap<(&str, &str), usize> = BTreeMap::new();
    let mut dropped: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
    if let Some(keep) = keep {
        for (row, kept) in keep.iter().enumerate() {
            if *kept {
                kept_row.insert((columns.account[row], columns.message[row]), row);
            }
        }
        for (row, kept) in keep.iter().enumerate() {
            if !*kept {
                let original = kept_row[&(columns.account[row], columns.message[row])];
                dropped.entry(original).or_default().push(row);
            }
        }
    }
    let mut conversations: Vec<Conversation> = Vec::new();
    let mut keys: Vec<Key> = Vec::new();
    let mut shown_sessions: Vec<BTreeSet<usize>> = Vec::new();
    // The end and id of the conversation's latest session so far.
    let mut ended: Option<(i64, String)> = None;
    for note in notes {
        let row = note.row as usize;
        let key = columns.key(row);
        if keys.last() != Some(&key) {
            let tz = card.terms_of(&key.account).time_zone;
            conversations.push(Conversation {
                account_id: key.account.clone(),
                channel: schema::CHANNELS.name_of(key.channel).to_string(),
                business_id: key.business.clone(),
                user_id: key.user.clone(),
                time_zone: tz.name().to_string(),
                messages: Vec::new(),
                sessions: Vec::new(),
                messages_in_conversation: 0,
                sessions_in_conversation: 0,
            });
            shown_sessions.push(BTreeSet::new());
            keys.push(key);
            ended = None;
        }
        let conversation = conversations.last_mut().expect("pushed above");
        conversation.messages_in_conversation += 1 + dropped.get(&row).map_or(0, Vec::len) as u64;
        let tz: Tz = conversation.time_zone.parse().expect("a zone's own name");
        let session = note.session.map(|s| &sessions[s]);
        let before = ended.clone().filter(|(end, _)| *end <= columns.time[row]);
        if let Some(s) = session {
            ended = Some((s.end_ns, s.session.session_id.clone()));
        }
        let selected = asked.message(columns.message[row]);
        if !within(columns.time[row]) && !selected && !session.is_some_and(|s| s.session.selected) {
            continue;
        }
        if let Some(s) = note.session {
            shown_sessions.last_mut().expect("pushed above").insert(s);
        }
        let (action, why) = what_it_did(&columns, row, note, session, before, tz);
        conversation.messages.push(Step {
            action,
            why,
            selected,
            session_id: session.map(|s| s.session.session_id.clone()),
            reason: note.violation,
            ..step(&columns, paths, row, tz)
        });
        for &copy in dropped.get(&row).into_iter().flatten() {
            conversation.messages.push(Step {
                action: "dropped",
                why: format!(
                    "dropped: a copy of message {} at row {} of {} (same account and message id); it counts once",
                    columns.message[row],
                    columns.row[row],
                    paths[columns.file[row] as usize]
                ),
                session_id: None,
                reason: None,
                ..step(&columns, paths, copy, tz)
            });
        }
    }
    // Sessions that start within the window are shown even if none of their messages is.
    for (index, session) in sessions.iter().enumerate() {
        let Some(c) = keys.iter().position(|k| *k == session.key) else {
            continue;
        };
        conversations[c].sessions_in_conversation += 1;
        if within(session.start_ns) || session.session.selected {
            shown_sessions[c].insert(index);
        }
    }
    for (conversation, shown) in conversations.iter_mut().zip(shown_sessions) {
        conversation.sessions = shown
            .into_iter()
            .map(|s| sessions[s].session.clone())
            .collect();
    }
    let all = conversations.len();
    conversations.retain(|c| !c.messages.is_empty() || !c.sessions.is_empty());
    Ok(Explanation {
        rate_card: card.source.display().to_string(),
        conversations_outside_days: (all - conversations.len()) as u64,
        conversations,
    })
}

/// A session with its conversation and bounds.
struct SessionRow {
    key: Key,
    session: Session,
    start_ns: i64,
    end_ns: i64,
}

/// The rated sessions, in their order (times also in the account's zone, by `card`).
fn session_rows(rated: &DataFrame, card: &rates::RateCard) -> Result<Vec<SessionRow>> {
    let text = |name: &str| sessions::strings(rated, name);
    let times = |name: &str| -> Result<Vec<i64>> {
        Ok(sessions::values(
            rated.column(name)?.to_physical_repr().i64()?,
            0,
        ))
    };
    let ints =
        |name: &str| -> Result<Vec<i64>> { Ok(sessions::values(rated.column(name)?.i64()?, 0)) };
    let (accounts, businesses, users) = (
        text(schema::ACCOUNT_ID)?,
        text(schema::BUSINESS_ID)?,
        text(schema::USER_ID)?,
    );
    let (ids, channels, initiations, openers, periods, versions, invoices) = (
        text("session_id")?,
        text(schema::CHANNEL)?,
        text("initiation")?,
        text("opened_by")?,
        text("period")?,
        text("price_version")?,
        text("invoice_id")?,
    );
    let (starts, ends) = (times("started_at")?, times("ends_at")?);
    let (inbound, outbound, quota) = (
        ints("inbound_messages")?,
        ints("outbound_messages")?,
        ints("quota")?,
    );
    let billable: Vec<bool> = rated
        .column("billable")?
        .bool()?
        .iter()
        .map(|b| b.unwrap_or(false))
        .collect();
    Ok((0..rated.height())
        .map(|i| (i, card.terms_of(accounts[i]).time_zone))
        .map(|(i, tz)| SessionRow {
            key: Key {
                account: accounts[i].to_string(),
                channel: schema::CHANNELS
                    .code_of(channels[i])
                    .expect("a channel's own name"),
                business: businesses[i].to_string(),
                user: users[i].to_string(),
            },
            start_ns: starts[i],
            end_ns: ends[i],
            session: Session {
                session_id: ids[i].to_string(),
                selected: false,
                initiation: initiations[i].to_string(),
                started_at: rates::rfc3339_in(starts[i], Tz::UTC),
                ends_at: rates::rfc3339_in(ends[i], Tz::UTC),
                local_started_at: rates::rfc3339_in(starts[i], tz),
                local_ends_at: rates::rfc3339_in(ends[i], tz),
                opened_by: openers[i].to_string(),
                inbound_messages: inbound[i],
                outbound_messages: outbound[i],
                billable: billable[i],
                quota: quota[i],
                period: periods[i].to_string(),
                price_version: versions[i].to_string(),
                invoice_id: invoices[i].to_string(),
                invoice_line: format!("{} / {} / {}", channels[i], initiations[i], versions[i]),
            },
        })
        .collect())
}

/// A step's message columns (what it did filled in by the caller).
fn step(columns: &Columns, paths: &[String], row: usize, tz: Tz) -> Step {
    Step {
        message_id: columns.message[row].to_string(),
        file: paths[columns.file[row] as usize].clone(),
        row: columns.row[row],
        time: rates::rfc3339_in(columns.time[row], Tz::UTC),
        local_time: rates::rfc3339_in(columns.time[row], tz),
        direction: schema::DIRECTIONS
            .name_of(columns.direction[row])
            .to_string(),
        kind: schema::KINDS.name_of(columns.kind[row]).to_string(),
        status: match columns.direction[row] {
            schema::INBOUND => None,
            _ => Some(schema::STATUSES.name_of(columns.status[row]).to_string()),
        },
        selected: false,
        action: "",
        session_id: None,
        reason: None,
        why: String::new(),
    }
}

/// The action a message took and why, in words, from the derivation's marks.
fn what_it_did(
    columns: &Columns,
    row: usize,
    note: &sessions::EventNote,
    session: Option<&SessionRow>,
    ended_before: Option<(i64, String)>,
    tz: Tz,
) -> (&'static str, String) {
    let at = |ns: i64| local(ns, tz);
    let inbound = columns.direction[row] == schema::INBOUND;
    let whatsapp = columns.channel[row] == schema::WHATSAPP;
    let wrote = match note.last_inbound {
        Some(t) if !inbound => format!(
            "the customer last wrote at {}, so the window closes at {}",
            at(t),
            at(t + DAY_NS)
        ),
        Some(_) => String::new(),
        None => "the customer has not written".to_string(),
    };
    if let Some(reason) = note.violation {
        let window = match reason {
            schema::OUTSIDE_SERVICE_WINDOW => {
                "a free-form message outside the customer service window"
            }
            _ => "a message outside the 24-hour standard messaging window",
        };
        return (
            "violation",
            format!("violation, {reason}: {window}; {wrote}"),
        );
    }
    if !inbound && columns.status[row] == schema::STATUS_FAILED {
        return (
            "ignored",
            "ignored: the delivery failed; it opens no session and counts in none".to_string(),
        );
    }
    let Some(session) = session else {
        let none_open = match ended_before {
            Some((end, id)) => format!("session {} ended at {}", &id[..12], at(end)),
            None => "no session is open".to_string(),
        };
        let why = match (inbound, whatsapp) {
            (true, true) => format!(
                "no session: {none_open}; the customer's message opens the customer service window until {}, and a session opens when the business answers in it",
                at(columns.time[row] + DAY_NS)
            ),
            _ => "counts in no session".to_string(),
        };
        return ("no_session", why);
    };
    let s = &session.session;
    let short = &s.session_id[..12];
    let kind = schema::KINDS.name_of(columns.kind[row]);
    let until = at(session.end_ns);
    if note.opens {
        let why = match (whatsapp, s.initiation.as_str()) {
            (true, schema::USER_INITIATED) => format!(
                "opened session {short}, user_initiated: the business answered inside the customer service window; {wrote}; the session lasts 24 hours, until {until}"
            ),
            (true, _) => format!(
                "opened session {short}, business_initiated: a delivered {kind} with no session open and no customer message in the last 24 hours; the session lasts 24 hours, until {until}"
            ),
            (false, _) => match note.previous_inbound {
                Some(previous) => format!(
                    "opened session {short}, standard: the customer wrote 24 hours or more after their previous message at {}; the session runs until 24 hours after their last message, {until}",
                    at(previous)
                ),
                None => format!(
                    "opened session {short}, standard: {}; the session runs until 24 hours after their last message, {until}",
                    match columns.kind[row] {
                        schema::KIND_MESSAGE => "the customer's first message".to_string(),
                        _ => format!("the customer's first inbound event, of kind {kind}"),
                    }
                ),
            },
        };
        return ("opened", why);
    }
    let side = if inbound { "inbound" } else { "outbound" };
    (
        "joined",
        format!(
            "joined session {short}: counted as {side}; the session opened at {} and runs until {until}",
            at(session.start_ns)
        ),
    )
}

/// An instant in UTC, with the account's zone beside it when that is not UTC (as the
/// message lines show them).
fn local(ns: i64, tz: Tz) -> String {
    let utc = rates::rfc3339_in(ns, Tz::UTC);
    match rates::rfc3339_in(ns, tz) {
        zoned if zoned == utc => utc,
        zoned => format!("{utc} ({zoned})"),
    }
}

/// How `explain` prints.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// For people: a timeline per conversation, then its sessions, at most 100 columns wide.
    Text,
    /// The [`Explanation`] as JSON, for tools.
    Json,
    /// One row per message: its conversation, what it did and its session's invoice line.
    Csv,
}

/// The explanation in `format`.
pub fn render(explanation: &Explanation, format: Format) -> Result<String> {
    match format {
        Format::Text => Ok(text(explanation)),
        Format::Json => Ok(serde_json::to_string_pretty(explanation)
            .expect("an explanation serializes")
            + "\n"),
        Format::Csv => csv_of(explanation),
    }
}

/// Width of the text format.
const WIDTH: usize = 100;

fn text(explanation: &Explanation) -> String {
    let mut out = String::new();
    let card = match explanation.rate_card.as_str() {
        "built-in" => "the built-in rate card (no --rates: every account in UTC, price 0)".into(),
        path => format!("the rate card {path}"),
    };
    for (i, c) in explanation.conversations.iter().enumerate() {
        if i > 0 {
            out.push('\n');
        }
        let head = format!(
            "{} / {} / business {} / user {}",
            printable(&c.account_id),
            c.channel,
            printable(&c.business_id),
            printable(&c.user_id)
        );
        push_wrapped(&mut out, &head, "", "  ");
        let (messages, sessions) = (c.messages.len() as u64, c.sessions.len() as u64);
        let shown = match (c.messages_in_conversation, c.sessions_in_conversation) {
            (m, s) if (m, s) == (messages, sessions) => {
                format!("{}, {}", count(m, "message"), count(s, "session"))
            }
            // `--from` and `--to` show part of it.
            (m, s) => format!(
                "{messages} of its {} and {sessions} of its {} shown (--from, --to)",
                count(m, "message"),
                count(s, "session")
            ),
        };
        let summary = format!(
            "{shown}; times in UTC{}",
            match c.time_zone.as_str() {
                "UTC" | "Etc/UTC" => String::new(),
                zone => format!(" and in {zone}, the account's billing zone"),
            }
        );
        push_wrapped(&mut out, &summary, "", "  ");
        out.push('\n');
        for step in &c.messages {
            let what = match &step.status {
                None => format!("{} {}", step.direction, step.kind),
                Some(status) => format!("{} {} {status}", step.direction, step.kind),
            };
            let mark = if step.selected {
                "  <- --message-id"
            } else {
                ""
            };
            let head = format!(
                "{}  {}  {what}{mark}",
                step.time,
                printable(&step.message_id)
            );
            push_wrapped(&mut out, &head, "", "  ");
            // The account's time on a line of its own, so the head keeps its columns.
            if step.local_time != step.time {
                push_wrapped(
                    &mut out,
                    &format!("({} local)", step.local_time),
                    "  ",
                    "  ",
                );
            }
            push_wrapped(&mut out, &step.why, "    ", "    ");
        }
        if !c.sessions.is_empty() {
            out.push_str("\nSessions:\n");
        }
        for s in &c.sessions {
            let billed = match s.billable {
                true => format!("quota {}", s.quota),
                false => "not billable, never answered".to_string(),
            };
            let at = |utc: &str, local: &str| match utc == local {
                true => utc.to_string(),
                false => format!("{utc} ({local})"),
            };
            let mark = if s.selected { " <- --session-id;" } else { "" };
            let line = format!(
                "{}{mark} {} from {} to {}, opened by {}; {} inbound, {} outbound; {billed}; period {}, price version {}; invoice {}, line {}",
                s.session_id,
                s.initiation,
                at(&s.started_at, &s.local_started_at),
                at(&s.ends_at, &s.local_ends_at),
                s.opened_by,
                s.inbound_messages,
                s.outbound_messages,
                s.period,
                s.price_version,
                s.invoice_id,
                s.invoice_line
            );
            push_wrapped(&mut out, &line, "  ", "    ");
        }
    }
    out.push('\n');
    if explanation.conversations_outside_days > 0 {
        let n = explanation.conversations_outside_days;
        let line = format!(
            "{} of the selection {} no message or session in those days (--from, --to).",
            count(n, "other conversation"),
            if n == 1 { "has" } else { "have" }
        );
        push_wrapped(&mut out, &line, "", "  ");
    }
    push_wrapped(&mut out, &format!("Rated by {card}."), "", "  ");
    out
}

/// `n` and `noun`, plural unless one.
pub(crate) fn count(n: u64, noun: &str) -> String {
    match n {
        1 => format!("1 {noun}"),
        n => format!("{n} {noun}s"),
    }
}

/// Appends `text` cut into lines of at most [`WIDTH`] characters: the first indented by
/// `first`, the others by `rest`.
fn push_wrapped(out: &mut String, text: &str, first: &str, rest: &str) {
    for (j, part) in wrap(text, WIDTH - rest.len().max(first.len()))
        .into_iter()
        .enumerate()
    {
        let indent = if j == 0 { first } else { rest };
        out.push_str(&format!("{indent}{part}\n"));
    }
}

/// `text` cut at spaces into lines of at most `width` characters (a longer word stands alone).
fn wrap(text: &str, width: usize) -> Vec<String> {
    let mut lines = Vec::new();
    let mut line = String::new();
    for word in text.split(' ') {
        if !line.is_empty() && line.chars().count() + 1 + word.chars().count() > width {
            lines.push(std::mem::take(&mut line));
        }
        if !line.is_empty() {
            line.push(' ');
        }
        line.push_str(word);
    }
    if !line.is_empty() {
        lines.push(line);
    }
    lines
}

fn csv_of(explanation: &Explanation) -> Result<String> {
    let mut writer = csv::Writer::from_writer(Vec::new());
    let header = [
        "account_id",
        "channel",
        "business_id",
        "user_id",
        "message_id",
        "file",
        "row",
        "time",
        "local_time",
        "direction",
        "kind",
        "status",
        "action",
        "reason",
        "session_id",
        "initiation",
        "period",
        "price_version",
        "quota",
        "invoice_id",
        "why",
    ];
    let io = |e: csv::Error| Error::Explain {
        problem: format!("could not write CSV: {e}"),
        candidates: Vec::new(),
    };
    writer.write_record(header).map_err(io)?;
    let text = crate::write::spreadsheet_text;
    for c in &explanation.conversations {
        for step in &c.messages {
            let session = step
                .session_id
                .as_ref()
                .and_then(|id| c.sessions.iter().find(|s| &s.session_id == id));
            let of_session = |f: fn(&Session) -> String| session.map(f).unwrap_or_default();
            writer
                .write_record([
                    &*text(&c.account_id),
                    &c.channel,
                    &*text(&c.business_id),
                    &*text(&c.user_id),
                    &*text(&step.message_id),
                    &*text(&step.file),
                    &step.row.to_string(),
                    &step.time,
                    &step.local_time,
                    &step.direction,
                    &step.kind,
                    step.status.as_deref().unwrap_or(""),
                    step.action,
                    step.reason.unwrap_or(""),
                    step.session_id.as_deref().unwrap_or(""),
                    &of_session(|s| s.initiation.clone()),
                    &of_session(|s| s.period.clone()),
                    &of_session(|s| s.price_version.clone()),
                    &of_session(|s| s.quota.to_string()),
                    &*text(&of_session(|s| s.invoice_id.clone())),
                    &*text(&step.why),
                ])
                .map_err(io)?;
        }
    }
    let bytes = writer
        .into_inner()
        .expect("writing to memory does not fail");
    Ok(String::from_utf8(bytes).expect("CSV of UTF-8 strings"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_written_as_the_shell_reads_them_back() {
        assert_eq!(flag("--user", "u-1"), "--user u-1");
        assert_eq!(flag("--user", "a b"), "--user 'a b'");
        assert_eq!(flag("--user", "it's"), "--user 'it'\\''s'");
        assert_eq!(flag("--user", "-dash"), "--user=-dash");
        assert_eq!(flag("--user", "--user"), "--user=--user");
        assert_eq!(flag("--user", "\u{1b}[31mred"), "--user $'\\x1b[31mred'");
        assert_eq!(flag("--user", "a\nb'c"), "--user $'a\\x0ab\\'c'");
        assert_eq!(flag("--user", ""), "--user ''");
        // bash reads each back as it was.
        for value in [
            "u-1",
            "a b",
            "it's",
            "-dash",
            "\u{1b}[31mred",
            "a\nb'c\\d",
            "",
            "é\t",
        ] {
            let output = std::process::Command::new("bash")
                .arg("-c")
                .arg(format!("printf '%s' {}", quoted(value)))
                .output()
                .unwrap();
            assert_eq!(String::from_utf8(output.stdout).unwrap(), value);
        }
    }

    #[test]
    fn control_characters_are_not_printed_to_the_terminal() {
        assert_eq!(printable("user-1"), "user-1");
        assert_eq!(printable("é ü"), "é ü");
        assert_eq!(printable("\u{1b}[31mred"), "\\u{1b}[31mred");
    }
}
