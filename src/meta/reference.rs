//! Meta's rules (SPEC-meta §2, §3a, §3b) for one conversation key, event by event: the plain
//! reading of the text, kept as the reference the columnar pricing is checked against. What
//! depends on more than one key (the free tier's first 1,000 service conversations of a WABA,
//! volume tiers, rates) comes after, from its output.

use super::Category;

const HOUR: i64 = 3_600_000_000_000;
/// The customer service window and a conversation: 24 hours.
const DAY: i64 = 24 * HOUR;
/// A free entry point window: 72 hours.
const FREE_ENTRY: i64 = 72 * HOUR;

/// One event of a conversation key, in event order (time; at the same instant inbound first).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Event {
    /// UTC nanoseconds.
    pub time: i64,
    pub what: What,
}

/// What an event is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum What {
    /// An inbound message (`message`).
    Inbound,
    /// An inbound `ad_click` or `cta_click`: a free entry point trigger.
    Click,
    /// A free-form outbound message; `delivered` unless `failed`.
    Message { delivered: bool },
    /// An outbound template of its category.
    Template { category: Category, delivered: bool },
}

/// Whether a conversation opened when the customer service window was open.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Direction {
    UserInitiated,
    BusinessInitiated,
}

/// A conversation under conversation-based pricing: `[start, end)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conversation {
    /// The index of the event that opened it.
    pub opened_by: usize,
    pub start: i64,
    /// `start` + 24 hours (72 for a free entry point one), or earlier when a free entry point
    /// conversation closed it.
    pub end: i64,
    pub category: Category,
    pub free_entry_point: bool,
    pub direction: Direction,
}

/// How Meta prices a delivered message under per-message pricing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MessageType {
    Regular,
    FreeCustomerService,
    FreeEntryPoint,
}

/// A delivered outbound message under per-message pricing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// The index of its event.
    pub event: usize,
    pub category: Category,
    pub pricing_type: MessageType,
}

/// The windows both eras share (SPEC-meta §2), as they stand at each event.
#[derive(Debug, Default)]
struct Windows {
    /// The latest inbound event's time: the customer service window is `[u, u + 24h)`.
    last_inbound: Option<i64>,
    /// A click not answered yet.
    click: Option<i64>,
    /// The end of the latest free entry point window.
    free_entry_end: Option<i64>,
}

impl Windows {
    fn service_window_open(&self, t: i64) -> bool {
        self.last_inbound.is_some_and(|u| t < u + DAY)
    }

    fn free_entry_open(&self, t: i64) -> bool {
        self.free_entry_end.is_some_and(|end| t < end)
    }

    /// Reads an event: an inbound one moves the windows; a delivered outbound message is
    /// returned with its category (`service` for free-form) and whether it is a template.
    fn read(&mut self, event: &Event) -> Option<(Category, bool)> {
        match event.what {
            What::Inbound | What::Click => {
                self.last_inbound = Some(event.time);
                if event.what == What::Click {
                    self.click = Some(event.time);
                }
                None
            }
            What::Message { delivered } => delivered.then_some((Category::Service, false)),
            What::Template {
                category,
                delivered,
            } => delivered.then_some((category, true)),
        }
    }

    /// Reads a delivered outbound message at `t`: whether it opens a free entry point window.
    /// It is the first delivered outbound message at or after the click, and answers it
    /// (later replies to it open nothing), within 24 hours, while no window is open.
    fn delivered(&mut self, t: i64) -> bool {
        let Some(u) = self.click.take() else {
            return false;
        };
        let opens = u <= t && t < u + DAY && !self.free_entry_open(t);
        if opens {
            self.free_entry_end = Some(t + FREE_ENTRY);
        }
        opens
    }
}

/// The conversations of one key under conversation-based pricing (SPEC-meta §3a, rules 1 to
/// 5), in the order they opened.
pub fn conversations(events: &[Event]) -> Vec<Conversation> {
    priced(events, i64::MAX).0
}

/// The delivered outbound messages of one key under per-message pricing (SPEC-meta §3b), each
/// with its category and pricing type (volume tiers and rates aside).
pub fn messages(events: &[Event]) -> Vec<Message> {
    priced(events, i64::MIN).1
}

