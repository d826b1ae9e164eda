#!/usr/bin/env python3
"""Check Tripline's ClickHouse SQL against the current ClickHouse engine (chdb, in-process).

CI's server is ClickHouse 18.16; users run 24.x-26.x. The Rust tests prove the SQL on 18.16,
this script proves it on the current engine (chdb-core). Every `.sql` file under the given
directories (default: dashboards/migrations/) is run in name order, in a throwaway chdb session,
statement by statement. Statements end with `;` at the end of a line; whole-line `--` comments
and blank lines are skipped; `{db}` is replaced by the database name (--db).

Then the dashboard queries (every `.sql` file in --queries, default dashboards/queries/; skip
them with --no-queries) run against that migrated schema, after a few seed rows went in through
the materialized views: their `{name}` parameters are replaced by the test values in
QUERY_PARAMS, and any other `{name}` left in a query is a failure. A query only has to be
accepted (an empty result would do); the row count is printed. Tables the dashboard queries
read before a migration creates them (PLANNED_TABLES) are created from their planned columns
when the migrations did not create them, and reported.

With --parse-only, the statements of the given files are only parsed (`formatQuery`), not run:
for DDL chdb cannot execute, such as the cluster form of the migrations (`ON CLUSTER`,
Replicated engines: no ZooKeeper in-process), printed by `tripline migrate --print`.

Prints OK/FAIL per statement; exits 1 if any statement failed, 2 if there was nothing to check.
Run it with the venv from scripts/install.sh: `$TRIPLINE_PYTHON scripts/check_ddl_chdb.py`.
"""

from __future__ import annotations

import argparse
import re
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DEFAULT_DIR = REPO / "dashboards" / "migrations"
QUERIES_DIR = REPO / "dashboards" / "queries"

# Test values of the dashboard queries' parameters ({db} comes from --db). Times are DateTime
# expressions, as Grafana's $__fromTime / $__toTime are (tests/dashboards_e2e.rs uses the same).
QUERY_PARAMS = {
    "from": "toDateTime('2026-11-26 10:00:00', 'UTC')",
    "to": "toDateTime('2026-11-26 12:00:00', 'UTC')",
    "api_key_id": "key-a",
    "project": "search",
    "model": "gpt-4o-mini",
    "bucket_s": "60",
}

# Tables the dashboard queries read that no migration creates yet, with their planned columns
# (created only if the migrations did not). `notifications` is the alerting issue's delivery log.
PLANNED_TABLES = {
    "notifications": """CREATE TABLE IF NOT EXISTS {db}.notifications
(
    sent_at DateTime('UTC'),
    receiver String,
    status Enum8('delivered' = 1, 'retry' = 2, 'failed' = 3),
    attempts UInt16,
    latency_ms UInt32,
    error String
)
ENGINE = MergeTree
ORDER BY (receiver, sent_at)""",
}

