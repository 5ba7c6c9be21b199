"""What is an activation: the places of a model :func:`pdnn.convert.to_sampled` can convert.

Activation modules are found by type, activations called as functions inside ``forward``
(``torch.tanh``, ``F.sigmoid``, ``x.tanh()``, ...) by tracing the model with ``torch.fx``; an
activation is *hidden* unless its output reaches the network's output without passing through a
layer with weights. Tracing reads a model, never modifies it.
"""
from __future__ import annotations

import inspect
import itertools
import operator
import warnings
from dataclasses import dataclass
from typing import NamedTuple, Sequence

import torch
from torch import fx, nn
from torch.nn import functional as TF
from torch.nn.modules.batchnorm import _NormBase

from ..errors import UsageError
from ..nn import Quantize, is_stochastic
from ..tracing import DROPOUT_FUNCTIONS, faithful_trace, steering_gradients_only, unsized
from .methods import METHODS


# float activations that only the noise methods (gaussian, logistic) can handle
_OTHER_MODULES = tuple(
    getattr(nn, name) for name in (
        "ReLU", "LeakyReLU", "ELU", "SELU", "CELU", "GELU", "SiLU", "Mish", "Softplus", "Softsign",
        "Hardsigmoid", "Hardswish", "Tanhshrink", "PReLU", "LogSigmoid", "Threshold", "RReLU",
        "Hardshrink", "Softshrink",
    ) if hasattr(nn, name)
)


def _module_kind(m: nn.Module) -> str | None:
    """Canonical activation kind of a module, or ``None`` if it is not an activation. A subclass
    of a torch activation that overrides ``forward`` (LeCun's ``1.7159 * tanh(2x / 3)``) computes
    something else: not one (it was converted as the plain function; the trace goes into it)."""
    if is_stochastic(m):
        return "stochastic"
    if isinstance(m, Quantize):
        return "quantize"
    if _unchanged(m, nn.Tanh):
        return "tanh"
    if _unchanged(m, nn.Sigmoid):
        return "sigmoid"
    if _unchanged(m, nn.Hardtanh):  # nn.ReLU6 included: a p-bit with values {0, 6}
        return "hardtanh"
    other = next((base for base in _OTHER_MODULES if isinstance(m, base)), None)
    return type(m).__name__.lower() if other is not None and _unchanged(m, other) else None


def _unchanged(m: nn.Module, base: type[nn.Module]) -> bool:
    """Whether ``m`` is a ``base`` that computes what ``base`` does (its ``forward``)."""
    return isinstance(m, base) and type(m).forward is base.forward


def _function_table() -> dict:
    table = {}

    def add(owner, owner_name: str, names: Sequence[str], kind: str) -> None:
        for name in names:
            fn = getattr(owner, name, None)
            if fn is not None:
                table.setdefault(fn, (f"{owner_name}.{name}", kind))

    add(torch, "torch", ("tanh", "tanh_"), "tanh")
    add(TF, "F", ("tanh",), "tanh")
    add(torch, "torch", ("sigmoid", "sigmoid_"), "sigmoid")
    add(TF, "F", ("sigmoid",), "sigmoid")
    add(torch.special, "torch.special", ("expit",), "sigmoid")
    add(TF, "F", ("hardtanh", "hardtanh_", "relu6"), "hardtanh")
    add(torch, "torch", ("relu", "relu_"), "relu")
    add(TF, "F", ("relu", "relu_"), "relu")
    for name in ("leaky_relu", "leaky_relu_", "elu", "elu_", "selu", "selu_", "celu", "celu_", "gelu", "silu",
                 "mish", "softplus", "softsign", "hardsigmoid", "hardswish", "logsigmoid", "prelu", "tanhshrink",
                 "rrelu", "rrelu_", "hardshrink", "softshrink", "threshold", "threshold_"):
        add(TF, "F", (name,), name.rstrip("_"))
    for name in ("selu", "selu_", "celu", "celu_", "rrelu", "rrelu_", "prelu", "threshold", "threshold_"):
        add(torch, "torch", (name,), name.rstrip("_"))
    return table


