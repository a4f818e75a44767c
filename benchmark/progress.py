"""What the sweep shows of the trainings and pretrainings it runs in child processes.

A child writes a small JSON progress file (``train.trainer.report_progress``:
step, num_steps, loss, seconds, eta_s); ``ChildProgress`` polls the files of
the jobs it was given and shows, on the phase's tqdm bar, the most recently
updated one: which model, which step, its loss and the time left.
"""

import json
import os
import threading


def read_progress(path):
    """The progress dict in ``path``, or None (missing, or being replaced)."""
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def describe(label, progress):
    """'SSD MobileNet v2: step 120/400, loss 0.812, 2 min 10 s left'."""
    text = f"{label}: step {progress['step']}/{progress['num_steps']}"
    if progress.get("loss") is not None:
        text += f", loss {progress['loss']:.3f}"
    if progress.get("accuracy") is not None:
        text += f", accuracy {progress['accuracy']:.2f}"
    eta = progress.get("eta_s")
    if eta is not None:
        minutes, seconds = divmod(int(round(eta)), 60)
        text += f", {minutes} min {seconds:02d} s left" if minutes else f", {seconds} s left"
    return text


class ChildProgress:
    """``with ChildProgress(bar, {path: label}):`` shows the latest job's progress on bar."""

    def __init__(self, bar, files, interval_s=1.0):
        self.bar, self.files, self.interval_s = bar, dict(files), interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _latest(self):
        best, best_time = None, -1.0
        for path, label in self.files.items():
            try:
                mtime = os.path.getmtime(path)
            except OSError:
                continue
            if mtime > best_time:
                best, best_time = (path, label), mtime
        return best

    def _run(self):
        while not self._stop.wait(self.interval_s):
            latest = self._latest()
            if latest is None:
                continue
            progress = read_progress(latest[0])
            if progress:
                self.bar.set_postfix_str(describe(latest[1], progress))

    def __enter__(self):
        for path in self.files:  # a previous run's file would show stale steps
            if os.path.exists(path):
                os.remove(path)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(timeout=5)
        return False
