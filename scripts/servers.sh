#!/usr/bin/env bash
# Local servers for Tripline: ClickHouse (Debian's 18.16) and tansu (Kafka-compatible broker),
# both background processes on 127.0.0.1, with config, data, logs and pid files in $TRIPLINE_RUN.
#
#   scripts/servers.sh up|down|status|reset
#   scripts/servers.sh start-clickhouse|stop-clickhouse|start-kafka|stop-kafka|create-topics|stop-tripline
#
# up:     start whatever is not running, wait until it answers, create the topics (idempotent).
# down:   SIGTERM, then SIGKILL after $TRIPLINE_STOP_TIMEOUT_S (default 20) seconds. Also stops a
#         `tripline run` and the webhook sink left by scripts/demo.sh ($TRIPLINE_RUN/tripline.pid,
#         $TRIPLINE_RUN/demo/sink.pid).
# reset:  down, then wipe both servers' data.
# stop-*/start-*: one server only (tests use them to simulate an outage). Data is kept.
set -euo pipefail
# shellcheck source=scripts/env.sh
. "$(dirname "${BASH_SOURCE[0]}")/env.sh"

CH_DIR="$TRIPLINE_RUN/clickhouse"
CH_PID="$CH_DIR/clickhouse.pid"
KAFKA_DIR="$TRIPLINE_RUN/tansu"
KAFKA_PID="$KAFKA_DIR/tansu.pid"
KAFKA_LOG="$KAFKA_DIR/tansu.log"
DEMO_PID="$TRIPLINE_RUN/tripline.pid"
DEMO_SINK_PID="$TRIPLINE_RUN/demo/sink.pid"
START_TIMEOUT_S="${TRIPLINE_START_TIMEOUT_S:-60}"
STOP_TIMEOUT_S="${TRIPLINE_STOP_TIMEOUT_S:-20}"
KAFKA_URL="tcp://127.0.0.1:$TRIPLINE_KAFKA_PORT"

say() { echo "servers: $*"; }
die() { echo "servers: ERROR: $*" >&2; exit 1; }

# The pid in $1 if that process is alive and its command line contains $2 (guards pid reuse).
live_pid() {
  local pid
  [ -f "$1" ] || return 1
  pid="$(cat "$1" 2>/dev/null)" || return 1
  [[ "$pid" =~ ^[0-9]+$ ]] || return 1
  kill -0 "$pid" 2>/dev/null || return 1
  tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q -- "$2" || return 1
  echo "$pid"
}

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

