from django.contrib import admin
from django.urls import include, path

from testproject.example import views

urlpatterns = [
    path("admin/", admin.site.urls),
    path("alarms/", include("django_alarms.urls")),  # GET /alarms/metrics (Prometheus)
    path("remind/<int:account>/", views.remind, name="remind"),
]
