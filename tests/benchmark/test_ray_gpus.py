"""``--executor ray --gpus-per-cell N``: tasks ask a local Ray instance that declares
2 GPUs (and 2 CPUs) for N GPUs, and each job's child process sees the GPUs its task
was given. The job here is a light probe (a child Python printing its
``CUDA_VISIBLE_DEVICES``), not a cell: test_ray_executor.py runs real cells on Ray.
"""

import os
import sys

import pytest

from detbench.benchmark.runner import RayExecutor, _child_env
from detbench.errors import ConfigError

try:
    import ray

    RAY_ERROR = None
except ImportError as e:  # pragma: no cover - depends on the environment
    RAY_ERROR = f"Ray is not installed (pip install -e .[ray]): {e}"

pytestmark = pytest.mark.skipif(RAY_ERROR is not None, reason=RAY_ERROR or "")


@pytest.fixture(scope="module")
def local_ray():
    # the probe travels by value: Ray's workers cannot import this test module by the
    # name pytest gave it (that depends on the checkout's folder name)
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    environ = dict(os.environ)  # ray.init adds RAY_* variables that later tests' children inherit
    ray.init(num_cpus=2, num_gpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()
    os.environ.clear()
    os.environ.update(environ)


def probe(kind, spec, gpu_ids=None):
    """In the Ray worker: what the task was given, and what its child process sees."""
    import subprocess
    import sys

    import ray

    from detbench.benchmark.runner import _child_env

    seen = subprocess.run(
        [sys.executable, "-c", "import os; print(os.environ.get('CUDA_VISIBLE_DEVICES'))"],
        env=_child_env(gpu_ids),
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    return {
        "kind": kind,
        "assigned": ray.get_runtime_context().get_assigned_resources(),
        "ray_gpu_ids": [str(i) for i in ray.get_gpu_ids()],
        "spec_gpus": spec.get("gpus"),
        "intra_op_threads": spec.get("settings", {}).get("intra_op_threads"),
        "child_sees": seen,
    }


JOBS = [
    ("t1", "train", {"model_dir": "m1"}),
    ("t2", "train", {"model_dir": "m2"}),
    ("c1", "measure", {"settings": {"intra_op_threads": 0, "num_runs": 2}}),
    ("c2", "measure", {"settings": {"intra_op_threads": 0, "num_runs": 2}}),
]


def test_one_gpu_per_cell(local_ray):
    """2 GPUs, 2 CPUs: each task asks for 1 GPU and its share of the CPUs (1); the
    child runs on the GPU Ray assigned, the row says which, a measured cell left at
    TensorFlow's default threads runs on 1."""
    executor = RayExecutor(gpus_per_cell=1, job=probe)
    assert executor.cpus == 1
    results = dict(executor.map(JOBS))
    assert set(results) == {"t1", "t2", "c1", "c2"}
    for key, r in results.items():
        assert r.get("assigned") == {"CPU": 1.0, "GPU": 1.0}, (key, r)
        assert r["gpus"] in ("0", "1") and r["ray_gpu_ids"] == [r["gpus"]]
        assert r["child_sees"] == r["gpus"] and r["spec_gpus"] == [r["gpus"]]
    assert results["c1"]["intra_op_threads"] == 1 and results["t1"]["intra_op_threads"] is None


def test_two_gpus_per_cell(local_ray):
    executor = RayExecutor(gpus_per_cell=2, job=probe)
    assert executor.cpus == 2
    (key, r), *_ = executor.map(JOBS[2:3])
    assert r["assigned"] == {"CPU": 2.0, "GPU": 2.0}
    assert sorted(r["gpus"].split(",")) == ["0", "1"] and r["child_sees"] == r["gpus"]
    assert r["intra_op_threads"] == 2


def test_without_gpus_a_task_takes_the_node(local_ray):
    """--gpus-per-cell 0 (the default): as before, all the largest node's CPUs, no
    GPU asked for, nothing recorded."""
    executor = RayExecutor(job=probe)
    assert executor.cpus == 2
    (key, r), *_ = executor.map(JOBS[2:3])
    assert r["assigned"] == {"CPU": 2.0} and "gpus" not in r and r["spec_gpus"] is None
    assert r["intra_op_threads"] == 0


def test_more_gpus_than_a_node_has_is_one_line(local_ray):
    with pytest.raises(ConfigError) as e:
        RayExecutor(gpus_per_cell=3, job=probe)
    assert str(e.value) == (
        "--gpus-per-cell 3: no node of the Ray cluster has 3 GPUs (the most on one node: 2)"
    )


def test_child_env_names_the_gpus():
    assert _child_env(["1", "3"])["CUDA_VISIBLE_DEVICES"] == "1,3"
    assert _child_env([])["CUDA_VISIBLE_DEVICES"] == ""