ch_ping() { [ "$(curl -fsS --max-time 2 "http://127.0.0.1:$TRIPLINE_CLICKHOUSE_HTTP_PORT/ping" 2>/dev/null)" = "Ok." ]; }

kafka_topics() { RUST_LOG=error "$TRIPLINE_TANSU_BIN" topic list --broker "$KAFKA_URL" 2>>"$KAFKA_LOG"; }

# stop_pid NAME PIDFILE PATTERN: SIGTERM, wait, then SIGKILL.
stop_pid() {
  local name="$1" pidfile="$2" pattern="$3" pid waited=0
  if ! pid="$(live_pid "$pidfile" "$pattern")"; then
    rm -f "$pidfile"
    say "$name: not running"
    return 0
  fi
  kill -TERM "$pid" 2>/dev/null || true
  while kill -0 "$pid" 2>/dev/null; do
    if [ "$waited" -ge $((STOP_TIMEOUT_S * 10)) ]; then
      say "$name: still running after ${STOP_TIMEOUT_S}s, sending SIGKILL"
      kill -KILL "$pid" 2>/dev/null || true
      sleep 0.2
      break
    fi
    sleep 0.1
    waited=$((waited + 1))
  done
  rm -f "$pidfile"
  say "$name: stopped (pid $pid)"
}

# ---- ClickHouse ------------------------------------------------------------------------------
ch_write_config() {
  mkdir -p "$CH_DIR"/{data,tmp,user_files,format_schemas,logs}
  cat >"$CH_DIR/config.xml" <<EOF
<?xml version="1.0"?>
<!-- Written by scripts/servers.sh at each start: edit the script, not this file. -->
<yandex>
    <logger>
        <level>information</level>
        <log>$CH_DIR/logs/clickhouse-server.log</log>
        <errorlog>$CH_DIR/logs/clickhouse-server.err.log</errorlog>
        <size>100M</size>
        <count>3</count>
    </logger>
    <listen_host>127.0.0.1</listen_host>
    <http_port>$TRIPLINE_CLICKHOUSE_HTTP_PORT</http_port>
    <tcp_port>$TRIPLINE_CLICKHOUSE_TCP_PORT</tcp_port>
    <max_connections>4096</max_connections>
    <keep_alive_timeout>3</keep_alive_timeout>
    <max_concurrent_queries>100</max_concurrent_queries>
    <uncompressed_cache_size>1073741824</uncompressed_cache_size>
    <mark_cache_size>268435456</mark_cache_size>
    <path>$CH_DIR/data/</path>
    <tmp_path>$CH_DIR/tmp/</tmp_path>
    <user_files_path>$CH_DIR/user_files/</user_files_path>
    <format_schema_path>$CH_DIR/format_schemas/</format_schema_path>
    <users_config>$CH_DIR/users.xml</users_config>
    <default_profile>default</default_profile>
    <default_database>default</default_database>
    <timezone>UTC</timezone>
    <mlock_executable>false</mlock_executable>
    <max_session_timeout>3600</max_session_timeout>
    <default_session_timeout>60</default_session_timeout>
    <query_log>
        <database>system</database>
        <table>query_log</table>
        <partition_by>toYYYYMM(event_date)</partition_by>
        <flush_interval_milliseconds>7500</flush_interval_milliseconds>
    </query_log>
</yandex>
EOF
  cat >"$CH_DIR/users.xml" <<'EOF'
<?xml version="1.0"?>
<yandex>
    <profiles>
        <default>
            <max_memory_usage>10000000000</max_memory_usage>
            <use_uncompressed_cache>0</use_uncompressed_cache>
            <load_balancing>random</load_balancing>
        </default>
        <readonly><readonly>1</readonly></readonly>
    </profiles>
    <users>
        <default>
            <password></password>
            <networks><ip>::1</ip><ip>127.0.0.1</ip></networks>
            <profile>default</profile>
            <quota>default</quota>
        </default>
    </users>
    <quotas>
        <default>
            <interval>
                <duration>3600</duration>
                <queries>0</queries><errors>0</errors><result_rows>0</result_rows>
                <read_rows>0</read_rows><execution_time>0</execution_time>
            </interval>
        </default>
    </quotas>
</yandex>
EOF
}

start_clickhouse() {
  local pid i
  if pid="$(live_pid "$CH_PID" clickhouse-server)"; then
    ch_ping || die "clickhouse: pid $pid runs but does not answer on :$TRIPLINE_CLICKHOUSE_HTTP_PORT"
    say "clickhouse: already up (pid $pid, $TRIPLINE_CLICKHOUSE_URL)"
    return 0
  fi
  command -v clickhouse-server >/dev/null || [ -x /usr/sbin/clickhouse-server ] \
    || die "clickhouse-server not installed: run scripts/install.sh"
  for port in "$TRIPLINE_CLICKHOUSE_HTTP_PORT" "$TRIPLINE_CLICKHOUSE_TCP_PORT"; do
    port_open "$port" && die "clickhouse: port $port is already taken by another process"
  done
  ch_write_config
  rm -f "$CH_PID"
  # --daemon forks and writes the pid file; runs fine as root (no user switch in 18.16).
  (cd "$CH_DIR" && /usr/sbin/clickhouse-server --config-file="$CH_DIR/config.xml" \
    --pid-file="$CH_PID" --daemon </dev/null >>"$CH_DIR/logs/stdout.log" 2>&1) \
    || die "clickhouse: failed to start (see $CH_DIR/logs/)"
  for ((i = 0; i < START_TIMEOUT_S * 10; i++)); do
    if ch_ping; then
      say "clickhouse: up (pid $(cat "$CH_PID" 2>/dev/null), $TRIPLINE_CLICKHOUSE_URL, native :$TRIPLINE_CLICKHOUSE_TCP_PORT)"
      return 0
    fi
    if [ "$i" -gt 20 ] && ! live_pid "$CH_PID" clickhouse-server >/dev/null; then
      break
    fi
    sleep 0.1
  done
  tail -n 30 "$CH_DIR/logs/clickhouse-server.err.log" >&2 2>/dev/null || true
  die "clickhouse: did not answer /ping within ${START_TIMEOUT_S}s (logs: $CH_DIR/logs/)"
}

stop_clickhouse() { stop_pid clickhouse "$CH_PID" clickhouse-server; }

# ---- tansu -----------------------------------------------------------------------------------
start_kafka() {
  local pid i
  [ -x "$TRIPLINE_TANSU_BIN" ] || die "tansu not found at $TRIPLINE_TANSU_BIN: run scripts/install.sh"
  if pid="$(live_pid "$KAFKA_PID" tansu)"; then
    say "kafka (tansu): already up (pid $pid, $TRIPLINE_KAFKA_BROKERS)"
    return 0
  fi
  port_open "$TRIPLINE_KAFKA_PORT" && die "kafka: port $TRIPLINE_KAFKA_PORT is already taken by another process"
  mkdir -p "$KAFKA_DIR/data"
  rm -f "$KAFKA_PID"
  # The sqlite path is relative to the working directory (an absolute one is mangled), and keeps
  # messages and committed offsets across a restart. setsid: a Ctrl-C in the caller's terminal
  # must not reach the broker. The inner shell writes its own pid, then execs tansu under it.
  # tansu logs only errors unless RUST_LOG says otherwise: pin it so a test's RUST_LOG=debug
  # does not flood the broker log (TRIPLINE_TANSU_LOG to change it).
  (
    cd "$KAFKA_DIR"
    # shellcheck disable=SC2016 # $$ and $@ belong to the inner shell
    setsid bash -c 'echo $$ >"$0"; exec "$@"' "$KAFKA_PID" \
      env RUST_LOG="${TRIPLINE_TANSU_LOG:-warn}" "$TRIPLINE_TANSU_BIN" broker \
      --listener-url "$KAFKA_URL" \
      --advertised-listener-url "$KAFKA_URL" \
      --storage-engine "sqlite://data/tansu.db" \
      </dev/null >>"$KAFKA_LOG" 2>&1 &
  )
  for ((i = 0; i < START_TIMEOUT_S * 10; i++)); do
    if port_open "$TRIPLINE_KAFKA_PORT" && kafka_topics >/dev/null; then
      say "kafka (tansu): up (pid $(cat "$KAFKA_PID" 2>/dev/null), $TRIPLINE_KAFKA_BROKERS)"
      return 0
    fi
    if [ "$i" -gt 5 ] && ! live_pid "$KAFKA_PID" tansu >/dev/null; then
      break
    fi
    sleep 0.1
  done
  tail -n 30 "$KAFKA_LOG" >&2 || true
  die "kafka (tansu): did not answer within ${START_TIMEOUT_S}s (log: $KAFKA_LOG)"
}

stop_kafka() { stop_pid "kafka (tansu)" "$KAFKA_PID" tansu; }

create_topics() {
  local existing topic created=()
  existing="$(kafka_topics)" || die "kafka: cannot list topics (log: $KAFKA_LOG)"
  for topic in $TRIPLINE_TOPICS; do
    if ! grep -q "\"name\":\"$topic\"" <<<"$existing"; then
      RUST_LOG=error "$TRIPLINE_TANSU_BIN" topic create "$topic" --partitions "$TRIPLINE_PARTITIONS" \
        --broker "$KAFKA_URL" >>"$KAFKA_LOG" 2>&1 || die "kafka: cannot create topic $topic (log: $KAFKA_LOG)"
      created+=("$topic")
    fi
  done
  if [ "${#created[@]}" -gt 0 ]; then
    say "kafka: created topics ${created[*]} ($TRIPLINE_PARTITIONS partitions)"
  else
    say "kafka: topics present"
  fi
}

# ---- demo process ----------------------------------------------------------------------------
stop_demo() {
  if live_pid "$DEMO_PID" tripline >/dev/null; then
    stop_pid "tripline run (demo)" "$DEMO_PID" tripline
  else
    rm -f "$DEMO_PID"
  fi
  if live_pid "$DEMO_SINK_PID" webhook-sink >/dev/null; then
    stop_pid "webhook sink (demo)" "$DEMO_SINK_PID" webhook-sink
  else
    rm -f "$DEMO_SINK_PID"
  fi
}

status() {
  local rc=0 pid
  if pid="$(live_pid "$CH_PID" clickhouse-server)"; then
    if ch_ping; then say "clickhouse: up (pid $pid, $TRIPLINE_CLICKHOUSE_URL)"
    else say "clickhouse: running (pid $pid) but not answering"; rc=1; fi
  else
    say "clickhouse: down"; rc=1
  fi
  if pid="$(live_pid "$KAFKA_PID" tansu)"; then
    if kafka_topics >/dev/null; then say "kafka (tansu): up (pid $pid, $TRIPLINE_KAFKA_BROKERS)"
    else say "kafka (tansu): running (pid $pid) but not answering"; rc=1; fi
  else
    say "kafka (tansu): down"; rc=1
  fi
  if pid="$(live_pid "$DEMO_PID" tripline)"; then say "tripline run (demo): up (pid $pid)"; fi
  return "$rc"
}

cmd="${1:-}"
mkdir -p "$TRIPLINE_RUN"
case "$cmd" in
  up)
    start_clickhouse
    start_kafka
    create_topics
    ;;
  down)
    stop_demo
    stop_kafka
    stop_clickhouse
    ;;
  reset)
    stop_demo
    stop_kafka
    stop_clickhouse
    rm -rf "$CH_DIR" "$KAFKA_DIR"
    say "data wiped ($CH_DIR, $KAFKA_DIR)"
    ;;
  status) status ;;
  start-clickhouse) start_clickhouse ;;
  stop-clickhouse) stop_clickhouse ;;
  start-kafka) start_kafka ;;
  stop-kafka) stop_kafka ;;
  create-topics) create_topics ;;
  stop-tripline) stop_demo ;;
  *)
    echo "usage: $0 up|down|status|reset|start-clickhouse|stop-clickhouse|start-kafka|stop-kafka|create-topics|stop-tripline" >&2
    exit 2
    ;;
esac
