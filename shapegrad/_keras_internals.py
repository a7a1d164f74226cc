"""Every read of Keras' or a backend's private internals in the package, in one place (Keras 3.15, pinned in pyproject.toml).

The doctor runs a Functional model one layer at a time, which Keras has no
public API for: it calls the model's own graph walker with a wrapper around
each operation. The NaN guard rewinds the optimizer's step counter inside the
JAX trainer's state; the encoder finds its metadata layer among a model's
nested layers. The doctor's search for the first non-finite operation
(:mod:`shapegrad.doctor.backends`) uses each backend's own debugging
machinery, parts of which are private. What is read:

- ``keras.src.models.functional.operation_fn``: one graph node as a callable;
- ``Functional._standardize_inputs``, ``Functional._run_through_graph``,
  ``Functional._nodes_by_depth``: the graph walk;
- ``Layer._call_has_training_arg``: whether a layer's ``call`` takes ``training``;
- ``Model._flatten_layers``: every layer inside a model, nested ones too;
- ``Model._compile_loss``: the loss ``compile`` built;
- ``Model._jax_state["optimizer_variables"]``: the JAX trainer's optimizer state during ``fit``;
- ``keras.src.backend.torch.core.get_device``: the device Keras computes on with PyTorch;
- ``keras/src/ops/<module>.py``: where the ``keras.ops`` functions are defined (a stack
  frame there names the Keras op);
- TensorFlow: ``tensorflow.python.framework.op_callbacks`` (a callback on every
  eager op), the message of ``enable_check_numerics``' error (``executing op
  "Op"``, ``# of +Inf elements: N``), the gradient functions ``_<Op>Grad(op,
  grad)`` of ``tensorflow/python/ops/*_grad.py`` and the dispatch frames under
  ``tensorflow/python/util/``;
- JAX: ``jax._src.core.Literal``, ``jax._src.source_info_util.user_context``,
  ``Primitive.get_bind_params``, an equation's ``source_info`` and the inner jaxpr
  parameters of call-like primitives (``jaxpr``, ``call_jaxpr``, ``fun_jaxpr``);
- PyTorch: the forward traceback that anomaly mode keeps in an autograd node's
  ``metadata["traceback_"]``.

:func:`missing` lists whichever of these the installed Keras (and the current
backend) no longer has; ``tests/test_doctor.py`` fails on any, naming it.

Example:
    >>> missing()
    []
"""

import contextlib
import inspect
import re
import warnings

import keras

__all__ = ["call_takes_training", "compiled_loss", "inner_layers", "is_functional", "jax_eval_equation",
           "jax_inner_jaxpr", "jax_optimizer_variables", "jax_read", "jax_source", "keras_op_name", "missing",
           "run_functional", "set_jax_optimizer_variables", "tf_drop_internal_frames", "tf_failing_gradient",
           "tf_numerics_error", "tf_recording_ops", "torch_anomaly_stack", "torch_get_device"]


def is_functional(model):
    """True for a Keras Functional model (one the doctor can walk layer by layer)."""
    return (
        isinstance(model, keras.Model)
        and hasattr(model, "_run_through_graph")
        and hasattr(model, "_nodes_by_depth")
    )


def run_functional(model, inputs, wrap, training):
    """Run a Functional ``model`` on ``inputs``, calling each operation ``op`` as ``wrap(fn, op)``."""
    from keras.src.models.functional import operation_fn

    flat = model._standardize_inputs(inputs)
    return model._run_through_graph(flat, operation_fn=lambda op: wrap(operation_fn(op, training=training), op))


def call_takes_training(layer):
    """Whether ``layer.call`` accepts ``training=``."""
    return bool(getattr(layer, "_call_has_training_arg", False))


def inner_layers(model, recursive=True):
    """Every layer inside ``model`` (not ``model`` itself); with ``recursive``, nested models' layers too."""
    return list(model._flatten_layers(include_self=False, recursive=recursive))


def compiled_loss(model):
    """The loss function ``model.compile`` built (called as ``loss(y, y_pred, sample_weight)``), or None."""
    return getattr(model, "_compile_loss", None)


def jax_optimizer_variables(model):
    """The optimizer's variables in the JAX trainer's state while ``fit`` runs (a list), or None outside it."""
    state = getattr(model, "_jax_state", None)
    return list(state["optimizer_variables"]) if state else None


