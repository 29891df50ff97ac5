"""The scenarios: each starts its workers, schedules a herd and a stream, injects its faults on
a schedule drawn from its own seeded ``random.Random``, lets the system settle, and checks.

A scenario runs in a process of its own (``tests.chaos.one``), with Django set up on the
database it tests; it returns the checker's report as a dict.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from tests.chaos import checker, ledger
from tests.chaos.supervisor import (
    LEASE,
    REDIS,
    ROOT,
    BatteryError,
    Fleet,
    OwnCluster,
    retrying,
)

#: Sizes by mode: (herd, stream, stream seconds).
SIZES = {"smoke": (300, 300, 10.0), "full": (2000, 3000, 45.0)}
#: The share of alarms whose handler sleeps (up to SLOW_MAX seconds): attempts in flight.
SLOW_SHARE = 0.2
SLOW_MAX = 0.6
#: The stream starts this long after the herd is due.
STREAM_AFTER = 2.0


@dataclass
class Run:
    name: str
    db: str
    size: str
    fleet: Fleet
    rng: random.Random
    workers: int = 3
    started: float = 0.0
    notes: list[str] = field(default_factory=list)
    allowed_states: tuple[str, ...] = ("succeeded",)
    #: The battery's own PostgreSQL cluster (the outage scenario).
    pg_cluster: str = ""
    pg_port: int = 0

    @property
    def sizes(self) -> tuple[int, int, float]:
        return SIZES[self.size]

    # -- workers ----------------------------------------------------------------------------------

    def start(self, count: int | None = None, *args: str, **env: str) -> None:
        procs = [self.fleet.start_worker(*args, **env) for _ in range(count or self.workers)]
        self.fleet.wait_registered(procs)

    def keep(self, count: int, *args: str) -> None:
        """Bring the live workers back to ``count`` (after kills)."""
        while len(self.fleet.workers()) < count:
            self.fleet.start_worker(*args)

    # -- alarms -----------------------------------------------------------------------------------

    def schedule(
        self,
        herd: int,
        stream: int,
        seconds: float,
        lead: float = 2.0,
        slow: tuple[float, float, float] = (SLOW_SHARE, 0.05, SLOW_MAX),
    ) -> float:
        """A herd due at one instant ``lead`` seconds from now, and a stream spread evenly over
        ``seconds`` from :data:`STREAM_AFTER` seconds after the herd (its lateness is then
        mostly not the herd's); ``slow``: the share of stream alarms whose handler sleeps, and
        the range of the sleep. Returns when the stream ends (wall)."""
        from django_alarms import alarms

        now = datetime.now(timezone.utc)
        at = now + timedelta(seconds=lead)
        first = at + timedelta(seconds=STREAM_AFTER if herd else 0)
        specs = []
        # The herd is fast (it tests the claims' race); the stream carries the slow alarms.
        for _ in range(herd):
            specs.append(alarms.Spec("chaos", payload={}, at=at, key="herd"))
        for index in range(stream):
            due = first + timedelta(seconds=seconds * index / max(stream, 1))
            specs.append(alarms.Spec("chaos", payload=self._payload(slow), at=due, key="stream"))
        for start in range(0, len(specs), 1000):
            alarms.schedule_many(specs[start : start + 1000])
        self.started = ledger.real_time()
        return (first + timedelta(seconds=seconds)).timestamp()

    def _payload(self, slow: tuple[float, float, float]) -> dict[str, Any]:
        share, shortest, longest = slow
        if self.rng.random() < share:
            return {"sleep": round(self.rng.uniform(shortest, longest), 3)}
        return {}

    def fault_loop(self, until: float, every: tuple[float, float], act: Callable[[], None]) -> None:
        while True:
            pause = self.rng.uniform(*every)
            if ledger.real_time() + pause >= until:
                break
            time.sleep(pause)
            self.fleet.watch()
            act()
        self.sleep_until(until)

    def sleep_until(self, wall: float) -> None:
        while ledger.real_time() < wall:
            self.fleet.watch()
            time.sleep(min(0.2, max(0.0, wall - ledger.real_time())))

    def settle(self, timeout: float = 60.0) -> float:
        """Wait until no alarm is active (or ``timeout``); returns the end (wall)."""
        from django_alarms.models import Alarm
        from django_alarms.types import ACTIVE_STATES

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.fleet.watch()
            left = retrying(lambda: Alarm.objects.filter(state__in=ACTIVE_STATES).count())
            if not left:
                break
            time.sleep(0.3)
        time.sleep(1.0)  # the recorders' last batches
        self.fleet.watch()
        return ledger.real_time()

    # -- the verdict ------------------------------------------------------------------------------

    def verdict(self, end: float) -> dict[str, Any]:
        from django_alarms.models import Alarm, Attempt

        self.fleet.stop_all()
        alarms_rows = retrying(
            lambda: list(Alarm.objects.values_list("id", "state", "due_at", "key"))
        )
        attempt_rows = retrying(
            lambda: list(Attempt.objects.values_list("alarm_id", "number", "outcome", "worker"))
        )
        report = checker.check(
            calls=ledger.read_calls(self.fleet.ledger),
            faults=ledger.read_faults(self.fleet.faults),
            attempts=[
                checker.Attempt(str(a), n, o, checker.pid_of(w)) for a, n, o, w in attempt_rows
            ],
            alarms=[
                checker.AlarmRow(str(i), s, d.timestamp(), "stream" if k == "stream" else "herd")
                for i, s, d, k in alarms_rows
            ],
            end=end,
            concurrency=self.fleet.concurrency,
            workers=self.workers,
            lease=LEASE,
            allowed_states=self.allowed_states,
            stale=self.fleet.stale_writes(),
        )
        report.notes.extend(self.notes)
        if report.stale.get("errors"):
            report.notes.extend(self.fleet.error_lines())
        return report.as_dict()


# -- the scenarios --------------------------------------------------------------------------------


def claim_race(run: Run) -> dict[str, Any]:
    """Four workers, no faults: a herd due at one instant and a stream. Nothing may be
    delivered twice, early or not at all."""
    run.workers = 4
    run.start()
    herd, stream, seconds = run.sizes
    until = run.schedule(herd, stream, seconds)
    run.sleep_until(until)
    return run.verdict(run.settle())


def kill9(run: Run) -> dict[str, Any]:
    """``kill -9`` of a random worker every 2-4 s, a replacement started 0.3-1 s later."""
    run.start()
    herd, stream, seconds = run.sizes
    until = run.schedule(herd, stream, seconds, lead=1.0)

    def act() -> None:
        victim = run.rng.choice(run.fleet.workers())
        run.fleet.signal(victim, signal.SIGKILL, "kill")
        time.sleep(run.rng.uniform(0.3, 1.0))
        run.keep(run.workers)

    run.fault_loop(until, (2.0, 4.0), act)
    run.keep(run.workers)
    return run.verdict(run.settle())


def sigterm(run: Run) -> dict[str, Any]:
    """SIGTERM of a random worker every 2-4 s (it drains and exits), a replacement at once.
    A graceful stop hands back what it had not started: no duplicates are allowed at all."""
    run.start()
    herd, stream, seconds = run.sizes
    until = run.schedule(herd, stream, seconds, lead=1.0)

    def act() -> None:
        victim = run.rng.choice(run.fleet.workers())
        run.fleet.signal(victim, signal.SIGTERM, "term")
        run.fleet.start_worker()

    run.fault_loop(until, (2.0, 4.0), act)
    run.keep(run.workers)
    return run.verdict(run.settle())


def freeze(run: Run) -> dict[str, Any]:
    """SIGSTOP of a worker past its lease (lease + 3 s), then SIGCONT, while it works through a
    backlog: each round schedules a small herd of slow alarms, more than the workers' threads
    run at once, and freezes the worker that holds the most of them half a second after they
    fall due (its threads are in calls, its queue holds claims). The woken worker may finish
    the calls it was in, and must start none of its queued claims: by then another worker's
    rescue has delivered them."""
    from django.db.models import Count

    from django_alarms import alarms
    from django_alarms.models import Alarm, Worker

    run.fleet.concurrency = 2
    run.start()
    _, stream, _ = run.sizes
    rounds = 2 if run.size == "smoke" else 5
    length = LEASE + 3 + 5
    until = run.schedule(0, stream // 3, rounds * length + 2, lead=1.0)
    for _ in range(rounds):
        due = datetime.now(timezone.utc) + timedelta(seconds=1)
        alarms.schedule_many(
            [
                alarms.Spec("chaos", payload=run._payload((1.0, 0.2, 0.4)), at=due, key="herd")
                for _ in range(45)
            ]
        )
        time.sleep(1.5)
        holding = dict(
            Alarm.objects.filter(state="running")
            .values("claimed_by")
            .annotate(n=Count("id"))
            .values_list("claimed_by", "n")
        )
        pids = dict(Worker.objects.values_list("id", "pid"))
        held = {pids.get(worker): count for worker, count in holding.items()}
        candidates = run.fleet.workers()
        most = max((held.get(p.pid, 0) for p in candidates), default=0)
        victim = run.rng.choice([p for p in candidates if held.get(p.pid, 0) == most])
        run.fleet.signal(victim, signal.SIGSTOP, "stop")
        time.sleep(LEASE + 3)
        run.fleet.signal(victim, signal.SIGCONT, "cont")
        run.notes.append(f"froze {victim.pid} holding {most} running alarm(s)")
        time.sleep(length - LEASE - 3 - 1.5)
    run.sleep_until(until)
    return run.verdict(run.settle())


def skew(run: Run) -> dict[str, Any]:
    """Workers whose clocks run 30 s ahead, 30 s behind and right (``CHAOS_SKEW``): the
    estimate of the database's clock must correct them; nothing early, nothing twice."""
    herd, stream, seconds = run.sizes
    procs = []
    for offset in ("30", "-30", "0"):
        proc = run.fleet.start_worker(CHAOS_SKEW=offset)
        if offset != "0":
            ledger.fault(run.fleet.faults, "skew", pid=proc.pid, seconds=float(offset))
        procs.append(proc)
    run.fleet.wait_registered(procs)
    until = run.schedule(herd, stream, seconds)
    run.sleep_until(until)
    return run.verdict(run.settle())


def ambiguous(run: Run) -> dict[str, Any]:
    """Connections lost right after a committed claim, lease renewal or completion
    (``CHAOS_AMBIGUOUS``): the worker cannot tell whether its write happened."""
    odds = {"MainThread": 0.03, "alarms-heartbeat": 0.05, "alarms-recorder": 0.05}
    run.fleet.env_extra["CHAOS_AMBIGUOUS"] = json.dumps(odds)
    run.start()
    herd, stream, seconds = run.sizes
    until = run.schedule(herd, stream, seconds)
    run.sleep_until(until)
    return run.verdict(run.settle(timeout=90))


def outage(run: Run) -> dict[str, Any]:
    """On the battery's own PostgreSQL cluster: ``restart -m immediate``, a 10 s stop,
    ``pg_terminate_backend`` of the workers' backends (and in ``--full`` a second restart), in
    a seeded order, with a stream flowing. Measures how soon delivery resumes after each."""
    cluster = OwnCluster(run.pg_cluster, run.pg_port)
    run.start()
    herd, stream, seconds = run.sizes
    actions = ["restart", "stop", "terminate"] + (
        ["restart", "terminate"] if run.size == "full" else []
    )
    run.rng.shuffle(actions)
    span = 4.0 * len(actions) + 12 + 2
    until = run.schedule(herd // 3, max(stream, int(span * 20)), max(seconds, span), lead=1.0)
    time.sleep(2.0)
    for action in actions:
        start = ledger.real_time()
        if action == "restart":
            cluster.ctl("restart", "-m", "immediate")
            end = cluster.wait_up()
        elif action == "stop":
            cluster.ctl("stop", "-m", "immediate")
            time.sleep(10.0)
            cluster.ctl("start")
            end = cluster.wait_up()
        else:
            end = _terminate_backends(cluster.port)
            start = end
        _append_outage(run, action, start, end)
        time.sleep(run.rng.uniform(3.0, 5.0))
    run.sleep_until(until)
    return run.verdict(run.settle(timeout=90))


def _append_outage(run: Run, what: str, start: float, end: float) -> None:
    ledger.append(
        run.fleet.faults,
        json.dumps({"t": start, "kind": "outage", "what": what, "start": start, "end": end}) + "\n",
    )


def _terminate_backends(port: int) -> float:
    import psycopg
    from django.db import connection

    with psycopg.connect(
        host="127.0.0.1", port=port, user="postgres", dbname="postgres", autocommit=True
    ) as admin:
        admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = %s AND pid <> pg_backend_pid()",
            [connection.settings_dict["NAME"]],
        )
        return ledger.real_time()


def uniqueness(run: Run) -> dict[str, Any]:
    """Six processes schedule the same 100 ``(key, name)`` pairs at once, each with its own
    mix of ``if_exists``; then exactly one alarm per pair may be active, and workers deliver
    them."""
    from django.db.models import Count

    from django_alarms.models import Alarm
    from django_alarms.types import ACTIVE_STATES

    pairs = 100 if run.size == "smoke" else 300
    at = ledger.real_time() + 8.0
    go = ledger.real_time() + 4.0
    racers = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tests.chaos.one",
                "--race",
                str(pairs),
                str(go),
                str(at),
                str(run.rng.randrange(2**31)),
            ],
            cwd=ROOT,
            env=run.fleet.env(),
        )
        for _ in range(6)
    ]
    try:
        for racer in racers:
            racer.wait(120)
    finally:
        for racer in racers:
            if racer.poll() is None:
                racer.kill()
    failed = [r.returncode for r in racers if r.returncode]
    if failed:
        run.notes.append(f"racers exited with {failed}")
    counts = dict(
        Alarm.objects.filter(state__in=ACTIVE_STATES, name="race")
        .values("key")
        .annotate(n=Count("id"))
        .values_list("key", "n")
    )
    doubles = {key: n for key, n in counts.items() if n != 1}
    missing = pairs - len(counts)
    ledger.fault(run.fleet.faults, "race", racers=len(racers), pairs=pairs)
    run.allowed_states = ("succeeded", "cancelled")
    run.start()
    until = run.schedule(0, 200, 4.0)
    run.sleep_until(max(until, at + 1))
    result = run.verdict(run.settle())
    result["pairs"] = pairs
    result["pairs_not_one_active"] = len(doubles) + missing
    if doubles or missing:
        result["ok"] = False
        result["notes"].append(
            f"pairs with more than one active alarm: {doubles}; without one: {missing}"
        )
    return result


