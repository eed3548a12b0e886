"""Locks in Redis: a lease string per key, written and compared by Lua scripts.

Keys, all under one hash tag per lock so that they share a cluster slot:

- ``coordination:lock:{<app>:<key>}:h``  the lease: one string with the
  fencing number, the expiry (server time), the acquisition time, the boot
  marker it was written under and the holder's queue entry (owner token
  and description). It never expires, so the fencing number outlives the
  lease; the lock is held until the server's clock passes the expiry;
- ``...:q``  the waiters in arrival order (a list of entries, each with
  the owner token, registration deadline, ttl and owner);
- ``...:w:<owner token>``  a waiter's wake-up list.

A release hands the lease straight to the first live waiter and pushes the
fencing number onto its wake-up list, where it is blocked in BLPOP: waiters
do not spin, are served in order, and the handover costs no extra round
trip. A waiter's BLPOP is bounded (``POLL_INTERVAL``), after which it
refreshes its registration and tries again, so an expired lease or a lost
signal is noticed within that bound.

Fencing numbers are ``max(previous + 1, server time in microseconds)``:
they grow even when Redis restarts without persistence and the counter is
lost, as long as the server clock does not go back.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import secrets
import time
import weakref
from datetime import datetime, timezone
from typing import Any

from ...exceptions import ConfigurationError
from ...names import loads
from ...redisconn import ThreadConnections
from .base import BaseLockBackend

try:
    from hiredis import pack_command as _pack_command
except ImportError:  # pragma: no cover - hiredis is optional
    _pack_command = None

logger = logging.getLogger(__name__)

# Sent before a waiter's registration, whose reply is then not sent.
_SKIP_REPLY = ("CLIENT", "REPLY", "SKIP")

PREFIX = "coordination:lock:"

# The scripts are written flat, without helper functions: Redis runs a
# script's whole body on every call, so each local function is a closure
# built per call. Each redis.call costs Redis 7.0 about 8,000 to 11,000
# instructions, more than a whole GET round trip from a client, and the
# hand-over sits on the critical path of every waiter, so the scripts make
# as few calls as they can (docs/locks.md has the counts).
#
# KEYS: 1 the lease, 2 the waiter queue.
#
# A queue entry is "owner token|registration deadline ms|ttl ms|owner
# JSON", in arrival order. A waiter that gives up removes its entry; one
# that died is passed over when its deadline has gone by.
#
# The lease is one string that never expires, so that its fencing number
# outlives it: "fence|expires ms|acquired ms|boot marker|" followed by the
# holder's queue entry, copied whole (building a string costs the server
# about as much as a redis.call). The lock is held while the server time
# is before `expires`; a free lease has expires 0 and an empty entry.

# Write the lease for `entry` (ttl `ttl` ms) and set `fence` from the
# previous fencing number `prev`, the server time `t` (TIME's reply) and
# `now` (the same in ms).
_GRANT = """
  local us = t[1] * 1000000 + t[2]
  local c = prev
  if c < us then c = us else c = c + 1 end
  local fence = string.format('%d', c)
  redis.call('SET', KEYS[1], fence .. '|' .. string.format('%d', now + ttl) ..
             '|' .. string.format('%d', now) .. '|' .. boot .. '|' .. entry)
"""

# With ARGV[8] = '1' the caller BLPOPs its wake list (KEYS[3]) in the same
# pipeline, usually without reading this script's reply, so a grant (or a
# changed boot marker, as '!<marker>') is also pushed there.
_PUSH = """
  if ARGV[8] == '1' then
    redis.call('DEL', KEYS[3])
    redis.call('RPUSH', KEYS[3], fence)
    redis.call('PEXPIRE', KEYS[3], 60000)
  end
"""

# The lease's fields, from the string `lease` (or nil).
_READ = """
local fence, expires, holder, boot
if lease then
  fence, expires, boot, holder = string.match(
    lease, '^(%d+)|(%d+)|%d+|([^|]*)|([^|]*)|')
