"""Pieces of the worker, driven in-process: the window, the timers, leases, housekeeping."""

from __future__ import annotations

import dataclasses
import heapq
import logging
import time
import uuid
from datetime import timedelta

import pytest
from django.utils import timezone

from django_alarms import alarms
from django_alarms.models import Alarm, Attempt, Worker
from django_alarms.testing import AlarmFactory, AttemptFactory
from django_alarms.worker.heartbeat import purge
from django_alarms.worker.runner import Options, Runner
from django_alarms.worker.timers import Armed, Timers
from tests.factories import a_claim, claim

pytestmark = pytest.mark.django_db

WORKER_LOG = logging.getLogger("django_alarms.worker")


def runner(**overrides) -> Runner:
    return Runner(Options.from_settings(**{"load_interval": timedelta(seconds=30), **overrides}))


def in_id_order(alarms=None) -> list[uuid.UUID]:
    """Ids in the database's order, which is not Python's everywhere (MariaDB's UUID type
    compares the groups of digits in another order)."""
    qs = Alarm.objects.all() if alarms is None else alarms
    return list(qs.order_by("id").values_list("id", flat=True))


def armed(due_in: float, alarm_id: uuid.UUID | None = None) -> Armed:
    due = timezone.now() + timedelta(seconds=due_in)
    return Armed(alarm_id or uuid.uuid4(), due, time.monotonic() + due_in, "probe", None)


class TestTimers:
    def test_pops_in_deadline_order_up_to_the_limit(self):
        timers = Timers()
        items = [armed(s) for s in (3, 1, 2)]
        for item in items:
            timers.arm(item)
        popped = timers.pop_due(time.monotonic() + 10, limit=2)
        assert [p.alarm_id for p in popped] == [items[1].alarm_id, items[2].alarm_id]
        assert len(timers) == 1

    def test_an_id_is_armed_once_and_updated_when_it_moves(self):
        timers = Timers()
        first = armed(5)
        assert timers.arm(first)
        assert not timers.arm(first), "the same id at the same time is not armed twice"
        moved = armed(1, first.alarm_id)
        assert timers.arm(moved)
        assert len(timers) == 1
        (popped,) = timers.pop_due(time.monotonic() + 2, limit=10)
        assert popped.due_at == moved.due_at
        assert timers.pop_due(time.monotonic() + 10, limit=10) == [], "the stale entry is gone"

    def test_disarm_and_compact(self):
        timers = Timers()
        items = [armed(1) for _ in range(3000)]
        for item in items:
            timers.arm(item)
        for item in items[:2900]:
            timers.disarm(item.alarm_id)
        timers.compact()
        assert len(timers._heap) == 100
        assert timers.next_deadline() == min(i.deadline for i in items[2900:])


