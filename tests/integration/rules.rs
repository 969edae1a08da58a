//! The session rules of SPEC section 2, one test each, on small readable timelines.
//! Times are `Day HH:MM` in the week of Monday 2024-01-01 (UTC).

use crate::support::*;

fn starts(sessions: &[S]) -> Vec<(i64, &str)> {
    sessions
        .iter()
        .map(|s| (s.started_at, s.initiation.as_str()))
        .collect()
}

// ---- The article's scenarios ----

#[test]
fn scenario_1_broadcast_template_opens_one_business_initiated_session() {
    let (sessions, violations) = derive(&[
        template("t1", "Mon 13:00"),
        inbound("u1", "Mon 14:00"),
        reply("r1", "Mon 14:05"),
        inbound("u2", "Mon 16:00"),
        reply("r2", "Mon 19:30"),
    ]);
    assert!(violations.is_empty());
    assert_eq!(sessions.len(), 1);
    let s = &sessions[0];
    assert_eq!(s.initiation, "business_initiated");
    assert_eq!(
        (s.started_at, s.ends_at),
        (at("Mon 13:00"), at("Tue 13:00"))
    );
    assert_eq!((s.inbound, s.outbound, s.quota), (2, 3, 1));
    assert_eq!(s.opened_by, "t1");
}

#[test]
fn scenario_2_customer_writes_again_after_the_session_ends() {
    let (sessions, _) = derive(&[
        template("t1", "Mon 13:00"),
        inbound("u1", "Mon 14:00"),
        reply("r1", "Mon 19:30"),
        inbound("u2", "Tue 14:00"),
        reply("r2", "Tue 14:05"),
    ]);
    assert_eq!(
        starts(&sessions),
        vec![
            (at("Mon 13:00"), "business_initiated"),
            (at("Tue 14:05"), "user_initiated")
        ]
    );
    assert_eq!(sessions.iter().map(|s| s.quota).sum::<i64>(), 2);
    // The customer's Tuesday message falls after session #1 ended and before #2 opened.
    assert_eq!(sessions[1].inbound, 0);
}

#[test]
fn scenario_2_without_a_reply_a_template_opens_session_2_as_business_initiated() {
    let (sessions, _) = derive(&[template("t1", "Mon 13:00"), template("t2", "Tue 15:00")]);
    assert_eq!(
        starts(&sessions),
        vec![
            (at("Mon 13:00"), "business_initiated"),
            (at("Tue 15:00"), "business_initiated")
        ]
    );
}

#[test]
fn scenario_3_user_initiated_session_starts_at_the_first_reply() {
    let (sessions, violations) = derive(&[
        inbound("u1", "Thu 14:00"),
        reply("r1", "Thu 14:30"),
        inbound("u2", "Thu 17:00"),
        reply("r2", "Thu 20:00"),
    ]);
    assert!(violations.is_empty());
    assert_eq!(sessions.len(), 1);
    let s = &sessions[0];
    assert_eq!(s.initiation, "user_initiated");
    assert_eq!(
        (s.started_at, s.ends_at),
        (at("Thu 14:30"), at("Fri 14:30"))
    );
    // Thursday 14:00 is before the session started: it opened the window, not the session.
    assert_eq!((s.inbound, s.outbound, s.quota), (1, 2, 1));
}

// ---- WhatsApp ----

#[test]
fn w1_outbound_messages_never_extend_the_service_window() {
    let (sessions, violations) = derive(&[
        inbound("u1", "Mon 10:00"),
        reply("r1", "Mon 10:05"),
        reply("r2", "Tue 09:59"),
        reply("r3", "Tue 10:00"),
    ]);
    assert_eq!(sessions.len(), 1);
    assert_eq!(
        violations,
        vec![("r3".into(), "outside_service_window".into())]
    );
}

