"""``python -m detbench.infer`` draws detections; bad images fail with one line."""

import os
import subprocess
import sys

import numpy as np
from PIL import Image

from tests.conftest import REPO_ROOT

CONFIG = os.path.join(REPO_ROOT, "configs", "ssd_mobilenet_v2_300.pbtxt")
SMALL = [
    "--set",
    "model.ssd.image_resizer={fixed_shape {height: 96 width: 96}}",
    "--set",
    "model.ssd.feature_extractor.depth_multiplier=0.25",
]


def run(args):
    return subprocess.run(
        [sys.executable, "-m", "detbench.infer"] + args,
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
    )


def test_infer_draws_on_the_image(tmp_path):
    rng = np.random.default_rng(0)
    img = rng.integers(0, 255, size=(120, 160, 3), dtype=np.uint8)
    Image.fromarray(img).save(tmp_path / "in.png")
    out = tmp_path / "out.png"
    res = run(
        [
            "--pipeline",
            CONFIG,
            "--image",
            str(tmp_path / "in.png"),
            "--out",
            str(out),
            "--score_threshold",
            "0.0",
        ]
        + SMALL
    )
    assert res.returncode == 0, res.stderr
    drawn = np.asarray(Image.open(out).convert("RGB"))
    assert drawn.shape == img.shape
    n = int(res.stdout.split()[0])
    assert n > 0  # score threshold 0: every detection is drawn
    assert (drawn != img).any()  # and boxes changed pixels


def test_infer_bad_image_is_one_line(tmp_path):
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"not an image at all")
    res = run(["--pipeline", CONFIG, "--image", str(bad), "--out", str(tmp_path / "o.png")] + SMALL)
    assert res.returncode == 2
    lines = [l for l in res.stderr.splitlines() if l.startswith("error:")]
    assert len(lines) == 1 and str(bad) in lines[0] and "not a readable image" in lines[0]
    assert "Traceback" not in res.stderr
