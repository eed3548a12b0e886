from django.contrib import admin
from django.urls import include, path

from .authpolicy import views as authpolicy
from .asynctasks import views as asynctasks
from .datasource import views as datasource
from .views import home

urlpatterns = [
    path("", home, name="home"),
    path("admin/", admin.site.urls),
    path("notes/", include("sampleproject.notes.urls")),
    path("auth-policy/", authpolicy.policy, name="authpolicy"),
    path("datasource/", datasource.index, name="datasource-index"),
    path("datasource/schema.json", datasource.schema, name="datasource-schema"),
    path("datasource/fields/add", datasource.add_field, name="datasource-add-field"),
    path("datasource/fields/delete", datasource.delete_field,
         name="datasource-delete-field"),
    path("tasks/", asynctasks.index, name="asynctasks-index"),
    path("tasks/start", asynctasks.start, name="asynctasks-start"),
    path("tasks/<int:pk>.json", asynctasks.status, name="asynctasks-status"),
    path("tasks/<int:pk>/cancel", asynctasks.cancel, name="asynctasks-cancel"),
]
