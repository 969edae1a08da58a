//! `report.html`: self-contained, the manifest's totals, and charts that a real browser
//! (Debian's headless `chromium`, which `.ci/run` installs) renders without errors.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::cli::{convbill, run_command, run_quietly};
use crate::support::*;

/// Runs the bundled sample with its rate card into `dir/out`; the output folder.
fn sample_run(dir: &Path) -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = dir.join("out");
    convbill()
        .current_dir(root)
        .args([
            "run",
            "--input",
            "sample-data",
            "--rates",
            "sample-data/rates.toml",
            "-q",
        ])
        .arg("--out")
        .arg(&out)
        .assert()
        .success();
    out
}

/// Nights of the bundled sample with its rate card into `out`, one run per argument list.
fn sample_nights(out: &Path, runs: &[&[&str]]) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    for args in runs {
        convbill()
            .current_dir(root)
            .args(["run", "--rates", "sample-data/rates.toml", "-q", "--out"])
            .arg(out)
            .args(*args)
            .assert()
            .success();
    }
}

/// `n` as the report shows it: in groups of three digits.
fn grouped(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, digit) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(digit);
    }
    out
}

/// The invoice documents in `dir` (one period's), and the sessions they bill.
pub(crate) fn invoiced_sessions(dir: &Path) -> (u64, u64) {
    let (mut invoices, mut sessions) = (0, 0);
    for entry in std::fs::read_dir(dir).unwrap() {
        let invoice: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(entry.unwrap().path()).unwrap()).unwrap();
        invoices += 1;
        sessions += invoice["totals"]["sessions"].as_u64().unwrap();
    }
    (invoices, sessions)
}

/// The sum of the numbers beneath chart `name` (its table, days and days not covered aside).
pub(crate) fn chart_total(html: &str, name: &str) -> u64 {
    let table = &html[html.find(&format!("data-chart=\"{name}\"")).unwrap()..];
    let table = &table[table.find("<tbody>").unwrap()..table.find("</tbody>").unwrap()];
    table
        .split("<tr")
        .skip(1)
        .filter(|row| !row.starts_with(" class=\"uncovered\""))
        .flat_map(|row| row.split("<td>").skip(2))
        .map(|cell| {
            let number = cell.split("</td>").next().unwrap().replace(',', "");
            number.parse::<u64>().unwrap()
        })
        .sum()
}

/// The text of the element with `id` in `html` (`<td id="ID">TEXT</td>`).
fn by_id<'a>(html: &'a str, id: &str) -> &'a str {
    let start = html
        .find(&format!("id=\"{id}\">"))
        .unwrap_or_else(|| panic!("no element {id}"))
        + id.len()
        + 6;
    &html[start..start + html[start..].find('<').unwrap()]
}

/// The number of days chart `name` shows as covered (`data-covered`).
fn covered(figure: &str) -> usize {
    let start = figure.find("data-covered=\"").unwrap() + 14;
    figure[start..start + figure[start..].find('"').unwrap()]
        .parse()
        .unwrap()
}

/// Each chart's (name, series, points) from its `<figure>`, and the figure's markup.
fn figures(html: &str) -> Vec<(String, usize, usize, String)> {
    html.split("<figure ")
        .skip(1)
        .map(|rest| {
            let figure = &rest[..rest.find("</figure>").unwrap()];
            let attribute = |name: &str| -> String {
                let start = figure.find(&format!("{name}=\"")).unwrap() + name.len() + 2;
                figure[start..start + figure[start..].find('"').unwrap()].to_string()
            };
            (
                attribute("data-chart"),
                attribute("data-series").parse().unwrap(),
                attribute("data-points").parse().unwrap(),
                figure.to_string(),
            )
        })
        .collect()
}

/// The number of points of each series' line in a chart's markup (the mesh's lines are
/// thinner).
fn series_lines(figure: &str) -> Vec<usize> {
    figure
        .split("stroke-width=\"2\" points=\"")
        .skip(1)
        .map(|rest| rest[..rest.find('"').unwrap()].split_whitespace().count())
        .collect()
}

