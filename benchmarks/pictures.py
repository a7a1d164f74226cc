"""Benchmark: pictures vectorised by fogleman/primitive and by ``shapegrad fit``, whole commands.

Pictures from ``skimage.data`` (photographs, a grey photograph, a micrograph, a silhouette, a logo),
shrunk to ``--size`` px on their long side (proportions kept), written as RGB PNG into the work
folder. Each program runs as a whole command (start-up included, wall clock from the parent):

- primitive (built by ``benchmarks/build_primitive.sh``, seeded through ``PRIMITIVE_SEED``):
  ``primitive -i PIC.png -o OUT.png -n N -m 1 -j 2 -r L -s L`` where L is the picture's long side,
  so that it fits and draws at the picture's own size (its defaults, ``-r 256 -s 1024``, shrink
  inputs over 256 px and draw the output at 1024 px). Scored twice: on its internal raster (the
  scanline raster it optimises; ``model.Score`` is an RMS over RGBA/255 whose alpha term is 0 for an
  opaque picture, so the RGB MSE is ``score**2 * 4/3``: checked against the raster saved as PNG),
  and on the PNG it writes (drawn again by ``gg``, anti-aliased, while the raster it optimised is
  hard-edged on whole pixels: lower, and more so the more shapes). Its PNG is ``int(L / aspect)``
  rows high, which a float rounding can make one short of the picture (horse: 104 of 105): then
  the PNG is scored on the rows it has, with a warning.
- ``-m 0`` (combo) draws each candidate from all 8 of its kinds (triangle, box, ellipse, circle,
  rotated box, quadratic Bezier stroke, rotated ellipse, quadrilateral), not just three.
- shapegrad: ``python -m shapegrad fit PIC.png --kinds triangle --count N --out DIR --force``, its
  PSNR read from ``DIR/summary.csv`` (``psnr_db``: its own soft-edged render), and scored again on
  its ``shapes.svg`` drawn by cairosvg at the picture's size (hard anti-aliased edges, as a viewer
  draws it; the fair match for primitive's PNG) when cairosvg is installed.

Counts 16..256 with triangles (``-m 1`` / ``--kinds triangle``) and, at ``--combo-count``, the
combination mode (``-m 0`` / ``--kinds triangle,ellipse,box``). PSNR over RGB in [0, 1].

    benchmarks/build_primitive.sh
    .venv/bin/python benchmarks/pictures.py --size 128 --counts 16,32,64,128 --seeds 3 \\
        --programs primitive --plot runs/pictures/pictures.png

Writes ``--work``/results.json (every run, written as it goes; ``--resume`` keeps the runs already
there), results.md (means over pictures and seeds) and the plot: PSNR against count and against
wall seconds, both programs on the same axes.
"""

import argparse
import csv
import json
import os
import resource
import statistics
import subprocess
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
PICTURES = ("astronaut", "camera", "chelsea", "coffee", "horse", "immunohistochemistry", "logo", "rocket")
COMBO_KINDS = "triangle,ellipse,box"  # shapegrad's kinds against primitive's -m 0 (combo)


def load_picture(name):
    """``skimage.data.<name>()`` as float RGB in [0, 1] (grey and bool spread to RGB, RGBA over white)."""
    import skimage.data

    image = np.asarray(getattr(skimage.data, name)())
    image = image.astype(np.float64) if image.dtype == bool else image.astype(np.float64) / 255.0
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=-1)
    if image.shape[-1] == 4:
        alpha = image[..., 3:]
        image = image[..., :3] * alpha + (1.0 - alpha)
    return image


def write_picture(name, size, folder):
    """Shrink ``name`` to ``size`` px on its long side and save it as RGB PNG; returns ``(path, (h, w))``."""
    from PIL import Image
    from skimage.transform import resize

    image = load_picture(name)
    h, w = image.shape[:2]
    scale = size / max(h, w)
    shape = (max(1, round(h * scale)), max(1, round(w * scale)))
    small = resize(image, shape, anti_aliasing=True)
    path = os.path.join(folder, f"{name}-{size}.png")
    Image.fromarray(np.clip(np.round(small * 255), 0, 255).astype(np.uint8), "RGB").save(path)
    return path, shape


def read_rgb(path):
    from PIL import Image

    return np.asarray(Image.open(path).convert("RGB"), np.float64) / 255.0


def psnr(mse):
    return float("inf") if mse <= 0 else 10.0 * np.log10(1.0 / mse)


