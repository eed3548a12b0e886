import os
from pathlib import Path

import pytest

from tests.support.servers import PostgresServer, RedisServer, port_open, require

HERE = Path(__file__).parent
LEVELS = ("unit", "integration", "cluster")


def pytest_collection_modifyitems(items):
    # Mark each test by the folder it lives in: unit, integration, cluster.
    for item in items:
        parts = Path(str(item.fspath)).relative_to(HERE).parts
        if parts and parts[0] in LEVELS:
            item.add_marker(getattr(pytest.mark, parts[0]))


@pytest.fixture(scope="session")
def redis_url():
    """URL of the shared Redis; the test fails in CI if it is down."""
    from django.conf import settings

    url = settings.REDIS_URL
    error = port_open(url, 6379)
    if error is not None:
        require("Redis", url, error)
    return url


@pytest.fixture
def redis_client(redis_url):
    """A redis-py client on the test database, flushed before and after."""
    import redis

    client = redis.Redis.from_url(redis_url)
    client.flushdb()
    yield client
    client.flushdb()
    client.close()


@pytest.fixture(scope="session")
def amqp_url():
    from django.conf import settings

    url = settings.CELERY_BROKER_URL
    error = port_open(url, 5672)
    if error is not None:
        require("RabbitMQ", url, error)
    return url


@pytest.fixture(scope="session")
def pg_url():
    """A PostgreSQL server URL for tests that need PostgreSQL itself."""
    url = os.environ.get("PG_URL", "postgres://postgres@127.0.0.1:5432/postgres")
    error = port_open(url, 5432)
    if error is not None:
        require("PostgreSQL", url, error)
    return url


@pytest.fixture
def postgres_server():
    """A private PostgreSQL on a free port, free to restart."""
    server = PostgresServer().start()
    yield server
    server.close()


@pytest.fixture
def redis_server():
    """A private redis-server on a free port, free to stop and restart."""
    server = RedisServer().start()
    yield server
    server.close()


@pytest.fixture(autouse=True)
def _reset_recorded_calls():
    from tests.plugins import CALLS

    CALLS.clear()
    yield