_FUNCTIONS = _function_table()
_METHOD_CALLS = {"tanh": "tanh", "tanh_": "tanh", "sigmoid": "sigmoid", "sigmoid_": "sigmoid",
                 "relu": "relu", "relu_": "relu"}
IN_PLACE_SHARED = "in place on a tensor that is used elsewhere"  # a replacement is not in place
TRANSFORMS_CONSTANTS = "also called on weights or constants, which its replacement would make random"
# a module a model traced only at its defaults calls on weights there: no activation of the input
# on that path, and another may call it on data; left out of 'hidden' and 'all', refused by name
ON_WEIGHTS_WHERE_TRACED = ("called on weights or constants where the forward could be traced (at its defaults), "
                           "which its replacement would make random")
# operations whose result may share memory with their input: an in-place write through one is a
# write to the others. Counted to be safe: those that may copy or not (reshape, contiguous), and
# conversions that return their input itself when it has the type and device asked for already
# (x.float() of a float32 x, x.to(...), x.cpu()); besides these, every in-place call returns its input
_VIEW_METHODS = {"view", "view_as", "reshape", "reshape_as", "flatten", "unflatten", "ravel", "transpose",
                 "swapaxes", "swapdims", "permute", "t", "adjoint", "unsqueeze", "squeeze", "expand", "expand_as",
                 "broadcast_to", "narrow", "select", "unfold", "movedim", "moveaxis", "contiguous", "split",
                 "unsafe_split", "split_with_sizes", "tensor_split", "hsplit", "vsplit", "dsplit", "chunk",
                 "unsafe_chunk", "unbind", "diagonal", "as_strided", "detach", "view_as_real", "view_as_complex",
                 "real", "imag", "conj", "resolve_conj", "resolve_neg", "align_as", "align_to", "rename",
                 "refine_names", "as_subclass", "to", "type", "type_as", "float", "double", "half", "bfloat16",
                 "cfloat", "cdouble", "int", "long", "short", "char", "byte", "bool", "cpu", "cuda", "__getitem__"}
_VIEW_FUNCTIONS = {operator.getitem, torch.flatten, torch.unflatten, torch.ravel, torch.reshape, torch.transpose,
                   torch.swapaxes, torch.swapdims, torch.t, torch.adjoint, torch.permute, torch.squeeze,
                   torch.unsqueeze, torch.broadcast_to, torch.broadcast_tensors, torch.atleast_1d, torch.atleast_2d,
                   torch.atleast_3d, torch.narrow, torch.select, torch.movedim, torch.moveaxis, torch.split,
                   torch.unsafe_split, torch.split_with_sizes, torch.tensor_split, torch.hsplit, torch.vsplit,
                   torch.dsplit, torch.chunk, torch.unsafe_chunk, torch.unbind, torch.diagonal, torch.detach,
                   torch.as_strided, torch.view_as_real, torch.view_as_complex, torch.real, torch.imag, torch.conj,
                   torch.resolve_conj, torch.resolve_neg, *DROPOUT_FUNCTIONS}  # a dropout not drawing returns its input
_VIEW_ATTRIBUTES = {"T", "mT", "H", "mH", "data", "real", "imag"}  # x.T is traced as getattr(x, "T")
_IN_PLACE_OPERATORS = {operator.iadd, operator.isub, operator.imul, operator.itruediv, operator.ifloordiv,
                       operator.imod, operator.ipow, operator.imatmul, operator.iand, operator.ior, operator.ixor,
                       operator.ilshift, operator.irshift}
