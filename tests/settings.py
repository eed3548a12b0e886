"""Settings for the test suite.

The database comes from DATABASE_URL (default: a SQLite file, so that the
several processes of a cluster test can share it). REDIS_URL,
CELERY_BROKER_URL and PG_URL point the integration tests at real servers.
"""

import os
from pathlib import Path

import environ

BASE_DIR = Path(__file__).resolve().parent.parent
env = environ.Env()

SECRET_KEY = "tests"
DEBUG = False
ALLOWED_HOSTS = ["*"]
USE_TZ = True
TIME_ZONE = "UTC"
ROOT_URLCONF = "tests.urls"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "coordination",
    "nocoplugins",
    "tests.plugins.alpha",
    "tests.plugins.beta",
]

MIDDLEWARE = [
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
]

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
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

_default_db = f"sqlite:///{BASE_DIR / '.test-db.sqlite3'}"
DATABASES = {"default": env.db("DATABASE_URL", default=_default_db)}
if DATABASES["default"]["ENGINE"].endswith("sqlite3"):
    DATABASES["default"].setdefault("OPTIONS", {}).setdefault("timeout", 30)
    # Take the write lock when a transaction begins: a transaction that
    # read first and writes later would fail at once ("database is
    # locked") while another process writes, instead of waiting.
    DATABASES["default"]["OPTIONS"].setdefault("transaction_mode", "IMMEDIATE")
    # A file, not memory, so that child processes open the same database.
    # (Child processes get DATABASE_URL pointing at it directly.)
    DATABASES["default"]["TEST"] = {
        "NAME": str(BASE_DIR / f".test-db-{os.getpid()}.sqlite3")
    }

if env("LOCKS_DATABASE_URL", default=None):
    # A private PostgreSQL that a fault test restarts (child processes only).
    DATABASES["locks"] = env.db("LOCKS_DATABASE_URL")

REDIS_URL = env("REDIS_URL", default="redis://127.0.0.1:6379/15")
CELERY_BROKER_URL = env(
    "CELERY_BROKER_URL", default="amqp://guest:guest@127.0.0.1:5672//"
)

CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}

COORDINATION = {
    "APP_NAME": env("COORDINATION_APP_NAME", default="tests"),
    "LOCKS": {"BACKEND": "local"},
    # Off unless a test turns it on: the beat thread writes to the database.
    "HEARTBEAT": {"INTERVAL": env.float("COORDINATION_HEARTBEAT", default=0)},
}

# Event queue: worker processes started by the queue tests get their backend
# from this variable (JSON of the EVENT_QUEUE section).
if env("COORDINATION_EVENT_QUEUE", default=""):
    import json

    COORDINATION["EVENT_QUEUE"] = json.loads(env("COORDINATION_EVENT_QUEUE"))

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "loggers": {"coordination": {"level": "DEBUG"}, "nocoplugins": {"level": "DEBUG"}},
}
