//! `convbill explain`: what each message of a conversation did and why, checked on the
//! article's scenarios and on the rules' edge cases, through the library and the binary.

use std::path::{Path, PathBuf};

use convbill::explain::{self, Conversation, Explanation, Format, Selection};

use crate::cli::convbill;
use crate::support::*;

fn sample() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("sample-data/article-scenarios.parquet")
}

fn account(account: &str) -> Selection {
    Selection {
        account: Some(account.into()),
        ..Selection::default()
    }
}

fn explained(input: &Path, selection: &Selection) -> Explanation {
    explain::explain(input, selection, None).unwrap()
}

/// Explains the events (account `acme`) through a Parquet file.
fn explain_events(events: &[Ev]) -> Explanation {
    let dir = tempfile::tempdir().unwrap();
    let path = write_log(dir.path(), events);
    explained(&path, &account("acme"))
}

/// (message id, action) of each step, in the order shown.
fn actions(c: &Conversation) -> Vec<(&str, &str)> {
    c.messages
        .iter()
        .map(|s| (s.message_id.as_str(), s.action))
        .collect()
}

/// The explanation of the article's scenario 2 (account `article-demo`, its first user) and
/// the id of its first session.
fn scenario_2_and_its_first_session() -> (Explanation, String) {
    let mut selection = account("article-demo");
    selection.user = Some("6281200000001".into());
    let whole = explained(&sample(), &selection);
    let first = only(&whole).sessions[0].session_id.clone();
    (whole, first)
}

/// Explains a customer message at 19:00 UTC on 31 January 2026 and a reply an hour later,
/// of acct-0000, which the sample card bills in Jakarta time (UTC+7).
fn explain_in_jakarta(message: &str, reply_id: &str) -> Explanation {
    let dir = tempfile::tempdir().unwrap();
    let log = write_log(
        dir.path(),
        &[
            inbound(message, "2026-01-31 19:00").account("acct-0000"),
            reply(reply_id, "2026-01-31 20:00").account("acct-0000"),
        ],
    );
    let card = Path::new(env!("CARGO_MANIFEST_DIR")).join("sample-data/rates.toml");
    explain::explain(&log, &account("acct-0000"), Some(&card)).unwrap()
}

fn only(explanation: &Explanation) -> &Conversation {
    assert_eq!(explanation.conversations.len(), 1, "{explanation:#?}");
    &explanation.conversations[0]
}

#[test]
fn scenario_2_two_sessions_because_the_customer_wrote_after_the_first_had_ended() {
    let mut selection = account("article-demo");
    selection.user = Some("6281200000001".into());
    let explanation = explained(&sample(), &selection);
    let c = only(&explanation);
    assert_eq!(
        actions(c),
        vec![
            ("s1-t1", "opened"),
            ("s1-u1", "joined"),
            ("s1-a1", "joined"),
            ("s1-u2", "joined"),
            ("s1-a2", "joined"),
            ("s2-u1", "no_session"),
            ("s2-a1", "opened"),
        ]
    );
    assert_eq!(c.sessions.len(), 2);
    let (first, second) = (&c.sessions[0], &c.sessions[1]);
    assert_eq!(
        (first.initiation.as_str(), first.opened_by.as_str()),
        ("business_initiated", "s1-t1")
    );
    assert_eq!(
        (second.initiation.as_str(), second.opened_by.as_str()),
        ("user_initiated", "s2-a1")
    );
    assert_eq!(first.ends_at, "2024-01-02T13:00:00Z");
    // Each step names its session; the customer's Tuesday message is in none.
    assert_eq!(
        c.messages[0].session_id.as_deref(),
        Some(first.session_id.as_str())
    );
    assert_eq!(c.messages[5].session_id, None);
    let why = &c.messages[5].why;
    assert!(
        why.contains(&format!(
            "session {} ended at 2024-01-02T13:00:00Z",
            &first.session_id[..12]
        )),
        "{why}"
    );
    assert!(
        why.contains("opens the customer service window until 2024-01-03T14:00:00Z"),
        "{why}"
    );
    let opened = &c.messages[6].why;
    assert!(opened.contains("user_initiated"), "{opened}");
    assert!(
        opened.contains("last wrote at 2024-01-02T14:00:00Z"),
        "{opened}"
    );
    assert!(opened.contains("until 2024-01-03T14:05:00Z"), "{opened}");
    // The sessions land on the invoice lines a run writes.
    let out = tempfile::tempdir().unwrap();
    let run = out.path().join("out");
    convbill::run(&convbill::RunConfig::new(sample(), &run)).unwrap();
    let sessions = read_frame(&run.join("sessions.parquet"));
    let ids = strings(&sessions, "session_id");
    let invoices = strings(&sessions, "invoice_id");
    for s in &c.sessions {
        let i = ids.iter().position(|id| *id == s.session_id).unwrap();
        assert_eq!(invoices[i], s.invoice_id);
    }
    assert_eq!(
        first.invoice_line,
        "whatsapp / business_initiated / 1970-01-01"
    );
}

