//! Properties of Meta's rules for one conversation key (`convbill::meta::reference`) over
//! random event sequences: what SPEC-meta says of every conversation and message holds, and
//! the two models agree on the free entry point windows they share. Times fall on whole and
//! half hours over nine days, so that ties and exact 24- and 72-hour edges are common.

use convbill::meta::reference::{self, Event, MessageType, What};
use convbill::meta::Category;
use proptest::prelude::*;

const HOUR: i64 = 3_600_000_000_000;

fn arb_what() -> impl Strategy<Value = What> {
    let category = prop_oneof![
        Just(Category::Marketing),
        Just(Category::Utility),
        Just(Category::Authentication)
    ];
    prop_oneof![
        3 => Just(What::Inbound),
        1 => Just(What::Click),
        3 => prop_oneof![4 => Just(true), 1 => Just(false)].prop_map(|delivered| What::Message { delivered }),
        3 => (category, prop_oneof![4 => Just(true), 1 => Just(false)])
            .prop_map(|(category, delivered)| What::Template { category, delivered }),
    ]
}

/// Events in event order: by time, inbound first at the same instant.
fn arb_events() -> impl Strategy<Value = Vec<Event>> {
    prop::collection::vec((0..432i64, arb_what()), 1..60).prop_map(|mut events| {
        let inbound = |w: &What| matches!(w, What::Inbound | What::Click);
        events.sort_by_key(|(half_hours, what)| (*half_hours, !inbound(what)));
        events
            .into_iter()
            .map(|(half_hours, what)| Event {
                time: half_hours * HOUR / 2,
                what,
            })
            .collect()
    })
}

fn delivered(what: &What) -> Option<Category> {
    match *what {
        What::Message { delivered: true } => Some(Category::Service),
        What::Template {
            category,
            delivered: true,
        } => Some(category),
        _ => None,
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

    #[test]
    fn every_conversation_is_as_the_rules_say(events in arb_events()) {
        let conversations = reference::conversations(&events);
        let open_at = |t: i64| conversations.iter().filter(move |c| c.start <= t && t < c.end);
        for c in &conversations {
            // Opened by a delivered outbound message at its start.
            prop_assert_eq!(events[c.opened_by].time, c.start);
            prop_assert!(delivered(&events[c.opened_by].what).is_some());
            // 24 hours (72 for a free entry point one), or cut where a free entry point
            // conversation starts.
            let full = if c.free_entry_point { 72 * HOUR } else { 24 * HOUR };
            prop_assert!(
                c.end == c.start + full
                    || conversations.iter().any(|o| o.free_entry_point && o.start == c.end),
                "{:?}", c
            );
            // Nothing opens inside a free entry point conversation.
            prop_assert!(!conversations.iter().any(|o| o.free_entry_point && o.start < c.start && c.start < o.end));
            // No two conversations of one category overlap.
            prop_assert!(!conversations.iter().any(|o| !std::ptr::eq(o, c)
                && o.category == c.category
                && o.start <= c.start && c.start < o.end));
            // A service conversation (not a free entry point one) opens only when none is open.
            if c.category == Category::Service && !c.free_entry_point {
                prop_assert!(!conversations.iter().any(|o| !std::ptr::eq(o, c) && o.start < c.start && c.start < o.end));
            }
        }
        // Every delivered outbound message is covered: a template by a conversation of its
        // category or a free entry point one, a free-form message by any.
        for event in &events {
            let Some(category) = delivered(&event.what) else { continue };
            let covered = open_at(event.time).any(|c| {
                c.free_entry_point || category == Category::Service || c.category == category
            });
            prop_assert!(covered, "{:?}", event);
        }
    }

    #[test]
    fn every_delivered_message_is_priced_once_and_the_models_share_their_free_windows(
        events in arb_events()
    ) {
        let messages = reference::messages(&events);
        let delivered_events: Vec<usize> = events
            .iter()
            .enumerate()
            .filter(|(_, e)| delivered(&e.what).is_some())
            .map(|(i, _)| i)
            .collect();
        let priced: Vec<usize> = messages.iter().map(|m| m.event).collect();
        prop_assert_eq!(priced, delivered_events);
        let conversations = reference::conversations(&events);
        for m in &messages {
            let t = events[m.event].time;
            prop_assert_eq!(Some(m.category), delivered(&events[m.event].what));
            // Free-form is never charged; marketing and authentication only outside a free
            // entry point window are.
            match m.category {
                Category::Service => prop_assert!(m.pricing_type != MessageType::Regular),
                Category::Marketing | Category::Authentication => prop_assert_eq!(
                    m.pricing_type == MessageType::Regular,
                    m.pricing_type != MessageType::FreeEntryPoint
                ),
                _ => {}
            }
            // A free entry point message under one model is one a free entry point
            // conversation covers under the other.
            let in_free_entry = conversations
                .iter()
                .any(|c| c.free_entry_point && c.start <= t && t < c.end);
            prop_assert_eq!(m.pricing_type == MessageType::FreeEntryPoint, in_free_entry, "{:?}", m);
        }
    }
}
