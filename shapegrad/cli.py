"""The ``shapegrad`` command line: every sub-command parses, checks its arguments, calls the library, prints.

Nothing in the library imports this module. Each sub-command has three parts:
``_add_<name>`` (its arguments), ``_check_<name>`` (everything the user gave
that can be checked before the work starts: files exist, values in range,
shape specs parse, outputs free unless ``--force``) and ``_run_<name>`` (calls
the library and prints).

Exit status:

- 0: done (``doctor``: the target is healthy);
- 1: ``doctor`` found something; ``train`` stopped at a non-finite step
  (one line naming the NaNGuard report, ``RUN/nan-report/``); or an unexpected
  error during the work, printed with its full traceback (a bug, not a typo);
- 2: bad arguments, one line ``shapegrad CMD: error: ...``; also when the
  library refuses to overwrite an output (``FileExistsError``);
- 130: interrupted (Ctrl-C).

TensorFlow's C++ start-up log is silenced unless the user set
``TF_CPP_MIN_LOG_LEVEL=0`` (see :mod:`shapegrad._startup`, which runs before
keras is imported). The library's modules are imported at the top: importing
the package already imports Keras. Before a sub-command starts,
large freed memory blocks are kept for reuse (:func:`shapegrad.allocator.keep_freed_memory`:
on glibc, XLA's per-step buffers then cost no page faults; the scene
training step 1.2-1.7x faster on JAX), unless the user set glibc's malloc
through the environment.

Example:
    >>> build_parser().parse_args(["fit", "a.png", "b/", "--out", "o"]).inputs
    ['a.png', 'b/']
"""

import argparse
import dataclasses
import math
import os
import re
import sys
import traceback

from shapegrad import allocator, bench, demo, doctor, fit
from shapegrad.bench import report as bench_report
from shapegrad.doctor import load
from shapegrad.io import files, plots, svg_files
from shapegrad.io.batch import MIN_SIDE
from shapegrad.io.images import scan_images
from shapegrad.learn import distribute, encode, train
from shapegrad.learn.config import TrainConfig
from shapegrad.learn.models import COLORS, ENCODERS
from shapegrad.ops import autodiff
from shapegrad.render.render import Render

__all__ = ["UsageError", "build_parser", "main"]


class UsageError(Exception):
    """Bad input from the user, found before the work starts: one line, exit status 2."""


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (and exit status 2)."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


# --------------------------------------------------------------------------- argument checks
# Keras-style, in the words of the shell: name the option, end with what was received.


def _positive_int(args, name, minimum=1):
    value = getattr(args, name)
    if value is not None and value < minimum:
        what = "a positive integer" if minimum == 1 else f"an integer >= {minimum}"
        raise UsageError(f"Expected {_flag(name)} to be {what}. Received: {_flag(name)}={value}")


def _number(args, name, low, high=math.inf, low_open=True, high_open=False):
    value = getattr(args, name)
    if value is None:
        return
    inside = math.isfinite(value) and (value > low if low_open else value >= low)
    inside = inside and (value < high if high_open else value <= high)
    if not inside:
        if high == math.inf:
            what = f"a finite number {'>' if low_open else '>='} {low:g}"
        else:
            what = f"in {'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
        raise UsageError(f"Expected {_flag(name)} to be {what}. Received: {_flag(name)}={value}")


def _flag(name):
    return "--" + name.replace("_", "-")


def _output_free(path, force):
    if os.path.exists(path) and not force:
        raise UsageError(f"{path} exists (use --force to overwrite)")


def _overwrite_message(error):
    """The library's ``FileExistsError`` ("... exists. Pass force=True to overwrite.") in shell words."""
    message = str(error)
    shell, count = re.subn(r"\.?\s*Pass force=True to overwrite\..*$", " (use --force to overwrite)", message)
    return shell if count else message


# --------------------------------------------------------------------------- train


