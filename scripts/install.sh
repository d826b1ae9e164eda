#!/usr/bin/env bash
# Install what Tripline's tests and demo need on a Debian 12 machine. Idempotent and quiet:
# one line per step, full output only when a step fails. Works with CI=true and no stdin.
#
#   apt packages (skipped entirely when all are installed), chromium for the console's test,
#   zookeeper for the local ClickHouse cluster (scripts/cluster.sh)
#   tansu (Kafka-compatible broker), built once into $TRIPLINE_CACHE
#   a Python venv in $TRIPLINE_CACHE with aiosmtpd, chdb-core and LiteLLM's proxy (for the
#   collector's end-to-end test: a real LiteLLM on loopback with mock_response models)
#
# Knobs: TRIPLINE_SKIP_TANSU=1 skips the tansu build (e.g. while another build is running).
set -euo pipefail
# shellcheck source=scripts/env.sh
. "$(dirname "${BASH_SOURCE[0]}")/env.sh"

export DEBIAN_FRONTEND=noninteractive
# chromium + chromium-driver: the console's end-to-end test (headless, over WebDriver).
# zookeeper (3.8, pulls in a JRE): replication and ON CLUSTER for scripts/cluster.sh. Not
# zookeeperd, whose service would start on :2181; cluster.sh runs its own on another port.
# iproute2: `ip netns` and veth pairs, for the test that cuts an alerting host off Kafka.
APT_PACKAGES=(build-essential zlib1g-dev pkg-config curl ca-certificates
  clickhouse-server clickhouse-client python3-venv chromium chromium-driver zookeeper patch
  iproute2)
# litellm: pinned to the version the collector is tested against. Never 1.107.0 (a compromised
# release); review the release before raising the pin.
# The OTLP tests' real clients: the OpenTelemetry SDK and OTLP/HTTP exporter, and the official
# openai-v2 instrumentation (2.4b0 imports a module its util-genai 1.3b0 lacks; 2.3b0 and the
# instrumentation 0.66b2 call wrap_function_wrapper as wrapt 1 defines it, hence wrapt 1.17).
PY_REQUIREMENTS=("chdb-core==26.9.0" "aiosmtpd==1.4.6" "litellm[proxy]==1.106.12"
  "opentelemetry-sdk==1.45.2" "opentelemetry-exporter-otlp-proto-http==1.45.2"
  "opentelemetry-instrumentation-openai-v2==2.3b0" "wrapt==1.17.3")
# Checked without importing litellm (its import reaches for the network unless told not to).
PY_CHECK='import chdb, aiosmtpd, importlib.metadata as m; assert m.version("litellm") == "1.106.12"
import opentelemetry.exporter.otlp.proto.http.trace_exporter, opentelemetry.instrumentation.openai_v2'

say() { echo "install: $*"; }

# Run a command with its output captured; show it only if the command fails.
quiet() {
  local out rc=0
  out="$(mktemp)"
  "$@" </dev/null >"$out" 2>&1 || rc=$?
  if [ "$rc" -ne 0 ]; then
    echo "install: FAILED ($rc): $*" >&2
    tail -n 60 "$out" >&2
  fi
  rm -f "$out"
  return "$rc"
}

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo -n "$@"; fi
}

# ---- apt -------------------------------------------------------------------------------------
missing=()
for p in "${APT_PACKAGES[@]}"; do
  status="$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)"
  [ "$status" = "install ok installed" ] || missing+=("$p")
done
if [ "${#missing[@]}" -eq 0 ]; then
  say "apt packages: all present"
else
  say "apt packages: installing ${missing[*]}"
  # Keep package scripts from starting ClickHouse with the stock config on our ports: Docker-style
  # images already have a policy-rc.d that denies starts; add a temporary one where none exists.
  made_policy=0
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    as_root sh -c 'printf "#!/bin/sh\nexit 101\n" > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d'
    made_policy=1
  fi
  rc=0
  quiet as_root apt-get update -q || rc=$?
  if [ "$rc" -eq 0 ]; then
    quiet as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q \
      -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold "${missing[@]}" || rc=$?
  fi
  [ "$made_policy" -eq 1 ] && as_root rm -f /usr/sbin/policy-rc.d
  [ "$rc" -eq 0 ] || exit "$rc"
fi

