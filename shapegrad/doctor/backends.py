"""Each backend's own debugging machinery for :mod:`shapegrad.doctor`, behind two functions.

- :func:`locate_forward` runs ``fn`` and names the first operation whose output
  is non-finite although its inputs are finite.
- :func:`locate_backward` runs ``fn`` and its vector-Jacobian product and names
  the first operation of the backward pass that turns finite gradients into
  non-finite ones.

Machinery per backend (every global switch is restored on the way out, also on
errors):

- TensorFlow: ``tf.debugging.enable_check_numerics`` in eager mode (it does not
  work under XLA); the failing gradient function (``_AcosGrad``) is matched to
  its forward op, whose creation stack an op callback recorded.
- JAX: the jaxpr of the function and of its VJP, evaluated one equation at a
  time (what ``jax_debug_nans`` / ``jax_debug_infs`` do on a failure), with
  each equation's own source information.
- PyTorch: anomaly mode (``detect_anomaly``) for the forward traceback of each
  autograd node, plus node hooks that see Inf as well as NaN (anomaly mode alone
  checks NaN only); a ``TorchFunctionMode`` for the forward pass.

Both functions take ``fn(*tensors) -> list of tensors`` and NumPy ``args``, and
return a :class:`Site` or ``None``.

The private parts of that machinery are read through :mod:`shapegrad._keras_internals`.
"""

import contextlib
import dataclasses
import linecache
import re
import traceback
import warnings

import keras
import numpy as np

from shapegrad import _keras_internals
from shapegrad.ops.autodiff import torch_leaf

__all__ = ["Site", "locate_forward", "locate_backward"]

# Frames inside these are library code, not the user's.
_LIBRARY_MARKERS = (
    "/keras/",
    "/tensorflow/",
    "/tf_keras/",
    "/jax/",
    "/jaxlib/",
    "/torch/",
    "/numpy/",
    "/shapegrad/doctor/",
    "/shapegrad/autodiff.py",
    "<frozen",
    "/contextlib.py",
)


@dataclasses.dataclass
class Site:
    """Where a non-finite value was first produced inside one layer.

    Attributes:
        phase: ``"forward"`` or ``"backward"``.
        backend_op: what the backend itself reported, e.g. ``"Reciprocal in
            _AcosGrad"`` (TensorFlow), ``"rsqrt"`` (JAX), ``"AcosBackward0"``
            (PyTorch).
        keras_op: the innermost ``keras.ops`` function on the creation stack
            (``"arccos"``), or ``None`` when the layer called the backend directly.
        frames: the creation stack, outermost first, as
            ``(filename, lineno, function, code)``.
        zero_cotangent: ``True`` when the backend showed that the gradient
            arriving at the op was exactly zero where its result became
            non-finite (``0 * inf``: a branch that was not selected); ``None``
            when the backend cannot tell.
        message: the backend's own message, first line.
    """

    phase: str
    backend_op: str
    keras_op: str | None = None
    frames: list = dataclasses.field(default_factory=list)
    zero_cotangent: bool | None = None
    message: str = ""

    @property
    def user_frame(self):
        """The innermost frame outside Keras and the backends: the user's line."""
        for frame in reversed(self.frames):
            name = frame[0].replace("\\", "/")
            if not any(marker in name for marker in _LIBRARY_MARKERS):
                return frame
        return None


def _frames_from(summary):
    frames = []
    for f in summary:
        code = (f.line or linecache.getline(f.filename, f.lineno)).strip()
        frames.append((f.filename, f.lineno, f.name, code))
    return frames


def _keras_op(frames):
    for filename, _, function, _ in reversed(frames):
        name = _keras_internals.keras_op_name(filename, function)
        if name is not None:
            return name
    return None


def _site(phase, backend_op, frames, message="", zero_cotangent=None):
    return Site(
        phase=phase,
        backend_op=backend_op,
        keras_op=_keras_op(frames),
        frames=frames,
        zero_cotangent=zero_cotangent,
        message=message.strip().splitlines()[0] if message.strip() else "",
    )


def locate_forward(fn, args):
    """First op in ``fn(*args)`` whose output is non-finite while its inputs are finite."""
    backend = keras.backend.backend()
    if backend == "tensorflow":
        return _tf_locate(fn, args, None)
    if backend == "jax":
        return _jax_locate(fn, args, None)
    if backend == "torch":
        return _torch_forward(fn, args)
    return None


