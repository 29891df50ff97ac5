"""The fault battery's smoke subset, as CI runs it (``pytest -m chaos``; ``.ci/run``).

It runs ``python -m tests.chaos --smoke``: real workers on SQLite, the suite's PostgreSQL and a
PostgreSQL cluster that the battery creates on port 5499 (``pg_createcluster``), killed, frozen,
cut off from their database and fed ambiguous commits. A missing ``pg_createcluster`` or Redis
is a failure, never a skip. The seed is random and printed: replay a failure with
``python -m tests.chaos --smoke --seed N``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.chaos.supervisor import REDIS, ROOT

pytestmark = pytest.mark.chaos


def test_services_the_battery_needs_are_there():
    for tool in ("pg_createcluster", "pg_ctlcluster", "pg_dropcluster", "pg_isready"):
        if shutil.which(tool) is None:
            pytest.fail(f"{tool} is missing (install postgresql-common): the battery needs it")
    try:
        import redis
    except ImportError:
        pytest.fail("the redis client is not installed: pip install redis")
    try:
        redis.Redis.from_url(REDIS).ping()
    except redis.RedisError as exc:
        pytest.fail(f"Redis is not reachable at {REDIS}: {exc}")


def test_the_smoke_subset_keeps_the_delivery_promise(tmp_path: Path):
    out = tmp_path / "chaos.json"
    env = {key: value for key, value in os.environ.items() if key != "DATABASE_URL"}
    result = subprocess.run(
        [sys.executable, "-m", "tests.chaos", "--smoke", "--json", str(out)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    print(result.stdout)
    assert result.returncode == 0, result.stdout[-8000:] + result.stderr[-4000:]
    report = json.loads(out.read_text())
    assert report["scenarios"]
    for scenario in report["scenarios"]:
        assert scenario["ok"], scenario
        assert scenario["calls"] > 0, scenario
        if scenario["scenario"] != "claim_race":
            assert scenario["faults"] > 0, f"no fault was injected: {scenario}"
