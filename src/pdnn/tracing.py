"""Tracing a model with ``torch.fx``: one rule for which modules stay opaque.

Three parts of pdnn read a model's graph: :class:`pdnn.SampledModel` (which nodes depend on a
random draw), :mod:`pdnn.convert` (where the activations are) and :mod:`pdnn.energy` (where the
elementary operations are). All three trace with :class:`Tracer`, which keeps a module opaque --
one call node, not traced into -- when

* it is one of torch's own layers (fx's default: a ``torch.nn`` module other than ``Sequential``)
  that holds no pdnn unit (an ``nn.TransformerEncoderLayer(activation=PBit())`` is traced into),
* it is a pdnn module (``pdnn.nn``: p-bits, quantisers, k-bit layers, noise injectors) or draws
  random numbers (``stochastic``): to every reader it is one unit, whatever it computes inside,
* or the reader's own ``opaque`` predicate says so.

Which nodes draw random numbers is one rule too (:func:`draws_node`): sampling draws there once
per sample, and energy prices what depends on them once per sample.

The readers add to the rule, never take from it, because they need different detail:

* sampling keeps every module without randomness or batch norm inside opaque: it only needs where
  the draws flow and which batch norms see folded samples, and user code with Python control flow
  then cannot defeat tracing;
* convert keeps activation modules opaque (user subclasses of ``nn.Tanh`` too): it swaps them whole;
* energy keeps weight layers (user subclasses too), modules with a ``precision`` and modules
  without children opaque: each is priced whole.

A trace runs the forward's Python once, and some of what it does there never reaches the graph:
``with torch.no_grad()`` (and the forward of a custom ``autograd.Function``, which runs without
gradients: the graph keeps its forward, not its backward) and ``torch.autocast`` are not recorded,
and updates of the model's state that involve no traced value (``self.calls += 1``,
``self.ema.mul_(0.9)``) happen once, at trace time, on the real model. The tracer undoes those
updates (a trace never changes the model) and lists all of them in ``unrecorded``; sampling and
convert, which run the graph in place of the forward, refuse a graph that would leave them out
(:func:`faithful_trace`); energy, which only counts operations, reads it anyway.
"""
from __future__ import annotations

import collections
import contextlib
import itertools
import operator
import os
import sys
import sysconfig
import threading
import traceback
import warnings
from typing import Callable

import torch
from torch import fx, nn
from torch.nn.parameter import is_lazy
from torch.utils import checkpoint
from torch.utils.hooks import RemovableHandle

from .functional import straight_through
from .nn import is_stochastic


def steering_gradients_only(graph: fx.Graph) -> set[fx.Node]:
    """The nodes computed only for a straight-through estimator's surrogate, directly or through
    other such nodes (the sigmoid of a unipolar ``quantized_activation``, the tanh of
    ``straight_through(torch.sign(h), torch.tanh(h))``): a forward never uses their values, so
    they are no activation to sample and cost an inference nothing. An in-place call is kept: it
    may change a tensor the forward reads."""
    unused: set[fx.Node] = set()

    def unneeded(user: fx.Node, node: fx.Node) -> bool:
        if user in unused:
            return True
        if user.op != "call_function" or user.target is not straight_through:
            return False
        value = user.args[0] if user.args else user.kwargs.get("value")
        surrogate = user.args[1] if len(user.args) > 1 else user.kwargs.get("surrogate")
        return surrogate is node and value is not node

    for node in reversed(graph.nodes):
        name = node.target if isinstance(node.target, str) else getattr(node.target, "__name__", "")
        in_place = name.endswith("_") and not name.endswith("__") or node.kwargs.get("inplace") is True
        if node.op in ("call_function", "call_method", "call_module") and not in_place and node.users and \
                all(unneeded(user, node) for user in node.users):
            unused.add(node)
    return unused

