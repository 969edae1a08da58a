#!/usr/bin/env bash
# convbill's benchmark. Generates message logs (cached between runs) and prints two Markdown
# tables of medians (wall time, throughput, peak memory):
#
# 1. Whole runs (`convbill run`) on logs of SIZES messages (a month of traffic), next to
#    - the floor (benches/floor.rs): polars reads the columns the rules need, hashes each row's
#      conversation key and sorts the rows by (hash, time), the least any derivation does;
#    - the peer (benches/peer.sql, run by benches/peer.py): the same rules in DuckDB SQL, as a
#      data engineer would write them, writing sessions, violations and invoice lines.
# 2. Nights (`convbill run --date D --init`) of a day of NIGHT_SIZES messages, next to a whole
#    run of the same day's log.
# 3. Meta's pricing: whole runs of a month of META_SIZES messages across Meta's switch
#    (`generate --markets`, from 2025-06-15) with the card sample-data/meta/rates.toml, next to
#    the same card without its `[meta]` section.
# 4. Reconciliation: `convbill reconcile --fail-on-difference` of the run of a RECONCILE_SIZES
#    month across the switch (as in 3) against the daily analytics `convbill generate
#    --meta-analytics` writes for it (cached beside the log).
#
# The programs compared are alternated within each repeat (convbill, floor, peer, convbill...)
# so that a noisy neighbour slows them alike.
#
#   benches/run.sh                                        # the defaults below
#   SIZES=10000000 NIGHT_SIZES=10000000 RUNS=5 benches/run.sh
#
# Environment: SIZES (default "1000000 10000000 100000000"), NIGHT_SIZES (default "10000000
# 100000000"; empty skips the nights), META_SIZES (default "10000000"; empty skips them),
# RECONCILE_SIZES (default "10000000"; empty skips them), RUNS (repeats, default 3), RATES (rate card, default
# sample-data/rates.toml; empty for the built-in card), PEER (0 skips the DuckDB peer),
# BENCH_CACHE (generated logs, default ~/.cache/convbill-bench), CARGO_TARGET_DIR.
# Needs GNU time (/usr/bin/time; Debian package `time`) for peak memory; installs the Python
# package `duckdb` with pip if it is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

SIZES="${SIZES-1000000 10000000 100000000}"
NIGHT_SIZES="${NIGHT_SIZES-10000000 100000000}"
META_SIZES="${META_SIZES-10000000}"
RECONCILE_SIZES="${RECONCILE_SIZES-10000000}"
RUNS="${RUNS:-3}"
RATES="${RATES-sample-data/rates.toml}"
PEER="${PEER:-1}"
rates_args=()
if [ -n "$RATES" ]; then rates_args=(--rates "$RATES"); fi
CACHE="${BENCH_CACHE:-$HOME/.cache/convbill-bench}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/convbill-target}"
mkdir -p "$CACHE"

if [ ! -x /usr/bin/time ]; then
  echo "benches/run.sh needs GNU time: apt-get install time" >&2
  exit 2
fi
if [ "$PEER" != 0 ] && ! python3 -c 'import duckdb' 2>/dev/null; then
  echo "installing the Python package duckdb for the peer" >&2
  python3 -m pip install --quiet duckdb
fi

cargo build --release --quiet --bin convbill
floor=$(cargo bench --bench floor --no-run 2>&1 | sed -n 's/.*Executable .*(\(.*\))$/\1/p' | tail -n 1)
convbill="$CARGO_TARGET_DIR/release/convbill"
[ -x "$floor" ] || { echo "could not find the floor program" >&2; exit 1; }

