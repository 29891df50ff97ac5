"""django_alarms.tasks.AlarmsBackend against the behaviours that Django's own tests for task
backends check (``tests/tasks/`` of Django's source, 6.1.3: test_tasks.py,
test_immediate_backend.py, test_custom_backend.py), on ``django.tasks`` (Django 6) or the
django-tasks backport (Django 5.2). Tasks are in ``tests/workerapp/tasks.py``; they run here
through ``run_due``, as a worker's inline executor runs them."""

from __future__ import annotations

import dataclasses
import logging
import pickle
import uuid
from datetime import datetime, timedelta

import pytest
from django.db import transaction
from django.test import override_settings
from django.utils import timezone

from django_alarms import _tasks_compat as dt
from django_alarms import alarms
from django_alarms.models import Alarm, Attempt
from django_alarms.tasks import AlarmsBackend, AlarmTask, task_for
from django_alarms.testing import run_due
from django_alarms.types import State
from tests.workerapp import tasks as t

pytestmark = pytest.mark.django_db

Status = dt.TaskResultStatus
#: The logger of the framework's signal receivers: "django.tasks", or the backport's.
LOGGER = "django.tasks" if dt.SOURCE == "django.tasks" else "django_tasks"


def later(seconds: float = 0) -> datetime:
    return timezone.now() + timedelta(seconds=seconds)


# -- definition and validation ---------------------------------------------------------------------


def test_django_6_uses_its_own_framework_and_5_2_the_backport():
    import django

    expected = "django.tasks" if django.VERSION >= (6, 0) else "django_tasks"
    framework = dt.SOURCE
    assert framework == expected


def test_the_backend_is_the_one_configured_and_says_what_it_supports():
    backend = dt.task_backends["default"]
    assert isinstance(backend, AlarmsBackend)
    assert backend.supports_defer
    assert backend.supports_get_result
    assert backend.supports_priority
    assert backend.supports_async_task
    assert isinstance(t.noop_task, AlarmTask)
    assert isinstance(t.noop_task_from_bare_decorator, AlarmTask)
    assert isinstance(t.noop_task_async, AlarmTask)


def test_our_task_class_takes_a_delivery_policy_with_defaults():
    assert t.noop_task.max_attempts is None
    assert t.noop_task.timeout is None
    assert t.timed_probe.timeout == 7.5
    assert t.timed_probe.priority == 5
    with pytest.raises(TypeError):
        dt.task(unknown_param=123)(t.noop_task.func)
    with pytest.raises(dt.InvalidTask, match="max_attempts"):
        dt.task(max_attempts=0)(t.noop_task.func)
    with pytest.raises(dt.InvalidTask, match="timeout"):
        dt.task(timeout=-1)(t.noop_task.func)


def test_the_backends_options_are_checked():
    with pytest.raises(dt.InvalidTask, match="unknown option"):
        AlarmsBackend("x", {"OPTIONS": {"retries": 3}})
    with pytest.raises(dt.InvalidTask, match="max_attempts"):
        AlarmsBackend("x", {"OPTIONS": {"max_attempts": "three"}})


def test_validation_of_priority_run_after_queue_and_function():
    for priority in (-101, 101, 3.1):
        with pytest.raises(dt.InvalidTask, match="priority must be a whole number"):
            t.noop_task.using(priority=priority)
    for priority in (100, -100, 0):
        t.noop_task.using(priority=priority)
    with pytest.raises(dt.InvalidTask, match="run_after must be an aware datetime"):
        t.noop_task.using(run_after=datetime.now())
    with pytest.raises(dt.InvalidTask, match="Queue 'queue-2' is not valid for backend"):
        t.noop_task.using(queue_name="queue-2")
    assert t.noop_task.using(queue_name="queue-2", backend="anyqueue").queue_name == "queue-2"
    with pytest.raises(dt.InvalidTask, match="defined at a module level"):
        dt.task()(any)
    with pytest.raises(dt.InvalidTask, match="first argument of 'context'"):
        dt.task(takes_context=True)(t.calculate_meaning_of_life.func)
    with pytest.raises(TypeError, match="run_after"):  # 6.1 says "cannot be defined statically"
        dt.task(run_after=timezone.now())(t.calculate_meaning_of_life.func)


