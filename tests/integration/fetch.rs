//! `convbill fetch-meta-analytics` against a Graph API stand-in: a real HTTP server on
//! 127.0.0.1, started by each test, that answers with the recorded shapes of Meta's responses.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::Path;
use std::sync::{Arc, Mutex};

use serde_json::{json, Value};

use crate::cli::convbill;
use crate::reconcile::{analytics_of, sample_run, WABA};

const TOKEN: &str = "EAAGtestTOKEN0123456789secret";

/// One answer of the server: status, extra headers, body. `{base}` in the body becomes the
/// server's address.
struct Reply {
    status: u16,
    headers: Vec<(&'static str, String)>,
    body: String,
}

fn ok(body: &Value) -> Reply {
    Reply {
        status: 200,
        headers: vec![],
        body: serde_json::to_string_pretty(body).unwrap(),
    }
}

fn error(status: u16, message: &str, kind: &str, code: i64) -> Reply {
    Reply {
        status,
        headers: vec![],
        body: json!({ "error": {
            "message": message, "type": kind, "code": code, "fbtrace_id": "AbCdEf123"
        }})
        .to_string(),
    }
}

/// What the server was asked: the request target and the `Authorization` header.
#[derive(Debug, Clone)]
struct Seen {
    target: String,
    authorization: Option<String>,
}

struct Server {
    base: String,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl Server {
    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

/// Starts a server that answers the requests, in order, with `replies`, then with 404s; one
/// request per connection.
fn serve(replies: Vec<Reply>) -> Server {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let seen = Arc::new(Mutex::new(Vec::new()));
    let (seen_by_server, base_of_server) = (seen.clone(), base.clone());
    std::thread::spawn(move || {
        let mut replies = replies.into_iter();
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut request_line = String::new();
            if reader.read_line(&mut request_line).is_err() {
                continue;
            }
            let mut authorization = None;
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                if let Some((name, value)) = line.split_once(':') {
                    if name.eq_ignore_ascii_case("authorization") {
                        authorization = Some(value.trim().to_string());
                    }
                }
            }
            let target = request_line
                .split_whitespace()
                .nth(1)
                .unwrap_or_default()
                .to_string();
            seen_by_server.lock().unwrap().push(Seen {
                target,
                authorization,
            });
            let reply = replies.next().unwrap_or(Reply {
                status: 404,
                headers: vec![],
                body: "{}".into(),
            });
            let body = reply.body.replace("{base}", &base_of_server);
            let mut head = format!(
                "HTTP/1.1 {} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n",
                reply.status,
                body.len()
            );
            for (name, value) in &reply.headers {
                head.push_str(&format!("{name}: {value}\r\n"));
            }
            head.push_str("\r\n");
            let _ = stream.write_all(head.as_bytes());
            let _ = stream.write_all(body.as_bytes());
        }
    });
    Server { base, seen }
}

/// `convbill fetch-meta-analytics` of the sample WABA against `server`, with short waits.
fn fetch(server: &Server, from: &str, to: &str, out: &Path) -> assert_cmd::Command {
    fetch_from(&server.base, from, to, out)
}

fn fetch_from(graph_url: &str, from: &str, to: &str, out: &Path) -> assert_cmd::Command {
    let mut command = convbill();
    command
        .env("META_ACCESS_TOKEN", TOKEN)
        .args([
            "fetch-meta-analytics",
            "--waba",
            WABA,
            "--from",
            from,
            "--to",
            to,
        ])
        .args(["--time-zone", "Asia/Jakarta", "--retry-wait", "0.01"])
        .args(["--graph-url", graph_url, "--out"])
        .arg(out);
    command
}

/// Meta's pages of `points`: the WABA node first (with `paging.next`, which carries the
/// token as Meta's do), then pages of the edge, each with `paging.previous` and all but the
/// last with `paging.next`.
fn pages(api: &str, points: &[Value], per_page: usize) -> Vec<Value> {
    let chunks: Vec<&[Value]> = points.chunks(per_page).collect();
    chunks
        .iter()
        .enumerate()
        .map(|(i, chunk)| {
            let address = |page: usize| {
                format!("{{base}}/v21.0/{WABA}/{api}?access_token={TOKEN}&limit={per_page}&after=c{page}")
            };
            let mut paging = json!({ "cursors": { "before": format!("c{i}"), "after": format!("c{}", i + 1) } });
            if i + 1 < chunks.len() {
                paging["next"] = json!(address(i + 1));
            }
            if i > 0 {
                paging["previous"] = json!(address(i - 1).replace("after=", "before="));
            }
            let edge = json!({ "data": [{ "data_points": chunk }], "paging": paging });
            match i {
                0 => json!({ api: edge, "id": WABA }),
                _ => edge,
            }
        })
        .collect()
}

#[test]
fn every_page_is_fetched_through_rate_limits_and_outages_and_reconciles() {
    let dir = tempfile::tempdir().unwrap();
    let out = sample_run(dir.path());
    let points = analytics_of(&out);
    let of = |api: &str| -> Vec<Value> {
        points
            .iter()
            .filter(|(a, _)| *a == api)
            .map(|(_, p)| p.clone())
            .collect()
    };
    let conversations = pages("conversation_analytics", &of("conversation_analytics"), 20);
    let pricing = pages("pricing_analytics", &of("pricing_analytics"), 100);
    assert!(conversations.len() >= 3 && pricing.len() >= 2);
    // The sample's days: 2025-06-15 to 2025-07-15, in Jakarta.
    let mut replies = vec![
        ok(&conversations[0]),
        error(
            400,
            "(#4) Application request limit reached",
            "OAuthException",
            4,
        ),
        Reply {
            status: 503,
            headers: vec![("Retry-After", "0".into())],
            body: "<html>Service Unavailable</html>".into(),
        },
    ];
    replies.extend(conversations[1..].iter().map(ok));
    replies.push(Reply {
        status: 429,
        headers: vec![],
        body: "{\"error\": {\"message\": \"too many calls\", \"code\": 80007}}".into(),
    });
    replies.extend(pricing.iter().map(ok));
    let server = serve(replies);
    let analytics = dir.path().join("analytics");
    let assert = fetch(&server, "2025-06-15", "2025-07-15", &analytics)
        .assert()
        .success();
    let stderr = String::from_utf8(assert.get_output().stderr.clone()).unwrap();
    assert!(!stderr.contains(TOKEN), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "fetched conversation_analytics of WABA {WABA} from 2025-06-15 to 2025-06-30: {} pages, {} data points",
            conversations.len(),
            of("conversation_analytics").len()
        )),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!(
            "fetched pricing_analytics of WABA {WABA} from 2025-07-01 to 2025-07-15: {} pages",
            pricing.len()
        )),
        "{stderr}"
    );
    assert!(stderr.contains("(#4) Application request limit reached (OAuthException, code 4, fbtrace_id AbCdEf123); trying again"), "{stderr}");
    assert!(
        stderr.contains("HTTP 503: <html>Service Unavailable</html>; trying again"),
        "{stderr}"
    );
    assert!(
        stderr.contains("tried again 3 times after rate limits"),
        "{stderr}"
    );

    // The requests: the node with every dimension from Jakarta's midnights, then the pages
    // `paging.next` names without the token; the token only ever in the header.
    let seen = server.seen();
    assert_eq!(seen.len(), conversations.len() + pricing.len() + 3);
    assert!(seen
        .iter()
        .all(|s| s.authorization.as_deref() == Some(&format!("Bearer {TOKEN}")[..])));
    assert!(seen.iter().all(|s| !s.target.contains(TOKEN)), "{seen:?}");
    // 2025-06-15 00:00 in Jakarta is 2025-06-14 17:00 UTC; 2025-07-01 00:00 is 2025-06-30 17:00.
    assert_eq!(
        seen[0].target,
        format!("/v21.0/{WABA}?fields=conversation_analytics.start(1749920400).end(1751302800).granularity(DAILY).dimensions(%5B%22CONVERSATION_CATEGORY%22,%22CONVERSATION_TYPE%22,%22CONVERSATION_DIRECTION%22,%22COUNTRY%22,%22PHONE%22%5D)")
    );
    assert_eq!(
        seen[1].target,
        format!("/v21.0/{WABA}/conversation_analytics?limit=20&after=c1")
    );
    assert_eq!(seen[1].target, seen[2].target);
    assert_eq!(seen[2].target, seen[3].target);
    assert!(seen[conversations.len() + 3]
        .target
        .starts_with(&format!("/v21.0/{WABA}?fields=pricing_analytics.start(1751302800).end(1752598800).granularity(DAILY)")));

    // The raw pages, one file each, the echoed token replaced.
    let mut files: Vec<String> = std::fs::read_dir(&analytics)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| !name.starts_with('.'))
        .collect();
    files.sort();
    assert_eq!(files.len(), conversations.len() + pricing.len());
    assert_eq!(
        files[0],
        "conversation_analytics-2025-06-15-2025-06-30-page-0001.json"
    );
    // Each file is the body as served, byte for byte, but for the token.
    for (name, served) in files.iter().zip(conversations.iter().chain(&pricing)) {
        let text = std::fs::read_to_string(analytics.join(name)).unwrap();
        assert!(!text.contains(TOKEN), "{name}");
        let body = serde_json::to_string_pretty(served)
            .unwrap()
            .replace("{base}", &server.base)
            .replace(TOKEN, "REDACTED");
        assert_eq!(text, body, "{name}");
    }
    let first = std::fs::read_to_string(analytics.join(&files[0])).unwrap();
    assert!(
        first.contains("access_token=REDACTED&limit=20&after=c1"),
        "{first}"
    );

    // What was fetched reconciles with the run: every cell matches.
    let assert = convbill()
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args(["reconcile", "--fail-on-difference", "--out"])
        .arg(&out)
        .arg("--meta-analytics")
        .arg(&analytics)
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

    // Into one `.json` file (in any case): the list of pages, which reconcile reads the same.
    let replies = conversations.iter().chain(&pricing).map(ok).collect();
    let server = serve(replies);
    let file = dir.path().join("analytics.JSON");
    fetch(&server, "2025-06-15", "2025-07-15", &file)
        .assert()
        .success();
    let list: Value = serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
    assert_eq!(
        list.as_array().unwrap().len(),
        conversations.len() + pricing.len()
    );
    convbill()
        .args(["reconcile", "-q", "--fail-on-difference", "--out"])
        .arg(&out)
        .arg("--meta-analytics")
        .arg(&file)
        .assert()
        .success();
}

