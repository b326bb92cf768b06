from django.apps import AppConfig
from django.core.signals import setting_changed


class StorageGuardConfig(AppConfig):
    name = "storage_guard"
    verbose_name = "Storage guard"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from storage_guard import checks, conf  # noqa: F401 - checks register on import

        setting_changed.connect(conf.reset_cache, dispatch_uid="storage_guard.conf")
        from storage_guard import metrics

        metrics.install()  # only when prometheus-client is installed
