"""A process forked while the lease keeper works does not inherit it mid-work.

The keeper runs database calls and, the first time, imports; a child forked
in the middle (a Celery prefork parent replacing a killed child) would start
with those locks held by a thread it does not have, and hang on its first
query. A fork therefore waits for the keeper's current round to end.
"""

import os
import threading

import pytest

from coordination.services import services


# Forking with a thread alive is the very case under test.
@pytest.mark.filterwarnings("ignore:This process .* is multi-threaded")
def test_fork_waits_for_the_keepers_round_and_the_child_starts_unlocked():
    queue = services.event_queue
    inside, finished = threading.Event(), threading.Event()

    def keeper_round():
        with queue._working:
            inside.set()
            # Long enough that an unguarded fork would land inside.
            threading.Event().wait(0.3)
            finished.set()

    worker = threading.Thread(target=keeper_round)
    worker.start()
    inside.wait(5)
    pid = os.fork()
    if pid == 0:  # the child: report, never return into pytest
        ok = finished.is_set() and queue._working.acquire(timeout=0)
        os._exit(0 if ok else 1)
    worker.join(5)
    _, status = os.waitpid(pid, 0)
    assert finished.is_set()
    assert os.waitstatus_to_exitcode(status) == 0
    # The parent's lock is free again for the keeper.
    assert queue._working.acquire(timeout=1)
    queue._working.release()
