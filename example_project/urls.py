from django.contrib import admin
from django.urls import path

from example_project import views
from storage_guard.integrations.metrics import metrics_view

urlpatterns = [
    path("", views.index, name="index"),
    path("generate/", views.generate_page, name="generate"),
    path("api/generate/", views.api_generate, name="api-generate"),
    path("api/saves/<str:token>/", views.api_save_status, name="api-save-status"),
    path("saves/<int:attempt_id>/content/", views.saved_content, name="saved-content"),
    path("documents/", views.documents_page, name="documents"),
    path("faults/", views.faults_page, name="faults"),
    path("admin/", admin.site.urls),
    path("metrics", metrics_view, name="metrics"),  # Prometheus; keep it off the public internet
]
