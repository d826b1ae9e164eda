#!/usr/bin/env bash
# A local ClickHouse cluster for Tripline's cluster mode: one ZooKeeper (Debian's `zookeeper`
# package, standalone) and four clickhouse-server processes (Debian's 18.16) forming the cluster
# `tripline`: 2 shards x 2 replicas, internal_replication=true, macros {shard} and {replica},
# distributed DDL (`ON CLUSTER tripline`). All on 127.0.0.1, no systemd; config, data, logs and
# pid files in $TRIPLINE_RUN/cluster. Independent of scripts/servers.sh (other ports, other dirs).
#
#   scripts/cluster.sh up|down|status|reset
#   scripts/cluster.sh start-node N|stop-node N     (N = 1..4, or zookeeper)
#
# up:     start whatever is not running, wait until all five answer and every node sees ZooKeeper
#         and the cluster (idempotent).
# down:   SIGTERM, then SIGKILL after $TRIPLINE_STOP_TIMEOUT_S (default 20) seconds. The four nodes
#         together, ZooKeeper last (a node shutting down still talks to it).
# reset:  down, then wipe the cluster's data (ZooKeeper's too: the two must be wiped together).
# start-node/stop-node: one process only (tests use them to take a replica away). Data is kept.
#
# Node n (1..4) is shard (n+1)/2, replica s<shard>r<1|2>; ports (override the bases with the
# variables below): HTTP 18120+n, native 19000+n, interserver 19010+n; ZooKeeper 12181.
#
# Trade-offs for a local, throwaway cluster: ZooKeeper does not fsync its log (forceSync=no; on
# a busy disk each fsync took 1-3 s and stalled every replicated table's start and stop). A
# replica killed with SIGKILL resumes replication only once its old ZooKeeper session expires
# ($TRIPLINE_CLUSTER_ZK_SESSION_MS, default 30000, ClickHouse's default) plus up to 10 s.
set -euo pipefail
# shellcheck source=scripts/env.sh
. "$(dirname "${BASH_SOURCE[0]}")/env.sh"

CL_DIR="$TRIPLINE_RUN/cluster"
CL_NAME="${TRIPLINE_CLUSTER_NAME:-tripline}"
ZK_PORT="${TRIPLINE_CLUSTER_ZK_PORT:-12181}"
HTTP_BASE="${TRIPLINE_CLUSTER_HTTP_BASE:-18120}"
TCP_BASE="${TRIPLINE_CLUSTER_TCP_BASE:-19000}"
INTERSERVER_BASE="${TRIPLINE_CLUSTER_INTERSERVER_BASE:-19010}"
ZK_JVM_FLAGS="${TRIPLINE_CLUSTER_ZK_JVM_FLAGS:--Xms64m -Xmx512m}"
ZK_SESSION_MS="${TRIPLINE_CLUSTER_ZK_SESSION_MS:-30000}"
ZK_DIR="$CL_DIR/zookeeper"
ZK_PID="$ZK_DIR/zookeeper.pid"
ZK_LOG="$ZK_DIR/logs/stdout.log"
# Debian's zookeeper.jar names its dependencies in its manifest; the log4j binding is added here
# (both are dependencies of libzookeeper-java), the config dir first for log4j.properties.
ZK_JARS=/usr/share/java/zookeeper.jar:/usr/share/java/slf4j-log4j12.jar:/usr/share/java/log4j-1.2.jar
ZK_MAIN=org.apache.zookeeper.server.ZooKeeperServerMain
NODES=(1 2 3 4)
# Longer than servers.sh: four servers loading their parts at once on a busy disk took 68 s.
START_TIMEOUT_S="${TRIPLINE_START_TIMEOUT_S:-120}"
STOP_TIMEOUT_S="${TRIPLINE_STOP_TIMEOUT_S:-20}"

say() { echo "cluster: $*"; }
die() { echo "cluster: ERROR: $*" >&2; exit 1; }

# The pid in $1 if that process is alive and its command line contains $2 (guards pid reuse, and
# tells a cluster node from the single server of servers.sh: the pattern is the node's config).
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

# stop_pid NAME PIDFILE PATTERN: SIGTERM, wait, then SIGKILL.
stop_pid() {
  local pid
  if pid="$(term_pid "$@")"; then wait_pid "$1" "$2" "$pid"; fi
}

