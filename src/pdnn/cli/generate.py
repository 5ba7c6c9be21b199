"""``pdnn generate``: images from a generator run, each the mean of T decoder samples."""
from __future__ import annotations

import os
import re
import warnings
from pathlib import Path

from ..checks import positive_int
from ..devices import resolve_device
from ..errors import UsageError
from ..generation import check_generator, generate, image_grid, to_uint8
from ..io import LOCK, orphans, remove_orphans, signals_held, staging_folder, writer_lock
from ..runs import load_model
from .common import SEED_OPTION, add_device_option, named_path, options_named


GRID = "grid.png"
_IMAGE = re.compile(r"\d{4,}\.png")  # image_name's


def add_parser(sub) -> None:
    p = sub.add_parser("generate", help="generate images from a generator (VAE) run",
                       description="Draws N latents and writes N images (each the mean of T decoder samples) "
                                   "as DIR/0000.png ... and a grid DIR/grid.png.")
    p.add_argument("run_dir", type=named_path, metavar="RUN_DIR")
    p.add_argument("--samples", "-T", type=int, default=1, help="decoder samples averaged per image (default: 1)")
    p.add_argument("--n", type=int, default=100, help="number of images (default: 100)")
    p.add_argument("--seed", type=int, default=0, help="seed of the latents (default: 0; p-bits use seed + 1; "
                   "an image's draws also depend on --n and -T; torch's CPU generator reads the low 32 bits, so seeds "
                   "2**32 apart draw alike)")
    p.add_argument("--nrow", type=int, default=10, help="images per row of the grid (default: 10)")
    p.add_argument("--out", type=named_path, required=True, metavar="DIR", help="a new or empty folder for the images")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    add_device_option(p)
    p.set_defaults(run=run)


def image_name(index: int, count: int) -> str:
    """The file of image ``index`` of ``count``: 0000.png, ..., numbered with as many digits as
    the last needs, so that the names sort as the images do (9999.png before 10000.png)."""
    return f"{index:0{max(4, len(str(count - 1)))}d}.png"


def write_png(path: Path, image) -> None:
    """uint8 ``[C, H, W]`` -> PNG at ``path`` (in the staging folder, which is moved in whole)."""
    from PIL import Image

    array = image.permute(1, 2, 0).numpy()
    Image.fromarray(array[..., 0] if array.shape[2] == 1 else array).save(path, format="PNG")


def _remove_a_killed_move(out: Path) -> None:
    """Remove the images a killed ``generate`` had moved into ``out`` before it died (SIGKILL
    cannot be held), with its staging folder: they are part of a set with nothing to say so, and
    were left while the staging folder with the rest was deleted. The grid moves last, so a
    staging folder that still holds it marks the move unfinished, and the images moved are those
    numbered below the first it holds. Anything else stays (a whole set is refused as before)."""
    for staging in orphans(out / GRID):
        left = sorted(p.name for p in staging.iterdir()) if staging.is_dir() else []
        if GRID in left:
            first = next((name for name in left if _IMAGE.fullmatch(name)), None)
            moved = [p for p in out.iterdir() if _IMAGE.fullmatch(p.name) and (first is None or p.name < first)]
            for image in moved:
                image.unlink()
            if moved:
                warnings.warn(f"removed the {len(moved)} images a killed run had moved into {out} of an unfinished "
                              "set", stacklevel=2)
    remove_orphans(out / GRID)


def run(args) -> int:
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out} is a file; expected a new or empty folder")
    positive_int("--n", args.n, most=None)  # (named as the option; generate names its argument)
    positive_int("--samples", args.samples, most=None)
    positive_int("--nrow", args.nrow, most=None)  # (before the images are drawn; any width is cut to --n)
    device = resolve_device(args.device)
    with writer_lock(out, "generate into"):  # takes over a killed run's lock
        _remove_a_killed_move(out)  # and its staging folder
        if any(p.name != LOCK for p in out.iterdir()):
            raise UsageError(f"--out {out} is not an empty folder; choose a new one")
        model, _ = load_model(args.run_dir, device)
        vae = check_generator(model, f"run {args.run_dir}")
        with options_named({**SEED_OPTION, "samples (T)": "--samples", "n (number of images)": "--n"}):
            images = to_uint8(generate(vae, args.samples, args.n, seed=args.seed, device=device,
                                       progress=not args.quiet))
        with staging_folder(out / GRID) as staging:  # inside --out: one file system, however it is linked
            for i, image in enumerate(images):
                write_png(staging / image_name(i, len(images)), image)
            write_png(staging / GRID, image_grid(images, args.nrow))
            with signals_held():  # all images appear at once: an interrupted run leaves no --out (or an empty one);
                for image in sorted(staging.iterdir()):  # a killed one, the images it moved (the grid last), which
                    os.replace(image, out / image.name)  # the next run removes
    print(f"{out}: {len(images)} images (T={args.samples}, seed {args.seed}) and {GRID}")
    return 0