# torch layers that may return their input or a view of it (a dropout when it does not draw)
_VIEW_MODULES = (nn.Identity, nn.Flatten, nn.Unflatten, nn.modules.dropout._DropoutNd)
# modules whose output is a tuple of separate tensors: taking an element of it takes no view
_TUPLE_MODULES = (nn.RNNBase, nn.MultiheadAttention)
_SHAPE_METHODS = {"size", "dim", "numel", "ndimension", "nelement"}  # read no value of the tensor
_SHAPE_ATTRIBUTES = {"shape", "dtype", "device", "ndim", "is_cuda", "layout"}
_INPLACE_FUNCTIONS = {fn for fn, (label, _) in _FUNCTIONS.items() if label.endswith("_")}
_WEIGHT_FUNCTIONS = {TF.linear, TF.bilinear, TF.conv1d, TF.conv2d, TF.conv3d, TF.conv_transpose1d,
                     TF.conv_transpose2d, TF.conv_transpose3d, torch.matmul, torch.mm, torch.bmm,
                     torch.einsum, torch.addmm, operator.matmul}
_WEIGHT_METHODS = {"matmul", "mm", "bmm", "__matmul__"}


def _supports(method: str, kind: str) -> bool:
    if kind == "stochastic":
        return False
    if method == "pbit":
        return kind in ("tanh", "sigmoid", "hardtanh", "quantize")
    if method == "dither":
        return kind == "quantize"
    return True  # gaussian / logistic: noise on any activation's pre-activation


@dataclass
class _Site:
    """One convertible place: an activation module (all its calls) or one functional call."""

    name: str  # module path, or for a function call its fx node's name (the p-bit's module name)
    op: str  # "nn.Tanh", "torch.tanh", "Tensor.tanh", ...
    kind: str  # "tanh", "sigmoid", "hardtanh", "quantize", "relu", ..., "stochastic"
    hidden: bool
    module: nn.Module | None = None
    node: fx.Node | None = None
    bounds: tuple[float, float] | None = None  # hardtanh's (min_val, max_val) when constant
    problem: str | None = None  # why it cannot be rewritten at all (e.g. in place on a shared tensor)
    holder: nn.Module | None = None  # a torch layer holding the activation function as an attribute
    also_hidden: bool = False  # a module called at the output (so not hidden) and at a hidden place too

    def describe(self) -> dict:
        return {"name": self.name, "op": self.op, "kind": self.kind, "hidden": self.hidden,
                "methods": [m for m in METHODS if self.problem is None and _supports(m, self.kind)]}


def _is_activation(m: nn.Module) -> bool:
    """Traced into user modules (to see functional activations); activation modules, which are
    swapped whole, stay opaque, as torch layers and pdnn modules do (see :mod:`pdnn.tracing`)."""
    return _module_kind(m) is not None


# Normalisation layers have parameters (a per-channel scale and shift; LayerNorm's may even be 2-d)
# but mix no features: an activation followed only by one of them still produces the output.
_NORMALISATION = (_NormBase, nn.LayerNorm, nn.GroupNorm)  # _NormBase: BatchNorm and InstanceNorm


def _has_weights(m: nn.Module) -> bool:
    """A layer that mixes features through a weight matrix or kernel (a parameter of dim >= 2):
    ``nn.Linear``, ``nn.Conv2d``, ``QuantLinear``, ...; not normalisation layers, nor ``nn.PReLU``
    (whose parameters are element-wise)."""
    return not isinstance(m, _NORMALISATION) and any(p.dim() >= 2 for p in m.parameters())


def _is_weighted(node: fx.Node, modules: dict) -> bool:
    if node.op == "call_module":
        return _has_weights(modules[node.target])
    if node.op == "call_function":
        return node.target in _WEIGHT_FUNCTIONS
    if node.op == "call_method":
        return node.target in _WEIGHT_METHODS
    return False


def _reaches_output_unweighted(graph: fx.Graph, modules: dict) -> set[fx.Node]:
    """Nodes whose value reaches the output without passing through a layer with weights."""
    out = [n for n in graph.nodes if n.op == "output"]
    seen: set[fx.Node] = set()
    stack = list(out)
    while stack:
        node = stack.pop()
        for arg in node.all_input_nodes:
            if arg not in seen:
                seen.add(arg)
                if not _is_weighted(arg, modules):
                    stack.append(arg)
    return seen


