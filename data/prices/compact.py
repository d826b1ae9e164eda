#!/usr/bin/env python3
"""Compact LiteLLM's model_prices_and_context_window.json into data/prices/prices.json.

Usage: python3 compact.py INPUT.json OUTPUT.json [--litellm-version 1.110.2]

Keeps every entry (except "sample_spec") that has input_cost_per_token or
output_cost_per_token, and for each keeps only:
  provider   = litellm_provider
  mode       = mode, or null
  input      = input_cost_per_token, or 0   (USD per token)
  output     = output_cost_per_token, or 0  (USD per token)
  cache_read = cache_read_input_token_cost, or null (USD per token)
Models are sorted by name and written one per line; numbers are written exactly as
Python's json module reads them (shortest round-trip form). Stdlib only.
"""
import argparse
import hashlib
import json


def compact(src):
    models = {}
    for name, entry in src.items():
        if name == "sample_spec" or not isinstance(entry, dict):
            continue
        if "input_cost_per_token" not in entry and "output_cost_per_token" not in entry:
            continue
        models[name] = {
            "provider": entry.get("litellm_provider"),
            "mode": entry.get("mode"),
            "input": entry.get("input_cost_per_token") or 0,
            "output": entry.get("output_cost_per_token") or 0,
            "cache_read": entry.get("cache_read_input_token_cost"),
        }
    return models


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("input")
    ap.add_argument("output")
    ap.add_argument("--litellm-version", default="1.110.2")
    args = ap.parse_args()

    with open(args.input, "rb") as f:
        raw = f.read()
    sha = hashlib.sha256(raw).hexdigest()
    models = compact(json.loads(raw))
    source = (
        f"litellm {args.litellm_version} model_prices_and_context_window.json, "
        f"sha256 {sha} (MIT, Copyright (c) 2023 Berri AI)"
    )

    def dump(v):
        return json.dumps(v, ensure_ascii=False, separators=(",", ":"))

    lines = [f'{dump(n)}:{dump(models[n])}' for n in sorted(models)]
    with open(args.output, "w", encoding="utf-8", newline="\n") as f:
        f.write('{"source":' + dump(source) + ',"models":{\n')
        f.write(",\n".join(lines))
        f.write("\n}}\n")
    print(f"{len(models)} models -> {args.output}")


if __name__ == "__main__":
    main()
