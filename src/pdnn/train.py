"""Sample-aware training: one loop, checkpointed every epoch, resumable bit for bit on the CPU
(with the same processor, vector instructions, thread count and torch: a resume warns where they
differ).

The loop is the same for every kind of model; a :class:`pdnn.tasks.Task` (``TrainConfig.task``)
supplies the loss and the held-out metric. For classification the loss is computed on the
average of ``s`` samples of the network (``TrainConfig.samples``), the paper's rule; gradients
reach the weights through the p-bits' straight-through estimator. A run is four steps:
:func:`_build` (model, optimiser, generators), :func:`_restore` (from a checkpoint),
:func:`_train_epoch` and :func:`_end_epoch` (held-out metric, checkpoint, history).
The dataset lives on the training device as uint8 tensors; batches are augmented with tensor
ops and normalised on the fly.

Randomness comes from three explicit generators seeded from the run's seed -- example order,
augmentation and sampling (the last two differ between processes) -- and every process's states
are saved in every checkpoint, so ``resume`` continues the exact random streams an uninterrupted
run would have used.

Multi-process training: started by ``torchrun`` (``WORLD_SIZE`` > 1), every process runs on its
own device (``cuda:<LOCAL_RANK>``, or the CPU) and takes a strided share of each global batch,
gradients are averaged by ``DistributedDataParallel`` (gloo on the CPU, nccl on CUDA), and
process 0 evaluates and writes the run directory. Two consequences of plain DDP: a batch norm
normalises with its own process's share (there is no SyncBatchNorm), and the running statistics
saved are process 0's, so a run on two processes does not equal one on one; and processes whose
shares differ by one example (a global batch that does not split evenly) weigh equally in the
averaged gradient.
"""
from __future__ import annotations

import atexit
import contextlib
import hashlib
import math
import os
import re
import signal
import threading
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import distributed as dist
from tqdm.auto import tqdm

from .checks import counted, torch_seed
from .data import augment, load
from .devices import default_device, resolve_device, where_measured
from .errors import UsageError
from .models import ModelConfig
from .progress import progress_bar
from .provenance import CODE, code_record
from .io import checkpoint_mismatch, is_epoch_history, is_folder_record, signals_held, writer_lock
from .runs import (CHECKPOINT, CONFIG, METRICS, RunError, check_fits, load_checkpoint, read_json, save_checkpoint,
                   write_json)
from .tasks import TASKS, Task
from .train_config import (AUGMENT_SEED, TRAIN_OPTIONS, TrainConfig, check_new_run, recorded_options,
                           recorded_processes, run_config, train_command)


def _distributed(device: str) -> tuple[str, int, int]:
    """(this process's device, rank, world size). Started by torchrun (``WORLD_SIZE`` > 1), each
    process trains on its own GPU, ``cuda:<LOCAL_RANK>``, when ``device`` is CUDA without an
    index (one with an index would put every process of a machine on that GPU, so it is refused
    where a machine runs several), and the process group is initialised (nccl for CUDA, gloo for
    the CPU)."""
    world = _environment_integer("WORLD_SIZE", "1")
    if world == 1:
        return device, 0, 1
    if missing := [name for name in ("RANK", "MASTER_ADDR", "MASTER_PORT") if name not in os.environ]:
        raise UsageError(f"WORLD_SIZE is {world}, but {' and '.join(missing)} {'is' if len(missing) == 1 else 'are'} "
                         "not set: start multi-process training with torchrun, which sets them all")
    if not 0 < _environment_integer("MASTER_PORT", what="port") < 2**16:
        raise UsageError(f"the environment variable MASTER_PORT={os.environ['MASTER_PORT']!r} is not a port (1 to "
                         "65535; torchrun sets it)")
    if (rank := _environment_integer("RANK")) >= world:  # it would wait for processes that never come
        raise UsageError(f"the environment variable RANK={rank} is not a process of WORLD_SIZE={world} (0 to "
                         f"{world - 1}; torchrun sets both)")
    cuda = torch.device(device).type == "cuda"
    local = _environment_integer("LOCAL_WORLD_SIZE", str(world))  # the processes on this machine
    if cuda and torch.device(device).index is None:
        device = resolve_device(f"cuda:{_environment_integer('LOCAL_RANK', '0')}")  # a GPU for each process
    elif cuda and local > 1:
        raise UsageError(f"--device {device} under torchrun would train the {local} processes of this machine "
                         "on one GPU; pass --device cuda, and each process takes cuda:<LOCAL_RANK>")
    if cuda:
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        _join_group("nccl" if torch.device(device).type == "cuda" else "gloo")
        atexit.register(_end_process_group)
    return device, dist.get_rank(), world


