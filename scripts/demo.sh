#!/usr/bin/env bash
# Quick start: install, start ClickHouse and Kafka (tansu), build Tripline, and show its job:
#   1. `tripline run` with alerting to a local signed-webhook sink and the console on;
#   2. a day of simulated history for 50 keys, backfilled at once: the models warm on it and
#      learn each key's daily rhythm, as they do on `detect.history_hours` in production (with
#      only hours of it, a key's working day rising is new to them, and can page);
#   3. minutes of live traffic with labelled incidents (a leaked key, impossible travel, key
#      scanning, a retry storm, a large spend spike);
#   4. the alerts that fired, what each answered and how fast, where they were delivered, and
#      the console's address and token.
# The servers, `tripline run` and the sink stay up afterwards (`scripts/servers.sh down` stops
# them). The demo has a ClickHouse database of its own, recreated on every run.
#
# Knobs: TRIPLINE_DEMO_RATE (requests/s, default 20), TRIPLINE_DEMO_HISTORY_HOURS (default 24),
#        TRIPLINE_DEMO_DURATION_S (live traffic, default 480), TRIPLINE_DEMO_DATABASE
#        (default tripline_demo), TRIPLINE_DEMO_SINK_PORT (default 9899), TRIPLINE_DEMO_LISTEN
#        (default 127.0.0.1:9898), TRIPLINE_DEMO_NAME (prefix of the topics and consumer groups,
#        default tripline: the defaults'), TRIPLINE_BIN (default target/release/tripline) and
#        TRIPLINE_DEMO_SETUP=0 (skip install, servers up and build: the caller has done them, as
#        the test suite's tests/demo_e2e.rs does).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.." || exit 1
# shellcheck source=scripts/env.sh
. scripts/env.sh

RATE="${TRIPLINE_DEMO_RATE:-20}"
HISTORY_H="${TRIPLINE_DEMO_HISTORY_HOURS:-24}"
DURATION_S="${TRIPLINE_DEMO_DURATION_S:-480}"
DB="${TRIPLINE_DEMO_DATABASE:-tripline_demo}"
SINK_PORT="${TRIPLINE_DEMO_SINK_PORT:-9899}"
NAME="${TRIPLINE_DEMO_NAME:-tripline}"
SETUP="${TRIPLINE_DEMO_SETUP:-1}"
KEYS=50
SEED=1
BIN="${TRIPLINE_BIN:-target/release/tripline}"
DEMO="$TRIPLINE_RUN/demo"
CONFIG="$DEMO/tripline.toml"
RUN_LOG="$TRIPLINE_RUN/tripline-run.log"
RUN_PID="$TRIPLINE_RUN/tripline.pid"
LISTEN="${TRIPLINE_DEMO_LISTEN:-127.0.0.1:9898}"
export TRIPLINE_CLICKHOUSE_DATABASE="$DB" TRIPLINE_LISTEN="$LISTEN"
export TRIPLINE_ALERTING_GROUP_ID="$NAME-alerting"
# Demo secrets, made for this run: the fingerprint key, the webhook signing secret, the API token.
export TRIPLINE_FINGERPRINT_SECRET="${TRIPLINE_FINGERPRINT_SECRET:-demo-only-change-me}"
TRIPLINE_WEBHOOK_SECRET="whsec_$(head -c 24 /dev/urandom | base64)"
TRIPLINE_ALERTING_API_TOKEN="$(head -c 18 /dev/urandom | base64 | tr '+/' '-_')"
export TRIPLINE_WEBHOOK_SECRET TRIPLINE_ALERTING_API_TOKEN

section() { printf '\n===== %s =====\n' "$*"; }
die() { echo "demo: $*" >&2; exit 1; }
ch() { clickhouse-client --port "$TRIPLINE_CLICKHOUSE_TCP_PORT" "$@"; }
metric() { curl -fsS --max-time 2 "http://$LISTEN/metrics" 2>/dev/null | awk -v m="$1" '$1 == m { print $2 }'; }
# wait_until SECONDS WHAT COMMAND...: poll every 2 s.
wait_until() {
  local limit="$1" what="$2" waited=0
  shift 2
  until "$@"; do
    [ "$waited" -lt "$limit" ] || return 1
    sleep 2
    waited=$((waited + 2))
  done
  echo "demo: $what after ${waited} s"
}

if [ "$SETUP" != 0 ]; then
  section "install"
  scripts/install.sh

  section "servers up"
  scripts/servers.sh up

  section "cargo build --release"
  cargo build --release
fi

section "a fresh demo: database $DB, config $CONFIG"
scripts/servers.sh stop-tripline >/dev/null # a previous demo's run and sink
ch -q "DROP DATABASE IF EXISTS $DB"
rm -rf "$DEMO"
mkdir -p "$DEMO"
cat >"$CONFIG" <<TOML
# Written by scripts/demo.sh for its run. Every setting not here is the default
# (tripline.example.toml); the database and listen address come from the environment.
[kafka]
gateway_topic = "$NAME.gateway.requests"
provider_topic = "$NAME.provider.attempts"
dlq_topic = "$NAME.dlq"
alerts_topic = "$NAME.alerts"
ingest_group_id = "$NAME-ingest"

[enrich]
country_db = "$TRIPLINE_ROOT/data/geo/country.mmdb"
asn_db = "$TRIPLINE_ROOT/data/geo/asn.mmdb"

[alerting]
state_dir = "alerting"
external_url = "http://$LISTEN/ui/"

[alerting.route]
receiver = "demo-sink"

[[alerting.receivers]]
name = "demo-sink"
kind = "webhook"
url = "http://127.0.0.1:$SINK_PORT/hook"
secret_env = "TRIPLINE_WEBHOOK_SECRET"
TOML
"$BIN" check-config --config "$CONFIG"