#[test]
fn a_failed_delivery_is_ignored_and_a_duplicate_is_dropped() {
    let mut selection = account("article-demo");
    selection.user = Some("6281200000002".into());
    let explanation = explained(&sample(), &selection);
    let c = only(&explanation);
    assert_eq!(
        actions(c),
        vec![
            ("s2b-t0", "ignored"),
            ("s2b-t1", "opened"),
            ("s2b-t2", "opened")
        ]
    );
    assert!(c.messages[0].why.contains("delivery failed"));

    let mut selection = account("article-demo");
    selection.user = Some("6281200000003".into());
    let explanation = explained(&sample(), &selection);
    let c = only(&explanation);
    let a2: Vec<_> = c
        .messages
        .iter()
        .filter(|s| s.message_id == "s3-a2")
        .collect();
    assert_eq!(a2.len(), 2);
    assert_eq!((a2[0].action, a2[1].action), ("joined", "dropped"));
    assert!(
        a2[1].why.contains(&format!("at row {} of", a2[0].row)),
        "{}",
        a2[1].why
    );
    assert_ne!(a2[0].row, a2[1].row);
}

#[test]
fn the_window_closes_exactly_24_hours_after_the_customer_wrote() {
    let explanation = explain_events(&[
        inbound("u1", "Mon 10:00"),
        reply("r1", "Tue 09:59"),
        reply("r2", "Tue 10:00"),
    ]);
    let c = only(&explanation);
    // r1 opens a 24-hour session; r2, a free-form message, cannot join it once the window
    // closed, exactly 24 hours after the customer wrote.
    assert_eq!(
        actions(c),
        vec![("u1", "no_session"), ("r1", "opened"), ("r2", "violation")]
    );
    assert_eq!(c.messages[2].reason, Some("outside_service_window"));
    let why = &c.messages[2].why;
    assert!(
        why.contains("the window closes at 2024-01-02T10:00:00Z"),
        "{why}"
    );
    // A template at that instant opens a business-initiated session.
    let explanation = explain_events(&[inbound("u1", "Mon 10:00"), template("t1", "Tue 10:00")]);
    let c = only(&explanation);
    assert_eq!(actions(c), vec![("u1", "no_session"), ("t1", "opened")]);
    assert!(c.messages[1].why.contains("business_initiated"));
}

#[test]
fn an_inbound_and_an_outbound_at_the_same_instant_read_inbound_first() {
    let explanation = explain_events(&[reply("r1", "Mon 10:00"), inbound("u1", "Mon 10:00")]);
    let c = only(&explanation);
    // The customer's message opens the window the reply is answered in.
    assert_eq!(actions(c), vec![("u1", "joined"), ("r1", "opened")]);
    assert_eq!(c.sessions.len(), 1);
    assert_eq!(c.sessions[0].initiation, "user_initiated");
    assert_eq!(c.sessions[0].inbound_messages, 1);
}

