"""Find where NaN, Inf and dead gradients come from, in any Keras layer, model or function.

:func:`check` runs one batch forward and backward and reports, layer by layer:

- **non-finite values** in the forward pass: the first layer whose output is
  NaN or Inf although its inputs are finite;
- **non-finite gradients**: walking backwards, the first layer whose input (or
  weight) gradient is non-finite while the gradient arriving at its output is
  finite; then, inside it, the operation responsible and the user's source
  line, found with the backend's own machinery (see
  :mod:`shapegrad.doctor.backends`);
- **dead gradients**: input features or weights whose gradient is exactly zero
  over the whole batch while the gradient at the output is not;
- **wrong gradients**: a float64 finite-difference check of a few input
  entries, where the target can run in float64;

and, for each finding, a hint from :data:`HINTS`, the catalogue of known causes,
naming the :mod:`shapegrad.safe` function that fixes it.

Conventions:

- ``target`` is a Keras layer, a Keras model, or a callable of tensors.
  Sequential and Functional models are checked layer by layer; any other target
  is one layer.
- ``inputs`` is one batch: an array, or a dict / list of arrays; axis 0 is the
  batch. Layers run with ``training=False``.
- ``loss`` defaults to the mean squared error against ``targets`` or, without
  ``targets``, to the sum of the outputs. A callable ``loss`` is called as
  ``loss(targets, outputs)``, or ``loss(outputs)`` when ``targets`` is ``None``;
  a string names a Keras loss.
- Nothing about the target is changed: weights are read, never written, and
  every global debugging switch is restored.

Example:
    >>> import numpy as np, keras
    >>> from shapegrad import doctor
    >>> class Angle(keras.layers.Layer):
    ...     def call(self, x):
    ...         dot = keras.ops.sum(x * x, axis=-1)
    ...         return keras.ops.arccos(keras.ops.clip(dot, -1.0, 1.0))
    >>> report = doctor.check(Angle(name="angle"), np.array([[1.0, 0.0]], "float32"))
    >>> report.ok, report.findings[0].layer, report.findings[0].hint
    (False, 'angle', 'acos')

Layout (one concern each): :mod:`~shapegrad.doctor.hints` (the catalogue),
:mod:`~shapegrad.doctor.report` (findings and reports, text and JSON),
:mod:`~shapegrad.doctor.trace` (running the target layer by layer),
:mod:`~shapegrad.doctor.findings`, :mod:`~shapegrad.doctor.fd` (float64 finite
differences), :mod:`~shapegrad.doctor.backends` (each backend's numerics
machinery), :mod:`~shapegrad.doctor.load` (a ``.keras`` file or
``module:attribute`` target and ``.npy`` arrays, for the command line),
:mod:`~shapegrad.doctor.guard` (:class:`NaNGuard`, the callback that catches
the training step where NaN first appears) and
:mod:`shapegrad._keras_internals` (every read of Keras' private
internals).
"""

from shapegrad.doctor.diagnose import check
from shapegrad.doctor.guard import NaNGuard
from shapegrad.doctor.hints import HINTS, Hint
from shapegrad.doctor.report import Finding, Report

__all__ = ["HINTS", "Finding", "Hint", "NaNGuard", "Report", "check"]
