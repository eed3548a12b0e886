"""Settings for the sample project.

Every server address comes from the environment (django-environ). With no
environment at all the project runs on the embedded default: SQLite, the
locmem cache, in-process pub/sub, database locks and database event workers.
Set REDIS_URL to move cache, pub/sub and locks to Redis, and
CELERY_BROKER_URL to run the event queue on Celery.
"""

from pathlib import Path

import environ

BASE_DIR = Path(__file__).resolve().parent.parent
env = environ.Env()
environ.Env.read_env(BASE_DIR / ".env")  # optional, for local overrides

SECRET_KEY = env("SECRET_KEY", default="sample-project-not-secret")
DEBUG = env.bool("DEBUG", default=True)
ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=["*"])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "coordination",
    "nocoplugins",
    "sampleproject",
    "sampleproject.notes",
    "sampleproject.authpolicy",
    "sampleproject.datasource",
    "sampleproject.asynctasks",
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

ROOT_URLCONF = "sampleproject.urls"
WSGI_APPLICATION = "sampleproject.wsgi.application"
ASGI_APPLICATION = "sampleproject.asgi.application"

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

DATABASES = {
    "default": env.db("DATABASE_URL", default=f"sqlite:///{BASE_DIR / 'db.sqlite3'}")
}
if DATABASES["default"]["ENGINE"].endswith("sqlite3"):
    # Several processes share the file: wait for the write lock instead of
    # failing at once.
    DATABASES["default"].setdefault("OPTIONS", {}).setdefault("timeout", 20)
    # Take the write lock when a transaction begins: a transaction that
    # read first and writes later would fail at once ("database is
    # locked") while another process writes, instead of waiting.
    DATABASES["default"]["OPTIONS"].setdefault("transaction_mode", "IMMEDIATE")
    # WAL: readers do not wait for a writer, and the event queue's claims
    # and successes commit without an fsync (docs/queue.md).
    DATABASES["default"]["OPTIONS"].setdefault(
        "init_command", "PRAGMA journal_mode=WAL;"
    )

REDIS_URL = env("REDIS_URL", default=None)
CELERY_BROKER_URL = env("CELERY_BROKER_URL", default=None)

CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}
COORDINATION = {
    "APP_NAME": env("COORDINATION_APP_NAME", default="sample"),
    "HEARTBEAT": {"INTERVAL": env.float("COORDINATION_HEARTBEAT", default=5)},
}

if REDIS_URL:
    CACHES["redis"] = {
        "BACKEND": "django_redis.cache.RedisCache",
        "LOCATION": REDIS_URL,
        # JSON on the server, never pickle (coordination.E101 otherwise).
        "OPTIONS": {"SERIALIZER": "coordination.cache.serializers.JSONSerializer"},
    }
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.pubsub.RedisPubSubChannelLayer",
            "CONFIG": {"hosts": [REDIS_URL]},
        }
    }
    COORDINATION.update(
        CACHE_STORES={"memory": "default", "redis": "redis"},
        DEFAULT_CACHE_STORE="redis",
        PUBSUB={"BACKEND": "channels", "OPTIONS": {"ALIAS": "default"}},
        LOCKS={"BACKEND": "redis", "OPTIONS": {"URL": REDIS_URL}},
    )
if CELERY_BROKER_URL:
    COORDINATION["EVENT_QUEUE"] = {
        "BACKEND": "celery",
        "OPTIONS": {"QUEUE": "coordination", "APP": "sampleproject.celery.app"},
    }

AUTH_PASSWORD_VALIDATORS = []
LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True
STATIC_URL = "static/"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}
    },
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "loggers": {
        name: {"handlers": ["console"], "level": env("LOG_LEVEL", default="INFO")}
        for name in ("coordination", "nocoplugins")
    },
}
