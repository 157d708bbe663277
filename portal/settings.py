"""Settings, switched to production by environment variables (README lists them all)."""

from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent
DATA_DIR = Path(os.environ.get("PORTAL_DATA_DIR", BASE_DIR / ".data"))


def env_str(name: str, default: str) -> str:
    return os.environ.get(name, default)


def env_bool(name: str, default: bool) -> bool:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    if raw.lower() in {"1", "true", "yes", "on"}:
        return True
    if raw.lower() in {"0", "false", "no", "off"}:
        return False
    raise ImproperlyConfigured(f"{name} must be a boolean (true/false), not {raw!r}")


def env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise ImproperlyConfigured(f"{name} must be an integer, not {raw!r}") from None


def env_list(name: str, default: list[str]) -> list[str]:
    raw = os.environ.get(name)
    if raw is None:
        return default
    return [item.strip() for item in raw.split(",") if item.strip()]


# --- Core ---------------------------------------------------------------------------------------
DEBUG = env_bool("DEBUG", False)
SECRET_KEY = os.environ.get("SECRET_KEY", "")
if not SECRET_KEY:
    if not DEBUG:
        raise ImproperlyConfigured(
            "SECRET_KEY must be set when DEBUG is off (make run sets DEBUG)."
        )
    SECRET_KEY = "insecure-local-development-key"  # noqa: S105 - DEBUG only
ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", ["127.0.0.1", "localhost"])
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", [])
PORTAL_BASE_URL = env_str("PORTAL_BASE_URL", "http://127.0.0.1:8000")

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django.contrib.humanize",
    "django_htmx",
    # Serves Swagger UI's files from the pinned package (ninja/static/ninja/): no CDN.
    "ninja",
    "csp",
    "axes",
    "pipelines",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    # Before anything reads the request: NUL or a lone surrogate answers 400, not a 500.
    "pipelines.web.middleware.UnstorableTextMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
    "pipelines.web.sessions.SessionIdleMiddleware",
    "csp.middleware.CSPMiddleware",
    # Last, as django-axes asks: it turns a locked-out login into its lockout answer.
    "axes.middleware.AxesMiddleware",
]

ROOT_URLCONF = "portal.urls"
WSGI_APPLICATION = "portal.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

# --- Database -----------------------------------------------------------------------------------
# Defaults to a SQLite file in the repo so that a fresh clone runs with no server at all;
# production and the test suite point DATABASE_URL at PostgreSQL.
DATABASES = {
    "default": dj_database_url.parse(
        env_str("DATABASE_URL", f"sqlite:///{DATA_DIR / 'portal.sqlite3'}"),
        conn_max_age=env_int("DATABASE_CONN_MAX_AGE", 0),
    )
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # SQLite creates the file but not its folder: a fresh clone has no .data/ yet.
    Path(DATABASES["default"]["NAME"]).parent.mkdir(parents=True, exist_ok=True)
    # The web server, the worker and beat share the file: wait for locks rather than fail.
    DATABASES["default"].setdefault("OPTIONS", {})["timeout"] = 20
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- Auth ---------------------------------------------------------------------------------------
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {
        "NAME": "django.contrib.auth.password_validation.MinimumLengthValidator",
        "OPTIONS": {"min_length": env_int("PASSWORD_MIN_LENGTH", 12)},
    },
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
# django-axes first: it counts failed logins on the login page and the admin's alike.
AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",
    "django.contrib.auth.backends.ModelBackend",
]
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "pipelines:list"
LOGOUT_REDIRECT_URL = "login"
SESSION_COOKIE_SECURE = env_bool("SESSION_COOKIE_SECURE", not DEBUG)
CSRF_COOKIE_SECURE = env_bool("CSRF_COOKIE_SECURE", not DEBUG)
# A session ends after this many seconds without a page load or a form post (background htmx
# polls do not count): the session and its cookie are renewed at most once a minute by
# SessionIdleMiddleware, so the database is not written on every request.
SESSION_IDLE_SECONDS = env_int("SESSION_IDLE_SECONDS", 8 * 3600)
if SESSION_IDLE_SECONDS < 120:
    raise ImproperlyConfigured(
        f"SESSION_IDLE_SECONDS must be 120 or more, not {SESSION_IDLE_SECONDS}"
    )
