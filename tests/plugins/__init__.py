"""Plugins used by the test suite.

Each hook call is appended to ``CALLS`` as (plugin name, hook name), so tests
can assert the order hooks ran in.
"""

CALLS = []


def record(plugin, hook):
    CALLS.append((plugin.name, hook))
