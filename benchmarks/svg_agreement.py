"""shapegrad's SVG drawings against cairosvg's, per image, over a whole icon set (docs/svg.md).

For every SVG under FOLDER: read_svg (refused? warned?), render at --size px
(the longer side), cairosvg at the same size, both on white, compared in [0, 1]
RGB: an image *agrees* when at least 99 % of its pixels are within 0.1 (the
largest channel difference). Prints, per set: files, refused, accepted without
a warning, the agreement rate on those (the claim of docs/svg.md) and on the
warned ones, the warnings by feature, the worst images, the time per image.

    python benchmarks/svg_agreement.py /tmp/svgsets/bi/package/icons --size 128
    python benchmarks/svg_agreement.py /tmp/svgsets/om/package/color/svg --sample 300 --seed 0
    python benchmarks/svg_agreement.py DIR --figure docs/svg-compare.png --pick a.svg b.svg ...
    python benchmarks/svg_agreement.py DIR --parse-only   # refused / warned over a whole set, no drawing

The sets come from npm (``npm pack bootstrap-icons openmoji``, then untar).
"""

import argparse
import collections
import io
import os
import random
import re
import sys
import time
import warnings

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import cairosvg  # noqa: E402
import keras  # noqa: E402
from PIL import Image  # noqa: E402

from shapegrad.io import plots  # noqa: E402
from shapegrad.io.svg_files import list_svg_files  # noqa: E402
from shapegrad.io.svg_read import SVGError, SVGWarning, read_svg, svg_layers  # noqa: E402

WITHIN = 0.1  # a pixel agrees when its largest channel difference is below this
SHARE = 0.99  # an image agrees when this share of its pixels do


def cairo_image(path, height, width):
    """cairosvg's drawing of ``path`` at ``height x width``, on white, ``(H, W, 3)`` in [0, 1]."""
    png = cairosvg.svg2png(url=path, output_width=width, output_height=height)
    rgba = np.asarray(Image.open(io.BytesIO(png)).convert("RGBA"), np.float64) / 255
    return rgba[..., :3] * rgba[..., 3:] + (1 - rgba[..., 3:])


def compare(path, size):
    """``{"status", "share", "warnings", "seconds", "ours", "theirs"}`` of one file."""
    start = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", SVGWarning)
        try:
            renderer, params = read_svg(path, size=size)
        except SVGError as error:
            return {"status": "refused", "why": str(error), "warnings": []}
        ours = np.asarray(keras.ops.convert_to_numpy(renderer(params))[0], np.float64)
    seconds = time.perf_counter() - start
    notes = [str(w.message).split(": ")[1] for w in caught if issubclass(w.category, SVGWarning)]
    theirs = cairo_image(path, renderer.height, renderer.width)
    share = float(np.mean(np.abs(ours - theirs).max(axis=-1) < WITHIN))
    return {"status": "warned" if notes else "clean", "share": share, "warnings": notes, "seconds": seconds,
            "ours": ours, "theirs": theirs, "shapes": renderer.spec.shapes}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder")
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--sample", type=int, default=None, help="this many files, drawn at random (--seed)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--worst", type=int, default=8)
    parser.add_argument("--figure", default=None, help="write a side-by-side PNG of --pick files (or the worst)")
    parser.add_argument("--pick", nargs="*", default=None, help="file names for --figure")
    parser.add_argument("--parse-only", action="store_true",
                        help="only read every file (no drawing): refused, accepted without a warning, warnings")
    parser.add_argument("--seconds", type=float, default=None,
                        help="stop starting new files after this long and report on those done (said in the report)")
    args = parser.parse_args(argv)

    paths = list_svg_files([args.folder])
    if args.sample:
        paths = sorted(random.Random(args.seed).sample(paths, min(args.sample, len(paths))))
    if args.pick:
        paths = [p for p in paths if os.path.basename(p) in args.pick]
    if args.parse_only:
        return parse_only(args, paths)
    results, start = {}, time.perf_counter()
    for i, path in enumerate(paths):
        if args.seconds and time.perf_counter() - start > args.seconds:
            print(f"time limit: stopped after {i} of {len(paths)} files", flush=True)
            break
        results[path] = compare(path, args.size)
        r = results[path]
        print(f"  {i + 1}/{len(paths)} {os.path.basename(path)} {r['status']} {r.get('share', 0):.4f}",
              file=sys.stderr, flush=True)
    report(args, results)
    if args.figure:
        figure(args.figure, results, args.pick)