end
"""

_NOW = """
local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
"""

# KEYS: 1-2 as above, 3 this waiter's wake list, 4 the namespace's boot
# marker. ARGV: owner token, ttl ms, owner JSON, register (0 no, 1 join the
# queue, 2 refresh an entry already in it), registration ms, the boot
# marker the caller knows ('' for none), a new marker to set when there is
# none, push the grant to the wake list (0/1).
# Returns {fence, boot}: fence '' when busy, '!' when the marker changed
# (Redis lost its data since the caller last talked to it).
ACQUIRE = """
local lease = redis.call('GET', KEYS[1])
""" + _READ + """
if not boot then
  -- A key not used since Redis started: the namespace's marker says
  -- whether Redis lost its data meanwhile. (A lease carries the marker it
  -- was written under, which is the current one, since it survived.)
  boot = redis.call('GET', KEYS[4])
  if not boot then
    boot = ARGV[7]
    redis.call('SET', KEYS[4], boot)
  end
end
if ARGV[6] ~= '' and ARGV[6] ~= boot then
  local fence = '!' .. boot
""" + _PUSH + """
  return {'!', boot}
end
""" + _NOW + """
local token = ARGV[1]
if lease and tonumber(expires) > now then
  if holder == token then
    -- Handed over while we were not listening.
""" + _PUSH + """
    return {fence, boot}
  end
else
  -- Free: ours unless a live waiter registered first. Entries whose
  -- registration ran out are dropped from the head on the way.
  holder = nil
  while true do
    local first = redis.call('LINDEX', KEYS[2], 0)
    if not first then break end
    local tok, deadline = string.match(first, '^([^|]*)|(%d+)|')
    if tok == token then
      redis.call('LPOP', KEYS[2])
      break
    end
    if deadline and tonumber(deadline) >= now then
      holder = tok
      break
    end
    redis.call('LPOP', KEYS[2])
  end
  if not holder then
    local ttl, prev = ARGV[2], tonumber(fence) or 0
    local entry = token .. '|0|' .. ttl .. '|' .. ARGV[3]
""" + _GRANT + _PUSH + """
    return {fence, boot}
  end
