#!/usr/bin/env python3
"""Build data/geo/asn.mmdb from the CSV files of the npm package @ip-location-db/asn.

The ip-location-db project no longer publishes an ASN *mmdb* package on npm
(@ip-location-db/asn-mmdb answers 404), but its CSV package @ip-location-db/asn
(CC BY 4.0: RouteViews, DB-IP, NRO) is there. This script turns those CSVs into an
IPv6 MaxMind DB (IPv4 stored in ::/96, as MaxMind readers expect) whose records match
the upstream asn-mmdb layout and MaxMind's GeoLite2-ASN field names:

    {"autonomous_system_number": <uint32>, "autonomous_system_organization": <string>}

Usage (needs the PyPI package mmdb-writer, which pulls in netaddr):

    python3 -m venv /tmp/v && /tmp/v/bin/pip install mmdb-writer==0.2.7
    cd /tmp && npm pack @ip-location-db/asn@2.3.2026061719 && tar xzf ip-location-db-asn-*.tgz
    /tmp/v/bin/python build_asn_mmdb.py /tmp/package asn.mmdb

Overlapping CSV rows (one in 2.3.2026061719: 214.95.0.0-215.0.255.255 AS749 overlaps
215.0.0.0-215.1.3.255 AS721) are resolved by keeping the earlier row and clipping the
later one.
"""
import csv
import ipaddress
import json
import os
import sys
from collections import defaultdict

from mmdb_writer import MMDBWriter
from netaddr import IPSet, iprange_to_cidrs


def read_ranges(path, version):
    """Yield (start_int, end_int, asn, org) sorted by start, overlaps clipped."""
    rows = []
    with open(path, newline="", encoding="utf-8") as f:
        for start, end, asn, org in csv.reader(f):
            a = int(ipaddress.ip_address(start))
            b = int(ipaddress.ip_address(end))
            rows.append((a, b, int(asn), org))
    rows.sort()
    prev_end = -1
    clipped = 0
    for a, b, asn, org in rows:
        if a <= prev_end:
            clipped += 1
            a = prev_end + 1
            if a > b:
                continue
        prev_end = b
        yield a, b, asn, org
    if clipped:
        print(f"{os.path.basename(path)}: clipped {clipped} overlapping row(s)", file=sys.stderr)


def main():
    if len(sys.argv) != 3:
        sys.exit("usage: build_asn_mmdb.py <extracted npm package dir> <output.mmdb>")
    pkg, out = sys.argv[1], sys.argv[2]
    with open(os.path.join(pkg, "package.json"), encoding="utf-8") as f:
        meta = json.load(f)
    groups = defaultdict(list)  # (asn, org) -> list of CIDRs
    n = 0
    for fname, version in (("asn-ipv4.csv", 4), ("asn-ipv6.csv", 6)):
        for a, b, asn, org in read_ranges(os.path.join(pkg, fname), version):
            lo = str(ipaddress.ip_address(a))
            hi = str(ipaddress.ip_address(b))
            groups[(asn, org)].extend(iprange_to_cidrs(lo, hi))
            n += 1
    print(f"{n} ranges, {len(groups)} distinct (asn, org) records", file=sys.stderr)
    writer = MMDBWriter(
        ip_version=6,
        ipv4_compatible=True,
        database_type="ip-location-db-asn",
        languages=[],
        description={
            "en": f"{meta['name']} {meta['version']} CSV converted to MMDB "
            "(CC BY 4.0: RouteViews, DB-IP, NRO)"
        },
        int_type="u32",
    )
    for (asn, org), cidrs in sorted(groups.items()):
        writer.insert_network(
            IPSet(cidrs),
            {"autonomous_system_number": asn, "autonomous_system_organization": org},
        )
    writer.to_db_file(out)
    print(f"wrote {out} ({os.path.getsize(out)} bytes)", file=sys.stderr)


if __name__ == "__main__":
    main()