# random functions and tensor methods other than pdnn modules: a call is a fresh draw per sample
_RANDOM_FUNCTIONS = {torch.rand, torch.randn, torch.rand_like, torch.randn_like, torch.randint,
                     torch.randint_like, torch.randperm, torch.bernoulli, torch.normal, torch.poisson,
                     torch.multinomial, torch.binomial, nn.functional.gumbel_softmax}
_F = nn.functional
# dropouts as functions: they draw when training (the flag's name, position and default) and p > 0
DROPOUT_FUNCTIONS = {**{f: ("training", 2, True) for f in (_F.dropout, _F.dropout1d, _F.dropout2d, _F.dropout3d,
                                                             _F.alpha_dropout, _F.feature_alpha_dropout)},
                      **{f: ("train", 2, True) for f in (torch.dropout, torch.alpha_dropout, torch.feature_dropout,
                                                          torch.feature_alpha_dropout, torch.dropout_,
                                                          torch.alpha_dropout_, torch.feature_dropout_,
                                                          torch.feature_alpha_dropout_)}}
_RRELU_FUNCTIONS = {f: ("training", 3, False) for f in (_F.rrelu, torch.rrelu, _F.rrelu_, torch.rrelu_)}  # slopes
# functions that draw unless told their draw: the argument (name, position) that holds it
_FRACTIONAL_POOLS = {f: ("_random_samples", 5) for f in (_F.fractional_max_pool2d, _F.fractional_max_pool3d,
                                                          _F.fractional_max_pool2d_with_indices,
                                                          _F.fractional_max_pool3d_with_indices)}
_RANDOM_METHODS = {"bernoulli", "bernoulli_", "uniform_", "normal_", "random_", "exponential_",
                   "geometric_", "cauchy_", "log_normal_", "multinomial"}


def unsized(model: nn.Module) -> list[str]:
    """The names of ``model``'s parameters and buffers that lazy modules have not sized yet (they
    size themselves in their first call, by a hook that pdnn's checks and traces run without)."""
    return [n for n, t in (*model.named_parameters(), *model.named_buffers()) if is_lazy(t)]


def draws(m: nn.Module) -> bool:
    """Modules that draw random numbers on this call: pdnn's stochastic modules, dropout
    (``p > 0``) and ``nn.RReLU`` in training mode, and fractional max pooling (unless given its
    draw) in either mode (a mask, slope or pooling region must be fresh for every sample, as in a
    loop of forwards)."""
    return is_stochastic(m) or (m.training and ((isinstance(m, nn.modules.dropout._DropoutNd) and m.p > 0)
                                                or isinstance(m, nn.RReLU))) or (
        isinstance(m, (nn.FractionalMaxPool2d, nn.FractionalMaxPool3d)) and m._random_samples is None)


def draws_node(node: fx.Node, modules: dict[str, nn.Module]) -> bool:
    """Nodes of a graph that draw random numbers: a call of a module that :func:`draws`, of a
    random function or method, or of a dropout or rrelu function in training mode (a dropout's
    default, rrelu's not) with a rate that is not 0. (A random function called with constants
    only, ``torch.randn(16)``, is evaluated once as the graph is traced: a constant, no node.)"""
    if node.op == "call_module":
        return draws(modules[node.target])
    if node.op == "call_method":
        return node.target in _RANDOM_METHODS
    if node.op != "call_function":
        return False
    if node.target in _FRACTIONAL_POOLS:
        return _argument(node, *_FRACTIONAL_POOLS[node.target], None) is None
    if node.target is _F.scaled_dot_product_attention:  # its dropout
        return _argument(node, "dropout_p", 4, 0.0) != 0
    flagged = DROPOUT_FUNCTIONS.get(node.target) or _RRELU_FUNCTIONS.get(node.target)
    if flagged is None:
        return node.target in _RANDOM_FUNCTIONS
    if _argument(node, *flagged) is False:
        return False
    return node.target not in DROPOUT_FUNCTIONS or _argument(node, "p", 1, 0.5) != 0


