"""Issue 27, the sweep's side: labels drawn as plain text, labels telling cells apart,
malformed results rows, a full disk while summarizing, an all-failed sweep's status."""

import errno
import json
import os

import matplotlib
import pytest

from detbench.benchmark import plots, results, sweep, tables
from detbench.benchmark.results import ResultsStore
from detbench.errors import DetbenchError
from tests.benchmark.results_fixture import make_rows


def test_labels_with_dollar_signs_are_drawn_as_plain_text(tmp_path):
    rows = make_rows()
    for r in rows:  # '$\undefined$' is a mathtext error when parsed
        r["feature_extractor"] += r" $\undefined{x}$"
        r["label"] += r" [$\undefined$]"
        r["env"] = {"cpu_model": r"$\undefined$ cpu"}
    df = tables.to_frame(rows)
    paths = plots.write_plots(df, str(tmp_path))
    assert set(paths) == set(plots.PLOTS) and all(os.path.getsize(p) for p in paths.values())
    assert matplotlib.rcParams["text.parse_math"]  # the setting is the plots' only


def _write_rows(out, rows):
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "results.jsonl"), "w") as f:
        f.writelines(json.dumps(r) + "\n" for r in rows)


def test_a_row_without_metrics_is_named_and_measured_again(tmp_path, capsys):
    good = {"cell_id": "good", "error": "", "latency_ms": 3.0}
    _write_rows(str(tmp_path), [good, {"cell_id": "empty", "error": ""}])
    store = ResultsStore(str(tmp_path))
    err = capsys.readouterr().err
    assert f"{tmp_path}/results.jsonl:2: cell empty has neither metrics" in err
    assert err.count("\n") == 1 and store.done_ids() == {"good"}
    assert [r["cell_id"] for r in store.rows] == ["good"]


def test_a_row_whose_cell_id_is_not_a_string_is_named_and_ignored(tmp_path, capsys):
    _write_rows(str(tmp_path), [{"cell_id": 7, "error": "", "latency_ms": 3.0}])
    store = ResultsStore(str(tmp_path))
    assert "results.jsonl:1: cell_id 7 is not a cell id" in capsys.readouterr().err
    assert store.rows == [] and store.done_ids() == set()
    store.add({"cell_id": "c", "error": "", "latency_ms": 1.0})  # the file is whole again
    assert [r["cell_id"] for r in ResultsStore(str(tmp_path)).rows] == ["c"]


def test_results_jsonl_that_is_a_folder_is_one_line(tmp_path):
    os.makedirs(tmp_path / "results.jsonl")
    with pytest.raises(DetbenchError) as e:
        ResultsStore(str(tmp_path))
    assert str(e.value) == (
        f"{tmp_path}/results.jsonl: is not a regular file (a folder or special file); "
        "move it aside and the sweep measures every cell again"
    )


def test_parts_differing_only_in_train_steps_get_labels_and_filter_values(tmp_path):
    from detbench.config import parse_text
    from detbench.config.grid import expand_grid
    from detbench.protos import sweep_pb2
    from tests.config.test_grid import CONFIGS

    text = f"""
base {{ pipeline: "{CONFIGS}/ssd_mobilenet_v1_300.pbtxt" }}
pretraining {{ enabled: false }}
grid {{ name: "short" train_steps: 10 axis {{ name: "resolution" values: "300" }} }}
grid {{ name: "long" train_steps: 40 axis {{ name: "resolution" values: "300" }} }}
"""
    grid = expand_grid(parse_text(text, sweep_pb2.Sweep()), None, check_registry=False)
    assert [c.label for c in grid.cells] == [
        "SSD MobileNet v1 300px 10 steps",
        "SSD MobileNet v1 300px 40 steps",
    ]
    [long] = sweep.select(grid.cells, sweep.parse_filters(["train_steps=40"]))
    assert long is grid.cells[1]
    # a grid whose cells differ in more than steps keeps its labels as they were
    one = expand_grid(
        parse_text(
            text.split("grid {")[0] + 'axis { name: "resolution" values: "300" }', sweep_pb2.Sweep()
        ),
        None,
        check_registry=False,
    )
    assert [c.label for c in one.cells] == ["SSD MobileNet v1 300px"]


def test_a_sweep_in_which_every_cell_failed_exits_non_zero(tmp_path, capsys):
    from types import SimpleNamespace

    store = ResultsStore(str(tmp_path))
    store.add({"cell_id": "a", "error": "boom"})
    store.add({"cell_id": "b", "error": "boom"})
    todo = [SimpleNamespace(cell_id="a"), SimpleNamespace(cell_id="b")]
    assert sweep._exit_status(store, todo) == 1
    assert "every cell of this run failed (2)" in capsys.readouterr().err
    store.add({"cell_id": "b", "error": "", "latency_ms": 2.0})
    assert sweep._exit_status(store, todo) == 0
    assert sweep._exit_status(store, []) == 0  # nothing to run: nothing failed


def test_a_full_disk_while_summarizing_is_one_line_and_a_rerun_finishes(tmp_path, monkeypatch):
    from types import SimpleNamespace

    out = str(tmp_path)
    rows = make_rows()
    _write_rows(out, rows)
    store = ResultsStore(out)
    grid = SimpleNamespace(cells=[SimpleNamespace(cell_id=r["cell_id"]) for r in rows], skipped={})
    settings = {"num_runs": 20, "num_warmup": 3}
    os.makedirs(tmp_path / "plots")
    (tmp_path / "plots" / "frontier.png").write_bytes(b"an earlier plot")
    (tmp_path / "results.md").write_text("earlier table")
    real_fsync = os.fsync

    def full(fd):  # every write past the first (results.csv) finds the disk full
        if os.path.exists(tmp_path / "results.csv"):
            raise OSError(errno.ENOSPC, "No space left on device")
        real_fsync(fd)

    monkeypatch.setattr(results.os, "fsync", full)
    with pytest.raises(DetbenchError) as e:
        sweep.summarize(store, grid, out, settings)
    assert str(e.value).startswith(
        f"{out}: could not write results.csv / results.md: No space left on device; every "
        "finished row is kept in results.jsonl"
    )
    assert (tmp_path / "results.md").read_text() == "earlier table"  # nothing lost
    assert (tmp_path / "plots" / "frontier.png").read_bytes() == b"an earlier plot"
    assert not [n for n in os.listdir(out) if n.startswith(results.TEMP_PREFIX)]
    assert len(ResultsStore(out).rows) == len(rows)
    monkeypatch.setattr(results.os, "fsync", real_fsync)  # space freed: the rerun finishes
    sweep.summarize(store, grid, out, settings)
    assert (tmp_path / "report.html").exists() and "earlier" not in (
        tmp_path / "results.md"
    ).read_text()
