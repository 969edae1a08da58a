//! Shards: a run that keeps only the accounts of one bucket, so that several machines (or the
//! tasks of a scheduler's array, or of a Spark job) share a log and `convbill merge` puts their
//! output folders together.
//!
//! Everything convbill derives stays inside one account, so the accounts can be spread over
//! workers and the results put together exactly. An account's bucket is Spark SQL's
//! `pmod(xxhash64(account_id), N)`: XXH64 with seed 42 over the id's UTF-8 bytes, read as a
//! signed 64-bit integer, taken modulo `N` into `0..N`. A Spark job can therefore lay a log
//! out by bucket (`partitionBy` on that expression, in folders named [`LAYOUT_KEY`]`=I`), and
//! shard `I` then reads only its own folder.

use std::collections::BTreeMap;

use polars::prelude::*;
use serde::{Deserialize, Serialize};

use crate::error::{Error, InputError, Result};
use crate::schema;

/// XXH64's seed in Spark SQL's `xxhash64`.
pub const SEED: u64 = 42;

/// The hive-style folder key of a log laid out by bucket: files under `convbill_bucket=I/`
/// hold only accounts of bucket `I`, and a shard reads no other bucket's folder.
pub const LAYOUT_KEY: &str = "convbill_bucket";

/// Buckets at most (a sanity limit on `N`).
pub const MAX_COUNT: u32 = 100_000;

/// Shard `index` of `count`: the accounts whose bucket is `index`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Shard {
    pub index: u32,
    pub count: u32,
}

impl std::fmt::Display for Shard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

impl std::str::FromStr for Shard {
    type Err = String;

    /// `I/N`, with `0 <= I < N`.
    fn from_str(text: &str) -> std::result::Result<Shard, String> {
        let (index, count) = text
            .split_once('/')
            .ok_or_else(|| format!("`{text}` is not a shard: write it as I/N, such as 0/4"))?;
        let number = |part: &str, what: &str| {
            part.trim().parse::<u32>().map_err(|_| {
                format!("`{text}` is not a shard: {what} `{part}` is not a whole number")
            })
        };
        Shard::new(number(index, "the index")?, number(count, "the count")?)
    }
}

impl Shard {
    /// Shard `index` of `count`, checked.
    pub fn new(index: u32, count: u32) -> std::result::Result<Shard, String> {
        if count == 0 || count > MAX_COUNT {
            return Err(format!(
                "a shard count must be 1 to {MAX_COUNT}, not {count}"
            ));
        }
        if index >= count {
            return Err(format!(
                "shard {index}/{count} does not exist: with {count} shards the index is 0 to {}",
                count - 1
            ));
        }
        Ok(Shard { index, count })
    }

    /// The shard a scheduler gave this process, of `count`: Kubernetes Indexed Jobs'
    /// `JOB_COMPLETION_INDEX`, a Slurm array's `SLURM_ARRAY_TASK_ID` (less
    /// `SLURM_ARRAY_TASK_MIN`, so that `--array=1-4` works too), or an AWS Batch array's
    /// `AWS_BATCH_JOB_ARRAY_INDEX`, looked for in that order.
    pub fn from_env(count: u32) -> std::result::Result<Shard, String> {
        Shard::from_vars(count, |name| std::env::var(name).ok())
    }

