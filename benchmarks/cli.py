"""``python -m benchmarks``: run the scenarios, print the table, write the JSON."""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import shlex
import shutil
import signal
import subprocess
import sys
import time
import traceback
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from benchmarks import report, scenarios
from benchmarks.harness import PG_DEFAULT, ROOT, HarnessError, create_database, make_tmpdir

RESULTS = Path(__file__).resolve().parent / "results"


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description="Benchmarks of django-alarms against the raw-SQL ceiling (issue 6).",
    )
    parser.add_argument("--db", choices=("postgres", "sqlite"), default="postgres")
    size = parser.add_mutually_exclusive_group()
    size.add_argument(
        "--smoke",
        dest="mode",
        action="store_const",
        const="smoke",
        help="smallest sizes, under ~2 minutes: only shows that the harness works",
    )
    size.add_argument(
        "--quick",
        dest="mode",
        action="store_const",
        const="quick",
        help="the quick sizes of issue 6 (herd 10,000; default)",
    )
    size.add_argument(
        "--full",
        dest="mode",
        action="store_const",
        const="full",
        help="the full sizes (herd 100,000; 1,000,000 pending alarms)",
    )
    parser.add_argument("--runs", type=int, help="repetitions (default: 3 with --full, else 1)")
    parser.add_argument(
        "--scenario",
        action="append",
        choices=[*scenarios.SCENARIOS, "scale"],
        help="run only these (repeatable; the baselines always run)",
    )
    parser.add_argument(
        "--json",
        type=Path,
        help="where to write the results "
        "(default: benchmarks/results/<timestamp>-<db>-<mode>.json)",
    )
    parser.add_argument(
        "--pg-url",
        default=os.environ.get("BENCH_PG_URL", PG_DEFAULT),
        help=f"the PostgreSQL database to drop and create (default {PG_DEFAULT})",
    )
    parser.add_argument(
        "--profile",
        type=Path,
        metavar="DIR",
        help="attach py-spy to the herd (1 worker) and steady workers and write "
        "collapsed stacks to DIR (numbers of a profiled run are not comparable)",
    )
    parser.add_argument("--keep", action="store_true", help="keep the worker logs (tmp dir)")
    args = parser.parse_args(argv)
    args.mode = args.mode or "quick"
    if args.runs is None:
        args.runs = 3 if args.mode == "full" else 1
    if args.runs < 1:
        parser.error("--runs must be at least 1")
    chosen = args.scenario or list(scenarios.SCENARIOS)
    args.scenarios = [("memory" if s == "scale" else s) for s in chosen]
    return args


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    # SIGTERM (and SIGINT, which a shell's background job ignores) stop the run cleanly: the
    # scenario's `finally` stops its workers, and what was measured is still written.
    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGINT, _interrupt)
    began = time.time()
    tmpdir = make_tmpdir()
    command = "python -m benchmarks " + " ".join(
        shlex.quote(a) for a in (sys.argv[1:] if argv is None else argv)
    )
    print(f"{command}\nlogs: {tmpdir}", file=sys.stderr)
    meta: dict[str, Any] = {
        "command": command,
        "mode": args.mode,
        "runs": args.runs,
        "scenarios": args.scenarios,
        "started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "profiled": args.profile is not None,
        "machine": machine(),
        "code": code_identity(),
    }
    runs: list[list[report.Figure]] = []
    info: list[dict[str, Any]] = []
    failure = None
    db = None
    try:
        db = create_database(args.db, args.pg_url, tmpdir)
        meta["database"] = database_info(db)
        sizes = scenarios.SIZES[args.mode]
        meta["sizes"] = sizes.__dict__
        for run in range(1, args.runs + 1):
            ctx = scenarios.Context(
                db=db, sizes=sizes, mode=args.mode, run=run, runs=args.runs, profile=args.profile
            )
            runs.append(ctx.figures)  # filled as it goes: a failure still shows what was measured
            info.append(ctx.info)
            scenarios.baselines(ctx)
            for name in scenarios.SCENARIOS:
                if name in args.scenarios:
                    getattr(scenarios, name)(ctx)
    except HarnessError as exc:
        failure = str(exc)
    except KeyboardInterrupt:
        failure = "interrupted"
    except Exception:
        failure = traceback.format_exc()
    meta["seconds"] = round(time.time() - began, 1)
    meta["loadavg_end"] = _loadavg()
    vendor = db.vendor if db else ("postgresql" if args.db == "postgres" else "sqlite")
    summaries = report.summarise(runs)
    if summaries:
        title = (
            f"django-alarms benchmarks: {args.mode}, {db.label if db else args.db}, "
            f"{len(runs)} run(s), {meta['seconds']:.0f}s"
        )
        print(f"\n{title}\n")
        print(report.table(summaries, vendor, len(runs)))
        for run_info in info:
            dq = run_info.get("django_q")
            if isinstance(dq, str):
                print(f"\ndjango_q executor: {dq}")
                break
    path = args.json or RESULTS / (
        f"{datetime.now().strftime('%Y%m%d-%H%M%S')}-{args.db}-{args.mode}.json"
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    data = {
        "meta": meta,
        "summary": [s.as_json(vendor) for s in summaries],
        "runs": [[report.figure_json(f) for f in figs] for figs in runs],
        "info": info,
        "failure": failure,
        "markdown": report.markdown(summaries, vendor, len(runs)) if summaries else "",
    }
    path.write_text(json.dumps(data, indent=2, default=str))
    print(f"\nJSON: {path}", file=sys.stderr)
    if not args.keep and failure is None:
        shutil.rmtree(tmpdir, ignore_errors=True)
    if failure:
        print(f"\nHARNESS FAILURE (logs kept in {tmpdir}):\n{failure}", file=sys.stderr)
        return 1
    return 0


def _loadavg() -> list[float]:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return []


def machine() -> dict[str, Any]:
    info: dict[str, Any] = {
        "nproc": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "loadavg_start": _loadavg(),
    }
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                info["mem_gib"] = round(int(line.split()[1]) / 1024 / 1024, 1)
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                info["cpu"] = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        import django
        import psycopg

        info["django"] = django.get_version()
        info["psycopg"] = psycopg.__version__
    except ImportError:
        pass
    return info


def database_info(db: Any) -> dict[str, Any]:
    from django.db import connection

    with connection.cursor() as cursor:
        if db.vendor == "postgresql":
            cursor.execute("SHOW server_version")
            version = cursor.fetchone()[0]
        else:
            cursor.execute("select sqlite_version()")
            version = cursor.fetchone()[0]
    return {"vendor": db.vendor, "version": version, "url": db.url}


def code_identity() -> dict[str, Any]:
    """Which code was measured: the commit, whether the package differs from it, and a hash of
    the package's sources (other engineers change it while benchmarks run)."""
    out: dict[str, Any] = {}
    try:
        out["commit"] = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True
        ).stdout.strip()
        status = subprocess.run(
            ["git", "status", "--porcelain", "django_alarms"],
            cwd=ROOT,
            capture_output=True,
            text=True,
        ).stdout
        out["package_dirty"] = bool(status.strip())
    except OSError:
        pass
    digest = hashlib.sha256()
    for path in sorted((ROOT / "django_alarms").rglob("*.py")):
        digest.update(path.relative_to(ROOT).as_posix().encode())
        digest.update(path.read_bytes())
    out["package_sha256"] = digest.hexdigest()[:16]
    return out
