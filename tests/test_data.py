"""pdnn.data: IDX / CIFAR pickle / class-folder decoding, the disk cache, data roots, subset,
augmentation, normalisation and the embedded demo. Every fixture is built here in tmp_path."""
import gzip
import json
import os
import pickle
import re
import tempfile
import subprocess
import sys
import warnings
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from damage import corrupt_zip_member

import pdnn.data.cache as cache_module
from pdnn.errors import UsageError
import pdnn.data.idx as idx_module
import pdnn.data.images as images_module
from pdnn.data import (DATASETS, INPUT_SHAPES, DataError, Dataset, DatasetNotFound, augment,
                       data_roots, describe, load)
from pdnn.data.idx import idx_bytes, parse_idx, read_idx
from pdnn.io import temporary_prefix

IDX_NAMES = ["train-images-idx3-ubyte", "train-labels-idx1-ubyte",
             "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"]
CIFAR_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch):
    """Every test gets its own cache and no inherited $PDNN_DATA."""
    monkeypatch.setenv("PDNN_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("PDNN_DATA", raising=False)


def make_idx(folder: Path, gz: bool, n_train=20, n_test=8, seed=0) -> dict:
    """A tiny MNIST-like dataset of random 28x28 images written as IDX files in ``folder``."""
    g = torch.Generator().manual_seed(seed)
    data = {
        "train_x": torch.randint(0, 256, (n_train, 28, 28), generator=g, dtype=torch.uint8),
        "train_y": torch.arange(n_train, dtype=torch.uint8) % 10,
        "test_x": torch.randint(0, 256, (n_test, 28, 28), generator=g, dtype=torch.uint8),
        "test_y": (torch.arange(n_test, dtype=torch.uint8) * 3) % 10,
    }
    folder.mkdir(parents=True, exist_ok=True)
    for name, key in zip(IDX_NAMES, ["train_x", "train_y", "test_x", "test_y"]):
        raw = idx_bytes(data[key])
        if gz:
            (folder / f"{name}.gz").write_bytes(gzip.compress(raw))
        else:
            (folder / name).write_bytes(raw)
    return data


def assert_idx_equal(ds: Dataset, data: dict) -> None:
    assert ds.train_x.dtype == torch.uint8 and ds.train_y.dtype == torch.int64
    assert ds.train_x.shape == (len(data["train_x"]), 1, 28, 28)
    assert torch.equal(ds.train_x[:, 0], data["train_x"])
    assert torch.equal(ds.test_x[:, 0], data["test_x"])
    assert torch.equal(ds.train_y, data["train_y"].long())
    assert torch.equal(ds.test_y, data["test_y"].long())


# ---------------------------------------------------------------- IDX


def test_idx_raw_and_gz_round_trip_and_agree(tmp_path):
    raw = make_idx(tmp_path / "raw" / "fashion-mnist", gz=False)
    zipped = make_idx(tmp_path / "gz" / "fashion-mnist", gz=True)
    a = load("fashion-mnist", roots=[tmp_path / "raw"], progress=False)
    b = load("fashion-mnist", roots=[tmp_path / "gz"], progress=False)
    assert_idx_equal(a, raw)
    assert_idx_equal(b, zipped)
    assert torch.equal(a.train_x, b.train_x) and torch.equal(a.test_y, b.test_y)
    assert a.classes[0] == "T-shirt/top" and a.num_classes == 10 and a.input_shape == (1, 28, 28)
    assert a.augmentation == "none"


def test_idx_bad_magic_names_the_file(tmp_path):
    folder = tmp_path / "mnist"
    make_idx(folder, gz=False)
    bad = folder / "train-labels-idx1-ubyte"
    bad.write_bytes(b"\x12\x34" + bad.read_bytes()[2:])
    with pytest.raises(DataError, match="train-labels-idx1-ubyte.*magic"):
        load("mnist", roots=[tmp_path], progress=False)


@pytest.mark.parametrize("name, magic, count, holds", [("t10k-labels-idx1-ubyte", "00000803", 3, "labels [N]"),
                                                      ("t10k-labels-idx1-ubyte", "00000802", 2, "labels [N]"),
                                                      ("t10k-images-idx3-ubyte", "00000801", 1, "images [N, H, W]")])
def test_an_idx_file_with_another_files_dimensions_is_named_as_such(tmp_path, name, magic, count, holds):
    """A labels file with the images' magic number was called truncated, its header's next bytes
    read as sizes: "dimensions [10000, 151126273, 100729862] need 152229286238643260000 bytes"."""
    folder = tmp_path / "mnist"
    make_idx(folder, gz=False)
    bad = folder / name
    bad.write_bytes(bytes.fromhex(magic) + bad.read_bytes()[4:])
    expected = "00000801" if holds.startswith("labels") else "00000803"
    with pytest.raises(DataError, match=re.escape(f"{bad}: its IDX magic number 0x{magic} gives {count} "
                                                  f"dimension{'s' * (count > 1)}; expected {expected[-1]} for {holds} "
                                                  f"(0x{expected})" + (": is it the other file of the set, renamed?"
                                                                       if count in (1, 3) else "")) + "$"):
        load("mnist", roots=[tmp_path], progress=False)


def test_idx_truncated_files_are_errors(tmp_path):
    data = idx_bytes(torch.zeros(5, 28, 28, dtype=torch.uint8))
    with pytest.raises(DataError, match=r"x\.idx: truncated.*3920 bytes of data, found 3919"):
        parse_idx(data[:-1], "x.idx")
    with pytest.raises(DataError, match="longer than its header"):
        parse_idx(data + b"\0", "x.idx")
    with pytest.raises(DataError, match="IDX type 0x0d"):
        parse_idx(b"\0\0\x0d\x01\0\0\0\0", "x.idx")
    path = tmp_path / "cut.gz"
    path.write_bytes(gzip.compress(data)[:-20])
    with pytest.raises(DataError, match="cut.gz.*gzip"):
        read_idx(path)
    assert read_idx(_write(tmp_path / "ok", data)).shape == (5, 28, 28)


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def test_idx_images_and_labels_must_match(tmp_path):
    folder = tmp_path / "mnist"
    make_idx(folder, gz=False)
    (folder / "t10k-labels-idx1-ubyte").write_bytes(idx_bytes(torch.zeros(7, dtype=torch.uint8)))
    with pytest.raises(DataError, match="8 images but .* 7 labels"):
        load("mnist", roots=[tmp_path], progress=False)


# ---------------------------------------------------------------- cache


def test_cache_hit_skips_decoding_and_source_change_invalidates(tmp_path, monkeypatch):
    folder = tmp_path / "data" / "mnist"
    original = make_idx(folder, gz=True)
    first = load("mnist", roots=[tmp_path / "data"], progress=False)
    assert_idx_equal(first, original)

    def refuse(path, *expected):
        raise AssertionError(f"decoded {path} although the cache is current")

    monkeypatch.setattr(idx_module, "read_idx", refuse)
    second = load("mnist", roots=[tmp_path / "data"], progress=False)  # from the cache
    assert torch.equal(second.train_x, first.train_x)

    changed = make_idx(folder, gz=True, n_train=30, seed=1)  # new size and mtime
    with pytest.raises(AssertionError, match="decoded"):
        load("mnist", roots=[tmp_path / "data"], progress=False)
    monkeypatch.undo()
    monkeypatch.setenv("PDNN_CACHE", str(tmp_path / "cache"))
    assert_idx_equal(load("mnist", roots=[tmp_path / "data"], progress=False), changed)
    assert len(list((tmp_path / "cache").glob("mnist-*"))) == 1  # the stale entry is gone

    # same size, only the mtime moves: still a miss
    labels = folder / "train-labels-idx1-ubyte.gz"
    labels.write_bytes(gzip.compress(idx_bytes((changed["train_y"] + 1) % 10)))
    os.utime(labels, ns=(labels.stat().st_atime_ns, labels.stat().st_mtime_ns + 10**9))
    assert torch.equal(load("mnist", roots=[tmp_path / "data"], progress=False).train_y,
                       ((changed["train_y"] + 1) % 10).long())

    # a change of permissions alone (the status-change time moves) is no change: still a hit
    entries = sorted(p.name for p in (tmp_path / "cache").glob("mnist-*"))
    labels.chmod(0o444)
    monkeypatch.setattr(idx_module, "read_idx", refuse)
    load("mnist", roots=[tmp_path / "data"], progress=False)
    assert sorted(p.name for p in (tmp_path / "cache").glob("mnist-*")) == entries


def test_killed_builds_of_an_older_source_are_removed_with_its_entry(tmp_path):
    """A build killed before the source changed left its staging folder (46 MB for Fashion-MNIST)
    for good: only the new entry's temporaries were looked for."""
    folder = tmp_path / "data" / "mnist"
    make_idx(folder, gz=True)
    entry = cache_module.cache_path(tmp_path / "cache", "mnist", sorted(folder.iterdir()), folder)
    entry.parent.mkdir(parents=True)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    killed = entry.parent / f"{temporary_prefix(entry).rsplit('.', 2)[0]}.{dead.stdout.strip()}.abc123.tmp"
    (killed / "train_x.bin").parent.mkdir()
    (killed / "train_x.bin").write_bytes(b"half an entry")
    live = entry.parent / f"{temporary_prefix(entry)}def456.tmp"  # this process's: a build under way
    live.mkdir()
    make_idx(folder, gz=True, n_train=30, seed=1)  # the source changes
    load("mnist", roots=[tmp_path / "data"], progress=False)
    assert not killed.exists() and live.exists()


def test_a_cache_path_needs_no_files_to_name_its_place(tmp_path):
    assert cache_module.cache_path(tmp_path, "demo", []).parent == tmp_path


def test_copies_linked_into_one_store_keep_their_own_entries(tmp_path, monkeypatch):
    """Copies whose files are links into one content store (git-annex, DVC) are two places."""
    monkeypatch.setenv("PDNN_CACHE", str(tmp_path / "cache"))
    big, small = make_idx(tmp_path / "store" / "big", gz=True, n_train=40), \
        make_idx(tmp_path / "store" / "small", gz=True, n_train=20, seed=1)
    for copy, source in (("a", "big"), ("b", "small")):
        (tmp_path / copy / "mnist").mkdir(parents=True)
        for f in sorted((tmp_path / "store" / source).iterdir()):  # into one flat store, as annex objects
            stored = f.rename(tmp_path / "store" / f"{source}-{f.name}")
            (tmp_path / copy / "mnist" / f.name).symlink_to(stored)
    for _ in range(2):
        assert_idx_equal(load("mnist", roots=[tmp_path / "a"], progress=False), big)
        assert_idx_equal(load("mnist", roots=[tmp_path / "b"], progress=False), small)
    assert len(list((tmp_path / "cache").glob("mnist-*"))) == 2


def test_a_file_added_to_a_folder_source_replaces_its_cache_entry(tmp_path):
    folder = tmp_path / "cifar10-jpeg"
    make_class_folders(folder / "train", 1, ".png", seed=0)
    make_class_folders(folder / "test", 1, ".png", seed=0)
    first = load("cifar10", roots=[tmp_path], cache_dir=tmp_path / "cache", progress=False)
    Image.fromarray(np.zeros((32, 32, 3), dtype=np.uint8)).save(folder / "train" / "cat" / "0001.png")
    second = load("cifar10", roots=[tmp_path], cache_dir=tmp_path / "cache", progress=False)
    assert len(second.train_y) == len(first.train_y) + 1
    assert len(list((tmp_path / "cache").glob("cifar10-*"))) == 1  # the entry of the old file list is gone


def _damage_truncate(entry: Path) -> str:
    images = entry / "train_x.bin"
    images.write_bytes(images.read_bytes()[:100])
    return "damaged.*train_x.bin holds 100 bytes"


def _damage_meta(entry: Path) -> str:
    (entry / "meta.json").write_text('{"format": 2, "shapes"')
    return "unreadable"


def _damage_label(entry: Path) -> str:
    labels = np.fromfile(entry / "test_y.bin", dtype=np.int64)
    labels[3] = (labels[3] + 1) % 10  # a valid class, so nothing else would notice
    labels.tofile(entry / "test_y.bin")
    return "damaged.*test_y.bin does not match its sha256"


def _old_format(entry: Path) -> str:
    meta = json.loads((entry / "meta.json").read_text())
    (entry / "meta.json").write_text(json.dumps({**meta, "format": 1}))
    return f"of format 1, not {cache_module.FORMAT}"


@pytest.mark.parametrize("damage", [_damage_truncate, _damage_meta, _damage_label, _old_format])
def test_damaged_or_old_cache_is_rebuilt(tmp_path, damage):
    original = make_idx(tmp_path / "mnist", gz=False)
    load("mnist", roots=[tmp_path], progress=False)
    (entry,) = (tmp_path / "cache").glob("mnist-*")
    with pytest.warns(UserWarning, match=damage(entry)):
        ds = load("mnist", roots=[tmp_path], progress=False)
    assert_idx_equal(ds, original)
    assert [p.name for p in (tmp_path / "cache").iterdir()] == [entry.name]  # replaced, no temp left
    assert_idx_equal(load("mnist", roots=[tmp_path], progress=False), original)  # and readable again


def test_cache_is_written_in_bounded_chunks_and_subset_copies_only_its_part(tmp_path, monkeypatch):
    as_dirs = tmp_path / "cifar10-jpeg"
    train = make_class_folders(as_dirs / "train", 3, ".png", seed=5)
    make_class_folders(as_dirs / "test", 1, ".png", seed=6)
    monkeypatch.setattr(images_module, "CHUNK", 7)  # 30 images: chunks of 7, 7, 7, 7, 2
    from pdnn.data import cache

    sizes = []
    add = cache.CacheWriter.add
    monkeypatch.setattr(cache.CacheWriter, "add",
                        lambda self, split, x, y: sizes.append(len(x)) or add(self, split, x, y))
    full = load("cifar10", roots=[tmp_path], progress=False)
    assert sizes == [7, 7, 7, 7, 2, 7, 3]
    for k in range(30):
        assert torch.equal(full.train_x[k], train[CIFAR_CLASSES[k % 10], k // 10])
    # statistics summed over chunks equal those of the whole split
    x = full.train_x.double() / 255
    assert torch.allclose(full.mean.double(), x.mean(dim=(0, 2, 3)), atol=1e-6)
    assert torch.allclose(full.std.double(), x.std(dim=(0, 2, 3), unbiased=False), atol=1e-6)
    small = load("cifar10", roots=[tmp_path], subset=4, progress=False)
    assert torch.equal(small.train_x, full.train_x[:4]) and torch.equal(small.test_y, full.test_y[:4])
    assert small.train_x.untyped_storage().nbytes() == 4 * 3 * 32 * 32  # a copy of the kept part only


def test_unwritable_cache_directory_warns_and_still_loads(tmp_path, monkeypatch):
    original = make_idx(tmp_path / "mnist", gz=False)
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    monkeypatch.setenv("PDNN_CACHE", str(blocker / "cache"))
    with pytest.warns(UserWarning, match="could not write the data cache"):
        assert_idx_equal(load("mnist", roots=[tmp_path], progress=False), original)


def test_a_cache_that_fills_up_warns_and_still_loads(tmp_path, monkeypatch):
    """A full cache disk is the cache's problem, never the run's: the entry is built privately."""
    import errno

    original = make_idx(tmp_path / "mnist", gz=False)
    monkeypatch.setenv("PDNN_CACHE", str(tmp_path / "cache"))
    add = cache_module.CacheWriter.add
    shared = []

    def full_in_the_cache(self, *args):
        if str(self.directory).startswith(str(tmp_path / "cache")):  # the shared staging folder, not the private one
            shared.append(self.directory)
            raise OSError(errno.ENOSPC, "No space left on device")
        return add(self, *args)

    monkeypatch.setattr(cache_module.CacheWriter, "add", full_in_the_cache)
    with pytest.warns(UserWarning, match="could not write the data cache.*No space left"):
        assert_idx_equal(load("mnist", roots=[tmp_path], progress=False), original)
    assert shared and not any((tmp_path / "cache").rglob("*.tmp"))  # its staging folder removed


def test_no_room_in_the_cache_nor_the_temporary_folder_is_said_with_both_places(tmp_path, monkeypatch, capsys):
    """Where the temporary folder is full too, the run ended in a bare "[Errno 28] No space left
    on device", naming neither place."""
    import errno

    make_idx(tmp_path / "mnist", gz=False)
    monkeypatch.setenv("PDNN_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()

    def full(self, *args):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(cache_module.CacheWriter, "add", full)
    with pytest.warns(UserWarning, match="could not write the data cache"), \
            pytest.raises(DataError, match=re.escape(f"no room to decode mnist in the temporary folder {tmp_path / 'tmp'} "
                                                     "(No space left on device), where it went because the data cache "
                                                     f"{tmp_path / 'cache'} could not be written ([Errno 28] No space left "
                                                     "on device); free space, or set PDNN_CACHE or TMPDIR")):
        load("mnist", roots=[tmp_path], progress=False)
    (tmp_path / "file").write_text("")  # a cache that cannot be made at all: said as it was (R196)
    monkeypatch.setenv("PDNN_CACHE", str(tmp_path / "file" / "cache"))
    with pytest.warns(UserWarning, match="could not write the data cache"), \
            pytest.raises(DataError, match=re.escape("could not be written ([Errno 20] Not a directory: ")):
        load("mnist", roots=[tmp_path], progress=False)
    monkeypatch.setenv("PDNN_CACHE", str(tmp_path / "cache"))
    assert not list((tmp_path / "tmp").iterdir()) and not any((tmp_path / "cache").rglob("*.tmp"))

    def full_then_broken(self, *args):  # the cache full, the temporary folder's disk failing: said as it is
        raise OSError(*((errno.ENOSPC, "No space left on device") if str(self.directory).startswith(
            str(tmp_path / "cache")) else (errno.EIO, "Input/output error")))

    monkeypatch.setattr(cache_module.CacheWriter, "add", full_then_broken)
    with pytest.warns(UserWarning, match="could not write the data cache"), \
            pytest.raises(OSError, match=r"^\[Errno 5\] Input/output error$"):
        load("mnist", roots=[tmp_path], progress=False)


def _a_damaged_entry(tmp_path, monkeypatch) -> tuple:
    """An IDX dataset and its cache entry, damaged: (the dataset as written, the entry's folder)."""
    original = make_idx(tmp_path / "mnist", gz=False)
    monkeypatch.setenv("PDNN_CACHE", str(tmp_path / "cache"))
    load("mnist", roots=[tmp_path], progress=False)
    (entry,) = [p for p in (tmp_path / "cache").iterdir() if p.is_dir()]
    (entry / "train_x.bin").write_bytes(b"damaged")
    return original, entry


def test_a_damaged_entry_that_cannot_be_moved_warns_and_still_loads(tmp_path, monkeypatch):
    """An entry in the way that this user may not move (another user's, in a shared folder with
    the sticky bit) had stopped the run ("Operation not permitted"); the entry built is read
    from where it was built, and nothing is left behind."""
    import errno

    original, entry = _a_damaged_entry(tmp_path, monkeypatch)
    rename = os.rename

    def not_permitted(source, target):
        if Path(source) == entry:  # setting the damaged entry aside
            raise PermissionError(errno.EPERM, "Operation not permitted")
        rename(source, target)

    monkeypatch.setattr(cache_module.os, "rename", not_permitted)
    with pytest.warns(UserWarning, match="rebuilding"), \
            pytest.warns(UserWarning, match="could not write the data cache.*Operation not permitted"):
        assert_idx_equal(load("mnist", roots=[tmp_path], progress=False), original)
    assert [p.name for p in (tmp_path / "cache").iterdir()] == [entry.name]  # (its staging folder removed)


def test_a_build_that_fails_leaves_nothing_in_the_cache(tmp_path):
    """A build that raises (a damaged source, Ctrl-C) removes its partial staging folder."""
    source = tmp_path / "source.bin"
    source.write_bytes(b"x")
    for error in (ValueError, KeyboardInterrupt):
        def build(writer, error=error):
            writer.add("train", np.zeros((100, 1, 2, 2), dtype=np.uint8), np.zeros(100))
            raise error("stopped")

        with pytest.raises(error):
            cache_module.cached("demo", [source], build, directory=tmp_path / "cache")
        assert not any((tmp_path / "cache").iterdir())


def test_two_builds_replacing_a_damaged_entry_at_once_keep_one_and_leave_nothing(tmp_path, monkeypatch):
    """The other build publishes between this one's two renames: its entry is kept, and the
    damaged entry set aside is removed."""
    import shutil

    original = make_idx(tmp_path / "mnist", gz=False)
    monkeypatch.setenv("PDNN_CACHE", str(tmp_path / "cache"))
    load("mnist", roots=[tmp_path], progress=False)
    (entry,) = [p for p in (tmp_path / "cache").iterdir() if p.is_dir()]
    shutil.copytree(entry, tmp_path / "theirs")  # what the other build will publish
    (entry / "train_x.bin").write_bytes(b"damaged")
    rename = os.rename

    def the_other_build_publishes_in_between(source, target):
        rename(source, target)
        if Path(source) == entry:  # this build has just set the damaged entry aside
            shutil.copytree(tmp_path / "theirs", entry)

    monkeypatch.setattr(cache_module.os, "rename", the_other_build_publishes_in_between)
    with pytest.warns(UserWarning, match="rebuilding"):
        assert_idx_equal(load("mnist", roots=[tmp_path], progress=False), original)
    assert [p.name for p in (tmp_path / "cache").iterdir()] == [entry.name]


def test_a_build_whose_damaged_entry_another_build_set_aside_publishes_its_own(tmp_path, monkeypatch):
    """The other build moves the damaged entry away between this one's failed rename and its
    own attempt to set the entry aside: this build publishes, and nothing is left behind."""
    import shutil

    original, entry = _a_damaged_entry(tmp_path, monkeypatch)
    rename = os.rename

    def the_other_build_sets_it_aside_first(source, target):
        try:
            rename(source, target)
        except OSError:
            if Path(target) == entry:  # this build's entry is blocked by the damaged one
                shutil.rmtree(entry)
            raise

    monkeypatch.setattr(cache_module.os, "rename", the_other_build_sets_it_aside_first)
    with pytest.warns(UserWarning, match="rebuilding"):
        assert_idx_equal(load("mnist", roots=[tmp_path], progress=False), original)
    assert [p.name for p in (tmp_path / "cache").iterdir()] == [entry.name]


def test_a_user_without_a_home_directory_loads_and_caches(tmp_path, monkeypatch):
    """A container's user with no home (no HOME, no passwd entry): the ~ root is skipped and the
    cache goes to the temporary folder."""
    from pathlib import Path as PathType

    def homeless(*args, **kwargs):
        raise RuntimeError("Could not determine home directory.")

    original = make_idx(tmp_path / "mnist", gz=False)
    monkeypatch.delenv("PDNN_CACHE", raising=False)
    monkeypatch.setattr(PathType, "home", classmethod(homeless))
    monkeypatch.setattr(PathType, "expanduser", lambda self: homeless() if str(self).startswith("~") else self)
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    assert "~" not in " ".join(map(str, data_roots([tmp_path])))
    assert_idx_equal(load("mnist", roots=[tmp_path], progress=False), original)
    assert list((tmp_path / "tmp").glob("pdnn-cache-*/mnist-*"))


# ---------------------------------------------------------------- CIFAR


def make_cifar_batches(root: Path, per_batch=3) -> tuple[torch.Tensor, torch.Tensor]:
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    xs, ys = [], []
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        data = rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8)
        labels = rng.integers(0, 10, per_batch).tolist()
        with open(folder / name, "wb") as f:
            pickle.dump({b"batch_label": name.encode(), b"data": data, b"labels": labels}, f, protocol=2)
        xs.append(torch.from_numpy(data).reshape(-1, 3, 32, 32))
        ys.append(torch.tensor(labels))
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({b"label_names": [c.encode() for c in CIFAR_CLASSES]}, f, protocol=2)
    return torch.cat(xs), torch.cat(ys)


def test_cifar_pickles_round_trip(tmp_path):
    x, y = make_cifar_batches(tmp_path)
    ds = load("cifar10", roots=[tmp_path], progress=False)
    assert ds.classes == CIFAR_CLASSES and ds.input_shape == (3, 32, 32)
    assert torch.equal(ds.train_x, x[:15]) and torch.equal(ds.test_x, x[15:])
    assert torch.equal(ds.train_y, y[:15]) and torch.equal(ds.test_y, y[15:])
    assert ds.augmentation == "cifar" and "batches" in ds.source


def test_cifar_pickles_with_empty_bytes_load(tmp_path):
    """Protocol 2 spells empty bytes (an empty batch label, an empty array's buffer) as a call
    of bytes(), which the restricted unpickler refused as not part of a CIFAR batch."""
    x, y = make_cifar_batches(tmp_path)
    batch = tmp_path / "cifar-10-batches-py" / "data_batch_1"
    batch.write_bytes(pickle.dumps({**pickle.loads(batch.read_bytes()), b"batch_label": b""}, protocol=2))
    with warnings.catch_warnings():
        warnings.simplefilter("error", ResourceWarning)  # every file it opened is closed
        ds = load("cifar10", roots=[tmp_path], progress=False)
    assert torch.equal(ds.train_x, x[:15]) and torch.equal(ds.train_y, y[:15])


def test_cifar_pickle_cannot_run_code(tmp_path):
    make_cifar_batches(tmp_path)

    class Evil:
        def __reduce__(self):
            return (os.system, ("echo owned",))

    (tmp_path / "cifar-10-batches-py" / "test_batch").write_bytes(pickle.dumps({b"data": Evil()}))
    with pytest.raises(DataError, match="test_batch.*refusing"):
        load("cifar10", roots=[tmp_path], progress=False)


def make_class_folders(split_dir: Path, per_class: int, suffix: str, seed: int) -> dict:
    """Images keyed by ``(class, index)``; PNG noise, or smooth JPEG-friendly colour fields."""
    rng = np.random.default_rng(seed)
    made = {}
    for cls in CIFAR_CLASSES:
        (split_dir / cls).mkdir(parents=True)
        for i in range(per_class):
            if suffix == ".png":
                pixels = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
            else:
                pixels = np.broadcast_to(rng.integers(30, 220, 3, dtype=np.uint8), (32, 32, 3)).copy()
            Image.fromarray(pixels).save(split_dir / cls / f"{i:04d}{suffix}")
            made[cls, i] = torch.from_numpy(pixels).permute(2, 0, 1)
    return made


def zip_folder(folder: Path, target: Path) -> None:
    with zipfile.ZipFile(target, "w", zipfile.ZIP_STORED) as zf:
        for path in sorted(folder.rglob("*")):
            zf.write(path, path.relative_to(folder).as_posix())


def test_class_folders_png_pixel_exact_in_dir_and_zip(tmp_path):
    as_dirs = tmp_path / "dirs" / "cifar10-jpeg"
    train = make_class_folders(as_dirs / "train", 3, ".png", seed=1)
    test = make_class_folders(as_dirs / "test", 2, ".png", seed=2)
    as_zips = tmp_path / "zips" / "cifar10-jpeg"
    as_zips.mkdir(parents=True)
    zip_folder(as_dirs / "train", as_zips / "train.zip")
    zip_folder(as_dirs / "test", as_zips / "test.zip")

    from_dirs = load("cifar10", roots=[tmp_path / "dirs"], progress=False)
    from_zips = load("cifar10", roots=[tmp_path / "zips"], progress=False)
    for ds in (from_dirs, from_zips):
        assert ds.classes == CIFAR_CLASSES
        assert ds.train_x.shape == (30, 3, 32, 32) and ds.test_x.shape == (20, 3, 32, 32)
        # interleaved by class: example k is file k // 10 of class k % 10
        assert ds.train_y.tolist() == [k % 10 for k in range(30)]
        for k in range(30):
            assert torch.equal(ds.train_x[k], train[CIFAR_CLASSES[k % 10], k // 10])
        for k in range(20):
            assert torch.equal(ds.test_x[k], test[CIFAR_CLASSES[k % 10], k // 10])
    assert torch.equal(from_dirs.train_x, from_zips.train_x)


def test_class_folders_through_links_and_files_left_out_are_said(tmp_path, monkeypatch):
    """Class folders that are links were not seen ("no images found"), and a file of a suffix no
    image has was left out in silence (a shorter dataset)."""
    monkeypatch.setenv("PDNN_CACHE", str(tmp_path / "cache"))
    store, root = tmp_path / "store", tmp_path / "root" / "cifar10-jpeg"
    train = make_class_folders(store / "train", 2, ".png", seed=1)
    make_class_folders(store / "test", 1, ".png", seed=2)
    for split in ("train", "test"):
        (root / split).mkdir(parents=True)
        for cls in CIFAR_CLASSES:
            (root / split / cls).symlink_to(store / split / cls, target_is_directory=True)
    (store / "train" / "cat" / "0002.jfif").write_bytes((store / "train" / "cat" / "0000.png").read_bytes())
    (store / "train" / "cat" / "notes.txt").write_text("not an image")
    (store / "train" / "cat" / "loop").symlink_to(store / "train" / "cat", target_is_directory=True)  # not walked
    with pytest.warns(UserWarning, match=r"1 files whose suffix is no image's are left out \(first 'cat/notes.txt'\)"):
        ds = load("cifar10", roots=[tmp_path / "root"], progress=False)
    assert len(ds.train_y) == 21 and torch.equal(ds.train_x[CIFAR_CLASSES.index("cat")], train["cat", 0])


def test_a_link_to_nothing_among_the_images_is_an_error(tmp_path, monkeypatch):
    """A class folder's link whose target had moved was passed over in silence: the dataset came
    out an image short (R163)."""
    monkeypatch.setenv("PDNN_CACHE", str(tmp_path / "cache"))
    folder = tmp_path / "root" / "cifar10-jpeg"
    make_class_folders(folder / "train", 2, ".png", seed=1)
    make_class_folders(folder / "test", 1, ".png", seed=2)
    link = folder / "train" / "cat" / "0002.png"
    for name in (".#0002.png", "notes.txt"):  # an editor's lock file, and no image: passed over as before (R166)
        (folder / "train" / "cat" / name).symlink_to(tmp_path / "nowhere")
    assert len(load("cifar10", roots=[tmp_path / "root"], cache_dir=tmp_path / "before", progress=False).train_y) == 20
    link.symlink_to(tmp_path / "moved.png")
    with pytest.raises(DataError, match=f"^{re.escape(str(link))}: a link to {re.escape(str(tmp_path / 'moved.png'))}, "
                                        r"which does not exist; expected a file \(repair the link, or remove it"):
        load("cifar10", roots=[tmp_path / "root"], progress=False)
    assert not (tmp_path / "cache").exists() or not any((tmp_path / "cache").rglob("*.bin"))


def test_class_folders_jpeg_zip_decodes_close(tmp_path):
    staging, root = tmp_path / "staging", tmp_path / "root" / "cifar10-jpeg"
    root.mkdir(parents=True)
    train = make_class_folders(staging / "train", 1, ".jpg", seed=3)
    make_class_folders(staging / "test", 1, ".jpg", seed=4)
    zip_folder(staging / "train", root / "train.zip")
    zip_folder(staging / "test", root / "test.zip")
    ds = load("cifar10", roots=[tmp_path / "root"], progress=False)
    assert ds.train_x.dtype == torch.uint8 and ds.train_x.shape == (10, 3, 32, 32)
    expected = torch.stack([train[c, 0] for c in CIFAR_CLASSES])
    assert (ds.train_x.int() - expected.int()).abs().max() <= 8  # JPEG is lossy
    assert "JPEG" in ds.source


def test_class_folders_with_wrong_image_size_name_the_entry(tmp_path):
    folder = tmp_path / "cifar10-jpeg"
    make_class_folders(folder / "train", 1, ".png", seed=0)
    make_class_folders(folder / "test", 1, ".png", seed=0)
    Image.new("RGB", (31, 32)).save(folder / "test" / "dog" / "0000.png")
    with pytest.raises(DataError, match=r"dog/0000\.png.*31x32.*expected 32x32"):
        load("cifar10", roots=[tmp_path], progress=False)


def test_a_zip_that_is_a_folder_or_a_folder_that_is_a_file_is_named(tmp_path):
    """A folder named train.zip failed with the cache stamp's IsADirectoryError; a file named train
    beside a test/ folder was "not a readable zip file" (R150)."""
    folder = tmp_path / "cifar10-jpeg"
    (folder / "train.zip").mkdir(parents=True)
    (folder / "test.zip").write_bytes(b"x")
    with pytest.raises(DataError, match=r"cifar10-jpeg/train\.zip: is a folder; expected a zip file"):
        load("cifar10", roots=[tmp_path], cache_dir=tmp_path / "cache", progress=False)
    for path in (folder / "train.zip", folder / "test.zip"):
        path.rmdir() if path.is_dir() else path.unlink()
    make_class_folders(folder / "test", 1, ".png", seed=0)
    (folder / "train").write_bytes(b"x")
    with pytest.raises(DataError, match=r"cifar10-jpeg/train: is a file; expected a folder of class folders"):
        load("cifar10", roots=[tmp_path], cache_dir=tmp_path / "cache", progress=False)


def test_an_empty_class_folder_is_named(tmp_path):
    """A class folder without an image is no class: the error names it, not two lists of ten to compare."""
    folder = tmp_path / "jpeg" / "cifar10-jpeg"
    make_class_folders(folder / "train", 1, ".png", seed=0)
    make_class_folders(folder / "test", 1, ".png", seed=0)
    (folder / "test" / "cat" / "0000.png").unlink()
    with pytest.raises(DataError, match=r"class folders differ: .* \(only in train: cat; a folder with no image is "
                                        r"no class\)"):
        load("cifar10", roots=[tmp_path / "jpeg"], cache_dir=tmp_path / "cache", progress=False)
    for split in ("train", "test"):
        (folder / split / "cat" / "0000.png").unlink(missing_ok=True)
    with pytest.raises(DataError, match=r"in this order \(only in cifar10: cat\)"):
        load("cifar10", roots=[tmp_path / "jpeg"], cache_dir=tmp_path / "cache", progress=False)


def test_class_folders_or_batch_names_other_than_cifar10s_are_refused(tmp_path):
    folder = tmp_path / "jpeg" / "cifar10-jpeg"
    make_class_folders(folder / "train", 1, ".png", seed=0)
    make_class_folders(folder / "test", 1, ".png", seed=0)
    for split in ("train", "test"):  # a renamed class would be sorted first and shift every label
        (folder / split / "truck").rename(folder / split / "Truck")
    with pytest.raises(DataError, match="classes Truck, airplane, .*; cifar10 expects exactly airplane, "
                                        r"automobile, .*, truck, in this order \(only in the data: Truck; only in "
                                        r"cifar10: truck\)"):
        load("cifar10", roots=[tmp_path / "jpeg"], cache_dir=tmp_path / "cache", progress=False)
    make_cifar_batches(tmp_path / "batches")
    meta = tmp_path / "batches" / "cifar-10-batches-py" / "batches.meta"
    meta.write_bytes(pickle.dumps({b"label_names": [c.encode() for c in [*CIFAR_CLASSES[1:], CIFAR_CLASSES[0]]]}))
    with pytest.raises(DataError, match="batches.meta: label_names automobile, .*; expected CIFAR-10's airplane"):
        load("cifar10", roots=[tmp_path / "batches"], cache_dir=tmp_path / "cache", progress=False)


def test_cifar_batch_labels_must_be_integers_in_range(tmp_path):
    make_cifar_batches(tmp_path)
    batch = tmp_path / "cifar-10-batches-py" / "data_batch_2"
    content = pickle.loads(batch.read_bytes())
    for labels, message in (([2.9, 0.5, 7.99], r"labels of type float64 \(first 2\.9\); expected integers"),
                            ([1, 12, 3], r"label 12 out of range; expected 0\.\.9")):
        batch.write_bytes(pickle.dumps({**content, b"labels": labels}, protocol=2))
        with pytest.raises(DataError, match=f"data_batch_2: {message}"):
            load("cifar10", roots=[tmp_path], cache_dir=tmp_path / "cache", progress=False)


def test_class_folder_zip_entries_spelt_with_a_leading_dot_are_read(tmp_path):
    """'./cat/0000.png' was listed, then read as 'cat/0000.png', which the zip does not hold."""
    staging, root = tmp_path / "staging", tmp_path / "root" / "cifar10-jpeg"
    root.mkdir(parents=True)
    train = make_class_folders(staging / "train", 1, ".png", seed=0)
    make_class_folders(staging / "test", 1, ".png", seed=1)
    for split in ("train", "test"):
        with zipfile.ZipFile(root / f"{split}.zip", "w") as zf:
            for path in sorted((staging / split).rglob("*.png")):
                zf.writestr(f"./{path.relative_to(staging / split).as_posix()}", path.read_bytes())  # as stored
    ds = load("cifar10", roots=[tmp_path / "root"], progress=False)
    assert torch.equal(ds.train_x, torch.stack([train[c, 0] for c in CIFAR_CLASSES]))


def test_an_empty_split_is_refused_when_the_data_is_read(tmp_path):
    """An empty test split loaded, and training failed after its first epoch, with a traceback."""
    for split, n_train, n_test in (("test", 20, 0), ("training", 0, 8)):
        folder = tmp_path / split / "mnist"
        make_idx(folder, gz=True, n_train=n_train, n_test=n_test)
        with pytest.raises(DataError, match=f"{re.escape(str(folder))} \\(IDX\\): the {split} split holds no images"):
            load("mnist", roots=[tmp_path / split], progress=False)


def test_class_folders_zip_with_a_damaged_entry_names_it(tmp_path):
    staging, root = tmp_path / "staging", tmp_path / "root" / "cifar10-jpeg"
    root.mkdir(parents=True)
    make_class_folders(staging / "train", 1, ".png", seed=0)
    make_class_folders(staging / "test", 1, ".png", seed=0)
    zip_folder(staging / "train", root / "train.zip")
    zip_folder(staging / "test", root / "test.zip")
    corrupt_zip_member(root / "train.zip", "cat/0000.png")
    with pytest.raises(DataError, match=r"train\.zip: cannot read or decode 'cat/0000\.png' \(Bad CRC-32"):
        load("cifar10", roots=[tmp_path / "root"], cache_dir=tmp_path / "cache", progress=False)


def test_a_class_folder_file_that_is_no_image_is_named_without_a_memory_address(tmp_path):
    """Pillow's message named the buffer it was given: '(cannot identify image file <_io.BytesIO
    object at 0x7f...>)' (R163)."""
    folder = tmp_path / "root" / "cifar10-jpeg"
    make_class_folders(folder / "train", 1, ".png", seed=0)
    make_class_folders(folder / "test", 1, ".png", seed=0)
    (folder / "train" / "cat" / "0000.png").write_bytes(b"")
    with pytest.raises(DataError, match=r"cannot read or decode 'cat/0000\.png' \(not an image format Pillow "
                                        r"recognises\)$"):
        load("cifar10", roots=[tmp_path / "root"], cache_dir=tmp_path / "cache", progress=False)


# ---------------------------------------------------------------- where data is found


def test_missing_dataset_lists_every_place_and_how_to_get_it(tmp_path):
    partial = tmp_path / "b" / "mnist"
    make_idx(partial, gz=True)
    (partial / "t10k-labels-idx1-ubyte.gz").unlink()
    (tmp_path / "a").mkdir()
    with pytest.raises(DatasetNotFound) as err:
        load("mnist", roots=[tmp_path / "a", tmp_path / "b"], progress=False)
    message = str(err.value)
    assert isinstance(err.value, FileNotFoundError)
    assert f"{tmp_path / 'a' / 'mnist'}: no such folder" in message
    assert f"{partial}: missing t10k-labels-idx1-ubyte[.gz]" in message
    assert "/usr/share/datasets/mnist" in message and "--data-dir" in message

    with pytest.raises(DatasetNotFound) as err:
        load("cifar10", roots=[tmp_path / "a"], progress=False)
    assert "cifar-10-batches-py" in str(err.value) and "cifar10-jpeg" in str(err.value)
    assert "cifar-10-python.tar.gz" in str(err.value)
    with pytest.raises(DatasetNotFound, match="apt-get install dataset-fashion-mnist"):
        from pdnn.data.catalog import find
        find("fashion-mnist", [tmp_path / "a"])
    begun = tmp_path / "c" / "cifar10-jpeg"  # a copy begun: what it lacks is named
    begun.mkdir(parents=True)
    (begun / "train.zip").write_bytes(b"")
    with pytest.raises(DatasetNotFound) as err:
        load("cifar10", roots=[tmp_path / "c"], progress=False)
    assert f"{begun}: neither train.zip and test.zip nor train/ and test/ (only train.zip)" in str(err.value)
    (begun / "test.zip").write_bytes(b"")  # the copy's own folder given as the root: its parent is asked for
    with pytest.raises(DatasetNotFound) as err:
        load("cifar10", roots=[begun], progress=False)
    assert (f"{begun / 'cifar10-jpeg'}: no such folder; {begun} holds a class-folder copy itself, which is read from "
            f"ROOT/cifar10-jpeg/: give its parent, {begun.parent}") in str(err.value)
    elsewhere = begun.rename(tmp_path / "c" / "mycifar")  # under another name, its parent would not do (R196)
    with pytest.raises(DatasetNotFound) as err:
        load("cifar10", roots=[elsewhere], progress=False)
    assert (f"{elsewhere} holds a class-folder copy itself, which is read from ROOT/cifar10-jpeg/: move its two halves "
            f"into {elsewhere / 'cifar10-jpeg'}/") in str(err.value)
    (elsewhere / "test.zip").unlink()
    (elsewhere / "test").mkdir()  # (an empty test/ beside train.zip is no copy)
    with pytest.raises(DatasetNotFound) as err:
        load("cifar10", roots=[elsewhere], progress=False)
    assert "holds a class-folder copy itself" not in str(err.value)


def test_data_roots_order(tmp_path, monkeypatch):
    c1, c2, e1, e2 = (tmp_path / name for name in ("c1", "c2", "e1", "e2"))
    for folder in (c1, c2, e1, e2):
        folder.mkdir()
    monkeypatch.setenv("PDNN_DATA", f"{e1}::{e2}:")
    roots = data_roots(None)
    assert roots[:2] == [e1, e2] and Path("/usr/share/datasets") in roots
    roots = data_roots([str(c1), c2])
    assert roots[:4] == [c1, c2, e1, e2]
    assert data_roots(str(c1))[0] == c1
    assert len(data_roots([e1, e1])) == len(set(data_roots([e1, e1])))


def test_a_root_that_is_not_a_folder_is_named_not_passed_over(tmp_path, monkeypatch):
    make_idx(tmp_path / "data" / "mnist", gz=True)
    afile = tmp_path / "afile"
    afile.write_text("not a folder")
    for root, why in ((afile, "is a file"), (tmp_path / "typo", "does not exist")):
        with pytest.raises(UsageError, match=f"a data root, '{root}', {why}"):
            load("mnist", roots=[root, tmp_path / "data"], progress=False)
    monkeypatch.setenv("PDNN_DATA", f"{afile}:{tmp_path / 'data'}")
    with pytest.raises(UsageError, match=f"an entry of \\$PDNN_DATA, '{afile}', is a file"):
        load("mnist", progress=False)
    # one variable may serve machines that mount different folders: a missing entry is only warned about
    monkeypatch.setenv("PDNN_DATA", f"{tmp_path / 'typo'}:{tmp_path / 'data'}")
    with pytest.warns(UserWarning, match=f"'{tmp_path / 'typo'}', does not exist; skipped"):
        assert load("mnist", progress=False).num_classes == 10


def test_an_incomplete_copy_passed_over_is_named(tmp_path, monkeypatch):
    """A --data-dir whose copy lacked one file was passed over for the next root in silence."""
    monkeypatch.setenv("PDNN_CACHE", str(tmp_path / "cache"))
    make_idx(tmp_path / "partial" / "mnist", gz=True, seed=1)
    (tmp_path / "partial" / "mnist" / f"{IDX_NAMES[3]}.gz").unlink()
    whole = make_idx(tmp_path / "whole" / "mnist", gz=True, seed=2)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PDNN_DATA", f"partial:{tmp_path / 'whole'}")  # the same root again, spelled otherwise
    with pytest.warns(UserWarning, match=rf"passed over the incomplete {re.escape(str(tmp_path / 'partial'))}/mnist "
                                         rf"\([^;]*{IDX_NAMES[3]}[^;]*\) and read {re.escape(str(tmp_path / 'whole'))}"):
        assert_idx_equal(load("mnist", roots=[tmp_path / "partial"], progress=False), whole)


def test_a_root_that_is_the_dataset_s_own_folder_is_named_not_passed_over_in_silence(tmp_path, monkeypatch):
    """``--data-dir .../fashion-mnist`` (or ``.../cifar10-jpeg``) is read from ROOT/<folder>/, so it
    was passed over, with no word, for the next root that holds the dataset (R215 D3). MNIST's and
    Fashion-MNIST's files have the same names: a root is told to be an IDX dataset's folder by its
    name alone, never advised to move another dataset's files (R217 D1)."""
    monkeypatch.setenv("PDNN_CACHE", str(tmp_path / "cache"))
    given = tmp_path / "given" / "mnist"
    make_idx(given, gz=True, seed=1)
    whole = make_idx(tmp_path / "whole" / "mnist", gz=True, seed=2)
    said = f"{given} holds the IDX files itself, which is read from ROOT/mnist/: give its parent, {given.parent}"
    with pytest.warns(UserWarning, match=re.escape(f"dataset 'mnist': read {tmp_path / 'whole' / 'mnist'} (IDX); "
                                                   f"{said}")):
        assert_idx_equal(load("mnist", roots=[given, tmp_path / "whole"], progress=False), whole)
    with pytest.raises(DatasetNotFound, match=re.escape(f"{given / 'mnist'}: no such folder; {said}")):
        load("mnist", roots=[given], progress=False)
    make_idx(tmp_path / "fm" / "fashion-mnist", gz=True, seed=3)  # another IDX dataset's folder, with its files
    make_idx(tmp_path / "mine", gz=True, seed=4)  # a folder named otherwise: whose files, the names do not say
    (tmp_path / "link").symlink_to(tmp_path / "whole" / "mnist")  # a link to the very copy read
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for root in (tmp_path / "fm" / "fashion-mnist", tmp_path / "mine", tmp_path / "link"):
            assert_idx_equal(load("mnist", roots=[root, tmp_path / "whole"], progress=False), whole)
        # the root read, or one after it, is not named
        assert_idx_equal(load("mnist", roots=[tmp_path / "whole", given], progress=False), whole)
    jpeg = tmp_path / "c" / "cifar10-jpeg"
    jpeg.mkdir(parents=True)
    for half in ("train.zip", "test.zip"):
        (jpeg / half).write_bytes(b"")
    make_cifar_batches(tmp_path / "canonical")
    make_cifar_batches(tmp_path / "b")
    for root, said in ((jpeg, f"{jpeg} holds a class-folder copy itself, which is read from ROOT/cifar10-jpeg/: give "
                              f"its parent, {jpeg.parent}"),
                       (tmp_path / "b" / "cifar-10-batches-py", f"{tmp_path / 'b' / 'cifar-10-batches-py'} holds the "
                                                                "python batches itself, which is read from "
                                                                f"ROOT/cifar-10-batches-py/: give its parent, "
                                                                f"{tmp_path / 'b'}")):
        with pytest.warns(UserWarning, match=re.escape(said)):
            load("cifar10", roots=[root, tmp_path / "canonical"], progress=False)
    for half in ("train", "test"):  # empty halves, or another dataset's classes, are no CIFAR-10 copy (R218)
        (tmp_path / "empty" / half).mkdir(parents=True)
        for animal in ("cat", "dog"):
            (tmp_path / "dogs-vs-cats" / half / animal).mkdir(parents=True)
    (tmp_path / "unreadable" / "train").mkdir(parents=True)
    (tmp_path / "unreadable" / "test").mkdir()
    scandir = os.scandir

    def refused(path):  # (a folder of another user's, which root reads regardless)
        if Path(path).parent.name == "unreadable":
            raise PermissionError(13, "Permission denied", str(path))
        return scandir(path)

    monkeypatch.setattr(os, "scandir", refused)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for root in ("empty", "dogs-vs-cats", "unreadable"):  # (one that cannot be read is passed over, as before)
            load("cifar10", roots=[tmp_path / root, tmp_path / "canonical"], progress=False)
    monkeypatch.undo()
    monkeypatch.setenv("PDNN_CACHE", str(tmp_path / "cache"))
    (tmp_path / "named").mkdir()  # a link that bears the folder's name, to a folder named otherwise
    (tmp_path / "given" / "mnist").rename(tmp_path / "given" / "mnist-v2")
    (tmp_path / "named" / "mnist").symlink_to(tmp_path / "given" / "mnist-v2", target_is_directory=True)
    with pytest.warns(UserWarning, match=re.escape(f"{tmp_path / 'named' / 'mnist'} holds the IDX files itself, which "
                                                   f"is read from ROOT/mnist/: give its parent, {tmp_path / 'named'}")):
        load("mnist", roots=[tmp_path / "named" / "mnist", tmp_path / "whole"], progress=False)


def test_a_root_spelled_through_a_link_and_dot_dot_is_the_folder_the_system_opens(tmp_path, monkeypatch):
    """Made absolute by dropping "lnk/.." as text, the root named another folder than the one opened."""
    monkeypatch.setenv("PDNN_CACHE", str(tmp_path / "cache"))
    data = make_idx(tmp_path / "elsewhere" / "data" / "mnist", gz=True)
    (tmp_path / "elsewhere" / "sub").mkdir()
    (tmp_path / "cwd").mkdir()
    (tmp_path / "cwd" / "lnk").symlink_to(tmp_path / "elsewhere" / "sub", target_is_directory=True)
    monkeypatch.chdir(tmp_path / "cwd")
    assert_idx_equal(load("mnist", roots=["lnk/../data"], progress=False), data)


def test_pdnn_data_is_searched_and_data_dir_comes_first(tmp_path, monkeypatch):
    from_env = make_idx(tmp_path / "env" / "mnist", gz=True, seed=1)
    from_cli = make_idx(tmp_path / "cli" / "mnist", gz=False, seed=2)
    monkeypatch.setenv("PDNN_DATA", f"{tmp_path / 'nothing'}:{tmp_path / 'env'}")
    assert_idx_equal(load("mnist", progress=False), from_env)
    assert_idx_equal(load("mnist", roots=[str(tmp_path / "cli")], progress=False), from_cli)


# ---------------------------------------------------------------- subset, normalisation, demo


def test_subset_keeps_the_first_examples(tmp_path):
    data = make_idx(tmp_path / "mnist", gz=False)
    full = load("mnist", roots=[tmp_path], progress=False)
    ds = load("mnist", roots=[tmp_path], subset=5, progress=False)
    assert len(ds.train_x) == len(ds.train_y) == len(ds.test_x) == len(ds.test_y) == 5
    assert torch.equal(ds.train_x[:, 0], data["train_x"][:5])
    assert torch.equal(ds.mean, full.mean)  # statistics of the full training split
    assert len(load("mnist", roots=[tmp_path], subset=10**6, progress=False).train_x) == 20
    with pytest.raises(ValueError, match="subset"):
        load("mnist", roots=[tmp_path], subset=0)


def test_normalize_gives_zero_mean_unit_std_on_train(tmp_path):
    make_cifar_batches(tmp_path)
    for ds in (load("cifar10", roots=[tmp_path], progress=False), load("demo", progress=False)):
        x = ds.normalize(ds.train_x)
        assert x.dtype == torch.float32 and x.shape == ds.train_x.shape
        assert ds.mean.shape == ds.std.shape == (ds.input_shape[0],)
        assert torch.allclose(x.mean(dim=(0, 2, 3)), torch.zeros(ds.input_shape[0]), atol=1e-4)
        assert torch.allclose(x.std(dim=(0, 2, 3)), torch.ones(ds.input_shape[0]), atol=1e-3)
    with pytest.raises(TypeError, match="uint8"):
        ds.normalize(ds.train_x.float())


def test_embedded_demo(tmp_path):
    ds = load("demo", progress=False)
    assert (len(ds.train_y), len(ds.test_y), ds.num_classes) == (3000, 1000, 10)
    assert ds.input_shape == INPUT_SHAPES["demo"] == describe("demo")["input_shape"]
    assert set(ds.train_y.tolist()) == set(range(10))
    moved = ds.to("cpu")
    assert isinstance(moved, Dataset) and moved.train_x.device.type == "cpu"
    embedded = Path(images_module.__file__).parent / "embedded"
    assert sum(f.stat().st_size for f in embedded.glob("*.gz")) < 2.5e6
    assert (embedded / "README.md").read_text().count("MIT") >= 1


def test_describe_reads_no_data():
    assert DATASETS == ("demo", "fashion-mnist", "mnist", "cifar10", "celeba")
    for name in DATASETS:
        classes = 1 if name == "celeba" else 10  # CelebA images carry no class here
        assert describe(name) == {"input_shape": INPUT_SHAPES[name], "num_classes": classes}
    with pytest.raises(ValueError, match="unknown dataset 'imagenet'"):
        describe("imagenet")


# ---------------------------------------------------------------- augmentation


def _batch(dtype=torch.uint8, n=64):
    x = torch.randint(0, 256, (n, 3, 32, 32), generator=torch.Generator().manual_seed(0))
    return x.to(dtype)


@pytest.mark.parametrize("dtype", [torch.uint8, torch.float32])
def test_augment_keeps_shape_dtype_and_is_reproducible(dtype):
    x = _batch(dtype)
    a = augment(x, "cifar", torch.Generator().manual_seed(1))
    b = augment(x, "cifar", torch.Generator().manual_seed(1))
    c = augment(x, "cifar", torch.Generator().manual_seed(2))
    assert a.shape == x.shape and a.dtype == dtype
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert torch.equal(x, _batch(dtype))  # input untouched
    assert augment(x, "none", None) is x


def test_augment_flip_is_exact():
    x = _batch()
    out = augment(x, "cifar", torch.Generator().manual_seed(0), pad=0)
    flipped = torch.tensor([torch.equal(o, torch.flip(i, [-1])) for o, i in zip(out, x)])
    same = torch.tensor([torch.equal(o, i) for o, i in zip(out, x)])
    assert bool((flipped | same).all()) and 10 < int(flipped.sum()) < 54


@pytest.mark.parametrize("padding, mode", [("reflect", "reflect"), ("zero", "constant")])
def test_augment_crop_is_a_window_of_the_padded_image(padding, mode):
    x = _batch(torch.float32, n=16)
    out = augment(x, "cifar", torch.Generator().manual_seed(3), padding=padding)
    padded = F.pad(x, (4, 4, 4, 4), mode=mode)
    for o, p in zip(out, padded):
        windows = [p[:, dy:dy + 32, dx:dx + 32] for dy in range(9) for dx in range(9)]
        assert any(torch.equal(o, w) or torch.equal(o, torch.flip(w, [-1])) for w in windows)


def test_augment_rejects_bad_arguments():
    x = _batch()
    with pytest.raises(ValueError, match="unknown augmentation 'rotate'"):
        augment(x, "rotate", torch.Generator())
    with pytest.raises(ValueError, match="explicit torch.Generator"):
        augment(x, "cifar", None)
    with pytest.raises(ValueError, match="unknown padding"):
        augment(x, "cifar", torch.Generator(), padding="edge")
    for pad in (-1, 1.5):
        with pytest.raises(ValueError, match=f"pad {pad}: expected a whole number of pixels >= 0"):
            augment(x, "cifar", torch.Generator(), pad=pad)
    if torch.cuda.is_available():
        with pytest.raises(ValueError, match="generator is on cpu"):
            augment(x.cuda(), "cifar", torch.Generator())


def _same_times(folder: Path, ns: int = 10**9) -> None:
    for f in folder.iterdir():
        os.utime(f, ns=(ns, ns), follow_symlinks=False)


def test_another_copy_with_the_same_sizes_and_times_is_decoded_afresh(tmp_path, monkeypatch):
    """A link aimed at another version, or a folder replaced by a copy that kept its timestamps
    (cp -a, a Nix store's mtime of 1), had been served the old copy's images from the cache."""
    store = {version: make_idx(tmp_path / "store" / version / "mnist", gz=True, seed=seed)
             for version, seed in (("v1", 1), ("v2", 2))}
    for version in store:
        _same_times(tmp_path / "store" / version / "mnist")
    (tmp_path / "root").mkdir()
    current = tmp_path / "root" / "mnist"
    for version in ("v1", "v2", "v1"):  # a `current -> vN` link, retargeted
        current.unlink(missing_ok=True)
        current.symlink_to(tmp_path / "store" / version / "mnist")
        assert_idx_equal(load("mnist", roots=[tmp_path / "root"], progress=False), store[version])
    copy = tmp_path / "copy" / "mnist"
    for version in ("v1", "v2"):  # the folder replaced by a copy that kept the timestamps
        if copy.exists():
            for f in copy.iterdir():
                f.unlink()
        copy.mkdir(parents=True, exist_ok=True)
        for f in (tmp_path / "store" / version / "mnist").iterdir():
            (copy / f.name).write_bytes(f.read_bytes())
        _same_times(copy)
        assert_idx_equal(load("mnist", roots=[tmp_path / "copy"], progress=False), store[version])


def test_a_place_reached_through_link_dot_dot_is_its_own(tmp_path):
    """``E/L/..`` with L a link to D/sub is D, not E: they had shared one cache place."""
    d, e = make_idx(tmp_path / "D" / "mnist", gz=True, seed=1), make_idx(tmp_path / "E" / "mnist", gz=True, seed=2)
    (tmp_path / "D" / "sub").mkdir()
    (tmp_path / "E" / "L").symlink_to(tmp_path / "D" / "sub")
    for folder in (tmp_path / "D" / "mnist", tmp_path / "E" / "mnist"):
        _same_times(folder)
    for _ in range(2):
        assert_idx_equal(load("mnist", roots=[tmp_path / "E" / "L" / ".."], progress=False), d)
        assert_idx_equal(load("mnist", roots=[tmp_path / "E"], progress=False), e)
    assert len(list((tmp_path / "cache").glob("mnist-*"))) == 2  # (they had evicted each other)


@pytest.mark.parametrize("edit, why", [
    (lambda m: {**m, "labels_sha256": []}, "malformed"),
    (lambda m: {**m, "labels_sha256": {}}, "malformed"),  # (the label check had been skipped)
    (lambda m: {**m, "shapes": {**m["shapes"], "train_x": [20.0, 1, 28, 28]}}, "malformed"),
    (lambda m: {**m, "mean": [0.9, 0.1]}, "malformed"),
    (lambda m: {**m, "classes": "0123456789"}, "malformed")])
def test_a_cache_entry_whose_record_is_malformed_is_rebuilt(tmp_path, edit, why):
    original = make_idx(tmp_path / "mnist", gz=False)
    load("mnist", roots=[tmp_path], progress=False)
    (entry,) = (tmp_path / "cache").glob("mnist-*")
    (entry / "meta.json").write_text(json.dumps(edit(json.loads((entry / "meta.json").read_text()))))
    with pytest.warns(UserWarning, match=why):
        assert_idx_equal(load("mnist", roots=[tmp_path], progress=False), original)


def test_a_damaged_cifar_pickle_is_named_whatever_it_raises(tmp_path):
    make_cifar_batches(tmp_path)
    batch = tmp_path / "cifar-10-batches-py" / "data_batch_1"
    data = batch.read_bytes()
    assert b"latin1" in data
    batch.write_bytes(data.replace(b"latin1", b"l=tin1", 1))  # a bit flip in the encoding's name: LookupError
    with pytest.raises(DataError, match=r"data_batch_1: not a readable CIFAR batch pickle \(LookupError"):
        load("cifar10", roots=[tmp_path], progress=False)


def test_a_16_bit_image_is_refused_not_clipped_to_white(tmp_path):
    folder = tmp_path / "cifar10-jpeg"
    make_class_folders(folder / "train", 1, ".png", seed=0)
    make_class_folders(folder / "test", 1, ".png", seed=0)
    wide = (np.arange(32 * 32).reshape(32, 32) * 60).astype(np.uint16)
    Image.fromarray(wide).save(folder / "train" / "cat" / "0009.png")
    with pytest.raises(DataError, match=r"'cat/0009.png' has I;16 pixels, not 8-bit ones"):
        load("cifar10", roots=[tmp_path], progress=False)