def locate_backward(fn, args, cotangents):
    """First op of the backward pass of ``fn`` at ``args`` (cotangents ``cotangents``) to go non-finite."""
    backend = keras.backend.backend()
    if backend == "tensorflow":
        return _tf_locate(fn, args, cotangents)
    if backend == "jax":
        return _jax_locate(fn, args, cotangents)
    if backend == "torch":
        return _torch_backward(fn, args, cotangents)
    return None


# --------------------------------------------------------------------------- TensorFlow


def _tf_locate(fn, args, cotangents):
    import tensorflow as tf

    created = []  # (op_type, input tensors, creation stack) of every eager op

    def record(op_type, inputs, attrs, outputs, op_name=None, graph=None):
        if graph is None:
            created.append((op_type, tuple(inputs), traceback.extract_stack()[:-1]))
        return None

    xs = [tf.convert_to_tensor(a) for a in args]
    phase = "forward"
    try:
        with tf.GradientTape() as tape:
            for x in xs:
                tape.watch(x)
            tf.debugging.enable_check_numerics()
            with _keras_internals.tf_recording_ops(record) if cotangents is not None else contextlib.nullcontext():
                ys = fn(*xs)
        if cotangents is None:
            return None
        phase = "backward"
        pairs = [(y, c) for y, c in zip(ys, cotangents) if c is not None]
        tape.gradient(
            [y for y, _ in pairs],
            xs,
            output_gradients=[tf.convert_to_tensor(c, dtype=y.dtype) for y, c in pairs],
        )
        return None
    except tf.errors.InvalidArgumentError as error:
        parsed = _keras_internals.tf_numerics_error(str(error))
        if parsed is None:
            raise
        op_type, detail = parsed
        frames = _frames_from(traceback.extract_tb(error.__traceback__))
        if phase == "forward":
            return _site("forward", op_type, _keras_internals.tf_drop_internal_frames(frames), detail)
        # Backward: find the gradient function that ran the op, and the forward
        # op it differentiates (matched by its input tensors).
        grad_name, mock = _keras_internals.tf_failing_gradient(error.__traceback__)
        backend_op = op_type if grad_name is None else f"{op_type} in {grad_name}"
        forward_frames = []
        if mock is not None:
            ids = tuple(id(t) for t in getattr(mock, "inputs", ()) or ())
            wanted = grad_name.strip("_")[: -len("Grad")] if grad_name else None
            candidates = [c for c in created if tuple(id(t) for t in c[1]) == ids]
            typed = [c for c in candidates if c[0] == wanted]
            # No tensor matched (the gradient function saw a converted copy):
            # fall back to the last forward op of that type.
            chosen = (typed or candidates or [c for c in created if c[0] == wanted] or [None])[-1]
            if chosen is not None:
                forward_frames = _keras_internals.tf_drop_internal_frames(_frames_from(chosen[2]))
                if grad_name is None:
                    backend_op = f"{op_type} (gradient of {chosen[0]})"
        return _site("backward", backend_op, forward_frames, detail)
    finally:
        tf.debugging.disable_check_numerics()


# --------------------------------------------------------------------------- JAX


def _jax_locate(fn, args, cotangents):
    """Evaluate the jaxpr of ``fn`` (and of its VJP) one equation at a time.

    This is what ``jax_debug_nans`` / ``jax_debug_infs`` do after a failure
    (re-run "de-optimized", op by op), done explicitly: the flags alone proved
    unreliable here, as JAX's caches of already-compiled computations decide
    whether the check runs. Each equation keeps the source information of the
    forward operation it came from, also in the transposed (backward) part, so
    the user's line is known for backward failures too.
    """
    import jax

    xs = [jax.numpy.asarray(a) for a in args]
    if cotangents is None:
        closed = jax.make_jaxpr(lambda *a: list(fn(*a)))(*xs)
        flat = xs
    else:
        ys = jax.eval_shape(lambda *a: list(fn(*a)), *xs)
        cts = [
            jax.numpy.zeros(y.shape, y.dtype) if c is None else jax.numpy.asarray(c, dtype=y.dtype)
            for y, c in zip(ys, cotangents)
        ]

        def vjp(xs, cts):
            _, pullback = jax.vjp(lambda *a: list(fn(*a)), *xs)
            return pullback(cts)

        closed = jax.make_jaxpr(vjp)(xs, cts)
        flat = xs + cts
    return _jax_first_bad(closed.jaxpr, closed.consts, flat)


def _jax_finite(values):
    for v in values:
        a = np.asarray(v)
        if np.issubdtype(a.dtype, np.floating) and not np.isfinite(a).all():
            return False
    return True


