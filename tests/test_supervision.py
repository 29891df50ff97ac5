"""The worker's threads outlive every fault of one step, one row or one answer (issue 13).

Each test drives one piece of the worker (a step of a thread, the recorder's batch, the
loader, the heartbeat) in this process, with the fault injected where it arises.
"""

from __future__ import annotations

import logging
import threading
import uuid
from datetime import timedelta

import pytest
from django.db import DataError, IntegrityError, OperationalError, connection
from django.utils import timezone as dj_timezone

from django_alarms import alarms, delivery, outcomes
from django_alarms.claims import Claim
from django_alarms.executors.inline import InlineExecutor
from django_alarms.models import Alarm, Attempt
from django_alarms.supervision import Supervisor
from django_alarms.validation import EARLIEST
from django_alarms.worker import heartbeat as heartbeat_module
from django_alarms.worker import recorder as recorder_module
from django_alarms.worker import runner as runner_module
from django_alarms.worker.loader import Loader
from django_alarms.worker.runner import Options, Runner
from tests.factories import a_claim, claim, store_payload_text

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _keep_the_connection(monkeypatch):
    """After a failed step the worker closes its connection, so that the next step opens a
    fresh one; here the faults are injected and the test's transaction must stay open."""
    monkeypatch.setattr(runner_module, "close", lambda db: None)
    monkeypatch.setattr(recorder_module, "close", lambda db: None)


def a_runner(**overrides) -> Runner:
    options = {
        "load_interval": timedelta(seconds=30),
        "heartbeat_interval": timedelta(seconds=5),
        "lease_grace": timedelta(seconds=1),
        **overrides,
    }
    return Runner(Options.from_settings(**options))


def held_by(worker: Runner, *handlers: str, payloads: list[dict] | None = None) -> list[Claim]:
    """Schedule one alarm per handler due now; ``worker`` claims and holds them all."""
    worker.heartbeat.register()
    payloads = payloads or [{"n": n} for n in range(len(handlers))]
    ids = [
        alarms.schedule(name, payload).pk for name, payload in zip(handlers, payloads, strict=True)
    ]
    now = dj_timezone.now()
    claims = claim(
        db="default", worker_id=worker.id, now=now, lease_until=now + timedelta(minutes=5), ids=ids
    )
    worker.claimer.hold(claims, now)
    return sorted(claims, key=lambda c: ids.index(c.alarm_id))


# -- the supervisor ------------------------------------------------------------------------------


def test_a_thread_body_that_raises_is_logged_and_run_again_until_it_returns(caplog):
    supervisor = Supervisor()
    runs: list[int] = []

    def body() -> None:
        runs.append(1)
        if len(runs) < 3:
            raise ValueError(f"fault {len(runs)}")

    supervisor.run("probe thread", body, done=lambda: False, wait=lambda _: None)
    assert len(runs) == 3
    assert supervisor.failures["probe thread"] == 2
    assert "probe thread failed unexpectedly" in caplog.text
    assert "ValueError: fault 2" in caplog.text, "logged with its traceback"


def test_an_error_that_is_not_an_exception_is_fatal_and_stops_the_worker(caplog):
    worker = a_runner()

    def body() -> None:
        raise SystemExit(3)

    thread = worker.supervisor.thread("alarms-probe", body, done=lambda: False, wait=lambda _: None)
    thread.start()
    thread.join(5)
    assert not thread.is_alive()
    assert worker.exit_code == 1
    assert worker.stopping.is_set(), "stops claiming; _shutdown releases what it holds"
    assert "cannot go on" in caplog.text


def test_the_main_loop_goes_on_after_an_unexpected_error(caplog, monkeypatch):
    worker = a_runner()
    loads: list[int] = []

    def broken_load() -> None:
        loads.append(1)
        if len(loads) == 2:
            worker.request_stop()
        raise ValueError("a row this version cannot read")

    monkeypatch.setattr(worker, "_load", broken_load)
    monkeypatch.setattr(runner_module, "MAX_BACKOFF", 0.01)
    worker._loop()  # returns once stopped: the error did not end it
    assert len(loads) == 2
    assert worker.supervisor.failures["main loop"] == 2
    assert "main loop failed unexpectedly" in caplog.text