# term_pid NAME PIDFILE PATTERN: SIGTERM and print the pid if it runs; else say so and fail.
term_pid() {
  local pid
  if ! pid="$(live_pid "$2" "$3")"; then
    rm -f "$2"
    say "$1: not running" >&2
    return 1
  fi
  kill -TERM "$pid" 2>/dev/null || true
  echo "$pid"
}

# wait_pid NAME PIDFILE PID: wait for a signalled process to end, SIGKILL after the timeout.
# (The pid is passed: ClickHouse removes its pid file as it exits.)
wait_pid() {
  local name="$1" pidfile="$2" pid="$3" waited=0
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

# ---- ZooKeeper -------------------------------------------------------------------------------
# A four-letter word, answered and the connection closed by the server.
zk_4lw() {
  # shellcheck disable=SC2016 # expanded by the inner shell
  timeout 3 bash -c 'exec 3<>"/dev/tcp/127.0.0.1/$0" && printf %s "$1" >&3 && cat <&3' \
    "$ZK_PORT" "$1" 2>/dev/null
}

# Serving (a standalone server answers `srvr` with its mode once it has loaded its database).
zk_ping() { zk_4lw srvr | grep -q '^Mode: standalone'; }

zk_write_config() {
  mkdir -p "$ZK_DIR"/{data,logs}
  cat >"$ZK_DIR/zoo.cfg" <<EOF
# Written by scripts/cluster.sh at each start: edit the script, not this file.
tickTime=2000
dataDir=$ZK_DIR/data
clientPort=$ZK_PORT
clientPortAddress=127.0.0.1
maxClientCnxns=0
# Sessions may last as long as ClickHouse asks (the default cap is 20 ticks = 40 s).
maxSessionTimeout=$((ZK_SESSION_MS > 40000 ? ZK_SESSION_MS : 40000))
# A throwaway local cluster: no fsync of the transaction log (see the header).
forceSync=no
# The admin server would take :8080; the four-letter words are the readiness probe.
admin.enableServer=false
4lw.commands.whitelist=srvr,ruok,mntr,stat
autopurge.snapRetainCount=3
autopurge.purgeInterval=1
EOF
  cat >"$ZK_DIR/log4j.properties" <<EOF
log4j.rootLogger=INFO, ROLLINGFILE
log4j.appender.ROLLINGFILE=org.apache.log4j.RollingFileAppender
log4j.appender.ROLLINGFILE.File=$ZK_DIR/logs/zookeeper.log
log4j.appender.ROLLINGFILE.MaxFileSize=10MB
log4j.appender.ROLLINGFILE.MaxBackupIndex=3
log4j.appender.ROLLINGFILE.layout=org.apache.log4j.PatternLayout
log4j.appender.ROLLINGFILE.layout.ConversionPattern=%d{ISO8601} - %-5p [%t:%C{1}@%L] - %m%n
EOF
}

# Launch only; zk_wait checks that it answers.
zk_launch() {
  local pid jar
  if pid="$(live_pid "$ZK_PID" "$ZK_MAIN")"; then
    return 0
  fi
  command -v java >/dev/null || die "zookeeper: java not found: run scripts/install.sh (zookeeper pulls in a JRE)"
  for jar in ${ZK_JARS//:/ }; do
    [ -f "$jar" ] || die "zookeeper: $jar missing: run scripts/install.sh (Debian package zookeeper)"
  done
  port_open "$ZK_PORT" && die "zookeeper: port $ZK_PORT is already taken by another process"
  zk_write_config
  rm -f "$ZK_PID"
  # Started like servers.sh starts tansu: setsid keeps a Ctrl-C in the caller's terminal away;
  # the inner shell writes its own pid, then execs java under it.
  (
    cd "$ZK_DIR"
    # shellcheck disable=SC2016,SC2086 # $$ and $@ belong to the inner shell; JVM flags split
    setsid bash -c 'echo $$ >"$0"; exec "$@"' "$ZK_PID" \
      java $ZK_JVM_FLAGS -Dzookeeper.log.dir="$ZK_DIR/logs" \
      -Dlog4j.configuration="file:$ZK_DIR/log4j.properties" \
      -cp "$ZK_DIR:$ZK_JARS" "$ZK_MAIN" "$ZK_DIR/zoo.cfg" \
      </dev/null >>"$ZK_LOG" 2>&1 &
  )
}

zk_wait() {
  local i
  for ((i = 0; i < START_TIMEOUT_S * 10; i++)); do
    if zk_ping; then
      say "zookeeper: up (pid $(cat "$ZK_PID" 2>/dev/null), 127.0.0.1:$ZK_PORT)"
      return 0
    fi
    if [ "$i" -gt 5 ] && ! live_pid "$ZK_PID" "$ZK_MAIN" >/dev/null; then
      break
    fi
    sleep 0.1
  done
  tail -n 30 "$ZK_DIR/logs/zookeeper.log" "$ZK_LOG" >&2 2>/dev/null || true
  die "zookeeper: did not answer on :$ZK_PORT within ${START_TIMEOUT_S}s (logs: $ZK_DIR/logs/)"
}

start_zookeeper() {
  local pid
  if pid="$(live_pid "$ZK_PID" "$ZK_MAIN")"; then
    zk_ping || die "zookeeper: pid $pid runs but does not answer on :$ZK_PORT"
    say "zookeeper: already up (pid $pid, 127.0.0.1:$ZK_PORT)"
    return 0
  fi
  zk_launch
  zk_wait
}

stop_zookeeper() { stop_pid zookeeper "$ZK_PID" "$ZK_MAIN"; }

# ---- ClickHouse nodes ------------------------------------------------------------------------
node_dir() { echo "$CL_DIR/node$1"; }
node_pid() { echo "$CL_DIR/node$1/clickhouse.pid"; }
node_http() { echo $((HTTP_BASE + $1)); }
node_tcp() { echo $((TCP_BASE + $1)); }
node_interserver() { echo $((INTERSERVER_BASE + $1)); }
node_shard() { echo $((($1 + 1) / 2)); }
node_replica() { echo "s$(node_shard "$1")r$((($1 + 1) % 2 + 1))"; }
# What identifies node n's process (its config path is on its command line).
node_pattern() { echo "$(node_dir "$1")/config.xml"; }
node_name() { echo "node$1 (shard $(node_shard "$1"), replica $(node_replica "$1"))"; }

# query N SQL: the result of SQL on node N over HTTP (fails on a refused query).
query() { curl -fsS --max-time 10 --data-binary "$2" "http://127.0.0.1:$(node_http "$1")/" 2>/dev/null; }

node_ping() { [ "$(curl -fsS --max-time 2 "http://127.0.0.1:$(node_http "$1")/ping" 2>/dev/null)" = "Ok." ]; }

node_write_config() {
  local n="$1" dir shard
  dir="$(node_dir "$n")"
  mkdir -p "$dir"/{data,tmp,user_files,format_schemas,logs}
  # remote_servers: every node lists the whole cluster. A node finds itself in it by host and
  # native port, so all four can share 127.0.0.1.
  local shards="" s
  for s in 1 2; do
    shards+="
            <shard>
                <internal_replication>true</internal_replication>
                <replica><host>127.0.0.1</host><port>$(node_tcp $((2 * s - 1)))</port></replica>
                <replica><host>127.0.0.1</host><port>$(node_tcp $((2 * s)))</port></replica>
            </shard>"
  done
  shard="$(node_shard "$n")"
  cat >"$dir/config.xml" <<EOF
<?xml version="1.0"?>
<!-- Written by scripts/cluster.sh at each start: edit the script, not this file. -->
<yandex>
    <logger>
        <level>information</level>
        <log>$dir/logs/clickhouse-server.log</log>
        <errorlog>$dir/logs/clickhouse-server.err.log</errorlog>
        <size>100M</size>
        <count>3</count>
    </logger>
    <listen_host>127.0.0.1</listen_host>
    <http_port>$(node_http "$n")</http_port>
    <tcp_port>$(node_tcp "$n")</tcp_port>
    <!-- Replicas fetch parts from each other here; the host is what this node announces. -->
    <interserver_http_port>$(node_interserver "$n")</interserver_http_port>
    <interserver_http_host>127.0.0.1</interserver_http_host>
    <max_connections>4096</max_connections>
    <keep_alive_timeout>3</keep_alive_timeout>
    <max_concurrent_queries>100</max_concurrent_queries>
    <uncompressed_cache_size>1073741824</uncompressed_cache_size>
    <mark_cache_size>268435456</mark_cache_size>
    <path>$dir/data/</path>
    <tmp_path>$dir/tmp/</tmp_path>
    <user_files_path>$dir/user_files/</user_files_path>
    <format_schema_path>$dir/format_schemas/</format_schema_path>
    <users_config>$dir/users.xml</users_config>
    <default_profile>default</default_profile>
    <default_database>default</default_database>
    <timezone>UTC</timezone>
    <mlock_executable>false</mlock_executable>
    <max_session_timeout>3600</max_session_timeout>
    <default_session_timeout>60</default_session_timeout>
    <remote_servers>
        <$CL_NAME>$shards
        </$CL_NAME>
    </remote_servers>
    <zookeeper>
        <node><host>127.0.0.1</host><port>$ZK_PORT</port></node>
        <session_timeout_ms>$ZK_SESSION_MS</session_timeout_ms>
        <operation_timeout_ms>10000</operation_timeout_ms>
    </zookeeper>
    <macros>
        <cluster>$CL_NAME</cluster>
        <shard>$shard</shard>
        <replica>$(node_replica "$n")</replica>
    </macros>
    <!-- A replica killed with SIGKILL may restart with parts ZooKeeper never heard of: it
         moves them aside and fetches what its peer has. 18.16 refuses to start the table when
         such parts hold over half its rows (replicated_max_ratio_of_wrong_parts), which on a
         test's small table they do; current releases count suspicious parts instead of their
         share, and would start. -->
    <merge_tree>
        <replicated_max_ratio_of_wrong_parts>1</replicated_max_ratio_of_wrong_parts>
    </merge_tree>
    <!-- Queue of ON CLUSTER statements, executed by every node the cluster names. -->
    <distributed_ddl>
        <path>/clickhouse/task_queue/ddl</path>
    </distributed_ddl>
    <query_log>
        <database>system</database>
        <table>query_log</table>
        <partition_by>toYYYYMM(event_date)</partition_by>
        <flush_interval_milliseconds>7500</flush_interval_milliseconds>
    </query_log>
</yandex>
EOF
  cat >"$dir/users.xml" <<'EOF'
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

# Launch only (the four start side by side); node_wait checks that it answers.
node_launch() {
  local n="$1" dir pidfile pid port
  dir="$(node_dir "$n")"
  pidfile="$(node_pid "$n")"
  if pid="$(live_pid "$pidfile" "$(node_pattern "$n")")"; then
    return 0
  fi
  [ -x /usr/sbin/clickhouse-server ] || die "clickhouse-server not installed: run scripts/install.sh"
  for port in "$(node_http "$n")" "$(node_tcp "$n")" "$(node_interserver "$n")"; do
    port_open "$port" && die "node$n: port $port is already taken by another process"
  done
  node_write_config "$n"
  rm -f "$pidfile"
  # --daemon forks and writes the pid file; runs fine as root (no user switch in 18.16).
  (cd "$dir" && /usr/sbin/clickhouse-server --config-file="$dir/config.xml" \
    --pid-file="$pidfile" --daemon </dev/null >>"$dir/logs/stdout.log" 2>&1) \
    || die "node$n: failed to start (see $dir/logs/)"
}

node_wait() {
  local n="$1" i dir pidfile
  dir="$(node_dir "$n")"
  pidfile="$(node_pid "$n")"
  for ((i = 0; i < START_TIMEOUT_S * 10; i++)); do
    if node_ping "$n"; then
      say "$(node_name "$n"): up (pid $(cat "$pidfile" 2>/dev/null), http :$(node_http "$n"), native :$(node_tcp "$n"))"
      return 0
    fi
    if [ "$i" -gt 20 ] && ! live_pid "$pidfile" "$(node_pattern "$n")" >/dev/null; then
      break
    fi
    sleep 0.1
  done
  tail -n 30 "$dir/logs/clickhouse-server.err.log" >&2 2>/dev/null || true
  die "node$n: did not answer /ping on :$(node_http "$n") within ${START_TIMEOUT_S}s (logs: $dir/logs/)"
}

# The node answers SQL, reaches ZooKeeper, and knows the whole cluster.
node_ready() {
  [ "$(query "$1" "SELECT count() FROM system.clusters WHERE cluster = '$CL_NAME'")" = 4 ] \
    && query "$1" "SELECT count() FROM system.zookeeper WHERE path = '/'" >/dev/null
}

node_wait_ready() {
  local n="$1" i
  for ((i = 0; i < START_TIMEOUT_S * 10; i++)); do
    node_ready "$n" && return 0
    sleep 0.1
  done
  die "node$n: answers but does not see ZooKeeper (:$ZK_PORT) or cluster $CL_NAME (logs: $(node_dir "$n")/logs/)"
}

start_node() {
  local n="$1" pid
  if pid="$(live_pid "$(node_pid "$n")" "$(node_pattern "$n")")"; then
    node_ping "$n" || die "node$n: pid $pid runs but does not answer on :$(node_http "$n")"
    say "$(node_name "$n"): already up (pid $pid, http :$(node_http "$n"), native :$(node_tcp "$n"))"
    return 0
  fi
  node_launch "$n"
  node_wait "$n"
  node_wait_ready "$n"
}

stop_node() { stop_pid "node$1" "$(node_pid "$1")" "$(node_pattern "$1")"; }

# ---- all -------------------------------------------------------------------------------------
up() {
  local n pid started=$SECONDS pending=()
  start_zookeeper
  for n in "${NODES[@]}"; do
    if pid="$(live_pid "$(node_pid "$n")" "$(node_pattern "$n")")"; then
      node_ping "$n" || die "node$n: pid $pid runs but does not answer on :$(node_http "$n")"
      say "$(node_name "$n"): already up (pid $pid, http :$(node_http "$n"), native :$(node_tcp "$n"))"
    else
      node_launch "$n"
      pending+=("$n")
    fi
  done
  for n in ${pending[@]+"${pending[@]}"}; do node_wait "$n"; done
  for n in "${NODES[@]}"; do node_wait_ready "$n"; done
  say "$CL_NAME: 2 shards x 2 replicas ready in $((SECONDS - started)) s" \
    "(http :$(node_http 1)-$(node_http 4), native :$(node_tcp 1)-$(node_tcp 4), zookeeper :$ZK_PORT)"
}

down() {
  local n pids=()
  # The nodes stop side by side (each takes a few seconds to close its connections).
  for n in "${NODES[@]}"; do
    pids[n]="$(term_pid "node$n" "$(node_pid "$n")" "$(node_pattern "$n")")" || true
  done
  for n in "${NODES[@]}"; do
    [ -z "${pids[n]:-}" ] || wait_pid "node$n" "$(node_pid "$n")" "${pids[n]}"
  done
  stop_zookeeper
}

status() {
  local rc=0 pid n mode
  if pid="$(live_pid "$ZK_PID" "$ZK_MAIN")"; then
    if mode="$(zk_4lw srvr | sed -n 's/^Mode: //p')" && [ -n "$mode" ]; then
      say "zookeeper: up (pid $pid, 127.0.0.1:$ZK_PORT, $mode)"
    else
      say "zookeeper: running (pid $pid) but not answering"; rc=1
    fi
  else
    say "zookeeper: down"; rc=1
  fi
  for n in "${NODES[@]}"; do
    if pid="$(live_pid "$(node_pid "$n")" "$(node_pattern "$n")")"; then
      if ! node_ping "$n"; then
        say "$(node_name "$n"): running (pid $pid) but not answering"; rc=1
      elif ! node_ready "$n"; then
        say "$(node_name "$n"): up (pid $pid) but does not see ZooKeeper or the cluster"; rc=1
      else
        say "$(node_name "$n"): up (pid $pid, http :$(node_http "$n"), native :$(node_tcp "$n"))"
      fi
    else
      say "$(node_name "$n"): down"; rc=1
    fi
  done
  return "$rc"
}

# N = 1..4 or zookeeper.
one() {
  case "$2" in
    zookeeper) "$1"_zookeeper ;;
    1 | 2 | 3 | 4) "$1"_node "$2" ;;
    *) die "which node? 1..4 or zookeeper, not '${2}'" ;;
  esac
}

cmd="${1:-}"
mkdir -p "$CL_DIR"
case "$cmd" in
  up) up ;;
  down) down ;;
  reset)
    down
    rm -rf "$CL_DIR"
    say "data wiped ($CL_DIR)"
    ;;
  status) status ;;
  start-node) one start "${2:-}" ;;
  stop-node) one stop "${2:-}" ;;
  *)
    echo "usage: $0 up|down|status|reset|start-node N|stop-node N  (N = 1..4 or zookeeper)" >&2
    exit 2
    ;;
esac