#[test]
fn a_messenger_session_is_extended_by_a_later_click() {
    let explanation = explain_events(&[
        inbound("u1", "Mon 10:00").on("messenger"),
        reply("r1", "Mon 11:00").on("messenger"),
        inbound("c1", "Tue 09:00").on("messenger").kind("cta_click"),
        reply("r2", "Wed 08:00").on("messenger"),
    ]);
    let c = only(&explanation);
    assert_eq!(
        actions(c),
        vec![
            ("u1", "opened"),
            ("r1", "joined"),
            ("c1", "joined"),
            ("r2", "joined")
        ]
    );
    assert_eq!(c.sessions.len(), 1);
    // The click moved the session's end to 24 hours after it.
    assert_eq!(c.sessions[0].ends_at, "2024-01-03T09:00:00Z");
    assert!(c.messages[3].why.contains("until 2024-01-03T09:00:00Z"));
}

#[test]
fn a_message_or_session_id_finds_its_conversation() {
    let by_message = explained(
        &sample(),
        &Selection {
            message_id: Some("s2-a1".into()),
            ..Selection::default()
        },
    );
    let c = only(&by_message);
    assert_eq!(c.user_id, "6281200000001");
    let session = c.sessions[1].session_id.clone();
    let by_session = explained(
        &sample(),
        &Selection {
            session_id: Some(session),
            ..Selection::default()
        },
    );
    assert_eq!(only(&by_session).messages.len(), c.messages.len());

    // Message ids are unique within an account only: one used in two accounts is ambiguous
    // until the account is named.
    let dir = tempfile::tempdir().unwrap();
    let log = write_log(
        dir.path(),
        &[
            inbound("m1", "Mon 10:00"),
            inbound("m1", "Mon 11:00").account("zeta"),
        ],
    );
    let id = |account: Option<&str>| Selection {
        account: account.map(Into::into),
        message_id: Some("m1".into()),
        ..Selection::default()
    };
    let error = explain::explain(&log, &id(None), None)
        .unwrap_err()
        .to_string();
    assert!(error.contains("is used in 2 conversations"), "{error}");
    assert!(
        error.contains("--account acme --channel whatsapp"),
        "{error}"
    );
    assert!(
        error.contains("--account zeta --channel whatsapp"),
        "{error}"
    );
    assert_eq!(only(&explained(&log, &id(Some("zeta")))).account_id, "zeta");
}

#[test]
fn from_and_to_show_some_days_of_a_conversation_derived_whole() {
    let mut selection = account("article-demo");
    selection.user = Some("6281200000001".into());
    selection.from = chrono::NaiveDate::from_ymd_opt(2024, 1, 2);
    let explanation = explained(&sample(), &selection);
    let c = only(&explanation);
    // Tuesday's messages only, and still the second session of the whole conversation.
    assert_eq!(
        actions(c),
        vec![("s2-u1", "no_session"), ("s2-a1", "opened")]
    );
    assert_eq!(c.sessions.len(), 1);
    assert_eq!(c.sessions[0].initiation, "user_initiated");
    // It says how much of the conversation it shows.
    assert_eq!(
        (c.messages_in_conversation, c.sessions_in_conversation),
        (7, 2)
    );
    let text = explain::render(&explanation, Format::Text).unwrap();
    assert!(
        text.contains(
            "\n2 of its 7 messages and 1 of its 2 sessions shown (--from, --to); times in UTC\n"
        ),
        "{text}"
    );
    // All of it: the counts alone.
    selection.from = None;
    let text = explain::render(&explained(&sample(), &selection), Format::Text).unwrap();
    assert!(
        text.contains("\n7 messages, 2 sessions; times in UTC\n"),
        "{text}"
    );
}

#[test]
fn the_three_formats_say_the_same() {
    let mut selection = account("article-demo");
    selection.user = Some("6281200000001".into());
    let explanation = explained(&sample(), &selection);
    let text = explain::render(&explanation, Format::Text).unwrap();
    assert!(text.lines().all(|l| l.chars().count() <= 100), "{text}");
    assert!(text.contains("s2-a1"));
    let json: serde_json::Value =
        serde_json::from_str(&explain::render(&explanation, Format::Json).unwrap()).unwrap();
    assert_eq!(json["conversations"][0]["messages"][6]["action"], "opened");
    let csv = explain::render(&explanation, Format::Csv).unwrap();
    let mut reader = csv::Reader::from_reader(csv.as_bytes());
    let rows: Vec<csv::StringRecord> = reader.records().map(Result::unwrap).collect();
    assert_eq!(rows.len(), 7);
    let headers = reader.headers().unwrap().clone();
    let column = |name: &str| headers.iter().position(|h| h == name).unwrap();
    assert_eq!(&rows[6][column("action")], "opened");
    assert_eq!(&rows[6][column("initiation")], "user_initiated");
}