def test_run_after_may_be_a_timedelta_from_now_as_djangos_reference_says():
    deferred = t.noop_task.using(run_after=timedelta(minutes=5))
    before = timezone.now()
    result = deferred.enqueue()
    alarm = Alarm.objects.get(pk=result.id)
    assert before + timedelta(minutes=5) <= alarm.due_at <= timezone.now() + timedelta(minutes=5)
    assert result.task.run_after == alarm.due_at, "the result holds the resolved time"
    with pytest.raises(dt.InvalidTask, match="negative"):
        t.noop_task.using(run_after=timedelta(seconds=-1))


@pytest.mark.parametrize("enqueue", ["sync", "async"])
def test_validation_runs_again_at_enqueue(enqueue):
    from asgiref.sync import async_to_sync

    custom = t.noop_task.using(queue_name="emails")
    call = custom.enqueue if enqueue == "sync" else async_to_sync(custom.aenqueue)
    with (
        override_settings(
            TASKS={"default": {"BACKEND": "django_alarms.tasks.AlarmsBackend", "QUEUES": ["q1"]}}
        ),
        pytest.raises(dt.InvalidTask, match="Queue 'emails' is not valid for backend"),
    ):
        call()
    assert not Alarm.objects.exists()


# -- enqueue -------------------------------------------------------------------------------------


def test_enqueue_writes_one_alarm_and_returns_a_ready_result():
    result = t.echo.using(priority=7, queue_name="emails").enqueue(1, "two", three=[3])
    assert result.status == Status.READY
    assert result.task == t.echo.using(priority=7, queue_name="emails")
    assert (result.args, result.kwargs) == ([1, "two"], {"three": [3]})
    assert result.backend == "default"
    assert result.worker_ids == []
    assert result.errors == []
    assert result.attempts == 0
    assert result.started_at is result.finished_at is result.last_attempted_at is None
    alarm = Alarm.objects.get(pk=result.id)
    assert alarm.handler == "tests.workerapp.tasks.echo" == t.echo.module_path
    assert alarm.payload["args"] == [1, "two"]
    assert alarm.payload["kwargs"] == {"three": [3]}
    assert (alarm.priority, alarm.queue, alarm.state) == (7, "emails", State.SCHEDULED)
    assert result.enqueued_at == alarm.created_at
    with pytest.raises(ValueError, match="not finished yet"):
        _ = result.return_value


def test_aenqueue_writes_it_too():
    from asgiref.sync import async_to_sync

    result = async_to_sync(t.noop_task.aenqueue)()
    assert result.status == Status.READY
    assert Alarm.objects.filter(pk=result.id).exists()


def test_arguments_that_are_not_json_raise_unsupported_type_and_write_nothing():
    from asgiref.sync import async_to_sync

    with pytest.raises(TypeError, match="Unsupported type"):
        t.noop_task.enqueue(datetime.now())
    with pytest.raises(TypeError, match="Unsupported type"):
        async_to_sync(t.noop_task.aenqueue)(datetime.now())
    assert not Alarm.objects.exists()


def test_enqueue_joins_the_callers_transaction():
    """Unlike Django's built-in backends: roll back and the task was never enqueued."""

    def view() -> None:
        with transaction.atomic():
            result = t.noop_task.enqueue()
            assert Alarm.objects.filter(pk=result.id).exists()
            raise RuntimeError("the view failed")

    with pytest.raises(RuntimeError):
        view()
    assert not Alarm.objects.exists()


def test_a_deferred_task_is_delivered_at_run_after_not_before():
    at = later(60)
    result = t.calculate_meaning_of_life.using(run_after=at).enqueue()
    assert run_due(at - timedelta(milliseconds=1)) == 0
    assert run_due(at) == 1
    result.refresh()
    assert result.status == Status.SUCCESSFUL
    assert result.return_value == 42


# -- results -------------------------------------------------------------------------------------


def test_get_result_equals_the_enqueued_result_sync_and_async():
    from asgiref.sync import async_to_sync

    at = later(30)
    result = t.noop_task.using(run_after=at, priority=3).enqueue()
    assert t.noop_task.get_result(result.id) == result
    assert async_to_sync(t.noop_task.aget_result)(result.id) == result
    original = dataclasses.asdict(result)
    result.refresh()
    async_to_sync(result.arefresh)()
    assert dataclasses.asdict(result) == original


