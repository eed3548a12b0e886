"""Event admin and ``manage.py events``."""

import io

import pytest
from django.contrib.auth.models import Permission, User
from django.core.management import CommandError, call_command

from coordination.models import Event
from coordination.services import services
from tests.support.queue import queue_settings

pytestmark = pytest.mark.django_db(transaction=True)
URL = "/admin/coordination/event/"


@pytest.fixture
def events():
    # Rows only: nothing subscribes, so nothing runs them here.
    with queue_settings():
        yield {
            status: Event.objects.create(
                channel=f"ch-{status}", payload={}, status=status, attempts=1,
                last_error="Traceback ...\nRuntimeError: it broke"
                if status == "failed" else "",
            ).pk
            for status in ("pending", "running", "succeeded", "failed",
                           "cancelled")
        }


def run(*args):
    out = io.StringIO()
    call_command("events", *args, stdout=out)
    return out.getvalue()


def statuses():
    return dict(Event.objects.values_list("channel", "status"))


def test_changelist_shows_channel_status_attempts_and_error(admin_client, events):
    response = admin_client.get(URL, {"status__exact": "failed"})
    assert response.status_code == 200
    shown = [e.channel for e in response.context["cl"].result_list]
    assert shown == ["ch-failed"]
    body = response.content.decode()
    assert "RuntimeError: it broke" in body
    detail = admin_client.get(f"{URL}{events['failed']}/change/")
    assert detail.status_code == 200


def test_admin_actions(admin_client, events):
    def act(action, *names):
        ids = [events[n] for n in names]
        return admin_client.post(URL, {"action": action, "_selected_action": ids})

    assert act("cancel_events", "pending", "succeeded").status_code == 302
    assert statuses()["ch-pending"] == "cancelled"
    assert statuses()["ch-succeeded"] == "succeeded"
    act("retry_events", "failed")
    failed = Event.objects.get(pk=events["failed"])
    assert (failed.status, failed.attempts) == ("pending", 0)
    act("purge_events", "succeeded", "running")
    assert "ch-succeeded" not in statuses()
    assert statuses()["ch-running"] == "running"


def test_actions_need_permissions(client, events):
    user = User.objects.create_user("viewer", password="pw", is_staff=True)
    user.user_permissions.add(Permission.objects.get(codename="view_event"))
    client.force_login(user)
    assert client.get(URL).status_code == 200
    response = client.post(URL, {"action": "retry_events",
                                 "_selected_action": [events["failed"]]})
    assert statuses()["ch-failed"] == "failed"
    assert response.status_code in (200, 302)
    client.post(URL, {"action": "purge_events",
                      "_selected_action": [events["succeeded"]]})
    assert "ch-succeeded" in statuses()


def test_command_list_and_stats(events):
    out = run("list", "--status", "failed")
    assert "ch-failed" in out and "RuntimeError: it broke" in out
    assert "ch-pending" not in out
    assert "ch-pending" in run("list", "--channel", "ch-pending")
    stats = run("stats")
    assert "ch-running" in stats and "succeeded" in stats


def test_command_retry_cancel_purge(events):
    assert "1 event(s) retried" in run("retry", str(events["failed"]))
    assert statuses()["ch-failed"] == "pending"
    run("cancel", str(events["failed"]))
    assert statuses()["ch-failed"] == "cancelled"
    with pytest.raises(CommandError, match="not pending or running"):
        run("cancel", str(events["succeeded"]))
    with pytest.raises(CommandError, match="No event with id 999999"):
        run("retry", "999999")
    assert "Deleted 1" in run("purge", "--status", "succeeded")
    with pytest.raises(CommandError, match="Cancel pending"):
        run("purge", "--status", "pending")
    assert "Deleted 2" in run("purge")
    assert set(statuses()) == {"ch-pending", "ch-running"}


def test_purge_api_refuses_unfinished(events):
    with pytest.raises(ValueError):
        services.event_queue.purge(status="running")
