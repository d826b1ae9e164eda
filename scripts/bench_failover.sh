#!/usr/bin/env bash
# Detector failover benchmark: three `tripline detect` workers share the shards by Kafka group
# membership ([detect.group]); one is killed with SIGKILL, and the time until every one of its
# shards is evaluated again by a survivor (its "detectors ready" line) is measured. Then the
# killed worker is started again, the shards settle, and the next worker is killed: KILLS times.
#
#   scripts/bench_failover.sh                  # 10 kills, 6 shards
#   KILLS=20 SHARDS=12 scripts/bench_failover.sh
#
# What bounds it: the broker notices the dead member after kafka.session_timeout_ms (6 s by
# default), the survivors rejoin, and each warms the shards it takes over from ClickHouse
# (history_hours of an empty database here: the warm-up at scale adds to it).
# Needs the servers up (scripts/servers.sh up) and a build (cargo build --release, or
# TRIPLINE_BENCH_BIN=target/debug/tripline).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
# shellcheck source=scripts/env.sh
. scripts/env.sh

KILLS="${KILLS:-10}"
SHARDS="${SHARDS:-6}"
BIN="${TRIPLINE_BENCH_BIN:-target/release/tripline}"
RUN_ID="failover_$$_$(date +%s)"
WORK="$TRIPLINE_RUN/bench-failover/$RUN_ID"
[ -x "$BIN" ] || { echo "no $BIN: run cargo build --release" >&2; exit 1; }
mkdir -p "$WORK"
export TRIPLINE_FINGERPRINT_SECRET="${TRIPLINE_FINGERPRINT_SECRET:-bench-failover-fingerprint-secret-01}"

cat >"$WORK/tripline.toml" <<EOF
[kafka]
brokers = "$TRIPLINE_KAFKA_BROKERS"
alerts_topic = "bench.$RUN_ID.alerts"

[clickhouse]
url = "$TRIPLINE_CLICKHOUSE_URL"
database = "bench_$RUN_ID"

[enrich]
country_db = "$TRIPLINE_ROOT/data/geo/country.mmdb"
asn_db = "$TRIPLINE_ROOT/data/geo/asn.mmdb"

[detect]
eval_interval_ms = 1000

[detect.group]
enabled = true
shards = $SHARDS
topic = "bench.$RUN_ID.shards"
group_id = "bench.$RUN_ID.detectors"
EOF

declare -A PIDS
start_worker() { # $1 name
  TRIPLINE_LISTEN="127.0.0.1:0" RUST_LOG=info "$BIN" detect --config "$WORK/tripline.toml" \
    >>"$WORK/$1.log" 2>&1 </dev/null &
  PIDS[$1]=$!
}
stop_all() {
  for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  curl -sS "$TRIPLINE_CLICKHOUSE_URL/" --data-binary "DROP DATABASE IF EXISTS bench_$RUN_ID" || true
}
trap stop_all EXIT

# The shards a worker holds now: its last "detector shards assigned" line, as "0 3".
held() { grep 'detector shards assigned' "$WORK/$1.log" 2>/dev/null | tail -n 1 |
  sed -E 's/.*shards=\[([0-9, ]*)\].*/\1/; s/,//g'; }
# Waits until the live workers hold every shard, each at least one, none twice.
settle() {
  local deadline=$((SECONDS + 120)) all count
  while ((SECONDS < deadline)); do
    all="" count=0
    for w in "$@"; do
      [ -n "$(held "$w")" ] || continue 2
      all="$all $(held "$w")"
    done
    count=$(tr ' ' '\n' <<<"$all" | grep -c . || true)
    if [ "$count" -eq "$SHARDS" ] && [ "$(tr ' ' '\n' <<<"$all" | grep . | sort -u | wc -l)" -eq "$SHARDS" ]; then
      sleep 2 # and every worker warmed up
      return 0
    fi
    sleep 0.5
  done
  echo "the shards never settled among: $*" >&2
  exit 1
}

workers=(w0 w1 w2)
for w in "${workers[@]}"; do start_worker "$w"; sleep 1; done
settle "${workers[@]}"

results=()
for ((kill = 0; kill < KILLS; kill++)); do
  victim="${workers[$((kill % 3))]}"
  survivors=()
  for w in "${workers[@]}"; do [ "$w" = "$victim" ] || survivors+=("$w"); done
  shards="$(held "$victim")"
  logs=()
  for w in "${survivors[@]}"; do logs+=("$WORK/$w.log"); done
  killed_ns=$(date +%s%N)
  kill -KILL "${PIDS[$victim]}"
  wait "${PIDS[$victim]}" 2>/dev/null || true
  # Each of its shards: the first "detectors ready" for it on a survivor after the kill.
  deadline=$((SECONDS + 120))
  worst=0
  for shard in $shards; do
    while :; do
      ready_ns=$(cat "${logs[@]}" 2>/dev/null |
        grep -E "detectors ready shard=$shard of=" | cut -d' ' -f1 |
        while read -r ts; do
          ns=$(date -d "$ts" +%s%N)
          if ((ns > killed_ns)); then echo "$ns"; fi
        done | sort -n | head -n 1) || true
      [ -n "$ready_ns" ] && break
      ((SECONDS < deadline)) || { echo "shard $shard never taken over" >&2; exit 1; }
      sleep 0.2
    done
    if ((ready_ns - killed_ns > worst)); then worst=$((ready_ns - killed_ns)); fi
  done
  seconds=$(awk -v ns="$worst" 'BEGIN { printf "%.1f", ns / 1e9 }')
  results+=("$seconds")
  echo "kill $((kill + 1)) of $KILLS: $victim held [$shards]: all evaluated again after $seconds s"
  start_worker "$victim"
  settle "${workers[@]}"
done

sorted=$(printf '%s\n' "${results[@]}" | sort -g)
n=${#results[@]}
echo "failover over $n kills (s): min $(head -n 1 <<<"$sorted")," \
  "median $(sed -n "$(((n + 1) / 2))p" <<<"$sorted")," \
  "p90 $(sed -n "$(((n * 9 + 9) / 10))p" <<<"$sorted"), max $(tail -n 1 <<<"$sorted")"