def _argument(node: fx.Node, name: str, position: int, default):
    return node.kwargs.get(name, node.args[position] if len(node.args) > position else default)


def is_pdnn_unit(m: nn.Module) -> bool:
    """A module every reader treats as one unit: a ``pdnn.nn`` module or one that draws."""
    return type(m).__module__.startswith("pdnn.nn") or is_stochastic(m)


TRACING = threading.RLock()
"""Held while fx traces: it patches ``nn.Module.__call__`` and ``__getattr__`` for the whole
process and puts back what it found, so two traces at once could leave one's patch in place.
A trace waits at most ``TRACE_WAIT_S`` for another thread's (a model that waits for work in a
thread of its own that traces would otherwise wait forever) and then gives up as untraceable:
the caller samples by repeating the input or by a loop, slower but right."""
TRACE_WAIT_S = 10.0


class Tracer(fx.Tracer):
    """An ``fx.Tracer`` that keeps torch layers, pdnn units and what ``opaque`` accepts as leaves."""

    def __init__(self, opaque: Callable[[nn.Module], bool] = lambda m: False, defaults: bool = True):
        # one call however a forward names it (torch.fx.wrap covers only calls made through pdnn.functional)
        super().__init__(autowrap_functions=(straight_through,))
        self.opaque = opaque
        self.defaults = defaults

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        if is_pdnn_unit(m) or self.opaque(m):
            return True
        # a torch layer that holds a pdnn unit (nn.TransformerEncoderLayer(activation=PBit())) is
        # traced into: kept whole, its draws would be invisible to every reader
        return super().is_leaf_module(m, qualname) and not any(map(is_pdnn_unit, m.modules()))

    def trace(self, root, concrete_args=None) -> fx.Graph:
        """fx's trace, with gradients on (so that a ``no_grad`` inside shows), the model's state as
        it was before, and ``unrecorded`` listing what the graph leaves out of the forward."""
        self.unrecorded: list[str] = []
        self.gradients_only: list[str] = []  # those of ``unrecorded`` that change gradients, not values
        if not TRACING.acquire(timeout=TRACE_WAIT_S):
            raise TypeError(f"another thread's trace did not end within {TRACE_WAIT_S:g} s")
        try:
            state = ModelState(root) if isinstance(root, nn.Module) else None
            self._thread = threading.get_ident()
            try:
                with torch.enable_grad():
                    self._modes = _modes()
                    return super().trace(root, concrete_args)
            finally:
                if state is not None:
                    self.unrecorded += [f"it updates {name} as it runs" for name in state.changed()]
                    state.restore(keep=frozenset(getattr(self, "tensor_attrs", {}).values()))
        finally:
            TRACING.release()

    def call_module(self, m: nn.Module, forward: Callable, args, kwargs):
        """fx's, which patches ``nn.Module.__call__`` for the whole process while it traces: a
        module another thread calls meanwhile runs as it is (one of another model failed with
        "module is not installed as a submodule"; one of this model, run by another sampler,
        went into this graph). A model that runs its own layers in a thread of its own is
        therefore not traced, and is sampled by repeating its input or by a loop."""
        if threading.get_ident() != self._thread:
            return forward(*args, **kwargs)
        return super().call_module(m, forward, args, kwargs)

    def getattr(self, attr: str, attr_val, parameter_proxy_cache: dict):
        """fx's, patched into ``nn.Module.__getattr__`` as ``call_module`` is: another thread
        reading this model's parameters meanwhile gets the tensors, not this graph's proxies."""
        if threading.get_ident() != self._thread:
            return attr_val
        return super().getattr(attr, attr_val, parameter_proxy_cache)

    def create_proxy(self, kind, target, args, kwargs, *rest, **options):
        """fx's proxy; without ``defaults``, a placeholder gets none (a default fx records as nodes,
        a namedtuple's, would take names the code of a pytree argument's fields then reuses)."""
        if kind == "placeholder" and not self.defaults:
            args = ()
        return super().create_proxy(kind, target, args, kwargs, *rest, **options)

    def proxy(self, node: fx.Node) -> fx.Proxy:
        return InPlaceProxy(node, self)

    def create_node(self, *args, **kwargs) -> fx.Node:
        """fx's node, noted in ``unrecorded`` if it is recorded under other modes than the trace's."""
        node = super().create_node(*args, **kwargs)
        modes = _modes()
        if modes != self._modes and not _in_checkpoint():
            what = [text for (text, _), now, then in zip(_MODES, modes, self._modes) if now != then]
            self.unrecorded.append(f"{node.name} runs {' and '.join(dict.fromkeys(what))}")
            if modes[2:] == self._modes[2:]:  # gradient or inference mode only: the same values
                self.gradients_only.append(self.unrecorded[-1])
        return node