#[test]
fn a_run_writes_a_self_contained_report_with_the_manifests_totals() {
    let dir = tempfile::tempdir().unwrap();
    let out = sample_run(dir.path());
    let html = std::fs::read_to_string(out.join("report.html")).unwrap();
    // Nothing from elsewhere: it opens from a mail attachment. (SVG's namespace is a name,
    // not an address anything is fetched from.)
    let fetched = html.replace("xmlns=\"http://www.w3.org/2000/svg\"", "");
    for outside in [
        "http://", "https://", "<script", "<link", "src=", "@import", "url(",
    ] {
        assert!(!fetched.contains(outside), "{outside} in report.html");
    }
    let manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("manifest.json")).unwrap()).unwrap();
    let number = |v: &serde_json::Value| grouped(v.as_u64().unwrap());
    assert_eq!(
        by_id(&html, "total-invoices"),
        number(&manifest["invoices"]["invoices"])
    );
    assert_eq!(
        by_id(&html, "total-sessions"),
        number(&manifest["sessions"]["sessions"])
    );
    assert_eq!(
        by_id(&html, "total-quota"),
        number(&manifest["invoices"]["quota"])
    );
    assert_eq!(
        by_id(&html, "violations"),
        number(&manifest["sessions"]["violations"])
    );
    let stats = &manifest["input"];
    assert_eq!(by_id(&html, "rows-read"), number(&stats["rows_read"]));
    assert_eq!(
        by_id(&html, "duplicates"),
        number(&stats["duplicates_dropped"])
    );
    let amounts: Vec<String> = manifest["invoices"]["amounts"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(currency, amount)| format!("{} {currency}", amount.as_str().unwrap()))
        .collect();
    // The sample's amounts are below a thousand.
    assert_eq!(by_id(&html, "total-amount"), amounts.join(", "));
    // The charts count every session, each on the day it started.
    let charted: u64 = figures(&html)
        .iter()
        .filter(|f| f.0.starts_with("sessions-"))
        .map(|f| chart_total(&html, &f.0))
        .sum();
    assert_eq!(charted, manifest["sessions"]["sessions"].as_u64().unwrap());
    // Every invoice has its anchor.
    let invoices = std::fs::read_dir(out.join("invoices")).unwrap().count();
    assert!(invoices > 0);
    assert_eq!(
        html.matches("<details id=\"invoice-").count() as u64,
        manifest["invoices"]["invoices"].as_u64().unwrap()
    );
    // The manifest lists it, with its checksum, and a rerun writes the same bytes.
    let listed = manifest["outputs"]
        .as_array()
        .unwrap()
        .iter()
        .any(|o| o["path"] == "report.html");
    assert!(listed, "{}", manifest["outputs"]);
    let again = sample_run(&dir.path().join("again"));
    assert_eq!(
        html,
        std::fs::read_to_string(again.join("report.html")).unwrap()
    );
}

#[test]
fn every_invoice_opens_to_its_lines_with_the_quota_within_the_allowance() {
    let dir = tempfile::tempdir().unwrap();
    let out = sample_run(dir.path());
    let html = std::fs::read_to_string(out.join("report.html")).unwrap();
    let mut checked = 0;
    for period in std::fs::read_dir(out.join("invoices")).unwrap() {
        for file in std::fs::read_dir(period.unwrap().path()).unwrap() {
            let invoice: serde_json::Value =
                serde_json::from_str(&std::fs::read_to_string(file.unwrap().path()).unwrap())
                    .unwrap();
            let id = invoice["invoice_id"].as_str().unwrap();
            let block = &html[html
                .find(&format!("<details id=\"invoice-{id}\">"))
                .unwrap()..];
            let block = &block[..block.find("</details>").unwrap()];
            let rows: Vec<Vec<String>> = block
                .split("<tr><td>")
                .skip(1)
                .map(|row| {
                    row.split("</td><td>")
                        .map(|cell| cell.replace("</td></tr>", "").trim().to_string())
                        .collect()
                })
                .collect();
            let lines = invoice["lines"].as_array().unwrap();
            assert_eq!(rows.len(), lines.len(), "{id}");
            for (row, line) in rows.iter().zip(lines) {
                let n = |key: &str| grouped(line[key].as_u64().unwrap());
                assert_eq!(
                    row[..6],
                    [
                        format!(
                            "{} / {} / {}",
                            line["channel"].as_str().unwrap(),
                            line["initiation"].as_str().unwrap(),
                            line["price_version"].as_str().unwrap()
                        ),
                        n("sessions"),
                        n("billable_sessions"),
                        n("quota"),
                        n("allowance_quota"),
                        n("overage_quota"),
                    ],
                    "{id}"
                );
            }
            // A draft says what it covers so far; a final one covers its period.
            let status = invoice["status"].as_str().unwrap();
            let summary = &block[..block.find("</summary>").unwrap()];
            assert!(
                summary.contains(&format!(" &middot; {status}")),
                "{summary}"
            );
            if status == "final" {
                assert!(!summary.contains("covers"), "{summary}");
            }
            checked += 1;
        }
    }
    assert!(checked >= 10, "{checked}");
}