def _input_node(node: fx.Node):
    return node.args[0] if node.args else node.kwargs.get("input", node.kwargs.get("self"))


def _hardtanh_bounds(node: fx.Node, label: str) -> tuple[float, float] | None:
    if label == "F.relu6":
        return 0.0, 6.0
    args, kwargs = node.args, node.kwargs
    lo = kwargs.get("min_val", args[1] if len(args) > 1 else -1.0)
    hi = kwargs.get("max_val", args[2] if len(args) > 2 else 1.0)
    if isinstance(lo, (int, float)) and isinstance(hi, (int, float)) and lo < hi:
        return float(lo), float(hi)
    return None


def _function_site(node: fx.Node, taken: set[str], hidden: bool, modules: dict[str, nn.Module]) -> _Site | None:
    if node.op == "call_function" and node.target in _FUNCTIONS:
        label, kind = _FUNCTIONS[node.target]
        inplace = node.target in _INPLACE_FUNCTIONS or node.kwargs.get("inplace") is True
    elif node.op == "call_method" and node.target in _METHOD_CALLS:
        label, kind = f"Tensor.{node.target}", _METHOD_CALLS[node.target]
        inplace = node.target.endswith("_")
    else:
        return None
    name = node.name
    while name in taken:
        name = f"{name}_act"
    taken.add(name)
    site = _Site(name, label, kind, hidden, node=node)
    source = _input_node(node)
    if not isinstance(source, fx.Node):
        site.problem = "its input is not a traced tensor"
    elif inplace and _read_elsewhere(source, node, modules):
        site.problem = IN_PLACE_SHARED
    if kind == "hardtanh":
        site.bounds = _hardtanh_bounds(node, label)
    return site


def _is_view(node: fx.Node, modules: dict[str, nn.Module]) -> bool:
    """Whether ``node`` may return memory shared with its first argument."""
    if node.op == "call_method":
        return node.target in _VIEW_METHODS or _in_place_method(node.target)
    if node.op == "call_module":
        m = modules.get(node.target)
        return isinstance(m, _VIEW_MODULES) or getattr(m, "inplace", False) is True
    if node.op != "call_function":
        return False
    if node.target in _IN_PLACE_OPERATORS or node.kwargs.get("inplace") is True \
            or _in_place_method(getattr(node.target, "__name__", "")):
        return True  # an in-place call returns its input (h += x, torch.relu_(h), F.relu(h, inplace=True))
    if node.target is getattr:
        return len(node.args) > 1 and node.args[1] in _VIEW_ATTRIBUTES
    source = node.args[0] if node.args else None
    if node.target is operator.getitem and isinstance(source, fx.Node) and source.op == "call_module" \
            and isinstance(modules.get(source.target), _TUPLE_MODULES):
        return False  # an element of an LSTM's or an attention's output tuple
    return node.target in _VIEW_FUNCTIONS


def _in_place_method(name: str) -> bool:
    """``x.add_(y)``, ``x.squeeze_()``, ``x.__iadd__(y)``: in place, returning ``x``."""
    return name.endswith("_") and not name.startswith("__") or name.startswith("__i") and name.endswith("__")


def _reads_shape_only(node: fx.Node) -> bool:
    return (node.op == "call_method" and node.target in _SHAPE_METHODS
            or node.op == "call_function" and node.target is getattr and len(node.args) > 1
            and node.args[1] in _SHAPE_ATTRIBUTES)


def _read_elsewhere(source: fx.Node, writer: fx.Node, modules: dict[str, nn.Module]) -> bool:
    """Whether any node but ``writer`` (an in-place call on ``source``) reads the values of the
    memory it writes: ``source``, the tensor it is a view of, or any other view of that tensor
    (a shape read does not count)."""
    root = source
    while _is_view(root, modules) and isinstance(root.args[0] if root.args else None, fx.Node):
        root = root.args[0]
    aliases, stack = {root}, [root]
    while stack:  # every view of the root, however deep
        for user in stack.pop().users:
            if user not in aliases and user is not writer and _is_view(user, modules):
                aliases.add(user)
                stack.append(user)
    return any(user is not writer and user not in aliases and not _reads_shape_only(user)
               for alias in aliases for user in alias.users)


