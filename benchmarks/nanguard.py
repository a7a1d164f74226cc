"""Cost of doctor.NaNGuard on a healthy run: model.fit step time with and without the guard.

Two models on the backend of KERAS_BACKEND, Keras' default compiled step (TensorFlow: XLA,
JAX: jit, PyTorch: eager), NumPy inputs, Adam, verbose=0:

- mlp: 32 -> 256 -> 256 -> 10, batch 64;
- cone: shapegrad's cone encoder (width 16) + Cones(64), image loss, batch 64 (``make demo``'s step).

Method: every round runs four fits on fresh copies of the data, interleaved: plain with K and
2K steps, guarded with K and 2K steps. The step time is (time(2K) - time(K)) / K, which cancels
what a fit costs once (building the iterator, and for the guard the re-trace and compile of
the instrumented step, reported separately as the per-fit cost). Medians over rounds.

    KERAS_BACKEND=jax .venv/bin/python benchmarks/nanguard.py [--rounds 5] [--steps 20]
"""

import argparse
import os
import statistics
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402

from shapegrad import Cones, doctor  # noqa: E402
from shapegrad.data import ConeDataset  # noqa: E402
from shapegrad.models import CONE_FIELDS, build_encoder  # noqa: E402

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
    xs, ys = np.concatenate([x] * steps), np.concatenate([y] * steps)
    callbacks = [doctor.NaNGuard(tempfile.mkdtemp(), verbose=0)] if guard else []
    start = time.perf_counter()
    model.fit(xs, ys, batch_size=B, epochs=1, shuffle=False, callbacks=callbacks, verbose=0)
    seconds = time.perf_counter() - start
    if guard and callbacks[0].caught is not None:
        raise RuntimeError("the guard fired on a healthy run")
    return seconds


def measure(name, build, rounds, steps):
    model, x, y = build()
    for guard in (False, True):  # compile both variants once before timing
        fit_seconds(model, x, y, 2, guard)
    times = {(g, k): [] for g in (False, True) for k in (steps, 2 * steps)}
    for _ in range(rounds):
        for guard in (False, True):
            for k in (steps, 2 * steps):
                times[guard, k].append(fit_seconds(model, x, y, k, guard))
    step = {g: [(b - a) / steps for a, b in zip(times[g, steps], times[g, 2 * steps])] for g in (False, True)}
    plain, guarded = statistics.median(step[False]), statistics.median(step[True])
    per_fit = statistics.median(
        [(g - p) - steps * (guarded - plain) for g, p in zip(times[True, steps], times[False, steps])]
    )
    overhead = 100 * (guarded - plain) / plain
    print(
        f"| {keras.backend.backend()} | {name} | {plain * 1e3:.2f} ms | {guarded * 1e3:.2f} ms | "
        f"{overhead:+.1f} % | {per_fit:.2f} s |",
        flush=True,
    )
    return overhead


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--models", default="mlp,cone")
    args = parser.parse_args()
    print("| backend | model | step, plain | step, guarded | overhead | per fit (re-trace) |")
    print("|---|---|---|---|---|---|")
    builders = {"mlp": mlp, "cone": cone}
    for name in args.models.split(","):
        measure(name, builders[name], args.rounds, args.steps)


if __name__ == "__main__":
    main()