def timed(command, env=None):
    """Run ``command``; returns ``(wall seconds, child CPU seconds, 1-minute load before)``; raises on failure."""
    load = os.getloadavg()[0]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    done = subprocess.run(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} exited {done.returncode}:\n{done.stdout[-2000:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu, load


def run_primitive(args, picture, shape, count, mode, seed, folder):
    """One primitive run: PSNR on its internal raster and on its PNG, wall and CPU seconds."""
    long_side = max(shape)
    stem = os.path.join(folder, f"{os.path.basename(picture)[:-4]}-m{mode}-n{count}-s{seed}")
    command = [args.primitive, "-i", picture, "-o", stem + ".png", "-o", stem + ".svg", "-n", str(count),
               "-m", str(mode), "-j", str(args.jobs), "-r", str(long_side), "-s", str(long_side)]
    if args.alpha is not None:
        command += ["-a", str(args.alpha)]
    env = dict(os.environ, PRIMITIVE_SEED=str(seed), PRIMITIVE_SCORE_FILE=stem + ".score.json",
               PRIMITIVE_RASTER_PNG=stem + ".raster.png")
    wall, cpu, load = timed(command, env)
    with open(stem + ".score.json") as f:
        score = json.load(f)
    target = read_rgb(picture)
    internal = psnr(score["score_full"] ** 2 * 4.0 / 3.0)  # RMS over RGBA -> MSE over RGB (alpha adds 0)
    raster = psnr(np.mean((read_rgb(stem + ".raster.png") - target) ** 2))
    if abs(raster - internal) > 1e-6:
        print(f"warning: {stem}: score gives {internal:.6f} dB, its raster {raster:.6f} dB", file=sys.stderr)
    drawn = read_rgb(stem + ".png")
    if drawn.shape != target.shape:  # -s L gives int(L / aspect): a float rounding can lose a row
        print(f"warning: {stem}.png is {drawn.shape[:2]}, the picture {target.shape[:2]}: scored on the overlap",
              file=sys.stderr)
        h, w = min(drawn.shape[0], target.shape[0]), min(drawn.shape[1], target.shape[1])
        drawn, target = drawn[:h, :w], target[:h, :w]
    return {"psnr_internal": internal, "psnr_running_score": psnr(score["score"] ** 2 * 4.0 / 3.0),
            "psnr_png": psnr(np.mean((drawn - target) ** 2)), "wall_s": wall, "cpu_s": cpu, "load": load,
            "shapes": score["shapes"], "command": " ".join(command)}


def svg_psnr(out, picture):
    """PSNR of ``out/<stem>/shapes.svg`` drawn by cairosvg at the picture's size (hard, anti-aliased edges, as
    a viewer draws it; shapegrad's own PSNR is of its soft-edged render); None without cairosvg."""
    try:
        import cairosvg
    except ImportError:
        return None
    import glob
    import io

    from PIL import Image

    target = read_rgb(picture)
    h, w = target.shape[:2]
    svg = glob.glob(os.path.join(out, "*", "shapes.svg"))[0]
    png = cairosvg.svg2png(url=svg, output_width=w, output_height=h)
    drawn = np.asarray(Image.open(io.BytesIO(png)).convert("RGB"), np.float64) / 255.0
    return psnr(np.mean((drawn - target) ** 2))


def run_shapegrad(args, picture, count, kinds, folder):
    """One ``shapegrad fit`` run: PSNR from its summary.csv, wall and CPU seconds."""
    out = os.path.join(folder, f"{os.path.basename(picture)[:-4]}-{kinds.replace(',', '+')}-n{count}")
    command = [args.python, "-m", "shapegrad", "fit", picture, "--kinds", kinds, "--count", str(count),
               "--out", out, "--force"]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [ROOT, os.environ.get("PYTHONPATH")])))
    wall, cpu, load = timed(command, env)
    with open(os.path.join(out, "summary.csv")) as f:
        row = next(csv.DictReader(f))
    column = "psnr_db" if "psnr_db" in row else next(k for k in row if k.startswith("psnr"))
    return {"psnr_png": float(row[column]), "psnr_svg": svg_psnr(out, picture), "wall_s": wall, "cpu_s": cpu,
            "load": load,
            "shapes": int(row["count"]) if row.get("count", "").isdigit() else None,
            "fit_s": float(row["seconds"]) if row.get("seconds") else None, "command": " ".join(command)}


def jobs(args):
    """Every run as ``(program, kinds, count, seed)``; primitive's kinds are its mode."""
    for program in args.programs:
        seeds = range(1, args.seeds + 1) if program == "primitive" else range(1, args.shapegrad_repeats + 1)
        plan = [("triangle", n) for n in args.counts] + ([("combo", args.combo_count)] if args.combo_count else [])
        for kinds, count in plan:
            for seed in seeds:
                yield program, kinds, count, seed


