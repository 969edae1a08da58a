//! All integration tests, built as one test binary (one link step against polars).

mod bad_input;
mod cli;
mod explain;
mod fetch;
mod fuzz;
mod history;
mod interrupt;
mod meta_nightly;
mod meta_pricing;
mod meta_rules;
mod nightly;
mod partition;
mod peer;
mod progress;
mod property;
mod rates;
mod reconcile;
mod reference;
mod rejects;
mod report;
mod rules;
mod sample_data;
mod shard_histories;
mod shards;
mod spark;
mod support;
