"""Settings of the example project: SQLite by default, any database through DATABASE_URL.

DATABASE_URL examples: postgres://postgres@127.0.0.1:5432/alarms,
mysql://root@127.0.0.1:3306/alarms, sqlite:////tmp/alarms.sqlite3.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from urllib.parse import unquote, urlsplit

BASE_DIR = Path(__file__).resolve().parent.parent

SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY", "django-alarms-example-not-a-secret")
DEBUG = os.environ.get("DJANGO_DEBUG", "1") == "1"
ALLOWED_HOSTS = ["localhost", "127.0.0.1", "testserver"]

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django_alarms",
    "testproject.example",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "testproject.urls"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
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

WSGI_APPLICATION = "testproject.wsgi.application"


def database_from_url(url: str) -> dict[str, object]:
    """A DATABASES entry from a URL (no dependency for this one small job)."""
    parts = urlsplit(url)
    scheme = parts.scheme.split("+")[0]
    if scheme == "sqlite":
        return sqlite(unquote(parts.path[1:]) if parts.path.startswith("//") else parts.path)
    engines = {
        "postgres": "django.db.backends.postgresql",
        "postgresql": "django.db.backends.postgresql",
        "mysql": "django.db.backends.mysql",
        "mariadb": "django.db.backends.mysql",
    }
    if scheme not in engines:
        raise ValueError(f"DATABASE_URL: unsupported scheme {parts.scheme!r}")
    entry: dict[str, object] = {
        "ENGINE": engines[scheme],
        "NAME": unquote(parts.path.lstrip("/")),
        "USER": unquote(parts.username or ""),
        "PASSWORD": unquote(parts.password or ""),
        "HOST": parts.hostname or "",
        "PORT": str(parts.port or ""),
        "TEST": {"NAME": f"test_{unquote(parts.path.lstrip('/'))}"},
        # Persistent connections (seconds) for processes that run many attempts, such as a
        # Celery or django-q2 worker: without them each task opens a connection of its own.
        "CONN_MAX_AGE": int(os.environ.get("DATABASE_CONN_MAX_AGE", "0")),
    }
    if scheme in ("mysql", "mariadb"):
        import pymysql

        pymysql.install_as_MySQLdb()
        entry["OPTIONS"] = {"charset": "utf8mb4", "isolation_level": "read committed"}
    return entry


def sqlite(path: str) -> dict[str, object]:
    return {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": path,
        # Workers and web processes share the file: wait for the write lock instead of
        # failing, take it at the start of each transaction, and let readers run beside writers.
        "OPTIONS": {
            "timeout": 30,
            "transaction_mode": "IMMEDIATE",
            "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
        },
        # A file (the workers of the tests open it too), beside the database it stands for:
        # two test runs on two SQLite URLs never share one.
        "TEST": {"NAME": _test_name(path)},
    }


def _test_name(path: str) -> str:
    default = BASE_DIR / "testproject" / "db.sqlite3"
    if Path(path) == default:
        return str(BASE_DIR / "testproject" / "test-db.sqlite3")
    return str(Path(path).with_name(f"test-{Path(path).name}"))


DATABASES = {
    "default": database_from_url(os.environ["DATABASE_URL"])
    if os.environ.get("DATABASE_URL")
    else sqlite(str(BASE_DIR / "testproject" / "db.sqlite3"))
}

if DATABASES["default"]["ENGINE"] == "django.db.backends.mysql":
    # MySQL and MariaDB cannot enforce a unique constraint with a condition; the service layer
    # enforces "one active alarm per (key, name)" there.
    SILENCED_SYSTEM_CHECKS = ["models.W036", "models.W037"]

AUTH_PASSWORD_VALIDATORS: list[dict[str, str]] = []

LANGUAGE_CODE = "en-us"
TIME_ZONE = "Europe/Paris"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "testproject" / "static"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

ALARMS = {
    "LOAD_INTERVAL": float(os.environ.get("ALARMS_LOAD_INTERVAL", "30")),
}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    # UTC throughout a line: the prefix as the times inside the worker's lines.
    "formatters": {"plain": {"()": "django_alarms.logs.UTCFormatter"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "loggers": {"django_alarms": {"handlers": ["console"], "level": "INFO", "propagate": False}},
}

# Django's Tasks framework with django-alarms' backend, when the framework is installed
# (Django 6, or Django 5.2 with the django-tasks backport): testproject.example.tasks.
if importlib.util.find_spec("django.tasks") or importlib.util.find_spec("django_tasks"):
    TASKS = {"default": {"BACKEND": "django_alarms.tasks.AlarmsBackend"}}