#[test]
fn every_chart_has_a_line_per_series_and_a_dot_per_point() {
    let dir = tempfile::tempdir().unwrap();
    let html = std::fs::read_to_string(sample_run(dir.path()).join("report.html")).unwrap();
    let figures = figures(&html);
    // Per period: sessions per day, violations per day, quota against allowance.
    assert!(
        figures.iter().any(|f| f.0 == "sessions-2026-10"),
        "{figures:?}"
    );
    for (name, series, points, figure) in &figures {
        if figure.contains("<figcaption>none</figcaption>") {
            assert_eq!((*series, *points), (0, 0), "{name}");
            continue;
        }
        assert!(*series > 0 && *points > 0, "{name}");
        if name.starts_with("quota-") {
            // Every quota bar is seen, however large the allowances beside it (September's
            // quota of 2 stands beside an allowance of 1,000).
            let heights: Vec<u32> = figure
                .split("<rect ")
                .skip(1)
                .filter(|rect| rect.contains("fill=\"#1F77B4\""))
                .map(|rect| {
                    let at = rect.find("height=\"").unwrap() + 8;
                    rect[at..at + rect[at..].find('"').unwrap()]
                        .parse()
                        .unwrap()
                })
                .collect();
            assert_eq!(heights.len(), *points, "{name}");
            assert!(heights.iter().all(|h| *h >= 2), "{name}: {heights:?}");
            continue;
        }
        // A line per series and run of covered days: each series draws every covered day,
        // once, with a dot.
        let (lines, covered) = (series_lines(figure), covered(figure));
        assert!(covered > 0 && covered <= *points, "{name}");
        assert_eq!(lines.len() % series, 0, "{name}: {lines:?}");
        assert_eq!(lines.iter().sum::<usize>(), series * covered, "{name}");
        assert_eq!(
            figure.matches("<circle").count(),
            series * covered,
            "{name}"
        );
    }
    let october = figures.iter().find(|f| f.0 == "sessions-2026-10").unwrap();
    // Four kinds of session (two WhatsApp initiations, Messenger, Instagram) over October's
    // 31 days, every one covered: one line each.
    assert_eq!((october.1, october.2, covered(&october.3)), (4, 31, 31));
    assert_eq!(series_lines(&october.3), [31; 4]);
}

/// The report.html of a whole run of `events` (account `acme`).
fn report_of(events: &[Ev]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let log = write_log(dir.path(), events);
    let out = dir.path().join("out");
    run_quietly(&log, &out);
    std::fs::read_to_string(out.join("report.html")).unwrap()
}

