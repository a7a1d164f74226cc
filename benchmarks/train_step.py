"""Where the time of one training step goes: encoder, renderer, both (JAX jit, batch 64, 64 px).

The cone task of `make demo` (encoder + Cones, against the same encoder with a parameter loss
and against the naive formula) and a disk + box + triangle colour scene (encoder + Render).
Medians of interleaved rounds; prints a markdown table. JAX only (it calls jax.jit on the
encoder's stateless call).

    KERAS_BACKEND=jax .venv/bin/python benchmarks/train_step.py
"""

import os

os.environ.setdefault("KERAS_BACKEND", "jax")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

from shapegrad import Cones  # noqa: E402
from shapegrad.models import CONE_FIELDS, build_encoder  # noqa: E402
from shapegrad.data import ConeDataset  # noqa: E402
from shapegrad.train import Task  # noqa: E402
from shapegrad.bench import naive_cones, time_interleaved  # noqa: E402

B, N = 64, 64


def steps(encoder, renderers, images, params):
    """Compiled gradient steps: encoder + each renderer (image loss), encoder alone, first renderer alone."""
    weights = [v.value for v in encoder.trainable_variables]
    fixed = [v.value for v in encoder.non_trainable_variables]
    x, y = jnp.asarray(images), jnp.asarray(params)

    def predict(w):
        return encoder.stateless_call(w, fixed, x)[0]

    out = {}
    for name, render in renderers.items():
        step = jax.jit(jax.grad(lambda w, render=render: jnp.mean((render(predict(w)) - x) ** 2)))
        out[f"encoder + {name}"] = lambda step=step: step(weights)
    alone = jax.jit(jax.grad(lambda w: jnp.mean((predict(w) - y) ** 2)))
    out["encoder alone (parameter loss)"] = lambda: alone(weights)
    name, render = next(iter(renderers.items()))
    render_step = jax.jit(jax.grad(lambda p: jnp.mean((render(p) - x) ** 2)))
    out[f"{name} alone"] = lambda: render_step(y)
    return out


def report(title, calls, rounds=7, iters=5):
    """Median seconds per call, timed in alternating rounds (bench.time_interleaved); one markdown row per call."""
    for name, seconds in time_interleaved(calls, (), rounds=rounds, iters=iters).items():
        print(f"| {title}: {name} | {seconds * 1e3:.1f} ms | {1 / seconds:.1f} steps/s |")


cones = Cones(N)
images, params = ConeDataset(N, B, 1, seed=0).sample(0)
renderers = {"Cones": cones, "naive formula": lambda p: naive_cones(p, N)}
report("cone", steps(build_encoder((N, N, 1), CONE_FIELDS), renderers, images, params), iters=10)

# The scene task: encoder + Render("disk,box,triangle", 3 channels).
task = Task("disk,box,triangle", N, 3)
images, params = task.dataset(B, 1, 0).sample(0)
report("scene", steps(build_encoder((N, N, 3), task.fields), {"Render": task.renderer}, images, params))
