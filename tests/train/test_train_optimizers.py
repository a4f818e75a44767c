"""Optimizers and learning-rate schedules vs hand-computed values."""

import math

import numpy as np
import pytest
import tensorflow as tf
import tf_keras

from detbench.errors import ConfigError
from detbench.protos import optimizer_pb2
from detbench.train.optimizers import build_learning_rate, build_optimizer, learning_rate_at


def _lr(text_setup, num_steps=100):
    proto = optimizer_pb2.LearningRate()
    text_setup(proto)
    return build_learning_rate(proto, num_steps)


def _values(schedule, steps):
    return [learning_rate_at(schedule, s) for s in steps]


def test_constant():
    sched = _lr(lambda p: setattr(p.constant, "learning_rate", 0.3))
    assert _values(sched, [0, 7, 1000]) == pytest.approx([0.3] * 3)


def test_step_values_switch_at_the_boundaries():
    def setup(p):
        p.step.learning_rate = 1.0
        p.step.boundaries.extend([10, 20])
        p.step.values.extend([0.1, 0.01])

    sched = _lr(setup)
    assert _values(sched, [0, 9, 10, 19, 20, 500]) == pytest.approx(
        [1.0, 1.0, 0.1, 0.1, 0.01, 0.01]
    )


def test_linear_warmup_to_constant():
    def setup(p):
        p.constant.learning_rate = 1.0
        p.warmup_steps = 5
        p.warmup_learning_rate = 0.0

    sched = _lr(setup)
    assert _values(sched, [0, 2, 4, 5, 50]) == pytest.approx([0.0, 0.4, 0.8, 1.0, 1.0])


def test_cosine_with_warmup_decays_after_the_warmup():
    def setup(p):
        p.cosine.learning_rate = 1.0
        p.cosine.total_steps = 100
        p.cosine.alpha = 0.1
        p.warmup_steps = 10
        p.warmup_learning_rate = 0.1

    sched = _lr(setup)

    def expected(t):
        if t < 10:
            return 0.1 + t / 10 * (1.0 - 0.1)
        u = min(t - 10, 90) / 90
        return 0.9 * 0.5 * (1 + math.cos(math.pi * u)) + 0.1

    steps = [0, 5, 10, 32, 55, 99, 100, 150]
    assert _values(sched, steps) == pytest.approx([expected(t) for t in steps], rel=1e-5)
    assert learning_rate_at(sched, 55) == pytest.approx(0.55, rel=1e-5)  # by hand: half way


def test_cosine_total_steps_defaults_to_num_steps():
    sched = _lr(lambda p: setattr(p.cosine, "learning_rate", 2.0), num_steps=40)
    assert learning_rate_at(sched, 20) == pytest.approx(1.0, rel=1e-5)
    assert learning_rate_at(sched, 40) == pytest.approx(0.0, abs=1e-6)


def test_step_with_warmup():
    def setup(p):
        p.step.learning_rate = 0.5
        p.step.boundaries.append(8)
        p.step.values.append(0.05)
        p.warmup_steps = 4
        p.warmup_learning_rate = 0.1

    sched = _lr(setup)
    assert _values(sched, [0, 2, 4, 7, 8]) == pytest.approx([0.1, 0.3, 0.5, 0.5, 0.05])


@pytest.mark.parametrize(
    "setup, field",
    [
        (lambda p: (p.step.boundaries.extend([5, 9]), p.step.values.append(0.1)), "2 boundaries"),
        (
            lambda p: (p.step.boundaries.extend([9, 5]), p.step.values.extend([0.1, 0.2])),
            "increasing",
        ),
        (
            lambda p: (setattr(p.cosine, "total_steps", 10), setattr(p, "warmup_steps", 10)),
            "total_steps",
        ),
        (lambda p: setattr(p.constant, "learning_rate", -1.0), "learning_rate must be > 0"),
    ],
)
def test_bad_schedules_are_config_errors(setup, field):
    with pytest.raises(ConfigError, match=field):
        _lr(setup)


def _one_variable_updates(optimizer, grads):
    var = tf.Variable(1.0)
    out = []
    for g in grads:
        optimizer.apply_gradients([(tf.constant(g), var)])
        out.append(float(var.numpy()))
    return out


def test_momentum_sgd_uses_the_schedule_per_step():
    proto = optimizer_pb2.Optimizer()
    proto.momentum.momentum = 0.9
    proto.momentum.learning_rate.constant.learning_rate = 0.1
    proto.momentum.learning_rate.warmup_steps = 2
    proto.momentum.learning_rate.warmup_learning_rate = 0.0
    optimizer, _ = build_optimizer(proto, 10, gradient_clipping_by_norm=0)
    assert isinstance(optimizer, tf_keras.optimizers.SGD)
    # lr(0)=0, lr(1)=0.05, lr(2)=0.1; v = 0.9 v - lr g; w += v; g = 2
    v, w, expected = 0.0, 1.0, []
    for lr in (0.0, 0.05, 0.1):
        v = 0.9 * v - lr * 2.0
        w += v
        expected.append(w)
    assert _one_variable_updates(optimizer, [2.0, 2.0, 2.0]) == pytest.approx(expected, rel=1e-6)


