//! What depends on more than one conversation key (SPEC-meta §3a rule 6, §3b): the free tier
//! of a WABA's first 1,000 service conversations a month, and the volume tiers of an
//! account's charged messages a month, per market and category.

use chrono::NaiveDate;
use rust_decimal::Decimal;

use super::config::{MetaConfig, Tier, TierTable};
use super::Category;

/// Service conversations opened from this day (WABA time) cost nothing.
pub const FREE_SERVICE_FROM: NaiveDate = match NaiveDate::from_ymd_opt(2024, 11, 1) {
    Some(day) => day,
    None => panic!("a day"),
};

/// Whether a regular service conversation opened on `day` (WABA time) costs nothing: from
/// 2024-11-01 on. Before, a WABA's first [`FREE_TIER_CONVERSATIONS`] of a month are free
/// ([`free_tier`]) and the others pay.
pub fn service_is_free(day: NaiveDate) -> bool {
    day >= FREE_SERVICE_FROM
}

/// The rate a charged unit of `category` in `market` pays on `day` (in its WABA's zone), and
/// the effective day of the rate card it comes from (SPEC-meta §6.9). A market or category the
/// card in force does not price (missing, or `n/a`) is an error that names them and the card.
pub fn card_rate(
    meta: &MetaConfig,
    market: &str,
    category: Category,
    day: NaiveDate,
) -> Result<(Decimal, NaiveDate), String> {
    let card = meta.rate_card_on(day).ok_or_else(|| {
        format!(
            "no Meta rate card is in force on {day}: the first takes effect on {}",
            meta.rate_cards[0].effective
        )
    })?;
    match card.markets.get(market) {
        None => Err(format!(
            "Meta rate card `{}` (effective {}) has no market `{market}`",
            card.file.display(),
            card.effective
        )),
        Some(rates) => rates[category.index()]
            .map(|rate| (rate, card.effective))
            .ok_or_else(|| {
                format!(
                    "Meta rate card `{}` (effective {}) has no {} rate for `{market}` (n/a), and a charged unit needs one",
                    card.file.display(),
                    card.effective,
                    category.name()
                )
            }),
    }
}

/// Service conversations free each month per WABA, from 2023-06-01 to 2024-10-31.
pub const FREE_TIER_CONVERSATIONS: usize = 1_000;

/// The tier that prices the `n`-th charged message of a month (counted from 1), and its rate:
/// tiers are marginal, like tax brackets, so each message pays the rate of the tier it falls
/// in. `None` past the last tier that has an end (a table whose top tier is closed).
pub fn tier_of(table: &TierTable, n: u64) -> Option<&Tier> {
    table
        .tiers
        .iter()
        .find(|t| t.from <= n && t.to.is_none_or(|to| n <= to))
}

/// The cost of `count` charged messages numbered from `first` on (1 for the month's first):
/// each priced by its own tier. `None` when some of them fall past the table's last tier.
pub fn tiered_cost(table: &TierTable, first: u64, count: u64) -> Option<Decimal> {
    let mut cost = Decimal::ZERO;
    let mut n = first;
    let end = first + count;
    while n < end {
        let tier = tier_of(table, n)?;
        let upto = tier.to.map_or(end, |to| (to + 1).min(end));
        cost += tier.rate * Decimal::from(upto - n);
        n = upto;
    }
    Some(cost)
}