def _add_train(subparsers):
    p = subparsers.add_parser(
        "train",
        help="train an encoder with the renderer as frozen decoder",
        description="Train an encoder to read shapes out of images (self-supervised unless --supervised).",
    )
    p.add_argument(
        "--shapes", default=None, help="cone (the Cones layer, default) or a Render spec like 'disk,box,cone'"
    )
    p.add_argument("--images", metavar="DIR", help="train on every PNG/JPEG in DIR (recursively), no labels")
    p.add_argument("--kinds", help="with --images: primitive kinds, e.g. disk,box,triangle,ellipse (see --max-shapes)")
    p.add_argument("--max-shapes", type=int, default=None,
                   help="with --kinds: the most shapes in an image (--decoder slots) or of each kind (superset)")
    p.add_argument("--decoder", choices=("slots", "superset"), default="slots",
                   help="with --kinds: slots with a presence and a kind each (default), or the superset "
                        "Render('disk*M,box*M,...') whose opacities switch shapes off")
    p.add_argument("--channels", type=int, choices=(1, 3), default=1, help="colour channels of a Render scene")
    p.add_argument("--devices", type=int, default=1, help="data-parallel devices (jax, tensorflow; default 1)")
    p.add_argument("--resolution", type=int, default=64, help="image size in pixels (default 64)")
    p.add_argument("--steps", type=int, default=3000, help="training steps (default 3000)")
    p.add_argument("--seconds", type=float, default=None, help="stop training after this many seconds")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--learning-rate", type=float, default=1e-3)
    p.add_argument("--anneal-start", type=float, default=0.1, help="initial edge sharpness fraction (1 = off)")
    p.add_argument("--loss", choices=("mse", "pyramid"), default="mse", help="image loss")
    p.add_argument("--refine-steps", type=int, default=100, help="test-time refinement steps (0 = off)")
    p.add_argument("--test-size", type=int, default=256)
    p.add_argument("--width", type=int, default=16, help="encoder base width (default 16)")

    p.add_argument("--architecture", choices=ENCODERS, default="cnn",
                   help="encoder: cnn (dense head on a flattened feature map) or spatial (one attention map per "
                        "shape, soft-argmax positions; Render scenes)")
    p.add_argument("--colors", choices=COLORS, default="head",
                   help="where the encoder's colours come from: its head (default), or solved from the image "
                        "given its geometry and opacities (least squares; Render decoders), held constant in the "
                        "gradient (solve) or with the gradient flowing through the solve (solve-grad)")
    p.add_argument("--feedback", type=int, default=0, metavar="N",
                   help="N learnt feedback steps after the encoder: each draws the current guess, compares it with "
                        "the image and corrects it (Render decoders; default 0). Without --init the encoder and the "
                        "steps train together")
    p.add_argument("--init", metavar="ENCODER",
                   help="start from a trained encoder.keras (with --feedback it stays frozen and only the feedback "
                        "steps learn)")
    p.add_argument("--noise", type=float, default=0.0, help="Gaussian noise on training inputs")
    p.add_argument("--steps-per-epoch", type=int, default=100, help="steps between checkpoints (default 100)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--supervised", action="store_true", help="train on true parameters (baseline)")
    p.add_argument("--guide", type=float, default=None, metavar="W",
                   help="synthetic Render scenes: add W x a per-shape loss against the true parameters "
                        "(blind to each shape's symmetries), decaying to 0 (see --guide-decay)")
    p.add_argument("--guide-decay", type=float, default=None, metavar="F",
                   help="fraction of the steps over which the guide's weight falls to 0 (default: the anneal "
                        "fraction, 0.5; 0 = constant)")
    p.add_argument("--pretrain", type=float, default=None, metavar="F",
                   help="with --images --kinds (slots): the fraction of the epochs or of --seconds spent on "
                        "synthetic scenes drawn like the folder, guided by their parameters, before fine-tuning on "
                        "the images (default 0: the images alone; 0.5 helps the encoder alone and encode --fast, "
                        "not the full encode search)")
    p.add_argument("--pretrain-mix", type=float, default=0.5, metavar="M",
                   help="the fraction of each fine-tuning batch still synthetic and guided (default 0.5)")
    p.add_argument("--fits", type=int, default=0, metavar="N",
                   help="with --images --kinds (slots): first fit up to N training images with the scene search "
                        "(kept in OUT/fits.npz; a killed run resumes them), then let those fits guide the encoder on "
                        "the images themselves (default 0: none)")
    p.add_argument("--fit-share", type=float, default=0.3, metavar="F",
                   help="the most of --seconds that the fits may take (default 0.3)")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--force", action="store_true", help="overwrite existing outputs in --out")
    return p


