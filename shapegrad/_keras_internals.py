"""Every read of Keras' private internals by the doctor, in one place (Keras 3.15, pinned in pyproject.toml).

The doctor runs a Functional model one layer at a time, which Keras has no
public API for: it calls the model's own graph walker with a wrapper around
each operation. What is read:

- ``keras.src.models.functional.operation_fn``: one graph node as a callable;
- ``Functional._standardize_inputs``, ``Functional._run_through_graph``,
  ``Functional._nodes_by_depth``: the graph walk;
- ``Layer._call_has_training_arg``: whether a layer's ``call`` takes ``training``.

:func:`missing` lists whichever of these the installed Keras no longer has;
``tests/test_doctor.py`` fails on any, naming it.

Example:
    >>> missing()
    []
"""

import keras

__all__ = ["call_takes_training", "is_functional", "missing", "run_functional"]


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
    return gone