class TestWindow:
    def test_loads_only_alarms_due_within_two_load_intervals_overdue_included(self):
        overdue = alarms.schedule("probe", {}, at=timezone.now() - timedelta(days=3))
        soon = alarms.schedule("probe", {}, delay=timedelta(seconds=50))
        alarms.schedule("probe", {}, delay=timedelta(seconds=70))
        alarms.schedule("probe", {}, delay=timedelta(days=30))
        worker = runner()
        worker._load()
        assert {overdue.id, soon.id} == set(worker.timers._armed)
        assert not worker.window.capped

    def test_memory_is_bounded_by_max_in_memory_earliest_first(self):
        due = timezone.now() + timedelta(seconds=5)
        specs = [alarms.Spec("probe", {}, at=due + timedelta(milliseconds=n)) for n in range(50)]
        created = alarms.schedule_many(specs)
        worker = runner(max_in_memory=10)
        worker._load()
        assert len(worker.timers) == 10
        assert worker.window.capped
        assert set(worker.timers._armed) == {a.id for a in created[:10]}
        assert worker.window.end == created[9].due_at
        # The change feed does not arm past the shortened window either.
        worker._poll()
        assert len(worker.timers) == 10

    def test_a_capped_window_goes_on_from_its_last_row_without_reading_the_armed_again(self):
        """Fifty alarms due at one instant, room for ten: each load takes the next ones by id
        (ties broken the same way on every database), not the ten armed already."""
        due = timezone.now() + timedelta(seconds=5)
        alarms.schedule_many([alarms.Spec("probe", {}, at=due) for _ in range(50)])
        by_id = in_id_order()
        worker = runner(max_in_memory=10)
        reads = []
        window = worker.window.loader.window

        def spy(until, limit, after=None):
            rows = window(until, limit, after)
            reads.append((after, [row["id"] for row in rows]))
            return rows

        worker.window.loader.window = spy
        worker._load()
        assert set(worker.timers._armed) == set(by_id[:10])
        assert worker.window.capped
        assert worker.window.after == (due, by_id[9])
        # Four of them are claimed elsewhere meanwhile: room for four more.
        Alarm.objects.filter(pk__in=by_id[:4]).update(state="running")
        for alarm_id in by_id[:4]:
            worker.timers.disarm(alarm_id)
        worker._load()
        assert reads[-1] == ((due, by_id[9]), by_id[10:14])
        assert set(worker.timers._armed) == set(by_id[4:14])
        # Once per LOAD_INTERVAL a load starts from the beginning all the same.
        worker.window.last_full -= timedelta(seconds=31)
        for alarm_id in by_id[4:6]:
            worker.timers.disarm(alarm_id)  # given up here: the load from the start finds them
        worker._load()
        assert reads[-1][0] is None
        assert set(worker.timers._armed) == set(by_id[4:14])

    def test_the_change_feed_finds_what_changed_behind_a_capped_windows_key(self):
        due = timezone.now() + timedelta(seconds=5)
        alarms.schedule_many([alarms.Spec("probe", {}, at=due) for _ in range(20)])
        by_id = in_id_order()
        worker = runner(max_in_memory=10)
        worker._load()
        assert worker.window.end == due
        # One armed alarm is claimed here, and a new one is scheduled at the window's last
        # instant: a load that goes on from the key does not see it, the feed does.
        Alarm.objects.filter(pk=by_id[0]).update(state="running")
        worker.timers.disarm(by_id[0])
        worker._load()
        assert by_id[10] in worker.timers
        assert len(worker.timers) == 10
        Alarm.objects.filter(pk=by_id[1]).update(state="running")
        worker.timers.disarm(by_id[1])
        late = alarms.schedule("probe", {}, at=due - timedelta(milliseconds=1))
        worker._poll()
        assert late.id in worker.timers

    def test_a_full_window_leaves_the_change_feed_for_later(self):
        due = timezone.now() + timedelta(seconds=5)
        alarms.schedule_many([alarms.Spec("probe", {}, at=due) for _ in range(3)])
        worker = runner(max_in_memory=3)
        worker._load()
        before = worker.window.last_poll
        moved = alarms.schedule("probe", {}, at=due - timedelta(seconds=1))
        worker._poll()
        assert worker.window.last_poll == before
        assert moved.id not in worker.timers
        armed_one = next(iter(worker.timers._armed))
        Alarm.objects.filter(pk=armed_one).update(state="running")
        worker.timers.disarm(armed_one)
        worker._poll()
        assert moved.id in worker.timers

    def test_the_change_feed_leaves_to_the_next_load_what_it_will_read_in_time(self):
        """A change due later than one LOAD_INTERVAL and a half after the last load from the
        beginning is the next such load's (a worker's own next occurrences are not read again
        at every poll); one due sooner is the feed's."""
        worker = runner()
        worker._load()
        start = worker.window.last_full
        soon = alarms.schedule("probe", {}, at=start + timedelta(seconds=44))
        later = alarms.schedule("probe", {}, at=start + timedelta(seconds=46))
        worker._poll()
        assert soon.id in worker.timers
        assert later.id not in worker.timers
        worker.window.last_full -= timedelta(seconds=31)
        worker._load()
        assert later.id in worker.timers

    def test_handlers_option_filters_the_window(self):
        mine = alarms.schedule("probe", {})
        alarms.schedule("send_reminder", {"account": 1})
        worker = runner(handlers=("probe",))
        worker._load()
        assert set(worker.timers._armed) == {mine.id}

    def test_the_loader_reads_alarms_as_they_are_stored(self):
        """Whole seconds, microseconds, timeouts and the handlers filter, in both reads (hand
        written on PostgreSQL and SQLite, the ORM elsewhere)."""
        from django_alarms.worker.loader import Loader

        # Every due time is fixed from one instant: a delay counted from each call's own clock
        # would let a slow call near the end of a second reorder them (CI, MariaDB).
        now = timezone.now()
        second = now.replace(microsecond=0)
        whole = alarms.schedule("probe", {}, at=second + timedelta(seconds=9))
        micro = alarms.schedule("probe", {}, at=second + timedelta(seconds=8, microseconds=1))
        limited = alarms.schedule(
            "probe", {}, at=second + timedelta(seconds=7, milliseconds=250), timeout=2.5
        )
        other = alarms.schedule("send_reminder", {"account": 1}, at=second + timedelta(seconds=6))
        stored = {
            row["id"]: row for row in Alarm.objects.values("id", "due_at", "handler", "timeout")
        }
        until, since = now + timedelta(minutes=1), now - timedelta(minutes=1)
        for rows in (
            Loader("default", None).window(until, 100),
            Loader("default", None).changes(since, until, 100),
        ):
            assert [row["id"] for row in rows] == [other.id, limited.id, micro.id, whole.id]
            assert all(row == stored[row["id"]] for row in rows)
            assert all(row["due_at"].utcoffset() == timedelta(0) for row in rows)
        only = Loader("default", ["probe"]).changes(since, until, 100)
        assert [row["id"] for row in only] == [limited.id, micro.id, whole.id]
        assert (
            Loader("default", None).window(until, 2)
            == Loader("default", None).window(until, 100)[:2]
        )
        # Going on from a key: what comes after that (due_at, id), ties broken by id.
        alarms.schedule_many([alarms.Spec("probe", {}, at=whole.due_at) for _ in range(3)])
        after_whole = in_id_order(Alarm.objects.filter(due_at=whole.due_at))
        key = (whole.due_at, after_whole[1])
        assert [row["id"] for row in Loader("default", None).window(until, 100, key)] == (
            after_whole[2:]
        )
        assert [
            row["id"]
            for row in Loader("default", None).window(until, 100, (limited.due_at, limited.id))
        ] == [micro.id, *after_whole]

    def test_change_feed_arms_new_and_moved_alarms_once(self):
        worker = runner()
        worker._load()
        assert len(worker.timers) == 0
        new = alarms.schedule("probe", {}, delay=timedelta(seconds=10))
        worker._poll()
        assert set(worker.timers._armed) == {new.id}
        alarms.reschedule(new, delay=timedelta(seconds=20))
        worker._poll()
        assert len(worker.timers) == 1
        assert worker.timers._armed[new.id].due_at == Alarm.objects.get(pk=new.pk).due_at


