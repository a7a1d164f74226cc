"""Gradients of a scalar function on whichever Keras backend is active.

Keras 3 has no backend-neutral ``grad``; this module is the one place that
speaks each backend's autodiff (``tf.GradientTape``, ``jax.value_and_grad``,
``torch.autograd``). Library math never calls it; tests and
:mod:`shapegrad.doctor` do, and so do optimisation loops
(:mod:`shapegrad.scenefit`) through :func:`traced_value_and_grad`, which stays
on backend tensors so that it can run inside :func:`jit`.
"""

import contextlib
import functools
import inspect
import json
import os

import keras
import numpy as np

from shapegrad import _keras_internals

__all__ = [
    "value_and_grad",
    "value_and_grad_with_aux",
    "jit",
    "compiled_when_eager",
    "traced_value_and_grad",
    "torch_threads",
]


def torch_device():
    """The PyTorch device Keras computes on (``KERAS_TORCH_DEVICE``, a GPU if there is one, ``keras.device`` scopes)."""
    get_device = _keras_internals.torch_get_device()  # Keras' own choice, without making a tensor to ask
    if get_device is None:  # a Keras that moved it: ask a tensor (on a GPU, a synchronous copy)
        return keras.ops.convert_to_tensor(0.0).device
    return get_device()


def torch_leaf(a, dtype=None, requires_grad=False):
    """A fresh PyTorch tensor with the value of ``a``, on the device Keras computes on (a GPU if there is one).

    ``a`` is a NumPy array, anything ``np.asarray`` takes, or a tensor on any
    device; its dtype is kept unless ``dtype`` is given. A plain
    ``torch.tensor(numpy_array)`` lands on the CPU, where Keras' constants on a
    GPU cannot meet it ("Expected all tensors to be on the same device").
    """
    import torch

    device = torch_device()
    if isinstance(a, torch.Tensor):
        t = a.detach().to(device=device, dtype=dtype or a.dtype)
    else:
        t = torch.tensor(np.asarray(a), device=device, dtype=dtype)
    return t.requires_grad_(requires_grad)


def value_and_grad(fn, *args):
    """Evaluate ``fn(*args)`` (a scalar) and its gradient with respect to every argument.

    Args:
        fn: callable of backend tensors returning a scalar tensor.
        *args: NumPy arrays (their dtypes are kept, so float64 works).

    Returns:
        ``(value, grads)``: the value as a NumPy scalar and a list of NumPy
        arrays shaped like ``args``. An argument the output does not depend on
        gets a zero gradient.
    """
    value, _, grads = value_and_grad_with_aux(lambda *xs: (fn(*xs), ()), *args)
    return value, grads


def keep_compiled_programs(folder=None):
    """On JAX, keep compiled programs on disk (``folder``, default ``$XDG_CACHE_HOME/shapegrad/jax``) and reuse them.

    The command line calls it, so that a second ``shapegrad fit`` of pictures
    of the same size starts in seconds instead of recompiling. A cache
    folder set through ``JAX_COMPILATION_CACHE_DIR`` is left as it is. Other
    backends: nothing (TensorFlow's XLA has no such cache; PyTorch compiles nothing).
    Returns the folder used, or None.
    """
    if keras.backend.backend() != "jax":
        return None
    import jax

    if os.environ.get("JAX_COMPILATION_CACHE_DIR"):
        return os.environ["JAX_COMPILATION_CACHE_DIR"]
    if folder is None:
        base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
        folder = os.path.join(base, "shapegrad", "jax")
    jax.config.update("jax_compilation_cache_dir", folder)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
    return folder


def jit(fn):
    """Compile ``fn`` with the backend's XLA compiler (TensorFlow, JAX); PyTorch runs it eagerly.

    On TensorFlow without AutoGraph: ``fn`` is traced as plain Python (loops
    over tensors go through ``keras.ops.fori_loop``), and AutoGraph's source
    rewriting of every function it calls cost seconds per trace.
    """
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        return tf.function(fn, jit_compile=True, autograph=False)
    if backend == "jax":
        import jax

        return jax.jit(fn)
    return fn


