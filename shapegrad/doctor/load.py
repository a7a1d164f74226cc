"""What the doctor is pointed at from outside Python: a ``.keras`` file or ``module:attribute``, and ``.npy`` arrays.

:func:`load_target` and :func:`load_array` raise ``ValueError`` naming the
file and the problem (``shapegrad doctor`` prints it as one line); the two
subclasses tell a file refused by Keras' safe mode, and one whose custom
classes are not registered, from other failures.

Example:
    >>> load_target("shapegrad.safe:safe_sqrt").__name__
    'safe_sqrt'
    >>> load_target("no_colon")
    Traceback (most recent call last):
    ...
    ValueError: Expected target to be a .keras file or module:attribute. Received: target='no_colon'
"""

import importlib
import inspect
import os

import keras
import numpy as np

__all__ = ["UnknownClassError", "UnsafeLoadError", "load_array", "load_target"]


class UnsafeLoadError(ValueError):
    """A ``.keras`` file that Keras' safe mode refuses to load (it would run code, e.g. a Lambda layer)."""


class UnknownClassError(ValueError):
    """A ``.keras`` file with custom classes that no imported module registered."""


def load_target(spec, safe_mode=True, modules=()):
    """A Keras layer, model or function from ``spec``, for :func:`shapegrad.doctor.check`.

    Args:
        spec: a ``.keras`` file (loaded with ``keras.saving.load_model``), or
            ``"module:attribute"`` naming a layer, model, class (built with
            default arguments), factory without arguments (called) or function
            of tensors (returned as it is).
        safe_mode: Keras' safe mode for ``.keras`` files: ``False`` lets the
            file run code; only for files you trust.
        modules: modules to import first (e.g. the one that registers custom layers).
    """
    for name in modules:
        try:
            importlib.import_module(name)
        except ImportError as error:
            raise ValueError(f"cannot import module {name}: {error}. Received: modules={list(modules)}") from None
    if spec.endswith(".keras") or os.path.isfile(spec):
        if not os.path.isfile(spec):
            raise ValueError(f"no such model file: {spec}")
        try:
            return keras.saving.load_model(spec, safe_mode=safe_mode)
        except Exception as error:  # noqa: BLE001 - any load failure is the file's
            text = str(error).strip()
            reason = text.splitlines()[0] if text else type(error).__name__
            if safe_mode and "safe_mode" in text:
                raise UnsafeLoadError(f"cannot load {spec}: {reason}") from None
            if "deserialized" in text or "Unknown" in text:
                raise UnknownClassError(f"cannot load {spec}: {reason}") from None
            raise ValueError(f"cannot load {spec}: {reason}") from None
    module_name, sep, attribute = spec.partition(":")
    if not sep or not module_name or not attribute:
        raise ValueError(f"Expected target to be a .keras file or module:attribute. Received: target={spec!r}")
    try:
        obj = importlib.import_module(module_name)
        for part in attribute.split("."):
            obj = getattr(obj, part)
    except (ImportError, AttributeError) as error:
        raise ValueError(f"cannot import {spec}: {error}") from None
    if isinstance(obj, keras.Operation):
        return obj
    if inspect.isclass(obj):
        return obj()  # a layer or model class with default arguments
    if callable(obj):
        try:
            needs_args = any(
                p.default is p.empty and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
                for p in inspect.signature(obj).parameters.values()
            )
        except (TypeError, ValueError):
            needs_args = True
        return obj if needs_args else obj()  # a function of tensors, or a factory
    raise ValueError(f"{spec} is not a layer, model, factory or function. Received: {type(obj).__name__}")


def load_array(path):
    """A ``.npy`` array, or a dict of arrays from a ``.npz`` file (pickles refused)."""
    try:
        data = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as error:
        raise ValueError(f"cannot read {path}: {error}") from None
    if isinstance(data, np.lib.npyio.NpzFile):
        return {k: data[k] for k in data.files}
    return data
