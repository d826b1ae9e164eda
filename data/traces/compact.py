#!/usr/bin/env python3
"""Compact the real LLM traces in ../shared/traces into data/traces/.

Usage: python3 compact.py SHARED_TRACES_DIR OUTPUT_DIR     (Python 3 stdlib only)

Writes:
  azure_code.csv, azure_conv.csv  offset_ms,prompt_tokens,completion_tokens
  mooncake.csv                    offset_ms,prompt_tokens,completion_tokens
  servegen_clients.csv            client_id,share        (language/m-large only)
  servegen_hour_of_week.csv       client_id,hour_of_week,rate_req_per_s
and copies the three licence files. See README.md beside this script.
"""
import csv
import json
import os
import shutil
import sys
from collections import defaultdict
from datetime import datetime

SERVEGEN_CATEGORY = "language/m-large"  # the only category whose per-client traces are in shared/
LICENCES = (
    "LICENSE-azure-CC-BY-4.0.txt",
    "LICENSE-mooncake-Apache-2.0.txt",
    "LICENSE-servegen-Apache-2.0.txt",
)
REQ_HEADER = ["offset_ms", "prompt_tokens", "completion_tokens"]


def write_csv(path, header, rows):
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(header)
        w.writerows(rows)
    return len(rows)


def azure_ticks(ts):
    """'2023-11-16 18:17:03.9799600' -> integer count of 100 ns ticks (exact, no float)."""
    day_time, frac = ts.split(".")
    base = datetime.strptime(day_time, "%Y-%m-%d %H:%M:%S")
    secs = (base - datetime(1970, 1, 1)).days * 86400 + (base - datetime(1970, 1, 1)).seconds
    return secs * 10_000_000 + int(frac.ljust(7, "0")[:7])


def azure(src, dst):
    with open(src, newline="", encoding="utf-8") as f:
        rows = [
            (azure_ticks(r["TIMESTAMP"]), int(r["ContextTokens"]), int(r["GeneratedTokens"]))
            for r in csv.DictReader(f)
        ]
    rows.sort(key=lambda r: r[0])
    t0 = rows[0][0]
    # offset_ms = whole milliseconds since the first request (floor of 100 ns ticks / 10^4)
    return write_csv(dst, REQ_HEADER, [((t - t0) // 10_000, p, c) for t, p, c in rows])


def mooncake(src, dst):
    rows = []
    with open(src, encoding="utf-8") as f:
        for line in f:
            if line.strip():
                r = json.loads(line)
                rows.append((int(r["timestamp"]), int(r["input_length"]), int(r["output_length"])))
    rows.sort(key=lambda r: r[0])
    t0 = rows[0][0]
    return write_csv(dst, REQ_HEADER, [(t - t0, p, c) for t, p, c in rows])


def servegen_shares(src, dst):
    with open(src, newline="", encoding="utf-8") as f:
        rows = [r for r in csv.DictReader(f) if r["category_model"] == SERVEGEN_CATEGORY]
    rows.sort(key=lambda r: (-float(r["share"]), int(r["client_id"])))
    write_csv(dst, ["client_id", "share"], [(int(r["client_id"]), r["share"]) for r in rows])
    return [int(r["client_id"]) for r in rows]


def servegen_hour_of_week(trace_dir, client_ids, dst):
    out = []
    for cid in sorted(client_ids):
        path = os.path.join(trace_dir, f"chunk-{cid}-trace.csv")
        sums = defaultdict(float)
        counts = defaultdict(int)
        with open(path, newline="", encoding="utf-8") as f:
            for row in csv.reader(f):  # no header: window_start_s,rate_req_per_s,cv,dist,p1,p2
                if not row or not row[0].strip():
                    continue
                start = int(float(row[0]))
                bucket = (start // 3600) % 168
                sums[bucket] += float(row[1])
                counts[bucket] += 1
        for h in range(168):
            if counts[h]:
                out.append((cid, h, "%.6g" % (sums[h] / counts[h])))
            else:
                print(f"warning: client {cid} has no window in hour_of_week {h}", file=sys.stderr)
    return write_csv(dst, ["client_id", "hour_of_week", "rate_req_per_s"], out)


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    src, out = sys.argv[1], sys.argv[2]
    os.makedirs(out, exist_ok=True)
    n = azure(os.path.join(src, "AzureLLMInferenceTrace_code.csv"), os.path.join(out, "azure_code.csv"))
    print(f"azure_code.csv: {n} rows")
    n = azure(os.path.join(src, "AzureLLMInferenceTrace_conv.csv"), os.path.join(out, "azure_conv.csv"))
    print(f"azure_conv.csv: {n} rows")
    n = mooncake(os.path.join(src, "mooncake_conversation_trace.jsonl"), os.path.join(out, "mooncake.csv"))
    print(f"mooncake.csv: {n} rows")
    ids = servegen_shares(
        os.path.join(src, "servegen_client_shares.csv"), os.path.join(out, "servegen_clients.csv")
    )
    print(f"servegen_clients.csv: {len(ids)} rows")
    n = servegen_hour_of_week(
        os.path.join(src, "servegen_m_large"), ids, os.path.join(out, "servegen_hour_of_week.csv")
    )
    print(f"servegen_hour_of_week.csv: {n} rows")
    for name in LICENCES:
        shutil.copyfile(os.path.join(src, name), os.path.join(out, name))
        print(f"copied {name}")


if __name__ == "__main__":
    main()