/// Chromium, headless, on a file: its DOM and its log.
fn chromium(args: &[&str], page: &Path) -> (String, String) {
    let output = Command::new("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
        ])
        .args(["--enable-logging=stderr", "--v=0"])
        .args(args)
        .arg(format!("file://{}", page.display()))
        .output()
        .expect("chromium runs (Debian's `chromium` package; .ci/run installs it)");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    (
        String::from_utf8(output.stdout).unwrap(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn chromium_renders_the_report_with_its_charts_and_totals() {
    let dir = tempfile::tempdir().unwrap();
    let out = sample_run(dir.path());
    let page = out.join("report.html");
    let written = std::fs::read_to_string(&page).unwrap();
    let (dom, log) = chromium(&["--dump-dom"], &page);
    assert!(!log.contains("CONSOLE"), "{log}");
    assert!(!log.contains("Uncaught"), "{log}");
    // The browser read the whole page: the same charts, series, points and totals.
    let shown = figures(&dom);
    let expected = figures(&written);
    assert_eq!(shown.len(), expected.len());
    for (shown, expected) in shown.iter().zip(&expected) {
        assert_eq!(
            (&shown.0, shown.1, shown.2),
            (&expected.0, expected.1, expected.2)
        );
        assert_eq!(series_lines(&shown.3), series_lines(&expected.3));
        assert_eq!(
            shown.3.matches("<circle").count(),
            expected.3.matches("<circle").count()
        );
    }
    for id in [
        "total-invoices",
        "total-sessions",
        "total-quota",
        "total-amount",
        "violations",
    ] {
        assert_eq!(by_id(&dom, id), by_id(&written, id), "{id}");
    }
    // And it draws: a screenshot of the page is a PNG of the window's size.
    let png = dir.path().join("report.png");
    let screenshot = format!("--screenshot={}", png.display());
    chromium(&[&screenshot, "--window-size=1100,3000"], &page);
    let bytes = std::fs::read(&png).unwrap();
    assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n");
    let (width, height) = (
        u32::from_be_bytes(bytes[16..20].try_into().unwrap()),
        u32::from_be_bytes(bytes[20..24].try_into().unwrap()),
    );
    assert_eq!((width, height), (1100, 3000));
}

/// The rows of the table beneath chart `name`: `DAY N N ...`, or `DAY not covered`.
fn chart_rows(html: &str, name: &str) -> Vec<String> {
    let table = &html[html.find(&format!("data-chart=\"{name}\"")).unwrap()..];
    let table = &table[table.find("<tbody>").unwrap()..table.find("</tbody>").unwrap()];
    table
        .split("<tr")
        .skip(1)
        .map(|row| {
            let row = &row[row.find('>').unwrap() + 1..];
            row.split("</td>")
                .map(|cell| cell[cell.rfind('>').map_or(0, |at| at + 1)..].trim())
                .filter(|cell| !cell.is_empty())
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect()
}

#[test]
fn a_day_without_sessions_is_a_zero_and_a_day_not_covered_is_a_gap() {
    // Sessions on Monday and Thursday; a violation on Tuesday; no message on Wednesday.
    let html = report_of(&[
        inbound("u1", "Mon 10:00"),
        reply("r1", "Mon 10:05"),
        reply("r2", "Tue 12:00"),
        inbound("u2", "Thu 10:00"),
        reply("r3", "Thu 10:05"),
    ]);
    let figures = figures(&html);
    let chart = |name: &str| figures.iter().find(|f| f.0 == name).unwrap();
    let (sessions, violations) = (chart("sessions-2024-01"), chart("violations-2024-01"));
    // Both charts span January; Monday, Tuesday and Thursday are covered.
    assert_eq!((sessions.1, sessions.2, covered(&sessions.3)), (1, 31, 3));
    assert_eq!(
        (violations.1, violations.2, covered(&violations.3)),
        (1, 31, 3)
    );
    // Wednesday is a gap in the line, not a 0: Monday to Tuesday, then Thursday.
    assert_eq!(series_lines(&sessions.3), [2, 1]);
    assert!(sessions
        .3
        .contains("A gap in the lines: days the input (or the nights run so far) does not cover."));
    let mut expected = vec![
        "2024-01-01 1".to_string(),
        "2024-01-02 0".to_string(),
        "2024-01-03 not covered".to_string(),
        "2024-01-04 1".to_string(),
    ];
    expected.extend((5..=31).map(|day| format!("2024-01-{day:02} not covered")));
    assert_eq!(chart_rows(&html, "sessions-2024-01"), expected);
    // The invoice is partial: it says what it covers and which day is missing.
    assert!(html.contains("<td class=\"text\">1 partial</td>"), "{html}");
    assert!(
        html.contains("partial (covers 2024-01-01T00:00:00Z to 2024-01-05T00:00:00Z; missing 2024-01-03T00:00:00Z to 2024-01-04T00:00:00Z)"),
        "{html}"
    );
    let violations = chart_rows(&html, "violations-2024-01");
    assert_eq!(
        violations[..4],
        [
            "2024-01-01 0",
            "2024-01-02 1",
            "2024-01-03 not covered",
            "2024-01-04 0"
        ]
    );
}

#[test]
fn sessions_are_charted_on_the_days_of_their_accounts_zone() {
    // 20:00 UTC on 31 January is 03:00 on 1 February in Jakarta: a February session there,
    // and a January one in UTC.
    let dir = tempfile::tempdir().unwrap();
    let log = write_log(
        dir.path(),
        &[
            template("j1", "2024-01-31 20:00").account("jkt"),
            template("u1", "2024-01-31 20:00").account("utc"),
        ],
    );
    let card = dir.path().join("rates.toml");
    std::fs::write(
        &card,
        "default_plan = \"p\"\n[plans.p]\ncurrency = \"USD\"\n[[plans.p.versions]]\neffective = \"2024-01-01\"\nincluded_quota = 0\nunit_price = \"0.01\"\n[accounts.jkt]\ntime_zone = \"Asia/Jakarta\"\n",
    )
    .unwrap();
    let out = dir.path().join("out");
    run_command(&log, &out)
        .args(["-q", "--rates"])
        .arg(&card)
        .assert()
        .success();
    let html = std::fs::read_to_string(out.join("report.html")).unwrap();
    // The log covers the UTC day 31 January: for Jakarta, its 1 February to 07:00, only part
    // of that day (a hollow dot). January's only invoice is UTC's, which covers its 31st whole.
    let january = chart_rows(&html, "sessions-2024-01");
    assert_eq!(january.len(), 31);
    assert_eq!(january[30], "2024-01-31 1");
    assert!(january[..30].iter().all(|row| row.ends_with("not covered")));
    let february = chart_rows(&html, "sessions-2024-02");
    assert_eq!(february.len(), 29);
    assert_eq!(february[0], "2024-02-01 (part of the day) 1");
    assert!(
        february[1..].iter().all(|row| row.ends_with("not covered")),
        "{february:?}"
    );
    let figures = figures(&html);
    let chart = figures.iter().find(|f| f.0 == "sessions-2024-02").unwrap();
    assert!(
        chart.3.contains("data-covered=\"1\" data-part=\"1\""),
        "{}",
        chart.3
    );
    assert!(chart.3.contains("A hollow dot: a day covered only in part"));
    let circle = &chart.3[chart.3.find("<circle").unwrap()..];
    assert!(
        circle[..circle.find("/>").unwrap()].contains("fill=\"none\""),
        "{circle}"
    );
}

#[test]
fn a_nightly_history_has_a_month_to_date_report_of_its_nights_and_invoices() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("nightly");
    let night = |args: &[&str]| sample_nights(&out, &[args]);
    night(&["--date", "2026-10-01", "--init"]);
    night(&["--date", "2026-10-03", "--catch-up"]);
    let page = out.join("month-to-date/report.html");
    let html = std::fs::read_to_string(&page).unwrap();
    let manifest: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(out.join("month-to-date/manifest.json")).unwrap(),
    )
    .unwrap();
    assert!(html.contains("month to date after the night of 2026-10-03"));
    // Drafts say what the nights cover so far: a UTC account's October to the end of the 3rd.
    assert!(
        html.contains(" &middot; draft (covers 2026-10-01T00:00:00Z to 2026-10-04T00:00:00Z so far) &middot; "),
        "{html}"
    );
    assert_eq!(
        by_id(&html, "nights"),
        "3 nights have run, from 2026-10-01 to 2026-10-03."
    );
    assert_eq!(
        by_id(&html, "total-invoices"),
        grouped(manifest["invoices"]["invoices"].as_u64().unwrap())
    );
    assert_eq!(
        by_id(&html, "rows-read"),
        grouped(manifest["last_night"]["rows_read"].as_u64().unwrap())
    );
    let statuses: Vec<String> = manifest["invoices"]["by_status"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(status, n)| format!("{n} {status}"))
        .collect();
    assert!(html.contains(&format!("<td class=\"text\">{}</td>", statuses.join(", "))));
    assert!(manifest["outputs"]
        .as_array()
        .unwrap()
        .iter()
        .any(|o| o["path"] == "report.html"));
    // Its charts count every session of its invoices, closed by a night or open after the
    // last, by day; and the violations of the nights' days.
    let charts = figures(&html);
    let names: Vec<&str> = charts.iter().map(|f| f.0.as_str()).collect();
    assert!(names.contains(&"sessions-2026-10"), "{names:?}");
    assert!(names.contains(&"violations-2026-10"), "{names:?}");
    let (_, invoiced) = invoiced_sessions(&out.join("month-to-date/invoices/2026-10"));
    assert!(invoiced > 0);
    assert_eq!(chart_total(&html, "sessions-2026-10"), invoiced);
    assert!(chart_total(&html, "violations-2026-10") > 0);
    // Rerunning the last night gives the same page.
    night(&["--date", "2026-10-03"]);
    assert_eq!(html, std::fs::read_to_string(&page).unwrap());
    let (dom, log) = chromium(&["--dump-dom"], &page);
    assert!(
        !log.contains("CONSOLE") && !log.contains("Uncaught"),
        "{log}"
    );
    assert_eq!(
        by_id(&dom, "total-invoices"),
        by_id(&html, "total-invoices")
    );
    assert_eq!(figures(&dom).len(), figures(&html).len());
}

#[test]
fn the_nights_table_shows_the_last_31_nights_and_counts_the_earlier_ones() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("nightly");
    sample_nights(
        &out,
        &[
            &["--date", "2026-10-01", "--init"],
            &["--date", "2026-11-02", "--catch-up"],
        ],
    );
    let html = std::fs::read_to_string(out.join("month-to-date/report.html")).unwrap();
    assert_eq!(
        by_id(&html, "nights"),
        "33 nights have run, from 2026-10-01 to 2026-11-02."
    );
    let table = by_id_block(&html, "nights-table");
    let nights: Vec<&str> = table
        .split("<tr><td>")
        .skip(1)
        .map(|row| &row[..10])
        .collect();
    assert_eq!(nights.len(), 31);
    assert_eq!((nights[0], nights[30]), ("2026-11-02", "2026-10-03"));
    // It links the pages of the periods the nights closed, and they are there.
    assert!(
        html.contains("<p id=\"closed-periods\">Periods the nights have closed, each on its own page with its invoices as closed: <a href=\"../closed/period=2026-09/report.html\">2026-09</a>, <a href=\"../closed/period=2026-10/report.html\">2026-10</a>.</p>"),
        "{html}"
    );
    for period in ["2026-09", "2026-10"] {
        let linked = out.join(format!(
            "month-to-date/../closed/period={period}/report.html"
        ));
        assert!(linked.is_file(), "{}", linked.display());
    }
    assert!(html.contains("<p id=\"earlier-nights\">The table shows the last 31 nights; the 2 nights before them, from 2026-10-01 to 2026-10-02, are in <code>state/date=YYYY-MM-DD/night.json</code>.</p>"), "{html}");
    // A closed period's page leads back to the month to date.
    let closed = std::fs::read_to_string(out.join("closed/period=2026-10/report.html")).unwrap();
    assert!(
        closed.contains("<p id=\"back\"><a href=\"../../month-to-date/report.html\">The month to date</a> links every closed period.</p>"),
        "{closed}"
    );
    assert!(out
        .join("closed/period=2026-10/../../month-to-date/report.html")
        .is_file());
    assert!(!html.contains("id=\"back\""));
    // Three nights fit: no such line. The night that closes September says so, in the
    // singular: its one invoice is partial.
    let short = dir.path().join("short");
    sample_nights(&short, &[&["--date", "2026-10-01", "--init"]]);
    let output = convbill()
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args(["run", "--rates", "sample-data/rates.toml", "--out"])
        .arg(&short)
        .args(["--date", "2026-10-03", "--catch-up"])
        .assert()
        .success();
    let stderr = String::from_utf8(output.get_output().stderr.clone()).unwrap();
    assert!(
        stderr.contains("closed period 2026-09: 1 invoice (1 partial) in"),
        "{stderr}"
    );
    let html = std::fs::read_to_string(short.join("month-to-date/report.html")).unwrap();
    // The history began after October's first day in Jakarta: that invoice is partial, and
    // its coverage grows night by night.
    assert!(
        html.contains(" &middot; partial (covers 2026-10-01T07:00:00+07:00 to 2026-10-04T07:00:00+07:00 so far) &middot; "),
        "{html}"
    );
    assert!(!html.contains("earlier-nights"));
    assert!(html.contains(": <a href=\"../closed/period=2026-09/report.html\">2026-09</a>.</p>"));
    assert_eq!(
        by_id_block(&html, "nights-table")
            .matches("<tr><td>")
            .count(),
        3
    );
}

/// The markup of the element with `id`, to the end of its table.
fn by_id_block<'a>(html: &'a str, id: &str) -> &'a str {
    let start = html.find(&format!("id=\"{id}\"")).unwrap();
    &html[start..start + html[start..].find("</table>").unwrap()]
}