# ---- tansu -----------------------------------------------------------------------------------
# tansu as published, with scripts/tansu/*.patch applied to its broker crate: the published crates
# are fetched by cargo, unpacked next to each other, and the tansu binary is built against the
# patched broker with tansu's own Cargo.lock (only the patched crate's entry changes).
build_tansu() {
  local v="$TRIPLINE_TANSU_VERSION" work="$TRIPLINE_CACHE/tansu-build" crates patch
  rm -rf "$work" && mkdir -p "$work/fetch/src"
  printf '[package]\nname = "fetch-tansu"\nversion = "0.0.0"\nedition = "2021"\npublish = false\n\n[dependencies]\ntansu = "=%s"\ntansu-broker = "=%s"\n' \
    "$v" "$v" >"$work/fetch/Cargo.toml"
  echo 'fn main() {}' >"$work/fetch/src/main.rs"
  (cd "$work/fetch" && cargo fetch)
  crates="${CARGO_HOME:-$HOME/.cargo}/registry/cache"
  for crate in tansu tansu-broker; do
    tar -xzf "$(find "$crates" -name "$crate-$v.crate" | head -n 1)" -C "$work"
  done
  for patch in "$TRIPLINE_ROOT"/scripts/tansu/*.patch; do
    patch -d "$work/tansu-broker-$v" -p1 <"$patch"
  done
  printf '\n[patch.crates-io]\ntansu-broker = { path = "../tansu-broker-%s" }\n' "$v" >>"$work/tansu-$v/Cargo.toml"
  (cd "$work/tansu-$v" && CARGO_TARGET_DIR="$work/target" cargo build --release --features libsql,dynostore)
  mkdir -p "$TRIPLINE_TANSU_ROOT/bin"
  cp "$work/target/release/tansu" "$TRIPLINE_TANSU_BIN"
  rm -rf "$work"
}

mkdir -p "$TRIPLINE_CACHE"
if [ -x "$TRIPLINE_TANSU_BIN" ]; then
  say "tansu $TRIPLINE_TANSU_VERSION (patches $TRIPLINE_TANSU_PATCHES): cached ($TRIPLINE_TANSU_BIN)"
elif [ "${TRIPLINE_SKIP_TANSU:-0}" = 1 ]; then
  say "tansu $TRIPLINE_TANSU_VERSION: MISSING, build skipped (TRIPLINE_SKIP_TANSU=1)"
else
  command -v cargo >/dev/null || { echo "install: cargo not found on PATH" >&2; exit 1; }
  build_log="$TRIPLINE_CACHE/tansu-build.log"
  say "tansu $TRIPLINE_TANSU_VERSION: building (about 15 min on 2 cores; log: $build_log)"
  start=$SECONDS
  # The lock serialises concurrent installs sharing one cache; the second one then finds the binary.
  exec 9>"$TRIPLINE_CACHE/tansu.lock"
  flock 9
  if [ ! -x "$TRIPLINE_TANSU_BIN" ]; then
    if ! build_tansu </dev/null >"$build_log" 2>&1; then
      echo "install: FAILED: building tansu (last lines of $build_log):" >&2
      tail -n 60 "$build_log" >&2
      exit 1
    fi
  fi
  flock -u 9
  say "tansu $TRIPLINE_TANSU_VERSION: built in $((SECONDS - start)) s"
fi

# ---- python venv -----------------------------------------------------------------------------
marker="$TRIPLINE_VENV/.tripline-requirements"
wanted="${PY_REQUIREMENTS[*]}"
if [ -f "$marker" ] && [ "$(cat "$marker")" = "$wanted" ] \
  && "$TRIPLINE_VENV/bin/python" -c "$PY_CHECK" >/dev/null 2>&1; then
  say "python venv: cached ($TRIPLINE_VENV)"
else
  start=$SECONDS
  if "$TRIPLINE_VENV/bin/python" -c 'import sys' >/dev/null 2>&1; then
    # Installed into in place: other processes may be using the venv (tests, servers).
    say "python venv: updating $TRIPLINE_VENV to $wanted"
  else
    say "python venv: creating $TRIPLINE_VENV with $wanted"
    base_python="$(command -v python3)"
    rm -rf "$TRIPLINE_VENV"
    quiet "$base_python" -m venv "$TRIPLINE_VENV"
  fi
  quiet "$TRIPLINE_VENV/bin/python" -m pip install -q --disable-pip-version-check "${PY_REQUIREMENTS[@]}"
  quiet "$TRIPLINE_VENV/bin/python" -c "$PY_CHECK"
  echo "$wanted" >"$marker"
  say "python venv: ready in $((SECONDS - start)) s"
fi