def _is_function_activation(value) -> bool:
    """An activation function held as a value (hashable, as the table's keys must be)."""
    try:
        return value in _FUNCTIONS and value not in _INPLACE_FUNCTIONS
    except TypeError:  # unhashable values (lists, dicts) are no function
        return False


def _held_function_sites(name: str, m: nn.Module, hidden: bool) -> list[_Site]:
    """The activation functions a torch layer holds as attributes and calls
    (``nn.TransformerEncoderLayer(activation=torch.tanh)``): swapped for a module by the
    attribute's path, no graph needed. A user's module is not read so: its own forward may use a
    function it holds for something else, and a trace shows its calls."""
    if not _runs_a_torch_layer(m):
        return []
    sites = []
    for attr, value in vars(m).items():
        if not attr.startswith("_") and _is_function_activation(value):
            label, kind = _FUNCTIONS[value]
            bounds = {"F.hardtanh": (-1.0, 1.0), "F.relu6": (0.0, 6.0)}.get(label)  # as called: f(x)
            sites.append(_Site(f"{name}.{attr}" if name else attr, label, kind, hidden, bounds=bounds, holder=m))
    return sites


def _module_label(m: nn.Module) -> str:
    cls = type(m)
    for package, short in (("torch.nn", "nn"), ("pdnn.nn", "pdnn.nn")):
        if cls.__module__.startswith(package):
            return f"{short}.{cls.__name__}"
    return cls.__name__


def _module_site(name: str, m: nn.Module, hidden: bool) -> _Site:
    kind = _module_kind(m)
    site = _Site(name, _module_label(m), kind, hidden, module=m)
    if kind == "hardtanh":
        site.bounds = (float(m.min_val), float(m.max_val))
    return site


class _Discovery(NamedTuple):
    """What :func:`_discover` found in a model."""

    sites: list[_Site]  # activations, in execution order (registration order without a trace)
    graph: fx.Graph | None  # None: torch.fx could not trace the model
    trace_error: Exception | None
    ops: list[str]  # the distinct operations seen, for error messages
    transforms: frozenset[str] = frozenset()  # activation modules called only on weights or constants


def check_module(model) -> None:
    """A model to convert must be a module (to_sampled, find_activations and calibrate of anything
    else failed with an AttributeError deep inside)."""
    if not isinstance(model, nn.Module):
        raise UsageError(f"expected an nn.Module to convert, got {type(model).__name__}")
    if isinstance(model, torch.jit.ScriptModule):  # (its copy failed inside torch with a KeyError)
        raise UsageError(f"a TorchScript model ({type(model).__name__}) cannot be converted: its code is "
                         "compiled; convert the Python module, then script the converted one")
    if lazy := unsized(model):
        raise UsageError(f"the model has lazy modules not yet sized ({', '.join(lazy)}); call it once on an input "
                         "before converting it")  # (torch's own error, from inside the search, named none)


def _discover(model: nn.Module) -> _Discovery:
    """The activation sites of ``model`` and its fx graph (tracing reads, never modifies; a graph
    that would leave part of the forward out counts as no graph)."""
    check_module(model)
    try:
        graph = faithful_trace(model, _is_activation, values_only=True)
    except Exception as err:  # fx raises many types for untraceable code
        specialised = _trace_at_defaults(model)
        if specialised is None:
            return _Discovery(_discover_modules(model), None, err, [])
        # a trace with the non-tensor arguments at their defaults (``if mask is not None``) tells
        # which activation modules are hidden on that path; it must not replace ``forward``, so
        # functions called there are not rewritten (those torch layers hold are: no graph needed),
        # and modules it does not reach keep the registration guess
        found = _discover_in(model, specialised)
        sites = [s for s in found.sites if s.node is None]
        # one called on weights or constants there may be called on data on a path not traced: listed
        # and refused by name (a swap would make those weights random), and no hidden activation
        for name in sorted(found.transforms):
            sites.append(_module_site(name, model.get_submodule(name), False))
            sites[-1].problem = ON_WEIGHTS_WHERE_TRACED
        seen = {id(s.module) for s in sites if s.module is not None} | {s.name for s in sites if s.holder is not None}
        sites += [s for s in _discover_modules(model)
                  if (id(s.module) if s.holder is None else s.name) not in seen]
        return _Discovery(sites, None, err, found.ops)
    return _discover_in(model, graph)


