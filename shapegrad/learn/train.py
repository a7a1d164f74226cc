"""Train an encoder to read primitives out of images, with the renderer as frozen decoder.

Self-supervised by default: the only loss is between the input image and the
rendering of the encoder's parameters, so no parameter labels are used. Two
things make that work through sharp edges, whose gradient vanishes a few
pixels away from the boundary:

- **annealing**: the decoder's edge starts soft (``anneal_start`` times its
  sharpness, i.e. 10x wider) and sharpens geometrically over the first
  ``anneal`` fraction of training, so early on every pixel feels the shape;
- **test-time refinement**: after the encoder's guess, a few Adam steps per
  image through the renderer (:func:`shapegrad.fit.refine`, on the compiled
  loop every fit runs, :class:`shapegrad.fit.LayerEngine`) polish the
  parameters to sub-pixel accuracy, again with the image loss only.

``supervised=True`` trains the same encoder on the true parameters instead (a
baseline that needs labels). ``guide=W`` (synthetic ``Render`` scenes only)
keeps the image loss and adds ``W`` times :func:`shapegrad.guide.guide_loss`
against the generator's parameters, a per-shape loss blind to each shape's
symmetries, its weight falling to 0 over the ``guide_decay`` fraction of the
steps, so that training ends self-supervised; it uses labels that only
synthetic scenes have. The user's images (:func:`train_images`) with a slot
decoder are first learnt from synthetic scenes drawn like them, guided the
same way (:mod:`shapegrad.learn.pretrain`), then from the images themselves.

Outputs in ``out``: ``encoder.keras``, ``metrics.json``, ``reconstructions.png``,
``curves.png``; while training, ``backup/`` holds the checkpoint from which a
killed run resumes (``keras.callbacks.BackupAndRestore``).

Example (a tiny run; skipped by the doctest run, it takes ~12 s on JAX; ``tests/test_train.py`` trains):
    >>> import tempfile
    >>> m = train(tempfile.mkdtemp(), resolution=16, steps=4, steps_per_epoch=2, batch_size=8,  # doctest: +SKIP
    ...           test_size=8, refine_steps=2, width=4, verbose=0)
    >>> sorted(k for k in m if k.endswith("median"))[:3]  # doctest: +SKIP
    ['aperture_error_deg_median', 'apex_error_px_median', 'axis_error_deg_median']
"""

import dataclasses
import os
import time

import keras
import numpy as np

from shapegrad import _keras_internals, _validate, doctor, fit
from shapegrad.io import files, plots
from shapegrad.learn import callbacks, data, distribute, encode, metrics, pretrain, teach
from shapegrad.learn.config import TrainConfig
from shapegrad.learn.data import ConeDataset, SceneDataset
from shapegrad.learn.feedback import build_feedback_encoder
from shapegrad.learn.guide import GuideLoss, GuideWeight, SlotGuideLoss
from shapegrad.learn.models import Annealed, build_autoencoder, build_encoder, build_spatial_encoder, fields_for
from shapegrad.learn.models import pyramid_mse  # noqa: F401  (importable from here, as before)
from shapegrad.render.cones import Cones
from shapegrad.render.primitives import format_shapes, parse_kinds, parse_shapes
from shapegrad.render.render import Render
from shapegrad.render.slots import SlotRender

__all__ = ["Task", "ImageTask", "TrainConfig", "superset_shapes", "train", "train_images", "evaluate", "OUTPUTS"]

OUTPUTS = ("encoder.keras", "metrics.json", "reconstructions.png", "curves.png")
# The scene fits that guide a run with TrainConfig.fits (shapegrad.learn.teach), kept with the outputs.
FITS = "fits.npz"


