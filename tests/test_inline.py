"""The inline executor's handler threads, driven directly (no worker, no claims in the table)."""

from __future__ import annotations

import threading

import pytest
from django.db import connections

from django_alarms import alarms, clock
from django_alarms.claims import Claim
from django_alarms.executors.inline import InlineExecutor
from django_alarms.handlers import registry
from django_alarms.outcomes import Result
from tests.factories import a_claim


def run_on_one_thread(handler: str, count: int) -> list[Result]:
    results: list[Result] = []
    done = threading.Event()

    def on_result(claim: Claim, result: Result) -> None:
        results.append(result)
        if len(results) == count:
            done.set()

    executor = InlineExecutor(concurrency=1, on_result=on_result, now=clock.now)
    executor.start()
    try:
        for _ in range(count):
            executor.submit(a_claim(handler=handler, max_attempts=1, timeout=30.0))
        assert done.wait(30), "the attempts did not finish"
    finally:
        executor.stop()
    return results


@pytest.mark.django_db(transaction=True)
def test_a_connection_a_handler_used_is_closed_after_its_attempt_like_after_a_request(settings):
    """With CONN_MAX_AGE = 0 a connection serves one attempt, as it serves one request."""
    settings.DATABASES["default"]["CONN_MAX_AGE"] = 0
    used = []

    @alarms.handler("tests.uses_the_database")
    def uses_the_database(alarm):
        connection = connections["default"]
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        used.append(connection.connection)  # kept alive, so no two are ever the same object

    try:
        results = run_on_one_thread("tests.uses_the_database", 3)
    finally:
        registry.unregister("tests.uses_the_database")
    assert [result.outcome for result in results] == ["ok", "ok", "ok"]
    assert len(used) == 3
    assert len({id(connection) for connection in used}) == 3, "each attempt had a new connection"


@pytest.mark.django_db(transaction=True)
def test_waiting_for_idle_sees_a_running_attempt_and_its_end():
    """wait_idle() is False while a handler runs and True once it returned, although a handler
    thread only notifies when a thread waits (and the ending is seen either way)."""
    release = threading.Event()
    started = threading.Event()
    ended = threading.Event()

    @alarms.handler("tests.held_until_released")
    def held_until_released(alarm):
        started.set()
        release.wait(30)

    executor = InlineExecutor(
        concurrency=1, on_result=lambda claim, result: ended.set(), now=clock.now
    )
    executor.start()
    try:
        assert executor.wait_idle(0.01), "nothing submitted: idle at once"
        executor.submit(a_claim(handler="tests.held_until_released", max_attempts=1, timeout=30.0))
        assert started.wait(30)
        assert not executor.wait_idle(0.05), "a handler is running"
        threading.Timer(0.05, release.set).start()
        assert executor.wait_idle(30), "the handler returned"
        assert ended.wait(30)
        assert executor._idle_waiters == 0
    finally:
        release.set()
        executor.stop()
        registry.unregister("tests.held_until_released")


def test_wait_while_looks_again_without_being_notified():
    """Each wait is at most 0.1 s, so a change that nobody notifies is seen soon after."""
    from django_alarms.executors import wait_while

    busy = [True, True]
    waits: list[float] = []

    class Unnotified:
        def wait(self, timeout: float) -> bool:
            waits.append(timeout)
            busy.pop()  # the state changes, and nothing notifies
            return False

    assert wait_while(Unnotified(), lambda: bool(busy), 30)  # type: ignore[arg-type]
    assert waits == [0.1, 0.1]
    waits.clear()
    assert not wait_while(Unnotified(), lambda: True, 0.0)  # type: ignore[arg-type]
    assert waits == [], "no time left: no wait"
