#!/usr/bin/env python3
"""Check Tripline's ClickHouse SQL against the current ClickHouse engine (chdb, in-process).

CI's server is ClickHouse 18.16; users run 24.x-26.x. The Rust tests prove the SQL on 18.16,
this script proves it on the current engine (chdb-core). Every `.sql` file under the given
directories (default: dashboards/migrations/) is run in name order, in a throwaway chdb session,
statement by statement. Statements end with `;` at the end of a line; whole-line `--` comments
and blank lines are skipped; `{db}` is replaced by the database name (--db).

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


def one_line(sql: str, width: int = 90) -> str:
    flat = re.sub(r"\s+", " ", sql).strip()
    return flat if len(flat) <= width else flat[: width - 3] + "..."


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("paths", nargs="*", type=Path, default=[DEFAULT_DIR],
                        help=f"directories or .sql files (default: {DEFAULT_DIR.relative_to(REPO)})")
    parser.add_argument("--db", default="tripline_ddl_check", help="value of {db} (default: %(default)s)")
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

    work = [(f, split_statements(f.read_text(encoding="utf-8").replace("{db}", args.db))) for f in files]
    creates_db = any(re.match(r"(?is)\s*create\s+database\b", sql) for _, stmts in work for _, sql in stmts)

    ok = failed = 0
    with tempfile.TemporaryDirectory(prefix="tripline-chdb-") as tmp:
        session = chdb_session.Session(tmp)
        try:
            print(f"check_ddl_chdb: ClickHouse {chdb.engine_version} (chdb {chdb.__version__}), database {args.db}")
            if not creates_db:
                session.query(f"CREATE DATABASE IF NOT EXISTS {args.db}")
            for path, statements in work:
                try:
                    shown = path.relative_to(REPO)
                except ValueError:
                    shown = path
                for line, sql in statements:
                    try:
                        session.query(sql, "TSV")
                    except Exception as err:  # chdb raises ChdbError (a RuntimeError) with the server's message
                        failed += 1
                        print(f"FAIL {shown}:{line}: {one_line(sql)}")
                        for msg_line in str(err).strip().splitlines():
                            print(f"       {msg_line}")
                    else:
                        ok += 1
                        print(f"OK   {shown}:{line}: {one_line(sql)}")
        finally:
            session.close()

    print(f"check_ddl_chdb: {ok} statements ok, {failed} failed, in {len(files)} files")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
