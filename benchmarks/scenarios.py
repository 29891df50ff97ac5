"""The scenarios of issue 6 and the baselines they are compared with.

Each scenario function takes a :class:`Context`, runs real ``run_alarms`` subprocesses against
the benchmark database, and appends :class:`~benchmarks.report.Figure` objects. The alarm tables
are emptied before each scenario. A scenario raises :class:`HarnessError` only when the harness
or the worker broke (an alarm not delivered, delivered twice, a worker that died), never because
of a number.
"""

from __future__ import annotations

import importlib.util
import json
import multiprocessing
import os
import random
import shutil
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from benchmarks import raw
from benchmarks.harness import (
    ROOT,
    CpuMark,
    Database,
    HarnessError,
    Proc,
    alarm_template,
    analyze,
    attempt_template,
    checkpoint,
    median,
    percentile,
    read_timing,
    reset,
    sleep_until,
    spawn,
    start_workers,
    stop_all,
    vacuum,
    wait_for,
    worker_env,
)
from benchmarks.report import Figure, Goal

_T0 = time.monotonic()
PG = ("postgresql",)
ANY = ("postgresql", "sqlite")
MB = 1024 * 1024


@dataclass(frozen=True)
class Sizes:
    herd: int
    precision: int
    precision_span: float
    steady_rate: int
    steady_seconds: float
    schedule_loop: int
    schedule_many: int
    schedule_batches: tuple[int, ...]
    memory_window: int
    scale_small: int
    scale_big: int
    scale_window: int
    scale_herd: int
    bulk: int
    commit_rows: int
    ceiling: int
    django_q_herd: int
    purge: int  # finished alarms, most of them older than the purge's cutoff


SIZES = {
    "smoke": Sizes(
        herd=500,
        precision=20,
        precision_span=4,
        steady_rate=50,
        steady_seconds=3,
        schedule_loop=200,
        schedule_many=2_000,
        schedule_batches=(500,),
        memory_window=2_000,
        scale_small=1_000,
        scale_big=10_000,
        scale_window=100,
        scale_herd=300,
        bulk=5_000,
        commit_rows=100,
        ceiling=500,
        django_q_herd=200,
        purge=2_000,
    ),
    "quick": Sizes(
        herd=10_000,
        precision=200,
        precision_span=20,
        steady_rate=200,
        steady_seconds=15,
        schedule_loop=1_000,
        schedule_many=50_000,
        schedule_batches=(1_000, 10_000),
        memory_window=100_000,
        scale_small=10_000,
        scale_big=100_000,
        scale_window=1_000,
        scale_herd=2_000,
        bulk=100_000,
        commit_rows=500,
        ceiling=10_000,
        django_q_herd=2_000,
        purge=100_000,
    ),
    "full": Sizes(
        herd=100_000,
        precision=200,
        precision_span=60,
        steady_rate=200,
        steady_seconds=60,
        schedule_loop=3_000,
        schedule_many=200_000,
        schedule_batches=(1_000, 10_000),
        memory_window=100_000,
        scale_small=10_000,
        scale_big=1_000_000,
        scale_window=1_000,
        scale_herd=5_000,
        bulk=200_000,
        commit_rows=1_000,
        ceiling=100_000,
        django_q_herd=2_000,
        purge=1_000_000,
    ),
}

SCENARIOS = (
    "herd",
    "recurring",
    "tasks",
    "precision",
    "steady",
    "metrics",
    "scheduling",
    "memory",
    "purge",
    "django_q",
    "celery",
)


@dataclass
class Context:
    db: Database
    sizes: Sizes
    mode: str
    run: int
    runs: int
    profile: Path | None = None
    figures: list[Figure] = field(default_factory=list)
    base: dict[str, float] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def vendor(self) -> str:
        return self.db.vendor

    def say(self, text: str) -> None:
        elapsed = time.monotonic() - _T0
        print(
            f"[{elapsed:6.1f}s run {self.run}/{self.runs} {self.db.label}] {text}",
            file=sys.stderr,
            flush=True,
        )

    def add(self, fig: Figure) -> Figure:
        self.figures.append(fig)
        return fig

    def path(self, name: str) -> Path:
        return self.db.tmpdir / f"{name}-run{self.run}"


# -- helpers -----------------------------------------------------------------------------------


def _now() -> datetime:
    return datetime.now(timezone.utc)


def _at(epoch: float) -> datetime:
    return datetime.fromtimestamp(epoch, timezone.utc)


def _count(state: str) -> int:
    from django_alarms.models import Alarm

    return Alarm.objects.filter(state=state).count()


def _attempts_written() -> Callable[[], int]:
    """A cheap gauge of the attempts written since it was made: the span of the attempt ids
    above the newest one at the start (two probes of the primary key). Ids only grow and may
    skip (a transaction that rolled back), so the span never counts fewer attempts than were
    written. The span, not the newest id: emptying the table does not restart the ids.

    Waiting for a herd, the harness asks often. ``COUNT(*)`` of the succeeded alarms costs
    the server about 20 ms on 100,000 rows: asked four times a second, that is CPU taken from
    the worker and counted as the worker's server CPU. The gauge gates the exact count."""
    from django.db.models import Max, Min

    from django_alarms.models import Attempt

    start = Attempt.objects.aggregate(newest=Max("id"))["newest"] or 0

    def written() -> int:
        span = Attempt.objects.filter(id__gt=start).aggregate(low=Min("id"), high=Max("id"))
        if span["low"] is None:
            return 0
        return int(span["high"]) - int(span["low"]) + 1

    return written


def _all_succeeded(n: int) -> Callable[[], bool]:
    """A predicate for :func:`wait_for`: ``n`` alarms succeeded (counted exactly only once
    at least ``n`` attempts have been written)."""
    written = _attempts_written()
    return lambda: written() >= n and _count("succeeded") >= n


def _delivered_exactly_once(n: int, what: str, *, recurring: bool = False) -> dict[str, Any]:
    """Every alarm succeeded with exactly one attempt, and that attempt is ``ok`` (recurring:
    every alarm had one attempt, ``ok``, and is scheduled again for its next occurrence)."""
    from django.db.models import Count, Max, Min

    from django_alarms.models import Alarm, Attempt

    alarms = Alarm.objects.aggregate(total=Count("id"), last=Max("finished_at"))
    if recurring:
        alarms["last"] = Attempt.objects.aggregate(last=Max("finished_at"))["last"]
        again = Alarm.objects.filter(state="scheduled", attempts=1, occurrence_at__isnull=False)
        ok = again.count()
    else:
        ok = Alarm.objects.filter(state="succeeded", attempts=1).count()
    attempts = Attempt.objects.aggregate(
        total=Count("id"),
        alarms=Count("alarm_id", distinct=True),
        first=Min("started_at"),
        last=Max("started_at"),
    )
    good = Attempt.objects.filter(outcome="ok").count()
    by_worker = dict(
        Attempt.objects.values_list("worker").annotate(n=Count("id")).values_list("worker", "n")
    )
    if not (alarms["total"] == ok == attempts["total"] == attempts["alarms"] == good == n):
        raise HarnessError(
            f"{what}: expected {n} alarms delivered exactly once; found {alarms['total']} "
            f"alarms, {ok} succeeded with one attempt, {attempts['total']} attempts for "
            f"{attempts['alarms']} alarms, {good} ok"
        )
    return {
        "last_finished": alarms["last"],
        "first_started": attempts["first"],
        "last_started": attempts["last"],
        "by_worker": sorted(by_worker.values(), reverse=True),
    }


def _all_attempted(n: int) -> Callable[[], bool]:
    """A predicate for :func:`wait_for`: ``n`` attempts ended ``ok`` (recurring alarms do not
    end: each goes on to its next occurrence)."""
    from django_alarms.models import Attempt

    written = _attempts_written()
    return lambda: written() >= n and Attempt.objects.filter(outcome="ok").count() >= n


def _schedule_recurring_at(n: int, at: datetime, handler: str = "bench_noop") -> float:
    """``n`` recurring alarms on a cron schedule whose next occurrence is ``at`` (every minute
    at its second): one through ``schedule_recurring``, the others copies of its row, written
    in one transaction the way ``schedule_many`` writes (COPY on PostgreSQL): the scenario
    measures the worker, not the scheduling, and the ORM's ``bulk_create`` of 100,000 rows
    took longer than the herd's lead on a slow day."""
    from django.db import transaction

    from django_alarms import alarms
    from django_alarms.engines import get_engine
    from django_alarms.models import Alarm

    began = time.perf_counter()
    first = alarms.schedule_recurring(
        handler, {"n": 0}, cron=f"{at.second} * * * * *", start_at=at - timedelta(seconds=0.5)
    )
    if first.due_at != at:
        raise HarnessError(f"recurring herd: first occurrence {first.due_at}, expected {at}")
    template = {
        f.attname: getattr(first, f.attname)
        for f in Alarm._meta.concrete_fields
        if f.attname not in ("id", "payload", "created_at", "updated_at")
    }
    now = _now()
    copies = [
        Alarm(**template, payload={"n": i}, created_at=now, updated_at=now) for i in range(1, n)
    ]
    with transaction.atomic():
        get_engine("default").insert_alarms(copies, [f'{{"n": {i}}}' for i in range(1, n)])
    return time.perf_counter() - began


class _RolledBack(Exception):
    pass


def _pilot_rate(insert: Callable[[int, datetime], float], n: int = 500) -> float:
    """Rows per second that ``insert`` writes, from ``n`` written and rolled back, halved
    for safety: the lead of a herd whose insert speed varies (a herd inserted after its due
    time measures the insert, not the worker)."""
    from django.db import transaction

    took = 0.0
    try:
        with transaction.atomic():
            took = insert(n, _at(time.time() + 3600))
            raise _RolledBack
    except _RolledBack:
        pass
    return n / max(took, 1e-6) / 2