#[test]
fn an_expired_token_stops_at_once_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let server = serve(vec![error(
        401,
        "Error validating access token: Session has expired on Sunday, 30-Nov-25 10:00:00 PST.",
        "OAuthException",
        190,
    )]);
    let out = dir.path().join("analytics");
    let assert = fetch(&server, "2025-07-01", "2025-07-31", &out)
        .assert()
        .code(6);
    let stderr = String::from_utf8(assert.get_output().stderr.clone()).unwrap();
    assert!(
        stderr.contains(&format!("error: Meta's Graph API, pricing_analytics of WABA {WABA} from 2025-07-01 to 2025-07-31, page 1: HTTP 401: Error validating access token: Session has expired")),
        "{stderr}"
    );
    assert!(
        stderr.contains("(OAuthException, code 190, fbtrace_id AbCdEf123)"),
        "{stderr}"
    );
    assert!(
        stderr.contains("hint: the access token in META_ACCESS_TOKEN has expired"),
        "{stderr}"
    );
    assert!(!stderr.contains(TOKEN), "{stderr}");
    assert_eq!(server.seen().len(), 1, "not tried again");
    assert!(!out.exists());
    assert!(
        std::fs::read_dir(dir.path()).unwrap().next().is_none(),
        "nothing beside it"
    );
}