#[test]
fn small_counts_have_whole_distinct_axis_labels() {
    // Three sessions: a quota of 3.
    let html = report_of(&[
        inbound("u1", "Mon 10:00"),
        reply("r1", "Mon 10:05"),
        inbound("u2", "Tue 11:00"),
        reply("r2", "Tue 11:05"),
        inbound("u3", "Wed 12:00"),
        reply("r3", "Wed 12:05"),
    ]);
    let figures = figures(&html);
    assert!(figures.iter().any(|f| f.0 == "quota-2024-01"));
    // Every axis label is a distinct whole number (or a day). The quota chart's bars carry
    // their numbers too, drawn last.
    for (name, _, points, figure) in &figures {
        let mut labels: Vec<&str> = figure
            .split("</text>")
            .filter_map(|t| t.rsplit('>').next().map(str::trim))
            .filter(|t| !t.is_empty() && t.chars().all(|c| c.is_ascii_digit() || c == '.'))
            .collect();
        if name.starts_with("quota-") {
            let bars = labels.split_off(labels.len() - points);
            assert_eq!(bars, ["3"], "{name}");
        }
        assert!(
            labels.iter().all(|l| !l.contains('.')),
            "{name}: {labels:?}"
        );
        let distinct: std::collections::BTreeSet<&&str> = labels.iter().collect();
        assert_eq!(distinct.len(), labels.len(), "{name}: {labels:?}");
    }
}

