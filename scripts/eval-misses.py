#!/usr/bin/env python3
"""The missed incidents and false alerts of an `eval-seeds.sh` output folder, for DEV seeds.

    scripts/eval-misses.py DIR [--kind spend_ramp] [--all]

Reads DIR/seed-*.json (what `tripline evaluate --json` wrote) and prints, per seed, each missed
incident (kind, key, window, note) and each false alert (detector, labels, summary). `--all`
prints the found incidents too, with their time to detect. Never run it on a HOLD-OUT folder:
a hold-out seed whose misses were read is a DEV seed from then on (scripts/eval-seeds.sh).
"""
import argparse
import glob
import json
import os
import sys


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dir")
    parser.add_argument("--kind", help="only incidents of this kind (e.g. spend_ramp)")
    parser.add_argument("--all", action="store_true", help="print found incidents too")
    args = parser.parse_args()
    files = sorted(glob.glob(os.path.join(args.dir, "seed-*.json")))
    if not files:
        print(f"no seed-*.json in {args.dir}", file=sys.stderr)
        return 2
    for path in files:
        run = json.load(open(path))
        seed = run["run"].get("seed")
        if int(seed) >= 1000:
            print(f"{path}: seed {seed} is a HOLD-OUT seed; not read", file=sys.stderr)
            return 2
        start = min(i["start_ms"] for i in run["incidents"])
        print(f"== seed {seed}")
        for i in run["incidents"]:
            if args.kind and i["kind"] != args.kind:
                continue
            benign = i.get("benign_alerts")
            if i["detected"] and not args.all:
                continue
            if i["detector"] is None and not benign and not args.all:
                continue
            at = lambda ms: f"{(ms - start) / 60000:6.1f}"
            state = (
                f"found ttd {i['ttd_s']:.0f}s"
                if i["detected"]
                else (f"benign alerts {benign}" if i["detector"] is None else "MISSED")
            )
            print(
                f"  {i['kind']:22} {i['key']:28} start {at(i['start_ms'])} onset "
                f"{at(i['onset_ms'])} end {at(i['end_ms'])} min  {state}"
            )
            print(f"      {i['note']}")
        if not args.kind:
            for f in run["false_alerts"]:
                labels = ",".join(f"{k}={v}" for k, v in sorted(f["labels"].items()))
                print(f"  FALSE {f['detector']:14} {labels}\n      {f['summary']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