#[test]
fn a_lasting_outage_gives_up_and_the_earlier_pages_stay() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("analytics");
    std::fs::create_dir(&out).unwrap();
    std::fs::write(out.join("earlier.json"), "{}").unwrap();
    // A folder convbill did not fetch into is never replaced: nothing is asked.
    let nobody = serve(vec![]);
    fetch(&nobody, "2025-07-01", "2025-07-02", &out)
        .assert()
        .code(2)
        .stderr(predicates::str::contains(format!(
            "refusing to replace `{}`: it holds `earlier.json`, which convbill did not write there",
            out.display()
        )));
    assert!(nobody.seen().is_empty());
    // An earlier fetch's folder (its hidden mark) is.
    std::fs::write(
        out.join(".convbill-analytics"),
        "{\"written_by\": \"convbill fetch-meta-analytics\"}",
    )
    .unwrap();
    let page = json!({ "pricing_analytics": { "data": [{ "data_points": [] }], "paging": {
        "next": format!("{{base}}/v21.0/{WABA}/pricing_analytics?after=c1") } }, "id": WABA });
    let failing = || {
        error(
            500,
            "An unexpected error has occurred.",
            "OAuthException",
            2,
        )
    };
    let server = serve(vec![ok(&page), failing(), failing(), failing()]);
    let assert = fetch(&server, "2025-07-01", "2025-07-02", &out)
        .args(["--attempts", "3"])
        .assert()
        .code(6);
    let stderr = String::from_utf8(assert.get_output().stderr.clone()).unwrap();
    assert!(
        stderr.contains(
            "page 2: gave up after 3 attempts: HTTP 500: An unexpected error has occurred."
        ),
        "{stderr}"
    );
    assert_eq!(server.seen().len(), 4);
    let names = || -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(&out)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|name| !name.starts_with('.'))
            .collect();
        names.sort();
        names
    };
    assert_eq!(names(), ["earlier.json"]);

    // Another convbill holds the folder: the pages are not put in place (exit 4).
    let empty = json!({ "pricing_analytics": { "data": [{ "data_points": [] }] }, "id": WABA });
    let folder = convbill::folder::OutFolder::new(&out).unwrap();
    let held = folder.lock().unwrap();
    fetch(&serve(vec![ok(&empty)]), "2025-07-01", "2025-07-02", &out)
        .assert()
        .code(convbill::exit::BUSY);
    assert_eq!(names(), ["earlier.json"]);
    drop(held);
    // A file added to a fetch's folder makes it no longer only convbill's.
    std::fs::write(out.join("notes.txt"), "mine").unwrap();
    fetch(&serve(vec![]), "2025-07-01", "2025-07-02", &out)
        .assert()
        .code(2)
        .stderr(predicates::str::contains("it holds `notes.txt`"));
    std::fs::remove_file(out.join("notes.txt")).unwrap();
    // Once done, the folder holds this fetch's pages only.
    fetch(&serve(vec![ok(&empty)]), "2025-07-01", "2025-07-02", &out)
        .assert()
        .success();
    assert_eq!(
        names(),
        ["pricing_analytics-2025-07-01-2025-07-02-page-0001.json"]
    );
}