def race_child(pairs: int, go: float, at: float, seed: int) -> int:
    """One racer of :func:`uniqueness` (runs in its own process)."""
    from django.db import DatabaseError

    from django_alarms import alarms

    rng = random.Random(seed)
    order = list(range(pairs))
    rng.shuffle(order)
    due = datetime.fromtimestamp(at, timezone.utc)
    while ledger.real_time() < go:
        time.sleep(0.005)
    for index in order:
        mode = rng.choice(["error", "ignore", "replace"])
        try:
            alarms.schedule(
                "chaos",
                payload={"racer": os.getpid()},
                at=due,
                key=f"pair{index}",
                name="race",
                if_exists=mode,
            )
        except alarms.AlarmExists:
            pass
        except DatabaseError as exc:  # SQLite's lock timeout under the race: say so
            print(f"racer {os.getpid()} pair{index} {mode}: {exc}", file=sys.stderr)
            return 1
    return 0


def django_q(run: Run) -> dict[str, Any]:
    """The django-q2 executor: a real ``qcluster`` on Redis runs the handlers; a random
    ``run_alarms --executor django_q`` worker is killed every 2-4 s and replaced."""
    import redis

    name = f"chaos-{uuid.uuid4().hex[:8]}"
    run.fleet.env_extra.update(CHAOS_DJANGO_Q="1", CHAOS_Q_NAME=name, CHAOS_Q_REDIS=REDIS)
    client = redis.Redis.from_url(REDIS)
    try:
        client.ping()
    except redis.RedisError as exc:
        raise BatteryError(f"Redis is not reachable at {REDIS}: {exc}") from None

    def clean() -> None:
        keys = list(client.scan_iter(match=f"django_q:{name}:*"))
        if keys:
            client.delete(*keys)

    clean()
    try:
        cluster = run.fleet.spawn("qcluster", "qcluster")
        deadline = time.monotonic() + 90
        while "running" not in cluster.output() or "Q Cluster" not in cluster.output():
            if not cluster.alive() or time.monotonic() > deadline:
                raise BatteryError(f"qcluster did not start:\n{cluster.output()[-3000:]}")
            time.sleep(0.2)
        run.workers = 2
        run.start(None, "--executor", "django_q")
        herd, stream, seconds = run.sizes
        until = run.schedule(herd // 2, stream // 2, seconds, lead=1.0)

        def act() -> None:
            victim = run.rng.choice(run.fleet.workers())
            run.fleet.signal(victim, signal.SIGKILL, "kill")
            time.sleep(run.rng.uniform(0.3, 1.0))
            run.keep(run.workers, "--executor", "django_q")

        run.fault_loop(until, (2.0, 4.0), act)
        run.keep(run.workers, "--executor", "django_q")
        return run.verdict(run.settle(timeout=90))
    finally:
        run.fleet.close()
        clean()


SCENARIOS: dict[str, Callable[[Run], dict[str, Any]]] = {
    "claim_race": claim_race,
    "kill9": kill9,
    "sigterm": sigterm,
    "freeze": freeze,
    "outage": outage,
    "skew": skew,
    "uniqueness": uniqueness,
    "ambiguous": ambiguous,
    "django_q": django_q,
}

#: Which database each scenario runs on by default, per mode.
SMOKE = [
    ("claim_race", "sqlite"),
    ("kill9", "postgres"),
    ("freeze", "postgres"),
    ("outage", "pgown"),
    ("ambiguous", "postgres"),
    ("uniqueness", "sqlite"),
    ("django_q", "postgres"),
]
FULL = [
    ("claim_race", "sqlite"),
    ("claim_race", "postgres"),
    ("kill9", "postgres"),
    ("kill9", "sqlite"),
    ("sigterm", "postgres"),
    ("freeze", "postgres"),
    ("outage", "pgown"),
    ("skew", "postgres"),
    ("uniqueness", "postgres"),
    ("uniqueness", "sqlite"),
    ("ambiguous", "postgres"),
    ("ambiguous", "sqlite"),
    ("django_q", "postgres"),
]


def tmpdir(base: Path, name: str, db: str) -> Path:
    path = base / f"{name}-{db}"
    path.mkdir(parents=True, exist_ok=True)
    return path
