"""The doctor's float64 finite-difference check of a few input entries against autodiff.

The target is cloned in float64 (same weights); where it still computes in
float32 inside, the check says so and is skipped rather than reporting noise.
"""

import keras
import numpy as np
from keras import ops, tree

from shapegrad import _keras_internals
from shapegrad.doctor.report import Finding
from shapegrad.doctor.trace import is_float_tensor, to_numpy, run_layers
from shapegrad.ops import autodiff



_FD_RTOL = 1e-2


def _float64_target(target, inputs64):
    """A float64 copy of ``target`` (same weights) or ``None`` when it cannot be made."""
    if not isinstance(target, keras.Layer):
        return target

    def clone_layer(layer):
        config = layer.get_config()
        config["dtype"] = "float64"
        return layer.__class__.from_config(config)

    if isinstance(target, keras.Model) and (isinstance(target, keras.Sequential) or _keras_internals.is_functional(target)):
        # New float64 inputs: Functional models cast their inputs to the
        # declared Input dtype, which would quantise the finite differences.
        input_tensors = None
        if getattr(target, "inputs", None):
            input_tensors = [
                keras.Input(
                    shape=tuple(t.shape[1:]),
                    dtype="float64" if "float" in keras.backend.standardize_dtype(t.dtype) else t.dtype,
                )
                for t in target.inputs
            ]
            if len(input_tensors) == 1:
                input_tensors = input_tensors[0]
        twin = keras.models.clone_model(target, clone_function=clone_layer, input_tensors=input_tensors)
    else:
        twin = clone_layer(target)
    twin(tree.map_structure(ops.convert_to_tensor, inputs64))
    source, dest = target.weights, twin.weights
    if len(source) != len(dest):
        return None
    for s, d in zip(source, dest):
        if tuple(s.shape) != tuple(d.shape):
            return None
        d.assign(np.asarray(to_numpy(s.value), dtype=keras.backend.standardize_dtype(d.dtype)))
    return twin


def fd_findings(target, inputs, float_inputs, loss_fn, training, samples, seed, checked, notes):
    leaves = tree.flatten(inputs)
    leaves64 = [np.asarray(x, np.float64) if k in float_inputs else x for k, x in enumerate(leaves)]
    inputs64 = tree.pack_sequence_as(inputs, leaves64)
    try:
        twin = _float64_target(target, inputs64)
    except Exception as error:  # noqa: BLE001 - the check is optional
        notes.append(f"float64 finite-difference check skipped: no float64 copy of the target ({type(error).__name__})")
        return []
    if twin is None:
        notes.append("float64 finite-difference check skipped: no float64 copy of the target")
        return []

    def f(*xs):
        ls = [ops.convert_to_tensor(x) for x in leaves64]
        for k, x in zip(float_inputs, xs):
            ls[k] = x
        y = run_layers(twin, tree.pack_sequence_as(inputs, ls), lambda fn, op=None: fn, training)
        return loss_fn(y)

    xs = [leaves64[k] for k in float_inputs]
    try:
        value, grads = autodiff.value_and_grad(f, *xs)
    except Exception as error:  # noqa: BLE001
        notes.append(f"float64 finite-difference check skipped: the target failed in float64 ({type(error).__name__})")
        return []
    if np.asarray(value).dtype != np.float64 or any(g.dtype != np.float64 for g in grads):
        notes.append(
            "float64 finite-difference check skipped: the target computes in float32 even on float64 "
            "inputs (on JAX, float64 needs jax_enable_x64)"
        )
        return []

    def at(k, idx, h):
        ys = [x.copy() for x in xs]
        ys[k][idx] += h
        return float(to_numpy(f(*[ops.convert_to_tensor(y) for y in ys])))

    # A float64 output may still have been computed in float32 inside (a layer
    # that casts, or Keras' float64 -> float32 promotion on JAX and PyTorch):
    # then every output value is exactly a float32 number.
    outs = run_layers(twin, inputs64, lambda fn, op=None: fn, training)
    vals = np.concatenate([to_numpy(o).ravel() for o in tree.flatten(outs) if is_float_tensor(o)] or [np.zeros(0)])
    vals = vals[np.isfinite(vals) & (vals != np.round(vals))]
    # Or the inputs were cast to float32 on the way in: then a relative nudge
    # of 1e-10 to every input leaves the loss exactly unchanged.
    base = float(to_numpy(f(*[ops.convert_to_tensor(x) for x in xs])))
    nudged = float(to_numpy(f(*[ops.convert_to_tensor(x * (1 + 1e-10)) for x in xs])))
    expected = sum(float(np.sum(np.abs(g * x))) for g, x in zip(grads, xs)) * 1e-10
    quantised = expected > 1e-14 * max(1.0, abs(base)) and nudged == base
    if quantised or (vals.size and np.all(vals == vals.astype(np.float32).astype(np.float64))):
        notes.append("float64 finite-difference check skipped: the target computes in float32 internally")
        return []
    rng = np.random.default_rng(seed)
    findings, tested, kinks = [], 0, 0
    f0 = base
    for k, (x, g) in enumerate(zip(xs, grads)):
        for flat in rng.choice(x.size, size=min(samples, x.size), replace=False):
            idx = np.unravel_index(flat, x.shape)
            h = 1e-6 * max(1.0, abs(float(x[idx])))
            up, down = at(k, idx, h), at(k, idx, -h)
            fd1 = (up - down) / (2 * h)
            tested += 1
            scale = max(abs(fd1), abs(float(g[idx])))
            # One-sided slopes that differ: a kink exactly here (an apex, a
            # ReLU at 0), where autodiff rightly picks one side: inconclusive.
            if abs((up - f0) / h - (f0 - down) / h) > 1e-5 + 1e-3 * scale:
                kinks += 1
                continue
            # 1%: a wrong gradient is off by far more; float32 steps inside a
            # float64 target (inputs cast to float32) are off by less.
            if abs(float(g[idx]) - fd1) > 1e-6 + _FD_RTOL * scale:
                findings.append(
                    Finding(
                        "gradient_mismatch",
                        f"Input {float_inputs[k]} at {tuple(map(int, idx))}: autodiff gradient "
                        f"{float(g[idx]):.6g} but float64 finite differences give {fd1:.6g}.",
                        hint="mismatch",
                    )
                )
    checked.append(
        f"float64 finite differences ({tested} input entr{'y' if tested == 1 else 'ies'}"
        + (f", {kinks} at a kink, not compared" if kinks else "")
        + ")"
    )
    return findings