class InPlaceProxy(fx.Proxy):
    """fx's proxy, which records ``h += x`` as the in-place ``operator.iadd`` it is (fx's own
    records ``h + x``: a name still bound to the old ``h`` would not see the sum, and under
    autocast a bfloat16 ``h`` plus a float32 ``x`` would become float32)."""


for _name in ("iadd", "isub", "imul", "itruediv", "ifloordiv", "imod", "ipow", "imatmul",
              "iand", "ior", "ixor", "ilshift", "irshift"):
    setattr(InPlaceProxy, f"__{_name}__", lambda self, other, op=getattr(operator, _name):
            self.tracer.create_proxy("call_function", op, (self, other), {}))


_MODES = [("without gradients (torch.no_grad, or inside a custom autograd.Function)", torch.is_grad_enabled),
          ("in inference mode", torch.is_inference_mode_enabled),
          *[("under torch.autocast", lambda d=d: (torch.is_autocast_enabled(d), torch.get_autocast_dtype(d)))
            for d in ("cpu", "cuda")]]


def _in_checkpoint() -> bool:
    """Whether the trace is inside reentrant ``torch.utils.checkpoint``, which runs its function
    without gradients and again, with them, in the backward pass: the graph runs it once with
    gradients, which gives the same values and gradients (only the memory saving is lost)."""
    frame, code = sys._getframe(1), checkpoint.CheckpointFunction.forward.__code__
    while frame is not None and frame.f_code is not code:
        frame = frame.f_back
    return frame is not None


def _modes() -> tuple:
    """The modes a trace does not record, in the order of ``_MODES``."""
    return tuple(mode() for _, mode in _MODES)


class UnfaithfulTrace(TypeError):
    """A model traced, but running its graph would not do what its forward does."""


def why_untraceable(err: BaseException) -> str:
    """What a failed trace says to the model's author: the error, fx's proxy named as fx names it
    (not as :class:`InPlaceProxy`, a name of this package), and the author's line that raised it
    (the last frame outside torch, pdnn and Python's own library) -- fx's messages name neither,
    and "zeros() takes 1 positional argument but 2 were given" reads as a mistake in that call."""
    text = f"{type(err).__name__}: {err}".replace(InPlaceProxy.__name__, "Proxy")
    own = [f for f in traceback.extract_tb(err.__traceback__) if _authors(f.filename)]
    if not own:
        return text
    frame = own[-1]
    more = " ..." if (getattr(frame, "end_lineno", None) or frame.lineno) > frame.lineno else ""  # (Python 3.11+)
    return text + f", at {frame.filename}:{frame.lineno}" + (f" ({frame.line}{more})" if frame.line else "")


def _authors(filename: str) -> bool:
    """Whether ``filename`` is the model author's code: not torch's, this package's or Python's
    own library (whose folder holds site-packages, where an author's package may live)."""
    paths = sysconfig.get_paths()
    return not filename.startswith(tuple(os.path.dirname(m.__file__) + os.sep for m in (torch, sys.modules["pdnn"]))) \
        and (not filename.startswith(paths["stdlib"] + os.sep) or filename.startswith(
            (paths["purelib"] + os.sep, paths["platlib"] + os.sep)))


