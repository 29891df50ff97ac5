"""Processes and databases of a battery run: workers, a django-q2 cluster, and a PostgreSQL
cluster of the battery's own for the outage scenarios.

Everything started here is registered in :class:`Fleet` and killed by :meth:`Fleet.close`,
which the scenarios call in ``finally``. The PostgreSQL cluster is created with
``pg_createcluster`` on a free port from :data:`PG_OWN_PORTS` (never the suite's cluster on
5432), named after the run, and dropped at the end of the run. Databases are named after the
run too (``alarms_chaos_<pid>``), so that two runs on one machine never share one.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.chaos import ledger

ROOT = Path(__file__).resolve().parents[2]
SETTINGS = "tests.chaos.settings"
#: Ports the battery's own cluster may take (the first free one).
PG_OWN_PORTS = range(5499, 5600)
REDIS = os.environ.get("CHAOS_Q_REDIS", "redis://127.0.0.1:6379/12")

#: Short leases and heartbeats: a killed worker's claims come back within seconds.
FAST = {
    "HEARTBEAT_INTERVAL": 0.5,
    "LEASE_GRACE": 2,
    "POLL_INTERVAL": 0.5,
    "LOAD_INTERVAL": 2,
}
#: What a claim's lease lasts at most without renewal: the handler's timeout plus the grace.
LEASE = 3.0 + FAST["LEASE_GRACE"]

#: Lines of the worker log that say a stale write was refused, by what refused it. The first
#: three are stale writes refused; the others say how claims were taken over.
STALE = {
    # A completion of a worker whose claim was taken over (a rescue sweep that lost the race
    # to another one logs the same line with "its outcome lost": counted apart).
    "fenced completion": re.compile(
        r"the claim is no longer held by this worker.*its outcome (?!lost )"
    ),
    "rescue race": re.compile(
        r"the claim is no longer held by this worker.*its outcome lost "
        r"|it was no longer expired when this sweep came to write it"
    ),
    # An ambiguous commit recognised: a completion found recorded by the worker's own earlier
    # try, and claims taken by a statement whose answer was lost, given back.
    "recorded already": re.compile(r"recorded already, by this worker's earlier try"),
    "given back after a lost answer": re.compile(
        r"released (\d+) alarm\(s\) that a claim statement took although its answer was lost"
    ),
    "dropped before start": re.compile(r"not started, its lease expired"),
    "dropped by heartbeat": re.compile(r"(\d+) claim\(s\) are no longer held by this worker"),
    "rescued as lost": re.compile(r"was lost \(worker"),
}
ERRORS = re.compile(r"Traceback|failed unexpectedly| ERROR ")


class BatteryError(RuntimeError):
    """The battery itself could not run (a missing service, a process that never started)."""


def pg_version() -> str:
    versions = sorted(os.listdir("/etc/postgresql")) if os.path.isdir("/etc/postgresql") else []
    if not versions:
        raise BatteryError("no PostgreSQL installation under /etc/postgresql (pg_createcluster)")
    return versions[-1]


def _run(*args: str, timeout: float = 120, check: bool = True) -> subprocess.CompletedProcess[str]:
    try:
        result = subprocess.run(args, capture_output=True, text=True, timeout=timeout)
    except FileNotFoundError as exc:
        raise BatteryError(f"{args[0]} is not installed: {exc}") from None
    if check and result.returncode != 0:
        raise BatteryError(f"{' '.join(args)} failed: {result.stdout}{result.stderr}")
    return result


def database_name(tag: str) -> str:
    return f"alarms_chaos_{tag}"


class OwnCluster:
    """The battery's own PostgreSQL cluster, which the outage scenarios stop and restart.

    ``name`` is ``chaos<pid of the run>``; ``port`` is found free by :meth:`create`."""

    def __init__(self, name: str, port: int = 0) -> None:
        if not re.fullmatch(r"chaos\d+", name):
            raise BatteryError(f"the battery's clusters are named chaos<pid>, not {name!r}")
        self.version = pg_version()
        self.name = name
        self.port = port

    def url(self, database: str) -> str:
        return f"postgres://postgres@127.0.0.1:{self.port}/{database}"

    def ctl(self, action: str, *extra: str, check: bool = True) -> None:
        _run(
            "pg_ctlcluster",
            "--skip-systemctl-redirect",
            self.version,
            self.name,
            action,
            *extra,
            check=check,
        )

    def clusters(self) -> list[tuple[str, str, int]]:
        """``(version, name, port)`` of every cluster on this machine."""
        found = []
        for line in _run("pg_lsclusters", "-h", check=False).stdout.splitlines():
            parts = line.split()
            if len(parts) >= 3 and parts[2].isdigit():
                found.append((parts[0], parts[1], int(parts[2])))
        return found

    def create(self) -> None:
        """Create and start the cluster on the first free port; clusters of earlier runs whose
        process is gone are dropped first."""
        for version, name, _ in self.clusters():
            match = re.fullmatch(r"chaos(\d+)", name)
            if match and (name == self.name or not _pid_alive(int(match.group(1)))):
                _run("pg_dropcluster", "--stop", version, name, check=False)
        taken = {port for _, _, port in self.clusters()}
        self.port = next(p for p in PG_OWN_PORTS if p not in taken and _port_free(p))
        _run(
            "pg_createcluster",
            "-p",
            str(self.port),
            self.version,
            self.name,
            "--",
            "--auth=trust",
        )
        conf = Path(f"/etc/postgresql/{self.version}/{self.name}")
        # Trust for local TCP only: the cluster lives for one run, on the loopback interface.
        (conf / "pg_hba.conf").write_text(
            "local all all trust\nhost all all 127.0.0.1/32 trust\nhost all all ::1/128 trust\n"
        )
        with (conf / "postgresql.conf").open("a") as handle:
            handle.write("listen_addresses = '127.0.0.1'\nmax_connections = 100\n")
        self.ctl("start")
        self.wait_up()

    def drop(self) -> None:
        for version, name, port in self.clusters():
            if name == self.name:
                if port == 5432:
                    raise BatteryError(f"cluster {name} runs on 5432: not the battery's")
                _run("pg_dropcluster", "--stop", version, name, check=False)

    def wait_up(self, timeout: float = 60) -> float:
        """Wait until the cluster accepts connections; returns that moment (wall clock)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            result = _run("pg_isready", "-q", "-h", "127.0.0.1", "-p", str(self.port), check=False)
            if result.returncode == 0:
                return ledger.real_time()
            time.sleep(0.05)
        raise BatteryError("the battery's PostgreSQL cluster did not come up")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _port_free(port: int) -> bool:
    import socket

    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def create_database(url: str, *, drop_only: bool = False) -> None:
    """Drop and create the PostgreSQL database of ``url`` (SQLite: remove the file)."""
    if url.startswith("sqlite"):
        path = Path(url.split("sqlite:///", 1)[1])
        for suffix in ("", "-wal", "-shm"):
            Path(f"{path}{suffix}").unlink(missing_ok=True)
        return
    import psycopg

    base, name = url.rsplit("/", 1)
    if not name.startswith("alarms_chaos"):
        raise BatteryError(f"the battery's databases are named alarms_chaos..., not {name!r}")
    port = re.search(r":(\d+)$", base)
    with psycopg.connect(
        host="127.0.0.1",
        port=int(port.group(1)) if port else 5432,
        user="postgres",
        dbname="postgres",
        autocommit=True,
    ) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        if not drop_only:
            admin.execute(f'CREATE DATABASE "{name}"')


