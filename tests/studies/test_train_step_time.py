"""studies/train_step_time.py: a row per resolution, each from a fresh process."""

import os
import re
import subprocess
import sys

from tests.studies import REPO, TINY_SSD


def test_step_time_table(tmp_path):
    cmd = [
        sys.executable,
        os.path.join(REPO, "studies", "train_step_time.py"),
        "--pipeline",
        TINY_SSD,
        "--resolutions",
        "64,96",
        "--runs",
        "2",
        "--set",
        f"train_input_reader.synthetic_shapes.cache_dir={tmp_path}",
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "batch 2, float32, XLA off" in proc.stdout
    rows = re.findall(
        r"^\| (\d+) \| ([\d.]+) \| ([\d.]+) \| ([\d.]+) \| ([\d.]+) \|$", proc.stdout, re.M
    )
    assert [r[0] for r in rows] == ["64", "96"], proc.stdout
    for _, step, images_per_s, first, _input in rows:
        step, images_per_s = float(step), float(images_per_s)
        assert step > 0 and float(first) > step  # tracing is in the first call only
        assert abs(images_per_s - 2 / step) <= 0.05 * images_per_s + 0.1  # batch 2 per step
