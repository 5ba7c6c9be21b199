"""pdnn.io: atomic writes keep the old file on failure, and new files get the umask's permissions."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import textwrap

import matplotlib
import numpy as np
import pytest
import torch

from pdnn.data import cache
from pdnn.io import (RunError, atomic_write, load_checkpoint, read_json, save_checkpoint, save_figure,
                     temporary_prefix, write_json, write_text, writer_lock)

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


@pytest.fixture(params=[0o022, 0o027, 0o077])
def umask(request):
    old = os.umask(request.param)
    yield request.param
    os.umask(old)


def _mode(path) -> int:
    return path.stat().st_mode & 0o777


def test_written_files_get_the_permissions_of_the_users_umask(tmp_path, umask):
    expected = 0o666 & ~umask  # what `touch` would create: 0644, 0640, 0600
    write_json(tmp_path / "run" / "config.json", {"a": 1})
    save_checkpoint(tmp_path / "run" / "checkpoint.pt", {"model": {}})
    fig, _ = plt.subplots()
    save_figure(fig, tmp_path / "figure.png")
    (tmp_path / "source").write_bytes(b"")
    cache.cached("mnist", [tmp_path / "source"], lambda writer: writer.add(
        "train", np.zeros((2, 1, 2, 2), np.uint8), np.zeros(2, np.int64)) or ["a", "b"], tmp_path / "cache")
    (entry,) = (tmp_path / "cache").iterdir()
    assert _mode(entry) == 0o777 & ~umask  # a directory the user's group can enter where it can read
    write_text(tmp_path / "study" / "README.md", "# results\n")
    cached = [f"cache/{entry.name}/{name}" for name in ("meta.json", "train_x.bin", "train_y.bin", "test_x.bin")]
    for path in ["run/config.json", "run/checkpoint.pt", "figure.png", *cached, "study/README.md"]:
        assert _mode(tmp_path / path) == expected, path
    # replacing an existing file gives the new one the umask's permissions too
    write_json(tmp_path / "run" / "config.json", {"a": 2})
    assert _mode(tmp_path / "run" / "config.json") == expected


def test_a_failed_write_leaves_the_old_file_and_no_temporary_one(tmp_path):
    path = tmp_path / "metrics.json"
    write_json(path, {"epoch": 1})

    def fail(f):
        f.write(b'{"epoch": ')
        raise RuntimeError("interrupted")

    with pytest.raises(RuntimeError):
        atomic_write(path, fail)
    with pytest.raises(ValueError):
        write_json(path, {"loss": float("nan")})
    assert read_json(path) == {"epoch": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.json"]


class Stop(Exception):
    """What the test's SIGTERM handler raises (the command line's raises its own)."""


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_an_interrupt_inside_the_writer_waits_until_the_file_is_written(tmp_path, signum):
    """A signal handled inside torch's zip writer came out as torch's RuntimeError, not as the
    interrupt, and one right after the temporary was made left it behind: both are held until
    the file is in place, then raised as usual."""
    path = tmp_path / "checkpoint.pt"
    save_checkpoint(path, {"model": {}, "epoch": 1})

    class SignalOnFirstWrite:
        """A file that is sent ``signum`` in the middle of torch's first write call."""

        def __init__(self, f):
            self.f, self.sent = f, False

        def write(self, data):
            if not self.sent:
                self.sent = True
                os.kill(os.getpid(), signum)
            return self.f.write(data)

        def flush(self):
            self.f.flush()

    def stop(*_):
        raise Stop

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        with pytest.raises(KeyboardInterrupt if signum == signal.SIGINT else Stop):
            atomic_write(path, lambda f: torch.save({"model": {"w": torch.zeros(1000)}, "epoch": 2}, SignalOnFirstWrite(f)))
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert load_checkpoint(path)["epoch"] == 2  # written whole, then interrupted
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint.pt"]
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def _killed_while_writing(path, folder: bool = False) -> None:
    """A process that dies by SIGKILL in the middle of writing ``path`` (a checkpoint, or a data
    cache entry when ``folder``), so it cannot remove its temporary file."""
    if folder:
        body = f"""
            from pdnn.data import cache
            def build(writer):
                writer.add("train", np.zeros((2, 1, 2, 2), np.uint8), np.zeros(2, np.int64))
                os.kill(os.getpid(), signal.SIGKILL)
            cache.cached("mnist", [Path({str(path)!r})], build, Path({str(path.parent / "cache")!r}))
        """
    else:
        body = f"""
            from pdnn.io import atomic_write
            def write(f):
                f.write(b"half a checkpoint")
                f.flush()
                os.kill(os.getpid(), signal.SIGKILL)
            atomic_write(Path({str(path)!r}), write)
        """
    script = "import os, signal\nfrom pathlib import Path\nimport numpy as np\n" + textwrap.dedent(body)
    assert subprocess.run([sys.executable, "-c", script]).returncode == -signal.SIGKILL


