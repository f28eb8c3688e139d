"""When a Run close also publishes an OMMX-format ``draft`` checkpoint: ``AutosavePolicy`` (§3.4).

The policy value type (public) and the session-side schedule that applies it.
The journal (:mod:`ommx_experiment.format.journal`) makes every Run close durable
whatever the policy; the policy only decides how often the full OMMX-format
checkpoint is rewritten.
"""

from __future__ import annotations

import atexit
import logging
import math
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from ..errors import InvalidInputError

_EVERY_RUN_CLOSE = "every_run_close"
_EVERY_N_RUNS = "every_n_runs"
_MIN_INTERVAL = "min_interval"
_DISABLED = "disabled"
_U32_MAX = 2**32 - 1

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class AutosavePolicy:
    """When a Run close also publishes an OMMX-format ``draft`` checkpoint (§3.4).

    Construct with the static methods. The journal makes every Run close durable
    whatever the policy; the policy only decides how often the full OMMX-format
    checkpoint (which OMMX 3 itself can list and restore) is rewritten, an O(N)
    operation. A new, forked or restored session of this library starts with
    ``AutosavePolicy.min_interval(60.0)``: the first Run close has a draft published
    0.2 s later (dropped by a commit before that; spec/experiment.md), later ones at
    most every 60 s. A policy chosen with ``Experiment.set_autosave_policy`` publishes
    at the close. ``every_run_close()`` reproduces
    OMMX 3's default exactly (a draft at every close).
    """

    kind: str
    value: float = 0.0

    @staticmethod
    def every_run_close() -> AutosavePolicy:
        """A draft checkpoint after every Run close (OMMX 3's default)."""
        return AutosavePolicy(_EVERY_RUN_CLOSE)

    @staticmethod
    def every_n_runs(runs: int) -> AutosavePolicy:
        """A draft when ``runs`` more runs closed since the last success or policy change."""
        if isinstance(runs, bool) or not isinstance(runs, int):
            raise InvalidInputError(f"runs must be an integer, got {type(runs).__name__}")
        if runs <= 0:
            raise InvalidInputError("runs must be greater than zero")
        if runs > _U32_MAX:
            raise InvalidInputError(f"runs must be at most {_U32_MAX}")
        return AutosavePolicy(_EVERY_N_RUNS, runs)

    @staticmethod
    def min_interval(seconds: float) -> AutosavePolicy:
        """The first close attempts at once; later ones only ``seconds`` after the last attempt."""
        try:
            value = float(seconds)
        except (TypeError, ValueError):
            raise InvalidInputError("seconds must be finite and non-negative") from None
        if not math.isfinite(value) or value < 0:
            raise InvalidInputError("seconds must be finite and non-negative")
        return AutosavePolicy(_MIN_INTERVAL, value)

    @staticmethod
    def disabled() -> AutosavePolicy:
        """No Run-close drafts (failed/interrupted exits still publish a checkpoint)."""
        return AutosavePolicy(_DISABLED)

    def __repr__(self) -> str:
        if self.kind == _EVERY_N_RUNS:
            return f"AutosavePolicy.every_n_runs({int(self.value)})"
        if self.kind == _MIN_INTERVAL:
            return f"AutosavePolicy.min_interval({self.value!r})"
        return f"AutosavePolicy.{self.kind}()"


DEFAULT_POLICY = AutosavePolicy.min_interval(60.0)


class AutosaveSchedule:
    """The session-side state of a policy: baseline and last attempt (never persisted)."""

    def __init__(self, policy: AutosavePolicy, n_closed: int) -> None:
        self.policy = policy
        self.baseline = n_closed
        self.last_attempt: float | None = None

    def due(self, n_closed: int, now: float | None = None) -> bool:
        kind = self.policy.kind
        if kind == _EVERY_RUN_CLOSE:
            return True
        if kind == _EVERY_N_RUNS:
            return n_closed - self.baseline >= self.policy.value
        if kind == _MIN_INTERVAL:
            now = time.monotonic() if now is None else now
            return self.last_attempt is None or now - self.last_attempt >= self.policy.value
        return False

    def attempted(self, n_closed: int, success: bool) -> None:
        self.last_attempt = time.monotonic()
        if success:
            self.baseline = n_closed




#: How long after the first Run close of a session under the default policy its first
#: draft is published (``Session`` defers it to :data:`LATER`; a commit before drops it).
DEFERRED_DRAFT_SECONDS = 0.2


class LaterCalls:
    """A tiny timer queue: one daemon thread per process runs each call ``delay`` seconds later.

    One entry per key (scheduling a key again replaces its entry). A call gets
    ``background=True`` from the thread, ``False`` when :meth:`run_all` runs it in the
    caller's thread: at interpreter exit (``atexit``, before the sessions' finalizers
    release their writers) and from tests. ``delay=math.inf`` keeps an entry for
    :meth:`run_all` only. The entries hold their calls strongly, so a session with a
    deferred draft lives until the draft ran or was cancelled.
    """

    def __init__(self) -> None:
        self._reset()

    def _reset(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._entries: dict[object, tuple[float, Callable[[bool], None]]] = {}
        self._thread: threading.Thread | None = None
        self._running: list[object] = []  # keys whose calls the thread took and has not finished

    def schedule(self, key: object, delay: float, call: Callable[[bool], None]) -> None:
        with self._cond:
            self._entries[key] = (time.monotonic() + delay, call)
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name="oxe-later-calls", daemon=True)
                self._thread.start()
                atexit.register(self.run_all)
            self._cond.notify()

    def cancel(self, key: object) -> None:
        with self._cond:
            self._entries.pop(key, None)

    def pending(self, key: object) -> bool:
        """An entry for ``key`` waits, or the thread is running (or about to run) its call."""
        with self._cond:
            return key in self._entries or key in self._running

    def run_all(self) -> None:
        """Run every entry now in this thread, after a call the thread is running has returned."""
        with self._cond:
            while self._running:
                self._cond.wait()
            calls = [call for _, call in self._entries.values()]
            self._entries.clear()
        for call in calls:
            _call(call, False)

    def _loop(self) -> None:
        while True:
            with self._cond:
                now = time.monotonic()
                due = [key for key, (at, _) in self._entries.items() if at <= now]
                if not due:
                    first = min((at for at, _ in self._entries.values()), default=math.inf)
                    self._cond.wait(None if first == math.inf else first - now)
                    continue
                calls = [self._entries.pop(key)[1] for key in due]
                self._running = due
            try:
                for call in calls:
                    _call(call, True)
            finally:
                with self._cond:
                    self._running = []
                    self._cond.notify_all()


def _call(call: Callable[[bool], None], background: bool) -> None:
    try:
        call(background)
    except Exception as exc:  # a deferred draft is best effort, like every autosave
        log.warning("Deferred call %r failed: %s", call, exc)


#: This process's :class:`LaterCalls` (a child of ``os.fork`` starts with an empty one).
LATER = LaterCalls()
os.register_at_fork(after_in_child=LATER._reset)
