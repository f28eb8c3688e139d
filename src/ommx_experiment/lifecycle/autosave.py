"""When a Run close also publishes an OMMX-format ``draft`` checkpoint: ``AutosavePolicy`` (§3.4).

The policy value type (public) and the session-side schedule that applies it.
The journal (:mod:`ommx_experiment.format.journal`) makes every Run close durable
whatever the policy; the policy only decides how often the full OMMX-format
checkpoint is rewritten.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

from ..errors import InvalidInputError

_EVERY_RUN_CLOSE = "every_run_close"
_EVERY_N_RUNS = "every_n_runs"
_MIN_INTERVAL = "min_interval"
_DISABLED = "disabled"
_U32_MAX = 2**32 - 1


@dataclass(frozen=True, slots=True)
class AutosavePolicy:
    """When a Run close also publishes an OMMX-format ``draft`` checkpoint (§3.4).

    Construct with the static methods. The journal makes every Run close durable
    whatever the policy; the policy only decides how often the full OMMX-format
    checkpoint (which OMMX 3 itself can list and restore) is rewritten, an O(N)
    operation. A new, forked or restored session of this library starts with
    ``AutosavePolicy.min_interval(60.0)``: the first Run close publishes a draft
    at once, later ones at most every 60 s. ``every_run_close()`` reproduces
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


