"""Peak memory of a cell process is its own, not its parent's."""

import subprocess
import sys

import numpy as np
import pytest

from detbench.benchmark import timing

CHILD = "from detbench.benchmark.timing import peak_rss_mb; print(peak_rss_mb())"
PARENT = f"""
import subprocess, sys
block = bytearray(800 * 2**20)          # touch 800 MiB, then free it
for i in range(0, len(block), 4096):
    block[i] = 1
del block
out = subprocess.run([sys.executable, "-c", {CHILD!r}], capture_output=True, text=True)
print(out.stdout.strip())
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/status")
def test_child_peak_is_not_the_parents():
    # Linux carries ru_maxrss across exec: the child would report >= 800 MiB.
    out = subprocess.run([sys.executable, "-c", PARENT], capture_output=True, text=True, check=True)
    child_peak = float(out.stdout.strip().splitlines()[-1])
    assert 5 < child_peak < 400


def test_peak_grows_with_an_allocation():
    before = timing.peak_rss_mb()
    block = bytearray(300 * 2**20)
    for i in range(0, len(block), 4096):
        block[i] = 1
    assert timing.peak_rss_mb() >= before + 250 or timing.peak_rss_mb() >= 300
    del block


def test_reference_runs_interleave_and_divide_out_the_hosts_speed():
    # A host that slows down 3x half way: the model's raw runs follow it, the
    # ratio to the reference timed right after each run does not.
    clock = {"t": 0.0, "calls": 0}
    speed = lambda: 1.0 if clock["calls"] < 10 else 3.0  # noqa: E731

    def fake(cost):
        def run(*_):
            clock["calls"] += 1
            clock["t"] += cost * speed()
            return None

        return run

    import time as time_module

    real = time_module.perf_counter
    time_module.perf_counter = lambda: clock["t"]
    try:
        result = timing.time_function(
            fake(0.004), [1], num_warmup=0, num_runs=10, reference=fake(0.002)
        )
    finally:
        time_module.perf_counter = real
    runs = np.asarray(result["runs"])
    assert runs.min() == pytest.approx(0.004) and runs.max() == pytest.approx(0.012)
    assert result["relative_median"] == pytest.approx(2.0)
    assert result["reference_median"] == pytest.approx(np.median([0.002] * 3 + [0.006] * 7))


def test_reference_workload_is_fixed():
    first, second = timing.reference_workload()(), timing.reference_workload()()
    assert float(first) == float(second)  # same inputs, same work, every process
