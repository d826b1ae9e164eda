#!/usr/bin/env python3
"""What the demo (scripts/demo.sh) showed: each injected incident with the alert that answered it
and how long it took, the alerts that answered none, and where the notifications went.

    scripts/demo-report.py --truth truth.jsonl --clickhouse http://127.0.0.1:8123 \
        --database tripline_demo --sink-log alerts.jsonl

An alert answers an incident when it came from the incident's detector, within its window plus
two minutes, about its key (or, for key scanning, its client address), as `tripline evaluate`
scores them. Standard library only. Exit status 1 when an incident went unanswered.
"""

import argparse
import json
import sys
import urllib.parse
import urllib.request
from datetime import datetime, timezone

GRACE_MS = 120_000


def query(url: str, database: str, sql: str) -> list:
    """Rows of a ClickHouse query as dicts, over its HTTP interface."""
    params = urllib.parse.urlencode({"database": database, "query": sql + " FORMAT JSONEachRow"})
    with urllib.request.urlopen(f"{url}/?{params}", timeout=30) as answer:
        return [json.loads(line) for line in answer.read().decode().splitlines() if line]


def clock(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, timezone.utc).strftime("%H:%M:%S")


def touches(alert: dict, incident: dict, projects: dict) -> bool:
    """Whether the alert, of any detector, is about the incident's key (or address, or the key's
    project, or all keys' spend) within its window plus grace: another view of the same
    incident, as `tripline evaluate` counts them."""
    labels = alert["labels"]
    if not incident["start_ms"] <= alert["at_ms"] <= incident["end_ms"] + GRACE_MS:
        return False
    if "api_key_id" in labels or "client_ip" in labels:
        return (labels.get("api_key_id") or labels.get("client_ip")) == incident["key"]
    if "project" in labels:
        return projects.get(incident["key"]) == labels["project"]
    # Overall spend (label `scope`) during an incident: its spend is part of everyone's.
    return "scope" in labels


def answers(alert: dict, incident: dict) -> bool:
    """Whether the alert is the one the incident's own detector owes."""
    return alert["detector"] == incident["detector"] and touches(alert, incident, {})


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--truth", required=True)
    parser.add_argument("--clickhouse", required=True)
    parser.add_argument("--database", required=True)
    parser.add_argument("--sink-log", required=True)
    args = parser.parse_args()

    with open(args.truth, encoding="utf-8") as f:
        truth = [json.loads(line) for line in f if line.strip()]
    alerts = query(
        args.clickhouse,
        args.database,
        "SELECT toUnixTimestamp(emitted_at) * 1000 AS at_ms, detector, toString(severity) AS "
        "severity, summary, alert_json FROM alerts WHERE status = 'firing' ORDER BY emitted_at",
    )
    for alert in alerts:
        alert["at_ms"] = int(alert["at_ms"])
        alert["labels"] = json.loads(alert.pop("alert_json")).get("labels", {})

    print("Incidents injected, and the alert that answered each:")
    answered, missed = set(), 0
    for incident in truth:
        if incident.get("detector") is None:
            continue  # a benign look-alike: the demo injects none
        first = next((a for a in alerts if answers(a, incident)), None)
        head = f"  {incident['kind']:<30} {incident['key']:<16} from {clock(incident['onset_ms'])}"
        if first is None:
            missed += 1
            print(f"{head}  NOT FOUND by {incident['detector']}")
            continue
        answered.add(id(first))
        after_s = max(0, first["at_ms"] - incident["onset_ms"]) // 1000
        print(f"{head}  {first['detector']} ({first['severity']}) after {after_s} s")
        print(f"      {first['summary']}")
    # A key alert's labels carry its project: enough to tie a project's alert to its key.
    projects = {
        a["labels"]["api_key_id"]: a["labels"]["project"]
        for a in alerts
        if "api_key_id" in a["labels"] and "project" in a["labels"]
    }
    rest = [a for a in alerts if id(a) not in answered]
    seen_too = [a for a in rest if any(touches(a, i, projects) for i in truth)]
    unexplained = [a for a in rest if not any(touches(a, i, projects) for i in truth)]
    for title, group in [
        ("The same incidents seen by other detectors or again", seen_too),
        ("Alerts no incident explains (false alarms)", unexplained),
    ]:
        print(f"\n{title}: {len(group)}")
        for a in group:
            print(f"  {clock(a['at_ms'])} {a['detector']} ({a['severity']}): {a['summary']}")

    rows = query(
        args.clickhouse,
        args.database,
        "SELECT receiver, toString(status) AS status, count() AS notifications, "
        "sum(alerts) AS alerts FROM notifications GROUP BY receiver, status ORDER BY receiver",
    )
    print("\nNotifications:")
    for row in rows:
        print(
            f"  {row['receiver']}: {row['notifications']} {row['status']}, "
            f"{row['alerts']} alerts in them"
        )
    if not rows:
        print("  none yet")
    try:
        with open(args.sink_log, encoding="utf-8") as f:
            received = sum(1 for line in f if line.strip())
    except FileNotFoundError:
        received = 0
    print(f"  the demo's webhook sink verified and kept {received} ({args.sink_log})")
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