# -- the recorder --------------------------------------------------------------------------------


def test_a_completion_the_database_refuses_fails_alone_and_the_batch_is_recorded(monkeypatch):
    worker = a_runner()
    first, bad, last = held_by(worker, "tests.ok", "tests.ok", "tests.ok")
    real_record = recorder_module.record

    def refusing(completions, **kwargs):
        if any(c.claim.alarm_id == bad.alarm_id and c.result.outcome == "ok" for c in completions):
            raise DataError("value out of range for this column")
        return real_record(completions, **kwargs)

    monkeypatch.setattr(recorder_module, "record", refusing)
    pending = [(c, delivery.execute(c)) for c in (first, bad, last)]
    worker.recorder.write_apart(pending)

    assert pending == [], "everything was written"
    for healthy in (first, last):
        assert Alarm.objects.get(pk=healthy.alarm_id).state == Alarm.State.SUCCEEDED
    attempt = Attempt.objects.get(alarm_id=bad.alarm_id)
    assert attempt.outcome == "error"
    assert attempt.error.startswith("UnrecordableOutcome: the outcome ok of this attempt")
    assert "value out of range" in attempt.error
    assert Alarm.objects.get(pk=bad.alarm_id).state == Alarm.State.SCHEDULED, "retried"
    assert len(worker.holdings) == 0


def test_a_completion_that_cannot_be_written_at_all_is_left_to_its_lease(monkeypatch, caplog):
    worker = a_runner()
    (only,) = held_by(worker, "tests.ok")

    def refusing(completions, **kwargs):
        raise DataError("refused whatever it is")

    monkeypatch.setattr(recorder_module, "record", refusing)
    pending = [(only, delivery.execute(only))]
    worker.recorder.write_apart(pending)
    assert pending == []
    assert only.alarm_id not in worker.holdings, "no longer renewed: the rescue takes it over"
    assert Alarm.objects.get(pk=only.alarm_id).state == Alarm.State.RUNNING
    assert f"alarm {only.alarm_id} attempt 1: not recorded" in caplog.text


def test_an_outage_keeps_the_whole_batch_for_the_next_try(monkeypatch):
    worker = a_runner()
    claims = held_by(worker, "tests.ok", "tests.ok")

    def away(completions, **kwargs):
        raise OperationalError("server closed the connection unexpectedly")

    monkeypatch.setattr(recorder_module, "record", away)
    pending = [(c, delivery.execute(c)) for c in claims]
    with pytest.raises(OperationalError):
        worker.recorder.write_apart(pending)
    assert len(pending) == 2
    assert set(worker.holdings.ids()) == {c.alarm_id for c in claims}, "still held and renewed"


@alarms.handler("tests.unwritable_error")
def unwritable_error(alarm: alarms.AlarmContext) -> alarms.Retry:
    if alarm.payload.get("retry"):
        return alarms.Retry(reason="partner says \x00 and \ud800")
    raise ValueError("bad byte \x00 and a lone \udc80 surrogate")


def test_error_text_no_database_can_store_is_written_escaped_and_the_batch_stands():
    worker = a_runner()
    raised, retried, healthy = held_by(
        worker,
        "tests.unwritable_error",
        "tests.unwritable_error",
        "tests.ok",
        payloads=[{}, {"retry": True}, {}],
    )
    pending = [(c, delivery.execute(c)) for c in (raised, retried, healthy)]
    worker.recorder.write_apart(pending)

    assert pending == []
    attempt = Attempt.objects.get(alarm_id=raised.alarm_id)
    assert attempt.error == "ValueError: bad byte \\x00 and a lone \\udc80 surrogate"
    assert "bad byte \\x00" in attempt.traceback
    assert Alarm.objects.get(pk=retried.alarm_id).last_error == "partner says \\x00 and \\ud800"
    assert Alarm.objects.get(pk=healthy.alarm_id).state == Alarm.State.SUCCEEDED
    assert worker.supervisor.failures == {}, "written at the first try"


