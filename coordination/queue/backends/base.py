"""The contract every event queue backend implements."""

import numbers

# Options every backend accepts, with their defaults (seconds, counts).
COMMON_OPTIONS = {
    # First retry after about this long; each retry doubles it, with jitter.
    "RETRY_DELAY": 0.5,
    # No retry waits longer than this.
    "RETRY_DELAY_MAX": 60.0,
    # A running event's lease; renewed while it runs. If the runner dies,
    # another instance takes the event over once the lease has expired.
    "LEASE": 30.0,
    # How often running events are checked for a cancel (and leases renewed,
    # at least three times per LEASE).
    "CHECK_INTERVAL": 1.0,
    # How often housekeeping runs: lost events, undispatched rows.
    "SWEEP_INTERVAL": 5.0,
    # Tries beyond max_retries granted to events whose runner was lost.
    "MAX_LOST": 3,
}


class BaseQueueBackend:
    """How instances learn that an event is ready, and who runs it.

    The :class:`~coordination.queue.EventQueue` writes the rows, claims them
    and runs handlers; a backend is built once per process as
    ``Backend(queue, options)`` and provides:

    - ``start()`` / ``stop()``: begin consuming; stop and wait for running
      events (both idempotent, ``start`` again after ``stop`` resumes);
    - ``dispatch(event)``: called after the publishing transaction commits,
      and after a failed attempt is rescheduled, with the ``Event`` row;
    - ``sends_at_once(delay)``: True when ``dispatch`` hands an event due in
      ``delay`` seconds to a broker (the row is then stamped as dispatched;
      rows that are not, are found again by ``housekeeping``);
    - ``housekeeping()``: called every ``SWEEP_INTERVAL`` seconds on every
      started instance (release delayed events, resend lost ones).

    To run an event, a backend reserves a slot on the channel's
    ``Subscription``, claims the row with ``store.claim`` and calls
    ``queue.execute(event, subscription)``. Events claimed ahead of a free
    worker are registered with ``queue.hold(event)`` (their leases are then
    renewed and a cancel reaches them); one given back unrun goes through
    ``store.unclaim`` and ``queue.release``.
    """

    required_options: tuple = ()
    allowed_options: set | None = set(COMMON_OPTIONS)
    defaults: dict = COMMON_OPTIONS
    # Options that must be positive numbers; counts must also be ints.
    number_options = ("RETRY_DELAY", "RETRY_DELAY_MAX", "LEASE",
                      "CHECK_INTERVAL", "SWEEP_INTERVAL")
    count_options = ("MAX_LOST",)

    def __init__(self, queue, options):
        self.queue = queue
        self.options = {**self.defaults, **(options or {})}

    @classmethod
    def validate_options(cls, options):
        errors = []
        prefix = 'COORDINATION["EVENT_QUEUE"]["OPTIONS"]'
        for key in cls.number_options:
            value = options.get(key)
            if key in options and (
                isinstance(value, bool) or not isinstance(value, numbers.Real)
                or value <= 0
            ):
                errors.append(f"{prefix}[{key!r}] is {value!r}; it must be a "
                              "positive number of seconds.")
        for key in cls.count_options:
            value = options.get(key)
            if key in options and (
                isinstance(value, bool) or not isinstance(value, int) or value < 0
            ):
                errors.append(f"{prefix}[{key!r}] is {value!r}; it must be an "
                              "int >= 0.")
        return errors

    def start(self) -> None:
        pass

    def stop(self) -> None:
        pass

    def dispatch(self, event) -> None:
        raise NotImplementedError

    def sends_at_once(self, delay: float) -> bool:
        return False

    def housekeeping(self) -> None:
        pass