def _check_train(args):
    if args.images is None:
        if args.kinds is not None or args.max_shapes is not None:
            raise UsageError("--kinds and --max-shapes need --images (synthetic scenes take --shapes)")
        args.shapes = args.shapes or "cone"
    else:
        _check_train_images(args)
    if args.pretrain is not None or args.pretrain_mix != 0.5:
        _check_train_pretrain(args)
    if args.fits or args.fit_share != 0.3:
        _check_train_fits(args)
    if args.guide is not None or args.guide_decay is not None:
        _check_train_guide(args)
    other = _not_a_render(args)
    if args.colors != "head" and other:
        raise UsageError(f"--colors {args.colors} solves the colours of a Render scene (--shapes SPEC, or --kinds "
                         f"with --decoder superset); not of the cone or of slots")
    _positive_int(args, "feedback", minimum=0)
    if args.feedback and other:
        raise UsageError(f"--feedback draws the guess with a Render (--shapes SPEC, or --kinds with --decoder "
                         f"superset). Received: --feedback={args.feedback} with {other}")
    for name in ("resolution", "steps", "batch_size", "test_size", "width", "steps_per_epoch", "devices"):
        _positive_int(args, name)
    _positive_int(args, "refine_steps", minimum=0)
    _number(args, "seconds", 0)
    _number(args, "learning_rate", 0)
    _number(args, "anneal_start", 0, 1)
    _number(args, "noise", 0, low_open=False)

    if args.images is None and args.shapes != "cone":
        Render(args.shapes, args.resolution, channels=args.channels)  # raises ValueError naming shapes
    distribute.check(args.devices, args.batch_size)
    if args.images is not None:
        # Lists the images (headers only) and reads the training background: no training yet.
        task = train.ImageTask(args.images, shapes=args.shapes, kinds=args.kinds, max_shapes=args.max_shapes,
                               resolution=args.resolution, seed=args.seed,
                               decoder=args.decoder if args.kinds is not None else "superset")
        for path, why in task.scan.skipped:
            print(f"shapegrad train: skipped unreadable {path}: {why}", file=sys.stderr)
    else:
        task = None
    if args.init is not None:  # loaded here for its errors (exit 2), again by train()

        check = task if task is not None else train.Task(args.shapes, args.resolution, args.channels)
        train.load_init(args.init, check, name="--init")  # a ValueError naming --init: exit 2
    return _train_config(args, task)


def _train_config(args, task):
    """The :class:`TrainConfig` of the flags: each field from the flag of its name, ``shapes`` the images' task if any."""
    flags = {f.name: getattr(args, f.name) for f in dataclasses.fields(TrainConfig) if hasattr(args, f.name)}
    return TrainConfig(**dict(flags, shapes=args.shapes if task is None else task))


def _not_a_render(args):
    """The option that makes the trained decoder something other than a Render scene, or None."""
    if args.shapes == "cone":
        return "--shapes cone"
    if args.images is not None and args.kinds is not None and args.decoder == "slots":
        return "--decoder slots"
    return None


def _check_train_pretrain(args):
    _number(args, "pretrain_mix", 0, 1, low_open=False, high_open=True)
    _number(args, "pretrain", 0, 1, low_open=False)
    if args.pretrain and _not_a_render(args) != "--decoder slots":
        raise UsageError(f"--pretrain draws slot scenes: it needs --images with --kinds (--decoder slots). "
                         f"Received: --pretrain={args.pretrain:g}")


def _check_train_fits(args):
    _positive_int(args, "fits", minimum=0)
    _number(args, "fit_share", 0, 1, high_open=True)
    if args.fits and _not_a_render(args) != "--decoder slots":
        raise UsageError(f"--fits guides a slot decoder: it needs --images with --kinds (--decoder slots). "
                         f"Received: --fits={args.fits}")


def _pretraining(args):
    """Whether the run is guided: pre-trains on synthetic scenes or learns from fits (--guide W is the guide's weight)."""
    slots = _not_a_render(args) == "--decoder slots"
    return slots and (bool(args.pretrain) or bool(args.fits))  # None: train's default, the images alone


def _check_train_guide(args):
    if args.images is not None and _pretraining(args):
        _number(args, "guide", 0)
        if args.guide_decay is not None:
            _number(args, "guide_decay", 0, 1, low_open=False)
        return
    if args.images is not None:
        raise UsageError("--guide needs the parameters of synthetic scenes; --images has none")
    if args.shapes == "cone":
        raise UsageError("--guide is for Render scenes (e.g. --shapes disk,box,triangle); the cone trains with --supervised")
    if args.supervised:
        raise UsageError("--guide adds to the image loss; --supervised has none (give one of them)")
    if args.guide is None:
        raise UsageError("--guide-decay needs --guide W")
    _number(args, "guide", 0)
    if args.guide_decay is not None:
        _number(args, "guide_decay", 0, 1, low_open=False)


def _check_train_images(args):
    if not os.path.isdir(args.images):
        raise UsageError(f"Expected --images to be a folder. Received: --images={args.images!r}")
    if (args.shapes is None) == (args.kinds is None):
        raise UsageError("with --images give either --kinds K --max-shapes M or --shapes SPEC (not both)")
    if args.kinds is not None and args.max_shapes is None:
        raise UsageError("--kinds needs --max-shapes (the most shapes of each kind in an image)")
    if args.shapes == "cone":
        raise UsageError("Expected a Render spec with --images, e.g. 'disk*2,box'. Received: --shapes='cone'")
    if args.supervised:
        raise UsageError("--supervised needs parameter labels; --images has none")
    if args.channels != 1:
        raise UsageError("--channels is read from the images with --images (3 if any is colour)")
    if args.devices != 1:
        raise UsageError("--devices is not supported with --images yet")
    _positive_int(args, "max_shapes")
    _output_free_run(args.out, args.force)


