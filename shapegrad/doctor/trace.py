"""Running the doctor's target layer by layer: recording each layer call, or probing its gradients.

A Sequential or Functional model runs one layer at a time through a ``wrap``
(:class:`Recorder` stores every call's inputs and outputs, :class:`Prober`
adds a zero probe to each so that the backward pass yields the gradient at
every layer boundary); any other target is one call.
"""

import dataclasses

import keras
import numpy as np
from keras import ops, tree

from shapegrad import _keras_internals



@dataclasses.dataclass
class _Call:
    """One layer call of the forward pass, as recorded."""

    index: int
    op: object
    struct: object  # (args, kwargs) with tensor leaves
    float_in: list  # positions of float tensor leaves in tree.flatten(struct)
    inputs: list  # their values (NumPy)
    outputs: list  # float output leaves (NumPy)
    out_struct: object = None

    @property
    def name(self):
        return getattr(self.op, "name", None) or getattr(self.op, "__qualname__", None) or repr(self.op)

    @property
    def class_name(self):
        op = self.op
        return type(op).__name__ if isinstance(op, keras.Operation) else "function"

    @property
    def weights(self):
        return list(getattr(self.op, "trainable_variables", []) or [])


def is_float_tensor(x):
    if x is None or isinstance(x, (bool, int, float, str)):
        return False
    try:
        if not ops.is_tensor(x) and not isinstance(x, np.ndarray):
            return False
        return "float" in keras.backend.standardize_dtype(x.dtype)
    except Exception:  # noqa: BLE001 - anything that is not a float tensor
        return False


def _call_kwargs(op, training):
    if isinstance(op, keras.Layer) and _keras_internals.call_takes_training(op):
        return {"training": training}
    return {}


def run_layers(target, inputs, wrap, training):
    """Run ``target`` on ``inputs``, calling each layer through ``wrap(layer)``."""
    if isinstance(target, keras.Sequential):
        x = inputs
        for layer in target.layers:
            x = wrap(layer)(x, **_call_kwargs(layer, training))
        return x
    if _keras_internals.is_functional(target):
        outputs = _keras_internals.run_functional(target, inputs, wrap, training)
        return outputs[0] if isinstance(outputs, (list, tuple)) and len(outputs) == 1 else outputs
    return wrap(target)(inputs, **_call_kwargs(target, training))


class Recorder:
    """``wrap`` for the recording pass: stores each call's inputs and outputs."""

    def __init__(self):
        self.calls = []

    def __call__(self, fn, op=None):
        op = fn if op is None else op

        def call(*args, **kwargs):
            y = fn(*args, **kwargs)
            leaves = tree.flatten((args, kwargs))
            float_in = [k for k, leaf in enumerate(leaves) if is_float_tensor(leaf)]
            outs = [o for o in tree.flatten(y) if is_float_tensor(o)]
            self.calls.append(
                _Call(
                    index=len(self.calls),
                    op=op,
                    struct=(args, kwargs),
                    float_in=float_in,
                    inputs=[to_numpy(leaves[k]) for k in float_in],
                    outputs=[to_numpy(o) for o in outs],
                    out_struct=y,
                )
            )
            return y

        return call


class Prober:
    """``wrap`` for the gradient pass: adds a zero probe to every float input and output of each call."""

    def __init__(self, in_probes, out_probes):
        self.in_probes, self.out_probes = in_probes, out_probes
        self.count = 0

    def __call__(self, fn, op=None):
        def call(*args, **kwargs):
            k = self.count
            self.count += 1
            leaves = tree.flatten((args, kwargs))
            probes = iter(self.in_probes[k])
            leaves = [leaf + next(probes) if is_float_tensor(leaf) else leaf for leaf in leaves]
            args, kwargs = tree.pack_sequence_as((args, kwargs), leaves)
            y = fn(*args, **kwargs)
            probes = iter(self.out_probes[k])
            return tree.map_structure(lambda o: o + next(probes) if is_float_tensor(o) else o, y)

        return call


def to_numpy(x):
    if hasattr(x, "detach"):
        x = x.detach()
    return np.asarray(ops.convert_to_numpy(x))


def call_fn(call, n_weights):
    """``f(*inputs, *weights) -> float outputs`` for one recorded call, for the backend locators."""
    weights = call.weights[:n_weights]

    def f(*tensors):
        xs, ws = tensors[: len(call.float_in)], tensors[len(call.float_in) :]
        leaves = tree.flatten(call.struct)
        for k, x in zip(call.float_in, xs):
            leaves[k] = x
        args, kwargs = tree.pack_sequence_as(call.struct, leaves)
        with keras.StatelessScope(state_mapping=list(zip(weights, ws))):
            y = call.op(*args, **kwargs)
        return [o for o in tree.flatten(y) if is_float_tensor(o)]

    return f

