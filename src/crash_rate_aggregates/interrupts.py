"""Sections a Ctrl-C or a SIGTERM must not cut: the import of a native extension.

`fill` takes Ctrl-C and SIGTERM as a KeyboardInterrupt, which Python raises wherever the main
thread is. Inside the module init of a pybind11 extension (DataSketches, imported lazily when
the first sketch is made) that exception is C++'s std::terminate: the process aborted with
status -6, not the clean stop with status 130 (1 of 400 SIGTERMed fills did). In a `held()`
section the command's handlers note the interrupt instead (`hold`), and it is raised when the
outermost section ends.

Blocking the signals (`pthread_sigmask`) would not do: it holds them for one thread only, and
the queues' feeder threads would take them, the handler still running in the main thread.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager


class _State:
    depth = 0  # how many held() sections the main thread is in
    pending = False  # an interrupt came inside one


@contextmanager
def held() -> Iterator[None]:
    """A section an interrupt does not cut: one that comes meanwhile is raised at its end."""
    _State.depth += 1
    try:
        yield
    finally:
        _State.depth -= 1
        if _State.depth == 0 and _State.pending:  # also when the section raised: the
            _State.pending = False  # interrupt is what the user asked for, never lost
            raise KeyboardInterrupt


def hold() -> bool:
    """For a signal handler: True when a section is held (the interrupt will come at its end),
    False when the handler must raise it now."""
    if _State.depth == 0:
        return False
    _State.pending = True
    return True
