#!/usr/bin/env python3
"""Builds dashboards/grafana/dashboards/*.json from the tested SQL in dashboards/queries/.

Every panel, template variable and annotation of the dashboard runs one query file verbatim
(header comment and final `;` left out), with its `{name}` parameters written as Grafana
macros and template variables (PARAMS below). tests/dashboards_e2e.rs maps them back and checks
that each panel's SQL is one of the tested query files, so edit the .sql files and the layout
here, then run `python3 dashboards/grafana/build_dashboards.py` and commit the JSON it writes.
Standard library only.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
QUERIES = REPO / "dashboards" / "queries"
OUT = HERE / "dashboards"

# `{parameter}` in the query files -> what Grafana substitutes. The test maps these back.
PARAMS = {
    "{from}": "$__fromTime",  # toDateTime(<unix seconds>) of the time picker's start
    "{to}": "$__toTime",
    "{bucket_s}": "$__interval_s",
    "{db}": "${db}",
    "{api_key_id}": "${api_key_id}",
    "{project}": "${project}",
    "{model}": "${model}",
}

DATASOURCE = {"type": "grafana-clickhouse-datasource", "uid": "tripline-clickhouse"}
TIMESERIES, TABLE = 0, 1  # the plugin's query `format`


def sql_for_grafana(name: str) -> str:
    """The query file's SQL without its header comment and final `;`, parameters as macros."""
    lines = (QUERIES / f"{name}.sql").read_text(encoding="utf-8").splitlines()
    while lines and (not lines[0].strip() or lines[0].lstrip().startswith("--")):
        lines.pop(0)
    sql = "\n".join(lines).strip()
    if sql.endswith(";"):
        sql = sql[:-1].rstrip()
    for placeholder, grafana in PARAMS.items():
        sql = sql.replace(placeholder, grafana)
    unmapped = re.findall(r"(?<!\$)\{[A-Za-z_][A-Za-z0-9_]*\}", sql)
    if unmapped:
        sys.exit(f"build_dashboards: {name}.sql: no Grafana mapping for {', '.join(sorted(set(unmapped)))}")
    return sql


def summary(name: str) -> str:
    """The first sentence(s) of the query's header comment, for the panel description."""
    text = []
    for line in (QUERIES / f"{name}.sql").read_text(encoding="utf-8").splitlines():
        stripped = line.strip()
        if not stripped.startswith("--") or stripped == "--":
            break
        text.append(stripped[2:].strip())
    return " ".join(text)


def target(name: str, fmt: int) -> dict:
    return {
        "datasource": DATASOURCE,
        "editorType": "sql",
        "format": fmt,
        "queryType": "timeseries" if fmt == TIMESERIES else "table",
        "rawSql": sql_for_grafana(name),
        "refId": "A",
    }


def override(field: str, *properties: tuple[str, object]) -> dict:
    return {
        "matcher": {"id": "byName", "options": field},
        "properties": [{"id": key, "value": value} for key, value in properties],
    }


class Layout:
    def __init__(self) -> None:
        self.panels: list[dict] = []
        self.y = 0
        self.x = 0
        self.row_height = 0
        self.next_id = 1

    def _id(self) -> int:
        self.next_id += 1
        return self.next_id - 1

    def row(self, title: str) -> None:
        self._newline()
        self.panels.append({"type": "row", "title": title, "id": self._id(), "collapsed": False,
                            "gridPos": {"h": 1, "w": 24, "x": 0, "y": self.y}, "panels": []})
        self.y += 1

    def _newline(self) -> None:
        if self.x:
            self.y += self.row_height
            self.x = 0
            self.row_height = 0

    def panel(self, title: str, query: str, kind: str, w: int, h: int,
              unit: str | None = None, overrides: list[dict] | None = None,
              options: dict | None = None, custom: dict | None = None) -> None:
        if self.x + w > 24:
            self._newline()
        fmt = TIMESERIES if kind in ("timeseries", "barchart") else TABLE
        defaults: dict = {}
        if unit:
            defaults["unit"] = unit
        if custom:
            defaults["custom"] = custom
        self.panels.append({
            "type": kind,
            "title": title,
            "id": self._id(),
            "description": f"{summary(query)} Query: dashboards/queries/{query}.sql",
            "datasource": DATASOURCE,
            "gridPos": {"h": h, "w": w, "x": self.x, "y": self.y},
            "fieldConfig": {"defaults": defaults, "overrides": overrides or []},
            "options": options or {},
            "targets": [target(query, fmt)],
        })
        self.x += w
        self.row_height = max(self.row_height, h)


def query_variable(name: str, label: str, query: str) -> dict:
    sql = sql_for_grafana(query)
    return {
        "type": "query",
        "name": name,
        "label": label,
        "datasource": DATASOURCE,
        "definition": sql,
        "query": {"editorType": "sql", "rawSql": sql, "format": TABLE, "refId": name},
        "refresh": 2,  # on time range change
        "sort": 0,  # keep the query's order (biggest spender first)
        "multi": False,
        "includeAll": False,
        "current": {},
        "options": [],
        "hide": 0,
    }