SESSION_COOKIE_AGE = SESSION_IDLE_SECONDS
# Lockout (django-axes): after LOGIN_FAILURE_LIMIT failed logins for one username, or from one
# address, further logins are refused for LOGIN_LOCKOUT_MINUTES (a success resets the count).
AXES_FAILURE_LIMIT = env_int("LOGIN_FAILURE_LIMIT", 5)
AXES_COOLOFF_TIME = timedelta(minutes=env_int("LOGIN_LOCKOUT_MINUTES", 15))
AXES_LOCKOUT_PARAMETERS = ["username", "ip_address"]
AXES_RESET_ON_SUCCESS = True
AXES_LOCKOUT_TEMPLATE = "registration/locked_out.html"
AXES_CLIENT_IP_CALLABLE = "pipelines.web.sessions.client_ip"
# Behind a proxy every login comes from its address: name the header (as Django names it) that
# the proxy sets to the client's address, e.g. HTTP_X_REAL_IP. Only one the proxy overwrites.
LOGIN_CLIENT_IP_HEADER = env_str("LOGIN_CLIENT_IP_HEADER", "")
if LOGIN_CLIENT_IP_HEADER and not LOGIN_CLIENT_IP_HEADER.startswith("HTTP_"):
    raise ImproperlyConfigured(
        f"LOGIN_CLIENT_IP_HEADER must be a header as Django names it (HTTP_...), not "
        f"{LOGIN_CLIENT_IP_HEADER!r}"
    )

# --- API tokens ---------------------------------------------------------------------------------
API_TOKEN_DEFAULT_DAYS = env_int("API_TOKEN_DEFAULT_DAYS", 90)
API_TOKEN_MAX_DAYS = env_int("API_TOKEN_MAX_DAYS", 365)
if not 1 <= API_TOKEN_DEFAULT_DAYS <= API_TOKEN_MAX_DAYS:
    raise ImproperlyConfigured(
        f"API_TOKEN_DEFAULT_DAYS must be between 1 and API_TOKEN_MAX_DAYS ({API_TOKEN_MAX_DAYS}), "
        f"not {API_TOKEN_DEFAULT_DAYS}"
    )

# --- Content-Security-Policy (django-csp 4) -----------------------------------------------------
# Scripts and styles only from this origin: no inline script, handler or style attribute (the
# pages' behaviour is in static/js/portal.js). Swagger UI's icons are data: images.
_SELF = "'self'"
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": [_SELF],
        "script-src": [_SELF],
        "style-src": [_SELF],
        "img-src": [_SELF, "data:"],
        "font-src": [_SELF],
        "connect-src": [_SELF],
        "object-src": ["'none'"],
        "base-uri": ["'none'"],
        "form-action": [_SELF],
        "frame-ancestors": ["'none'"],
    }
}

# --- TLS behind a proxy -------------------------------------------------------------------------
# Off by default so that `make run` serves plain http://127.0.0.1; a production deployment behind
# a TLS-terminating proxy sets them (README: "TLS behind a proxy"). `check --deploy` is clean then.
SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", False)
SECURE_HSTS_SECONDS = env_int("SECURE_HSTS_SECONDS", 0)
if SECURE_HSTS_SECONDS < 0:
    raise ImproperlyConfigured(f"SECURE_HSTS_SECONDS must be 0 or more, not {SECURE_HSTS_SECONDS}")
SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", False)
SECURE_HSTS_PRELOAD = env_bool("SECURE_HSTS_PRELOAD", False)
# "HTTP_X_FORWARDED_PROTO,https": the header (as Django names it) and the value that means
# https. Only set it when the proxy always overwrites that header, or a client can forge https.
_proxy_header = env_list("SECURE_PROXY_SSL_HEADER", [])
if _proxy_header and (len(_proxy_header) != 2 or not _proxy_header[0].startswith("HTTP_")):
    raise ImproperlyConfigured(
        "SECURE_PROXY_SSL_HEADER must be <HTTP_HEADER_NAME>,<value>, e.g. "
        f"HTTP_X_FORWARDED_PROTO,https, not {','.join(_proxy_header)!r}"
    )