class TestLeases:
    def test_heartbeat_renews_the_leases_of_held_claims_only(self):
        worker = runner(heartbeat_interval=timedelta(seconds=5), lease_grace=timedelta(seconds=1))
        worker.heartbeat.register()
        mine, other = alarms.schedule("probe", {}), alarms.schedule("probe", {})
        now = timezone.now()
        (held,) = claim(db="default", worker_id=worker.id, now=now, lease_until=now, ids=[mine.id])
        claim(db="default", worker_id=uuid.uuid4(), now=now, lease_until=now, ids=[other.id])
        worker.holdings.hold([held])
        worker.heartbeat.beat()
        mine.refresh_from_db()
        other.refresh_from_db()
        assert mine.lease_until > now + timedelta(seconds=10)
        assert other.lease_until == now
        assert Worker.objects.get(pk=worker.id).in_flight == 1


class TestHousekeeping:
    def test_purge_deletes_old_succeeded_alarms_and_old_attempts_only(self, settings):
        settings.ALARMS = {"KEEP_SUCCEEDED": 3600, "KEEP_ATTEMPTS": 7200}
        now = timezone.now()
        old = AlarmFactory(succeeded=True, finished_at=now - timedelta(hours=2))
        AttemptFactory(alarm=old, started_at=now - timedelta(hours=2))
        recent = AlarmFactory(succeeded=True, finished_at=now - timedelta(minutes=5))
        failed = AlarmFactory(failed=True, finished_at=now - timedelta(days=9))
        old_attempt = AttemptFactory(alarm=failed, started_at=now - timedelta(hours=3))
        kept_attempt = AttemptFactory(alarm=failed, started_at=now - timedelta(hours=1))
        assert purge(db="default", now=now) == (1, 1)
        assert set(Alarm.objects.values_list("pk", flat=True)) == {recent.pk, failed.pk}
        assert set(Attempt.objects.values_list("pk", flat=True)) == {kept_attempt.pk}
        assert not Attempt.objects.filter(pk=old_attempt.pk).exists()

    def test_dead_workers_are_removed_and_the_oldest_live_one_purges(self):
        worker = runner(heartbeat_interval=timedelta(seconds=1))
        worker.heartbeat.register()
        long_dead = Worker.objects.create(
            name="gone",
            hostname="h",
            pid=1,
            executor="inline",
            started_at=timezone.now() - timedelta(days=2),
            heartbeat_at=timezone.now() - timedelta(days=2),
        )
        worker.heartbeat.housekeeping()
        assert not Worker.objects.filter(pk=long_dead.pk).exists()
        assert Worker.objects.filter(pk=worker.id).exists()