def overview() -> dict:
    band = [
        override("baseline", ("custom.lineStyle", {"fill": "dash", "dash": [10, 10]}),
                 ("color", {"mode": "fixed", "fixedColor": "green"})),
        override("band_upper", ("custom.lineStyle", {"fill": "dash", "dash": [4, 4]}),
                 ("color", {"mode": "fixed", "fixedColor": "orange"})),
    ]
    fired = [
        override(field, ("custom.drawStyle", "points"), ("custom.pointSize", 12),
                 ("color", {"mode": "fixed", "fixedColor": color}))
        for field, color in (("alert_observed", "red"), ("alert_expected", "green"),
                             ("alert_upper", "orange"))
    ]
    table_options = {"showHeader": True, "cellHeight": "sm"}
    rates = ["share", "error_rate", "auth_error_rate", "rate_limited_rate", "client_error_rate",
             "server_error_rate", "retry_rate", "retry_share", "delivery_rate"]
    percent = [override(field, ("unit", "percentunit"), ("decimals", 1)) for field in rates]
    usd = [override(field, ("unit", "currencyUSD"))
           for field in ("spend_usd", "spend_this_hour", "spend_previous_hour", "rise_usd")]

    layout = Layout()
    layout.row("Spend")
    layout.panel("Spend of key ${api_key_id} against its baseline band", "spend_key", "timeseries",
                 12, 9, unit="currencyUSD", overrides=band + fired)
    layout.panel("Spend of project ${project} against its baseline band", "spend_project",
                 "timeseries", 12, 9, unit="currencyUSD", overrides=band + fired)
    layout.panel("Top spenders", "top_spenders", "table", 8, 9, overrides=percent + usd,
                 options=table_options)
    layout.panel("Fastest risers (last hour of the range vs the hour before)", "fastest_risers",
                 "table", 8, 9, overrides=usd + [override("rise_ratio", ("decimals", 2))],
                 options=table_options)
    layout.panel("Spend of model ${model} against its baseline band", "spend_model",
                 "timeseries", 8, 9, unit="currencyUSD", overrides=band)
    layout.row("Errors and retries")
    layout.panel("Upstream attempts per provider/model (amplification = attempts / successes)",
                 "provider_retries", "table", 24, 8,
                 overrides=percent + [override("amplification", ("decimals", 2)),
                                      override("latency_p50_ms", ("unit", "ms")),
                                      override("latency_p95_ms", ("unit", "ms"))],
                 options=table_options)
    layout.panel("Amplification per provider/model", "amplification_over_time", "timeseries",
                 12, 8, custom={"drawStyle": "line", "showPoints": "auto"})
    layout.panel("Gateway errors and client retries per model", "model_errors", "table", 12, 8,
                 overrides=percent + usd, options=table_options)
    layout.row("Where key ${api_key_id} is used from")
    layout.panel("Countries of ${api_key_id} (first seen)", "key_countries", "table", 12, 8,
                 overrides=[override("new_in_range", ("custom.cellOptions", {"type": "color-background"}),
                                     ("mappings", [{"type": "value", "options": {
                                         "1": {"text": "new", "color": "red"},
                                         "0": {"text": "known", "color": "transparent"}}}]))],
                 options=table_options)
    layout.panel("Networks (ASN) of ${api_key_id} (first seen)", "key_asns", "table", 12, 8,
                 overrides=[override("new_in_range", ("custom.cellOptions", {"type": "color-background"}),
                                     ("mappings", [{"type": "value", "options": {
                                         "1": {"text": "new", "color": "red"},
                                         "0": {"text": "known", "color": "transparent"}}}]))],
                 options=table_options)
    layout.row("Alerts")
    layout.panel("Alert timeline (state changes by detector and status)", "alert_timeline",
                 "timeseries", 12, 9,
                 custom={"drawStyle": "bars", "fillOpacity": 80, "stacking": {"mode": "normal"}})
    layout.panel("Alerts changed in the range or still firing", "alert_list", "table", 12, 9,
                 options=table_options)
    layout.row("Notifications")
    layout.panel("Notification delivery per receiver", "notification_health", "table", 24, 7,
                 overrides=percent + [override("p95_latency_ms", ("unit", "ms"))],
                 options=table_options)

    return {
        "uid": "tripline-overview",
        "title": "Tripline overview",
        "description": "LLM API spend, errors, retries, key access and alerts, from Tripline's "
                       "ClickHouse tables. Every query is a tested file in dashboards/queries/.",
        "tags": ["tripline"],
        "timezone": "utc",
        "editable": True,
        "graphTooltip": 1,
        "refresh": "1m",
        "schemaVersion": 39,
        "version": 1,
        "time": {"from": "now-6h", "to": "now"},
        "templating": {"list": [
            {"type": "textbox", "name": "db", "label": "Database", "query": "tripline",
             "current": {"text": "tripline", "value": "tripline"},
             "options": [{"selected": True, "text": "tripline", "value": "tripline"}], "hide": 0},
            query_variable("api_key_id", "API key", "var_api_keys"),
            query_variable("project", "Project", "var_projects"),
            query_variable("model", "Model", "var_models"),
        ]},
        "annotations": {"list": [
            {"builtIn": 1, "datasource": {"type": "grafana", "uid": "-- Grafana --"},
             "enable": True, "hide": True, "iconColor": "rgba(0, 211, 255, 1)",
             "name": "Annotations & Alerts", "type": "dashboard"},
            {"name": "First seen: countries and networks of ${api_key_id}", "enable": True,
             "iconColor": "purple", "datasource": DATASOURCE,
             "target": {**target("key_first_seen", TABLE), "refId": "FirstSeen"}},
        ]},
        "panels": layout.panels,
    }


def main() -> int:
    OUT.mkdir(parents=True, exist_ok=True)
    path = OUT / "tripline-overview.json"
    path.write_text(json.dumps(overview(), indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    print(f"wrote {path.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