def _output_free_run(out, force):
    try:
        train.check_outputs_free(out, force)
    except FileExistsError as error:
        raise UsageError(_overwrite_message(error)) from None


def _run_train(args, config):
    result = train.train(args.out, config, force=args.force)
    if isinstance(config.shapes, train.ImageTask):
        print(
            f"held-out images: iou {result['iou']:.4g}, psnr {result['psnr']:.4g} dB "
            f"(encoder alone: iou {result['encoder_only']['iou']:.4g}, psnr {result['encoder_only']['psnr']:.4g}); "
            f"{result['training_images']} training, {result['heldout_images']} held out, "
            f"{result['skipped_files']} unreadable skipped -> {args.out}/encoder.keras"
        )
        return 0
    keys = ["iou", "psnr"] + [k for k in result if k.endswith("_median") and k not in ("iou_median", "psnr_median")]
    print(", ".join(f"{k} {result[k]:.4g}" for k in keys), f"-> {args.out}")


# --------------------------------------------------------------------------- fit


def _add_fit(subparsers):
    p = subparsers.add_parser(
        "fit",
        help="fit primitives to images by gradient descent: a scene (kinds and count found) or a picture "
        "(--count or --seconds of shapes)",
        description="Fit a scene of primitives to each image (any size, grey or colour): how many shapes, of "
        "which kinds, in which depth order. Per image OUT/<stem>/params.json (for shapegrad render), overlay.png, "
        "shapes.svg; one OUT/summary.csv. Images larger than --max-side are fitted shrunk to it (params.json and "
        "shapes.svg at their own size). Unreadable files, images under 4 px a side and existing OUT/<stem> "
        "folders (without --force) are skipped with a warning. With --count or --seconds: vectorise pictures "
        "(photographs, drawings) with that many shapes (default --kinds triangle), each fitted on top of the "
        "others; per image preview.png instead of overlay.png, and OUT/index.html shows each input beside its SVG. "
        "Exit status: 0 all fitted, 1 some skipped, 2 bad arguments.",
    )
    p.add_argument("inputs", nargs="+", metavar="IMAGE_OR_FOLDER", help="PNG/JPEG files and/or folders (recursive)")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--kinds", default=None, help="kinds a shape may be (default disk,box,triangle,ellipse; or path...)")
    p.add_argument("--max-shapes", type=int, default=None, help="the most shapes per image (default 5)")
    p.add_argument("--shapes", default=None,
                   help="fit exactly these shapes instead, e.g. 'disk*2,box' (not with --kinds or --max-shapes)")
    p.add_argument("--count", type=int, default=None,
                   help="vectorise a picture with this many shapes (not with --max-shapes or --shapes)")
    p.add_argument("--seconds", type=float, default=None,
                   help="vectorise a picture with as many shapes as fit in this many seconds per image")
    p.add_argument("--alpha", type=float, default=None,
                   help="with --count/--seconds: every shape's opacity, in (0, 1] (default: fitted per shape)")
    p.add_argument("--seed", type=int, default=0, help="with --count/--seconds: seed of the shapes' starts")
    p.add_argument("--force", action="store_true", help="overwrite existing OUT/<stem> folders")
    p.add_argument("--max-side", type=int, default=_FIT_MAX_SIDE,
                   help=f"fit larger images shrunk to this many px on their longer side (default {_FIT_MAX_SIDE})")
    return p


_FIT_MAX_SIDE = 512  # = shapegrad.fit.MAX_SIDE (not imported: --help stays light); a test checks they agree


def _check_fit(args):
    pictures = args.count is not None or args.seconds is not None
    if pictures:
        given = [_flag(n) for n in ("max_shapes", "shapes") if getattr(args, n) is not None]
        if given:
            which = "--count" if args.count is not None else "--seconds"
            raise UsageError(f"Expected either {which} (a picture) or {' and '.join(given)} (a scene), not both. "
                             f"Received: {which} and {', '.join(given)}")
        if args.count is not None and args.count < 1:
            raise UsageError(f"Expected --count to be a positive integer. Received: --count={args.count}")
        if args.seconds is not None and not 0 < args.seconds < math.inf:
            raise UsageError(f"Expected --seconds to be a number > 0. Received: --seconds={args.seconds}")
        if args.alpha is not None and not 0 < args.alpha <= 1:
            raise UsageError(f"Expected --alpha to be a number in (0, 1]. Received: --alpha={args.alpha}")
        args.kinds = args.kinds or "triangle"
    elif args.alpha is not None:
        raise UsageError(f"Expected --alpha only with --count or --seconds. Received: --alpha={args.alpha}")
    if args.max_shapes is not None and args.max_shapes < 1:
        raise UsageError(f"Expected --max-shapes to be a positive integer. Received: --max-shapes={args.max_shapes}")
    if args.max_side < 4:
        raise UsageError(f"Expected --max-side to be an integer >= 4. Received: --max-side={args.max_side}")
    if os.path.exists(args.out) and not os.path.isdir(args.out):
        raise UsageError(f"Expected --out to be a folder. Received: --out={args.out!r} (a file)")

    try:
        fit.check_fit_options(args.kinds, args.max_shapes, args.shapes)
    except ValueError as error:
        message = str(error)
        for name in ("max_shapes", "kinds", "shapes"):
            message = re.sub(rf"(?<![\w-]){name}\b", _flag(name), message)
        raise UsageError(message) from None
    scan = scan_images(args.inputs)  # ValueError for a missing input
    if not any(fit.fittable(size, args.max_side) for size in scan.sizes):
        tiny = sum(not fit.fittable(size, args.max_side) for size in scan.sizes)
        what = f"{len(scan.skipped)} unreadable, {tiny} under 4 px a side"
        raise UsageError(f"no image to fit in {' '.join(args.inputs)} ({what})")