def _jax_first_bad(jaxpr, consts, args):
    env = {}
    for v, c in zip(jaxpr.constvars, consts):
        env[v] = c
    for v, a in zip(jaxpr.invars, args):
        env[v] = a
    for eqn in jaxpr.eqns:
        invals = [_keras_internals.jax_read(env, v) for v in eqn.invars]
        outs = _keras_internals.jax_eval_equation(eqn, invals)
        if _jax_finite(invals) and not _jax_finite(outs):
            inner = _keras_internals.jax_inner_jaxpr(eqn)
            if inner is not None:
                try:
                    found = _jax_first_bad(*inner, invals)
                except Exception:  # noqa: BLE001 - fall back to the enclosing equation
                    found = None
                if found is not None:
                    return found
            where, name_stack = _keras_internals.jax_source(eqn)
            frames = [(f, line, fn, linecache.getline(f, line).strip()) for f, line, fn in where]
            phase = "backward" if "transpose" in name_stack else "forward"
            zero = None
            if phase == "backward":
                bad = ~np.isfinite(np.asarray(outs[0]))
                zero = any(
                    np.shape(v) == bad.shape and bool((np.asarray(v)[bad] == 0).all()) for v in invals
                )
            return _site(phase, eqn.primitive.name, frames, f"{eqn.primitive.name} ({name_stack})", zero)
        for v, o in zip(eqn.outvars, outs):
            env[v] = o
    return None


# --------------------------------------------------------------------------- PyTorch


def _all_finite(tensors):
    import torch

    return all(
        t is None or not torch.is_floating_point(t) or bool(torch.isfinite(t).all()) for t in tensors
    )


def _torch_forward(fn, args):
    import torch
    from torch.overrides import TorchFunctionMode

    found = []

    class FirstNonFinite(TorchFunctionMode):
        def __torch_function__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            if not found:
                outs = [t for t in keras.tree.flatten(out) if isinstance(t, torch.Tensor)]
                ins = [t for t in keras.tree.flatten((args, kwargs or {})) if isinstance(t, torch.Tensor)]
                if outs and not _all_finite(outs) and _all_finite(ins):
                    name = getattr(func, "__name__", str(func))
                    found.append(_site("forward", name, _frames_from(traceback.extract_stack()[:-1])))
            return out

    xs = [torch_leaf(a) for a in args]
    with torch.no_grad(), FirstNonFinite():
        fn(*xs)
    return found[0] if found else None


def _torch_backward(fn, args, cotangents):
    import torch

    xs = [torch_leaf(a, requires_grad=True) for a in args]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with torch.autograd.detect_anomaly(check_nan=False):
            ys = fn(*xs)
    pairs = [(y, c) for y, c in zip(ys, cotangents) if c is not None and y.requires_grad]
    if not pairs:
        return None
    found = []
    handles = []
    seen = set()

    def hook_for(node):
        def hook(grad_inputs, grad_outputs):
            # grad_outputs: gradients arriving at the node; grad_inputs: what it sends on.
            if found or _all_finite(grad_inputs) or not _all_finite(grad_outputs):
                return None
            zero = None
            arriving = [g for g in grad_outputs if g is not None]
            if arriving:
                zero = bool(all((g == 0).all() for g in arriving))
                bad = [g for g in grad_inputs if g is not None and not bool(torch.isfinite(g).all())]
                if bad and arriving[0].shape == bad[0].shape:
                    zero = bool((arriving[0][~torch.isfinite(bad[0])] == 0).all())
            frames = _parse_formatted_stack(_keras_internals.torch_anomaly_stack(node))
            found.append(_site("backward", node.name(), frames, zero_cotangent=zero))
            return None

        return hook

    stack = [y.grad_fn for y, _ in pairs]
    while stack:
        node = stack.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        handles.append(node.register_hook(hook_for(node)))
        stack.extend(n for n, _ in node.next_functions)
    try:
        torch.autograd.grad(
            [y for y, _ in pairs],
            [x for x in xs],
            grad_outputs=[torch_leaf(c, dtype=y.dtype) for y, c in pairs],
            allow_unused=True,
        )
    finally:
        for handle in handles:
            handle.remove()
    return found[0] if found else None


_FRAME = re.compile(r'File "(?P<file>.*)", line (?P<line>\d+), in (?P<func>.*)\n(?:\s+(?P<code>.*)\n?)?')


def _parse_formatted_stack(stack):
    frames = []
    for entry in stack:
        for m in _FRAME.finditer(entry):
            frames.append((m["file"], int(m["line"]), m["func"], (m["code"] or "").strip()))
    return frames
