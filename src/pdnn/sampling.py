"""Run T samples of a network in one batched pass, and the sample-aware training loss.

How it works. The model is traced once with ``torch.fx`` (pdnn layers and standard layers are
kept as leaves). Every node that depends on a stochastic module (a p-bit, a noise injector) is in
the *stochastic region*; everything else is the *deterministic prefix*. The graph is rewritten so
that

* ``aggregate="network"`` (the p-DNN): the prefix runs once at batch size B; each prefix tensor
  that enters the stochastic region is repeated T times along the batch dimension (samples are
  folded into the batch, sample-major), so the rest of the network runs T independent samples in
  one pass at batch size T*B, reading every weight once for all T samples. The output is unfolded
  to ``[T, B, ...]`` and reduced.
* ``aggregate="layer"`` (the random bit-stream baseline): each stochastic module receives its
  input repeated T times, and its T outputs are averaged into one multi-bit estimate of its mean
  before the next layer sees them; the rest of the network runs at batch size B.

Folding is only right if every folded row is computed as in a forward of its own sample; user
code that reads a batch size, keeps batch statistics or mixes rows can break that. Batch sizes
read from the inputs are recomputed after folding, batch norms in the stochastic region keep
per-sample statistics, and each fold is checked once, exactly, against a loop of forwards
(:mod:`pdnn.foldcheck`). A model that cannot be traced, or whose traced fold fails the check, is
sampled by repeating its inputs; if that fails the check too, by a loop of T forwards (a warning
says which and why). See ``docs/sampling.md`` for the precise definitions.
"""
from __future__ import annotations

import contextlib
import dataclasses
import dis
import enum
import functools
import inspect
import math
import os
import sys
import threading
import warnings
from typing import Callable, Mapping, Sequence

import numpy as np
import torch
from torch import fx, nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.modules.dropout import _DropoutNd
from torch.nn.utils.parametrizations import _SpectralNorm as _SpectralNormParametrization
from torch.nn.utils.spectral_norm import SpectralNorm as SpectralNormHook
from torch.utils._pytree import tree_flatten, tree_map, tree_unflatten

from .adaptive import CHECKPOINTS, StoppingRule, adaptive_sample, fresh_inputs
from .checks import AGGREGATIONS, LOSS_RULES, REDUCTIONS, batch_tensor, one_of, positive_int, shown, torch_seed
from .devices import indexed
from .errors import UsageError, out_of_memory
from .foldcheck import (MAX_SPLIT_ARGUMENTS, Inconclusive, carries_tangents, changed_inputs, draws_unseen,
                        first_rows, fold_mismatch, has_hooks, has_nan, hook_kinds, kept_whole, own_hooks,
                        rows_apart, runs_eagerly, share_memory, stack, suspended_hooks, unfold)
from .functional import has_tangent, repeat_samples
from .nn import PBit, is_stochastic
from .packed_linear import PackedLinear, pack_linears
from .pbit_kernel import draw_key, keys_drawn
from .per_sample_norm import PerSampleBatchNorm
from .pooled_pbit import use_pooled_pbits
from .pooling import use_disjoint_pools
from .shared_bits_layer import SharedBitsLayer, summable
from .stacked_passes import NotStackable, Stack, only_keys_drawn, passes_per_stack, stacking
from .tracing import (UnfaithfulTrace, add_module, draws, draws_node, faithful_trace, is_pdnn_unit, unsized,
                      why_untraceable)
from .transposed_linear import TransposedLinear, use_transposed_linears

# a fold is checked against a loop of forwards on 5 rows, at 2 and at 3 samples: a value of the
# folded pass that broadcasts against another dimension only where T equals it cannot pass both,
# and an odd count of rows shows a dependence on a row's parity (pairs, every other row), which at
# 4 rows gave every folded sample's rows the parities of the input's
CHECK_ROWS, CHECK_SAMPLES = 5, (2, 3)
# calls a check that can tell nothing is made again on (a model's first call may meet zero weights
# or a NaN row); then only after 4, 8, 16, ... such calls, so that a model the check can
# never tell pays it O(log n) times, and one whose weights grow from small ones is folded in time
# (the parameters' version counters miss `.data` edits and replaced parameters)
UNDECIDED_CALLS = 3
MAX_ROWS = 256  # a good max_rows on a CPU, see SampledModel(max_rows=...)


def check_samples(samples) -> int:
    """Return ``samples`` if it is an integer >= 1, else raise naming the value."""
    return positive_int("samples (T)", samples)


def average_samples(x: torch.Tensor, samples: int) -> torch.Tensor:
    """Inverse of :func:`repeat_samples` followed by a mean over the samples."""
    if samples == 1:
        return x
    return x.reshape(samples, -1, *x.shape[1:]).mean(0)


# reads of a tensor's shape: their values must be recomputed on the folded tensor, not repeated
_SHAPE_METHODS = {"size", "dim", "ndimension", "numel", "nelement"}
_SHAPE_ATTRIBUTES = {"shape", "ndim", "dtype", "device"}


def _dropping(m: nn.Module) -> bool:
    """A dropout that drops (``p > 0``): whether it draws in training mode, what a plan depends on."""
    return isinstance(m, _DropoutNd) and m.p > 0


def _couples_rows(m: nn.Module) -> bool:
    """Modules whose output row depends on other rows of the batch (batch statistics)."""
    return isinstance(m, _BatchNorm)


def batch_statistics_user(model: nn.Module) -> str | None:
    """The first module (by name) that normalises with the statistics of the batch it is given, as
    a batch norm does in training or without running statistics: splitting a batch, or letting
    rows leave it, would change what such a model computes."""
    return next((name or type(m).__name__ for name, m in model.named_modules()
                 if isinstance(m, _BatchNorm) and (m.training or m.running_mean is None)), None)


def _power_iterating(model: nn.Module) -> str | None:
    """The first module (by name) whose spectral norm (``torch.nn.utils.spectral_norm``'s hook or
    ``parametrizations.spectral_norm``) steps its power iteration at each forward: in training mode."""
    return next((name or type(m).__name__ for name, m in model.named_modules() if m.training and (
        isinstance(m, _SpectralNormParametrization)
        or any(isinstance(hook, SpectralNormHook) for hook in m._forward_pre_hooks.values()))), None)


def _opaque(m: nn.Module) -> bool:
    """Traced only into modules that contain randomness or batch statistics: any other module
    stays one opaque call (so user layers with Python control flow inside do not defeat
    tracing; see :mod:`pdnn.tracing`)."""
    return not any(draws(sub) or _couples_rows(sub) for sub in m.modules())


def _stochastic_nodes(gm: fx.GraphModule) -> set[fx.Node]:
    """Nodes whose value depends on a random draw."""
    modules = dict(gm.named_modules())
    region: set[fx.Node] = set()
    for node in gm.graph.nodes:
        if draws_node(node, modules) or any(a in region for a in node.all_input_nodes):
            region.add(node)
    return region


def _reads_shape(node: fx.Node) -> bool:
    if node.op == "call_method":
        return node.target in _SHAPE_METHODS
    return node.op == "call_function" and node.target is getattr and node.args[1] in _SHAPE_ATTRIBUTES


def _batched_nodes(gm: fx.GraphModule, batched_inputs: set[int] | None) -> tuple[set[fx.Node], set[fx.Node]]:
    """Nodes derived from the batched inputs: those whose *data* carries the batch dimension
    (repeated T times where they enter the stochastic region), and those derived only from the
    inputs' *shapes* (``x.size(0)``, ``torch.zeros(x.shape[0], 8)``, ``torch.arange(x.size(1))``),
    which the region recomputes from the folded tensors so that a batch size read from the input
    counts T x B rows there. ``batched_inputs``: positions of the batched arguments (all if None)."""
    data: set[fx.Node] = set()
    shape: set[fx.Node] = set()
    placeholders = 0
    for node in gm.graph.nodes:
        ins = node.all_input_nodes
        if node.op == "placeholder":
            if batched_inputs is None or placeholders in batched_inputs:
                data.add(node)
            placeholders += 1
        elif _reads_shape(node) and any(a in data or a in shape for a in ins):
            shape.add(node)
        elif any(a in data for a in ins):
            data.add(node)
        elif any(a in shape for a in ins):
            shape.add(node)
    return data, shape


def _fold_network(gm: fx.GraphModule, samples: int, batched_inputs: set[int] | None = None) -> None:
    """Repeat prefix tensors T times where they enter the stochastic region (or the output),
    recompute shape-derived prefix values there, and give batch norms in the region per-sample
    statistics."""
    graph = gm.graph
    region = _stochastic_nodes(gm)
    data, shape = _batched_nodes(gm, batched_inputs)
    folded: dict[fx.Node, fx.Node] = {}

    def fold(arg: fx.Node, before: fx.Node) -> fx.Node:
        if arg in region or (arg not in data and arg not in shape):
            return arg
        if arg not in folded:
            if arg in data:
                with graph.inserting_after(arg):
                    folded[arg] = graph.call_function(_repeat_rows, (arg, samples))
            else:  # recompute from the folded inputs, just before the first use in the region
                inputs = {a: fold(a, before) for a in arg.all_input_nodes}
                with graph.inserting_before(before):
                    folded[arg] = graph.node_copy(arg, lambda a: inputs[a])
        return folded[arg]

    for node in list(graph.nodes):
        if node not in region and node.op != "output":
            continue
        for arg in node.all_input_nodes:
            new = fold(arg, node)
            if new is not arg:
                node.replace_input_with(arg, new)
    if samples > 1:
        modules = dict(gm.named_modules())
        for node in [n for n in graph.nodes if n in region and n.op == "call_module"]:
            if isinstance(modules[node.target], _BatchNorm):
                node.target = add_module(gm, "per_sample_norm", PerSampleBatchNorm(modules[node.target], samples))


def _repeat_rows(x, samples: int):
    """``x`` repeated ``samples`` times along its batch dimension where it enters the sampled
    region; a 0-dim tensor (``x.std()``, ``x.new_tensor(2.0)``) has no batch dimension and is
    the same for every sample, so it enters as it is."""
    return x if isinstance(x, torch.Tensor) and x.dim() == 0 else repeat_samples(x, samples)


