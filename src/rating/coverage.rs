//! Coverage: what the input of a whole run, or the nights of a history, cover; an invoice is
//! `final`, `draft` or `partial` by it.

use super::{DRAFT, FINAL, PARTIAL};
use crate::schema;

/// What the input (a whole run) or the nights run so far (a nightly history) cover: invoices
/// are `final`, `draft` or `partial` by it.
#[derive(Debug, Clone, Default)]
pub struct Coverage {
    /// The stretches of time covered, `[start, end)` in UTC nanoseconds, sorted and apart: a
    /// nightly history is one stretch; a whole run's input one per run of consecutive UTC days
    /// with messages.
    pub stretches: Vec<(i64, i64)>,
    /// Nightly histories: later nights extend the last stretch, so a period not covered to its
    /// end yet is a `draft`. A whole run is not continued: such a period is `partial`.
    pub continues: bool,
    /// (account, period) of the invoices with a session still open at the end of its stretch
    /// that can still change their quota (a Messenger or Instagram session nobody has answered
    /// yet).
    pub unsettled: std::collections::BTreeSet<(String, String)>,
}

impl Coverage {
    /// One stretch, `[start, end)`.
    pub fn from_to(start: i64, end: i64) -> Self {
        Coverage {
            stretches: vec![(start, end)],
            ..Coverage::default()
        }
    }

    /// The stretches made of whole UTC days (day numbers since the epoch, sorted).
    pub fn of_days(days: impl IntoIterator<Item = i64>) -> Self {
        let mut stretches: Vec<(i64, i64)> = Vec::new();
        for day in days {
            let (start, end) = (day * schema::DAY_NS, (day + 1) * schema::DAY_NS);
            match stretches.last_mut() {
                Some(last) if last.1 == start => last.1 = end,
                _ => stretches.push((start, end)),
            }
        }
        Coverage {
            stretches,
            ..Coverage::default()
        }
    }

    /// The stretch that holds the instant `ns`.
    pub fn stretch_at(&self, ns: i64) -> Option<(i64, i64)> {
        let after = self.stretches.partition_point(|s| s.0 <= ns);
        after
            .checked_sub(1)
            .map(|i| self.stretches[i])
            .filter(|s| ns < s.1)
    }

    /// The part of `[start, end)` covered, from the first covered instant in it to the last.
    pub(super) fn within(&self, start: i64, end: i64) -> (i64, i64) {
        let inside = self.stretches.iter().filter(|s| s.0 < end && s.1 > start);
        let first = inside.clone().map(|s| s.0).min().unwrap_or(start);
        let last = inside.map(|s| s.1).max().unwrap_or(start);
        (first.max(start), last.min(end).max(start))
    }

    /// The stretches inside `[start, end)` between its first and last covered instant that are
    /// not covered: days without a message in the middle of a whole run's input.
    pub(super) fn holes(&self, start: i64, end: i64) -> Vec<(i64, i64)> {
        let inside: Vec<(i64, i64)> = self
            .stretches
            .iter()
            .filter(|s| s.0 < end && s.1 > start)
            .map(|s| (s.0.max(start), s.1.min(end)))
            .collect();
        inside.windows(2).map(|w| (w[0].1, w[1].0)).collect()
    }

    /// The status of a period `[start, end)` of `account_id`.
    pub(super) fn status(
        &self,
        account_id: &str,
        period: &str,
        start: i64,
        end: i64,
    ) -> &'static str {
        let settled = !self
            .unsettled
            .contains(&(account_id.to_string(), period.to_string()));
        match self.stretch_at(start) {
            None => PARTIAL,
            Some((_, to)) if to >= end && settled => FINAL,
            Some(_) if self.continues => DRAFT,
            Some(_) => PARTIAL,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_period_is_final_only_when_one_stretch_covers_it_and_nothing_open_can_change_it() {
        let day = schema::DAY_NS;
        // Days 0 to 2 and 4 to 9 have messages; day 3 has none.
        let whole = Coverage::of_days([0, 1, 2, 4, 5, 6, 7, 8, 9]);
        assert_eq!(whole.stretches, vec![(0, 3 * day), (4 * day, 10 * day)]);
        assert_eq!(whole.status("a", "p", 0, 2 * day), FINAL);
        assert_eq!(whole.status("a", "p", 0, 5 * day), PARTIAL, "a gap inside");
        assert_eq!(whole.within(0, 5 * day), (0, 5 * day));
        assert_eq!(whole.status("a", "p", 5 * day, 10 * day), FINAL);
        assert_eq!(
            whole.status("a", "p", 5 * day, 11 * day),
            PARTIAL,
            "ends too soon"
        );
        assert_eq!(whole.within(5 * day, 11 * day), (5 * day, 10 * day));
        assert_eq!(whole.holes(0, 5 * day), vec![(3 * day, 4 * day)]);
        assert_eq!(whole.holes(5 * day, 11 * day), vec![]);
        assert_eq!(
            whole.status("a", "p", -day, day),
            PARTIAL,
            "starts too late"
        );
        let unsettled = Coverage {
            unsettled: [("a".to_string(), "p".to_string())].into(),
            ..whole.clone()
        };
        assert_eq!(unsettled.status("a", "p", 0, 2 * day), PARTIAL);
        assert_eq!(unsettled.status("b", "p", 0, 2 * day), FINAL);
        // A history goes on: what it has not reached yet is a draft.
        let history = Coverage {
            continues: true,
            ..Coverage::from_to(day, 5 * day)
        };
        assert_eq!(history.status("a", "p", 0, 2 * day), PARTIAL);
        assert_eq!(history.status("a", "p", day, 9 * day), DRAFT);
        assert_eq!(history.status("a", "p", 2 * day, 4 * day), FINAL);
    }
}