@pytest.mark.skipif(os.name != "posix", reason="only POSIX can ask whether a process runs")
def test_the_temporaries_of_a_killed_writer_are_removed_by_the_next_write(tmp_path):
    path = tmp_path / "run" / "checkpoint.pt"
    save_checkpoint(path, {"model": {}, "epoch": 1})
    _killed_while_writing(path)
    (orphan,) = [p for p in path.parent.iterdir() if p.name.endswith(".tmp")]
    assert orphan.read_bytes() == b"half a checkpoint" and load_checkpoint(path)["epoch"] == 1
    # a running writer's temporary and another machine's are not judged
    running = path.parent / f"{temporary_prefix(path)}abc.tmp"
    running.write_bytes(b"")
    elsewhere = path.parent / f".checkpoint.pt.not-{socket.gethostname()}.1.abc.tmp"
    elsewhere.write_bytes(b"")
    save_checkpoint(path, {"model": {}, "epoch": 2})
    assert sorted(p.name for p in path.parent.iterdir()) == sorted(["checkpoint.pt", running.name, elsewhere.name])
    assert load_checkpoint(path)["epoch"] == 2
    # so with a data cache entry killed while it was being built: its staging folder goes
    source = tmp_path / "source"
    source.write_bytes(b"")
    _killed_while_writing(source, folder=True)
    (staging,) = (tmp_path / "cache").iterdir()
    assert staging.name.startswith(".mnist-") and staging.name.endswith(".tmp") and staging.is_dir()
    cache.cached("mnist", [source], lambda writer: writer.add(
        "train", np.zeros((2, 1, 2, 2), np.uint8), np.zeros(2, np.int64)) or ["a", "b"], tmp_path / "cache")
    assert [p.name.startswith("mnist-") for p in (tmp_path / "cache").iterdir()] == [True]


