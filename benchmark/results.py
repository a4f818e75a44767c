"""The sweep's results files, written so a kill at any moment leaves them valid.

``results.jsonl`` is the source of truth: one JSON object per finished cell
(metrics, environment, full config). Each append rewrites the file through a
temporary file and ``os.replace`` (atomic on POSIX), so a reader never sees a
half-written row. An append re-reads the file under an exclusive lock and
merges into what it holds, so no writer drops a row another one wrote.
``results.csv`` and ``results.md`` are derived from it.
"""

import json
import os
import tempfile

from detbench.benchmark.lock import locked_file
from detbench.errors import DetbenchError


def _file_mode(path):
    """The mode a new file gets (umask applied), or the existing file's mode."""
    try:
        return os.stat(path).st_mode & 0o777
    except FileNotFoundError:
        umask = os.umask(0)
        os.umask(umask)
        return 0o666 & ~umask


def atomic_write(path, data, mode="w"):
    """Write ``data`` to ``path`` via a temp file in the same folder + rename."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-", suffix=os.path.basename(path))
    try:
        os.chmod(tmp, _file_mode(path))  # mkstemp makes it 0600: keep results readable
        with os.fdopen(fd, mode) as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def remove_partial_writes(folder):
    """Remove what ``atomic_write`` left behind when its process was killed mid-write
    (``.tmp-*`` files in ``folder`` and its subfolders); call it holding the folder."""
    removed = []
    for root, _, files in os.walk(folder):
        for name in files:
            if name.startswith(".tmp-"):
                os.unlink(os.path.join(root, name))
                removed.append(os.path.join(root, name))
    return removed


class ResultsStore:
    """Rows keyed by ``cell_id``; a cell recorded once is never recomputed."""

    def __init__(self, out_dir):
        self.out_dir = out_dir
        self.path = os.path.join(out_dir, "results.jsonl")
        self.rows = self._read()

    def _read(self):
        if not os.path.exists(self.path):
            return []
        rows = []
        with open(self.path, encoding="utf-8") as f:
            for number, line in enumerate(f, 1):
                line = line.strip()
                if not line:
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as e:
                    raise DetbenchError(
                        f"{self.path}:{number}: not a JSON row ({e.msg}); "
                        "fix or remove that line to resume"
                    ) from None
                if not isinstance(row, dict) or "cell_id" not in row:
                    raise DetbenchError(f"{self.path}:{number}: a row needs a cell_id")
                rows.append(row)
        return rows

    def done_ids(self, speed_only=True):
        """Cells not to measure again: rows without an error; a speed-only row lacks
        accuracy, so unless ``speed_only`` that cell is measured again."""
        return {
            r["cell_id"]
            for r in self.rows
            if not r.get("error") and (speed_only or not r.get("speed_only"))
        }

    def add(self, row):
        """Record ``row`` (replacing an earlier row of the same cell), merged into the
        file as it is now: rows another writer added meanwhile are kept."""
        lock = os.path.join(self.out_dir, ".results.jsonl.lock")
        os.makedirs(self.out_dir, exist_ok=True)
        with locked_file(lock):
            current = self._read()
            self.rows = [r for r in current if r["cell_id"] != row["cell_id"]] + [row]
            text = "".join(json.dumps(r, sort_keys=True) + "\n" for r in self.rows)
            atomic_write(self.path, text)

    def __len__(self):
        return len(self.rows)