def test_storable_text_keeps_what_every_database_stores_and_bounds_its_length():
    assert delivery.storable_text("") == ""
    assert delivery.storable_text(None) == ""
    assert delivery.storable_text("déjà vu ✓") == "déjà vu ✓"
    assert delivery.storable_text("a\x00b") == "a\\x00b"
    assert delivery.storable_text("x" * 5000) == "x" * delivery.ERROR_MAX_LENGTH
    assert delivery.storable_text("ab" * 10, 4, tail=True) == "abab"
    assert delivery.storable_text(42) == "42"


# -- the rescue sweep ----------------------------------------------------------------------------


def test_the_loser_of_two_racing_rescue_sweeps_says_so(monkeypatch, caplog):
    gone = uuid.uuid4()
    alarm = alarms.schedule("tests.ok", {})
    now = dj_timezone.now()
    claim(db="default", worker_id=gone, now=now, lease_until=now - timedelta(seconds=1))
    real_record = delivery.record

    def raced(completions, **kwargs):
        real_record(completions, **kwargs)  # the other worker's sweep wins
        return real_record(completions, **kwargs)

    monkeypatch.setattr(delivery, "record", raced)
    with caplog.at_level(logging.INFO, logger="django_alarms"):
        assert delivery.rescue(db="default", now=now) == 0
    assert Attempt.objects.filter(alarm=alarm, outcome="lost").count() == 1
    assert "another worker's rescue sweep took it over first" in caplog.text
    assert "no longer held by this worker" not in caplog.text


# -- the loader ----------------------------------------------------------------------------------


@pytest.mark.skipif(
    connection.vendor not in ("sqlite", "postgresql"),
    reason="MySQL and MariaDB cannot store a time outside years 1000-9999",
)
def test_a_stored_due_time_out_of_range_is_armed_now_and_the_load_goes_on(caplog):
    bad = alarms.schedule("tests.ok", {})
    good = alarms.schedule("tests.ok", {"n": 1})
    table = Alarm._meta.db_table
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            # Accepted by PostgreSQL, which stores it as 1 BC; Python has no year 0.
            cursor.execute(
                f'UPDATE "{table}" SET due_at = %s::timestamptz WHERE id = %s',
                ["0001-01-01 00:00:00+05", bad.pk],
            )
        else:
            cursor.execute(
                f'UPDATE "{table}" SET due_at = %s WHERE id = %s',
                ["10000-01-01 00:00:00", bad.pk.hex],
            )
    rows = Loader("default", None).window(dj_timezone.now() + timedelta(minutes=1), 100)
    armed = {row["id"]: row["due_at"] for row in rows}
    assert armed[bad.pk] == EARLIEST
    assert armed[good.pk] == good.due_at
    assert f"alarm {bad.pk}: its stored due time" in caplog.text


# -- the heartbeat -------------------------------------------------------------------------------


def test_after_an_outage_the_heartbeat_renews_within_a_second_and_rescues_a_beat_later(
    monkeypatch,
):
    worker = a_runner()
    worker.heartbeat.register()
    rescues: list[int] = []
    monkeypatch.setattr(heartbeat_module, "rescue", lambda **kwargs: rescues.append(1) or 0)
    real_beat = worker.heartbeat.beat

    def away() -> bool:
        raise OperationalError("the database system is starting up")

    monkeypatch.setattr(worker.heartbeat, "beat", away)
    assert worker.heartbeat.step() == 1.0, "looks again within a second, not in 5 s"
    assert rescues == []
    monkeypatch.setattr(worker.heartbeat, "beat", real_beat)
    assert worker.heartbeat.step() == 5.0
    assert rescues == [], "others get a heartbeat interval to renew their leases first"
    worker.heartbeat._connected_since -= 5.0
    worker.heartbeat.step()
    assert rescues == [1]