SECURE_PROXY_SSL_HEADER = (_proxy_header[0], _proxy_header[1]) if _proxy_header else None

# --- I18n and static ----------------------------------------------------------------------------
LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = False
USE_TZ = True
STATIC_URL = "static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = DATA_DIR / "static"

# --- Celery -------------------------------------------------------------------------------------
# The default broker is a folder on disk (kombu's filesystem transport): `make run` needs no
# server. Production and the integration tests use Redis via CELERY_BROKER_URL.
CELERY_BROKER_URL = env_str("CELERY_BROKER_URL", "filesystem://")
if CELERY_BROKER_URL.startswith("filesystem://"):
    _broker_dir = DATA_DIR / "broker"
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(_broker_dir / "queue"),
        "data_folder_out": str(_broker_dir / "queue"),
        "processed_folder": str(_broker_dir / "processed"),
        "control_folder": str(_broker_dir / "control"),  # else kombu writes ./control
        "store_processed": False,
    }
CELERY_TASK_IGNORE_RESULT = True
CELERY_TASK_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TASK_ACKS_LATE = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_SOFT_TIME_LIMIT = env_int("CELERY_TASK_SOFT_TIME_LIMIT", 240)
CELERY_TASK_TIME_LIMIT = env_int("CELERY_TASK_TIME_LIMIT", 300)
# Every outbox lease lasts at least the hard time limit plus this (core/outbox.py): a row is
# claimed again only once the worker that held it has been stopped.
OUTBOX_LEASE_MARGIN_SECONDS = env_int("OUTBOX_LEASE_MARGIN_SECONDS", 60)
CELERY_TASK_ALWAYS_EAGER = env_bool("CELERY_TASK_ALWAYS_EAGER", False)
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_BEAT_SCHEDULE_FILENAME = str(DATA_DIR / "celerybeat-schedule")
CELERY_BEAT_SCHEDULE = {
    # The outbox sweep: rows left PENDING while the broker or Airflow was down are re-enqueued.
    "outbox-sweep": {"task": "pipelines.tasks.outbox_sweep", "schedule": timedelta(seconds=30)},
    # Run-now requests still running in Airflow are followed (pages refresh the ones on screen).
    "runs-refresh": {
        "task": "pipelines.tasks.runs_refresh_active",
        "schedule": timedelta(seconds=30),
    },
    "health-sync": {
        "task": "pipelines.tasks.health_sync_all",
        "schedule": timedelta(seconds=env_int("HEALTH_SYNC_SECONDS", 30)),
    },
    "sla-evaluate": {
        "task": "pipelines.tasks.sla_evaluate_all",
        "schedule": timedelta(seconds=env_int("SLA_EVALUATE_SECONDS", 60)),
    },
}

# --- Airflow ------------------------------------------------------------------------------------
# Per-environment URL and credentials live on the Environment row as *names* of env variables;
# these are the fall-backs used by the local demo Airflow.
AIRFLOW_TIMEOUT_SECONDS = float(env_int("AIRFLOW_TIMEOUT_SECONDS", 15))
AIRFLOW_RETRIES = env_int("AIRFLOW_RETRIES", 3)
# Deploys: a deploy writes the file, then checks every DEPLOY_CHECK_* seconds (without holding a
# worker) until Airflow registers it. The timeout must outlast Airflow's DAG-folder refresh
# ([dag_processor] refresh_interval, 300 s by default), when a new file is first seen.
DEPLOY_REGISTRATION_TIMEOUT_SECONDS = env_int("DEPLOY_REGISTRATION_TIMEOUT_SECONDS", 600)
DEPLOY_CHECK_FIRST_SECONDS = env_int("DEPLOY_CHECK_FIRST_MS", 500) / 1000
DEPLOY_CHECK_MAX_SECONDS = env_int("DEPLOY_CHECK_MAX_MS", 3000) / 1000
# A lease outlasts the task's hard time limit, so a live worker never loses its row.
DEPLOY_LEASE_SECONDS = env_int("DEPLOY_LEASE_SECONDS", 300)
# Transient errors (Airflow unreachable, an unwritable folder) are retried with exponential
# backoff; after DEPLOY_MAX_ATTEMPTS the deployment ends failed with the last error.
DEPLOY_MAX_ATTEMPTS = env_int("DEPLOY_MAX_ATTEMPTS", 10)
DEPLOY_BACKOFF_FIRST_SECONDS = float(env_int("DEPLOY_BACKOFF_FIRST_SECONDS", 2))
DEPLOY_BACKOFF_MAX_SECONDS = float(env_int("DEPLOY_BACKOFF_MAX_SECONDS", 600))