def test_unknown_malformed_and_foreign_ids_do_not_exist():
    from asgiref.sync import async_to_sync

    for bad in ("123", "not-a-uuid", "00000000-0000-0000-0000-000000000000"):
        with pytest.raises(dt.TaskResultDoesNotExist):
            t.noop_task.get_result(bad)
    with pytest.raises(dt.TaskResultDoesNotExist):
        async_to_sync(t.noop_task.aget_result)("123")
    plain = alarms.schedule("probe", {})
    with pytest.raises(dt.TaskResultDoesNotExist):
        dt.task_backends["default"].get_result(str(plain.id))


def test_a_result_of_another_task_is_a_mismatch():
    result = dt.task_backends["default"].enqueue(t.noop_task_async, (), {})
    with pytest.raises(Exception, match="Task does not match"):
        t.noop_task.get_result(result.id)


def test_a_successful_result_has_its_times_worker_and_return_value():
    result = t.echo.enqueue("hi", n=2)
    run_due()
    result.refresh()
    assert result.status == Status.SUCCESSFUL
    assert result.is_finished
    assert result.return_value == {"args": ["hi"], "kwargs": {"n": 2}}
    attempt = Attempt.objects.get(alarm_id=result.id)
    assert result.worker_ids == [attempt.worker]
    assert result.attempts == 1
    assert result.started_at == result.last_attempted_at == attempt.started_at
    assert result.finished_at == Alarm.objects.get(pk=result.id).finished_at
    assert result.errors == []


def test_results_pickle():
    result = t.echo.enqueue(1)
    run_due()
    result.refresh()
    again = pickle.loads(pickle.dumps(result))
    assert again == result
    assert again.return_value == {"args": [1], "kwargs": {}}
    assert pickle.loads(pickle.dumps(t.noop_task)) == t.noop_task


def test_a_task_path_that_this_process_did_not_define_is_never_imported():
    with pytest.raises(ValueError, match=r"Expected 'builtins\.any' to point to a Task"):
        task_for("builtins.any")
    with pytest.raises(ValueError, match="to point to a Task instance"):
        task_for("does.not.exist.fake_task")


def test_an_alarm_whose_task_is_not_defined_fails_its_attempt_naming_the_path():
    alarm = Alarm.objects.create(
        handler="myproject.gone.old_task",
        payload={"args": [], "kwargs": {}},
        due_at=timezone.now(),
        max_attempts=1,
    )
    run_due()
    attempt = Attempt.objects.get(alarm=alarm)
    assert "'myproject.gone.old_task'" in attempt.error


# -- failures ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("task_name", "path", "message"),
    [
        ("failing_task_value_error", "builtins.ValueError", "This Task failed due to ValueError"),
        ("failing_task_system_exit", "builtins.SystemExit", "This Task failed due to SystemExit"),
        ("complex_exception", "builtins.ValueError", "This task failed"),
    ],
)
def test_an_exception_or_system_exit_is_a_failed_attempt_with_its_traceback(
    task_name, path, message, caplog
):
    task = getattr(t, task_name)
    result = task.enqueue()
    with caplog.at_level(logging.INFO, LOGGER):
        assert run_due() == 1
    result.refresh()
    assert result.status == Status.FAILED
    assert len(result.errors) == 1
    error = result.errors[0]
    assert error.exception_class_path == path
    assert error.exception_class is __import__("builtins").__dict__[path.split(".")[1]]
    assert message in error.traceback
    assert "Traceback" in error.traceback
    assert task.func.__name__ in error.traceback
    with pytest.raises(ValueError, match="Task failed"):
        _ = result.return_value
    failed = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert failed
    assert failed[0].exc_info is not None, "task_finished is sent inside except"
    assert "state=FAILED" in failed[0].getMessage()


def test_keyboard_interrupt_is_not_swallowed():
    t.failing_task_keyboard_interrupt.enqueue()
    with pytest.raises(KeyboardInterrupt):
        run_due()


def test_a_return_value_that_is_not_json_fails_the_task_with_type_error_at_once():
    result = t.complex_return_value.enqueue()
    assert run_due() == 1, "no retry: it would return the same value"
    result.refresh()
    assert result.status == Status.FAILED
    assert [e.exception_class_path for e in result.errors] == ["builtins.TypeError"]
    assert "Unsupported type" in result.errors[0].traceback


def test_retries_follow_the_tasks_policy_and_each_failure_is_an_error(tmp_path):
    marker = tmp_path / "count"
    result = t.fails_twice.enqueue(str(marker))
    now = timezone.now()
    for step in range(3):
        run_due(now + timedelta(seconds=step * 5))
    result.refresh()
    assert result.status == Status.SUCCESSFUL
    assert result.return_value == 3
    assert result.attempts == 3
    assert len(result.errors) == 2
    assert [e.exception_class_path for e in result.errors] == ["builtins.RuntimeError"] * 2
    assert result.started_at < result.last_attempted_at


