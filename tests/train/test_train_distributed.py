"""MirroredStrategy over two logical CPU devices == one device on the same global batch.

Logical devices must be configured before TensorFlow initialises, so the
comparison runs in a fresh interpreter.
"""

import json
import os
import subprocess
import sys

import numpy as np

SCRIPT = r"""
import json, sys
import numpy as np
import tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(
    cpu, [tf.config.LogicalDeviceConfiguration(), tf.config.LogicalDeviceConfiguration()])
sys.path.insert(0, sys.argv[2])
from tests.train.train_toy_model import ToyDetector, make_dataset, toy_pipeline
from detbench.train import train

out_dir = sys.argv[1]
# common initial weights, given to both runs through fine_tune_checkpoint
init = ToyDetector(l2=0.01)
init.predict(*init.preprocess(np.zeros([1, 16, 16, 3], np.float32)))
init_ckpt = tf.train.Checkpoint(model=init).save(out_dir + "/init/ckpt")
results = {}
for name, distribution in (("single", 0), ("mirrored", 1)):
    pipeline = toy_pipeline(num_steps=1, learning_rate=0.5, batch_size=8,
                            fine_tune_checkpoint=init_ckpt, gradient_clipping_by_norm=0.0)
    pipeline.train_config.distribution = distribution
    model = ToyDetector(l2=0.01)
    result = train(pipeline, out_dir + "/" + name, model=model,
                   dataset=make_dataset(model, batch_size=8, num_images=8), progress=False)
    results[name] = {"losses": result.losses,
                     "replicas": len(model.box_head.kernel.values)
                                 if hasattr(model.box_head.kernel, "values") else 1,
                     "weights": [np.asarray(v.numpy()).tolist() for v in model.trainable_variables]}
print("RESULT " + json.dumps(results))
"""


def test_two_replicas_match_one_device(tmp_path):
    repo_root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="")
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(tmp_path), repo_root],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = [l for l in proc.stdout.splitlines() if l.startswith("RESULT ")][-1]
    results = json.loads(line[len("RESULT ") :])
    single, mirrored = results["single"], results["mirrored"]
    assert single["replicas"] == 1 and mirrored["replicas"] == 2
    assert single["losses"]["regularization_loss"] > 0
    for key in ("box_loss", "regularization_loss", "total_loss"):
        np.testing.assert_allclose(mirrored["losses"][key], single["losses"][key], rtol=1e-5)
    # the update (summed gradients of the 1/2-scaled replica losses) is the same too
    for a, b in zip(single["weights"], mirrored["weights"]):
        np.testing.assert_allclose(np.array(a), np.array(b), rtol=1e-4, atol=1e-6)
