"""Lock admin and ``manage.py locks`` on the database and Redis backends."""

import io

import pytest
from django.conf import settings
from django.contrib.auth.models import Permission, User
from django.core.management import CommandError, call_command
from django.test import override_settings
from django.urls import reverse

from coordination.services import services

pytestmark = pytest.mark.django_db(transaction=True)

CHANGELIST = "admin:coordination_lockrecord_changelist"


BACKENDS = ["database", "redis"]
if "postgresql" in settings.DATABASES["default"]["ENGINE"]:
    BACKENDS.append("database-advisory")


@pytest.fixture(params=BACKENDS)
def locks(request):
    config = {"BACKEND": "database"}
    if request.param == "database-advisory":
        config["OPTIONS"] = {"MODE": "advisory"}
    if request.param == "redis":
        request.getfixturevalue("redis_client")
        config = {"BACKEND": "redis",
                  "OPTIONS": {"URL": request.getfixturevalue("redis_url")}}
    with override_settings(COORDINATION={"APP_NAME": "admin-test",
                                         "LOCKS": config}):
        yield services.lock_manager


def _staff(client, *perms):
    user = User.objects.create_user("op", password="pw", is_staff=True)
    for codename in perms:
        user.user_permissions.add(Permission.objects.get(codename=codename))
    client.force_login(user)
    return user


def _release(client, locks, key):
    if locks.backend.__class__.__name__ == "DatabaseBackend":
        from coordination.models import LockRecord

        row = LockRecord.objects.get(key=key)
        return client.post(reverse(CHANGELIST), {
            "action": "force_release", "_selected_action": [row.pk]})
    return client.post(reverse("admin:coordination_lockrecord_held"),
                       {"key": key})


def test_staff_sees_held_locks_with_owner_and_time_left(client, locks):
    _staff(client, "view_lockrecord")
    lock = locks.acquire("report-job", ttl=60)
    page = client.get(reverse(CHANGELIST)).content.decode()
    assert "report-job" in page
    assert services.instance_id in page
    assert "test_staff_sees_held_locks_with_owner_and_time_left" in page
    assert " s<" in page  # age and time left in seconds
    lock.release()
    assert "report-job" not in client.get(reverse(CHANGELIST)).content.decode()


def test_change_permission_force_releases(client, locks, caplog):
    _staff(client, "view_lockrecord", "change_lockrecord")
    lock = locks.acquire("stuck", ttl=60)
    response = _release(client, locks, "stuck")
    assert response.status_code == 302
    assert locks.held_locks() == []
    assert lock.release() is False
    assert any(r.action == "lock_force_release" and "user=op" in r.getMessage()
               for r in caplog.records)


def test_view_permission_cannot_release(client, locks):
    _staff(client, "view_lockrecord")
    lock = locks.acquire("guarded", ttl=60)
    response = _release(client, locks, "guarded")
    assert response.status_code in (200, 302, 403)
    assert [r["key"] for r in locks.held_locks()] == ["guarded"]
    assert lock.release() is True


def test_non_staff_is_sent_to_login(client, locks):
    locks.acquire("hidden", ttl=60)
    response = client.get(reverse(CHANGELIST))
    assert response.status_code == 302 and "login" in response["Location"]


def test_command_lists_and_releases(locks):
    lock = locks.acquire("nightly", ttl=60)
    out = io.StringIO()
    call_command("locks", "list", stdout=out)
    assert "nightly" in out.getvalue()
    assert f"token={lock.token}" in out.getvalue()
    call_command("locks", "release", "nightly", stdout=io.StringIO())
    assert lock.release() is False
    with pytest.raises(CommandError, match="not held"):
        call_command("locks", "release", "nightly")
    with pytest.raises(CommandError, match="whitespace"):
        call_command("locks", "release", "bad key")
    out = io.StringIO()
    call_command("locks", "list", stdout=out)
    assert "No lock is held." in out.getvalue()
