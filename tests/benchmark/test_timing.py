"""Peak memory of a cell process is its own, not its parent's."""
import subprocess
import sys

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
    out = subprocess.run([sys.executable, "-c", PARENT], capture_output=True, text=True,
                         check=True)
    child_peak = float(out.stdout.strip().splitlines()[-1])
    assert 5 < child_peak < 400


def test_peak_grows_with_an_allocation():
    before = timing.peak_rss_mb()
    block = bytearray(300 * 2**20)
    for i in range(0, len(block), 4096):
        block[i] = 1
    assert timing.peak_rss_mb() >= before + 250 or timing.peak_rss_mb() >= 300
    del block
