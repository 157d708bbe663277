"""Logins: lockout (django-axes) on the login page and the admin's, password validators, sessions
that end when idle, the API docs behind a login, the Content-Security-Policy, seed_demo's logins."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import time_machine
from django.conf import settings as django_settings
from django.contrib.auth import get_user_model
from django.contrib.auth.password_validation import validate_password
from django.contrib.staticfiles import finders
from django.core.exceptions import ValidationError
from django.core.management import CommandError, call_command
from django.urls import reverse

from tests.conftest import make_user

PASSWORD = "a-long-enough-passphrase-9"
LOGIN = "/accounts/login/"
ADMIN_LOGIN = "/admin/login/"
T0 = datetime(2026, 6, 1, 9, 0, tzinfo=UTC)


@pytest.fixture
def carol(db):
    user = make_user("carol")
    user.set_password(PASSWORD)
    user.is_staff = True
    user.save()
    return user


def log_in(client, url: str, username: str, password: str, addr: str = "10.0.0.1"):
    return client.post(url, {"username": username, "password": password}, REMOTE_ADDR=addr)


@pytest.mark.parametrize("url", [LOGIN, ADMIN_LOGIN])
def test_repeated_failures_lock_the_username_out(client, carol, url):
    for n in range(django_settings.AXES_FAILURE_LIMIT - 1):
        assert log_in(client, url, "carol", f"wrong-{n}").status_code == 200  # the form again
    locked = log_in(client, url, "carol", "wrong-last")
    assert locked.status_code == 429
    assert "Too many failed logins" in locked.content.decode()

    # The right password does not get in now, from this address or another.
    assert log_in(client, url, "carol", PASSWORD).status_code == 429
    assert log_in(client, url, "carol", PASSWORD, addr="10.0.0.9").status_code == 429
    assert "_auth_user_id" not in client.session


def test_repeated_failures_from_one_address_lock_that_address_out(client, carol):
    for n in range(django_settings.AXES_FAILURE_LIMIT):
        log_in(client, LOGIN, f"nobody-{n}", "guess", addr="10.0.0.66")

    assert log_in(client, LOGIN, "carol", PASSWORD, addr="10.0.0.66").status_code == 429
    # carol herself is not locked: from her own address she gets in.
    response = log_in(client, LOGIN, "carol", PASSWORD, addr="10.0.0.1")
    assert response.status_code == 302
    assert client.session["_auth_user_id"] == str(carol.id)


def test_a_success_resets_the_count(client, carol):
    for n in range(django_settings.AXES_FAILURE_LIMIT - 1):
        log_in(client, LOGIN, "carol", f"wrong-{n}")
    assert log_in(client, LOGIN, "carol", PASSWORD).status_code == 302
    client.logout()
    for n in range(django_settings.AXES_FAILURE_LIMIT - 1):
        assert log_in(client, LOGIN, "carol", f"wrong-{n}").status_code == 200
    assert log_in(client, LOGIN, "carol", PASSWORD).status_code == 302


@pytest.mark.parametrize(
    ("password", "code"),
    [
        ("short-pw1", "password_too_short"),
        ("password1234", "password_too_common"),
        ("483920571946", "password_entirely_numeric"),
        ("carol.example.com", "password_too_similar"),
    ],
)
def test_the_four_password_validators_refuse(carol, password, code):
    with pytest.raises(ValidationError) as refused:
        validate_password(password, user=carol)
    assert code in [error.code for error in refused.value.error_list]


def test_the_admin_refuses_a_weak_password(client, carol):
    admin = get_user_model().objects.create_superuser("root", "root@example.com", PASSWORD)
    client.force_login(admin)
    url = reverse("admin:auth_user_password_change", args=[carol.id])
    response = client.post(url, {"password1": "password1234", "password2": "password1234"})
    assert response.status_code == 200
    assert "This password is too common." in response.content.decode()
    carol.refresh_from_db()
    assert carol.check_password(PASSWORD)


# --- sessions end when idle ----------------------------------------------------------------


def test_a_session_ends_after_the_idle_time(client, alice):
    idle = timedelta(seconds=django_settings.SESSION_IDLE_SECONDS)
    assert idle == timedelta(hours=8)
    home = reverse("pipelines:list")
    with time_machine.travel(T0, tick=False):
        client.force_login(alice)
    with time_machine.travel(T0 + idle - timedelta(minutes=1), tick=False):
        assert client.get(home).status_code == 200  # activity: the session counts from here
    later = T0 + idle - timedelta(minutes=1) + idle - timedelta(minutes=1)
    with time_machine.travel(later, tick=False):
        assert client.get(home).status_code == 200
    with time_machine.travel(later + idle + timedelta(seconds=1), tick=False):
        response = client.get(home)
    assert response.status_code == 302
    assert response["Location"].startswith(reverse("login"))


def test_background_htmx_requests_do_not_keep_a_session_alive(client, alice):
    idle = timedelta(seconds=django_settings.SESSION_IDLE_SECONDS)
    with time_machine.travel(T0, tick=False):
        client.force_login(alice)
    with time_machine.travel(T0 + idle - timedelta(minutes=5), tick=False):
        poll = client.get(reverse("pipelines:approvals-badge"), HTTP_HX_REQUEST="true")
        assert poll.status_code == 200
    with time_machine.travel(T0 + idle + timedelta(seconds=1), tick=False):
        response = client.get(reverse("pipelines:list"))
    assert response.status_code == 302


# --- API docs, Swagger UI, CSP ------------------------------------------------------------


@pytest.mark.parametrize("url", ["/api/v1/docs", "/api/v1/openapi.json"])
def test_the_api_docs_need_a_login_when_debug_is_off(client, alice, url):
    response = client.get(url)
    assert response.status_code == 302
    assert response["Location"] == f"{reverse('login')}?next={url}"
    client.force_login(alice)
    assert client.get(url).status_code == 200


def test_the_api_docs_are_open_while_debug_is_on(client, db, settings):
    settings.DEBUG = True
    assert client.get("/api/v1/docs").status_code == 200


def test_swagger_ui_is_served_from_this_origin(client, alice):
    client.force_login(alice)
    html = client.get("/api/v1/docs").content.decode()
    sources = re.findall(r'(?:src|href)="([^"]+)"', html)
    assert "/static/ninja/swagger-ui-bundle.js" in sources
    assert "/static/ninja/swagger-ui.css" in sources
    assert [s for s in sources if "//" in s] == []  # no CDN, no other host
    for name in ("swagger-ui-bundle.js", "swagger-ui.css", "swagger-ui-init.js"):
        assert finders.find(f"ninja/{name}"), name


@pytest.mark.parametrize("url", [LOGIN, "/", "/api/v1/docs", "/tokens/"])
def test_pages_send_a_content_security_policy(client, alice, url):
    client.force_login(alice)
    policy = client.get(url)["Content-Security-Policy"]
    directives = dict(d.strip().split(" ", 1) for d in policy.split(";"))
    assert directives["script-src"] == "'self'"
    assert directives["style-src"] == "'self'"
    assert directives["default-src"] == "'self'"
    assert directives["frame-ancestors"] == "'none'"


def test_no_template_holds_inline_script_handlers_or_styles():
    """The policy forbids them, and a browser would silently ignore them."""
    inline = re.compile(r"<script(?![^>]*\bsrc=)(?![^>]*application/json)|\son[a-z]+=|style=")
    templates = Path(django_settings.BASE_DIR, "templates")
    found = [
        f"{path.relative_to(templates)}: {match.group(0)}"
        for path in templates.rglob("*.html")
        for match in inline.finditer(path.read_text())
    ]
    assert found == []


# --- seed_demo ---------------------------------------------------------------------------------


def test_seed_demo_refuses_its_logins_with_debug_off(db):
    with pytest.raises(CommandError, match="--with-demo-logins"):
        call_command("seed_demo")
    assert not get_user_model().objects.exists()


def test_seed_demo_creates_its_logins_when_asked(db):
    call_command("seed_demo", "--with-demo-logins")
    users = get_user_model().objects.order_by("username")
    assert [u.username for u in users] == ["dana", "demo", "frank"]


def test_seed_demo_runs_with_debug_on(db, settings):
    settings.DEBUG = True
    call_command("seed_demo")
    assert get_user_model().objects.filter(username="demo", is_superuser=True).exists()
