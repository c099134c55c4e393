"""URLs of the demo-only failing views (included from demo.urls at ``errors-demo/``)."""

from django.urls import path

from . import error_views

app_name = "shop_errors"

urlpatterns = [
    path("secret/", error_views.secret_fail, name="secret"),
    path("user/", error_views.user_fail, name="user"),
    path("big/", error_views.big_fail, name="big"),
    path("async/", error_views.async_fail, name="async"),
    path("login/", error_views.login_fail, name="login"),
    path("reset/<uidb64>/<token>/", error_views.reset_fail, name="reset"),
    path("credentials/", error_views.credentials_fail, name="credentials"),
    path("echo/", error_views.echo_fail, name="echo"),
]