    /// [`Shard::from_env`] with the variables given by `var`.
    pub fn from_vars(
        count: u32,
        var: impl Fn(&str) -> Option<String>,
    ) -> std::result::Result<Shard, String> {
        // The count is the flag's: checked before any variable is read.
        Shard::new(0, count).map_err(|e| format!("--shard-from-env {count}: {e}"))?;
        let read = |name: &str| -> std::result::Result<Option<u32>, String> {
            match var(name) {
                None => Ok(None),
                Some(value) => value.trim().parse::<u32>().map(Some).map_err(|_| {
                    format!("the environment variable {name} is `{value}`, not a whole number")
                }),
            }
        };
        let (name, index) = if let Some(index) = read("JOB_COMPLETION_INDEX")? {
            ("JOB_COMPLETION_INDEX", index)
        } else if let Some(id) = read("SLURM_ARRAY_TASK_ID")? {
            let min = read("SLURM_ARRAY_TASK_MIN")?.unwrap_or(0);
            if let Some(tasks) = read("SLURM_ARRAY_TASK_COUNT")? {
                if tasks != count {
                    return Err(format!(
                        "the Slurm array has {tasks} tasks (SLURM_ARRAY_TASK_COUNT) but {count} shards were asked for"
                    ));
                }
            }
            let index = id.checked_sub(min).ok_or_else(|| {
                format!("SLURM_ARRAY_TASK_ID {id} is below SLURM_ARRAY_TASK_MIN {min}")
            })?;
            ("SLURM_ARRAY_TASK_ID", index)
        } else if let Some(index) = read("AWS_BATCH_JOB_ARRAY_INDEX")? {
            ("AWS_BATCH_JOB_ARRAY_INDEX", index)
        } else {
            return Err(
                "--shard-from-env: none of JOB_COMPLETION_INDEX (Kubernetes Indexed Job), SLURM_ARRAY_TASK_ID (Slurm array) or AWS_BATCH_JOB_ARRAY_INDEX (AWS Batch array) is set".to_string(),
            );
        };
        Shard::new(index, count).map_err(|e| format!("{e} (from {name})"))
    }

    /// The bucket of `account_id` among `count`: Spark SQL's `pmod(xxhash64(account_id), count)`.
    pub fn bucket_of(account_id: &str, count: u32) -> u32 {
        let hash = xxhash_rust::xxh64::xxh64(account_id.as_bytes(), SEED) as i64;
        hash.rem_euclid(i64::from(count)) as u32
    }

    /// Whether `account_id` is in this shard.
    pub fn holds(&self, account_id: &str) -> bool {
        Shard::bucket_of(account_id, self.count) == self.index
    }

    /// The bucket folder an input file lies in (`convbill_bucket=I` between the input root and
    /// the file), if any; a value that is not a bucket of `count` is an error naming the file.
    pub fn folder_bucket(
        &self,
        hive: &BTreeMap<String, String>,
        path: &std::path::Path,
    ) -> Result<Option<u32>> {
        let Some(value) = hive.get(LAYOUT_KEY) else {
            return Ok(None);
        };
        match value.parse::<u32>() {
            Ok(bucket) if bucket < self.count => Ok(Some(bucket)),
            _ => Err(Error::Input(InputError::Unreadable {
                path: path.to_path_buf(),
                reason: format!(
                    "it lies in a folder `{LAYOUT_KEY}={value}`, which is not a bucket of {} shards (0 to {})",
                    self.count,
                    self.count - 1
                ),
            })),
        }
    }

    /// Which rows of `frame` (in the loader's schema) this shard keeps: those of its accounts;
    /// a row without an `account_id` (one set aside) is kept by shard 0.
    pub fn mask(&self, frame: &DataFrame) -> Result<BooleanChunked> {
        let accounts = frame.column(schema::ACCOUNT_ID)?;
        let accounts = accounts.cast(&DataType::String)?;
        let mut last: Option<(String, bool)> = None;
        let mask: BooleanChunked = accounts
            .str()?
            .iter()
            .map(|account| {
                Some(match account {
                    None => self.index == 0,
                    // Logs come mostly grouped by account: hash each run of one account once.
                    Some(account) => match &last {
                        Some((id, kept)) if id == account => *kept,
                        _ => {
                            let kept = self.holds(account);
                            last = Some((account.to_string(), kept));
                            kept
                        }
                    },
                })
            })
            .collect();
        Ok(mask.with_name(schema::ACCOUNT_ID.into()))
    }

