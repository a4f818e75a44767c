"""FLOPs of a traced TensorFlow function (multiply-add = 2 FLOPs).

``count_flops(fn, inputs)`` traces ``fn`` (a ``tf.function`` or any Python
callable, e.g. a tf_keras model) at static shapes and sums, over every op of
the graph and of the functions it calls (``PartitionedCall``), TensorFlow's
own registered op statistics (the ones ``tf.compat.v1.profiler``'s
``float_operation()`` reports):

* Conv2D / Conv3D / Conv2DBackpropInput: 2 * output elements * kh * kw * C_in
  (dilation does not change it), DepthwiseConv2dNative: 2 * output elements
  * kh * kw, MatMul: 2 * M * N * K;
* BiasAdd and elementwise arithmetic (Add, Mul, Sub, RealDiv, Maximum, ...):
  one per output element; pooling: one per window element; Mean / Sum: one
  per input element;

plus what TF leaves unregistered: BatchMatMulV2/V3 (2 * batch * M * N * K),
FusedBatchNorm* (2 per element: the folded scale and shift). Activations
(Relu, Relu6, Sigmoid) and data movement (pad, reshape, resize, gather) count
zero. Ops whose shapes are unknown at trace time count zero, so trace with
fully defined shapes.
"""

import numpy as np
import tensorflow as tf
from tensorflow.python.framework import ops as tf_ops

_CALL_OPS = ("PartitionedCall", "StatefulPartitionedCall")


def _shape(tensor):
    shape = tensor.shape
    if shape.rank is None or not shape.is_fully_defined():
        return None
    return shape.as_list()


def _extra_flops(op):
    if op.type in ("BatchMatMulV2", "BatchMatMulV3", "BatchMatMul"):
        a, b = _shape(op.inputs[0]), _shape(op.inputs[1])
        out = _shape(op.outputs[0])
        if a is None or b is None or out is None:
            return 0
        k = a[-2] if op.get_attr("adj_x") else a[-1]
        return 2 * int(np.prod(out)) * k
    if op.type.startswith("FusedBatchNorm"):
        out = _shape(op.outputs[0])
        return 2 * int(np.prod(out)) if out else 0
    return 0


def _op_flops(graph, op):
    try:
        stats = tf_ops.get_stats_for_node_def(graph, op.node_def, "flops")
    except (ValueError, TypeError):
        stats = None
    if stats is not None and stats.value is not None:
        return int(stats.value)
    return _extra_flops(op)


def _graph_flops(graph, seen):
    total = 0
    for op in graph.get_operations():
        if op.type in _CALL_OPS:
            name = op.get_attr("f").name
            if name not in seen:
                fn = graph._get_function(name)  # noqa: SLF001  (no public lookup)
                if fn is not None and getattr(fn, "graph", None) is not None:
                    total += _graph_flops(fn.graph, seen)
            continue
        total += _op_flops(graph, op)
    return total


def _signature(inputs):
    def spec(x):
        if isinstance(x, tf.TensorSpec):
            return x
        x = tf.convert_to_tensor(x)
        return tf.TensorSpec(x.shape, x.dtype)

    return tf.nest.map_structure(spec, inputs)


def count_flops(fn, inputs):
    """FLOPs of one call of ``fn`` on ``inputs``.

    ``inputs``: a tensor / array / ``tf.TensorSpec`` or a list or tuple of
    them (the positional arguments), fully defined shapes. ``fn``: a
    ``tf.function``, a tf_keras model or any callable of those arguments.
    """
    args = list(inputs) if isinstance(inputs, (list, tuple)) else [inputs]
    specs = [_signature(a) for a in args]
    if not isinstance(fn, tf.types.experimental.GenericFunction):
        fn = tf.function(fn)
    concrete = fn.get_concrete_function(*specs)
    return _graph_flops(concrete.graph, set())
