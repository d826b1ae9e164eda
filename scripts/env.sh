# shellcheck shell=bash
# Tripline local environment: sourced by the other scripts (and by you: `. scripts/env.sh`).
# Every value can be overridden from the environment before sourcing.

TRIPLINE_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export TRIPLINE_ROOT

# Cache outside the clone: the tansu build takes ~15 min on 2 cores, keep it across clones.
export TRIPLINE_CACHE="${TRIPLINE_CACHE:-$HOME/.cache/tripline}"
# Run directory: server configs, data, logs and pid files.
export TRIPLINE_RUN="${TRIPLINE_RUN:-$TRIPLINE_ROOT/.run}"

# Kafka-compatible broker (tansu), built from crates.io into the cache.
export TRIPLINE_TANSU_VERSION="${TRIPLINE_TANSU_VERSION:-0.6.0}"
# Built with the fixes in scripts/tansu/*.patch (see its README): a change to them builds anew.
TRIPLINE_TANSU_PATCHES="$(cat "$TRIPLINE_ROOT"/scripts/tansu/*.patch 2>/dev/null | sha256sum | cut -c1-8)"
export TRIPLINE_TANSU_PATCHES
export TRIPLINE_TANSU_ROOT="${TRIPLINE_TANSU_ROOT:-$TRIPLINE_CACHE/tansu-$TRIPLINE_TANSU_VERSION-$TRIPLINE_TANSU_PATCHES}"
export TRIPLINE_TANSU_BIN="${TRIPLINE_TANSU_BIN:-$TRIPLINE_TANSU_ROOT/bin/tansu}"
export TRIPLINE_KAFKA_PORT="${TRIPLINE_KAFKA_PORT:-9092}"
export TRIPLINE_KAFKA_BROKERS="${TRIPLINE_KAFKA_BROKERS:-127.0.0.1:$TRIPLINE_KAFKA_PORT}"
export TRIPLINE_PARTITIONS="${TRIPLINE_PARTITIONS:-4}"
export TRIPLINE_TOPICS="${TRIPLINE_TOPICS:-tripline.gateway.requests tripline.provider.attempts tripline.dlq tripline.alerts}"

# ClickHouse (Debian's 18.16 here), our own config under $TRIPLINE_RUN/clickhouse.
export TRIPLINE_CLICKHOUSE_HTTP_PORT="${TRIPLINE_CLICKHOUSE_HTTP_PORT:-8123}"
export TRIPLINE_CLICKHOUSE_TCP_PORT="${TRIPLINE_CLICKHOUSE_TCP_PORT:-9000}"
export TRIPLINE_CLICKHOUSE_URL="${TRIPLINE_CLICKHOUSE_URL:-http://127.0.0.1:$TRIPLINE_CLICKHOUSE_HTTP_PORT}"

# Python venv with aiosmtpd (SMTP catcher) and chdb-core (current ClickHouse engine in-process).
export TRIPLINE_VENV="${TRIPLINE_VENV:-$TRIPLINE_CACHE/venv}"
export TRIPLINE_PYTHON="${TRIPLINE_PYTHON:-$TRIPLINE_VENV/bin/python}"
