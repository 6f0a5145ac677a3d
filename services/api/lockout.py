"""Lockout after repeated bad credentials: a client that guesses is slowed to a halt.

A key is what a credential came from: the client's address (``ip:203.0.113.9``) and, where
the request claims one, the account (``robot:robot-00``). After ``failures`` bad credentials
from a key within ``window_s``, the key is locked for ``lockout_s``: its requests are
answered 429 with Retry-After and the credential is not even checked, so a lockout cannot
be used to test guesses either.

The counts live in this process's memory: right for one API process (``flywheel serve``),
and they start afresh when it restarts. Several API processes behind a balancer each count
on their own, so a guesser gets up to ``failures`` tries per process and window.

Every credential check goes the same way (users' bearer tokens, the login form, robots):

    keys = lockout_keys(request, robot=robot_id)     # robot= only where one is claimed
    lockout.check(keys)                               # raises LockedOut -> 429
    ... verify the credential ...
    lockout.record_failure(keys)  or  lockout.record_success(keys)
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from fastapi import Request

from services.config import ApiSettings

# Keys remembered at most: beyond it, keys with nothing recent are forgotten first, so a
# client inventing robot ids cannot grow this without bound.
MAX_KEYS = 100_000


class LockedOut(Exception):
    """Too many bad credentials from this client or for this account: wait and retry."""

    def __init__(self, retry_after_s: float) -> None:
        self.retry_after_s = max(1, math.ceil(retry_after_s))
        super().__init__(
            f"too many bad credentials: locked out, retry after {self.retry_after_s} s"
        )


@dataclass
class _Record:
    failures: deque[float] = field(default_factory=deque)
    locked_until: float = 0.0


class Lockout:
    """Counts bad credentials per key; thread-safe (the API checks tokens in worker threads)."""

    def __init__(
        self,
        *,
        failures: int,
        window_s: float,
        lockout_s: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.failures = failures
        self.window_s = window_s
        self.lockout_s = lockout_s
        self.clock = clock
        self._records: dict[str, _Record] = {}
        self._lock = threading.Lock()

    @classmethod
    def from_settings(cls, settings: ApiSettings) -> Lockout:
        return cls(
            failures=settings.lockout_failures,
            window_s=settings.lockout_window_s,
            lockout_s=settings.lockout_s,
        )

    def check(self, keys: Iterable[str]) -> None:
        """Raises LockedOut if any of the keys is locked now."""
        now = self.clock()
        with self._lock:
            until = max((r.locked_until for k in keys if (r := self._records.get(k))), default=0)
        if until > now:
            raise LockedOut(until - now)

    def record_failure(self, keys: Iterable[str]) -> None:
        now = self.clock()
        with self._lock:
            for key in keys:
                record = self._records.setdefault(key, _Record())
                record.failures.append(now)
                while record.failures and record.failures[0] <= now - self.window_s:
                    record.failures.popleft()
                if len(record.failures) >= self.failures:
                    record.locked_until = now + self.lockout_s
                    record.failures.clear()
            if len(self._records) > MAX_KEYS:
                self._forget_stale(now)

    def record_success(self, keys: Iterable[str]) -> None:
        """A good credential clears the count of its keys (not a lockout in force)."""
        with self._lock:
            for key in keys:
                record = self._records.get(key)
                if record is not None and record.locked_until <= self.clock():
                    del self._records[key]

    def _forget_stale(self, now: float) -> None:
        stale = [
            key
            for key, r in self._records.items()
            if r.locked_until <= now and (not r.failures or r.failures[-1] <= now - self.window_s)
        ]
        for key in stale:
            del self._records[key]


def lockout_keys(request: Request, *, robot: str | None = None) -> list[str]:
    """The keys a request's credential is counted under: its client's address, and the
    robot it claims to be, if any."""
    keys = [f"ip:{request.client.host if request.client else 'unknown'}"]
    if robot is not None:
        keys.append(f"robot:{robot}")
    return keys


def lockout_of(request: Request) -> Lockout:
    """The app's lockout (one per API process, made by create_app)."""
    return request.app.state.lockout
