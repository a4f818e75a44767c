"""detbench compare-sweeps: Kendall's tau by hand and two hand-made runs compared."""

import math

import pytest

from detbench.benchmark.results import ResultsStore
from detbench.studies import compare_sweeps


def test_kendall_tau_by_hand():
    # x 1 2 3 4, y 1 3 2 4: 5 concordant pairs, 1 discordant: (5 - 1) / 6
    assert compare_sweeps.kendall_tau([1, 2, 3, 4], [1, 3, 2, 4]) == pytest.approx(4 / 6)
    assert compare_sweeps.kendall_tau([1, 2, 3], [3, 2, 1]) == -1.0
    # tau-b with a tie in y: pairs (1,2) tied in y; C = 2, D = 0, untied x 3, untied y 2
    assert compare_sweeps.kendall_tau([1, 2, 3], [1, 1, 2]) == pytest.approx(2 / math.sqrt(6))


def _row(label, rel, mAP, ref=10.0):
    return {
        "cell_id": label,
        "label": label,
        "train_key": label,
        "meta_arch": "ssd",
        "feature_extractor": "mobilenet_v2",
        "resolution": 160,
        "train_resolution": 160,
        "error": "",
        # the host ran at `ref` ms per reference: raw latency follows it
        "latency_ms": rel * ref,
        "latency_rel": rel,
        "latency_rel_lo": rel * 0.98,
        "latency_rel_hi": rel * 1.02,
        "reference_ms": ref,
        "mAP": mAP,
        "mAP@.50": 2 * mAP,
    }


def _run(path, rows):
    store = ResultsStore(str(path))
    for r in rows:
        store.add(r)
    return str(path)


def test_two_runs_agree_on_the_figure_though_the_host_drifted(tmp_path, capsys):
    cells = [("a", 1.0, 0.10), ("b", 2.0, 0.20), ("c", 4.0, 0.30), ("d", 8.0, 0.25)]
    a = _run(tmp_path / "a", [_row(n, r, m) for n, r, m in cells])
    # run B: the host was 3x slower for cell a only: its raw latency reorders a and b
    b = _run(tmp_path / "b", [_row(n, r, m, ref=30.0 if n == "a" else 10.0) for n, r, m in cells])
    assert compare_sweeps.main([a, b]) == 0
    out = capsys.readouterr().out
    assert "Kendall tau of latency_corrected_ms over 4 common cells: 1.000" in out
    assert "Kendall tau of latency_ms over 4 common cells: 0.667" in out
    assert "frontier, both runs: a; b; c" in out and "the runs agree" in out
    # a run whose most accurate cell changes differs
    c = _run(tmp_path / "c", [_row(n, r, 0.5 if n == "d" else m) for n, r, m in cells])
    assert compare_sweeps.main([a, c]) == 1
    assert "frontier, run B only: d" in capsys.readouterr().out
