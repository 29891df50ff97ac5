"""Signals sent by django-alarms. Receivers live in user code; nothing here changes state.

Every signal is sent with ``sender=Alarm`` and ``alarm`` as a keyword argument:

- ``alarm_scheduled``: ``alarm`` is the model instance just written (inside the caller's
  transaction), ``created`` is False when an existing alarm was replaced.
- ``alarm_started``: ``alarm`` is the :class:`~django_alarms.types.AlarmContext` about to be
  handed to the handler (in the thread that runs it).
- ``alarm_succeeded``, ``alarm_retrying``, ``alarm_failed``: ``alarm`` is the context,
  ``outcome`` the attempt's outcome and ``error`` its error text; sent after the attempt was
  recorded. ``alarm_retrying`` also gets ``due_at``, the time of the next attempt.
- ``alarm_cancelled``: ``alarm`` is the model instance, ``reason`` the reason given.
"""

from typing import Any

from django.dispatch import Signal

# Always sent by the Alarm class: caching the receivers per sender keeps the check cheap on the
# worker's hot path (thousands of alarms a second, usually with no receiver at all).
alarm_scheduled = Signal(use_caching=True)
alarm_started = Signal(use_caching=True)
alarm_succeeded = Signal(use_caching=True)
alarm_retrying = Signal(use_caching=True)
alarm_failed = Signal(use_caching=True)
alarm_cancelled = Signal(use_caching=True)


def listened(signal: Signal, sender: Any) -> bool:
    """Whether ``signal`` has a receiver for ``sender``. A signal with no receiver at all is
    told by its list of receivers alone, before the cache of receivers per sender is looked up
    (a weak dictionary, and a lock when the sender is not cached yet): the worker asks once per
    delivery."""
    return bool(signal.receivers) and signal.has_listeners(sender)
