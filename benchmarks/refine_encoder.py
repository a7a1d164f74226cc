"""Test-time refinement of a saved cone encoder (``make demo``'s ``encoder.keras``) on the demo's test set.

Prints the encoder's median errors, IoU and PSNR on ``train``'s 256 test cones (seed 0), alone and after
100 refinement steps (``train.evaluate``), and the refinement's seconds: the figures ``metrics.json``
holds, for an encoder already trained, so that two versions of the refiner can be compared on one
encoder (run it with each version on ``PYTHONPATH``).

    PYTHONPATH=$PWD KERAS_BACKEND=jax python benchmarks/refine_encoder.py runs/demo
"""

import argparse
import json
import sys
import time

import keras

import shapegrad
from shapegrad.learn import train

KEYS = ("iou", "psnr", "apex_error_px_median", "axis_error_deg_median", "aperture_error_deg_median")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run", help="a folder with encoder.keras of a cone run (make demo: runs/demo)")
    p.add_argument("--resolution", type=int, default=64)
    p.add_argument("--steps", type=int, default=100, help="refinement steps (default 100)")
    args = p.parse_args(argv)
    encoder = keras.saving.load_model(f"{args.run}/encoder.keras")
    task = train.Task("cone", args.resolution)
    images, params = task.test_set(256, 0)
    start = time.perf_counter()
    headline, encoder_only, _, _ = train.evaluate(encoder, task, images, params, args.steps)
    print(f"shapegrad from {shapegrad.__file__}, {keras.backend.backend()}, refinement {time.perf_counter() - start:.1f} s")
    print("encoder:", json.dumps({k: round(encoder_only[k], 4) for k in KEYS}))
    print("refined:", json.dumps({k: round(headline[k], 4) for k in KEYS}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
