"""Every read of Keras' private internals in the package, in one place (Keras 3.15, pinned in pyproject.toml).

The doctor runs a Functional model one layer at a time, which Keras has no
public API for: it calls the model's own graph walker with a wrapper around
each operation. The NaN guard rewinds the optimizer's step counter inside the
JAX trainer's state; the encoder finds its metadata layer among a model's
nested layers. What is read:

- ``keras.src.models.functional.operation_fn``: one graph node as a callable;
- ``Functional._standardize_inputs``, ``Functional._run_through_graph``,
  ``Functional._nodes_by_depth``: the graph walk;
- ``Layer._call_has_training_arg``: whether a layer's ``call`` takes ``training``;
- ``Model._flatten_layers``: every layer inside a model, nested ones too;
- ``Model._compile_loss``: the loss ``compile`` built;
- ``Model._jax_state["optimizer_variables"]``: the JAX trainer's optimizer state during ``fit``;
- ``keras.src.backend.torch.core.get_device``: the device Keras computes on with PyTorch.

:func:`missing` lists whichever of these the installed Keras no longer has;
``tests/test_doctor.py`` fails on any, naming it.

Example:
    >>> missing()
    []
"""

import inspect

import keras

__all__ = ["call_takes_training", "compiled_loss", "inner_layers", "is_functional", "jax_optimizer_variables", "missing",
           "run_functional", "set_jax_optimizer_variables", "torch_get_device"]


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
    return gone