def _run_fit(args, _):
    if args.count is not None or args.seconds is not None:
        result = fit.fit_picture_files(args.inputs, args.out, kinds=args.kinds, count=args.count, seconds=args.seconds,
                                       opacity=args.alpha, seed=args.seed, force=args.force, progress=True,
                                       max_side=args.max_side)
        psnr, seconds = _means(result)
        print(f"fitted {result['done']} picture(s), mean psnr {psnr:.2f} dB, {seconds:.1f} s per picture; "
              f"skipped {len(result['skipped'])} -> {args.out}/index.html, {args.out}/summary.csv")
        return 1 if result["skipped"] else 0
    result = fit.fit_files(args.inputs, args.out, kinds=args.kinds, max_shapes=args.max_shapes, shapes=args.shapes,
                           force=args.force, progress=True, max_side=args.max_side)
    psnr, seconds = _means(result)
    print(f"fitted {result['done']} image(s), mean psnr {psnr:.2f} dB, {seconds:.1f} s per image; "
          f"skipped {len(result['skipped'])} -> {args.out}/summary.csv")
    return 1 if result["skipped"] else 0


def _means(result):
    """Mean PSNR and seconds per image over the ``ok`` rows of a files job's result (``fit``, ``encode``)."""
    ok = [dict(zip(fit.SUMMARY_COLUMNS, row)) for row in result["rows"] if row[-1].startswith("ok")]
    return tuple(sum(float(row[name]) for row in ok) / max(len(ok), 1) for name in ("psnr_db", "seconds"))


# --------------------------------------------------------------------------- render


def _add_render(subparsers):
    p = subparsers.add_parser(
        "render",
        help="render a parameter file to PNG or SVG, or SVG drawings to PNG",
        description="Render a parameter JSON file to a PNG image or an SVG drawing (by the suffix of --out); or "
        "draw SVG files (and folders of them) with shapegrad's primitives: one SVG and --out X.png, or --out a "
        "folder with one PNG per SVG. A file that cannot be drawn is skipped with one line and the others go on. "
        "Exit status: 0 all drawn, 1 some skipped, 2 bad arguments.",
    )
    p.add_argument("inputs", nargs="+", metavar="INPUT",
                   help="parameter JSON (as written by shapegrad fit), or SVG files and/or folders")
    p.add_argument(
        "--out", required=True, help="a .png or .svg file to write (several rows: a horizontal strip); "
        "for several SVG inputs or a folder, an output folder"
    )
    p.add_argument("--scale", type=int, default=1, help="integer upscaling of the PNG (ignored for .svg)")
    p.add_argument("--size", type=int, default=None,
                   help="SVG inputs: the longer side in pixels, aspect kept (default: the SVG's own size, at most "
                   "512)")
    p.add_argument("--force", action="store_true", help="overwrite --out if it exists")
    return p


_RENDER_SUFFIXES = (".svg", ".png")


def _check_render(args):
    svg = [i for i in args.inputs if i.lower().endswith(".svg") or os.path.isdir(i)]
    if svg:
        return _check_render_svg(args, svg)
    if len(args.inputs) != 1:
        raise UsageError(f"Expected one parameter JSON file (or SVG files and folders). Received: {len(args.inputs)} "
                         f"inputs ({' '.join(args.inputs)})")
    if args.size is not None:
        raise UsageError(f"Expected --size only with SVG inputs. Received: --size={args.size}")
    suffix = os.path.splitext(args.out)[1].lower()
    if suffix not in _RENDER_SUFFIXES:
        raise UsageError(f"Expected --out to end in .svg or .png. Received: --out={args.out}")
    _output_free(args.out, args.force)
    _positive_int(args, "scale")

    return files.load_params(args.inputs[0])  # ValueError naming what is wrong with the file


