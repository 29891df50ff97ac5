"""MySQL and MariaDB: the ORM paths of the base engine, and the database's clock."""

from __future__ import annotations

from django_alarms.engines.base import Engine


class MySQLEngine(Engine):
    clock_query = "SELECT UTC_TIMESTAMP(6)"