#[test]
fn w1_a_later_inbound_restarts_the_service_window() {
    let (sessions, violations) = derive(&[
        inbound("u1", "Mon 10:00"),
        inbound("u2", "Tue 09:00"),
        reply("r1", "Tue 11:00"),
    ]);
    assert!(violations.is_empty());
    assert_eq!(starts(&sessions), vec![(at("Tue 11:00"), "user_initiated")]);
}

#[test]
fn w2_a_session_lasts_exactly_24_hours_and_the_next_message_at_the_end_opens_another() {
    let (sessions, _) = derive(&[
        template("t1", "Mon 13:00"),
        template("t2", "Tue 12:59"),
        template("t3", "Tue 13:00"),
    ]);
    assert_eq!(sessions.len(), 2);
    assert_eq!(sessions[0].outbound, 2);
    assert_eq!(sessions[1].started_at, at("Tue 13:00"));
    assert_eq!(sessions[1].opened_by, "t3");
}

#[test]
fn w2_sessions_are_never_extended_by_later_messages() {
    let (sessions, _) = derive(&[
        template("t1", "Mon 13:00"),
        template("t2", "Tue 12:00"),
        template("t3", "Tue 13:30"),
    ]);
    assert_eq!(
        sessions
            .iter()
            .map(|s| (s.started_at, s.ends_at))
            .collect::<Vec<_>>(),
        vec![
            (at("Mon 13:00"), at("Tue 13:00")),
            (at("Tue 13:30"), at("Wed 13:30"))
        ]
    );
}

#[test]
fn w3_a_template_inside_the_service_window_opens_a_user_initiated_session() {
    let (sessions, _) = derive(&[inbound("u1", "Mon 10:00"), template("t1", "Mon 11:00")]);
    assert_eq!(starts(&sessions), vec![(at("Mon 11:00"), "user_initiated")]);
}

#[test]
fn w3_the_window_is_closed_exactly_24_hours_after_the_inbound_message() {
    let (sessions, _) = derive(&[inbound("u1", "Mon 10:00"), template("t1", "Tue 10:00")]);
    assert_eq!(
        starts(&sessions),
        vec![(at("Tue 10:00"), "business_initiated")]
    );
}

#[test]
fn w4_free_form_outside_the_window_is_a_violation_and_opens_nothing() {
    let (sessions, violations) = derive(&[reply("r1", "Mon 10:00"), template("t1", "Mon 11:00")]);
    assert_eq!(
        violations,
        vec![("r1".into(), "outside_service_window".into())]
    );
    assert_eq!(
        starts(&sessions),
        vec![(at("Mon 11:00"), "business_initiated")]
    );
    assert_eq!(sessions[0].outbound, 1);
}

#[test]
fn w4_a_free_form_message_cannot_join_a_session_once_the_window_closed() {
    // The session opened by the template is still open at Tue 12:00, but the window is not.
    let (sessions, violations) = derive(&[
        inbound("u1", "Mon 11:00"),
        template("t1", "Mon 13:00"),
        reply("r1", "Tue 12:00"),
    ]);
    assert_eq!(
        violations,
        vec![("r1".into(), "outside_service_window".into())]
    );
    assert_eq!(sessions[0].outbound, 1);
}

#[test]
fn w4_templates_may_be_sent_at_any_time() {
    let (sessions, violations) = derive(&[template("t1", "Mon 03:00")]);
    assert!(violations.is_empty());
    assert_eq!(
        starts(&sessions),
        vec![(at("Mon 03:00"), "business_initiated")]
    );
}

#[test]
fn w5_inbound_messages_never_open_a_session() {
    let (sessions, violations) = derive(&[inbound("u1", "Mon 10:00"), inbound("u2", "Tue 10:00")]);
    assert!(sessions.is_empty());
    assert!(violations.is_empty());
}

#[test]
fn w5_inbound_counts_inside_the_half_open_interval_including_its_start() {
    let (sessions, _) = derive(&[
        inbound("u0", "Mon 12:00"),
        inbound("u1", "Mon 13:00"),
        template("t1", "Mon 13:00"),
        inbound("u2", "Tue 12:59"),
        inbound("u3", "Tue 13:00"),
    ]);
    assert_eq!(sessions.len(), 1);
    assert_eq!(
        sessions[0].inbound, 2,
        "u1 at the start and u2 inside; not u0 or u3"
    );
}

