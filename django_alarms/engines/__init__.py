"""One engine per database: the worker's writes and every statement written for one database.

``get_engine(alias)`` gives the engine of a database alias: :class:`.postgresql.PostgreSQLEngine`,
:class:`.sqlite.SQLiteEngine`, or the ORM paths of :class:`.base.Engine` for MySQL, MariaDB and
any other backend. User-facing changes go through :mod:`django_alarms.alarms`; the worker's
through its engine.
"""

from __future__ import annotations

import functools

from django.db import connections

from django_alarms.engines.base import (
    ARM_FIELDS,
    ATTEMPT_COLUMNS,
    LET_GO,
    Engine,
    Served,
    WindowKey,
)


def get_engine(db: str) -> Engine:
    """The engine of database alias ``db``. An engine holds nothing but the alias (it looks
    the connection up on each use, since connections are per thread): a new one is cheap,
    and each user (a worker's claimer, its heartbeat) may keep its own."""
    return _engine_class(connections[db].vendor)(db)


@functools.cache
def _engine_class(vendor: str) -> type[Engine]:
    if vendor == "postgresql":
        from django_alarms.engines.postgresql import PostgreSQLEngine

        return PostgreSQLEngine
    if vendor == "sqlite":
        from django_alarms.engines.sqlite import SQLiteEngine

        return SQLiteEngine
    if vendor == "mysql":  # MariaDB too
        from django_alarms.engines.mysql import MySQLEngine

        return MySQLEngine
    return Engine


__all__ = [
    "ARM_FIELDS",
    "ATTEMPT_COLUMNS",
    "LET_GO",
    "Engine",
    "Served",
    "WindowKey",
    "get_engine",
]