def faithful_trace(model: nn.Module, opaque: Callable[[nn.Module], bool],
                   concrete_args: dict | None = None, values_only: bool = False, defaults: bool = True) -> fx.Graph:
    """``model``'s graph, or :class:`UnfaithfulTrace` if running it would not do what the forward
    does. ``values_only``: a graph that computes the same values but other gradients (it drops a
    ``no_grad`` block or a custom backward) is returned, with a warning that says so;
    ``defaults``: whether the placeholders keep the forward's defaults (a caller passing every
    argument needs none)."""
    tracer = Tracer(opaque, defaults)
    graph = tracer.trace(model, concrete_args=concrete_args)
    problems = [u for u in tracer.unrecorded if not (values_only and u in tracer.gradients_only)]
    if problems:
        raise UnfaithfulTrace(f"a traced graph would leave out part of its forward: {'; '.join(problems[:3])}")
    if tracer.gradients_only:
        warnings.warn(f"{type(model).__name__}: the rewritten graph computes the same values, but gradients "
                      f"where the forward had none or its own ({'; '.join(tracer.gradients_only[:3])}); "
                      "train it only with that in mind")
    return graph


@contextlib.contextmanager
def evaluated(model: nn.Module):
    """``model`` in eval mode for a pass that is not the user's call (an accuracy count, reading
    its energy structure), each module's own mode back afterwards. Modes go
    back by ``train``, outer modules first, so a module's own ``train`` runs as a user's call would."""
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield
    finally:
        for m, mode in modes:
            m.train(mode)


class ModelState:
    """What a model keeps besides its parameters: its buffers, the numbers and tensors its
    modules hold as plain attributes (``self.calls``, ``self.ema``) and the items of the lists,
    dicts, sets and deques they hold (``self.recorded.append(h)``, ``self.cache["h"] = h``),
    saved so that passes which are not the user's calls (a trace, the fold check) can be undone.
    A trace that fills such a container is not used: it would leave fx proxies there, and the
    graph would fill nothing later."""

    def __init__(self, model: nn.Module):
        self.buffers = [(f"{name}.{key}".lstrip("."), m, key, b, _Saved(b))
                        for name, m in model.named_modules() for key, b in m._buffers.items() if _saved(b)]
        self.attributes = [(name, m, dict(vars(m))) for name, m in model.named_modules()]
        self.classes = [(m, type(m)) for _, m, _ in self.attributes]
        self.tensors = [(f"{name}.{key}".lstrip("."), m, key, value, _Saved(value))
                        for name, m, saved in self.attributes for key, value in saved.items() if _saved(value)]
        self.numbers = [(f"{name}.{key}".lstrip("."), m, key, value) for name, m, saved in self.attributes
                        for key, value in saved.items() if type(value) in (int, float, complex)]
        self.containers = [(f"{name}.{key}".lstrip("."), _Contents(value)) for name, m, saved in self.attributes
                           for key, value in saved.items()
                           if key not in _MODULE_FIELDS and isinstance(value, _CONTAINERS)]

    def changed(self, rtol: float = 0.0, atol: float = 0.0, containers: bool = True) -> list[str]:
        """The buffers and attributes that differ from the saved ones (within the tolerances): a
        tensor replaced by another has changed, and so has an attribute set to a traced value;
        ``containers``: and a container whose items changed."""
        moved = [name for name, m, key, t, saved in [*self.buffers, *self.tensors]
                 if (m._buffers.get(key) if key in m._buffers else vars(m).get(key)) is not t
                 or not _unchanged(t, saved, rtol, atol)]
        moved += [name for name, m, key, value in self.numbers
                  if type(vars(m).get(key)) is not type(value) or vars(m)[key] != value]
        moved += [f"{name}.{key}".lstrip(".") for name, m, key in self._traced_values()]
        moved += [name for name, contents in self.containers if containers and contents.changed()]
        return list(dict.fromkeys(moved))

    def restore(self, keep: frozenset[str] = frozenset()) -> None:
        """Put every attribute back as it was (the same objects: one a pass set from ``None``, one
        it added or removed, too), the saved buffers and tensors with their saved values, and the
        saved items of containers. Left with the change they belong to: a hook's handle (its hook
        stays registered, and put back to ``None`` a forward registers another at every pass),
        the check's stand-ins for a ``forward`` and what a seeded call lends a stochastic module
        (:data:`LENT`), both taken back by whoever put them there (another thread's call may
        hold them meanwhile), and a module whose class changed (a lazy module sized, which its
        saved sizes would leave half sized). ``keep``: the names of attributes a pass added that
        are to stay (the constants a trace stores on the model, which its graph reads)."""
        sized = {id(m) for m, cls in self.classes if type(m) is not cls}
        for _, m, saved in self.attributes:
            if id(m) in sized:
                continue
            lent = LENT if is_stochastic(m) else frozenset()
            now = vars(m)
            for key in (now.keys() | saved.keys()) - _MODULE_FIELDS - lent - keep:
                value, was = now.get(key, _MISSING), saved.get(key, _MISSING)
                if value is was or isinstance(value, _KEPT) or isinstance(was, _KEPT):
                    continue
                if was is _MISSING:
                    delattr(m, key)
                else:
                    object.__setattr__(m, key, was)
        for _, m, key, b, saved in self.buffers:
            if id(m) not in sized:
                m._buffers[key] = _restored(b, saved)
        for _, m, key, t, saved in self.tensors:
            if id(m) not in sized:
                object.__setattr__(m, key, _restored(t, saved))
        for _, m, key, value in self.numbers:
            if id(m) not in sized:
                object.__setattr__(m, key, value)
        for _, contents in self.containers:
            contents.restore()

    def _traced_values(self) -> list[tuple[str, nn.Module, str]]:
        return [(name, m, key) for name, m, _ in self.attributes for key, value in list(vars(m).items())
                if isinstance(value, fx.Proxy)]


