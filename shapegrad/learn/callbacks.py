"""The callbacks of :func:`shapegrad.learn.train.train`: data per epoch, validation scores, a time budget, the
whole run's history across a resume."""

import json
import os
import shutil
import time

import keras
import numpy as np

from shapegrad.io import files
from shapegrad.learn import metrics

__all__ = ["EpochData", "RunHistory", "TimeBudget", "Validate", "backup_and_restore", "write_json"]


def write_json(path, data):
    """``data`` as indented, sorted JSON at ``path``, written atomically."""
    files.write_text(path, json.dumps(data, indent=2, sort_keys=True) + "\n")


def _parses(path):
    try:
        with open(path) as f:
            json.load(f)
        return True
    except (OSError, ValueError):
        return False


def backup_and_restore(folder):
    """Keras' ``BackupAndRestore`` in ``folder`` (every epoch, deleted at the end), safe against a kill at any moment.

    Keras saves the weights, then writes ``training_metadata.json`` in place:
    killed during that write, the next start finds an empty or partial file
    and fails. With ``double_checkpoint`` Keras first copies the previous
    epoch's pair to ``*.bkp``; here a metadata file that does not parse is
    replaced by that pair (one epoch is trained again), or, with no whole pair,
    the backup is dropped and the run starts afresh instead of failing.
    """
    meta, weights = os.path.join(folder, "training_metadata.json"), os.path.join(folder, "latest.weights.h5")
    if os.path.exists(meta) and not _parses(meta):
        if _parses(meta + ".bkp") and os.path.exists(weights + ".bkp"):
            shutil.copyfile(weights + ".bkp", weights)
            shutil.copyfile(meta + ".bkp", meta)
        else:
            for path in (meta, weights):
                if os.path.exists(path):
                    os.remove(path)
    return keras.callbacks.BackupAndRestore(folder, save_freq="epoch", delete_checkpoint=True, double_checkpoint=True)


class EpochData(keras.callbacks.Callback):
    """Point the dataset at the current epoch, so a resumed run draws the same batches."""

    def __init__(self, dataset):
        super().__init__()
        self.dataset = dataset

    def on_epoch_begin(self, epoch, logs=None):
        self.dataset.epoch = epoch


class Validate(keras.callbacks.Callback):
    """After each epoch: the encoder's median parameter errors (at most 3) and IoU on a fixed batch."""

    def __init__(self, encoder, task, images, params):
        super().__init__()
        self.encoder, self.task = encoder, task
        self.images, self.truth = images, params

    def on_epoch_end(self, epoch, logs=None):
        pred = self.encoder.predict(self.images, verbose=0)
        logs = logs if logs is not None else {}
        recon = self.task.render(pred)
        if self.truth is None:  # no labels: the reconstruction's PSNR
            logs["val_psnr"] = float(metrics.psnr(recon, self.images).mean())
        else:
            errors = self.task.errors(pred, self.truth)
            for name in [n for n in errors if not n.endswith("_abs")][:3]:
                logs[f"val_{name}"] = float(np.median(errors[name]))
        logs["val_iou"] = float(metrics.iou(recon, self.images, self.task.background_of(self.images)).mean())


class TimeBudget(keras.callbacks.Callback):
    """Stop training at the end of the batch that passes ``seconds`` of wall time."""

    def __init__(self, seconds):
        super().__init__()
        self.seconds = seconds
        self.start = None
        self.stopped_early = False

    def on_train_begin(self, logs=None):
        self.start = time.perf_counter()

    def on_train_batch_end(self, batch, logs=None):
        if self.seconds and time.perf_counter() - self.start > self.seconds:
            self.model.stop_training = True
            self.stopped_early = True


class RunHistory(keras.callbacks.Callback):
    """The whole run's per-epoch logs and training seconds, kept across a kill in the backup folder.

    Keras' ``History`` holds only this session's epochs, and a run resumed by
    ``BackupAndRestore`` starts at a later epoch. After each epoch the logs
    so far and the total training seconds are written to ``path``
    (atomically; before the checkpoint, so it never lags behind it); a
    resumed run reads them back and keeps the epochs before the one it
    resumes at, and adds their seconds to its own.
    """

    def __init__(self, path, started):
        super().__init__()
        self.path, self.started = path, started
        self.epochs, self.before, self._resumed = [], 0.0, False
        if os.path.exists(path):
            with open(path) as f:
                self.epochs = json.load(f)["epochs"]

    def on_epoch_begin(self, epoch, logs=None):
        if not self._resumed:  # the first epoch of this session: the checkpoint's
            self._resumed = True
            self.epochs = self.epochs[:epoch]
            self.before = self.epochs[-1]["seconds"] if self.epochs else 0.0

    def on_epoch_end(self, epoch, logs=None):
        entry = {name: float(value) for name, value in (logs or {}).items()}
        entry["seconds"] = self.seconds()
        self.epochs = self.epochs[:epoch] + [entry]
        write_json(self.path, {"epochs": self.epochs})

    def seconds(self):
        """Training seconds of the whole run so far (earlier sessions: up to the epoch resumed from)."""
        return self.before + time.perf_counter() - self.started

    def history(self):
        """``{name: [value per epoch]}`` of the whole run, like ``keras.callbacks.History.history``."""
        names = [n for e in self.epochs for n in e if n != "seconds"]
        return {n: [e[n] for e in self.epochs if n in e] for n in dict.fromkeys(names)}