def set_jax_optimizer_variables(model, variables):
    """Put ``variables`` in the JAX trainer's state (then ``model.jax_state_sync()`` writes them back)."""
    model._jax_state["optimizer_variables"] = variables


def torch_get_device():
    """``keras.src.backend.torch.core.get_device`` (Keras' choice of PyTorch device), or None if it moved."""
    try:
        from keras.src.backend.torch.core import get_device  # deferred: imports torch
    except ImportError:
        return None
    return get_device


# --------------------------------------------------------------------------- Keras' own source layout

# The modules under keras/src/ops/ that define keras.ops functions (a frame in one names the op).
_KERAS_OP_FILES = ("numpy.py", "math.py", "nn.py", "linalg.py", "core.py", "image.py")


def keras_op_name(filename, function):
    """The ``keras.ops`` function a stack frame runs in (``"arccos"``), or None if the frame is not one."""
    name = filename.replace("\\", "/")
    function = function.rsplit(".", 1)[-1]
    if "/keras/src/ops/" in name and name.rsplit("/", 1)[-1] in _KERAS_OP_FILES and not function.startswith("_"):
        return function
    return None


# --------------------------------------------------------------------------- TensorFlow
# Imported where used: TensorFlow is loaded only on its own backend.


@contextlib.contextmanager
def tf_recording_ops(record):
    """Within the block, ``record(op_type, inputs, attrs, outputs, op_name=None, graph=None)`` sees every eager op."""
    from tensorflow.python.framework import op_callbacks  # deferred: TensorFlow only

    op_callbacks.add_op_callback(record)
    try:
        yield
    finally:
        op_callbacks.remove_op_callback(record)


def tf_numerics_error(message):
    """``(op_type, detail)`` from the message of ``enable_check_numerics``' error, or None if it is not one.

    ``detail`` is e.g. ``"# of +Inf elements: 1"`` (``""`` when the message has none).
    """
    match = re.search(r'executing op "(\w+)"', message)
    if match is None:
        return None
    detail = re.search(r"(# of [+-]?\w+ elements: \d+)", message)
    return match.group(1), detail.group(1) if detail else ""


def tf_failing_gradient(tb):
    """The innermost TensorFlow gradient function on traceback ``tb``: ``(name, op)`` (e.g. ``"_AcosGrad"`` and the
    forward op it differentiates), or ``(None, None)``."""
    grad_name, op = None, None
    while tb is not None:
        code = tb.tb_frame.f_code
        if code.co_name.endswith("Grad") and "op" in tb.tb_frame.f_locals:
            grad_name, op = code.co_name, tb.tb_frame.f_locals["op"]
        tb = tb.tb_next
    return grad_name, op


def tf_drop_internal_frames(frames):
    """``(filename, ...)`` frames without TensorFlow's dispatch and check-numerics frames."""
    return [f for f in frames if "/tensorflow/python/util/" not in f[0] and "check_numerics_callback" not in f[0]]


# --------------------------------------------------------------------------- JAX
# Imported where used: JAX is loaded only on its own backend.


def jax_read(env, var):
    """The value of jaxpr variable ``var``: a literal's own value, else ``env[var]``."""
    from jax._src import core  # deferred: JAX only

    return var.val if isinstance(var, core.Literal) else env[var]


def jax_eval_equation(eqn, invals):
    """Evaluate one jaxpr equation on ``invals``, under its own source information; a list of outputs."""
    from jax._src import source_info_util  # deferred: JAX only

    params = eqn.primitive.get_bind_params(eqn.params)
    if isinstance(params, tuple):  # older JAX: (subfuns, params)
        subfuns, params = params
    else:
        subfuns = ()
    with source_info_util.user_context(eqn.source_info.traceback, name_stack=eqn.source_info.name_stack):
        outs = eqn.primitive.bind(*subfuns, *invals, **params)
    return list(outs) if eqn.primitive.multiple_results else [outs]


def jax_inner_jaxpr(eqn):
    """``(jaxpr, consts)`` of a call-like equation (jit, custom_jvp, custom_vjp), or None."""
    inner = eqn.params.get("jaxpr") or eqn.params.get("call_jaxpr") or eqn.params.get("fun_jaxpr")
    if inner is None:
        return None
    return getattr(inner, "jaxpr", inner), getattr(inner, "consts", ())


