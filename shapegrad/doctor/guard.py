"""NaNGuard: stop ``model.fit`` at the first non-finite step, keep the last finite weights, diagnose that batch.

Keras' ``TerminateOnNaN`` stops *after* the weights are NaN and says nothing.
:class:`NaNGuard` is a callback that, for the duration of ``fit``:

- makes the compiled training step skip the optimizer update when the loss or
  any gradient is non-finite (the check runs inside the step: one reduction
  over the gradients, as ``LossScaleOptimizer`` does), so the weights stay the
  last finite ones without copying them, and puts back the non-trainable state
  that the step's forward pass assigned (BatchNormalization's statistics, seed
  generators: small, copied each step where the backend updates in place);
- keeps a reference to the batch the step consumed (no copy), so with
  shuffling it is the batch actually used;
- reads a one-number flag that the step returns, one step late so that it
  never waits for the step in flight (Keras keeps dispatching steps
  asynchronously: the guard has no ``on_train_batch_end``). When the flag
  shows a failure, the step after it has been skipped as well, the next one is
  not run, and training stops; the report is written on ``on_train_end``.

How the step is instrumented (``on_train_begin``; undone on ``on_train_end``):

- the optimizer's ``scale_loss`` multiplies the loss by a constant that is 1
  while the loss is finite and NaN when it is not (``stop_gradient``), so a
  non-finite loss makes every gradient NaN and needs no separate check;
- its ``apply`` (TensorFlow, PyTorch; under ``tf.distribute`` decided across
  replicas in a merge call) or ``stateless_apply`` (JAX; the update is
  selected with ``where``, which XLA fuses) keeps the weights and optimizer
  state when a gradient is non-finite or an earlier step failed, and stores
  ``-(step + 1)`` in ``optimizer.iterations`` (a sticky flag); the callback
  puts the step count back. Nothing is added to the model's or the
  optimizer's variables, so checkpoints written meanwhile are unchanged;
- ``train_step`` selects the non-trainable variables back to their values
  before the step when the flag is set;
- ``train_step`` also returns ``min(iterations, 0)`` in its logs (removed
  before Keras sees them), and the training function is traced anew once per
  model (reused by later guarded fits) and wrapped so that the data iterator
  records each batch (on TensorFlow without ``tf.distribute`` the step returns
  its batch instead, so Keras' ``tf.data`` loop inside a ``tf.function`` stays).

Files written to ``directory`` when it fires (nothing otherwise):

- ``report.txt``, ``report.json``: the step, epoch and batch, and
  :func:`shapegrad.doctor.check` on that batch with those weights (the model's
  compiled loss and sample weights, ``training=True``): layer, operation,
  source line, fix;
- ``batch.npz``: the batch (``x``, ``y``, ``sample_weight``; nested entries as
  ``x/<key>``); ``inputs.npy`` and ``targets.npy`` (``.npz`` for several
  arrays) for the command line;
- ``weights.weights.h5`` (``model.load_weights``) and ``model.keras`` (the
  whole model, when it can be saved), and the ``shapegrad doctor`` command that
  re-runs the diagnosis from these files (in ``report.txt``).

Example:
    >>> import tempfile, numpy as np, keras
    >>> from shapegrad import doctor
    >>> model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    >>> model.compile("sgd", "mse")
    >>> x = np.ones((8, 2), "float32"); x[5] = np.nan
    >>> guard = doctor.NaNGuard(tempfile.mkdtemp(), verbose=0)
    >>> _ = model.fit(x, np.ones((8, 1)), batch_size=4, shuffle=False, callbacks=[guard], verbose=0)
    >>> guard.caught["step"], bool(np.isfinite(model.get_weights()[0]).all())
    (1, True)
"""

import json
import os
import sys
import weakref

import keras
import numpy as np
from keras import ops, tree

from shapegrad import _keras_internals
from shapegrad.doctor.diagnose import check
from shapegrad.io import files

__all__ = ["NaNGuard"]