class TestRobustness:
    def test_an_async_handler_is_awaited(self):
        from django_alarms.testing import run_due

        calls = []

        @alarms.handler("tests.async_handler")
        async def async_handler(alarm):
            calls.append(alarm.payload)

        try:
            alarms.schedule("tests.async_handler", {"n": 1})
            assert run_due() == 1
        finally:
            from django_alarms.handlers import registry

            registry.unregister("tests.async_handler")
        assert calls == [{"n": 1}]
        assert Attempt.objects.get().outcome == "ok"

    def test_a_retry_with_a_payload_that_cannot_be_stored_is_a_failed_attempt(self):
        from django_alarms.handlers import registry
        from django_alarms.testing import run_due

        @alarms.handler("tests.bad_retry", max_attempts=1)
        def bad_retry(alarm):
            return alarms.Retry(delay=0, payload={"when": object()})

        try:
            alarm = alarms.schedule("tests.bad_retry", {"n": 1})
            run_due()
        finally:
            registry.unregister("tests.bad_retry")
        alarm.refresh_from_db()
        assert alarm.state == "failed"
        assert alarm.payload == {"n": 1}, "the old payload is kept"
        errors = list(Attempt.objects.values_list("error", flat=True))
        assert errors
        assert all("payload of Retry() was rejected" in e for e in errors)

    def test_a_raising_signal_receiver_does_not_stop_recording(self):
        from django_alarms.signals import alarm_succeeded
        from django_alarms.testing import run_due

        def broken(**kwargs):
            raise RuntimeError("receiver bug")

        alarm_succeeded.connect(broken, weak=False)
        try:
            alarm = alarms.schedule("probe", {})
            assert run_due() == 1
        finally:
            alarm_succeeded.disconnect(broken)
        alarm.refresh_from_db()
        assert alarm.state == "succeeded"


class TestClaimGrouping:
    def test_alarms_due_moments_apart_are_claimed_together(self, monkeypatch):
        """A steady stream is claimed in groups: when the earliest alarm must be claimed, the
        ones due within CLAIM_GATHER after it go in the same statement."""

        worker = runner()
        worker.heartbeat.register()
        worker.clock.sync()
        due = timezone.now() + timedelta(seconds=0.02)
        spaced = [due + timedelta(milliseconds=5 * n) for n in range(6)]  # 0..25 ms apart
        later = due + timedelta(seconds=5)
        created = alarms.schedule_many(
            [alarms.Spec("probe", {}, at=at) for at in spaced]
            + [alarms.Spec("probe", {}, at=later)]
        )
        worker._load()
        statements = []
        real_claim = worker.claimer.engine.claim

        def counting_claim(**kwargs):
            statements.append(list(kwargs["ids"]))
            return real_claim(**kwargs)

        monkeypatch.setattr(worker.claimer.engine, "claim", counting_claim)
        worker.claimer.claim_due()
        assert len(statements) == 1
        assert set(statements[0]) == {a.id for a in created[:6]}
        assert created[6].id in worker.timers, "the alarm due in 5 s waits for its time"
        worker.claimer.claim_due()
        assert len(statements) == 1, "nothing else must be claimed yet"

    def test_nothing_is_claimed_before_the_earliest_alarm_is_close(self, monkeypatch):

        worker = runner()
        worker.heartbeat.register()
        alarms.schedule("probe", {}, delay=timedelta(seconds=2))
        worker._load()
        monkeypatch.setattr(worker.claimer.engine, "claim", pytest.fail)
        worker.claimer.claim_due()
        assert len(worker.timers) == 1