median() { sort -g | awk '{ v[NR] = $1 } END { if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }

# Runs a command once; appends "seconds peak_kb" (or "failed") to the file $1.
once() {
  local into=$1 out status=0
  shift
  out=$(mktemp)
  # The previous run's output is written back to disk first: no run pays for another's.
  sync
  /usr/bin/time -f "%e %M" -o "$out" "$@" >/dev/null 2>&1 || status=$?
  if [ "$status" -ne 0 ]; then echo "failed" >> "$into"; else tail -n 1 "$out" >> "$into"; fi
  rm -f "$out"
}

# "median_seconds max_peak_kb" of the runs in file $1, or "failed".
summarize() {
  if grep -q failed "$1"; then echo "failed"; return; fi
  echo "$(cut -d' ' -f1 "$1" | median) $(cut -d' ' -f2 "$1" | sort -g | tail -n 1)"
}

# A log of $1 messages over $2 days from $3 (seed $4; more generate options after it),
# generated once.
log_of() {
  local n=$1 days=$2 start=$3 seed=$4
  shift 4
  local log="$CACHE/messages-$n-days$days-$start-seed$seed${1:+-${1#--}}.parquet"
  if [ ! -f "$log" ]; then
    echo "generating $log" >&2
    "$convbill" generate --messages "$n" --days "$days" --start "$start" --seed "$seed" "$@" --out "$log.partial" -q
    mv "$log.partial" "$log"
  fi
  echo "$log"
}

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

if [ -n "$SIZES" ]; then
  echo "Whole runs (median of $RUNS; peak memory is the largest of the runs):"
  echo
  echo "| messages | convbill | throughput (msg/s) | peak memory | floor: read, hash key, sort | floor peak | convbill / floor | DuckDB peer | peer peak | peer / convbill |"
  echo "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
  for n in $SIZES; do
    log=$(log_of "$n" 31 2026-10-01 1)
    : > "$work/run"; : > "$work/floor"; : > "$work/peer"
    for _ in $(seq "$RUNS"); do
      rm -rf "$work/out"
      once "$work/run" "$convbill" run --input "$log" --out "$work/out" "${rates_args[@]}" -q
      rm -rf "$work/out"
      once "$work/floor" "$floor" "$log"
      if [ "$PEER" != 0 ]; then
        once "$work/peer" python3 benches/peer.py "$log" "$work/peer-out"
        rm -rf "$work/peer-out"
      fi
    done
    [ "$PEER" != 0 ] || echo "skipped" > "$work/peer"
    awk -v n="$n" -v run="$(summarize "$work/run")" -v base="$(summarize "$work/floor")" \
        -v peer="$(if [ "$PEER" != 0 ]; then summarize "$work/peer"; else echo skipped; fi)" 'BEGIN {
      gb = 1048576
      split(run, r, " "); split(base, b, " "); split(peer, p, " ")
      ok_r = run !~ /^(failed|skipped)/; ok_b = base !~ /^(failed|skipped)/; ok_p = peer !~ /^(failed|skipped)/
      printf "| %d | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n", n,
        ok_r ? sprintf("%.2f s", r[1]) : run, ok_r ? sprintf("%.0f", n / r[1]) : "",
        ok_r ? sprintf("%.2f GB", r[2] / gb) : "",
        ok_b ? sprintf("%.2f s", b[1]) : base, ok_b ? sprintf("%.2f GB", b[2] / gb) : "",
        ok_r && ok_b ? sprintf("%.2f", r[1] / b[1]) : "",
        ok_p ? sprintf("%.2f s", p[1]) : peer, ok_p ? sprintf("%.2f GB", p[2] / gb) : "",
        ok_r && ok_p ? sprintf("%.2f", p[1] / r[1]) : ""
    }'
  done
  echo
fi

if [ -n "$NIGHT_SIZES" ]; then
  echo "Nights: one day's log, run as the first night of a history and as a whole run (median of $RUNS):"
  echo
  echo "| messages in the day | night | night peak memory | whole run of the day | whole run peak | night / whole run |"
  echo "|---:|---:|---:|---:|---:|---:|"
  for n in $NIGHT_SIZES; do
    log=$(log_of "$n" 1 2026-10-01 3)
    : > "$work/night"; : > "$work/whole"
    for _ in $(seq "$RUNS"); do
      rm -rf "$work/out"
      once "$work/night" "$convbill" run --input "$log" --out "$work/out" --date 2026-10-01 --init "${rates_args[@]}" -q
      rm -rf "$work/out"
      once "$work/whole" "$convbill" run --input "$log" --out "$work/out" "${rates_args[@]}" -q
      rm -rf "$work/out"
    done
    awk -v n="$n" -v night="$(summarize "$work/night")" -v whole="$(summarize "$work/whole")" 'BEGIN {
      gb = 1048576
      split(night, a, " "); split(whole, w, " ")
      ok_a = night !~ /^failed/; ok_w = whole !~ /^failed/
      printf "| %d | %s | %s | %s | %s | %s |\n", n,
        ok_a ? sprintf("%.2f s", a[1]) : "failed (see `convbill run --date` on it)", ok_a ? sprintf("%.2f GB", a[2] / gb) : "",
        ok_w ? sprintf("%.2f s", w[1]) : "failed", ok_w ? sprintf("%.2f GB", w[2] / gb) : "",
        ok_a && ok_w ? sprintf("%.2f", a[1] / w[1]) : ""
    }'
  done