def jax_source(eqn):
    """Where ``eqn`` was traced: ``(frames, name_stack)``, frames ``(filename, lineno, function)`` outermost first."""
    traceback_ = eqn.source_info.traceback
    frames = getattr(traceback_, "frames", []) if traceback_ is not None else []
    return [(f.file_name, f.line_num, f.function_name) for f in reversed(frames)], str(eqn.source_info.name_stack)


# --------------------------------------------------------------------------- PyTorch


def torch_anomaly_stack(node):
    """The forward traceback (formatted strings) anomaly mode kept for autograd ``node``; ``[]`` without it."""
    return node.metadata.get("traceback_", [])


def missing():
    """The internals above that the installed Keras lacks (an empty list when all are there)."""
    gone = []
    try:
        from keras.src.models.functional import operation_fn  # noqa: F401
    except ImportError:
        gone.append("keras.src.models.functional.operation_fn")
    inputs = keras.Input((2,))
    model = keras.Model(inputs, keras.layers.Dense(1)(inputs))
    for name in ("_standardize_inputs", "_run_through_graph", "_nodes_by_depth"):
        if not hasattr(model, name):
            gone.append(f"Functional.{name}")
    if not hasattr(keras.layers.Dropout(0.5), "_call_has_training_arg"):
        gone.append("Layer._call_has_training_arg")
    if not hasattr(model, "_flatten_layers"):
        gone.append("Model._flatten_layers")
    model.compile("sgd", "mse")
    if getattr(model, "_compile_loss", None) is None:
        gone.append("Model._compile_loss")
    if keras.backend.backend() == "jax":
        from keras.src.backend.jax.trainer import JAXTrainer  # deferred: the JAX backend only

        if "_jax_state" not in inspect.getsource(JAXTrainer) or "optimizer_variables" not in inspect.getsource(JAXTrainer):
            gone.append('JAXTrainer._jax_state["optimizer_variables"]')
    if keras.backend.backend() == "torch" and torch_get_device() is None:
        gone.append("keras.src.backend.torch.core.get_device")
    if keras_op_name(keras.ops.arccos.__code__.co_filename, "arccos") != "arccos":
        gone.append("keras/src/ops/numpy.py (where keras.ops.arccos is defined)")
    gone += {"tensorflow": _missing_tensorflow, "jax": _missing_jax, "torch": _missing_torch}.get(
        keras.backend.backend(), list)()
    return gone


def _missing_tensorflow():
    gone = []
    try:
        from tensorflow.python.framework import op_callbacks  # deferred: TensorFlow only
    except ImportError:
        return ["tensorflow.python.framework.op_callbacks"]
    if not all(hasattr(op_callbacks, n) for n in ("add_op_callback", "remove_op_callback")):
        gone.append("op_callbacks.add_op_callback / remove_op_callback")
    from tensorflow.python.ops import math_grad  # deferred: TensorFlow only

    grad = getattr(math_grad, "_AcosGrad", None)
    if grad is None or list(inspect.signature(grad).parameters)[:1] != ["op"]:
        gone.append("tensorflow/python/ops/math_grad.py _AcosGrad(op, grad)")
    from tensorflow.python.util import dispatch  # deferred: TensorFlow only

    if "/tensorflow/python/util/" not in dispatch.__file__.replace("\\", "/"):
        gone.append("tensorflow/python/util/ (the dispatch frames)")
    return gone


def _missing_jax():
    gone = []
    try:
        from jax._src import core, source_info_util  # deferred: JAX only
    except ImportError:
        return ["jax._src.core / jax._src.source_info_util"]
    if not hasattr(core, "Literal"):
        gone.append("jax._src.core.Literal")
    if not hasattr(source_info_util, "user_context"):
        gone.append("jax._src.source_info_util.user_context")
    if not hasattr(core.Primitive, "get_bind_params"):
        gone.append("Primitive.get_bind_params")
    return gone


def _missing_torch():
    import torch  # deferred: PyTorch only

    x = torch.ones(1, requires_grad=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # anomaly mode warns that it is on
        with torch.autograd.detect_anomaly(check_nan=False):
            y = (x * 2).sum()
    return [] if torch_anomaly_stack(y.grad_fn) else ['autograd node metadata["traceback_"] (anomaly mode)']