def test_a_cancelled_task_is_failed_and_a_paused_one_ready():
    cancelled = t.noop_task.using(run_after=later(60)).enqueue()
    paused = t.noop_task.using(run_after=later(60)).enqueue()
    alarms.cancel(cancelled.id)
    alarms.pause(paused.id)
    assert t.noop_task.get_result(cancelled.id).status == Status.FAILED
    assert t.noop_task.get_result(paused.id).status == Status.READY


def test_a_running_task_is_running_on_its_worker():
    from tests.factories import claim

    result = t.noop_task.enqueue()
    claim(worker_id=uuid.uuid4(), now=timezone.now(), lease_until=later(60))
    got = t.noop_task.get_result(result.id)
    assert got.status == Status.RUNNING
    assert got.attempts == 1
    assert got.started_at is not None


# -- context, signals, logs ----------------------------------------------------------------------


def test_context_tasks_receive_the_task_context_with_attempt_from_one():
    result = t.test_context.enqueue(1)
    run_due()
    result.refresh()
    assert result.status == Status.SUCCESSFUL
    assert result.return_value == 1
    ids = t.get_task_id.enqueue()
    run_due()
    assert t.get_task_id.get_result(ids.id).return_value == ids.id


def test_async_tasks_run():
    result = t.noop_task_async.enqueue()
    run_due()
    result.refresh()
    assert result.status == Status.SUCCESSFUL
    assert result.return_value is None


def test_signals_are_sent_with_the_backend_class_and_the_log_lines_match_djangos(caplog):
    seen = []

    def receiver(signal):
        def record(sender, task_result, **kwargs):
            seen.append((signal, sender, task_result.status))

        return record

    handlers = {name: receiver(name) for name in ("task_enqueued", "task_started", "task_finished")}
    for name, handler in handlers.items():
        getattr(dt, name).connect(handler)
    try:
        with caplog.at_level(logging.DEBUG, LOGGER):
            result = t.calculate_meaning_of_life.enqueue()
            run_due()
    finally:
        for name, handler in handlers.items():
            getattr(dt, name).disconnect(handler)
    assert seen == [
        ("task_enqueued", AlarmsBackend, Status.READY),
        ("task_started", AlarmsBackend, Status.RUNNING),
        ("task_finished", AlarmsBackend, Status.SUCCESSFUL),
    ]
    lines = [r.getMessage() for r in caplog.records if r.name == LOGGER]
    path = t.calculate_meaning_of_life.module_path
    assert lines == [
        f"Task id={result.id} path={path} enqueued backend=default",
        f"Task id={result.id} path={path} state=RUNNING",
        f"Task id={result.id} path={path} state=SUCCESSFUL",
    ]
    assert "None" not in " ".join(lines)


def test_a_recurring_task_runs_on_its_schedule_through_schedule_recurring():
    alarm = alarms.schedule_recurring(
        t.echo.module_path,
        {"args": ["tick"], "kwargs": {}},
        every=timedelta(minutes=1),
        key="ticks",
        name="every minute",
    )
    first = alarm.due_at
    run_due(first)
    alarm.refresh_from_db()
    assert alarm.due_at == first + timedelta(minutes=1)
    assert Attempt.objects.get(alarm=alarm).result == '{"args": ["tick"], "kwargs": {}}'


def test_without_the_framework_importing_the_backend_says_what_to_install(monkeypatch):
    import importlib

    from django_alarms import _tasks_compat

    def missing(name, *args, **kwargs):
        if name in ("django.tasks", "django_tasks"):
            raise ImportError(f"No module named {name!r}")
        return importlib.import_module(name, *args, **kwargs)

    monkeypatch.setattr(_tasks_compat, "import_module", missing)
    with pytest.raises(ImportError, match=r"django-alarms\[tasks\]"):
        _tasks_compat._framework()


def test_a_system_check_explains_a_missing_framework(monkeypatch, settings):
    from django_alarms import checks

    monkeypatch.setattr(checks, "tasks_framework", lambda: False)
    errors = [m for m in checks.check_settings(None) if m.id == "django_alarms.E005"]
    assert len(errors) == 1
    assert "django-tasks" in errors[0].msg
