//! Properties over random logs: the columnar implementation agrees session for session with
//! the row-by-row reference ([`crate::reference`]), and sessions of a key never overlap.
//! Most events share a few keys and fall on whole hours over four days (crossing a month end),
//! so that ties and exact 24-hour gaps are common.

use proptest::prelude::*;

use crate::reference;
use crate::support::*;

fn arb_event() -> impl Strategy<Value = Ev> {
    (
        0..40u32,
        prop_oneof![9 => Just("a"), 1 => Just("b")],
        prop_oneof![6 => Just("whatsapp"), 3 => Just("messenger"), 1 => Just("instagram")],
        prop_oneof![9 => Just("b1"), 1 => Just("b2")],
        prop_oneof![8 => Just("u1"), 2 => Just("u2")],
        any::<bool>(),
        0..3usize,
        prop_oneof![
            4 => Just(None),
            1 => Just(Some("delivered")),
            1 => Just(Some("read")),
            1 => Just(Some("sent")),
            2 => Just(Some("failed")),
        ],
        0..96i64,
        prop_oneof![4 => Just(0i64), 1 => Just(1i64)],
    )
        .prop_map(
            |(id, account, channel, business, user, inbound, kind, status, hour, half)| {
                let kind = if inbound {
                    [None, Some("cta_click"), Some("ad_click")][kind]
                } else {
                    [None, Some("message"), Some("template")][kind]
                };
                Ev {
                    id: format!("m{id}"),
                    account: account.into(),
                    channel: channel.into(),
                    business: business.into(),
                    user: user.into(),
                    direction: if inbound { "inbound" } else { "outbound" }.into(),
                    ts: at("2024-01-30 00:00") + hour * HOUR + half * HOUR / 2,
                    kind: kind.map(Into::into),
                    status: status.map(Into::into),
                    category: None,
                }
            },
        )
}

/// A message id logged again repeats its event (key, direction, kind); only its timestamp and
/// status may differ. Different contents under one id are a conflict that convbill refuses.
fn same_event_per_id(mut events: Vec<Ev>) -> Vec<Ev> {
    let mut first: std::collections::HashMap<(String, String), Ev> = Default::default();
    for event in &mut events {
        match first.get(&(event.account.clone(), event.id.clone())) {
            Some(f) => {
                event.channel = f.channel.clone();
                event.business = f.business.clone();
                event.user = f.user.clone();
                event.direction = f.direction.clone();
                event.kind = f.kind.clone();
            }
            None => {
                first.insert((event.account.clone(), event.id.clone()), event.clone());
            }
        }
    }
    events
}

fn sorted<T: Ord>(mut v: Vec<T>) -> Vec<T> {
    v.sort();
    v
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    #[test]
    fn columnar_sessions_agree_with_the_reference(
        events in prop::collection::vec(arb_event(), 1..80).prop_map(same_event_per_id)
    ) {
        let (sessions, violations) = derive(&events);
        let (expected_sessions, expected_violations) = reference::derive(&events);
        prop_assert_eq!(sorted(sessions.clone()), sorted(expected_sessions));
        prop_assert_eq!(sorted(violations), sorted(expected_violations));

        for pair in sessions.windows(2) {
            let same_key = (&pair[0].account, &pair[0].channel, &pair[0].business, &pair[0].user)
                == (&pair[1].account, &pair[1].channel, &pair[1].business, &pair[1].user);
            if same_key {
                prop_assert!(pair[0].ends_at <= pair[1].started_at, "overlap: {:?}", pair);
            }
        }
        for s in &sessions {
            prop_assert_eq!(s.quota, i64::from(s.billable));
        }
    }
}

/// The log with digit-only business and user ids (`"10"` sorts before `"9"` as text, after it
/// as a number), and the same log with each of those ids behind a prefix, which keeps their
/// text order: a short one and one that makes them longer than 12 bytes.
fn renamed(events: &[Ev], prefix: &str) -> Vec<Ev> {
    let digits = |id: &str| match id {
        "u1" => "10",
        "u2" => "9",
        "b1" => "0",
        _ => "12",
    };
    events
        .iter()
        .map(|e| Ev {
            business: format!("{prefix}{}", digits(&e.business)),
            user: format!("{prefix}{}", digits(&e.user)),
            ..e.clone()
        })
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 100, ..ProptestConfig::default() })]

    /// Digit-only user ids, short ones and long ones take three ways to sort the rows (see
    /// `sessions::sort_events`). All give the same sessions and violations in the same order
    /// (the key's text order).
    #[test]
    fn every_kind_of_user_id_gives_the_same_rows_in_the_same_order(
        events in prop::collection::vec(arb_event(), 1..80).prop_map(same_event_per_id)
    ) {
        let (sessions, violations) = derive(&renamed(&events, ""));
        for prefix in ["x", "long-prefix-"] {
            let (mut renamed_sessions, renamed_violations) = derive(&renamed(&events, prefix));
            for s in &mut renamed_sessions {
                s.business.drain(..prefix.len());
                s.user.drain(..prefix.len());
            }
            prop_assert_eq!(&sessions, &renamed_sessions);
            prop_assert_eq!(&violations, &renamed_violations);
        }
    }
}