def summarise(rows):
    """Mean over pictures and seeds per (program, kinds, count)."""
    groups = {}
    for row in rows:
        groups.setdefault((row["program"], row["kinds"], row["count"]), []).append(row)
    out = []
    for (program, kinds, count), group in sorted(groups.items()):
        mean = lambda key: statistics.fmean(r[key] for r in group) if key in group[0] else None  # noqa: E731
        out.append({"program": program, "kinds": kinds, "count": count, "runs": len(group),
                    "pictures": len({r["picture"] for r in group}), "psnr_internal": mean("psnr_internal"),
                    "psnr_png": mean("psnr_png"),
                    "psnr_svg": (statistics.fmean(r["psnr_svg"] for r in group)
                                 if all(r.get("psnr_svg") is not None for r in group) else None),
                    "wall_s": mean("wall_s"),
                    "wall_median_s": statistics.median(r["wall_s"] for r in group), "cpu_s": mean("cpu_s"),
                    "load": mean("load")})
    return out


def markdown(rows, summary, args):
    fmt = lambda x, d=2: "–" if x is None else f"{x:.{d}f}"  # noqa: E731
    lines = [f"Pictures: {', '.join(args.pictures)} at {args.size} px (long side); primitive seeded 1, 2, ... "
             f"(runs = pictures x seeds), -j {args.jobs}; load = 1-minute load average before each run "
             f"({os.cpu_count()} cores).", "",
             "| program | kinds | count | runs | PSNR internal (dB) | PSNR PNG (dB; shapegrad: its own) "
             "| PSNR SVG by cairosvg (dB) | wall s (mean) | wall s (median) | CPU s | load |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for s in summary:
        lines.append(f"| {s['program']} | {s['kinds']} | {s['count']} | {s['runs']} | {fmt(s['psnr_internal'])} | "
                     f"{fmt(s['psnr_png'])} | {fmt(s['psnr_svg'])} | {fmt(s['wall_s'])} | {fmt(s['wall_median_s'])} | "
                     f"{fmt(s['cpu_s'])} | {fmt(s['load'])} |")
    keys = sorted({(r["program"], r["kinds"], r["count"]) for r in rows})
    lines += ["", "Per picture, mean over seeds: PSNR (dB) internal / PNG (shapegrad: its own / its SVG by cairosvg).",
              "",
              "| picture | " + " | ".join(f"{p} {k} {n}" for p, k, n in keys) + " |",
              "|---|" + "---|" * len(keys)]
    for picture in args.pictures:
        cells = []
        for p, k, n in keys:
            group = [r for r in rows if (r["picture"], r["program"], r["kinds"], r["count"]) == (picture, p, k, n)]
            if not group:
                cells.append("–")
                continue
            png = statistics.fmean(r["psnr_png"] for r in group)
            internal = [r["psnr_internal"] for r in group if "psnr_internal" in r]
            svg = [r["psnr_svg"] for r in group if r.get("psnr_svg") is not None]
            cells.append(f"{statistics.fmean(internal):.2f} / {png:.2f}" if internal
                         else f"{png:.2f} / {statistics.fmean(svg):.2f}" if svg else f"{png:.2f}")
        lines.append(f"| {picture} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def plot(summary, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (by_count, by_time) = plt.subplots(1, 2, figsize=(11, 4.2))
    colours = {"primitive": "tab:orange", "shapegrad": "tab:blue"}
    for program in ("primitive", "shapegrad"):
        series = [s for s in summary if s["program"] == program and s["kinds"] == "triangle"]
        combo = [s for s in summary if s["program"] == program and s["kinds"] == "combo"]
        lines = [("psnr_png", "-", f"{program}" + (" (its PNG)" if program == "primitive" else ""))]
        if program == "primitive":
            lines.append(("psnr_internal", "--", "primitive (internal raster)"))
        elif all(s.get("psnr_svg") is not None for s in series + combo):
            lines.append(("psnr_svg", ":", "shapegrad (its SVG by cairosvg)"))
        for key, style, label in lines:
            for axis, x in ((by_count, "count"), (by_time, "wall_s")):
                if series:
                    axis.plot([s[x] for s in series], [s[key] for s in series], style, marker="o",
                              color=colours[program], label=label + ", triangles")
                if combo:
                    axis.plot([s[x] for s in combo], [s[key] for s in combo], marker="*" if style == "-" else "x",
                              markersize=11, linestyle="none", color=colours[program], label=label + ", combo")
    from matplotlib.ticker import NullFormatter, ScalarFormatter

    counts = sorted({s["count"] for s in summary})
    by_count.set_xscale("log", base=2)
    by_count.set_xticks(counts, [str(n) for n in counts])
    by_count.set_xlabel("shapes")
    by_time.set_xscale("log")
    walls = [s["wall_s"] for s in summary]
    by_time.set_xticks([t for t in (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000) if min(walls) / 2 <= t <= max(walls) * 2])
    by_time.xaxis.set_major_formatter(ScalarFormatter())
    by_time.xaxis.set_minor_formatter(NullFormatter())
    by_time.set_xlabel("wall seconds per picture (whole command)")
    for axis in (by_count, by_time):
        axis.set_ylabel("mean PSNR (dB)")
        axis.grid(True, alpha=0.3)
    by_count.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--programs", default="primitive,shapegrad", help="comma list: primitive, shapegrad")
    parser.add_argument("--pictures", default=",".join(PICTURES), help="skimage.data names")
    parser.add_argument("--size", type=int, default=128, help="long side in px (default 128)")
    parser.add_argument("--counts", default="16,32,64,128,256", help="triangle counts")
    parser.add_argument("--combo-count", type=int, default=64, help="count for combo mode (0 = none)")
    parser.add_argument("--seeds", type=int, default=3, help="primitive runs (PRIMITIVE_SEED 1..N)")
    parser.add_argument("--shapegrad-repeats", type=int, default=1, help="shapegrad runs of each (default 1)")
    parser.add_argument("--jobs", type=int, default=2, help="primitive's -j (workers; default 2)")
    parser.add_argument("--alpha", type=int, default=None, help="primitive's -a (default: its own, 128)")
    parser.add_argument("--primitive", default=os.path.join(HERE, ".primitive", "bin", "primitive"))
    parser.add_argument("--python", default=sys.executable, help="python that runs shapegrad")
    parser.add_argument("--work", default=os.path.join(ROOT, "runs", "pictures"), help="work folder")
    parser.add_argument("--resume", action="store_true", help="keep the runs already in WORK/results.json")
    parser.add_argument("--plot", default=None, help="plot path (default WORK/pictures.png)")
    args = parser.parse_args(argv)
    args.programs = [p for p in args.programs.split(",") if p]
    args.pictures = [p for p in args.pictures.split(",") if p]
    args.counts = [int(n) for n in args.counts.split(",") if n]
    if set(args.programs) - {"primitive", "shapegrad"}:
        parser.error(f"--programs: primitive and/or shapegrad, not {args.programs}")
    if "primitive" in args.programs and not os.access(args.primitive, os.X_OK):
        parser.error(f"no primitive at {args.primitive}: run benchmarks/build_primitive.sh")

    folder = os.path.join(args.work, str(args.size))
    os.makedirs(folder, exist_ok=True)
    results = os.path.join(args.work, "results.json")
    rows = []
    if args.resume and os.path.exists(results):
        with open(results) as f:
            rows = json.load(f)["rows"]
    for row in rows:  # runs recorded before SVGs were scored: score their output folders now
        out = row["command"].split(" --out ")[1].split(" ")[0] if row["program"] == "shapegrad" else None
        if out and row.get("psnr_svg") is None and os.path.isdir(out):
            picture = os.path.join(args.work, str(row["size"]), f"{row['picture']}-{row['size']}.png")
            row["psnr_svg"] = svg_psnr(out, picture)
    done = {(r["picture"], r["size"], r["program"], r["kinds"], r["count"], r["seed"]) for r in rows}
    plan = list(jobs(args))
    for name in args.pictures:
        picture, shape = write_picture(name, args.size, folder)
        for program, kinds, count, seed in plan:
            if (name, args.size, program, kinds, count, seed) in done:
                continue
            if program == "primitive":
                row = run_primitive(args, picture, shape, count, 1 if kinds == "triangle" else 0, seed, folder)
            else:
                row = run_shapegrad(args, picture, count, "triangle" if kinds == "triangle" else COMBO_KINDS, folder)
            row = {"picture": name, "size": args.size, "height": shape[0], "width": shape[1], "program": program,
                   "kinds": kinds, "count": count, "seed": seed, **row}
            rows.append(row)
            print(f"{name:22s} {program:9s} {kinds:8s} n={count:3d} seed={seed} "
                  f"psnr {row.get('psnr_internal', float('nan')):6.2f} internal {row['psnr_png']:6.2f} png "
                  f"{row['wall_s']:6.2f} s (load {row['load']:.2f})", flush=True)
            with open(results, "w") as f:
                json.dump({"argv": sys.argv, "cpus": os.cpu_count(), "rows": rows}, f, indent=1)
    summary = summarise([r for r in rows if r["size"] == args.size])
    table = markdown([r for r in rows if r["size"] == args.size], summary, args)
    with open(os.path.join(args.work, "results.md"), "w") as f:
        f.write(table)
    print(table)
    plot(summary, args.plot or os.path.join(args.work, "pictures.png"))


if __name__ == "__main__":
    main()
