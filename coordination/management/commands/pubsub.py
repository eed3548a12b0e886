"""``manage.py pubsub``: publish a test message, or print what arrives."""

import json
import threading
import time

from django.core.management.base import BaseCommand, CommandError

from coordination.exceptions import ChannelNameError, PayloadError
from coordination.services import services


class Command(BaseCommand):
    help = (
        "Publish a message to every instance, or listen on channels and print "
        "each message as it arrives (for debugging a cluster)."
    )

    def add_arguments(self, parser):
        sub = parser.add_subparsers(dest="action", required=True)
        pub = sub.add_parser("publish", help="Publish JSON on a channel.")
        pub.add_argument("channel")
        pub.add_argument("message", help='JSON, e.g. \'{"reload": true}\'.')
        pub.add_argument("--sync", action="store_true",
                         help="Send as a sync message (a plugin's channel).")
        listen = sub.add_parser("listen", help="Print messages as they arrive.")
        listen.add_argument("channels", nargs="+", metavar="channel")
        listen.add_argument("--sync", action="store_true",
                            help="Listen to sync messages instead.")
        listen.add_argument("--count", type=int, default=None,
                            help="Exit after this many messages.")
        listen.add_argument("--timeout", type=float, default=None,
                            help="Exit after this many seconds.")

    def handle(self, *args, action, **options):
        if action == "publish":
            return self._publish(options)
        return self._listen(options)

    def _publish(self, options):
        try:
            message = json.loads(options["message"])
        except ValueError as exc:
            raise CommandError(
                f"The message is not JSON ({exc}); quote it for the shell, "
                "e.g. '{\"reload\": true}' or '\"text\"'."
            ) from exc
        manager = services.sync_message_manager if options["sync"] \
            else services.pubsub_manager
        try:
            manager.publish(options["channel"], message)
        except (ChannelNameError, PayloadError) as exc:
            raise CommandError(str(exc)) from exc
        self.stdout.write(self.style.SUCCESS(
            f"Published on {options['channel']!r} from instance "
            f"{services.instance_id}."
        ))

    def _listen(self, options):
        manager = services.sync_message_manager if options["sync"] \
            else services.pubsub_manager
        count, received = options["count"], []
        done = threading.Event()
        lock = threading.Lock()

        def printer(channel):
            def handler(message):
                with lock:
                    received.append(message)
                    self.stdout.write(json.dumps({
                        "time": time.strftime("%H:%M:%S"), "channel": channel,
                        "message": message,
                    }, ensure_ascii=False))
                    self.stdout.flush()
                    if count is not None and len(received) >= count:
                        done.set()
            return handler

        handlers = [(channel, printer(channel)) for channel in options["channels"]]
        try:
            for channel, handler in handlers:
                manager.subscribe(channel, handler)
        except ChannelNameError as exc:
            raise CommandError(str(exc)) from exc
        # A long-running command is an instance of the cluster: it beats and
        # shows on the dashboard while it listens.
        services.start()
        self.stderr.write(
            f"Listening on {', '.join(options['channels'])} as instance "
            f"{services.instance_id} (Ctrl-C to stop)."
        )
        try:
            done.wait(options["timeout"])
        except KeyboardInterrupt:
            pass
        finally:
            for channel, handler in handlers:
                manager.unsubscribe(channel, handler)
            services.stop()
