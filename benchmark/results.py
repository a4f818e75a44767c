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
import shutil
import sys
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


# A temporary file of ``atomic_write``: this prefix + the writer's pid + "-".
TEMP_PREFIX = ".tmp-detbench-"
# The folders of a sweep's output its own writers write into (besides OUT itself,
# OUT/models/<train key>/ and the exporter's staging folders in OUT/exports/<cell>/).
SWEEP_SUBFOLDERS = ("plots", "logs")
EXPORT_STAGING_PREFIXES = (".export-", ".old-")


def atomic_write(path, data, mode="w"):
    """Write ``data`` to ``path`` via a temp file in the same folder + rename."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(
        dir=folder, prefix=f"{TEMP_PREFIX}{os.getpid()}-", suffix=os.path.basename(path)
    )
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


def _writer_gone(name):
    """True for a temporary file of ``atomic_write`` whose writing process has ended."""
    try:
        pid = int(name[len(TEMP_PREFIX) :].split("-")[0])
    except ValueError:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


def _own_stale_files(folder):
    """This user's temporary files of dead ``atomic_write`` calls directly in ``folder``."""
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return []
    return [
        e.path
        for e in entries
        if e.name.startswith(TEMP_PREFIX)
        and e.is_file(follow_symlinks=False)
        and e.stat(follow_symlinks=False).st_uid == os.getuid()
        and _writer_gone(e.name)
    ]


def _subfolders(folder):
    try:
        return [e.path for e in os.scandir(folder) if e.is_dir(follow_symlinks=False)]
    except OSError:
        return []


def remove_partial_writes(folder):
    """Remove what a killed sweep's writers left in its output ``folder`` (call it
    holding the folder): ``atomic_write`` temporary files (our name, this user's, their
    writer gone) in the folder and its own subfolders, and the exporter's staging
    folders in ``exports/<cell>/``. Nothing else is touched, and no other folder is
    entered (a user's file or a nested sweep's stays)."""
    removed = []
    folders = [folder] + [os.path.join(folder, name) for name in SWEEP_SUBFOLDERS]
    for path in folders + _subfolders(os.path.join(folder, "models")):
        for stale in _own_stale_files(path):
            os.unlink(stale)
            removed.append(stale)
    for cell in _subfolders(os.path.join(folder, "exports")):
        for e in os.scandir(cell):
            if e.name.startswith(EXPORT_STAGING_PREFIXES) and e.is_dir(follow_symlinks=False):
                shutil.rmtree(e.path, ignore_errors=True)
                removed.append(e.path)
    return removed


def row_problem(row):
    """Why a results row cannot stand for its cell ('' when it can): a row holds its
    cell's measurements (a speed-only one, its latency) or the error that stopped it."""
    if not isinstance(row["cell_id"], str) or not row["cell_id"]:
        return f"cell_id {row['cell_id']!r} is not a cell id (a non-empty string)"
    if not row.get("error") and row.get("latency_ms") is None:
        return f"cell {row['cell_id']} has neither metrics (latency_ms) nor an error"
    return ""


class ResultsStore:
    """Rows keyed by ``cell_id``; a cell recorded once is never recomputed."""

    def __init__(self, out_dir):
        self.out_dir = out_dir
        self.path = os.path.join(out_dir, "results.jsonl")
        self.rows = self._read()

    def _read(self):
        if not os.path.lexists(self.path):
            return []
        if not os.path.isfile(self.path):
            raise DetbenchError(
                f"{self.path}: is not a regular file (a folder or special file); move it "
                "aside and the sweep measures every cell again"
            )
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
                problem = row_problem(row)
                if problem:
                    print(
                        f"warning: {self.path}:{number}: {problem}; the row is ignored "
                        "(its cell is measured again)",
                        file=sys.stderr,
                    )
                    continue
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