def _check_render_svg(args, svg):
    if len(svg) != len(args.inputs):
        other = [i for i in args.inputs if i not in svg]
        raise UsageError(f"Expected SVG files and folders only (not with a parameter file). Received: {other[0]!r}")
    _positive_int(args, "size")
    if args.size is not None and args.size > 16384:
        raise UsageError(f"Expected --size to be at most 16384. Received: --size={args.size}")
    single = len(args.inputs) == 1 and not os.path.isdir(args.inputs[0])
    if single and args.out.lower().endswith(".png"):
        _output_free(args.out, args.force)
    elif os.path.splitext(args.out)[1].lower() in (".svg", ".jpg", ".jpeg"):
        raise UsageError(f"Expected --out to be X.png or a folder for SVG inputs. Received: --out={args.out}")
    elif os.path.exists(args.out) and not os.path.isdir(args.out):
        raise UsageError(f"Expected --out to be a folder (or X.png for one SVG). Received: --out={args.out!r} (a file)")
    if not svg_files.list_svg_files(args.inputs):  # ValueError for a missing input
        raise UsageError(f"no SVG file in {' '.join(args.inputs)}")
    return "svg"


def _run_render(args, loaded):
    import keras

    if loaded == "svg":
        result = svg_files.render_svg_files(args.inputs, args.out, size=args.size, force=args.force)
        print(f"rendered {result['done']} SVG file(s) ({result['warned']} with warnings), skipped "
              f"{len(result['skipped'])} -> {args.out}")
        return 1 if result["skipped"] else 0
    renderer, params = loaded
    images = keras.ops.convert_to_numpy(renderer(params))
    if os.path.splitext(args.out)[1].lower() == ".svg":  # the drawing fit writes (shapes.svg), not pixels
        files.write_text(args.out, files.to_svg_strip(renderer, params))
    else:
        plots.save_image(args.out, plots.image_grid([list(images)], pad=0), scale=args.scale)
    print(f"rendered {len(images)} image(s) of {images.shape[1]}x{images.shape[2]} -> {args.out}")


# --------------------------------------------------------------------------- encode


def _add_encode(subparsers):
    p = subparsers.add_parser(
        "encode",
        help="read shapes out of images with an encoder trained by train --images",
        description="Encode images and/or folders of images with RUN/encoder.keras: per image OUT/<stem>/"
        "params.json (for shapegrad render), overlay.png, shapes.svg; OUT/summary.csv and OUT/sheet.png. "
        "Unreadable files, images under 4 px a side and existing OUT/<stem> folders (without --force) are "
        "skipped with a warning, as by fit. Exit status: 0 all done, 1 some skipped, 2 bad input.",
    )
    p.add_argument("encoder", help="encoder.keras written by shapegrad train --images")
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="image files and/or folders (searched recursively)")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--refine-steps", type=int, default=100, help="Adam steps refining each guess (0 = off; default 100)")
    p.add_argument("--search", action=argparse.BooleanOptionalAction, default=None,
                   help="continue the scene search of `shapegrad fit` from the encoder's shapes: adds the shapes it "
                   "missed, revises kinds and depth order, drops the spurious ones (default); --no-search only "
                   "refines the encoder's shapes (--refine-steps)")
    p.add_argument("--fast", action="store_true",
                   help="no search: the encoder's shapes polished by --refine-steps Adam steps of the scene engine, "
                   "batched over images (the same as --no-search)")
    p.add_argument("--batch-size", type=int, default=32, help="images per batch (default 32)")
    p.add_argument("--force", action="store_true", help="overwrite existing OUT/<stem> folders")
    return p


def _check_encode(args):
    if args.fast and args.search:
        raise UsageError("--fast skips the search; give --fast or --search, not both")
    args.search = not args.fast if args.search is None else args.search
    _positive_int(args, "refine_steps", minimum=0)
    _positive_int(args, "batch_size")
    if os.path.exists(args.out) and not os.path.isdir(args.out):
        raise UsageError(f"Expected --out to be a folder. Received: --out={args.out!r} (a file)")

    scan = scan_images(args.inputs)  # ValueError for a missing input
    if not len(scan):
        what = f"{len(scan.skipped)} file(s), none a readable image" if scan.skipped else "no image files"
        raise UsageError(f"no readable image in {' '.join(args.inputs)} ({what})")
    if not any(min(size) >= MIN_SIDE for size in scan.sizes):
        raise UsageError(f"no image to encode in {' '.join(args.inputs)} ({len(scan)} under {MIN_SIDE} px a side)")
    return encode.Encoder.load(args.encoder)  # ValueError: not ours, or no metadata