# A little traffic so the queries run over real rows (the views fill the rollups).
SEED = [
    """INSERT INTO {db}.gateway_requests (event_id, ts, ts_ms, api_key_id, project, provider, model,
        status, cost_usd, client_ip, client_country, client_asn, client_as_org, attempt)
    VALUES ('s1', '2026-11-26 10:00:10', 1795687210000, 'key-a', 'search', 'openai', 'gpt-4o-mini',
            200, 0.5, '198.51.100.1', 'DE', 3320, 'DTAG', 1),
           ('s2', '2026-11-26 11:30:10', 1795692610000, 'key-a', 'search', 'openai', 'gpt-4o-mini',
            429, 1.0, '198.51.100.2', 'US', 15169, 'GOOGLE', 2)""",
    """INSERT INTO {db}.provider_attempts (event_id, ts, ts_ms, request_id, api_key_id, provider,
        model, attempt, status)
    VALUES ('p1', '2026-11-26 10:00:10', 1795687210000, 'r1', 'key-a', 'openai', 'gpt-4o-mini', 1, 429),
           ('p2', '2026-11-26 10:00:11', 1795687211000, 'r1', 'key-a', 'openai', 'gpt-4o-mini', 2, 200)""",
    """INSERT INTO {db}.alerts (emitted_at, fingerprint, detector, status, severity, api_key_id,
        project, entity, observed, expected, upper, score, window_start, window_end, starts_at, summary)
    VALUES ('2026-11-26 10:00:30', 'fp-1', 'spend_spike', 'firing', 'warning', 'key-a', 'search',
            'api_key_id=key-a,project=search', 5, 0.5, 1.5, 0.99, '2026-11-26 10:00:00',
            '2026-11-26 10:01:00', '2026-11-26 10:00:30', 'key key-a spent $5.00 in a minute')""",
    """INSERT INTO {db}.notifications (sent_at, receiver, status, attempts, latency_ms, error)
    VALUES ('2026-11-26 10:01:00', 'slack-oncall', 'delivered', 1, 120, ''),
           ('2026-11-26 10:02:00', 'webhook-ops', 'failed', 5, 3000, 'HTTP 503')""",
]


def split_statements(text: str) -> list[tuple[int, str]]:
    """Returns (first line number, statement without the final `;`) pairs."""
    statements: list[tuple[int, str]] = []
    current: list[str] = []
    start = 0
    for number, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        if not stripped or stripped.startswith("--"):
            continue
        if not current:
            start = number
        current.append(line.rstrip())
        if stripped.endswith(";"):
            sql = "\n".join(current).rstrip()[:-1].rstrip()
            if sql:
                statements.append((start, sql))
            current = []
    if current:  # a last statement without its `;`
        statements.append((start, "\n".join(current).strip()))
    return statements


def sql_files(paths: list[Path]) -> list[Path]:
    files: list[Path] = []
    for path in paths:
        if path.is_file():
            files.append(path)
        elif path.is_dir():
            files.extend(sorted(path.rglob("*.sql"), key=lambda p: p.relative_to(path).as_posix()))
    return files


def substitute(sql: str, params: dict[str, str]) -> tuple[str, list[str]]:
    """Replaces `{name}` placeholders; returns the SQL and the names that had no value."""
    missing: list[str] = []

    def value(match: re.Match[str]) -> str:
        name = match.group(1)
        if name in params:
            return params[name]
        missing.append(name)
        return match.group(0)

    return re.sub(r"\{([A-Za-z_][A-Za-z0-9_]*)\}", value, sql), missing


def one_line(sql: str, width: int = 90) -> str:
    flat = re.sub(r"\s+", " ", sql).strip()
    return flat if len(flat) <= width else flat[: width - 3] + "..."


def shown(path: Path) -> Path:
    try:
        return path.relative_to(REPO)
    except ValueError:
        return path