class Task:
    """What is learned: the renderer, the head's fields, the data, the parameter errors and the refiner.

    ``Task("cone", N)`` is the ``Cones`` layer (5 numbers per image), drawn
    by a :class:`~shapegrad.data.ConeDataset` and polished by
    :func:`shapegrad.fit.refine`; ``Task("disk,box,cone", N, channels=1)`` a
    :class:`shapegrad.Render` scene, drawn by a
    :class:`~shapegrad.data.SceneDataset`, compared after Hungarian matching
    within each kind and polished by :func:`shapegrad.fit.refine_scene`. This
    constructor is the one place that tells the two apart; everything else
    goes through ``renderer.spec``.
    """

    def __init__(self, shapes, resolution, channels=1, softness=1.0):
        self.shapes = shapes
        self.resolution = _validate.positive_int("resolution", resolution)
        if shapes == "cone":
            self.renderer = Cones(self.resolution)
            self._dataset = ConeDataset
            self.refine = fit.refine
        else:
            self.renderer = Render(shapes, self.resolution, channels=channels, softness=softness)
            self._dataset = SceneDataset
            self.refine = fit.refine_scene
        self.fields = fields_for(self.renderer.spec)
        self.channels = self.renderer.channels
        self.background = getattr(self.renderer, "background", 0.0)

    def dataset(self, batch_size, batches, seed, targets="images", noise=0.0, fresh=True):
        return self._dataset(self.renderer, batch_size, batches, seed, targets, noise, fresh)

    def errors(self, pred, true):
        """``{name: (items,) array}`` of parameter errors in natural units."""
        return metrics.parameter_errors(pred, true, self.renderer.spec)

    # Hooks that train() calls; ImageTask overrides them.
    def build_encoder(self, width, architecture="cnn", colors="head"):
        shape = (self.resolution, self.resolution, self.channels)
        if colors != "head" and not isinstance(self.renderer, Render):
            raise ValueError(f"Expected colors='head' with a Cones or slot decoder (the solve needs a Render). "
                             f"Received: colors={colors!r}")
        renderer = self.renderer if colors != "head" else None
        if architecture == "spatial":
            if tuple(self.fields) != fields_for(self.renderer.spec):  # a slot decoder reads no spec layout
                raise ValueError(f"Expected architecture='cnn' with a slot decoder. Received: architecture={architecture!r}")
            return build_spatial_encoder(shape, self.renderer.spec, width=width, colors=colors, renderer=renderer)
        return build_encoder(shape, self.fields, width=width, colors=colors, renderer=renderer)

    def validation_set(self, seed):
        """``(images, params)`` the per-epoch validation scores (params None: image scores only)."""
        return self.dataset(64, 1, seed + 1, fresh=False).sample(0)

    def test_set(self, size, seed):
        return self.dataset(size, 1, seed + 2, fresh=False).sample(0)

    def describe(self):
        """Extra entries of ``metrics.json``."""
        return {}

    def render(self, params):
        return keras.ops.convert_to_numpy(self.renderer(params))

    def background_of(self, images):
        """The background the IoU's masks are taken against: the renderer's (``ImageTask``: each image's border)."""
        return self.background