#[test]
fn numbers_of_a_thousand_and_more_are_grouped_in_threes() {
    assert_eq!(
        [0, 999, 1_000, 12_345, 1_234_567].map(grouped),
        ["0", "999", "1,000", "12,345", "1,234,567"]
    );
    // 1,001 users write and are answered: 2,002 messages, 1,001 sessions, a quota of 1,001.
    let events: Vec<Ev> = (0..1001)
        .flat_map(|i| {
            let user = format!("user-{i}");
            [
                inbound(&format!("m{i}"), "Mon 10:00").user(&user),
                reply(&format!("r{i}"), "Mon 10:05").user(&user),
            ]
        })
        .collect();
    let html = report_of(&events);
    assert_eq!(by_id(&html, "rows-read"), "2,002");
    assert_eq!(by_id(&html, "total-sessions"), "1,001");
    assert_eq!(by_id(&html, "total-quota"), "1,001");
    // In the tables and on the charts' axes too; the files keep plain digits.
    assert!(html.contains("<td>1,001</td>"), "no grouped cell");
    let quota = figures(&html)
        .into_iter()
        .find(|f| f.0 == "quota-2024-01")
        .unwrap();
    let texts: Vec<&str> = quota
        .3
        .split("</text>")
        .filter_map(|t| t.rsplit('>').next())
        .collect();
    assert!(texts.iter().any(|t| t.trim() == "1,000"), "{texts:?}");
}

