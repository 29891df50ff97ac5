"""The Celery app of the Celery executor's tests: the broker from ``ALARMS_CELERY_BROKER``
(Redis or RabbitMQ), JSON only, Django set up from ``tests.celerysettings``."""

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.celerysettings")

app = Celery("django_alarms_tests")
app.conf.update(
    broker_url=os.environ.get("ALARMS_CELERY_BROKER", "redis://127.0.0.1:6379/12"),
    broker_connection_retry_on_startup=True,
    task_serializer="json",
    accept_content=["json"],
    result_backend=None,
    worker_hijack_root_logger=False,
    worker_prefetch_multiplier=1,
)
