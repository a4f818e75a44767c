"""The sweep's results files, written so a kill at any moment leaves them valid.

``results.jsonl`` is the source of truth: one JSON object per finished cell
(metrics, environment, full config). Each append rewrites the file through a
temporary file and ``os.replace`` (atomic on POSIX), so a reader never sees a
half-written row. ``results.csv`` and ``results.md`` are derived from it.
"""
import json
import os
import tempfile


def atomic_write(path, data, mode="w"):
    """Write ``data`` to ``path`` via a temp file in the same folder + rename."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-", suffix=os.path.basename(path))
    try:
        with os.fdopen(fd, mode) as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


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
            for line in f:
                line = line.strip()
                if line:
                    rows.append(json.loads(line))
        return rows

    def done_ids(self, include_failed=False):
        return {r["cell_id"] for r in self.rows if include_failed or not r.get("error")}

    def add(self, row):
        """Record ``row`` (replacing an earlier failed row of the same cell)."""
        self.rows = [r for r in self.rows if r["cell_id"] != row["cell_id"]] + [row]
        text = "".join(json.dumps(r, sort_keys=True) + "\n" for r in self.rows)
        atomic_write(self.path, text)

    def __len__(self):
        return len(self.rows)
