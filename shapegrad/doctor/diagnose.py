"""The doctor's :func:`check`: one batch forward and backward, then the findings, in order.

Example:
    >>> import numpy as np
    >>> from shapegrad.ops import safe
    >>> report = check(safe.safe_norm, np.array([[3.0, 4.0], [1.0, 0.0]], "float32"))
    >>> report.ok, report.findings
    (True, [])
"""

import keras
import numpy as np
from keras import ops, tree

from shapegrad.doctor.fd import fd_findings
from shapegrad.doctor.findings import add_aftermath, dead_findings, describe_nonfinite, all_finite, forward_finding, gradient_finding, split_like, unique_variables
from shapegrad.doctor.report import Finding, Report
from shapegrad.doctor.trace import is_float_tensor, to_numpy, Prober, Recorder, run_layers
from shapegrad.ops import autodiff

__all__ = ["check"]





def _target_name(target):
    if isinstance(target, keras.Operation):
        return f"{target.name} ({type(target).__name__})"
    return getattr(target, "__qualname__", None) or type(target).__name__


def _wide(x):
    """``x`` in float32, or float64 if it already is (the loss of half-precision outputs is summed in float32)."""
    return x if keras.backend.standardize_dtype(x.dtype) == "float64" else ops.cast(x, "float32")


def _make_loss(loss, targets):
    if loss is None and targets is None:
        def fn(outputs):
            return sum(ops.sum(_wide(o)) for o in tree.flatten(outputs) if is_float_tensor(o))

        return fn, "sum of outputs"
    if loss is None:
        def fn(outputs):
            pairs = zip(tree.flatten(outputs), tree.flatten(targets))
            return sum(
                ops.mean(ops.square(_wide(o) - ops.cast(ops.convert_to_tensor(t), _wide(o).dtype)))
                for o, t in pairs
            )

        return fn, "mean squared error against targets"
    if isinstance(loss, str):
        if targets is None:
            raise ValueError(f"A named loss needs targets. Received: loss={loss!r}, targets=None")
        loss_fn, name = keras.losses.get(loss), loss
    elif callable(loss):
        loss_fn, name = loss, getattr(loss, "name", None) or getattr(loss, "__name__", type(loss).__name__)
    else:
        raise ValueError(f"Expected loss to be None, a string or a callable. Received: loss={loss!r}")

    def fn(outputs):
        value = loss_fn(outputs) if targets is None else loss_fn(tree.map_structure(ops.convert_to_tensor, targets), outputs)
        return ops.mean(value)

    return fn, name


