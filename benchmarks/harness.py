"""The benchmark database, the worker subprocesses and the small measuring tools around them."""

from __future__ import annotations

import enum
import json
import math
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from benchmarks.raw import Target

ROOT = Path(__file__).resolve().parent.parent
SETTINGS = "benchmarks.settings"
PG_DEFAULT = "postgres://postgres@127.0.0.1:5432/alarms_bench"


class HarnessError(RuntimeError):
    """The harness itself broke (an alarm was not delivered, a worker died): never a number."""


# -- the database ------------------------------------------------------------------------------


@dataclass
class Database:
    vendor: str  # "postgresql" or "sqlite"
    url: str
    target: Target
    tmpdir: Path

    @property
    def label(self) -> str:
        return "PostgreSQL" if self.vendor == "postgresql" else "SQLite"


def create_database(kind: str, pg_url: str, tmpdir: Path) -> Database:
    """Create the benchmark database from scratch (PostgreSQL: dropped and created again; SQLite:
    a new file in ``tmpdir``), point Django at it and migrate it."""
    if kind == "postgres":
        import psycopg

        parts = urlsplit(pg_url)
        name = parts.path.lstrip("/")
        if not name or not name.replace("_", "").isalnum():
            raise HarnessError(f"--pg-url: unexpected database name {name!r}")
        host, port, user = parts.hostname or "127.0.0.1", parts.port or 5432, parts.username
        base = f"host={host} port={port} user={user or 'postgres'}"
        if parts.password:
            base += f" password={parts.password}"
        with psycopg.connect(base + " dbname=postgres", autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            admin.execute(f'CREATE DATABASE "{name}"')
        db = Database("postgresql", pg_url, Target("postgresql", f"{base} dbname={name}"), tmpdir)
    else:
        path = tmpdir / "bench.sqlite3"
        db = Database("sqlite", f"sqlite:///{path}", Target("sqlite", str(path)), tmpdir)
    os.environ["DJANGO_SETTINGS_MODULE"] = SETTINGS
    os.environ["DATABASE_URL"] = db.url
    os.environ.pop("ALARMS_JSON", None)
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0, interactive=False)
    return db


def reset(db: Database) -> None:
    """Empty the alarm tables between scenarios (and forget the planner's stale statistics)."""
    from django.db import connection

    with connection.cursor() as cursor:
        if db.vendor == "postgresql":
            cursor.execute(
                "TRUNCATE django_alarms_attempt, django_alarms_alarm, django_alarms_worker"
            )
        else:
            for table in ("django_alarms_attempt", "django_alarms_alarm", "django_alarms_worker"):
                cursor.execute(f"DELETE FROM {table}")
    analyze(db)


def checkpoint(db: Database) -> None:
    """PostgreSQL: write every changed page now, before a timed drain. After a checkpoint the
    first change to each page writes the whole page to the WAL, so a drain that happens to
    follow one pays for several times as much WAL as one that does not. Each drain (the raw
    SQL's and the workers') starts right after one, and they are compared on equal terms."""
    from django.db import DatabaseError, connection, transaction

    if db.vendor != "postgresql":
        return
    try:
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute("CHECKPOINT")
    except DatabaseError as exc:  # needs a superuser or the pg_checkpoint role
        # The same warning is shown once per run, however many drains ask.
        warnings.warn(f"CHECKPOINT refused ({exc}); drains start without one", stacklevel=2)


def analyze(db: Database) -> None:
    from django.db import connection

    with connection.cursor() as cursor:
        if db.vendor == "postgresql":
            cursor.execute("ANALYZE django_alarms_alarm")
            cursor.execute("ANALYZE django_alarms_attempt")
        else:
            cursor.execute("ANALYZE")


def vacuum(db: Database) -> None:
    """PostgreSQL: reclaim dead rows after a scenario rewrote many (VACUUM cannot run in a
    transaction, so it goes through a connection of its own)."""
    if db.vendor != "postgresql":
        return
    conn = db.target.connect()
    try:
        conn.execute("VACUUM ANALYZE django_alarms_alarm")
        conn.execute("VACUUM ANALYZE django_alarms_attempt")
    finally:
        conn.close()


