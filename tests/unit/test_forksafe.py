"""A process forked while a background round runs does not inherit it mid-way.

The lease keeper, lock renewal, heartbeat and pub/sub dispatch run database
calls and, the first time, imports; a child forked in the middle (a Celery
prefork parent replacing a killed child) would start with those locks held
by a thread it does not have, and hang on its first query. A fork therefore
waits for the rounds in progress to end.
"""

import os
import threading

import pytest

from coordination import forksafe
from coordination.heartbeat import Heartbeat
from coordination.services import services

# Forking with threads alive is the very case under test.
pytestmark = pytest.mark.filterwarnings("ignore:This process .* is multi-threaded")


def fork_and_report(check):
    pid = os.fork()
    if pid == 0:  # the child: report, never return into pytest
        os._exit(0 if check() else 1)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


def test_fork_waits_for_a_round_and_the_child_starts_free():
    inside, finished = threading.Event(), threading.Event()

    def round_():
        with forksafe.busy():
            inside.set()
            # Long enough that an unguarded fork would land inside.
            threading.Event().wait(0.3)
            finished.set()

    worker = threading.Thread(target=round_)
    worker.start()
    inside.wait(5)

    def child_can_work():
        with forksafe.busy():
            return finished.is_set()

    assert fork_and_report(child_can_work) == 0
    assert finished.is_set()
    worker.join(5)
    with forksafe.busy():  # the parent's rounds go on after the fork
        pass


def test_a_fork_from_inside_a_round_does_not_wait_for_itself():
    with forksafe.busy():
        assert fork_and_report(lambda: True) == 0


def test_the_services_background_rounds_take_part():
    # The keeper, heartbeat and dispatcher each wrap their rounds; a fork
    # while they run is still clean.
    services.event_queue.start()
    beat = Heartbeat()
    beat.start()
    try:
        for _ in range(5):
            assert fork_and_report(lambda: True) == 0
    finally:
        beat.stop()
        services.event_queue.stop()
