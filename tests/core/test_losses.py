import numpy as np
import pytest
import tensorflow as tf

from detbench.core import losses
from detbench.protos import losses_pb2


def np_sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def np_log_softmax(x):
    x = x - x.max(-1, keepdims=True)
    return x - np.log(np.exp(x).sum(-1, keepdims=True))


def finite_difference(fn, x, eps=1e-2):
    """Central differences of sum(fn(x)) in float64 numpy."""
    grad = np.zeros_like(x)
    for idx in np.ndindex(x.shape):
        hi, lo = x.copy(), x.copy()
        hi[idx] += eps
        lo[idx] -= eps
        grad[idx] = (fn(hi).sum() - fn(lo).sum()) / (2 * eps)
    return grad


def tf_grad(loss, pred, target, weights):
    pred = tf.Variable(pred)

    @tf.function
    def step():
        with tf.GradientTape() as tape:
            value = tf.reduce_sum(loss(pred, target, weights))
        return tape.gradient(value, pred)

    return step().numpy()


def test_smooth_l1_hand_example_and_gradient():
    pred = np.array([[[0.5, -2.0, 0.0, 1.0], [0.0, 0.0, 0.0, 0.0]]], np.float32)
    target = np.zeros_like(pred)
    weights = np.array([[2.0, 1.0]], np.float32)
    loss = losses.WeightedSmoothL1LocalizationLoss(delta=1.0)
    out = tf.function(loss)(pred, target, weights).numpy()
    # 0.5*0.25 + (2 - 0.5) + 0 + 0.5 = 2.125, times weight 2.
    np.testing.assert_allclose(out, [[4.25, 0.0]], rtol=1e-6)
    assert out.shape == (1, 2)
    grad = tf_grad(loss, pred, target, weights)
    np.testing.assert_allclose(grad, np.clip(pred, -1, 1) * weights[..., None], rtol=1e-6)
    # delta 0.5: |x| = 2 -> 0.5 * (2 - 0.25) = 0.875
    out = losses.WeightedSmoothL1LocalizationLoss(0.5)(
        pred[:, :1, 1:2], target[:, :1, 1:2], np.ones((1, 1), np.float32)
    )
    np.testing.assert_allclose(out.numpy(), [[0.875]], rtol=1e-6)


def test_l2_values_and_gradient():
    rng = np.random.default_rng(0)
    pred = rng.normal(size=(2, 5, 4)).astype(np.float32)
    target = rng.normal(size=(2, 5, 4)).astype(np.float32)
    weights = rng.uniform(size=(2, 5)).astype(np.float32)
    loss = losses.build_localization_loss(
        losses_pb2.LocalizationLoss(l2=losses_pb2.WeightedL2Loss())
    )
    expect = 0.5 * ((pred - target) ** 2).sum(-1) * weights
    np.testing.assert_allclose(loss(pred, target, weights).numpy(), expect, rtol=1e-5)
    np.testing.assert_allclose(
        tf_grad(loss, pred, target, weights), (pred - target) * weights[..., None], rtol=1e-5
    )


def test_softmax_loss_int_and_one_hot_targets():
    rng = np.random.default_rng(1)
    logits = rng.normal(size=(2, 6, 5)).astype(np.float32)
    labels = rng.integers(0, 5, (2, 6))
    weights = rng.uniform(size=(2, 6)).astype(np.float32)
    loss = losses.build_classification_loss(
        losses_pb2.ClassificationLoss(softmax=losses_pb2.WeightedSoftmaxLoss(logit_scale=2.0))
    )
    expect = -np.take_along_axis(np_log_softmax(logits / 2.0), labels[..., None], -1)[..., 0]
    expect *= weights
    from_int = tf.function(loss)(logits, labels, weights).numpy()
    from_one_hot = loss(logits, np.eye(5, dtype=np.float32)[labels], weights).numpy()
    np.testing.assert_allclose(from_int, expect, rtol=1e-5)
    np.testing.assert_allclose(from_one_hot, expect, rtol=1e-5)
    # d/dlogits = (softmax(z/s) - onehot) * w / s
    probs = np.exp(np_log_softmax(logits / 2.0))
    analytic = (probs - np.eye(5)[labels]) * weights[..., None] / 2.0
    np.testing.assert_allclose(
        tf_grad(loss, logits, labels, weights), analytic, rtol=1e-4, atol=1e-6
    )


