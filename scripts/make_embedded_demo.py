"""Make the embedded ``demo`` dataset: the first 3000 training and first 1000 test images of
Fashion-MNIST, written as gzipped IDX files to ``src/pdnn/data/embedded/``.

Reproducible: the slices are prefixes of the official files and gzip is written with mtime 0,
so running it again on the same source gives byte-identical files. Usage::

    python scripts/make_embedded_demo.py [--source /usr/share/datasets/fashion-mnist]
"""
from __future__ import annotations

import argparse
import gzip
import hashlib
from pathlib import Path

from pdnn.cli.common import file_in_the_way
from pdnn.data.idx import DataError, idx_bytes, read_idx
from pdnn.data.locate import find_variant
from pdnn.interrupts import run_script
from pdnn.io import atomic_write

TRAIN, TEST = 3000, 1000
FILES = {"train-images-idx3-ubyte": TRAIN, "train-labels-idx1-ubyte": TRAIN,
         "t10k-images-idx3-ubyte": TEST, "t10k-labels-idx1-ubyte": TEST}
OUT = Path(__file__).resolve().parents[1] / "src" / "pdnn" / "data" / "embedded"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--source", type=Path, default=Path("/usr/share/datasets/fashion-mnist"),
                        help="folder with the Fashion-MNIST IDX files (raw or .gz)")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    if (blocking := file_in_the_way(args.out)) is not None:
        parser.error(f"--out {args.out}: {blocking} is a file where a folder is expected")
    written = {}  # every file read before any is written: a bad one must not leave the set mixed
    for name, count in FILES.items():
        source = find_variant(args.source, name)
        if source is None:
            raise SystemExit(f"{args.source}: missing {name}[.gz] (apt-get install dataset-fashion-mnist)")
        try:
            written[name] = gzip.compress(idx_bytes(read_idx(source)[:count].contiguous()), compresslevel=9, mtime=0)
        except DataError as err:
            parser.error(str(err))
    targets = {name: args.out / f"{name}.gz" for name in written}
    # refused before any file is written: the set would be left mixed
    if blocked := [str(target) for target in targets.values() if target.is_dir()]:
        parser.error(f"a folder stands where a file goes: {', '.join(blocked)}")
    total = 0
    for name, data in written.items():
        target = targets[name]
        try:  # (a folder in the file's place ended in a traceback)
            args.out.mkdir(parents=True, exist_ok=True)
            atomic_write(target, lambda f, data=data: f.write(data))  # (an interrupt leaves each file whole)
        except OSError as err:
            parser.error(f"cannot write {target}: {err.strerror or err}")
        total += len(data)
        print(f"{target}  {len(data):>9,} bytes  sha256 {hashlib.sha256(data).hexdigest()[:16]}")
    print(f"total {total:,} bytes")


if __name__ == "__main__":
    run_script(main)