# start_background PIDFILE COMMAND...: in a session of its own (Ctrl-C on the simulator must not
# stop it), its pid written for `scripts/servers.sh stop-tripline`.
start_background() {
  local pidfile="$1"
  shift
  # shellcheck disable=SC2016 # $$ and $@ belong to the inner shell
  setsid bash -c 'echo $$ >"$0"; exec "$@"' "$pidfile" "$@" </dev/null >>"$RUN_LOG" 2>&1 &
}
ready() { curl -fsS --max-time 2 "http://$LISTEN/readyz" >/dev/null 2>&1; }
mkdir -p "$TRIPLINE_RUN"

section "history: $HISTORY_H h of traffic for $KEYS keys at $RATE requests/s, backfilled at once"
# Through `tripline ingest` alone, as a team's gateway logs would be stored before Tripline's
# detectors first start; `tripline run` then warms its models on them at start-up.
start_background "$RUN_PID" "$BIN" ingest --config "$CONFIG"
wait_until 120 "tripline ingest is ready" ready || {
  tail -n 40 "$RUN_LOG" >&2
  die "tripline ingest is not ready after 120 s (log: $RUN_LOG)"
}
history_s=$((HISTORY_H * 3600))
start="$(date -u -d "-$history_s seconds" +%Y-%m-%dT%H:%M:%SZ)"
"$BIN" simulate --config "$CONFIG" --fast --start "$start" --duration-s "$history_s" \
  --rate "$RATE" --keys "$KEYS" --seed "$SEED" | tee "$DEMO/history.txt"
sent="$(sed -n 's/^simulated \([0-9]*\) gateway requests.*/\1/p' "$DEMO/history.txt")"
stored() { ch -q "SELECT count() FROM $DB.gateway_requests"; }
all_stored() { [ "$(stored)" -ge "$sent" ]; }
wait_until 600 "the $sent requests are stored" all_stored ||
  die "only $(stored) of $sent requests stored after 10 minutes (log: $RUN_LOG)"
scripts/servers.sh stop-tripline >/dev/null

section "webhook sink on 127.0.0.1:$SINK_PORT (log: $DEMO/sink.log)"
RUN_LOG="$DEMO/sink.log" start_background "$DEMO/sink.pid" \
  "$TRIPLINE_PYTHON" scripts/webhook-sink.py --port "$SINK_PORT" --out "$DEMO/alerts.jsonl"

section "tripline run (background, log: $RUN_LOG)"
start_background "$RUN_PID" "$BIN" run --config "$CONFIG"
wait_until 300 "tripline run is ready, its models warm on the history" ready || {
  tail -n 40 "$RUN_LOG" >&2
  die "tripline run is not ready after 300 s (log: $RUN_LOG)"
}

section "live: $DURATION_S s at $RATE requests/s with labelled incidents (Ctrl-C stops it early)"
trap 'echo " (simulation interrupted)"' INT
sim_status=0
"$BIN" simulate --config "$CONFIG" --rate "$RATE" --duration-s "$DURATION_S" --keys "$KEYS" \
  --seed "$SEED" --incidents demo --truth "$DEMO/truth.jsonl" || sim_status=$?
trap - INT
# A group waits up to 30 s before its first notification.
echo "demo: waiting 40 s for the last notifications"
sleep 40

section "what Tripline told"
report_status=0
"$TRIPLINE_PYTHON" scripts/demo-report.py --truth "$DEMO/truth.jsonl" \
  --clickhouse "$TRIPLINE_CLICKHOUSE_URL" --database "$DB" --sink-log "$DEMO/alerts.jsonl" ||
  report_status=$?

section "where to look"
printf '%s\n' "$TRIPLINE_ALERTING_API_TOKEN" >"$DEMO/api-token"
chmod 600 "$DEMO/api-token"
cat <<INFO
console            http://$LISTEN/ui/   token: $TRIPLINE_ALERTING_API_TOKEN (also in $DEMO/api-token)
alerts API         curl -s -H "Authorization: Bearer \$(cat $DEMO/api-token)" http://$LISTEN/api/v1/alerts
webhooks received  $DEMO/alerts.jsonl (signatures verified; sink log $DEMO/sink.log)
tripline run       pid $(cat "$RUN_PID" 2>/dev/null || echo '?'), log $RUN_LOG, config $CONFIG
metrics            curl -s http://$LISTEN/metrics | grep '^tripline_'
ClickHouse         $TRIPLINE_CLICKHOUSE_URL (HTTP), 127.0.0.1:$TRIPLINE_CLICKHOUSE_TCP_PORT (native), database $DB
  clickhouse-client --port $TRIPLINE_CLICKHOUSE_TCP_PORT -q "SELECT emitted_at, detector, severity, summary FROM $DB.alerts WHERE status = 'firing' ORDER BY emitted_at"
  clickhouse-client --port $TRIPLINE_CLICKHOUSE_TCP_PORT -q "SELECT api_key_id, countMerge(requests) AS requests, round(sumMerge(cost_usd), 4) AS usd FROM $DB.rollup_key_1m GROUP BY api_key_id ORDER BY usd DESC LIMIT 10"
ground truth       $DEMO/truth.jsonl (what was injected, with the simulator's note on each)
detector scores    $BIN evaluate   (hours of drawn incidents; see BENCHMARKS.md)
server status      scripts/servers.sh status
stop everything    scripts/servers.sh down     (also stops this tripline run and the sink)
INFO
[ "$sim_status" -eq 0 ] || exit "$sim_status"
exit "$report_status"
