//! A plain row-by-row implementation of the session rules (SPEC section 2), written for the
//! tests only: no polars, no window expressions, one key at a time and quadratic where that
//! is simplest. The property test checks the library against it.

use std::collections::BTreeMap;

use convbill::schema::DAY_NS;

use crate::support::{Ev, S, V};

fn period(ts: i64) -> String {
    chrono::DateTime::from_timestamp_nanos(ts)
        .format("%Y-%m")
        .to_string()
}

/// Sessions (sorted by key, then start) and violations (sorted by key, then time).
pub fn derive(events: &[Ev]) -> (Vec<S>, Vec<V>) {
    // Duplicates: the same (account, message id) counts once, the earliest timestamp wins,
    // and among equal timestamps the first row.
    let mut kept: BTreeMap<(String, String), (i64, usize)> = BTreeMap::new();
    for (i, e) in events.iter().enumerate() {
        let entry = kept
            .entry((e.account.clone(), e.id.clone()))
            .or_insert((e.ts, i));
        if e.ts < entry.0 {
            *entry = (e.ts, i);
        }
    }
    let mut by_key: BTreeMap<(String, String, String, String), Vec<&Ev>> = BTreeMap::new();
    for (_, i) in kept.values() {
        let e = &events[*i];
        by_key
            .entry((
                e.account.clone(),
                e.channel.clone(),
                e.business.clone(),
                e.user.clone(),
            ))
            .or_default()
            .push(e);
    }
    let mut sessions = Vec::new();
    let mut violations = Vec::new();
    for (_, mut key_events) in by_key {
        key_events.sort_by(|a, b| {
            (a.ts, a.direction != "inbound", &a.id).cmp(&(b.ts, b.direction != "inbound", &b.id))
        });
        if key_events[0].channel == "whatsapp" {
            whatsapp(&key_events, &mut sessions, &mut violations);
        } else {
            standard(&key_events, &mut sessions, &mut violations);
        }
    }
    (sessions, violations)
}

fn is_failed(e: &Ev) -> bool {
    e.direction == "outbound" && e.status.as_deref() == Some("failed")
}

fn new_session(e: &Ev, initiation: &str) -> S {
    S {
        account: e.account.clone(),
        channel: e.channel.clone(),
        business: e.business.clone(),
        user: e.user.clone(),
        started_at: e.ts,
        ends_at: e.ts + DAY_NS,
        initiation: initiation.into(),
        opened_by: e.id.clone(),
        inbound: 0,
        outbound: 0,
        billable: true,
        quota: 1,
        period: period(e.ts),
    }
}

fn whatsapp(events: &[&Ev], sessions: &mut Vec<S>, violations: &mut Vec<V>) {
    let first = sessions.len();
    let mut last_inbound: Option<i64> = None;
    for e in events {
        if e.direction == "inbound" {
            last_inbound = Some(e.ts);
            continue;
        }
        if is_failed(e) {
            continue;
        }
        let window_open = last_inbound.is_some_and(|u| e.ts - u < DAY_NS);
        let free_form = e.kind.as_deref().unwrap_or("message") == "message";
        if free_form && !window_open {
            violations.push((e.id.clone(), "outside_service_window".into()));
            continue;
        }
        match sessions[first..].last_mut() {
            Some(s) if e.ts < s.ends_at => s.outbound += 1,
            _ => {
                let initiation = if window_open {
                    "user_initiated"
                } else {
                    "business_initiated"
                };
                let mut s = new_session(e, initiation);
                s.outbound = 1;
                sessions.push(s);
            }
        }
    }
    for e in events.iter().filter(|e| e.direction == "inbound") {
        for s in sessions[first..].iter_mut() {
            if s.started_at <= e.ts && e.ts < s.ends_at {
                s.inbound += 1;
            }
        }
    }
}

fn standard(events: &[&Ev], sessions: &mut Vec<S>, violations: &mut Vec<V>) {
    let first = sessions.len();
    let mut last_inbound: Option<i64> = None;
    for e in events {
        let open = last_inbound.is_some_and(|u| e.ts - u < DAY_NS);
        if e.direction == "inbound" {
            if !open {
                let mut s = new_session(e, "standard");
                s.billable = false;
                s.quota = 0;
                sessions.push(s);
            }
            let s = sessions[first..].last_mut().unwrap();
            s.inbound += 1;
            s.ends_at = e.ts + DAY_NS;
            last_inbound = Some(e.ts);
        } else if is_failed(e) {
            continue;
        } else if open {
            let s = sessions[first..].last_mut().unwrap();
            s.outbound += 1;
            s.billable = true;
            s.quota = 1;
        } else {
            violations.push((e.id.clone(), "outside_standard_window".into()));
        }
    }
}
