import pytest
from django.contrib.auth.models import Permission, User
from django.urls import reverse

from coordination import heartbeat
from coordination.models import Event
from nocoplugins import app

pytestmark = pytest.mark.django_db

PAGE = "admin:nocoplugins_clusterdashboard_changelist"
DATA = "admin:nocoplugins_clusterdashboard_data"


def test_dashboard_shows_instances_plugins_events_and_failures(client, admin_user):
    heartbeat.beat()
    Event.objects.create(channel="mail", payload={}, status="succeeded")
    Event.objects.create(channel="mail", payload={}, status="failed", attempts=4,
                         last_error="Traceback...\nValueError: smtp down")
    client.force_login(admin_user)
    page = client.get(reverse(PAGE))
    assert page.status_code == 200
    assert app.instance_id.encode() in page.content
    data = client.get(reverse(DATA)).json()
    assert [i["id"] for i in data["instances"]] == [app.instance_id]
    assert [p["name"] for p in data["plugins"]] == ["alpha", "beta-plugin"]
    (mail,) = data["events"]
    assert mail["counts"]["succeeded"] == 1 and mail["counts"]["failed"] == 1
    (failure,) = data["failures"]
    assert failure["error"] == ["ValueError: smtp down"] and failure["attempts"] == 4
    assert data["locks"] == {"error": None, "held": []}


def test_dashboard_lists_held_locks(client, admin_user):
    client.force_login(admin_user)
    with app.lock_manager.lock("reports:nightly", ttl=60):
        data = client.get(reverse(DATA)).json()
    (held,) = data["locks"]["held"]
    assert held["key"] == "reports:nightly"
    assert held["owner"]["instance"] == app.instance_id
    assert 0 < held["left_seconds"] <= 60


def test_dashboard_needs_staff_with_view_permission(client):
    user = User.objects.create_user("staff", password="pw", is_staff=True)
    client.force_login(user)
    assert client.get(reverse(PAGE)).status_code == 403
    assert client.get(reverse(DATA)).status_code == 403
    user.user_permissions.add(Permission.objects.get(codename="view_clusterdashboard"))
    assert client.get(reverse(DATA)).status_code == 200


def test_dashboard_sends_anonymous_users_to_login(client):
    response = client.get(reverse(DATA))
    assert response.status_code == 302 and "/login/" in response["Location"]