#[test]
fn the_token_goes_nowhere_but_the_graph_api() {
    let dir = tempfile::tempdir().unwrap();
    let elsewhere = serve(vec![]);
    let page = json!({ "pricing_analytics": { "data": [{ "data_points": [] }], "paging": {
        "next": format!("{}/v21.0/{WABA}/pricing_analytics?after=c1", elsewhere.base) } }, "id": WABA });
    let server = serve(vec![ok(&page)]);
    let out = dir.path().join("analytics");
    let assert = fetch(&server, "2025-07-01", "2025-07-01", &out)
        .assert()
        .code(6);
    let stderr = String::from_utf8(assert.get_output().stderr.clone()).unwrap();
    assert!(
        stderr.contains("not sending the access token there"),
        "{stderr}"
    );
    assert!(!stderr.contains("has not ended"), "{stderr}");
    assert!(elsewhere.seen().is_empty());
    assert!(!out.exists());

    // No token, or plain http to another machine: nothing is asked at all (exit 2).
    let assert = fetch(&server, "2025-07-01", "2025-07-01", &out)
        .env_remove("META_ACCESS_TOKEN")
        .assert()
        .code(2);
    let stderr = String::from_utf8(assert.get_output().stderr.clone()).unwrap();
    assert!(stderr.contains("META_ACCESS_TOKEN is not set"), "{stderr}");
    let assert = fetch_from(
        "http://graph.facebook.com",
        "2025-07-01",
        "2025-07-01",
        &out,
    )
    .assert()
    .code(2);
    let stderr = String::from_utf8(assert.get_output().stderr.clone()).unwrap();
    assert!(stderr.contains("plain http"), "{stderr}");
    // A day that has not ended is fetched, and said to be partial (tomorrow in UTC has not
    // ended in Jakarta either).
    let today = chrono::Utc::now()
        .date_naive()
        .succ_opt()
        .unwrap()
        .to_string();
    let empty = json!({ "pricing_analytics": { "data": [{ "data_points": [] }] }, "id": WABA });
    fetch(&serve(vec![ok(&empty)]), "2025-07-01", &today, &out)
        .assert()
        .success()
        .stderr(predicates::str::contains(format!(
            "{today} has not ended in Asia/Jakarta: Meta's figures for the days up to it are partial"
        )));
    std::fs::remove_dir_all(&out).unwrap();
    let assert = fetch(&server, "2025-07-02", "2025-07-01", &out)
        .assert()
        .code(2);
    let stderr = String::from_utf8(assert.get_output().stderr.clone()).unwrap();
    assert!(
        stderr.contains("`--from 2025-07-02` is after `--to 2025-07-01`"),
        "{stderr}"
    );
    assert_eq!(server.seen().len(), 1);
}

