"""A channel's handler and the limits it runs under on this instance."""

import threading
from dataclasses import dataclass, field
from typing import Callable


@dataclass
class Subscription:
    channel: str
    process: Callable
    idle: Callable[[], bool] | None = None
    concurrency: int | None = 1
    running: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def free(self) -> int | None:
        """Slots left on this instance (None: unlimited)."""
        if self.concurrency is None:
            return None
        return max(self.concurrency - self.running, 0)

    def accepts_work(self) -> bool:
        return self.idle is None or bool(self.idle())

    def reserve(self, count=1) -> int:
        """Take up to ``count`` slots; return how many were taken."""
        with self.lock:
            free = self.free()
            taken = count if free is None else min(count, free)
            self.running += taken
            return taken

    def release(self, count=1) -> None:
        with self.lock:
            self.running = max(self.running - count, 0)