@dataclass
class Proc:
    role: str
    process: subprocess.Popen[bytes]
    log: Path
    signalled: bool = False  # the battery sent it a signal that ends it

    @property
    def pid(self) -> int:
        return self.process.pid

    def alive(self) -> bool:
        return self.process.poll() is None

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


@dataclass
class Fleet:
    """The processes of one scenario, the environment they share, and the fault timeline."""

    tmp: Path
    url: str
    seed: int
    concurrency: int = 4
    env_extra: dict[str, str] = field(default_factory=dict)
    procs: list[Proc] = field(default_factory=list)

    @property
    def ledger(self) -> Path:
        return self.tmp / "ledger.txt"

    @property
    def faults(self) -> Path:
        return self.tmp / "faults.jsonl"

    def env(self, **extra: str) -> dict[str, str]:
        return {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": SETTINGS,
            "DATABASE_URL": self.url,
            "ALARMS_JSON": json.dumps(FAST),
            "CHAOS_LEDGER": str(self.ledger),
            "CHAOS_FAULTS": str(self.faults),
            "CHAOS_SEED": str(self.seed),
            "PYTHONUNBUFFERED": "1",
            **self.env_extra,
            **extra,
        }

    def spawn(self, role: str, *args: str, **extra: str) -> Proc:
        log = self.tmp / f"{role}-{len(self.procs)}.log"
        with log.open("wb") as handle:
            process = subprocess.Popen(
                [sys.executable, str(ROOT / "manage.py"), *args],
                cwd=ROOT,
                env=self.env(**extra),
                stdout=handle,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own group: a cluster's children die with it
            )
        proc = Proc(role, process, log)
        self.procs.append(proc)
        return proc

    def start_worker(self, *args: str, **extra: str) -> Proc:
        proc = self.spawn(
            "worker",
            "run_alarms",
            "--concurrency",
            str(self.concurrency),
            "--shutdown-timeout",
            "10",
            *args,
            **extra,
        )
        ledger.fault(self.faults, "start", pid=proc.pid)
        return proc

    def workers(self) -> list[Proc]:
        return [p for p in self.procs if p.role == "worker" and p.alive()]

    def signal(self, proc: Proc, signum: int, kind: str) -> None:
        if signum in (signal.SIGKILL, signal.SIGTERM):
            proc.signalled = True
        ledger.fault(self.faults, kind, pid=proc.pid)
        os.kill(proc.pid, signum)

    def watch(self) -> None:
        """Record, once, every worker that exited without the battery ending it."""
        for proc in self.procs:
            if proc.role == "worker" and not proc.signalled and not proc.alive():
                proc.signalled = True
                ledger.fault(self.faults, "exit", pid=proc.pid, code=proc.process.returncode)

    def wait_registered(self, procs: list[Proc], timeout: float = 90) -> None:
        from django.db import close_old_connections

        from django_alarms.models import Worker

        deadline = time.monotonic() + timeout
        wanted = {p.pid for p in procs}
        while time.monotonic() < deadline:
            try:
                found = set(Worker.objects.filter(pid__in=wanted).values_list("pid", flat=True))
            except Exception:
                close_old_connections()
                found = set()
            if found >= wanted:
                return
            for proc in procs:
                if not proc.alive():
                    raise BatteryError(f"{proc.role} {proc.pid} exited:\n{proc.output()[-3000:]}")
            time.sleep(0.1)
        raise BatteryError("workers did not register in time")

    def stop_all(self, timeout: float = 30) -> None:
        """SIGTERM the workers (first), then everything; SIGKILL what is still there."""
        for group in (["worker"], ["qcluster"]):
            running = [p for p in self.procs if p.role in group and p.alive()]
            for proc in running:
                proc.signalled = True
                _send(proc, signal.SIGCONT)
                _send(proc, signal.SIGTERM)
            deadline = time.monotonic() + timeout
            for proc in running:
                try:
                    proc.process.wait(max(0.1, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    pass
        self.close()

    def close(self) -> None:
        """Kill every process this fleet started (and their groups). Always safe to call."""
        for proc in self.procs:
            proc.signalled = True
            if proc.alive():
                _send(proc, signal.SIGCONT)
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
            try:
                proc.process.wait(10)
            except subprocess.TimeoutExpired:
                pass

    def stale_writes(self) -> dict[str, int]:
        counts = dict.fromkeys([*STALE, "errors"], 0)
        for proc in self.procs:
            for line in proc.output().splitlines():
                for what, pattern in STALE.items():
                    match = pattern.search(line)
                    if match:
                        counts[what] += int(match.group(1)) if match.groups() else 1
                if ERRORS.search(line):
                    counts["errors"] += 1
        return counts

    def error_lines(self, limit: int = 20) -> list[str]:
        found = []
        for proc in self.procs:
            for line in proc.output().splitlines():
                if ERRORS.search(line) or "Error" in line:
                    found.append(f"[{proc.role} {proc.pid}] {line[:300]}")
        return found[:limit]


def _send(proc: Proc, signum: int) -> None:
    try:
        os.kill(proc.pid, signum)
    except ProcessLookupError:
        pass


def retrying(action: Callable[[], Any], timeout: float = 60) -> Any:
    """Run a database read of the battery's own, through outages."""
    from django.db import DatabaseError, close_old_connections

    deadline = time.monotonic() + timeout
    while True:
        try:
            return action()
        except DatabaseError:
            close_old_connections()
            from django.db import connection

            connection.close()
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)