def _plain(value: Any) -> Any:
    return value.value if isinstance(value, enum.Enum) else value


def alarm_template(handler: str = "bench_noop") -> list[tuple[str, Any]]:
    """``[(column, value)]`` of a new one-off alarm, as the model writes it."""
    from django_alarms.models import Alarm

    now = datetime.now(timezone.utc)
    alarm = Alarm(handler=handler, due_at=now, max_attempts=3, created_at=now, updated_at=now)
    return [(f.column, _plain(getattr(alarm, f.attname))) for f in Alarm._meta.concrete_fields]


def attempt_template() -> list[tuple[str, Any]]:
    """``[(column, value)]`` of an ``ok`` attempt row (``alarm_id`` and times set per row)."""
    from django_alarms.models import Attempt

    now = datetime.now(timezone.utc)
    attempt = Attempt(
        number=1,
        outcome="ok",
        started_at=now,
        finished_at=now,
        handler="bench_noop",
        due_at=now,
        worker="raw-sql",
    )
    return [
        (f.column, _plain(getattr(attempt, f.attname)))
        for f in Attempt._meta.concrete_fields
        if not f.primary_key
    ]


# -- worker processes ----------------------------------------------------------------------------


def worker_env(db: Database, alarms: dict[str, Any] | None = None, **extra: str) -> dict[str, str]:
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": SETTINGS,
        "DATABASE_URL": db.url,
        "ALARMS_JSON": json.dumps(alarms or {}),
        "PYTHONUNBUFFERED": "1",
        "DJANGO_DEBUG": "0",
    }
    env.update(extra)
    return env