# --- Backfills ----------------------------------------------------------------------------------
# A backfill may not include a partition a scheduled run is loading, or will load within this many
# minutes (the two would race on one partition).
BACKFILL_SCHEDULE_GRACE_MINUTES = env_int("BACKFILL_SCHEDULE_GRACE_MINUTES", 60)
# Runs per Airflow backfill: a longer range is submitted in chunks, one after another.
BACKFILL_CHUNK_RUNS = env_int("BACKFILL_CHUNK_RUNS", 500)
# Airflow's clock and the portal's may differ: an Airflow backfill created up to this long before
# the portal sent its create still counts as that create's when the reply was lost.
BACKFILL_CLOCK_SKEW_SECONDS = env_int("BACKFILL_CLOCK_SKEW_SECONDS", 60)

# --- Alerts -------------------------------------------------------------------------------------
# Where an alert goes is on the Team (on-call / quiet targets) and Environment (pages_oncall) rows;
# an alert whose team has no target for its route goes to ALERT_FALLBACK_EMAIL (empty: nowhere).
ALERT_DEDUP_MINUTES = env_int("ALERT_DEDUP_MINUTES", 60)
ALERT_STALE_PAGE_PARTITIONS = env_int("ALERT_STALE_PAGE_PARTITIONS", 2)
ALERT_FALLBACK_EMAIL = env_str("ALERT_FALLBACK_EMAIL", "")
ALERT_DELIVERY_MAX_ATTEMPTS = env_int("ALERT_DELIVERY_MAX_ATTEMPTS", 8)
ALERT_WEBHOOK_TIMEOUT_SECONDS = float(env_int("ALERT_WEBHOOK_TIMEOUT_SECONDS", 10))
# Local runs print mail to the worker's console; production sends through SMTP.
EMAIL_BACKEND = env_str(
    "EMAIL_BACKEND",
    "django.core.mail.backends.console.EmailBackend"
    if DEBUG
    else "django.core.mail.backends.smtp.EmailBackend",
)
EMAIL_HOST = env_str("EMAIL_HOST", "localhost")
EMAIL_PORT = env_int("EMAIL_PORT", 25)
EMAIL_HOST_USER = env_str("EMAIL_HOST_USER", "")
EMAIL_HOST_PASSWORD = env_str("EMAIL_HOST_PASSWORD", "")
EMAIL_USE_TLS = env_bool("EMAIL_USE_TLS", False)
EMAIL_TIMEOUT = env_int("EMAIL_TIMEOUT", 10)
DEFAULT_FROM_EMAIL = env_str("DEFAULT_FROM_EMAIL", "pipeline-portal@localhost")

# --- Metrics ------------------------------------------------------------------------------------
# /metrics needs `Authorization: Bearer <METRICS_TOKEN>` or a logged-in user; only while DEBUG is on
# and no token is set is it open (local runs).
METRICS_TOKEN = env_str("METRICS_TOKEN", "")

# --- Logging ------------------------------------------------------------------------------------
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": env_str("LOG_LEVEL", "INFO")},
}

# --- Local demo (make run) ----------------------------------------------------------------------
# `make run` starts a local Airflow 3.3 in its own virtualenv; seed_demo points the dev, stage and
# prod environments at it (each with its own DAG sub-folder, DAG id prefix and SQLite warehouse).
LOCAL_AIRFLOW_HOME = Path(env_str("LOCAL_AIRFLOW_HOME", str(BASE_DIR / ".airflow" / "home")))
LOCAL_AIRFLOW_PORT = env_int("LOCAL_AIRFLOW_PORT", 8080)
DEMO_DIR = DATA_DIR / "demo"
