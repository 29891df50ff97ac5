"""django-alarms as a backend of Django's Tasks framework: ``@task`` functions, run at their time.

::

    TASKS = {"default": {"BACKEND": "django_alarms.tasks.AlarmsBackend"}}

    @task(max_attempts=5, timeout=30)          # django.tasks.task (or django_tasks.task)
    def send_reminder(account_id): ...

    send_reminder.using(run_after=timedelta(hours=1)).enqueue(7)

``enqueue`` writes one alarm in the caller's transaction: its handler is the task's module path,
its payload the arguments. ``run_alarms`` delivers it at ``run_after``; every attempt is an
Attempt row, retried with the task's backoff; ``get_result`` reads them back as a
``TaskResult``. Each task is registered as an alarm handler when it is defined, so that a worker
runs only the tasks the project's own code defines (never a path read from the database).
"""

from __future__ import annotations

import builtins
import dataclasses
import json
import os
import socket
import uuid
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from django.core.signals import setting_changed
from django.db import DatabaseError
from django.dispatch import receiver
from django.utils import timezone

from django_alarms import _tasks_compat as dt
from django_alarms import alarms, exceptions, validation
from django_alarms.backoff import Backoff
from django_alarms.conf import alarm_settings
from django_alarms.delivery import Returned
from django_alarms.exceptions import InvalidAlarm
from django_alarms.handlers import HandlerSpec, policy, registry
from django_alarms.models import Alarm, Attempt
from django_alarms.types import AlarmContext, Fail, Outcome, State

__all__ = ["AlarmTask", "AlarmsBackend", "task_for"]

#: The tasks defined with this backend, by module path: the only tasks a worker runs.
_TASKS: dict[str, dt.Task] = {}
#: What each path's handler was registered with (function, policy, backend defaults).
_REGISTERED: dict[str, tuple[Any, ...]] = {}

#: How an alarm's state reads as a task's status (paused: ready again once resumed; cancelled:
#: it will not run, as for a task that "was unable to start").
STATUS = {
    State.SCHEDULED: dt.TaskResultStatus.READY,
    State.PAUSED: dt.TaskResultStatus.READY,
    State.RUNNING: dt.TaskResultStatus.RUNNING,
    State.SUCCEEDED: dt.TaskResultStatus.SUCCESSFUL,
    State.FAILED: dt.TaskResultStatus.FAILED,
    State.CANCELLED: dt.TaskResultStatus.FAILED,
}
#: The attempts that are a task's errors (a timeout and a lost attempt each give one).
_FAILED_OUTCOMES = frozenset({Outcome.ERROR, Outcome.TIMEOUT, Outcome.LOST})

#: How the worker running a task names itself in the task's ``worker_ids`` while it runs.
_THIS_PROCESS = f"{socket.gethostname()}:{os.getpid()}"


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class AlarmTask(dt.Task):
    """A task of :class:`AlarmsBackend`: Django's ``Task`` with the delivery policy of an alarm
    handler (``@task(max_attempts=5, timeout=30, backoff=Backoff(...))``). ``None`` takes the
    backend's ``OPTIONS`` and then the ``ALARMS`` settings."""

    max_attempts: int | None = None
    timeout: timedelta | float | None = None
    backoff: Backoff | None = None

    def __reduce__(self) -> tuple[Any, ...]:
        # A task pickles as its module path and what using() may have changed; unpickling
        # finds it among the tasks this process defined.
        changes = {
            "priority": self.priority,
            "queue_name": self.queue_name,
            "run_after": self.run_after,
            "backend": self.backend,
        }
        return (task_for, (self.module_path, changes))


def task_for(path: str, changes: dict[str, Any] | None = None) -> dt.Task:
    """The task defined at ``path`` (``module.function``) in this process, with ``changes`` (the
    fields that ``using()`` sets). :class:`ValueError` when no such task was defined with this
    backend: a path read from a row or a pickle is never imported."""
    found = _TASKS.get(path)
    if found is None:
        raise ValueError(f"Expected {path!r} to point to a Task instance.")
    if not changes:
        return found
    different = {name: value for name, value in changes.items() if getattr(found, name) != value}
    return dataclasses.replace(found, **different) if different else found