class TestCrowds:
    """When a full batch is due at once, alarms whose lease follows their handler's time limit
    are swept (the earliest due that nobody holds) rather than claimed by id: workers that
    armed the same crowd then take disjoint rows instead of asking for the same ids."""

    def crowd_worker(self, monkeypatch) -> tuple[Runner, list[dict]]:

        worker = runner(concurrency=5000)  # room for every alarm of these tests
        worker.heartbeat.register()
        worker.clock.sync()
        statements: list[dict] = []
        real_claim = worker.claimer.engine.claim

        def recording_claim(**kwargs):
            statements.append(kwargs)
            return real_claim(**kwargs)

        monkeypatch.setattr(worker.claimer.engine, "claim", recording_claim)
        return worker, statements

    def test_a_worker_takes_the_crowd_that_no_other_worker_holds_and_lets_go_of_the_rest(
        self, monkeypatch
    ):
        worker, statements = self.crowd_worker(monkeypatch)
        due = timezone.now() - timedelta(seconds=1)
        crowd = alarms.schedule_many([alarms.Spec("probe", {}, at=due) for _ in range(1000)])
        worker._load()
        assert len(worker.timers) == 1000
        # Another worker got to 600 of them first.
        theirs = {a.id for a in crowd[::2]} | {a.id for a in crowd[1:200:2]}
        now = timezone.now()
        held = claim(
            db="default",
            worker_id=uuid.uuid4(),
            now=now,
            lease_until=now,
            ids=list(theirs),
            limit=len(theirs),
        )
        assert len(held) == 600

        worker.claimer.claim_due()

        assert statements[0].get("ids") is None, "a crowd is swept, not claimed by id"
        mine = set(Alarm.objects.filter(claimed_by=worker.id).values_list("id", flat=True))
        assert mine == {a.id for a in crowd} - theirs
        assert len(worker.timers) == 0, "what the other worker holds is let go"
        assert len(statements) <= 3

    def test_a_sweep_takes_due_alarms_not_armed_yet_and_the_armed_ones_still_get_their_turn(
        self, monkeypatch
    ):
        worker, statements = self.crowd_worker(monkeypatch)
        now = timezone.now()
        armed_ones = alarms.schedule_many(
            [alarms.Spec("probe", {}, at=now - timedelta(seconds=1)) for _ in range(500)]
        )
        worker._load()
        # Due earlier, scheduled after the load: not armed in this worker.
        unseen = alarms.schedule_many(
            [alarms.Spec("probe", {}, at=now - timedelta(seconds=2)) for _ in range(500)]
        )

        worker.claimer.claim_due()

        mine = set(Alarm.objects.filter(claimed_by=worker.id).values_list("id", flat=True))
        assert mine == {a.id for a in armed_ones} | {a.id for a in unseen}
        assert len(worker.timers) == 0
        assert all(s.get("ids") is None for s in statements)

    def test_a_full_sweep_arms_nothing_again_and_sweeps_on_until_the_crowd_is_taken(
        self, monkeypatch
    ):
        """The alarms popped for a sweep that took others instead are not pushed back onto
        the heap (in a crowd shared by several workers each would go round it once more per
        sweep): the worker sweeps on, armed or not, until a sweep comes back short."""
        worker, statements = self.crowd_worker(monkeypatch)
        due = timezone.now() - timedelta(seconds=1)
        crowd = alarms.schedule_many([alarms.Spec("probe", {}, at=due) for _ in range(1500)])
        worker._load()
        # The heap pops them in the reverse of the order in which the sweeps take them.
        for rank, alarm in enumerate(reversed(crowd)):
            item = worker.timers.get(alarm.id)
            worker.timers.arm(dataclasses.replace(item, deadline=item.deadline + rank * 1e-9))
        armed_again = []
        monkeypatch.setattr(worker.timers, "arm", armed_again.append)

        worker.claimer.claim_due()

        mine = set(Alarm.objects.filter(claimed_by=worker.id).values_list("id", flat=True))
        assert mine == {a.id for a in crowd}
        assert armed_again == []
        assert worker.claimer.crowds == {}
        assert all(s.get("ids") is None for s in statements)
        assert len(statements) <= 5, "500 at a time, and one sweep that finds nothing more"

    def test_alarms_outside_a_crowd_are_claimed_while_it_is_being_swept(self, monkeypatch):
        worker, _ = self.crowd_worker(monkeypatch)
        now = timezone.now()
        first = alarms.schedule_many(
            [alarms.Spec("probe", {}, at=now - timedelta(seconds=3)) for _ in range(1000)]
        )
        own = alarms.schedule("probe", {}, at=now - timedelta(seconds=2), timeout=7)
        other = alarms.schedule("tests.ok", {}, at=now - timedelta(seconds=2))
        alarms.schedule_many(
            [alarms.Spec("probe", {}, at=now - timedelta(seconds=1)) for _ in range(1000)]
        )
        worker._load()
        # Room for the first crowd and a little more: the sweeps of the crowd are still
        # coming back full when the worker has to stop claiming.
        monkeypatch.setattr(worker.claimer, "capacity", lambda: 1100 - len(worker.holdings))

        worker.claimer.claim_due()

        mine = set(Alarm.objects.filter(claimed_by=worker.id).values_list("id", flat=True))
        assert {a.id for a in first} <= mine
        assert {own.id, other.id} <= mine, "due before the rest of the crowd: claimed first"
        assert worker.claimer.crowds, "the crowd is not over"

    def test_what_a_claim_took_is_held_even_if_a_later_statement_fails(self, monkeypatch):
        from django.db import DatabaseError, OperationalError

        worker, _ = self.crowd_worker(monkeypatch)
        due = timezone.now() - timedelta(seconds=1)
        # Due first, so that the first batch popped holds them all.
        own = alarms.schedule_many(
            [alarms.Spec("probe", {}, at=due - timedelta(seconds=1), timeout=7) for _ in range(10)]
        )
        alarms.schedule_many([alarms.Spec("probe", {}, at=due) for _ in range(600)])
        worker._load()
        real_claim = worker.claimer.engine.claim

        def failing_sweep(**kwargs):
            if kwargs.get("handlers"):
                raise OperationalError("connection lost")
            return real_claim(**kwargs)

        monkeypatch.setattr(worker.claimer.engine, "claim", failing_sweep)

        with pytest.raises(DatabaseError):
            worker.claimer.claim_due()

        assert {a.id for a in own} <= set(worker.holdings.ids())
        assert all(a.id not in worker.timers for a in own)
        assert len(worker.timers) == 600, "the crowd's alarms that were popped are armed again"

    def test_alarms_with_a_time_limit_of_their_own_keep_their_lease(self, monkeypatch):
        from django_alarms.worker.claimer import _handler_timeout

        worker, statements = self.crowd_worker(monkeypatch)
        due = timezone.now() - timedelta(seconds=1)
        own = alarms.schedule_many(
            [alarms.Spec("probe", {}, at=due, timeout=7) for _ in range(300)]
        )
        default = alarms.schedule_many([alarms.Spec("probe", {}, at=due) for _ in range(300)])
        worker._load()

        worker.claimer.claim_due()

        grace = worker.options.lease_grace
        rows = Alarm.objects.filter(claimed_by=worker.id)
        leases = {row.id: row.lease_until - row.claimed_at for row in rows}
        assert len(leases) == 600
        assert {leases[a.id] for a in own} == {timedelta(seconds=7) + grace}
        handler_limit = timedelta(seconds=_handler_timeout("probe"))
        assert {leases[a.id] for a in default} == {handler_limit + grace}
        assert any(s.get("ids") is not None for s in statements), "own limits go by id"


