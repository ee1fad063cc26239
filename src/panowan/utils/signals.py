"""Graceful stop on SIGTERM / SIGINT: `StopRequest`, a context manager that turns the first signal into a
flag the program polls at a safe point (an optimiser step, a room) and lets a second one kill at once.

```python
with StopRequest() as stop:
    for room in rooms:
        do(room)  # never interrupted half-way: the handler only sets a flag
        if stop.requested:
            print(f"received {stop.signal_name}: stopping")
            break
```

Conventions:
- First signal: `requested` becomes True, `signal_name` / `signum` tell which one; nothing else happens.
  Python runs the handler between bytecodes of the main thread, so a signal that arrives while a long C call
  runs (a collective, a big kernel) is seen when that call returns.
- Second signal (of either kind): the handler of the first one puts the operating system's default action
  back (`SIG_DFL`), so the second one terminates the process at once, even inside a C call, with no Python
  cleanup: the shell sees 128 + signum (143 for SIGTERM, 130 for SIGINT), `subprocess` a return code of
  -signum. Files stay whole (every writer is atomic: `panowan.utils.atomic`); temporary files of writes in
  flight may be left behind (hidden `.NAME.*` files, `.tmp-checkpoint-*` folders), and readers ignore them.
  Two signals that both arrive during one C call count as one (CPython collapses pending signals).
- On exit the previous handlers are restored (also after a signal), so nesting and tests stay clean.
- Handlers can only be installed from the main thread; elsewhere `StopRequest` warns and stays inert.
"""

from __future__ import annotations

import logging
import signal
import threading
import types
from collections.abc import Iterable
from typing import Any

log = logging.getLogger(__name__)

DEFAULT_SIGNALS = (signal.SIGTERM, signal.SIGINT)


def exit_code(signum: int) -> int:
    """The shell's exit status of a process ended by signal `signum` (128 + signum)."""
    return 128 + int(signum)


class StopRequest:
    """Context manager: installs the handlers on enter, restores the previous ones on exit (module docstring).

    `requested` (bool), `signum` (int | None) and `signal_name` ("SIGTERM", "SIGINT" or None) describe the
    first signal received."""

    def __init__(self, signals: Iterable[int] = DEFAULT_SIGNALS) -> None:
        self.signals = tuple(signal.Signals(s) for s in signals)
        self.signum: int | None = None
        self._previous: dict[int, Any] = {}
        self.installed = False

    @property
    def requested(self) -> bool:
        return self.signum is not None

    @property
    def signal_name(self) -> str | None:
        return None if self.signum is None else signal.Signals(self.signum).name

    def request(self, signum: int) -> None:
        """Record a stop request as if `signum` had arrived (tests, or a program's own stop condition)."""
        if self.signum is None:
            self.signum = int(signum)

    def _handle(self, signum: int, frame: types.FrameType | None) -> None:
        first = self.signum is None
        self.request(signum)
        if first:
            # The OS default from now on: a second signal ends the process at once (module docstring).
            for s in self.signals:
                signal.signal(s, signal.SIG_DFL)
            log.warning("received %s: stopping at the next safe point (send it again to abort at once)",
                        signal.Signals(signum).name)  # fmt: skip

    def __enter__(self) -> StopRequest:
        if threading.current_thread() is not threading.main_thread():
            log.warning("signal handlers can only be installed in the main thread: SIGTERM / SIGINT keep "
                        "their default action in this run")  # fmt: skip
            return self
        for s in self.signals:
            self._previous[s] = signal.signal(s, self._handle)
        self.installed = True
        return self

    def __exit__(self, *exc: object) -> None:
        if self.installed:
            for s, previous in self._previous.items():
                # None: a handler not installed from Python; the default is the closest we can restore.
                signal.signal(s, signal.SIG_DFL if previous is None else previous)
            self._previous.clear()
            self.installed = False


__all__ = ["DEFAULT_SIGNALS", "StopRequest", "exit_code"]
