#!/usr/bin/env bash
# Score the detectors over many seeds: `tripline evaluate` once per seed (each on scratch topics
# and a scratch database of its own), then `tripline evaluate-summary` over the JSONs.
#
#   scripts/eval-seeds.sh [--holdout] [--seeds LIST] [--jobs N] [--out DIR]
#                         [--hours H] [--history-hours H] [--rate R] [--keep | --rescore DIR]
#                         [--markdown]
#                         [-- EXTRA EVALUATE ARGS]
#
#   --holdout     run the HOLD-OUT seeds instead of the DEV seeds (see below)
#   --seeds LIST  a subset of the chosen set: "1-4", "1,3,5" or "1-4,9" (default: all of it)
#   --jobs N      evaluations side by side (default 2: a replay mostly waits on ClickHouse)
#   --out DIR     where the JSONs and logs go (default /tmp/tripline-eval-<set>-<time>)
#   --hours H     event time per run (default 6: every incident kind fits from 5 h 30 min)
#   --history-hours H
#                 ordinary traffic before those hours, only to warm the models, as a start-up
#                 warms them on detect.history_hours (default 0; 24 lets a key's daily rhythm
#                 be learned, and takes about five times as long to simulate and ingest)
#   --rate R      background requests/s (default 10)
#   --keep        keep each seed's database, so that --rescore can score it again
#   --rescore DIR score again the databases a --keep run into DIR left (same seeds, hours,
#                 rate): only the detectors' replay runs, a minute or two a seed, for comparing
#                 thresholds (TRIPLINE_CONFIG) on DEV seeds
#   --markdown    print the summary as Markdown tables (for BENCHMARKS.md)
#
# Needs ClickHouse and Kafka: `scripts/servers.sh up`. TRIPLINE_FINGERPRINT_SECRET is generated
# for the run if unset. TRIPLINE_BIN names the binary (default: `cargo build --release`, then
# target/release/tripline); TRIPLINE_CONFIG a config file with the thresholds under test.
set -euo pipefail
# shellcheck source=scripts/env.sh
. "$(dirname "${BASH_SOURCE[0]}")/env.sh"

# ---------------------------------------------------------------------------------------------
# THE SEED SETS. Fixed here, once, before any tuning on them (issue 11, item 5):
#   DEV      1-20       tune, compare, look at misses: as often as you like.
#   HOLD-OUT 1001-1020  only with --holdout, only to report (BENCHMARKS.md, separately from DEV);
#            2001-2020  never to choose a threshold, a rule or a default. A change made after
#                       looking at hold-out results makes them DEV results. 1001-1020 were each
#                       run once by session 13; 2001-2020 were added unseen on 2026-12-04
#                       (session 15), before that session's tuning.
# Do not edit these sets to make a number look better. src/evaluate/score.rs checks that `--hours 6`
# holds every incident kind for both.
DEV_SEEDS="$(seq 1 20)"
HOLDOUT_SEEDS="$(seq 1001 1020; seq 2001 2020)"
# ---------------------------------------------------------------------------------------------

say() { echo "eval-seeds: $*" >&2; }
die() { echo "eval-seeds: ERROR: $*" >&2; exit 1; }

holdout=0 subset="" jobs=2 out="" hours=6 history=0 rate=10 markdown=() keep=() rescore=""
extra=()
while [ $# -gt 0 ]; do
  case "$1" in
    --holdout) holdout=1 ;;
    --seeds) subset="${2:?--seeds needs a list}"; shift ;;
    --jobs) jobs="${2:?--jobs needs a number}"; shift ;;
    --out) out="${2:?--out needs a directory}"; shift ;;
    --hours) hours="${2:?--hours needs a number}"; shift ;;
    --history-hours) history="${2:?--history-hours needs a number}"; shift ;;
    --rate) rate="${2:?--rate needs a number}"; shift ;;
    --markdown) markdown=(--markdown) ;;
    --keep) keep=(--keep) ;;
    --rescore) rescore="${2:?--rescore needs a directory}"; shift ;;
    --) shift; extra=("$@"); break ;;
    -h|--help) sed -n '2,29p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown argument $1 (see --help)" ;;
  esac
  shift
done
[[ "$jobs" =~ ^[1-9][0-9]*$ ]] || die "--jobs must be a positive number"

if [ "$holdout" = 1 ]; then set_name=holdout; set_seeds="$HOLDOUT_SEEDS"; else set_name=dev; set_seeds="$DEV_SEEDS"; fi

