from django.urls import include, path

from sandbox import api, oauth_server, views

api_patterns = [
    path("oauth/token", oauth_server.oauth_token, name="sandbox-oauth-token"),
    path("oauth/authorize", oauth_server.oauth_authorize, name="sandbox-oauth-authorize"),
    path("me", api.me, name="sandbox-me"),
    path("orders", api.orders, name="sandbox-orders"),
    path("orders/received", api.received_orders, name="sandbox-received-orders-api"),
    path("products", api.products, name="sandbox-products"),
    path("customers", api.customers, name="sandbox-customers"),
    path("stock", api.stock, name="sandbox-stock"),
    path("<path:rest>", api.not_found),
]

urlpatterns = [
    path("api/", include(api_patterns)),
    path("received-orders/", views.received_orders_page, name="sandbox_received_orders"),
    path("account/rotate/", views.rotate_account_key, name="sandbox_rotate_account_key"),
]
