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

The optimizers are tf_keras's SGD / RMSprop / Adam with one change: a dense
update is one fused TensorFlow training op per variable
(``ResourceApplyKerasMomentum``, ``ResourceApplyRMSProp``,
``ResourceApplyAdam``: the same formulas) instead of tf_keras's ~40 small
ops on CPU (it fuses them with XLA only on a GPU). A detector has ~200
variables, so that is ~7,000 fewer ops in the training step's graph: less
to trace, to optimize (Grappler) and to dispatch every step. Sparse
gradients, SGD without momentum, centered RMSprop or RMSprop without
momentum, and AMSGrad take tf_keras's own path. Slots, checkpoints and
``build`` are tf_keras's.
"""

import logging

import tensorflow as tf
import tf_keras
from official.modeling.optimization import lr_schedule

from detbench.config.train_checks import (
    OPTIMIZER_FIELD as _FIELD,
    check_learning_rate,
    check_optimizer,
)
from detbench.errors import ConfigError

log = logging.getLogger("detbench.train")


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
        passed = tf.reduce_sum(
            tf.cast(tf.cast(step, tf.int64) >= tf.constant(self.boundaries, tf.int64), tf.int32)
        )
        return tf.gather(rates, passed)

    def get_config(self):
        return {
            "learning_rate": self.learning_rate,
            "boundaries": self.boundaries,
            "values": self.values,
        }


def build_learning_rate(lr_proto, num_steps, field=_FIELD + ".learning_rate"):
    """``LearningRate`` proto -> a ``LearningRateSchedule`` (a float: constant, no warm-up)."""
    check_learning_rate(lr_proto, num_steps, field)
    which = lr_proto.WhichOneof("schedule") or "constant"
    warmup = lr_proto.warmup_steps
    if which == "constant":
        base_lr = lr_proto.constant.learning_rate
        schedule = float(base_lr)
    elif which == "step":
        cfg = lr_proto.step
        base_lr = cfg.learning_rate
        schedule = StepSchedule(base_lr, list(cfg.boundaries), list(cfg.values))
    else:  # cosine
        cfg = lr_proto.cosine
        base_lr = cfg.learning_rate
        total = cfg.total_steps or num_steps
        if not cfg.total_steps and total is not None and 0 < total <= warmup:
            # A short run of a long recipe (a smoke test, --num_steps 3): the cosine
            # that ends at num_steps keeps a warm-up of half the run instead.
            shortened = total // 2
            log.warning(
                "%s.warmup_steps %d >= train_config.num_steps %d: warm-up shortened to "
                "%d steps for this run",
                field,
                warmup,
                total,
                shortened,
            )
            warmup = shortened
        if total is None:
            raise ConfigError(
                f"{field}.cosine.total_steps: 0 means train_config.num_steps, "
                "which is not known here"
            )
        schedule = lr_schedule.CosineDecayWithOffset(
            offset=warmup,
            initial_learning_rate=float(base_lr),
            decay_steps=int(total - warmup),
            alpha=float(cfg.alpha),
        )
    if warmup > 0:
        schedule = lr_schedule.LinearWarmup(
            after_warmup_lr_sched=schedule,
            warmup_steps=warmup,
            warmup_learning_rate=float(lr_proto.warmup_learning_rate),
        )
    return schedule


def learning_rate_at(schedule, step):
    """The schedule's value (a Python float) at ``step``."""
    if callable(schedule):
        return float(schedule(tf.constant(step, tf.int64)))
    return float(schedule)


class SGD(tf_keras.optimizers.SGD):
    """tf_keras SGD; a dense update with momentum is one ResourceApplyKerasMomentum."""

    def update_step(self, gradient, variable):
        if isinstance(gradient, tf.IndexedSlices) or not self.momentum:
            return super().update_step(gradient, variable)
        m = self.momentums[self._index_dict[self._var_key(variable)]]
        return tf.raw_ops.ResourceApplyKerasMomentum(
            var=variable.handle,
            accum=m.handle,
            lr=tf.cast(self.learning_rate, variable.dtype),
            grad=gradient,
            momentum=tf.cast(self.momentum, variable.dtype),
            use_nesterov=bool(self.nesterov),
        )


class RMSprop(tf_keras.optimizers.RMSprop):
    """tf_keras RMSprop; a dense, uncentered update with momentum is one
    ResourceApplyRMSProp."""

    def update_step(self, gradient, variable):
        if isinstance(gradient, tf.IndexedSlices) or self.centered or not self.momentum > 0:
            return super().update_step(gradient, variable)
        key = self._index_dict[self._var_key(variable)]
        dtype = variable.dtype
        return tf.raw_ops.ResourceApplyRMSProp(
            var=variable.handle,
            ms=self._velocities[key].handle,
            mom=self._momentums[key].handle,
            lr=tf.cast(self.learning_rate, dtype),
            rho=tf.cast(self.rho, dtype),
            momentum=tf.cast(self.momentum, dtype),
            epsilon=tf.cast(self.epsilon, dtype),
            grad=gradient,
        )


class Adam(tf_keras.optimizers.Adam):
    """tf_keras Adam; a dense update (no AMSGrad) is one ResourceApplyAdam."""

    def update_step(self, gradient, variable):
        if (
            isinstance(gradient, tf.IndexedSlices)
            or self.amsgrad
            or getattr(self, "adaptive_epsilon", False)
        ):
            return super().update_step(gradient, variable)
        key = self._index_dict[self._var_key(variable)]
        dtype = variable.dtype
        local_step = tf.cast(self.iterations + 1, dtype)
        beta_1, beta_2 = tf.cast(self.beta_1, dtype), tf.cast(self.beta_2, dtype)
        return tf.raw_ops.ResourceApplyAdam(
            var=variable.handle,
            m=self._momentums[key].handle,
            v=self._velocities[key].handle,
            beta1_power=tf.pow(beta_1, local_step),
            beta2_power=tf.pow(beta_2, local_step),
            lr=tf.cast(self.learning_rate, dtype),
            beta1=beta_1,
            beta2=beta_2,
            epsilon=tf.cast(self.epsilon, dtype),
            grad=gradient,
        )


def build_optimizer(optimizer_proto, num_steps, gradient_clipping_by_norm=None):
    """``Optimizer`` proto -> ``(tf_keras optimizer, learning-rate schedule)``.

    No optimizer set: momentum 0.9 with a constant learning rate (the proto's
    defaults). ``gradient_clipping_by_norm`` > 0 clips by global norm.
    """
    check_optimizer(optimizer_proto, num_steps)
    which = optimizer_proto.WhichOneof("optimizer") or "momentum"
    cfg = getattr(optimizer_proto, which)
    schedule = build_learning_rate(
        cfg.learning_rate, num_steps, field=f"{_FIELD}.{which}.learning_rate"
    )
    kwargs = {"learning_rate": schedule}
    if gradient_clipping_by_norm is not None and gradient_clipping_by_norm > 0:
        kwargs["global_clipnorm"] = float(gradient_clipping_by_norm)
    if which == "momentum":
        optimizer = SGD(momentum=cfg.momentum, **kwargs)
    elif which == "rms_prop":
        optimizer = RMSprop(rho=cfg.decay, momentum=cfg.momentum, epsilon=cfg.epsilon, **kwargs)
    else:  # adam
        optimizer = Adam(epsilon=cfg.epsilon, **kwargs)
    return optimizer, schedule