# "1-4,9" → "1 2 3 4 9"
expand() {
  local part
  for part in ${1//,/ }; do
    if [[ "$part" =~ ^([0-9]+)-([0-9]+)$ ]]; then seq "${BASH_REMATCH[1]}" "${BASH_REMATCH[2]}"
    elif [[ "$part" =~ ^[0-9]+$ ]]; then echo "$part"
    else die "bad seed list entry '$part'"; fi
  done
}
if [ -n "$subset" ]; then
  seeds=""
  listed="$(expand "$subset")" || exit 1
  for s in $listed; do
    grep -qx "$s" <<<"$set_seeds" || {
      if grep -qx "$s" <<<"$HOLDOUT_SEEDS"; then
        die "seed $s is a HOLD-OUT seed: it runs only with --holdout, never for tuning"
      fi
      die "seed $s is not in the $set_name set"
    }
    seeds+="$s "
  done
else
  seeds="$(echo $set_seeds)"
fi
[ -n "${seeds// /}" ] || die "no seeds to run"

holdout_banner() {
  cat >&2 <<'EOF'
###############################################################################################
##  HOLD-OUT SEEDS (1001-1020, 2001-2020). These results are for REPORTING ONLY (apart       ##
##  from DEV in BENCHMARKS.md). Do NOT use them to tune thresholds, rules or defaults, do    ##
##  not look at their misses to decide a change. A change made after looking turns them      ##
##  into DEV results.                                                                        ##
###############################################################################################
EOF
}
[ "$holdout" = 1 ] && holdout_banner

# Servers, secret, binary.
curl -fsS --max-time 3 "$TRIPLINE_CLICKHOUSE_URL/ping" >/dev/null 2>&1 \
  || die "ClickHouse does not answer at $TRIPLINE_CLICKHOUSE_URL: scripts/servers.sh up"
broker="${TRIPLINE_KAFKA_BROKERS%%,*}"
(exec 3<>"/dev/tcp/${broker%:*}/${broker##*:}") 2>/dev/null \
  || die "Kafka does not answer at $broker: scripts/servers.sh up"
if [ -z "${TRIPLINE_FINGERPRINT_SECRET:-}" ]; then
  TRIPLINE_FINGERPRINT_SECRET="$(openssl rand -hex 32)"
  export TRIPLINE_FINGERPRINT_SECRET
  say "TRIPLINE_FINGERPRINT_SECRET was unset: generated one for this run"
fi
out="${out:-/tmp/tripline-eval-$set_name-$(date -u +%Y%m%dT%H%M%SZ)}"
mkdir -p "$out"
out="$(cd "$out" && pwd)"
cd "$TRIPLINE_ROOT"
if [ -z "${TRIPLINE_BIN:-}" ]; then
  cargo build --release --quiet --bin tripline
  TRIPLINE_BIN="$TRIPLINE_ROOT/target/release/tripline"
fi
[ -x "$TRIPLINE_BIN" ] || die "no binary at $TRIPLINE_BIN"
# Every seed runs the same binary, even if target/ is rebuilt meanwhile: a copy of it, kept with
# the results.
cp "$TRIPLINE_BIN" "$out/tripline"
TRIPLINE_BIN="$out/tripline"
if [ -z "${TRIPLINE_REVISION:-}" ] && git -C "$TRIPLINE_ROOT" rev-parse --git-dir >/dev/null 2>&1; then
  TRIPLINE_REVISION="$(git -C "$TRIPLINE_ROOT" describe --always --dirty)"
fi
export TRIPLINE_REVISION="${TRIPLINE_REVISION:-}"

say "$set_name seeds: $seeds"
say "--hours $hours --history-hours $history --rate $rate, $jobs at a time, revision ${TRIPLINE_REVISION:-unknown}, into $out"

# The database and end of a kept run, as `evaluate` arguments.
reuse_args() {
  local kept="$rescore/seed-$1.json"
  [ -f "$kept" ] || die "no $kept to rescore"
  # The run's own fields (every incident has an end_ms too).
  python3 - "$kept" "$history" <<'PY' || die "$kept names no database and end, or another --history-hours: run with --keep first"
import json, sys
run = json.load(open(sys.argv[1]))["run"]
if not run.get("database"):
    sys.exit(1)
print("--reuse-database", run["database"], "--end-ms", run["end_ms"])
if run.get("history_hours", 0) != float(sys.argv[2]):
    print(f"kept with --history-hours {run.get('history_hours', 0)}", file=sys.stderr)
    sys.exit(1)
PY
}

one() {
  local seed="$1" t0=$SECONDS reuse=() kept
  if [ -n "$rescore" ]; then
    kept="$(reuse_args "$seed")" || return 1
    read -ra reuse <<<"$kept"
  fi
  "$TRIPLINE_BIN" evaluate --hours "$hours" --history-hours "$history" --rate "$rate" --seed "$seed" \
    --json "$out/seed-$seed.json.tmp" ${keep[@]+"${keep[@]}"} ${reuse[@]+"${reuse[@]}"} \
    ${extra[@]+"${extra[@]}"} >"$out/seed-$seed.log" 2>&1 &
  local evaluation=$!
  # This job killed (by the script's trap below, or by a pkill that matches it too), its
  # evaluation stops with it: left running, it loads ClickHouse for a result nobody reads.
  trap 'kill -TERM "$evaluation" 2>/dev/null; exit 143' INT TERM
  if wait "$evaluation"; then
    mv "$out/seed-$seed.json.tmp" "$out/seed-$seed.json"
    say "seed $seed: done in $((SECONDS - t0)) s"
  else
    say "seed $seed: FAILED after $((SECONDS - t0)) s (see $out/seed-$seed.log)"
    return 1
  fi
}

# A kill of this script stops its jobs, and each job its evaluation (see `one`).
stop_jobs() {
  local pid
  for pid in $(jobs -p); do kill -TERM "$pid" 2>/dev/null || true; done
  say "stopped"
  exit 143
}
trap stop_jobs INT TERM

for seed in $seeds; do
  while [ "$(jobs -rp | wc -l)" -ge "$jobs" ]; do
    wait -n || true
  done
  one "$seed" &
  sleep 2 # distinct scratch topics and databases, and staggered production
done
wait || true

files=() failed=0
for seed in $seeds; do
  if [ -f "$out/seed-$seed.json" ]; then files+=("$out/seed-$seed.json"); else failed=$((failed + 1)); fi
done
[ "${#files[@]}" -gt 0 ] || die "no evaluation succeeded (logs in $out)"
"$TRIPLINE_BIN" evaluate-summary ${markdown[@]+"${markdown[@]}"} "${files[@]}" | tee "$out/summary.txt"
[ "$holdout" = 1 ] && holdout_banner
if [ "$failed" -gt 0 ]; then
  die "$failed evaluation(s) failed: the summary pools ${#files[@]} run(s) only"
fi
