from django.core.management.base import BaseCommand, CommandError

from coordination.exceptions import PluginNotFound
from nocoplugins import app


class Command(BaseCommand):
    help = "List, enable or disable plugins on every instance of the cluster."

    def add_arguments(self, parser):
        sub = parser.add_subparsers(dest="action", required=True)
        sub.add_parser("list", help="List plugins in load order.")
        for action in ("enable", "disable"):
            p = sub.add_parser(action, help=f"{action.capitalize()} a plugin.")
            p.add_argument("name")

    def handle(self, *args, action, **options):
        if action == "list":
            return self._list()
        manager = app.plugin_manager
        try:
            changed = getattr(manager, action)(options["name"])
        except PluginNotFound as exc:
            raise CommandError(str(exc)) from exc
        verb = f"{action}d"
        if changed:
            self.stdout.write(self.style.SUCCESS(f"{options['name']} {verb}."))
        else:
            self.stdout.write(f"{options['name']} was already {verb}.")

    def _list(self):
        plugins = list(app.plugin_manager)
        if not plugins:
            self.stdout.write("No plugins installed.")
            return
        width = max(len(p.name) for p in plugins)
        for plugin in plugins:
            state = "enabled " if plugin.enabled else "disabled"
            installed = "installed" if plugin.installed else "not installed"
            self.stdout.write(
                f"{plugin.name:<{width}}  {state}  {installed}  "
                f"({plugin.app_config.name})"
            )
