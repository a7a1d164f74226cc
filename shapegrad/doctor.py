"""Find where NaN, Inf and dead gradients come from, in any Keras layer, model or function.

:func:`check` runs one batch forward and backward and reports, layer by layer:

- **non-finite values** in the forward pass: the first layer whose output is
  NaN or Inf although its inputs are finite;
- **non-finite gradients**: walking backwards, the first layer whose input (or
  weight) gradient is non-finite while the gradient arriving at its output is
  finite; then, inside it, the operation responsible and the user's source
  line, found with the backend's own machinery (see
  :mod:`shapegrad._doctor_backends`);
- **dead gradients**: input features or weights whose gradient is exactly zero
  over the whole batch while the gradient at the output is not;
- **wrong gradients**: a float64 finite-difference check of a few input
  entries, where the target can run in float64;

and, for each finding, a hint from :data:`HINTS`, the catalogue of known causes,
naming the :mod:`shapegrad.safe` function that fixes it.

Conventions:

- ``target`` is a Keras layer, a Keras model, or a callable of tensors.
  Sequential and Functional models are checked layer by layer; any other target
  is one layer.
- ``inputs`` is one batch: an array, or a dict / list of arrays; axis 0 is the
  batch. Layers run with ``training=False``.
- ``loss`` defaults to the mean squared error against ``targets`` or, without
  ``targets``, to the sum of the outputs. A callable ``loss`` is called as
  ``loss(targets, outputs)``, or ``loss(outputs)`` when ``targets`` is ``None``;
  a string names a Keras loss.
- Nothing about the target is changed: weights are read, never written, and
  every global debugging switch is restored.

Example:
    >>> import numpy as np, keras
    >>> from shapegrad import doctor
    >>> class Angle(keras.layers.Layer):
    ...     def call(self, x):
    ...         dot = keras.ops.sum(x * x, axis=-1)
    ...         return keras.ops.arccos(keras.ops.clip(dot, -1.0, 1.0))
    >>> report = doctor.check(Angle(name="angle"), np.array([[1.0, 0.0]], "float32"))
    >>> report.ok, report.findings[0].layer, report.findings[0].hint
    (False, 'angle', 'acos')
"""

import dataclasses
import json
import math
import os

import keras
import numpy as np
from keras import ops, tree

from shapegrad import _autodiff, _doctor_backends

__all__ = ["HINTS", "Finding", "Hint", "Report", "add_parser", "check"]


# --------------------------------------------------------------------------- catalogue


@dataclasses.dataclass(frozen=True)
class Hint:
    """A known cause of bad gradients and its cure.

    Attributes:
        key: short name (``"acos"``).
        title: one line naming the hazard.
        cause: why the backend produces NaN, Inf or zero there.
        fix: the :mod:`shapegrad.safe` function(s) that avoid it, and how.
    """

    key: str
    title: str
    cause: str
    fix: str