def _schedule_many_at(n: int, at: datetime, handler: str = "bench_noop") -> float:
    from django_alarms import alarms

    specs = [alarms.Spec(handler, {"n": i}, at=at) for i in range(n)]
    began = time.perf_counter()
    alarms.schedule_many(specs)
    return time.perf_counter() - began


def _enqueue_tasks_at(n: int, at: datetime) -> float:
    """``n`` Django tasks enqueued one by one with ``Task.enqueue`` (in one transaction, as a
    view enqueueing many would), all with ``run_after=at``."""
    from django.db import transaction

    from benchmarks.benchapp.tasks import bench_noop_task

    deferred = bench_noop_task.using(run_after=at)
    began = time.perf_counter()
    with transaction.atomic():
        for i in range(n):
            deferred.enqueue(i)
    return time.perf_counter() - began


def _lateness(lines: list[tuple[str, float, float, int, int]]) -> list[float]:
    return [(started - due) * 1000 for _, due, started, _, _ in lines]


def _check_timing(lines: list[tuple[str, float, float, int, int]], n: int, what: str) -> None:
    ids = [line[0] for line in lines]
    if len(ids) != n or len(set(ids)) != n:
        raise HarnessError(
            f"{what}: expected {n} handler calls, one per alarm; got {len(ids)} calls for "
            f"{len(set(ids))} alarms"
        )