class TestAttemptLogs:
    def completions(self, outcomes):
        from django_alarms.delivery import Result, decide

        now = timezone.now()
        out = []
        for outcome in outcomes:
            item = a_claim(due_at=now, created_at=now, lease_until=now)
            error = "" if outcome == "ok" else "ValueError: boom"
            out.append(decide(item, Result(outcome, now, now, error), now=now))
        return out

    def test_a_few_successes_are_logged_one_line_each(self, caplog):
        from django_alarms.attempt_log import log_attempts

        caplog.set_level("INFO", logger="django_alarms.worker")
        log_attempts(self.completions(["ok"] * 3 + ["error"]), WORKER_LOG)
        messages = [(r.levelname, r.getMessage()) for r in caplog.records]
        assert [level for level, _ in messages] == ["INFO", "INFO", "INFO", "WARNING"]
        assert all("probe attempt 1/3" in text for _, text in messages)

    def test_many_successes_are_summed_up_and_failures_still_logged_each(self, caplog):
        from django_alarms.attempt_log import LOG_SUCCESSES_EACH_UP_TO, log_attempts

        caplog.set_level("INFO", logger="django_alarms.worker")
        many = LOG_SUCCESSES_EACH_UP_TO + 5
        log_attempts(self.completions(["ok"] * many + ["error"]), WORKER_LOG)
        levels = [r.levelname for r in caplog.records]
        assert levels == ["WARNING", "INFO"]
        assert caplog.records[1].getMessage().startswith(f"{many} attempts succeeded (probe x")
        assert caplog.records[1].succeeded == many

    def test_verbose_logs_every_success_too(self, caplog):
        from django_alarms.attempt_log import LOG_SUCCESSES_EACH_UP_TO, log_attempts

        caplog.set_level("DEBUG", logger="django_alarms.worker")
        many = LOG_SUCCESSES_EACH_UP_TO + 1
        log_attempts(self.completions(["ok"] * many), WORKER_LOG)
        levels = [r.levelname for r in caplog.records]
        assert levels.count("DEBUG") == many
        assert levels.count("INFO") == 1