HINTS = {
    h.key: h
    for h in [
        Hint(
            "acos",
            "acos/asin at ±1 (typically after a clip)",
            "d acos(x)/dx = -1/sqrt(1 - x^2) is infinite at ±1; a clip in front multiplies "
            "it by its zero gradient: 0 * inf = NaN.",
            "shapegrad.safe.safe_acos(x) (finite gradient, 0 beyond ±1); for the angle "
            "between two vectors use shapegrad.safe.angle_between(u, v), accurate near 0 and pi.",
        ),
        Hint(
            "sqrt",
            "sqrt or a norm at 0",
            "d sqrt(x)/dx = 1/(2 sqrt(x)) is infinite at 0, so sqrt(sum(x^2)) at the zero "
            "vector gives inf * 0 = NaN (and sqrt is NaN below 0).",
            "shapegrad.safe.safe_norm(x) for norms, shapegrad.safe.safe_sqrt(x) otherwise "
            "(gradient 0 at x <= 0).",
        ),
        Hint(
            "normalize",
            "normalising a zero vector",
            "x / |x| is 0/0 at the zero vector, and its gradient divides by |x|.",
            "shapegrad.safe.safe_normalize(x, fallback=...) (the zero vector maps to fallback, "
            "gradient 0).",
        ),
        Hint(
            "log",
            "log of 0 (or of a negative number)",
            "log(0) = -inf and d log(x)/dx = 1/x is infinite at 0; log is NaN below 0. "
            "A ReLU or a probability that underflows feeds it exact zeros.",
            "shapegrad.safe.safe_log(x) (floored at log(tiny), gradient 0 below the floor); "
            "for log-probabilities work with logits (log_softmax, from_logits=True).",
        ),
        Hint(
            "div",
            "division by 0",
            "x / 0 is ±inf or NaN (0/0), and the gradient -x/y^2 is too.",
            "shapegrad.safe.safe_div(x, y, default=...) (gradient 0 where y == 0); if the "
            "denominator is a norm, shapegrad.safe.safe_normalize.",
        ),
        Hint(
            "pow",
            "pow with a fractional exponent at 0",
            "d x^p/dx = p x^(p-1) is infinite at 0 for p < 1, and x^p is NaN below 0.",
            "shapegrad.safe.safe_sqrt for p = 1/2; otherwise the double where: "
            "where(x > 0, where(x > 0, x, 1) ** p, 0).",
        ),
        Hint(
            "atan2",
            "atan2(0, 0)",
            "the gradient of atan2(y, x) is (x, -y) / (x^2 + y^2): 0/0 at the origin, and "
            "x^2 + y^2 underflows for |x|, |y| ~ 1e-23 in float32.",
            "shapegrad.safe.safe_atan2(y, x) (value and gradient 0 at the origin); "
            "shapegrad.safe.angle_between(u, v) for angles between vectors.",
        ),
        Hint(
            "where",
            "gradient leaking through the unselected branch of a where",
            "reverse mode differentiates both branches of where(c, a, b); where the unselected "
            "branch is NaN or has an infinite derivative, 0 * inf = NaN leaks through.",
            "the double where: make the input harmless first, then select "
            "(where(c, f(where(c, x, safe_value)), other)); every shapegrad.safe function does "
            "this, e.g. shapegrad.safe.safe_sqrt / safe_log / safe_div.",
        ),
        Hint(
            "float16",
            "float16 overflow",
            "float16 overflows to inf above 65504 (squares above 256, exp above 11).",
            "compute the op in float32 (cast before it, or the mixed_float16 policy, which "
            "keeps variables in float32) and use keras.optimizers.LossScaleOptimizer; "
            "shapegrad.safe.safe_norm rescales so squares cannot overflow.",
        ),
        Hint(
            "dead",
            "exactly zero gradient",
            "a clip, minimum/maximum, ReLU or a saturated sigmoid/tanh passes exactly 0 back "
            "over the whole batch, so these parameters cannot learn from it (acos(clip(x)) "
            "is flat where it clips).",
            "keep the path differentiable: shapegrad.safe.angle_between instead of "
            "acos(clip(dot)), losses from logits instead of saturated sigmoids, or inputs that "
            "stay inside the unclipped range.",
        ),
        Hint(
            "mismatch",
            "autodiff disagrees with finite differences",
            "a custom gradient, a stop_gradient or an op whose registered gradient is not its "
            "derivative at this point (or a kink exactly at this input).",
            "check custom gradients and stop_gradient uses in this layer; shapegrad.safe "
            "functions have exact gradients away from their documented hazard points.",
        ),
        Hint(
            "input",
            "the input batch itself is not finite",
            "NaN or Inf came in with the data, not from the model.",
            "clean the data (numpy.isfinite) before it reaches the model.",
        ),
        Hint(
            "unknown",
            "an operation outside the catalogue",
            "the operation named above produced the first non-finite value.",
            "guard its dangerous inputs with the double where (see shapegrad.safe).",
        ),
    ]
}

# Operation names (Keras ops, TensorFlow op types, JAX primitives, PyTorch
# autograd nodes), lower-cased with "backward<N>", "grad" and "_" removed.
_OP_HAZARD = {
    "arccos": "acos", "acos": "acos", "arcsin": "acos", "asin": "acos",
    "sqrt": "sqrt", "rsqrt": "sqrt", "sqrtgrad": "sqrt", "rsqrtgrad": "sqrt",
    "norm": "sqrt", "linalgvectornorm": "sqrt", "euclideannorm": "sqrt",
    "normalize": "normalize", "l2normalize": "normalize",
    "log": "log", "log1p": "log", "log2": "log", "log10": "log", "xlogy": "log",
    "divide": "div", "truedivide": "div", "realdiv": "div", "div": "div", "truediv": "div",
    "reciprocal": "div", "inv": "div", "divnonan": "div",
    "power": "pow", "pow": "pow",
    "arctan2": "atan2", "atan2": "atan2",
    "where": "where", "select": "where", "selectv2": "where", "selectn": "where",
}


# The Keras name of each hazard's operation, for ops the layer ran without keras.ops (``x / y``).
_CANONICAL_OP = {
    "acos": "arccos", "sqrt": "sqrt", "normalize": "normalize", "log": "log", "div": "divide",
    "pow": "power", "atan2": "arctan2", "where": "where",
}