class AlarmsBackend(dt.BaseTaskBackend):
    """Django Tasks backend: each enqueued task is an alarm, delivered by ``run_alarms``.

    ``OPTIONS``: ``max_attempts``, ``timeout`` (seconds or a timedelta) and ``backoff`` (a
    :class:`~django_alarms.backoff.Backoff` or a dict of its fields), the defaults of tasks that
    do not set their own.
    """

    task_class = AlarmTask
    supports_defer = True
    supports_async_task = True
    supports_get_result = True
    supports_priority = True

    def __init__(self, alias: str, params: dict[str, Any]) -> None:
        super().__init__(alias, params)
        options = {name.lower(): value for name, value in self.options.items()}
        unknown = set(options) - {"max_attempts", "timeout", "backoff"}
        if unknown:
            raise dt.InvalidTask(
                f"TASKS[{alias!r}]['OPTIONS']: unknown option(s) {', '.join(sorted(unknown))} "
                "(known: max_attempts, timeout, backoff)"
            )
        self.defaults = _policy(
            f"TASKS[{alias!r}]['OPTIONS']",
            options.get("max_attempts"),
            options.get("timeout"),
            options.get("backoff"),
        )

    # -- definition ------------------------------------------------------------------------------

    def validate_task(self, task: dt.Task) -> None:
        """Django's checks, then this backend's: ``run_after`` may also be a ``timedelta``
        from now (as Django's reference documents), and a task's policy must be valid. A valid
        task is registered, so that workers run it."""
        if isinstance(task.run_after, timedelta):
            if task.run_after < timedelta(0):
                raise dt.InvalidTask("run_after must not be a negative timedelta.")
            # Django's own checks, on the task without its relative time (replace() validates).
            dataclasses.replace(task, run_after=None)
        else:
            super().validate_task(task)
        if isinstance(task.run_after, datetime):
            try:
                validation.storable("run_after", task.run_after)
            except InvalidAlarm as exc:
                raise dt.InvalidTask(str(exc)) from None
        own = _policy(
            task.module_path,
            getattr(task, "max_attempts", None),
            getattr(task, "timeout", None),
            getattr(task, "backoff", None),
        )
        if len(task.module_path) > validation.HANDLER_NAME_MAX_LENGTH:
            raise dt.InvalidTask(
                f"the task's module path {task.module_path!r} is longer than "
                f"{validation.HANDLER_NAME_MAX_LENGTH} characters"
            )
        self._register(task, own)

    def _register(self, task: dt.Task, own: Policy) -> None:
        path = task.module_path
        if _REGISTERED.get(path) == (task.func, own, self.defaults) and path in registry:
            return  # every enqueue() validates again: the registration is done already
        if path not in _TASKS or _TASKS[path].func is not task.func:
            _TASKS[path] = task
        _REGISTERED[path] = (task.func, own, self.defaults)
        attempts, limit, delays = (
            mine if mine is not None else default
            for mine, default in zip(own, self.defaults, strict=True)
        )
        registry.register(
            HandlerSpec(
                name=path, func=_deliver, max_attempts=attempts, timeout=limit, backoff=delays
            )
        )

    # -- enqueue ---------------------------------------------------------------------------------

    def enqueue(self, task: dt.Task, args: Sequence[Any], kwargs: dict[str, Any]) -> dt.TaskResult:
        """Write the task's alarm in the caller's transaction (roll it back and the task was
        never enqueued) and return its ``READY`` result."""
        self.validate_task(task)
        arguments = {"args": dt.normalize_json(list(args)), "kwargs": dt.normalize_json(kwargs)}
        run_after = task.run_after
        due: datetime | None = None
        delay: timedelta | None = None
        if isinstance(run_after, timedelta):
            delay = run_after
        elif run_after is not None:
            due = run_after
        try:
            alarm = alarms.schedule(
                task.module_path,
                {**arguments, "backend": self.alias, "run_after": _iso(run_after)},
                at=due,
                delay=delay,
                priority=task.priority,
                queue=task.queue_name,
            )
        except InvalidAlarm as exc:
            raise dt.InvalidTask(str(exc)) from None
        if delay is not None:
            task = dataclasses.replace(task, run_after=alarm.due_at)
        result = dt.TaskResult(
            task=task,
            id=str(alarm.id),
            status=dt.TaskResultStatus.READY,
            enqueued_at=alarm.created_at,
            started_at=None,
            last_attempted_at=None,
            finished_at=None,
            args=arguments["args"],
            kwargs=arguments["kwargs"],
            backend=self.alias,
            errors=[],
            worker_ids=[],
        )
        dt.task_enqueued.send(type(self), task_result=result)
        return result

    # -- results ---------------------------------------------------------------------------------

    def get_result(self, result_id: str) -> dt.TaskResult:
        """The result of the task enqueued as ``result_id``, read from its alarm and attempts.
        ``TaskResultDoesNotExist`` for an id that is not one of a task's alarms."""
        try:
            pk = uuid.UUID(str(result_id))
        except ValueError:
            raise dt.TaskResultDoesNotExist(result_id) from None
        db = str(alarm_settings.DATABASE)
        alarm = Alarm.objects.using(db).filter(pk=pk).first()
        if alarm is None or alarm.handler not in _TASKS or not isinstance(alarm.payload, dict):
            raise dt.TaskResultDoesNotExist(result_id)
        attempts = list(
            Attempt.objects.using(db)
            .filter(alarm_id=pk)
            .order_by("number")
            .values_list("outcome", "started_at", "error", "traceback", "worker", "result")
        )
        return _result(alarm, attempts, db)


