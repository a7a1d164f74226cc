"""``autodiff.compiled_when_eager``: one compiled program per eager call on JAX, the function itself elsewhere."""

import keras
import numpy as np
import pytest
from keras import ops

from helpers import BACKEND, jit, to_numpy, value_and_grad
from shapegrad import Cones, Render
from shapegrad.ops import autodiff
from shapegrad.render import sdf


def _counting(**options):
    """A decorated function and the list it appends to each time its Python body runs (a trace on JAX)."""
    runs = []

    @autodiff.compiled_when_eager(**options)
    def f(x, scale=2.0, mode="sum"):
        runs.append(mode)
        y = ops.sin(x) * scale
        return ops.sum(y) if mode == "sum" else ops.max(y)

    return f, runs


def test_eager_calls_on_jax_compile_once_per_shape_and_static_value():
    f, runs = _counting(static_argnames=("mode",))
    x = np.linspace(0, 1, 5).astype("float32")
    expected = float(np.sum(np.sin(x) * 2.0))
    for _ in range(3):
        np.testing.assert_allclose(float(to_numpy(f(x, 2.0))), expected, rtol=1e-6)
    np.testing.assert_allclose(float(to_numpy(f(x, 3.0))), expected * 1.5, rtol=1e-6)  # a number is traced
    np.testing.assert_allclose(float(to_numpy(f(x, 2.0, mode="max"))), 2 * np.sin(1.0), rtol=1e-6)
    f(np.zeros(7, "float32"), 2.0)
    if BACKEND == "jax":
        assert runs == ["sum", "max", "sum"]  # once per (shape, dtype, static value)
    else:
        assert len(runs) == 6  # the function itself, every call


def test_when_false_runs_op_by_op():
    f, runs = _counting(when=lambda x, *a, **k: x.shape[0] < 6)
    x = np.linspace(0, 1, 5).astype("float32")
    for _ in range(2):
        f(x)  # compiled on JAX: the body runs once
        np.testing.assert_allclose(float(to_numpy(f(np.ones(6, "float32")))), 6 * 2 * np.sin(1.0), rtol=1e-6)
    assert len(runs) == (3 if BACKEND == "jax" else 4)  # op by op for the 6 (twice)
    # A Render of more groups (runs of one kind) than it compiles eagerly draws op by op what it draws traced.
    layer = Render(",".join(["disk", "box"] * 9), 8)
    assert len(layer.spec.groups) == 18
    params = layer.spec.sample(2, seed=0)
    np.testing.assert_allclose(to_numpy(layer(params)), to_numpy(jit(lambda p: layer(p))(params)), atol=1e-6)


def test_inside_a_trace_and_under_autodiff_it_is_the_function_itself():
    f, runs = _counting()
    x = np.linspace(-1, 1, 4).astype("float32")
    value, (g,) = value_and_grad(lambda x: f(x), x)
    np.testing.assert_allclose(g, 2 * np.cos(x), rtol=1e-6)
    jitted = jit(lambda x: f(x) * 1.0)
    np.testing.assert_allclose(float(to_numpy(jitted(x))), float(value), rtol=1e-6)
    assert len(runs) == 2  # traced once by each transformation, not compiled separately inside them


def test_keras_symbolic_tensors_and_a_bad_static_argument_reach_the_function():
    f, _ = _counting(static_argnames=("mode",))
    symbolic = f(keras.KerasTensor((3,)))
    assert isinstance(symbolic, keras.KerasTensor) and tuple(symbolic.shape) == ()
    g = autodiff.compiled_when_eager(
        lambda x, rule="a": ops.sum(x) if rule in ("a", "b") else (_ for _ in ()).throw(ValueError(f"rule={rule!r}")),
        static_argnames=("rule",),
    )
    with pytest.raises(ValueError, match=r"rule=\['a'\]"):  # unhashable: not a cache key, the function's own error
        g(np.ones(2, "float32"), ["a"])


def test_layers_and_distances_give_what_their_traced_versions_give():
    """The eager (on JAX: compiled) call and the same call inside jit agree; both layers keep their per-call sharpness."""
    layer = Render("disk,box,path2", resolution=(9, 13), channels=3)
    x = layer.spec.sample(2, seed=3)
    np.testing.assert_allclose(to_numpy(layer(x)), to_numpy(jit(lambda x: layer(x))(x)), atol=1e-6)
    soft = to_numpy(layer(x, sharpness=0.25))
    assert np.abs(soft - to_numpy(layer(x))).max() > 1e-3
    cones = Cones((8, 11))
    c = np.array([[0.5, 0.5, 0.0, 1.0, 0.2]], "float32")
    np.testing.assert_allclose(to_numpy(cones(c, sharpness=3.0)), to_numpy(jit(lambda c: cones(c, sharpness=3.0))(c)), atol=1e-6)
    points = np.stack(np.meshgrid(np.arange(6.0), np.arange(5.0), indexing="ij"), -1).astype("float32")
    eager = to_numpy(sdf.ellipse(points, [2.0, 3.0], [2.0, 1.0], 0.3))
    np.testing.assert_allclose(eager, to_numpy(jit(lambda p: sdf.ellipse(p, [2.0, 3.0], [2.0, 1.0], 0.3))(points)), atol=1e-5)


class _Scale(keras.layers.Layer):
    """A weightless layer whose config (``factor``) decides what it computes; it records each run of its body."""

    runs = []

    def __init__(self, factor, **kwargs):
        super().__init__(**kwargs)
        self.factor = factor

    def get_config(self):
        return {**super().get_config(), "factor": self.factor}

    @autodiff.compiled_when_eager(method=True, static_argnames=("mode",))
    def call(self, x, mode="times"):
        _Scale.runs.append(self.factor)
        return x * self.factor if mode == "times" else x + self.factor


def test_layers_of_the_same_settings_share_one_program():
    """A new layer with an earlier one's settings (another name) compiles nothing new; other settings do."""
    _Scale.runs.clear()
    x = np.arange(3, dtype="float32")
    for factor in (2.0, 2.0, 3.0, 2.0):
        np.testing.assert_allclose(to_numpy(_Scale(factor)(x)), x * factor)
    assert _Scale.runs == ([2.0, 3.0] if BACKEND == "jax" else [2.0, 2.0, 3.0, 2.0])


def test_a_method_keeps_its_static_arguments():
    """``static_argnames`` with ``method=True``: a Python string reaches the body as itself, by keyword or position."""
    _Scale.runs.clear()
    x = np.arange(3, dtype="float32")
    np.testing.assert_allclose(to_numpy(_Scale(5.0)(x, mode="plus")), x + 5.0)
    np.testing.assert_allclose(to_numpy(_Scale(5.0).call(x, "plus")), x + 5.0)
    np.testing.assert_allclose(to_numpy(_Scale(5.0)(x)), x * 5.0)