def compiled_when_eager(fn=None, *, static_argnames=(), method=False, when=None):
    """Decorator: on JAX, an eager call of ``fn`` runs as one compiled program.

    Eager JAX compiles every operation anew for each new shape: an ellipse's
    distance on a new grid costs ~2.7 s that way, against ~1 s for one
    ``jax.jit`` program of the whole function, which then repeats 30-80x
    faster. Calls inside a trace (``jit``, ``grad``, a Keras train step,
    ``make_jaxpr``), with Keras symbolic tensors, and on TensorFlow and PyTorch
    run ``fn`` as written, so results and gradients are those of the traced
    function everywhere.

    Args:
        fn: the function; its arguments are tensors, arrays, Python numbers,
            ``None``, or nests of them, except ``static_argnames``.
        static_argnames: keyword arguments that are Python values (strings,
            flags); a new value compiles a new program.
        method: ``fn`` is a method of a Keras layer without weights whose
            computation its config determines: layers of equal config (names
            aside) share their programs, so a new ``Render`` of the same
            settings compiles nothing.
        when: optional ``when(*args, **kwargs) -> bool``; where False, the call
            runs op by op (a program whose compile time outgrows what it saves:
            XLA took 13 s for a ``Render`` of 32 single-shape groups, 324 s and
            7 GB for 128, against 3.4 s op by op).

    Example:

        >>> from keras import ops
        >>> @compiled_when_eager
        ... def softplus_sum(x):
        ...     return ops.sum(ops.softplus(x))
        >>> float(softplus_sum(ops.zeros(3)))
        2.0794415
    """
    if fn is None:
        return functools.partial(compiled_when_eager, static_argnames=static_argnames, method=method, when=when)
    compiled = []
    signature = inspect.signature(fn)

    @functools.wraps(fn)
    def call(*args, **kwargs):
        eager = keras.backend.backend() == "jax" and not _traced(args[int(method) :], kwargs)
        # An unhashable static argument cannot key a cache: fn's own check names it.
        if not eager or not _hashable(signature, static_argnames, args, kwargs) or (when and not when(*args, **kwargs)):
            return fn(*args, **kwargs)
        if not compiled:
            import jax  # the backend in use: present

            if method:
                # The layer's config key in place of ``self``, static by name like the others: with
                # fn's signature (wraps), jax finds each static argument by keyword or position.
                @functools.wraps(fn)
                def by_key(key, *a, **k):
                    return fn(key.layer, *a, **k)

                this = next(iter(signature.parameters))
                compiled.append(jax.jit(by_key, static_argnames=(this, *static_argnames)))
            else:
                compiled.append(jax.jit(fn, static_argnames=static_argnames))
        if method:
            return compiled[0](_ByConfig(args[0]), *args[1:], **kwargs)
        return compiled[0](*args, **kwargs)

    return call


class _ByConfig:
    """A layer as a cache key: equal when the class and the config (less the name) are."""

    def __init__(self, layer):
        self.layer = layer
        config = {k: v for k, v in layer.get_config().items() if k != "name"}
        self.key = (type(layer), json.dumps(config, sort_keys=True, default=repr))

    def __hash__(self):
        return hash(self.key)

    def __eq__(self, other):
        return isinstance(other, _ByConfig) and self.key == other.key


def _hashable(signature, names, args, kwargs):
    """Whether the arguments ``names`` of a call of a function of ``signature`` can key a cache."""
    if not names:
        return True
    bound = signature.bind_partial(*args, **kwargs).arguments
    try:
        hash(tuple(bound.get(n) for n in names))
        return True
    except TypeError:
        return False


def _traced(args, kwargs):
    """Whether any leaf of the arguments is a JAX tracer or a Keras symbolic tensor."""
    import jax  # the backend in use: present

    return any(isinstance(a, (jax.core.Tracer, keras.KerasTensor)) for a in keras.tree.flatten((args, kwargs)))