Policy = tuple[int | None, timedelta | None, Any]


def _policy(where: str, max_attempts: Any, timeout: Any, backoff: Any) -> Policy:
    """A task's (or the backend's) delivery policy, checked as ``@alarms.handler`` checks a
    handler's; :class:`InvalidTask` naming ``where`` otherwise."""
    try:
        return policy(max_attempts, timeout, backoff)
    except (InvalidAlarm, TypeError, ValueError) as exc:
        raise dt.InvalidTask(f"{where}: {exc}") from None


def _iso(run_after: datetime | timedelta | None) -> str | None:
    return run_after.isoformat() if isinstance(run_after, datetime) else None


def _task_of(alarm: Alarm) -> dt.Task:
    payload: dict[str, Any] = alarm.payload or {}
    run_after = payload.get("run_after")
    changes = {
        "priority": alarm.priority,
        "queue_name": alarm.queue,
        "backend": payload.get("backend", "default"),
        "run_after": datetime.fromisoformat(run_after) if run_after else None,
    }
    base = _TASKS[alarm.handler]
    try:
        return task_for(alarm.handler, changes)
    except dt.InvalidTask:
        # A queue or backend that the settings no longer have: the task as it is defined.
        return base


def _result(alarm: Alarm, attempts: list[tuple[Any, ...]], db: str) -> dt.TaskResult:
    payload: dict[str, Any] = alarm.payload or {}
    status = STATUS[State(alarm.state)]
    workers = [worker for _, _, _, _, worker, _ in attempts]
    starts = [started for _, started, _, _, _, _ in attempts]
    if status == dt.TaskResultStatus.RUNNING and alarm.claimed_at is not None:
        workers.append(_worker_name(alarm, db))
        starts.append(alarm.claimed_at)
    errors = [
        dt.TaskError(exception_class_path=_class_path(error), traceback=traceback or error)
        for outcome, _, error, traceback, _, _ in attempts
        if outcome in _FAILED_OUTCOMES
    ]
    result = dt.TaskResult(
        task=_task_of(alarm),
        id=str(alarm.id),
        status=status,
        enqueued_at=alarm.created_at,
        started_at=starts[0] if starts else None,
        last_attempted_at=starts[-1] if starts else None,
        finished_at=alarm.finished_at if alarm.state in (State.SUCCEEDED, State.FAILED) else None,
        args=payload.get("args", []),
        kwargs=payload.get("kwargs", {}),
        backend=payload.get("backend", "default"),
        errors=errors,
        worker_ids=workers,
    )
    if status == dt.TaskResultStatus.SUCCESSFUL:
        returned = [value for outcome, *_, value in attempts if outcome == Outcome.OK]
        value = json.loads(returned[-1]) if returned and returned[-1] else None
        object.__setattr__(result, "_return_value", value)
    return result


def _worker_name(alarm: Alarm, db: str) -> str:
    from django_alarms.models import Worker

    if alarm.claimed_by is None:
        return ""
    try:
        names = Worker.objects.using(db).filter(id=alarm.claimed_by).values_list("name", flat=True)
        return next(iter(names), str(alarm.claimed_by))
    except DatabaseError:
        return str(alarm.claimed_by)


def _class_path(error: str) -> str:
    """The exception class an attempt's error text names (``ValueError: ...`` is a builtin's,
    ``myapp.errors.Declined: ...`` carries its module, ``LostAttempt: ...`` is ours)."""
    name = error.split(":", 1)[0].strip()
    if "." in name:
        return name
    if isinstance(getattr(builtins, name, None), type):
        return f"builtins.{name}"
    if isinstance(getattr(exceptions, name, None), type):
        return f"django_alarms.exceptions.{name}"
    return "builtins.Exception"


# -- in the worker -------------------------------------------------------------------------------


