from django.core.management.base import BaseCommand
from django.utils import timezone

from coordination.models import Instance


class Command(BaseCommand):
    help = "List the instances of the cluster seen by their heartbeats."

    def add_arguments(self, parser):
        parser.add_argument(
            "--all", action="store_true",
            help="Also list stopped and silent instances.",
        )

    def handle(self, *args, **options):
        alive = set(Instance.objects.alive().values_list("id", flat=True))
        rows = Instance.objects.all() if options["all"] else Instance.objects.alive()
        now = timezone.now()
        count = 0
        for row in rows:
            count += 1
            state = "alive" if row.id in alive else (
                "stopped" if row.stopped_at else "silent"
            )
            ago = (now - row.last_seen).total_seconds()
            self.stdout.write(
                f"{row.id}  {row.kind:<10} {state:<8} last seen {ago:.0f}s ago"
            )
        if not count:
            self.stdout.write(
                "No live instances. Instances beat after app.start(); "
                "see docs/operating.md."
            )
