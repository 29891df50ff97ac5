"""URLs for projects that serve django-alarms' metrics themselves::

    path("alarms/", include("django_alarms.urls")),   # GET /alarms/metrics

Projects that run ``django-prometheus`` can register
:class:`django_alarms.metrics.DatabaseCollector` with its registry instead.
"""

from django.urls import path

from django_alarms.views import database_metrics

app_name = "django_alarms"

urlpatterns = [
    path("metrics", database_metrics, name="metrics"),
]