@dataclass
class Proc:
    """A subprocess of the harness (a worker, a django-q cluster) with its log file."""

    process: subprocess.Popen[bytes]
    log: Path
    name: str
    started: float = field(default_factory=time.monotonic)

    @property
    def pid(self) -> int:
        return self.process.pid

    def alive(self) -> bool:
        return self.process.poll() is None

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def stop(self, timeout: float = 60) -> int:
        if self.alive():
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            raise HarnessError(f"{self.name} did not stop within {timeout}s:\n{self.tail()}")

    def stop_group(self, timeout: float = 30) -> None:
        """SIGTERM, then SIGKILL to the process group this harness started it in."""
        if self.alive():
            self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            pass
        try:
            os.killpg(self.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        self.process.wait(10)

    def tail(self, chars: int = 3000) -> str:
        return self.output()[-chars:]

    def psutil(self) -> Any:
        import psutil

        return psutil.Process(self.pid)

    def rss(self) -> int:
        return int(self.psutil().memory_info().rss)

    def cpu(self) -> float:
        times = self.psutil().cpu_times()
        return float(times.user + times.system)


@dataclass(frozen=True)
class CpuMark:
    """What the whole machine and the database server had used of the CPU at one moment: two
    marks tell how busy the machine was in between, and how much of it was the server's."""

    busy: float  # seconds on CPU, all cores, all processes
    total: float  # seconds elapsed, times the cores
    server: float  # seconds on CPU of the PostgreSQL server's processes (0 elsewhere)

    @classmethod
    def now(cls) -> CpuMark:
        import psutil

        times = psutil.cpu_times()
        # On Linux guest time is counted in user time already.
        total = sum(times) - getattr(times, "guest", 0.0) - getattr(times, "guest_nice", 0.0)
        idle = times.idle + getattr(times, "iowait", 0.0)
        # A backend that exits between two marks has its time added to its parent's (the
        # postmaster's) children times when it is reaped: counting those too, each process's
        # time is counted once at each mark, alive or gone.
        server = 0.0
        for proc in psutil.process_iter(["name", "cpu_times"]):
            used = proc.info["cpu_times"]
            if proc.info["name"] == "postgres" and used is not None:
                server += used.user + used.system + used.children_user + used.children_system
        return cls(busy=total - idle, total=total, server=server)

    def since(self, earlier: CpuMark) -> tuple[float, float]:
        """(share of the machine busy, server CPU seconds) between ``earlier`` and this mark."""
        span = self.total - earlier.total
        busy = (self.busy - earlier.busy) / span if span > 0 else math.nan
        return busy, self.server - earlier.server


def spawn(
    db: Database,
    command: Sequence[str],
    *,
    name: str,
    alarms: dict[str, Any] | None = None,
    env: dict[str, str] | None = None,
    group: bool = False,
) -> Proc:
    """Start ``manage.py <command>``. ``group``: in a process group of its own (a django-q
    cluster and its children), so that :meth:`Proc.kill_group` can end them all."""
    log = db.tmpdir / f"{name}-{time.monotonic_ns()}.log"
    handle = log.open("wb")
    process = subprocess.Popen(
        [sys.executable, str(ROOT / "manage.py"), *command],
        cwd=ROOT,
        env=worker_env(db, alarms, **(env or {})),
        stdout=handle,
        stderr=subprocess.STDOUT,
        start_new_session=group,
    )
    handle.close()
    return Proc(process, log, name)


def start_workers(
    db: Database,
    count: int,
    *args: str,
    name: str = "worker",
    alarms: dict[str, Any] | None = None,
    env: dict[str, str] | None = None,
    timeout: float = 60,
) -> list[Proc]:
    """Start ``count`` ``run_alarms`` processes and wait until each has registered and logged
    its start-up banner (its listener is then starting)."""
    # BENCH_WORKER_ARGS: extra run_alarms options for an investigation (e.g. "-v 2").
    args = (*args, *os.environ.get("BENCH_WORKER_ARGS", "").split())
    procs = [
        spawn(db, ["run_alarms", *args], name=f"{name}{n}", alarms=alarms, env=env)
        for n in range(count)
    ]
    try:
        wait_for(
            lambda: all("started: executor=" in p.output() for p in procs),
            timeout=timeout,
            procs=procs,
            what="workers to start",
        )
    except BaseException:
        for proc in procs:
            if proc.alive():
                proc.process.kill()
        raise
    time.sleep(0.5)  # let the listener connect and the first load finish
    return procs


def stop_all(procs: Sequence[Proc], timeout: float = 60) -> None:
    for proc in procs:
        if proc.alive():
            proc.process.send_signal(signal.SIGTERM)
    errors = []
    for proc in procs:
        try:
            proc.stop(timeout)
        except HarnessError as exc:
            errors.append(str(exc))
    if errors:
        raise HarnessError("\n".join(errors))


def wait_for(
    predicate: Callable[[], Any],
    *,
    timeout: float,
    procs: Sequence[Proc] = (),
    what: str = "condition",
    every: float = 0.05,
) -> Any:
    """Poll ``predicate`` until truthy; a dead worker or the timeout is a harness error."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        for proc in procs:
            if not proc.alive():
                raise HarnessError(f"{proc.name} exited while waiting for {what}:\n{proc.tail()}")
        if time.monotonic() > deadline:
            logs = "\n".join(f"--- {p.name}\n{p.tail(2000)}" for p in procs)
            raise HarnessError(f"timed out after {timeout:g}s waiting for {what}\n{logs}")
        time.sleep(every)


def sleep_until(wall: float) -> None:
    while True:
        left = wall - time.time()
        if left <= 0:
            return
        time.sleep(min(left, 0.5))


# -- numbers ------------------------------------------------------------------------------------


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (``q`` in 0..100) of ``values``."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(1, int(-(-q * len(ordered) // 100)))  # ceil(q/100 * n)
    return float(ordered[min(rank, len(ordered)) - 1])


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values)) if values else float("nan")


def read_timing(path: Path) -> list[tuple[str, float, float, int, int]]:
    """The lines of ``bench_timing``: ``(alarm_id, due_epoch, started_epoch, pid, attempt)``."""
    if not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines():
        parts = line.split()
        if len(parts) == 5:
            out.append((parts[0], float(parts[1]), float(parts[2]), int(parts[3]), int(parts[4])))
    return out


def make_tmpdir() -> Path:
    return Path(tempfile.mkdtemp(prefix="alarms-bench-"))
