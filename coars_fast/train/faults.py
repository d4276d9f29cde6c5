"""Named kill points for the fault-injection tests: with COARS_FAST_KILL_AT=name:n set, the process
kills itself (SIGKILL, no cleanup, like a power cut or the OOM killer) the n-th time it reaches the
point `name`. Unset (always, outside the tests) a point costs one dictionary lookup."""

from __future__ import annotations

import os
import signal
from collections import Counter

_reached: Counter = Counter()


def point(name: str) -> None:
    spec = os.environ.get("COARS_FAST_KILL_AT")
    if not spec:
        return
    target, _, count = spec.partition(":")
    if target == name:
        _reached[name] += 1
        if _reached[name] == int(count or 1):
            os.kill(os.getpid(), signal.SIGKILL)