#[test]
fn the_command_prints_the_timeline_and_fails_clearly() {
    let output = convbill()
        .args(["explain", "--input"])
        .arg(sample())
        .args(["--account", "article-demo", "--user", "6281200000001"])
        .assert()
        .success();
    let text = String::from_utf8(output.get_output().stdout.clone()).unwrap();
    assert!(
        text.starts_with("article-demo / whatsapp / business 100000000000001 / user 6281200000001"),
        "{text}"
    );
    assert!(text.contains("Sessions:"), "{text}");
    assert!(
        text.ends_with(
            "\nRated by the built-in rate card (no --rates: every account in UTC, price 0).\n"
        ),
        "{text}"
    );

    // No such account: says so, exit 2.
    let output = convbill()
        .args(["explain", "--input"])
        .arg(sample())
        .args(["--account", "nobody"])
        .assert()
        .code(convbill::exit::USAGE);
    let stderr = String::from_utf8(output.get_output().stderr.clone()).unwrap();
    assert!(stderr.contains("no messages in"), "{stderr}");
    assert!(stderr.contains("--account nobody"), "{stderr}");

    // An account of many conversations: they are listed.
    let dir = tempfile::tempdir().unwrap();
    let events: Vec<Ev> = (0..25)
        .map(|i| inbound(&format!("m{i}"), "Mon 10:00").user(&format!("user-{i:02}")))
        .collect();
    let log = write_log(dir.path(), &events);
    let output = convbill()
        .args(["explain", "--input"])
        .arg(&log)
        .args(["--account", "acme"])
        .assert()
        .code(convbill::exit::USAGE);
    let stderr = String::from_utf8(output.get_output().stderr.clone()).unwrap();
    assert!(stderr.contains("matches 25 conversations"), "{stderr}");
    assert!(stderr.contains("--user user-00"), "{stderr}");
    assert!(stderr.contains("--user user-00 (1 message)"), "{stderr}");

    // Nothing named: a usage error from the command line.
    convbill()
        .args(["explain", "--input"])
        .arg(sample())
        .assert()
        .code(convbill::exit::USAGE);
}

#[test]
fn times_are_shown_in_the_accounts_zone_and_sessions_in_its_period() {
    // 20:00 UTC on 31 January 2026 is 03:00 on 1 February in Jakarta, so the session is
    // February's.
    let explanation = explain_in_jakarta("u1", "r1");
    let c = only(&explanation);
    assert_eq!(c.time_zone, "Asia/Jakarta");
    assert_eq!(c.messages[1].time, "2026-01-31T20:00:00Z");
    assert_eq!(c.messages[1].local_time, "2026-02-01T03:00:00+07:00");
    assert_eq!(c.sessions[0].period, "2026-02");
    assert!(explanation.rate_card.ends_with("sample-data/rates.toml"));
    assert!(c.sessions[0].invoice_id.starts_with("2026-02-"));
    let why = &c.messages[1].why;
    assert!(
        why.contains("until 2026-02-01T20:00:00Z (2026-02-02T03:00:00+07:00)"),
        "{why}"
    );
    let text = explain::render(&explanation, Format::Text).unwrap();
    // The account's time on a line of its own beneath the message's, which keeps its columns.
    assert!(
        text.contains(
            "2026-01-31T20:00:00Z  r1  outbound message delivered\n  (2026-02-01T03:00:00+07:00 local)\n"
        ),
        "{text}"
    );
    assert!(
        text.lines().all(|line| line.chars().count() <= 100),
        "{text}"
    );
}