def _environment_integer(name: str, default: str | None = None, what: str | None = None) -> int:
    """The integer torchrun sets as the environment variable ``name`` (``default`` if unset), said
    in one line if it is not one: a count of processes (``*WORLD_SIZE``), a process index, or
    ``what``."""
    text = os.environ.get(name, default)
    try:
        value = int(text)
    except (TypeError, ValueError):
        value = -1
    count = name.endswith("WORLD_SIZE")
    if value < (1 if count else 0):
        what = what or ("count of processes" if count else "process index")
        raise UsageError(f"the environment variable {name}={text!r} is not a {what} (torchrun sets it)")
    return value


def _join_group(backend: str) -> None:
    """``dist.init_process_group``, with Ctrl-C and SIGTERM at their default action (end the
    process) while it waits for the others: pdnn's handlers run between Python's steps, and the
    wait is one step, so a process whose partner had failed (started by hand, not by torchrun,
    which ends them all) waited past SIGTERM for the store's half-hour timeout. Nothing is
    written yet to leave half-done."""
    import torch._dynamo  # noqa: F401  (before the group, so that it ends: see _end_process_group)
    if threading.current_thread() is not threading.main_thread():  # (only it may set handlers)
        dist.init_process_group(backend)
        return
    previous = {sig: signal.signal(sig, signal.SIG_DFL) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        dist.init_process_group(backend)
    except dist.DistNetworkError as err:  # (process 0 serves the others' meeting point on MASTER_PORT)
        if "EADDRINUSE" not in str(err):
            raise
        raise UsageError(f"MASTER_PORT {os.environ.get('MASTER_PORT')} is in use on this machine, so process 0 "
                         "cannot serve the processes' meeting point there; choose a free port (torchrun "
                         "--standalone picks one)") from None
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


# gloo's words when the other end of a connection has gone: its process ended (SIGKILL, a failure)
_PEER_LOST = re.compile(r"Connection (closed|reset) by peer|Broken pipe")


@contextlib.contextmanager
def _another_process_ended_said(world: int):
    """A collective that fails because another process of the run ended (killed, out of memory,
    stopped by its own error) as one line: it was gloo's traceback of some 20 lines, ending in
    "Connection closed by peer", below the other process's own message."""
    try:
        yield
    except RuntimeError as err:
        if world == 1 or not _PEER_LOST.search(str(err)):
            raise
        raise RunError("another process of this run ended (its own message, or torchrun's summary, says why); "
                       "every finished epoch is saved, and --resume continues the run") from err


def speaks_for_the_run() -> bool:
    """Whether this process says what every process of a run would say alike (a warning about the
    options): the only one (``WORLD_SIZE`` unset or 1, whatever ``RANK`` says, as
    :func:`_distributed` reads them), or process 0 of those torchrun starts (known from the
    environment before the process group begins)."""
    try:
        return _environment_integer("WORLD_SIZE", "1") == 1 or _environment_integer("RANK", "0") == 0
    except UsageError:  # (refused in words where the run begins)
        return True


def _end_process_group() -> None:
    """End the process group before the interpreter's teardown, which now and then aborted a process
    that had finished ("terminate called without an active exception").
    It ends gloo's threads only where ``torch._dynamo`` was imported before the group began
    (:func:`_join_group` does): imported after it, as ``DistributedDataParallel`` does, it keeps
    the group alive past ``destroy_process_group``, and its threads ran on into the teardown."""
    if dist.is_initialized():
        dist.destroy_process_group()


def _lr_factor(schedule: str, step: int, total: int) -> float:
    if schedule == "cosine":
        return 0.5 * (1 + math.cos(math.pi * min(step, total) / total))
    return 1.0


_ELSEWHERE = "; choose another output folder, or delete this run to train it anew"


def check_same_run(run_dir: Path, config: dict, action: str = "resume", options: dict | None = None) -> None:
    """A ``RunError`` unless ``run_dir`` was trained with ``config``'s model, data and training
    options (its epochs aside): what resuming it, or reusing it as finished, needs. ``options``:
    the command's option for each setting it sets (default: :data:`TRAIN_OPTIONS`), for the
    message, which names only the settings that differ (it printed both whole sections)."""
    options = TRAIN_OPTIONS if options is None else options
    saved = read_json(run_dir / CONFIG)
    for section in ("model", "data"):
        if saved.get(section) != config[section]:
            raise RunError(f"cannot {action} {run_dir}: its {section} configuration differs from the requested "
                           f"one (in {_differences(saved.get(section), config[section], options)})" + _ELSEWHERE)
    if not isinstance(saved.get("train"), dict):
        raise RunError(f"{run_dir / CONFIG} has no 'train' section; expected the configuration `pdnn train` writes")
    fixed = {k: v for k, v in asdict(TrainConfig.from_dict(saved["train"])).items() if k != "epochs"}
    requested = {k: v for k, v in config["train"].items() if k != "epochs"}
    if fixed != requested:
        raise RunError(f"cannot {action} {run_dir}: its training options differ from the requested ones (in "
                       f"{_differences(fixed, requested, options)}; only the epochs may change)" + _ELSEWHERE)


def _differences(saved, requested: dict, options: dict) -> str:
    """``--option: saved -> requested`` for each setting that differs, named by the option that sets
    it (``key (set by --option)`` where the names differ; the key alone where none does); ``saved``
    whole if it is no dict."""
    if not isinstance(saved, dict):
        return f"{saved!r} -> {requested!r}"

    def named(key) -> str:
        option = options.get(key)
        return option if option == f"--{str(key).replace('_', '-')}" else f"{key} (set by {option})" if option else key

    absent = "(absent)"
    return "; ".join(f"{named(k)}: {saved.get(k, absent)!r} -> {requested.get(k, absent)!r}"
                     for k in sorted(set(saved) | set(requested), key=str)
                     if saved.get(k, absent) != requested.get(k, absent))


@dataclass
class _Run:
    """The state of a training run, shared by its steps."""

    task: Task
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    net: torch.nn.Module  # the task's sampled model, wrapped for multiple processes
    generators: dict[str, torch.Generator]  # order, augment, sample: this process's random streams
    rank: int
    world: int
    metrics: list[dict] = field(default_factory=list)
    start_epoch: int = 0


def _check_same_options(config: dict, train_config: TrainConfig, resume: bool, run_dir: Path, world: int) -> None:
    """Raise, in every process alike, if the processes were given different options. torchrun
    gives them one command; started by hand with another ``--seed`` one trained silently (the
    batches split by two orders: examples doubled and skipped, the other seed recorded), with
    another ``--batch-size`` both waited in a collective for ever (a collective: all call it).
    A difference is named by its option where it has one, else by its place in ``config.json``
    (another pdnn version: ``pdnn_version``); ``--device``, ``--data-dir`` (naming a copy of the
    same data: :func:`_check_same_data`) and ``--quiet`` may differ."""
    options = {f"--{name.replace('_', '-')}": value for name, value in recorded_options(config).items()}
    options.update({"--epochs": train_config.epochs, "--resume": resume, "--out": os.path.realpath(run_dir)})
    every: list = [None] * world
    dist.all_gather_object(every, {"options": options, "config": _flat(config)})

    def differing(part: str) -> list[str]:
        return sorted({key for other in every for key in other[part].keys() | every[0][part].keys()
                       if other[part].get(key) != every[0][part].get(key)})

    if differ := differing("options") or differing("config"):
        raise UsageError(f"the {world} processes were given different options ({', '.join(differ)}); start them "
                         "with one command: torchrun --nproc_per_node N -m pdnn train ...")


def _stop_together(failure: Exception | None, world: int) -> None:
    """Tell every process whether any failed to set up, and end the others alike if one did: a
    refusal of process 0 alone (the run's lock, which only it takes) left the others to wait in the
    model's first collective until they died with gloo's traceback. The failed process raises its
    own error after this; the others a :class:`RunError` naming it."""
    said = None if failure is None else (str(failure) if isinstance(failure, (UsageError, RunError))
                                         else f"{type(failure).__name__}: {failure}")
    every: list = [None] * world
    dist.all_gather_object(every, said)
    if failure is None and (failed := next(((i, m) for i, m in enumerate(every) if m is not None), None)):
        raise RunError(f"process {failed[0]} stopped before training: {failed[1]}")


def _data_sha256(data) -> str:
    """The SHA-256 of the images and labels of both splits as loaded: what a run trained on,
    whichever copy of the files they came from."""
    digest = hashlib.sha256()
    for tensor in (data.train_x, data.train_y, data.test_x, data.test_y):
        digest.update(tensor.cpu().contiguous().numpy())  # (its buffer: no copy of the bytes)
    return digest.hexdigest()


def _check_same_data(data, world: int, digest: str) -> None:
    """Refuse processes that read different data (``digest``: :func:`_data_sha256` of this
    process's): ``--data-dir`` may differ (each machine has its own copy), but copies of different
    sizes hung every process in a collective, and copies of one size trained on a mix of two
    datasets without a word."""
    mine = {"read": f"{data.source}, {len(data.train_y)} training and {len(data.test_y)} test images",
            "sha256": digest}
    every: list = [None] * world
    dist.all_gather_object(every, mine)
    if differ := [i for i, other in enumerate(every) if other["sha256"] != every[0]["sha256"]]:
        read = "; ".join(f"process {i}: {every[i]['read']}" for i in [0, *differ])
        raise UsageError(f"the {world} processes read different data ({read}); give every process a copy of "
                         "the same data (--data-dir or $PDNN_DATA)")


def _flat(options: dict, prefix: str = "") -> dict:
    """``{"train": {"seed": 1}}`` as ``{"train.seed": 1}``: a difference named by its option."""
    flat = {}
    for key, value in options.items():
        flat.update(_flat(value, f"{prefix}{key}.") if isinstance(value, dict) else {f"{prefix}{key}": value})
    return flat


def _build(model_config: ModelConfig, train_config: TrainConfig, device: str, rank: int, world: int) -> _Run:
    """The model, its optimiser and this process's seeded generators."""
    task = TASKS[train_config.task](train_config)
    with torch.random.fork_rng(devices=[]):  # the caller's global CPU generator is left as it was
        torch.default_generator.manual_seed(train_config.seed)  # the initial weights, drawn on the CPU (the
        #                                                          only draw from the global generator)
        model = task.build(model_config).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=train_config.lr, weight_decay=train_config.weight_decay)
    sampler = task.sampled(model, seed=train_config.seed + 1 + rank)
    generators = {
        "order": torch.Generator().manual_seed(train_config.seed),
        "augment": torch.Generator(device=device).manual_seed(train_config.seed + AUGMENT_SEED * (rank + 1)),
        "sample": sampler.generator(device),
    }
    net = sampler
    if world > 1:
        on_cpu = torch.device(device).type == "cpu"  # cpu:0 too: DDP takes device ids of GPUs only
        net = torch.nn.parallel.DistributedDataParallel(sampler, device_ids=None if on_cpu else [device])
    return _Run(task, model, optimizer, net, generators, rank, world)