def parse_only(args, paths):
    """What read_svg makes of every file, without drawing: the acceptance figures of a whole set."""
    refused, clean, features = [], 0, collections.Counter()
    for path in paths:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", SVGWarning)
            try:
                svg_layers(path, size=args.size)
            except SVGError as error:
                refused.append(str(error))
                continue
        notes = {str(w.message).split(": ")[1] for w in caught if issubclass(w.category, SVGWarning)}
        clean += not notes
        features.update(notes)
    print(f"set: {args.folder} ({len(paths)} files), read only: refused {len(refused)}, accepted without a "
          f"warning {clean} ({clean / max(len(paths), 1):.1%}), with warnings {len(paths) - len(refused) - clean}")
    if features:
        print("warnings by feature (files): " + ", ".join(f"{k} {v}" for k, v in features.most_common()))
    for why in refused[: args.worst]:
        print(f"  refused {why}")


def report(args, results):
    by = collections.defaultdict(list)
    for path, r in results.items():
        by[r["status"]].append(path)
    clean = [results[p]["share"] for p in by["clean"]]
    warned = [results[p]["share"] for p in by["warned"]]
    seconds = [r["seconds"] for r in results.values() if "seconds" in r]
    print(f"set: {args.folder} ({len(results)} files{', sample of ' + str(args.sample) if args.sample else ''}), "
          f"{args.size} px, backend {keras.backend.backend()}")
    print(f"refused: {len(by['refused'])}; accepted without a warning: {len(clean)}; with warnings: {len(warned)}")
    if clean:
        passed = sum(s >= SHARE for s in clean)
        print(f"agreement (>= {SHARE:.0%} of pixels within {WITHIN}) without a warning: {passed}/{len(clean)} "
              f"= {passed / len(clean):.1%}; mean share of pixels {np.mean(clean):.4f}, lowest {min(clean):.4f}")
    if warned:
        passed = sum(s >= SHARE for s in warned)
        print(f"agreement with warnings (not claimed): {passed}/{len(warned)} = {passed / len(warned):.1%}")
    features = collections.Counter(n for r in results.values() for n in set(r["warnings"]))
    if features:
        print("warnings by feature (files): " + ", ".join(f"{k} {v}" for k, v in features.most_common()))
    for path in by["refused"][: args.worst]:
        print(f"  refused {results[path]['why']}")
    if seconds:
        print(f"read + render: median {np.median(seconds):.3f} s, max {max(seconds):.2f} s per image")
    worst = sorted((results[p]["share"], p) for p in by["clean"])[: args.worst]
    for share, path in worst:
        kinds = ",".join(f"{k}*{n}" for k, n in results[path]["shapes"])
        print(f"  worst without warning: {share:.4f} {os.path.basename(path)} ({kinds[:80]})")


def figure(path, results, pick):
    """Rows of (shapegrad, cairosvg, |difference| x 4) for the picked files, scaled 2x."""
    chosen = [p for p in results if "ours" in results[p]]
    if pick:
        chosen = [p for name in pick for p in chosen if os.path.basename(p) == name]
    rows = []
    for p in chosen[:8]:
        r = results[p]
        diff = np.clip(4 * np.abs(r["ours"] - r["theirs"]).max(-1, keepdims=True), 0, 1).repeat(3, -1)
        rows.append([r["ours"], r["theirs"], 1 - diff])
    plots.save_image(path, plots.image_grid(rows, pad=4, fill=0.5), scale=2)
    names = ", ".join(re.sub(r"\.svg$", "", os.path.basename(p)) for p in chosen[:8])
    print(f"wrote {path}: rows {names}; columns shapegrad, cairosvg, 1 - 4 |difference|")


if __name__ == "__main__":
    main()