def _fold_layer(gm: fx.GraphModule, samples: int) -> None:
    """Around every module that draws (pdnn's stochastic modules, dropout and RReLU in training
    mode): repeat its input T times, average its T outputs. A random function or method, or a
    torch layer that draws inside (a transformer layer's dropout), is drawn once per call, as in
    one forward: the warning names it."""
    graph = gm.graph
    modules = dict(gm.named_modules())
    once = [node.name for node in graph.nodes if (draws_node(node, modules) and node.op != "call_module") or (
        node.op == "call_module" and not draws(modules[node.target])
        and any(map(draws, modules[node.target].modules())))]  # a torch layer with a dropout inside
    if once and samples > 1:
        warnings.warn(f"aggregate='layer' averages T draws of every module that draws, but {', '.join(once)} "
                      "draws once per call, as in one forward, not T times (aggregate='network' samples "
                      "them too)", stacklevel=_callers_level())
    for node in list(graph.nodes):
        if node.op != "call_module" or not draws(modules[node.target]):
            continue
        for arg in node.all_input_nodes:
            with graph.inserting_before(node):
                node.replace_input_with(arg, graph.call_function(repeat_samples, (arg, samples)))
        with graph.inserting_after(node):
            mean = graph.call_function(average_samples, (node, samples))
        node.replace_all_uses_with(mean, delete_user_cb=lambda user: user is not mean)


class SharedInputPBit(nn.Module):
    """``pbit`` on its input repeated T times, drawn for the T copies from the input itself
    (``PBit(x, repeats=T)``: the same bits, and on the CPU without making the copy), or on the
    copy where hooks, forward or backward (on ``pbit``, or on every module), must see the input
    it would otherwise get."""

    def __init__(self, pbit: PBit, samples: int):
        super().__init__()
        self.pbit = pbit
        self.samples = samples

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pbit = self.pbit
        if has_hooks(pbit) or not isinstance(x, torch.Tensor) or x.dim() == 0:
            return pbit(repeat_samples(x, self.samples))
        return pbit(x, repeats=self.samples)


def _share_repeated_inputs(gm: fx.GraphModule, samples: int) -> None:
    """Let every p-bit that reads a tensor repeated T times draw from the tensor itself
    (:class:`SharedInputPBit`); a repeat that nothing else reads is dropped."""
    graph = gm.graph
    wrappers: dict[str, str] = {}
    for node in [n for n in graph.nodes if n.op == "call_function" and n.target in (repeat_samples, _repeat_rows)]:
        for user in list(node.users):
            if user.op != "call_module" or type(gm.get_submodule(user.target)) is not PBit \
                    or user.args != (node,) or user.kwargs:
                continue
            if user.target not in wrappers:
                shared = SharedInputPBit(gm.get_submodule(user.target), samples)
                wrappers[user.target] = add_module(gm, "shared_input", shared)
            user.target, user.args = wrappers[user.target], (node.args[0],)
        if not node.users:
            graph.erase_node(node)


def _pass_summed_gradients(gm: fx.GraphModule) -> None:
    """Fuse every shared-input p-bit whose bits only a linear layer or a convolution reads with
    that layer, which then passes the p-bit's input gradient once for the summed samples
    (:class:`pdnn.shared_bits_layer.SharedBitsLayer`)."""
    graph = gm.graph
    fused = 0
    for node in [n for n in graph.nodes if n.op == "call_module"]:
        shared = gm.get_submodule(node.target)
        if not isinstance(shared, SharedInputPBit) or len(node.users) != 1:
            continue
        user = next(iter(node.users))
        if user.op != "call_module" or user.args != (node,) or user.kwargs:
            continue
        layer = gm.get_submodule(user.target)
        plain = layer.linear if isinstance(layer, (TransposedLinear, PackedLinear)) else layer
        if summable(plain):  # one module per call: a layer may follow two p-bits
            user.target, user.args = add_module(gm, "shared_bits", SharedBitsLayer(shared, layer, plain)), node.args
            graph.erase_node(node)
            fused += 1
    if fused:
        graph.lint()
        gm.recompile()


def build_sampled_graph(model: nn.Module, samples: int, aggregate: str, concrete_args: dict | None = None,
                        batched_inputs: set[int] | None = None) -> nn.Module:
    """Trace ``model`` and rewrite it for ``samples`` samples (fx's errors propagate).

    ``concrete_args``: non-tensor arguments the trace is specialised to; ``batched_inputs``: the
    positions of the arguments that carry the batch dimension (all, if None)."""
    # a pass traced with concrete_args is given every argument: its placeholders need no default;
    # others drop those fx cannot write into the graph's code (a tensor, a namedtuple: nodes)
    graph = faithful_trace(model, _opaque, concrete_args, defaults=concrete_args is None)
    for node in graph.find_nodes(op="placeholder"):
        if node.args and isinstance(node.args[0], (torch.Tensor, fx.Node)):
            defaults: list[fx.Node] = []
            fx.node.map_arg(node.args, defaults.append)
            node.args = ()
            _erase_unused(graph, defaults)
    gm = fx.GraphModule(model, graph)
    if aggregate == "network":
        _fold_network(gm, samples, batched_inputs)
    else:
        _fold_layer(gm, samples)
    if samples > 1:
        _share_repeated_inputs(gm, samples)
    use_pooled_pbits(gm)  # before the pools are wrapped: it takes the pools that follow a p-bit
    use_disjoint_pools(gm)
    gm.graph.lint()
    gm.recompile()
    return gm


def _erase_unused(graph: fx.Graph, nodes: list[fx.Node]) -> None:
    """Erase ``nodes`` that nothing uses, and then the nodes only they used: what a dropped default
    leaves (a namedtuple default is a node, nested ones nodes of nodes, and one may take the name of
    an argument's field, which the graph's code would then overwrite)."""
    erased: set[fx.Node] = set()
    while nodes:
        node = nodes.pop()
        if node not in erased and not node.users and node.op != "placeholder":
            nodes += node.all_input_nodes
            graph.erase_node(node)
            erased.add(node)


def fixed_by_trace(modules: list[nn.Module]) -> list[tuple[object, str]]:
    """Where a traced graph keeps values as they were when it was traced: the values that the
    user's own modules hold as attributes, their own or their classes' (a class's or a mixin's
    ``scale = 1.0``), as ``(module, name)`` -- numbers (Python's and numpy's), strings, ``None``,
    enums, dtypes, devices, slices, ranges, frozensets, tensors (by identity), tuples of these,
    and functions the module holds itself
    (``self.act = torch.tanh``) -- and the parameters and buffers they hold themselves, as
    ``(module._parameters, name)`` (the graph holds those tensors, so one rebound, by
    ``load_state_dict(assign=True)`` or ``torch.func.functional_call``, is a new tensor it would
    not see). Lists, dicts, sets and numpy arrays are not watched: a module that records into
    one (``self.seen.append(len(x))``, a hook filling a dict, an array it replaces as it runs)
    would make every call a new trace.
    torch's layers and pdnn's modules are called by the graph, so their attributes (a p-bit's
    ``beta``, a layer's ``weight``) are read live -- but for those the code of the user's modules'
    methods reads (``h / self.act.beta``): such values, tensors aside, are watched too, as
    ``(layer, name)``, and so are the module-level globals that code reads and never assigns
    (``x * TEMPERATURE``), as ``(globals, name)`` (:func:`_named_in_code`)."""
    own = [m for m in modules if not (is_pdnn_unit(m) or type(m).__module__.startswith("torch."))]
    attributes = [(m, key) for m in own for key in _fixed_attributes(m)]
    names, read_globals = _named_in_code(own)
    mine = {id(m) for m in own}  # (not a layer's tensors: weight_norm, spectral_norm and pruning set one every call)
    attributes += [(m, key) for m in modules if id(m) not in mine for key, value in vars(m).items()
                   if key in names and key not in _MODULE_STATE and _fixed_value(value)
                   and not isinstance(value, torch.Tensor)]
    return attributes + read_globals + [(table, key) for m in own for table in (m._parameters, m._buffers)
                                        for key in table]


def attributes_read(modules) -> set[str]:
    """The attribute names the methods of the user's own module classes among ``modules`` read
    (torch's and pdnn's aside): what a trace of them may have fixed (``self.training`` too)."""
    return _named_in_code([m for m in modules if not (is_pdnn_unit(m) or type(m).__module__.startswith("torch."))])[0]


def _named_in_code(own: list[nn.Module]) -> tuple[set[str], list[tuple[dict, str]]]:
    """The attribute names the methods of the user's module classes read (functions nested in
    them too), and the module-level globals they read that hold a value a trace fixes, as
    ``(globals, name)``; not a global they also assign (``global calls``: the model's state, not
    a setting). What other functions read is not seen."""
    classes = {cls for m in own for cls in type(m).__mro__
               if cls is not object and not cls.__module__.startswith("torch.")}
    attributes, read, written = set(), {}, set()
    for cls in classes:
        for value in vars(cls).values():
            function = value.fget if isinstance(value, property) else (
                value.__func__ if isinstance(value, (staticmethod, classmethod)) else value)
            if not inspect.isfunction(function):
                continue
            codes = [function.__code__]
            while codes:
                code = codes.pop()
                codes += [c for c in code.co_consts if inspect.iscode(c)]
                for instruction in dis.get_instructions(code):
                    if instruction.opname in ("LOAD_ATTR", "LOAD_METHOD"):
                        attributes.add(instruction.argval)
                    elif instruction.opname == "LOAD_GLOBAL":
                        read[id(function.__globals__), instruction.argval] = function.__globals__
                    elif instruction.opname == "STORE_GLOBAL":
                        written.add((id(function.__globals__), instruction.argval))
    return attributes, [(space, name) for (key, name), space in read.items()
                        if (key, name) not in written and _fixed_value(space.get(name, []))]


_MODULE_STATE = frozenset(vars(nn.Module()))  # nn.Module's own bookkeeping: hooks, tables, the mode
_PLAIN = (type(None), int, float, complex, str, slice, range, frozenset, enum.Enum, torch.dtype, torch.device,
          np.generic, torch.Tensor)


def _fixed_attributes(m: nn.Module) -> list[str]:
    """The names of ``m``'s attributes whose values a graph may have fixed (see
    :func:`fixed_by_trace`): its classes' data first (a method or property is no such value), then
    its own, which hide them."""
    classes = [cls for cls in type(m).__mro__ if cls is not object and not cls.__module__.startswith("torch.")]
    names = {key for cls in classes for key, value in vars(cls).items() if _fixed_value(value)}
    for key, value in vars(m).items():
        if _fixed_value(value) or (callable(value) and not isinstance(value, nn.Module)):
            names.add(key)
        else:
            names.discard(key)
    return sorted(key for key in names if key not in _MODULE_STATE and not key.startswith("__"))