def _generator_states(run: _Run) -> list[dict]:
    """The random streams of every process, indexed by rank (a collective: all processes call it)."""
    mine = {name: generator.get_state() for name, generator in run.generators.items()}
    mine["devices"] = {name: generator.device.type for name, generator in run.generators.items()}
    if run.world == 1:
        return [mine]
    every: list = [None] * run.world
    dist.all_gather_object(every, mine)
    return every


def _unresumable(state: dict) -> str | None:
    """What of a checkpoint's training state is malformed (a damaged or hand-edited file), or None."""
    epoch, metrics, generators = state["epoch"], state["metrics"], state["generators"]
    if not isinstance(state["model"], dict):
        return f"its model state is {type(state['model']).__name__}, not a state_dict"
    optimizer = state["optimizer"]
    if not (isinstance(optimizer, dict) and isinstance(optimizer.get("param_groups"), list)
            and isinstance(optimizer.get("state"), dict)):
        return "its optimizer state is not an optimizer's state_dict (with 'state' and 'param_groups')"
    if isinstance(epoch, bool) or not isinstance(epoch, int) or epoch < 0:
        return f"its epoch is {epoch!r}, not a count of epochs"
    if not is_epoch_history(metrics) or len(metrics) != epoch:
        return f"its metrics are not one record per epoch 1..{epoch}"
    streams = [generators] if isinstance(generators, dict) else generators
    if not isinstance(streams, list) or not streams or not all(
            isinstance(g, dict) and all(isinstance(g.get(k), torch.Tensor) for k in ("order", "augment", "sample"))
            for g in streams):
        return "its random streams are not the order, augmentation and sampling states of each process"
    return None