#[test]
fn a_bad_channel_or_days_in_the_wrong_order_are_refused() {
    let mut selection = account("article-demo");
    selection.channel = Some("telegram".into());
    let error = explain::explain(&sample(), &selection, None)
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("`--channel telegram` is not a channel"),
        "{error}"
    );
    let mut selection = account("article-demo");
    selection.from = chrono::NaiveDate::from_ymd_opt(2024, 1, 5);
    selection.to = chrono::NaiveDate::from_ymd_opt(2024, 1, 2);
    let error = explain::explain(&sample(), &selection, None)
        .unwrap_err()
        .to_string();
    assert!(error.contains("is after"), "{error}");
}

/// The README's example is what the command prints on the bundled sample.
#[test]
fn the_readme_shows_what_explain_prints_for_scenario_2() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    let command = "    convbill explain --input sample-data/article-scenarios.parquet --account article-demo --user 6281200000001\n\n";
    let start = readme
        .find(command)
        .expect("the README runs explain on scenario 2")
        + command.len();
    let mut shown: Vec<&str> = readme[start..]
        .lines()
        .take_while(|l| l.is_empty() || l.starts_with("    "))
        .map(|l| l.strip_prefix("    ").unwrap_or(l))
        .collect();
    while shown.last() == Some(&"") {
        shown.pop();
    }
    let args: Vec<&str> = command.split_whitespace().skip(1).collect();
    let output = convbill().current_dir(root).args(&args).assert().success();
    let printed = String::from_utf8(output.get_output().stdout.clone()).unwrap();
    assert_eq!(shown.join("\n"), printed.trim_end());
}

#[test]
fn an_account_named_by_a_hive_folder_is_found() {
    let dir = tempfile::tempdir().unwrap();
    for account in ["acme", "zeta"] {
        let folder = dir.path().join(format!("account_id={account}"));
        std::fs::create_dir(&folder).unwrap();
        let mut rows = frame(&[inbound(&format!("{account}-1"), "Mon 10:00")])
            .drop("account_id")
            .unwrap();
        write_parquet(&folder.join("part-0.parquet"), &mut rows);
    }
    let explanation = explained(dir.path(), &account("zeta"));
    let c = only(&explanation);
    assert_eq!(c.account_id, "zeta");
    assert_eq!(actions(c), vec![("zeta-1", "no_session")]);
    assert_eq!(c.messages[0].file, "account_id=zeta/part-0.parquet");
    // A session id's start finds the message whose (account, id) it hashes, the account
    // read from the folder's name; within another account it finds nothing.
    let id = convbill::sessions::session_id("zeta", "zeta-1");
    let mut by_session = Selection {
        session_id: Some(id[..8].to_string()),
        ..Selection::default()
    };
    let explanation = explained(dir.path(), &by_session);
    assert_eq!(only(&explanation).account_id, "zeta");
    by_session.account = Some("acme".into());
    let error = explain::explain(dir.path(), &by_session, None).unwrap_err();
    assert_eq!(error.exit_code(), convbill::exit::USAGE, "{error}");
}

#[test]
fn a_message_id_in_two_conversations_of_one_account_is_refused_as_a_run_refuses_it() {
    let dir = tempfile::tempdir().unwrap();
    let log = write_log(
        dir.path(),
        &[
            inbound("m1", "Mon 10:00"),
            inbound("m1", "Mon 10:00").user("someone-else"),
        ],
    );
    let selection = Selection {
        message_id: Some("m1".into()),
        ..Selection::default()
    };
    let error = explain::explain(&log, &selection, None).unwrap_err();
    assert_eq!(error.exit_code(), convbill::exit::DATA, "{error}");
    let run = convbill::run(&convbill::RunConfig::new(&log, dir.path().join("out"))).unwrap_err();
    assert_eq!(error.to_string(), run.to_string());
    // So is an account whose conversations, read together, hold it twice.
    let error = explain::explain(&log, &account("acme"), None).unwrap_err();
    assert_eq!(error.exit_code(), convbill::exit::DATA, "{error}");
    assert_eq!(error.to_string(), run.to_string());
    // And a user whose conversations with two businesses hold the same message id.
    let both = write_log(
        &dir.path().join("both"),
        &[
            template("t1", "Mon 10:00"),
            template("t1", "Mon 10:00").business("biz-2"),
        ],
    );
    let mut user = account("acme");
    user.user = Some("user-1".into());
    let error = explain::explain(&both, &user, None).unwrap_err();
    assert_eq!(error.exit_code(), convbill::exit::DATA, "{error}");
    // So is one of the two conversations alone: its message is logged in the other too.
    for user in ["someone-else", "user-1"] {
        let mut one = account("acme");
        one.user = Some(user.into());
        let error = explain::explain(&log, &one, None).unwrap_err();
        assert_eq!(error.exit_code(), convbill::exit::DATA, "{error}");
        assert_eq!(error.to_string(), run.to_string());
    }
    // A conversation whose ids the account logs nowhere else is explained.
    let apart = write_log(
        &dir.path().join("apart"),
        &[
            inbound("m1", "Mon 10:00"),
            inbound("m2", "Mon 10:00").user("someone-else"),
            inbound("m2", "Mon 10:00").user("someone-else"),
        ],
    );
    let mut one = account("acme");
    one.user = Some("someone-else".into());
    let c = explained(&apart, &one);
    assert_eq!(actions(only(&c)), [("m2", "no_session"), ("m2", "dropped")]);
}

