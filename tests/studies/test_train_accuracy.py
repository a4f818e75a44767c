"""studies/train_accuracy.py: mAP against training minutes, a final table and the target."""

import os
import re
import subprocess
import sys

from tests.studies import REPO, TINY_SSD


def _run(tmp_path, *extra):
    cache = [
        f"{r}.synthetic_shapes.cache_dir={tmp_path / 'sets'}"
        for r in ("train_input_reader", "eval_input_reader")
    ]
    cmd = [
        sys.executable,
        os.path.join(REPO, "studies", "train_accuracy.py"),
        "--models",
        TINY_SSD,
        "--chunk_steps",
        "2",
        "--out",
        str(tmp_path / "models"),
        "--set",
        "train_config.num_steps=3",
        "--set",
        cache[0],
        "--set",
        cache[1],
        *extra,
    ]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=600)


def test_curve_table_and_target(tmp_path):
    proc = _run(tmp_path, "--target", "0.0")
    assert proc.returncode == 0, proc.stderr[-2000:]
    # evaluated at the chunk boundary (step 2) and at the end (step 3)
    curve = re.findall(
        r"^  step +(\d+) +([\d.]+) min +mAP@\.5 ([\d.]+) +mAP ([\d.]+)", proc.stdout, re.M
    )
    assert [c[0] for c in curve] == ["2", "3"], proc.stdout
    assert float(curve[0][1]) <= float(curve[1][1])
    for _, _, ap50, ap in curve:
        assert 0.0 <= float(ap) <= float(ap50) <= 1.0
    row = re.search(
        r"^\| tiny_ssd \| 3 \| ([\d.]+) \| ([\d.]+) \| ([\d.]+) \| "
        r"([\d.]+) \| PASS",
        proc.stdout,
        re.M,
    )
    assert row, proc.stdout
    assert row.group(2) == curve[-1][2]  # the table reports the last evaluation
    # the final weights were checkpointed where --out says
    assert os.path.exists(tmp_path / "models" / "tiny_ssd" / "ckpt-3.index")


def test_missed_target_exits_1_and_unknown_model_is_one_line(tmp_path):
    proc = _run(tmp_path, "--target", "1.01")
    assert proc.returncode == 1, proc.stderr[-2000:]
    assert "| MISS (mAP@.5 >= 1.01 in 15 min) |" in proc.stdout
    bad = subprocess.run(
        [
            sys.executable,
            os.path.join(REPO, "studies", "train_accuracy.py"),
            "--models",
            "no_such_model",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert bad.returncode == 2
    assert "no_such_model" in bad.stderr and "neither a known model" in bad.stderr
