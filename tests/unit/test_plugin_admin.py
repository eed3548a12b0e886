import pytest
from django.contrib.auth.models import Permission, User
from django.urls import reverse

from nocoplugins import app
from nocoplugins.models import PluginState
from tests.plugins import CALLS

pytestmark = pytest.mark.django_db

CHANGELIST = "admin:nocoplugins_pluginstate_changelist"


def post_action(client, action, *names):
    return client.post(reverse(CHANGELIST), {
        "action": action, "_selected_action": list(names),
    }, follow=True)


def staff(perms=()):
    user = User.objects.create_user("staff", password="pw", is_staff=True)
    for codename in perms:
        user.user_permissions.add(Permission.objects.get(codename=codename))
    return user


def test_superuser_sees_plugins_and_disables_one(client, admin_user):
    client.force_login(admin_user)
    page = client.get(reverse(CHANGELIST))
    assert page.status_code == 200
    assert b"alpha" in page.content and b"beta-plugin" in page.content
    response = post_action(client, "disable_plugins", "alpha")
    assert b"Disabled: alpha" in response.content
    assert PluginState.objects.get(name="alpha").enabled is False
    assert app.plugin_manager.get("alpha").enabled is False
    assert ("alpha", "after_disable") in CALLS


def test_view_only_staff_cannot_switch_plugins(client):
    client.force_login(staff(["view_pluginstate"]))
    page = client.get(reverse(CHANGELIST))
    assert page.status_code == 200
    assert b"disable_plugins" not in page.content
    post_action(client, "disable_plugins", "alpha")
    assert PluginState.objects.get(name="alpha").enabled is True
    assert CALLS == []


def test_staff_with_change_permission_can_switch_plugins(client):
    client.force_login(staff(["view_pluginstate", "change_pluginstate"]))
    post_action(client, "disable_plugins", "alpha")
    assert PluginState.objects.get(name="alpha").enabled is False
    post_action(client, "enable_plugins", "alpha")
    assert PluginState.objects.get(name="alpha").enabled is True


def test_non_staff_is_sent_to_login(client):
    User.objects.create_user("user", password="pw")
    client.login(username="user", password="pw")
    response = client.get(reverse(CHANGELIST))
    assert response.status_code == 302
    assert "/login/" in response["Location"]


def test_plugins_cannot_be_added_or_deleted_in_admin(client, admin_user):
    client.force_login(admin_user)
    assert client.get(reverse("admin:nocoplugins_pluginstate_add")).status_code == 403