#[test]
fn days_without_messages_say_so_and_fail() {
    let mut selection = account("article-demo");
    selection.user = Some("6281200000001".into());
    selection.from = chrono::NaiveDate::from_ymd_opt(2024, 2, 1);
    let error = explain::explain(&sample(), &selection, None).unwrap_err();
    assert_eq!(error.exit_code(), convbill::exit::USAGE);
    let error = error.to_string();
    assert!(
        error.contains(
            "has no messages on or after 2024-02-01; its first and last messages are on 2024-01-01 and 2024-01-02"
        ),
        "{error}"
    );
    selection.from = None;
    selection.to = chrono::NaiveDate::from_ymd_opt(2023, 12, 31);
    let error = explain::explain(&sample(), &selection, None)
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("has no messages on or before 2023-12-31;"),
        "{error}"
    );
    selection.from = chrono::NaiveDate::from_ymd_opt(2023, 12, 1);
    let error = explain::explain(&sample(), &selection, None)
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("has no messages from 2023-12-01 to 2023-12-31 (inclusive);"),
        "{error}"
    );
}

#[test]
fn the_short_session_id_the_text_shows_finds_the_session_and_marks_it() {
    let (whole, first) = scenario_2_and_its_first_session();
    let text = explain::render(&whole, Format::Text).unwrap();
    assert!(text.contains(&format!("opened session {}", &first[..12])));
    // The 12 characters shown find it; --from after its day still shows it.
    let by_prefix = Selection {
        session_id: Some(first[..12].to_string()),
        from: chrono::NaiveDate::from_ymd_opt(2024, 1, 2),
        ..Selection::default()
    };
    let explanation = explained(&sample(), &by_prefix);
    let c = only(&explanation);
    let selected: Vec<&str> = c
        .sessions
        .iter()
        .filter(|s| s.selected)
        .map(|s| s.session_id.as_str())
        .collect();
    assert_eq!(selected, [first.as_str()]);
    assert!(c.messages.iter().any(|m| m.message_id == "s1-t1"));
    let text = explain::render(&explanation, Format::Text).unwrap();
    assert!(
        text.contains(&format!("{first} <- --session-id;")),
        "{text}"
    );
    // Too short to be an id: refused, quoted as typed.
    let short = Selection {
        session_id: Some("ab c".into()),
        ..Selection::default()
    };
    let error = explain::explain(&sample(), &short, None)
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("`--session-id 'ab c'` is not a session id"),
        "{error}"
    );
}

#[test]
fn a_message_id_with_its_session_id_marks_the_message_even_when_it_joined() {
    let (_, first) = scenario_2_and_its_first_session();
    let both = Selection {
        message_id: Some("s1-u2".into()),
        session_id: Some(first),
        ..Selection::default()
    };
    let explanation = explained(&sample(), &both);
    let c = only(&explanation);
    let selected: Vec<(&str, &str)> = c
        .messages
        .iter()
        .filter(|m| m.selected)
        .map(|m| (m.message_id.as_str(), m.action))
        .collect();
    assert_eq!(selected, [("s1-u2", "joined")]);
    // A message of another conversation is refused, not ignored.
    let elsewhere = Selection {
        message_id: Some("m1-u1".into()),
        ..both.clone()
    };
    let error = explain::explain(&sample(), &elsewhere, None)
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("the message is not in the session's conversation"),
        "{error}"
    );
    let text = explain::render(&explanation, Format::Text).unwrap();
    assert!(
        text.contains("  s1-u2  inbound message  <- --message-id"),
        "{text}"
    );
}

