#!/usr/bin/env bash
# THE test command (CI runs it through .ci/run):
#   install -> servers up (and the ClickHouse cluster of scripts/cluster.sh) -> cargo build
#   -> SQL check on current ClickHouse (chdb) -> cargo test
# The servers are stopped on exit, silently: the last line printed is the test runner's summary.
# Extra arguments go to the test runner (e.g. scripts/test.sh -p tripline-core).
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.." || exit 1
# shellcheck source=scripts/env.sh
. scripts/env.sh

section() { printf '\n===== %s =====\n' "$*"; }
started=$SECONDS

section "install"
# A full disk fails the build with "No space left on device" deep in its output: say it first.
free_kb=$(df -Pk . | awk 'NR == 2 { print $4 }')
echo "disk: $((free_kb / 1024 / 1024)) GB free under $PWD"
if [ "${free_kb:-0}" -lt $((4 * 1024 * 1024)) ]; then
  echo "disk: under 4 GB free; the build and the servers' data need about 4 GB" >&2
fi
scripts/install.sh || exit 1

section "servers up"
mkdir -p "$TRIPLINE_RUN"
# Runs after cargo test: nothing may be printed there (see above); its output goes to a file.
trap '{ scripts/servers.sh down; scripts/cluster.sh down; } >>"$TRIPLINE_RUN/servers-down.log" 2>&1 || true' EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
scripts/servers.sh up || exit 1
# Cluster mode's tests (tests/cluster_e2e.rs): 2 shards x 2 replicas and ZooKeeper.
scripts/cluster.sh up || exit 1

section "cargo build --workspace --all-targets"
cargo build --workspace --all-targets || exit 1

section "ClickHouse SQL on the current engine (chdb)"
ddl_status=0
if [ -d dashboards/migrations ]; then
  "$TRIPLINE_PYTHON" scripts/check_ddl_chdb.py dashboards/migrations || ddl_status=$?
  # The cluster form (ON CLUSTER, Replicated engines) cannot run in-process: parsed only.
  cluster_ddl="$TRIPLINE_RUN/cluster-ddl.sql"
  { TRIPLINE_CLICKHOUSE_CLUSTER=tripline target/debug/tripline migrate --print >"$cluster_ddl" \
    && "$TRIPLINE_PYTHON" scripts/check_ddl_chdb.py --parse-only "$cluster_ddl"; } || ddl_status=1
  # The detectors' reads, run on the current engine against the migrated schema (the tests run
  # them on 18.16): every statement a cycle can issue, unqualified, hence `--db default`.
  detector_sql="$TRIPLINE_RUN/detector-sql"
  rm -rf "$detector_sql"
  { target/debug/examples/cycle_sql "$detector_sql" \
    && "$TRIPLINE_PYTHON" scripts/check_ddl_chdb.py --db default --queries "$detector_sql"; } || ddl_status=1
else
  echo "skipped: no dashboards/migrations/"
fi

# nextest ends with one summary line over every test of the workspace; plain cargo test (the
# fallback) ends with its last binary's line instead.
if cargo nextest --version >/dev/null 2>&1; then
  section "cargo nextest run --workspace (setup took $((SECONDS - started)) s; DDL check status $ddl_status)"
  cargo nextest run --workspace --no-fail-fast "$@"
else
  section "cargo test --workspace (setup took $((SECONDS - started)) s; DDL check status $ddl_status)"
  cargo test --workspace --all-targets "$@"
fi
test_status=$?

if [ "$test_status" -eq 0 ] && [ "$ddl_status" -ne 0 ]; then
  exit "$ddl_status"
fi
exit "$test_status"