def _fixed_value(value) -> bool:
    return isinstance(value, _PLAIN) or (isinstance(value, tuple) and all(map(_fixed_value, value)))


def _read(place, name: str):
    """The value at a watched place: a parameter or buffer table's entry, or a module's attribute."""
    return place.get(name) if isinstance(place, dict) else getattr(place, name, None)


def _snapshot(value):
    """``value`` as it can be compared later: tensors by identity (a graph reads their contents live)."""
    if isinstance(value, torch.Tensor):
        return id(value)
    return tuple(map(_snapshot, value)) if isinstance(value, tuple) else value


def _stamp(tensor: torch.Tensor) -> tuple[int, int]:
    """Where ``tensor``'s values are and how often they were changed in place (an inference
    tensor counts nothing, and cannot be changed in place outside inference mode)."""
    return tensor.data_ptr(), -1 if tensor.is_inference() else tensor._version


def _current(watched: list[tuple[object, str]]) -> tuple:
    """The values at ``watched`` now."""
    return tuple(_snapshot(_read(place, name)) for place, name in watched)


_LIBRARIES = tuple(os.path.dirname(m.__file__) + os.sep for m in (sys.modules["pdnn"], torch))


def _callers_level() -> int:
    """The ``stacklevel`` at which a warning of the function calling this one points to the
    user's code: the first frame outside pdnn and torch (calls reach a plan through varying depths)."""
    frame, level = sys._getframe(2), 2
    while frame is not None and frame.f_code.co_filename.startswith(_LIBRARIES):
        frame, level = frame.f_back, level + 1
    return level


def _joined(parts: list, dim: int):
    """The outputs of a split's passes as one: their tensors joined along the batch's ``dim``, and
    each value that is no tensor the first pass's (the split's row check saw that they agree)."""
    spec = tree_flatten(parts[0])[1]
    columns = zip(*(tree_flatten(part)[0] for part in parts))
    return tree_unflatten([torch.cat(c, dim) if isinstance(c[0], torch.Tensor) else c[0] for c in columns], spec)


def reduce_samples(out, reduce: str):
    """Reduce per-sample outputs ``[T, B, ...]`` (every tensor of a tuple, list or dict alike).

    ``mean``: the average output (the paper's rule). ``vote``: for class scores ``[T, B, C]``,
    the fraction of samples whose argmax is each class (``argmax`` of it is the majority vote;
    a sample with a NaN score makes its row NaN, as the mean does, not a vote for any class);
    the classes are the last dimension, whatever the others (``[T, B, L, C]``: per token).
    ``none``: the samples themselves.
    """
    if not isinstance(out, torch.Tensor):
        return tree_map(lambda o: reduce_samples(o, reduce) if isinstance(o, torch.Tensor) else o, out)
    if reduce != "none" and not (out.is_floating_point() or out.is_complex()):
        raise UsageError(f'reduce="{reduce}" needs floating-point scores, but an output is {out.dtype} '
                         '(class indices, say): return the scores, or take the samples with reduce="none"')
    if reduce == "mean":
        return out.mean(0)
    if reduce == "vote":
        if out.is_complex():
            raise UsageError(f'reduce="vote" needs real scores to take the largest of, but an output is {out.dtype}: '
                             'vote on its magnitude or real part, or use reduce="mean"')
        if out.dim() < 3 or out.shape[-1] < 2:  # [B, 1]: a regression value or a binary logit, no classes
            shape = ", ".join(["B", *map(str, out.shape[2:])])
            raise UsageError(f'reduce="vote" needs scores of two or more classes [B, C] per sample; an output is '
                             f'[{shape}] (every tensor of a tuple or dict output is voted: use "mean" or "none" for '
                             'one with other tensors, and "mean" for a single score)')
        votes = nn.functional.one_hot(out.argmax(-1), out.shape[-1]).to(out.dtype)
        return votes.mean(0).masked_fill(out.isnan().any(-1).any(0).unsqueeze(-1), torch.nan)
    return out


def _eager_under_compile(method: Callable) -> Callable:
    """``torch.compiler.disable(method)`` that costs nothing until something compiles: the
    decorator imports the compiler, 1.3 s that ``import pdnn`` and every evaluation would pay.
    While dynamo traces, ``is_compiling()`` is true and the call goes through torch's lazy form
    of the decorator (``torch._disable_dynamo``), which dynamo does not trace into."""
    disabled = torch._disable_dynamo(method)

    @functools.wraps(method)
    def call(*args, **kwargs):
        if torch.compiler.is_compiling():
            return disabled(*args, **kwargs)
        return method(*args, **kwargs)

    return call


_NO_BATCH = object()  # the batch of a call that passed keyword arguments only


def _check_batch(x, kwargs: dict) -> None:
    """A call's batch is its first positional argument, a tensor, which a call by keywords only
    (``sampled(input_ids=..., attention_mask=...)``) does not say."""
    if x is _NO_BATCH:
        got = f"keyword arguments only ({', '.join(kwargs)})" if kwargs else "no arguments"
        raise UsageError(f"SampledModel takes the batch as its first positional argument, the one the samples fold "
                         f"along; got {got}: pass the batch first")
    batch_tensor("SampledModel", x)


def _one_call(method: Callable) -> Callable:
    """A method by which a user calls the sampler (``forward``, ``sample``, ``plan``): the passes
    one call splits into (``max_rows``), the rounds of ``samples="auto"`` and the stacked pass
    it tries are one call to the fold check's count of undecided calls, and a plan that one of
    them found undecided runs the others as loops, unchecked (:meth:`SampledModel._kind`). Each
    thread's call is its own."""

    @functools.wraps(method)
    def call(self, *args, **kwargs):
        thread = threading.get_ident()
        if thread in self._undecided_now:  # a pass of a call under way
            return method(self, *args, **kwargs)
        self._undecided_now[thread] = set()
        try:
            return method(self, *args, **kwargs)
        finally:
            del self._undecided_now[thread]

    return call