def test_without_an_outage_the_heartbeat_rescues_on_every_beat(monkeypatch):
    worker = a_runner()
    worker.heartbeat.register()
    rescues: list[int] = []
    monkeypatch.setattr(heartbeat_module, "rescue", lambda **kwargs: rescues.append(1) or 0)
    worker.heartbeat.step()
    worker.heartbeat.step()
    assert rescues == [1, 1]


# -- the inline executor -------------------------------------------------------------------------


def test_an_attempt_that_cannot_start_is_reported_failed_and_the_thread_goes_on():
    results: list = []
    asked: list[Claim] = []

    def broken(item: Claim) -> bool:
        asked.append(item)
        if len(asked) == 1:
            raise RuntimeError("the clock estimate is broken")
        return True

    executor = InlineExecutor(
        concurrency=1,
        on_result=lambda c, r: results.append((c, r)),
        now=dj_timezone.now,
        may_start=broken,
    )
    executor.start()
    try:
        first, second = a_claim(handler="tests.ok"), a_claim(handler="tests.ok")
        executor.submit(first)
        executor.submit(second)
        assert executor.wait_idle(5)
    finally:
        executor.stop()
    assert [(c.alarm_id, r.outcome) for c, r in results] == [
        (first.alarm_id, "error"),
        (second.alarm_id, "ok"),
    ]
    assert results[0][1].error.startswith("WorkerError: the attempt could not start")
    assert executor.held() == 0
    assert executor.supervisor.failures["starting an attempt"] == 1


def test_a_handler_thread_the_system_refuses_is_started_at_the_next_look(monkeypatch):
    release = threading.Event()

    @alarms.handler("tests.hangs", timeout=timedelta(seconds=0.2))
    def hangs(alarm: alarms.AlarmContext) -> None:
        release.wait(10)

    results: list = []
    done = threading.Event()

    def on_result(item: Claim, result: delivery.Result | None) -> None:
        results.append(result)
        if len(results) == 2:
            done.set()

    executor = InlineExecutor(concurrency=1, on_result=on_result, now=dj_timezone.now)
    executor.start()
    real_spawn = executor._spawn
    spawns: list[int] = []

    def refused_once() -> threading.Thread:
        spawns.append(1)
        if len(spawns) == 1:
            raise RuntimeError("can't start new thread")
        return real_spawn()

    monkeypatch.setattr(executor, "_spawn", refused_once)
    try:
        executor.submit(a_claim(handler="tests.hangs"))
        executor.submit(a_claim(handler="tests.ok"))
        assert done.wait(10), "the queued attempt ran on the replacement thread"
    finally:
        release.set()
        executor.stop()
    assert [r.outcome for r in results] == ["timeout", "ok"]
    assert executor.supervisor.failures["starting a handler thread"] == 1


# -- the django-q2 task --------------------------------------------------------------------------


@pytest.mark.skipif(
    connection.vendor == "postgresql", reason="PostgreSQL's jsonb holds nothing but JSON"
)
def test_the_django_q_task_reads_a_row_that_is_not_json_as_a_failing_claim():
    from django_alarms.executors.django_q import _held_claim

    worker_id = uuid.uuid4()
    alarm = alarms.schedule("tests.ok", {"n": 1})
    now = dj_timezone.now()
    claim(db="default", worker_id=worker_id, now=now, lease_until=now + timedelta(minutes=1))
    store_payload_text(alarm.pk, "{not json")
    held = _held_claim("default", alarm.pk, 1, worker_id)
    assert held is not None
    assert held.problem.startswith("UnreadableAlarm: the stored payload")
    assert delivery.execute(held).outcome == "error"
    assert _held_claim("default", alarm.pk, 2, worker_id) is None, "another attempt's task"