fi

if [ -n "$META_SIZES" ]; then
  echo
  echo "Meta's pricing: a month across the switch, with and without the card's [meta] (median of $RUNS):"
  echo
  echo "| messages | with [meta] | peak memory | without | peak memory | with / without |"
  echo "|---:|---:|---:|---:|---:|---:|"
  # The sample card without its [meta] section (the plans alone).
  sed '/^\[meta\]/,$d' sample-data/meta/rates.toml > "$work/plans-only.toml"
  for n in $META_SIZES; do
    log=$(log_of "$n" 31 2025-06-15 1 --markets)
    : > "$work/meta"; : > "$work/plain"
    for _ in $(seq "$RUNS"); do
      rm -rf "$work/out"
      once "$work/meta" "$convbill" run --input "$log" --out "$work/out" --rates sample-data/meta/rates.toml -q
      rm -rf "$work/out"
      once "$work/plain" "$convbill" run --input "$log" --out "$work/out" --rates "$work/plans-only.toml" -q
      rm -rf "$work/out"
    done
    awk -v n="$n" -v meta="$(summarize "$work/meta")" -v plain="$(summarize "$work/plain")" 'BEGIN {
      gb = 1048576
      split(meta, m, " "); split(plain, p, " ")
      ok_m = meta !~ /^failed/; ok_p = plain !~ /^failed/
      printf "| %d | %s | %s | %s | %s | %s |\n", n,
        ok_m ? sprintf("%.2f s", m[1]) : "failed", ok_m ? sprintf("%.2f GB", m[2] / gb) : "",
        ok_p ? sprintf("%.2f s", p[1]) : "failed", ok_p ? sprintf("%.2f GB", p[2] / gb) : "",
        ok_m && ok_p ? sprintf("%.2f", m[1] / p[1]) : ""
    }'
  done
fi

if [ -n "$RECONCILE_SIZES" ]; then
  echo
  echo "Reconciliation of a month's Meta units with its daily analytics (median of $RUNS):"
  echo
  echo "| messages | Meta units | cells | reconcile | peak memory |"
  echo "|---:|---:|---:|---:|---:|"
  for n in $RECONCILE_SIZES; do
    log=$(log_of "$n" 31 2025-06-15 1 --markets)
    analytics="${log%.parquet}-analytics"
    if [ ! -d "$analytics" ]; then
      echo "generating $analytics" >&2
      rm -rf "$analytics.partial"
      "$convbill" generate --messages "$n" --days 31 --start 2025-06-15 --seed 1 --markets \
        --out "$work/log.parquet" --meta-analytics "$analytics.partial" \
        --rates sample-data/meta/rates.toml -q
      cmp -s "$work/log.parquet" "$log" || { echo "the analytics were made of another log than $log" >&2; exit 1; }
      rm -f "$work/log.parquet"
      mv "$analytics.partial" "$analytics"
    fi
    rm -rf "$work/out"
    "$convbill" run --input "$log" --out "$work/out" --rates sample-data/meta/rates.toml -q
    : > "$work/reconcile"
    for _ in $(seq "$RUNS"); do
      once "$work/reconcile" "$convbill" reconcile --out "$work/out" --meta-analytics "$analytics" --fail-on-difference -q
    done
    units=$(python3 -c 'import json, sys; print(next(o["rows"] for o in json.load(open(sys.argv[1]))["outputs"] if o["path"] == "meta_units.parquet"))' "$work/out/manifest.json")
    cells=$(( $(wc -l < "$work/out/reconciliation/reconciliation.csv") - 1 ))
    awk -v n="$n" -v units="$units" -v cells="$cells" -v r="$(summarize "$work/reconcile")" 'BEGIN {
      gb = 1048576
      split(r, a, " "); ok = r !~ /^failed/
      printf "| %d | %d | %d | %s | %s |\n", n, units, cells,
        ok ? sprintf("%.2f s", a[1]) : "failed (differences, or an error)", ok ? sprintf("%.2f GB", a[2] / gb) : ""
    }'
    rm -rf "$work/out"
  done
fi