class SampledModel(nn.Module):
    """Wrap a network so that one call runs T samples of it and reduces them.

    Args:
        model: any ``nn.Module`` with pdnn's stochastic layers (and anything else). It is
            shared, not copied: training the model trains the wrapper. How T samples are run
            (see :meth:`plan`) is chosen and checked on the first call of each kind (modules,
            train/eval modes, argument shapes and values), so replacing submodules is seen.
            Outputs may be tensors or tuples, lists and dicts of them.
        samples: T, the number of samples (integer >= 1); may be changed on a live object.
            ``"auto"``: T chosen per input by a stopping rule (:mod:`pdnn.adaptive`), up to
            ``max_samples``, at predictive error level ``error``; ``last_samples`` then holds
            each input's T. Needs ``reduce="mean"``, ``aggregate="network"`` and a model that
            returns one tensor of class scores ``[B, C >= 2]``. ``checkpoints``:
            the T values after which the rule looks (default ``pdnn.adaptive.CHECKPOINTS``;
            every T stops inputs sooner, in more rounds); ``prior_samples``: ν₀, the weight in
            the rule's prior of the typical spread, which the first call learns (the first
            calls, until 32 inputs have shown theirs: until then no input stops before
            ``max_samples``, unless ``prior_samples`` is 0) and keeps in ``stopping``, so that
            later calls may stop an input at T = 1. It is for inference:
            the rounds run without autograd, so its output carries no gradient. Each round is
            split by ``max_rows`` as a fixed T is.
        reduce: ``"mean"``, ``"vote"`` (classes on the last dimension) or ``"none"`` (returns ``[T, B, ...]``; with
            ``aggregate="layer"`` T is consumed inside and ``none`` returns ``[1, B, ...]``).
        aggregate: ``"network"`` (p-DNN) or ``"layer"`` (random bit-stream baseline).
        seed: if given, the call's draws come from a ``torch.Generator`` seeded with it (one per
            device), so the same seed gives the same samples, and torch's own draws in the model
            (dropout) come from it too; on the CPU and CUDA it is drawn through torch's default
            generator, whose own state is set aside for the call, so that
            ``torch.utils.checkpoint`` replays the draws (see ``docs/sampling.md``). ``None``
            uses torch's global generator. torch's CPU generator keeps a seed's low 32 bits:
            seeds that differ by a multiple of 2**32 give the same samples. Set on a live
            object, a seed starts its stream afresh: the next call draws what a new sampler
            with that seed draws.
        max_rows: the most samples x batch rows one folded pass may hold. A larger batch is
            split into sub-batches of ``max_rows // T`` inputs, at least one (so below T a pass
            holds one input's T rows; each sub-batch still shares its prefix), so
            the activations stay small and memory stays bounded by max(T, ``max_rows``) rows per
            pass without autograd (with it, every pass's activations are kept for the backward
            pass, and memory grows with T x batch whatever ``max_rows``): on a 2-core CPU the
            reference CNN (width 16) at T = 10, batch 256, split to 1024 rows, ran 1.6x slower
            than a loop of 10 passes of 256 rows (``benchmarks/bench_speed.py``; glibc maps every buffer
            above 32 MiB afresh, and page faults then dominate); ``MAX_ROWS`` (256) is the
            measured choice, which evaluation passes as ``max_rows``. ``None`` (the default) never splits. A call
            and :meth:`sample` (so :func:`sample_aware_loss`) split alike. The split
            changes the order of the draws, so a seed's samples depend on it. Only inputs
            without extra positional arguments are split, and never while a batch norm of the
            model uses batch statistics (training mode): a split would change them, so such a
            batch runs in one pass, with a warning. Nor is a batch split whose model takes
            statistics otherwise (``h - h.mean(0)``), or returns beside its tensors a value a split
            cannot join (``x.shape[0]``, a call counter), told by a few forwards of two passes once
            per plan, with a warning. Not seen: a statistic the two passes leave alike by chance
            (``x / x.abs().amax(0).clamp(min=1)`` on data within [-1, 1]), one a p-bit takes in
            its own forward, and any in a model that draws with a function the check's stand-ins
            do not replace (``torch.normal``; :func:`pdnn.foldcheck.rows_apart`).
            Without autograd on the CPU, consecutive passes run stacked into one larger pass that
            draws what they draw (:mod:`pdnn.stacked_passes`: the same random numbers, faster, up to
            64 MiB per p-bit output; a bit may differ where a GEMM rounds more rows otherwise).
        pack_weights: in folded passes without autograd, run large float linear layers through
            oneDNN with their weights packed once (:mod:`pdnn.packed_linear`), instead of the
            default transposed GEMM (:mod:`pdnn.transposed_linear`). Opt-in, for fixed weights: a
            change of a few weights through ``.data`` may not be seen (every other change is;
            :mod:`pdnn.packed_linear`). Another GEMM sums in another order: outputs differ from
            unpacked ones by float rounding (3e-4 on logits of a CNN at T = 1000).

    Under ``torch.compile`` the wrapper itself runs eagerly (:func:`_eager_under_compile`): its
    plans, caches and generators are Python state a compiled graph cannot hold. Compile the model
    inside instead, ``SampledModel(torch.compile(net), T)``; fx cannot trace a compiled
    module, so its samples are folded by repeating the input (the ``"repeat"`` plan).

    Example:
        >>> from pdnn.nn import PBit
        >>> net = nn.Sequential(nn.Linear(4, 8), PBit(), nn.Linear(8, 3))
        >>> sampled = SampledModel(net, samples=10)
        >>> sampled(torch.randn(5, 4)).shape
        torch.Size([5, 3])
    """

    def __init__(
        self,
        model: nn.Module,
        samples: int = 1,
        reduce: str = "mean",
        aggregate: str = "network",
        seed: int | None = None,
        max_samples: int = 50,
        error: float = 0.01,
        rule: str = "predictive",
        max_rows: int | None = None,
        pack_weights: bool = False,
        checkpoints: Sequence[int] = CHECKPOINTS,
        prior_samples: int = 2,
    ):
        super().__init__()
        self._runs: dict[tuple, Callable] = {}  # the folded passes, by plan key and T
        self.pack_weights = pack_weights
        if not isinstance(model, nn.Module):
            raise UsageError(f"SampledModel samples an nn.Module, got {type(model).__name__}")
        self.max_rows = max_rows
        self.model = model
        self._samples, self._reduce, self._aggregate = 1, "mean", "network"  # each setter checks the three
        self.reduce = reduce
        self.aggregate = aggregate
        self.samples = samples
        self.seed = seed
        self.stopping = StoppingRule(max_samples, error, rule, checkpoints, prior_samples)
        self.last_samples: torch.Tensor | None = None
        self._graphs: dict[tuple, nn.Module] = {}  # layer aggregation, by T and the modules it calls
        self._plans: dict[tuple, str] = {}  # network aggregation: graph, repeat or loop
        self._undecided: dict[tuple, int] = {}  # calls whose check could tell nothing, by plan key
        self._undecided_now: dict[int, set[tuple]] = {}  # by thread, the keys its call under way found undecided
        self._stacks: dict[tuple, tuple[int, int]] = {}  # split passes: p-bit calls, passes per stack
        self._apart: dict[tuple, bool] = {}  # split passes: whether each computes what the batch does on it
        self._watched: list[tuple[object, str]] = []  # where the traced graphs fixed values (fixed_by_trace)
        self._fixed: tuple = ()  # those values when the graphs were made
        self._zeros: list[list] = []  # [parameter, stamp]: all zero when a plan or split was checked

    @property
    def samples(self) -> int | str:
        return self._samples

    @property
    def seed(self) -> int | None:
        return self._seed

    @seed.setter
    def seed(self, value: int | None) -> None:
        """Checked, and its stream started afresh: the generators of the seed before are dropped
        (kept, a seed set on a live sampler had changed nothing)."""
        self._seed = None if value is None else torch_seed("seed", value)
        self._generators: dict[str, torch.Generator] = {}

    @property
    def pack_weights(self) -> bool:
        return self._pack_weights

    @pack_weights.setter
    def pack_weights(self, value: bool) -> None:
        """Checked, and the folded passes built with the setting before are dropped: kept, they
        went on running packed layers (and their copies of weights changed through ``.data``)."""
        if not isinstance(value, bool):
            raise UsageError(f"pack_weights must be True or False, got {shown(value)}")
        self._pack_weights = value
        self._runs.clear()

    @property
    def max_rows(self) -> int | None:
        return self._max_rows

    @max_rows.setter
    def max_rows(self, value: int | None) -> None:
        self._max_rows = None if value is None else positive_int("max_rows", value, "an integer >= 1 or None")

    @samples.setter
    def samples(self, value: int | str) -> None:
        auto = isinstance(value, str) and value == "auto"
        if isinstance(value, str) and not auto:
            raise UsageError(f'samples (T) must be an integer >= 1 or "auto" (T chosen per input), got {shown(value)}')
        self._check_auto(auto, self.reduce, self.aggregate)
        self._samples = "auto" if auto else check_samples(value)

    @property
    def reduce(self) -> str:
        return self._reduce

    @reduce.setter
    def reduce(self, value: str) -> None:  # checked when set, as T is: a run-time knob
        one_of("reduce", value, REDUCTIONS)
        self._check_auto(self.samples == "auto", value, self.aggregate)
        self._reduce = value

    @property
    def aggregate(self) -> str:
        return self._aggregate

    @aggregate.setter
    def aggregate(self, value: str) -> None:
        one_of("aggregate", value, AGGREGATIONS)
        self._check_auto(self.samples == "auto", self.reduce, value)
        self._aggregate = value

    @staticmethod
    def _check_auto(auto: bool, reduce: str, aggregate: str) -> None:
        if auto and (reduce, aggregate) != ("mean", "network"):
            raise UsageError(f'samples="auto" needs reduce="mean" and aggregate="network", '
                             f'got {shown(reduce)}, {shown(aggregate)}')

    def _rule_option(name: str) -> property:  # called in the class body, below
        """A stopping-rule option as the sampler's attribute, as the constructor takes it: read
        from ``stopping`` and written into it, checked, the learnt prior kept (an attribute of
        the sampler itself would be ignored)."""
        def set_option(self, value) -> None:
            self.stopping = dataclasses.replace(self.stopping, **{name: value})

        return property(lambda self: getattr(self.stopping, name), set_option)

    max_samples, error, rule, checkpoints, prior_samples = map(
        _rule_option, ("max_samples", "error", "rule", "checkpoints", "prior_samples"))
    del _rule_option

    def generator(self, device: torch.device | str) -> torch.Generator | None:
        """The seeded generator for ``device`` (created on first use), or ``None`` if unseeded."""
        if self.seed is None:
            return None
        key = str(indexed(device))  # `cuda` at set-up and `cuda:0` at the draws: one stream
        if key not in self._generators:
            self._generators[key] = torch.Generator(device=device).manual_seed(self.seed)
        return self._generators[key]

    @_eager_under_compile
    @_one_call
    def sample(self, x: torch.Tensor = _NO_BATCH, *args, samples: int | None = None, **kwargs):
        """Per-sample outputs ``[T, B, ...]`` (``[1, B, ...]`` for layer aggregation); every tensor
        of a tuple, list or dict output alike. ``samples`` overrides T for this call; ``args`` /
        ``kwargs`` go to the model's forward. Split by ``max_rows`` as a call is, so these are the
        samples a call with ``reduce="none"`` returns."""
        _check_batch(x, kwargs)
        if samples is None and self.samples == "auto":
            raise UsageError('SampledModel.sample needs a number of samples, and this one chooses T per input '
                             '(samples="auto"): pass samples=k')
        samples = check_samples(self.samples if samples is None else samples)
        parts = self._split_batch(x, args, kwargs, samples)
        return self._pass(x, args, kwargs, samples) if parts is None else _joined(parts, 1)

    def _pass(self, x: torch.Tensor, args: tuple, kwargs: dict, samples: int):
        """The per-sample outputs of one folded pass over the whole of ``x`` (see :meth:`sample`)."""
        modules = list(self.model.modules())
        if self.seed is not None and (torch.jit.is_tracing() or torch.compiler.is_exporting()):
            # (torch.compile keeps the seed: the sampler runs eagerly under it)
            warnings.warn(f"seed={self.seed} does not travel into the program torch.jit.trace or torch.export "
                          "records: it draws from torch's default generator when it runs (seed that with "
                          "torch.manual_seed)", stacklevel=_callers_level())
        with _naming_the_input_shape(self.model, x), self._drawing(x.device, modules):
            return self._dispatch(x, args, kwargs, samples, modules)

    @contextlib.contextmanager
    def _drawing(self, device: torch.device, modules: list[nn.Module]):
        """Draws inside come from the seeded stream, if there is one (see ``seed``)."""
        generator = self.generator(device)
        if generator is None:  # every module draws from its own generator, or torch's
            yield
            return
        default = _default_generator(device)
        stochastic = [m for m in modules if is_stochastic(m)]
        saved = [m.generator for m in stochastic]
        # object.__setattr__: a generator is a plain attribute, which nn.Module's checks for
        # parameters, buffers and submodules would only slow down (lent: pdnn.tracing.LENT)
        for m in stochastic:  # torch's default generator holds the seeded stream, or lent to each
            object.__setattr__(m, "generator", None if default is not None else generator)
        holding = _holding(default, generator) if default is not None else contextlib.nullcontext()
        try:
            with holding:
                yield
        finally:
            for m, g in zip(stochastic, saved):
                object.__setattr__(m, "generator", g)

    def _split_batch(self, x: torch.Tensor, args: tuple, kwargs: dict, samples: int) -> list | None:
        """The per-sample outputs of ``x`` in the passes of at most ``max_rows`` samples x inputs
        that a call splits it into (see ``max_rows``), or ``None`` where it runs in one pass."""
        step = self.max_rows and max(1, self.max_rows // samples)
        if torch.compiler.is_compiling() or torch.jit.is_tracing():  # a traced program (torch.export,
            step = None  # torch.jit.trace) runs its batch in one pass: a split, sized by the batch, would fix
            #              the batch size to the example's
        if args or kwargs or not step or not isinstance(x, torch.Tensor) or x.dim() == 0 or len(x) <= step:
            return None
        if (user := batch_statistics_user(self.model)) is not None:
            warnings.warn(f"max_rows={self.max_rows} is not applied: {user!r} normalises with the statistics of the "
                          "whole batch, which a split would change; the batch runs in one pass",
                          stacklevel=_callers_level())
            return None
        passes, key = self._passes(x, step)
        if not (apart := self._passes_apart(passes, key)):
            if apart is False:
                warnings.warn(f"max_rows={self.max_rows} is not applied: {type(self.model).__name__} gives an input "
                              "another output among other inputs (a statistic of the batch, h - h.mean(0), or outputs "
                              "without one row per input), which a split would change; the batch runs in one pass",
                              stacklevel=_callers_level())
            return None
        return self._split(passes, key, samples)

    def _passes(self, x: torch.Tensor, step: int) -> tuple[list[torch.Tensor], tuple]:
        """``x`` split into passes of ``step`` inputs, and the plan key of the first, under which
        the row check and the stacking are learned (the plans made before a value a traced graph
        fixed has changed are forgotten first, with what was learned for them)."""
        self._forget_if_changed()
        passes = list(x.split(step))
        return passes, self._key(passes[0], (), {}, list(self.model.modules()))

    def _passes_apart(self, passes: list[torch.Tensor], key: tuple) -> bool | None:
        """Whether the ``passes`` (a split's, or the halves of a batch whose settled inputs leave
        it) compute what their whole batch does on them (:func:`pdnn.foldcheck.rows_apart`, a few
        forwards of two passes), learned once per plan ``key`` from the first pass and the first
        later one that holds other inputs. Where every pass holds the first's inputs (a warm-up
        call on zeros), a mean over the batch is a mean over a pass, so only a dependence the two
        show (on their number, ``h.sum(0)``) is learned; a model that fails, or an output with a
        NaN, tells nothing: the passes run, and a later call learns it. ``None`` under ``vmap``
        before it is learned: a batched tensor has no exact comparison, so nothing can be told,
        and the batch runs whole."""
        if key not in self._apart:
            try:
                other = next((p for p in passes[1:] if not torch.equal(p, passes[0][:len(p)])), None)
                apart = rows_apart(self.model, [passes[0], passes[1] if other is None else other])
            except RuntimeError:  # (vmap: "Batching rule not implemented for aten::equal", or a .item())
                if runs_eagerly():
                    raise
                return None
            if apart is False or (apart and other is not None):
                self._apart[key] = apart
                self._note_zeros()
            return apart is not False
        return self._apart[key]

    def _split(self, passes: list[torch.Tensor], key: tuple, samples: int) -> list:
        """The per-sample outputs ``[T, B_i, ...]`` of the ``passes`` of a split batch (plan
        ``key``, :meth:`_passes`; T = ``samples``), drawn in turn: from the passes one by one, or
        from several stacked into one pass where that draws the same numbers (:mod:`pdnn.stacked_passes`)."""
        stackable = (len(passes) > 2 and not torch.is_grad_enabled() and not has_tangent(passes[0])
                     and passes[0].device.type == "cpu" and self.aggregate == "network" and samples > 1)
        if not stackable:
            return [self._pass(part, (), {}, samples) for part in passes]
        outs, stack = [], (key, samples)
        if stack not in self._stacks:
            outs, learned = self._learn_stacking(passes[:2], samples)
            passes = passes[2:]
            if learned is None or key not in self._plans:  # (undecided, the passes ran loops: ask again later)
                return outs + [self._pass(part, (), {}, samples) for part in passes]
            self._stacks[stack] = learned
        calls, count = self._stacks[stack]
        for start in range(0, len(passes), count):
            group = passes[start:start + count]
            if len(group) == 1:
                outs.append(self._pass(group[0], (), {}, samples))
            else:  # each pass's outputs apart, as the split reduces them (a mean over more columns rounds otherwise)
                outs += self._stacked_or_split(group, calls, samples).split([len(part) for part in group], 1)
        return outs

    def _learn_stacking(self, passes: list[torch.Tensor], samples: int) -> tuple[list, tuple[int, int] | None]:
        """The outputs of two passes run in turn, and whether such passes stack: ``(p-bit calls
        per pass, passes per stack)`` (1: they do not), or ``None`` where it cannot be told yet
        (the first passes of a plan may check it, and draw for that; their outputs hold a NaN)."""
        stream = self._stream(passes[0].device)
        start = stream.get_state()
        outs, calls = [], []
        for part in passes:
            before = keys_drawn()
            outs.append(self._pass(part, (), {}, samples))
            calls.append(keys_drawn() - before)
        end = stream.get_state()
        if not calls[0] or calls[0] != calls[-1] or not isinstance(outs[0], torch.Tensor) \
                or not only_keys_drawn(start, end, sum(calls)) or any(has_nan(out) for out in outs):
            return outs, None  # (a NaN equals nothing, and NaN alike NaN could hide a difference: a later call tells)
        stream.set_state(start)
        try:
            stacked, widest_row = self._stacked(passes, calls[0], samples)
            same = torch.equal(stacked, torch.cat(outs, 1)) and torch.equal(stream.get_state(), end)
        except Exception:  # noqa: BLE001 -- any failure of the stacked pass means: run the passes in turn
            same = False
        stream.set_state(end)
        count = passes_per_stack(widest_row, samples * len(passes[0])) if same else 1
        return outs, (calls[0], count)

    def _stacked_or_split(self, passes: list[torch.Tensor], calls: int, samples: int) -> torch.Tensor:
        """The per-sample outputs of ``passes`` joined, from one stacked pass, or from the passes
        in turn if the stacked one cannot run (the draws then start afresh from the same state)."""
        stream = self._stream(passes[0].device)
        start = stream.get_state()
        try:
            return self._stacked(passes, calls, samples)[0]
        except Exception:  # noqa: BLE001 -- the passes in turn raise the model's own errors
            stream.set_state(start)
            return torch.cat([self._pass(part, (), {}, samples) for part in passes], 1)

    def _stream(self, device: torch.device) -> torch.Generator:
        """The generator a CPU pass draws from: the seeded stream, else torch's default."""
        return self.generator(device) or _default_generator(device)

    def _stacked(self, passes: list[torch.Tensor], calls: int, samples: int) -> tuple[torch.Tensor, int]:
        """``passes`` run as one stacked pass of ``samples`` each: their joined per-sample outputs,
        and the bytes of the widest p-bit output row."""
        modules = list(self.model.modules())
        x, inputs = torch.cat(passes), [len(part) for part in passes]
        with self._drawing(x.device, modules):
            self._forget_if_changed()
            key = self._key(x, (), {}, modules)
            if self._kind(key, x, (), {}) != "graph":  # (a first plan checks under torch.random.fork_rng)
                raise NotStackable("no traced plan for these inputs")
            if (key, samples) not in self._runs:
                self._runs[key, samples] = _folding("graph", self.model, samples, x, (), {}, self.pack_weights)
            keys = [[draw_key(None) for _ in range(calls)] for _ in inputs]  # in the order the passes draw
            with stacking(Stack(inputs, keys)) as stack:
                out = self._folded(self._runs[key, samples], x, (), {}, samples, samples)
            if stack.calls != calls:
                raise NotStackable(f"{stack.calls} p-bit calls in the stacked pass, {calls} in each pass")
            return stack.unstacked(out, samples), stack.widest_row

    def _dispatch(self, x: torch.Tensor, args: tuple, kwargs: dict, samples: int, modules: list[nn.Module]):
        self._forget_if_changed()
        if samples > 1 and (args or kwargs):
            self._refuse_writes_to_shared_memory(x, args, kwargs)
        if self.aggregate == "layer":
            return self._layer(x, args, kwargs, samples, modules)
        return self._network(x, args, kwargs, samples, modules)

    def _refuse_writes_to_shared_memory(self, x: torch.Tensor, args: tuple, kwargs: dict) -> None:
        """Samples run on copies of the inputs (the fold check's passes, a loop's forwards), which
        keep a tensor given twice one tensor but take distinct tensors viewing one memory apart (a
        copy that kept them one would misroute gradients and copy all memory between them): a model
        that writes to an input while another views its memory would not see its write in the
        other, as a forward does. Refused."""
        if _writes_to_shared_memory(self.model, x, args, kwargs):
            raise UsageError("SampledModel cannot sample T > 1 of a model that changes an input in place while "
                             "another input views the same memory (a slice or view of it): each sample runs on "
                             "copies of its inputs, which take the two apart; pass copies (x.clone())")

    @_eager_under_compile
    @_one_call
    def forward(self, x: torch.Tensor = _NO_BATCH, *args, **kwargs):
        _check_batch(x, kwargs)
        self.last_samples = None  # set by a call with T chosen per input that returns
        if self.samples == "auto":
            if torch.jit.is_tracing() or not runs_eagerly():
                raise UsageError('samples="auto" cannot be traced, exported or transformed (torch.jit.trace, '
                                 'torch.export, torch.func): its rounds, and the inputs that leave them, depend on '
                                 "the data; give a fixed T there")
            if kwargs:  # the rounds pick rows of the positional arguments only
                raise UsageError(f'samples="auto" passes positional arguments only, got keywords {sorted(kwargs)}')
            if (user := batch_statistics_user(self.model)) is not None:
                remedy = ("it keeps no running statistics (track_running_stats=False); give a fixed T"
                          if dict(self.model.named_modules()).get(user, self.model).running_mean is None
                          else "call .eval() first")
                raise UsageError(f'samples="auto" lets settled inputs leave the batch, but {user!r} normalises with '
                                 f"the statistics of the batch: {remedy}")
            if not args and len(x) > 1 and self._passes_apart(*self._passes(x, (len(x) + 1) // 2)) is False:
                raise UsageError(f'samples="auto" lets settled inputs leave the batch, but {type(self.model).__name__} '
                                 "gives an input another output among other inputs (a statistic of the batch, "
                                 "h - h.mean(0), or outputs without one row per input): give a fixed T")
            mean, self.last_samples, self.stopping = adaptive_sample(self._round, x, *args, rule=self.stopping,
                                                                     kept=self._not_per_input(x, args))
            return mean
        parts = self._split_batch(x, args, kwargs, self.samples)
        if parts is None:
            return reduce_samples(self._pass(x, args, kwargs, self.samples), self.reduce)
        # each pass's samples reduced as it comes: the whole batch's are never all held
        return _joined([reduce_samples(out, self.reduce) for out in parts], 1 if self.reduce == "none" else 0)

    def _not_per_input(self, x: torch.Tensor, args: tuple) -> frozenset[int]:
        """The ids of the tensor arguments as long as the batch that are not per input, so that
        ``samples="auto"`` does not cut them when inputs leave: told by the model itself
        (:func:`pdnn.foldcheck.kept_whole`), which also shows that the other arguments, passed
        whole, name no input (a list of a number per input, an int indexing rows, a flag that
        makes the model read the whole batch: refused). Asked at every call with arguments: what
        the model reads can change with its state and with the arguments' values, and an answer
        kept from an earlier call missed such changes (at most 3 + 9 x 2**k plain forwards, k the
        number of tensors as long as the batch)."""
        if not args or not isinstance(x, torch.Tensor) or x.dim() == 0:  # (no batch: adaptive_sample refuses it)
            return frozenset()
        tensors = [a for a in tree_flatten(args)[0] if isinstance(a, torch.Tensor)]
        # distinct inputs viewing one memory come apart in the rounds' copies at any batch size; the
        # batch passed again stays one tensor, which matters only where the rounds cut rows (two or more)
        again = len(x) > 1 and any(a is x for a in tensors)
        if _writes_to_shared_memory(self.model, x, args, {}, again):
            raise UsageError('samples="auto" cannot sample a model that changes an input in place when another '
                             "input shares its memory (the input passed again, or a view of it): whether one sees "
                             "the other's change depends on how the rounds cut the inputs to the rows still "
                             "sampled; pass a copy (x.clone()), or give a fixed T")
        if len(x) < 2:  # (one row: cut or not, the same rows)
            return frozenset()
        # (the batch passed again is cut with it, as the rounds cut it: no choice to make)
        leaves = list({id(a): a for a in tensors if a.dim() and len(a) == len(x) and a is not x}.values())
        if len(leaves) > MAX_SPLIT_ARGUMENTS:
            raise UsageError(f'samples="auto" lets settled inputs leave the batch, and tells of each tensor argument '
                             f"as long as the batch whether it is per input, for at most {MAX_SPLIT_ARGUMENTS} of them; "
                             f"got {len(leaves)}: give a fixed T, or pass them stacked")
        whole = kept_whole(self.model, x, args, leaves)
        if whole is None:
            if draws_unseen(self.model, x, args):
                why = ("the model draws with a random function whose draws the check cannot hold still "
                       "(torch.normal, torch.randint, a tensor's uniform_, normal_ or bernoulli; it can "
                       "torch.rand, torch.randn, their _like forms, torch.bernoulli and dropout)")
            elif leaves:
                why = ("on some of its inputs the model gives other outputs with any of them cut to those rows "
                       "or kept whole, or the same with either (an argument it does not read, too)")
            elif again:
                why = ("the batch passed again as an argument is cut with it, and on some of its inputs the model "
                       "then gives other outputs: an input's output depends on the batch's other inputs")
            else:
                why = ("none is a tensor as long as the batch, yet on some of its inputs the model gives other "
                       "outputs with its arguments passed whole (a value per input must be a tensor as long as "
                       "the batch, not a list, to be cut; and an input's output may not depend on the others)")
            raise UsageError(f'samples="auto" lets settled inputs leave the batch, but cannot tell which '
                             f"arguments of {len(x)} rows (the batch's length) are per input, to leave with them, "
                             f"and which are not: {why}; give a fixed T")
        return frozenset(id(leaves[i]) for i in whole)

    def _round(self, x: torch.Tensor, *args, samples: int):
        """:meth:`sample` for one round of ``samples="auto"`` (or a piece of it, of at most
        ``adaptive.ROUND_PIECE`` samples), in passes of at most ``max_rows`` samples x inputs, split
        as a fixed T is (one input's samples where they alone are more; only inputs without extra
        positional arguments)."""
        step = self.max_rows and max(1, self.max_rows // samples)
        if args or not step or len(x) <= step:
            return self._pass(x, args, {}, samples)
        return _joined([self._pass(part, (), {}, samples) for part in x.split(step)], 1)

    def _forget_if_changed(self) -> None:
        """Drop the plans and passes made before a value a traced graph fixed has changed (a
        temperature kept as ``self.t``): the next call traces and checks the model anew. (A model
        that changes such values itself as it runs is never run by a graph.)"""
        if self._watched and _current(self._watched) != self._fixed or self._zero_opened():
            self._graphs.clear(), self._plans.clear(), self._runs.clear(), self._stacks.clear()
            self._apart.clear(), self._undecided.clear()
            self._watched, self._fixed, self._zeros = [], (), []

    def _note_zeros(self) -> None:
        """Note the parameters that are all zero as a check decides: what they gate (a zero-initialised
        gate over a statistic of the batch, ``h + alpha * h.sum(0)``) could not be seen, so the
        decisions are checked again once one of them opens (:meth:`_zero_opened`)."""
        known = {id(parameter) for parameter, _ in self._zeros}
        self._zeros += [[p, _stamp(p)] for p in self.model.parameters()
                        if id(p) not in known and p.numel() and not p.is_meta and not p.detach().any()]

    def _zero_opened(self) -> bool:
        """Whether a parameter noted by :meth:`_note_zeros` holds a nonzero now: read at each call
        where that costs a few microseconds (up to ``2**16`` values on the CPU), elsewhere only
        where its storage or version counter moved (a read is a sync on a GPU, and a zero head's
        millions of values a millisecond; a fused optimiser's step moves neither, unseen there)."""
        for noted in self._zeros:
            parameter, stamp = noted
            if parameter.is_cpu and parameter.numel() <= 2**16 or _stamp(parameter) != stamp:
                if parameter.detach().count_nonzero():  # (a third of .any()'s time on small tensors)
                    return True
                noted[1] = _stamp(parameter)
        return False

    def _watch(self) -> None:
        """Note, as a graph is made, where it fixes values and what they are: the places of
        modules new since the last graph are added (a replaced submodule). The values already
        noted are the current ones, as every caller has just run :meth:`_forget_if_changed`."""
        known = {(id(place), name) for place, name in self._watched}
        self._watched += [(place, name) for place, name in fixed_by_trace(list(self.model.modules()))
                          if (id(place), name) not in known]
        self._fixed = _current(self._watched)

    @_one_call
    def plan(self, x: torch.Tensor = _NO_BATCH, *args, **kwargs) -> str:
        """How calls like ``self(x, *args, **kwargs)`` run T > 1 samples with network aggregation:
        ``"graph"`` (samples folded into the batch after the deterministic prefix, which runs once),
        ``"repeat"`` (the input repeated T times: the model could not be traced) or ``"loop"`` (T
        forwards: folding would change what the model computes). Chosen, and checked against a
        loop of forwards, on the first such call that can tell (see ``docs/sampling.md``): a call
        with no rows, or whose check's samples all come out alike (outputs all NaN, an output
        layer of zeros), runs a loop and leaves the choice to a later call; after
        ``UNDECIDED_CALLS`` such calls, only the next after 4, 8, 16, ... of them."""
        _check_batch(x, kwargs)
        modules = list(self.model.modules())
        self._forget_if_changed()
        if self._loops_unplanned(x, args, kwargs):
            return "loop"
        with _naming_the_input_shape(self.model, x):
            return self._kind(self._key(x, args, kwargs, modules), x, args, kwargs)

    def _kind(self, key: tuple, x: torch.Tensor, args: tuple, kwargs: dict) -> str:
        if key not in self._plans:
            now = self._undecided_now[threading.get_ident()]
            if key in now:  # one pass of this call found it undecided: counted, and checked, once
                return "loop"
            calls = self._undecided.get(key, 0)  # calls so far whose check could tell nothing
            now.add(key)  # (until a plan is made below)
            if calls >= UNDECIDED_CALLS and calls & (calls - 1):  # checked again after 4, 8, 16, ... of them
                self._undecided[key] = calls + 1
                return "loop"
            try:
                plan = self._plan(x, args, kwargs)
            except Inconclusive:  # a loop is right by definition; a later call's check decides
                self._undecided[key] = calls + 1
                if calls + 1 == UNDECIDED_CALLS:
                    warnings.warn(
                        f"{type(self.model).__name__}: the fold check could tell nothing on {UNDECIDED_CALLS} calls "
                        "(the samples of its loop came out alike, to within 10 times its tolerance: outputs all "
                        "NaN, an output layer of zeros or of a small scale, or outputs that do not follow the "
                        "draws, such as an argmax); running a loop of forwards, checked again after 4, 8, 16, "
                        "... such calls", stacklevel=_callers_level())
                return "loop"
            now.discard(key)
            self._undecided.pop(key, None)
            self._plans[key] = plan
            self._note_zeros()
            if plan == "graph":
                self._watch()
        return self._plans[key]

    def _loops_unplanned(self, x: torch.Tensor, args: tuple, kwargs: dict) -> bool:
        """Whether a call runs a loop of forwards without a plan: the check cannot run under vmap
        (.item()), nor tell anything from no rows (every comparison passes, and the plan would
        serve later batches), and the folded graph's own autograd functions have no forward-mode
        rule. Under ``torch.jit.trace`` the check's forwards would be recorded into the trace, and
        rerun at every call with their reshapes fixed to the example's rows."""
        return (not runs_eagerly() or torch.jit.is_tracing() or x.shape[0] == 0
                or carries_tangents(self.model, x, args, kwargs))

    def _network(self, x: torch.Tensor, args: tuple, kwargs: dict, samples: int, modules: list[nn.Module]):
        model = self.model
        if samples == 1:
            return stack([model(x, *args, **kwargs)])
        if self._loops_unplanned(x, args, kwargs):
            return _forwards(model, samples, x, args, kwargs)
        key = self._key(x, args, kwargs, modules)
        kind = self._kind(key, x, args, kwargs)
        if kind == "loop":
            return _forwards(model, samples, x, args, kwargs)
        if (key, samples) not in self._runs:
            self._runs[key, samples] = _folding(kind, model, samples, x, args, kwargs, self.pack_weights)
        out = self._folded(self._runs[key, samples], x, args, kwargs, samples, samples)
        return _unfolded(out, samples, x.shape[0])

    def _layer(self, x: torch.Tensor, args: tuple, kwargs: dict, samples: int, modules: list[nn.Module]):
        key = samples, self._key(x, args, kwargs, modules)  # (the modules a graph calls, the values it fixed)
        if key not in self._graphs:
            try:
                self._graphs[key] = _traced_layer(self.model, samples, x, args, kwargs)
                self._watch()
            except Exception as err:  # fx raises many types for untraceable code
                raise TypeError(
                    f"aggregate='layer' needs a model torch.fx can trace; tracing failed with: {why_untraceable(err)}"
                ) from err
        return _unfolded(self._folded(self._graphs[key], x, args, kwargs, samples, 1), 1, x.shape[0])

    def _folded(self, run: Callable, x: torch.Tensor, args: tuple, kwargs: dict, samples: int, per_sample: int):
        """``run(x, *args, **kwargs)``, its errors told in terms of the folded rows."""
        try:
            return run(x, *args, **kwargs)
        except torch.OutOfMemoryError:  # kept as it is: a caller may catch it to retry with fewer rows
            raise
        except RuntimeError as err:  # e.g. a shape mismatch, whose sizes count samples x batch rows
            batch = x.shape[0]
            rows = (f"after the deterministic prefix the network runs {samples} samples x batch {batch} = "
                    f"{samples * batch} rows" if per_sample > 1 else
                    f"each stochastic module runs {samples} samples x batch {batch} rows, the rest batch {batch}")
            raise RuntimeError(f"{err} [input of shape {tuple(x.shape)}; {rows}]") from err

    def _key(self, x: torch.Tensor, args: tuple, kwargs: dict, modules: list[nn.Module]) -> tuple:
        """What the choice of a plan depends on: the modules, their modes, whether they draw (a
        dropout's ``p`` raised from 0) and kinds of hook, autocast (a fold may give another dtype
        under it), torch's global modes a forward may branch on (gradients, inference, default
        dtype, deterministic algorithms, anomaly detection), whether B is 1, the arguments'
        structure, non-batch shapes and non-tensor values (not T: a fold is the same rewrite for
        every T). Modules that gain hooks after a plan was made get a plan checked with them.
        Its comparisons are Python bools also where the batch is a symbolic size (``torch.export``
        with a dynamic batch), whose comparison a dictionary lookup cannot take."""
        batch = x.shape[0]
        layout = tuple((id(m), m.training, _dropping(m), hook_kinds(m)) if own_hooks(m) else
                       (id(m), m.training, _dropping(m)) for m in modules)
        layout += hook_kinds()  # those registered for every module
        layout += tuple((torch.is_autocast_enabled(d), torch.get_autocast_dtype(d)) for d in ("cpu", "cuda"))
        layout += (torch.is_grad_enabled(), torch.is_inference_mode_enabled(), torch.get_default_dtype(),
                   torch.are_deterministic_algorithms_enabled(), torch.is_anomaly_enabled())

        def describe(v):
            if isinstance(v, torch.Tensor):
                return ("tensor", v.dim() > 0 and bool(v.shape[0] == batch), tuple(v.shape[1:]), v.dtype, v.device)
            try:
                hash(v)
                return v
            except TypeError:
                return ("object", id(v))

        if not args and not kwargs:  # the usual call, and the cheapest key
            return bool(batch == 1), layout, describe(x)
        leaves, spec = tree_flatten((args, kwargs))
        return bool(batch == 1), layout, describe(x), str(spec), tuple(map(describe, leaves))

    def _plan(self, x: torch.Tensor, args: tuple, kwargs: dict) -> str:
        """The fastest way of running T samples that computes what a loop of T forwards does:
        ``"graph"`` (traced, the prefix shared), else ``"repeat"`` (the input repeated), else
        ``"loop"``; each fold is checked once against a loop by :func:`pdnn.foldcheck.fold_mismatch`,
        at each of ``CHECK_SAMPLES`` samples on the first ``CHECK_ROWS`` rows."""
        model, name = self.model, type(self.model).__name__
        if lazy := unsized(model):
            raise UsageError(f"{name} has lazy modules not yet sized ({', '.join(lazy)}); call it once on an input "
                             "before sampling it: a lazy module sizes itself in its first call, by a hook the "
                             "sampler's checks run the model without (torch advises the same call before making an "
                             "optimizer)")
        if (user := _power_iterating(model)) is not None:
            warnings.warn(f"{name}: {user!r} runs a power iteration of its spectral norm at every forward in training "
                          "mode, so T forwards leave it T iterations on (and weigh each sample by another estimate), "
                          "which one folded pass cannot; running a loop of forwards instead",
                          stacklevel=_callers_level())
            return "loop"
        reasons = []
        for kind in ("graph", "repeat"):
            try:
                runs = [(samples, _folding(kind, model, samples, x, args, kwargs, self.pack_weights))
                        for samples in CHECK_SAMPLES]
            except UnfaithfulTrace as err:
                reasons.append(f"it traced, but {err}")
                continue
            except Exception as err:  # fx raises many types for untraceable code
                reasons.append(f"it could not be traced ({why_untraceable(err)})")
                continue
            reason = self._checked(runs, x, args, kwargs)
            if reason is None:
                if kind == "repeat":
                    warnings.warn(f"{name}: {reasons[0]}; sampling by repeating the input, so the deterministic "
                                  "prefix is recomputed for every sample", stacklevel=_callers_level())
                return kind
            reasons.append(f"folded at its first stochastic layer, {reason}" if kind == "graph" else
                           f"with the input repeated, {reason}")
        warnings.warn(
            f"{name}: folding samples into the batch does not compute what separate forwards do "
            f"({'; '.join(reasons)}); running a loop of forwards instead", stacklevel=_callers_level())
        return "loop"

    def _checked(self, runs: list[tuple[int, Callable]], x: torch.Tensor, args: tuple, kwargs: dict) -> str | None:
        """Why the folded ``runs`` (at each of ``CHECK_SAMPLES``) differ from a loop, or None;
        :class:`Inconclusive` where no check could tell (one that tells decides: at 2 samples
        both may lie on one side of a threshold that the third sample's shift crosses)."""
        told = False
        for samples, run in runs:
            try:
                reason = self._check(run, samples, x, args, kwargs)
            except Inconclusive:
                continue
            if reason is not None:
                return reason
            told = True
        if not told:
            raise Inconclusive(f"no check at {' or '.join(map(str, CHECK_SAMPLES))} samples could tell")
        return None

    def _check(self, run: Callable, samples: int, x: torch.Tensor, args: tuple, kwargs: dict) -> str | None:
        """:func:`fold_mismatch` on the first rows of the input (all of them if the model does
        not run on fewer, or if the first rows tell nothing), copied for every pass (a model may
        modify its input in place)."""
        batch = x.shape[0]
        for rows in dict.fromkeys((min(batch, CHECK_ROWS), batch)):
            cut = first_rows((x, args, kwargs), batch, rows)
            fresh = lambda: fresh_inputs(cut, lambda v: None)  # noqa: E731
            folded, plain = lambda: _call(run, *fresh()), lambda: _call(self.model, *fresh())  # noqa: E731
            try:
                return fold_mismatch(self.model, folded, plain, samples, rows, x.device)
            except Exception:
                if rows == batch:
                    raise

    def __setstate__(self, state: dict) -> None:
        # samplers pickled before these became checked properties kept them plainly
        for name in ("reduce", "aggregate", "seed", "max_rows", "pack_weights"):
            if name in state:
                state[f"_{name}"] = state.pop(name)
        state.setdefault("_undecided", {})  # (and before it counted undecided checks)
        state.setdefault("_undecided_now", {})
        state.setdefault("_apart", {})
        state.setdefault("_zeros", [])
        super().__setstate__(state)

    def __getstate__(self):
        """Copies and pickles leave the traced passes behind: they call this model's modules, and
        the places of the values they fixed are this model's (a copy traces and notes its own)."""
        return {**self.__dict__, "_graphs": {}, "_plans": {}, "_undecided": {}, "_undecided_now": {}, "_runs": {},
                "_stacks": {}, "_apart": {}, "_watched": [], "_fixed": (), "_zeros": []}

    def extra_repr(self) -> str:
        packed = ", pack_weights=True" if self.pack_weights else ""
        return f"samples={self.samples}, reduce={self.reduce!r}, aggregate={self.aggregate!r}{packed}"


@contextlib.contextmanager
def _naming_the_input_shape(model: nn.Module, x: torch.Tensor):
    """Where a model that records the input shape it was built for (``model.input_shape``, as
    pdnn's reference models do) fails on an input of another shape, say so: torch's error, from a
    layer deep inside (``mat1 and mat2 shapes cannot be multiplied``), names neither. Only a
    failure is explained, so an input the model takes in another shape (an MLP's flat rows) still
    runs, and only where a row holds another number of values: a failure of such an input (a
    float64 one, memory running out) is the model's own error."""
    try:
        yield
    except UsageError:
        raise
    except (RuntimeError, ValueError) as error:
        expected = getattr(model, "input_shape", None)
        if (isinstance(expected, tuple) and all(isinstance(size, int) for size in expected)
                and isinstance(x, torch.Tensor) and math.prod(x.shape[1:]) != math.prod(expected)
                and not out_of_memory(error)):
            raise UsageError(f"the model ({type(model).__name__}) was built for inputs of shape (B, "
                             f"{', '.join(map(str, expected))}), got {tuple(x.shape)} "
                             f"({type(error).__name__}: {error})") from error
        raise


def _default_generator(device: torch.device) -> torch.Generator | None:
    """Torch's default generator for ``device`` (CPU and CUDA; ``None`` for other devices)."""
    if device.type == "cpu":
        return torch.default_generator
    if device.type == "cuda":
        index = torch.cuda.current_device() if device.index is None else device.index
        return torch.cuda.default_generators[index]
    return None


@contextlib.contextmanager
def _holding(default: torch.Generator, stream: torch.Generator):
    """``default`` drawing ``stream``'s numbers for the duration: its own state is set aside and
    restored afterwards, and ``stream`` continues from where the draws left it.

    A seeded call draws through torch's default generator rather than from ``stream`` itself
    because ``torch.utils.checkpoint`` restores the default generators, and only those, when it
    recomputes a forward pass in the backward pass: draws from ``stream`` would give other bits
    then, and silently wrong gradients. Torch's own draws inside the model (dropout) then come
    from the seeded stream too. The swap is the process's: other threads drawing from torch's
    default generator during the call, seeded calls of other samplers among them, draw from and
    advance the seeded stream (and it from theirs), so seeded calls are reproducible only one
    thread at a time. (Holding a lock for the call instead made a model that waits for seeded
    work in a thread of its own wait forever.)"""
    saved = default.get_state()
    default.set_state(stream.get_state())
    try:
        yield
    finally:
        stream.set_state(default.get_state())
        default.set_state(saved)


def _writes_to_shared_memory(model: nn.Module, x: torch.Tensor, args: tuple, kwargs: dict,
                             again: bool = False) -> bool:
    """Whether ``model`` changes in place an input that another input views (or, ``again``: the
    input ``x`` passed again as an argument). One plain forward of copies, only where two inputs
    share memory or ``again``."""
    tensors = [v for v in tree_flatten((x, args, kwargs))[0] if isinstance(v, torch.Tensor)]
    if not (again or share_memory(tensors)):
        return False
    changed = changed_inputs(model, x, args, kwargs)
    return (again and any(c is x for c in changed)) or share_memory(tensors, changed)


def _forwards(model: nn.Module, samples: int, x: torch.Tensor, args: tuple, kwargs: dict) -> torch.Tensor:
    """``samples`` forwards of the inputs as given, stacked: all but the last on copies, so that a
    model changing its input in place (raw pixels scaled) gives each sample the same input, as a
    fold does; the last on the caller's own, which it changes as one forward does."""
    copies = [_call(model, *fresh_inputs((x, args, kwargs), lambda v: None)) for _ in range(samples - 1)]
    return stack(copies + [model(x, *args, **kwargs)])


def _call(fn: Callable, x: torch.Tensor, args: tuple, kwargs: dict):
    return fn(x, *args, **kwargs)


def _unfolded(out, samples: int, batch: int):
    """:func:`unfold`, or an error if an output does not have T x B rows."""
    unfolded = unfold(out, samples, batch)
    if unfolded is None:
        raise RuntimeError(f"an output of the model does not have {samples} samples x batch {batch} rows; does the "
                           "model use a batch size it computed before its first stochastic layer?")
    return unfolded


def _folding(kind: str, model: nn.Module, samples: int, x: torch.Tensor, args: tuple, kwargs: dict,
             pack: bool = False) -> Callable:
    """A callable running ``samples`` samples of ``model`` folded into the batch, by ``kind``."""
    return _traced(model, samples, x, args, kwargs, pack) if kind == "graph" else _repeated(model, samples)


def _takes_variable_arguments(signature: inspect.Signature) -> bool:
    """Whether a forward has ``*args`` or ``**kwargs`` (its calls cannot be bound by position)."""
    return any(p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD) for p in signature.parameters.values())


def _refuse_compiled(model: nn.Module) -> None:
    """A module made by ``torch.compile``, which fx cannot trace into (its forward takes ``*args``;
    fx said the module "is missing the required forward function")."""
    if hasattr(model, "_orig_mod") and type(model).__name__ == "OptimizedModule":
        raise TypeError("a module compiled with torch.compile, whose code fx does not trace into; sample the model "
                        "uncompiled, or compile the sampler: torch.compile(SampledModel(net, ...))")


def _arguments(model: nn.Module, x: torch.Tensor, args: tuple, kwargs: dict) -> tuple[inspect.Signature, dict, set]:
    """For calls like ``model(x, *args, **kwargs)``: the forward's signature, the arguments
    without a tensor in them (defaults included) a trace is specialised to, and the positions of
    the tensor arguments whose first dimension is the batch."""
    _refuse_compiled(model)
    signature = inspect.signature(model.forward)
    if _takes_variable_arguments(signature):
        raise TypeError("a forward with *args or **kwargs")
    bound = signature.bind(x, *args, **kwargs)
    bound.apply_defaults()
    values = list(bound.arguments.items())
    concrete = {n: v for n, v in values  # (a tuple of tensors is an input: fixed, its tensors would be constants)
                if not any(isinstance(leaf, torch.Tensor) for leaf in tree_flatten(v)[0])}
    batched = {i for i, (_, v) in enumerate(values)
               if isinstance(v, torch.Tensor) and v.dim() and v.shape[0] == x.shape[0]}
    return signature, concrete, batched


def _bound_call(graph: nn.Module, signature: inspect.Signature) -> Callable:
    """``graph`` called as the model's forward is: every argument, defaults included, by position."""
    alone = len(signature.parameters) == 1  # a forward of the input alone: no arguments to bind

    def run(x, *args, **kwargs):
        if alone and not args and not kwargs:
            return graph(x)
        bound = signature.bind(x, *args, **kwargs)
        bound.apply_defaults()
        return graph(*bound.arguments.values())

    return run


def _traced_layer(model: nn.Module, samples: int, x: torch.Tensor, args: tuple, kwargs: dict) -> Callable:
    """The layer-aggregated graph of ``model`` for calls like ``model(x, *args, **kwargs)``, traced
    with what is not a tensor in the arguments fixed (the tensors inside a tuple, list or dict stay
    inputs); a forward with ``*args``/``**kwargs`` is traced as it is."""
    _refuse_compiled(model)
    signature = inspect.signature(model.forward)
    if _takes_variable_arguments(signature):
        return build_sampled_graph(model, samples, "layer")
    bound = signature.bind(x, *args, **kwargs)
    bound.apply_defaults()
    concrete = {n: tree_map(lambda leaf: fx.PH if isinstance(leaf, torch.Tensor) else leaf, v)
                for n, v in bound.arguments.items() if not isinstance(v, torch.Tensor)}
    with warnings.catch_warnings():  # fx warns that it cannot assert a fixed argument's value
        warnings.filterwarnings("ignore", "Was not able to add assertion")
        return _bound_call(build_sampled_graph(model, samples, "layer", concrete), signature)


def _traced(model: nn.Module, samples: int, x: torch.Tensor, args: tuple, kwargs: dict, pack: bool = False) -> Callable:
    """The folded graph of ``model`` for calls like ``model(x, *args, **kwargs)``: traced with the
    non-tensor arguments fixed, the arguments whose first dimension is the batch as batched;
    ``pack``: large linear layers packed for oneDNN (:func:`pdnn.packed_linear.pack_linears`),
    else computed as transposed GEMMs where that is faster (:mod:`pdnn.transposed_linear`)."""
    signature, concrete, batched = _arguments(model, x, args, kwargs)
    with suspended_hooks(model), warnings.catch_warnings():  # the trace's calls are not the model's
        warnings.simplefilter("ignore")  # (a checkpoint warns that nothing requires a gradient)
        graph = build_sampled_graph(model, samples, "network", concrete, batched)
    if pack:
        pack_linears(graph)
    else:
        use_transposed_linears(graph)
    if samples > 1:
        _pass_summed_gradients(graph)
    # the graph calls its leaves as modules, and they call their submodules (a wrapper calls the
    # module it wraps wherever that module has hooks); hooks on any other module would be skipped
    called = {id(m) for n in graph.graph.nodes if n.op == "call_module" for m in graph.get_submodule(n.target).modules()}
    hooked = [name or type(model).__name__ for name, m in model.named_modules() if own_hooks(m) and id(m) not in called]
    if hooked:
        raise TypeError(f"hooks on {', '.join(hooked)}, which the traced graph does not call")
    return _bound_call(graph, signature)


def _repeated(model: nn.Module, samples: int) -> Callable:
    """The whole model run once on its batched arguments repeated T times."""
    def run(x, *args, **kwargs):
        def fold(v):
            batched = isinstance(v, torch.Tensor) and v.dim() and v.shape[0] == x.shape[0]
            return repeat_samples(v, samples) if batched else v

        return model(fold(x), *tree_map(fold, args), **tree_map(fold, kwargs))

    return run


def sample_aware_loss(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    samples: int | None = None,
    criterion: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = nn.functional.cross_entropy,
    rule: str = "mean-output",
    forward_kwargs: dict | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Loss of a network trained with ``samples`` (s) samples per example.

    ``rule="mean-output"`` (the paper's): ``criterion(mean_s(f_s(x)), y)`` -- the network is
    trained to be right *after* averaging, as it is used at test time. ``rule="mean-loss"``:
    ``mean_s criterion(f_s(x), y)``, for comparison (the mean over the samples only, so a
    criterion with ``reduction="none"`` gives a loss per example under either rule). Gradients
    flow through the bits by the p-bits' straight-through estimator.

    ``model`` may be a plain network or a :class:`SampledModel` (pass one in a training loop so
    the traced graph is reused). ``samples`` left out is the SampledModel's own T (1 for a plain
    network: one sample, the ordinary loss); given, it is set on the SampledModel.

    A model whose output is a tuple or dict gets a ``criterion`` that reads it (e.g.
    ``lambda out, y: F.cross_entropy(out["logits"], y)``); ``forward_kwargs`` are passed to its
    forward.

    Returns ``(loss, averaged_output)``; the output is useful for training accuracy.
    """
    one_of("rule", rule, LOSS_RULES)  # (before the sampler is changed and the samples drawn)
    if not callable(criterion):
        raise UsageError(f"criterion must be a function of (output, target) returning the loss, such as "
                         f"nn.functional.cross_entropy; got {shown(criterion)}")
    if forward_kwargs is not None and not isinstance(forward_kwargs, Mapping):
        raise UsageError(f"forward_kwargs must be a dict of keyword arguments for the model's forward, "
                         f"got {shown(forward_kwargs)}")
    if isinstance(x, torch.Tensor) and x.dim() and not len(x):  # (the mean loss of no input was NaN, silently)
        raise UsageError(f"sample_aware_loss needs a batch of at least one input, got x of shape {tuple(x.shape)}")
    sampled = model if isinstance(model, SampledModel) else SampledModel(model)
    if samples is not None:
        sampled.samples = check_samples(samples)  # (checked first: "auto" is no number of samples to train on)
    elif sampled.samples == "auto":
        raise UsageError('sample_aware_loss: the SampledModel chooses T per input (samples="auto"), which is no '
                         "number of samples to train on; pass samples=s")
    return loss_of_samples(sampled.sample(x, **(forward_kwargs or {})), y, criterion, rule)


def loss_of_samples(
    outs: torch.Tensor,
    y: torch.Tensor,
    criterion: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = nn.functional.cross_entropy,
    rule: str = "mean-output",
) -> tuple[torch.Tensor, torch.Tensor]:
    """The sample-aware loss of per-sample outputs ``[s, B, ...]``; see :func:`sample_aware_loss`."""
    one_of("rule", rule, LOSS_RULES)
    mean = reduce_samples(outs, "mean")
    if rule == "mean-output":
        return criterion(mean, y), mean
    count = next(o for o in tree_flatten(outs)[0] if isinstance(o, torch.Tensor)).shape[0]
    per_sample = [tree_map(lambda o: o[s] if isinstance(o, torch.Tensor) else o, outs) for s in range(count)]
    # the mean over the samples only: a criterion's reduction="none" stays per example
    return torch.stack([criterion(o, y) for o in per_sample]).mean(0), mean