def value_and_grad_with_aux(fn, *args):
    """Like :func:`value_and_grad`, for ``fn`` returning ``(scalar, aux)``.

    ``aux`` is any nest of tensors (Keras' ``tree``); it comes back as NumPy
    arrays, evaluated in the same pass as the value and the gradient.

    Returns:
        ``(value, aux, grads)``.
    """
    from keras import tree

    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        xs = [tf.convert_to_tensor(a) for a in args]
        with tf.GradientTape() as tape:
            for x in xs:
                tape.watch(x)
            y, aux = fn(*xs)
        grads = tape.gradient(y, xs, unconnected_gradients=tf.UnconnectedGradients.ZERO)
        return np.asarray(y), tree.map_structure(np.asarray, aux), [np.asarray(g) for g in grads]
    if backend == "jax":
        import jax

        both = jax.value_and_grad(fn, argnums=tuple(range(len(args))), has_aux=True)
        try:
            # One compiled program: eager JAX would compile each operation anew for each new shape.
            (y, aux), grads = jax.jit(both)(*args)
        except jax.errors.JAXTypeError:  # fn reads a value in Python (a branch on a tensor): op by op
            (y, aux), grads = both(*args)
        return np.asarray(y), tree.map_structure(np.asarray, aux), [np.asarray(g) for g in grads]
    if backend == "torch":
        import torch

        xs = [torch_leaf(a, requires_grad=True) for a in args]
        y, aux = fn(*xs)
        if xs and y.requires_grad:
            grads = torch.autograd.grad(y, xs, allow_unused=True)
        else:
            grads = [None] * len(xs)
        grads = [torch.zeros_like(x) if g is None else g for x, g in zip(xs, grads)]

        def to_numpy(t):
            return t.detach().cpu().numpy() if isinstance(t, torch.Tensor) else np.asarray(t)

        return to_numpy(y), tree.map_structure(to_numpy, aux), [to_numpy(g) for g in grads]
    raise ValueError(f"Unsupported Keras backend. Received: backend={backend!r}")


def traced_value_and_grad(fn, wrt=None):
    """``fn(*args) -> (scalar, aux)`` to ``g(*args) -> (value, aux, grads)`` on backend tensors.

    Unlike :func:`value_and_grad_with_aux` nothing is converted to NumPy, so
    ``g`` can be called inside a function compiled with :func:`jit` (and inside
    a ``keras.ops.fori_loop``). The gradient is taken with respect to the first
    ``wrt`` arguments (default: all), each a tensor or a nest of tensors
    (Keras' ``tree``); ``grads`` is a list of them, shaped like those
    arguments, with zeros where the value does not depend on an input. The
    other arguments may be anything ``fn`` accepts (integer indices...).
    """
    from keras import tree

    backend = keras.backend.backend()

    def split(args):
        n = len(args) if wrt is None else wrt
        return tuple(args[:n]), tuple(args[n:])

    if backend == "jax":
        import jax

        def g(*args):
            xs, rest = split(args)
            (y, aux), grads = jax.value_and_grad(lambda *a: fn(*a, *rest), argnums=tuple(range(len(xs))),
                                                 has_aux=True)(*xs)
            return y, aux, list(grads)

        return g
    if backend == "tensorflow":
        import tensorflow as tf

        def g(*args):
            xs, rest = split(args)
            with tf.GradientTape() as tape:
                tape.watch(xs)
                y, aux = fn(*xs, *rest)
            grads = tape.gradient(y, list(xs), unconnected_gradients=tf.UnconnectedGradients.ZERO)
            return y, aux, grads

        return g
    if backend == "torch":
        import torch

        def g(*args):
            xs, rest = split(args)
            leaves = [torch_leaf(t, requires_grad=True) for t in tree.flatten(xs)]
            with torch.enable_grad():
                y, aux = fn(*tree.pack_sequence_as(xs, leaves), *rest)
                grads = torch.autograd.grad(y, leaves, allow_unused=True)
            grads = [torch.zeros_like(x) if d is None else d for x, d in zip(leaves, grads)]
            aux = tree.map_structure(lambda t: t.detach() if isinstance(t, torch.Tensor) else t, aux)
            return y.detach(), aux, list(tree.pack_sequence_as(xs, grads))

        return g
    raise ValueError(f"Unsupported Keras backend. Received: backend={backend!r}")


@contextlib.contextmanager
def torch_threads(count):
    """On PyTorch, run the block on ``count`` CPU threads (restored after); elsewhere nothing.

    The scene engine's eager ops are small (a few hundred thousand numbers):
    split over OpenMP threads they gain little, and where the cores are busy
    the threads spin waiting for each other, many times slower than one.
    """
    if keras.backend.backend() != "torch":
        yield
        return
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)