def _run_encode(args, encoder):
    result = encode.encode_files(encoder, args.inputs, args.out, refine_steps=args.refine_steps,
                                 batch_size=args.batch_size, force=args.force, progress=sys.stderr.isatty(),
                                 search=args.search)
    psnr, seconds = _means(result)
    print(f"encoded {result['done']} image(s), mean psnr {psnr:.2f} dB, {seconds:.1f} s per image; "
          f"skipped {len(result['skipped'])} -> {args.out}/summary.csv, sheet.png")
    return 1 if result["skipped"] else 0


# --------------------------------------------------------------------------- gallery, demo


def _add_gallery(subparsers):
    p = subparsers.add_parser("gallery", help="render a PNG gallery of cones")
    p.add_argument("--out", default="runs/gallery/cones.png", help="PNG to write")
    p.add_argument("--resolution", type=int, default=64)
    return p


def _check_gallery(args):
    _positive_int(args, "resolution")


def _run_gallery(args, _):
    print(demo.cone_gallery(args.out, args.resolution))


def _add_demo(subparsers):
    return subparsers.add_parser(
        "demo",
        help="the galleries and the cone encoder's training (make demo)",
        description="Write the galleries and train the self-supervised cone encoder into runs/demo "
        "(about 10 minutes on a CPU); overwrites earlier demo outputs there.",
    )


def _run_demo(args, _):
    demo.main()


# --------------------------------------------------------------------------- doctor


def _add_doctor(subparsers):
    p = subparsers.add_parser(
        "doctor",
        help="find where NaN, Inf and dead gradients come from",
        description="Run one batch through TARGET forward and backward and report which layer and "
        "operation first produce NaN, Inf, dead or wrong gradients, with a fix for each. "
        "Exit status: 0 healthy, 1 findings (or an error while running TARGET, with its traceback), "
        "2 bad input.",
    )
    p.add_argument(
        "target",
        metavar="TARGET",
        help="a saved .keras model, or module:attribute naming a layer, model, factory or function",
    )
    p.add_argument("--input", required=True, metavar="FILE.npy", help="the input batch (.npy; .npz for named inputs)")
    p.add_argument(
        "--target",
        dest="targets",
        metavar="FILE.npy",
        help="targets for the default MSE loss (default: the loss is the sum of the outputs)",
    )
    p.add_argument("--loss", metavar="NAME", help="a Keras loss name (with --target), e.g. the model's compiled loss")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument(
        "--unsafe",
        action="store_true",
        help="load the .keras file with Keras' safe_mode off (lets it run code such as Lambda layers: "
        "only for files you trust)",
    )
    p.add_argument(
        "--import",
        dest="modules",
        action="append",
        default=[],
        metavar="MODULE",
        help="import MODULE first, so that the custom layers it registers can be loaded (repeatable)",
    )
    return p


def _check_doctor(args):
    try:
        target = load.load_target(args.target, safe_mode=not args.unsafe, modules=args.modules)
    except load.UnsafeLoadError as error:
        raise UsageError(f"{error} (pass --unsafe only for a file you trust)") from None
    except load.UnknownClassError as error:
        raise UsageError(f"{error} (custom layers: --import the module that registers them)") from None
    arrays = {}
    for option, path in (("--input", args.input), ("--target", args.targets)):
        try:
            arrays[option] = None if path is None else load.load_array(path)
        except ValueError as error:
            raise UsageError(f"{option}: {error}") from None
    return target, arrays["--input"], arrays["--target"]


def _run_doctor(args, loaded):
    target, inputs, targets = loaded
    report = doctor.check(target, inputs, targets=targets, loss=args.loss)
    print(report.to_json() if args.json else report)
    return 0 if report.ok else 1


# --------------------------------------------------------------------------- bench


def _add_bench(subparsers):
    p = subparsers.add_parser(
        "bench",
        help="time Cones and Render against naive baselines on this backend",
        description="Time the forward+backward of Cones and Render against naive baselines, interleaved "
        "in one process, on the backend KERAS_BACKEND names; print the tables and write "
        "DIR/results-<backend>.json. With --report, merge every DIR/results-*.json into DIR/results.md "
        "and DIR/scaling.png instead.",
    )
    p.add_argument(
        "--quick",
        action="store_true",
        help="tiny sizes, one call each: a smoke test, not a measurement (writes a result file only with --out)",
    )
    p.add_argument("--out", metavar="DIR", help="where result files go (default: benchmarks)")
    p.add_argument(
        "--report",
        action="store_true",
        help="write DIR/results.md and DIR/scaling.png from DIR/results-*.json; run nothing",
    )
    p.add_argument("--only", choices=("cones", "render"), help="run one of the two benchmarks")
    p.add_argument("--rounds", type=int, default=None, help="timing rounds (default 5; 1 with --quick)")
    p.add_argument(
        "--max-work",
        type=float,
        default=None,
        metavar="W",
        help="cut the batch of Render sizes with more than W shape-pixels B·N²·K "
        "(default: tensorflow and jax 2**24, torch 2**20)",
    )
    return p


