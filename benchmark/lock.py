"""Exclusive use of a folder by one process: ``flock`` on a lock file in it.

The lock file records who holds the folder (pid, host, start time) so a second
process can say who it waits for. The lock itself is the kernel's ``flock`` on
the open file, not the file's existence: it goes with its holder's last file
descriptor, so a holder that died (SIGKILL, a crash, a power cut on a local
disk) never blocks the next one, and a stale file is simply taken over.
"""

import contextlib
import datetime
import fcntl
import json
import os
import socket
import time

from detbench.errors import DetbenchError

LOCK_NAME = ".detbench.lock"


class FolderInUse(DetbenchError):
    """Another live process holds the folder."""


def _describe(path):
    """'pid 123 on host h since 2026-01-01 12:00:00 UTC' from a lock file (or 'unknown')."""
    try:
        with open(path, encoding="utf-8") as f:
            info = json.load(f)
        since = datetime.datetime.fromtimestamp(float(info["started"]), datetime.UTC)
        return (
            f"pid {info['pid']} on host {info['host']} since "
            f"{since:%Y-%m-%d %H:%M:%S} UTC ({info.get('what', 'a process')})"
        )
    except (OSError, ValueError, KeyError, TypeError):
        return "another process (its lock file is not readable yet)"


class FolderLock:
    """Hold ``folder`` (created if missing) for this process; ``release()`` or the
    process's end gives it back. Raises FolderInUse naming the holder."""

    def __init__(self, folder, what="detbench sweep"):
        from detbench.paths import check_output_folder

        check_output_folder(folder, "output folder")
        os.makedirs(folder, exist_ok=True)
        self.path = os.path.join(folder, LOCK_NAME)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise FolderInUse(
                f"{folder}: in use by {_describe(self.path)}; wait for it to "
                "finish or choose another output folder"
            ) from None
        info = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "started": time.time(),
            "what": what,
        }
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(info).encode(), 0)
        self._fd = fd

    def release(self):
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.ftruncate(self._fd, 0)
            os.close(self._fd)  # closing drops the flock
            self._fd = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.release()

    def __del__(self):
        if getattr(self, "_fd", None) is not None:
            self.release()


@contextlib.contextmanager
def locked_file(path):
    """Exclusive ``flock`` on ``path`` (a side file) for a read-modify-write; blocks."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)
