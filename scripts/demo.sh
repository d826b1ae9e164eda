#!/usr/bin/env bash
# Quick start: install, start ClickHouse and Kafka (tansu), build Tripline, run it, and feed it
# simulated traffic for two minutes. The servers and `tripline run` stay up afterwards.
#
# Knobs: TRIPLINE_DEMO_RATE (events/s, default 200), TRIPLINE_DEMO_DURATION_S (default 120),
#        TRIPLINE_DEMO_CONFIG (default tripline.example.toml).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.." || exit 1
# shellcheck source=scripts/env.sh
. scripts/env.sh

CONFIG="${TRIPLINE_DEMO_CONFIG:-tripline.example.toml}"
RATE="${TRIPLINE_DEMO_RATE:-200}"
DURATION_S="${TRIPLINE_DEMO_DURATION_S:-120}"
BIN=target/release/tripline
RUN_LOG="$TRIPLINE_RUN/tripline-run.log"
RUN_PID="$TRIPLINE_RUN/tripline.pid"
# HMAC key for API-key fingerprints (see [secrets] in the config): a fixed one is fine for a demo.
export TRIPLINE_FINGERPRINT_SECRET="${TRIPLINE_FINGERPRINT_SECRET:-demo-only-change-me}"

section() { printf '\n===== %s =====\n' "$*"; }

section "install"
scripts/install.sh

section "servers up"
scripts/servers.sh up

section "cargo build --release"
cargo build --release

section "tripline run (background, log: $RUN_LOG)"
scripts/servers.sh stop-tripline >/dev/null # a previous demo's
mkdir -p "$TRIPLINE_RUN"
# setsid: Ctrl-C on the simulator below must not stop the pipeline; the inner shell writes the
# pid that servers.sh uses to stop it.
# shellcheck disable=SC2016 # $$ and $@ belong to the inner shell
setsid bash -c 'echo $$ >"$0"; exec "$@"' "$RUN_PID" \
  "$BIN" run --config "$CONFIG" </dev/null >>"$RUN_LOG" 2>&1 &
sleep 2
if ! kill -0 "$(cat "$RUN_PID" 2>/dev/null || echo 0)" 2>/dev/null; then
  tail -n 40 "$RUN_LOG" >&2
  echo "demo: tripline run exited at start (log: $RUN_LOG)" >&2
  exit 1
fi
echo "tripline run: pid $(cat "$RUN_PID")"

section "tripline simulate: $RATE events/s for $DURATION_S s (Ctrl-C stops it early)"
trap 'echo " (simulation interrupted)"' INT
sim_status=0
"$BIN" simulate --config "$CONFIG" --rate "$RATE" --duration-s "$DURATION_S" || sim_status=$?
trap - INT

db="$(sed -n 's/^[[:space:]]*database[[:space:]]*=[[:space:]]*"\([^"]*\)".*/\1/p' "$CONFIG" 2>/dev/null | head -n 1)"
db="${db:-tripline}"
ch="clickhouse-client --port $TRIPLINE_CLICKHOUSE_TCP_PORT"

section "where to look"
cat <<INFO
tripline run       pid $(cat "$RUN_PID" 2>/dev/null || echo '?'), log $RUN_LOG
metrics            curl -s http://127.0.0.1:9898/metrics | grep '^tripline_'
ClickHouse         $TRIPLINE_CLICKHOUSE_URL (HTTP), 127.0.0.1:$TRIPLINE_CLICKHOUSE_TCP_PORT (native)
  $ch -q "SHOW TABLES FROM $db"
  $ch -q "SELECT table, sum(rows) AS rows FROM system.parts WHERE active AND database = '$db' GROUP BY table ORDER BY table"
  $ch -q "SELECT api_key_id, countMerge(requests) AS requests, round(sumMerge(cost_usd), 4) AS usd FROM $db.rollup_key_1m GROUP BY api_key_id ORDER BY usd DESC LIMIT 10"
  $ch -q "SELECT * FROM $db.gateway_requests ORDER BY ts DESC LIMIT 3 FORMAT Vertical"
  $ch -q "SELECT emitted_at, detector, status, severity, summary FROM $db.alerts ORDER BY emitted_at DESC LIMIT 10"
detector scores    target/release/tripline evaluate --config $CONFIG   (hours of labelled incidents; see BENCHMARKS.md)
Kafka (tansu)      $TRIPLINE_KAFKA_BROKERS, log $TRIPLINE_RUN/tansu/tansu.log
  $TRIPLINE_TANSU_BIN topic list --broker tcp://$TRIPLINE_KAFKA_BROKERS
server status      scripts/servers.sh status
stop everything    scripts/servers.sh down     (also stops this tripline run)
wipe the data      scripts/servers.sh reset
INFO
exit "$sim_status"