def evaluate(encoder, task, images, params, refine_steps=100, batch=256):
    """Metrics of the encoder alone and after ``refine_steps`` of test-time refinement.

    Cones: :func:`shapegrad.fit.refine` from the encoder's guess. Scenes:
    :func:`shapegrad.fit.refine_scene` (restarts that swap shapes' places and
    move shapes onto what the others miss; ``refine_steps`` per restart).
    Every chunk of ``batch`` images (scenes: ``batch // 4``, each with its
    restarts) runs on one :class:`shapegrad.fit.LayerEngine` of the task's
    renderer, compiled once per batch size.

    Returns ``(headline, encoder_only, pred, refined)``: dicts of summary
    figures (see :func:`shapegrad.metrics.summarize`) after and before
    refinement, and the ``(B, P)`` parameters before and after.
    """
    pred = encoder.predict(images, batch_size=batch, verbose=0)

    def summary(p):
        recon = task.render(p)
        per_item = {"iou": metrics.iou(recon, images, task.background_of(images)), "psnr": metrics.psnr(recon, images)}
        if params is not None:
            per_item.update(task.errors(p, params))
        return metrics.summarize(per_item)

    if not refine_steps:  # encoder only: no refiner is built
        return summary(pred), summary(pred), pred, pred
    # refine_scene renders every image from several restarts at once: a smaller chunk.
    chunk = batch if task.refine is fit.refine else max(1, batch // 4)
    engine = fit.LayerEngine(task.renderer, task.fields)
    refined = np.concatenate(
        [
            task.refine(task.renderer, task.fields, pred[k : k + chunk], images[k : k + chunk], steps=refine_steps,
                        engine=engine)
            for k in range(0, len(images), chunk)
        ]
    )
    return summary(refined), summary(pred), pred, refined


def _check_guide(task, guide, guided=False):
    """What the guide needs of the task (the rest of ``guide`` is checked by :class:`TrainConfig`)."""
    if isinstance(task, ImageTask) and guided:
        return  # the guide of the synthetic pre-training scenes or of the fits
    if isinstance(task, ImageTask):
        raise ValueError(f"Expected guide=None with images, pretrain=0 and fits=0: the guide needs the parameters "
                         f"of synthetic scenes or of fits. Received: guide={guide!r}")
    if not isinstance(task.renderer, Render):
        raise ValueError(f"Expected a Render scene with guide (the Cones layer trains well with supervised=True). "
                         f"Received: shapes={task.shapes!r}, guide={guide!r}")


def pretrain_fraction(task, pretrain):
    """The fraction of the run pre-trained on folder-like scenes (``TrainConfig.pretrain``; None: the default).

    Images with a slot decoder: ``pretrain``, 0 if None (the full ``encode`` search does better from an
    encoder trained on the images alone; docs/benchmarks.md). Any other task: 0,
    and ``ValueError`` for ``pretrain > 0`` (the pre-training draws slot scenes).
    """
    slots = isinstance(task, ImageTask) and isinstance(task.renderer, SlotRender)
    if pretrain is None:
        return 0.0
    if pretrain and not slots:
        raise ValueError(f"Expected pretrain=0 or None without images and a slot decoder (it draws slot scenes). "
                         f"Received: pretrain={pretrain!r}")
    return float(pretrain)


def fit_count(task, fits):
    """How many images to fit for the guide (``TrainConfig.fits``); ``ValueError`` without images and a slot decoder."""
    if fits and not (isinstance(task, ImageTask) and isinstance(task.renderer, SlotRender)):
        raise ValueError(f"Expected fits=0 without images and a slot decoder (the fits become slot targets). "
                         f"Received: fits={fits!r}")
    return int(fits)


def log(line):
    """Print one line of what training does (to stdout, flushed: a progress bar may follow)."""
    print(line, flush=True)


def _phased(task, c, out, say):
    """The :class:`~shapegrad.learn.pretrain.PhasedDataset` of a guided run of the user's images.

    Returns it, its :class:`~shapegrad.learn.pretrain.PhaseSwitch` (None: no
    synthetic phase), what it drew (for ``metrics.json``) and the seconds this
    session spent fitting.
    """
    stats = pretrain.folder_statistics(task.training, task.resolution, task.channels, seed=c.seed)
    scenes = pretrain.FolderLikeScenes(task.renderer, stats["backgrounds"])
    scale = scenes.matched_scale(stats["coverage"], seed=c.seed)
    images = data.ImageFolderDataset(task.training, task.resolution, task.channels, c.batch_size, c.epoch_steps,
                                     c.seed, c.noise)
    described = {"pretrain_coverage": round(stats["coverage"], 4), "pretrain_scale": round(scale, 3)}
    fitted, spent = None, 0.0
    if c.fits:
        fits = teach.FolderFits(os.path.join(out, FITS), task.renderer, task.training, c.seed)
        allowed = None if c.seconds is None else c.fit_share * c.seconds
        if say and not fits.done:
            budget = f", for at most {allowed:.0f} s" if allowed is not None else ""
            say(f"fitting up to {min(c.fits, len(task.training))} of the folder's {len(task.training)} training images "
                f"with the scene search{budget} ({fits.count} fitted before)")
        t0 = time.perf_counter()
        fits.fit(c.fits, allowed, log=say)
        spent = time.perf_counter() - t0
        fitted = fits.labelled()
        if say:
            say(f"{len(fitted)} of the {fits.count} fits reach {teach.MIN_FIT_PSNR:g} dB (mean PSNR "
                f"{fits.psnr.mean() if fits.count else float('nan'):.1f} dB, {fits.seconds:.0f} s of fitting): they guide "
                f"the encoder on the images themselves")
        described.update(fits=fits.count, fits_kept=len(fitted), fits_psnr=round(float(fits.psnr.mean()), 2)
                         if fits.count else None, fit_seconds=round(fits.seconds, 1))
    fraction = pretrain_fraction(task, c.pretrain)
    phased = pretrain.PhasedDataset(scenes, images, c.seed, c.pretrain_mix, switch_epoch=None if fraction else 0,
                                    fitted=fitted, fitted_share=0.5 if fraction else 1.0)
    if not fraction:
        if say:
            say(f"training on the folder's {len(task.training)} images, {c.pretrain_mix:.0%} of each batch guided by "
                f"the fits")
        return phased, None, described, spent
    seconds = None if c.seconds is None else fraction * max(c.seconds - spent, 0.0)
    switch = pretrain.PhaseSwitch(phased, os.path.join(out, "backup", "phase.json"), round(fraction * c.epochs),
                                  seconds, log=say)
    if say:
        budget = f" or {seconds:.0f} s" if seconds is not None else ""
        guides = " and by the fits of its own images" if phased.fitted is not None else ""
        say(f"pre-training on synthetic scenes drawn like the folder ({len(stats['backgrounds'])} images' border "
            f"colours as backgrounds; they cover {stats['coverage']:.0%} of the image: sizes x{scale:.2f}), guided "
            f"by their parameters{guides}, for {switch.epochs} of {c.epochs} epochs{budget}; then fine-tuning on the "
            f"folder's {len(task.training)} images ({c.pretrain_mix:.0%} of each batch still guided)")
    return phased, switch, described, spent


def _guided(encoder, renderer, weight, ramp_steps):
    """The encoder–decoder with a second output: the parameters and the guide's weight (:class:`GuideWeight`)."""
    renderer.trainable = False
    inputs = keras.Input(encoder.input_shape[1:], name="images")
    params = encoder(inputs)
    outputs = [renderer(params), GuideWeight(weight, ramp_steps, name="guide")(params)]
    return keras.Model(inputs, outputs, name="guided")


def _check_feedback(task, feedback):
    if not isinstance(task.renderer, Render):
        raise ValueError(f"Expected a Render decoder with feedback (its steps draw the parameters): synthetic "
                         f"scenes or images with shapes / decoder='superset'. Received: feedback={feedback!r} with "
                         f"shapes={task.shapes!r}")


def load_init(init, task, name="init"):
    """The encoder ``train(init=...)`` starts from: ``init`` (a path or a Keras model), checked against ``task``.

    Returns a new model (loaded from the file, or a copy of the model with its
    weights), so the caller's model is never changed. Raises ``ValueError``
    naming ``name`` (``"init"``; the command line passes ``"--init"``) when it
    cannot be loaded, does not map the task's images ``(H, W, C)`` to its
    renderer's parameters, draws other shapes (a ``Render`` inside it, as in
    ``ColorSolve``), or carries the metadata of other images (an encoder of
    the user's images: shapes, resolution, channels, decoder, kinds, maximum
    count and background must be the task's). An encoder of the user's images
    that carries no metadata gets the task's.
    """
    if isinstance(init, (str, os.PathLike)):
        path = os.fspath(init)
        if not os.path.isfile(path):
            why = "a folder" if os.path.isdir(path) else "no such file"
            raise ValueError(f"Expected {name} to be a trained encoder file. Received: {name}={path!r} ({why})")
        try:
            model = encode.load_model_file(path)
        except ValueError as error:
            raise ValueError(f"Expected {name} to be a Keras model file. Received: {name}={path!r} ({error})") from None
    elif isinstance(init, keras.Model):
        model = keras.models.clone_model(init)
        model.set_weights(init.get_weights())
    else:
        raise ValueError(f"Expected {name} to be a Keras model or its file. Received: {name}={init!r}")
    shape = (task.resolution, task.resolution, task.channels)
    size = sum(n for _, n, _ in task.fields)
    if tuple(model.input_shape[1:]) != shape or tuple(model.output_shape[1:]) != (size,):
        raise ValueError(f"Expected {name} to map images {shape} to the {size} parameters of shapes={task.shapes!r}. "
                         f"Received: {name} with input shape {model.input_shape} and output shape "
                         f"{model.output_shape}")

    drawn = [layer.renderer.shapes for layer in _keras_internals.inner_layers(model)
             if isinstance(getattr(layer, "renderer", None), Render)]
    if isinstance(task.renderer, Render) and any(shapes != task.renderer.shapes for shapes in drawn):
        raise ValueError(f"Expected {name} to draw the task's shapes ({task.shapes!r}). Received: {name} drawing "
                         f"{format_shapes(drawn[0])!r}")
    if isinstance(task, ImageTask):
        info, want = encode.find_info(model), task.info()
        if info is None:
            return encode.with_info(model, want)
        differ = [k for k in ("shapes", "resolution", "channels", "decoder", "kinds", "max_shapes") if info.get(k) != want[k]]
        if not np.allclose(info.get("background", []), want["background"], atol=0.02):
            differ.append("background")
        if differ:
            raise ValueError(f"Expected {name} to encode images like these ({', '.join(f'{k}={want[k]!r}' for k in differ)}). "
                             f"Received: {name} with {', '.join(f'{k}={info.get(k)!r}' for k in differ)}")
    return model


def check_outputs_free(out, force):
    """``FileExistsError`` if a training output is in ``out`` and neither ``force`` nor a run to resume (``out/backup``) says go on."""
    existing = [name for name in OUTPUTS if os.path.exists(os.path.join(out, name))]
    resuming = os.path.isdir(os.path.join(out, "backup"))
    if existing and not force and not resuming:
        raise FileExistsError(
            f"{os.path.join(out, existing[0])} exists. Pass force=True to overwrite. Received: out={out!r}"
        )


def train(out, config=None, *, force=False, verbose="auto", extra_callbacks=(), **kwargs):
    """Train the encoder–decoder and write its outputs to ``out``; returns the metrics dict.

    Args:
        out: output folder (created). Existing outputs are not overwritten
            unless ``force``; an unfinished run in ``out`` (its ``backup/``) is
            resumed: call ``train`` again with the same configuration.
        config: a :class:`TrainConfig`; None: ``TrainConfig(**kwargs)``.
        force: overwrite the outputs of an earlier run.
        verbose: Keras' ``fit`` verbosity (``"auto"`` shows a progress bar);
            0 also silences the lines that say what a run of the user's images does.
        extra_callbacks: more Keras callbacks for ``fit`` (e.g. a benchmark's own scores per epoch).
        **kwargs: :class:`TrainConfig`'s fields (``shapes``, ``steps``,
            ``batch_size``, ...); with ``config``, they replace its fields.

    Raises ``ValueError`` naming the field for a configuration that cannot
    train (before any work), ``FileExistsError`` for outputs in the way, and
    ``FloatingPointError`` when training produced a non-finite step (see
    :class:`shapegrad.doctor.NaNGuard`).
    """
    if config is None:
        config = TrainConfig(**kwargs)
    elif not isinstance(config, TrainConfig):
        raise ValueError(f"Expected config to be a TrainConfig (or the fields as keyword arguments). "
                         f"Received: config={config!r}")
    elif kwargs:
        config = dataclasses.replace(config, **kwargs)
    c = config
    task = c.shapes if isinstance(c.shapes, Task) else Task(c.shapes, c.resolution, c.channels)
    if c.supervised and isinstance(task, ImageTask):
        raise ValueError("Expected supervised=False with images: they have no parameter labels. Received: supervised=True")
    pretraining = pretrain_fraction(task, c.pretrain)
    teaching = fit_count(task, c.fits)
    if c.guide is not None:
        _check_guide(task, c.guide, pretraining > 0 or teaching > 0)
    if c.feedback:
        _check_feedback(task, c.feedback)
    init_from = os.fspath(c.init) if isinstance(c.init, (str, os.PathLike)) else getattr(c.init, "name", None)
    if c.init is not None:
        load_init(c.init, task)  # its errors before any work; loaded again inside the devices' scope
    steps = c.total_steps
    distribute.check(c.devices, c.batch_size)
    check_outputs_free(out, force)
    if force and any(os.path.exists(os.path.join(out, name)) for name in OUTPUTS) and os.path.exists(os.path.join(out, FITS)):
        os.remove(os.path.join(out, FITS))  # a finished run's fits: force starts afresh (an unfinished run resumes them)
    os.makedirs(out, exist_ok=True)
    started = time.perf_counter()

    with distribute.data_parallel(c.devices, c.batch_size):
        keras.utils.set_random_seed(c.seed)
        # Inside the scope: under tf.distribute / JAX sharding its variables must be the strategy's.
        encoder = task.build_encoder(c.width, c.architecture, c.colors) if c.init is None else load_init(c.init, task)
        if c.feedback:
            encoder.trainable = c.init is None
            encoder = build_feedback_encoder(encoder, task.renderer, c.feedback, width=c.width)
        targets = "params" if c.supervised else "images" if c.guide is None else "guided"
        guided = pretraining or teaching
        fit_seconds = 0.0
        if guided:
            data, switch, described, fit_seconds = _phased(task, c, out, log if verbose else None)
        else:
            data, switch, described = task.dataset(c.batch_size, c.epoch_steps, c.seed, targets, c.noise), None, {}
        val_images, val_params = task.validation_set(c.seed)
        warmup = min(steps // 10, 500)
        schedule = keras.optimizers.schedules.CosineDecay(
            0.0, steps - warmup, alpha=0.02, warmup_target=c.learning_rate, warmup_steps=warmup
        )
        if c.supervised:
            model = encoder
            model.compile(optimizer=keras.optimizers.Adam(schedule), loss="mse")
        else:
            annealed = Annealed(task.renderer, start=c.anneal_start, ramp_steps=c.anneal * steps, name="renderer")
            image_loss = pyramid_mse if c.loss == "pyramid" else "mse"
            if guided:
                ramp = 0 if c.guide_decay is None else c.guide_decay * steps
                model = _guided(encoder, annealed, c.guide or 1.0, ramp)
                image_loss = [image_loss, SlotGuideLoss(task.renderer)]
            elif c.guide is None:
                model = build_autoencoder(encoder, annealed)
            else:
                model = _guided(encoder, annealed, c.guide, c.guide_fraction * steps)
                image_loss = [image_loss, GuideLoss(task.renderer.spec)]
            model.compile(optimizer=keras.optimizers.Adam(schedule), loss=image_loss)
        budget = callbacks.TimeBudget(None if c.seconds is None else max(c.seconds - fit_seconds, 1.0))
        guard = doctor.NaNGuard(os.path.join(out, "nan-report"))
        run_history = callbacks.RunHistory(os.path.join(out, "backup", "history.json"), started)
        # shuffle=False: every batch is already a pure function of (seed, epoch, index); Keras'
        # shuffle would reorder them with Python's global random state, so that the same run on
        # one device and on several (or a resumed one) would see its batches in another order.
        history = model.fit(data, epochs=c.epochs, shuffle=False, verbose=verbose, callbacks=[
            *([switch] if switch is not None else []),
            callbacks.EpochData(data),
            callbacks.Validate(encoder, task, val_images, val_params),
            guard,
            run_history,
            callbacks.backup_and_restore(os.path.join(out, "backup")),
            budget,
            *extra_callbacks,
        ])
    train_seconds = run_history.seconds()  # with the earlier sessions of a resumed run
    whole = run_history.history() or history.history
    if guard.caught or any(not np.isfinite(v) for v in history.history.get("loss", [])):
        # NaNGuard kept the last finite weights and wrote them, the batch and the diagnosis there.
        raise FloatingPointError(
            f"training produced a non-finite loss or gradient; stopped with the last finite weights, "
            f"report and batch in {os.path.join(out, 'nan-report')}"
        )

    images, params = task.test_set(c.test_size, c.seed)
    t0 = time.perf_counter()
    headline, encoder_only, pred, refined = evaluate(encoder, task, images, params, c.refine_steps)
    result = dict(headline)
    result.update(
        shapes=task.shapes,
        channels=task.channels,
        resolution=task.resolution,
        supervised=c.supervised,
        backend=keras.backend.backend(),
        devices=c.devices or 1,
        steps=int(keras.ops.convert_to_numpy(model.optimizer.iterations)),
        batch_size=c.batch_size,
        wall_seconds=round(train_seconds, 1),
        refine_steps=c.refine_steps,
        refine_seconds=round(time.perf_counter() - t0, 1),
        anneal_start=c.anneal_start,
        loss="params" if c.supervised else c.loss,
        guide=c.guide if not guided else (c.guide or 1.0),
        guide_decay=c.guide_fraction if c.guide is not None and not guided else c.guide_decay,
        pretrain=pretraining,
        pretrain_mix=c.pretrain_mix if guided else None,
        **described,
        architecture=c.architecture if c.init is None else None,  # an init encoder is what it is
        colors=c.colors if c.init is None else None,
        feedback=c.feedback,
        init=init_from,
        width=c.width,
        stopped_by_time_budget=budget.stopped_early,
        pretrain_switch_epoch=getattr(data, "switch_epoch", None),
        train_loss=[float(v) for v in whole["loss"]],
        test_size=c.test_size,
        encoder_only=encoder_only,
        seed=c.seed,
    )
    result.update(task.describe())
    files.atomic_write(os.path.join(out, "encoder.keras"), encoder.save)
    callbacks.write_json(os.path.join(out, "metrics.json"), result)
    shown = slice(0, 10)
    plots.save_reconstructions(
        os.path.join(out, "reconstructions.png"),
        images[shown],
        task.render(pred[shown]),
        task.render(refined[shown]),
        labels=("input", "encoder's guess", f"refined ({c.refine_steps} steps)"),
    )
    mode = "supervised" if c.supervised else "self-supervised" if c.guide is None else f"guided ({c.guide:g})"
    if pretraining:
        mode = f"pre-trained on folder-like scenes ({pretraining:g}), then the images"
    if teaching:
        mode = f"{mode if pretraining else 'the images'}, guided by {described['fits_kept']} fits"
    plots.save_curves(os.path.join(out, "curves.png"), whole, title=f"{task.shapes} {task.resolution}px, {mode}")
    return result


# --------------------------------------------------------------------------- the user's images


def superset_shapes(kinds, max_shapes):
    """The Render spec of up to ``max_shapes`` shapes of each of ``kinds``: ``"disk*M,box*M,..."``.

    This is the current way to model an unknown number of shapes: every
    shape has an opacity, and the encoder switches the ones it does not need
    off (opacity near 0); :mod:`shapegrad.encode` keeps the shapes with
    opacity >= 0.5. ``kinds`` is a comma-separated string or a sequence.
    """

    if isinstance(kinds, str):  # repeats and empty items are dropped here, as they always were
        kinds = [k.strip() for k in kinds.split(",") if k.strip()]
    kinds = parse_kinds(tuple(dict.fromkeys(kinds)))
    max_shapes = _validate.positive_int("max_shapes", max_shapes)
    return format_shapes(parse_shapes([(k, max_shapes) for k in kinds]))  # ValueError naming an unknown kind


# The slot decoder's default presence prior: a slot must pay for itself (the README compares priors).
SLOT_PRESENCE_PRIOR = 0.001


class ImageTask(Task):
    """Learning from a folder of the user's own images: no labels, only the image loss.

    The images are listed once (:func:`shapegrad.data.scan_images`); a
    held-out split (``holdout`` of them, at least 1; with a single image it is
    also the training image) gives the validation curves and the final
    scores in image terms (reconstruction IoU against the background, PSNR).
    Training batches stream from disk (:class:`shapegrad.data.ImageFolderDataset`),
    letterboxed to ``N x N`` (:class:`shapegrad.data.Letterbox`).

    ``channels`` is 3 if any image is colour, else 1. With ``kinds`` and
    ``max_shapes``, ``decoder="slots"`` (the default with ``kinds``) draws through a
    :class:`shapegrad.slots.SlotRender` of ``max_shapes`` slots (a presence,
    a soft kind choice and a shape each, over a background colour read per
    image; ``presence_prior``, ``kind_prior``: its training priors, the
    presence prior :data:`SLOT_PRESENCE_PRIOR` unless given), and
    ``decoder="superset"`` through ``Render(superset_shapes(kinds,
    max_shapes), N, channels, softness, background)`` (shapes switched off by
    their opacity), as does exact ``shapes``; ``background`` is then the
    median border colour of (up to 64 of) the training images, one colour
    per run (a slot decoder keeps it for the record).

    The encoder carries what it encodes (:class:`shapegrad.encode.EncoderInfo`
    inside the saved model), so :class:`shapegrad.encode.Encoder` needs no flags.
    Raises ``ValueError`` when no input file is a readable image.
    """

    def __init__(self, images, shapes=None, kinds=None, max_shapes=None, resolution=64, softness=1.0, holdout=0.1,
                 seed=0, decoder=None, presence_prior=None, kind_prior=0.0):

        if (shapes is None) == (kinds is None):
            raise ValueError(f"Expected exactly one of shapes and kinds. Received: shapes={shapes!r}, kinds={kinds!r}")
        if decoder is None:
            decoder = "superset" if kinds is None else "slots"
        _validate.one_of("decoder", decoder, ("superset", "slots"))
        if presence_prior is None:
            presence_prior = SLOT_PRESENCE_PRIOR if decoder == "slots" else 0.0
        if decoder == "slots" and kinds is None:
            raise ValueError(f"Expected kinds and max_shapes with decoder='slots'. Received: shapes={shapes!r}")
        self.decoder = decoder
        if not 0 < holdout < 1:
            raise ValueError(f"Expected holdout to be in (0, 1). Received: holdout={holdout!r}")
        self.scan = data.scan_images(images)
        if not len(self.scan):
            what = f"{len(self.scan.skipped)} file(s), none a readable image" if self.scan.skipped else "no image files"
            raise ValueError(f"Expected a folder with PNG/JPEG images. Received: images={images!r} ({what})")
        self.images = images
        self.kinds, self.max_shapes = kinds, max_shapes
        shapes = superset_shapes(kinds, max_shapes) if kinds is not None else shapes
        self.resolution = _validate.positive_int("resolution", resolution)
        channels = self.scan.channels
        n = len(self.scan)
        order = np.random.default_rng(seed).permutation(n)
        held = max(1, round(holdout * n)) if n > 1 else 1
        self.heldout = [self.scan.paths[i] for i in sorted(order[:held])]
        self.training = [self.scan.paths[i] for i in sorted(order[held:])] or list(self.heldout)
        borders = [data.border_color(data.to_channels(files.read_image(p), channels)) for p in self.training[:64]]
        background = np.median(np.stack(borders), axis=0).round(4).tolist()

        if decoder == "slots":
            self.renderer = SlotRender(kinds, max_shapes, self.resolution, channels=channels, softness=softness,
                                       background=background, presence_prior=presence_prior, kind_prior=kind_prior)
            self.shapes = f"slots:{max_shapes}:{','.join(self.renderer.kinds)}"
            self.fields = self.renderer.fields()
        else:
            self.renderer = Render(shapes, self.resolution, channels=channels, softness=softness, background=background)
            self.shapes = format_shapes(self.renderer.shapes)
            self.fields = fields_for(self.renderer.spec)
        self._dataset = None
        self.refine = fit.refine  # a superset has too many shapes for refine_scene's permutations
        self.channels = channels
        self.background = self.renderer.background

    def info(self):
        """What the saved encoder carries (:class:`shapegrad.encode.EncoderInfo`)."""

        return encode.encoder_info(self.renderer, kinds=self.kinds, max_shapes=self.max_shapes, decoder=self.decoder)

    def build_encoder(self, width, architecture="cnn", colors="head"):
        return encode.with_info(super().build_encoder(width, architecture, colors), self.info())

    def dataset(self, batch_size, batches, seed, targets="images", noise=0.0, fresh=True):
        if targets != "images":
            raise ValueError(f"Expected targets='images' for the user's images (no labels). Received: targets={targets!r}")
        return data.ImageFolderDataset(self.training, self.resolution, self.channels, batch_size, batches, seed,
                                       noise, fresh)

    def _heldout(self, size):
        return data.ImageFolderDataset(self.heldout[:size], self.resolution, self.channels, cache=0).all_images()

    def validation_set(self, seed):
        return self._heldout(64), None

    def test_set(self, size, seed):
        return self._heldout(size), None

    def errors(self, pred, true):
        return {}

    def background_of(self, images):
        """Each image's border colour ``(B, 1, 1, C)``: the user's images need not share one background."""
        return np.stack([data.border_color(im) for im in images])[:, None, None, :]

    def describe(self):
        return {
            "images": [os.fspath(p) for p in ([self.images] if isinstance(self.images, (str, os.PathLike)) else self.images)],
            "training_images": len(self.training),
            "heldout_images": len(self.heldout),
            "skipped_files": len(self.scan.skipped),
            "background": list(np.atleast_1d(self.background).tolist()),
            "letterbox": "letterbox",
            "kinds": self.kinds,
            "max_shapes": self.max_shapes,
            "decoder": self.decoder,
        }


def train_images(out, images, shapes=None, kinds=None, max_shapes=None, resolution=64, softness=1.0, holdout=0.1,
                 seed=0, decoder=None, presence_prior=None, kind_prior=0.0, **kwargs):
    """Train on a folder of the user's images (self-supervised); :func:`train` with an :class:`ImageTask`.

    ``images``: a folder (searched recursively for PNG/JPEG) or a list of
    files and folders. Give ``shapes`` (exact, e.g. ``"disk*2,box"``) or
    ``kinds`` and ``max_shapes`` (:func:`superset_shapes`). Other keyword
    arguments are :func:`train`'s (``config``, ``force``, ``verbose``) and
    :class:`TrainConfig`'s fields (``steps``, ``seconds``, ``batch_size``,
    ``width``, ``test_size``: at most this many held-out images are scored...).
    Writes the same outputs as :func:`train`; ``metrics.json`` scores the
    held-out images by reconstruction IoU (masks against each image's border
    colour) and PSNR (there are no labels). With ``kinds`` and the slot
    decoder, the run first trains on synthetic scenes drawn like the folder,
    guided by their parameters, then fine-tunes on the images
    (:mod:`shapegrad.learn.pretrain`; ``pretrain``, ``pretrain_mix``: the
    :class:`TrainConfig` fields; ``pretrain=0``: the images alone).
    """
    task = ImageTask(images, shapes, kinds, max_shapes, resolution, softness, holdout, seed, decoder, presence_prior,
                     kind_prior)
    if not isinstance(kwargs.get("verbose", 1), int) or kwargs.get("verbose", 1):
        skipped = task.scan.skipped
        if skipped:
            import sys

            print(f"skipped {len(skipped)} unreadable file(s), e.g. {skipped[0][0]}: {skipped[0][1]}", file=sys.stderr)
    return train(out, shapes=task, seed=seed, **kwargs)