#[test]
fn long_account_names_are_cut_to_their_bars_width_and_named_in_full_beneath() {
    // Fifteen accounts with names of 40 characters, a session each.
    let name = |i: usize| format!("a-very-long-account-name-of-customer-{i:03}");
    let events: Vec<Ev> = (0..15)
        .flat_map(|i| {
            [
                inbound(&format!("m{i}"), "Mon 10:00").account(&name(i)),
                reply(&format!("r{i}"), "Mon 10:05").account(&name(i)),
            ]
        })
        .collect();
    let html = report_of(&events);
    let quota = figures(&html)
        .into_iter()
        .find(|f| f.0 == "quota-2024-01")
        .unwrap();
    // The x axis' labels: each bar's place, then its account's name.
    let labels: Vec<String> = quota
        .3
        .split("</text>")
        .filter_map(|t| t.rsplit('>').next().map(str::trim))
        .filter(|t| t.contains(" a-"))
        .map(str::to_string)
        .collect();
    assert_eq!(labels.len(), 15, "{labels:?}");
    // 856 pixels of plot for 15 accounts: 57 each, 6 characters of at most 9 pixels. Equal
    // quotas: the bars are in account order.
    for (rank, label) in labels.iter().enumerate() {
        assert_eq!(label.chars().count(), 6, "{label}");
        assert!(label.ends_with('…'), "{label}");
        assert!(label.starts_with(&format!("{} a-", rank + 1)), "{label}");
    }
    // The table beneath names each in full, with its place on the chart.
    for i in 0..15 {
        assert!(
            html.contains(&format!(">{}</a></td><td>{}</td>", name(i), i + 1)),
            "{}",
            name(i)
        );
    }
}

