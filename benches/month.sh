# Sourced by benches/shards.sh and benches/shard_histories.sh, with SIZE, RATES and CACHE set:
# the rate card's arguments (`rates_args`), the convbill binary (`convbill`, built), the
# benchmark's month of SIZE messages (`log`, generated once into CACHE, shared with
# benches/run.sh), a work folder removed on exit (`work`), and `measure NAME COMMAND...`, which
# appends the command's wall time and the peak memory of its process tree to `$work/m-NAME`
# (benches/peak.py).
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/convbill-target}"
mkdir -p "$CACHE"
rates_args=()
if [ -n "$RATES" ]; then rates_args=(--rates "$(realpath "$RATES")"); fi

cargo build --release --quiet --bin convbill
convbill="$CARGO_TARGET_DIR/release/convbill"
log="$CACHE/messages-$SIZE-days31-2026-10-01-seed1.parquet"
if [ ! -f "$log" ]; then
  echo "generating $log" >&2
  "$convbill" generate --messages "$SIZE" --days 31 --start 2026-10-01 --seed 1 --out "$log.partial" -q
  mv "$log.partial" "$log"
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
measure() {
  local into=$1
  shift
  sync
  python3 benches/peak.py -o "$work/m-$into" "$@"
}
