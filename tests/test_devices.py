"""Keras computing on another device than the CPU, where NumPy arrays land (PyTorch).

On a GPU, PyTorch tensors made from NumPy with ``torch.tensor`` stay on the CPU
and meet Keras' tensors on ``cuda:0`` ("Expected all tensors to be on the same
device"); a NumPy array multiplied by a GPU tensor fails the same way. The
suite's run on a lent H200 found both (benchmarks/results.md, "On a GPU").
Here PyTorch's ``meta`` device (shapes, no data) stands in for the GPU, through
``keras.device("meta")``, so the placement is checked on any machine. JAX and
TensorFlow place NumPy inputs on their device themselves.
"""

import os
import re

import keras
import numpy as np
import pytest

from shapegrad.render import raster
from shapegrad.ops.autodiff import torch_leaf

from helpers import BACKEND

pytestmark = pytest.mark.skipif(BACKEND != "torch", reason="PyTorch's own placement of tensors made from NumPy")


def test_torch_leaf_lands_on_the_device_keras_computes_on():
    import torch

    with keras.device("meta"):
        a = torch_leaf(np.ones(3))
        b = torch_leaf(torch.ones(2, dtype=torch.float64), dtype=torch.float32, requires_grad=True)
    assert a.device.type == "meta" and a.dtype == torch.float64 and not a.requires_grad
    assert b.device.type == "meta" and b.dtype == torch.float32 and b.requires_grad
    c = torch_leaf(np.float32([1.0, 2.0]))  # outside the scope: Keras' default device (the CPU here)
    np.testing.assert_array_equal(c.numpy(), [1.0, 2.0])


@pytest.mark.parametrize("mode", raster.COMPOSITES)
def test_compositing_takes_numpy_colours_and_backgrounds_on_another_device(mode):
    background = np.zeros((1, 4, 4, 3), "float32")
    with keras.device("meta"):
        alpha = keras.ops.ones((1, 4, 4, 1))
        state = raster.paint(mode, raster.start_state(mode, background), alpha, np.float32([0.1, 0.2, 0.3]))
        image = raster.finish(mode, state, background)
        planes = raster.start_planes(mode, [np.zeros((1, 4, 4), "float32")] * 3)
        planes = raster.paint_planes(mode, planes, alpha[..., 0], [np.float32(0.5)] * 3)
        planes = raster.finish_planes(mode, planes, [np.zeros((1, 4, 4), "float32")] * 3)
    assert image.device.type == "meta" and image.shape == (1, 4, 4, 3)
    assert all(p.device.type == "meta" and p.shape == (1, 4, 4) for p in planes)


def test_the_library_makes_torch_tensors_from_numpy_in_one_place():
    """``torch.tensor`` / ``as_tensor`` / ``from_numpy`` put data on the CPU: only ``torch_leaf`` may call them."""
    root = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "shapegrad")
    found = []
    for folder, _, files in os.walk(root):
        for name in files:
            if name.endswith(".py"):
                path = os.path.join(folder, name)
                with open(path) as f:
                    for line in f:
                        code = line.split("#")[0]
                        if re.search(r"\btorch\.(tensor|as_tensor|from_numpy)\(", code) and "``" not in code:
                            found.append(f"{os.path.relpath(path, root)}: {line.strip()}")
    assert found == [os.path.join("ops", "autodiff.py") + ": t = torch.tensor(np.asarray(a), device=device, dtype=dtype)"], found