#[test]
fn a_report_rated_by_the_built_in_card_says_so_and_one_rated_by_a_card_does_not() {
    let events = [inbound("m1", "Mon 10:00"), reply("r1", "Mon 10:05")];
    let html = report_of(&events);
    let note = by_id(&html, "built-in-card");
    assert!(
        note.starts_with("Rated by the built-in rate card"),
        "{note}"
    );
    let sample = tempfile::tempdir().unwrap();
    let html = std::fs::read_to_string(sample_run(sample.path()).join("report.html")).unwrap();
    assert!(!html.contains("built-in-card"));
}

#[test]
fn a_partial_invoice_that_covers_its_period_says_why_and_long_names_wrap() {
    // A WhatsApp session on Monday; a Messenger session opened on the 31st and still open and
    // unanswered where the input ends: every day of January is covered, yet the invoice is
    // partial.
    let mut events = vec![
        inbound("u1", "2024-01-01 10:00"),
        reply("r1", "2024-01-01 10:05"),
    ];
    for day in 2..=31 {
        events.push(inbound(&format!("d{day}"), &format!("2024-01-{day:02} 09:00")).user("daily"));
    }
    events.push(
        inbound("m1", "2024-01-31 20:00")
            .on("messenger")
            .user("late-user"),
    );
    let html = report_of(&events);
    assert!(
        html.contains("partial (covers its whole period; a session still open and unanswered where the input ends may still change its quota)"),
        "{html}"
    );
    assert!(html.contains("td { overflow-wrap: anywhere; }"));
}

#[test]
fn a_closed_period_keeps_its_own_report_with_its_invoices_and_charts() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("nightly");
    let night = |args: &[&str]| sample_nights(&out, &[args]);
    night(&["--date", "2026-10-01", "--init"]);
    night(&["--date", "2026-11-02", "--catch-up"]);
    let closed = out.join("closed/period=2026-10");
    let html = std::fs::read_to_string(closed.join("report.html")).unwrap();
    assert!(
        html.contains("period 2026-10, closed by the night of"),
        "no title"
    );
    // October is no longer in the month-to-date page, but it is here, whole.
    let month_to_date = std::fs::read_to_string(out.join("month-to-date/report.html")).unwrap();
    assert!(!month_to_date.contains("id=\"period-2026-10\""));
    let (invoices, invoiced) = invoiced_sessions(&closed.join("invoices/2026-10"));
    assert_eq!(by_id(&html, "total-invoices"), grouped(invoices));
    assert_eq!(by_id(&html, "total-sessions"), grouped(invoiced));
    assert_eq!(chart_total(&html, "sessions-2026-10"), invoiced);
    assert_eq!(
        html.matches("<details id=\"invoice-").count() as u64,
        invoices
    );
    let manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(closed.join("manifest.json")).unwrap())
            .unwrap();
    assert!(manifest["outputs"]
        .as_array()
        .unwrap()
        .iter()
        .any(|o| o["path"] == "report.html"));
}

#[test]
fn a_report_of_a_thousand_invoices_stays_under_two_megabytes() {
    // The page grows with the invoices and their lines, not with the messages: the
    // benchmark's 10M-message month has 400 accounts and 748 invoices (798 KB measured). A
    // generated log of 1,000 accounts has more invoices than that.
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("log.parquet");
    convbill()
        .args([
            "generate",
            "-q",
            "--messages",
            "300000",
            "--accounts",
            "1000",
            "--out",
        ])
        .arg(&log)
        .assert()
        .success();
    let out = dir.path().join("out");
    let rates = Path::new(env!("CARGO_MANIFEST_DIR")).join("sample-data/rates.toml");
    convbill()
        .args(["run", "-q", "--input"])
        .arg(&log)
        .arg("--rates")
        .arg(&rates)
        .arg("--out")
        .arg(&out)
        .assert()
        .success();
    let html = std::fs::read_to_string(out.join("report.html")).unwrap();
    let invoices = html.matches("<details id=\"invoice-").count();
    assert!(invoices > 1_000, "{invoices}");
    assert!(html.len() < 2_000_000, "{} bytes", html.len());
}
