"""Checks shared by every layer that accepts a value from outside (the service layer, the
handler registry, recurrences, handlers' answers, settings): one meaning for "a time the
database can store", whichever module asks.

It imports only :mod:`django_alarms.exceptions` (and Django's JSON encoder), so that any
module may use it.
"""

from __future__ import annotations

import json.encoder
import math
import re
from collections.abc import Callable, Iterable
from datetime import datetime, timedelta, timezone

from django.core.serializers.json import DjangoJSONEncoder

from .exceptions import invalid

EARLIEST = datetime(1, 1, 2, tzinfo=timezone.utc)
"""The earliest instant an alarm may carry. A day after the first representable one, so that the
instant can be shown in any time zone (``astimezone`` of year 1 to a negative offset fails) and
read back by every database driver (PostgreSQL stores an offset of +05:00 on 0001-01-01 as a
date before the Common Era, which psycopg cannot read)."""

LATEST = datetime(9999, 12, 30, tzinfo=timezone.utc)
"""The latest instant an alarm may carry, a day before the last representable one for the same
reasons: PostgreSQL stores ``9999-12-31 20:00-05:00`` as year 10000 in UTC, which no Python
``datetime`` can hold, and the admin shows times in the project's time zone."""


def storable(field: str, value: datetime) -> datetime:
    """The instant of ``value`` (an aware datetime), in UTC, if every database can store it and
    read it back; otherwise :class:`~django_alarms.exceptions.InvalidAlarm` naming ``field``.

    In UTC because PostgreSQL refuses offsets past 15:59 (``+23:58`` is a valid Python offset):
    write the returned value, never ``value`` itself."""
    try:
        instant = value.astimezone(timezone.utc)
    except (OverflowError, ValueError):
        instant = None
    if instant is None or not EARLIEST <= instant <= LATEST:
        raise invalid(
            field,
            value,
            f"is outside the times an alarm can hold ({EARLIEST.date().isoformat()} to "
            f"{LATEST.date().isoformat()}, UTC)",
        )
    return instant


_PAST_LATEST = f"puts the alarm past {LATEST.date().isoformat()} (UTC)"


def storable_after(field: str, start: datetime, delta: timedelta) -> datetime:
    """``start + delta`` if that instant is storable (see :func:`storable`), else
    :class:`~django_alarms.exceptions.InvalidAlarm` naming ``field`` and ``delta``."""
    try:
        moment = start + delta
    except OverflowError:
        raise invalid(field, delta, _PAST_LATEST) from None
    try:
        return storable(field, moment)
    except ValueError:
        raise invalid(field, delta, _PAST_LATEST) from None


# -- whole numbers ---------------------------------------------------------------------------

MAX_INT = 2**31 - 1
"""The largest count (``max_attempts``) an alarm may carry: the top of a 32-bit signed integer
column, which PostgreSQL uses for Django's ``PositiveIntegerField`` (SQLite stops at 2**63,
MySQL at 2**32 - 1)."""