def _check_bench(args):
    args.save = args.out is not None or not args.quick  # a quick run does not overwrite real results by default
    args.out = args.out or "benchmarks"
    if os.path.exists(args.out) and not os.path.isdir(args.out):
        raise UsageError(f"Expected --out to be a folder. Received: --out={args.out!r} (a file)")
    if args.report:
        if not bench_report.load_results(args.out):  # ValueError naming a broken file
            raise UsageError(f"no benchmark results in {args.out} (run shapegrad bench --out {args.out} first)")
        return
    _positive_int(args, "rounds")
    _number(args, "max_work", 1, low_open=False)
    import keras

    backend = keras.backend.backend()
    if backend not in bench.BACKENDS:
        raise UsageError(f"Expected KERAS_BACKEND to be one of {list(bench.BACKENDS)}. Received: {backend!r}")


def _run_bench(args, _):
    import keras

    if args.report:
        md, png = bench_report.write_report(args.out)
        print(f"wrote {md}" + (f" and {png}" if png else ""))
        return 0
    backend = keras.backend.backend()
    if backend == "tensorflow":  # every size traces new functions: TensorFlow's retracing warning is noise here
        import tensorflow as tf

        tf.get_logger().setLevel("ERROR")
    rows = []
    if args.only in (None, "cones"):
        n, b, iters = (16, 4, 1) if args.quick else (64, 256, 10)
        rounds = args.rounds or (1 if args.quick else 5)
        rows += bench.bench_cones(resolution=n, batch=b, rounds=rounds, iters=iters)
        print(bench_report.markdown_table(rows), flush=True)

    def progress(row):
        what = row["skipped"] or f"ratio {row['ratio']:.2f}x, first call {row['first_call_s']:.1f} s"
        print(f"render K={row['K']} N={row['resolution']} B={row['batch']}: {what}", file=sys.stderr, flush=True)

    if args.only in (None, "render"):
        render = bench.render_sweep(quick=args.quick, rounds=args.rounds, max_work=args.max_work, progress=progress)
        rows += render
        print(bench_report.render_table(render), flush=True)
    if args.only:  # keep the other benchmark's rows from an earlier run
        rows = bench_report.merged_rows(args.out, backend, rows)
    if args.save:
        print(f"wrote {bench_report.save_results(args.out, rows, quick=args.quick)}")
    return 0


# --------------------------------------------------------------------------- main

_COMMANDS = {
    "train": (_add_train, _check_train, _run_train),
    "fit": (_add_fit, _check_fit, _run_fit),
    "encode": (_add_encode, _check_encode, _run_encode),
    "render": (_add_render, _check_render, _run_render),
    "gallery": (_add_gallery, _check_gallery, _run_gallery),
    "doctor": (_add_doctor, _check_doctor, _run_doctor),
    "bench": (_add_bench, _check_bench, _run_bench),
    "demo": (_add_demo, None, _run_demo),
}


def build_parser():
    """The argparse parser of every sub-command (nothing heavy is imported)."""
    parser = _Parser(
        prog="shapegrad",
        description="Differentiable geometric primitives: render, train, fit, diagnose.",
    )
    subparsers = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    for add, _, _ in _COMMANDS.values():
        add(subparsers)
    return parser


def main(argv=None):
    """Run ``shapegrad ARGV``; returns the exit status (see the module docstring)."""
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exit_:  # --help (0) or an argparse error, already printed (2)
        return exit_.code
    _, check, run = _COMMANDS[args.command]
    prefix = f"shapegrad {args.command}"
    allocator.keep_freed_memory()
    autodiff.keep_compiled_programs()
    try:
        try:
            checked = check(args) if check else None
        except (UsageError, ValueError, TypeError, FileExistsError) as error:
            print(f"{prefix}: error: {_one_line(error)}", file=sys.stderr)
            return 2
        try:
            return run(args, checked) or 0
        except FileExistsError as error:  # the library refuses to overwrite, before its work starts
            print(f"{prefix}: error: {_one_line(_overwrite_message(error))}", file=sys.stderr)
            return 2
        except FloatingPointError as error:  # NaNGuard caught a step: its report says the rest
            print(f"{prefix}: failed: {_one_line(error)}", file=sys.stderr)
            return 1
        except Exception:  # noqa: BLE001 - a bug or a failure mid-work: keep the whole story
            traceback.print_exc()
            print(f"{prefix}: failed (traceback above)", file=sys.stderr)
            return 1
    except KeyboardInterrupt:
        print(f"{prefix}: interrupted", file=sys.stderr)
        return 130


def _one_line(error):
    lines = str(error).strip().splitlines()
    return lines[0] if lines else type(error).__name__


if __name__ == "__main__":
    sys.exit(main())
