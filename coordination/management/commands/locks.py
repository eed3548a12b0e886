from django.core.management.base import BaseCommand, CommandError

from coordination.exceptions import ChannelNameError
from coordination.locks.admin import owner_text, seconds
from coordination.services import services


class Command(BaseCommand):
    help = "List held locks, or force-release one (its holder loses it)."

    def add_arguments(self, parser):
        sub = parser.add_subparsers(dest="action", required=True)
        sub.add_parser("list", help="List held locks with owner and time left.")
        release = sub.add_parser("release", help="Force-release a held lock.")
        release.add_argument("key")

    def handle(self, *args, action, **options):
        manager = services.lock_manager
        if action == "list":
            return self._list(manager)
        key = options["key"]
        try:
            released = manager.force_release(key)
        except ChannelNameError as exc:
            raise CommandError(str(exc)) from exc
        if not released:
            raise CommandError(
                f"The lock {key!r} is not held; `manage.py locks list` shows "
                "the held ones."
            )
        self.stdout.write(self.style.SUCCESS(f"Released {key}."))

    def _list(self, manager):
        from datetime import datetime, timezone

        rows = manager.held_locks()
        if not rows:
            self.stdout.write("No lock is held.")
            return
        now = datetime.now(timezone.utc)
        width = max(len(r["key"]) for r in rows)
        for row in rows:
            left = seconds(row["expires_at"] - now) if row["expires_at"] else "-"
            age = seconds(now - row["acquired_at"]) if row["acquired_at"] else "-"
            self.stdout.write(
                f"{row['key']:<{width}}  token={row['token']}  age={age}  "
                f"left={left}  owner={owner_text(row['owner'])}"
            )
