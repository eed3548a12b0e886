"""Who this process is, for logs, lock owners and pub/sub envelopes.

The id is fixed for the life of a process. A forked child (a Celery prefork
worker, a gunicorn worker) gets a new one, since it is a new instance.
"""

import os
import socket
import sys
import uuid

_identity = {}


def _new_identity():
    _identity.clear()
    _identity.update(
        id=f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}",
        host=socket.gethostname(),
        pid=os.getpid(),
    )


_new_identity()
os.register_at_fork(after_in_child=_new_identity)


def instance_id():
    """A string unique to this running process."""
    return _identity["id"]


def pid():
    """``os.getpid()`` without the system call (kept current across forks);
    for hot paths that check whether they were forked."""
    return _identity["pid"]


def describe(purpose=""):
    """A dict saying which process holds something and why (lock owners)."""
    owner = {
        "instance": _identity["id"],
        "host": _identity["host"],
        "pid": _identity["pid"],
        "command": os.path.basename(sys.argv[0]) if sys.argv else "",
    }
    if purpose:
        owner["purpose"] = purpose
    return owner