def _span(first: int, end: int) -> str:
    """Processes ``first`` to ``end - 1`` in words."""
    return f"process {first}" if end - first == 1 else f"processes {first} to {end - 1}"


def _anew(checkpoint_path: Path) -> str:
    """How to train a run anew whose checkpoint cannot be resumed ("without --resume" is refused
    while the checkpoint is there)."""
    return f"to train it anew, delete {checkpoint_path} (or train into another folder)"


def _restore(run: _Run, checkpoint_path: Path, device: str, epochs: int) -> None:
    """Continue from a checkpoint: weights, optimiser, history and this process's random streams
    (the example order is shared by all processes; augmentation and sampling are per process),
    warning where they cannot continue and ``epochs`` leaves epochs to train."""
    try:
        state = load_checkpoint(checkpoint_path)  # on the CPU: loading the states below moves them to the device
    except RunError as err:
        raise RunError(f"{err}; {_anew(checkpoint_path)}") from None
    missing = [key for key in ("optimizer", "generators", "metrics", "epoch") if key not in state]
    if missing:
        raise RunError(f"{checkpoint_path} holds no {', '.join(missing)} (a copy of the weights for evaluation), "
                       f"so the run cannot be resumed; {_anew(checkpoint_path)}")
    if why := _unresumable(state):  # checked before any file of the run is rewritten
        raise RunError(f"{checkpoint_path}: {why}, so the run cannot be resumed; {_anew(checkpoint_path)}")
    try:
        run.model.load_state_dict(state["model"])
        run.optimizer.load_state_dict(state["optimizer"])
    except (RuntimeError, ValueError, KeyError, TypeError) as err:  # another model's weights, or another width
        raise checkpoint_mismatch(checkpoint_path, err) from err
    saved = state["generators"]
    if isinstance(saved, dict):  # written before every process's streams were saved: process 0's
        saved = [saved]
    said = run.rank == 0 and state["epoch"] < epochs  # (nothing left to train: nothing to say)
    if len(saved) != run.world and said:
        what = (f"augmentation and sampling of {_span(len(saved), run.world)} restart from their seeds"
                if len(saved) < run.world else f"the streams of {_span(run.world, len(saved))} go unused and the "
                f"batches are split among {counted(run.world, 'process', 'processes')}, not {len(saved)}")
        warnings.warn(f"{checkpoint_path} holds the random streams of {counted(len(saved), 'process', 'processes')} and this run has "
                      f"{run.world}: {what}, so the run does not continue bit for bit")
    try:
        _set_streams(run, saved, device, checkpoint_path, said)
    except (RuntimeError, TypeError, AttributeError) as err:  # a state of another size, type or form
        raise RunError(f"{checkpoint_path}: its random streams are not valid generator states "
                       f"({str(err).splitlines()[0]}), so the run cannot be resumed; {_anew(checkpoint_path)}")
    if said and torch.device(device).type == "cpu" and state["metrics"]:
        _warn_if_elsewhere(checkpoint_path, state["metrics"][-1])
    # (a checkpoint written before the records held torch's version as a string: as one now, so that
    # torch.load's safe default reads the next checkpoint)
    run.metrics = [{**m, "torch": str(m["torch"])} if "torch" in m else m for m in state["metrics"]]
    run.start_epoch = state["epoch"]


