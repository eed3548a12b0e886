"""Entry point of a process started by :func:`tests.support.processes.spawn`."""

import importlib
import json
import sys

import django


def main():
    target, args = sys.argv[1], json.loads(sys.argv[2])
    django.setup()
    module, _, function = target.partition(":")
    value = getattr(importlib.import_module(module), function)(*args)
    from tests.support.processes import RESULT_MARK

    print(RESULT_MARK + json.dumps(value), flush=True)
    from nocoplugins import app

    app.stop()


if __name__ == "__main__":
    main()
