"""Model pieces: a saved encoder and encoder-decoder load in a fresh process after only `import shapegrad`."""

import os
import subprocess
import sys
import textwrap

import keras
import numpy as np

from helpers import to_numpy
from shapegrad import Cones, Render
from shapegrad.models import Annealed, build_autoencoder, build_encoder, fields_for


def test_saved_models_load_after_a_plain_import(tmp_path):
    x = np.random.default_rng(0).uniform(0, 1, (2, 16, 16, 1)).astype("float32")
    expected = {}
    for name, renderer in (("cones", Cones(16)), ("scene", Render("disk,box", 16))):
        keras.utils.set_random_seed(0)
        encoder = build_encoder((16, 16, 1), fields_for(renderer.spec), width=4)
        model = build_autoencoder(encoder, Annealed(renderer, start=0.5, ramp_steps=4, name="renderer"))
        encoder.save(tmp_path / f"{name}_encoder.keras")
        model.save(tmp_path / f"{name}_autoencoder.keras")
        expected[f"{name}_encoder"] = to_numpy(encoder(x))
        expected[f"{name}_autoencoder"] = to_numpy(model(x))
    np.save(tmp_path / "x.npy", x)
    np.savez(tmp_path / "expected.npz", **expected)
    script = textwrap.dedent(
        """
        import sys
        import numpy as np
        import keras
        import shapegrad  # the only import of ours: it must register every saved class

        folder = sys.argv[1]
        x = np.load(folder + "/x.npy")
        expected = np.load(folder + "/expected.npz")
        for name in expected.files:
            model = keras.saving.load_model(f"{folder}/{name}.keras")
            got = keras.ops.convert_to_numpy(model(x))
            np.testing.assert_allclose(got, expected[name], atol=1e-5)
            print("loaded", name)
        """
    )
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [os.getcwd(), env.get("PYTHONPATH")]))
    done = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path)], capture_output=True, text=True, env=env, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("loaded") == 4


def test_moved_names_stay_importable_under_their_saved_names():
    from shapegrad import fit, models, train

    assert fit.Annealed is models.Annealed and train.pyramid_mse is models.pyramid_mse
    assert keras.saving.get_registered_name(Annealed) == "shapegrad>Annealed"
    assert keras.saving.get_registered_name(Cones) == "shapegrad>Cones"
    assert keras.saving.get_registered_name(Render) == "shapegrad>Render"