def _data_changed(run: _Run, data, dataset: str, digest: str) -> str | None:
    """How the data a resumed run reads differs from what its last epoch read, if it does: by
    content (:func:`_data_sha256`) where the epoch recorded it, so that a byte-identical copy
    elsewhere continues and a file changed in place does not pass; by the copy's place before."""
    last = run.metrics[-1] if run.metrics else {}
    read, sha256 = last.get("data_source"), last.get("data_sha256")
    if sha256 is not None:
        if sha256 == digest:
            return None
        where = f"and now reads {data.source}" if read is None or not _same_copy(read, data.source, dataset) else \
            "and its files now hold other images or labels"
        return f"{read or 'other data'} {where} (their SHA-256 differs)"
    if read is not None and not _same_copy(read, data.source, dataset):
        return f"{read} and now reads {data.source} (another --data-dir or $PDNN_DATA): another copy of the data"
    return None


def _same_copy(recorded: str, now: str, dataset: str) -> bool:
    """Whether two records of where data was read (``"<folder> (<kind>)"``) name one copy: the same
    folder however spelled, or the data pdnn ships (``demo``), wherever pdnn is installed."""
    if dataset == "demo" or recorded == now:
        return True
    folders = [os.path.realpath(text.split(" (")[0]) for text in (recorded, now)]
    return folders[0] == folders[1] and recorded.split(" (", 1)[1:] == now.split(" (", 1)[1:]


def _warn_if_elsewhere(checkpoint_path: Path, last: dict) -> None:
    """Say that a CPU run resumed with another thread count, processor, vector instructions or
    torch may not continue bit for bit: the kernels may split and round its sums otherwise. A
    record that predates a key is not compared on it."""
    now = where_measured()
    then = {key: last.get(key) for key in now}
    changed = [f"{key} {then[key]!r} (now {now[key]!r})" for key in then
               if then[key] is not None and then[key] != now[key]]
    if changed:
        warnings.warn(f"{checkpoint_path} was trained with {' and '.join(changed)}: sums may round otherwise, "
                      "so the run may not continue bit for bit")


