"""One scenario on one database, in a process of its own (Django is set up once per process).

``python -m tests.chaos.one <spec.json>``: the spec names the scenario, the database URL, the
seed, the size and where to write the result. ``--race`` runs one racer of the uniqueness
scenario. The CLI (``python -m tests.chaos``) starts these; run them by hand to replay one.
"""

from __future__ import annotations

import json
import os
import random
import signal
import sys
import traceback
from pathlib import Path


def _exit(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)  # unwinds: the fleet's ``finally`` kills what it started


def main(argv: list[str]) -> int:
    signal.signal(signal.SIGTERM, _exit)
    if argv and argv[0] == "--race":
        _setup()
        from tests.chaos.scenarios import race_child

        pairs, go, at, seed = argv[1:5]
        return race_child(int(pairs), float(go), float(at), int(seed))
    spec = json.loads(Path(argv[0]).read_text())
    os.environ["DATABASE_URL"] = spec["url"]
    if spec["scenario"] == "django_q":
        os.environ["CHAOS_DJANGO_Q"] = "1"
    from tests.chaos.supervisor import Fleet, create_database

    create_database(spec["url"])
    _setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0, interactive=False)
    from tests.chaos.scenarios import SCENARIOS, Run

    tmp = Path(spec["tmp"])
    fleet = Fleet(tmp=tmp, url=spec["url"], seed=spec["seed"])
    rng = random.Random(f"{spec['seed']}:{spec['scenario']}:{spec['db']}")
    run = Run(spec["scenario"], spec["db"], spec["size"], fleet, rng)
    run.pg_cluster, run.pg_port = spec.get("pg_cluster", ""), spec.get("pg_port", 0)
    try:
        result = SCENARIOS[spec["scenario"]](run)
    except BaseException as exc:
        result = {"error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()}
    finally:
        fleet.close()
        from django.db import connections

        connections.close_all()
        create_database(spec["url"], drop_only=True)
    result.update(scenario=spec["scenario"], db=spec["db"], seed=spec["seed"], tmp=str(tmp))
    Path(spec["out"]).write_text(json.dumps(result, indent=1, default=str))
    return 0


def _setup() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.chaos.settings")
    import django

    django.setup()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
