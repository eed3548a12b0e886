"""Keep forks out of the middle of background work.

A process forked while another of its threads is inside an import or a
database call starts with that thread's locks held and no thread left to
release them: the child's first import of the same module, or its first
query, waits forever, on SQLite possibly while holding the database's write
lock. A Celery prefork parent forks a new child whenever one dies, while the
parent's coordination threads run. So each background round (lease keeping,
lock renewal, a heartbeat, a pub/sub dispatch, claiming events) runs inside
``busy()``, and a fork waits until no round is in progress (at most
``FORK_WAIT`` seconds); rounds that would start meanwhile wait for the fork.
"""

import contextlib
import logging
import os
import threading

logger = logging.getLogger(__name__)

FORK_WAIT = 5.0

_cond = threading.Condition(threading.Lock())
_active = 0
_forking = False
_local = threading.local()


@contextlib.contextmanager
def busy():
    """Run the block as one background round that no fork may split."""
    global _active
    cond = _cond
    with cond:
        while _forking:
            cond.wait()
        _active += 1
    _local.rounds = getattr(_local, "rounds", 0) + 1
    try:
        yield
    finally:
        _local.rounds -= 1
        if cond is _cond:  # else this thread forked inside the round
            with cond:
                _active -= 1
                cond.notify_all()


def _before_fork():
    global _forking
    # Rounds of the forking thread itself cannot end while it waits.
    own = getattr(_local, "rounds", 0)
    with _cond:
        _forking = True
        if not _cond.wait_for(lambda: _active <= own, FORK_WAIT):
            logger.warning(
                "Forking pid=%s while %s background round(s) still run",
                os.getpid(), _active - own, extra={"action": "fork"},
            )


def _after_fork_in_parent():
    global _forking
    with _cond:
        _forking = False
        _cond.notify_all()


def _after_fork_in_child():
    # The other threads are not in the child; their rounds are gone too.
    global _cond, _active, _forking
    _cond = threading.Condition(threading.Lock())
    _active = 0
    _forking = False


os.register_at_fork(
    before=_before_fork, after_in_parent=_after_fork_in_parent,
    after_in_child=_after_fork_in_child,
)