def _all_finite(values):
    """One boolean tensor: every (dense part of every) gradient is finite."""
    flags = []
    for g in values:
        if g is None:
            continue
        if keras.backend.backend() == "tensorflow":
            import tensorflow as tf

            if isinstance(g, tf.IndexedSlices):
                g = g.values
        flags.append(ops.all(ops.isfinite(g)))
    if not flags:
        return ops.convert_to_tensor(True)
    return ops.all(ops.stack(flags)) if len(flags) > 1 else flags[0]


def _merge_call_context():
    """The TensorFlow replica context when the optimizer's update needs a merge call, else ``None``."""
    if keras.backend.backend() != "tensorflow":
        return None
    import tensorflow as tf

    if not tf.distribute.has_strategy() or tf.__internal__.distribute.strategy_supports_no_merge_call():
        return None
    return tf.distribute.get_replica_context()


def _flag(step):
    """The value stored in ``iterations`` when ``step`` fails: ``-(step + 1)``; kept when already negative."""
    return ops.where(step >= 0, ops.subtract(ops.negative(step), 1), step)


class NaNGuard(keras.callbacks.Callback):
    """Stop training at the first step whose loss or gradients are non-finite, with the last finite weights.

    Args:
        directory: where the report, the batch and the weights are written
            when a non-finite step is caught (created then; a healthy run
            writes nothing).
        diagnose: run :func:`shapegrad.doctor.check` on the batch (default
            ``True``); ``False`` only saves the files.
        verbose: ``1`` prints one line when it fires, ``0`` is silent.

    Attributes:
        caught: ``None``, or after a catch a dict with ``step`` (the
            optimizer's step count before the failing step, 0-based),
            ``epoch``, ``batch`` (0-based, within the epoch), ``loss_finite``
            (from Keras' running mean of the loss) and ``directory``.
        report: the :class:`shapegrad.doctor.Report` of that batch, or ``None``.

    Conventions: the failing step changes no variable, so after ``fit`` every
    variable of the model and its optimizer is exactly as after the last
    finite step: the weights, the non-trainable state its forward pass assigns
    (BatchNormalization's moving statistics, seed generators, any layer's
    state), the optimizer's state and ``optimizer.iterations``. The model can
    be saved or trained further. The compiled metrics are not put back (their
    running values include the failing step), nor is Python state outside
    variables; the report says so. Cost: on TensorFlow and PyTorch every
    non-trainable variable is copied and selected once per step, so a large
    frozen part of the model (its weights are non-trainable too) adds work in
    proportion to its size; on JAX the state passes through a conditional.
    Works with Keras' default compiled step on TensorFlow (``tf.function``,
    XLA), JAX (``jax.jit``) and PyTorch, with array, ``PyDataset`` and
    ``tf.data`` inputs. Not with ``LossScaleOptimizer``, which skips
    non-finite steps itself.
    """

    def __init__(self, directory, diagnose=True, verbose=1):
        super().__init__()
        if not isinstance(directory, (str, os.PathLike)) or not str(directory):
            raise ValueError(f"Expected directory to be a path. Received: directory={directory!r}")
        if verbose not in (0, 1):
            raise ValueError(f"Expected verbose to be 0 or 1. Received: verbose={verbose!r}")
        self.directory = os.fspath(directory)
        self.diagnose = bool(diagnose)
        self.verbose = verbose
        self.caught = None
        self.report = None
        self._saved = None  # what was patched, to undo it
        self._guarded = None

    # ------------------------------------------------------------------ patching

    def on_train_begin(self, logs=None):
        # Keras' Callback.model syncs the JAX state on every access: outside on_train_begin
        # the guard uses this plain reference instead.
        model = self._guarded = self.model
        optimizer = getattr(model, "optimizer", None)
        if not isinstance(optimizer, keras.optimizers.Optimizer):
            raise ValueError(
                f"NaNGuard needs a model compiled with a Keras optimizer. Received: optimizer={optimizer!r}"
            )
        if isinstance(optimizer, keras.optimizers.LossScaleOptimizer):
            raise ValueError(
                "NaNGuard does not work with LossScaleOptimizer, which skips steps with non-finite "
                "gradients as part of loss scaling. Received: optimizer=LossScaleOptimizer"
            )
        _undo_stale(model)
        if not optimizer.built:
            optimizer.build(model.trainable_variables)
        self.caught, self.report = None, None
        self._epoch, self._batch = 0, 0
        self._inflight = []  # the calls not checked yet: flag, batches, where they were
        self._data = None
        self._history = getattr(model, "history", None)
        self._iteration_index = next(i for i, v in enumerate(optimizer.variables) if v is optimizer.iterations)
        self._dispatched = int(ops.convert_to_numpy(optimizer.iterations))
        self._saved = {
            "train_function": model.train_function,
            "optimizer": optimizer,
            "optimizer_attrs": [n for n in ("apply", "stateless_apply", "scale_loss") if n in optimizer.__dict__],
        }
        _GUARDED[id(model)] = self
        self._patch_optimizer(optimizer)
        # The instrumented step is traced once per model and training function, and reused by
        # later guarded fits (a new trace and compile each time would cost seconds per fit).
        cached = _INSTRUMENTED.get(model)
        if cached is None or cached[0] is not model.train_function:
            step = _flagged_train_step(model, self._iteration_index)
            object.__setattr__(model, "train_step", step)
            model.make_train_function(force=True)
            cached = (self._saved["train_function"], model.train_function, step)
            _INSTRUMENTED[model] = cached
        object.__setattr__(model, "train_step", cached[2])
        object.__setattr__(model, "train_function", self._recording(cached[1]))

    def _patch_optimizer(self, optimizer):
        original_scale_loss = optimizer.scale_loss

        def scale_loss(loss):
            # 1 while the loss is finite, NaN otherwise: then every gradient is NaN.
            finite = ops.all(ops.isfinite(loss))
            factor = ops.stop_gradient(ops.where(finite, ops.ones((), loss.dtype), ops.full((), np.nan, loss.dtype)))
            return original_scale_loss(ops.multiply(loss, factor))

        object.__setattr__(optimizer, "scale_loss", scale_loss)
        if keras.backend.backend() == "jax":
            original_stateless_apply = optimizer.stateless_apply
            k = self._iteration_index

            def stateless_apply(optimizer_variables, grads, trainable_variables):
                step = optimizer_variables[k]
                ok = ops.logical_and(_all_finite(grads), step >= 0)

                # Compute the update and select: XLA fuses the selects into the update, where
                # a cond would copy the whole state through a conditional every step.
                new_t, new_o = original_stateless_apply(optimizer_variables, grads, trainable_variables)
                new_t = [ops.where(ok, n, o) for n, o in zip(new_t, trainable_variables)]
                new_o = [ops.where(ok, n, o) for n, o in zip(new_o, optimizer_variables)]
                new_o[k] = ops.where(ok, new_o[k], ops.cast(_flag(step), step.dtype))
                return new_t, new_o

            object.__setattr__(optimizer, "stateless_apply", stateless_apply)
        else:
            original_apply = optimizer.apply
            step = optimizer.iterations

            def healthy(grads):
                return ops.logical_and(_all_finite(grads), ops.convert_to_tensor(step) >= 0)

            def skip():
                step.assign(ops.cast(_flag(ops.convert_to_tensor(step)), step.dtype))

            def apply(grads, trainable_variables=None):
                grads = list(grads)
                merge = _merge_call_context()
                if merge is None:
                    ops.cond(healthy(grads), lambda: original_apply(grads, trainable_variables), skip)
                    return

                # tf.distribute with merge calls (MirroredStrategy): the update all-reduces,
                # which cannot sit inside a cond in a replica: decide across replicas, as
                # LossScaleOptimizer does.
                def across(distribution, grads, trainable_variables):
                    oks = distribution.extended.call_for_each_replica(healthy, args=(grads,))
                    ok = ops.all(ops.stack(list(distribution.experimental_local_results(oks))))

                    def update():
                        distribution.extended.call_for_each_replica(original_apply, args=(grads, trainable_variables))

                    ops.cond(ok, update, skip)

                merge.merge_call(across, args=(grads, trainable_variables))

            object.__setattr__(optimizer, "apply", apply)

    def _recording(self, train_function):
        """``train_function`` that records the batches it consumes and checks the step before the last.

        The check lags one call behind so that reading the flag never waits for the step
        just dispatched (JAX dispatches asynchronously; Keras keeps doing so because the
        guard has no ``on_train_batch_end``). The step after a failed one is skipped by
        the sticky flag; the one after that is not run at all.
        """
        guard, model = self, self._guarded
        backend = keras.backend.backend()
        in_graph = _tf_in_graph(model)

        def recorded(*args):
            if guard._stale():
                _undo_stale(model)
                return model.train_function(*args)
            while len(guard._inflight) > 1:
                if guard._failed(guard._inflight.pop(0)):
                    return guard._stand_in(args)
            batches = []
            if backend == "torch":
                (data,) = args
                batches = list(data)
                out = train_function(data)
            elif in_graph:
                out = train_function(*args)
            else:
                *state, iterator = args
                out = train_function(*state, _Recorder(iterator, batches))
            logs = out[0] if backend == "jax" else out
            flag = logs.pop(_FLAG)
            batch = logs.pop(_BATCH, None)
            if in_graph:
                batches = [batch]
            guard._inflight.append(
                dict(flag=flag, batches=batches, start=guard._dispatched, epoch=guard._epoch, batch=guard._batch, logs=logs)
            )
            guard._dispatched += len(batches)
            guard._batch += len(batches)
            return out

        return recorded

    def _stale(self):
        """A later ``fit`` without this callback runs the patched model (an earlier ``fit`` was interrupted)."""
        return getattr(self._guarded, "history", None) is not self._history

    def _restore(self):
        saved, self._saved = self._saved, None
        if saved is None:
            return
        model, optimizer = self._guarded, saved["optimizer"]
        for name in ("apply", "stateless_apply", "scale_loss"):
            if name not in saved["optimizer_attrs"]:
                optimizer.__dict__.pop(name, None)
        model.__dict__.pop("train_step", None)
        object.__setattr__(model, "train_function", saved["train_function"])
        _GUARDED.pop(id(model), None)

    # ------------------------------------------------------------------ watching

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch
        self._batch = 0

    def on_epoch_end(self, epoch, logs=None):
        self._drain()

    def on_train_end(self, logs=None):
        self._drain()
        self._restore()
        if self.caught is not None:
            self._write_report()

    def _drain(self):
        """Check every step still unchecked (the weights are in the model's variables by now)."""
        while self._inflight and self._saved is not None:
            if self._failed(self._inflight.pop(0)):
                self._guarded.optimizer.iterations.assign(self.caught["step"])
        self._inflight = []

    def _failed(self, entry):
        """Read one call's flag; on a failure, note what failed and stop training."""
        flag = int(entry["flag"])
        if flag >= 0:
            return False
        step = -flag - 1
        index = step - entry["start"]
        loss = entry["logs"].get("loss")
        self.caught = {
            "step": step,
            "epoch": entry["epoch"],
            "batch": entry["batch"] + index,
            "loss_finite": None if loss is None else bool(np.isfinite(ops.convert_to_numpy(loss)).all()),
            "directory": self.directory,
        }
        self._data = entry["batches"][index] if 0 <= index < len(entry["batches"]) else None
        self._inflight = []
        self._guarded.stop_training = True
        return True

    def _stand_in(self, args):
        """What ``train_function`` returns instead of running a step after a failure: the state put back."""
        step = self.caught["step"]
        logs = {}
        if keras.backend.backend() == "jax":
            trainable, non_trainable, optimizer_variables, metrics = args[0]
            optimizer_variables = list(optimizer_variables)
            old = optimizer_variables[self._iteration_index]
            optimizer_variables[self._iteration_index] = ops.cast(ops.convert_to_tensor(step), old.dtype)
            return logs, (trainable, non_trainable, optimizer_variables, metrics)
        self._guarded.optimizer.iterations.assign(step)
        return logs

    def _read_iterations(self):
        model = self._guarded
        variables = _keras_internals.jax_optimizer_variables(model) if keras.backend.backend() == "jax" else None
        if variables:
            value = variables[self._iteration_index]
        else:
            value = model.optimizer.iterations
        return int(ops.convert_to_numpy(value))

    def _set_iterations(self, step):
        model = self._guarded
        variables = _keras_internals.jax_optimizer_variables(model) if keras.backend.backend() == "jax" else None
        if variables:
            old = variables[self._iteration_index]
            variables[self._iteration_index] = ops.cast(ops.convert_to_tensor(step), old.dtype)
            _keras_internals.set_jax_optimizer_variables(model, variables)
            model.jax_state_sync()
        else:
            model.optimizer.iterations.assign(step)

    # ------------------------------------------------------------------ reporting

    def _write_report(self):
        c = self.caught
        try:
            self._write(self._data)
        finally:
            self._data = None
        if self.verbose:
            what = "loss" if c["loss_finite"] is False else "gradients"
            print(
                f"NaNGuard: non-finite {what} at step {c['step']} (epoch {c['epoch']}, batch {c['batch']}): "
                f"training stopped with every variable as before that step; report in "
                f"{os.path.join(self.directory, 'report.txt')}",
                file=sys.stderr,
            )

    def _write(self, data):
        model, out = self._guarded, self.directory
        os.makedirs(out, exist_ok=True)
        written, notes = [], []
        x = y = sw = None
        if data is None:
            notes.append("the batch of this step was not recorded (steps_per_execution > 1 on this path)")
        else:
            x, y, sw = keras.utils.unpack_x_y_sample_weight(tree.map_structure(_to_numpy, data))
            arrays = {}
            for name, part in (("x", x), ("y", y), ("sample_weight", sw)):
                arrays.update(_flat_arrays(name, part))
            np.savez(os.path.join(out, "batch.npz"), **arrays)
            written.append("batch.npz")
            written.append(_save_for_cli(os.path.join(out, "inputs"), x, model))
            if y is not None:
                written.append(_save_for_cli(os.path.join(out, "targets"), y, model))
        model.save_weights(os.path.join(out, "weights.weights.h5"))
        written.append("weights.weights.h5")
        model_file = os.path.join(out, "model.keras")
        try:
            model.save(model_file)
            written.append("model.keras")
        except Exception as error:  # noqa: BLE001 - the weights file is enough to reproduce
            if os.path.exists(model_file):
                os.remove(model_file)
            notes.append(f"model.keras not written: {type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}")

        loss_name = model.loss if isinstance(model.loss, str) else None
        command = None
        if "model.keras" in written and x is not None:
            command = f"shapegrad doctor {os.path.join(out, 'model.keras')}"
            command += "".join(f" --import {m}" for m in _custom_modules(model))
            command += f" --input {os.path.join(out, written[1])}"
            if y is not None:
                command += f" --target {os.path.join(out, written[2])}"
            if loss_name is not None:
                command += f" --loss {loss_name}"
            if sw is not None:
                notes.append("the command line has no sample weights; the report above used them")

        report = None
        if self.diagnose and x is not None:
            try:
                report = _diagnose(model, x, y, sw)
            except Exception as error:  # noqa: BLE001 - the files stand without the diagnosis
                notes.append(f"shapegrad.doctor.check failed: {type(error).__name__}: {error}")
        self.report = report

        c = self.caught
        what = (
            "the loss was non-finite"
            if c["loss_finite"] is False
            else "the loss was finite but gradients were not"
            if c["loss_finite"]
            else "the loss or the gradients were non-finite"
        )
        head = [
            f"NaNGuard: step {c['step']} (epoch {c['epoch']}, batch {c['batch']}; counted from 0): {what}.",
            f"Training stopped; every variable of the model ({len(model.trainable_variables)} trainable, "
            f"{len(model.non_trainable_variables)} non-trainable) and of its optimizer keeps its value from before "
            f"this step (optimizer.iterations = {c['step']}). Not put back: the compiled metrics' running "
            f"values (they include this step) and Python state outside variables.",
            f"Files: {', '.join(written)}",
        ]
        if command:
            head.append(f"Re-run the diagnosis: {command}")
        head += [f"note: {n}" for n in notes]
        body = str(report) if report is not None else "(no diagnosis)"
        if report is not None and report.ok:
            body += (
                "\n\nThe eager re-run of this batch is finite: the non-finite value came from the "
                "compiled step only (dropout, XLA/jit numerics) or from a layer doctor.check cannot split."
            )
        files.write_text(os.path.join(out, "report.txt"), "\n".join(head) + "\n\n" + body + "\n")
        payload = dict(c)
        payload.update(files=written, command=command, notes=notes, report=report.to_dict() if report else None)
        files.write_text(os.path.join(out, "report.json"), json.dumps(payload, indent=2) + "\n")