def parse_only(files: list[Path], chdb_session) -> int:
    """Parses each statement with the current engine's parser (`formatQuery`): 0 when all parse."""
    ok = failed = 0
    with tempfile.TemporaryDirectory(prefix="tripline-chdb-") as tmp:
        session = chdb_session.Session(tmp)
        try:
            for path in files:
                for line, sql in split_statements(path.read_text(encoding="utf-8")):
                    literal = "'" + sql.replace("\\", "\\\\").replace("'", "\\'") + "'"
                    try:
                        session.query(f"SELECT formatQuery({literal})", "TSV")
                    except Exception as err:
                        failed += 1
                        print(f"FAIL {shown(path)}:{line}: {one_line(sql)}")
                        print(f"       {one_line(str(err), 600)}")
                        continue
                    ok += 1
                    print(f"OK   {shown(path)}:{line}: parses: {one_line(sql, 80)}")
        finally:
            session.close()
    print(f"check_ddl_chdb: {ok} statements parse, {failed} do not, in {len(files)} files")
    return 1 if failed else 0 if ok else 2


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("paths", nargs="*", type=Path, default=[DEFAULT_DIR],
                        help=f"directories or .sql files (default: {DEFAULT_DIR.relative_to(REPO)})")
    parser.add_argument("--db", default="tripline_ddl_check", help="value of {db} (default: %(default)s)")
    parser.add_argument("--queries", type=Path, default=QUERIES_DIR,
                        help=f"dashboard queries to run after the migrations (default: {QUERIES_DIR.relative_to(REPO)})")
    parser.add_argument("--no-queries", action="store_true", help="check the migrations only")
    parser.add_argument("--parse-only", action="store_true",
                        help="parse the statements of the given files on the current engine, run nothing")
    args = parser.parse_args()

    try:
        import chdb
        from chdb import session as chdb_session
    except ImportError:
        print("check_ddl_chdb: chdb is not installed: run scripts/install.sh and use $TRIPLINE_PYTHON",
              file=sys.stderr)
        return 2

    files = sql_files(args.paths)
    if not files:
        print(f"check_ddl_chdb: no .sql files under {' '.join(map(str, args.paths))}", file=sys.stderr)
        return 2

    if args.parse_only:
        return parse_only(files, chdb_session)

    work = [(f, split_statements(f.read_text(encoding="utf-8").replace("{db}", args.db))) for f in files]
    creates_db = any(re.match(r"(?is)\s*create\s+database\b", sql) for _, stmts in work for _, sql in stmts)

    queries = [] if args.no_queries or not args.queries.is_dir() else sorted(args.queries.glob("*.sql"))
    params = {**QUERY_PARAMS, "db": args.db}

    ok = failed = 0
    with tempfile.TemporaryDirectory(prefix="tripline-chdb-") as tmp:
        session = chdb_session.Session(tmp)

        def run(label: str, sql: str, count_rows: bool = False) -> bool:
            nonlocal ok, failed
            try:
                result = session.query(sql, "TSV")
            except Exception as err:  # chdb raises ChdbError (a RuntimeError) with the server's message
                failed += 1
                print(f"FAIL {label}: {one_line(sql)}")
                for msg_line in str(err).strip().splitlines():
                    # the server quotes the whole statement back: keep the start and the reason
                    shown_line = msg_line if len(msg_line) <= 600 else f"{msg_line[:300]} ... {msg_line[-250:]}"
                    print(f"       {shown_line}")
                return False
            ok += 1
            rows = f" ({len(result.bytes().splitlines())} rows)" if count_rows else ""
            print(f"OK   {label}: {one_line(sql, 90 - len(rows))}{rows}")
            return True

        try:
            print(f"check_ddl_chdb: ClickHouse {chdb.engine_version} (chdb {chdb.__version__}), database {args.db}")
            if not creates_db:
                session.query(f"CREATE DATABASE IF NOT EXISTS {args.db}")
            for path, statements in work:
                for line, sql in statements:
                    run(f"{shown(path)}:{line}", sql)
            if queries:
                for table, ddl in PLANNED_TABLES.items():
                    exists = session.query(f"EXISTS TABLE {args.db}.{table}", "TSV").bytes().strip()
                    if exists != b"1":
                        print(f"note: no migration creates {args.db}.{table} yet: created from its planned columns")
                        run(f"planned table {table}", ddl.replace("{db}", args.db))
                for index, sql in enumerate(SEED, start=1):
                    run(f"seed row set {index}", sql.replace("{db}", args.db))
            for path in queries:
                for line, sql in split_statements(path.read_text(encoding="utf-8")):
                    sql, missing = substitute(sql, params)
                    if missing:
                        failed += 1
                        print(f"FAIL {shown(path)}:{line}: parameters without a test value: "
                              f"{', '.join(sorted(set(missing)))} (add them to QUERY_PARAMS)")
                        continue
                    run(f"{shown(path)}:{line}", sql, count_rows=True)
        finally:
            session.close()

    print(f"check_ddl_chdb: {ok} statements ok, {failed} failed, in {len(files) + len(queries)} files")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