end
if ARGV[4] ~= '0' then
  local reg = tonumber(ARGV[5])
  local entry = token .. '|' .. string.format('%d', now + reg) .. '|' ..
                ARGV[2] .. '|' .. ARGV[3]
  local placed = false
  if ARGV[4] == '2' then
    -- A refresh keeps the waiter's place in the queue.
    local prefix = token .. '|'
    local entries = redis.call('LRANGE', KEYS[2], 0, -1)
    for i = 1, #entries do
      if string.sub(entries[i], 1, #prefix) == prefix then
        redis.call('LSET', KEYS[2], i - 1, entry)
        placed = true
        break
      end
    end
  end
  if not placed then
    redis.call('RPUSH', KEYS[2], entry)
  end
  redis.call('PEXPIRE', KEYS[2], reg * 2)
end
return {'', boot}
"""

# Stop waiting; keep the lease if it was handed over meanwhile.
# KEYS: 1-3 as ACQUIRE. ARGV: owner token.
LEAVE = """
redis.call('DEL', KEYS[3])
local lease = redis.call('GET', KEYS[1])
""" + _READ + """
if holder == ARGV[1] then
""" + _NOW + """
  if tonumber(expires) > now then
    return fence
  end
end
local prefix = ARGV[1] .. '|'
local entries = redis.call('LRANGE', KEYS[2], 0, -1)
for i = 1, #entries do
  if string.sub(entries[i], 1, #prefix) == prefix then
    redis.call('LREM', KEYS[2], 1, entries[i])
    break
  end
end
return false
"""

# Free the lease, or hand it to the first live waiter and wake it.
# KEYS: 1-2. ARGV: owner token ('' forces), wake list prefix.
# Returns 1, or 0 when the lease was not held (by that owner). A holder
# whose lease ran out, and that nobody took over since, still hands the
# key on: the first waiter need not wait for its next poll to find it free.
RELEASE = """
local lease = redis.call('GET', KEYS[1])
""" + _READ + """
if not holder or holder == '' or (ARGV[1] ~= '' and holder ~= ARGV[1]) then
  return 0
end
""" + _NOW + """
local held = 0
if tonumber(expires) > now then held = 1 end
while true do
  local first = redis.call('LPOP', KEYS[2])
  if not first then break end
  local tok, deadline, ttl = string.match(first, '^([^|]*)|(%d+)|(%d+)|')
  if tok and tonumber(deadline) >= now then
    local entry, prev = first, tonumber(fence)
""" + _GRANT + """
    local wake = ARGV[2] .. tok
    redis.call('LPUSH', wake, fence)
    redis.call('PEXPIRE', wake, 60000)
    return held
  end
end
redis.call('SET', KEYS[1], fence .. '|0|0|' .. boot .. '||')
return held
"""

# KEYS: 1 the lease. ARGV: owner token, ttl ms.
EXTEND = """
local lease = redis.call('GET', KEYS[1])
if not lease then return 0 end
local fence, expires, rest, holder = string.match(
  lease, '^(%d+)|(%d+)|(%d+|[^|]*|([^|]*)|.*)$')
if holder ~= ARGV[1] then return 0 end
""" + _NOW + """
if tonumber(expires) <= now then return 0 end
redis.call('SET', KEYS[1], fence .. '|' ..
           string.format('%d', now + ARGV[2]) .. '|' .. rest)
return 1
"""


SCRIPTS = {"acquire": ACQUIRE, "leave": LEAVE, "release": RELEASE,
           "extend": EXTEND}


def _ms(seconds):
    return max(1, int(seconds * 1000))


class RedisBackend(BaseLockBackend):
    """Leases in Redis; ``OPTIONS["URL"]`` names the server.

    ``POLL_INTERVAL`` (seconds, default 0.5) bounds how long a waiter blocks
    before it looks again; a waiter that stops refreshing for four times
    that is dropped from the queue.
    """

    required_options = ("URL",)
    allowed_options = {"URL", "POLL_INTERVAL"}

    @staticmethod
    def validate_options(options):
        errors = []
        url = options.get("URL")
        if url is not None and (not isinstance(url, str) or "://" not in url):
            errors.append(
                'COORDINATION["LOCKS"]["OPTIONS"]["URL"] must be a Redis URL '
                'such as "redis://127.0.0.1:6379/0".'
            )
        poll = options.get("POLL_INTERVAL", 0.5)
        if isinstance(poll, bool) or not isinstance(poll, (int, float)) or not (
            0 < poll <= 60
        ):
            errors.append(
                'COORDINATION["LOCKS"]["OPTIONS"]["POLL_INTERVAL"] must be a '
                "number of seconds between 0 and 60."
            )
        return errors

    def __init__(self, namespace, options=None):
        super().__init__(namespace, options)
        try:
            import redis
        except ImportError as exc:  # pragma: no cover - depends on extras
            raise ConfigurationError(
                "The redis lock backend needs redis-py: pip install "
                "'nocoplugins[redis]'."
            ) from exc
        self._redis = redis
        self.url = self.options["URL"]
        self.poll_interval = float(self.options.get("POLL_INTERVAL", 0.5))
        self.client = redis.Redis.from_url(self.url, socket_connect_timeout=5)
        # A waiter blocks in BLPOP for up to POLL_INTERVAL, so a reply may
        # take that long: the read timeout is POLL_INTERVAL plus 5 s (redis-py
        # 8 reads with a 5 s timeout by default, which would cut a longer
        # BLPOP off and report the server unreachable). A socket_timeout in
        # the URL is kept, and then a BLPOP lasts at most half of it.
        self._read_timeout = self.poll_interval + 5
        # One connection per thread, kept: cheaper than a pool checkout on
        # every command, and a thread blocked in BLPOP holds only its own.
        self._connections = ThreadConnections(
            self.url, socket_connect_timeout=5, socket_timeout=self._read_timeout)
        url_timeout = self._connections.url_options.get("socket_timeout")
        self._longest_block = self.poll_interval if url_timeout is None else min(
            self.poll_interval, url_timeout / 2)
        self._shas = {name: hashlib.sha1(text.encode()).hexdigest()
                      for name, text in SCRIPTS.items()}
        self._async = weakref.WeakKeyDictionary()
        self._tag = f"{PREFIX}{{{namespace}:"
        self._boot_key = f"coordination:lock-boot:{namespace}"
        # The boot marker last seen; a change means Redis lost its data.
        self._boot = ""
        self._new_boot = secrets.token_hex(8)
        self._registration_ms = _ms(self.poll_interval * 4)
        self._quarantine_until = 0.0
        # Keys that were busy at this process's last attempt.
        self._busy: dict[str, bool] = {}
        self._key_names: dict[str, tuple[tuple[str, ...], str]] = {}
        # Whether the server takes CLIENT REPLY SKIP; asked on first need.
        self._skips: bool | None = None

    @staticmethod
    def _register(client):
        return {name: client.register_script(text)
                for name, text in SCRIPTS.items()}

    # -- commands -------------------------------------------------------------

    def _execute(self, *commands, replies=None):
        """Send ``commands`` on one kept connection and read every reply
        (the last ``replies`` of them, when the others are not sent).

        The client's own command path costs about twice the CPU of a round
        trip on loopback; locks are on the hot path, so they talk to the
        connection directly. Error replies come back as exceptions in the
        list; a broken connection is dropped and the error raised.
        """
        conn = self._connections.get()
        try:
            if _pack_command is not None:
                # hiredis packs straight from the arguments, which are only
                # str, int and float here; redis-py's packer checks each
                # one in Python first, a third of a hand-over's client CPU.
                conn.send_packed_command([b"".join(
                    [_pack_command(command) for command in commands])])
            elif len(commands) == 1:
                conn.send_command(*commands[0])
            else:
                conn.send_packed_command(conn.pack_commands(commands))
            answers = []
            for _ in range(len(commands) if replies is None else replies):
                try:
                    answers.append(conn.read_response())
                except self._redis.ResponseError as exc:
                    answers.append(exc)
            return answers
        except BaseException:
            # Unread replies would confuse the next command: start afresh
            # (the connection reconnects on its next use).
            conn.disconnect()
            raise

    def _script(self, name, keys, args):
        """EVALSHA the named script, loading it if the server lost it."""
        command = ("EVALSHA", self._shas[name], len(keys), *keys, *args)
        (reply,) = self._execute(command)
        if isinstance(reply, self._redis.exceptions.NoScriptError):
            self._execute(("SCRIPT", "LOAD", SCRIPTS[name]))
            (reply,) = self._execute(command)
        if isinstance(reply, Exception):
            raise reply
        return reply

    def close(self):
        self._connections.close()
        self.client.close()
        self.client = self._redis.Redis.from_url(self.url, socket_connect_timeout=5)

    # -- key names ------------------------------------------------------------

    def _names(self, key):
        """(the two key names of ``key``, its wake list prefix), built once
        per key."""
        names = self._key_names.get(key)
        if names is None:
            base = f"{self._tag}{key}}}"
            names = ((f"{base}:h", f"{base}:q"),
                     f"{base}:w:")
            if len(self._key_names) > 10000:
                self._key_names.clear()
            self._key_names[key] = names
        return names

    def _keys(self, key):
        return list(self._names(key)[0])

    def _wake_prefix(self, key):
        return self._names(key)[1]

    def _acquire_args(self, owner_token, ttl, owner, register, push=False):
        """ACQUIRE's ARGV; ``register`` is 0 (do not wait), 1 (join the
        queue) or 2 (refresh this waiter's entry, keeping its place)."""
        return [owner_token, _ms(ttl), self.owner_json(owner),
                register, self._registration_ms,
                self._boot, self._new_boot, 1 if push else 0]

    def _answer(self, reply, key, ttl):
        """The fencing number in an ACQUIRE reply, or None.

        A changed boot marker means Redis lost every lease (a restart without
        persistence): a holder elsewhere may still be inside its critical
        section until its own lease runs out locally, so this process grants
        itself nothing for one ttl.
        """
        fence, boot = (v.decode() for v in reply)
        if fence == "!":
            self._quarantine_until = time.monotonic() + ttl
            logger.warning(
                "Redis lost its lock data (restarted without persistence?); "
                "lock=%s and every other key of app=%s wait %.1fs before being "
                "granted here", key, self.namespace, ttl,
                extra={"action": "lock_redis_reset", "lock": key},
            )
            self._adopt(boot)
            return None
        if boot != self._boot:
            self._adopt(boot)
        return int(fence) if fence else None

    def _adopt(self, boot):
        self._boot = boot
        # A marker this process proposed was taken: propose a fresh one for
        # the next reset, so that it is told apart from this one.
        self._new_boot = secrets.token_hex(8)

    def _quarantined(self):
        return time.monotonic() < self._quarantine_until

    def _slice(self, ttl, deadline):
        # Short against the ttl: a lease handed over during a BLPOP is
        # counted from before the registration that preceded it.
        # BLPOP's 0 means forever, so never go below a millisecond.
        wait = min(self._longest_block, ttl / 4)
        if deadline is not None:
            wait = min(wait, deadline - time.monotonic())
        return max(wait, 0.001)

    # -- sync operations ------------------------------------------------------

    def _all_keys(self, key, owner_token):
        names, wake = self._names(key)
        return [*names, wake + owner_token, self._boot_key]

    def try_acquire_once(self, key, owner_token, ttl, owner):
        if self._quarantined():
            return None
        reply = self._script(
            "acquire", self._all_keys(key, owner_token),
            self._acquire_args(owner_token, ttl, owner, 0))
        return self._answer(reply, key, ttl)

    def acquire(self, key, owner_token, ttl, owner, wait):
        keys = self._all_keys(key, owner_token)
        wake = keys[2]
        deadline = None if wait is None else time.monotonic() + wait
        backoff = 0.05
        registered_at = None
        # Whether a registration was sent: later ones refresh the entry
        # instead of queueing the waiter twice.
        joined = False
        while True:
            try:
                if registered_at is not None:
                    # Woken by a release that handed the lease to us.
                    (got,) = self._execute(
                        ("BLPOP", wake, self._slice(ttl, deadline)))
                    if isinstance(got, Exception):
                        raise got
                    if got is not None:
                        return int(got[1]), registered_at
                    if deadline is not None and time.monotonic() >= deadline:
                        return self._leave(keys, owner_token, registered_at)
                if self._quarantined():
                    if not self._sleep_quarantine(deadline):
                        return None
                    continue
                started = time.monotonic()
                if wait != 0 and not joined and self._busy.get(key):
                    # Busy last time: register and block in one round trip.
                    joined = True
                    fence, registered = self._register_and_wait(
                        key, keys, owner_token, ttl, owner, deadline)
                    if fence is not None:
                        return fence, started
                    registered_at = started if registered else None
                    backoff = 0.05
                    continue
                args = self._acquire_args(owner_token, ttl, owner,
                                          _registering(wait, joined))
                joined = wait != 0
                fence = self._answer(self._script("acquire", keys, args), key, ttl)
                self._note_busy(key, fence is None)
                if fence is not None:
                    return fence, started
                if wait == 0:
                    return None
                if not self._quarantined():
                    registered_at = started
                backoff = 0.05
            except (self._redis.ConnectionError, self._redis.TimeoutError) as exc:
                registered_at = None
                backoff = self._wait_for_server(key, exc, backoff, deadline)
                if backoff is None:
                    return None

    def _note_busy(self, key, busy):
        if busy != self._busy.get(key, False):
            if len(self._busy) > 10000:
                self._busy.clear()
            self._busy[key] = busy

    def _register_and_wait(self, key, keys, owner_token, ttl, owner, deadline):
        """ACQUIRE (pushing a grant to our wake list) and BLPOP, pipelined.

        Returns (fence or None, whether we are registered as a waiter).
        """
        evalsha = ("EVALSHA", self._shas["acquire"], len(keys), *keys,
                   *self._acquire_args(owner_token, ttl, owner, 1, push=True))
        blpop = ("BLPOP", keys[2], self._slice(ttl, deadline))
        if self._skip_replies():
            return self._register_and_wait_quietly(key, keys, owner_token, ttl,
                                                   owner, evalsha, blpop)
        reply, got = self._execute(evalsha, blpop)
        if isinstance(reply, self._redis.exceptions.NoScriptError):
            # Redis restarted and forgot the script; the plain call that
            # follows loads it.
            return None, False
        if isinstance(reply, Exception):
            raise reply
        fence = self._answer(reply, key, ttl)
        if fence is not None:
            # Granted at once (the BLPOP popped the pushed copy).
            self._note_busy(key, False)
            return fence, False
        if isinstance(got, Exception):
            raise got
        if got is not None:
            # Handed over by a release while we were blocked.
            return int(got[1]), True
        return None, not self._quarantined()

    def _register_and_wait_quietly(self, key, keys, owner_token, ttl, owner,
                                   evalsha, blpop):
        """The same with ``CLIENT REPLY SKIP`` before the ACQUIRE.

        The waiter then wakes once, for the BLPOP, instead of a first time
        for the script's "busy" reply: about 15% more hand-overs per second
        with four contending processes here (bench/locks.py). Whatever the
        script has to say goes to the wake list; a reply it could not push
        (an error, a script Redis forgot) shows as a BLPOP that times out,
        after which the plain call below registers again and reports it.
        """
        (got,) = self._execute(_SKIP_REPLY, evalsha, blpop, replies=1)
        if isinstance(got, Exception):
            # CLIENT REPLY SKIP refused since it was asked (an ACL changed,
            # a failover to a proxy), or the BLPOP failed: replies may be
            # left unread, so drop the connection, ask again, and let the
            # caller go the plain way.
            self._connections.get().disconnect()
            self._skips = None
            logger.warning(
                "Waiting for lock=%s without CLIENT REPLY SKIP from now on "
                "(%s)", key, got, extra={"action": "lock_redis_retry", "lock": key},
            )
            return None, False
        if got is not None:
            value = got[1]
            if value[:1] == b"!":
                self._answer([b"!", value[1:]], key, ttl)
                return None, False
            # Granted at once, or handed over while we were blocked.
            return int(value), True
        # Registered by the pipeline above, unless its script failed.
        args = self._acquire_args(owner_token, ttl, owner, 2)
        fence = self._answer(self._script("acquire", keys, args), key, ttl)
        if fence is not None:
            self._note_busy(key, False)
            return fence, False
        return None, not self._quarantined()

    def _skip_replies(self):
        """Whether this server takes ``CLIENT REPLY SKIP`` (asked once)."""
        if self._skips is None:
            replies = self._execute(_SKIP_REPLY, ("ECHO", "skipped"),
                                    ("ECHO", "kept"), replies=1)
            self._skips = replies == [b"kept"]
            if not self._skips:
                # Refused (an ACL, a proxy): the other replies are still due.
                self._connections.get().disconnect()
        return self._skips

    def _sleep_quarantine(self, deadline):
        pause = self._quarantine_until - time.monotonic()
        if deadline is not None:
            if deadline <= time.monotonic():
                return False
            pause = min(pause, deadline - time.monotonic())
        time.sleep(max(pause, 0))
        return True

    def _leave(self, keys, owner_token, registered_at):
        fence = self._script("leave", keys, [owner_token])
        if fence is None or registered_at is None:
            return None
        return int(fence), registered_at

    def _wait_for_server(self, key, exc, backoff, deadline):
        logger.warning(
            "Redis unreachable while acquiring lock=%s (%s); retrying in %.2fs",
            key, exc, backoff, extra={"action": "lock_redis_retry", "lock": key},
        )
        if deadline is not None:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            backoff = min(backoff, remaining)
        time.sleep(backoff)
        return min(backoff * 2, 1.0)

    def release(self, key, owner_token):
        return self._release(key, owner_token)

    def force_release(self, key):
        return self._release(key, "")

    def _release(self, key, owner_token):
        try:
            names, wake = self._names(key)
            done = self._script("release", names, [owner_token, wake])
        except (self._redis.ConnectionError, self._redis.TimeoutError) as exc:
            logger.warning(
                "Redis unreachable releasing lock=%s (%s); the lease ends at "
                "its ttl", key, exc,
                extra={"action": "lock_release_error", "lock": key},
            )
            return False
        return bool(done)

    def extend(self, key, owner_token, ttl):
        return bool(self._script(
            "extend", self._names(key)[0][:1], [owner_token, _ms(ttl)]))

    def held_locks(self) -> list[dict[str, Any]]:
        # SCAN, never KEYS: a big keyspace must not stall the server.
        pattern = _glob_escape(self._tag) + "*}:h"
        seconds, micros = self.client.time()
        server_ms = seconds * 1000 + micros // 1000
        rows = []
        for name in self.client.scan_iter(match=pattern, count=500):
            name = name.decode()
            row = _row(name[len(self._tag):-3], self.client.get(name), server_ms)
            if row is not None:
                rows.append(row)
        return sorted(rows, key=lambda r: r["key"])

    # -- async operations -----------------------------------------------------

    def _aclient(self):
        loop = asyncio.get_running_loop()
        pair = self._async.get(loop)
        if pair is None:
            import redis.asyncio as aredis

            # The URL's own socket_timeout, if any, wins over this one.
            client = aredis.Redis.from_url(self.url, socket_connect_timeout=5,
                                           socket_timeout=self._read_timeout)
            pair = self._async[loop] = (client, self._register(client))
        return pair

    async def aacquire(self, key, owner_token, ttl, owner, wait):
        client, scripts = self._aclient()
        keys = self._all_keys(key, owner_token)
        wake = keys[2]
        deadline = None if wait is None else time.monotonic() + wait
        backoff = 0.05
        registered_at = None
        joined = False
        while True:
            try:
                if registered_at is not None:
                    got = await client.blpop([wake], self._slice(ttl, deadline))
                    if got is not None:
                        return int(got[1]), registered_at
                    if deadline is not None and time.monotonic() >= deadline:
                        fence = await scripts["leave"](keys, [owner_token])
                        return None if fence is None else (int(fence),
                                                           registered_at)
                if self._quarantined():
                    pause = self._quarantine_until - time.monotonic()
                    if deadline is not None:
                        if deadline <= time.monotonic():
                            return None
                        pause = min(pause, deadline - time.monotonic())
                    await asyncio.sleep(max(pause, 0))
                    continue
                started = time.monotonic()
                args = self._acquire_args(owner_token, ttl, owner,
                                          _registering(wait, joined))
                joined = wait != 0
                fence = self._answer(await scripts["acquire"](keys, args), key, ttl)
                if fence is not None:
                    return fence, started
                if wait == 0:
                    return None
                if not self._quarantined():
                    registered_at = started
                backoff = 0.05
            except (self._redis.ConnectionError, self._redis.TimeoutError) as exc:
                logger.warning(
                    "Redis unreachable while acquiring lock=%s (%s); retrying",
                    key, exc, extra={"action": "lock_redis_retry", "lock": key},
                )
                registered_at = None
                if deadline is not None and time.monotonic() >= deadline:
                    return None
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 1.0)

    async def arelease(self, key, owner_token):
        client, scripts = self._aclient()
        try:
            done = await scripts["release"](
                self._keys(key), [owner_token, self._wake_prefix(key)])
        except (self._redis.ConnectionError, self._redis.TimeoutError) as exc:
            logger.warning(
                "Redis unreachable releasing lock=%s (%s); the lease ends at "
                "its ttl", key, exc,
                extra={"action": "lock_release_error", "lock": key},
            )
            return False
        return bool(done)

    async def aextend(self, key, owner_token, ttl):
        client, scripts = self._aclient()
        return bool(await scripts["extend"](
            self._keys(key)[:1], [owner_token, _ms(ttl)]))


def _registering(wait, joined):
    """ACQUIRE's register argument: 0 for a single try, 2 for a waiter that
    sent a registration before (it keeps its place), 1 for a new one."""
    if wait == 0:
        return 0
    return 2 if joined else 1


def _glob_escape(text):
    return "".join("\\" + c if c in "*?[]\\" else c for c in text)


def _row(key, lease, server_ms):
    """The admin's row for a lease string, or None when it is not held."""
    if lease is None:
        return None
    fence, expires, acquired, _boot, token, _deadline, _ttl, owner = (
        lease.decode().split("|", 7) + [""] * 8)[:8]
    left_ms = int(expires or 0) - server_ms
    if not token or left_ms <= 0:
        return None
    try:
        owner = loads(owner or "{}")
    except ValueError:
        owner = {}
    now = datetime.now(timezone.utc)
    return {
        "key": key,
        "token": int(fence),
        "owner": owner,
        "acquired_at": datetime.fromtimestamp(int(acquired) / 1000, timezone.utc),
        "expires_at": datetime.fromtimestamp(now.timestamp() + left_ms / 1000,
                                             timezone.utc),
    }