def _deliver(alarm: AlarmContext) -> Returned:
    """The handler of every task alarm: run the task as Django's own backends do (signals, log
    lines, context), and answer its JSON return value."""
    task = _TASKS[alarm.handler]
    payload = alarm.payload if isinstance(alarm.payload, dict) else {}
    args, kwargs = payload.get("args", []), payload.get("kwargs", {})
    alias = payload.get("backend", task.backend)
    sender = _backend_class(alias)
    started = timezone.now()
    result = _running(
        task=task,
        id=str(alarm.id),
        status=dt.TaskResultStatus.RUNNING,
        enqueued_at=alarm.created_at,
        started_at=started,
        last_attempted_at=started,
        finished_at=None,
        args=args,
        kwargs=kwargs,
        backend=alias,
        errors=[],
        worker_ids=[*_earlier_workers(alarm), _THIS_PROCESS],
    )
    dt.task_started.send(sender=sender, task_result=result)
    try:
        if task.takes_context:
            value = task.call(dt.TaskContext(task_result=result), *args, **kwargs)
        else:
            value = task.call(*args, **kwargs)
        if value is None:
            text = "null"
        else:
            value = dt.normalize_json(value)
            text = json.dumps(value)
    except KeyboardInterrupt:
        raise
    except BaseException as exc:
        object.__setattr__(result, "status", dt.TaskResultStatus.FAILED)
        object.__setattr__(result, "finished_at", timezone.now())
        # Inside the except block: Django's "django.tasks" logger logs the traceback.
        dt.task_finished.send(sender=sender, task_result=result)
        if isinstance(exc, TypeError) and "Unsupported type" in str(exc):
            raise Fail() from exc  # a return value that is not JSON: retrying will not help
        raise
    object.__setattr__(result, "status", dt.TaskResultStatus.SUCCESSFUL)
    object.__setattr__(result, "finished_at", timezone.now())
    object.__setattr__(result, "_return_value", value)
    dt.task_finished.send(sender=sender, task_result=result)
    return Returned(text)


#: The fields of Django's TaskResult, each with the setter of its slot: a running task's
#: result is built by setting them, without the dataclass's ``__init__`` (a frozen dataclass
#: sets each field through ``object.__setattr__``) and its ``__post_init__`` (which normalises
#: arguments that were read from JSON already). Empty when TaskResult has no slots, or other
#: fields than those known here: then its constructor is used.
_RESULT_FIELDS = (
    "task",
    "id",
    "status",
    "enqueued_at",
    "started_at",
    "finished_at",
    "last_attempted_at",
    "args",
    "kwargs",
    "backend",
    "errors",
    "worker_ids",
    "_return_value",
)
_RESULT_SLOTS: dict[str, Any] = (
    {name: getattr(dt.TaskResult, name).__set__ for name in _RESULT_FIELDS}
    if {field.name for field in dataclasses.fields(dt.TaskResult)} == set(_RESULT_FIELDS)
    and all(hasattr(getattr(dt.TaskResult, name, None), "__set__") for name in _RESULT_FIELDS)
    else {}
)


def _running(**values: Any) -> Any:
    if not _RESULT_SLOTS:
        return dt.TaskResult(**values)
    result = object.__new__(dt.TaskResult)
    for name, value in values.items():
        _RESULT_SLOTS[name](result, value)
    _RESULT_SLOTS["_return_value"](result, None)
    return result


#: The class of each Tasks backend alias, as the signals' sender (the settings' TASKS).
_BACKEND_CLASSES: dict[str, type] = {}


def _backend_class(alias: str) -> type:
    found = _BACKEND_CLASSES.get(alias)
    if found is None:
        try:
            found = type(dt.task_backends[alias])
        except Exception:  # settings changed since the task was enqueued
            found = AlarmsBackend
        _BACKEND_CLASSES[alias] = found
    return found


@receiver(setting_changed)
def _forget_backends(*, setting: str, **kwargs: Any) -> None:
    if setting == "TASKS":
        _BACKEND_CLASSES.clear()


def _earlier_workers(alarm: AlarmContext) -> list[str]:
    """The workers of this budget's earlier attempts (read only for a retry)."""
    if alarm.attempt <= 1:
        return []
    rows = (
        Attempt.objects.using(str(alarm_settings.DATABASE))
        .filter(alarm_id=alarm.id)
        .order_by("-number")
        .values_list("worker", flat=True)[: alarm.attempt - 1]
    )
    return list(reversed(list(rows)))


def tasks() -> dict[str, dt.Task]:
    """The tasks this process defined with :class:`AlarmsBackend`, by module path."""
    return dict(_TASKS)
