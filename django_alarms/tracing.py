"""OpenTelemetry: each delivery's span links to the span that scheduled the alarm.

With ``opentelemetry-api`` installed (``pip install "django-alarms[otel]"``) and the
``TRACING`` setting not ``False``, :func:`current` reads the W3C ``traceparent`` of the span
that is current when an alarm is scheduled, and the alarm keeps it (``Alarm.trace_context``).
The worker then runs each attempt in a span named after the handler, with a *link* to that
context (not a parent: the delivery happens later, often in another trace's time), and with
the alarm id, the attempt number, its lateness and its outcome as attributes; the handler's
own spans are children of it. Claim statements and recorder batches get a span each.

Without the package, or with ``TRACING = False``, nothing here imports it and every hook is a
check of one boolean. Spans go wherever the project's tracer provider sends them: without an
SDK configured, OpenTelemetry's API records nothing.
"""

from __future__ import annotations

import importlib.util
import re
import time
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any

from django.core.signals import setting_changed

from django_alarms import __version__

if TYPE_CHECKING:
    from django_alarms.claims import Claim
    from django_alarms.outcomes import Result

#: The module, the distribution and the extra that provide tracing.
MODULE = "opentelemetry.trace"
DISTRIBUTION = "opentelemetry-api"
EXTRA = "otel"
#: The instrumentation scope of the spans.
SCOPE = "django_alarms"

_TRACEPARENT = re.compile(r"00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})")
_on: bool | None = None
#: opentelemetry.trace, once imported; and whether the project set a tracer provider.
_module: Any = None
_provider_set = False
#: While no provider is set, it is looked for again at most once a second (time.monotonic()).
_look_again = 0.0


def available() -> bool:
    try:
        return importlib.util.find_spec(MODULE) is not None
    except ImportError:  # no opentelemetry package at all
        return False


def on() -> bool:
    """Whether spans are made and trace contexts stored: tracing is not turned off, the API
    is installed, and the project has set a tracer provider (until it has, OpenTelemetry's
    API records nothing, and this costs one check instead of a span per delivery)."""
    global _on, _provider_set, _look_again
    if _on is None:
        from django_alarms.conf import alarm_settings

        _on = alarm_settings.TRACING is not False and available()
    if not _on:
        return False
    if not _provider_set and time.monotonic() >= _look_again:
        trace = _trace()
        # A provider, once set, cannot be unset: once found, it is not looked for again.
        _provider_set = not isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider)
        _look_again = time.monotonic() + 1.0
    return _provider_set


def _reset(*, setting: str, **kwargs: object) -> None:
    global _on, _look_again
    if setting == "ALARMS":
        _on = None
        _look_again = 0.0


setting_changed.connect(_reset, dispatch_uid="django_alarms.tracing.reset")


def _trace() -> Any:
    global _module
    if _module is None:
        from opentelemetry import trace

        _module = trace
    return _module


def _tracer() -> Any:
    return _trace().get_tracer(SCOPE, __version__)


def current() -> str:
    """The ``traceparent`` of the current span, or "" (no valid span, or tracing off)."""
    if not on():
        return ""
    context = _trace().get_current_span().get_span_context()
    if not context.is_valid:
        return ""
    return f"00-{context.trace_id:032x}-{context.span_id:016x}-{int(context.trace_flags):02x}"


def links_to(traceparent: str) -> list[Any]:
    """A link to the span a stored ``traceparent`` names ([] for "" or one that cannot be
    read: a stored value never fails a delivery)."""
    found = _TRACEPARENT.fullmatch(traceparent) if traceparent else None
    if found is None:
        return []
    trace = _trace()
    trace_id, span_id, flags = (int(part, 16) for part in found.groups())
    if not trace_id or not span_id:
        return []
    context = trace.SpanContext(
        trace_id=trace_id,
        span_id=span_id,
        is_remote=True,
        trace_flags=trace.TraceFlags(flags),
    )
    return [trace.Link(context, {"django_alarms.link": "scheduled"})]


def _ns(moment: datetime) -> int:
    return int(moment.timestamp() * 1_000_000_000)


def deliver(claim: Claim, started: datetime, run: Callable[[], Result]) -> Result:
    """Run one attempt (``run``) in its span, linked to the span that scheduled the alarm."""
    trace = _trace()
    late = (started - claim.intended_at).total_seconds()
    attributes = {
        "django_alarms.alarm_id": str(claim.alarm_id),
        "django_alarms.handler": claim.handler,
        "django_alarms.attempt": claim.number,
        "django_alarms.lateness_ms": round(late * 1000, 3),
    }
    span = _tracer().start_span(
        claim.handler,
        kind=trace.SpanKind.CONSUMER,
        links=links_to(getattr(claim, "trace_context", "")),
        attributes=attributes,
        start_time=_ns(started),
    )
    result: Result | None = None
    try:
        with trace.use_span(span, end_on_exit=False, record_exception=True):
            result = run()
    finally:
        if result is None:  # not an Exception (execute() catches those): the attempt ends
            span.end()
        else:
            span.set_attribute("django_alarms.outcome", str(result.outcome))
            if result.outcome not in ("ok", "retry"):
                span.set_status(trace.Status(trace.StatusCode.ERROR, result.error[:200]))
            span.end(end_time=_ns(result.finished_at))
    return result


def batch(name: str, started_ns: int, attributes: Mapping[str, Any]) -> None:
    """A span for a batch that just ended (a claim statement, a recorder write), started at
    ``started_ns`` (``time.time_ns()``)."""
    span = _tracer().start_span(
        f"django_alarms.{name}", start_time=started_ns, attributes=dict(attributes)
    )
    span.end(end_time=time.time_ns())
