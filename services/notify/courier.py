"""Delivering the outbox: one pass, or a background notifier that never holds up its caller.

A pass collects new events into the outbox, then posts the pending deliveries in the order
of their events, one attempt each. A failed attempt is recorded with its backoff (doubling,
capped, at most ``max_attempts``) and ends the pass: the receiver is probably down, and the
next pass tries the same delivery again once its backoff is over. A pass never sleeps, so
the backoff is kept in the store, and survives a restart, instead of in a waiting thread.

``notify_in_background`` is what the nightly flow calls: a daemon thread that makes a pass
every ``poll_s`` (sooner when a backoff ends, or when kicked) while the night goes on. The
night never waits for it, and an undelivered notification stays in the outbox for the next
pass, here, in the rollout watcher, or in `flywheel notify`.
"""

from __future__ import annotations

import atexit
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

import httpx

from services.config import Settings
from services.notify import outbox
from services.notify.webhook import DeliveryFailed, post, shaped
from services.store.models import utcnow

log = logging.getLogger(__name__)

Clock = Callable[[], datetime]


@dataclass(frozen=True)
class Pass:
    """What one pass did."""

    collected: int = 0
    delivered: int = 0
    failed: int = 0  # attempts that failed (each retried later or given up)


def deliver_pending(settings: Settings, *, now: Clock = utcnow) -> Pass:
    """One pass: collect new events, post what is due. Off (an empty pass) with no webhook."""
    if not settings.notify.enabled:
        return Pass()
    collected = outbox.collect(settings, now=now())
    url = settings.notify.webhook_url.get_secret_value()
    delivered = 0
    with httpx.Client(timeout=settings.notify.timeout_s) as http:
        while (owed := outbox.claim_due(settings, now=now())) is not None:
            try:
                post(http, url, shaped(owed.body, settings.notify.format), key=owed.key)
            except DeliveryFailed as exc:
                outbox.attempt_failed(settings, owed, str(exc), now=now())
                log.warning(
                    "notification %s not delivered (attempt %d): %s", owed.key, owed.attempts, exc
                )
                return Pass(collected, delivered, failed=1)
            outbox.delivered(settings, owed, now=now())
            delivered += 1
    return Pass(collected, delivered)


class Notifier:
    """A daemon thread making delivery passes until it is stopped."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self.run, name="flywheel-notifier", daemon=True)

    def start(self) -> Notifier:
        """Run in a daemon thread; returns at once."""
        self._thread.start()
        return self

    def kick(self) -> None:
        """Make a pass now rather than at the next poll."""
        self._wake.set()

    def stop(self, grace_s: float) -> None:
        """Make a last pass, waiting at most ``grace_s`` for it (daemon: exit does not wait)."""
        self._stopping.set()
        self._wake.set()
        self._thread.join(grace_s)

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    def run(self) -> None:
        """Make passes until stopped (`flywheel notify --follow` runs this in the foreground)."""
        while True:
            try:
                deliver_pending(self.settings)
            except Exception:  # a store that is briefly unreachable: try again next poll
                log.exception("notification pass failed")
            if self._stopping.is_set():
                return
            self._wake.wait(self._pause())
            self._wake.clear()

    def _pause(self) -> float:
        try:
            due = outbox.next_due(self.settings)
        except Exception:
            due = None
        until_due = (due - utcnow()).total_seconds() if due is not None else None
        poll = self.settings.notify.poll_s
        return poll if until_due is None else max(0.0, min(poll, until_due))


_notifiers: dict[tuple[str, str], Notifier] = {}
_lock = threading.Lock()


def notify_in_background(settings: Settings) -> Notifier | None:
    """This process's notifier for the store and webhook of ``settings``, started (or kicked,
    when already running); None when notifications are off. Returns at once.

    At interpreter exit it gets one last pass, bounded by a request's timeout, so the last
    events of a night that ends the process still go out when the receiver is up.
    """
    if not settings.notify.enabled:
        return None
    key = (settings.db_url, settings.notify.webhook_url.get_secret_value())
    with _lock:
        notifier = _notifiers.get(key)
        if notifier is not None and notifier.running:
            notifier.kick()
            return notifier
        notifier = _notifiers[key] = Notifier(settings).start()
    atexit.register(notifier.stop, settings.notify.timeout_s)
    return notifier
