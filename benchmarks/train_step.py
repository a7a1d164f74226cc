"""Where the time of one training step goes: encoder, renderer, both (JAX jit, batch 64, 64 px).

The cone task of `make demo` (encoder + Cones, against the same encoder with a parameter loss
and against the naive formula) and a disk + box + triangle colour scene (encoder + Render).
Medians of interleaved rounds; prints a markdown table. JAX only (it calls jax.jit on the
encoder's stateless call).

    KERAS_BACKEND=jax .venv/bin/python benchmarks/train_step.py
"""

import os
import statistics
import time

os.environ.setdefault("KERAS_BACKEND", "jax")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

from shapegrad import Cones  # noqa: E402
from shapegrad.models import CONE_FIELDS, build_encoder  # noqa: E402
from shapegrad.train import Task  # noqa: E402
from shapegrad.data import ConeDataset
from shapegrad.bench import naive_cones
B, N = 64, 64
data = ConeDataset(N, B, 1, seed=0)
images, params = data.sample(0)
enc = build_encoder((N, N, 1), CONE_FIELDS)
cones = Cones(N)
tv = [v.value for v in enc.trainable_variables]
ntv = [v.value for v in enc.non_trainable_variables]
def loss_full(tv, x, render):
    p, _ = enc.stateless_call(tv, ntv, x)
    return jnp.mean((render(p) - x) ** 2)
def loss_enc(tv, x, y):
    p, _ = enc.stateless_call(tv, ntv, x)
    return jnp.mean((p - y) ** 2)
full = jax.jit(jax.grad(lambda tv, x: loss_full(tv, x, lambda p: cones(p)[..., 0:1])))
naive = jax.jit(jax.grad(lambda tv, x: loss_full(tv, x, lambda p: naive_cones(p, N))))
encoder_only = jax.jit(jax.grad(loss_enc))
render_only = jax.jit(jax.grad(lambda p, x: jnp.mean((cones(p) - x) ** 2)))
x, y = jnp.asarray(images), jnp.asarray(params)
fns = {"encoder+Cones": lambda: full(tv, x), "encoder+naive": lambda: naive(tv, x),
       "encoder alone (param loss)": lambda: encoder_only(tv, x, y), "Cones alone": lambda: render_only(y, x)}
for f in fns.values(): jax.block_until_ready(f())
res = {k: [] for k in fns}
for _ in range(7):
    for k, f in fns.items():
        t = time.perf_counter()
        for _ in range(10): out = f()
        jax.block_until_ready(out); res[k].append((time.perf_counter() - t) / 10)
for k, v in res.items():
    print(f"| {k} | {statistics.median(v)*1e3:.1f} ms | {1/statistics.median(v):.1f} steps/s |")

# The scene task: encoder + Render("disk,box,triangle", 3 channels).
task = Task("disk,box,triangle", N, 3)
images, params = task.dataset(B, 1, 0).sample(0)
enc2 = build_encoder((N, N, 3), task.fields)
tv2 = [v.value for v in enc2.trainable_variables]; ntv2 = [v.value for v in enc2.non_trainable_variables]
r = task.renderer
def lf2(tv, x):
    p, _ = enc2.stateless_call(tv, ntv2, x); return jnp.mean((r(p) - x) ** 2)
def le2(tv, x, y):
    p, _ = enc2.stateless_call(tv, ntv2, x); return jnp.mean((p - y) ** 2)
x2, y2 = jnp.asarray(images), jnp.asarray(params)
f2 = {"scene: encoder+Render": jax.jit(jax.grad(lf2)), "scene: encoder alone": jax.jit(jax.grad(le2)),
      "scene: Render alone": jax.jit(jax.grad(lambda p, x: jnp.mean((r(p) - x) ** 2)))}
calls = {"scene: encoder+Render": lambda: f2["scene: encoder+Render"](tv2, x2),
         "scene: encoder alone": lambda: f2["scene: encoder alone"](tv2, x2, y2),
         "scene: Render alone": lambda: f2["scene: Render alone"](y2, x2)}
for f in calls.values(): jax.block_until_ready(f())
res = {k: [] for k in calls}
for _ in range(7):
    for k, f in calls.items():
        t = time.perf_counter()
        for _ in range(5): out = f()
        jax.block_until_ready(out); res[k].append((time.perf_counter() - t) / 5)
for k, v in res.items():
    print(f"| {k} | {statistics.median(v)*1e3:.1f} ms | {1/statistics.median(v):.1f} steps/s |")
