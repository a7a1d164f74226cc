"""Where the time of one training step goes: encoder, renderer, both (JAX jit, batch 64, 64 px).

The cone task of `make demo` (encoder + Cones, against the same encoder with a parameter loss
and against the naive formula) and a disk + box + triangle colour scene (encoder + Render).
Medians of interleaved rounds; prints a markdown table, then the renderer's share of the step
read two ways. JAX only (it calls jax.jit on the encoder's stateless call).

- "renderer alone / step": the renderer's own forward+backward (at the dataset's parameters),
  compiled on its own, over the combined step. It understates the share whenever the renderer
  costs more inside the combined program than alone.
- "(step - step with a costless renderer) / step": what the step saves if rendering were free,
  i.e. the renderer's marginal cost. The costless renderer is a fixed linear map of the
  parameters broadcast to the image, with the same image loss, so the encoder's forward and
  backward and the loss are in both steps and only the rendering differs.

Also timed: the combined gradient in three compiled pieces (encoder forward with its VJP, the
renderer's gradient, the encoder's backward): the same numbers, to show how much of the
renderer's in-step cost comes from compiling everything as one program.

Also checked: whether XLA's concurrency-optimised CPU scheduler can be turned off for the scene
step's program alone (``jax.jit(..., compiler_options={SCHEDULER: False})``; process-wide it is
``XLA_FLAGS=--xla_cpu_enable_concurrency_optimized_scheduler=false``). The script compiles the
step both ways and compares the optimised programs; only if they differ is the per-program step
timed (row "scheduler off, this program only"). In jax 0.10.2 the option is accepted but the
compiled program is the same, instruction for instruction, so there is nothing to time.

    KERAS_BACKEND=jax .venv/bin/python benchmarks/train_step.py
    KERAS_BACKEND=jax .venv/bin/python benchmarks/train_step.py --keep-freed-memory

``--keep-freed-memory``: glibc keeps large freed blocks for reuse, as the command line runs
(:func:`shapegrad.allocator.keep_freed_memory`). Without it (glibc's defaults) every call maps
its temporary buffer afresh: a page fault per 4 KB page, a large part of the scene step.
"""

import argparse
import os
import re

os.environ.setdefault("KERAS_BACKEND", "jax")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from shapegrad import Cones  # noqa: E402
from shapegrad.allocator import keep_freed_memory  # noqa: E402
from shapegrad.learn.models import CONE_FIELDS, build_encoder  # noqa: E402
from shapegrad.learn.data import ConeDataset  # noqa: E402
from shapegrad.learn.train import Task  # noqa: E402
from shapegrad.bench.timing import naive_cones, time_interleaved  # noqa: E402

B, N = 64, 64
SCHEDULER = "xla_cpu_enable_concurrency_optimized_scheduler"


def same_program(a, b, *args):
    """Whether two jitted functions compile to the same optimised HLO (source locations aside)."""

    def text(f):
        return re.sub(r", metadata=\{[^}]*\}|^\d+ \{file_name_id.*$", "", f.lower(*args).compile().as_text(), flags=re.M)

    return text(a) == text(b)


def steps(encoder, renderers, images, params, scheduler_check=False):
    """Compiled gradient steps: encoder + each renderer (image loss), encoder + a costless renderer,
    encoder alone (parameter loss), the first renderer alone, and encoder + first renderer split in three jits."""
    weights = [v.value for v in encoder.trainable_variables]
    fixed = [v.value for v in encoder.non_trainable_variables]
    x, y = jnp.asarray(images), jnp.asarray(params)

    def predict(w):
        return encoder.stateless_call(w, fixed, x)[0]

    def image_loss(render):
        return lambda w: jnp.mean((render(predict(w)) - x) ** 2)

    out = {}
    jitted = {}
    for name, render in renderers.items():
        jitted[name] = step = jax.jit(jax.grad(image_loss(render)))
        out[f"encoder + {name}"] = lambda step=step: step(weights)
    if scheduler_check:
        first = next(iter(renderers))
        step_off = jax.jit(jax.grad(image_loss(renderers[first])), compiler_options={SCHEDULER: False})
        if same_program(jitted[first], step_off, weights):
            print(f"{first} step: compiler_options={{{SCHEDULER!r}: False}} compiles the same program as the default")
        else:
            out[f"encoder + {first}, scheduler off, this program only"] = lambda: step_off(weights)
    # A renderer that costs (almost) nothing: a fixed linear map of the parameters, broadcast to the image.
    mix = jnp.asarray(np.random.default_rng(0).normal(size=(y.shape[-1], x.shape[-1])).astype("float32") * 0.01)
    costless = jax.jit(jax.grad(image_loss(lambda p: jnp.broadcast_to((p @ mix)[:, None, None, :], x.shape))))
    out["encoder + costless renderer"] = lambda: costless(weights)
    alone = jax.jit(jax.grad(lambda w: jnp.mean((predict(w) - y) ** 2)))
    out["encoder alone (parameter loss)"] = lambda: alone(weights)
    name, render = next(iter(renderers.items()))
    render_step = jax.jit(jax.grad(lambda p: jnp.mean((render(p) - x) ** 2)))
    out[f"{name} alone"] = lambda: render_step(y)
    forward = jax.jit(lambda w: jax.vjp(predict, w))

    def split():
        p, back = forward(weights)
        return back(render_step(p))[0]

    out[f"encoder + {name}, three jits"] = split
    return out, name


def report(title, calls, first, rounds=7, iters=5):
    """Median seconds per call, timed in alternating rounds (bench.time_interleaved); markdown rows and the shares."""
    seconds = time_interleaved(calls, (), rounds=rounds, iters=iters)
    for name, s in seconds.items():
        print(f"| {title}: {name} | {s * 1e3:.1f} ms | {1 / s:.1f} steps/s |")
    step = seconds[f"encoder + {first}"]
    print(
        f"{title}: {first} alone / step = {seconds[f'{first} alone'] / step:.0%}; "
        f"(step - step with a costless renderer) / step = {(step - seconds['encoder + costless renderer']) / step:.0%}; "
        f"load {os.getloadavg()[0]:.2f}"
    )


parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--keep-freed-memory", action="store_true", help="glibc keeps freed blocks (as the CLI runs)")
kept = parser.parse_args().keep_freed_memory and keep_freed_memory()
print(f"JAX {jax.__version__} on {jax.devices()[0].device_kind}, batch {B}, {N} px; freed memory {'kept' if kept else 'returned (allocator defaults)'}")
print("| step | time | rate |\n|---|---|---|")
cones = Cones(N)
images, params = ConeDataset(N, B, 1, seed=0).sample(0)
renderers = {"Cones": cones, "naive formula": lambda p: naive_cones(p, N)}
report("cone", *steps(build_encoder((N, N, 1), CONE_FIELDS), renderers, images, params), iters=10)

# The scene task: encoder + Render("disk,box,triangle", 3 channels).
task = Task("disk,box,triangle", N, 3)
images, params = task.dataset(B, 1, 0).sample(0)
# The scheduler option is XLA's CPU compiler's: checked on the CPU only.
scheduler_check = jax.default_backend() == "cpu"
report("scene", *steps(build_encoder((N, N, 3), task.fields), {"Render": task.renderer}, images, params, scheduler_check))