# ---------------------------------------------------------------------- helpers


_GUARDED = {}  # id(model) -> the NaNGuard whose patches are on it
_INSTRUMENTED = weakref.WeakKeyDictionary()  # model -> (its train_function, the instrumented one, train_step)


def _undo_stale(model):
    guard = _GUARDED.get(id(model))
    if guard is None or guard._guarded is not model:
        return
    step = guard._read_iterations() if guard._saved is not None else 0
    if step < 0:
        guard._set_iterations(-step - 1)
    guard._inflight = []
    guard._restore()


_FLAG = "_nan_guard_flag"
_BATCH = "_nan_guard_batch"


def _tf_in_graph(model):
    """TensorFlow without tf.distribute, one step per call: the step itself returns its batch.

    Then Keras' ``tf.data`` loop inside a ``tf.function`` stays; otherwise the guard records the
    batches from Python.
    """
    if keras.backend.backend() != "tensorflow" or model.steps_per_execution != 1:
        return False
    import tensorflow as tf

    return not tf.distribute.has_strategy()


def _flagged_train_step(model, iteration_index):
    """``train_step`` that puts back the state its forward pass assigned, and returns the flag in its logs.

    The optimizer's patched update already keeps the trainable variables and its own state on a
    non-finite step. The forward pass assigns the rest (BatchNormalization's moving statistics,
    seed generators, any layer's non-trainable state) whatever the gradients: each of those goes
    back to its value before the step when the step failed (the sticky flag in ``iterations`` is
    negative), inside the compiled step, so nothing waits for the host. On JAX the state comes
    in and goes out as arrays, chosen by a conditional (a ``where`` that XLA fuses into the
    moving statistics' update rounds them differently from the unguarded step; a conditional
    leaves that computation as it was). On TensorFlow and PyTorch the values are copied before
    the step (PyTorch updates a variable's tensor in place) and selected after it.

    The flag is ``0`` after a healthy step, ``-(s + 1)`` once step ``s`` failed; a new array (not
    the step counter itself), so JAX never donates it with the state. A new function object, so
    that every backend traces the step anew. The model's metrics are not put back: their running
    values include the failed step (``NaNGuard.caught["loss_finite"]`` reads them).
    """
    method = type(model).train_step

    if keras.backend.backend() == "jax":

        def train_step(state, data):
            logs, new_state = method(model, state, data)
            trainable, non_trainable, optimizer_variables, metrics = new_state
            step = optimizer_variables[iteration_index]
            ok = step >= 0
            new, old = list(non_trainable), list(state[1])
            non_trainable = ops.cond(ok, lambda: new, lambda: old) if new else new
            logs = dict(logs)
            logs[_FLAG] = ops.minimum(step, 0)
            return logs, (trainable, non_trainable, optimizer_variables, metrics)

        return train_step

    def train_step(data):
        assigned = model.non_trainable_variables
        before = [ops.copy(v.value) for v in assigned]
        logs = dict(method(model, data))
        step = ops.convert_to_tensor(model.optimizer.iterations)
        if assigned:
            ok = step >= 0
            for v, old in zip(assigned, before):
                v.assign(ops.where(ok, v.value, old))
        logs[_FLAG] = ops.minimum(step, 0)
        if _tf_in_graph(model):
            logs[_BATCH] = data  # the batch leaves the tf.function as it came in: no copy
        return logs

    return train_step


