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

/// A unit in terms both implementations give: (event index in its key's events, end (for a
/// conversation), category, pricing type, direction (for a conversation)).
type Brief = (
    usize,
    Option<i64>,
    Category,
    &'static str,
    Option<&'static str>,
);

fn direction_name(d: reference::Direction) -> &'static str {
    match d {
        reference::Direction::UserInitiated => "user_initiated",
        reference::Direction::BusinessInitiated => "business_initiated",
    }
}

/// The reference's units of one key, in event order.
fn reference_units(events: &[Event], switch: i64) -> Vec<Brief> {
    let (conversations, messages) = reference::priced(events, switch);
    let mut units: Vec<Brief> = conversations
        .iter()
        .map(|c| {
            (
                c.opened_by,
                Some(c.end),
                c.category,
                if c.free_entry_point {
                    "free_entry_point"
                } else {
                    "regular"
                },
                Some(direction_name(c.direction)),
            )
        })
        .chain(messages.iter().map(|m| {
            let kind = match m.pricing_type {
                MessageType::Regular => "regular",
                MessageType::FreeCustomerService => "free_customer_service",
                MessageType::FreeEntryPoint => "free_entry_point",
            };
            (m.event, None, m.category, kind, None)
        }))
        .collect();
    units.sort_by_key(|u| u.0);
    units
}

/// The columnar scan's units of several keys at once, each in its key's terms.
fn columnar_units(keys: &[(Vec<Event>, i64)]) -> Vec<Vec<Brief>> {
    use convbill::meta::units;
    use convbill::schema;
    let mut events = units::Events::default();
    // (key, index in the key's events) of each columnar event.
    let mut origin = Vec::new();
    for (k, (key_events, _)) in keys.iter().enumerate() {
        for (i, e) in key_events.iter().enumerate() {
            let (what, category) = match e.what {
                What::Inbound => (units::INBOUND, schema::CATEGORY_NONE),
                What::Click => (units::CLICK, schema::CATEGORY_NONE),
                What::Message { delivered: true } => (units::MESSAGE, schema::CATEGORY_NONE),
                What::Template {
                    category,
                    delivered: true,
                } => (
                    units::TEMPLATE,
                    match category {
                        Category::Utility => schema::CATEGORY_UTILITY,
                        Category::Authentication => schema::CATEGORY_AUTHENTICATION,
                        _ => schema::CATEGORY_MARKETING,
                    },
                ),
                // Failed messages never reach Meta's pricing.
                _ => continue,
            };
            events.key.push(k as u32);
            events.time.push(e.time);
            events.what.push(what);
            events.category.push(category);
            events.source.push(origin.len() as _);
            origin.push((k, i));
        }
    }
    let scanned = units::scan(&events, |first| keys[origin[first].0].1);
    let mut by_key = vec![Vec::new(); keys.len()];
    for u in 0..scanned.len() {
        let (k, i) = origin[scanned.event[u]];
        by_key[k].push((
            i,
            scanned.end[u],
            scanned.category[u],
            scanned.pricing_type[u].name(),
            scanned.direction[u].map(direction_name),
        ));
    }
    by_key
}

/// The instant a key switches to per-message pricing: never, always, or at some half hour.
fn arb_switch() -> impl Strategy<Value = i64> {
    prop_oneof![
        Just(i64::MAX),
        Just(i64::MIN),
        (0..432i64).prop_map(|half_hours| half_hours * HOUR / 2),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

    #[test]
    fn the_columnar_scan_gives_the_units_of_the_reference_for_every_key(
        keys in prop::collection::vec((arb_events(), arb_switch()), 1..5)
    ) {
        let columnar = columnar_units(&keys);
        for (k, (events, switch)) in keys.iter().enumerate() {
            prop_assert_eq!(&columnar[k], &reference_units(events, *switch), "key {}", k);
        }
    }
}
