#!/usr/bin/env bash
# Beyond one machine: a month of SIZE messages (default 10M) billed by one run, by SHARDS
# shards (default 4) run TOGETHER at a time (default 2) and merged, and by the PySpark job
# (integrations/spark/convbill_spark.py) in local mode. Prints a Markdown table of medians of
# RUNS repeats (default 3): wall time and the peak memory of the whole process tree (the sum
# over the processes at work at once, sampled by benches/peak.py), the programs alternated
# within each repeat.
#
#   benches/shards.sh
#   SIZE=1000000 RUNS=1 SPARK=0 benches/shards.sh
#
# Environment: SIZE, SHARDS, TOGETHER, RUNS, RATES (rate card, default sample-data/rates.toml),
# SPARK (0 skips the Spark job; it needs PySpark, pyarrow and a JDK, as .ci/run installs),
# SPARK_MASTER (default local[2]), BENCH_CACHE (generated logs, default
# ~/.cache/convbill-bench, shared with benches/run.sh), CARGO_TARGET_DIR.
set -euo pipefail
cd "$(dirname "$0")/.."

SIZE="${SIZE:-10000000}"
SHARDS="${SHARDS:-4}"
TOGETHER="${TOGETHER:-2}"
RUNS="${RUNS:-3}"
RATES="${RATES-sample-data/rates.toml}"
SPARK="${SPARK:-1}"
SPARK_MASTER="${SPARK_MASTER:-local[2]}"
CACHE="${BENCH_CACHE:-$HOME/.cache/convbill-bench}"
# shellcheck source=benches/month.sh
. benches/month.sh

# `run-shards INPUT DIR`: the shards of INPUT into DIR/shard-I, TOGETHER at a time.
cat > "$work/run-shards" <<SH
#!/usr/bin/env bash
set -euo pipefail
for ((i = 0; i < $SHARDS; i++)); do
  "$convbill" run -q --input "\$1" --out "\$2/shard-\$i" --shard "\$i/$SHARDS" ${rates_args[*]} &
  if (((i + 1) % $TOGETHER == 0)); then wait; fi
done
wait
SH
chmod +x "$work/run-shards"

shard_dirs() { for ((i = 0; i < SHARDS; i++)); do echo "$1/shard-$i"; done; }

for _ in $(seq "$RUNS"); do
  rm -rf "$work/single" "$work/shards" "$work/merged" "$work/spark" "$work/laid" "$work/laid-merged"
  measure single "$convbill" run -q --input "$log" --out "$work/single" "${rates_args[@]}"
  measure shards "$work/run-shards" "$log" "$work/shards"
  # shellcheck disable=SC2046
  measure merge "$convbill" merge -q --out "$work/merged" $(shard_dirs "$work/shards")
  cmp -s "$work/single/sessions.parquet" "$work/merged/sessions.parquet" ||
    { echo "the merged sessions differ from the single run's" >&2; exit 1; }
  if [ "$SPARK" != 0 ]; then
    measure spark python3 integrations/spark/convbill_spark.py --master "$SPARK_MASTER" \
      --input "$log" --shards "$SHARDS" --work "$work/spark/work" --output "$work/spark/output" \
      --convbill "$convbill" "${rates_args[@]}" > "$work/spark-out" 2> "$work/spark-log" ||
      { tail -n 30 "$work/spark-log" >&2; exit 1; }
    grep '^{"merged"' "$work/spark-out" >> "$work/m-spark-stages"
    measure laid "$work/run-shards" "$work/spark/work/input" "$work/laid"
    # shellcheck disable=SC2046
    measure laid-merge "$convbill" merge -q --out "$work/laid-merged" $(shard_dirs "$work/laid")
  fi
done

python3 - "$work" "$SIZE" "$SHARDS" "$TOGETHER" "$RUNS" "$SPARK_MASTER" <<'PY'
import json, statistics, sys, os
work, size, shards, together, runs, master = sys.argv[1:]
def rows(name):
    path = os.path.join(work, "m-" + name)
    if not os.path.exists(path):
        return None
    return [json.loads(l) for l in open(path) if l.strip()]
def median(name, key="seconds"):
    r = rows(name)
    return statistics.median(x[key] for x in r) if r else None
def peak(name):
    r = rows(name)
    return max(x["peak_bytes"] for x in r) / 1e9 if r else None
single = median("single")
print(f"{int(size):,} messages, {shards} shards ({together} at a time), median of {runs}; peak memory is that of the whole process tree, the largest of the runs:")
print()
print("| what | wall time | peak memory | / single run |")
print("|---|---:|---:|---:|")
def row(label, seconds, gb):
    ratio = f"{seconds / single:.2f}" if seconds is not None else ""
    mem = f"{gb:.2f} GB" if gb is not None else ""
    print(f"| {label} | {seconds:.2f} s | {mem} | {ratio} |")
row("one run", single, peak("single"))
row(f"{shards} shards, each reading the whole log", median("shards"), peak("shards"))
row(f"merge of the {shards} shards", median("merge"), peak("merge"))
row("shards + merge", median("shards") + median("merge"), None)
if rows("spark"):
    stages = rows("spark-stages")
    st = lambda k: statistics.median(s["timings"][k] for s in stages)
    row(f"Spark job, {master}, in all", median("spark"), peak("spark"))
    row("&nbsp;&nbsp;lay the log out by bucket (the shuffle)", st("layout_seconds"), None)
    row(f"&nbsp;&nbsp;{shards} shard tasks", st("shards_seconds"), None)
    row("&nbsp;&nbsp;merge", st("merge_seconds"), None)
    row("&nbsp;&nbsp;tables written by Spark", st("outputs_seconds"), None)
    row(f"{shards} shards on the laid-out log (each its own bucket)", median("laid"), peak("laid"))
    row(f"merge of those {shards} shards", median("laid-merge"), peak("laid-merge"))
PY
