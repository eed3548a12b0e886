"""A kept redis-py connection per thread, for commands on a hot path.

redis-py's own command path (a pool checkout, hooks and retries per
command) costs about as much CPU as a round trip on loopback. The Redis lock
backend and the pub/sub publisher send their commands on these connections
directly instead.
"""

import threading
import weakref

from .instance import pid


class ThreadConnections:
    """One connection per thread, made on first use from a Redis URL.

    A forked child makes its own and leaves the parent's sockets alone. A
    connection lives as long as its thread: when the thread ends, the
    connection is collected and its socket closed, so threads that come and
    go (a server's thread per request) do not pile up connections.
    ``defaults`` fill connection options the URL leaves unset (timeouts).
    """

    def __init__(self, url, **defaults):
        import redis

        pool = redis.ConnectionPool.from_url(url)
        self._connection_class = pool.connection_class
        #: The connection options the URL itself sets.
        self.url_options = dict(pool.connection_kwargs)
        self._kwargs = dict(pool.connection_kwargs)
        for name, value in defaults.items():
            if self._kwargs.get(name) is None:
                self._kwargs[name] = value
        self._local = threading.local()
        # Every live connection and the process that made it, for close().
        self._opened = weakref.WeakKeyDictionary()
        self._lock = threading.Lock()

    def get(self):
        local = self._local
        conn = getattr(local, "conn", None)
        if conn is None or local.pid != pid():
            conn = self._connection_class(**self._kwargs)
            local.conn, local.pid = conn, pid()
            with self._lock:
                self._opened[conn] = local.pid
        return conn

    def close(self):
        """Disconnect this process's connections; each thread makes a new one
        on its next command."""
        with self._lock:
            mine = [c for c, owner in self._opened.items() if owner == pid()]
            self._opened = weakref.WeakKeyDictionary()
            self._local = threading.local()
        for conn in mine:
            conn.disconnect()
