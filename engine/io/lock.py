"""One writer per output directory: an OS-level lock held for the whole run.

Two runs writing one output would delete each other's partial shards and commit each
other's files under the same names. :class:`OutputLock` takes an exclusive, non-blocking
``flock`` on ``OUT/.lock`` before anything in the directory is read or changed, and holds
it until the run ends. The kernel releases it when the process dies, however it dies
(``kill -9`` included), so a crash never leaves a stale lock behind; the lock file itself
stays, and records who holds it (pid, host, command, start time) for the message a second
run shows.

``flock`` locks are per open file description: a second :class:`OutputLock` on the same
directory in the same process is refused too, as a second Engine on one output must be.
On file systems without ``flock`` (some network mounts) the lock is not available and the
run says so instead of going on unprotected.
"""

from __future__ import annotations

import contextlib
import errno
import os
import socket
import sys
import time
from pathlib import Path
from typing import Self

from ..errors import OutputLocked, ShardError

__all__ = ("LOCK_NAME", "OutputLock")

LOCK_NAME = ".lock"


def _holder_text() -> str:
    program = os.path.basename(sys.argv[0]) if sys.argv else "python"
    if program in ("__main__.py", "synth-engine", "-c", ""):
        program = "synth-engine" if program != "-c" else "python -c"
    command = " ".join([program, *sys.argv[1:]])
    started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime())
    return f"pid {os.getpid()} on {socket.gethostname()}, started {started}: {command[:200]}"


class OutputLock:
    """An exclusive lock on an output directory (an async/sync context manager).

    Args:
        out_dir: the output directory (created if missing).
    """

    def __init__(self, out_dir: Path) -> None:
        self.path = Path(out_dir) / LOCK_NAME
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        """Whether this object holds the lock."""
        return self._fd is not None

    def acquire(self) -> None:
        """Take the lock now, or fail at once.

        Raises:
            OutputLocked: another run (or another Engine in this process) holds it.
            ShardError: the directory or lock file cannot be created, or locks are not
                supported there.
        """
        if self._fd is not None:
            return
        import fcntl

        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as exc:
            raise ShardError(
                f"cannot create the output's lock file ({exc.strerror or exc})",
                path=str(self.path),
                hint="check the output path and its permissions",
            ) from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            holder = ""
            with contextlib.suppress(OSError):
                holder = os.pread(fd, 1024, 0).decode("utf-8", "replace").strip()
            os.close(fd)
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise OutputLocked(
                    "another run is writing this output"
                    + (f" ({holder})" if holder else " (holder unknown)"),
                    path=str(self.path.parent),
                    holder=holder,
                ) from exc
            raise ShardError(
                f"cannot lock the output directory ({exc.strerror or exc}); file locks "
                "may not be supported on this file system",
                path=str(self.path.parent),
                hint="write output to a local disk",
            ) from exc
        with contextlib.suppress(OSError):
            data = (_holder_text() + "\n").encode("utf-8", "replace")
            os.ftruncate(fd, 0)
            os.pwrite(fd, data, 0)
        self._fd = fd

    def release(self) -> None:
        """Give the lock up (idempotent). The lock file stays, naming its last holder."""
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)  # closing the descriptor releases the flock

    def __enter__(self) -> Self:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()