/// One key priced by conversations before `switch` (UTC nanoseconds: 2025-07-01 00:00 in the
/// WABA's zone under `auto`) and by message from it. The windows run on across the switch; a
/// conversation opened before it keeps its 24 hours, and a free entry point window opened
/// after it closes none of them (SPEC-meta §6.5). A utility template that a utility
/// conversation opened before the switch covers is free (the era edge rule), unless a free
/// entry point window makes it that (§6.4).
pub fn priced(events: &[Event], switch: i64) -> (Vec<Conversation>, Vec<Message>) {
    let mut windows = Windows::default();
    let (mut conversations, mut messages): (Vec<Conversation>, Vec<Message>) =
        (Vec::new(), Vec::new());
    for (i, event) in events.iter().enumerate() {
        let t = event.time;
        let Some((category, template)) = windows.read(event) else {
            continue;
        };
        let open = |c: &Conversation| c.start <= t && t < c.end;
        let opens_free_entry = windows.delivered(t);
        if t >= switch {
            let covered_by_utility = conversations
                .iter()
                .any(|c| c.category == Category::Utility && open(c));
            let pricing_type = if windows.free_entry_open(t) {
                MessageType::FreeEntryPoint
            } else if !template
                || (category == Category::Utility
                    && (windows.service_window_open(t) || covered_by_utility))
            {
                MessageType::FreeCustomerService
            } else {
                MessageType::Regular
            };
            messages.push(Message {
                event: i,
                category,
                pricing_type,
            });
            continue;
        }
        let direction = match windows.service_window_open(t) {
            true => Direction::UserInitiated,
            false => Direction::BusinessInitiated,
        };
        // Rule 1: a free entry point conversation closes the others, and while it is open
        // nothing else opens.
        if opens_free_entry {
            for c in conversations.iter_mut().filter(|c| open(c)) {
                c.end = t;
            }
            conversations.push(Conversation {
                opened_by: i,
                start: t,
                end: t + FREE_ENTRY,
                category: Category::Service,
                free_entry_point: true,
                direction,
            });
            continue;
        }
        if conversations.iter().any(|c| c.free_entry_point && open(c)) {
            continue;
        }
        // Rule 2: a template opens its category's conversation when none is open; rule 3: a
        // free-form message opens a service one when none of any category is open.
        let opens = match template {
            true => !conversations
                .iter()
                .any(|c| c.category == category && open(c)),
            false => !conversations.iter().any(open),
        };
        if opens {
            conversations.push(Conversation {
                opened_by: i,
                start: t,
                end: t + DAY,
                category,
                free_entry_point: false,
                direction,
            });
        }
    }
    (conversations, messages)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(hours: f64) -> i64 {
        (hours * HOUR as f64) as i64
    }

    fn inbound(hours: f64) -> Event {
        Event {
            time: at(hours),
            what: What::Inbound,
        }
    }

    fn click(hours: f64) -> Event {
        Event {
            time: at(hours),
            what: What::Click,
        }
    }

    fn reply(hours: f64) -> Event {
        Event {
            time: at(hours),
            what: What::Message { delivered: true },
        }
    }

    fn template(hours: f64, category: Category) -> Event {
        Event {
            time: at(hours),
            what: What::Template {
                category,
                delivered: true,
            },
        }
    }

    /// (start hour, end hour, category, free entry point, direction) of each conversation.
    fn summary(events: &[Event]) -> Vec<(f64, f64, &'static str, bool, Direction)> {
        conversations(events)
            .into_iter()
            .map(|c| {
                (
                    c.start as f64 / HOUR as f64,
                    c.end as f64 / HOUR as f64,
                    c.category.name(),
                    c.free_entry_point,
                    c.direction,
                )
            })
            .collect()
    }

    use Direction::{BusinessInitiated as Business, UserInitiated as User};

    #[test]
    fn cbp_a_marketing_conversation_at_hour_0_and_a_service_one_at_hour_25() {
        // Meta's example: a marketing template at hour 0 opens a marketing conversation; the
        // customer answers at hour 1 and the business at hour 2, inside it; the customer
        // writes at hour 24.5 and the business answers at hour 25, when nothing is open: a
        // service conversation, user-initiated.
        let events = [
            template(0.0, Category::Marketing),
            inbound(1.0),
            reply(2.0),
            inbound(24.5),
            reply(25.0),
        ];
        assert_eq!(
            summary(&events),
            [
                (0.0, 24.0, "marketing", false, Business),
                (25.0, 49.0, "service", false, User),
            ]
        );
    }

    #[test]
    fn cbp_categories_overlap_and_service_opens_only_when_nothing_is() {
        let events = [
            inbound(0.0),
            reply(1.0),                          // service, user-initiated
            template(2.0, Category::Utility),    // its own utility conversation
            template(3.0, Category::Utility),    // inside it
            template(23.0, Category::Marketing), // its own, still in the window
            reply(25.5),                         // marketing is open until 47: nothing
            template(26.0, Category::Utility),   // utility ended at 26: a new one
        ];
        assert_eq!(
            summary(&events),
            [
                (1.0, 25.0, "service", false, User),
                (2.0, 26.0, "utility", false, User),
                (23.0, 47.0, "marketing", false, User),
                (26.0, 50.0, "utility", false, Business),
            ]
        );
    }

    #[test]
    fn cbp_the_ad_message_at_10_answered_at_22_is_a_free_entry_point_conversation() {
        // Meta's example: the customer comes from an ad at 10:00; the business answers at
        // 22:00, within 24 hours: a 72-hour free entry point conversation that closes the
        // marketing one open since 09:00, and inside which nothing else opens.
        let events = [
            template(9.0, Category::Marketing),
            click(10.0),
            reply(22.0),
            template(30.0, Category::Marketing),
            template(93.9, Category::Utility),
            template(94.0, Category::Utility),
        ];
        assert_eq!(
            summary(&events),
            [
                (9.0, 22.0, "marketing", false, Business),
                (22.0, 94.0, "service", true, User),
                (94.0, 118.0, "utility", false, Business),
            ]
        );
    }

    #[test]
    fn a_click_is_answered_once_and_only_within_24_hours() {
        // Answered after 24 hours: nothing free; the next reply opens nothing either.
        let late = [click(0.0), reply(24.0), reply(50.0)];
        assert!(summary(&late).iter().all(|c| !c.3), "{:?}", summary(&late));
        // A failed reply does not answer it: the delivered one after it does.
        let failed = [
            click(0.0),
            Event {
                time: at(1.0),
                what: What::Message { delivered: false },
            },
            reply(2.0),
        ];
        assert_eq!(summary(&failed), [(2.0, 74.0, "service", true, User)]);
        // At the same instant, the click (inbound) comes first and counts.
        assert!(summary(&[click(5.0), reply(5.0)])[0].3);
    }

    /// (hour, category, pricing type) of each delivered message.
    fn priced(events: &[Event]) -> Vec<(f64, &'static str, MessageType)> {
        messages(events)
            .into_iter()
            .map(|m| {
                (
                    events[m.event].time as f64 / HOUR as f64,
                    m.category.name(),
                    m.pricing_type,
                )
            })
            .collect()
    }

    use MessageType::{FreeCustomerService as FreeCs, FreeEntryPoint as FreeEp, Regular};

    #[test]
    fn pmp_the_table_of_hours_0_2_3_4_26_and_30() {
        // The customer writes at hour 0: the window is open to hour 24. A reply at 2 and a
        // utility template at 3 are free; a marketing template at 4 is charged. At 26 the
        // window has closed: a utility template is charged; the customer writes at 29 and a
        // utility template at 30 is free again.
        let events = [
            inbound(0.0),
            reply(2.0),
            template(3.0, Category::Utility),
            template(4.0, Category::Marketing),
            template(26.0, Category::Utility),
            inbound(29.0),
            template(30.0, Category::Utility),
        ];
        assert_eq!(
            priced(&events),
            [
                (2.0, "service", FreeCs),
                (3.0, "utility", FreeCs),
                (4.0, "marketing", Regular),
                (26.0, "utility", Regular),
                (30.0, "utility", FreeCs),
            ]
        );
    }

    #[test]
    fn auto_a_utility_conversation_open_at_the_switch_covers_utility_templates_after_it() {
        // The switch at hour 100. A utility conversation opened at hour 90 runs to 114: a
        // utility template at 105 is free; a marketing one is charged; at 114 the
        // conversation has ended and a utility template is charged.
        let events = [
            template(90.0, Category::Utility),
            template(105.0, Category::Utility),
            template(106.0, Category::Marketing),
            template(114.0, Category::Utility),
        ];
        let (conversations, messages) = super::priced(&events, at(100.0));
        assert_eq!(conversations.len(), 1);
        assert_eq!(
            (conversations[0].start, conversations[0].end),
            (at(90.0), at(114.0))
        );
        let types: Vec<(usize, MessageType)> =
            messages.iter().map(|m| (m.event, m.pricing_type)).collect();
        assert_eq!(types, [(1, FreeCs), (2, Regular), (3, Regular)]);
    }

    #[test]
    fn auto_a_free_entry_point_window_after_the_switch_closes_no_conversation() {
        // A marketing conversation from hour 95; a click at 99 answered at 101, after the
        // switch at 100: the message is free (free entry point), and the conversation keeps
        // its 24 hours.
        let events = [
            template(95.0, Category::Marketing),
            click(99.0),
            reply(101.0),
        ];
        let (conversations, messages) = super::priced(&events, at(100.0));
        assert_eq!(conversations[0].end, at(119.0));
        assert_eq!(messages[0].pricing_type, FreeEp);
        // A window opened before the switch still makes messages after it free (§6.4).
        let events = [click(98.0), reply(99.0), template(102.0, Category::Utility)];
        let (conversations, messages) = super::priced(&events, at(100.0));
        assert!(conversations[0].free_entry_point);
        assert_eq!(messages[0].pricing_type, FreeEp);
    }

    #[test]
    fn pmp_everything_is_free_inside_a_free_entry_point_window() {
        let events = [
            click(0.0),
            template(1.0, Category::Marketing),
            template(50.0, Category::Authentication),
            template(73.0, Category::Marketing),
            Event {
                time: at(74.0),
                what: What::Template {
                    category: Category::Marketing,
                    delivered: false,
                },
            },
        ];
        assert_eq!(
            priced(&events),
            [
                (1.0, "marketing", FreeEp),
                (50.0, "authentication", FreeEp),
                (73.0, "marketing", Regular),
            ]
        );
    }
}