class StandIn:
    """What the check puts in place of a module's ``forward`` for a while and takes away itself
    (:class:`pdnn.foldcheck._PerThread`)."""


# what a seeded call lends each stochastic module (``SampledModel._drawing``) and takes back itself
LENT = frozenset({"generator"})
_MODULE_FIELDS = frozenset(vars(nn.Module()))  # a module's own registries: parameters, submodules, hooks
_CONTAINERS = (list, dict, set, collections.deque)
_KEPT = (RemovableHandle, StandIn)
_MISSING = object()


class _Contents:
    """The items of a container when a :class:`ModelState` was taken (by identity), and those of
    the containers in it, three levels deep (``self.stats["layer1"].append(h)``)."""

    def __init__(self, container, depth: int = 0):
        self.container, self.items = container, _items(container)
        values = self.items[1::2] if isinstance(container, dict) else self.items
        self.inner = [_Contents(v, depth + 1) for v in values if isinstance(v, _CONTAINERS)] if depth < 3 else []

    def changed(self) -> bool:
        now = _items(self.container)
        return (len(now) != len(self.items) or any(a is not b for a, b in zip(now, self.items))
                or any(inner.changed() for inner in self.inner))

    def restore(self) -> None:
        if self.changed():
            c = self.container
            if isinstance(c, dict):
                c.clear()
                c.update(zip(self.items[::2], self.items[1::2]))
            elif isinstance(c, list):
                c[:] = self.items
            else:
                c.clear()
                c.update(self.items) if isinstance(c, set) else c.extend(self.items)
        for inner in self.inner:
            inner.restore()


def _items(container) -> list:
    """A container's items; a dict's keys and values in turn (a dict keeps the key object of an
    entry written again, so both compare by identity)."""
    return [item for pair in container.items() for item in pair] if isinstance(container, dict) else list(container)


