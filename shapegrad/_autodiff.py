"""Gradients of a scalar function on whichever Keras backend is active.

Keras 3 has no backend-neutral ``grad``; this module is the one place that
speaks each backend's autodiff (``tf.GradientTape``, ``jax.value_and_grad``,
``torch.autograd``). Library math never calls it; tests and
:mod:`shapegrad.doctor` do.
"""

import keras
import numpy as np

__all__ = ["value_and_grad", "value_and_grad_with_aux", "jit"]


def value_and_grad(fn, *args):
    """Evaluate ``fn(*args)`` (a scalar) and its gradient with respect to every argument.

    Args:
        fn: callable of backend tensors returning a scalar tensor.
        *args: NumPy arrays (their dtypes are kept, so float64 works).

    Returns:
        ``(value, grads)``: the value as a NumPy scalar and a list of NumPy
        arrays shaped like ``args``. An argument the output does not depend on
        gets a zero gradient.
    """
    value, _, grads = value_and_grad_with_aux(lambda *xs: (fn(*xs), ()), *args)
    return value, grads


def jit(fn):
    """Compile ``fn`` with the backend's XLA compiler (TensorFlow, JAX); PyTorch runs it eagerly."""
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        return tf.function(fn, jit_compile=True)
    if backend == "jax":
        import jax

        return jax.jit(fn)
    return fn


def value_and_grad_with_aux(fn, *args):
    """Like :func:`value_and_grad`, for ``fn`` returning ``(scalar, aux)``.

    ``aux`` is any nest of tensors (Keras' ``tree``); it comes back as NumPy
    arrays, evaluated in the same pass as the value and the gradient.

    Returns:
        ``(value, aux, grads)``.
    """
    from keras import tree

    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        xs = [tf.convert_to_tensor(a) for a in args]
        with tf.GradientTape() as tape:
            for x in xs:
                tape.watch(x)
            y, aux = fn(*xs)
        grads = tape.gradient(y, xs, unconnected_gradients=tf.UnconnectedGradients.ZERO)
        return np.asarray(y), tree.map_structure(np.asarray, aux), [np.asarray(g) for g in grads]
    if backend == "jax":
        import jax

        (y, aux), grads = jax.value_and_grad(fn, argnums=tuple(range(len(args))), has_aux=True)(*args)
        return np.asarray(y), tree.map_structure(np.asarray, aux), [np.asarray(g) for g in grads]
    if backend == "torch":
        import torch

        xs = [torch.tensor(np.asarray(a), requires_grad=True) for a in args]
        y, aux = fn(*xs)
        if xs and y.requires_grad:
            grads = torch.autograd.grad(y, xs, allow_unused=True)
        else:
            grads = [None] * len(xs)
        grads = [torch.zeros_like(x) if g is None else g for x, g in zip(xs, grads)]

        def to_numpy(t):
            return t.detach().cpu().numpy() if isinstance(t, torch.Tensor) else np.asarray(t)

        return to_numpy(y), tree.map_structure(to_numpy, aux), [to_numpy(g) for g in grads]
    raise ValueError(f"Unsupported Keras backend. Received: backend={backend!r}")
