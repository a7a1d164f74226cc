"""Cost of doctor.NaNGuard on a healthy run: model.fit step time with and without the guard.

Two models on the backend of KERAS_BACKEND, Keras' default compiled step (TensorFlow: XLA,
JAX: jit, PyTorch: eager), NumPy inputs, Adam, verbose=0:

- mlp: 32 -> 256 -> 256 -> 10, batch 64;
- cone: shapegrad's cone encoder (width 16) + Cones(64), image loss, batch 64 (``make demo``'s step).

PyTorch runs with one intra-op thread (its spinning threads swamp a small shared CPU).

Method: both variants are compiled first (the guard traces its instrumented step once per model
and reuses it, so a later guarded fit costs no compile). Then rounds alternate a plain and a
guarded fit of K steps on the same model; the step time is the fastest round's time / K, both
in wall time and in the process's CPU time (all its threads). On a shared, loaded machine the
CPU time is the steadier measure of the work the guard adds; the guard never waits for the
step in flight (it reads its flag one step late), so added work is what it costs.

    KERAS_BACKEND=jax .venv/bin/python benchmarks/nanguard.py [--rounds 5] [--steps mlp=200,cone=20]
"""

import argparse
import os
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402

from shapegrad import Cones, doctor  # noqa: E402
from shapegrad.learn.data import ConeDataset  # noqa: E402
from shapegrad.learn.models import CONE_FIELDS, build_encoder  # noqa: E402

B = 64


def mlp():
    model = keras.Sequential(
        [keras.Input((32,)), keras.layers.Dense(256, activation="relu"), keras.layers.Dense(256, activation="relu"), keras.layers.Dense(10)]
    )
    model.compile(keras.optimizers.Adam(1e-3), "mse")
    rng = np.random.default_rng(0)
    return model, rng.normal(size=(B, 32)).astype("float32"), rng.normal(size=(B, 10)).astype("float32")


def cone():
    n = 64
    inputs = keras.Input((n, n, 1))
    model = keras.Model(inputs, Cones(n)(build_encoder((n, n, 1), CONE_FIELDS, width=16)(inputs)))
    model.compile(keras.optimizers.Adam(1e-3), "mse")
    images, _ = ConeDataset(n, B, 1, seed=0).sample(0)
    images = np.asarray(images, "float32")
    return model, images, images


def fit_seconds(model, x, y, steps, guard):
    """(wall, CPU) seconds of one fit of ``steps`` steps."""
    xs, ys = np.concatenate([x] * steps), np.concatenate([y] * steps)
    callbacks = [doctor.NaNGuard(tempfile.mkdtemp(), verbose=0)] if guard else []
    wall, cpu = time.perf_counter(), time.process_time()
    model.fit(xs, ys, batch_size=B, epochs=1, shuffle=False, callbacks=callbacks, verbose=0)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    if guard and callbacks[0].caught is not None:
        raise RuntimeError("the guard fired on a healthy run")
    return wall, cpu


def measure(name, build, rounds, steps):
    model, x, y = build()
    for guard in (False, True):  # compile both variants before timing
        fit_seconds(model, x, y, 2, guard)
    times = {False: [], True: []}
    for _ in range(rounds):
        for guard in (False, True):
            times[guard].append(fit_seconds(model, x, y, steps, guard))
    row = [keras.backend.backend(), name, str(steps)]
    for clock in (0, 1):  # wall, CPU
        plain = min(t[clock] for t in times[False]) / steps
        guarded = min(t[clock] for t in times[True]) / steps
        row += [f"{plain * 1e3:.2f} ms", f"{guarded * 1e3:.2f} ms", f"{100 * (guarded - plain) / plain:+.1f} %"]
    print("| " + " | ".join(row) + " |", flush=True)


def main():
    if keras.backend.backend() == "torch":
        import torch

        # PyTorch's default intra-op threads spin; on a small shared CPU that swamps the timing.
        torch.set_num_threads(1)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", default="mlp=200,cone=20", help="steps per fit, per model")
    parser.add_argument("--models", default="mlp,cone")
    args = parser.parse_args()
    steps = dict(item.split("=") for item in args.steps.split(","))
    print(f"{args.rounds} rounds; load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    print("| backend | model | K | wall: plain | guarded | overhead | CPU: plain | guarded | overhead |")
    print("|---|---|---|---|---|---|---|---|---|")
    builders = {"mlp": mlp, "cone": cone}
    for name in args.models.split(","):
        measure(name, builders[name], args.rounds, int(steps[name]))


if __name__ == "__main__":
    main()
