from datetime import timedelta

import pytest
from django.core.management import call_command
from django.test import override_settings
from django.utils import timezone

from coordination import heartbeat, instance
from coordination.models import Instance

pytestmark = pytest.mark.django_db


def test_a_beat_records_this_instance():
    heartbeat.beat()
    row = Instance.objects.get()
    assert row.id == instance.instance_id()
    assert row.pid == instance.describe()["pid"]
    assert row.app_name == "tests"
    assert list(Instance.objects.alive()) == [row]


def test_silent_and_stopped_instances_are_not_alive():
    heartbeat.beat()
    Instance.objects.create(
        id="gone", host="h", pid=1, kind="web", app_name="tests",
        last_seen=timezone.now() - timedelta(minutes=5),
    )
    Instance.objects.create(
        id="stopped", host="h", pid=2, kind="web", app_name="tests",
        last_seen=timezone.now(), stopped_at=timezone.now(),
    )
    assert [i.id for i in Instance.objects.alive()] == [instance.instance_id()]


def test_instances_command(capsys):
    call_command("instances")
    assert "No live instances" in capsys.readouterr().out
    heartbeat.beat()
    call_command("instances")
    assert instance.instance_id() in capsys.readouterr().out


@override_settings(COORDINATION={"HEARTBEAT": {"INTERVAL": -1}})
def test_bad_interval_is_a_check_error():
    from coordination.checks import _check_heartbeat

    (error,) = _check_heartbeat()
    assert "HEARTBEAT" in error.msg


@pytest.mark.parametrize("argv, kind", [
    (["/venv/lib/python3.12/site-packages/celery/__main__.py", "worker"], "worker"),
    (["/venv/bin/celery", "-A", "x", "worker"], "worker"),
    (["manage.py", "runserver", "--noreload"], "web"),
    (["manage.py", "migrate"], "migrate"),
    (["/venv/bin/gunicorn", "x.wsgi"], "web"),
])
def test_instance_kind_names_what_the_process_is(monkeypatch, argv, kind):
    monkeypatch.setattr("sys.argv", argv)
    assert heartbeat.instance_kind() == kind