def _set_streams(run: _Run, saved: list[dict], device: str, checkpoint_path: Path, said: bool) -> None:
    """This process's random streams as ``saved`` holds them; those saved on another type of
    device restart from their seeds, with a warning when ``said``."""
    run.generators["order"].set_state(saved[0]["order"])
    if run.rank < len(saved):
        # a stream saved on another type of device has another form (CUDA's is 16 bytes of Philox,
        # the CPU's 5056); checkpoints written before the types were recorded show it by the size
        types = saved[run.rank].get("devices", {})
        moved = [name for name in ("augment", "sample")
                 if types.get(name, run.generators[name].device.type) != run.generators[name].device.type
                 or saved[run.rank][name].numel() != run.generators[name].get_state().numel()]
        for name in ("augment", "sample"):
            if name not in moved:
                run.generators[name].set_state(saved[run.rank][name])
        if moved and said:
            warnings.warn(f"{checkpoint_path}: the {' and '.join(moved)} streams were saved on another type of "
                          f"device than this run's {device}, so they restart from their seeds and the run does "
                          "not continue bit for bit")


def batches_per_epoch(examples: int, batch_size: int, world: int = 1) -> int:
    """Batches of ``batch_size``; a last batch that would give a process fewer than two examples
    (one, for one process) joins the one before: a batch norm cannot take statistics of one
    example (a training set of 65 made a crash at the end of its first epoch, and under torchrun
    with 2 processes a last batch of 2 or 3 gave one process a single example)."""
    short = 0 < examples % batch_size < 2 * world and examples > batch_size
    return max(1, math.ceil(examples / batch_size) - short)


def check_batch_shares(model: torch.nn.Module, examples: int, batch_size: int, world: int = 1) -> None:
    """Refuse batches that give a process no example (its loss would be NaN, read as divergence)
    or, with a ``BatchNorm1d``, one (which cannot take statistics of one value): before the first step,
    and alike in every process, so that no process is left waiting for the others' gradients."""
    steps = batches_per_epoch(examples, batch_size, world)
    last = examples - (steps - 1) * batch_size
    smallest = last if steps == 1 else min(batch_size, last)
    # a BatchNorm1d takes one value per channel from an example; a BatchNorm2d one per pixel, so an
    # image is enough (the CNN trains on batches of one)
    norm = any(isinstance(module, torch.nn.BatchNorm1d) for module in model.modules())
    per_process = 2 if norm else 1
    if smallest // world >= per_process:
        return
    need = per_process * world
    fixes = ([f"use a --batch-size of at least {need}"] if batch_size < need else []) + \
            ([f"train on at least {need} examples (the training set holds {examples})"] if examples < need else [])
    among = f" shared by {world} processes" if world > 1 else ""
    why = ("is too small for the model's batch norm, which needs at least 2 values per channel"
           + (" in each process" if world > 1 else "")) if norm else "leaves a process without an example"
    raise UsageError(f"a training batch of {smallest} example(s){among} {why}: {' and '.join(fixes)}")


def _train_epoch(run: _Run, data, config: TrainConfig, epoch: int, progress: bool) -> tuple[dict, dict]:
    """One pass over the training split; returns its training statistics and its speed."""
    run.model.train()
    n_train = len(data.train_y)
    steps_per_epoch = batches_per_epoch(n_train, config.batch_size, run.world)
    total_steps = steps_per_epoch * config.epochs
    perm = torch.randperm(n_train, generator=run.generators["order"]).to(data.device)
    loss_sum = seen = 0
    sums: dict[str, float] = {}
    began = time.perf_counter()
    bar = progress_bar(range(steps_per_epoch), desc=f"epoch {epoch + 1}/{config.epochs}",
                       enabled=progress and run.rank == 0, leave=False)
    for i in bar:
        for group in run.optimizer.param_groups:
            group["lr"] = config.lr * _lr_factor(config.schedule, epoch * steps_per_epoch + i, total_steps)
        end = (i + 1) * config.batch_size if i + 1 < steps_per_epoch else n_train
        idx = perm[i * config.batch_size : end][run.rank :: run.world]
        x = data.train_x[idx]
        if config.augment:
            x = augment(x, data.augmentation, run.generators["augment"])
        y = data.train_y[idx]
        loss, batch_sums = run.task.batch_loss(run.net, data, x, y)
        run.optimizer.zero_grad(set_to_none=True)
        if not math.isfinite(value := loss.item()):  # nothing of this epoch is saved: the last checkpoint stays
            kept = f"the checkpoint of epoch {epoch} stays" if epoch else "no epoch had finished, so nothing is saved"
            raise UsageError(f"training diverged in epoch {epoch + 1}, step {i + 1}: the loss is {value}; {kept}; "
                             f"try a smaller learning rate than {config.lr}")
        loss.backward()
        run.optimizer.step()
        loss_sum += value * len(y)
        for key, value in batch_sums.items():
            sums[key] = sums.get(key, 0) + value
        seen += len(y)
        bar.set_postfix(loss=f"{loss_sum / seen:.3f}", **{k: f"{v / seen:.3f}" for k, v in sums.items()},
                        img_s=f"{seen * run.world / (time.perf_counter() - began):.0f}")
    bar.close()
    elapsed = time.perf_counter() - began
    if run.world > 1:  # every process's share of the epoch, not process 0's alone
        totals = torch.tensor([loss_sum, seen, *sums.values()], dtype=torch.float64, device=data.device)
        dist.all_reduce(totals)
        loss_sum, seen, *values = totals.tolist()
        sums = dict(zip(sums, values))
    return ({"train_loss": loss_sum / seen, **{f"train_{k}": v / seen for k, v in sums.items()}},
            {"epoch_time_s": elapsed, "examples_per_s": seen / elapsed,  # measured on:
             "device": str(data.device), **where_measured(), "processes": run.world,
             "data_source": data.source})  # which copy was read: a JPEG CIFAR-10 scores differently


