"""`detbench sweep --data`: every cell of a four-meta-architecture grid reads the
user's set, with num_classes from it; `--set` reaches every cell (a dry run)."""

import os

import pytest

from detbench.benchmark import sweep
from detbench.config import load_sweep
from detbench.config.grid import expand_grid
from detbench.config.validate import meta_arch_config
from detbench.data import coco
from detbench.data.user_data import pipeline_adjuster
from detbench.errors import run_cli
from tests.data.test_voc_yolo import write_voc

GRID = os.path.join(
    os.path.dirname(__file__), "..", "..", "configs", "examples", "aerial_trees.pbtxt"
)


@pytest.fixture(scope="module")
def voc_set(tmp_path_factory):
    root = tmp_path_factory.mktemp("own")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DETBENCH_CACHE_DIR", str(root / "cache"))
        yield write_voc(str(root / "voc"))


def test_data_sets_every_num_classes_and_reader(voc_set):
    voc = voc_set
    args = sweep.parse_args(["--grid", GRID, "--data", voc, "--set", "train_config.batch_size=2"])
    adjust, note = pipeline_adjuster(args, tuple(args.overrides))
    assert "voc, 3 images, 2 classes: cat, dog" in note and "1 of its 3 images" in note
    grid = expand_grid(load_sweep(GRID), GRID, adjust=adjust)
    arches = set()
    train_files, eval_files = set(), set()
    for cell in grid.cells:
        for p in (cell.train_pipeline, cell.test_pipeline):
            name, arch = meta_arch_config(p)
            arches.add(name)
            assert arch.num_classes == 2, cell.label
            assert p.train_config.batch_size == 2
            train_files.add(p.train_input_reader.coco_json.annotations_file)
            eval_files.add(p.eval_input_reader.coco_json.annotations_file)
    assert arches == {"ssd", "faster_rcnn", "rfcn", "cascade_rcnn"}
    assert len(train_files) == 1 and len(eval_files) == 1
    (train,), (held,) = train_files, eval_files
    image_dir = os.path.join(voc, "JPEGImages")
    ids = [{e.path for e in coco.load_coco(f, image_dir).examples} for f in (train, held)]
    assert len(ids[0]) == 2 and len(ids[1]) == 1 and not ids[0] & ids[1]


def test_dry_run_with_eval_data(voc_set, tmp_path, capsys):
    voc = voc_set
    argv = [
        "--grid",
        GRID,
        "--data",
        voc + "#train",
        "--eval-data",
        voc,
        "--dry-run",
        "--out",
        str(tmp_path / "o"),
    ]
    assert run_cli(sweep.main, argv) == 0
    out = capsys.readouterr().out
    assert "evaluation: " + voc + " (voc, 3 images)" in out and "15 cells" in out
    # a missing evaluation set: one line, exit 2
    bad = ["--grid", GRID, "--data", voc, "--eval-data", str(tmp_path / "nope"), "--dry-run"]
    assert run_cli(sweep.main, bad) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "nope: not found" in err