def _trace_at_defaults(model: nn.Module) -> fx.Graph | None:
    """``model`` traced with its non-tensor keyword defaults fixed; None if there are none or it
    still cannot be traced."""
    try:
        parameters = inspect.signature(model.forward).parameters.values()
    except (TypeError, ValueError):
        return None
    concrete = {p.name: p.default for p in parameters
                if p.default is not p.empty and isinstance(p.default, (type(None), bool, int, float, str))}
    if not concrete:
        return None
    try:
        return faithful_trace(model, _is_activation, concrete, values_only=True)
    except Exception:  # fx raises many types for untraceable code
        return None


# the most arguments defaulting to None whose combinations are each traced (2**n - 1 traces); with
# more, each alone and the rest together are (see branches_on_none)
MAX_TRACED_OPTIONAL = 8


def branches_on_none(model: nn.Module, graph: fx.Graph) -> tuple[tuple[str, ...], list[frozenset[str]],
                                                                  tuple[str, ...]]:
    """The forward's arguments that default to None; the sets of them whose being None (just
    those, the others given) ``graph`` does not compute as the forward does; and, beyond
    :data:`MAX_TRACED_OPTIONAL` such arguments, whose combinations are not traced, those that
    must not be None (each that differs alone, and the others if all of them together differ).
    ``graph`` was traced with a stand-in for each, and fx cannot follow ``if mask is not None:``
    both ways: ``is`` is decided once, while tracing, as if the argument were given. Each set is
    traced again with its arguments at None (``if a is not None or b is not None`` differs only
    when both are); where the two graphs compute differently, the graph holds only the branch of
    given values."""
    try:
        parameters = inspect.signature(model.forward).parameters.values()
    except (TypeError, ValueError):
        return (), [], ()
    names = tuple(p.name for p in parameters if p.default is None and p.kind is not p.VAR_KEYWORD)
    if len(names) <= MAX_TRACED_OPTIONAL:
        sets = (frozenset(c) for k in range(1, len(names) + 1) for c in itertools.combinations(names, k))
        return names, [none for none in sets if _differs_at_none(model, graph, tuple(none))], ()
    alone = tuple(name for name in names if _differs_at_none(model, graph, (name,)))
    rest = tuple(name for name in names if name not in alone)
    # some combination of the rest differs, which one untraced: any of them None is refused too
    return names, [], alone + (rest if len(rest) > 1 and _differs_at_none(model, graph, rest) else ())


