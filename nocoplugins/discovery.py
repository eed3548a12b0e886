"""Finding the Plugin class of each app in INSTALLED_APPS."""

import importlib
import importlib.util
import inspect

from django.utils.module_loading import import_string

from coordination.exceptions import ConfigurationError

from .plugin import Plugin


def plugin_class_for(app_config):
    """The Plugin subclass an app provides, or None for an ordinary app.

    The AppConfig's ``plugin`` attribute (a class or a dotted path) wins;
    otherwise the one Plugin subclass defined in the app's ``plugin`` module.
    """
    declared = getattr(app_config, "plugin", None)
    if declared is not None:
        return _declared_class(app_config, declared)
    module = _plugin_module(app_config)
    if module is None:
        return None
    found = [
        obj for obj in vars(module).values()
        if inspect.isclass(obj) and issubclass(obj, Plugin)
        and obj is not Plugin and obj.__module__ == module.__name__
    ]
    if len(found) > 1:
        names = ", ".join(sorted(cls.__name__ for cls in found))
        raise ConfigurationError(
            f"App {app_config.label!r}: {module.__name__} defines several "
            f"Plugin subclasses ({names}). Set `plugin = "
            f'"{module.__name__}.<ClassName>"` on {type(app_config).__name__} '
            "to say which one is the plugin."
        )
    return found[0] if found else None


def _declared_class(app_config, declared):
    where = f"{type(app_config).__module__}.{type(app_config).__name__}.plugin"
    if isinstance(declared, str):
        try:
            declared = import_string(declared)
        except ImportError as exc:
            raise ConfigurationError(
                f"App {app_config.label!r}: {where} is {declared!r}, which "
                f"cannot be imported ({exc}). Give the dotted path of a "
                "Plugin subclass."
            ) from exc
    if not (inspect.isclass(declared) and issubclass(declared, Plugin)):
        raise ConfigurationError(
            f"App {app_config.label!r}: {where} is {declared!r}, which is not "
            "a subclass of nocoplugins.Plugin. Point it at a class that "
            "subclasses Plugin."
        )
    return declared


def _plugin_module(app_config):
    name = f"{app_config.name}.plugin"
    try:
        spec = importlib.util.find_spec(name)
    except ModuleNotFoundError:
        return None
    if spec is None:
        return None
    # Import errors inside an existing plugin module must surface.
    return importlib.import_module(name)