def _profiler(ctx: Context, proc: Proc, name: str) -> subprocess.Popen[bytes] | None:
    """Attach py-spy to a worker (``--profile``): raw collapsed stacks per thread."""
    if ctx.profile is None:
        return None
    spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not Path(spy).exists():
        ctx.say("py-spy not found: no profile")
        return None
    ctx.profile.mkdir(parents=True, exist_ok=True)
    out = ctx.profile / f"{name}-{ctx.vendor}-run{ctx.run}.txt"
    return subprocess.Popen(
        # --gil: only the samples of the thread holding the GIL, i.e. where the worker's one
        # core of Python goes (waits for the GIL, locks and the network are left out).
        [
            spy,
            "record",
            "--pid",
            str(proc.pid),
            "--rate",
            "250",
            "--threads",
            "--gil",
            "--format",
            "raw",
            "--output",
            str(out),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def _end_profile(spy: subprocess.Popen[bytes] | None) -> None:
    if spy is not None:
        try:
            spy.wait(30)  # py-spy stops when the worker exits
        except subprocess.TimeoutExpired:
            spy.terminate()
            spy.wait(10)


def _timer_during(seconds: float, spacing: float = 0.05) -> subprocess.Popen[str]:
    """The timer floor measured *while* a scenario runs, in a process of its own: the same
    machine noise as the worker sees (the machine is shared)."""
    n = max(20, int(seconds / spacing))
    return subprocess.Popen(
        [sys.executable, "-m", "benchmarks.raw", str(n), str(spacing)],
        stdout=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).resolve().parent.parent,
    )


def _timer_result(proc: subprocess.Popen[str]) -> dict[str, float]:
    out, _ = proc.communicate(timeout=600)
    return dict(json.loads(out))


def _rss_sample(proc: Proc, seconds: float = 1.0) -> float:
    """The largest RSS (MB) over ``seconds``."""
    best = 0
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        best = max(best, proc.rss())
        time.sleep(0.1)
    return best / MB


# -- baselines ---------------------------------------------------------------------------------


def baselines(ctx: Context) -> None:
    """The physical limits of this machine and database, measured in this run."""
    db, sizes = ctx.db, ctx.sizes
    template = alarm_template()
    reset(db)

    ctx.say("baseline: timer floor (plain Python Event.wait wake-ups)")
    out = subprocess.run(
        [sys.executable, "-m", "benchmarks.raw", "200"],
        capture_output=True,
        text=True,
        check=True,
        cwd=Path(__file__).resolve().parent.parent,
    )
    floor = json.loads(out.stdout)
    for q in ("p50", "p99", "max"):
        ctx.base[f"timer_{q}"] = floor[q]
        ctx.add(
            Figure(f"baseline.timer.{q}", f"baseline: timer wake-up lateness {q}", floor[q], "ms")
        )

    ctx.say("baseline: RSS of a bare Django process (manage.py bench_idle)")
    idle = spawn(db, ["bench_idle"], name="bench-idle")
    try:
        wait_for(lambda: "ready" in idle.output(), timeout=60, procs=[idle], what="bench_idle")
        time.sleep(1.0)
        ctx.base["django_rss"] = _rss_sample(idle)
    finally:
        stop_all([idle])
    ctx.add(
        Figure(
            "baseline.django_rss", "baseline: bare Django process RSS", ctx.base["django_rss"], "MB"
        )
    )

    ctx.say(f"baseline: bulk insert of {sizes.bulk:,} rows")
    later = _now() + timedelta(days=30)
    spent = raw.fill(db.target, template, sizes.bulk, lambda i: later)
    ctx.base["bulk"] = sizes.bulk / spent
    ctx.add(
        Figure(
            "baseline.bulk", "baseline: bulk insert (COPY / executemany)", ctx.base["bulk"], "/s"
        )
    )
    reset(db)

    ctx.say(f"baseline: one commit per row ({sizes.commit_rows:,} rows)")
    ctx.base["commit"] = raw.commit_per_row(db.target, template, sizes.commit_rows)
    ctx.add(
        Figure("baseline.commit", "baseline: one INSERT + COMMIT per row", ctx.base["commit"], "/s")
    )
    reset(db)

    for procs in (1, 2):
        ctx.say(
            f"baseline: raw-SQL claim+complete ceiling, {procs} process(es), {sizes.ceiling:,} rows"
        )
        rate, cpu = _ceiling(ctx, template, procs)
        ctx.base[f"ceiling_{procs}"] = rate
        ctx.base[f"ceiling_cpu_{procs}"] = cpu
        plural = "es" if procs > 1 else ""
        ctx.add(
            Figure(
                f"baseline.ceiling.{procs}p",
                f"baseline: raw-SQL claim+complete, {procs} process{plural}",
                rate,
                "/s",
                extra={
                    "client_cpu_us_per_row": cpu * 1e6,
                    "machine_busy": ctx.base[f"ceiling_busy_{procs}"],
                    "server_cpu_us_per_row": ctx.base[f"ceiling_server_{procs}"] * 1e6,
                },
            )
        )
        reset(db)


def _ceiling(ctx: Context, template: raw.Template, procs: int) -> tuple[float, float]:
    """Rows/s of ``procs`` raw-SQL drainers on ``sizes.ceiling`` due rows, and their client CPU
    seconds per row."""
    db, n = ctx.db, ctx.sizes.ceiling
    past = _now() - timedelta(seconds=1)
    raw.fill(db.target, template, n, lambda i: past)
    analyze(db)
    checkpoint(db)
    spawn_ctx = multiprocessing.get_context("spawn")
    start = spawn_ctx.Event()
    marked = spawn_ctx.Event()
    results = spawn_ctx.Queue()
    children = [
        spawn_ctx.Process(
            target=raw.drain, args=(db.target, attempt_template(), start, results, marked)
        )
        for _ in range(procs)
    ]
    for child in children:
        child.start()
    time.sleep(1.0 if ctx.mode != "smoke" else 0.5)  # imports and connections, not timed
    mark = CpuMark.now()
    start.set()
    out = [results.get(timeout=600) for _ in children]
    # The drainers keep their connections until this mark, so that their server processes
    # are still there to be counted.
    busy, server = CpuMark.now().since(mark)
    marked.set()
    ctx.base[f"ceiling_busy_{procs}"] = busy
    ctx.base[f"ceiling_server_{procs}"] = server / n
    for child in children:
        child.join(60)
    began = min(o[0] for o in out)
    ended = max(o[1] for o in out)
    done = sum(o[2] for o in out)
    cpu = sum(o[3] for o in out)
    if done != n:
        raise HarnessError(f"raw-SQL ceiling: drained {done} of {n} rows")
    return n / (ended - began), cpu / n


# -- 1. herd -------------------------------------------------------------------------------------


def herd(ctx: Context) -> None:
    n = ctx.sizes.herd
    drains: dict[int, float] = {}
    for workers in (1, 2):
        drains[workers] = _herd(ctx, n, workers)
    ctx.add(
        Figure(
            "herd.scaling",
            "herd: drain 2 workers / 1 worker",
            drains[2] / drains[1],
            "x",
            baseline=ctx.base["ceiling_2"] / ctx.base["ceiling_1"],
            baseline_label="raw SQL 2p/1p",
            goals=(Goal("value", ">=", 1.5, label=">= 1.5x", vendors=PG),),
        )
    )


def _herd(
    ctx: Context,
    n: int,
    workers: int,
    *,
    executor: str = "inline",
    key: str = "herd",
    env: dict[str, str] | None = None,
    recurring: bool = False,
    tasks: bool = False,
) -> float:
    db = ctx.db
    reset(db)
    label = f"{workers} worker{'s' if workers > 1 else ''}"
    procs = start_workers(db, workers, "--executor", executor, name=f"{key}{workers}w-", env=env)
    spy = None
    try:
        # Due far enough ahead that the rows are written and armed (the insert's NOTIFY wakes
        # the workers, which read them through the change feed) before they fall due.
        rate = 10_000 if ctx.vendor == "postgresql" else 2_000
        if tasks:
            # One INSERT per enqueue() call: how fast that goes depends on the day.
            rate = _pilot_rate(_enqueue_tasks_at)
        lead = 3.0 + n / rate
        due = time.time() + lead
        ctx.say(f"{key}: {n:,} alarms due at one instant, {label} ({executor})")
        if recurring:
            due = float(int(due) + 1)  # a cron schedule fires on whole seconds
            done = _all_attempted(n)
            insert = _schedule_recurring_at(n, _at(due))
        elif tasks:
            done = _all_succeeded(n)
            insert = _enqueue_tasks_at(n, _at(due))
        else:
            done = _all_succeeded(n)
            insert = _schedule_many_at(n, _at(due))
        analyze(db)
        checkpoint(db)
        margin = due - time.time()
        # The CPU figure and the profile cover the drain only (from just before the due time,
        # when the worker has armed everything), not the arming of the herd.
        sleep_until(due - 0.2)
        cpu0 = [p.cpu() for p in procs]
        mark = CpuMark.now()
        if executor == "inline":
            spy = _profiler(ctx, procs[0], f"{key}-{workers}w")
        wait_for(
            done,
            timeout=lead + 60 + n / 100,
            procs=procs,
            what=f"{key}: {n} alarms to succeed",
            every=0.25,
        )
        cpu = sum(p.cpu() - c for p, c in zip(procs, cpu0, strict=True))
        busy, server = CpuMark.now().since(mark)
    finally:
        stop_all(procs)
        _end_profile(spy)
    facts = _delivered_exactly_once(n, f"{key} {label}", recurring=recurring)
    drain_s = facts["last_finished"].timestamp() - due
    last_late = facts["last_started"].timestamp() - due
    first_late = facts["first_started"].timestamp() - due
    drain = n / drain_s
    ceiling = ctx.base[f"ceiling_{workers}"]
    note = ""
    if margin < 1.0:
        note = f"insert finished only {margin:.2f}s before the due time"
        ctx.say(f"{key}: WARNING: {note}: the drain includes waiting for the insert")
    extra = {
        "n": n,
        "drain_seconds": drain_s,
        "first_lateness_ms": first_late * 1000,
        "insert_seconds": insert,
        "margin_seconds": margin,
        "worker_cpu_seconds": cpu,
        "machine_busy": busy,
        "server_cpu_seconds": server,
        "per_worker": facts["by_worker"],
    }
    goals: tuple[Goal, ...] = ()
    if executor == "inline" and workers == 1 and not recurring and not tasks:
        goals = (
            Goal("value", ">=", 15_000, label=">= 15,000/s", vendors=PG),
            Goal("ratio", ">=", 0.25, label=">= 25% of ceiling", vendors=PG),
            Goal("value", ">=", 20_000, label="stretch 20,000/s", vendors=PG),
        )
    prefix = f"{key}.{workers}w" if executor == "inline" else f"{key}.{executor}.{workers}w"
    title = key if executor == "inline" else f"{key} ({executor})"
    ctx.add(
        Figure(
            f"{prefix}.drain",
            f"{title}: {n:,} drain, {label}",
            drain,
            "/s",
            baseline=ceiling,
            baseline_label=f"raw SQL {workers}p",
            goals=goals,
            note=note,
            extra=extra,
        )
    )
    # The time the raw SQL needs for the same n rows is the floor of the last one's lateness.
    ctx.add(
        Figure(
            f"{prefix}.last",
            f"{title}: lateness of the last, {label}",
            last_late,
            "s",
            baseline=n / ceiling,
            baseline_label=f"n / raw SQL {workers}p",
        )
    )
    ctx.add(
        Figure(
            f"{prefix}.cpu",
            f"{title}: worker CPU per alarm, {label}",
            cpu / n * 1e6,
            "us",
            baseline=ctx.base[f"ceiling_cpu_{workers}"] * 1e6,
            baseline_label="raw SQL client CPU/row",
        )
    )
    if ctx.vendor == "postgresql":
        # How much of the machine the drain used, and the server's share: where one worker
        # already keeps the cores busy, a second one has little left to add.
        ctx.add(
            Figure(
                f"{prefix}.busy",
                f"{title}: machine CPU busy (all cores), {label}",
                busy * 100,
                "%",
                baseline=ctx.base[f"ceiling_busy_{workers}"] * 100,
                baseline_label=f"raw SQL {workers}p",
            )
        )
        ctx.add(
            Figure(
                f"{prefix}.server",
                f"{title}: PostgreSQL CPU per alarm, {label}",
                server / n * 1e6,
                "us",
                baseline=ctx.base[f"ceiling_server_{workers}"] * 1e6,
                baseline_label=f"raw SQL {workers}p server CPU/row",
            )
        )
    vacuum(db)
    return drain


# -- 1b. recurring herd -------------------------------------------------------------------------


def _one_off_drain(ctx: Context, n: int) -> float:
    """The one-worker drain of a one-off herd of ``n`` in this run: the herd scenario's, or
    measured now when it did not run (the baseline of the recurring and tasks herds)."""
    measured = next(
        (f.value for f in ctx.figures if f.key == "herd.1w.drain" and f.extra.get("n") == n),
        None,
    )
    return measured if measured is not None else _herd(ctx, n, 1)


def recurring(ctx: Context) -> None:
    """A herd of recurring cron alarms, next to a one-off herd of the same size in the same
    run: what a recurring delivery costs the worker beyond a one-off one (its schedule is
    decoded, and its next occurrence computed and written)."""
    n = ctx.sizes.herd
    one_off = _one_off_drain(ctx, n)
    drain = _herd(ctx, n, 1, key="recurring", recurring=True)
    ctx.add(
        Figure(
            "recurring.vs_one_off",
            f"recurring herd: {n:,} drain against the one-off herd, 1 worker",
            drain,
            "/s",
            baseline=one_off,
            baseline_label="one-off herd, 1 worker",
            goals=(Goal("ratio", ">=", 0.8, label=">= 0.8x of one-off", vendors=PG),),
        )
    )


# -- 1c. Django tasks ----------------------------------------------------------------------------


def tasks(ctx: Context) -> None:
    """A herd of Django tasks (``Task.enqueue`` with ``run_after``, django-alarms' Tasks
    backend) next to the one-off herd of the same size in the same run: what the Tasks API
    costs a delivery (the task's result object, its signals, its JSON return value)."""
    n = ctx.sizes.herd
    one_off = _one_off_drain(ctx, n)
    drain = _herd(ctx, n, 1, key="tasks", tasks=True)
    ctx.add(
        Figure(
            "tasks.vs_schedule",
            f"Django tasks herd: {n:,} drain against the alarms.schedule herd, 1 worker",
            drain,
            "/s",
            baseline=one_off,
            baseline_label="one-off herd, 1 worker",
            goals=(Goal("ratio", ">=", 0.8, label=">= 0.8x of schedule()", vendors=PG),),
        )
    )


# -- 2. precision --------------------------------------------------------------------------------


def precision(
    ctx: Context,
    *,
    executor: str = "inline",
    key: str = "precision",
    env: dict[str, str] | None = None,
    log: Path | None = None,
) -> list[float]:
    """``log``: the file the handler writes to (where the handler runs, in a django-q
    cluster, ``BENCH_TIMING_LOG`` must already name it)."""
    db, n, span = ctx.db, ctx.sizes.precision, ctx.sizes.precision_span
    from django_alarms import alarms

    reset(db)
    log = log or ctx.path(f"timing-{key}")
    log.unlink(missing_ok=True)
    rng = random.Random(6000 + ctx.run)
    start = time.time() + 8.0  # after the worker's start-up
    dues = sorted(start + rng.random() * span for _ in range(n))
    before = dues[0::2]  # scheduled before the worker starts
    during = dues[1::2]  # scheduled by this process while the worker runs
    leads = [0.3 + rng.random() * 2.7 for _ in during]
    ctx.say(
        f"{key}: {n} alarms at distinct times over {span:g}s ({executor}); half scheduled "
        "before the worker starts, half while it runs (0.3-3 s ahead)"
    )
    prescheduled = {str(alarms.schedule("bench_timing", at=_at(due)).id) for due in before}
    timer = _timer_during(max(dues) - time.time())
    procs = start_workers(
        db,
        1,
        "--executor",
        executor,
        name=f"{key}-",
        env={"BENCH_TIMING_LOG": str(log), **(env or {})},
    )
    try:
        if time.time() > start - 0.5:
            raise HarnessError(f"{key}: the worker took too long to start")
        plan = sorted((due - lead, due) for due, lead in zip(during, leads, strict=True))
        for when, due in plan:
            sleep_until(when)
            alarms.schedule("bench_timing", at=_at(due))
        wait_for(
            lambda: len(read_timing(log)) >= n,
            timeout=max(dues) - time.time() + 60,
            procs=procs,
            what=f"{key}: {n} handler calls",
            every=0.2,
        )
        time.sleep(0.3)
    finally:
        stop_all(procs)
    floor = _timer_result(timer)
    lines = read_timing(log)
    _check_timing(lines, n, key)
    late = _lateness(lines)
    early = [x for x in late if x < 0]
    late_before = [(s - d) * 1000 for i, d, s, _, _ in lines if i in prescheduled]
    late_during = [(s - d) * 1000 for i, d, s, _, _ in lines if i not in prescheduled]
    extra = {
        "n": n,
        "early": len(early),
        "p99_scheduled_before_start": percentile(late_before, 99),
        "p99_scheduled_while_running": percentile(late_during, 99),
        "min_ms": min(late),
    }
    p50, p99, top = percentile(late, 50), percentile(late, 99), max(late)
    title = key if executor == "inline" else f"{key} ({executor})"
    prefix = key if executor == "inline" else f"{key}.{executor}"
    goals = {
        "p50": (Goal("value", "<=", 1.0, label="<= 1 ms", vendors=PG),),
        "p99": (
            Goal("value", "<=", 5.0, label="<= 5 ms", vendors=PG),
            Goal("value", "<=", 50.0, label="<= 50 ms", vendors=("sqlite",)),
        ),
        "max": (Goal("value", "<=", 50.0, label="<= 50 ms", vendors=PG),),
    }
    for q, value in (("p50", p50), ("p99", p99), ("max", top)):
        ctx.add(
            Figure(
                f"{prefix}.{q}",
                f"{title}: lateness {q}",
                value,
                "ms",
                baseline=floor[q],
                baseline_label=f"timer {q} meanwhile",
                goals=goals[q] if executor == "inline" else (),
                extra=extra if q == "p99" else {},
                note=f"{len(early)} fired early" if early else "",
            )
        )
    return late


# -- 3. steady -----------------------------------------------------------------------------------


def _steady_load(
    ctx: Context, procs: list[Proc], log: Path, rate: int, seconds: float, what: str
) -> tuple[float, float, int]:
    """Schedule ``rate`` alarms a second for ``seconds``, each due 1 s later, and wait until
    the worker delivered them all. Returns the worker's CPU (% of one core) while it
    delivered, its RSS in MB, and the number of alarms."""
    from django_alarms import alarms

    tick = 0.1
    per_tick = max(1, round(rate * tick))
    ticks = int(seconds / tick)
    n = per_tick * ticks
    ahead = 1.0
    t0 = time.time() + 0.5
    cpu_start = wall_start = None
    for b in range(ticks):
        at = t0 + b * tick
        sleep_until(at)
        if cpu_start is None and time.time() >= t0 + ahead:
            cpu_start, wall_start = procs[0].cpu(), time.monotonic()
        alarms.schedule_many(
            [
                alarms.Spec("bench_timing", at=_at(at + ahead + k * tick / per_tick))
                for k in range(per_tick)
            ]
        )
    sleep_until(t0 + (ticks - 1) * tick + ahead + tick)
    if cpu_start is None or wall_start is None:
        cpu_start, wall_start = procs[0].cpu(), time.monotonic()
    cpu = (procs[0].cpu() - cpu_start) / (time.monotonic() - wall_start) * 100
    rss = procs[0].rss() / MB
    wait_for(
        lambda: len(read_timing(log)) >= n,
        timeout=60,
        procs=procs,
        what=f"{what}: {n} handler calls",
        every=0.2,
    )
    return cpu, rss, n


def steady(ctx: Context) -> None:
    db, rate, seconds = ctx.db, ctx.sizes.steady_rate, ctx.sizes.steady_seconds
    reset(db)
    log = ctx.path("timing-steady")
    log.unlink(missing_ok=True)
    per_tick = max(1, round(rate * 0.1))
    ctx.say(
        f"steady: {rate}/s for {seconds:g}s ({per_tick * int(seconds / 0.1):,} alarms; batches "
        f"of {per_tick} every 0.1s, each due 1s after it is scheduled)"
    )
    timer = _timer_during(seconds + 3)
    procs = start_workers(db, 1, name="steady-", env={"BENCH_TIMING_LOG": str(log)})
    spy = _profiler(ctx, procs[0], "steady")
    try:
        cpu, rss, n = _steady_load(ctx, procs, log, rate, seconds, "steady")
    finally:
        stop_all(procs)
        _end_profile(spy)
    floor = _timer_result(timer)
    lines = read_timing(log)
    _check_timing(lines, n, "steady")
    late = _lateness(lines)
    ctx.add(
        Figure(
            "steady.p50",
            f"steady {rate}/s: lateness p50",
            percentile(late, 50),
            "ms",
            baseline=floor["p50"],
            baseline_label="timer p50 meanwhile",
        )
    )
    ctx.add(
        Figure(
            "steady.p99",
            f"steady {rate}/s: lateness p99",
            percentile(late, 99),
            "ms",
            baseline=floor["p99"],
            baseline_label="timer p99 meanwhile",
            goals=(Goal("value", "<=", 20.0, label="<= 20 ms", vendors=ANY),),
            extra={
                "max_ms": max(late),
                "min_ms": min(late),
                "rss_mb": rss,
                "early": sum(1 for x in late if x < 0),
            },
            note=f"{sum(1 for x in late if x < 0)} of {n} fired early (min {min(late):.2f} ms)"
            if min(late) < 0
            else "",
        )
    )
    ctx.add(
        Figure(
            "steady.cpu",
            f"steady {rate}/s: worker CPU (% of one core)",
            cpu,
            "%",
            baseline=rate * ctx.base["ceiling_cpu_1"] * 100,
            baseline_label="raw SQL client CPU at that rate",
            goals=(Goal("value", "<=", 25.0, label="<= 25%", vendors=ANY),),
        )
    )


# -- 3b. the cost of metrics ---------------------------------------------------------------------


def _free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _scrape(port: int) -> dict[str, float]:
    """The samples of a worker's /metrics, by name and labels (as text)."""
    import urllib.request

    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        text = response.read().decode()
    return {
        f"{sample.name}{sorted(sample.labels.items())}": sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def metrics(ctx: Context) -> None:
    """The steady stream with and without ``--metrics-port``, in the same run, alternating
    (off, on, on, off, ...): the worker's CPU with metrics against without, while a scraper
    reads the endpoint every second (Prometheus's usual interval is 15 to 60 s)."""
    import threading

    db, rate, seconds = ctx.db, ctx.sizes.steady_rate, ctx.sizes.steady_seconds
    pairs = 1 if seconds <= 5 else 2 if seconds <= 20 else 3
    order = [
        on for pair in range(pairs) for on in ((False, True) if pair % 2 == 0 else (True, False))
    ]
    ctx.say(f"metrics: steady {rate}/s for {seconds:g}s, {len(order)} runs alternating off/on")
    cpu: dict[bool, list[float]] = {False: [], True: []}
    late: dict[bool, list[float]] = {False: [], True: []}
    scrapes = 0
    for index, on in enumerate(order):
        reset(db)
        log = ctx.path(f"timing-metrics-{index}")
        log.unlink(missing_ok=True)
        port = _free_port()
        args = ("--metrics-port", f"127.0.0.1:{port}") if on else ()
        procs = start_workers(
            db, 1, *args, name=f"metrics-{index}-", env={"BENCH_TIMING_LOG": str(log)}
        )
        stop = threading.Event()

        def scraper(port: int = port, stop: threading.Event = stop) -> None:
            nonlocal scrapes
            while not stop.wait(1.0):
                _scrape(port)
                scrapes += 1

        thread = threading.Thread(target=scraper, daemon=True) if on else None
        try:
            if thread is not None:
                thread.start()
            used, _, n = _steady_load(ctx, procs, log, rate, seconds, "metrics")
            if on:
                found = _scrape(port)
                counted = sum(
                    v for k, v in found.items() if k.startswith("django_alarms_attempts_total")
                )
                if counted != n:
                    raise HarnessError(f"metrics: the worker counted {counted:g} attempts of {n}")
        finally:
            stop.set()
            if thread is not None:
                thread.join(5)
            stop_all(procs)
        lines = read_timing(log)
        _check_timing(lines, n, "metrics")
        cpu[on].append(used)
        late[on].append(percentile(_lateness(lines), 99))
    # Means over the runs: the CPU of one run without metrics varies by more than the cost
    # measured (14.1 to 16.4 % at 200/s in one run of --full).
    with_metrics, without = statistics.fmean(cpu[True]), statistics.fmean(cpu[False])
    ctx.add(
        Figure(
            "metrics.cpu",
            f"steady {rate}/s with --metrics-port: worker CPU (% of one core)",
            with_metrics,
            "%",
            baseline=without,
            baseline_label="the same without metrics, same run",
            goals=(Goal("ratio", "<=", 1.10, label="within 10 %", vendors=ANY),),
            extra={"on": cpu[True], "off": cpu[False], "order": order, "scrapes": scrapes},
        )
    )
    ctx.add(
        Figure(
            "metrics.p99",
            f"steady {rate}/s with --metrics-port: lateness p99",
            statistics.fmean(late[True]),
            "ms",
            baseline=statistics.fmean(late[False]),
            baseline_label="the same without metrics, same run",
            extra={"on": late[True], "off": late[False]},
        )
    )


# -- 4. scheduling -------------------------------------------------------------------------------


def scheduling(ctx: Context) -> None:
    from django_alarms import alarms
    from django_alarms.models import Alarm

    db, sizes = ctx.db, ctx.sizes
    reset(db)
    k = sizes.schedule_loop
    rounds = 4
    per = max(1, k // rounds)
    ctx.say(
        f"scheduling: schedule() vs Model.objects.create(), {per * rounds:,} each, "
        f"interleaved in {rounds} rounds"
    )
    spent = {"create": 0.0, "schedule": 0.0}
    later = _now() + timedelta(hours=1)

    def create_loop() -> float:
        began = time.perf_counter()
        for i in range(per):
            Alarm.objects.create(
                handler="bench_noop", payload={"n": i}, due_at=later, max_attempts=3
            )
        return time.perf_counter() - began

    def schedule_loop() -> float:
        began = time.perf_counter()
        for i in range(per):
            alarms.schedule("bench_noop", {"n": i}, at=later)
        return time.perf_counter() - began

    for r in range(rounds):
        order: list[tuple[str, Callable[[], float]]] = [
            ("create", create_loop),
            ("schedule", schedule_loop),
        ]
        for name, loop in order if r % 2 == 0 else reversed(order):
            spent[name] += loop()
    create_rate = per * rounds / spent["create"]
    schedule_rate = per * rounds / spent["schedule"]
    ctx.base["create"] = create_rate
    ctx.add(Figure("baseline.create", "baseline: Model.objects.create() loop", create_rate, "/s"))
    ctx.add(
        Figure(
            "scheduling.schedule",
            "scheduling: schedule() loop",
            schedule_rate,
            "/s",
            baseline=create_rate,
            baseline_label="create() loop",
            goals=(Goal("ratio", ">=", 0.8, label=">= 80% of create()", vendors=ANY),),
        )
    )
    reset(db)
    for size in sizes.schedule_batches:
        total = max(size, sizes.schedule_many // size * size)
        ctx.say(f"scheduling: schedule_many(), {total:,} alarms in batches of {size:,}")
        spent_many = 0.0
        for start in range(0, total, size):
            specs = [alarms.Spec("bench_noop", {"n": start + i}, at=later) for i in range(size)]
            began = time.perf_counter()
            alarms.schedule_many(specs)
            spent_many += time.perf_counter() - began
        ctx.add(
            Figure(
                f"scheduling.many.{size}",
                f"scheduling: schedule_many(), batches of {size:,}",
                total / spent_many,
                "/s",
                baseline=ctx.base["bulk"],
                baseline_label="bulk insert",
                goals=(
                    Goal("value", ">=", 50_000, label=">= 50,000/s", vendors=PG),
                    Goal("ratio", ">=", 0.30, label=">= 30% of bulk", vendors=ANY),
                ),
            )
        )
        reset(db)


# -- 5. memory and scale -------------------------------------------------------------------------


def memory(ctx: Context) -> None:
    db, sizes = ctx.db, ctx.sizes
    template = alarm_template()
    reset(db)

    ctx.say("memory: idle worker RSS")
    procs = start_workers(db, 1, name="mem-idle-")
    try:
        time.sleep(1.5)
        idle = _rss_sample(procs[0])
    finally:
        stop_all(procs)
    ctx.add(
        Figure(
            "memory.idle",
            "memory: worker RSS, idle",
            idle,
            "MB",
            baseline=ctx.base["django_rss"],
            baseline_label="bare Django",
            goals=(Goal("value", "<=", 80, label="<= 80 MB", vendors=ANY),),
        )
    )

    n = sizes.memory_window
    ctx.say(f"memory: worker RSS with {n:,} alarms in its window")
    due = time.time() + 50  # inside the window (2 x LOAD_INTERVAL = 60 s), not due before we stop
    raw.fill(db.target, template, n, lambda i: _at(due + i * 1e-4))
    analyze(db)
    procs = start_workers(db, 1, name="mem-window-")
    try:
        wait_for(
            lambda: f"loaded {n} alarm(s)" in procs[0].output(),
            timeout=60,
            procs=procs,
            what=f"the worker to load {n} alarms",
        )
        time.sleep(1.0)
        window = _rss_sample(procs[0])
        if time.time() > due - 5:
            raise HarnessError("memory: the window alarms were about to fall due")
    finally:
        stop_all(procs)
    ctx.add(
        Figure(
            "memory.window",
            f"memory: worker RSS, {n:,} alarms in window",
            window,
            "MB",
            baseline=idle,
            baseline_label="idle worker",
            goals=(Goal("value", "<=", 200, label="<= 200 MB", vendors=ANY),),
        )
    )
    reset(db)

    # Scale: the same reads and the same deliveries with few and with many pending alarms.
    measured: dict[int, dict[str, float]] = {}
    filled = 0
    for size in (sizes.scale_small, sizes.scale_big):
        ctx.say(f"scale: {size:,} pending alarms outside the window")
        spread = 30 * 86400 / size
        start = time.time() + 86400
        fill_began = _now()
        spent = raw.fill(
            db.target,
            template,
            size - filled,
            lambda i, base=filled, t=start, step=spread: _at(t + (base + i) * step),
        )
        filled = size
        analyze(db)
        measured[size] = _scale_point(ctx, template, size, fill_began)
        measured[size]["fill_s"] = spent
    small, big = measured[sizes.scale_small], measured[sizes.scale_big]
    ns, nb = f"{sizes.scale_small:,}", f"{sizes.scale_big:,}"
    ctx.add(
        Figure(
            "memory.outside",
            f"memory: worker RSS, {nb} alarms outside window",
            big["rss"],
            "MB",
            baseline=idle,
            baseline_label="idle worker",
            goals=(Goal("ratio", "within", 1.1, 0.9, label="idle +-10%", vendors=ANY),),
        )
    )
    within = (Goal("ratio", "<=", 1.5, label="<= 1.5x of small", vendors=ANY),)
    for what, label, unit in (
        ("window_ms", "loader window() query", "ms"),
        ("changes_ms", "change-feed changes() query", "ms"),
        ("changes_bulk_ms", "changes() right after the bulk fill", "ms"),
        ("per_alarm_load_us", "loader cost per alarm loaded", "us"),
        ("cpu_us", "worker CPU per alarm delivered", "us"),
    ):
        ctx.add(Figure(f"scale.{what}.small", f"scale: {label}, {ns} pending", small[what], unit))
        ctx.add(
            Figure(
                f"scale.{what}.big",
                f"scale: {label}, {nb} pending",
                big[what],
                unit,
                baseline=small[what],
                baseline_label=f"{ns} pending",
                goals=within,
            )
        )
    ctx.add(
        Figure(
            "scale.drain.big",
            f"scale: drain of {sizes.scale_herd:,}, {nb} pending",
            big["drain"],
            "/s",
            baseline=small["drain"],
            baseline_label=f"{ns} pending",
            extra={"fill_seconds": big["fill_s"]},
        )
    )
    reset(db)
    vacuum(db)


def _scale_point(
    ctx: Context, template: raw.Template, size: int, bulk_since: datetime
) -> dict[str, float]:
    from django.db import connection

    from django_alarms.models import Alarm
    from django_alarms.worker.loader import Loader

    db, k, h = ctx.db, ctx.sizes.scale_window, ctx.sizes.scale_herd
    out: dict[str, float] = {}
    # Loader reads: K alarms in the window among `size` outside it.
    since = _now()
    time.sleep(0.01)
    due = time.time() + 40
    raw.fill(db.target, template, k, lambda i: _at(due + i * 1e-3))
    loader = Loader("default", None)
    until = _now() + timedelta(seconds=60)
    times_w, times_c = [], []
    for _ in range(15):
        began = time.perf_counter()
        rows = loader.window(until, 100_000)
        times_w.append(time.perf_counter() - began)
        began = time.perf_counter()
        changed = loader.changes(since, until, 100_000)
        times_c.append(time.perf_counter() - began)
    if len(rows) != k or len(changed) != k:
        raise HarnessError(f"scale: the loader read {len(rows)}/{len(changed)} of {k} alarms")
    out["window_ms"] = median(times_w) * 1000
    out["changes_ms"] = median(times_c) * 1000
    out["per_alarm_load_us"] = median(times_w) / k * 1e6
    # The change feed right after a bulk insert of far-future alarms: what a worker's poll
    # costs when the insert's NOTIFY wakes it (the rows changed since then are the whole fill).
    times_b = []
    for _ in range(5):
        began = time.perf_counter()
        loader.changes(bulk_since, until, 100_000)
        times_b.append(time.perf_counter() - began)
    out["changes_bulk_ms"] = median(times_b) * 1000
    if db.vendor == "postgresql":
        with connection.cursor() as cursor:
            sql, params = (
                Alarm.objects.filter(state="scheduled", due_at__lt=until)
                .order_by("due_at")
                .values("id", "due_at", "handler", "timeout")[:100_000]
                .query.sql_with_params()
            )
            cursor.execute("EXPLAIN " + sql, params)
            ctx.info.setdefault("plans", {})[f"window@{size}"] = [r[0] for r in cursor.fetchall()]
    Alarm.objects.filter(due_at__lt=until).delete()

    # Deliveries: a herd of H with `size` pending alarms in the table.
    procs = start_workers(db, 1, name=f"scale{size}-")
    try:
        time.sleep(1.0)
        out["rss"] = _rss_sample(procs[0])
        lead = 2.0 + h / 5000
        at = time.time() + lead
        done = _all_succeeded(h)
        _schedule_many_at(h, _at(at))
        cpu0 = procs[0].cpu()
        wait_for(
            done,
            timeout=lead + 60 + h / 100,
            procs=procs,
            what=f"scale: {h} alarms to succeed",
            every=0.2,
        )
        out["cpu_us"] = (procs[0].cpu() - cpu0) / h * 1e6
    finally:
        stop_all(procs)
    facts = _delivered_exactly_once_among(h)
    out["drain"] = h / (facts - at)
    from django_alarms.models import Attempt

    Attempt.objects.all().delete()
    Alarm.objects.filter(state="succeeded").delete()
    return out


def _delivered_exactly_once_among(h: int) -> float:
    """The herd of the scale scenario (the only alarms not far in the future) was delivered
    exactly once; return the epoch of its last completion."""
    from django.db.models import Count, Max

    from django_alarms.models import Alarm, Attempt

    done = Alarm.objects.filter(state="succeeded", attempts=1).aggregate(
        n=Count("id"), last=Max("finished_at")
    )
    attempts = Attempt.objects.aggregate(n=Count("id"), alarms=Count("alarm_id", distinct=True))
    if not (done["n"] == attempts["n"] == attempts["alarms"] == h):
        raise HarnessError(f"scale: expected {h} alarms delivered once; got {done} {attempts}")
    return float(done["last"].timestamp())


# -- 5b. purge -----------------------------------------------------------------------------------

#: The generated rows, in tables of their own without indexes: each measurement starts from a
#: fresh copy of them, and the rows that remain are checked against them.
_PURGE_ALARMS = "bench_purge_alarm"
_PURGE_ATTEMPTS = "bench_purge_attempt"
_KEEP = timedelta(days=30)  # alarms_purge --older-than 30d
_PURGE_BATCH = 1_000  # alarms_purge's default --batch-size
_FINAL = ("succeeded", "failed", "cancelled")
_STOPPED = ("failed", "cancelled")  # alarms_purge --state failed,cancelled


@dataclass(frozen=True)
class _Statement:
    began: float
    ended: float
    what: str  # "SELECT django_alarms_alarm", "DELETE django_alarms_attempt", ...
    atomic: bool  # sent inside transaction.atomic(): part of a batch's transaction


class _Statements:
    """A ``connection.execute_wrapper`` that times every statement the purge sends."""

    def __init__(self) -> None:
        self.sent: list[_Statement] = []

    def __call__(
        self, execute: Callable[..., Any], sql: str, params: Any, many: bool, context: Any
    ) -> Any:
        atomic = bool(context["connection"].in_atomic_block)
        began = time.perf_counter()
        try:
            return execute(sql, params, many, context)
        finally:
            self.sent.append(_Statement(began, time.perf_counter(), _what(sql), atomic))


def _what(sql: str) -> str:
    verb = sql.split(None, 1)[0].upper() if sql.strip() else "?"
    tables = [(sql.find(t), t) for t in (raw.ALARM, raw.ATTEMPT) if t in sql]
    return f"{verb} {min(tables)[1]}" if tables else verb


@dataclass
class _PurgeRows:
    """The generated rows, counted as they were made: what a purge must delete and keep. Every
    finished alarm has one attempt."""

    old: dict[str, int]  # finished alarms older than the cutoff, by state
    young: dict[str, int]  # finished alarms younger than it, by state
    scheduled: int = 0
    scheduled_attempts: int = 0

    def deleted(self, states: tuple[str, ...]) -> int:
        return sum(self.old[state] for state in states)

    def kept(self, states: tuple[str, ...]) -> dict[str, int]:
        kept = {s: self.young[s] + (0 if s in states else self.old[s]) for s in _FINAL}
        return {"scheduled": self.scheduled, **kept}

    def attempts_kept(self, states: tuple[str, ...]) -> int:
        return sum(self.kept(states).values()) - self.scheduled + self.scheduled_attempts


def _purge_generate(ctx: Context, n: int) -> _PurgeRows:
    """``n`` finished alarms, 80% succeeded, 10% failed, 10% cancelled, 90% of them finished
    31 to 365 days ago and the others in the last 29 days (a day away from the cutoff on
    either side), each with one attempt; and ``n / 20`` scheduled alarms due in the coming
    month, half of them waiting for a retry with a failed attempt. Written to the copy tables
    in the order they were created, as a table that has lived a year holds them."""
    from django.db import connection

    rng = random.Random(7000 + ctx.run)
    now, day = _now(), 86400.0
    rows = _PurgeRows(old=dict.fromkeys(_FINAL, 0), young=dict.fromkeys(_FINAL, 0))
    # (created, state, due, finished, with an attempt), in seconds ago (due: < 0 ahead)
    plan: list[tuple[float, str, float, float | None, bool]] = []
    for _ in range(n):
        r = rng.random()
        state = "succeeded" if r < 0.8 else "failed" if r < 0.9 else "cancelled"
        old = rng.random() < 0.9
        finished = (31 + rng.random() * 334) * day if old else rng.random() * 29 * day
        due = finished + rng.random() * 60
        plan.append((due + rng.random() * 7 * day, state, due, finished, True))
        (rows.old if old else rows.young)[state] += 1
    for k in range(n // 20):
        retry = k % 2 == 0
        plan.append((rng.random() * day, "scheduled", -(60 + rng.random() * 30 * day), None, retry))
        rows.scheduled += 1
        rows.scheduled_attempts += retry
    plan.sort(key=lambda p: -p[0])

    alarm_row = alarm_template()
    attempt_row = [("id", None), *attempt_template()]
    alarm_columns = [column for column, _ in alarm_row]
    attempt_columns = [column for column, _ in attempt_row]
    a = {column: i for i, column in enumerate(alarm_columns)}
    t = {column: i for i, column in enumerate(attempt_columns)}
    with connection.cursor() as cursor:
        for copy, table in ((_PURGE_ALARMS, raw.ALARM), (_PURGE_ATTEMPTS, raw.ATTEMPT)):
            cursor.execute(f"DROP TABLE IF EXISTS {copy}")
            cursor.execute(f"CREATE TABLE {copy} AS SELECT * FROM {table} WHERE 1 = 0")
    conn = ctx.db.target.connect()
    attempt_id = 0
    try:
        chunk = 50_000
        for start in range(0, len(plan), chunk):
            alarms, attempts = [], []
            for i, (created, state, due, ended, attempted) in enumerate(
                plan[start : start + chunk]
            ):
                alarm = [value for _, value in alarm_row]
                alarm_id = uuid.UUID(int=rng.getrandbits(128), version=4)
                due_at = now - timedelta(seconds=due)
                finished_at = None if ended is None else now - timedelta(seconds=ended)
                alarm[a["id"]] = alarm_id
                alarm[a["state"]] = state
                alarm[a["payload"]] = {"order": start + i}
                alarm[a["due_at"]] = due_at
                alarm[a["created_at"]] = now - timedelta(seconds=created)
                alarm[a["updated_at"]] = finished_at or now - timedelta(seconds=created)
                alarm[a["finished_at"]] = finished_at
                alarm[a["attempts"]] = int(attempted)
                if attempted and state != "succeeded":
                    alarm[a["last_error"]] = "RuntimeError: the bench handler failed"
                alarms.append(alarm)
                if attempted:
                    attempt_id += 1
                    ran = finished_at or now - timedelta(seconds=created / 2)
                    attempt = [value for _, value in attempt_row]
                    attempt[t["id"]] = attempt_id
                    attempt[t["alarm_id"]] = alarm_id
                    attempt[t["outcome"]] = "ok" if state == "succeeded" else "error"
                    attempt[t["due_at"]] = due_at if finished_at else ran
                    attempt[t["started_at"]] = ran
                    attempt[t["finished_at"]] = ran
                    attempts.append(attempt)
            raw._insert(conn, ctx.vendor, _PURGE_ALARMS, alarm_columns, alarms)
            raw._insert(conn, ctx.vendor, _PURGE_ATTEMPTS, attempt_columns, attempts)
    finally:
        conn.close()
    return rows


def _purge_load(ctx: Context) -> float:
    """The alarm tables emptied and filled again from the copy tables (server-side), then
    vacuumed and analyzed (a production table that old has been), and a checkpoint: each
    measurement starts from the same rows in the same state. Returns the seconds spent."""
    from django.db import connection

    began = time.perf_counter()
    reset(ctx.db)
    with connection.cursor() as cursor:
        for copy, table in ((_PURGE_ALARMS, raw.ALARM), (_PURGE_ATTEMPTS, raw.ATTEMPT)):
            cursor.execute(f"SELECT * FROM {copy} WHERE 1 = 0")
            columns = ", ".join(d[0] for d in cursor.description)
            cursor.execute(f"INSERT INTO {table} ({columns}) SELECT {columns} FROM {copy}")
    vacuum(ctx.db)
    analyze(ctx.db)
    checkpoint(ctx.db)
    return time.perf_counter() - began


def _purge_check(rows: _PurgeRows, states: tuple[str, ...], what: str) -> None:
    """Exactly the expected rows remain, unchanged: the scheduled alarms, the finished ones
    younger than the cutoff or in other states, and their attempts; no attempt of a deleted
    alarm is left."""
    from django.db import connection

    alarm, attempt = raw.ALARM, raw.ATTEMPT
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT state, COUNT(*) FROM {alarm} GROUP BY state")
        found = {state: count for state, count in cursor.fetchall()}
        cursor.execute(
            f"SELECT COUNT(*) FROM {alarm} a JOIN {_PURGE_ALARMS} c ON c.id = a.id "
            "WHERE a.state = c.state AND a.due_at = c.due_at AND a.updated_at = c.updated_at "
            "AND a.attempts = c.attempts AND (a.finished_at = c.finished_at "
            "OR (a.finished_at IS NULL AND c.finished_at IS NULL))"
        )
        (unchanged,) = cursor.fetchone()
        cursor.execute(f"SELECT COUNT(*) FROM {attempt}")
        (attempts,) = cursor.fetchone()
        cursor.execute(
            f"SELECT COUNT(*) FROM {attempt} t JOIN {_PURGE_ATTEMPTS} c "
            "ON c.id = t.id AND c.alarm_id = t.alarm_id AND c.started_at = t.started_at"
        )
        (attempts_unchanged,) = cursor.fetchone()
        cursor.execute(
            f"SELECT COUNT(*) FROM {attempt} t "
            f"WHERE NOT EXISTS (SELECT 1 FROM {alarm} a WHERE a.id = t.alarm_id)"
        )
        (orphans,) = cursor.fetchone()
    kept = {state: count for state, count in rows.kept(states).items() if count}
    if found != kept or unchanged != sum(kept.values()):
        raise HarnessError(
            f"purge ({what}): expected {kept} alarms left unchanged; found {found}, "
            f"{unchanged} of them unchanged"
        )
    expected = rows.attempts_kept(states)
    if not (attempts == attempts_unchanged == expected) or orphans:
        raise HarnessError(
            f"purge ({what}): expected the {expected} attempts of the alarms left; found "
            f"{attempts} ({attempts_unchanged} unchanged, {orphans} of deleted alarms)"
        )


def _explain(ctx: Context, states: tuple[str, ...], name: str) -> None:
    """PostgreSQL: the plan of a batch's SELECT of ids, as the engine's ``delete_finished``
    writes it, run (``EXPLAIN (ANALYZE, BUFFERS)`` of a read), kept in the run's info."""
    from django_alarms.models import Alarm

    if ctx.vendor != "postgresql":
        return
    old = Alarm.objects.filter(state__in=states, finished_at__lt=_now() - _KEEP)
    plan = old.values_list("pk", flat=True)[:_PURGE_BATCH].explain(analyze=True, buffers=True)
    ctx.info.setdefault("plans", {})[name] = plan.splitlines()


def _batches(sent: list[_Statement], began: float, marks: list[float]) -> list[dict[str, float]]:
    """Each batch of a purge: from the end of the one before (``marks``: when ``on_batch``
    was called) to its own end; its transaction from its first statement inside
    ``transaction.atomic()`` to that end (the commit included); the statements it sent
    outside the transaction before (the SELECT of its ids, in autocommit)."""
    out: list[dict[str, float]] = []
    start, k = began, 0
    for mark in marks:
        mine: list[_Statement] = []
        while k < len(sent) and sent[k].began < mark:
            mine.append(sent[k])
            k += 1
        inside = [s for s in mine if s.atomic]
        if inside:
            tx = mark - inside[0].began
        else:  # no transaction of its own: each statement is one (autocommit)
            tx = max((s.ended - s.began for s in mine), default=mark - start)
        select = sum(s.ended - s.began for s in mine if not s.atomic)
        out.append({"batch_s": mark - start, "transaction_s": tx, "select_s": select})
        start = mark
    if not out:
        raise HarnessError("purge: no batch was deleted")
    return out


def _purge_once(
    ctx: Context, rows: _PurgeRows, states: tuple[str, ...], key: str
) -> dict[str, Any]:
    """``alarms.purge(states=..., older_than=30d)`` on a fresh copy of the rows, each statement
    and each batch timed; the rows left checked."""
    from django.db import connection

    from django_alarms import alarms

    loaded = _purge_load(ctx)
    _explain(ctx, states, f"{key}.select@start")
    marks: list[float] = []
    timed = _Statements()
    began = time.perf_counter()
    with connection.execute_wrapper(timed):
        deleted = alarms.purge(
            states=states,
            older_than=_KEEP,
            batch_size=_PURGE_BATCH,
            on_batch=lambda count: marks.append(time.perf_counter()),
        )
    wall = time.perf_counter() - began
    _explain(ctx, states, f"{key}.select@end")
    if deleted != rows.deleted(states):
        raise HarnessError(f"purge: deleted {deleted} alarms, expected {rows.deleted(states)}")
    _purge_check(rows, states, f"alarms.purge({', '.join(states)})")
    batches = _batches(timed.sent, began, marks)
    spent: dict[str, float] = {}
    for s in timed.sent:
        spent[s.what] = spent.get(s.what, 0.0) + s.ended - s.began
    txs = [b["transaction_s"] for b in batches]
    selects = [b["select_s"] for b in batches]
    ctx.info.setdefault("purge", {})[key] = {
        "states": states,
        "deleted": deleted,
        "kept": rows.kept(states),
        "load_seconds": round(loaded, 2),
        "statements": len(timed.sent),
        "seconds_by_statement": {what: round(s, 3) for what, s in sorted(spent.items())},
        "batch_transaction_ms": [round(x * 1000, 2) for x in txs],
        "batch_select_ms": [round(x * 1000, 2) for x in selects],
    }
    return {
        "deleted": deleted,
        "seconds": wall,
        "rate": deleted / wall,
        "batches": len(batches),
        "longest_tx": max(txs),
        "longest_at": txs.index(max(txs)) + 1,
        "tx_p50": median(txs),
        "tx_p99": percentile(txs, 99),
        "longest_batch": max(b["batch_s"] for b in batches),
        "selects": selects,
    }


def _delete_once(ctx: Context, rows: _PurgeRows) -> float:
    """The baseline: the same rows deleted on a fresh copy in one transaction (the attempts,
    then the alarms, each one DELETE); returns its seconds."""
    from django.db import connection, transaction

    _purge_load(ctx)
    cutoff = connection.ops.adapt_datetimefield_value(_now() - _KEEP)
    old = f"state IN ({', '.join(['%s'] * len(_FINAL))}) AND finished_at < %s"
    params = [*_FINAL, cutoff]
    began = time.perf_counter()
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(
            f"DELETE FROM {raw.ATTEMPT} WHERE alarm_id IN (SELECT id FROM {raw.ALARM} WHERE {old})",
            params,
        )
        cursor.execute(f"DELETE FROM {raw.ALARM} WHERE {old}", params)
        deleted = cursor.rowcount
    single = time.perf_counter() - began
    if deleted != rows.deleted(_FINAL):
        raise HarnessError(f"purge: one DELETE deleted {deleted}, not {rows.deleted(_FINAL)}")
    _purge_check(rows, _FINAL, "one DELETE")
    return single


def _batched_once(ctx: Context, rows: _PurgeRows) -> dict[str, float]:
    """A second baseline: the same rows deleted on a fresh copy in batches of 1,000 in plain
    SQL, each batch the SELECT of its ids that ``delete_finished`` sends (ordered by due
    time, as the model's ordering makes it) and then one DELETE of their attempts and one of
    the alarms, in one transaction: what batching costs without the ORM's deletion."""
    from django.db import connection, transaction

    _purge_load(ctx)
    cutoff = connection.ops.adapt_datetimefield_value(_now() - _KEEP)
    states = ", ".join(["%s"] * len(_FINAL))
    select = (
        f"SELECT id FROM {raw.ALARM} WHERE state IN ({states}) AND finished_at < %s "
        f"ORDER BY due_at LIMIT {_PURGE_BATCH}"
    )
    deleted, txs = 0, []
    began = time.perf_counter()
    with connection.cursor() as cursor:
        while True:
            cursor.execute(select, [*_FINAL, cutoff])
            ids = [row[0] for row in cursor.fetchall()]
            if not ids:
                break
            marks = ", ".join(["%s"] * len(ids))
            opened = time.perf_counter()
            with transaction.atomic():
                cursor.execute(f"DELETE FROM {raw.ATTEMPT} WHERE alarm_id IN ({marks})", ids)
                cursor.execute(
                    f"DELETE FROM {raw.ALARM} WHERE id IN ({marks}) AND state IN ({states})",
                    [*ids, *_FINAL],
                )
                deleted += cursor.rowcount
            txs.append(time.perf_counter() - opened)
            if len(ids) < _PURGE_BATCH:
                break
    wall = time.perf_counter() - began
    if deleted != rows.deleted(_FINAL):
        raise HarnessError(f"purge: raw batches deleted {deleted}, not {rows.deleted(_FINAL)}")
    _purge_check(rows, _FINAL, "raw SQL batches")
    return {"rate": deleted / wall, "seconds": wall, "longest_tx": max(txs), "tx_p50": median(txs)}


def purge(ctx: Context) -> None:
    """``alarms.purge()`` (what ``manage.py alarms_purge --older-than 30d`` calls) on a table
    of finished alarms, in batches of 1,000, against one DELETE of the same rows in one
    transaction on a fresh copy of the same rows: rows per second, and the longest
    transaction each holds. Then the failed and cancelled ones only (``--state
    failed,cancelled``), whose batches find their rows through no index of their own."""
    from django.db import connection

    n = ctx.sizes.purge
    ctx.say(f"purge: generating {n:,} finished alarms, {n // 20:,} scheduled, their attempts")
    rows = _purge_generate(ctx, n)
    try:
        ctx.say(
            f"purge: alarms.purge(older_than=30d, batch_size={_PURGE_BATCH:,}) of the "
            f"{rows.deleted(_FINAL):,} finished more than 30 days ago"
        )
        every = _purge_once(ctx, rows, _FINAL, "purge")
        ctx.say(f"purge: one DELETE of the same {rows.deleted(_FINAL):,} in one transaction")
        single = _delete_once(ctx, rows)
        ctx.say(f"purge: the same in raw SQL, batches of {_PURGE_BATCH:,}")
        batched = _batched_once(ctx, rows)
        ctx.say(f"purge: --state failed,cancelled, {rows.deleted(_STOPPED):,} alarms")
        stopped = _purge_once(ctx, rows, _STOPPED, "purge.stopped")
    finally:
        with connection.cursor() as cursor:
            for copy in (_PURGE_ALARMS, _PURGE_ATTEMPTS):
                cursor.execute(f"DROP TABLE IF EXISTS {copy}")
        reset(ctx.db)
        vacuum(ctx.db)

    deleted = every["deleted"]
    single_rate = deleted / single
    ctx.add(
        Figure(
            "baseline.purge.delete",
            f"baseline: one DELETE of {deleted:,} finished alarms and attempts, one transaction",
            single_rate,
            "rows/s",
            extra={"seconds": single},
        )
    )
    ctx.add(
        Figure(
            "baseline.purge.batched",
            f"baseline: the same in raw SQL, batches of {_PURGE_BATCH:,}",
            batched["rate"],
            "rows/s",
            extra=batched,
        )
    )
    ctx.add(
        Figure(
            "purge.rate",
            f"purge: {deleted:,} of {n:,} finished alarms, batches of {_PURGE_BATCH:,}",
            every["rate"],
            "rows/s",
            baseline=single_rate,
            baseline_label="one DELETE",
            extra={k: v for k, v in every.items() if k != "selects"},
        )
    )
    ctx.add(
        Figure(
            "purge.longest_tx",
            "purge: longest batch transaction",
            every["longest_tx"] * 1000,
            "ms",
            baseline=single * 1000,
            baseline_label="the one DELETE's transaction",
            extra={"p50_ms": every["tx_p50"] * 1000, "p99_ms": every["tx_p99"] * 1000},
        )
    )
    ctx.add(
        Figure(
            "purge.vs_batched",
            "purge: rows/s against raw SQL in the same batches",
            every["rate"],
            "rows/s",
            baseline=batched["rate"],
            baseline_label="raw SQL batches",
        )
    )
    ctx.add(
        Figure("purge.batch", "purge: batch size (alarms per transaction)", _PURGE_BATCH, "rows")
    )
    selects = every["selects"]
    ctx.add(
        Figure(
            "purge.select",
            "purge: slowest SELECT of a batch's ids (before its transaction)",
            max(selects) * 1000,
            "ms",
            baseline=selects[0] * 1000,
            baseline_label="first batch's",
            extra={"median_ms": median(selects) * 1000, "total_s": sum(selects)},
        )
    )
    ctx.add(
        Figure(
            "purge.stopped.rate",
            f"purge --state failed,cancelled: {stopped['deleted']:,} alarms",
            stopped["rate"],
            "rows/s",
            baseline=every["rate"],
            baseline_label="all three states",
            extra={k: v for k, v in stopped.items() if k != "selects"},
        )
    )
    selects = stopped["selects"]
    ctx.add(
        Figure(
            "purge.stopped.select",
            "purge --state failed,cancelled: slowest SELECT of a batch's ids",
            max(selects) * 1000,
            "ms",
            baseline=selects[0] * 1000,
            baseline_label="first batch's",
            extra={"median_ms": median(selects) * 1000, "total_s": sum(selects)},
        )
    )


# -- 6. the django_q executor --------------------------------------------------------------------


def django_q_available() -> str | None:
    """None when the django_q scenario can run, else why not."""
    if importlib.util.find_spec("django_alarms.executors.django_q") is None:
        return "django_alarms.executors.django_q does not exist (yet)"
    if importlib.util.find_spec("django_q") is None:
        return "django-q2 is not installed (pip install 'django-alarms[django-q]')"
    try:
        import redis

        redis.Redis.from_url(
            os.environ.get("BENCH_Q_REDIS", "redis://127.0.0.1:6379/14"), socket_connect_timeout=2
        ).ping()
    except Exception as exc:
        return f"Redis is not reachable for the django-q2 broker ({exc})"
    return None


def django_q(ctx: Context) -> None:
    why = django_q_available()
    if why is not None:
        ctx.say(f"django_q executor: not available: {why}")
        ctx.info["django_q"] = f"not available: {why}"
        return
    db = ctx.db
    log = ctx.path("timing-precision-django_q")
    env = {
        "BENCH_DJANGO_Q": "1",
        "BENCH_Q_NAME": f"bench-{uuid.uuid4().hex[:8]}",
        "BENCH_TIMING_LOG": str(log),
    }
    migrate = spawn(db, ["migrate", "--verbosity", "0"], name="dq-migrate", env=env)
    if migrate.process.wait(300) != 0:
        raise HarnessError(f"django_q: migrate failed:\n{migrate.tail()}")
    cluster = spawn(db, ["qcluster"], name="dq-cluster", env=env, group=True)
    try:
        time.sleep(4.0)
        if not cluster.alive():
            raise HarnessError(f"django_q: the cluster exited:\n{cluster.tail()}")
        n = ctx.sizes.django_q_herd
        inline = [f for f in ctx.figures if f.key == "herd.1w.drain"]
        drain = _herd(ctx, n, 1, executor="django_q", key="herd", env=env)
        if inline:
            (mine,) = [f for f in ctx.figures if f.key == "herd.django_q.1w.drain"][-1:]
            mine.baseline = inline[-1].value
            mine.baseline_label = "inline executor"
        late = precision(ctx, executor="django_q", env=env, log=log)
        inline_p99 = [f for f in ctx.figures if f.key == "precision.p99"]
        if inline_p99:
            for fig in ctx.figures[-3:]:
                same = [f for f in ctx.figures if f.key == fig.key.replace(".django_q", "")]
                if same:
                    fig.baseline, fig.baseline_label = same[-1].value, "inline executor"
        ours, bare = _handoff_against_bare(ctx, env)
        ctx.info["django_q"] = {
            "herd_drain": drain,
            "precision_p99": percentile(late, 99),
            "handoff": ours,
            "bare": bare,
        }
    finally:
        cluster.stop_group(timeout=20)


def _drain_and_latency(
    lines: list[tuple[str, float, float, int, int]],
) -> tuple[float, float]:
    """From timing lines whose second column is when each item was due (or sent): items per
    second from the first due to the last start, and the p50 of start minus due (ms)."""
    first = min(line[1] for line in lines)
    last = max(line[2] for line in lines)
    return len(lines) / max(last - first, 1e-9), percentile(
        [(line[2] - line[1]) * 1000 for line in lines], 50
    )


def _handoff_figures(
    ctx: Context,
    key: str,
    bare_label: str,
    engine: str,
    ours: list[tuple[str, float, float, int, int]],
    bare: list[tuple[str, float, float, int, int]],
) -> tuple[dict[str, float], dict[str, float]]:
    """The drain and the p50 from due (or sent) to start of a handed-off herd against the
    same number of bare tasks on the same engine, as figures; returns both as dicts."""
    ours_rate, ours_p50 = _drain_and_latency(ours)
    bare_rate, bare_p50 = _drain_and_latency(bare)
    n = len(ours)
    ctx.add(
        Figure(
            f"{key}.handoff.drain",
            f"{key}: herd of {n:,} handed off, drain",
            ours_rate,
            "/s",
            baseline=bare_rate,
            baseline_label=bare_label,
            goals=(Goal("ratio", ">=", 0.8, label=f">= 0.8x of bare {engine}", vendors=ANY),),
        )
    )
    ctx.add(
        Figure(
            f"{key}.handoff.p50",
            f"{key}: due to start, p50 (herd of {n:,})",
            ours_p50,
            "ms",
            baseline=bare_p50,
            baseline_label="bare: sent to start, p50",
            extra={"added_ms": ours_p50 - bare_p50},
            note=f"added {ours_p50 - bare_p50:.1f} ms (goal < 5 ms)",
        )
    )
    return {"drain": ours_rate, "p50_ms": ours_p50}, {"drain": bare_rate, "p50_ms": bare_p50}


def _handoff_against_bare(
    ctx: Context, env: dict[str, str]
) -> tuple[dict[str, float], dict[str, float]]:
    """The same cluster draining (a) a herd handed off by ``run_alarms --executor django_q``
    and (b) as many bare ``async_task`` calls of a no-op, enqueued at once by one process: the
    drain rate and the p50 from due (or sent) to start of each (issue 18)."""
    from django_alarms import alarms

    db, n = ctx.db, ctx.sizes.django_q_herd
    reset(db)
    # The handlers run in the cluster, which writes to its own BENCH_TIMING_LOG (opened once
    # per process, O_APPEND): emptied in place between the two, never replaced.
    log = Path(env["BENCH_TIMING_LOG"])
    log.write_text("")
    ctx.say(f"django_q: a herd of {n:,} handed off, against {n:,} bare async_task calls")
    procs = start_workers(db, 1, "--executor", "django_q", name="dq-handoff-", env=env)
    try:
        due = time.time() + 3.0 + n / 2_000
        alarms.schedule_many([alarms.Spec("bench_timing", at=_at(due)) for _ in range(n)])
        wait_for(
            lambda: len(read_timing(log)) >= n,
            timeout=120 + n / 20,
            procs=procs,
            what="django_q: the handed-off herd",
            every=0.25,
        )
    finally:
        stop_all(procs)
    ours = read_timing(log)
    log.write_text("")
    sender = spawn(db, ["bench_bare_q", str(n)], name="dq-bare", env=env)
    if sender.process.wait(300) != 0:
        raise HarnessError(f"django_q: the bare enqueue failed:\n{sender.tail()}")
    wait_for(
        lambda: len(read_timing(log)) >= n,
        timeout=120 + n / 20,
        procs=[],
        what="django_q: the bare tasks",
        every=0.25,
    )
    bare = read_timing(log)
    return _handoff_figures(
        ctx, "django_q", "bare async_task, same cluster", "django-q2", ours, bare
    )


# -- the Celery executor against bare Celery -----------------------------------------------------


CELERY_PROCESSES = 2


def celery_available() -> str | None:
    """None when the celery scenario can run, else why not."""
    if importlib.util.find_spec("celery") is None:
        return "Celery is not installed (pip install 'django-alarms[celery]')"
    try:
        import redis

        redis.Redis.from_url(
            os.environ.get("BENCH_CELERY_BROKER", "redis://127.0.0.1:6379/11"),
            socket_connect_timeout=2,
        ).ping()
    except Exception as exc:
        return f"Redis is not reachable for the Celery broker ({exc})"
    return None


def celery(ctx: Context) -> None:
    """The same Celery worker pool (prefork, 2 processes, Redis) draining (a) a herd handed
    off by ``run_alarms --executor celery`` and (b) as many bare ``send_task`` calls of a no-op
    sent at once by one process: the drain rate and the p50 from due (or sent) to start."""
    why = celery_available()
    if why is not None:
        ctx.say(f"celery executor: not available: {why}")
        ctx.info["celery"] = f"not available: {why}"
        return
    from django_alarms import alarms

    db, n = ctx.db, ctx.sizes.django_q_herd
    reset(db)
    queue = f"bench-{uuid.uuid4().hex[:8]}"
    log = ctx.path("timing-celery")
    log.write_text("")
    # Persistent database connections in the pool, as docs/howto/celery.md says to run it.
    env = {"BENCH_TIMING_LOG": str(log), "DATABASE_CONN_MAX_AGE": "600"}
    settings = {
        "EXECUTOR": "celery",
        "CELERY": {"APP": "benchmarks.celeryapp.app", "QUEUE": queue, "QUEUE_WAIT": 300},
    }
    pool_log = db.tmpdir / f"celery-{time.monotonic_ns()}.log"
    with pool_log.open("wb") as handle:
        process = subprocess.Popen(
            [
                sys.executable, "-m", "celery", "-A", "benchmarks.celeryapp", "worker",
                "--queues", queue, "--concurrency", str(CELERY_PROCESSES), "--pool", "prefork",
                "--loglevel", "INFO", "--without-gossip", "--without-mingle",
                "--without-heartbeat",
            ],
            cwd=ROOT,
            env=worker_env(db, settings, **env),
            stdout=handle,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
    pool = Proc(process, pool_log, "celery")
    try:
        wait_for(
            lambda: " ready." in pool.output(),
            timeout=60,
            procs=[pool],
            what="the Celery worker to start",
        )
        ctx.say(f"celery: a herd of {n:,} handed off, against {n:,} bare send_task calls")
        procs = start_workers(
            db, 1, "--executor", "celery", name="celery-handoff-", alarms=settings, env=env
        )
        try:
            due = time.time() + 3.0 + n / 2_000
            alarms.schedule_many([alarms.Spec("bench_timing", at=_at(due)) for _ in range(n)])
            wait_for(
                lambda: len(read_timing(log)) >= n,
                timeout=120 + n / 20,
                procs=[*procs, pool],
                what="celery: the handed-off herd",
                every=0.25,
            )
        finally:
            stop_all(procs)
        ours = read_timing(log)
        log.write_text("")  # emptied in place: the pool's processes keep it open
        from benchmarks.celeryapp import app

        with app.producer_or_acquire() as producer:
            for i in range(n):
                app.send_task(
                    "bench.bare_timing",
                    args=[f"bare-{i}", time.time()],
                    queue=queue,
                    serializer="json",
                    ignore_result=True,
                    producer=producer,
                )
        wait_for(
            lambda: len(read_timing(log)) >= n,
            timeout=120 + n / 20,
            procs=[pool],
            what="celery: the bare tasks",
            every=0.25,
        )
        bare = read_timing(log)
    finally:
        pool.stop_group(timeout=20)
    handoff, plain = _handoff_figures(
        ctx, "celery", "bare send_task, same worker pool", "Celery", ours, bare
    )
    ctx.info["celery"] = {"handoff": handoff, "bare": plain}
