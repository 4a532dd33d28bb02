"""One writer per run directory: an exclusive lock held while a process writes to a run.

The lock is an advisory ``flock`` on ``RUN_DIR/.fairbits.lock`` (``msvcrt.locking`` on
Windows). The operating system drops it when its process ends, however it ends, so a
lock left behind by a killed run is stale by construction: the next run takes it. The
file itself stays; it records who holds the lock (pid, host, start time) for the
message a second writer gets. Network file systems that do not support ``flock``
give no protection.
"""

from __future__ import annotations

import json
import os
import socket
from datetime import datetime, timezone
from pathlib import Path

from fairbits.errors import FairbitsError

LOCK_NAME = ".fairbits.lock"


class RunLocked(FairbitsError):
    """Another process holds the run directory's lock."""


def _try_lock(fd: int) -> bool:
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        import msvcrt

        try:
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
            return True
        except OSError:
            return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False


def _unlock(fd: int) -> None:
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        import msvcrt

        os.lseek(fd, 0, os.SEEK_SET)
        msvcrt.locking(fd, msvcrt.LK_UNLCK, 1)
        return
    fcntl.flock(fd, fcntl.LOCK_UN)


class RunLock:
    """``with RunLock(run_dir): ...`` holds the run's lock for the block.

    Raises:
        RunLocked: another live process holds it (the message names its pid and host).
    """

    def __init__(self, run_dir: str | Path):
        self.path = Path(run_dir) / LOCK_NAME
        self._fd: int | None = None

    def acquire(self) -> "RunLock":
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        if not _try_lock(fd):
            holder = self.holder()
            os.close(fd)
            who = (f"pid {holder.get('pid')} on {holder.get('host')}, since {holder.get('since')}"
                   if holder else "another process")
            raise RunLocked(f"another fairbits process is writing to {self.path.parent} ({who}); "
                            "wait for it to finish or stop it, then run this command again")
        os.ftruncate(fd, 0)
        os.write(fd, json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                                 "since": datetime.now(timezone.utc).isoformat(timespec="seconds")}).encode())
        self._fd = fd
        return self

    def holder(self) -> dict:
        """Who took the lock last (``pid``, ``host``, ``since``); ``{}`` if unknown."""
        try:
            return json.loads(self.path.read_text() or "{}")
        except (OSError, ValueError):
            return {}

    def release(self) -> None:
        if self._fd is not None:
            _unlock(self._fd)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()