def test_sigmoid_loss_values_and_per_class_weights():
    rng = np.random.default_rng(2)
    logits = rng.normal(size=(2, 4, 3)).astype(np.float32)
    target = (rng.uniform(size=(2, 4, 3)) > 0.6).astype(np.float32)
    weights = rng.uniform(size=(2, 4, 3)).astype(np.float32)
    loss = losses.WeightedSigmoidClassificationLoss()
    p = np_sigmoid(logits.astype(np.float64))
    ce = -(target * np.log(p) + (1 - target) * np.log(1 - p))
    np.testing.assert_allclose(
        loss(logits, target, weights).numpy(), (ce * weights).sum(-1), rtol=1e-5
    )
    np.testing.assert_allclose(
        loss(logits, target, weights[..., 0]).numpy(), ce.sum(-1) * weights[..., 0], rtol=1e-5
    )
    np.testing.assert_allclose(
        tf_grad(loss, logits, target, weights), (p - target) * weights, rtol=1e-4, atol=1e-6
    )


@pytest.mark.parametrize("gamma,alpha", [(2.0, 0.25), (0.0, 0.5), (1.5, 0.75)])
def test_focal_loss_matches_formula_and_finite_differences(gamma, alpha):
    rng = np.random.default_rng(3)
    logits = (3 * rng.normal(size=(2, 3, 4))).astype(np.float32)
    labels = rng.integers(0, 4, (2, 3))
    target = np.eye(4, dtype=np.float32)[labels]
    weights = rng.uniform(0.5, 1.0, (2, 3)).astype(np.float32)

    def np_focal(x):
        p = np_sigmoid(x)
        ce = -(target * np.log(p) + (1 - target) * np.log(1 - p))
        p_t = target * p + (1 - target) * (1 - p)
        alpha_t = target * alpha + (1 - target) * (1 - alpha)
        return (alpha_t * (1 - p_t) ** gamma * ce).sum(-1) * weights

    loss = losses.build_classification_loss(
        losses_pb2.ClassificationLoss(focal=losses_pb2.SigmoidFocalLoss(gamma=gamma, alpha=alpha))
    )
    out = tf.function(loss)(logits, labels, weights).numpy()
    np.testing.assert_allclose(out, np_focal(logits.astype(np.float64)), rtol=1e-5, atol=1e-7)
    if gamma == 0.0 and alpha == 0.5:  # reduces to half the sigmoid loss
        plain = losses.WeightedSigmoidClassificationLoss()(logits, target, weights).numpy()
        np.testing.assert_allclose(out, 0.5 * plain, rtol=1e-5)
    np.testing.assert_allclose(
        tf_grad(loss, logits, target, weights),
        finite_difference(np_focal, logits.astype(np.float64), 1e-4),
        rtol=1e-3,
        atol=1e-5,
    )


def test_focal_loss_down_weights_easy_examples():
    loss = losses.SigmoidFocalClassificationLoss(gamma=2.0, alpha=0.25)
    easy = loss(np.array([[[-5.0]]]), np.zeros((1, 1, 1)), np.ones((1, 1))).numpy()
    hard = loss(np.array([[[5.0]]]), np.zeros((1, 1, 1)), np.ones((1, 1))).numpy()
    plain = losses.WeightedSigmoidClassificationLoss()
    plain_easy = plain(np.array([[[-5.0]]]), np.zeros((1, 1, 1)), np.ones((1, 1))).numpy()
    assert easy[0, 0] < 1e-4 * plain_easy[0, 0] and hard[0, 0] > 2.0


def test_builders_default_an_empty_oneof():
    loc = losses.build_localization_loss(losses_pb2.LocalizationLoss())
    assert isinstance(loc, losses.WeightedSmoothL1LocalizationLoss) and loc.delta == 1.0
    cls = losses.build_classification_loss(losses_pb2.ClassificationLoss())
    assert isinstance(cls, losses.WeightedSoftmaxClassificationLoss) and cls.logit_scale == 1.0
    assert losses.build_loss(losses_pb2.Loss())[2:] == (1.0, 1.0)
    config = losses_pb2.Loss(localization_weight=2.0)
    config.localization_loss.smooth_l1.delta = 0.5
    config.classification_loss.sigmoid.SetInParent()
    cls_loss, loc_loss, cls_w, loc_w = losses.build_loss(config)
    assert isinstance(cls_loss, losses.WeightedSigmoidClassificationLoss)
    assert loc_loss.delta == 0.5 and (cls_w, loc_w) == (1.0, 2.0)
