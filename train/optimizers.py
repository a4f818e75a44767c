"""Optimizer proto -> (tf_keras optimizer, learning-rate schedule).

Schedules, as functions of the optimizer's step ``t`` (the number of updates
already applied, so the first update uses ``lr(0)``):

- ``constant``: ``learning_rate``.
- ``step``: ``learning_rate`` while ``t < boundaries[0]``, then ``values[i]``
  from ``t = boundaries[i]`` on.
- ``cosine``: ``learning_rate * ((1 - alpha) * 0.5 * (1 + cos(pi * u)) + alpha)``
  with ``u = min(t - warmup_steps, T - warmup_steps) / (T - warmup_steps)`` and
  ``T = total_steps`` (0: the training's ``num_steps``): the decay starts where
  the warm-up ends, as in the TF Object Detection API.
- any of them with ``warmup_steps > 0``: linear from ``warmup_learning_rate``
  at ``t = 0`` to the schedule's value at ``t = warmup_steps``.

Gradient clipping (``train_config.gradient_clipping_by_norm``) is the
optimizer's ``global_clipnorm``, applied after cross-replica aggregation.
"""
import tensorflow as tf
import tf_keras
from official.modeling.optimization import lr_schedule

from detbench.errors import ConfigError

_FIELD = "train_config.optimizer"


class StepSchedule(tf_keras.optimizers.schedules.LearningRateSchedule):
    """Piecewise constant: ``learning_rate`` before ``boundaries[0]``, then ``values[i]``
    from step ``boundaries[i]`` on."""

    def __init__(self, learning_rate, boundaries, values):
        super().__init__()
        self.learning_rate = float(learning_rate)
        self.boundaries = [int(b) for b in boundaries]
        self.values = [float(v) for v in values]

    def __call__(self, step):
        rates = tf.constant([self.learning_rate] + self.values, tf.float32)
        if not self.boundaries:
            return rates[0]
        passed = tf.reduce_sum(tf.cast(
            tf.cast(step, tf.int64) >= tf.constant(self.boundaries, tf.int64), tf.int32))
        return tf.gather(rates, passed)

    def get_config(self):
        return {"learning_rate": self.learning_rate, "boundaries": self.boundaries,
                "values": self.values}


def build_learning_rate(lr_proto, num_steps, field=_FIELD + ".learning_rate"):
    """``LearningRate`` proto -> a ``LearningRateSchedule`` (a float: constant, no warm-up)."""
    which = lr_proto.WhichOneof("schedule") or "constant"
    warmup = lr_proto.warmup_steps
    if warmup < 0:
        raise ConfigError(f"{field}.warmup_steps must be >= 0, got {warmup}")
    if which == "constant":
        base_lr = lr_proto.constant.learning_rate
        schedule = float(base_lr)
    elif which == "step":
        cfg = lr_proto.step
        base_lr = cfg.learning_rate
        boundaries, values = list(cfg.boundaries), list(cfg.values)
        if len(boundaries) != len(values):
            raise ConfigError(f"{field}.step: {len(boundaries)} boundaries need as many values, "
                              f"got {len(values)}")
        if any(b <= 0 for b in boundaries) or any(
                b2 <= b1 for b1, b2 in zip(boundaries, boundaries[1:])):
            raise ConfigError(f"{field}.step.boundaries must be positive and increasing, "
                              f"got {boundaries}")
        schedule = StepSchedule(base_lr, boundaries, values)
    else:  # cosine
        cfg = lr_proto.cosine
        base_lr = cfg.learning_rate
        total = cfg.total_steps or num_steps
        if total is None or total <= warmup:
            raise ConfigError(f"{field}.cosine.total_steps ({total}; 0 means "
                              f"train_config.num_steps) must be greater than warmup_steps "
                              f"({warmup})")
        if not 0.0 <= cfg.alpha <= 1.0:
            raise ConfigError(f"{field}.cosine.alpha must be in [0, 1], got {cfg.alpha}")
        schedule = lr_schedule.CosineDecayWithOffset(
            offset=warmup, initial_learning_rate=float(base_lr),
            decay_steps=int(total - warmup), alpha=float(cfg.alpha))
    if base_lr <= 0:
        raise ConfigError(f"{field}.{which}.learning_rate must be > 0, got {base_lr}")
    if warmup > 0:
        schedule = lr_schedule.LinearWarmup(
            after_warmup_lr_sched=schedule, warmup_steps=warmup,
            warmup_learning_rate=float(lr_proto.warmup_learning_rate))
    return schedule


def learning_rate_at(schedule, step):
    """The schedule's value (a Python float) at ``step``."""
    if callable(schedule):
        return float(schedule(tf.constant(step, tf.int64)))
    return float(schedule)


def build_optimizer(optimizer_proto, num_steps, gradient_clipping_by_norm=None):
    """``Optimizer`` proto -> ``(tf_keras optimizer, learning-rate schedule)``.

    No optimizer set: momentum 0.9 with a constant learning rate (the proto's
    defaults). ``gradient_clipping_by_norm`` > 0 clips by global norm.
    """
    which = optimizer_proto.WhichOneof("optimizer") or "momentum"
    cfg = getattr(optimizer_proto, which)
    schedule = build_learning_rate(cfg.learning_rate, num_steps,
                                   field=f"{_FIELD}.{which}.learning_rate")
    kwargs = {"learning_rate": schedule}
    if gradient_clipping_by_norm is not None and gradient_clipping_by_norm > 0:
        kwargs["global_clipnorm"] = float(gradient_clipping_by_norm)
    if which == "momentum":
        if not 0.0 <= cfg.momentum < 1.0:
            raise ConfigError(f"{_FIELD}.momentum.momentum must be in [0, 1), got {cfg.momentum}")
        optimizer = tf_keras.optimizers.SGD(momentum=cfg.momentum, **kwargs)
    elif which == "rms_prop":
        if cfg.epsilon <= 0:
            raise ConfigError(f"{_FIELD}.rms_prop.epsilon must be > 0, got {cfg.epsilon}")
        optimizer = tf_keras.optimizers.RMSprop(rho=cfg.decay, momentum=cfg.momentum,
                                                epsilon=cfg.epsilon, **kwargs)
    else:  # adam
        optimizer = tf_keras.optimizers.Adam(epsilon=cfg.epsilon, **kwargs)
    return optimizer, schedule