# -- the change feed's listener ------------------------------------------------------------------


@pytest.mark.skipif(connection.vendor != "postgresql", reason="LISTEN/NOTIFY is PostgreSQL's")
def test_a_fault_of_the_listeners_own_code_is_logged_with_its_traceback_and_it_goes_on(caplog):
    from django_alarms.worker.loader import Listener

    woken = threading.Event()
    calls: list[int] = []

    def on_notify() -> None:
        calls.append(1)
        if len(calls) == 1:
            raise ValueError("a bug in the wake-up")
        woken.set()

    listener = Listener("default", on_notify)
    listener.start()
    try:
        assert woken.wait(10), "it connected again and went on"
    finally:
        listener.stop()
        listener.join(5)
    assert listener.supervisor.failures["the change feed's listener"] == 1
    assert "ValueError: a bug in the wake-up" in caplog.text


# -- a row the database refuses to update ---------------------------------------------------------


def _refusing(real, bad: uuid.UUID):
    """``real`` (claim or record), except that the database refuses any statement touching
    ``bad``, as MariaDB does for a row whose stored JSON is not JSON."""

    def refusing(*args, **kwargs):
        ids = kwargs.get("ids") or [c.claim.alarm_id for c in (args[0] if args else [])]
        if bad in ids:
            raise IntegrityError("CONSTRAINT `django_alarms_alarm.payload` failed")
        return real(*args, **kwargs)

    return refusing


def test_a_row_the_database_refuses_to_claim_is_left_alone_and_the_others_are_claimed(
    monkeypatch, caplog
):
    worker = a_runner()
    worker.heartbeat.register()
    alarms_ = [alarms.schedule("tests.ok", {"n": n}) for n in range(5)]
    bad = alarms_[3].pk
    monkeypatch.setattr(worker.claimer.engine, "claim", _refusing(worker.claimer.engine.claim, bad))
    worker._load()
    worker.claimer.claim_due()
    assert set(worker.holdings.ids()) == {a.pk for a in alarms_} - {bad}
    assert worker.claimer.refused == 1
    assert f"alarm {bad} cannot be claimed" in caplog.text
    assert Alarm.objects.get(pk=bad).state == Alarm.State.SCHEDULED


def test_a_lost_attempt_the_database_refuses_to_record_does_not_stop_the_rescue(
    monkeypatch, caplog
):
    gone = uuid.uuid4()
    lost = [alarms.schedule("tests.ok", {"n": n}) for n in range(3)]
    now = dj_timezone.now()
    claim(db="default", worker_id=gone, now=now, lease_until=now - timedelta(seconds=1))
    bad = lost[1].pk
    monkeypatch.setattr(delivery, "record", _refusing(delivery.record, bad))
    assert delivery.rescue(db="default", now=now) == 2
    assert Attempt.objects.filter(outcome="lost").count() == 2
    assert Alarm.objects.get(pk=bad).state == Alarm.State.RUNNING, "left to a later sweep"
    assert f"alarm {bad} attempt 1: its lost attempt cannot be recorded" in caplog.text


@pytest.mark.skipif(connection.vendor != "mysql", reason="MariaDB checks JSON on every update")
def test_on_mariadb_a_payload_written_around_its_json_check_stops_no_other_claim(caplog):
    worker = a_runner()
    worker.heartbeat.register()
    alarms_ = [alarms.schedule("tests.ok", {"n": n}) for n in range(3)]
    store_payload_text(alarms_[0].pk, "{not json")
    worker._load()
    worker.claimer.claim_due()
    assert set(worker.holdings.ids()) == {alarms_[1].pk, alarms_[2].pk}
    assert f"alarm {alarms_[0].pk} cannot be claimed" in caplog.text


# -- a write whose answer was lost -----------------------------------------------------------------