def _hazard_of(name):
    """Catalogue key for an operation name from any backend, or ``None``."""
    if not name:
        return None
    import re

    key = re.sub(r"backward\d*$|grad$", "", name.lower().split(" ")[0].replace("_", ""))
    return _OP_HAZARD.get(key)


# --------------------------------------------------------------------------- report


@dataclasses.dataclass
class Finding:
    """One problem found by :func:`check`.

    Attributes:
        kind: ``"nonfinite_input"``, ``"nonfinite_forward"``,
            ``"nonfinite_gradient"``, ``"dead_gradient"`` or ``"gradient_mismatch"``.
        summary: one line saying what is wrong and where.
        layer, layer_class: the layer held responsible (``"loss"`` for the loss).
        op: the operation, as a ``keras.ops`` name where one was on the stack
            (``"arccos"``), else as the backend named it.
        backend_op: what the backend itself reported (``"AcosBackward0"``).
        location: ``"file.py:12"``, the user's line that created the op.
        source: that line's code.
        hint: key into :data:`HINTS`.
        details: further lines (what entered and left the layer).
        op_hint: for a ``where`` leak, the catalogue key of the operation in the branch.
        followed: for the first non-finite finding, what followed from it (later
            layers, the loss, the gradients and weights it reached).
    """

    kind: str
    summary: str
    layer: str | None = None
    layer_class: str | None = None
    op: str | None = None
    backend_op: str | None = None
    location: str | None = None
    source: str | None = None
    hint: str | None = None
    details: list = dataclasses.field(default_factory=list)
    op_hint: str | None = None
    followed: str | None = None

    @property
    def fix(self):
        """The cure: the hint's fix, plus the fix for the operation when the hint is about a ``where``."""
        if self.hint not in HINTS:
            return None
        fix = HINTS[self.hint].fix
        if self.op_hint in HINTS and self.op_hint != self.hint:
            fix += f" For the {HINTS[self.op_hint].title} itself: {HINTS[self.op_hint].fix}"
        return fix

    def to_dict(self):
        d = dataclasses.asdict(self)
        if self.hint in HINTS:
            h = HINTS[self.hint]
            d["hint_title"], d["cause"], d["fix"] = h.title, h.cause, self.fix
        return d


@dataclasses.dataclass
class Report:
    """What :func:`check` found. ``str(report)`` is for people, ``to_json()`` for programs.

    Attributes:
        backend: the Keras backend that ran the check.
        target: the target's name.
        loss: how the loss was formed, and ``loss_value`` its value.
        findings: list of :class:`Finding`; empty when healthy.
        checked: what was checked (for the text report).
        notes: checks that were skipped, and why.
    """

    backend: str
    target: str
    loss: str
    loss_value: float
    findings: list = dataclasses.field(default_factory=list)
    checked: list = dataclasses.field(default_factory=list)
    notes: list = dataclasses.field(default_factory=list)

    @property
    def ok(self):
        """``True`` when nothing was found."""
        return not self.findings

    def to_dict(self):
        return {
            "ok": self.ok,
            "backend": self.backend,
            "target": self.target,
            "loss": self.loss,
            "loss_value": _json_float(self.loss_value),
            "findings": [f.to_dict() for f in self.findings],
            "checked": list(self.checked),
            "notes": list(self.notes),
        }

    def to_json(self, indent=2):
        return json.dumps(self.to_dict(), indent=indent)

    def __str__(self):
        head = "healthy" if self.ok else f"{len(self.findings)} finding" + (
            "s" if len(self.findings) != 1 else ""
        )
        lines = [
            f"shapegrad doctor: {self.target}: {head}",
            f"  backend {self.backend}; loss: {self.loss} = {self.loss_value:.6g}",
        ]
        for k, f in enumerate(self.findings, 1):
            lines.append("")
            lines.append(f"[{k}] {f.summary}")
            for d in f.details:
                lines.append(f"    {d}")
            if f.op:
                extra = f"  ({self.backend} reported: {f.backend_op})" if f.backend_op and f.backend_op != f.op else ""
                lines.append(f"    operation: {f.op}{extra}")
            if f.location:
                lines.append(f"    source:    {f.location}")
                if f.source:
                    lines.append(f"               {f.source}")
            if f.followed:
                lines.append(f"    then:      {f.followed}")
            if f.hint in HINTS:
                h = HINTS[f.hint]
                lines.append(f"    cause:     {h.title}: {h.cause}")
                lines.append(f"    fix:       {f.fix}")
        lines.append("")
        lines.append("checked: " + "; ".join(self.checked))
        for n in self.notes:
            lines.append(f"note: {n}")
        return "\n".join(lines)


