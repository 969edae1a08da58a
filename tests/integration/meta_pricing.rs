//! Meta's pricing through the binary (SPEC-meta §2 to §4, §6): each rule on a small log, read
//! back from `meta_units.parquet`, `meta_cost_lines.csv`, the invoices and the manifest.

use std::path::{Path, PathBuf};

use predicates::prelude::*;
use serde_json::Value;

use crate::cli::run_command;
use crate::support::*;

/// An Indonesian WhatsApp number.
const ID_USER: &str = "6281100000001";

/// The card: one plan in USD, Meta's two sample cards, WABAs in UTC unless `extra` says
/// otherwise (`extra` is appended to the `[meta]` section).
pub fn card(dir: &Path, extra: &str) -> PathBuf {
    let meta = dir.join("meta");
    std::fs::create_dir_all(&meta).unwrap();
    let sample = Path::new(env!("CARGO_MANIFEST_DIR")).join("sample-data/meta");
    for file in ["rates-usd-2023-06.csv", "rates-usd-2025-07.csv"] {
        std::fs::copy(sample.join(file), meta.join(file)).unwrap();
    }
    let text = format!(
        r#"default_plan = "p"
default_time_zone = "UTC"
[plans.p]
currency = "USD"
[[plans.p.versions]]
effective = "2023-01-01"
included_quota = 0
unit_price = "0.05"
[meta]
time_zone = "UTC"
rate_cards = [
  {{ effective = "2023-06-01", file = "meta/rates-usd-2023-06.csv" }},
  {{ effective = "2025-07-01", file = "meta/rates-usd-2025-07.csv" }},
]
{extra}
"#
    );
    let path = dir.join("rates.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// `convbill run --input INPUT --out OUT --rates CARD`.
fn run_meta(input: &Path, out: &Path, card: &Path) -> assert_cmd::assert::Assert {
    run_command(input, out).arg("--rates").arg(card).assert()
}

/// One unit of `meta_units.parquet`, the columns the rules decide.
#[derive(Debug, Clone, PartialEq)]
struct Unit {
    message_id: String,
    model: String,
    category: String,
    pricing_type: String,
    direction: String,
    cost: String,
    tier: String,
    started_at: String,
    ends_at: String,
}

/// Runs `events` with the card of `extra`; returns the output folder and its units.
fn priced(dir: &Path, events: &[Ev], extra: &str) -> (PathBuf, Vec<Unit>) {
    let input = write_log(dir, events);
    let card = card(dir, extra);
    let out = dir.join("out");
    run_meta(&input, &out, &card).success();
    let units = units_of(&out);
    (out, units)
}

fn units_of(out: &Path) -> Vec<Unit> {
    let frame = read_frame(&out.join("meta_units.parquet"));
    let text = |name: &str| -> Vec<String> {
        let column = frame
            .column(name)
            .unwrap()
            .cast(&polars::prelude::DataType::String)
            .unwrap();
        column
            .str()
            .unwrap()
            .iter()
            .map(|v| v.unwrap_or("-").to_string())
            .collect()
    };
    let [ids, models, categories, types, directions, costs, tiers, started, ends] = [
        "message_id",
        "model",
        "category",
        "pricing_type",
        "direction",
        "cost",
        "tier",
        "started_at",
        "ends_at",
    ]
    .map(text);
    (0..frame.height())
        .map(|i| Unit {
            message_id: ids[i].clone(),
            model: models[i].clone(),
            category: categories[i].clone(),
            pricing_type: types[i].clone(),
            direction: directions[i].clone(),
            cost: costs[i].clone(),
            tier: tiers[i].clone(),
            started_at: started[i].clone(),
            ends_at: ends[i].clone(),
        })
        .collect()
}

/// (message id, category, pricing type, cost) of each unit.
fn brief(units: &[Unit]) -> Vec<(String, String, String, String)> {
    units
        .iter()
        .map(|u| {
            (
                u.message_id.clone(),
                u.category.clone(),
                u.pricing_type.clone(),
                u.cost.clone(),
            )
        })
        .collect()
}

fn row(
    id: &str,
    category: &str,
    pricing_type: &str,
    cost: &str,
) -> (String, String, String, String) {
    (id.into(), category.into(), pricing_type.into(), cost.into())
}

/// `count` service conversations on `day`, a minute apart from midnight, each with a user of
/// its own: inbound `{prefix}-in{n}` answered by `{prefix}-r{n}` at once.
pub fn service_conversations(day: &str, prefix: &str, count: usize) -> Vec<Ev> {
    let mut events = Vec::with_capacity(2 * count);
    for n in 0..count {
        let user = format!("62811{n:08}");
        let minute = format!("{day} {:02}:{:02}", n / 60, n % 60);
        events.push(inbound(&format!("{prefix}-in{n}"), &minute).user(&user));
        events.push(reply(&format!("{prefix}-r{n}"), &minute).user(&user));
    }
    events
}

pub fn wa(e: Ev) -> Ev {
    e.user(ID_USER)
}

pub fn tpl(id: &str, when: &str, category: &str) -> Ev {
    wa(template(id, when).category(category))
}

#[test]
fn cbp_a_marketing_conversation_at_hour_0_and_a_service_one_at_hour_25() {
    // Meta's example: a marketing template opens a marketing conversation for 24 hours; the
    // user writes at hour 2, and a reply at hour 3 is covered by the marketing conversation;
    // a reply at hour 25 opens a service conversation (the user's window is still open).
    let dir = tempfile::tempdir().unwrap();
    let events = [
        tpl("m0", "2024-03-04 00:00", "marketing"),
        wa(inbound("u2", "2024-03-04 02:00")),
        wa(reply("r3", "2024-03-04 03:00")),
        wa(reply("r25", "2024-03-05 01:00")),
    ];
    let (_, units) = priced(dir.path(), &events, "");
    assert_eq!(
        brief(&units),
        vec![
            row("m0", "marketing", "regular", "0.0411"),
            // The WABA's first service conversation of March 2024: within the free tier.
            row("r25", "service", "free_tier", "0.0000"),
        ]
    );
    assert_eq!(units[0].model, "CBP");
    assert_eq!(units[0].direction, "business_initiated");
    assert_eq!(units[1].direction, "user_initiated");
    assert_eq!(units[0].ends_at, "2024-03-05 00:00:00.000000000+00:00");
}

#[test]
fn pmp_meta_table_of_hours_0_2_3_4_26_and_30() {
    // Meta's per-message example: the user writes at hour 0; a free-form reply at hour 2 and a
    // utility template at hour 3 are free inside the customer service window; a marketing
    // template at hour 4 is charged; a utility template at hour 26, outside the window, and
    // an authentication template at hour 30 are charged.
    let dir = tempfile::tempdir().unwrap();
    let events = [
        wa(inbound("u0", "2025-08-04 00:00")),
        wa(reply("r2", "2025-08-04 02:00")),
        tpl("t3", "2025-08-04 03:00", "utility"),
        tpl("t4", "2025-08-04 04:00", "marketing"),
        tpl("t26", "2025-08-05 02:00", "utility"),
        tpl("t30", "2025-08-05 06:00", "authentication"),
    ];
    let (_, units) = priced(dir.path(), &events, "");
    assert_eq!(
        brief(&units),
        vec![
            row("r2", "service", "free_customer_service", "0.0000"),
            row("t3", "utility", "free_customer_service", "0.0000"),
            row("t4", "marketing", "regular", "0.0411"),
            row("t26", "utility", "regular", "0.0200"),
            row("t30", "authentication", "regular", "0.0300"),
        ]
    );
    assert!(units.iter().all(|u| u.model == "PMP" && u.ends_at == "-"));
    // Charged marketing has its single tier; other categories without a table have none.
    let tiers: Vec<&str> = units.iter().map(|u| u.tier.as_str()).collect();
    assert_eq!(tiers, vec!["-", "-", "0:MAX", "-", "-"]);
}

#[test]
fn an_ad_message_at_10_answered_at_22_opens_72_free_hours() {
    let dir = tempfile::tempdir().unwrap();
    // Conversation-based: the reply opens a free entry point conversation of 72 hours that
    // covers a marketing template inside it; a template after it opens its own conversation.
    let cbp = [
        wa(inbound("ad", "2024-03-04 10:00").kind("ad_click")),
        wa(reply("r22", "2024-03-04 22:00")),
        tpl("m-in", "2024-03-06 12:00", "marketing"),
        tpl("m-after", "2024-03-07 22:00", "marketing"),
    ];
    let (_, units) = priced(dir.path(), &cbp, "");
    assert_eq!(
        brief(&units),
        vec![
            row("r22", "service", "free_entry_point", "0.0000"),
            row("m-after", "marketing", "regular", "0.0411"),
        ]
    );
    assert_eq!(units[0].ends_at, "2024-03-07 22:00:00.000000000+00:00");
    assert_eq!(units[0].direction, "user_initiated");

    // Per message: everything delivered in the 72 hours is free; a Page button click
    // answered after 24 hours opens nothing.
    let pmp = [
        wa(inbound("ad", "2025-08-04 10:00").kind("ad_click")),
        wa(reply("r22", "2025-08-04 22:00")),
        tpl("m-in", "2025-08-06 12:00", "marketing"),
        tpl("m-after", "2025-08-07 22:00", "marketing"),
        wa(inbound("cta", "2025-08-11 10:00").kind("cta_click")),
        tpl("late", "2025-08-12 11:00", "marketing"),
    ];
    let dir = tempfile::tempdir().unwrap();
    let (_, units) = priced(dir.path(), &pmp, "");
    assert_eq!(
        brief(&units),
        vec![
            row("r22", "service", "free_entry_point", "0.0000"),
            row("m-in", "marketing", "free_entry_point", "0.0000"),
            row("m-after", "marketing", "regular", "0.0411"),
            row("late", "marketing", "regular", "0.0411"),
        ]
    );
}

#[test]
fn a_free_entry_point_conversation_closes_the_conversations_open_before_it() {
    let dir = tempfile::tempdir().unwrap();
    let events = [
        tpl("m", "2024-03-04 09:00", "marketing"),
        wa(inbound("ad", "2024-03-04 10:00").kind("ad_click")),
        wa(reply("r", "2024-03-04 11:00")),
    ];
    let (_, units) = priced(dir.path(), &events, "");
    assert_eq!(units.len(), 2);
    assert_eq!(
        units[0].ends_at, "2024-03-04 11:00:00.000000000+00:00",
        "closed by the free entry point"
    );
    assert_eq!(units[1].pricing_type, "free_entry_point");
}

#[test]
fn templates_of_other_categories_open_their_own_conversations_and_free_form_does_not() {
    let dir = tempfile::tempdir().unwrap();
    let events = [
        wa(inbound("u", "2024-03-04 08:00")),
        wa(reply("r", "2024-03-04 09:00")),
        tpl("m", "2024-03-04 10:00", "marketing"),
        tpl("m2", "2024-03-04 11:00", "marketing"),
        tpl("a", "2024-03-04 12:00", "authentication"),
        wa(reply("r2", "2024-03-04 13:00")),
    ];
    let (_, units) = priced(dir.path(), &events, "");
    let ids: Vec<&str> = units.iter().map(|u| u.message_id.as_str()).collect();
    assert_eq!(ids, vec!["r", "m", "a"]);
    assert!(units.iter().all(|u| u.direction == "user_initiated"));
}

#[test]
fn auto_switches_at_midnight_of_1_july_2025_in_the_waba_zone_with_the_utility_edge_rule() {
    let dir = tempfile::tempdir().unwrap();
    // WABAs in Los Angeles (UTC-7 in July): the switch is at 2025-07-01 07:00 UTC.
    let events = [
        // 2025-06-30 20:00 LA: a utility conversation under conversation-based pricing.
        tpl("u-cbp", "2025-07-01 03:00", "utility"),
        // 23:00 LA on 30 June: still conversation-based, though 1 July in UTC.
        tpl("m-cbp", "2025-07-01 06:00", "marketing"),
        // 1 July 10:00 LA: per message; the utility conversation opened before the switch
        // still covers it, so it is free.
        tpl("u-edge", "2025-07-01 17:00", "utility"),
        // 2 July 10:00 LA: that conversation ended at 1 July 20:00 LA: charged.
        tpl("u-pmp", "2025-07-02 17:00", "utility"),
    ];
    let (_, units) = priced(
        dir.path(),
        &events,
        "[meta.businesses.\"biz-1\"]\nwaba = \"la\"\ntime_zone = \"America/Los_Angeles\"\n",
    );
    let got: Vec<(&str, &str, &str, &str)> = units
        .iter()
        .map(|u| {
            (
                u.message_id.as_str(),
                u.model.as_str(),
                u.pricing_type.as_str(),
                u.cost.as_str(),
            )
        })
        .collect();
    assert_eq!(
        got,
        vec![
            ("u-cbp", "CBP", "regular", "0.0200"),
            ("m-cbp", "CBP", "regular", "0.0411"),
            ("u-edge", "PMP", "free_customer_service", "0.0000"),
            ("u-pmp", "PMP", "regular", "0.0200"),
        ]
    );
}

#[test]
fn a_model_prices_every_period_by_itself_as_a_what_if() {
    let dir = tempfile::tempdir().unwrap();
    let events = [
        tpl("m", "2024-03-04 10:00", "marketing"),
        tpl("m2", "2024-03-04 11:00", "marketing"),
    ];
    let (_, units) = priced(dir.path(), &events, "model = \"pmp-2025\"\n");
    // Both charged per message, by the card in force in March 2024.
    assert_eq!(
        brief(&units),
        vec![
            row("m", "marketing", "regular", "0.0411"),
            row("m2", "marketing", "regular", "0.0411"),
        ]
    );
    assert!(units.iter().all(|u| u.model == "PMP"));
}

#[test]
fn a_wabas_first_1000_service_conversations_of_a_month_are_free_until_october_2024() {
    let dir = tempfile::tempdir().unwrap();
    let mut events = Vec::new();
    for month in ["2024-10", "2024-11"] {
        events.extend(service_conversations(&format!("{month}-02"), month, 1001));
    }
    let (out, units) = priced(dir.path(), &events, "");
    let of = |month: &str, kind: &str| {
        units
            .iter()
            .filter(|u| u.message_id.starts_with(month) && u.pricing_type == kind)
            .map(|u| (u.message_id.clone(), u.cost.clone()))
            .collect::<Vec<_>>()
    };
    assert_eq!(of("2024-10", "free_tier").len(), 1000);
    // The 1,001st by start pays Indonesia's service rate.
    assert_eq!(
        of("2024-10", "regular"),
        vec![("2024-10-r1000".to_string(), "0.0190".to_string())]
    );
    // From November 2024 service is free for all.
    assert_eq!(of("2024-11", "free_tier").len(), 0);
    let november = of("2024-11", "regular");
    assert_eq!(november.len(), 1001);
    assert!(november.iter().all(|(_, cost)| cost == "0.0000"));
    let lines = std::fs::read_to_string(out.join("meta_cost_lines.csv")).unwrap();
    assert!(
        lines.contains("acme,2024-10,CBP,Indonesia,service,free_tier,,1000,0.0000,USD"),
        "{lines}"
    );
    assert!(lines.contains("acme,2024-10,CBP,Indonesia,service,regular,,1,0.0190,USD"));
}

#[test]
fn the_free_tier_is_counted_per_waba_and_a_waba_never_spans_accounts() {
    let dir = tempfile::tempdir().unwrap();
    // 1,001 service conversations in March 2024 for each of two accounts whose businesses
    // the card puts in a WABA of the same name, and 1,001 for a second WABA of `acme`.
    let mut events = Vec::new();
    for (account, business) in [("acme", "biz-1"), ("other", "biz-2"), ("acme", "biz-3")] {
        for n in 0..1001 {
            let user = format!("62811{n:08}");
            let when = format!("2024-03-02 {:02}:{:02}", n / 60, n % 60);
            let id = format!("{account}-{business}-{n}");
            for e in [inbound(&format!("{id}-in"), &when), reply(&id, &when)] {
                events.push(e.account(account).business(business).user(&user));
            }
        }
    }
    let waba = "[meta.businesses.\"biz-1\"]\nwaba = \"shared\"\n[meta.businesses.\"biz-2\"]\nwaba = \"shared\"\n";
    let (_, units) = priced(dir.path(), &events, waba);
    let charged: Vec<&str> = units
        .iter()
        .filter(|u| u.pricing_type == "regular")
        .map(|u| u.message_id.as_str())
        .collect();
    assert_eq!(
        charged,
        vec!["acme-biz-1-1000", "acme-biz-3-1000", "other-biz-2-1000"]
    );
}

#[test]
fn volume_tiers_price_each_message_by_its_own_tier_per_account_month_market_and_category() {
    let dir = tempfile::tempdir().unwrap();
    let tiers = r#"[[meta.tiers]]
market = "India"
category = "utility"
effective = "2025-07-01"
tiers = [ { from = 1, to = 2, rate = "0.0014" }, { from = 3, rate = "0.0010" } ]
"#;
    // Three charged utility messages to Indian users in August across two businesses (the
    // two at the same instant are numbered by business), one in September, and one to an
    // Indonesian user, which another market's count does not touch.
    let india = |id: &str, when: &str, business: &str, user: &str| {
        template(id, when)
            .category("utility")
            .business(business)
            .user(user)
    };
    let events = [
        india("a1", "2025-08-04 10:00", "biz-2", "919800000001"),
        india("a2", "2025-08-05 10:00", "biz-2", "919800000002"),
        india("a3", "2025-08-05 10:00", "biz-1", "919800000003"),
        tpl("id", "2025-08-06 10:00", "utility"),
        india("s1", "2025-09-01 10:00", "biz-1", "919800000003"),
    ];
    let (out, units) = priced(dir.path(), &events, tiers);
    let got: Vec<(&str, &str, &str)> = units
        .iter()
        .map(|u| (u.message_id.as_str(), u.tier.as_str(), u.cost.as_str()))
        .collect();
    let mut got = got;
    got.sort();
    assert_eq!(
        got,
        vec![
            ("a1", "1:2", "0.0014"),
            ("a2", "3:MAX", "0.0010"),
            ("a3", "1:2", "0.0014"),
            ("id", "-", "0.0200"),
            ("s1", "1:2", "0.0014"),
        ]
    );
    let lines = std::fs::read_to_string(out.join("meta_cost_lines.csv")).unwrap();
    assert!(lines.contains("acme,2025-08,PMP,India,utility,regular,1:2,2,0.0028,USD"));
    assert!(lines.contains("acme,2025-08,PMP,India,utility,regular,3:MAX,1,0.0010,USD"));
}

#[test]
fn messenger_instagram_failed_messages_and_violations_cost_nothing_at_meta() {
    let dir = tempfile::tempdir().unwrap();
    let events = [
        template("fb", "2025-08-04 10:00")
            .on("messenger")
            .user("psid-1"),
        inbound("ig-in", "2025-08-04 10:00")
            .on("instagram")
            .user("igsid-1"),
        reply("ig", "2025-08-04 11:00")
            .on("instagram")
            .user("igsid-1"),
        tpl("failed", "2025-08-04 12:00", "marketing").status("failed"),
        // A free-form message outside the service window is a violation: never delivered.
        wa(reply("violation", "2025-08-04 13:00")),
        tpl("sent", "2025-08-04 14:00", "marketing").status("sent"),
    ];
    let (_, units) = priced(dir.path(), &events, "");
    assert_eq!(
        brief(&units),
        vec![row("sent", "marketing", "regular", "0.0411")]
    );
}

#[test]
fn invoices_carry_meta_cost_and_margin_and_the_summary_names_negative_margins() {
    let dir = tempfile::tempdir().unwrap();
    // `acme` pays 0.05 a session for marketing templates that cost 0.0411 at Meta; `cheap`
    // has a plan of its own at 0.01.
    let events = [
        tpl("a1", "2025-08-04 10:00", "marketing"),
        tpl("a2", "2025-08-05 10:00", "marketing"),
        tpl("c1", "2025-08-04 10:00", "marketing").account("cheap"),
    ];
    let input = write_log(dir.path(), &events);
    let card = card(dir.path(), "");
    let text = std::fs::read_to_string(&card).unwrap().replace(
        "[meta]",
        "[plans.low]\ncurrency = \"USD\"\n[[plans.low.versions]]\neffective = \"2023-01-01\"\nincluded_quota = 0\nunit_price = \"0.01\"\n[accounts.cheap]\nplan = \"low\"\n[meta]",
    );
    std::fs::write(&card, text).unwrap();
    let out = dir.path().join("out");
    let assert = run_meta(&input, &out, &card)
        .success()
        .stderr(predicate::str::contains(
            "convbill: Meta (auto): 3 unit(s), 0.1233 USD; margin",
        ))
        .stderr(predicate::str::contains(
            "1 invoice(s) cost more at Meta than they bill: cheap 2025-08",
        ));
    drop(assert);
    let invoice = |account: &str| -> Value {
        let path = out.join(format!("invoices/2025-08/{account}.json"));
        serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
    };
    let acme = invoice("acme");
    assert_eq!(acme["meta_cost"], serde_json::json!({"USD": "0.0822"}));
    assert_eq!(acme["totals"]["amount"], "0.10");
    assert_eq!(acme["margin"], "0.0178");
    assert_eq!(invoice("cheap")["margin"], "-0.0311");
    // invoices.parquet has them too, as decimals.
    let table = read_frame(&out.join("invoices.parquet"));
    let decimals = |name: &str| -> Vec<String> {
        let column = table.column(name).unwrap();
        assert!(
            matches!(column.dtype(), polars::prelude::DataType::Decimal(..)),
            "{name}"
        );
        column
            .cast(&polars::prelude::DataType::String)
            .unwrap()
            .str()
            .unwrap()
            .iter()
            .map(|v| v.unwrap_or("-").to_string())
            .collect()
    };
    assert_eq!(strings(&table, "account_id"), vec!["acme", "cheap"]);
    assert_eq!(decimals("meta_cost"), vec!["0.0822", "0.0411"]);
    assert_eq!(decimals("margin"), vec!["0.0178", "-0.0311"]);
    let manifest = manifest_of(&out);
    assert_eq!(manifest["meta"]["units"], 3);
    assert_eq!(
        manifest["meta"]["cost"],
        serde_json::json!({"USD": "0.1233"})
    );
    assert_eq!(
        manifest["meta"]["margin"],
        serde_json::json!({"USD": "-0.0133"})
    );
    assert_eq!(
        manifest["meta"]["negative_margins"],
        serde_json::json!(["cheap 2025-08"])
    );
    for file in [
        "meta_units.parquet",
        "meta_cost_lines.parquet",
        "meta_cost_lines.csv",
    ] {
        assert!(
            manifest["outputs"]
                .as_array()
                .unwrap()
                .iter()
                .any(|o| o["path"] == file),
            "{file}"
        );
    }
    // A rerun gives the same bytes.
    let before: Vec<Vec<u8>> = [
        "meta_units.parquet",
        "meta_cost_lines.parquet",
        "meta_cost_lines.csv",
    ]
    .iter()
    .map(|f| std::fs::read(out.join(f)).unwrap())
    .collect();
    run_meta(&input, &out, &card).success();
    let after: Vec<Vec<u8>> = [
        "meta_units.parquet",
        "meta_cost_lines.parquet",
        "meta_cost_lines.csv",
    ]
    .iter()
    .map(|f| std::fs::read(out.join(f)).unwrap())
    .collect();
    assert!(before == after);
}

#[test]
fn without_meta_no_meta_outputs_and_the_category_column_is_not_checked() {
    let dir = tempfile::tempdir().unwrap();
    let events = [template("t", "2025-08-04 10:00").category("no-such-category")];
    let input = write_log(dir.path(), &events);
    let out = dir.path().join("out");
    run_command(&input, &out).assert().success();
    assert!(!out.join("meta_units.parquet").exists());
    assert!(manifest_of(&out).get("meta").is_none());
}

/// The run refuses `events` under `[meta]` with exit 3, naming `needle`; with `--rejects` the
/// row is set aside with `reason` (when given).
fn refused(events: &[Ev], extra: &str, needle: &str, reason: Option<&str>) {
    let dir = tempfile::tempdir().unwrap();
    let input = write_log(dir.path(), events);
    let card = card(dir.path(), extra);
    let out = dir.path().join("out");
    run_meta(&input, &out, &card)
        .code(3)
        .stderr(predicate::str::contains(needle));
    assert!(!out.exists());
    if let Some(reason) = reason {
        run_command(&input, &out)
            .arg("--rates")
            .arg(&card)
            .arg("--rejects")
            .assert()
            .success();
        let rejects = read_frame(&out.join("rejects.parquet"));
        assert_eq!(strings(&rejects, "reason"), vec![reason.to_string()]);
    }
}

#[test]
fn bad_input_under_meta_pricing_is_named() {
    let ok = tpl("ok", "2025-08-04 09:00", "utility");
    refused(
        &[ok.clone(), wa(template("t", "2025-08-04 10:00"))],
        "",
        "column `category` in",
        Some("missing_category"),
    );
    refused(
        &[ok.clone(), tpl("t", "2025-08-04 10:00", "promotional")],
        "",
        "has unknown value `promotional` at row 1",
        Some("unknown_value"),
    );
    refused(
        &[
            ok.clone(),
            tpl("t", "2025-08-04 10:00", "utility").user("user-1"),
        ],
        "",
        "has value `user-1` at row 1, which is not a WhatsApp number",
        Some("not_a_phone_number"),
    );
    // No calling code starts with 0: a number written the local way is refused, not priced
    // in another country.
    refused(
        &[
            ok.clone(),
            tpl("t", "2025-08-04 10:00", "utility").user("081234567890"),
        ],
        "",
        "has value `081234567890` at row 1, which is not a WhatsApp number",
        Some("not_a_phone_number"),
    );
    // A failed template needs no category.
    let dir = tempfile::tempdir().unwrap();
    priced(
        dir.path(),
        &[
            ok.clone(),
            wa(template("f", "2025-08-04 10:00").status("failed")),
        ],
        "",
    );
    // Data the card cannot price: before Meta's pricing, and a market without a rate.
    refused(
        &[tpl("old", "2023-05-31 23:00", "marketing")],
        "",
        "message `old` of account `acme` cannot be priced by Meta's rules: a message of business `biz-1` at 2023-05-31T23:00:00Z is before 2023-06-01",
        None,
    );
    refused(
        &[
            // Numbered by time: a1 1, a2 2, a3 3; the units come by user (a1, a3, a2).
            tpl("a1", "2025-08-04 10:00", "authentication").user("919800000001"),
            tpl("a3", "2025-08-04 12:00", "authentication").user("919800000001"),
            tpl("a2", "2025-08-04 11:00", "authentication").user("919800000002"),
        ],
        "[[meta.tiers]]\nmarket = \"India\"\ncategory = \"authentication\"\neffective = \"2025-07-01\"\ntiers = [ { from = 1, to = 1, rate = \"0.001\" } ]\n",
        "message `a2` of account `acme` cannot be priced by Meta's rules: it is charged authentication message number 2 of 2025-08 in India, past the last volume tier",
        None,
    );
}

#[test]
fn a_market_without_a_rate_on_the_card_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let input = write_log(dir.path(), &[tpl("t", "2025-08-04 10:00", "marketing")]);
    let card = card(dir.path(), "");
    let meta = dir.path().join("meta/rates-usd-2025-07.csv");
    let text = std::fs::read_to_string(&meta).unwrap();
    let without: String = text
        .lines()
        .filter(|l| !l.starts_with("Indonesia,"))
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(&meta, without).unwrap();
    run_meta(&input, &dir.path().join("out"), &card)
        .code(3)
        .stderr(predicate::str::contains(
            "message `t` of account `acme` cannot be priced by Meta's rules: Meta rate card `meta/rates-usd-2025-07.csv` (effective 2025-07-01) has no market `Indonesia`",
        ));
}

#[test]
fn meta_cost_in_a_period_without_an_invoice_is_in_the_margin_and_named() {
    // Billed in UTC, priced in Los Angeles: a template on 1 July 03:00 UTC is June's at Meta,
    // and the account has no June invoice.
    let dir = tempfile::tempdir().unwrap();
    let events = [
        tpl("june", "2025-07-01 03:00", "marketing"),
        tpl("july", "2025-07-10 12:00", "marketing"),
    ];
    let input = write_log(dir.path(), &events);
    let card = card(dir.path(), "");
    let text = std::fs::read_to_string(&card).unwrap().replace(
        "time_zone = \"UTC\"\nrate_cards",
        "time_zone = \"America/Los_Angeles\"\nrate_cards",
    );
    std::fs::write(&card, text).unwrap();
    let out = dir.path().join("out");
    run_meta(&input, &out, &card)
        .success()
        .stderr(predicate::str::contains(
            "convbill: note: Meta's cost of 1 account period(s) without an invoice is in the margin but in no invoice: acme 2025-06 (0.0411 USD)",
        ));
    let manifest = manifest_of(&out);
    assert_eq!(
        manifest["meta"]["cost"],
        serde_json::json!({"USD": "0.0822"})
    );
    // The July invoice bills 0.10 (2 sessions at 0.05): the margin is all of it less all cost.
    assert_eq!(
        manifest["meta"]["margin"],
        serde_json::json!({"USD": "0.0178"})
    );
    assert_eq!(
        manifest["meta"]["without_invoice"],
        serde_json::json!({"acme 2025-06": {"USD": "0.0411"}})
    );
    let july: Value =
        serde_json::from_slice(&std::fs::read(out.join("invoices/2025-07/acme.json")).unwrap())
            .unwrap();
    assert_eq!(july["meta_cost"], serde_json::json!({"USD": "0.0411"}));
}

#[test]
fn a_waba_has_one_time_zone() {
    let cases = [
        (
            "[meta.businesses.\"b1\"]\nwaba = \"w\"\ntime_zone = \"Asia/Jakarta\"\n[meta.businesses.\"b2\"]\nwaba = \"w\"\ntime_zone = \"Europe/Berlin\"\n",
            "WABA `w` has businesses in two time zones (`b1` in `Asia/Jakarta`, `b2` in `Europe/Berlin`)",
        ),
        (
            "[meta.businesses.\"b1\"]\ntime_zone = \"Asia/Jakarta\"\n",
            "time_zone `Asia/Jakarta` without a waba: the business would be in its account's default WABA, whose zone is `UTC`",
        ),
        (
            "[meta.businesses.\"b1\"]\nwaba = \"acme/default\"\n",
            "waba `acme/default` ends in `/default`",
        ),
    ];
    for (extra, needle) in cases {
        let dir = tempfile::tempdir().unwrap();
        let input = write_log(dir.path(), &[tpl("t", "2025-08-04 10:00", "marketing")]);
        let card = card(dir.path(), extra);
        run_meta(&input, &dir.path().join("out"), &card)
            .code(2)
            .stderr(predicate::str::contains(needle));
    }
}

#[test]
fn copies_of_a_message_naming_different_categories_conflict() {
    let dir = tempfile::tempdir().unwrap();
    let input = write_log(
        dir.path(),
        &[
            tpl("d1", "2025-08-04 10:00", "utility"),
            tpl("d1", "2025-08-04 10:00:05", "marketing"),
        ],
    );
    let card = card(dir.path(), "");
    run_meta(&input, &dir.path().join("out"), &card)
        .code(3)
        .stderr(predicate::str::contains(
            "is logged twice with different `category`: `utility` in",
        ));
    // A copy naming the same category (a later receipt) is the same message.
    let dir = tempfile::tempdir().unwrap();
    let (_, units) = priced(
        dir.path(),
        &[
            tpl("d1", "2025-08-04 10:00", "utility"),
            tpl("d1", "2025-08-04 10:00:05", "utility").status("read"),
            tpl("ok", "2025-08-04 11:00", "marketing"),
        ],
        "",
    );
    assert_eq!(units.len(), 2);
}

#[test]
fn only_delivered_whatsapp_templates_need_a_known_category() {
    // A category on rows Meta's pricing does not read is not checked: the quota invoices are
    // the same with and without `[meta]`.
    let dir = tempfile::tempdir().unwrap();
    let events = [
        wa(inbound("in", "2025-08-04 09:00")).category("service"),
        wa(reply("ff", "2025-08-04 09:30")).category("service"),
        wa(template("failed", "2025-08-04 10:00").status("failed")).category("bogus"),
        template("fb", "2025-08-04 10:00")
            .on("messenger")
            .user("psid-1")
            .category("bogus"),
        inbound("fb-in", "2025-08-04 09:00")
            .on("messenger")
            .user("psid-1"),
    ];
    let (out, units) = priced(dir.path(), &events, "");
    assert_eq!(
        brief(&units),
        vec![row("ff", "service", "free_customer_service", "0.0000")]
    );
    let without = dir.path().join("without");
    run_command(&dir.path().join("log.parquet"), &without)
        .assert()
        .success();
    let quota = |out: &Path| manifest_of(out)["invoices"]["quota"].clone();
    assert_eq!(quota(&out), quota(&without));
    assert_eq!(quota(&out), 2);
}

#[test]
fn the_meta_files_are_part_of_the_cards_checksum_and_listed_in_the_manifest() {
    let dir = tempfile::tempdir().unwrap();
    let input = write_log(dir.path(), &[tpl("t", "2025-08-04 10:00", "marketing")]);
    let card = card(dir.path(), "");
    let run = |name: &str| -> Value {
        let out = dir.path().join(name);
        run_meta(&input, &out, &card).success();
        manifest_of(&out)["rate_card"].clone()
    };
    let before = run("before");
    let files: Vec<&str> = before["meta_files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["path"].as_str().unwrap())
        .collect();
    assert_eq!(
        files,
        vec!["meta/rates-usd-2023-06.csv", "meta/rates-usd-2025-07.csv"]
    );
    let csv = dir.path().join("meta/rates-usd-2025-07.csv");
    let text = std::fs::read_to_string(&csv).unwrap();
    std::fs::write(
        &csv,
        text.replace("Indonesia,$US,0.0411", "Indonesia,$US,0.0999"),
    )
    .unwrap();
    let after = run("after");
    assert_ne!(before["sha256"], after["sha256"]);
    assert_ne!(
        before["meta_files"][1]["sha256"],
        after["meta_files"][1]["sha256"]
    );
    assert_eq!(before["meta_files"][0], after["meta_files"][0]);
}

#[test]
fn a_meta_rate_with_more_than_10_decimal_places_is_refused_with_its_line() {
    let dir = tempfile::tempdir().unwrap();
    let input = write_log(dir.path(), &[tpl("t", "2025-08-04 10:00", "marketing")]);
    let card = card(dir.path(), "");
    let csv = dir.path().join("meta/rates-usd-2025-07.csv");
    let text = std::fs::read_to_string(&csv).unwrap();
    std::fs::write(
        &csv,
        text.replace("Indonesia,$US,0.0411", "Indonesia,$US,0.04110000000001"),
    )
    .unwrap();
    run_meta(&input, &dir.path().join("out"), &card)
        .code(2)
        .stderr(predicate::str::contains(
            "market `Indonesia`, marketing: rate 0.04110000000001 has more than 10 decimal places",
        ))
        .stderr(predicate::str::contains("rates-usd-2025-07.csv`, line"));
}

#[test]
fn a_plan_in_another_currency_than_metas_gets_no_margin() {
    let dir = tempfile::tempdir().unwrap();
    let input = write_log(dir.path(), &[tpl("t", "2025-08-04 10:00", "marketing")]);
    let card = card(dir.path(), "");
    let text = std::fs::read_to_string(&card)
        .unwrap()
        .replace("currency = \"USD\"", "currency = \"EUR\"");
    std::fs::write(&card, text).unwrap();
    let out = dir.path().join("out");
    run_meta(&input, &out, &card)
        .success()
        .stderr(predicate::str::contains(
            "convbill: Meta (auto): 1 unit(s), 0.0411 USD; margin nothing;",
        ));
    let invoice: Value =
        serde_json::from_slice(&std::fs::read(out.join("invoices/2025-08/acme.json")).unwrap())
            .unwrap();
    assert_eq!(invoice["meta_cost"], serde_json::json!({"USD": "0.0411"}));
    assert!(invoice.get("margin").is_none());
}
