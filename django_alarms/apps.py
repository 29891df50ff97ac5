from django.apps import AppConfig
from django.utils.translation import gettext_lazy as _


class AlarmsConfig(AppConfig):
    name = "django_alarms"
    label = "django_alarms"
    verbose_name = _("Alarms")
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from django.utils.module_loading import autodiscover_modules

        from django_alarms import checks  # noqa: F401 - registers the system checks
        from django_alarms.conf import tasks_backends, tasks_framework, user_settings
        from django_alarms.handlers import autodiscover

        if user_settings().get("EXECUTOR") == "celery":
            # A Celery worker of this project runs the attempts: the task must be registered
            # before it takes any.
            from django_alarms.executors import celery

            celery.register()
        if user_settings().get("AUTODISCOVER", True) is not False:
            autodiscover()
            if tasks_backends() and tasks_framework():
                # Tasks are defined (and registered as handlers) when their module is
                # imported: each app's tasks.py, as Django's own convention has them.
                autodiscover_modules("tasks")