def _json_float(x):
    x = float(x)
    return x if math.isfinite(x) else str(x)


# --------------------------------------------------------------------------- running the target


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


def _is_float_tensor(x):
    if x is None or isinstance(x, (bool, int, float, str)):
        return False
    try:
        if not ops.is_tensor(x) and not isinstance(x, np.ndarray):
            return False
        return "float" in keras.backend.standardize_dtype(x.dtype)
    except Exception:  # noqa: BLE001 - anything that is not a float tensor
        return False


def _call_kwargs(op, training):
    if isinstance(op, keras.Layer) and getattr(op, "_call_has_training_arg", False):
        return {"training": training}
    return {}


def _run(target, inputs, wrap, training):
    """Run ``target`` on ``inputs``, calling each layer through ``wrap(layer)``."""
    if isinstance(target, keras.Sequential):
        x = inputs
        for layer in target.layers:
            x = wrap(layer)(x, **_call_kwargs(layer, training))
        return x
    if isinstance(target, keras.Model) and hasattr(target, "_run_through_graph") and hasattr(
        target, "_nodes_by_depth"
    ):
        from keras.src.models.functional import operation_fn

        flat = target._standardize_inputs(inputs)
        outputs = target._run_through_graph(
            flat, operation_fn=lambda op: wrap(operation_fn(op, training=training), op)
        )
        return outputs[0] if isinstance(outputs, (list, tuple)) and len(outputs) == 1 else outputs
    return wrap(target)(inputs, **_call_kwargs(target, training))


class _Recorder:
    """``wrap`` for the recording pass: stores each call's inputs and outputs."""

    def __init__(self):
        self.calls = []

    def __call__(self, fn, op=None):
        op = fn if op is None else op

        def call(*args, **kwargs):
            y = fn(*args, **kwargs)
            leaves = tree.flatten((args, kwargs))
            float_in = [k for k, leaf in enumerate(leaves) if _is_float_tensor(leaf)]
            outs = [o for o in tree.flatten(y) if _is_float_tensor(o)]
            self.calls.append(
                _Call(
                    index=len(self.calls),
                    op=op,
                    struct=(args, kwargs),
                    float_in=float_in,
                    inputs=[_np(leaves[k]) for k in float_in],
                    outputs=[_np(o) for o in outs],
                    out_struct=y,
                )
            )
            return y

        return call


class _Prober:
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
            leaves = [leaf + next(probes) if _is_float_tensor(leaf) else leaf for leaf in leaves]
            args, kwargs = tree.pack_sequence_as((args, kwargs), leaves)
            y = fn(*args, **kwargs)
            probes = iter(self.out_probes[k])
            return tree.map_structure(lambda o: o + next(probes) if _is_float_tensor(o) else o, y)

        return call


def _np(x):
    if hasattr(x, "detach"):
        x = x.detach()
    return np.asarray(ops.convert_to_numpy(x))


def _call_fn(call, n_weights):
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
        return [o for o in tree.flatten(y) if _is_float_tensor(o)]

    return f


# --------------------------------------------------------------------------- the check


def _describe(a):
    a = np.asarray(a)
    parts = []
    for label, mask in (("NaN", np.isnan(a)), ("+inf", np.isposinf(a)), ("-inf", np.isneginf(a))):
        if mask.any():
            parts.append(f"{int(mask.sum())} {label}")
    return f"{', '.join(parts)} of {a.size} entries"


