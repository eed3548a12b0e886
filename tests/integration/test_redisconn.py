"""Kept per-thread Redis connections (lock backend, pub/sub publisher)."""

import gc
import os
import threading
import uuid

import pytest

from coordination.redisconn import ThreadConnections


def connected(client, name):
    return sum(1 for c in client.client_list() if c.get("name") == name)


def ping(connections):
    conn = connections.get()
    conn.send_command("PING")
    return conn.read_response()


def test_a_thread_keeps_one_connection_and_frees_it_when_it_ends(
        redis_client, redis_url):
    name = f"tc-{uuid.uuid4().hex[:8]}"
    connections = ThreadConnections(redis_url, client_name=name)
    assert ping(connections) in (b"PONG", "PONG")
    assert ping(connections) in (b"PONG", "PONG")
    assert connected(redis_client, name) == 1  # reused, not one per command

    threads = [threading.Thread(target=ping, args=(connections,))
               for _ in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    gc.collect()
    # The 20 threads are gone, and so are their connections: a server
    # that starts a thread per request does not pile them up.
    assert connected(redis_client, name) == 1

    connections.close()
    assert connected(redis_client, name) == 0
    ping(connections)  # a new one on the next command
    assert connected(redis_client, name) == 1
    connections.close()


# Other tests leave daemon threads running; forking is the point here.
@pytest.mark.filterwarnings("ignore:This process .* is multi-threaded")
def test_a_forked_child_makes_its_own(redis_client, redis_url):
    name = f"tc-{uuid.uuid4().hex[:8]}"
    connections = ThreadConnections(redis_url, client_name=name)
    parent = connections.get()
    ping(connections)
    pid = os.fork()
    if pid == 0:
        ok = connections.get() is not parent and ping(connections) is not None
        os._exit(0 if ok else 1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    # The parent's connection still works after the child used its own.
    assert ping(connections) in (b"PONG", "PONG")
    connections.close()
