"""``--executor ray``: cells as Ray tasks on a local Ray instance the sweep starts itself."""

import json
import os

import pytest

from tests.benchmark.test_sweep import check_outputs, expected_cells, run_sweep, write_sweep

try:
    import ray  # noqa: F401

    RAY_ERROR = None
except ImportError as e:  # pragma: no cover - depends on the environment
    RAY_ERROR = f"Ray is not installed (pip install -e .[ray]): {e}"


@pytest.mark.slow
@pytest.mark.skipif(RAY_ERROR is not None, reason=RAY_ERROR or "")
def test_ray_executor_runs_cells_and_records_a_failed_one(tmp_path):
    """No --address: the sweep starts a local Ray instance (this machine's CPUs), sends
    each cell to it as a task (one cell process per task) and gathers the rows. A cell
    whose model cannot be built comes back as a row with its error."""
    grid = write_sweep(
        tmp_path,
        [
            'axis { name: "resolution" values: "64" }',
            'axis { field: "eval_input_reader.synthetic_shapes.num_images" '
            'values: "4" values: "0" scope: TEST }',
        ],
    )
    out = tmp_path / "out"
    # A relative --out: Ray workers run elsewhere, so the sweep must hand them absolute paths.
    rel_out = os.path.relpath(
        out, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    )
    proc = run_sweep(
        "--grid", grid, "--out", rel_out, "--speed-only", "--executor", "ray", timeout=500
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr[-3000:]
    assert "2 cells, 0 already done, 2 to run" in proc.stdout
    assert "1 cells done, 0 skipped, 1 failed" in proc.stdout
    cells = expected_cells(grid)
    with open(out / "results.jsonl", encoding="utf-8") as f:
        rows = {r["cell_id"]: r for r in map(json.loads, f)}
    assert set(rows) == {c.cell_id for c in cells}
    good, bad = rows[cells[0].cell_id], rows[cells[1].cell_id]
    assert good["error"] == "" and good["latency_ms"] > 0 and good["gflops"] > 0
    assert good["params"] > 0 and good["env"]["device"] == "CPU"
    assert bad["error"]  # no evaluation image to time: the cell process fails
    check_outputs(str(out), 2)