#[test]
fn sigterm_while_waiting_to_try_again_stops_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let server = serve(vec![error(
        503,
        "Service temporarily unavailable",
        "OAuthException",
        2,
    )]);
    let out = dir.path().join("analytics");
    let started = std::time::Instant::now();
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_convbill"))
        .env("META_ACCESS_TOKEN", TOKEN)
        .args([
            "fetch-meta-analytics",
            "--waba",
            WABA,
            "--from",
            "2025-07-01",
        ])
        .args([
            "--to",
            "2025-07-01",
            "--time-zone",
            "UTC",
            "--retry-wait",
            "60",
        ])
        .args(["--graph-url", &server.base, "--out"])
        .arg(&out)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Wait until the first attempt has failed, then signal during the minute's wait.
    while server.seen().is_empty() {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    std::thread::sleep(std::time::Duration::from_millis(300));
    // Meanwhile the output is this fetch's: a second one stops at once (exit 4).
    fetch(&server, "2025-07-01", "2025-07-01", &out)
        .assert()
        .code(convbill::exit::BUSY);
    assert_eq!(server.seen().len(), 1);
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let output = child.wait_with_output().unwrap();
    assert_eq!(output.status.code(), Some(convbill::exit::INTERRUPTED));
    assert!(
        started.elapsed() < std::time::Duration::from_secs(30),
        "it did not sleep out the wait"
    );
    assert!(String::from_utf8_lossy(&output.stderr).contains("trying again in 60.0 s"));
    assert_eq!(server.seen().len(), 1);
    assert!(!out.exists());
    assert!(std::fs::read_dir(dir.path()).unwrap().next().is_none());
}