#[test]
fn equal_timestamps_put_inbound_before_outbound() {
    let (sessions, violations) = derive(&[reply("r1", "Mon 10:00"), inbound("u1", "Mon 10:00")]);
    assert!(violations.is_empty());
    assert_eq!(starts(&sessions), vec![(at("Mon 10:00"), "user_initiated")]);
    assert_eq!(sessions[0].inbound, 1);
}

#[test]
fn equal_timestamps_of_outbound_messages_order_by_message_id() {
    let (sessions, _) = derive(&[template("b", "Mon 10:00"), template("a", "Mon 10:00")]);
    assert_eq!(sessions.len(), 1);
    assert_eq!(sessions[0].opened_by, "a");
}

#[test]
fn duplicates_count_once_and_the_earliest_timestamp_wins() {
    let (sessions, _) = derive(&[
        template("t1", "Mon 13:00"),
        template("t1", "Mon 13:00"),
        // The same message logged again a day later is still the Monday message.
        template("t1", "Tue 14:00"),
        inbound("u1", "Mon 14:00"),
        inbound("u1", "Mon 14:00"),
    ]);
    assert_eq!(sessions.len(), 1);
    assert_eq!((sessions[0].inbound, sessions[0].outbound), (1, 1));
}

#[test]
fn the_same_message_id_in_two_accounts_is_two_messages() {
    let (sessions, _) = derive(&[
        template("t1", "Mon 13:00"),
        template("t1", "Mon 13:00").account("other"),
    ]);
    assert_eq!(sessions.len(), 2);
}

#[test]
fn failed_deliveries_open_nothing_join_nothing_and_violate_nothing() {
    let (sessions, violations) = derive(&[
        template("t1", "Mon 13:00").status("failed"),
        reply("r1", "Mon 13:30").status("failed"),
        template("t2", "Mon 14:00"),
        template("t3", "Mon 15:00").status("failed"),
    ]);
    assert!(violations.is_empty());
    assert_eq!(
        starts(&sessions),
        vec![(at("Mon 14:00"), "business_initiated")]
    );
    assert_eq!(sessions[0].outbound, 1);
}

#[test]
fn read_and_sent_statuses_count_as_delivered() {
    let (sessions, _) = derive(&[
        template("t1", "Mon 13:00").status("read"),
        template("t2", "Mon 14:00").status("sent"),
    ]);
    assert_eq!(sessions[0].outbound, 2);
}

#[test]
fn status_on_inbound_rows_is_ignored() {
    let (sessions, _) = derive(&[
        inbound("u1", "Mon 10:00").status("failed"),
        reply("r1", "Mon 10:30"),
    ]);
    assert_eq!(starts(&sessions), vec![(at("Mon 10:30"), "user_initiated")]);
}

#[test]
fn keys_that_differ_only_in_business_id_are_separate_conversations() {
    let (sessions, violations) = derive(&[
        inbound("u1", "Mon 10:00").business("biz-1"),
        reply("r1", "Mon 10:05").business("biz-2"),
        template("t1", "Mon 11:00").business("biz-2"),
    ]);
    assert_eq!(
        violations,
        vec![("r1".into(), "outside_service_window".into())]
    );
    assert_eq!(sessions.len(), 1);
    assert_eq!(sessions[0].business, "biz-2");
    assert_eq!(sessions[0].initiation, "business_initiated");
}

#[test]
fn a_session_belongs_to_the_month_of_its_start() {
    let (sessions, _) = derive(&[
        template("t1", "2024-01-31 23:00"),
        template("t2", "2024-02-01 10:00"),
    ]);
    assert_eq!(sessions.len(), 1);
    assert_eq!(sessions[0].period, "2024-01");
}

