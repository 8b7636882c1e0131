"""/connectors/: the "connectors" URL namespace.

process flows > connectors & instances opens the manage page, which lists each
connector's instances; it and "show all N instances" are instances pages (see
manage_views) kept at their addresses and names (`connectors:manage`,
`connectors:instances`), beside the connectors' own pages.
"""

from django.urls import path

from connectors.urls import urlpatterns as connector_pages
from instances import manage_views

app_name = "connectors"
urlpatterns = [
    path("", manage_views.manage, name="manage"),
    path("<int:pk>/instances/", manage_views.connector_instances, name="instances"),
    *connector_pages,
]
