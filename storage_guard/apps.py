from django.apps import AppConfig
from django.core.signals import setting_changed
from django.utils.translation import gettext_lazy as _


class StorageGuardConfig(AppConfig):
    name = "storage_guard"
    verbose_name = _("Storage guard")
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from storage_guard import checks, conf  # noqa: F401 - checks register on import
        from storage_guard.integrations import metrics
        from storage_guard.log import logger  # noqa: F401 - escapes log lines from import on
        from storage_guard.saving import breaker

        setting_changed.connect(conf.reset_cache, dispatch_uid="storage_guard.conf")
        setting_changed.connect(breaker.forget_on_settings_change,
                                dispatch_uid="storage_guard.breaker")
        metrics.install()  # only when prometheus-client is installed
