"""Shared pieces of the weight-format tests: random weights, extractors, the comparison."""

import functools

import numpy as np

from detbench.feature_extractors.base import FEATURE_EXTRACTORS
from detbench.protos import feature_extractor_pb2 as pb


def extractor(name, **fields):
    import detbench.feature_extractors  # noqa: F401  (registers every family)

    return FEATURE_EXTRACTORS.get(name).from_config(pb.FeatureExtractor(type=name, **fields))


def random_value(name, shape, rng):
    """Values a trained network could hold: He-scaled kernels, batch norm statistics away
    from their initial values (so a misplaced variable changes the output)."""
    base = name.split("/")[-1].split(":")[0]
    if base in ("moving_variance", "gamma"):
        return rng.uniform(0.5, 1.5, shape).astype("float32")
    if len(shape) <= 1:
        return rng.normal(0, 0.2, shape).astype("float32")
    fan_in = int(np.prod(shape[:-1])) if "depthwise" not in base else int(np.prod(shape[:2]))
    return rng.normal(0, np.sqrt(2.0 / fan_in), shape).astype("float32")


def randomize(variables, seed=0):
    import tf_keras

    rng = np.random.RandomState(seed)
    tf_keras.backend.batch_set_value(
        [(v, random_value(v.name, tuple(v.shape), rng)) for v in variables]
    )


@functools.cache
def shared_extractor(name, **fields):
    """One extractor per configuration for the whole session (building the big ones costs
    seconds); every test loads a complete file into it."""
    fe = extractor(name, **fields)
    fe.build_backbone()
    return fe


def assert_same_map(ours, reference):
    """Agreement to 1e-4 of the reference map's scale."""
    ours, reference = np.asarray(ours), np.asarray(reference)
    assert ours.shape == reference.shape
    scale = np.abs(reference).max()
    assert scale > 0
    np.testing.assert_allclose(ours, reference, rtol=0, atol=1e-4 * scale)


def image(side, seed=1):
    """A float32 [1, side, side, 3] image in [0, 255]."""
    return np.random.RandomState(seed).uniform(0, 255, (1, side, side, 3)).astype("float32")


def slim_batch_norm(x, scale=False, epsilon=0.001):
    """slim's BatchNorm variables (beta, [gamma,] moving_mean, moving_variance), inference
    (in a TF1 graph: slim.batch_norm itself does not run with these versions)."""
    import tensorflow as tf

    v1 = tf.compat.v1
    with v1.variable_scope(None, default_name="BatchNorm"):
        c = x.shape[-1]
        beta = v1.get_variable("beta", [c], initializer=v1.zeros_initializer())
        gamma = v1.get_variable("gamma", [c], initializer=v1.ones_initializer()) if scale else None
        mean = v1.get_variable("moving_mean", [c], initializer=v1.zeros_initializer())
        var = v1.get_variable("moving_variance", [c], initializer=v1.ones_initializer())
        return tf.nn.batch_normalization(x, mean, var, beta, gamma, epsilon)
