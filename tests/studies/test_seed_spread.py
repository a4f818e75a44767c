"""detbench seed-spread: the seeded grid copy and the stored runs (studies/seed_spread.py)."""

import json

import pytest

from detbench.benchmark import spread
from detbench.benchmark.results import ResultsStore
from detbench.config import load_sweep
from detbench.config.grid import expand_grid
from detbench.errors import ConfigError
from detbench.studies import seed_spread

GRID = "configs/speed_accuracy.pbtxt"


def test_seeded_grid_trains_every_model_with_the_seed(tmp_path):
    path = seed_spread.seeded_grid(GRID, 7, str(tmp_path / "sub" / "grid.pbtxt"))
    cells = expand_grid(load_sweep(path), path).cells
    original = expand_grid(load_sweep(GRID), GRID).cells
    assert [c.label for c in cells] == [c.label for c in original]
    assert {c.train_pipeline.train_config.seed for c in cells} == {7}
    # a new seed is a new training: no trained model is shared with the original grid
    assert not {c.train_key for c in cells} & {c.train_key for c in original}


def test_add_results_stores_the_rows_beside_the_grid(tmp_path, monkeypatch):
    grid = tmp_path / "g.pbtxt"
    grid.write_text(open(GRID).read().replace("speed_accuracy/", f"{_configs()}/speed_accuracy/"))
    store = ResultsStore(str(tmp_path / "run"))
    store.add(
        {"cell_id": "a", "label": "A", "mAP": 0.2, "latency_ms": 9.0, "error": "", "env": {"x": 1}}
    )
    store.add({"cell_id": "b", "label": "B", "error": "OOM"})
    assert seed_spread.main(["--grid", str(grid), "--add-results", str(tmp_path / "run")]) == 0
    data = json.load(open(tmp_path / "g.spread.json"))
    assert data["train_steps"] == 300 and len(data["runs"]) == 1
    assert data["runs"][0]["rows"] == [
        {"cell_id": "a", "label": "A", "latency_ms": 9.0, "error": "", "mAP": 0.2}
    ]
    # a second call adds a run; the spread of A's mAP is then known
    seed_spread.main(["--grid", str(grid), "--add-results", str(tmp_path / "run")])
    found, _ = spread.load(str(grid), 300)
    assert len(found.runs) == 2 and found.sd("A", "mAP") == 0.0
    with pytest.raises(ConfigError, match="--runs"):
        seed_spread.main(["--grid", str(grid)])
    with pytest.raises(ConfigError, match="no measured rows"):
        seed_spread.main(["--grid", str(grid), "--add-results", str(tmp_path / "empty")])


def _configs():
    import os

    return os.path.abspath("configs")
