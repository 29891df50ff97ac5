"""OpenTelemetry: the delivery span links to the span that scheduled the alarm, with the SDK's
in-memory exporter; nothing at all when tracing is off or the package is absent."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta

import pytest
from django.test import override_settings
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from django_alarms import alarms, clock, tracing
from django_alarms.models import Alarm
from django_alarms.testing import run_due
from django_alarms.types import State
from django_alarms.worker.runner import Options, Runner

EXPORTER = InMemorySpanExporter()
RECORDING = False


class _WhileRecording(SimpleSpanProcessor):
    """Exports only during this module's tests: the rest of the suite runs with the provider
    set (OpenTelemetry allows no second one) and must not fill the exporter."""

    def on_end(self, span: ReadableSpan) -> None:
        if RECORDING:
            super().on_end(span)


@pytest.fixture(autouse=True)
def spans() -> Iterator[InMemorySpanExporter]:
    """The process's tracer provider (set once: OpenTelemetry allows no second one), with the
    spans of this test only."""
    global RECORDING
    if not isinstance(trace.get_tracer_provider(), TracerProvider):
        provider = TracerProvider()
        provider.add_span_processor(_WhileRecording(EXPORTER))
        trace.set_tracer_provider(provider)
        tracing._look_again = 0.0  # found at the next delivery, not within a second
    EXPORTER.clear()
    RECORDING = True
    yield EXPORTER
    RECORDING = False
    EXPORTER.clear()


def named(exporter: InMemorySpanExporter, name: str) -> list:
    return [span for span in exporter.get_finished_spans() if span.name == name]


@pytest.mark.django_db
def test_the_delivery_span_links_to_the_span_that_scheduled_the_alarm(spans):
    tracer = trace.get_tracer("tests")
    with tracer.start_as_current_span("POST /remind") as request:
        alarm = alarms.schedule("tests.ok", {"account": 7})
    scheduled = request.get_span_context()
    assert alarm.trace_context == (
        f"00-{scheduled.trace_id:032x}-{scheduled.span_id:016x}-{int(scheduled.trace_flags):02x}"
    )
    assert Alarm.objects.get(pk=alarm.pk).trace_context == alarm.trace_context

    assert run_due(clock.now() + timedelta(seconds=1)) == 1
    (delivery,) = named(spans, "tests.ok")
    assert delivery.kind == trace.SpanKind.CONSUMER
    # A link, not a parent: the delivery is a trace of its own.
    assert delivery.parent is None
    assert delivery.context.trace_id != scheduled.trace_id
    (link,) = delivery.links
    assert (link.context.trace_id, link.context.span_id) == (
        scheduled.trace_id,
        scheduled.span_id,
    )
    attributes = dict(delivery.attributes)
    assert attributes["django_alarms.alarm_id"] == str(alarm.id)
    assert attributes["django_alarms.attempt"] == 1
    assert attributes["django_alarms.outcome"] == "ok"
    assert attributes["django_alarms.lateness_ms"] >= 0
    assert delivery.status.is_ok


@pytest.mark.django_db
def test_a_failed_attempt_marks_its_span_and_the_handlers_spans_are_its_children(spans):
    tracer = trace.get_tracer("tests")

    @alarms.handler("tests.traced_boom", max_attempts=1)
    def boom(alarm: alarms.AlarmContext) -> None:
        with tracer.start_as_current_span("inside the handler"):
            raise RuntimeError("no")

    alarm = alarms.schedule("tests.traced_boom", {})  # no span is current: nothing to link
    assert alarm.trace_context == ""
    run_due(clock.now() + timedelta(seconds=1))
    assert Alarm.objects.get(pk=alarm.pk).state == State.FAILED
    (delivery,) = named(spans, "tests.traced_boom")
    (inner,) = named(spans, "inside the handler")
    assert inner.parent.span_id == delivery.context.span_id
    assert delivery.links == ()
    assert dict(delivery.attributes)["django_alarms.outcome"] == "error"
    assert delivery.status.status_code == trace.StatusCode.ERROR


@pytest.mark.django_db
def test_a_stored_context_that_cannot_be_read_delivers_without_a_link(spans):
    alarm = alarms.schedule("tests.ok", {})
    Alarm.objects.filter(pk=alarm.pk).update(trace_context="00-nothex-zz-01")
    run_due(clock.now() + timedelta(seconds=1))
    assert Alarm.objects.get(pk=alarm.pk).state == State.SUCCEEDED
    (delivery,) = named(spans, "tests.ok")
    assert delivery.links == ()


@pytest.mark.django_db(transaction=True)
def test_the_worker_makes_spans_for_claims_and_record_batches(spans):
    tracer = trace.get_tracer("tests")
    with tracer.start_as_current_span("request"):
        for n in range(3):
            alarms.schedule("tests.ok", {"n": n})
    Runner(Options.from_settings(once=True)).run()
    assert Alarm.objects.filter(state=State.SUCCEEDED).count() == 3
    claims = named(spans, "django_alarms.claim")
    records = named(spans, "django_alarms.record")
    assert sum(dict(span.attributes)["django_alarms.claimed"] for span in claims) == 3
    assert sum(dict(span.attributes)["django_alarms.recorded"] for span in records) == 3
    assert len(named(spans, "tests.ok")) == 3


@pytest.mark.django_db
@pytest.mark.parametrize("reason", ["setting", "absent"])
def test_off_or_absent_nothing_is_stored_and_no_span_is_made(spans, monkeypatch, reason):
    tracer = trace.get_tracer("tests")
    with (
        override_settings(ALARMS={"TRACING": False})
        if reason == "setting"
        else _absent(monkeypatch)
    ):
        assert not tracing.on()
        with tracer.start_as_current_span("POST /remind"):
            alarm = alarms.schedule("tests.ok", {})
        assert alarm.trace_context == ""
        EXPORTER.clear()
        run_due(clock.now() + timedelta(seconds=1))
        assert spans.get_finished_spans() == ()
    assert Alarm.objects.get(pk=alarm.pk).state == State.SUCCEEDED


class _absent:
    """opentelemetry-api as if it were not installed."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.monkeypatch = monkeypatch

    def __enter__(self) -> None:
        self.monkeypatch.setattr(tracing, "available", lambda: False)
        self.monkeypatch.setattr(tracing, "_on", None)

    def __exit__(self, *exc: object) -> None:
        self.monkeypatch.undo()
        tracing._on = None