#[test]
fn odd_tokens_arguments_loops_and_redirects_are_stopped() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("analytics");
    let nobody = serve(vec![]);
    // Refused before any request (exit 2).
    let refused = |command: &mut assert_cmd::Command, says: &str| {
        command
            .assert()
            .code(2)
            .stderr(predicates::str::contains(says.to_string()));
    };
    refused(
        fetch(&nobody, "2025-07-01", "2025-07-01", &out)
            .env("META_ACCESS_TOKEN", format!("{TOKEN}\n")),
        "META_ACCESS_TOKEN holds a line break, which no access token has",
    );
    refused(
        &mut fetch(&nobody, "2030-01-01", "2030-01-02", &out),
        "`--from 2030-01-01` has not begun in Asia/Jakarta",
    );
    refused(
        fetch(&nobody, "2025-07-01", "2025-07-01", &out).args(["--timeout", "nan"]),
        "`--timeout NaN` is not a number of seconds above 0",
    );
    refused(
        fetch(&nobody, "2025-07-01", "2025-07-01", &out).args(["--timeout", "0"]),
        "`--timeout 0` is not a number of seconds above 0",
    );
    refused(
        fetch(&nobody, "2025-07-01", "2025-07-01", &out).args(["--api-version", "v21.0/../x"]),
        "`--api-version v21.0/../x` is not a Graph API version",
    );
    let notes = dir.path().join("notes.json");
    std::fs::write(&notes, "my notes").unwrap();
    refused(
        &mut fetch(&nobody, "2025-07-01", "2025-07-01", &notes),
        "refusing to replace",
    );
    assert_eq!(std::fs::read_to_string(&notes).unwrap(), "my notes");
    assert!(nobody.seen().is_empty());
    assert!(!out.exists());

    // `paging.next` that leads back to a page already fetched: stopped, not followed forever.
    let next = format!("{{base}}/v21.0/{WABA}/pricing_analytics?after=c1");
    let first = json!({ "pricing_analytics": { "data": [{ "data_points": [] }], "paging": { "next": next } }, "id": WABA });
    let again = json!({ "data": [{ "data_points": [] }], "paging": { "next": next } });
    let server = serve(vec![ok(&first), ok(&again), ok(&again)]);
    fetch(&server, "2025-07-01", "2025-07-01", &out)
        .assert()
        .code(6)
        .stderr(predicates::str::contains(
            "page 3: `paging.next` leads back to a page already fetched",
        ));
    assert_eq!(server.seen().len(), 2);
    assert!(!out.exists());

    // The same cursor with other parameters each time is the same loop.
    let first = json!({ "pricing_analytics": { "data": [{ "data_points": [] }], "paging": {
        "next": format!("{{base}}/v21.0/{WABA}/pricing_analytics?after=c1&n=1") } }, "id": WABA });
    let again = json!({ "data": [{ "data_points": [] }], "paging": {
        "next": format!("{{base}}/v21.0/{WABA}/pricing_analytics?after=c1&n=2") } });
    let server = serve(vec![ok(&first), ok(&again), ok(&again)]);
    fetch(&server, "2025-07-01", "2025-07-01", &out)
        .assert()
        .code(6)
        .stderr(predicates::str::contains(
            "leads back to a page already fetched",
        ));
    assert_eq!(server.seen().len(), 2);

    // A redirect is not followed: not to another server, not with the token.
    let elsewhere = serve(vec![]);
    let server = serve(vec![Reply {
        status: 302,
        headers: vec![("Location", format!("{}/x", elsewhere.base))],
        body: String::new(),
    }]);
    fetch(&server, "2025-07-01", "2025-07-01", &out)
        .assert()
        .code(6)
        .stderr(predicates::str::contains(format!(
            "HTTP 302: a redirect to `{}/x`, not followed",
            elsewhere.base
        )));
    assert!(elsewhere.seen().is_empty());

    // A token Meta echoes percent-encoded (`|` as `%7C`) is redacted too.
    let token = "1234567890|secretPART";
    let first = json!({ "pricing_analytics": { "data": [{ "data_points": [] }], "paging": {
        "next": format!("{{base}}/v21.0/{WABA}/pricing_analytics?access_token=1234567890%7CsecretPART&after=c1") } }, "id": WABA });
    let last = json!({ "data": [{ "data_points": [] }] });
    let server = serve(vec![ok(&first), ok(&last)]);
    fetch(&server, "2025-07-01", "2025-07-01", &out)
        .env("META_ACCESS_TOKEN", token)
        .assert()
        .success();
    for entry in std::fs::read_dir(&out).unwrap() {
        let text = std::fs::read_to_string(entry.unwrap().path()).unwrap();
        assert!(!text.contains("secretPART"), "{text}");
    }
    // However Meta encodes it: lower-case hex, only some characters.
    let token = "123456|AbCd/Ef";
    for echoed in ["123456%7cAbCd%2fEf", "123456%7CAbCd/Ef"] {
        let first = json!({ "pricing_analytics": { "data": [{ "data_points": [] }], "paging": {
            "next": format!("{{base}}/v21.0/{WABA}/pricing_analytics?access_token={echoed}&after=c1") } }, "id": WABA });
        let server = serve(vec![ok(&first), ok(&last)]);
        fetch(&server, "2025-07-01", "2025-07-01", &out)
            .env("META_ACCESS_TOKEN", token)
            .assert()
            .success();
        for entry in std::fs::read_dir(&out).unwrap() {
            let text = std::fs::read_to_string(entry.unwrap().path()).unwrap();
            assert!(!text.contains("AbCd"), "{text}");
        }
    }
    assert_eq!(
        server.seen()[1].target,
        format!("/v21.0/{WABA}/pricing_analytics?after=c1")
    );
}
