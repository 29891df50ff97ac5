"""``python -m tests.chaos``: run the battery (or one scenario) and print its table.

Each scenario runs in a child process (``tests.chaos.one``) on a fresh database: SQLite in WAL
mode in a temporary directory, ``alarms_chaos_<pid>`` on the suite's PostgreSQL (5432), or the
same on a cluster the battery creates for itself on a free port from 5499 on (``pgown``,
dropped at the end). Exits non-zero when any scenario lost an alarm, left one stuck, delivered
one early, duplicated one without explanation or beyond its bound, left an audit gap, lost a
worker it did not kill, or could not run.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from tests.chaos.scenarios import FULL, SCENARIOS, SMOKE
from tests.chaos.supervisor import OwnCluster, database_name

COLUMNS = [
    ("scenario", 12),
    ("db", 8),
    ("alarms", 6),
    ("calls", 6),
    ("faults", 6),
    ("lost", 4),
    ("early", 5),
    ("dup expl/bound", 14),
    ("unexpl", 6),
    ("stuck", 5),
    ("gaps", 4),
    ("stale", 5),
    ("p99 late ms", 11),
    ("resume s", 16),
    ("ok", 3),
]


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m tests.chaos", description=__doc__)
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--smoke", action="store_true", help="the small subset CI runs (default)")
    mode.add_argument("--full", action="store_true", help="every scenario, larger sizes")
    parser.add_argument("--scenario", action="append", choices=sorted(SCENARIOS))
    parser.add_argument("--db", choices=["sqlite", "postgres", "pgown"])
    parser.add_argument("--seed", type=int, help="default: random, printed")
    parser.add_argument("--json", type=Path, help="write every scenario's report here")
    parser.add_argument("--keep", action="store_true", help="keep the run's logs and ledgers")
    return parser.parse_args(argv)


def plan(args: argparse.Namespace) -> list[tuple[str, str]]:
    base = FULL if args.full else SMOKE
    if args.scenario:
        chosen = []
        for name in args.scenario:
            dbs = [db for scenario, db in base if scenario == name] or ["postgres"]
            for db in [args.db] if args.db else dbs:
                chosen.append((name, "pgown" if name == "outage" else db))
        return chosen
    if args.db:
        return [(name, db) for name, db in base if db == args.db]
    return list(base)


def _exit(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)


def main(argv: list[str] | None = None) -> int:
    signal.signal(signal.SIGTERM, _exit)
    args = parse(argv)
    seed = args.seed if args.seed is not None else random.randrange(10**6)
    size = "full" if args.full else "smoke"
    todo = plan(args)
    print(f"fault battery: {size}, seed {seed}, {len(todo)} scenario(s)", flush=True)
    base = Path(tempfile.mkdtemp(prefix="alarms-chaos-"))
    tag = str(os.getpid())
    cluster = OwnCluster(f"chaos{tag}") if any(db == "pgown" for _, db in todo) else None
    results: list[dict[str, Any]] = []
    started = time.monotonic()
    try:
        if cluster is not None:
            cluster.create()
        for scenario, db in todo:
            results.append(run_one(base, scenario, db, seed, size, tag, cluster))
            print(row(results[-1]), flush=True)
    finally:
        if cluster is not None:
            cluster.drop()
    elapsed = time.monotonic() - started
    print()
    print(table(results))
    print(f"\nseed {seed}, {elapsed:.0f} s; logs and ledgers in {base} (kept on failure)")
    if args.json:
        args.json.write_text(
            json.dumps(
                {"seed": seed, "size": size, "seconds": round(elapsed), "scenarios": results},
                indent=1,
                default=str,
            )
        )
    failed = [r for r in results if not r.get("ok")]
    for result in failed:
        print(f"FAILED {result['scenario']} on {result['db']}: {failure(result)}")
    if not failed and not args.keep:
        shutil.rmtree(base, ignore_errors=True)
    return 1 if failed else 0


def run_one(
    base: Path,
    scenario: str,
    db: str,
    seed: int,
    size: str,
    tag: str,
    cluster: OwnCluster | None,
) -> dict[str, Any]:
    tmp = base / f"{scenario}-{db}"
    tmp.mkdir(parents=True, exist_ok=True)
    name = database_name(tag)
    if db == "sqlite":
        url = f"sqlite:///{tmp}/chaos.sqlite3"
    elif db == "postgres":
        url = f"postgres://postgres@127.0.0.1:5432/{name}"
    else:
        assert cluster is not None
        url = cluster.url(name)
    out = tmp / "result.json"
    spec = tmp / "spec.json"
    spec.write_text(
        json.dumps(
            {
                "scenario": scenario,
                "db": db,
                "url": url,
                "seed": seed,
                "size": size,
                "tmp": str(tmp),
                "out": str(out),
                "pg_cluster": cluster.name if cluster else "",
                "pg_port": cluster.port if cluster else 0,
            }
        )
    )
    began = time.monotonic()
    with (tmp / "scenario.log").open("wb") as log:
        child = subprocess.Popen(
            [sys.executable, "-m", "tests.chaos.one", str(spec)],
            cwd=Path(__file__).resolve().parents[2],
            env={**os.environ, "DJANGO_SETTINGS_MODULE": "tests.chaos.settings"},
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            code = child.wait(900)
        except BaseException:
            # Interrupted or too long: the child kills its processes on SIGTERM (its fleet's
            # ``finally``), so it is asked, not killed.
            child.terminate()
            try:
                child.wait(60)
            except subprocess.TimeoutExpired:
                child.kill()
            raise
    if out.exists():
        result = json.loads(out.read_text())
    else:
        result = {"scenario": scenario, "db": db, "error": f"exited {code}, no result"}
    result["seconds"] = round(time.monotonic() - began, 1)
    if "error" in result:
        result["ok"] = False
    return result


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def cells(result: dict[str, Any]) -> list[str]:
    if "error" in result and "alarms" not in result:
        return [
            result["scenario"],
            result["db"],
            "ERROR: " + " ".join(str(result["error"]).split())[:80],
        ]
    resume = ",".join(f"{v:g}" for v in result.get("resume_s", [])) or "-"
    return [
        result["scenario"],
        result["db"],
        _fmt(result["alarms"]),
        _fmt(result["calls"]),
        _fmt(result["faults"]),
        _fmt(result["lost"]),
        _fmt(result["early"]),
        f"{result['explained']}/{result['bound']}",
        _fmt(result["unexplained"]),
        _fmt(result["stuck"]),
        _fmt(result["gaps"]),
        _fmt(stale_rejected(result)),
        _fmt(result["late_p99_ms"]),
        resume,
        "yes" if result.get("ok") else "NO",
    ]


def stale_rejected(result: dict[str, Any]) -> int:
    """Writes of stale claims that were refused: fenced completions and claims dropped before
    they started (by the start check or by the heartbeat)."""
    stale = result.get("stale", {})
    return sum(stale.get(k, 0) for k in STALE_REJECTED)


STALE_REJECTED = ("fenced completion", "dropped before start", "dropped by heartbeat")


def row(result: dict[str, Any]) -> str:
    return "  ".join(c.ljust(w) for c, (_, w) in zip(cells(result), COLUMNS, strict=False))


def table(results: list[dict[str, Any]]) -> str:
    header = "| " + " | ".join(name for name, _ in COLUMNS) + " |"
    rule = "|" + "|".join("---" for _ in COLUMNS) + "|"
    lines = [header, rule]
    for result in results:
        values = cells(result)
        values += [""] * (len(COLUMNS) - len(values))
        lines.append("| " + " | ".join(values) + " |")
    return "\n".join(lines)


def failure(result: dict[str, Any]) -> str:
    if "error" in result:
        return str(result["error"])
    parts = [
        f"{key}={result[key]}"
        for key in ("lost", "stuck", "early", "unexplained", "beyond_bound", "gaps", "died")
        if result.get(key)
    ]
    ids = [
        result.get(k) for k in ("lost_ids", "stuck_ids", "unexplained_ids", "early_ids", "gap_ids")
    ]
    return ", ".join(parts) + f"; {[i for i in ids if i]}; notes {result.get('notes', [])[:5]}"