#[test]
fn nanosecond_precision_is_kept_at_the_24_hour_edge() {
    let start = at("Mon 13:00");
    let (sessions, _) = derive(&[
        template("t1", "Mon 13:00"),
        template("t2", "Mon 13:00").at_ns(start + 24 * HOUR - 1),
        template("t3", "Mon 13:00").at_ns(start + 24 * HOUR),
    ]);
    assert_eq!(sessions.len(), 2);
    assert_eq!(sessions[0].outbound, 2);
}

// ---- Messenger and Instagram ----

#[test]
fn m1_clicks_open_the_standard_window() {
    for click in ["cta_click", "ad_click"] {
        let (sessions, violations) = derive(&[
            inbound("u1", "Mon 10:00").on("messenger").kind(click),
            reply("r1", "Mon 11:00").on("messenger"),
        ]);
        assert!(violations.is_empty(), "{click}");
        assert_eq!(
            starts(&sessions),
            vec![(at("Mon 10:00"), "standard")],
            "{click}"
        );
        assert_eq!(sessions[0].quota, 1);
    }
}

#[test]
fn m2_each_inbound_message_restarts_the_window_and_extends_the_session() {
    let (sessions, _) = derive(&[
        inbound("u1", "Mon 10:00").on("messenger"),
        inbound("u2", "Mon 20:00").on("messenger"),
        inbound("u3", "Tue 19:00").on("messenger"),
        reply("r1", "Wed 18:59").on("messenger"),
        // Exactly 24 hours after the last inbound message: the window was closed.
        inbound("u4", "Wed 19:00").on("messenger"),
    ]);
    assert_eq!(
        sessions
            .iter()
            .map(|s| (s.started_at, s.ends_at, s.inbound, s.outbound))
            .collect::<Vec<_>>(),
        vec![
            (at("Mon 10:00"), at("Wed 19:00"), 3, 1),
            (at("Wed 19:00"), at("Thu 19:00"), 1, 0)
        ]
    );
    assert_eq!(sessions[0].opened_by, "u1");
}

#[test]
fn m3_outbound_outside_every_session_is_a_violation() {
    let (sessions, violations) = derive(&[
        reply("r0", "Mon 09:00").on("instagram"),
        inbound("u1", "Mon 10:00").on("instagram"),
        reply("r1", "Tue 10:00").on("instagram"),
        template("t1", "Tue 11:00").on("instagram"),
    ]);
    assert_eq!(
        violations,
        vec![
            ("r0".into(), "outside_standard_window".into()),
            ("r1".into(), "outside_standard_window".into()),
            ("t1".into(), "outside_standard_window".into())
        ]
    );
    assert_eq!(sessions.len(), 1);
    assert_eq!(sessions[0].quota, 0);
}

#[test]
fn m4_an_unanswered_session_is_reported_with_quota_0() {
    let (sessions, _) = derive(&[
        inbound("u1", "Mon 10:00").on("messenger"),
        reply("r1", "Mon 10:30").on("messenger").status("failed"),
    ]);
    assert_eq!(sessions.len(), 1);
    assert!(!sessions[0].billable);
    assert_eq!((sessions[0].quota, sessions[0].outbound), (0, 0));
}

#[test]
fn m4_an_answered_session_costs_1_however_many_replies() {
    let (sessions, _) = derive(&[
        inbound("u1", "Mon 10:00").on("instagram"),
        reply("r1", "Mon 10:30").on("instagram"),
        reply("r2", "Mon 10:31").on("instagram"),
        reply("r3", "Mon 10:32").on("instagram"),
    ]);
    assert_eq!((sessions[0].quota, sessions[0].outbound), (1, 3));
    assert!(sessions[0].billable);
}

#[test]
fn messenger_and_instagram_keys_are_separate() {
    let (sessions, violations) = derive(&[
        inbound("u1", "Mon 10:00").on("messenger"),
        reply("r1", "Mon 10:30").on("instagram"),
    ]);
    assert_eq!(sessions.len(), 1);
    assert_eq!(violations.len(), 1);
}