def add_module(gm: fx.GraphModule, prefix: str, module: nn.Module) -> str:
    """Add ``module`` to ``gm`` under the first free name ``prefix_0``, ``prefix_1``, ... and
    return it: a user's own attribute of that name (a ``pooled_pbit_0`` of their model) is kept."""
    name = next(f"{prefix}_{k}" for k in itertools.count() if not hasattr(gm, f"{prefix}_{k}"))
    gm.add_submodule(name, module)
    return name


def wrap_module_calls(gm: fx.GraphModule, selected: Callable[[nn.Module], bool],
                      wrapper: Callable[[nn.Module], nn.Module], prefix: str) -> bool:
    """Route ``gm``'s calls of the modules ``selected`` accepts through ``wrapper(module)``, one
    wrapper per module (added to ``gm`` as ``prefix_0``, ``prefix_1``, ..., by :func:`add_module`);
    the user's modules are not modified. Returns whether any call was rerouted."""
    wrappers: dict[str, str] = {}
    for node in gm.graph.nodes:
        if node.op == "call_module" and selected(gm.get_submodule(node.target)):
            if node.target not in wrappers:
                wrappers[node.target] = add_module(gm, prefix, wrapper(gm.get_submodule(node.target)))
            node.target = wrappers[node.target]
    return bool(wrappers)


def _saved(value) -> bool:
    """Whether ``value`` is a tensor whose values a :class:`ModelState` keeps (a lazy module's
    uninitialised parameter or buffer has none)."""
    return isinstance(value, torch.Tensor) and not isinstance(value, nn.parameter.UninitializedTensorMixin)


class _Saved:
    """A tensor's values and version when a :class:`ModelState` was taken."""

    def __init__(self, tensor: torch.Tensor):
        self.values, self.version = tensor.detach().clone(), _version(tensor)


def _version(tensor: torch.Tensor) -> int | None:
    return None if tensor.is_inference() else tensor._version  # inference tensors have no version


def _restored(tensor: torch.Tensor, saved: _Saved) -> torch.Tensor:
    """``tensor`` with the ``saved`` values: untouched if it has them, written in place if it can
    be, else the saved copy.

    Where the passes since did not bump its version (a batch norm updates its running statistics
    inside its kernel), the write goes through ``.data`` and leaves the version alone: a backward
    pass still pending from an earlier call may have saved the tensor (the batch norm does, though
    in training it never reads them), and a bump would fail it. Where they did bump it (``fill_``,
    ``+=``), the write bumps it too, so that a reader who caches a value until its version moves
    (the ``initialised`` flag of :class:`pdnn.nn.quant.WeightQuantizer`) sees the restore."""
    if _unchanged(tensor, saved, 0.0, 0.0):
        return tensor
    try:
        if _version(tensor) == saved.version:
            tensor.data.copy_(saved.values)
        else:
            with torch.no_grad():
                tensor.copy_(saved.values)
        return tensor
    except RuntimeError:  # an inference-mode tensor, or an expanded one: keep the saved copy instead
        return saved.values


def _unchanged(tensor: torch.Tensor, saved: _Saved, rtol: float, atol: float) -> bool:
    """Whether ``tensor`` still holds its ``saved`` values (within the tolerances). While
    ``torch.export`` traces, the tensors are stand-ins that hold no values to compare: an in-place
    change of one moves its version counter, and only that can tell."""
    if torch.compiler.is_compiling():
        return _version(tensor) == saved.version
    return _close(tensor, saved.values, rtol, atol)


def _close(a: torch.Tensor, b: torch.Tensor, rtol: float, atol: float) -> bool:
    if a.shape != b.shape or a.dtype != b.dtype:
        return False
    if a.is_floating_point() or a.is_complex():
        return torch.allclose(a, b, rtol, atol, equal_nan=True)
    return torch.equal(a, b)
