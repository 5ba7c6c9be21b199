"""Is folding T samples into the batch what a loop of T forwards computes? Checked once, exactly.

:class:`pdnn.SampledModel` runs T samples as one pass over T x B rows. That is only right if
every row of the folded pass is computed as in a plain forward of its own sample: user code
may read a batch size, build tensors from shapes, reduce over the batch, keep the batch on
another dimension or draw random numbers pdnn does not know about. Instead of guessing from
the code, :func:`fold_mismatch` runs the folded pass and a loop of T plain forwards once on
the real input, with every random draw replaced by a deterministic *probe*: the draw's input
plus an offset that depends on the row's index in the batch of its sample and on the sample
(row ``r`` of sample ``t`` gets offset ``f(t*n + r)``, ``n`` rows per sample), and a second
time with each p-bit standing in as its mean plus that offset. A folded pass
whose draws see the T samples stacked sample-major along dimension 0 receives exactly the
offsets of the loop; sharing one draw among samples, mixing rows of different samples, or
using the wrong batch size gives different outputs (or shapes, or an error), and the caller
falls back. The state the model keeps (buffers, numbers held as attributes) must come out as
the loop leaves it, or as one forward does. The check leaves the model as it found it: that
state (batch-norm running statistics), its other attributes (one set from ``None`` too; a
hook's handle stays with its hook), the random number generators and hooks are untouched
(parameters a forward writes to are not put back).
"""
from __future__ import annotations

import contextlib
import functools
import io
import itertools
import math
import random
import sys
import threading
import warnings
from typing import Callable

import numpy as np
import torch
from torch import nn
from torch.autograd import forward_ad
from torch.utils._pytree import tree_flatten, tree_map, tree_unflatten

from .adaptive import fresh_inputs
from .errors import UsageError
from .functional import repeat_samples
from .nn import DitheredQuantize, HardPBit, PBit, is_stochastic
from .tracing import ModelState, StandIn

# where the check compares outputs: the folded and the looped pass differ only by the order of
# floating-point sums, while a wrong fold moves values by the probes' offsets (order 0.1)
RTOL, ATOL = 1e-4, 1e-4
# how far beyond the absolute tolerance the loop's samples must differ for the check to tell
# anything: a fold's error of a tenth of their differences is then beyond it
TELLING = 10
_GOLDEN, _SQRT2 = 0.6180339887498949, 1.4142135623730951
# where the stand-ins for uniform draws of samples 0, 1, 2 lie (each row adds up to 0.05): on both
# sides of every threshold from 0.05 to 0.93
_UNIFORM_BANDS = (0.0, 0.93, 0.45)
_DROPOUTS = ("dropout", "dropout1d", "dropout2d", "dropout3d", "alpha_dropout", "feature_alpha_dropout")