#[test]
fn long_ids_in_a_zone_other_than_utc_stay_within_100_columns() {
    let long = "wamid.HBgNNjI4MTIwMDAwMDAwMRUCABIYFjNFQjBDMEFGOTZBRjVCRjQ3MjlGNkEA";
    let mut explanation = explain_in_jakarta(long, &format!("{long}-r"));
    // A long user id and business id in the conversation's header too.
    explanation.conversations[0].user_id = long.to_string();
    explanation.conversations[0].business_id = long.to_string();
    let text = explain::render(&explanation, Format::Text).unwrap();
    assert!(text.lines().all(|l| l.chars().count() <= 100), "{text}");
    // Sessions show the account's zone beside UTC, as messages do.
    let sessions = text[text.find("Sessions:").unwrap()..]
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");
    assert!(
        sessions.contains("from 2026-01-31T20:00:00Z (2026-02-01T03:00:00+07:00) to"),
        "{sessions}"
    );
    let json: serde_json::Value =
        serde_json::from_str(&explain::render(&explanation, Format::Json).unwrap()).unwrap();
    let messages = &json["conversations"][0]["messages"];
    assert_eq!(messages[0]["status"], serde_json::Value::Null);
    assert_eq!(messages[1]["status"], "delivered");
    assert_eq!(
        json["conversations"][0]["sessions"][0]["local_started_at"],
        "2026-02-01T03:00:00+07:00"
    );
}

#[test]
fn a_standard_session_reopens_24_hours_or_more_after_the_previous_message() {
    let explanation = explain_events(&[
        inbound("u1", "Mon 10:00").on("instagram").kind("ad_click"),
        inbound("u2", "Tue 10:00").on("instagram"),
    ]);
    let c = only(&explanation);
    assert_eq!(actions(c), vec![("u1", "opened"), ("u2", "opened")]);
    assert!(
        c.messages[0]
            .why
            .contains("the customer's first inbound event, of kind ad_click"),
        "{}",
        c.messages[0].why
    );
    assert!(
        c.messages[1]
            .why
            .contains("24 hours or more after their previous message at 2024-01-01T10:00:00Z"),
        "{}",
        c.messages[1].why
    );
}

#[test]
fn a_session_id_start_shared_by_two_conversations_lists_the_whole_ids() {
    // Two message ids of one account whose session ids share their first 8 hex digits (found
    // by trying ids in turn: about 2^16 of them give such a pair).
    let mut seen = std::collections::HashMap::new();
    let (first, second) = (0..)
        .find_map(|i: u64| {
            let id = format!("m{i}");
            let start = convbill::sessions::session_id("acme", &id)[..8].to_string();
            seen.insert(start, id.clone()).map(|other| (other, id))
        })
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let log = write_log(
        dir.path(),
        &[
            inbound("in-1", "Mon 10:00").user("user-1"),
            reply(&first, "Mon 10:05").user("user-1"),
            inbound("in-2", "Mon 11:00").user("user-2"),
            reply(&second, "Mon 11:05").user("user-2"),
        ],
    );
    let whole = [
        convbill::sessions::session_id("acme", &first),
        convbill::sessions::session_id("acme", &second),
    ];
    let selection = Selection {
        session_id: Some(whole[0][..8].to_string()),
        ..Selection::default()
    };
    let error = explain::explain(&log, &selection, None).unwrap_err();
    assert_eq!(error.exit_code(), convbill::exit::USAGE, "{error}");
    let error = error.to_string();
    assert!(error.contains("is used in 2 conversations"), "{error}");
    for id in &whole {
        assert!(error.contains(id.as_str()), "{id} in {error}");
    }
    // More of either id finds its conversation alone.
    let selection = Selection {
        session_id: Some(whole[1][..12].to_string()),
        ..Selection::default()
    };
    let explanation = explained(&log, &selection);
    assert_eq!(only(&explanation).user_id, "user-2");
}

