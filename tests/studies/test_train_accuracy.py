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


def test_plot_has_legend_styles_footer_and_its_points(tmp_path, monkeypatch):
    """The curves' PNG: one colour per model, solid from pretrained weights and dashed from
    scratch, each curve starting at (0, 0), the footer; the points in a JSON beside it."""
    import json

    from detbench.benchmark import plots
    from detbench.studies import train_accuracy

    def m(ap50):
        return {"mAP@.50": ap50, "mAP": ap50 / 2}

    curves = {
        ("SSD", "pretrained"): [(100, 60.0, m(0.3)), (200, 120.0, m(0.5))],
        ("SSD", "scratch"): [(100, 60.0, m(0.1))],
        ("Faster R-CNN", "pretrained"): [(100, 90.0, m(0.4))],
    }
    figures = []
    real_close = plots.plt.close
    monkeypatch.setattr(plots.plt, "close", lambda fig=None: figures.append(fig))
    path = str(tmp_path / "c.png")
    train_accuracy.plot_curves(curves, path, "measured here\ndetbench train-accuracy ...")
    train_accuracy._write_points(curves, str(tmp_path / "c.json"), "measured here")
    (fig,) = figures
    lines = fig.axes[0].get_lines()
    assert [l.get_label() for l in lines] == [
        "SSD: pretrained (200 steps)",
        "SSD: scratch (100 steps)",
        "Faster R-CNN: pretrained (100 steps)",
    ]
    assert [l.get_linestyle() for l in lines] == ["-", "--", "-"]
    assert lines[0].get_color() == lines[1].get_color() != lines[2].get_color()
    assert list(lines[0].get_xdata()) == [0.0, 1.0, 2.0]  # minutes
    assert list(lines[0].get_ydata()) == [0.0, 0.3, 0.5]
    assert "measured here\ndetbench train-accuracy ..." in [t.get_text() for t in fig.texts]
    real_close(fig)
    assert open(path, "rb").read(8) == b"\x89PNG\r\n\x1a\n"
    saved = json.load(open(tmp_path / "c.json"))
    assert saved["footer"] == "measured here"
    assert [
        (p["model"], p["start"], p["step"], p["metrics"]["mAP@.50"]) for p in saved["points"]
    ] == [
        ("SSD", "pretrained", 100, 0.3),
        ("SSD", "pretrained", 200, 0.5),
        ("SSD", "scratch", 100, 0.1),
        ("Faster R-CNN", "pretrained", 100, 0.4),
    ]
