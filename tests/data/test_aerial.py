"""`detbench data aerial-trees` on a hand-made wheel-like folder (no network):
the photos' boxes land in the right tiles, no evaluation photo in training."""

import json
import os

import numpy as np
import pytest
from PIL import Image

from detbench.cli import main as cli_main
from detbench.data import aerial, user_data
from detbench.errors import run_cli
from tests.data.test_voc_yolo import voc_xml

# photo -> (width, height, boxes x, y, w, h); tile 100
PHOTOS = {
    aerial.TRAIN[0]: (250, 230, [(10, 10, 20, 20), (90, 40, 30, 20), (230, 210, 20, 20)]),
    aerial.EVAL[0]: (150, 120, [(5, 5, 10, 10), (95, 50, 20, 10)]),
    aerial.EVAL[1]: (100, 100, [(1, 2, 3, 4)]),
    aerial.EVAL[2]: (100, 100, [(50, 50, 10, 10), (0, 0, 100, 100)]),
}


@pytest.fixture
def wheel(tmp_path):
    folder = tmp_path / "wheel" / "deepforest" / "data"
    folder.mkdir(parents=True)
    for name, (w, h, boxes) in PHOTOS.items():
        pixels = np.random.default_rng(w).integers(0, 255, (h, w, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / f"{name}.png")
        objects = [
            ("Tree" if k % 2 else "Dead", x, y, bw, bh, 0) for k, (x, y, bw, bh) in enumerate(boxes)
        ]
        (folder / f"{name}.xml").write_text(voc_xml(name, w, h, objects))
    return str(tmp_path / "wheel")


def test_tiles(wheel, tmp_path, capsys):
    root = str(tmp_path / "out")
    argv = ["data", "aerial-trees", "--wheel", wheel, "--tile", "100", "--root", root]
    assert run_cli(cli_main, argv) == 0
    assert "train: " in capsys.readouterr().out
    with open(os.path.join(root, "tiles-100", "train.json")) as f:
        train = json.load(f)
    with open(os.path.join(root, "tiles-100", "eval.json")) as f:
        evaluation = json.load(f)
    assert {im["photo"] for im in train["images"]} == set(aerial.TRAIN)
    assert {im["photo"] for im in evaluation["images"]} == set(aerial.EVAL)
    # 250x230 in 100 px tiles: x at 0, 100, 150; y at 0, 100, 130
    assert len(train["images"]) == 9 and len(evaluation["images"]) == 4 + 1 + 1
    boxes = {}
    for a in train["annotations"]:
        im = train["images"][a["image_id"] - 1]
        boxes.setdefault(im["file_name"], []).append((a["bbox"], a["truncated"]))
    name = aerial.TRAIN[0]
    # the box at x 90..120 is 1/3 inside the tile at x=0: dropped there
    assert boxes[f"{name}_x0_y0.png"] == [([10, 10, 20, 20], 0)]
    # the box at x 90..120 is 2/3 inside the tile at x=100: clipped, kept, truncated
    assert ([0, 40, 20, 20], 1) in boxes[f"{name}_x100_y0.png"]
    assert ([80, 80, 20, 20], 0) in boxes[f"{name}_x150_y130.png"]
    # the set reads back through --data, images found beside the json
    data = user_data.open_data(os.path.join(root, "tiles-100", "train.json"))
    assert data.format == "coco" and data.num_images == 9
    assert [v["name"] for v in data.category_index.values()] == ["Tree"]


def test_not_a_wheel_is_one_line(tmp_path, capsys):
    bad = tmp_path / "x.whl"
    bad.write_bytes(b"nope")
    argv = ["data", "aerial-trees", "--wheel", str(bad), "--root", str(tmp_path / "o")]
    assert run_cli(cli_main, argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "not a wheel" in err