def _end_epoch(run: _Run, data, epoch: int, trained: dict, speed: dict, generators: list[dict], run_dir: Path,
               progress: bool) -> None:
    """Measure the held-out metric, then write the checkpoint and the history (process 0), both
    before an interrupt takes effect (one arriving during the checkpoint's write had left the
    history an epoch behind, or absent, until ``--resume``)."""
    run.metrics.append({"epoch": epoch + 1, **trained, **run.task.held_out(run.model, data),
                        "lr": run.optimizer.param_groups[0]["lr"], **speed, CODE: code_record()})
    with signals_held():
        save_checkpoint(run_dir / CHECKPOINT, {
            "model": run.model.state_dict(),
            "optimizer": run.optimizer.state_dict(),
            "epoch": epoch + 1,
            "metrics": run.metrics,
            "generators": generators,  # one dict of streams per process
        })
        write_json(run_dir / METRICS, run.metrics)
    if progress:
        tqdm.write(run.task.summary(run.metrics[-1]))


def check_not_a_results_folder(run_dir: Path) -> None:
    """Refuse a folder without ``config.json`` that holds another command's records (a study's
    spec.json, an export's, a plan's): a run trained there mixed its files into the study's, and
    ``--resume`` said only that config.json did not exist."""
    if not (run_dir / CONFIG).exists() and run_dir.is_dir() and (
            records := sorted(p.name for p in run_dir.iterdir() if is_folder_record(p))):
        raise RunError(f"{run_dir} holds {', '.join(records)} and no {CONFIG}: another command's results (a study, "
                       "an export, a plan), not a run; choose another folder (a study continues when its command "
                       "is run again)")


def _check_destination(run_dir: Path, config: dict, resume: bool) -> int | None:
    """Refuse a folder this training would damage: a trained run without ``resume``, nothing to
    resume with it, another run's settings, a converted run, or a ``config.json`` or ``metrics.json``
    that is not this run's (a folder holding only this run's ``config.json`` is its own interrupted
    start).
    Returns the epochs the resumed run had planned."""
    check_not_a_results_folder(run_dir)
    checkpoint_path = run_dir / CHECKPOINT
    saved = read_json(run_dir / CONFIG) if (run_dir / CONFIG).is_file() else None
    if isinstance(saved, dict) and "convert" in saved:
        raise RunError(f"{run_dir} is a converted run (pdnn convert): it was made from a trained run, not trained "
                       "itself, so it cannot be trained or resumed; train a new run in another folder")
    if checkpoint_path.exists() and not resume:
        raise RunError(f"{run_dir} already holds a checkpoint; pass --resume (in Python, resume=True) to continue it "
                       "or choose a new directory")
    if resume and not checkpoint_path.exists():
        again = ""
        if isinstance(saved, dict) and (run_dir / METRICS).exists():  # a finished run kept without its weights
            with contextlib.suppress(KeyError, TypeError, AttributeError, RunError):
                planned = {**saved, "train": {**saved["train"], "epochs": config["train"]["epochs"]}}  # as asked now
                again = f" (this run anew: `{train_command(planned, run_dir, recorded_processes(run_dir))}`)"
        raise RunError(f"nothing to resume: {checkpoint_path} does not exist; train without --resume to start "
                       f"the run{again}")
    if saved is None and (run_dir / METRICS).exists():  # a run writes it after its config and checkpoint
        raise RunError(f"{run_dir / METRICS} is not a run's record (there is no config.json beside it); choose "
                       "another folder, or delete that file to train here")
    if saved is not None and not (isinstance(saved, dict) and isinstance(saved.get("train"), dict)):
        raise RunError(f"{run_dir / CONFIG} is not a pdnn run's configuration; choose another folder, or delete that "
                       "file to train here")
    if saved is not None:
        check_same_run(run_dir, config, "resume" if resume else "train into")
        # a finished run kept without its weights, trained again (said once, not by every process)
        if not resume and (run_dir / METRICS).exists() and speaks_for_the_run():
            warnings.warn(f"{run_dir} holds a run's history ({METRICS}) kept without its checkpoint: training it "
                          f"again replaces that history at the end of the first epoch (copy {METRICS} away first "
                          "to keep it)", stacklevel=3)
    return saved["train"]["epochs"] if resume else None