def _finite(arrays):
    return all(np.isfinite(a).all() for a in arrays)


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
            return sum(ops.sum(_wide(o)) for o in tree.flatten(outputs) if _is_float_tensor(o))

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
    float_inputs = [k for k, x in enumerate(in_leaves) if _is_float_tensor(x)]
    for k in float_inputs:
        if not np.isfinite(in_leaves[k]).all():
            findings.append(
                Finding("nonfinite_input", f"Input {k} is not finite: {_describe(in_leaves[k])}.", hint="input")
            )

    # 2. Forward pass, recording every layer call.
    recorder = _Recorder()
    outputs = _run(target, tree.map_structure(ops.convert_to_tensor, inputs), recorder, training)
    calls = recorder.calls
    loss_value = float(_np(loss_fn(outputs)))
    checked.append(f"forward pass ({len(calls)} layer call{'s' if len(calls) != 1 else ''})")

    forward_bad = None
    for call in calls:
        if _finite(call.inputs) and not _finite(call.outputs):
            forward_bad = call
            break
    if forward_bad is not None and not findings:
        findings.append(_forward_finding(forward_bad))

    # 3. Gradient pass: dLoss/d(inputs, weights, every call's inputs and outputs).
    weights = _unique(getattr(target, "trainable_variables", []) or [])
    w_values = [_np(w.value) for w in weights]
    in_probes = [[np.zeros_like(x) for x in c.inputs] for c in calls]
    out_probes = [[np.zeros_like(y) for y in c.outputs] for c in calls]
    out_leaves = [_np(o) for o in tree.flatten(outputs) if _is_float_tensor(o)]
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
        prober = _Prober(_split(flat_in, in_probes), _split(flat_out, out_probes))
        with keras.StatelessScope(state_mapping=list(zip(weights, ws))):
            y = _run(target, tree.pack_sequence_as(inputs, leaves), prober, training)
            final = iter(final)
            y = tree.map_structure(lambda o: o + next(final) if _is_float_tensor(o) else o, y)
            value = loss_fn(y)
        return value, ()

    grad_args = (
        [in_leaves[k] for k in float_inputs]
        + w_values
        + [p for ps in in_probes for p in ps]
        + [p for ps in out_probes for p in ps]
        + [np.zeros_like(o) for o in out_leaves]
    )
    _, _, grads = _autodiff.value_and_grad_with_aux(total, *grad_args)
    g_x, grads = grads[: sizes[0]], grads[sizes[0] :]
    g_w, grads = grads[: sizes[1]], grads[sizes[1] :]
    g_in, grads = _split(grads[: sizes[2]], in_probes), grads[sizes[2] :]
    g_out, g_final = _split(grads[: sizes[3]], out_probes), grads[sizes[3] :]
    grad_of_weight = {id(w): g for w, g in zip(weights, g_w)}
    checked.append(f"gradients of {len(float_inputs)} input(s) and {len(weights)} weight(s)")

    all_grads_finite = _finite(g_x) and _finite(g_w)
    if not _finite(g_final) and _finite(out_leaves):
        findings.append(
            Finding(
                "nonfinite_gradient",
                f"Non-finite gradient created in the loss ({loss_name}).",
                layer="loss",
                layer_class="loss",
                details=[f"gradient at the outputs: {_describe(g) }" for g in g_final if not np.isfinite(g).all()],
                hint="unknown",
            )
        )
    elif not all_grads_finite and forward_bad is None and not findings:
        finding = _gradient_finding(calls, g_in, g_out, grad_of_weight)
        if finding is None:
            finding = Finding(
                "nonfinite_gradient",
                "Non-finite gradient, not attributable to one layer.",
                details=[f"input {k}: {_describe(g)}" for k, g in enumerate(g_x) if not np.isfinite(g).all()],
                hint="unknown",
            )
        findings.append(finding)
    elif not all_grads_finite and forward_bad is not None:
        notes.append("gradients are non-finite as a consequence of the non-finite forward values above")

    _add_aftermath(findings, calls, forward_bad, g_in, weights, g_w, g_x, loss_value)

    # 4. Dead gradients.
    if all_grads_finite and _finite(g_final):
        if not any(np.any(g != 0) for g in g_final):
            notes.append("the gradient at the outputs is exactly 0 (loss at a minimum?): dead-gradient check skipped")
        else:
            findings.extend(_dead_findings(calls, float_inputs, g_x, weights, g_w, g_in, g_out, target))
            checked.append("dead gradients")

    # 5. float64 finite differences.
    if fd_samples and all_grads_finite and np.isfinite(loss_value) and float_inputs:
        findings.extend(
            _fd_findings(target, inputs, float_inputs, loss_fn, training, fd_samples, seed, checked, notes)
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


def _unique(variables):
    seen, out = set(), []
    for v in variables:
        if id(v) not in seen:
            seen.add(id(v))
            out.append(v)
    return out


def _split(flat, like):
    out, k = [], 0
    for group in like:
        out.append(list(flat[k : k + len(group)]))
        k += len(group)
    return out


def _where(call):
    return f"layer '{call.name}' ({call.class_name})"


def _apply_site(finding, site, fallback_key=None, leak=False):
    """Fill op, location and hint of ``finding`` from a backend :class:`Site`."""
    key = None
    if site is not None:
        finding.backend_op = site.backend_op
        key = _hazard_of(site.keras_op) or _hazard_of(site.backend_op.split(" in ")[-1]) or _hazard_of(
            site.backend_op
        )
        finding.op = site.keras_op or _CANONICAL_OP.get(key) or site.backend_op
        frame = site.user_frame
        if frame is not None:
            finding.location = f"{_short_path(frame[0])}:{frame[1]} (in {frame[2]})"
            finding.source = frame[3]
    if leak:
        finding.op_hint = key
        key = "where"
    finding.hint = key or fallback_key or "unknown"


def _short_path(path):
    try:
        rel = os.path.relpath(path)
        return rel if not rel.startswith("..") else path
    except ValueError:
        return path


def _forward_finding(call):
    bad = [y for y in call.outputs if not np.isfinite(y).all()]
    finding = Finding(
        "nonfinite_forward",
        f"Non-finite values first produced by {_where(call)} in the forward pass.",
        layer=call.name,
        layer_class=call.class_name,
        details=["inputs of the layer: finite", f"output of the layer: {_describe(bad[0])}"],
    )
    site = _locate(call, None)
    float16 = any(y.dtype == np.float16 for y in bad) and not np.isnan(bad[0]).any()
    _apply_site(finding, site, fallback_key="float16" if float16 else None)
    if float16 and finding.hint not in ("log", "div"):
        finding.hint = "float16"
    return finding


def _locate(call, cotangents):
    """Run the backend locator on one recorded call; ``None`` if it finds nothing or fails."""
    weights = call.weights
    args = list(call.inputs) + [_np(w.value) for w in weights]
    fn = _call_fn(call, len(weights))
    # Keras trims its own frames from tracebacks; the locators need them.
    filtering = keras.config.is_traceback_filtering_enabled()
    keras.config.disable_traceback_filtering()
    try:
        if cotangents is None:
            return _doctor_backends.locate_forward(fn, args)
        return _doctor_backends.locate_backward(fn, args, cotangents)
    except Exception as error:  # noqa: BLE001 - the report stands without the op
        return _doctor_backends.Site(phase="unknown", backend_op=f"(locator failed: {type(error).__name__})")
    finally:
        if filtering:
            keras.config.enable_traceback_filtering()


def _gradient_finding(calls, g_in, g_out, grad_of_weight):
    for call in reversed(calls):
        outs, ins = g_out[call.index], g_in[call.index]
        w_grads = [(w, grad_of_weight.get(id(w))) for w in call.weights]
        w_bad = [(w, g) for w, g in w_grads if g is not None and not np.isfinite(g).all()]
        if not _finite(outs) or (_finite(ins) and not w_bad):
            continue
        details = ["gradient arriving at its output: finite"]
        details += [f"gradient w.r.t. its input {k}: {_describe(g)}" for k, g in enumerate(ins) if not np.isfinite(g).all()]
        details += [f"gradient w.r.t. weight '{w.path}': {_describe(g)}" for w, g in w_bad]
        finding = Finding(
            "nonfinite_gradient",
            f"Non-finite gradient created in {_where(call)}.",
            layer=call.name,
            layer_class=call.class_name,
            details=details,
        )
        inner = _locate(call, None)  # a non-finite value inside a finite layer output: a masked branch
        site = _locate(call, outs)
        leak = inner is not None and inner.phase == "forward"
        if site is not None and site.zero_cotangent:
            leak = True
        if site is None or site.phase == "unknown":
            site = inner or site
        _apply_site(finding, site, leak=leak)
        if leak and inner is not None:
            finding.details.append(
                f"inside it, {inner.keras_op or inner.backend_op} computes non-finite values "
                "that a where/select discards in the forward pass"
            )
        finding._call_index = call.index
        return finding
    return None


def _names(calls, limit=4):
    shown = [f"'{c.name}'" for c in calls[:limit]]
    return ", ".join(shown) + (f" and {len(calls) - limit} more" if len(calls) > limit else "")


def _add_aftermath(findings, calls, forward_bad, g_in, weights, g_w, g_x, loss_value):
    """Root cause first: fill the first non-finite finding's ``followed`` with what followed from it.

    Forward: the later layers whose outputs are non-finite, the loss, the gradients.
    Backward: the earlier layers the non-finite gradient flows back through, and the weights it reaches.
    """
    lead = next((f for f in findings if f.kind in ("nonfinite_forward", "nonfinite_gradient")), None)
    if lead is None:
        return
    bad_w = [w.path for w, g in zip(weights, g_w) if not np.isfinite(g).all()]
    bad_x = sum(not np.isfinite(g).all() for g in g_x)
    grads = f"non-finite gradients for {len(bad_w)} of {len(weights)} weight(s)" + (
        f" ({', '.join(bad_w[:4])}{', ...' if len(bad_w) > 4 else ''})" if bad_w else ""
    ) + (f" and {bad_x} input(s)" if bad_x else "")
    if lead.kind == "nonfinite_forward" and forward_bad is not None:
        later = [c for c in calls[forward_bad.index + 1 :] if not _finite(c.outputs)]
        parts = [f"non-finite outputs of layer(s) {_names(later)}"] if later else []
        parts.append(f"the loss = {loss_value:.6g}")
        lead.followed = "; ".join(parts + [grads]) + " (all from this first one)"
        return
    index = getattr(lead, "_call_index", None)
    if lead.kind == "nonfinite_gradient" and index is not None:
        earlier = [c for c in calls[:index] if not _finite(g_in[c.index])][::-1]
        via = f"it flows back through layer(s) {_names(earlier)}: " if earlier else ""
        lead.followed = f"{via}{grads} (all from this first one)"


def _dead_mask(g):
    """Entries (all axes but the batch) whose gradient is exactly 0 for every sample."""
    g = np.asarray(g)
    if g.ndim == 0:
        return np.asarray(g == 0)
    return np.all(g == 0, axis=0)


def _dead_findings(calls, float_inputs, g_x, weights, g_w, g_in, g_out, target):
    findings = []
    culprit = None
    for call in reversed(calls):
        if any(_dead_mask(g).any() for g in g_in[call.index]) and not any(
            _dead_mask(g).any() for g in g_out[call.index]
        ):
            culprit = call
            break
    for k, g in zip(float_inputs, g_x):
        mask = _dead_mask(g)
        if mask.any():
            idx = [list(map(int, i)) if len(i) > 1 else int(i[0]) for i in zip(*np.nonzero(mask))] if mask.ndim else []
            shown = ", ".join(str(i) for i in idx[:8]) + (", ..." if len(idx) > 8 else "")
            layer = culprit or (calls[0] if len(calls) == 1 else None)
            findings.append(
                Finding(
                    "dead_gradient",
                    f"Input {k}: gradient exactly 0 over the whole batch for {int(mask.sum())} of "
                    f"{mask.size} feature(s)" + (f", cut in {_where(layer)}." if layer else "."),
                    layer=layer.name if layer else None,
                    layer_class=layer.class_name if layer else None,
                    details=[f"dead features (index after the batch axis): {shown}"],
                    hint="dead",
                )
            )
    owner = {}
    for call in calls:
        for w in call.weights:
            owner.setdefault(id(w), call)
    for w, g in zip(weights, g_w):
        if np.all(g == 0):
            call = owner.get(id(w))
            findings.append(
                Finding(
                    "dead_gradient",
                    f"Weight '{w.path}': gradient exactly 0 everywhere.",
                    layer=call.name if call else None,
                    layer_class=call.class_name if call else None,
                    hint="dead",
                )
            )
    return findings


# --------------------------------------------------------------------------- float64 finite differences


_FD_RTOL = 1e-2


def _float64_target(target, inputs64):
    """A float64 copy of ``target`` (same weights) or ``None`` when it cannot be made."""
    if not isinstance(target, keras.Layer):
        return target

    def clone_layer(layer):
        config = layer.get_config()
        config["dtype"] = "float64"
        return layer.__class__.from_config(config)

    if isinstance(target, keras.Model) and (isinstance(target, keras.Sequential) or hasattr(target, "_nodes_by_depth")):
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
        d.assign(np.asarray(_np(s.value), dtype=keras.backend.standardize_dtype(d.dtype)))
    return twin


def _fd_findings(target, inputs, float_inputs, loss_fn, training, samples, seed, checked, notes):
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
        y = _run(twin, tree.pack_sequence_as(inputs, ls), lambda fn, op=None: fn, training)
        return loss_fn(y)

    xs = [leaves64[k] for k in float_inputs]
    try:
        value, grads = _autodiff.value_and_grad(f, *xs)
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
        return float(_np(f(*[ops.convert_to_tensor(y) for y in ys])))

    # A float64 output may still have been computed in float32 inside (a layer
    # that casts, or Keras' float64 -> float32 promotion on JAX and PyTorch):
    # then every output value is exactly a float32 number.
    outs = _run(twin, inputs64, lambda fn, op=None: fn, training)
    vals = np.concatenate([_np(o).ravel() for o in tree.flatten(outs) if _is_float_tensor(o)] or [np.zeros(0)])
    vals = vals[np.isfinite(vals) & (vals != np.round(vals))]
    # Or the inputs were cast to float32 on the way in: then a relative nudge
    # of 1e-10 to every input leaves the loss exactly unchanged.
    base = float(_np(f(*[ops.convert_to_tensor(x) for x in xs])))
    nudged = float(_np(f(*[ops.convert_to_tensor(x * (1 + 1e-10)) for x in xs])))
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


# --------------------------------------------------------------------------- command line


def _load_target(spec, unsafe, modules=()):
    """A ``.keras`` file (loaded with Keras' safe_mode unless ``unsafe``) or ``module:attribute``."""
    import importlib
    import inspect

    from shapegrad.cli import UsageError

    for name in modules:
        try:
            importlib.import_module(name)
        except ImportError as error:
            raise UsageError(f"cannot import --import {name}: {error}") from None

    if spec.endswith(".keras") or os.path.isfile(spec):
        if not os.path.isfile(spec):
            raise UsageError(f"no such model file: {spec}")
        try:
            return keras.saving.load_model(spec, safe_mode=not unsafe)
        except Exception as error:  # noqa: BLE001 - any load failure is the user's file
            reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            if not unsafe and "safe_mode" in str(error):
                reason += " (pass --unsafe only for a file you trust)"
            elif "deserialized" in str(error) or "Unknown" in str(error):
                reason += " (custom layers: --import the module that registers them)"
            raise UsageError(f"cannot load {spec}: {reason}") from None
    module_name, sep, attribute = spec.partition(":")
    if not sep or not module_name or not attribute:
        raise UsageError(f"TARGET must be a .keras file or module:attribute. Received: {spec!r}")
    try:
        obj = importlib.import_module(module_name)
        for part in attribute.split("."):
            obj = getattr(obj, part)
    except (ImportError, AttributeError) as error:
        raise UsageError(f"cannot import {spec}: {error}") from None
    if isinstance(obj, keras.Operation):
        return obj
    if inspect.isclass(obj):
        return obj()  # a layer or model class with default arguments
    if callable(obj):
        try:
            needs_args = any(
                p.default is p.empty and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
                for p in inspect.signature(obj).parameters.values()
            )
        except (TypeError, ValueError):
            needs_args = True
        return obj if needs_args else obj()  # a factory, or a function of tensors
    raise UsageError(f"{spec} is not a layer, model, factory or function. Received: {type(obj).__name__}")


def _load_array(path, what):
    from shapegrad.cli import UsageError

    try:
        data = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as error:
        raise UsageError(f"cannot read {what} {path}: {error}") from None
    if isinstance(data, np.lib.npyio.NpzFile):
        return {k: data[k] for k in data.files}
    return data


def _run_cli(args):
    from shapegrad.cli import UsageError

    target = _load_target(args.target, args.unsafe, args.modules)
    inputs = _load_array(args.input, "--input")
    targets = None if args.targets is None else _load_array(args.targets, "--target")
    try:
        report = check(target, inputs, targets=targets, loss=args.loss)
    except (ValueError, TypeError) as error:
        raise UsageError(f"cannot run {args.target} on {args.input}: {error}") from None
    print(report.to_json() if args.json else report)
    return 0 if report.ok else 1


def add_parser(subparsers):
    parser = subparsers.add_parser(
        "doctor",
        help="find where NaN, Inf and dead gradients come from",
        description="Run one batch through TARGET forward and backward and report which layer and "
        "operation first produce NaN, Inf, dead or wrong gradients, with a fix for each. "
        "Exit status: 0 healthy, 1 findings, 2 bad input.",
    )
    parser.add_argument("target", metavar="TARGET", help="a saved .keras model, or module:attribute naming a layer, model, factory or function")
    parser.add_argument("--input", required=True, metavar="FILE.npy", help="the input batch (.npy; .npz for named inputs)")
    parser.add_argument("--target", dest="targets", metavar="FILE.npy", help="targets for the default MSE loss (default: the loss is the sum of the outputs)")
    parser.add_argument("--loss", metavar="NAME", help="a Keras loss name (with --target), e.g. the model's compiled loss")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.add_argument(
        "--unsafe",
        action="store_true",
        help="load the .keras file with Keras' safe_mode off (lets it run code such as Lambda layers: only for files you trust)",
    )
    parser.add_argument(
        "--import",
        dest="modules",
        action="append",
        default=[],
        metavar="MODULE",
        help="import MODULE first, so that the custom layers it registers can be loaded (repeatable)",
    )
    parser.set_defaults(run=_run_cli)


# --------------------------------------------------------------------------- NaNGuard (shapegrad/guard.py)

from shapegrad.guard import NaNGuard  # noqa: E402  (guard imports this module lazily)

__all__ += ["NaNGuard"]
