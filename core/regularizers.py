"""Weight decay, one convention for every layer of every model.

``weight_decay`` (the configs' ``weight_decay`` fields) adds
``weight_decay / 2 * sum(w**2)`` per kernel to the loss: TF-slim's
``l2_regularizer`` (what the TF Object Detection API configs of the study mean)
and the Model Garden's ``l2(weight_decay / 2)``, whose gradient is
``weight_decay * w``.
"""

import tf_keras


def l2_regularizer(weight_decay):
    """The kernel regularizer for ``weight_decay``; None when it is zero."""
    return (
        tf_keras.regularizers.l2(weight_decay / 2.0) if weight_decay and weight_decay > 0 else None
    )