def test_rmsprop_update_by_hand():
    proto = optimizer_pb2.Optimizer()
    proto.rms_prop.learning_rate.constant.learning_rate = 0.01
    optimizer, _ = build_optimizer(proto, 10)
    assert isinstance(optimizer, tf_keras.optimizers.RMSprop)
    assert (optimizer.rho, optimizer.momentum, optimizer.epsilon) == pytest.approx((0.9, 0.9, 1.0))
    # ms = 0.9 ms + 0.1 g^2; mom = 0.9 mom + lr g / sqrt(ms + eps); w -= mom
    ms = mom = 0.0
    w, expected = 1.0, []
    for g in (3.0, -1.0):
        ms = 0.9 * ms + 0.1 * g * g
        mom = 0.9 * mom + 0.01 * g / math.sqrt(ms + 1.0)
        w -= mom
        expected.append(w)
    assert _one_variable_updates(optimizer, [3.0, -1.0]) == pytest.approx(expected, rel=1e-5)


def test_adam_first_step_is_lr_sized():
    proto = optimizer_pb2.Optimizer()
    proto.adam.learning_rate.constant.learning_rate = 0.01
    proto.adam.epsilon = 1e-8
    optimizer, _ = build_optimizer(proto, 10)
    assert isinstance(optimizer, tf_keras.optimizers.Adam)
    # m_hat = g, v_hat = g^2 after one step: w -= lr * g / (|g| + eps)
    assert _one_variable_updates(optimizer, [5.0]) == pytest.approx([1.0 - 0.01], rel=1e-6)


def test_gradient_clipping_by_global_norm():
    proto = optimizer_pb2.Optimizer()
    proto.momentum.momentum = 0.0
    proto.momentum.learning_rate.constant.learning_rate = 1.0
    optimizer, _ = build_optimizer(proto, 10, gradient_clipping_by_norm=1.0)
    a, b = tf.Variable(0.0), tf.Variable(0.0)
    optimizer.apply_gradients([(tf.constant(3.0), a), (tf.constant(4.0), b)])  # norm 5 -> 1
    np.testing.assert_allclose([a.numpy(), b.numpy()], [-0.6, -0.8], rtol=1e-6)


def test_default_optimizer_is_momentum_constant():
    optimizer, schedule = build_optimizer(optimizer_pb2.Optimizer(), 10)
    assert isinstance(optimizer, tf_keras.optimizers.SGD)
    assert optimizer.momentum == pytest.approx(0.9)
    assert learning_rate_at(schedule, 3) == pytest.approx(0.002)


FUSED = {  # proto setup -> (the stock tf_keras optimizer with the same settings, fused op)
    "momentum": (
        lambda p: setattr(p.momentum, "momentum", 0.8),
        lambda lr: tf_keras.optimizers.SGD(lr, momentum=0.8, global_clipnorm=2.0),
        "ResourceApplyKerasMomentum",
    ),
    "rms_prop": (
        lambda p: p.rms_prop.SetInParent(),
        lambda lr: tf_keras.optimizers.RMSprop(
            lr, rho=0.9, momentum=0.9, epsilon=1.0, global_clipnorm=2.0
        ),
        "ResourceApplyRMSProp",
    ),
    "adam": (
        lambda p: setattr(p.adam, "epsilon", 1e-7),
        lambda lr: tf_keras.optimizers.Adam(lr, epsilon=1e-7, global_clipnorm=2.0),
        "ResourceApplyAdam",
    ),
}


@pytest.mark.parametrize("name", sorted(FUSED))
def test_fused_update_equals_tf_keras_and_is_one_op_per_variable(name):
    """Ours (one fused training op per variable) against tf_keras's own
    update, 4 steps of a cosine schedule with global-norm clipping, two
    variables of different shapes, inside a tf.function."""
    setup, stock, op_type = FUSED[name]
    proto = optimizer_pb2.Optimizer()
    setup(proto)
    lr_proto = getattr(proto, name).learning_rate
    lr_proto.cosine.learning_rate = 0.05
    ours, schedule = build_optimizer(proto, 4, gradient_clipping_by_norm=2.0)
    reference = stock(schedule)
    rng = np.random.default_rng(0)
    init = [rng.normal(size=(3, 4)).astype(np.float32), rng.normal(size=(5,)).astype(np.float32)]
    grads = [[rng.normal(size=v.shape).astype(np.float32) for v in init] for _ in range(4)]
    results, op_types = [], None
    for optimizer in (ours, reference):
        variables = [tf.Variable(v) for v in init]
        optimizer.build(variables)

        @tf.function
        def step(gs):
            optimizer.apply_gradients(zip(gs, variables))  # noqa: B023  (called in this iteration)

        for g in grads:
            step([tf.constant(x) for x in g])
        results.append([v.numpy() for v in variables])
        if optimizer is ours:
            graph = step.get_concrete_function([tf.TensorSpec(x.shape) for x in grads[0]]).graph
            op_types = [op.type for op in graph.get_operations()]
    for a, b in zip(*results):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    assert not np.allclose(results[0][0], init[0])  # the variables moved
    assert op_types.count(op_type) == 2
