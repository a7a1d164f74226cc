"""Data-parallel training on several devices with the backends' own machinery.

- JAX: ``keras.distribution.DataParallel`` over a one-axis ``DeviceMesh``;
  Keras shards each global batch along the batch axis and keeps the weights
  replicated.
- TensorFlow: ``tf.distribute.MirroredStrategy`` over the first ``devices``
  GPUs (or logical CPU devices when there are no GPUs); Keras splits each
  global batch across the replicas and all-reduces the gradients.
- PyTorch: the installed Keras has no distribution support for it, so asking
  for more than one device raises a ``ValueError`` saying which backends do.

In every case the *global* batch size stays what the user asked for, and the
gradient of a step is the mean over the global batch, as on one device.

Example:
    >>> with data_parallel(1, batch_size=8):
    ...     pass  # one device: no distribution at all
"""

import contextlib

import keras

from shapegrad import _validate

__all__ = ["available_devices", "check", "data_parallel"]


def available_devices():
    """The devices data-parallel training can use on this backend (GPUs first, else CPUs)."""
    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        for kind in ("gpu", "tpu", "cpu"):
            try:
                found = jax.devices(kind)
            except RuntimeError:
                continue
            if found:
                return [f"{d.platform}:{d.id}" for d in found]
        return []
    if backend == "tensorflow":
        import tensorflow as tf

        gpus = tf.config.list_logical_devices("GPU")
        return [d.name for d in (gpus or tf.config.list_logical_devices("CPU"))]
    return []


def check(devices, batch_size):
    """The device names to train on, or ``None`` for one device; raises ``ValueError`` if impossible.

    Errors: the backend cannot distribute (PyTorch), fewer devices exist, or
    ``batch_size`` is not a multiple of ``devices``.
    """
    if devices is None or devices == 1:
        return None
    devices = _validate.positive_int("devices", devices)
    backend = keras.backend.backend()
    if backend not in ("jax", "tensorflow"):
        raise ValueError(
            "Expected the jax or tensorflow backend for devices > 1: the installed Keras has no "
            f"distribution support for {backend}. Received: devices={devices} on backend={backend!r}"
        )
    found = available_devices()
    if len(found) < devices:
        raise ValueError(
            f"Expected devices <= {len(found)}, the {backend} devices found ({', '.join(found)}). "
            f"Received: devices={devices}"
        )
    if batch_size % devices:
        raise ValueError(
            f"Expected batch_size to be a multiple of devices={devices}. Received: batch_size={batch_size}"
        )
    return found[:devices]


@contextlib.contextmanager
def data_parallel(devices, batch_size):
    """A context in which models built, compiled and fitted train data-parallel on ``devices`` devices.

    ``devices`` of ``None`` or 1 does nothing; errors as in :func:`check`.
    """
    names = check(devices, batch_size)
    if names is None:
        yield None
        return
    if keras.backend.backend() == "jax":
        mesh = keras.distribution.DeviceMesh((len(names),), ["batch"], devices=names)
        with keras.distribution.DataParallel(device_mesh=mesh).scope():
            yield mesh
        return
    import tensorflow as tf

    strategy = tf.distribute.MirroredStrategy(devices=names)
    with strategy.scope():
        yield strategy
