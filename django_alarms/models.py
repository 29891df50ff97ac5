"""Alarm, Attempt and Worker. QuerySets only filter; every write goes through ``alarms.py``."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import TYPE_CHECKING, Any

from django.core.serializers.json import DjangoJSONEncoder
from django.db import models
from django.db.models import Q
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from django_alarms.types import ACTIVE_STATES, Outcome, State
from django_alarms.validation import (
    DEFAULT_QUEUE,
    HANDLER_NAME_MAX_LENGTH,
    QUEUE_MAX_LENGTH,
    TRACEPARENT_LENGTH,
)

if TYPE_CHECKING:
    from django_alarms.recurrence import Recurrence

KEY_MAX_LENGTH = 200
NAME_MAX_LENGTH = 200
HANDLER_MAX_LENGTH = HANDLER_NAME_MAX_LENGTH
#: The LISTEN/NOTIFY channel that wakes workers on PostgreSQL.
NOTIFY_CHANNEL = "django_alarms"


class PartialIndex(models.Index):
    """An index with a condition that falls back to a whole index where the database has no
    partial indexes (MySQL, MariaDB), instead of failing."""

    def create_sql(self, model: Any, schema_editor: Any, using: str = "", **kwargs: Any) -> Any:
        if (
            self.condition is not None
            and not schema_editor.connection.features.supports_partial_indexes
        ):
            whole = models.Index(fields=self.fields, name=self.name)
            return whole.create_sql(model, schema_editor, using=using, **kwargs)
        return super().create_sql(model, schema_editor, using=using, **kwargs)


class AlarmQuerySet(models.QuerySet["Alarm"]):
    def scheduled(self) -> AlarmQuerySet:
        return self.filter(state=State.SCHEDULED)

    def running(self) -> AlarmQuerySet:
        return self.filter(state=State.RUNNING)

    def failed(self) -> AlarmQuerySet:
        return self.filter(state=State.FAILED)

    def active(self) -> AlarmQuerySet:
        return self.filter(state__in=ACTIVE_STATES)

    def due(self, now: datetime | None = None) -> AlarmQuerySet:
        """Scheduled alarms whose time has come."""
        return self.filter(state=State.SCHEDULED, due_at__lte=now or timezone.now())

    def due_before(self, until: datetime) -> AlarmQuerySet:
        """Scheduled alarms due before ``until`` (the loader's window), earliest first."""
        return self.filter(state=State.SCHEDULED, due_at__lt=until).order_by("due_at")

    def changed_since(self, since: datetime) -> AlarmQuerySet:
        return self.filter(state=State.SCHEDULED, updated_at__gt=since)

    def held_by(self, worker_id: Any, number: int | None = None) -> AlarmQuerySet:
        """Running alarms claimed by ``worker_id`` (in their attempt ``number``, when given):
        the fence of every write a worker makes about what it claimed. A worker whose lease
        passed and whose alarm was taken over matches nothing, so it changes nothing."""
        held = self.filter(state=State.RUNNING, claimed_by=worker_id)
        return held if number is None else held.filter(attempts=number)

    def lease_expired(self, now: datetime) -> AlarmQuerySet:
        """Running alarms whose worker has not finished nor extended the claim in time."""
        return self.filter(state=State.RUNNING, lease_until__lt=now)

    def recurring(self) -> AlarmQuerySet:
        return self.filter(recurrence__isnull=False)

    def one_off(self) -> AlarmQuerySet:
        return self.filter(recurrence__isnull=True)

    def by_key(self, key: str, name: str | None = None) -> AlarmQuerySet:
        qs = self.filter(key=key)
        return qs if name is None else qs.filter(name=name)


class Alarm(models.Model):
    """A message to deliver to a handler at ``due_at``; one row, from scheduling to its end."""

    State = State

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    handler = models.CharField(_("handler"), max_length=HANDLER_MAX_LENGTH)
    key = models.CharField(_("key"), max_length=KEY_MAX_LENGTH, blank=True, default="")
    name = models.CharField(_("name"), max_length=NAME_MAX_LENGTH, blank=True, default="")
    payload = models.JSONField(_("payload"), encoder=DjangoJSONEncoder, null=True, blank=True)
    state = models.CharField(
        _("state"), max_length=16, choices=State.choices, default=State.SCHEDULED
    )
    due_at = models.DateTimeField(_("due at"))
    # Attempts made over the alarm's whole life (the number of its last Attempt row) and how
    # many of them came before the current attempt budget (retry() and every new occurrence
    # of a recurring alarm start a fresh budget).
    attempts = models.PositiveIntegerField(_("attempts"), default=0)
    budget_start = models.PositiveIntegerField(default=0, editable=False)
    max_attempts = models.PositiveIntegerField(_("max attempts"))
    timeout = models.FloatField(
        _("timeout (s)"), null=True, blank=True, help_text=_("Empty: the handler's timeout.")
    )
    last_error = models.TextField(_("last error"), blank=True, default="")
    priority = models.SmallIntegerField(
        _("priority"),
        default=0,
        db_default=0,
        help_text=_("Among alarms due at the same instant, a higher priority runs first."),
    )
    queue = models.CharField(
        _("queue"),
        max_length=QUEUE_MAX_LENGTH,
        default=DEFAULT_QUEUE,
        db_default=DEFAULT_QUEUE,
        help_text=_("run_alarms --queues serves chosen queues only."),
    )
    recurrence = models.JSONField(_("recurrence"), null=True, blank=True, editable=False)
    trace_context = models.CharField(
        _("trace"),
        max_length=TRACEPARENT_LENGTH,
        blank=True,
        default="",
        db_default="",
        editable=False,
        help_text=_(
            "The W3C traceparent of the span that scheduled the alarm: each delivery's span "
            "links to it."
        ),
    )
    occurrence_at = models.DateTimeField(
        _("occurrence"),
        null=True,
        blank=True,
        help_text=_("For a recurring alarm, the occurrence that the next delivery is for."),
    )
    claimed_by = models.UUIDField(_("worker"), null=True, blank=True, editable=False)
    claimed_at = models.DateTimeField(_("claimed at"), null=True, blank=True, editable=False)
    lease_until = models.DateTimeField(_("lease until"), null=True, blank=True, editable=False)
    cancel_requested = models.BooleanField(default=False, editable=False)
    cancel_reason = models.CharField(_("cancel reason"), max_length=255, blank=True, default="")
    created_at = models.DateTimeField(_("created at"), default=timezone.now, editable=False)
    updated_at = models.DateTimeField(_("updated at"), default=timezone.now, editable=False)
    finished_at = models.DateTimeField(_("finished at"), null=True, blank=True, editable=False)

    objects = AlarmQuerySet.as_manager()

    class Meta:
        verbose_name = _("alarm")
        verbose_name_plural = _("alarms")
        ordering = ["due_at"]
        # Partial indexes: a row is in the index of its state only, so a claim (scheduled ->
        # running) or a completion writes few index entries. Where partial indexes are not
        # supported (MySQL, MariaDB) they are created whole (see PartialIndex).
        indexes = [
            # The window, earliest first; the id orders alarms due at the same instant, so
            # that a window capped by MAX_IN_MEMORY goes on from its last row.
            PartialIndex(
                fields=["due_at", "id"], condition=Q(state=State.SCHEDULED), name="alarms_due"
            ),
            PartialIndex(
                fields=["updated_at"], condition=Q(state=State.SCHEDULED), name="alarms_changed"
            ),
            PartialIndex(
                fields=["lease_until"], condition=Q(state=State.RUNNING), name="alarms_lease"
            ),
            PartialIndex(
                fields=["finished_at"],
                condition=Q(state=State.SUCCEEDED),
                name="alarms_succeeded",
            ),
            PartialIndex(
                fields=["state", "due_at"],
                condition=Q(state__in=[State.FAILED, State.CANCELLED, State.PAUSED]),
                name="alarms_stopped",
            ),
            PartialIndex(fields=["key", "name"], condition=~Q(key=""), name="alarms_key_name"),
            # The admin's list of all alarms, earliest first, on large tables.
            models.Index(fields=["due_at"], name="alarms_due_any"),
        ]
        constraints = [
            models.UniqueConstraint(
                fields=["key", "name"],
                condition=Q(state__in=list(ACTIVE_STATES)) & ~Q(name=""),
                name="alarms_one_active_per_key_name",
                violation_error_message=_("An active alarm with this key and name exists."),
            ),
        ]
        permissions = [
            ("retry_alarm", _("Can retry alarms")),
            ("run_alarm", _("Can run alarms now")),
            ("cancel_alarm", _("Can cancel alarms")),
            ("reschedule_alarm", _("Can reschedule alarms")),
        ]

    def __str__(self) -> str:
        label = f"{self.key}/{self.name}" if self.name else (self.key or str(self.id)[:8])
        return f"{self.handler} {label}"

    @property
    def is_recurring(self) -> bool:
        return self.recurrence is not None

    @property
    def budget_attempts(self) -> int:
        """Attempts made within the current budget (what ``max_attempts`` limits)."""
        return self.attempts - self.budget_start

    def get_recurrence(self) -> Recurrence | None:
        """The :class:`~django_alarms.recurrence.Recurrence` of a recurring alarm, else None."""
        if self.recurrence is None:
            return None
        from django_alarms.recurrence import Recurrence

        return Recurrence.from_json(self.recurrence)


class Attempt(models.Model):
    """One delivery attempt of an alarm: the audit trail. Never edited once written."""

    Outcome = Outcome

    id = models.BigAutoField(primary_key=True)
    # No constraint in the database: workers insert attempts in bulk on their hot path, and
    # a deferred foreign-key check per row costs more than the insert itself. Only
    # django-alarms writes attempts, always for an alarm it holds; deleting an alarm through
    # Django (or the purge) deletes its attempts. No index of its own either: the index on
    # (alarm, number) serves every lookup by alarm, and each index costs every insert.
    alarm = models.ForeignKey(
        Alarm,
        on_delete=models.CASCADE,
        related_name="history",
        verbose_name=_("alarm"),
        db_constraint=False,
        db_index=False,
    )
    number = models.PositiveIntegerField(_("number"))
    outcome = models.CharField(_("outcome"), max_length=16, choices=Outcome.choices)
    started_at = models.DateTimeField(_("started at"))
    finished_at = models.DateTimeField(_("finished at"), null=True, blank=True)
    handler = models.CharField(_("handler"), max_length=HANDLER_MAX_LENGTH, default="")
    due_at = models.DateTimeField(_("due at"), null=True, blank=True)
    error = models.TextField(_("error"), blank=True, default="")
    traceback = models.TextField(_("traceback"), blank=True, default="")
    worker = models.CharField(_("worker"), max_length=255, blank=True, default="")
    #: What a Django task returned, as JSON text ("" for alarms' handlers and failed attempts).
    result = models.TextField(_("result"), blank=True, default="", db_default="")

    class Meta:
        verbose_name = _("attempt")
        verbose_name_plural = _("attempts")
        ordering = ["-started_at", "-number"]
        indexes = [
            models.Index(fields=["alarm", "number"], name="alarms_attempt_alarm_num"),
            models.Index(fields=["started_at"], name="alarms_attempt_started"),
            # The attempts that went wrong, for the failure reports and the admin's filter. The
            # ``ok`` ones are most rows and the index of start times finds them fast, so they
            # stay out: the attempt of every successful delivery writes one index entry less.
            PartialIndex(
                fields=["outcome", "started_at"],
                condition=~Q(outcome=Outcome.OK),
                name="alarms_attempt_not_ok",
            ),
        ]

    def __str__(self) -> str:
        return f"#{self.number} {self.outcome}"

    @property
    def duration(self) -> float | None:
        if self.finished_at is None:
            return None
        return (self.finished_at - self.started_at).total_seconds()


class WorkerQuerySet(models.QuerySet["Worker"]):
    def alive(self, since: datetime) -> WorkerQuerySet:
        return self.filter(heartbeat_at__gte=since)

    def dead(self, before: datetime) -> WorkerQuerySet:
        return self.filter(heartbeat_at__lt=before)


class Worker(models.Model):
    """One ``run_alarms`` process: a fresh identity per start, kept alive by heartbeats."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    name = models.CharField(_("name"), max_length=255)
    hostname = models.CharField(_("host"), max_length=255)
    pid = models.PositiveIntegerField(_("pid"))
    executor = models.CharField(_("executor"), max_length=32)
    concurrency = models.PositiveIntegerField(_("concurrency"), default=1)
    #: What the worker was started to serve (``--handlers``, ``--queues``); empty: all.
    handlers = models.JSONField(_("handlers"), default=list, blank=True)
    queues = models.JSONField(_("queues"), default=list, blank=True)
    started_at = models.DateTimeField(_("started at"))
    heartbeat_at = models.DateTimeField(_("last heartbeat"))
    in_flight = models.PositiveIntegerField(_("in flight"), default=0)
    stopping = models.BooleanField(_("stopping"), default=False)
    version = models.CharField(_("version"), max_length=32, blank=True, default="")

    objects = WorkerQuerySet.as_manager()

    class Meta:
        verbose_name = _("worker")
        verbose_name_plural = _("workers")
        ordering = ["-started_at"]
        indexes = [models.Index(fields=["heartbeat_at"], name="alarms_worker_heartbeat")]

    def __str__(self) -> str:
        return self.name
