#!/usr/bin/env bash
# Backtest benchmark: replays one day of stored history for 10,000 keys through the detectors,
# once with a candidate config and once with the running one (what `tripline backtest` always
# does), and reports the wall time. Target (dashboards issue): at most 60 s here.
#
#   scripts/bench_backtest.sh            # generate the day once (kept), then time the backtest
#   KEYS=10000 RATE=100 scripts/bench_backtest.sh
#   REGENERATE=1 scripts/bench_backtest.sh
#
# The day is simulated traffic (real trace shapes, the standard incident scenario on top) that
# goes through the real pipeline: `tripline simulate --fast` → Kafka → `tripline ingest` →
# ClickHouse database `bench_backtest` (kept between runs; dropped by REGENERATE=1). Kafka is
# a second tansu with in-memory storage on port 19092: the persistent broker of the tests
# would take several minutes to carry the ~17 million messages (BENCHMARKS.md, "Ingest").
# Needs the servers up (scripts/servers.sh up) and a release build (cargo build --release).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
# shellcheck source=scripts/env.sh
. scripts/env.sh

KEYS="${KEYS:-10000}"
RATE="${RATE:-100}"
DATABASE="${DATABASE:-bench_backtest}"
BIN="${TRIPLINE_BENCH_BIN:-target/release/tripline}"
PORT="${BENCH_KAFKA_PORT:-19092}"
WORK="$TRIPLINE_RUN/bench-backtest"
mkdir -p "$WORK"
# The environment overrides the config files: point it at this benchmark's broker and database.
export TRIPLINE_KAFKA_BROKERS="127.0.0.1:$PORT"
export TRIPLINE_CLICKHOUSE_DATABASE="$DATABASE"
export TRIPLINE_FINGERPRINT_SECRET="${TRIPLINE_FINGERPRINT_SECRET:-bench-backtest-fingerprint-secret-0001}"
[ -x "$BIN" ] || { echo "no $BIN: run cargo build --release" >&2; exit 1; }

ch() { curl -sS --fail-with-body "$TRIPLINE_CLICKHOUSE_URL/" --data-binary "$1"; }

# The day: yesterday, 00:00 to 24:00 UTC.
DAY_START="$(date -u -d 'yesterday 00:00' +%Y-%m-%dT%H:%M:%SZ)"
DAY_END="$(date -u -d 'today 00:00' +%Y-%m-%dT%H:%M:%SZ)"

write_config() { # $1 file, $2 extra [detect] lines
  cat >"$1" <<EOF
[kafka]
brokers = "127.0.0.1:$PORT"
gateway_topic = "bench.backtest.gateway"
provider_topic = "bench.backtest.provider"
dlq_topic = "bench.backtest.dlq"
alerts_topic = "bench.backtest.alerts"
ingest_group_id = "bench-backtest-ingest"

[clickhouse]
url = "$TRIPLINE_CLICKHOUSE_URL"
database = "$DATABASE"

[enrich]
country_db = "$TRIPLINE_ROOT/data/geo/country.mmdb"
asn_db = "$TRIPLINE_ROOT/data/geo/asn.mmdb"

$2
EOF
}
write_config "$WORK/running.toml" ""
# Stricter: a higher dollar floor and a rarer tail, fewer novelty signals, higher amplification.
write_config "$WORK/candidate.toml" '[detect.spend_spike.model]
min_abs_usd = 5.0
tail_probability = 0.00001

[detect.retry_storm]
amplification = 4.0'

stored_day() { # 0 while the database does not exist
  curl -sf "$TRIPLINE_CLICKHOUSE_URL/" --data-binary "SELECT count() FROM $DATABASE.gateway_requests WHERE ts >= parseDateTimeBestEffort('$DAY_START') AND ts < parseDateTimeBestEffort('$DAY_END')" || echo 0
}

if [ "${REGENERATE:-0}" = 1 ]; then
  ch "DROP DATABASE IF EXISTS $DATABASE" >/dev/null
fi
if [ "$(stored_day)" -gt 0 ] && [ "$(cat "$WORK/day" 2>/dev/null)" = "$DAY_START $KEYS $RATE" ]; then
  echo "# reusing database $DATABASE: $(stored_day) gateway requests on $DAY_START"
else
  ch "DROP DATABASE IF EXISTS $DATABASE" >/dev/null
  # In-memory broker of its own (fresh every time, so the topics start empty).
  tansu_dir="$WORK/tansu"
  if [ -f "$tansu_dir/pid" ]; then kill "$(cat "$tansu_dir/pid")" 2>/dev/null || true; sleep 1; fi
  rm -rf "$tansu_dir" && mkdir -p "$tansu_dir"
  (cd "$tansu_dir" && setsid bash -c 'echo $$ >pid; exec "$@"' _ env RUST_LOG=warn "$TRIPLINE_TANSU_BIN" broker \
    --listener-url "tcp://127.0.0.1:$PORT" --advertised-listener-url "tcp://127.0.0.1:$PORT" \
    --storage-engine memory://tansu/ </dev/null >tansu.log 2>&1 &)
  trap 'kill "$(cat "$WORK/tansu/pid" 2>/dev/null)" 2>/dev/null || true' EXIT
  for _ in $(seq 50); do (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null && break; sleep 0.2; done

  echo "# generating $DAY_START .. $DAY_END: $KEYS keys, $RATE requests/s"
  started=$SECONDS
  "$BIN" simulate --config "$WORK/running.toml" --keys "$KEYS" --rate "$RATE" --duration-s 86400 \
    --start "$DAY_START" --fast --seed 11 --incidents standard --truth "$WORK/truth.jsonl" 2>&1 | tail -2
  produced=$(( SECONDS - started ))
  "$BIN" ingest --config "$WORK/running.toml" >"$WORK/ingest.log" 2>&1 &
  ingest_pid=$!
  last=-1
  while :; do
    sleep 10
    kill -0 "$ingest_pid" 2>/dev/null || { echo "ingest stopped: $WORK/ingest.log" >&2; tail -3 "$WORK/ingest.log" >&2; exit 1; }
    now="$(stored_day)"
    echo "  stored $now gateway requests"
    [ "$now" = "$last" ] && [ "$now" -gt 0 ] && break
    last="$now"
  done
  kill -TERM "$ingest_pid" && wait "$ingest_pid" || true
  echo "# produced in ${produced} s, ingested in $(( SECONDS - started - produced )) s"
  echo "$DAY_START $KEYS $RATE" >"$WORK/day"
fi

echo "# $(ch "SELECT count(), uniqExact(api_key_id) FROM $DATABASE.gateway_requests" | tr '\t' ' ') (gateway requests, keys) stored"
echo "# backtest $DAY_START .. $DAY_END, warm-up 60 minutes, candidate = stricter floor/tail/amplification"
/usr/bin/time -f "# wall %e s, user %U s, system %S s, max RSS %M KiB" \
  "$BIN" backtest --config "$WORK/candidate.toml" --running "$WORK/running.toml" \
  --from "$DAY_START" --to "$DAY_END" --warmup-minutes 60 --json "$WORK/backtest.json" \
  >"$WORK/backtest.txt"
head -8 "$WORK/backtest.txt"
echo "# full report: $WORK/backtest.txt and $WORK/backtest.json"
