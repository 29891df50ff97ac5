from django.apps import AppConfig
from django.utils.translation import gettext_lazy as _


class AlarmsConfig(AppConfig):
    name = "django_alarms"
    label = "django_alarms"
    verbose_name = _("Alarms")
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from django_alarms import checks  # noqa: F401 - registers the system checks
        from django_alarms.conf import user_settings
        from django_alarms.handlers import autodiscover

        if user_settings().get("AUTODISCOVER", True) is not False:
            autodiscover()
