"""Atomic file writes: write to a temporary file in the same folder, then rename.

Outputs get the permissions the umask gives any new file (``tempfile.mkstemp``
would make them 0600). A temporary never outlives its block: an exception
removes it, and so does SIGTERM (the process then terminates as it would have).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

# Temporaries being written right now, removed by the SIGTERM handler below.
_LIVE: set[Path] = set()


def _remove_live_temporaries_and_terminate(signum: int, frame: Any) -> None:
    for tmp in list(_LIVE):
        tmp.unlink(missing_ok=True)
    signal.signal(signum, signal.SIG_DFL)
    os.kill(os.getpid(), signum)


@contextlib.contextmanager
def _sigterm_removes_temporaries() -> Iterator[None]:
    # Only the main thread may install handlers, and a handler someone else installed
    # (the runner's, which raises) already leads to the cleanup of the ``finally`` below.
    install = (
        threading.current_thread() is threading.main_thread() and signal.getsignal(signal.SIGTERM) == signal.SIG_DFL
    )
    if install:
        signal.signal(signal.SIGTERM, _remove_live_temporaries_and_terminate)
    try:
        yield
    finally:
        if install and not _LIVE:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)


class Terminated(SystemExit):
    """Raised in place of dying on SIGTERM inside :func:`sigterm_raises`."""


@contextlib.contextmanager
def sigterm_raises() -> Iterator[None]:
    """Within the block, SIGTERM raises :class:`Terminated` (exit status 143), so cleanup runs as after an error."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: Any) -> None:
        raise Terminated(128 + signum)

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; it replaces ``path`` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # The temporary name keeps the real suffix, which some writers (papermill, savefig) inspect.
    tmp_path = path.parent / f".{path.stem}.{uuid.uuid4().hex[:10]}.part{path.suffix}"
    with _sigterm_removes_temporaries():
        # O_EXCL: a fresh file; mode 0o666 filtered by the umask, as open() would create it.
        _LIVE.add(tmp_path)
        try:
            os.close(os.open(tmp_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
            yield tmp_path
            os.replace(tmp_path, path)
        finally:
            _LIVE.discard(tmp_path)
            tmp_path.unlink(missing_ok=True)


def write_text(path: str | Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_json(path: str | Path, data: Any) -> None:
    """Write ``data`` as indented JSON to ``path`` atomically."""
    write_text(path, json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")
