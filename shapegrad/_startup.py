"""Before keras is imported: the command line's quiet TensorFlow start-up.

``python -m shapegrad`` and the ``shapegrad`` script import this package, and
so keras and TensorFlow, before any code of :mod:`shapegrad.cli` runs; and
TensorFlow writes its C++ start-up log ("oneDNN custom operations are on",
the CPU instructions it was built for) to stderr at import. So, on the command
line only, this module sets ``TF_CPP_MIN_LOG_LEVEL=2`` unless the user set it
(info and warnings off for the rest of the run) and imports keras with file
descriptor 2 pointed at ``/dev/null``: the lines TensorFlow 2.21 writes before
``absl::InitializeLog()`` ignore ``TF_CPP_MIN_LOG_LEVEL``. On the other backends
Keras still imports TensorFlow later when it is installed (``keras.utils.set_random_seed``
seeds it, its data adapters use ``tf.data``), and the same lines would come then, in the
middle of ``make demo`` or ``shapegrad train``; so TensorFlow is imported here too, with
stderr pointed away, except for the commands that never import it on another backend
(:data:`WITHOUT_TENSORFLOW`: ``fit``, ``render``; ~2.3 s of every such command). A user who wants
them sets ``TF_CPP_MIN_LOG_LEVEL=0``. A failed import still raises, after
stderr is back. A library user's ``import shapegrad`` is left alone.
"""

import importlib.util
import os
import sys


def _from_command_line():
    """True under ``python -m shapegrad[.cli|.demo]`` (argv[0] is "-m" while the package imports) or the script."""
    first = sys.argv[0] if sys.argv else ""
    return first == "-m" or os.path.basename(first) == "shapegrad"


# Commands that import nothing of TensorFlow on the JAX and PyTorch backends (tests/test_cli.py checks it).
WITHOUT_TENSORFLOW = ("fit", "render")


def quiet_tensorflow(command=None):
    """Import keras, and TensorFlow when it is installed, with TensorFlow's C++ start-up log discarded.

    Unless ``TF_CPP_MIN_LOG_LEVEL=0`` asks for the log, or keras is already imported. TensorFlow
    is left out for a ``command`` of :data:`WITHOUT_TENSORFLOW` on another backend.
    """
    if os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2") == "0" or "keras" in sys.modules:
        return
    other = os.environ.get("KERAS_BACKEND", "tensorflow") != "tensorflow"
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 2)
            try:
                import keras  # noqa: F401 - imports the backend, which logs

                if (not (other and command in WITHOUT_TENSORFLOW) and "tensorflow" not in sys.modules
                        and importlib.util.find_spec("tensorflow") is not None):
                    import tensorflow  # noqa: F401 - Keras imports it later on any backend; it logs at import
            finally:
                os.dup2(saved, 2)
    finally:
        os.close(saved)


if _from_command_line():
    quiet_tensorflow(sys.argv[1] if len(sys.argv) > 1 else None)