/// Which of a WABA's service conversations of one month are free: the first
/// [`FREE_TIER_CONVERSATIONS`] by start, then conversation key. `conversations` are (start,
/// key) of the month's regular service conversations; the result says, in their order,
/// whether each is free.
pub fn free_tier<K: Ord>(conversations: &[(i64, K)]) -> Vec<bool> {
    let mut order: Vec<usize> = (0..conversations.len()).collect();
    order.sort_by(|&a, &b| conversations[a].cmp(&conversations[b]));
    let mut free = vec![false; conversations.len()];
    for &i in order.iter().take(FREE_TIER_CONVERSATIONS) {
        free[i] = true;
    }
    free
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn service_is_free_from_1_november_2024() {
        let day = |d: &str| d.parse::<NaiveDate>().unwrap();
        assert!(!service_is_free(day("2024-10-31")));
        assert!(service_is_free(day("2024-11-01")));
    }

    #[test]
    fn a_charged_unit_pays_the_rate_of_the_card_in_force_for_its_market() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("meta")).unwrap();
        let sample = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("sample-data/meta/rates-usd-2023-06.csv");
        std::fs::copy(&sample, dir.path().join("meta/2023.csv")).unwrap();
        std::fs::write(
            dir.path().join("meta/2025.csv"),
            "Cost per message in USD, effective July 1, 2025,,,,\nMarket,Currency,Marketing,Utility,Service\nIndonesia,$US,0.0411,0.0250,n/a\n",
        )
        .unwrap();
        let text = "default_plan = \"p\"\n[plans.p]\ncurrency = \"USD\"\n[[plans.p.versions]]\neffective = \"2023-01-01\"\nincluded_quota = 0\nunit_price = \"0\"\n[meta]\nrate_cards = [ { effective = \"2023-06-01\", file = \"meta/2023.csv\" }, { effective = \"2025-07-01\", file = \"meta/2025.csv\" } ]\n";
        let card = crate::rates::parse(text, &dir.path().join("rates.toml")).unwrap();
        let meta = card.meta.unwrap();
        let day = |d: &str| d.parse::<NaiveDate>().unwrap();
        let d = |s: &str| s.parse::<Decimal>().unwrap();
        assert_eq!(
            card_rate(&meta, "Indonesia", Category::Utility, day("2025-06-30")),
            Ok((d("0.0200"), day("2023-06-01")))
        );
        assert_eq!(
            card_rate(&meta, "Indonesia", Category::Utility, day("2025-07-01")),
            Ok((d("0.0250"), day("2025-07-01")))
        );
        assert_eq!(
            card_rate(&meta, "Indonesia", Category::Service, day("2025-07-01")),
            Err("Meta rate card `meta/2025.csv` (effective 2025-07-01) has no service rate for `Indonesia` (n/a), and a charged unit needs one".into())
        );
        assert_eq!(
            card_rate(&meta, "Malaysia", Category::Marketing, day("2025-07-01")),
            Err(
                "Meta rate card `meta/2025.csv` (effective 2025-07-01) has no market `Malaysia`"
                    .into()
            )
        );
        assert_eq!(
            card_rate(&meta, "Indonesia", Category::Marketing, day("2023-05-31")),
            Err(
                "no Meta rate card is in force on 2023-05-31: the first takes effect on 2023-06-01"
                    .into()
            )
        );
    }

    fn india() -> TierTable {
        let tier = |from, to, rate: &str| Tier {
            from,
            to,
            rate: rate.parse().unwrap(),
        };
        TierTable {
            market: "India".into(),
            category: Category::Utility,
            effective: "2025-07-01".parse().unwrap(),
            tiers: vec![
                tier(1, Some(750_000), "0.0014"),
                tier(750_001, Some(1_500_000), "0.0012"),
                tier(1_500_001, None, "0.0010"),
            ],
        }
    }

    #[test]
    fn each_message_is_priced_by_the_tier_it_falls_in() {
        let table = india();
        assert_eq!(tier_of(&table, 1).unwrap().label(), "1:750000");
        assert_eq!(tier_of(&table, 750_000).unwrap().label(), "1:750000");
        assert_eq!(tier_of(&table, 750_001).unwrap().label(), "750001:1500000");
        assert_eq!(tier_of(&table, 9_000_000).unwrap().label(), "1500001:MAX");
        assert!(tier_of(&table, 0).is_none());
    }

    #[test]
    fn tiers_are_marginal_like_tax_brackets() {
        let table = india();
        let d = |s: &str| s.parse::<Decimal>().unwrap();
        // 10 messages across the first boundary: 5 at 0.0014, 5 at 0.0012.
        assert_eq!(tiered_cost(&table, 749_996, 10), Some(d("0.0130")));
        // The whole month's 2,000,000: 750,000 × 0.0014 + 750,000 × 0.0012 + 500,000 × 0.0010.
        assert_eq!(tiered_cost(&table, 1, 2_000_000), Some(d("2450.0000")));
        assert_eq!(tiered_cost(&table, 1, 0), Some(Decimal::ZERO));
        // A table whose top tier ends: past it, no price.
        let mut closed = india();
        closed.tiers.truncate(1);
        assert_eq!(tiered_cost(&closed, 749_999, 2), Some(d("0.0028")));
        assert_eq!(tiered_cost(&closed, 750_000, 2), None);
    }

    #[test]
    fn the_first_1000_service_conversations_of_a_month_are_free() {
        // 1,002 conversations, given out of order; two start at the same instant as the
        // 1,000th and 1,001st: the key decides.
        let mut conversations: Vec<(i64, &str)> = (0..1_000).map(|i| (i64::from(i), "k")).collect();
        conversations.push((999, "a"));
        conversations.push((2_000, "k"));
        conversations.reverse();
        let free = free_tier(&conversations);
        assert_eq!(free.iter().filter(|f| **f).count(), 1_000);
        // The latest, and the later-keyed of the two at 999, pay.
        assert!(!free[0]);
        let paying: Vec<(i64, &str)> = conversations
            .iter()
            .zip(&free)
            .filter(|(_, f)| !**f)
            .map(|(c, _)| *c)
            .collect();
        assert_eq!(paying, [(2_000, "k"), (999, "k")]);
    }
}
