import pytest

from coordination.models import Instance
from tests.support.processes import child_env, result, spawn

pytestmark = pytest.mark.django_db(transaction=True)


def test_each_started_process_beats_and_marks_itself_stopped():
    env = child_env(COORDINATION_HEARTBEAT=0.2)
    children = [spawn("tests.cluster.heartbeat_nodes:beat_for", 1.0, env=env)
                for _ in range(2)]
    ids = [result(child) for child in children]
    assert len(set(ids)) == 2
    rows = {row.id: row for row in Instance.objects.filter(id__in=ids)}
    assert set(rows) == set(ids)
    # app.stop() at exit marks each instance stopped.
    assert all(row.stopped_at is not None for row in rows.values())
    assert all(row.kind for row in rows.values())