#[test]
fn an_invoice_line_leads_through_sessions_parquet_to_the_conversations_that_made_it() {
    // The README's path for "why was this account charged N sessions?": the invoice's lines,
    // `sessions.parquet` filtered on a line, then `explain --message-id` on an opener.
    use polars::prelude::*;
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let card = Path::new(env!("CARGO_MANIFEST_DIR")).join("sample-data/rates.toml");
    crate::cli::run_command(&sample(), &out)
        .args(["-q", "--rates"])
        .arg(&card)
        .assert()
        .success();
    let invoice: serde_json::Value = serde_json::from_slice(
        &std::fs::read(out.join("invoices/2024-01/article-demo.json")).unwrap(),
    )
    .unwrap();
    let sessions = read_frame(&out.join("sessions.parquet"));
    for line in invoice["lines"].as_array().unwrap() {
        let field = |key: &str| line[key].as_str().unwrap().to_string();
        let of_line = sessions
            .clone()
            .lazy()
            .filter(
                col("account_id")
                    .eq(lit("article-demo"))
                    .and(col("period").eq(lit(field("period"))))
                    .and(col("channel").eq(lit(field("channel"))))
                    .and(col("initiation").eq(lit(field("initiation"))))
                    .and(col("price_version").eq(lit(field("price_version")))),
            )
            .collect()
            .unwrap();
        assert_eq!(of_line.height() as u64, line["sessions"].as_u64().unwrap());
        let ids = strings(&of_line, "session_id");
        for (opener, id) in strings(&of_line, "opened_by").iter().zip(&ids) {
            let mut selection = Selection {
                message_id: Some(opener.clone()),
                ..Selection::default()
            };
            selection.account = Some("article-demo".into());
            let explanation = explain::explain(&sample(), &selection, Some(&card)).unwrap();
            let c = only(&explanation);
            let step = c.messages.iter().find(|m| m.selected).unwrap();
            assert_eq!(
                (step.action, step.session_id.as_ref()),
                ("opened", Some(id))
            );
            let session = c.sessions.iter().find(|s| &s.session_id == id).unwrap();
            assert_eq!(
                session.invoice_line,
                format!(
                    "{} / {} / {}",
                    field("channel"),
                    field("initiation"),
                    field("price_version")
                )
            );
            assert_eq!(session.invoice_id, invoice["invoice_id"].as_str().unwrap());
        }
    }
}

#[test]
fn conversations_without_a_message_in_the_days_asked_are_counted_not_lost() {
    let dir = tempfile::tempdir().unwrap();
    let log = write_log(
        dir.path(),
        &[
            inbound("m1", "Mon 10:00"),
            inbound("m2", "Wed 10:00").user("user-2"),
            inbound("m3", "Wed 11:00").user("user-3"),
        ],
    );
    let mut selection = account("acme");
    selection.from = chrono::NaiveDate::from_ymd_opt(2024, 1, 3);
    let explanation = explained(&log, &selection);
    assert_eq!(explanation.conversations.len(), 2);
    assert_eq!(explanation.conversations_outside_days, 1);
    let text = explain::render(&explanation, Format::Text).unwrap();
    assert!(
        text.contains("\n1 other conversation of the selection has no message or session in those days (--from, --to).\n"),
        "{text}"
    );
    let json: serde_json::Value =
        serde_json::from_str(&explain::render(&explanation, Format::Json).unwrap()).unwrap();
    assert_eq!(json["conversations_outside_days"], 1);
    // Without --from, none is left out, and the text says nothing of it.
    selection.from = None;
    let explanation = explained(&log, &selection);
    assert_eq!(
        (
            explanation.conversations.len(),
            explanation.conversations_outside_days
        ),
        (3, 0)
    );
    let text = explain::render(&explanation, Format::Text).unwrap();
    assert!(!text.contains("other conversation"), "{text}");
}