def whole(field: str, value: object, *, low: int = 1, high: int = MAX_INT) -> int:
    """``value`` if it is an ``int`` (not a ``bool``) in ``[low, high]``; otherwise
    :class:`~django_alarms.exceptions.InvalidAlarm` naming ``field``."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise invalid(field, value, "must be an integer")
    if not low <= value <= high:
        raise invalid(field, value, f"must be between {low:,} and {high:,}")
    return value


def seconds(field: str, value: object, *, high: timedelta) -> timedelta:
    """A positive duration given as a ``timedelta`` or a number of seconds (an ``int`` of any
    size, a ``float``), at most ``high``; otherwise
    :class:`~django_alarms.exceptions.InvalidAlarm` naming ``field``."""
    if isinstance(value, bool) or not isinstance(value, (timedelta, int, float)):
        raise invalid(field, value, "must be a timedelta or a number of seconds")
    if isinstance(value, timedelta):
        result = value
    else:
        if isinstance(value, float) and not math.isfinite(value):
            raise invalid(field, value, "must be a finite number of seconds")
        try:
            result = timedelta(seconds=value)
        except OverflowError:
            result = timedelta.max if value > 0 else timedelta.min
    if result <= timedelta(0):
        raise invalid(field, value, "must be positive")
    if result > high:
        raise invalid(field, value, f"must be at most {_words(high)}")
    return result


def _words(span: timedelta) -> str:
    if span % timedelta(days=1):
        return f"{span.total_seconds():g} seconds"
    return f"{span.days:,} days"


# -- text ----------------------------------------------------------------------------------

NUL = "\x00"


def text(field: str, value: object, *, max_length: int | None = None) -> str:
    """``value`` if it is a string every database stores and gives back unchanged: no NUL
    character (PostgreSQL refuses it; it is refused on every database, so that a project can
    move between them), no lone surrogate (not Unicode: no driver can encode it), at most
    ``max_length`` characters. Otherwise :class:`~django_alarms.exceptions.InvalidAlarm`
    naming ``field``."""
    if not isinstance(value, str):
        raise invalid(field, value, "must be a string")
    if max_length is not None and len(value) > max_length:
        raise invalid(field, value, f"is {len(value):,} characters long; the limit is {max_length}")
    problem = text_problem(value)
    if problem:
        raise invalid(field, value, problem)
    return value


def text_problem(value: str) -> str:
    """Why a database cannot store ``value`` unchanged, or ``""``."""
    if value.isascii():
        if NUL in value:
            return "contains a NUL character (\\x00), which databases cannot store"
        return ""
    if NUL in value:
        return "contains a NUL character (\\x00), which databases cannot store"
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as error:
        return (
            f"contains a lone surrogate (U+{ord(value[error.start]):04X}), which is not "
            "Unicode text"
        )
    return ""


# -- payloads ------------------------------------------------------------------------------

MAX_PAYLOAD_DEPTH = 30
"""How deeply lists and objects may nest in a payload (``{"a": [1]}`` is 2 deep). MariaDB's
``JSON_VALID`` refuses documents 32 deep; deeper payloads also strain every recursive reader
(decoders, the admin's masking) for no use a message needs."""

# The JSON text of a payload, read token by token: a string (escapes included) or a bracket.
_TOKENS = re.compile(r'"(?:[^"\\]|\\.)*"|[\[\]{}]', re.DOTALL)
# An escape sequence inside a JSON string: \uXXXX or a one-character escape.
_ESCAPES = re.compile(r"\\(?:u([0-9a-fA-F]{4})|.)", re.DOTALL)


def _c_encoder(ascii_only: bool) -> Callable[[object, int], Iterable[str]] | None:
    """The C encoder behind ``json.dumps(value, cls=DjangoJSONEncoder, allow_nan=False)``,
    built once instead of once per payload. Without a table of the containers being encoded
    (it could not be shared between threads), a payload that contains itself ends in
    RecursionError, which :func:`payload_json` reports."""
    make = getattr(json.encoder, "c_make_encoder", None)
    if make is None:  # a Python without the C accelerator
        return None
    encoder: Callable[[object, int], Iterable[str]] = make(
        None,  # no table of the containers being encoded
        DjangoJSONEncoder().default,
        json.encoder.encode_basestring_ascii if ascii_only else json.encoder.encode_basestring,
        None,  # indent
        ": ",
        ", ",
        False,  # sort_keys
        False,  # skipkeys
        False,  # allow_nan
    )
    return encoder


_ENCODE_ASCII = _c_encoder(True)
_ENCODE_UNICODE = _c_encoder(False)
_ENCODER_ASCII = DjangoJSONEncoder(allow_nan=False)
_ENCODER_UNICODE = DjangoJSONEncoder(allow_nan=False, ensure_ascii=False)


def _encode(value: object, *, ascii_only: bool) -> str:
    c_encoder = _ENCODE_ASCII if ascii_only else _ENCODE_UNICODE
    if c_encoder is None:
        return (_ENCODER_ASCII if ascii_only else _ENCODER_UNICODE).encode(value)
    return "".join(c_encoder(value, 0))


def payload_json(field: str, value: object) -> str:
    """The JSON text of a payload (Django's JSON encoder, ASCII, no NaN) if every database can
    store it and give it back: JSON-serialisable, nested at most :data:`MAX_PAYLOAD_DEPTH`
    deep, no NUL character and no lone surrogate in any string or key. Otherwise
    :class:`~django_alarms.exceptions.InvalidAlarm` naming ``field``."""
    try:
        document = _encode(value, ascii_only=True)
    except RecursionError:
        raise invalid(
            field, value, "is not JSON-serialisable (it contains itself, or is nested too deeply)"
        ) from None
    except (TypeError, ValueError) as exc:
        raise invalid(field, value, f"is not JSON-serialisable ({exc})") from None
    # Cheap tests first: brackets inside strings only make the count larger, and every NUL
    # or surrogate is written as a \u escape.
    if document.count("[") + document.count("{") > MAX_PAYLOAD_DEPTH:
        depth = _depth(document)
        if depth > MAX_PAYLOAD_DEPTH:
            raise invalid(field, value, f"is nested {depth} deep; the limit is {MAX_PAYLOAD_DEPTH}")
    if "\\u" in document:
        problem = _text_problem_in(value, document)
        if problem:
            raise invalid(field, value, f"has a string that {problem}")
    return document


def _depth(document: str) -> int:
    deepest = depth = 0
    for token in _TOKENS.finditer(document):
        mark = token.group()
        if mark in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif mark in "]}":
            depth -= 1
    return deepest


def _text_problem_in(value: object, document: str) -> str:
    # encode_basestring_ascii writes escapes in lower case; an escaped backslash followed by
    # "u0000" only looks like one, hence the second, exact look.
    if "\\u0000" in document:
        for escape in _ESCAPES.finditer(document):
            if escape.group(1) == "0000":
                return text_problem(NUL)
    if "\\ud" in document:  # a surrogate pair, or a lone surrogate
        try:
            # Lone surrogates, unlike pairs, cannot be encoded as UTF-8. The ASCII text
            # cannot tell a pair of lone surrogates from the character they would make:
            # encode again.
            _encode(value, ascii_only=False).encode("utf-8")
        except UnicodeEncodeError as error:
            return text_problem(error.object[error.start : error.end])
    return ""


#: The longest time limit an attempt may have (its claim's lease is computed from it): the
#: ceiling of an alarm's ``timeout`` and of a handler's.
MAX_TIMEOUT = timedelta(days=30)
#: The longest handler name (the ``handler`` column of alarms and attempts).
HANDLER_NAME_MAX_LENGTH = 200

#: The queue of an alarm scheduled without one (Django's Tasks call it ``"default"`` too), and
#: the longest queue name.
DEFAULT_QUEUE = "default"
QUEUE_MAX_LENGTH = 100
#: The range of an alarm's priority (Django's Tasks' range): among alarms due at the same
#: instant, a higher priority is delivered first.
PRIORITY_MIN, PRIORITY_MAX = -100, 100
#: A W3C ``traceparent`` (``00-<32 hex>-<16 hex>-<2 hex>``): what an alarm keeps of the trace
#: that scheduled it.
TRACEPARENT_LENGTH = 55

#: The longest error text an Attempt row (or an alarm's last_error) keeps.
ERROR_MAX_LENGTH = 2000
#: The longest traceback an Attempt row keeps (its last lines: the frame that raised).
TRACEBACK_MAX_LENGTH = 20_000


def storable_text(text: object, limit: int = ERROR_MAX_LENGTH, *, tail: bool = False) -> str:
    """``text`` (a handler's error message, a Retry reason, a traceback) as every database can
    store it: NUL, which PostgreSQL refuses in text, written as ``\\x00``; lone surrogates,
    which no encoding can write, as ``\\udXXX``; at most ``limit`` characters (the last ones
    with ``tail``). Without this one message could fail the whole batch of the recorder."""
    if not text:
        return ""
    if not isinstance(text, str):
        text = str(text)
    if "\x00" in text:
        text = text.replace("\x00", "\\x00")
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            text = text.encode("utf-8", "backslashreplace").decode("utf-8")
    if len(text) > limit:
        text = text[-limit:] if tail else text[:limit]
    return text


def parse_address(value: object) -> tuple[str, int]:
    """``9100``, ``"9100"`` or ``"127.0.0.1:9100"`` as ``(host, port)``; host ``0.0.0.0``
    (every interface, as a scraper on another machine needs) unless given. ``ValueError``
    names what is wrong."""
    if isinstance(value, bool):
        raise ValueError("must be a port number or host:port")
    host, text = "0.0.0.0", value
    if isinstance(value, str):
        host_part, colon, port_part = value.strip().rpartition(":")
        if colon:
            host, text = host_part.strip("[]") or host, port_part
        try:
            text = int(str(text).strip())
        except ValueError:
            raise ValueError("must be a port number or host:port, e.g. 9100") from None
    if not isinstance(text, int):
        raise ValueError("must be a port number or host:port, e.g. 9100")
    if not 1 <= text <= 65535:
        raise ValueError("must be a port between 1 and 65535")
    return host, text
