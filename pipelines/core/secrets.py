"""Names of environment variables that hold secrets: only names under a fixed pattern are read.

An admin-set row names the variable (the secret itself never enters the database), and the value
is sent to an admin-set URL. Without a pattern a row could name DATABASE_URL or SECRET_KEY and
ship it to any host; so a name is validated when the row is saved (the admin shows the error) and
checked again where the value is read (a row written before the rule must not leak).
"""

from __future__ import annotations

import os
import re

from django.core.exceptions import ValidationError

AIRFLOW_ENV_PREFIX = "PORTAL_AIRFLOW_"
WEBHOOK_ENV_SUFFIX = "_WEBHOOK"

_AIRFLOW_NAME = re.compile(rf"{AIRFLOW_ENV_PREFIX}[A-Z0-9_]+")
_WEBHOOK_NAME = re.compile(rf"[A-Z][A-Z0-9_]*{WEBHOOK_ENV_SUFFIX}")


class SecretNameError(ValueError):
    """A row names an environment variable the portal may not read; str() says which and why."""


def airflow_env_problem(name: str) -> str | None:
    """Return why `name` may not hold an Airflow credential, or None if it may."""
    if _AIRFLOW_NAME.fullmatch(name):
        return None
    return (
        f"“{name}” is not an Airflow credential variable: the name must start with "
        f"{AIRFLOW_ENV_PREFIX} (upper-case letters, digits, underscores)."
    )


def webhook_env_problem(name: str) -> str | None:
    """Return why `name` may not hold a webhook URL, or None if it may."""
    if _WEBHOOK_NAME.fullmatch(name):
        return None
    return (
        f"“{name}” is not a webhook variable: the name must end with {WEBHOOK_ENV_SUFFIX} "
        "(upper-case letters, digits, underscores), e.g. PAYMENTS_ONCALL_WEBHOOK."
    )


def validate_airflow_env_name(name: str) -> None:
    if problem := airflow_env_problem(name):
        raise ValidationError(problem, code="airflow_env_name")


def validate_webhook_env_name(name: str) -> None:
    if name and (problem := webhook_env_problem(name)):
        raise ValidationError(problem, code="webhook_env_name")


def airflow_secret_get(name: str) -> str:
    """Read an Airflow credential; raise SecretNameError for a name outside the prefix."""
    if problem := airflow_env_problem(name):
        raise SecretNameError(problem)
    return os.environ.get(name, "")


def webhook_secret_get(name: str) -> str:
    """Read a webhook URL; raise SecretNameError for a name outside the pattern."""
    if problem := webhook_env_problem(name):
        raise SecretNameError(problem)
    return os.environ.get(name, "")
