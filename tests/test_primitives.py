"""The parameter schema: both renderers' specs, natural units on square and non-square images."""

import numpy as np
import pytest

from shapegrad import Cones, Render
from shapegrad.learn.data import sample_cones
from shapegrad.learn.models import CONE_FIELDS, fields_for
from shapegrad.render.primitives import FAR, RenderSpec, primitive

ALL = "disk,ellipse,box,triangle,polygon5,segment,bezier,cone"


def test_cones_spec_is_one_cone_without_colour():
    spec = Cones(16).spec
    assert (spec.size, spec.num_shapes, spec.channels, spec.resolution) == (5, 1, 1, 16)
    assert [(s.field.name, s.field.kind, s.slice) for s in spec.fields_of(0)] == [
        ("apex", "position", slice(0, 2)),
        ("axis", "direction", slice(2, 4)),
        ("half_angle", "angle", slice(4, 5)),
    ]
    assert spec.get(0, "half_angle").field.period is None and spec.get(0, "axis").field.period == 360.0
    # The cone primitive of Render has the same geometry, then colour and opacity.
    assert [f.name for f in primitive("cone").fields] == ["apex", "axis", "half_angle"]
    assert Render("cone", 16).spec.size == 7
    assert fields_for(spec) == CONE_FIELDS
    natural = spec.to_natural(np.float32([[0.25, 0.5, 0.0, -2.0, 0.25]]))[0]
    np.testing.assert_allclose(natural["apex"], [[4.0, 8.0]])
    np.testing.assert_allclose(natural["axis"], [[270.0]])  # (0, -1): to the left, in [0, 360)
    np.testing.assert_allclose(natural["half_angle"], [[45.0]])


def test_cones_spec_samples_what_the_cone_dataset_always_drew():
    rng_a, rng_b = np.random.default_rng([3, 0, 1]), np.random.default_rng([3, 0, 1])
    ours = Cones(16).spec.sample(32, seed=rng_a)
    # The original sampler, written out: apex in [0.2, 0.8]^2, a uniform axis angle, s in [0.1, 0.4].
    apex = rng_b.uniform(0.2, 0.8, (32, 2))
    phi = rng_b.uniform(0, 2 * np.pi, 32)
    s = rng_b.uniform(0.1, 0.4, 32)
    legacy = np.concatenate([apex, np.cos(phi)[:, None], np.sin(phi)[:, None], s[:, None]], 1).astype("float32")
    np.testing.assert_array_equal(ours, legacy)
    np.testing.assert_array_equal(sample_cones(np.random.default_rng([3, 0, 1]), 32), legacy)


def test_non_square_natural_units_round_trip():
    spec = RenderSpec(ALL, (80, 48), channels=3)
    assert (spec.height, spec.width, spec.resolution) == (80, 48, (80, 48))
    x = spec.sample(16, seed=0).astype(np.float64)
    natural = spec.to_natural(x)
    # Positions span the image on each axis; lengths are in units of the shorter side (48).
    np.testing.assert_allclose(natural[0]["center"], x[:, spec.get(0, "center").slice] * [80, 48])
    np.testing.assert_allclose(natural[0]["radius"], x[:, spec.get(0, "radius").slice] * 48)
    verts = natural[3]["vertices"].reshape(16, 3, 2)
    assert np.all((verts >= 0) & (verts <= [80, 48]))
    back = spec.from_natural(natural)
    for s in spec.slices:
        if s.field.kind == "direction" and s.field.period == 180.0:
            # An axis comes back as a unit vector modulo its period: (d0, d1) or (-d0, -d1).
            dot = np.abs((back[:, s.slice] * x[:, s.slice]).sum(axis=1))
            np.testing.assert_allclose(dot, 1.0, atol=1e-6)
        else:
            np.testing.assert_allclose(back[:, s.slice], x[:, s.slice], atol=1e-6)


def test_square_resolution_forms_are_one():
    assert RenderSpec("disk", (24, 24)).resolution == 24 == RenderSpec("disk", 24).resolution
    x = RenderSpec("disk,box", 24).sample(3, seed=1)
    a = RenderSpec("disk,box", 24).to_natural(x)
    b = RenderSpec("disk,box", (24, 24)).to_natural(x)
    for da, db in zip(a, b):
        for name in da:
            np.testing.assert_array_equal(da[name], db[name])


@pytest.mark.parametrize(
    "resolution, message",
    [
        (0, "Received: resolution=0"),
        ((8, 0), r"Received: resolution\[1\]=0"),
        ((8, 2.5), r"Received: resolution\[1\]=2.5"),
        ((8, 8, 8), r"Received: resolution=\(8, 8, 8\)"),
        ("8", "Received: resolution='8'"),
    ],
)
def test_bad_resolution(resolution, message):
    with pytest.raises(ValueError, match=message):
        RenderSpec("disk", resolution)
    with pytest.raises(ValueError, match=message):
        Render("disk", resolution)
    with pytest.raises(ValueError, match=message):
        Cones(resolution)


def test_far_is_the_one_clip():
    from shapegrad.bench import timing as bench
    from shapegrad.render import cones as layers, render

    assert FAR == 1e12 and layers.FAR is FAR and render.FAR is FAR and bench.FAR is FAR
