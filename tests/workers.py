"""Start real ``run_alarms`` processes against the test database, and wait for what they do."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import quote

from django.db import connection

ROOT = Path(__file__).resolve().parent.parent

#: Short leases and heartbeats, so that recovery happens within a test's patience.
FAST = {
    "HEARTBEAT_INTERVAL": 0.3,
    "LEASE_GRACE": 1,
    "POLL_INTERVAL": 0.2,
    "LOAD_INTERVAL": 2,
}


def database_url() -> str:
    """The URL of the database the tests run on (pytest-django's test database)."""
    settings = connection.settings_dict
    if connection.vendor == "sqlite":
        return f"sqlite:///{settings['NAME']}"
    scheme = {"postgresql": "postgres", "mysql": "mysql"}[connection.vendor]
    user = quote(settings["USER"] or "")
    password = f":{quote(settings['PASSWORD'])}" if settings["PASSWORD"] else ""
    host = settings["HOST"] or "127.0.0.1"
    port = f":{settings['PORT']}" if settings["PORT"] else ""
    return f"{scheme}://{user}{password}@{host}{port}/{settings['NAME']}"


class WorkerProcess:
    def __init__(self, process: subprocess.Popen[bytes], log: Path) -> None:
        self.process = process
        self.log = log

    @property
    def pid(self) -> int:
        return self.process.pid

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def signal(self, signum: int) -> None:
        self.process.send_signal(signum)

    def wait(self, timeout: float = 60) -> int:
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            raise AssertionError(f"worker did not exit in {timeout}s:\n{self.output()[-4000:]}")

    def alive(self) -> bool:
        return self.process.poll() is None


def start_worker(
    tmp_path: Path,
    *args: str,
    alarms: dict[str, Any] | None = None,
    probe_log: Path | None = None,
    name: str = "worker",
) -> WorkerProcess:
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "tests.settings",
        "DATABASE_URL": database_url(),
        "ALARMS_JSON": json.dumps({**FAST, **(alarms or {})}),
        "PYTHONUNBUFFERED": "1",
    }
    if probe_log is not None:
        env["ALARMS_PROBE_LOG"] = str(probe_log)
    log = tmp_path / f"{name}-{time.monotonic_ns()}.log"
    handle = log.open("wb")
    process = subprocess.Popen(
        [sys.executable, str(ROOT / "manage.py"), "run_alarms", *args],
        cwd=ROOT,
        env=env,
        stdout=handle,
        stderr=subprocess.STDOUT,
    )
    handle.close()
    return WorkerProcess(process, log)


@contextmanager
def running_workers(
    tmp_path: Path, count: int = 1, *args: str, **kwargs: Any
) -> Iterator[list[WorkerProcess]]:
    """Start ``count`` workers, wait until each has registered, and stop them at the end."""
    from django_alarms.models import Worker

    prefix = kwargs.pop("name", "worker")
    workers = [start_worker(tmp_path, *args, name=f"{prefix}{n}", **kwargs) for n in range(count)]
    try:
        wait_for(
            lambda: Worker.objects.count() >= count,
            timeout=60,
            workers=workers,
            what="workers to start",
        )
        yield workers
    finally:
        for worker in workers:
            if worker.alive():
                worker.signal(signal.SIGTERM)
        for worker in workers:
            if worker.alive():
                worker.wait(60)


def kill_group(process: WorkerProcess) -> None:
    """SIGKILL the process's whole group (it was started with ``start_new_session``: a
    cluster or a pool and its children), and reap it."""
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    process.process.wait()


def terminate_group(process: WorkerProcess, timeout: float = 60) -> int | None:
    """SIGTERM, then SIGKILL the whole process group if it does not exit in time; the exit
    code of a process that exited, else None."""
    code = None
    if process.alive():
        process.signal(signal.SIGTERM)
        try:
            code = process.process.wait(timeout)
        except subprocess.TimeoutExpired:
            pass
    kill_group(process)
    return code


def wait_for(
    predicate: Callable[[], Any],
    *,
    timeout: float = 60,
    workers: list[WorkerProcess] | None = None,
    what: str = "condition",
) -> Any:
    """Poll ``predicate`` until it is truthy; fail with the workers' logs after ``timeout``.

    A generous timeout is not a timing assertion: it only bounds how long a broken build waits.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        for worker in workers or []:
            if not worker.alive():
                raise AssertionError(
                    f"worker exited while waiting for {what}:\n{worker.output()[-4000:]}"
                )
        if time.monotonic() > deadline:
            logs = "\n".join(w.output()[-3000:] for w in workers or [])
            raise AssertionError(f"timed out waiting for {what}\n{logs}")
        time.sleep(0.05)


def probe_lines(path: Path) -> list[list[str]]:
    if not path.exists():
        return []
    return [line.split() for line in path.read_text().splitlines() if line.strip()]
