#!/usr/bin/env bash
# convbill's benchmark: generates message logs of several sizes (cached between runs), runs
# `convbill run` on each several times, and reports median wall time, throughput and peak
# memory next to the floor: the time polars alone takes to read the same file and sort it by
# conversation key and time (benches/floor.rs).
#
#   benches/run.sh                       # 1M, 10M and 100M messages, 3 runs each
#   SIZES="1000000 10000000" RUNS=5 benches/run.sh
#
# convbill rates the sessions by the sample rate card (time zones, price versions, money), as a
# provider would; RATES= (empty) rates by the built-in card instead.
#
# Environment: SIZES (message counts), RUNS (repeats, default 3), RATES (rate card, default
# sample-data/rates.toml), BENCH_CACHE (generated logs, default ~/.cache/convbill-bench),
# CARGO_TARGET_DIR (build folder). Needs GNU time
# (/usr/bin/time; Debian package `time`) for peak memory.
set -euo pipefail
cd "$(dirname "$0")/.."

SIZES="${SIZES:-1000000 10000000 100000000}"
RUNS="${RUNS:-3}"
RATES="${RATES-sample-data/rates.toml}"
rates_args=()
if [ -n "$RATES" ]; then rates_args=(--rates "$RATES"); fi
CACHE="${BENCH_CACHE:-$HOME/.cache/convbill-bench}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/convbill-target}"
mkdir -p "$CACHE"

if [ ! -x /usr/bin/time ]; then
  echo "benches/run.sh needs GNU time: apt-get install time" >&2
  exit 2
fi

cargo build --release --quiet --bin convbill
floor=$(cargo bench --bench floor --no-run 2>&1 | sed -n 's/.*Executable .*(\(.*\))$/\1/p' | tail -n 1)
convbill="$CARGO_TARGET_DIR/release/convbill"
[ -x "$floor" ] || { echo "could not find the floor program" >&2; exit 1; }

median() { sort -g | awk '{ v[NR] = $1 } END { if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }

# Runs a command RUNS times; prints "median_seconds max_peak_kb", or "failed" on an error.
measure() {
  local times="" peaks="" out status
  for _ in $(seq "$RUNS"); do
    out=$(mktemp)
    status=0
    /usr/bin/time -f "%e %M" -o "$out" "$@" >/dev/null 2>&1 || status=$?
    if [ "$status" -ne 0 ]; then rm -f "$out"; echo "failed(exit $status)"; return; fi
    read -r t m < "$out"
    rm -f "$out"
    times+="$t"$'\n'
    peaks+="$m"$'\n'
  done
  echo "$(printf '%s' "$times" | median) $(printf '%s' "$peaks" | sort -g | tail -n 1)"
}

echo "| messages | convbill wall (median of $RUNS) | throughput (msg/s) | peak memory | floor: read + sort | floor peak memory | ratio |"
echo "|---:|---:|---:|---:|---:|---:|---:|"
for n in $SIZES; do
  log="$CACHE/messages-$n-seed1.parquet"
  if [ ! -f "$log" ]; then
    echo "generating $log" >&2
    "$convbill" generate --messages "$n" --seed 1 --out "$log.partial" -q
    mv "$log.partial" "$log"
  fi
  out_dir=$(mktemp -d)
  run=$(measure "$convbill" run --input "$log" --out "$out_dir/out" "${rates_args[@]}" -q)
  rm -rf "$out_dir"
  base=$(measure "$floor" "$log")
  awk -v n="$n" -v run="$run" -v base="$base" 'BEGIN {
    split(run, r, " "); split(base, b, " ")
    gb = 1048576
    if (run ~ /^failed/) { wall = run; thr = ""; peak = "" }
    else { wall = sprintf("%.2f s", r[1]); thr = sprintf("%.0f", n / r[1]); peak = sprintf("%.2f GB", r[2] / gb) }
    if (base ~ /^failed/) { floor = "did not finish: " base; fpeak = ""; ratio = "" }
    else { floor = sprintf("%.2f s", b[1]); fpeak = sprintf("%.2f GB", b[2] / gb) }
    if (run !~ /^failed/ && base !~ /^failed/) ratio = sprintf("%.2f", r[1] / b[1])
    printf "| %d | %s | %s | %s | %s | %s | %s |\n", n, wall, thr, peak, floor, fpeak, ratio
  }'
done
