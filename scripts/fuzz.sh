#!/usr/bin/env bash
# Runs the cargo-fuzz targets in fuzz/ for a while each (not part of CI: minutes per target).
#
#   scripts/fuzz.sh [seconds per target, default 300] [target ...]
#
# Installs cargo-fuzz into $TRIPLINE_CACHE on first use. libFuzzer needs nightly flags; the one
# stable toolchain here accepts them with RUSTC_BOOTSTRAP=1. Crashes land in
# fuzz/artifacts/<target>/ and the corpus in fuzz/corpus/<target>/ (both ignored by git).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
# shellcheck source=scripts/env.sh
. scripts/env.sh

seconds="${1:-300}"
shift || true
targets=("$@")
[ "${#targets[@]}" -gt 0 ] || targets=(ingest_message litellm_payload)

fuzz_root="$TRIPLINE_CACHE/cargo-fuzz"
if [ ! -x "$fuzz_root/bin/cargo-fuzz" ]; then
  echo "fuzz: installing cargo-fuzz into $fuzz_root"
  cargo install cargo-fuzz --locked --root "$fuzz_root" </dev/null
fi
export PATH="$fuzz_root/bin:$PATH"
export RUSTC_BOOTSTRAP=1

# Seeds: real messages from the tests, so the fuzzer starts from valid events.
mkdir -p fuzz/corpus/ingest_message fuzz/corpus/litellm_payload
printf '%s' '{"event_id":"e1","ts":1795687100000,"api_key_id":"key-1","model":"gpt-4o","status":200,"prompt_tokens":10,"client_ip":"8.8.8.8","user_agent":"Bearer sk-proj-AbCdEfGhIjKlMnOpQrStUvWx1234"}' \
  >fuzz/corpus/ingest_message/seed-gateway.json
head -n 1 collector/tests/fixtures/litellm_generic_api_sample.ndjson >fuzz/corpus/litellm_payload/seed-sample.json

status=0
for target in "${targets[@]}"; do
  echo "fuzz: $target for ${seconds}s"
  if ! cargo fuzz run --fuzz-dir fuzz "$target" "fuzz/corpus/$target" -- \
    -max_total_time="$seconds" -max_len=70000 -print_final_stats=1; then
    echo "fuzz: $target FOUND A CRASH (see fuzz/artifacts/$target/)"
    status=1
  fi
done
exit "$status"
