"""Production settings from the environment: `manage.py check --deploy` is clean with them set.

Each check runs `manage.py` in a subprocess with a clean environment, because settings are read
once per process.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
TLS = {
    "SECURE_SSL_REDIRECT": "true",
    "SECURE_HSTS_SECONDS": "31536000",
    "SECURE_HSTS_INCLUDE_SUBDOMAINS": "true",
    "SECURE_HSTS_PRELOAD": "true",
    "SECURE_PROXY_SSL_HEADER": "HTTP_X_FORWARDED_PROTO,https",
    "CSRF_TRUSTED_ORIGINS": "https://portal.example.com",
}


def manage(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """Run manage.py with production-like settings plus `env`."""
    base = {
        "PATH": os.environ["PATH"],
        "DJANGO_SETTINGS_MODULE": "portal.settings",
        "DEBUG": "false",
        "SECRET_KEY": secrets.token_urlsafe(64),
        "ALLOWED_HOSTS": "portal.example.com",
        "PORTAL_DATA_DIR": str(tmp_path),
        "METRICS_TOKEN": secrets.token_urlsafe(32),
    }
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env={**base, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_check_deploy_passes_with_the_tls_settings_set(tmp_path):
    result = manage(tmp_path, "check", "--deploy", "--fail-level", "WARNING", **TLS)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no issues" in result.stdout


def test_check_deploy_warns_without_them(tmp_path):
    """The test above is not vacuous: the same check fails when the variables are missing."""
    result = manage(tmp_path, "check", "--deploy", "--fail-level", "WARNING")
    assert result.returncode != 0
    assert "security.W004" in result.stderr  # HSTS
    assert "security.W008" in result.stderr  # SSL redirect


def test_the_settings_reach_django(tmp_path):
    code = (
        "from django.conf import settings as s; "
        "print(s.SECURE_PROXY_SSL_HEADER, s.SECURE_HSTS_SECONDS, s.SECURE_SSL_REDIRECT, "
        "s.SECURE_HSTS_INCLUDE_SUBDOMAINS, s.SECURE_HSTS_PRELOAD, s.CSRF_TRUSTED_ORIGINS, "
        "s.SESSION_COOKIE_SECURE, s.CSRF_COOKIE_SECURE)"
    )
    result = manage(tmp_path, "shell", "--no-imports", "-c", code, **TLS)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == (
        "('HTTP_X_FORWARDED_PROTO', 'https') 31536000 True True True "
        "['https://portal.example.com'] True True"
    )


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("SECURE_SSL_REDIRECT", "sometimes", "SECURE_SSL_REDIRECT must be a boolean"),
        ("SECURE_HSTS_SECONDS", "a year", "SECURE_HSTS_SECONDS must be an integer"),
        ("SECURE_HSTS_SECONDS", "-1", "SECURE_HSTS_SECONDS must be 0 or more"),
        ("SECURE_HSTS_PRELOAD", "maybe", "SECURE_HSTS_PRELOAD must be a boolean"),
        ("SECURE_PROXY_SSL_HEADER", "https", "SECURE_PROXY_SSL_HEADER must be"),
        ("SECURE_PROXY_SSL_HEADER", "X-Forwarded-Proto,https", "SECURE_PROXY_SSL_HEADER must be"),
    ],
)
def test_a_bad_value_stops_the_process_with_its_name(tmp_path, name, value, message):
    result = manage(tmp_path, "check", **{**TLS, name: value})
    assert result.returncode != 0
    assert message in result.stderr