class _Recorder:
    """An iterator that passes batches through and keeps a reference to each in ``store``."""

    def __init__(self, iterator, store):
        self._iterator = iter(iterator)
        self._store = store
        # Pull the first batch here: an exhausted iterator raises StopIteration before the step.
        self._first = next(self._iterator)

    def __iter__(self):
        return self

    def __next__(self):
        if self._first is not None:
            data, self._first = self._first, None
        else:
            data = next(self._iterator)
        self._store.append(data)
        return data


def _to_numpy(x):
    if x is None:
        return None
    if type(x).__name__ == "PerReplica":  # tf.distribute: the replicas' shards of the global batch
        return np.concatenate([_to_numpy(t) for t in x.values])
    if hasattr(x, "detach"):
        x = x.detach().cpu()
    return np.asarray(ops.convert_to_numpy(x))


def _flat_arrays(name, part):
    if part is None:
        return {}
    if isinstance(part, np.ndarray):
        return {name: part}
    out = {}
    items = part.items() if isinstance(part, dict) else enumerate(part)
    for key, value in items:
        out.update(_flat_arrays(f"{name}/{key}", value))
    return out


def _save_for_cli(base, part, model):
    """``base.npy`` for one array, ``base.npz`` (by input name) for several; returns the file name."""
    if isinstance(part, np.ndarray):
        np.save(base + ".npy", part)
        return os.path.basename(base) + ".npy"
    if isinstance(part, dict):
        arrays = dict(part)
    else:
        names = [getattr(t, "name", None) for t in (getattr(model, "inputs", None) or [])]
        leaves = list(part)
        keys = names if len(names) == len(leaves) and all(names) else [str(k) for k in range(len(leaves))]
        arrays = dict(zip(keys, leaves))
    np.savez(base + ".npz", **{str(k): np.asarray(v) for k, v in arrays.items()})
    return os.path.basename(base) + ".npz"


def _custom_modules(model):
    mods = set()
    for layer in _keras_internals.inner_layers(model, recursive=False):
        module = type(layer).__module__
        if not module.startswith(("keras", "shapegrad", "__main__")):
            mods.add(module)
    return sorted(mods)


def _diagnose(model, x, y, sample_weight):
    """:func:`shapegrad.doctor.check` with the model's compiled loss; the non-trainable weights are put back."""
    compiled = _keras_internals.compiled_loss(model)
    loss = None
    if compiled is not None and y is not None:
        sw = None if sample_weight is None else tree.map_structure(ops.convert_to_tensor, sample_weight)

        def loss(targets, outputs):
            return compiled(targets, outputs, sw)

        loss.__name__ = f"the model's compiled loss ({model.loss!r})" if not callable(model.loss) else (
            f"the model's compiled loss ({getattr(model.loss, '__name__', type(model.loss).__name__)})"
        )
    kept = [(v, ops.convert_to_numpy(v.value)) for v in model.non_trainable_variables]
    try:
        return check(model, x, targets=y, loss=loss, training=True)
    finally:
        for v, value in kept:
            v.assign(value)
