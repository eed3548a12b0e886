"""What the database backend makes durable on PostgreSQL.

Acquiring and extending must survive a server crash (else a holder could
overlap its successor after a restart); releasing need not (a lost release
only keeps the key looking held until its ttl). So only the release
statements switch ``synchronous_commit`` off, for their own transaction.
"""

import pytest
from django.db import connection

from coordination.locks.backends.database import _build_sql

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def pg():
    if connection.vendor != "postgresql":
        pytest.skip("PostgreSQL only; .ci/run also runs the suite on PostgreSQL")
    return _build_sql(connection)


def synchronous_commit_after(sql, params):
    # In one explicit transaction, so the setting made by the statement can
    # be read before the transaction ends.
    with connection.cursor() as cursor:
        cursor.execute("BEGIN")
        try:
            cursor.execute(sql, params)
            cursor.execute("SELECT current_setting('synchronous_commit')")
            return cursor.fetchone()[0]
        finally:
            cursor.execute("ROLLBACK")


def test_acquire_and_extend_commit_durably(pg):
    upsert = synchronous_commit_after(
        pg["upsert"], ["ns", "k", "owner", '{"instance": "x"}', 30]
    )
    extend = synchronous_commit_after(pg["extend"], [30, "ns", "k", "owner"])
    assert (upsert, extend) == ("on", "on")


def test_release_does_not_wait_for_the_wal_flush(pg):
    assert synchronous_commit_after(pg["release"], ["ns", "k", "owner"]) == "off"
    assert synchronous_commit_after(pg["force_release"], ["ns", "k"]) == "off"
    # Only for that transaction: the session keeps its durable default.
    with connection.cursor() as cursor:
        cursor.execute("SELECT current_setting('synchronous_commit')")
        assert cursor.fetchone()[0] == "on"
