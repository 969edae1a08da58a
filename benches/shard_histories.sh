#!/usr/bin/env bash
# Nightly shards: a month of SIZE messages (default 10M) billed night by night, by one
# unsharded history and by SHARDS shards' histories (default 4, TOGETHER at a time, default
# 2), then merged. Builds the histories once (the first NIGHTS nights of the month, default
# 31, with `--catch-up`), then, in each of RUNS repeats (default 3), alternates: the last night
# rerun on the unsharded history, on the shards, the merge of the shards' histories into a new
# folder (every night merged), and into the folder of the last repeat's merge (the nights
# before the last kept from it, as a nightly schedule merges). Prints a Markdown table of
# medians: wall time and the peak memory of the whole process tree (benches/peak.py). Checks
# that each merge is the unsharded history's bytes (month-to-date/manifest.json aside).
#
#   benches/shard_histories.sh
#   SIZE=1000000 NIGHTS=10 RUNS=1 benches/shard_histories.sh
#
# Environment: SIZE, SHARDS, TOGETHER, NIGHTS, RUNS, RATES (rate card, default
# sample-data/rates.toml), BENCH_CACHE (generated logs, default ~/.cache/convbill-bench,
# shared with benches/run.sh), CARGO_TARGET_DIR.
set -euo pipefail
cd "$(dirname "$0")/.."

SIZE="${SIZE:-10000000}"
SHARDS="${SHARDS:-4}"
TOGETHER="${TOGETHER:-2}"
NIGHTS="${NIGHTS:-31}"
RUNS="${RUNS:-3}"
RATES="${RATES-sample-data/rates.toml}"
CACHE="${BENCH_CACHE:-$HOME/.cache/convbill-bench}"
# shellcheck source=benches/month.sh
. benches/month.sh
first=2026-10-01
last=$(date -u -d "$first + $((NIGHTS - 1)) days" +%F)

# `shard-nights DATE ARGS...`: night DATE of every shard's history, TOGETHER at a time.
cat > "$work/shard-nights" <<SH
#!/usr/bin/env bash
set -euo pipefail
date=\$1
shift
for ((i = 0; i < $SHARDS; i++)); do
  "$convbill" run -q --input "$log" --out "$work/shard-\$i" --shard "\$i/$SHARDS" --date "\$date" ${rates_args[*]} "\$@" &
  if (((i + 1) % $TOGETHER == 0)); then wait; fi
done
wait
SH
chmod +x "$work/shard-nights"
shard_dirs() { for ((i = 0; i < SHARDS; i++)); do echo "$work/shard-$i"; done; }
night() { "$convbill" run -q --input "$log" --out "$work/whole" --date "$@" "${rates_args[@]}"; }

echo "building the histories: nights $first to $last" >&2
night "$first" --init
measure build-whole "$convbill" run -q --input "$log" --out "$work/whole" --date "$last" --catch-up "${rates_args[@]}"
"$work/shard-nights" "$first" --init
measure build-shards "$work/shard-nights" "$last" --catch-up

# shellcheck disable=SC2046
"$convbill" merge -q --out "$work/merged" $(shard_dirs)
for _ in $(seq "$RUNS"); do
  measure night "$convbill" run -q --input "$log" --out "$work/whole" --date "$last" "${rates_args[@]}"
  measure shard-night "$work/shard-nights" "$last"
  rm -rf "$work/merged-whole"
  # shellcheck disable=SC2046
  measure merge-whole "$convbill" merge -q --out "$work/merged-whole" $(shard_dirs)
  # shellcheck disable=SC2046
  measure merge "$convbill" merge -q --out "$work/merged" $(shard_dirs)
  for merged in merged merged-whole; do
    differs=$(diff -rq "$work/$merged" "$work/whole" | grep -v "month-to-date/manifest.json" || true)
    [ -z "$differs" ] || { echo "the merged history differs from the unsharded one: $differs" >&2; exit 1; }
  done
done

python3 - "$work" "$SIZE" "$SHARDS" "$TOGETHER" "$RUNS" "$NIGHTS" <<'PY'
import json, statistics, sys, os
work, size, shards, together, runs, nights = sys.argv[1:]
def rows(name):
    return [json.loads(l) for l in open(os.path.join(work, "m-" + name)) if l.strip()]
def median(name):
    return statistics.median(x["seconds"] for x in rows(name))
def peak(name):
    return max(x["peak_bytes"] for x in rows(name)) / 1e9
night = median("night")
print(f"{int(size):,} messages over a month, {nights} nights, {shards} shards ({together} at a time); "
      f"nightly figures are medians of {runs}, peak memory that of the whole process tree:")
print()
print("| what | wall time | peak memory | / one unsharded night |")
print("|---|---:|---:|---:|")
def row(label, seconds, gb):
    mem = f"{gb:.2f} GB" if gb is not None else ""
    print(f"| {label} | {seconds:.2f} s | {mem} | {seconds / night:.2f} |")
row(f"the first {nights} nights, unsharded (`--catch-up`, once)", median("build-whole"), peak("build-whole"))
row(f"the first {nights} nights, {shards} shards (`--catch-up`, once)", median("build-shards"), peak("build-shards"))
row("the last night, unsharded", night, peak("night"))
row(f"the last night, {shards} shards", median("shard-night"), peak("shard-night"))
row(f"merge of the {shards} histories, every night ({nights})", median("merge-whole"), peak("merge-whole"))
row(f"merge into the last night's merge (the last night merged, {int(nights) - 1} kept)", median("merge"), peak("merge"))
row("the last night: shards + merge", median("shard-night") + median("merge"), None)
PY
