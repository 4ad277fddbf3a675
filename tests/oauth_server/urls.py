"""URLs: DOT's endpoints under /o/ (token at /o/token/, also revoke_token/ and introspect/)."""

from django.urls import include, path

urlpatterns = [
    path("o/", include("oauth2_provider.urls", namespace="oauth2_provider")),
]