class TestDbClock:
    def test_the_offset_comes_from_the_shortest_round_trip(self):
        from django.db import connection
        from django.test.utils import CaptureQueriesContext

        from django_alarms.worker.clock import DbClock

        clock = DbClock("default")
        with CaptureQueriesContext(connection) as queries:
            offset = clock.sync(samples=4)
        if connection.vendor == "sqlite":
            assert offset == 0.0, "SQLite's clock is this process's"
            assert len(queries) == 0
        else:
            assert len(queries) == 4
            # Same machine, same clock: no sample can be a second off (units, sign).
            assert abs(offset) < 1.0
        assert clock.measured


@pytest.mark.django_db(transaction=True)
def test_on_sqlite_the_worker_notices_commits_of_other_connections():
    """SQLite has no NOTIFY: the worker watches PRAGMA data_version and runs the change feed
    when another connection committed. With the poll and the load an hour apart, only that
    can bring an alarm scheduled after the first load."""
    import threading

    from django.db import connection

    if connection.vendor != "sqlite":
        pytest.skip("PRAGMA data_version is SQLite's (PostgreSQL has LISTEN/NOTIFY)")
    worker = runner(load_interval=timedelta(hours=1), poll_interval=timedelta(hours=1))
    thread = threading.Thread(target=worker.run)
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while worker.stats["loads"] < 1 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert worker.stats["loads"] == 1
        alarm = alarms.schedule("probe", {"n": 1}, delay=timedelta(milliseconds=300))
        while not Attempt.objects.filter(alarm_id=alarm.id).exists():
            assert time.monotonic() < deadline, "the alarm was never delivered"
            time.sleep(0.02)
        assert worker.stats["loads"] == 1, "found by the change feed, not by a load"
    finally:
        worker.request_stop()
        thread.join(30)
    assert not thread.is_alive()


def test_claims_due_at_the_same_instant_start_in_priority_order():
    due = timezone.now() - timedelta(seconds=1)
    low = alarms.schedule("probe", {}, at=due, priority=-5)
    high = alarms.schedule("probe", {}, at=due, priority=50)
    middle = alarms.schedule("probe", {}, at=due)
    worker = runner()
    worker._load()
    worker.claimer.claim_due()
    order = [heapq.heappop(worker._ready)[2].alarm_id for _ in range(len(worker._ready))]
    assert order == [high.id, middle.id, low.id]


def test_a_worker_with_queues_arms_only_their_alarms():
    mine = alarms.schedule("probe", {}, queue="emails")
    alarms.schedule("probe", {})
    worker = runner(queues=("emails",))
    worker._load()
    assert set(worker.timers._armed) == {mine.id}


class TestGarbageCollector:
    def test_a_worker_collects_less_often_unless_the_project_set_its_own_thresholds(self):
        import gc

        from django_alarms.management.commands import run_alarms

        before = gc.get_threshold()
        try:
            gc.set_threshold(*run_alarms.PYTHON_GC_THRESHOLDS)
            run_alarms._tune_garbage_collector()
            assert gc.get_threshold() == run_alarms.WORKER_GC_THRESHOLDS
            gc.set_threshold(5_000, 20, 20)
            run_alarms._tune_garbage_collector()
            assert gc.get_threshold() == (5_000, 20, 20)
        finally:
            gc.set_threshold(*before)