@pytest.mark.django_db
def test_the_admin_shows_the_trace_that_scheduled_an_alarm(admin_client):
    tracer = trace.get_tracer("tests")
    with tracer.start_as_current_span("POST /remind") as request:
        alarm = alarms.schedule("tests.ok", {})
    page = admin_client.get(f"/admin/django_alarms/alarm/{alarm.pk}/change/").content.decode()
    assert "scheduled in trace" in page.lower()
    assert f"{request.get_span_context().trace_id:032x}" in page
    untraced = alarms.schedule("tests.ok", {})
    page = admin_client.get(f"/admin/django_alarms/alarm/{untraced.pk}/change/").content.decode()
    assert "scheduled in trace" not in page.lower()


def test_until_the_project_sets_a_tracer_provider_nothing_is_done(monkeypatch):
    """The API alone records nothing: then no span is started and no context read, at the cost
    of one check per delivery."""
    from types import SimpleNamespace

    from opentelemetry.trace import ProxyTracerProvider

    api = SimpleNamespace(
        get_tracer_provider=ProxyTracerProvider, ProxyTracerProvider=ProxyTracerProvider
    )
    monkeypatch.setattr(tracing, "_module", api)
    monkeypatch.setattr(tracing, "_provider_set", False)
    monkeypatch.setattr(tracing, "_look_again", 0.0)
    assert not tracing.on()
    assert tracing.current() == ""
