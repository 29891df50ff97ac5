"""A URLconf with django-health-check's view and the alarms check (tests only)."""

from datetime import timedelta

from django.urls import path
from health_check.views import HealthCheckView

ALARMS_CHECK = ("django_alarms.contrib.health_check.Alarms", {"max_overdue": timedelta(seconds=30)})

urlpatterns = [
    path(
        "ht/",
        HealthCheckView.as_view(
            checks=[
                (
                    "django_alarms.contrib.health_check.Alarms",
                    {"max_overdue": timedelta(seconds=30)},
                )
            ]
        ),
    ),
]