def train(
    run_dir: str | Path,
    model_config: ModelConfig,
    dataset: str,
    train_config: TrainConfig,
    roots: list[str] | None = None,
    subset: int | None = None,
    resume: bool = False,
    device: str | None = None,
    progress: bool = True,
    label: str | None = None,
) -> list[dict]:
    """Train ``model_config`` on ``dataset`` into ``run_dir``; returns the per-epoch metrics (in
    process 0; the other processes of a distributed run return an empty list).

    A run directory that already holds a checkpoint is only continued with ``resume=True``
    (never overwritten); resuming needs the same model, data and training options, except
    ``epochs``, which may grow.
    """

    train_config.validate()
    if not resume:
        check_new_run(train_config)
    if train_config.task == "classify" and model_config.num_classes < 2:  # before any data is read
        raise UsageError(f"{dataset} has {model_config.num_classes} class: there is nothing to classify (a "
                         "classifier of one class is always right); train a generator with --task vae")
    run_dir = Path(run_dir)
    device, rank, world = _distributed(device or default_device())
    torch_seed("seed", train_config.seed, AUGMENT_SEED * world)  # each process's augmentation seed
    config = run_config(model_config, dataset, train_config, subset, label)
    if world > 1:
        _check_same_options(config, train_config, resume, run_dir, world)
    with contextlib.ExitStack() as held:
        held.enter_context(_another_process_ended_said(world))
        try:
            if rank == 0:
                held.enter_context(writer_lock(run_dir, "train"))
            planned = _check_destination(run_dir, config, resume)
            data = load(dataset, roots=roots, subset=subset, progress=progress and rank == 0).to(device)
            check_fits(run_dir, config, data.train_x)  # a config.json edited to name another dataset
        except Exception as err:
            if world > 1:
                _stop_together(err, world)
            raise
        digest = _data_sha256(data)
        if world > 1:
            _stop_together(None, world)
            _check_same_data(data, world, digest)
        run = _build(model_config, train_config, device, rank, world)
        check_batch_shares(run.model, len(data.train_y), train_config.batch_size, world)
        if resume:
            _restore(run, run_dir / CHECKPOINT, device, train_config.epochs)
            if rank == 0 and run.start_epoch < train_config.epochs and (changed := _data_changed(run, data, dataset,
                                                                                                  digest)):
                warnings.warn(f"{run_dir} was trained on {changed}, so the run does not continue bit for bit "
                              "and its epochs saw different data; metrics.json records each epoch's")
            if run.start_epoch > train_config.epochs:
                raise UsageError(f"{run_dir} has trained {run.start_epoch} epochs; epochs {train_config.epochs} "
                                 f"would end before that (give at least {run.start_epoch})")
            if train_config.schedule == "cosine" and planned != train_config.epochs and rank == 0:
                factor = _lr_factor("cosine", run.start_epoch, train_config.epochs)
                warnings.warn(f"{run_dir}: the cosine schedule now spans {train_config.epochs} epochs, not "
                              f"{planned}: epoch {run.start_epoch + 1} starts at {factor:.2f} x the learning rate, "
                              f"not where the {planned}-epoch schedule left it, so the run differs from one of "
                              f"{train_config.epochs} epochs from the start")
        wrote_config = rank == 0 and not (run_dir / CONFIG).exists()
        try:  # (a signal held while the config is written is raised as the write returns: inside)
            if rank == 0:
                write_json(run_dir / CONFIG, config)
                if resume:  # the history as the checkpoint has it: an interruption can fall between their writes
                    write_json(run_dir / METRICS, run.metrics)
            for epoch in range(run.start_epoch, train_config.epochs):
                trained, speed = _train_epoch(run, data, train_config, epoch, progress)
                speed["data_sha256"] = digest  # (what a resumed run compares its data with)
                generators = _generator_states(run)
                if rank == 0:
                    _end_epoch(run, data, epoch, trained, speed, generators, run_dir, progress)
                if world > 1:
                    dist.barrier()
        except BaseException:
            if wrote_config and not (run_dir / CHECKPOINT).exists():
                (run_dir / CONFIG).unlink(missing_ok=True)  # nothing trained: a rerun may change the settings
            raise
        return run.metrics if rank == 0 else []  # the other processes hold only what they resumed from