def _differs_at_none(model: nn.Module, graph: fx.Graph, names: tuple[str, ...]) -> bool:
    """Whether ``model`` traced with ``names`` at None computes other than ``graph`` does with
    them None (or does not trace so)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the first trace said what there is to say
            at_none = faithful_trace(model, _is_activation, dict.fromkeys(names), values_only=True)
    except Exception:  # fx raises many types for untraceable code
        return True
    return _computation(at_none) != _computation(graph, as_none=names)


def _computation(graph: fx.Graph, as_none: tuple[str, ...] = ()) -> list[tuple]:
    """What ``graph`` computes, with its nodes named by position and the arguments ``as_none``
    read as None: the same list for two traces that differ only in names, in fx's checks that an
    argument fixed at None is None, and in an argument passed on (to a layer, or returned) that
    one trace holds as the input and the other as None."""
    names: dict[fx.Node, str | None] = {}
    steps = []
    inputs = 0
    for node in graph.nodes:
        if node.op == "placeholder":
            names[node], inputs = None if node.target in as_none else f"input {inputs}", inputs + 1
        elif not (node.op == "call_function" and getattr(node.target, "__name__", "") == "_assert_is_none"):
            names[node] = f"step {len(steps)}"
            arguments = fx.node.map_arg((node.args, node.kwargs), lambda a: names.get(a, a.name))
            steps.append((node.op, node.target, repr(arguments)))
    return steps


def _discover_in(model: nn.Module, graph: fx.Graph) -> _Discovery:
    """The activation sites found in a trace ``graph`` of ``model``."""
    modules = dict(model.named_modules())
    output_side = _reaches_output_unweighted(graph, modules)
    taken = {name.split(".")[0] for name in modules if name} | set(dir(model)) | set(dir(fx.GraphModule))
    sites: dict[str, _Site] = {}
    by_module: dict[int, _Site] = {}  # one site per module object, whatever paths reach it

    def module_site(name: str, m: nn.Module, hidden: bool) -> _Site:
        """The site of ``m``, made at its first place; one module at a hidden place and at the
        output (also where a torch layer holds it, ``TransformerEncoderLayer(activation=act)``,
        and the network calls it again) is one site, at neither."""
        site = by_module.get(id(m))
        if site is None:
            site = sites[name] = by_module[id(m)] = _module_site(name, m, hidden)
        elif hidden != site.hidden:
            site.hidden, site.also_hidden = False, True
        return site

    ops: list[str] = []
    fed, transforms = _fed_by_input(graph), set()  # activation modules also called on constants
    unused = steering_gradients_only(graph)  # no activation: only a straight-through surrogate
    for node in graph.nodes:
        if node.op == "call_module":
            m = modules[node.target]
            ops.append(_module_label(m))
            if node in unused:
                continue
            if _module_kind(m) is None:
                # a torch layer kept whole may call an activation it holds, a module or a function
                # (nn.TransformerEncoderLayer(activation=nn.Tanh() or torch.tanh)): swapped by its path
                hidden = _has_weights(m) or node not in output_side
                for inner_name, inner in m.named_modules(prefix=node.target):
                    if inner is not m and _module_kind(inner) is not None:
                        module_site(inner_name, inner, hidden)
                    for site in _held_function_sites(inner_name, inner, hidden):
                        sites.setdefault(site.name, site)
                continue
            if node not in fed:
                transforms.add(node.target)
                continue
            site = module_site(node.target, m, node not in output_side)
            if _after_a_draw(node, modules):
                site.kind = "stochastic"
            source = _input_node(node)
            if getattr(m, "inplace", False) and isinstance(source, fx.Node) and _read_elsewhere(source, node, modules):
                site.problem = IN_PLACE_SHARED  # its replacement is not in place: the other user would change
        elif node.op in ("call_function", "call_method"):
            ops.append(node.target if isinstance(node.target, str) else
                       getattr(node.target, "__name__", str(node.target)))
            convertible = node in fed and node not in unused
            site = _function_site(node, taken, node not in output_side, modules) if convertible else None
            if site is not None:
                if _after_a_draw(node, modules):
                    site.kind = "stochastic"
                sites[site.name] = site
    for name in transforms & sites.keys():
        sites[name].problem = TRANSFORMS_CONSTANTS
    return _Discovery(list(sites.values()), graph, None, list(dict.fromkeys(ops)), frozenset(transforms - sites.keys()))


def _after_a_draw(node: fx.Node, modules: dict[str, nn.Module]) -> bool:
    """Whether the activation ``node`` takes the output of a stochastic module as it is (the noise
    a conversion draws before it): it is already stochastic, and converting it again would draw a
    second noise (σ√2, said nowhere)."""
    source = _input_node(node)
    return (isinstance(source, fx.Node) and source.op == "call_module"
            and _module_kind(modules[source.target]) == "stochastic")


def _drawn_before(model: nn.Module, name: str) -> bool:
    """:func:`_after_a_draw` without a trace: the module before it in its ``nn.Sequential`` is
    stochastic (as a conversion leaves ``Sequential(GaussianNoise, Tanh)``)."""
    parent, _, own = name.rpartition(".")
    holder = model.get_submodule(parent)
    if not isinstance(holder, nn.Sequential):
        return False
    names = list(holder._modules)
    at = names.index(own)
    return at > 0 and _module_kind(holder._modules[names[at - 1]]) == "stochastic"


def _fed_by_input(graph: fx.Graph) -> set[fx.Node]:
    """The nodes whose value depends on the forward's arguments. A tanh or sigmoid of anything
    else -- a weight's reparametrisation ``tanh(self.raw)``, a learned gate ``sigmoid(self.gate)``
    -- is no activation: made random, it would change the weights on every call."""
    fed = {node for node in graph.nodes if node.op == "placeholder"}
    for node in graph.nodes:
        if node not in fed and any(arg in fed for arg in node.all_input_nodes):
            fed.add(node)
    return fed


def _discover_modules(model: nn.Module) -> list[_Site]:
    """Without a trace: activation modules in registration order; those registered after the last
    module with weights count as output activations. Functions and modules a torch layer holds
    as its activation are hidden where the layer has weights of its own to apply after them
    (``nn.TransformerEncoderLayer(activation=nn.Tanh())`` registers it after its last linear
    layer, so by the order alone it was an output one)."""
    named = [(n, m) for n, m in model.named_modules() if n and not list(m.children())]
    last_weighted = max((i for i, (_, m) in enumerate(named) if _has_weights(m) and _module_kind(m) is None),
                        default=-1)
    sites = [_module_site(n, m, i < last_weighted or _held_by_a_weighted_layer(model, n))
             for i, (n, m) in enumerate(named) if _module_kind(m) is not None]
    for site in sites:
        if _drawn_before(model, site.name):
            site.kind = "stochastic"
        if getattr(site.module, "inplace", False):
            site.problem = ("in place (inplace=True), and without a trace it cannot be told whether its input is "
                            "used elsewhere; build it with inplace=False")
    return sites + [site for n, m in model.named_modules() for site in _held_function_sites(n, m, _has_weights(m))]


def _held_by_a_weighted_layer(model: nn.Module, name: str) -> bool:
    """Whether the module at ``name`` is an activation a torch layer with weights holds: as for a
    function it holds, the layer applies its weights after it."""
    holder = model.get_submodule(name.rpartition(".")[0])
    return _runs_a_torch_layer(holder) and _has_weights(holder)


def _runs_a_torch_layer(m: nn.Module) -> bool:
    """Whether ``m``'s forward is a torch layer's own (a subclass that keeps it too), not a
    container's, nor a user's: a user's module that ``torch.nn.utils.parametrize`` gave a class of
    torch's (``weight_norm``) runs the user's forward."""
    forward = type(m).forward
    return (getattr(forward, "__module__", "").startswith("torch.nn") and forward is not nn.Module.forward
            and not isinstance(m, (nn.Sequential, nn.ModuleList, nn.ModuleDict)))


def find_activations(model: nn.Module) -> list[dict]:
    """The activations :func:`to_sampled` can see in ``model``, in execution order.

    Returns one dict per activation: ``name`` (module path, or for a function call inside
    ``forward`` its ``torch.fx`` node name, e.g. ``"tanh_1"``: the name of the p-bit module that
    replaces it, or ``"<name>_noise"`` for the noise module inserted before it), ``op`` (``"nn.Tanh"``,
    ``"torch.tanh"``, ...), ``kind``, ``hidden`` (False when its output reaches the network's
    output without passing through a layer with weights) and ``methods`` (those that can
    convert it). Activations called as functions are only found if ``torch.fx`` can trace the
    model.
    """
    return [s.describe() for s in _discover(model).sites]