def test_a_figure_is_written_in_the_format_of_its_suffix_and_closed(tmp_path):
    fig, _ = plt.subplots()
    assert save_figure(fig, tmp_path / "a.svg").read_text().lstrip().startswith("<?xml")
    assert not plt.fignum_exists(fig.number)
    fig, _ = plt.subplots()
    assert save_figure(fig, tmp_path / "a.unknown").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_reading_a_missing_or_damaged_file_names_it(tmp_path):
    with pytest.raises(RunError, match="does not exist"):
        read_json(tmp_path / "none.json")
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(RunError, match=r"bad\.json is not valid JSON"):
        read_json(tmp_path / "bad.json")
    for constant in ("NaN", "Infinity", "-Infinity"):  # Python's json reads them; pdnn never writes them
        (tmp_path / "bad.json").write_text(f'{{"accuracy": [0.5, {constant}]}}')
        with pytest.raises(RunError, match=rf"bad\.json holds {constant}, which is not JSON: pdnn never writes one"):
            read_json(tmp_path / "bad.json")
    for number in ("1e999", "-3e332819473619719"):  # read as infinity (one byte of 3.33... changed; R225)
        (tmp_path / "bad.json").write_text(f'{{"ratio": {number}, "fine": [1e308, 5e-324]}}')
        with pytest.raises(RunError, match=rf"bad\.json holds {number}, a number beyond float's range: pdnn never"):
            read_json(tmp_path / "bad.json")
    for digits in (309, 5000):  # (an int a float overflowed on; past 4300 digits Python's int() refused; R226)
        (tmp_path / "bad.json").write_text(f'{{"ratio": {"9" * digits}}}')  # (9...9, 309 digits: > 1.8e308)
        with pytest.raises(RunError, match=r"bad\.json holds 9{37}\.\.\., a number beyond float's range: pdnn never"):
            read_json(tmp_path / "bad.json")
    largest = int(sys.float_info.max)  # (309 digits, as 10**308 has: both hold in a float, R229, as does one more,
    #                                     which a float rounds to it, R230)
    (tmp_path / "fine.json").write_text(f'{{"fine": [1e308, 5e-324, 1e-400, 100000000000000000000000, {10**308}, '
                                        f'{largest}, -{largest}, {largest + 1}]}}')
    assert read_json(tmp_path / "fine.json") == {"fine": [1e308, 5e-324, 0.0, 10**23, 10**308, largest, -largest,
                                                          largest + 1]}
    (tmp_path / "bad.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(RunError, match=r"bad\.pt is not a readable checkpoint"):
        load_checkpoint(tmp_path / "bad.pt")
    torch.save({"model": {"w": torch.zeros(300, 300)}}, tmp_path / "whole.pt")
    whole = (tmp_path / "whole.pt").read_bytes()
    for size in (0, 5000, len(whole) - 100):  # each gave torch's own words: '[Errno 22] Invalid argument', or a
        (tmp_path / "cut.pt").write_bytes(whole[:size])  # paragraph on miniz (R163)
        with pytest.raises(RunError) as refused:
            load_checkpoint(tmp_path / "cut.pt")
        said = str(refused.value)
        assert said.startswith(f"{tmp_path / 'cut.pt'} is not a readable checkpoint: damaged, cut short, or not one "
                               "torch.save wrote (") and "\n" not in said and len(said) < 300, said
    torch.save({"epoch": 3}, tmp_path / "empty.pt")
    with pytest.raises(RunError, match="holds no model state"):
        load_checkpoint(tmp_path / "empty.pt")


def test_a_folder_where_a_file_should_be_is_said_to_be_one(tmp_path):
    for name, read in (("checkpoint.pt", load_checkpoint), ("plan-state.json", read_json)):
        (tmp_path / name).mkdir()
        with pytest.raises(RunError, match=f"{name} is a folder; expected a file"):
            read(tmp_path / name)


def test_a_long_file_name_is_written_and_errors_name_the_users_path(tmp_path, monkeypatch):
    """The temporary name adds the writer to the destination's; a legal name of 245 characters
    must still be writable, and a failure is said of the user's path, not the hidden temporary."""
    path = tmp_path / ("b" * 245 + ".json")
    write_json(path, {"a": 1})
    assert read_json(path) == {"a": 1} and [p.name for p in tmp_path.iterdir()] == [path.name]

    def refused(*args, **kwargs):
        raise PermissionError(13, "Permission denied", str(tmp_path / ".out.json.host.1.x.tmp"))

    monkeypatch.setattr("tempfile.mkstemp", refused)
    with pytest.raises(PermissionError) as err:
        write_json(tmp_path / "out.json", {"a": 1})
    assert err.value.filename == str(tmp_path / "out.json")


def test_a_lock_is_never_seen_without_its_owner(tmp_path, monkeypatch):
    """The owner is linked in with the lock: a signal just after the lock appears leaves a lock
    that names its (then dead) writer, which the next command takes over, never an empty one
    that would block the folder for good."""
    link = os.link

    def link_then_signal(source, target):
        link(source, target)
        raise KeyboardInterrupt  # Ctrl-C the instant the lock exists

    monkeypatch.setattr(os, "link", link_then_signal)
    with pytest.raises(KeyboardInterrupt):
        with writer_lock(tmp_path / "run"):
            pass
    assert (tmp_path / "run" / ".writing").read_text() == f"{socket.gethostname()} {os.getpid()}"
    assert [p.name for p in (tmp_path / "run").iterdir()] == [".writing"]  # no temporary left


def test_a_lock_is_taken_where_hard_links_are_not(tmp_path, monkeypatch):
    def refuse(source, target):
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(os, "link", refuse)
    with writer_lock(tmp_path / "run"):
        assert (tmp_path / "run" / ".writing").read_text() == f"{socket.gethostname()} {os.getpid()}"
        with pytest.raises(RunError, match=f"process {os.getpid()} on"):
            with writer_lock(tmp_path / "run"):
                pass
    assert not (tmp_path / "run").exists()  # created by the lock, nothing written: removed with it


def test_a_full_disk_is_one_error_naming_the_file_and_the_old_file_stays(tmp_path):
    """torch's zip writer reports a full disk as a RuntimeError around the OSError: it is raised
    as an OSError naming the user's file (the command prints it as one line)."""
    import errno

    path = tmp_path / "checkpoint.pt"
    path.write_bytes(b"old")

    def fill(f):
        try:
            raise OSError(errno.ENOSPC, "No space left on device")
        except OSError:
            raise RuntimeError("[enforce fail at inline_container.cc] unexpected pos")

    with pytest.raises(OSError) as info:
        atomic_write(path, fill)
    assert info.value.errno == errno.ENOSPC and info.value.filename == str(path)
    assert path.read_bytes() == b"old" and [p.name for p in tmp_path.iterdir()] == ["checkpoint.pt"]


def test_a_lock_that_cannot_be_written_names_it_and_leaves_no_folder(tmp_path, monkeypatch):
    import errno
    import tempfile

    def read_only(*args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system", kwargs.get("dir"))

    monkeypatch.setattr(tempfile, "mkstemp", read_only)
    with pytest.raises(OSError) as info:
        with writer_lock(tmp_path / "new"):
            pass
    assert info.value.filename == str(tmp_path / "new" / ".writing")
    assert not (tmp_path / "new").exists()  # created for the lock, nothing written: removed
    # so are the parents it created for it, up to the first that was there or holds something else
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "kept").write_text("")
    with pytest.raises(OSError):
        with writer_lock(tmp_path / "a" / "b" / "c" / "new"):
            pass
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == ["kept"]


def test_an_interrupt_held_while_the_lock_is_claimed_leaves_no_lock_nor_folder(tmp_path, monkeypatch):
    """Ctrl-C during the claim took effect as the claim returned, with the lock taken: it stayed,
    naming a dead process, in a folder the command had made (R239). A lock another command holds,
    even one of this process, is never removed (below)."""
    import pdnn.io as pdnn_io

    claim = pdnn_io._claim

    def interrupted_as_it_returns(lock, owner):
        assert claim(lock, owner)
        signal.raise_signal(signal.SIGINT)  # (held by the claim's own block, it arrived as the block ended)
        return True

    monkeypatch.setattr(pdnn_io, "_claim", interrupted_as_it_returns)
    with pytest.raises(KeyboardInterrupt):
        with writer_lock(tmp_path / "new" / "sub"):
            pass
    assert list(tmp_path.iterdir()) == []
    monkeypatch.undo()
    with writer_lock(tmp_path / "held"):  # (another thread's, say: it names this process too)
        with pytest.raises(RunError, match="another command"):
            with writer_lock(tmp_path / "held"):
                pass
        assert (tmp_path / "held" / ".writing").exists()


def test_text_written_from_a_path_read_under_an_ascii_locale_keeps_its_bytes(tmp_path):
    name = os.fsdecode("ünï".encode())  # what Python makes of UTF-8 bytes under an ASCII locale
    write_text(tmp_path / "README.md", f"folder {name.encode('utf-8').decode('ascii', 'surrogateescape')}\n")
    assert (tmp_path / "README.md").read_bytes() == "folder ünï\n".encode()
