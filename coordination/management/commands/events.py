"""``manage.py events``: list, retry, cancel, purge and count events."""

from django.core.management.base import BaseCommand, CommandError

from coordination.models import Event
from coordination.services import services

STATUSES = [choice for choice, _ in Event.Status.choices]


class Command(BaseCommand):
    help = "Inspect and manage the event queue's events."

    def add_arguments(self, parser):
        sub = parser.add_subparsers(dest="action", required=True,
                                    metavar="list|retry|cancel|purge|stats")
        listing = sub.add_parser("list", help="List events, newest first.")
        listing.add_argument("--channel")
        listing.add_argument("--status", choices=STATUSES)
        listing.add_argument("--limit", type=int, default=100)
        for name, what in (("retry", "failed or cancelled events to retry"),
                           ("cancel", "pending or running events to cancel")):
            action = sub.add_parser(name, help=f"Ids of {what}.")
            action.add_argument("ids", nargs="+", type=int, metavar="ID")
        purge = sub.add_parser("purge", help="Delete finished events.")
        purge.add_argument("--status", choices=STATUSES)
        purge.add_argument("--channel")
        sub.add_parser("stats", help="Count events by channel and status.")

    def handle(self, *args, action, **options):
        getattr(self, f"do_{action}")(**options)

    def do_list(self, *, channel=None, status=None, limit=100, **_):
        qs = Event.objects.order_by("-id")
        if channel:
            qs = qs.filter(channel=channel)
        if status:
            qs = qs.filter(status=status)
        rows = list(qs[:limit])
        if not rows:
            self.stdout.write("No events.")
            return
        self.stdout.write(f"{'ID':>8}  {'CHANNEL':<24} {'STATUS':<10} "
                          f"{'TRIES':>5}  {'CREATED':<19}  LAST ERROR")
        for e in rows:
            error = e.last_error.strip().splitlines()[-1][:60] if e.last_error else ""
            self.stdout.write(
                f"{e.pk:>8}  {e.channel[:24]:<24} {e.status:<10} "
                f"{e.attempts:>2}/{e.max_retries + 1:<2}  "
                f"{e.created:%Y-%m-%d %H:%M:%S}  {error}"
            )

    def do_retry(self, *, ids, **_):
        self._each(ids, services.event_queue.retry, "retried",
                   "not failed or cancelled")

    def do_cancel(self, *, ids, **_):
        self._each(ids, services.event_queue.cancel, "cancelled",
                   "not pending or running")

    def _each(self, ids, fn, done, why):
        missing = set(ids) - set(Event.objects.filter(pk__in=ids).values_list(
            "pk", flat=True))
        if missing:
            raise CommandError(
                f"No event with id {', '.join(map(str, sorted(missing)))}; "
                "see `manage.py events list`."
            )
        skipped = [pk for pk in ids if not fn(pk)]
        self.stdout.write(f"{len(ids) - len(skipped)} event(s) {done}.")
        if skipped:
            raise CommandError(
                f"Skipped {', '.join(map(str, skipped))}: {why}."
            )

    def do_purge(self, *, status=None, channel=None, **_):
        try:
            deleted = services.event_queue.purge(status=status, channel=channel)
        except ValueError as exc:
            raise CommandError(str(exc)) from exc
        self.stdout.write(f"Deleted {deleted} finished event(s).")

    def do_stats(self, **_):
        stats = services.event_queue.stats()
        if not stats:
            self.stdout.write("No events.")
            return
        self.stdout.write(f"{'CHANNEL':<32}" + "".join(
            f"{s:>11}" for s in STATUSES))
        for channel, counts in stats.items():
            self.stdout.write(f"{channel[:32]:<32}" + "".join(
                f"{counts.get(s, 0):>11}" for s in STATUSES))
