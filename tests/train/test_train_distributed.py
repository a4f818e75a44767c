"""MirroredStrategy over two logical CPU devices == one device on the same global batch,
whether asked for by ``train_config.distribution`` or given to ``train()`` as
``replica_strategy(devices)`` (what a sweep's training on several GPUs uses).

Logical devices must be configured before TensorFlow initialises, so every run
happens in one fresh interpreter (about 15 s here); the tests read its report.
"""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

SCRIPT = r"""
import json, sys
import numpy as np
import tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(
    cpu, [tf.config.LogicalDeviceConfiguration(), tf.config.LogicalDeviceConfiguration()])
sys.path.insert(0, sys.argv[2])
from tests.train.train_toy_model import ToyDetector, make_dataset, toy_pipeline
from detbench.errors import ConfigError
from detbench.train import replica_strategy, train

out_dir, LR, BATCH = sys.argv[1], 0.5, 8
cpus = [d.name for d in tf.config.list_logical_devices("CPU")]
report = {"cpus": cpus,
          # no GPU visible / one device: the default strategy, as before
          "no_gpu_is_default": replica_strategy() is tf.distribute.get_strategy(),
          "one_device_is_default": replica_strategy(cpus[:1]) is tf.distribute.get_strategy()}
# common initial weights, given to every run through fine_tune_checkpoint
init = ToyDetector(l2=0.01)
init.predict(*init.preprocess(np.zeros([1, 16, 16, 3], np.float32)))
init_ckpt = tf.train.Checkpoint(model=init).save(out_dir + "/init/ckpt")
report["initial"] = [v.numpy().tolist() for v in init.trainable_variables]
# the independent update: one SGD step (a first momentum step is -lr * g) on the
# global batch's gradient, no strategy and no optimizer
batch = next(iter(make_dataset(init, batch_size=BATCH, num_images=8)))
gt = {k: batch[k] for k in ("groundtruth_boxes", "groundtruth_classes")}
with tf.GradientTape() as tape:
    preds = init.predict(batch["image"], batch["true_shape"], training=True)
    total = init.loss(preds, gt)["box_loss"] + init.regularization_loss()
grads = tape.gradient(total, init.trainable_variables)
report["sgd"] = [(v - LR * g).numpy().tolist() for v, g in zip(init.trainable_variables, grads)]
report["sgd_loss"] = float(total)

def run(name, distribution=0, strategy=None, batch_size=BATCH):
    pipeline = toy_pipeline(num_steps=1, learning_rate=LR, batch_size=batch_size,
                            fine_tune_checkpoint=init_ckpt, gradient_clipping_by_norm=0.0)
    pipeline.train_config.distribution = distribution
    model = ToyDetector(l2=0.01)
    result = train(pipeline, out_dir + "/" + name, model=model, strategy=strategy,
                   dataset=make_dataset(model, batch_size=batch_size, num_images=8),
                   progress=False)
    kernel = model.box_head.kernel
    return {"losses": result.losses,
            "replicas": len(kernel.values) if hasattr(kernel, "values") else 1,
            "weights": [np.asarray(v.numpy()).tolist() for v in model.trainable_variables]}

report["single"] = run("single")
report["mirrored"] = run("mirrored", distribution=1)
report["replicas"] = run("replicas", strategy=replica_strategy(cpus))
try:
    run("odd", strategy=replica_strategy(cpus), batch_size=3)
    report["odd_batch_error"] = None
except ConfigError as e:
    report["odd_batch_error"] = str(e)
print("RESULT " + json.dumps(report))
"""


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    repo_root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="")
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(tmp_path_factory.mktemp("dist")), repo_root],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = [l for l in proc.stdout.splitlines() if l.startswith("RESULT ")][-1]
    return json.loads(line[len("RESULT ") :])


def _assert_same_weights(a, b):
    assert len(a) == len(b)
    for x, y in zip(a, b):
        np.testing.assert_allclose(np.array(x), np.array(y), rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("run", ["mirrored", "replicas"])
def test_two_replicas_match_one_device(report, run):
    single, replicated = report["single"], report[run]
    assert len(report["cpus"]) == 2
    assert single["replicas"] == 1 and replicated["replicas"] == 2
    assert single["losses"]["regularization_loss"] > 0
    for key in ("box_loss", "regularization_loss", "total_loss"):
        np.testing.assert_allclose(replicated["losses"][key], single["losses"][key], rtol=1e-5)
    # the update (summed gradients of the 1/2-scaled replica losses) is the same too
    _assert_same_weights(single["weights"], replicated["weights"])


def test_one_step_is_sgd_on_the_global_batch_mean(report):
    """Both runs equal w - lr * grad of (mean loss over all 8 images + L2), computed
    without a strategy or an optimizer: each replica's mean over its 4 images counts
    1/2, i.e. the loss is averaged over the global batch."""
    initial = report["initial"]
    moved = [np.abs(np.array(a) - np.array(b)).max() for a, b in zip(initial, report["sgd"])]
    assert min(moved) > 1e-4  # every variable is updated: the comparison means something
    for run in ("single", "replicas"):
        _assert_same_weights(report["sgd"], report[run]["weights"])
        np.testing.assert_allclose(report[run]["losses"]["total_loss"], report["sgd_loss"], 1e-5)


def test_replica_strategy_without_several_devices_is_the_default(report):
    assert report["no_gpu_is_default"] and report["one_device_is_default"]


def test_batch_not_divisible_by_replicas_is_one_line(report):
    error = report["odd_batch_error"]
    assert error and "\n" not in error
    assert error.startswith("train_config.batch_size 3 is not divisible by the 2 replicas")