def test_a_completion_committed_but_unanswered_is_known_as_recorded_on_the_retry(
    monkeypatch, caplog
):
    worker = a_runner()
    claims = held_by(worker, "tests.ok", "tests.ok")
    real_record = recorder_module.record
    answers: list[int] = []

    def committed_then_lost(completions, **kwargs):
        applied = real_record(completions, **kwargs)
        if not answers:
            answers.append(1)
            raise OperationalError("the connection was lost after the commit")
        return applied

    monkeypatch.setattr(recorder_module, "record", committed_then_lost)
    pending = [(c, delivery.execute(c)) for c in claims]
    with pytest.raises(OperationalError):
        worker.recorder.write_apart(pending)
    # Meanwhile the heartbeat finds the rows no longer running: not a takeover.
    worker.heartbeat.beat()
    assert set(worker.holdings.ids()) == {c.alarm_id for c in claims}
    assert worker.holdings.dropped == 0
    worker.recorder.write_apart(pending)  # the recorder's retry

    assert pending == []
    assert len(worker.holdings) == 0
    assert Attempt.objects.filter(outcome="ok").count() == 2, "written once each"
    assert (worker.recorder.recorded, worker.recorder.fenced) == (2, 0)
    assert "recorded already, by this worker's earlier try" in caplog.text
    assert "no longer held by this worker" not in caplog.text


def test_the_heartbeat_leaves_to_the_recorder_what_it_is_writing(caplog):
    worker = a_runner()
    (item,) = held_by(worker, "tests.ok")
    worker.holdings.begin_recording([item.alarm_id])
    done = delivery.decide(item, delivery.execute(item), now=dj_timezone.now(), worker=worker.name)
    delivery.record([done], db="default")  # committed; the recorder has not forgotten it yet
    worker.heartbeat.beat()
    assert item.alarm_id in worker.holdings
    assert worker.holdings.dropped == 0
    assert "no longer held by this worker" not in caplog.text


def test_a_claim_committed_but_unanswered_is_given_back_when_the_database_answers(
    monkeypatch, caplog
):
    worker = a_runner()
    worker.heartbeat.register()
    scheduled = [alarms.schedule("tests.ok", {"n": n}) for n in range(3)]
    worker._load()
    real_claim = worker.claimer.engine.claim
    answers: list[int] = []

    def committed_then_lost(**kwargs):
        claimed = real_claim(**kwargs)
        if not answers:
            answers.append(1)
            raise OperationalError("the connection was lost after the commit")
        return claimed

    monkeypatch.setattr(worker.claimer.engine, "claim", committed_then_lost)
    with pytest.raises(OperationalError):
        worker.claimer.claim_due()
    assert len(worker.holdings) == 0
    assert Alarm.objects.filter(state="running", claimed_by=worker.id).count() == 3

    worker.claimer.claim_due()  # the database answers again
    assert set(worker.holdings.ids()) == {a.pk for a in scheduled}
    assert set(Alarm.objects.values_list("attempts", flat=True)) == {1}, "no attempt counted"
    assert "released 3 alarm(s) that a claim statement took" in caplog.text


def test_a_completion_fenced_off_by_a_rescue_is_not_taken_for_an_earlier_try(caplog):
    worker = a_runner()
    (item,) = held_by(worker, "tests.ok")
    result = delivery.execute(item)
    # This worker froze; another worker's rescue recorded the attempt lost, in its name.
    later = dj_timezone.now() + timedelta(minutes=10)
    lost = delivery.decide(
        item, outcomes.lost(item, item.due_at, later, worker.name), now=later, worker=worker.name
    )
    Alarm.objects.filter(pk=item.alarm_id).update(lease_until=later - timedelta(minutes=1))
    assert delivery.record([lost], db="default", now=later, fence={"lease_until__lt": later})
    worker.recorder.write_apart([(item, result)])  # the woken worker's own completion
    assert "no longer held by this worker" in caplog.text
    assert "recorded already" not in caplog.text
    assert (worker.recorder.recorded, worker.recorder.fenced) == (0, 1)