class _Probe:
    """Deterministic stand-in for every random draw: input + offset of the row's index (with
    ``stand_in="mean"``, for a p-bit or a dithered quantiser, whose outputs lie in [-1, 1], its
    mean + offset; with ``"bits"``, for a p-bit, a Bernoulli draw and a dropout's mask, exact bit
    values; :func:`fold_mismatch` checks under all three).

    A stochastic module's probe also shifts each sample's rows by its own amount, 0, +1, -2, +4,
    ... for samples 0, 1, 2, 3, ...: samples on both sides of a threshold, so that a decision on a
    sum over the batch (``if h.sum() > 0``), which a fold takes once for all samples and a loop
    once per sample, comes out differently. Every offset is scaled by a factor in [0.75, 1.5] that
    varies with the element's place in its row and with the value it stands in for: an offset the
    same for every element would be lost in a layer whose weights sum to zero along a row, a
    layer norm or a softmax (what ``h - h.mean(0)`` folded gets wrong lies along that direction,
    and a sample-aware step from zero weights ends there), and two branches' offsets alike would
    cancel in a difference. The stand-ins for torch's uniform draws stay in [0, 1), where such
    draws live (a ``log`` of them is finite), but put samples 0, 1 and 2 near 0, near 1 and near
    1/2 (:data:`_UNIFORM_BANDS`) and vary along each row: a mask thresholded from a draw shared by
    the samples (``torch.rand_like(h) < 0.8``, a coin ``torch.rand(1) < 0.5``,
    ``argsort(torch.rand(n, L))``) is a different mask for a sample of the loop. Each call of a pass moves the samples to other bands, so that two draws
    subtracted (``torch.rand_like(w) - torch.rand_like(w)``, a triangular dither) do not cancel."""

    def __init__(self, samples: int, stand_in: str = "input"):
        self.samples = samples  # in a folded pass, the rows of sample t are the t-th of ``samples`` blocks
        self.sample: int | None = None  # None: a folded pass; t: the t-th forward of the loop
        self.stand_in = stand_in  # "input", "mean" or "bits" (see fold_mismatch)
        self.draws = 0  # the draws stood in for since the count was last reset
        self.nan_inputs = False  # whether one stood in for a value that was NaN, since then too
        self.uniform_calls = 0  # the uniform (and normal) draws of the pass so far

    def begin(self, sample: int | None) -> None:
        """Stand in for the draws of a pass: folded (None) or the loop's forward of ``sample``."""
        self.sample, self.uniform_calls = sample, 0

    def __call__(self, x: torch.Tensor, repeats: int = 1, shifted: bool = False,
                 mean: Callable | None = None, levels: tuple[float, float] | None = None) -> torch.Tensor:
        self.draws += 1
        self.nan_inputs = self.nan_inputs or has_nan(x)
        x = repeat_samples(x, repeats)  # a p-bit drawing for its input repeated (pdnn.nn.PBit's ``repeats``)
        if levels is not None and self.stand_in == "bits":
            return self._bits(x, *levels)
        rows, sample = self._rows(x)
        offsets = 0.5 * torch.frac(rows * _GOLDEN + 0.1)  # distinct, in [0, 0.5)
        if shifted:
            offsets += torch.where(sample > 0, (-2.0) ** (sample - 1), 0.0)
        offsets = offsets.to(x.dtype).to(x.device).reshape(len(rows), *([1] * (x.dim() - 1)))
        # a factor in [0.75, 1.5] by the element's place and the value it stands in for (not by the
        # order of the calls, which a fold may change: a p-bit fused into the layer that reads it)
        elements = torch.arange(1, math.prod(x.shape[1:]) + 1, dtype=torch.float64, device="cpu")
        place = (0.25 * torch.frac(elements * _SQRT2)).to(x.dtype).to(x.device).reshape(x.shape[1:])
        along = 1 + place + 0.25 * torch.tanh(x)
        return (x if mean is None or self.stand_in == "input" else mean(x).to(x.dtype)) + offsets * along

    def _bits(self, like: torch.Tensor, low: float, high: float) -> torch.Tensor:
        """Stand-ins with a bit's exact values, ``low`` or ``high``, by the element's row (its
        sample and place) and its place in the row: what ``h == 1`` or ``h.count_nonzero()``
        reads, which values near the bits would leave constant."""
        rows, sample = self._rows(like)
        elements = torch.arange(1, math.prod(like.shape[1:]) + 1, dtype=torch.float64, device="cpu")
        code = torch.frac(torch.outer(rows * _GOLDEN + 0.3, elements * _SQRT2) + rows.unsqueeze(1) * _GOLDEN)
        # each sample its own share of highs, 0.25 to 0.75: evenly spread bits gave the samples of a
        # few rows equal counts, which a count pooled over the samples kept
        share = 0.25 + 0.5 * torch.frac(sample * _GOLDEN + 0.2)
        bits = torch.where(code < share.unsqueeze(1), high, low).reshape(like.shape)
        return bits.to(like.dtype).to(like.device)

    def _rows(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The index of each row of ``x`` (along dimension 0) among all samples' rows, and its
        sample: in a folded pass, the t-th of T equal blocks (one block if the rows do not split)."""
        n = x.shape[0] if x.dim() else 1
        start = 0 if self.sample is None else self.sample * n
        rows = torch.arange(start, start + n, dtype=torch.float64, device="cpu")  # MPS has no float64
        per_sample = n // self.samples if self.sample is None and n % self.samples == 0 else n
        return rows, torch.div(rows, max(per_sample, 1), rounding_mode="floor")

    def uniform(self, like: torch.Tensor) -> torch.Tensor:
        """Stand-ins for uniform draws shaped like ``like``: sample t's rows near
        ``_UNIFORM_BANDS[t % 3]``, each row its own offset and, along the row, an order of its own."""
        self.draws += 1
        self.uniform_calls += 1  # each call of a pass its own bands: two draws alike would cancel in a difference
        rows, sample = self._rows(like)
        per_row = like.numel() // len(rows) if len(rows) else 0
        elements = torch.arange(1, per_row + 1, dtype=torch.float64, device="cpu")
        band = ((sample + self.uniform_calls - 1) % len(_UNIFORM_BANDS)).long()
        bands = torch.tensor(_UNIFORM_BANDS, dtype=torch.float64, device="cpu")[band]
        values = ((bands + 0.04 * torch.frac(rows * _GOLDEN + 0.1)).unsqueeze(1)
                  + 0.01 * torch.frac(torch.outer(rows + 1, elements) * _SQRT2))
        return values.reshape(like.shape).to(like.dtype).to(like.device)

    def normal(self, like: torch.Tensor) -> torch.Tensor:
        """Stand-ins for standard normal draws: the uniform ones spread over [-2, 2), so samples 0
        and 1 lie on both sides of every threshold between -1.7 and 1.7."""
        return 4 * (self.uniform(like) - 0.5)

    def module(self, x: torch.Tensor, repeats: int = 1, mean: Callable | None = None,
               levels: tuple[float, float] | None = None) -> torch.Tensor:
        return self(x, repeats, shifted=True, mean=mean, levels=levels)

    def dropout(self, input, p=0.5, training=True, inplace=False):
        if not training or p <= 0:
            return input
        if self.stand_in == "bits":  # what a mask does: zeros and the kept values scaled (p = 1: all zeros)
            self.draws += 1
            return input * self._bits(input, 0.0, 1.0 / (1.0 - p) if p < 1 else 0.0)
        return self(input)

    # torch's random functions, as a model calls them: ``torch.randn_like(x)``, ``torch.rand(n, h)``
    def rand_like(self, input, *, generator=None, **kwargs):
        return self.uniform(torch.zeros_like(input, **kwargs))

    def randn_like(self, input, *, generator=None, **kwargs):
        return self.normal(torch.zeros_like(input, **kwargs))

    def rand(self, *size, generator=None, out=None, **kwargs):
        return self.uniform(torch.zeros(*size, **kwargs))

    def randn(self, *size, generator=None, out=None, **kwargs):
        return self.normal(torch.zeros(*size, **kwargs))

    def bernoulli(self, input, *args, generator=None, **kwargs):
        return self(input.float() if not input.is_floating_point() else input, levels=(0.0, 1.0))


class _PerThread(StandIn):
    """What stands in for a function (``torch.rand``) or a module's ``forward`` while checks run:
    the stand-in of the calling thread's innermost check, else the original. One per target,
    put in place by the first check and taken away by the last, so that checks in several
    threads at once neither see each other's stand-ins nor, each putting back what it found,
    leave one in place for good (two threads' first calls of samplers of one model had left the
    model's p-bits deterministic); and no lock is held while the model runs, which may wait for
    work in other threads."""

    def __init__(self, original: Callable | None, module: nn.Module | None = None):
        self.original, self.module = original, module  # (a module's own forward, or None: its class's)
        self.stand_ins: dict[int, list[Callable]] = {}

    def __call__(self, *args, **kwargs):
        mine = self.stand_ins.get(threading.get_ident())
        if mine:
            return mine[-1](*args, **kwargs)
        if self.original is None:
            return type(self.module).forward(self.module, *args, **kwargs)
        return self.original(*args, **kwargs)


_standing_in: dict[tuple[int, str], _PerThread] = {}  # by (id of the owner, attribute name)
_standing_in_lock = threading.Lock()


def _stand_in(owner, name: str, stand_in: Callable) -> None:
    """Let ``stand_in`` take the place of ``owner.name`` in this thread (see :class:`_PerThread`)."""
    with _standing_in_lock:
        per_thread = _standing_in.get((id(owner), name))
        if per_thread is None:
            module = owner if isinstance(owner, nn.Module) else None
            original = vars(owner).get(name) if module is not None else getattr(owner, name)
            per_thread = _standing_in[id(owner), name] = _PerThread(original, module)
            setattr(owner, name, per_thread)
        per_thread.stand_ins.setdefault(threading.get_ident(), []).append(stand_in)


def _stand_down(owner, name: str) -> None:
    """Undo this thread's last :func:`_stand_in` for ``owner.name``; the last one puts the original back."""
    with _standing_in_lock:
        per_thread = _standing_in[id(owner), name]
        mine = per_thread.stand_ins[threading.get_ident()]
        mine.pop()
        if not mine:
            del per_thread.stand_ins[threading.get_ident()]
        if not per_thread.stand_ins:
            del _standing_in[id(owner), name]
            if per_thread.module is not None and per_thread.original is None:
                del owner.forward
            else:
                setattr(owner, name, per_thread.original)


class _Still:
    """Stand-ins for every draw that depend on no row's place in the batch: a stochastic module
    and a dropout pass their input on; a uniform draw is ``u[e]``, spread over (0.05, 0.95) along
    the elements of a row from ``phase`` on and the same in every row (a normal one
    ``4 (u - 1/2)``), so that an argument read through a draw (a noise scale, a drop probability
    per class) still shows; a Bernoulli one is its probability. A call on some rows of a batch
    then computes what the whole batch does on them."""

    def __init__(self, phase: float = 0.0):
        self.phase = phase

    def module(self, x: torch.Tensor, repeats: int = 1, mean: Callable | None = None,
               levels: tuple[float, float] | None = None) -> torch.Tensor:
        return repeat_samples(x, repeats)

    def dropout(self, input, p=0.5, training=True, inplace=False):
        return input

    def uniform(self, like: torch.Tensor) -> torch.Tensor:
        per_row = like[0].numel() if like.dim() else 1
        row = 0.05 + 0.9 * torch.frac(torch.arange(per_row, dtype=torch.float64, device="cpu") * _GOLDEN + self.phase)
        shape = like.shape[1:] if like.dim() else ()
        return row.reshape(shape).expand_as(like).to(like.dtype).to(like.device)

    def rand_like(self, input, *, generator=None, **kwargs):
        return self.uniform(torch.zeros_like(input, **kwargs))

    def randn_like(self, input, *, generator=None, **kwargs):
        return 4 * (self.uniform(torch.zeros_like(input, **kwargs)) - 0.5)

    def rand(self, *size, generator=None, out=None, **kwargs):
        return self.uniform(torch.zeros(*size, **kwargs))

    def randn(self, *size, generator=None, out=None, **kwargs):
        return 4 * (self.uniform(torch.zeros(*size, **kwargs)) - 0.5)

    def bernoulli(self, input, *args, generator=None, **kwargs):
        return input.float() if not input.is_floating_point() else input


# torch's draws of a size given to them, which the probes do not stand in for: one whose result is
# not as long as the batch (a coin per forward, `torch.randint(0, 20, ())`) is drawn once for all
# samples of a folded pass, or fixed while fx traces. A coin that seldom comes up (stochastic depth)
# agreed with the loop in the check's few samples and was then frozen for every sample.
_SIZED_DRAWS = ("randint", "randint_like", "randperm", "normal", "multinomial", "poisson", "binomial")


def _noted(probe, name: str, original: Callable, *args, **kwargs):
    """``original``'s draw, its name kept in ``probe.unfoldable`` where it has no row per input of
    the batch the check runs (``probe.batch``; see :data:`_SIZED_DRAWS`)."""
    drawn = original(*args, **kwargs)
    batch = getattr(probe, "batch", None)
    if batch is not None and isinstance(drawn, torch.Tensor) and (drawn.dim() == 0 or drawn.shape[0] != batch):
        probe.unfoldable.add(name)
    return drawn


def _global_random_states() -> tuple:
    """Python's and numpy's global random states: a forward that draws from either (a coin per
    forward, by any function of theirs, however imported) changes them."""
    numpy_state = np.random.get_state()
    return random.getstate(), numpy_state[1].tobytes(), numpy_state[2:]


@contextlib.contextmanager
def _probed(model: nn.Module, probe: _Probe | _Still):
    """Replace pdnn's stochastic modules, torch's dropout functions and its random functions
    ``rand``, ``randn``, ``rand_like``, ``randn_like``, ``bernoulli`` by ``probe`` (other random
    calls -- tensor methods such as ``x.normal_()`` -- stay random, so a fold that depends on them
    fails the check; a draw of :data:`_SIZED_DRAWS`' without a row per input is noted in
    ``probe.unfoldable``, so that one that flips a rare coin fails it too). The replacements act
    in the calling thread only
    (:class:`_PerThread`): a module that runs its layers in a thread of its own is checked with
    real draws there, fails the check, and is sampled by a loop."""
    with _compiled_modules_eager():
        replaced = []  # (owner, name, stand-in)
        for m in [m for m in model.modules() if is_stochastic(m)]:
            # (a subclass's own mean may ask for more, or lie elsewhere)
            bounded = isinstance(m, (PBit, DitheredQuantize)) and type(m).mean in (PBit.mean, DitheredQuantize.mean)
            replaced.append((m, "forward", functools.partial(probe.module, mean=m.mean if bounded else None,
                                                               levels=_levels(m))))
        replaced += [(nn.functional, name, probe.dropout) for name in _DROPOUTS]
        replaced += [(torch, name, getattr(probe, name))
                     for name in ("rand_like", "randn_like", "rand", "randn", "bernoulli")]
        probe.unfoldable = set()  # the draws of _SIZED_DRAWS without a row per input seen
        replaced += [(torch, name, functools.partial(_noted, probe, f"torch.{name}", _original(torch, name)))
                     for name in _SIZED_DRAWS if hasattr(torch, name)]
        rule_map_before = _dynamo_rule_map_size()
        done = []
        try:
            for owner, name, stand_in in replaced:
                _stand_in(owner, name, stand_in)
                done.append((owner, name))
            yield probe
        finally:
            for owner, name in reversed(done):
                _stand_down(owner, name)
            if _dynamo_rule_map_size() and not rule_map_before:  # made while torch.rand was the probe
                sys.modules["torch._dynamo.trace_rules"].get_torch_obj_rule_map.cache_clear()


def _original(owner, name: str) -> Callable:
    """``owner.name`` as it is outside every check (a check in this thread may stand in for it)."""
    found = getattr(owner, name)
    return found.original if isinstance(found, _PerThread) else found


def _levels(module: nn.Module) -> tuple[float, float] | None:
    """The two values a one-bit stochastic module outputs (None: other modules)."""
    if isinstance(module, HardPBit):
        return module.min_val, module.max_val
    if isinstance(module, PBit) or (isinstance(module, DitheredQuantize) and module.bits == 1):
        return (-1.0, 1.0) if module.mode == "bipolar" else (0.0, 1.0)
    return None


_eager = {"lock": threading.Lock(), "checks": 0, "stance": None}  # checks holding torch.compile's stance


@contextlib.contextmanager
def _compiled_modules_eager():
    """A context in which ``torch.compile``d modules run eagerly: compiled, every stand-in would be
    a recompile, and at dynamo's limit the module would stay eager for good. dynamo's stance is
    the process's: the first of several threads' checks sets it, the last one puts it back (each
    putting back what it saw left it eager); meanwhile other threads' compiled code runs eagerly
    too. (Only where dynamo is loaded: importing it takes a second, and nothing can have been
    compiled without it.)"""
    if "torch._dynamo" not in sys.modules:
        yield
        return
    with _eager["lock"]:
        if not _eager["checks"]:
            _eager["stance"] = torch.compiler.set_stance("force_eager")
            _eager["stance"].__enter__()
        _eager["checks"] += 1
    try:
        yield
    finally:
        with _eager["lock"]:
            _eager["checks"] -= 1
            if not _eager["checks"]:
                _eager["stance"].__exit__(None, None, None)


def _dynamo_rule_map_size() -> int:
    """The entries of torch.compile's table of torch's functions (0 until it is made). It is made
    once, from the functions' identities: made while the check's probes stand in for
    ``torch.rand`` and the like (fx imports the compiler when a folded graph raises), every later
    ``torch.compile`` of a call to them would fail, so the check clears a table it saw made."""
    rules = sys.modules.get("torch._dynamo.trace_rules")
    cached = getattr(rules, "get_torch_obj_rule_map", None)
    return cached.cache_info().currsize if hasattr(cached, "cache_info") else 0


_HOOKS = ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks")


def own_hooks(module: nn.Module) -> bool:
    """Whether ``module`` has hooks of its own, forward or backward."""
    return any(getattr(module, name, None) for name in _HOOKS)


def hook_kinds(module: nn.Module | None = None) -> tuple[bool, ...]:
    """Which kinds of hook ``module`` has (or, for ``None``, are registered for every module):
    what a plan's check depends on. Not which functions: the check runs with them off, and a
    loop that registers and removes a hook on every call must not make a plan on every call."""
    owner = torch.nn.modules.module if module is None else module
    prefix = "_global" if module is None else ""
    return tuple(bool(getattr(owner, prefix + name, None)) for name in _HOOKS)


def has_hooks(module: nn.Module) -> bool:
    """Whether a call of ``module`` runs hooks, forward or backward: its own, or those registered
    for every module (``register_module_forward_hook``, ``register_module_full_backward_hook``,
    ...). A wrapper that would bypass the module then calls it: a backward hook, too, fires only
    where the module itself is called."""
    return own_hooks(module) or any(hook_kinds())


def runs_eagerly() -> bool:
    """Whether ops run one by one on real tensors: not under a ``torch.func`` transform and not
    while ``torch.compile`` traces. The wrappers of a folded graph take their own kernels only then."""
    return not torch._C._are_functorch_transforms_active() and not torch.compiler.is_compiling()


def carries_tangents(model: nn.Module, *values) -> bool:
    """Whether a forward-mode tangent (``torch.autograd.forward_ad``) rides on ``values`` (tensors
    inside containers too) or on the model's parameters and buffers: the folded graph's own
    autograd functions have no forward-mode rule. Asked of the tensors only within a dual level."""
    if forward_ad._current_level < 0:  # (the level dual_level() opens; -1 outside: no cost then)
        return False
    tensors = [v for v in tree_flatten(values)[0] if isinstance(v, torch.Tensor)]
    return any(forward_ad.unpack_dual(t).tangent is not None
               for t in (*tensors, *model.parameters(), *model.buffers()))


def batched_by_autograd(grad: torch.Tensor) -> bool:
    """Whether a backward pass runs under a vmap: that of ``torch.autograd.grad(...,
    is_grads_batched=True)`` (and so of ``torch.autograd.functional.jacobian(...,
    vectorize=True)``), or a ``torch.func`` transform around ``autograd.grad``. Its gradients are
    batched tensors that cannot be asked for a memory layout nor be read by numba, so the
    backward passes take torch's plain operations."""
    return torch._C._functorch.is_legacy_batchedtensor(grad) or torch._C._are_functorch_transforms_active()


@contextlib.contextmanager
def suspended_hooks(model: nn.Module):
    """The model's hooks, forward and backward, and those registered for every module, switched
    off (the check's passes and a trace are not calls the user's hooks should see)."""
    registry = torch.nn.modules.module
    dicts = [getattr(m, name) for m in model.modules() for name in _HOOKS]
    dicts += [getattr(registry, "_global" + name) for name in _HOOKS if hasattr(registry, "_global" + name)]
    hooks = [(registered, registered.copy()) for registered in dicts]
    try:
        for registered, _ in hooks:
            registered.clear()
        yield
    finally:
        for registered, saved in hooks:
            registered.update(saved)


@contextlib.contextmanager
def _restored(model: nn.Module, device: torch.device):
    """Restore the model's state and the random state after a run that keeps the user's hooks."""
    state = ModelState(model)
    try:
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            yield state
    finally:
        state.restore()


@contextlib.contextmanager
def _untouched(model: nn.Module, device: torch.device):
    """Restore the model's state (buffers and attributes: :class:`ModelState`), hooks and the
    random state after the check: the user's own hooks must not see the probes, nor batch-norm
    statistics count the check's passes. The probes' warnings are not shown either: the sampled
    pass itself shows the model's own. The passes run in the caller's gradient mode, as the
    sampled pass will (a forward may register a gradient hook). Yields the saved state."""
    state = ModelState(model)
    devices = [device] if device.type == "cuda" else []
    try:
        with suspended_hooks(model), torch.random.fork_rng(devices=devices), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield state
    finally:
        state.restore()


def unfold(out, samples: int, batch: int):
    """Folded outputs (tensors ``[T*B, ...]``, possibly in tuples, lists, dicts) as ``[T, B, ...]``;
    ``None`` if a tensor does not have T x B rows."""
    if isinstance(out, torch.Tensor):  # the usual output, without the tree's cost
        return out.reshape(samples, batch, *out.shape[1:]) if out.dim() and out.shape[0] == samples * batch else None
    leaves, spec = tree_flatten(out)
    unfolded = []
    for leaf in leaves:
        if isinstance(leaf, torch.Tensor):
            if leaf.dim() == 0 or leaf.shape[0] != samples * batch:
                return None
            leaf = leaf.reshape(samples, batch, *leaf.shape[1:])
        unfolded.append(leaf)
    return tree_unflatten(unfolded, spec)


class SamplesDiffer(TypeError):
    """The T outputs differ where they cannot be stacked: a plain value, or the structure."""


def stack(outs: list):
    """The outputs of T forwards, each tensor stacked into ``[T, ...]``. Other values must be plain
    (None, numbers, strings) and equal in every sample (else :class:`SamplesDiffer`); anything else
    is a ``TypeError`` rather than one sample's value standing for all of them."""
    if isinstance(outs[0], torch.Tensor):
        return _stacked_tensors("the model's output", outs)
    flat = [tree_flatten(o) for o in outs]
    spec = flat[0][1]
    if any(other != spec for _, other in flat[1:]):
        raise SamplesDiffer(f"the model's outputs differ in structure between samples: {spec} and then "
                            f"{next(other for _, other in flat[1:] if other != spec)}")
    return tree_unflatten([_stacked(i, column) for i, column in enumerate(zip(*(leaves for leaves, _ in flat)))],
                          spec)


_PLAIN = (type(None), bool, int, float, complex, str, bytes)


def _stacked_tensors(what: str, tensors) -> torch.Tensor:
    """The samples' tensors stacked, or a :class:`SamplesDiffer` naming ``what`` if their shapes
    differ (rows picked by the bits, ``h[h.sum(-1) > 0]``): no mean or stack over samples exists."""
    shapes = [tuple(t.shape) for t in tensors]
    if any(shape != shapes[0] for shape in shapes):
        other = next(i for i, shape in enumerate(shapes) if shape != shapes[0])
        raise SamplesDiffer(f"{what} has shape {shapes[0]} in sample 0 and {shapes[other]} in sample {other}: "
                            "samples of different shapes cannot be stacked or averaged; return a tensor whose "
                            "shape does not depend on the draws (the mask, say, not the rows it picks)")
    return torch.stack(tensors)


def _stacked(i: int, column: tuple):
    first = column[0]
    if isinstance(first, torch.Tensor):
        return _stacked_tensors(f"output {i} of the model", column)
    if not isinstance(first, _PLAIN):
        kind = type(first).__name__
        raise TypeError(f"output {i} of the model is of type {kind}: SampledModel combines tensors, alone or in "
                        f"tuples, lists, dicts and namedtuples (other values may be None, numbers or "
                        f"strings); return the {kind}'s tensors in one of those")
    if any(v != first for v in column[1:]):
        raise SamplesDiffer(f"output {i} of the model is a Python {type(first).__name__} that differs between "
                            f"samples ({first!r}, then {next(v for v in column if v != first)!r}); return it as a "
                            "tensor")
    return first


def has_nan(x: torch.Tensor) -> bool:
    """Whether a float or complex tensor holds a NaN."""
    return (x.is_floating_point() or x.is_complex()) and bool(x.isnan().any())


class Inconclusive(Exception):
    """The check's loop drew random numbers, yet every sample of it gave the same outputs (within
    ``TELLING`` times the check's absolute tolerance): no rows, outputs all NaN (a NaN in one row spread by a sum over the
    batch), weights that hide the stochastic part (an output layer initialised to zero), or
    outputs that do not follow the draws (an argmax). Any fold would pass such a check, so it
    decides nothing."""


def _samples_alike(looped) -> bool:
    """Whether every sample of a loop's stacked outputs ``[T, ...]`` is the first's within
    ``TELLING`` times the check's absolute tolerance, scaled by their spread, and its relative one
    (NaN alike NaN): a fold's error is a part of the samples' differences (a centring over all
    samples moves each by a part of their spread), so samples apart by about the tolerance would
    let it pass unseen. (Values other than tensors are equal in every sample, or they would not
    stack.)"""
    for y in tree_flatten(looped)[0]:
        if not isinstance(y, torch.Tensor) or y.dim() == 0 or len(y) < 2:
            continue
        first = y[:1].expand_as(y)
        if y.is_floating_point() or y.is_complex():
            spread = (y - first).detach().abs().nan_to_num(0, 0, 0)
            spread = spread.max().item() if spread.numel() else 0.0
            if not torch.allclose(y, first, rtol=RTOL, atol=TELLING * ATOL * max(1.0, spread), equal_nan=True):
                return False
        elif not torch.equal(y, first):
            return False
    return True


def _scale(y: torch.Tensor) -> float:
    """The magnitude the check's absolute tolerance grows with: the largest of the loop's outputs
    ``y`` (``[T, ...]``) among those that differ between samples, where any do. A value the same
    in every sample (a class masked with -1e9) would otherwise set the tolerance for the others."""
    magnitude = y.detach().abs().nan_to_num(0, 0, 0)
    if y.dim() and len(y) > 1:
        varies = (y.detach() != y.detach()[:1]).any(0)
        if varies.any():
            return magnitude[:, varies].max().item()
    return magnitude.max().item() if y.numel() else 0.0


def _difference(folded, looped) -> str | None:
    """Why ``folded`` is not ``looped`` (None if they agree)."""
    if folded is None:
        return "an output does not have T x B rows"
    a, spec_a = tree_flatten(folded)
    b, spec_b = tree_flatten(looped)
    if spec_a != spec_b:
        return "the output's structure differs"
    for i, (x, y) in enumerate(zip(a, b)):
        if not isinstance(x, torch.Tensor) or not isinstance(y, torch.Tensor):
            if type(x) is not type(y) or x != y:
                return f"output {i} is {x!r} folded but {y!r} in a loop"
            continue
        if x.dtype != y.dtype:
            return f"output {i} is {x.dtype} folded but {y.dtype} in a loop"
        if x.shape != y.shape:
            return f"output {i} has per-sample shape {tuple(x.shape[1:])} folded but {tuple(y.shape[1:])} in a loop"
        if x.is_floating_point() or x.is_complex():
            if not torch.allclose(x, y, rtol=RTOL, atol=ATOL * max(1.0, _scale(y)), equal_nan=True):
                return f"output {i} differs from a loop of forwards"
        elif not torch.equal(x, y):
            return f"output {i} differs from a loop of forwards"
    return None


def fold_mismatch(model: nn.Module, folded_pass: Callable[[], object], plain_pass: Callable[[], object],
                  samples: int, batch: int, device: torch.device) -> str | None:
    """Run ``folded_pass`` (T samples folded into one pass) and T x ``plain_pass`` under probes;
    return why they differ, or None if the fold computes what the loop does.

    The model's state (buffers, numbers kept as attributes) must end as T forwards leave it (a
    batch norm among the samples keeps per-sample statistics) or as one forward does (what runs
    once for all samples, such as a batch norm in the deterministic prefix, updates it once).
    An error of the folded pass is a difference; an error of the plain pass is the model's own
    and propagates.

    Checked three times: with every draw standing in as its input plus offsets, with p-bits (and
    dithered quantisers) standing in as their mean plus offsets, and with p-bits, Bernoulli draws
    and dropout masks standing in as exact bits. A fold that computes what the loop does agrees
    under any stand-in computed row by row; each stand-in alone misses a mix of the samples
    another shows. The input alone: offsets added to a pre-activation near 5000 in a 16-bit
    float round away, and one element of 1e4 raises the tolerance past a mix in the others. The
    mean alone: a p-bit's mean saturated on the stand-ins' values (after weights of 1000) is flat
    where the real bits are not. Both: values near a bit are never one, so a statistic of exact
    comparisons (``(h == 1).float().mean()``) is constant under them.

    Raises :class:`Inconclusive` where no run could tell: its loop drew, but every sample gave
    the same outputs (:func:`_samples_alike`; a model that draws nothing is checked on its shapes
    and batch code)."""
    told, spoilt = False, False
    for stand_in in ("input", "mean", "bits"):
        difference, alike, nan = _mismatch(model, folded_pass, plain_pass, samples, batch, device, stand_in)
        if difference is not None:
            return difference
        # exact bits do not follow their input: where the other stand-ins came out NaN, or stood
        # in for a NaN (a NaN row spread by a sum over the batch), samples that differ under them
        # tell nothing of what feeds a p-bit; elsewhere they tell what the others cannot (bits
        # used as a mask)
        told = told or (not alike and not (stand_in == "bits" and spoilt))
        spoilt = spoilt or nan
    if not told:
        raise Inconclusive("every sample of the check's loop gave the same outputs")
    return None


def _mismatch(model: nn.Module, folded_pass: Callable[[], object], plain_pass: Callable[[], object],
              samples: int, batch: int, device: torch.device, stand_in: str) -> tuple[str | None, bool, bool]:
    """Why the fold differs from the loop under one probe (None if it does not), whether the
    loop's samples drew yet came out alike, which tells nothing, and whether its outputs hold a
    NaN or a draw stood in for a NaN (which ``torch.nan_to_num`` may hide from the outputs)."""
    with _untouched(model, device) as state, _probed(model, _Probe(samples, stand_in)) as probe:
        try:
            with contextlib.redirect_stderr(io.StringIO()):  # fx prints the graph's line of an error
                folded = unfold(folded_pass(), samples, batch)
        except Exception as err:  # any error of the rewritten graph means: do not fold
            folded, error = None, f"the folded pass raised {type(err).__name__}: {err}"
        else:
            error = None
        after_fold = ModelState(model)
        state.restore()
        looped, probe.draws, probe.nan_inputs, probe.batch = [], 0, False, batch
        states = _global_random_states()
        for t in range(samples):
            probe.begin(t)
            looped.append(plain_pass())
            if t == 0:
                unlike_one = after_fold.changed(RTOL, ATOL, containers=False)
        if _global_random_states() != states:  # (or another thread drew meanwhile: a loop, slower, never wrong)
            probe.unfoldable.add("Python's or numpy's global random functions")
        probe.batch = None
        moved = [name for name in after_fold.changed(RTOL, ATOL, containers=False) if name in unlike_one]
    drew = probe.draws > 0
    if probe.unfoldable:
        return (f"its forward draws with {', '.join(sorted(probe.unfoldable))}, which a folded pass may draw once "
                "for all samples (a coin per forward; draws as long as the batch, torch.rand_like or randn_like, "
                "fold)"), False, False
    try:
        looped = stack(looped)
    except SamplesDiffer as err:  # the probes' samples are not real ones: only a loop of real forwards can tell
        return f"an output differs between the check's samples where they cannot be stacked ({err})", False, False
    alike = drew and _samples_alike(looped)
    nan = probe.nan_inputs or any(isinstance(y, torch.Tensor) and has_nan(y) for y in tree_flatten(looped)[0])
    difference = error or _difference(folded, looped)
    if difference is None and moved:
        difference = f"it leaves {', '.join(moved[:3])} other than one forward or T forwards do"
    return difference, alike, nan


# the most tensor arguments as long as the batch whose cuts are each tried (2**n combinations)
MAX_SPLIT_ARGUMENTS = 6
# where the stand-ins' spread of uniform draws starts, one run each: a threshold per class that
# no element's draw of one spread separates is separated by another's
_STILL_PHASES = (0.0, 1 / 3, 2 / 3)


def kept_whole(model: nn.Module, x: torch.Tensor, args: tuple, leaves: list[torch.Tensor]) -> frozenset[int] | None:
    """Which of ``leaves`` -- tensor arguments in ``args`` as long as the batch ``x`` -- the model
    reads whole rather than a row per input: those not cut in a combination for which ``model``
    on the batch without its first input, without its last, and in reverse order, gives those
    rows of the whole batch's output, the cut arguments' rows taken alike (the other arguments
    passed whole). Every draw is a stand-in that depends on no row's place (:class:`_Still`).
    Dropping an input tells a per-class tensor (whose length must stay) from a per-input one;
    dropping either end, and reversing, tell a mask the model slices itself (``mask[:n]``,
    ``mask[-n:]``) from one it is given cut. Where several combinations fit, and an argument
    any two of them part has rows that differ, nothing can be told (a per-input keep probability
    the model slices itself and a per-class one, both read only through a draw, look alike at
    two inputs and two classes: no spread of stand-ins parts every pair of thresholds; an
    argument the model does not read fits either way): ``None``. Where those rows are all equal,
    cut or whole give the same values: the fewest cuts are taken. ``None`` too where no
    combination fits (or more than :data:`MAX_SPLIT_ARGUMENTS` arguments). An error the model
    raises on the whole batch with its own draws and hooks is raised."""
    if len(leaves) > MAX_SPLIT_ARGUMENTS:
        return None
    index = {id(leaf): i for i, leaf in enumerate(leaves)}
    n = len(x)
    subsets = [torch.arange(1, n, device=x.device), torch.arange(n - 1, device=x.device),
               torch.arange(n - 1, -1, -1, device=x.device)]
    everything = frozenset(range(len(leaves)))

    def run(rows: torch.Tensor | None, cut: frozenset[int]):  # on fresh inputs, as the rounds run
        given = fresh_inputs((x, *args), lambda a: rows if a is x or index.get(id(a)) in cut else None)
        with contextlib.redirect_stderr(io.StringIO()):
            return tree_flatten(model(*given))[0]

    def fits(cut: frozenset[int]) -> bool:  # under every spread
        for phase, whole in zip(_STILL_PHASES, wholes):
            with _untouched(model, x.device), _probed(model, _Still(phase)):
                try:
                    if not all(_rows_agree(whole, run(rows, cut), rows) for rows in subsets):
                        return False
                except Exception:  # a call the model cannot take: not this combination
                    return False
        return True

    wholes = []  # the whole batch's output under each spread of the draws' stand-ins
    for phase in _STILL_PHASES:
        with _untouched(model, x.device), _probed(model, _Still(phase)):
            try:
                wholes.append(run(None, frozenset()))
            except Exception:
                break
    if len(wholes) < len(_STILL_PHASES):  # the model's own error is raised; one the stand-ins cause tells nothing
        with _untouched(model, x.device), contextlib.redirect_stderr(io.StringIO()):
            try:
                model(*_copies(x, args))
            except Exception as err:
                without = err
            else:
                without = None
        with _restored(model, x.device):
            model(*_copies(x, args))
        if without is not None:
            raise UsageError(f"{type(model).__name__} runs only with its hooks ({type(without).__name__} without "
                             "them), and the checks of a sampled model run it without them: a lazy module "
                             "initialises itself in one (call the model once first), or a forward pre-hook "
                             "supplies an argument (put what it does in the forward)")
        return None
    fitting = [everything - cut for size in range(len(leaves) + 1)
               for cut in map(frozenset, itertools.combinations(everything, size)) if fits(cut)]
    if len(fitting) < 2:
        return fitting[0] if fitting else None
    # harmless only where every argument that any two of them part has equal rows
    parted = [leaves[i] for i in frozenset().union(*(f ^ fitting[0] for f in fitting))]
    return fitting[0] if all(torch.equal(a, a[:1].expand_as(a)) for a in parted) else None


def rows_apart(model: nn.Module, parts: list[torch.Tensor]) -> bool | None:
    """Whether ``model`` gives each batch of ``parts`` the rows it gives it within all of them
    joined into one batch, every draw a stand-in that depends on no row's place (:class:`_Still`):
    False where an input's output depends on the other inputs (a statistic of the batch,
    ``h - h.mean(0)``), or is not a row of its own (an output with another number of rows than
    the batch, or none: it had been taken for unseen draws, and the batch split; or a value that
    is no tensor and differs, ``x.shape[0]``), which splitting a batch changes. True too where
    the model draws with a function the stand-ins do not replace (``torch.normal``, the dropout
    inside ``scaled_dot_product_attention``): two runs on the same batch differ, so rows cannot
    be compared, and such a model is taken as its rows are apart, as before this check.
    None where it cannot be told yet: the model fails (its call raises it again), or an output
    holds a NaN."""
    joined = torch.cat(parts)
    with _untouched(model, joined.device), _probed(model, _Still()), contextlib.redirect_stderr(io.StringIO()):
        try:  # (in one context: the random state goes on from each run to the next)
            whole, again, *alone = (tree_flatten(model(batch.clone()))[0] for batch in (joined, joined, *parts))
        except Exception:
            return None
    if any(isinstance(y, torch.Tensor) and has_nan(y) for y in whole):
        return None
    if any(isinstance(y, torch.Tensor) and (not y.dim() or len(y) != len(joined)) for y in whole):
        return False  # not a row per input (pairs of rows, a sequence-first batch): the split would cut
    if not _rows_agree(whole, again, torch.arange(len(joined), device=joined.device)):
        return True
    starts = itertools.accumulate((len(part) for part in parts), initial=0)
    return all(_rows_agree(whole, out, torch.arange(start, start + len(part), device=joined.device))
               and _values_agree(whole, out) for part, out, start in zip(parts, alone, starts))


def _values_agree(whole: list, part: list) -> bool:
    """Whether the outputs' leaves that are no tensors (a count, a name) are the same for a part
    as for the whole batch: a split keeps the first pass's (``x.shape[0]`` came out a pass's size).
    A value that changes from call to call (a counter, a clock) cannot be told from one that
    depends on the batch (``f"{len(x)}-{calls}"``), so it keeps the batch in one pass too."""
    return all(isinstance(a, torch.Tensor) or _same_value(a, b) for a, b in zip(whole, part))


def _same_value(a, b) -> bool:
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True  # (a constant NaN is the same value in every pass)
    try:
        return bool(a == b)
    except Exception:  # (an array's == has no one truth value: the same object only, to be safe)
        return a is b


def draws_unseen(model: nn.Module, x: torch.Tensor, args: tuple) -> bool:
    """Whether two runs of ``model`` under the same stand-ins (:class:`_Still`) give other outputs:
    it draws with a random function the probes do not replace (``torch.normal``, ``torch.randint``,
    a tensor's ``uniform_``, ``normal_`` or ``bernoulli``), so that :func:`kept_whole` cannot tell
    a cut argument from the draws' change."""
    with _untouched(model, x.device), _probed(model, _Still()), contextlib.redirect_stderr(io.StringIO()):
        try:  # (in one context: the random state goes on from the first run to the second)
            first, second = (tree_flatten(model(*_copies(x, args)))[0] for _ in range(2))
        except Exception:
            return False
    return not _rows_agree(first, second, torch.arange(len(x), device=x.device))


def changed_inputs(model: nn.Module, x: torch.Tensor, args: tuple, kwargs: dict | None = None) -> list[torch.Tensor]:
    """The input tensors ``model`` changes in place (run once on copies, under stand-ins)."""
    kwargs = kwargs or {}
    copied, given = fresh_inputs(((x, *args), kwargs), lambda a: None), ((x, *args), kwargs)
    with _untouched(model, x.device), _probed(model, _Still()), contextlib.redirect_stderr(io.StringIO()):
        try:
            model(*copied[0], **copied[1])
        except Exception:  # the call itself will say it
            return []
    before, after = ([v for v in tree_flatten(values)[0] if isinstance(v, torch.Tensor)] for values in (given, copied))
    return [a for a, b in zip(before, after) if _changed(a, b)]


def share_memory(tensors: list[torch.Tensor], changed: list[torch.Tensor] | None = None) -> bool:
    """Whether a tensor of ``changed`` (default: any of ``tensors``) and another distinct tensor of
    ``tensors`` reach one memory (a view or a slice of it): their spans of it overlap (interleaved
    slices too, conservatively). Tensors without memory of their own (under ``torch.func``
    transforms, ``torch.export``) count as apart."""
    spans = {}
    for t in tensors:
        try:
            start = t.data_ptr()
        except (NotImplementedError, RuntimeError):  # (a BatchedTensor, TensorWrapper or FakeTensor)
            continue
        if t.numel():
            end = start + (1 + sum((n - 1) * s for n, s in zip(t.shape, t.stride()))) * t.element_size()
            spans[id(t)] = (t.device, start, end)
    ours = spans if changed is None else {id(t): spans[id(t)] for t in changed if id(t) in spans}
    return any(key != other and a[0] == b[0] and a[1] < b[2] and b[1] < a[2]
               for key, a in ours.items() for other, b in spans.items())


def _changed(given: torch.Tensor, after: torch.Tensor) -> bool:
    if given.is_floating_point() or given.is_complex():  # (a NaN is no change: the call names it)
        return not torch.allclose(after, given, rtol=0.0, atol=0.0, equal_nan=True)
    return not torch.equal(after, given)


def _copies(x: torch.Tensor, args: tuple) -> tuple:
    """``(x, *args)`` copied for a check's run of the model (:func:`pdnn.adaptive.fresh_inputs`)."""
    return fresh_inputs((x, *args), lambda a: None)


def _rows_agree(whole: list, part: list, rows: torch.Tensor) -> bool:
    if len(whole) != len(part):
        return False
    for a, b in zip(whole, part):
        if isinstance(a, torch.Tensor) != isinstance(b, torch.Tensor):
            return False
        if isinstance(a, torch.Tensor) and (not a.dim() or b.shape != (len(rows), *a.shape[1:])
                                            or _difference(a[rows], b) is not None):
            return False
    return True


def first_rows(value, batch: int, rows: int):
    """``value`` with its tensors that have ``batch`` rows cut to their first ``rows`` (a tensor
    given twice to one cut, which the passes' copies then keep one)."""
    cuts = {}

    def cut(v):
        if isinstance(v, torch.Tensor) and v.dim() and v.shape[0] == batch:
            return cuts.setdefault(id(v), v[:rows])
        return v

    return tree_map(cut, value)