    /// The rows of `frame` this shard keeps ([`Shard::mask`]).
    pub fn keep(&self, frame: DataFrame) -> Result<DataFrame> {
        let mask = self.mask(&frame)?;
        if mask.all() {
            return Ok(frame);
        }
        Ok(frame.filter(&mask)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_parse_and_refuse_what_does_not_exist() {
        assert_eq!("2/4".parse::<Shard>(), Ok(Shard { index: 2, count: 4 }));
        assert_eq!(" 0 / 1 ".parse::<Shard>(), Ok(Shard { index: 0, count: 1 }));
        for bad in ["4/4", "1/0", "-1/4", "a/4", "3", "1/4/2", "0/100001"] {
            let error = bad.parse::<Shard>().unwrap_err();
            assert!(
                error.contains(bad) || error.contains("count"),
                "{bad}: {error}"
            );
        }
        assert!("4/4".parse::<Shard>().unwrap_err().contains("0 to 3"));
    }

    #[test]
    fn the_bucket_comes_from_each_scheduler() {
        let vars = |pairs: &'static [(&'static str, &'static str)]| {
            move |name: &str| {
                pairs
                    .iter()
                    .find(|(n, _)| *n == name)
                    .map(|(_, v)| v.to_string())
            }
        };
        let shard = |pairs, count| Shard::from_vars(count, vars(pairs));
        assert_eq!(
            shard(&[("JOB_COMPLETION_INDEX", "3")], 4),
            Ok(Shard { index: 3, count: 4 })
        );
        assert_eq!(
            shard(
                &[("SLURM_ARRAY_TASK_ID", "4"), ("SLURM_ARRAY_TASK_MIN", "1")],
                4
            ),
            Ok(Shard { index: 3, count: 4 })
        );
        assert_eq!(
            shard(&[("AWS_BATCH_JOB_ARRAY_INDEX", "0")], 2),
            Ok(Shard { index: 0, count: 2 })
        );
        // Kubernetes first when several are set.
        assert_eq!(
            shard(
                &[
                    ("AWS_BATCH_JOB_ARRAY_INDEX", "0"),
                    ("JOB_COMPLETION_INDEX", "1")
                ],
                2
            ),
            Ok(Shard { index: 1, count: 2 })
        );
        let refused = |pairs, count| shard(pairs, count).unwrap_err();
        assert!(refused(&[], 4).contains("JOB_COMPLETION_INDEX"));
        assert!(refused(&[("JOB_COMPLETION_INDEX", "4")], 4).contains("JOB_COMPLETION_INDEX"));
        assert!(refused(&[("JOB_COMPLETION_INDEX", "x")], 4).contains("`x`"));
        assert!(refused(
            &[
                ("SLURM_ARRAY_TASK_ID", "1"),
                ("SLURM_ARRAY_TASK_COUNT", "8")
            ],
            4
        )
        .contains("8 tasks"));
    }

    /// XXH64 (seed 42) of these ids as Spark SQL's `xxhash64(account_id)` gives it (read off
    /// PySpark 4.3 in local mode: `spark.sql("select xxhash64('acct-0001')")`), and
    /// `pmod(xxhash64(account_id), 7)`.
    #[test]
    fn buckets_are_spark_sqls() {
        for (id, spark_hash, bucket7) in SPARK_VALUES {
            let hash = xxhash_rust::xxh64::xxh64(id.as_bytes(), SEED) as i64;
            assert_eq!(hash, *spark_hash, "xxhash64({id:?})");
            assert_eq!(
                Shard::bucket_of(id, 7),
                *bucket7,
                "pmod(xxhash64({id:?}), 7)"
            );
        }
    }

    const SPARK_VALUES: &[(&str, i64, u32)] = &[
        ("acct-0001", -3165415260171413387, 2),
        ("acct-0002", -5516176663548437558, 0),
        ("", -7444071767201028348, 3),
        ("a", -8582455328737087284, 3),
        ("Zürich GmbH", 5117192533857696112, 2),
        ("東京-商店", -8823695792228228591, 6),
        ("🙂 emoji", -8005558169026041267, 0),
        (
            "acct-with-a-rather-long-identifier-over-32-bytes-0042",
            -8668755475748146914,
            5,
        ),
        ("ACC_7", -3508270513898600681, 0),
    ];

    #[test]
    fn a_shard_keeps_its_accounts_and_shard_0_the_rows_without_one() {
        let frame = df!(
            schema::ACCOUNT_ID => [Some("a"), Some("a"), Some("b"), None, Some("c"), Some("a")],
        )
        .unwrap();
        let mut kept = 0;
        for index in 0..3 {
            let shard = Shard { index, count: 3 };
            let mask = shard.mask(&frame).unwrap();
            for (row, account) in ["a", "a", "b", "", "c", "a"].iter().enumerate() {
                let expected = match *account {
                    "" => index == 0,
                    account => Shard::bucket_of(account, 3) == index,
                };
                assert_eq!(mask.get(row), Some(expected), "shard {shard}, row {row}");
            }
            kept += shard.keep(frame.clone()).unwrap().height();
        }
        assert_eq!(kept, frame.height());
    }
}