def check(target, inputs, targets=None, loss=None, *, training=False, fd_samples=8, seed=0):
    """Diagnose NaN, Inf, dead and wrong gradients of ``target`` on one batch.

    Args:
        target: a Keras layer or model, or a callable of tensors.
        inputs: the batch: an array or a dict / list of arrays (batch on axis 0).
        targets: optional targets, shaped like the outputs.
        loss: ``None`` (MSE against ``targets``, else the sum of the outputs), a
            Keras loss name, or a callable (see the module docstring).
        training: passed to layers that take it.
        fd_samples: input entries checked by float64 finite differences (0: none).
        seed: picks those entries.

    Returns:
        a :class:`Report`; ``report.ok`` is ``True`` when nothing was found.
    """
    if not callable(target):
        raise ValueError(f"Expected target to be a Keras layer, model or callable. Received: target={target!r}")
    inputs = tree.map_structure(np.asarray, inputs)
    if targets is not None:
        targets = tree.map_structure(np.asarray, targets)
    loss_fn, loss_name = _make_loss(loss, targets)
    backend = keras.backend.backend()
    findings, checked, notes = [], [], []

    # 1. The data itself.
    in_leaves = tree.flatten(inputs)
    float_inputs = [k for k, x in enumerate(in_leaves) if is_float_tensor(x)]
    for k in float_inputs:
        if not np.isfinite(in_leaves[k]).all():
            findings.append(
                Finding("nonfinite_input", f"Input {k} is not finite: {describe_nonfinite(in_leaves[k])}.", hint="input")
            )

    # 2. Forward pass, recording every layer call.
    recorder = Recorder()
    outputs = run_layers(target, tree.map_structure(ops.convert_to_tensor, inputs), recorder, training)
    calls = recorder.calls
    loss_value = float(to_numpy(loss_fn(outputs)))
    checked.append(f"forward pass ({len(calls)} layer call{'s' if len(calls) != 1 else ''})")

    forward_bad = None
    for call in calls:
        if all_finite(call.inputs) and not all_finite(call.outputs):
            forward_bad = call
            break
    if forward_bad is not None and not findings:
        findings.append(forward_finding(forward_bad))

    # 3. Gradient pass: dLoss/d(inputs, weights, every call's inputs and outputs).
    weights = unique_variables(getattr(target, "trainable_variables", []) or [])
    w_values = [to_numpy(w.value) for w in weights]
    in_probes = [[np.zeros_like(x) for x in c.inputs] for c in calls]
    out_probes = [[np.zeros_like(y) for y in c.outputs] for c in calls]
    out_leaves = [to_numpy(o) for o in tree.flatten(outputs) if is_float_tensor(o)]
    sizes = [len(float_inputs), len(weights), sum(map(len, in_probes)), sum(map(len, out_probes)), len(out_leaves)]

    def total(*args):
        args = list(args)
        xin, args = args[: sizes[0]], args[sizes[0] :]
        ws, args = args[: sizes[1]], args[sizes[1] :]
        flat_in, args = args[: sizes[2]], args[sizes[2] :]
        flat_out, final = args[: sizes[3]], args[sizes[3] :]
        leaves = [ops.convert_to_tensor(x) for x in in_leaves]
        for k, x in zip(float_inputs, xin):
            leaves[k] = x
        prober = Prober(split_like(flat_in, in_probes), split_like(flat_out, out_probes))
        with keras.StatelessScope(state_mapping=list(zip(weights, ws))):
            y = run_layers(target, tree.pack_sequence_as(inputs, leaves), prober, training)
            final = iter(final)
            y = tree.map_structure(lambda o: o + next(final) if is_float_tensor(o) else o, y)
            value = loss_fn(y)
        return value, ()

    grad_args = (
        [in_leaves[k] for k in float_inputs]
        + w_values
        + [p for ps in in_probes for p in ps]
        + [p for ps in out_probes for p in ps]
        + [np.zeros_like(o) for o in out_leaves]
    )
    _, _, grads = autodiff.value_and_grad_with_aux(total, *grad_args)
    g_x, grads = grads[: sizes[0]], grads[sizes[0] :]
    g_w, grads = grads[: sizes[1]], grads[sizes[1] :]
    g_in, grads = split_like(grads[: sizes[2]], in_probes), grads[sizes[2] :]
    g_out, g_final = split_like(grads[: sizes[3]], out_probes), grads[sizes[3] :]
    grad_of_weight = {id(w): g for w, g in zip(weights, g_w)}
    checked.append(f"gradients of {len(float_inputs)} input(s) and {len(weights)} weight(s)")

    all_grads_finite = all_finite(g_x) and all_finite(g_w)
    if not all_finite(g_final) and all_finite(out_leaves):
        findings.append(
            Finding(
                "nonfinite_gradient",
                f"Non-finite gradient created in the loss ({loss_name}).",
                layer="loss",
                layer_class="loss",
                details=[f"gradient at the outputs: {describe_nonfinite(g) }" for g in g_final if not np.isfinite(g).all()],
                hint="unknown",
            )
        )
    elif not all_grads_finite and forward_bad is None and not findings:
        finding = gradient_finding(calls, g_in, g_out, grad_of_weight)
        if finding is None:
            finding = Finding(
                "nonfinite_gradient",
                "Non-finite gradient, not attributable to one layer.",
                details=[f"input {k}: {describe_nonfinite(g)}" for k, g in enumerate(g_x) if not np.isfinite(g).all()],
                hint="unknown",
            )
        findings.append(finding)
    elif not all_grads_finite and forward_bad is not None:
        notes.append("gradients are non-finite as a consequence of the non-finite forward values above")

    add_aftermath(findings, calls, forward_bad, g_in, weights, g_w, g_x, loss_value)

    # 4. Dead gradients.
    if all_grads_finite and all_finite(g_final):
        if not any(np.any(g != 0) for g in g_final):
            notes.append("the gradient at the outputs is exactly 0 (loss at a minimum?): dead-gradient check skipped")
        else:
            findings.extend(
                dead_findings(
                    calls, float_inputs, g_x, weights, g_w, g_in, g_out, target, inputs=inputs, training=training, notes=notes
                )
            )
            checked.append("dead gradients")

    # 5. float64 finite differences.
    if fd_samples and all_grads_finite and np.isfinite(loss_value) and float_inputs:
        findings.extend(
            fd_findings(target, inputs, float_inputs, loss_fn, training, fd_samples, seed, checked, notes)
        )

    return Report(
        backend=backend,
        target=_target_name(target),
        loss=loss_name,
        loss_value=loss_value,
        findings=findings,
        checked=checked,
        notes=notes,
    )

