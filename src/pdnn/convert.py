"""Sampling without retraining: make a trained deterministic network stochastic.

The paper's second route: take a network that was trained deterministically and gain accuracy
from sampling it, without changing a single weight. :func:`to_sampled` returns a converted copy
(the input is never modified) whose activations draw random numbers:

* ``method="pbit"``: ``tanh`` / ``sigmoid`` / ``hardtanh`` activations (and pdnn ``Quantize``)
  become p-bits of equal mean: ``nn.Tanh`` -> ``PBit("bipolar", β)`` (``E[b] = tanh(βx)``),
  ``nn.Sigmoid`` -> ``PBit("unipolar", β)`` (``E[b] = σ(βx)``), ``nn.Hardtanh(a, c)`` ->
  ``HardPBit(a, c, β)`` (bits in {a, c}, ``E[b] = clamp(βx, a, c)``), ``Quantize(k, β_q)`` ->
  ``PBit(mode, β_q·β)`` (the mean is the unrounded activation). ``β = 1`` keeps the mean equal
  to the trained activation; ``β < 1`` is a higher temperature.
* ``method="dither"``: every pdnn ``Quantize(k)`` gets uniform noise of ``scale`` quantisation
  steps added before rounding (:class:`pdnn.nn.DitheredQuantize`); one step makes the mean equal
  to the unrounded activation.
* ``method="gaussian"`` / ``"logistic"``: noise of scale ``scale`` is added to the
  pre-activation of every activation (any kind, ReLU included); the activation is unchanged.

Activations that are modules are swapped in place in the copy (the model keeps its class and
module names); activations called as functions inside ``forward`` (``torch.tanh``,
``F.sigmoid``, ``x.tanh()``, ``F.hardtanh``, ``F.relu``, ...) are found and rewritten with
``torch.fx`` (the result is then a ``GraphModule``). What cannot be converted is listed by name
in a :class:`ConversionError`.

The conversion is described by a JSON-serialisable *spec* -- exactly the keyword arguments of
:func:`to_sampled` -- which a converted run directory stores in ``config.json["convert"]`` and
:func:`pdnn.runs.load_model` replays on the source weights. ``bn_stats`` (optional) carries
BatchNorm running statistics re-estimated under sampling by :func:`recalibrate_batchnorm`: the
only numbers of the network a conversion may change (no weight ever changes).

:func:`calibrate` chooses the scale (or β) by a sweep on held-out *training* examples and
:func:`convert_run` writes a converted run directory. See ``docs/convert.md``.
"""
from __future__ import annotations

import copy
import json
import math
import operator
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import torch
from torch import fx, nn
from torch.nn import functional as TF
from torch.nn.modules.batchnorm import _BatchNorm

from .nn import DitheredQuantize, GaussianNoise, HardPBit, LogisticNoise, PBit, Quantize, is_stochastic
from .nn.noise import check_scale
from .functional import check_beta

METHODS = ("pbit", "dither", "gaussian", "logistic")
LAYER_SETS = ("hidden", "all")
DEFAULT_SCALE = {"gaussian": 0.5, "logistic": 0.25, "dither": 1.0}
# the sweep of calibrate(): beta for pbit, the noise scale for the others
DEFAULT_VALUES = {
    "pbit": (0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0),
    "dither": (0.25, 0.5, 0.75, 1.0, 1.5, 2.0),
    "gaussian": (0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0),
    "logistic": (0.03, 0.05, 0.1, 0.2, 0.3, 0.5),
}
CALIBRATION = "calibration.json"


class ConversionError(ValueError):
    """A model cannot be converted; the message names the operations it could not handle."""


def parameter_of(method: str) -> str:
    """The spec key a method is tuned by: ``"beta"`` for pbit, ``"scale"`` for the others."""
    _check_method(method)
    return "beta" if method == "pbit" else "scale"


def _check_method(method: str) -> str:
    if method not in METHODS:
        raise ValueError(f"unknown conversion method {method!r}; expected one of {', '.join(METHODS)}")
    return method


# --------------------------------------------------------------------------------------------
# What is an activation
# --------------------------------------------------------------------------------------------

# float activations that only the noise methods (gaussian, logistic) can handle
_OTHER_MODULES = tuple(
    getattr(nn, name) for name in (
        "ReLU", "LeakyReLU", "ELU", "SELU", "CELU", "GELU", "SiLU", "Mish", "Softplus", "Softsign",
        "Hardsigmoid", "Hardswish", "Tanhshrink", "PReLU", "LogSigmoid", "Threshold", "RReLU",
        "Hardshrink", "Softshrink",
    ) if hasattr(nn, name)
)


def _module_kind(m: nn.Module) -> str | None:
    """Canonical activation kind of a module, or ``None`` if it is not an activation."""
    if is_stochastic(m):
        return "stochastic"
    if isinstance(m, Quantize):
        return "quantize"
    if isinstance(m, nn.Tanh):
        return "tanh"
    if isinstance(m, nn.Sigmoid):
        return "sigmoid"
    if isinstance(m, nn.Hardtanh):  # nn.ReLU6 included: a p-bit with values {0, 6}
        return "hardtanh"
    if isinstance(m, _OTHER_MODULES):
        return type(m).__name__.lower()
    return None


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

    def describe(self) -> dict:
        return {"name": self.name, "op": self.op, "kind": self.kind, "hidden": self.hidden,
                "methods": [m for m in METHODS if self.problem is None and _supports(m, self.kind)]}


class _Tracer(fx.Tracer):
    """Traces into user modules (to see functional activations); keeps standard torch layers,
    activation modules and pdnn layers (``Quantize`` computes a tanh inside) as leaves."""

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        if _module_kind(m) is not None or type(m).__module__.startswith("pdnn.nn"):
            return True
        return super().is_leaf_module(m, qualname)


def _is_weighted(node: fx.Node, modules: dict) -> bool:
    if node.op == "call_module":
        return any(True for _ in modules[node.target].parameters())
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


def _function_site(node: fx.Node, taken: set[str], hidden: bool) -> _Site | None:
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
    elif inplace and len(source.users) > 1:
        site.problem = "in place on a tensor that is used elsewhere"
    if kind == "hardtanh":
        site.bounds = _hardtanh_bounds(node, label)
    return site


def _module_aliases(model: nn.Module) -> dict[int, list[str]]:
    aliases: dict[int, list[str]] = {}
    for name, m in model.named_modules(remove_duplicate=False):
        if name:
            aliases.setdefault(id(m), []).append(name)
    return aliases


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


def _discover(model: nn.Module) -> tuple[list[_Site], fx.Graph | None, Exception | None, list[str]]:
    """Activation sites of ``model``, its fx graph (``None`` if it cannot be traced), the trace
    error, and the distinct operations seen (for error messages)."""
    try:
        graph = _Tracer().trace(model)
    except Exception as err:  # fx raises many types for untraceable code
        return _discover_modules(model), None, err, []
    modules = dict(model.named_modules())
    output_side = _reaches_output_unweighted(graph, modules)
    taken = {name.split(".")[0] for name in modules if name} | set(dir(model)) | set(dir(fx.GraphModule))
    sites: dict[str, _Site] = {}
    ops: list[str] = []
    for node in graph.nodes:
        if node.op == "call_module":
            m = modules[node.target]
            ops.append(_module_label(m))
            if _module_kind(m) is None:
                continue
            site = sites.get(node.target)
            if site is None:
                sites[node.target] = _module_site(node.target, m, node not in output_side)
            elif node in output_side:
                site.hidden = False
        elif node.op in ("call_function", "call_method"):
            ops.append(node.target if isinstance(node.target, str) else
                       getattr(node.target, "__name__", str(node.target)))
            site = _function_site(node, taken, node not in output_side)
            if site is not None:
                sites[site.name] = site
    return list(sites.values()), graph, None, list(dict.fromkeys(ops))


def _discover_modules(model: nn.Module) -> list[_Site]:
    """Without a trace: activation modules in registration order; those registered after the last
    module with weights count as output activations."""
    named = [(n, m) for n, m in model.named_modules() if n and not list(m.children())]
    last_weighted = max((i for i, (_, m) in enumerate(named) if any(True for _ in m.parameters(recurse=False))
                         and _module_kind(m) is None), default=-1)
    return [_module_site(n, m, i < last_weighted) for i, (n, m) in enumerate(named) if _module_kind(m) is not None]


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
    return [s.describe() for s in _discover(model)[0]]


# --------------------------------------------------------------------------------------------
# The conversion
# --------------------------------------------------------------------------------------------

def _replacement(method: str, site: _Site, value: float) -> nn.Module:
    """The module that takes the place of ``site`` (module sites) or is inserted at it."""
    if method == "pbit":
        if site.kind == "tanh":
            return PBit("bipolar", value)
        if site.kind == "sigmoid":
            return PBit("unipolar", value)
        if site.kind == "hardtanh":
            return HardPBit(*site.bounds, beta=value)
        return PBit(site.module.mode, site.module.beta * value)  # quantize
    if method == "dither":
        q = site.module
        return DitheredQuantize(q.bits, q.beta, q.mode, width=value)
    noise = GaussianNoise(value) if method == "gaussian" else LogisticNoise(value)
    return noise if site.module is None else nn.Sequential(noise, site.module)


def _why_not(method: str, site: _Site) -> str | None:
    if site.problem:
        return site.problem
    if site.kind == "stochastic":
        return "already stochastic"
    if not _supports(method, site.kind):
        return f"not supported by {method!r}"
    if method == "pbit" and site.kind == "hardtanh" and site.bounds is None:
        return "hardtanh bounds are not constants"
    return None


def _select(sites: list[_Site], layers) -> list[_Site]:
    if isinstance(layers, str):
        if layers in LAYER_SETS:  # already stochastic activations are left as they are
            return [s for s in sites if s.kind != "stochastic" and (s.hidden or layers == "all")]
        layers = [layers]
    if not isinstance(layers, (list, tuple)) or not all(isinstance(n, str) for n in layers):
        raise ValueError(f"layers must be 'hidden', 'all' or a list of activation names, got {layers!r}")
    by_name = {s.name: s for s in sites}
    unknown = [n for n in layers if n not in by_name]
    if unknown:
        raise ConversionError(
            f"unknown layer name(s) {', '.join(map(repr, unknown))}; the model's activations are: "
            + (", ".join(f"{s.name} ({s.op})" for s in sites) or "none")
        )
    return [by_name[n] for n in dict.fromkeys(layers)]


def _values_for(selected: list[_Site], value, what: str, check) -> dict[str, float]:
    if not isinstance(value, dict):
        v = check(value, what)
        return {s.name: v for s in selected}
    names = {s.name for s in selected}
    unknown = [k for k in value if k != "*" and k not in names]
    if unknown:
        raise ValueError(f"per-layer {what} for {', '.join(map(repr, unknown))}, which are not among the "
                         f"converted activations ({', '.join(sorted(names))})")
    missing = [n for n in names if n not in value and "*" not in value]
    if missing:
        raise ValueError(f"no {what} for {', '.join(sorted(missing))}; give one per layer or a default under '*'")
    return {s.name: check(value.get(s.name, value.get("*")), f"{what} of {s.name}") for s in selected}


def conversion_spec(method: str = "pbit", scale=None, beta=None, layers="hidden", bn_stats=None) -> dict:
    """The canonical, JSON-serialisable spec of a conversion (the keyword arguments of
    :func:`to_sampled`), with defaults filled in and options that do not apply rejected."""
    _check_method(method)
    if method == "pbit":
        if scale is not None:
            raise ValueError("method 'pbit' is tuned by beta (its inverse temperature), not by scale")
        spec = {"method": method, "beta": 1.0 if beta is None else beta}
    else:
        if beta is not None:
            raise ValueError(f"beta applies to method 'pbit' only; {method!r} is tuned by scale")
        spec = {"method": method, "scale": DEFAULT_SCALE[method] if scale is None else scale}
    key = parameter_of(method)
    if isinstance(spec[key], dict):
        spec[key] = {str(k): float(v) for k, v in spec[key].items()}
    else:
        spec[key] = float(spec[key]) if isinstance(spec[key], (int, float)) and not isinstance(spec[key], bool) \
            else spec[key]
    if isinstance(layers, str) and layers not in LAYER_SETS:
        layers = [layers]
    spec["layers"] = list(layers) if isinstance(layers, (list, tuple)) else layers
    if bn_stats:
        spec["bn_stats"] = bn_stats
    json.dumps(spec, allow_nan=False)  # must survive config.json
    return spec


def _check_beta_named(value, what: str) -> float:
    try:
        return check_beta(value)
    except ValueError:
        raise ValueError(f"{what} must be a finite number > 0, got {value!r}") from None


def to_sampled(
    model: nn.Module,
    method: str = "pbit",
    scale: float | dict[str, float] | None = None,
    beta: float | dict[str, float] | None = None,
    layers: str | Sequence[str] = "hidden",
    bn_stats: dict[str, dict[str, list[float]]] | None = None,
) -> nn.Module:
    """A stochastic copy of a trained deterministic ``model`` (``model`` itself is untouched).

    Args:
        model: any ``nn.Module``. Activation modules are swapped; activations called as
            functions inside ``forward`` are rewritten with ``torch.fx``.
        method: ``"pbit"`` (tanh/sigmoid/hardtanh/Quantize -> p-bits of equal mean),
            ``"dither"`` (Quantize -> uniform dither of ``scale`` steps before rounding),
            ``"gaussian"`` / ``"logistic"`` (noise of scale ``scale`` added to every selected
            activation's input; the activation is unchanged).
        scale: noise scale (gaussian: standard deviation σ; logistic: scale s, std sπ/√3;
            dither: width in quantisation steps), one number or ``{name: value}`` with an
            optional default under ``"*"``. ``None``: ``DEFAULT_SCALE[method]``. Not for pbit.
        beta: pbit only: the p-bits' inverse temperature, multiplying the activation's own
            (1 keeps the mean equal to the trained activation); a number or ``{name: value}``.
        layers: ``"hidden"`` (default: every activation whose output passes through another
            layer with weights before the output), ``"all"``, or a list of names from
            :func:`find_activations`.
        bn_stats: ``{batchnorm_name: {"running_mean": [...], "running_var": [...]}}`` to load
            into the converted copy (from :func:`recalibrate_batchnorm`); weights never change.

    Returns:
        The converted copy, in the input's train/eval mode: the same class with modules
        swapped, or a ``torch.fx.GraphModule`` when functional activations were rewritten.

    Raises:
        ConversionError: nothing to convert, or a selected activation the method cannot handle
            (the message lists each by name and operation).

    Example:
        >>> net = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 2))
        >>> to_sampled(net, "pbit")[1]
        PBit(mode='bipolar', beta=1, ste='mean')
    """
    spec = conversion_spec(method, scale, beta, layers, bn_stats)
    converted = copy.deepcopy(model)
    sites, graph, trace_error, ops = _discover(converted)
    selected = _select(sites, spec["layers"])
    name = type(model).__name__
    if not selected:
        if trace_error is not None and not sites:
            raise ConversionError(
                f"nothing to convert in {name}: it has no activation modules, and torch.fx could not trace its "
                f"forward ({type(trace_error).__name__}: {trace_error}), so activations called as functions could "
                "not be found or rewritten"
            )
        found = ", ".join(f"{s.name} ({s.op}, {'already stochastic' if s.kind == 'stochastic' else 'output'})"
                          for s in sites)
        raise ConversionError(
            f"nothing to convert in {name} with layers={spec['layers']!r}: "
            + (f"the activations are {found}; pass layers='all' or names to include output activations"
               if sites else f"it has no activation; operations seen: {', '.join(map(str, ops)) or 'none'}")
        )
    problems = [(s, _why_not(method, s)) for s in selected]
    problems = [(s, why) for s, why in problems if why]
    if problems:
        bad = {id(p) for p, _ in problems}
        ok = [s.name for s in selected if id(s) not in bad]
        raise ConversionError(
            f"cannot convert {name} with method {method!r}: "
            + "; ".join(f"{s.name} ({s.op}): {why}" for s, why in problems)
            + (f". Convertible: {', '.join(ok)} (pass layers=[...] to convert only those)" if ok else "")
        )
    key = parameter_of(method)
    check = _check_beta_named if key == "beta" else (lambda v, what: check_scale(v, what))
    values = _values_for(selected, spec[key], key, check)

    aliases = _module_aliases(converted)
    for site in selected:
        if site.module is None:
            continue
        new = _replacement(method, site, values[site.name])
        for path in aliases.get(id(site.module), [site.name]):
            parent, _, attr = path.rpartition(".")
            setattr(converted.get_submodule(parent) if parent else converted, attr, new)
    functional = [s for s in selected if s.module is None]
    if functional:
        if trace_error is not None:  # cannot happen: functional sites come from the trace
            raise ConversionError(f"cannot rewrite functional activations of {name}: {trace_error}")
        converted = _rewrite_functions(converted, graph, functional, method, values, name)
    elif trace_error is not None:
        warnings.warn(
            f"{name} could not be traced by torch.fx ({trace_error}); only activation modules were converted -- "
            "activations called as functions inside forward (torch.tanh, F.sigmoid, ...) stay deterministic, and "
            "layers='hidden' took the activation modules registered after the last weight layer as output ones",
            stacklevel=2,
        )
    if spec.get("bn_stats"):
        load_bn_stats(converted, spec["bn_stats"])
    return converted


def _rewrite_functions(model: nn.Module, graph: fx.Graph, sites: list[_Site], method: str,
                       values: dict[str, float], class_name: str) -> fx.GraphModule:
    gm = fx.GraphModule(model, graph, class_name=class_name)
    for site in sites:
        node = site.node
        target = site.name  # a p-bit takes the activation's place; noise is inserted before it
        while method != "pbit" and (target == site.name or hasattr(gm, target)):
            target = f"{target}_noise"
        gm.add_submodule(target, _replacement(method, site, values[site.name]))
        source = _input_node(node)
        if method == "pbit":
            with gm.graph.inserting_before(node):
                new = gm.graph.call_module(target, (source,))
            node.replace_all_uses_with(new)
            gm.graph.erase_node(node)
        else:
            with gm.graph.inserting_before(node):
                noisy = gm.graph.call_module(target, (source,))
            if node.args:
                node.args = (noisy, *node.args[1:])
            else:
                node.kwargs = {k: (noisy if v is source else v) for k, v in node.kwargs.items()}
    gm.graph.lint()
    gm.recompile()
    gm.train(model.training)
    return gm


def load_bn_stats(model: nn.Module, bn_stats: dict) -> None:
    """Load ``{name: {"running_mean": [...], "running_var": [...]}}`` into ``model``'s BatchNorms."""
    modules = dict(model.named_modules())
    for name, stats in bn_stats.items():
        bn = modules.get(name)
        if not isinstance(bn, _BatchNorm) or bn.running_mean is None:
            raise ValueError(f"bn_stats names {name!r}, which is not a BatchNorm with running statistics")
        for key in ("running_mean", "running_var"):
            buffer = getattr(bn, key)
            value = torch.as_tensor(stats[key], dtype=buffer.dtype, device=buffer.device)
            if value.shape != buffer.shape:
                raise ValueError(f"bn_stats[{name!r}][{key!r}] has shape {tuple(value.shape)}, "
                                 f"expected {tuple(buffer.shape)}")
            with torch.no_grad():
                buffer.copy_(value)


# --------------------------------------------------------------------------------------------
# BatchNorm statistics under sampling
# --------------------------------------------------------------------------------------------

class _Stop(Exception):
    """Raised by a hook once the statistics it collects are in, to skip the rest of a pass."""


def _identity(x):
    return x


def batchnorms_after_noise(model: nn.Module, x: torch.Tensor) -> list[tuple[str, _BatchNorm]]:
    """BatchNorm layers that run after the first stochastic module on input ``x`` (in order):
    those whose input statistics a conversion changes."""
    from .sampling import SampledModel

    order: list[tuple[str, nn.Module]] = []
    handles = [m.register_forward_pre_hook(lambda mod, inp, name=n: order.append((name, mod)))
               for n, m in model.named_modules() if isinstance(m, _BatchNorm) or is_stochastic(m)]
    was = model.training
    try:
        model.eval()
        with torch.no_grad():
            SampledModel(model, 1, seed=0)(x)  # seeded: the global random stream is left alone
    finally:
        model.train(was)
        for h in handles:
            h.remove()
    first = next((i for i, (_, m) in enumerate(order) if is_stochastic(m)), len(order))
    result, seen = [], set()
    for name, m in order[first:]:
        if isinstance(m, _BatchNorm) and id(m) not in seen and m.running_mean is not None:
            seen.add(id(m))
            result.append((name, m))
    return result


@torch.no_grad()
def recalibrate_batchnorm(
    model: nn.Module,
    x: torch.Tensor,
    samples: int = 4,
    batch_size: int = 500,
    prepare: Callable[[torch.Tensor], torch.Tensor] = _identity,
    seed: int = 0,
) -> dict[str, dict[str, list[float]]]:
    """Re-estimate, in place, the running statistics of the BatchNorms behind the noise.

    A converted network's activations are bits (or noisy values) where the trained network had
    graded ones, so the input of every later BatchNorm has a different mean and, above all, a
    larger variance than the running statistics it was trained with. This sets each such
    BatchNorm's ``running_mean`` / ``running_var`` to the per-channel mean and (population)
    variance of its input under sampling (``samples`` samples of every example of ``x``,
    network aggregation, generator seeded with ``seed``), one layer at a time in execution order
    with the layers before it already updated -- exactly the statistics it sees at evaluation.
    No weight, bias or affine parameter changes; the model is left in eval mode.

    Args:
        model: a converted (stochastic) model; modified in place.
        x: examples (uint8 or float) -- held-out *training* examples, never test data.
        prepare: maps a batch of ``x`` to the model's input (e.g. ``Dataset.normalize``).

    Returns:
        ``{name: {"running_mean": [...], "running_var": [...]}}``, JSON-serialisable; pass it as
        ``to_sampled(..., bn_stats=...)`` to rebuild the same model.
    """
    from .evaluate import MAX_ROWS
    from .sampling import SampledModel

    if len(x) == 0:
        raise ValueError("recalibrate_batchnorm needs at least one example")
    model.eval()
    layers = batchnorms_after_noise(model, prepare(x[:2]))
    step = max(1, min(batch_size, MAX_ROWS // samples))
    stats: dict[str, dict[str, list[float]]] = {}
    for name, bn in layers:
        moments = {"n": 0, "sum": 0.0, "sumsq": 0.0}

        def collect(module, inputs, moments=moments):
            z = inputs[0].detach().double().transpose(0, 1).reshape(inputs[0].shape[1], -1)
            moments["n"] += z.shape[1]
            moments["sum"] = moments["sum"] + z.sum(1)
            moments["sumsq"] = moments["sumsq"] + (z * z).sum(1)
            raise _Stop

        handle = bn.register_forward_pre_hook(collect)
        sampler = SampledModel(model, samples, reduce="none", seed=seed)  # the same draws for every layer
        try:
            for start in range(0, len(x), step):
                try:
                    sampler(prepare(x[start:start + step]))
                except _Stop:
                    pass
        finally:
            handle.remove()
        if moments["n"] == 0:
            continue
        mean = moments["sum"] / moments["n"]
        var = (moments["sumsq"] / moments["n"] - mean * mean).clamp_min(0.0)
        bn.running_mean.copy_(mean.to(bn.running_mean.dtype))
        bn.running_var.copy_(var.to(bn.running_var.dtype))
        stats[name] = {"running_mean": bn.running_mean.tolist(), "running_var": bn.running_var.tolist()}
    return stats


# --------------------------------------------------------------------------------------------
# Calibration
# --------------------------------------------------------------------------------------------

CRITERION = (
    "held-out accuracy at the target T; among the values within one binomial standard error of the best "
    "at the target T, the one with the highest accuracy averaged over all swept T (which favours "
    "values that already help at small T); ties go to the earlier value in the sweep"
)


def calibrate(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    method: str = "gaussian",
    values: Sequence[float] | None = None,
    samples: Sequence[int] = (1, 2, 5, 10, 20),
    target: int | None = None,
    layers: str | Sequence[str] = "hidden",
    repeats: int = 1,
    seed: int = 0,
    batch_size: int = 500,
    prepare: Callable[[torch.Tensor], torch.Tensor] = _identity,
    recalibrate_bn: bool = False,
    bn_samples: int = 4,
    progress: bool = False,
) -> dict:
    """Choose the noise scale (β for pbit) of a conversion by a sweep on held-out examples.

    For every value the model is converted (``to_sampled``), optionally its BatchNorm
    statistics are re-estimated on the same examples (``recalibrate_bn``; images only, no
    labels), and its accuracy is measured for every T in ``samples`` (network aggregation,
    ``repeats`` independent repeats, seed ``seed``). The choice follows :data:`CRITERION`:
    accuracy at ``target`` (default: the largest T), then the mean over the swept T.

    ``x, y`` must be held-out *training* examples (the caller's split; :func:`convert_run` uses
    the last examples of the training split); test data must never reach this function.

    Returns a JSON-serialisable document: the sweep (accuracy vs T per value), the accuracy of
    the deterministic model on the same examples, the chosen value and the resulting ``spec``
    (the keyword arguments of :func:`to_sampled`, without ``bn_stats``).
    """
    from .evaluate import accuracy_vs_samples, binomial_stderr
    from .sampling import check_samples

    _check_method(method)
    key = parameter_of(method)
    values = list(DEFAULT_VALUES[method] if values is None else values)
    if not values:
        raise ValueError("calibration needs at least one value to try")
    samples = sorted({check_samples(t) for t in samples})
    target = max(samples) if target is None else check_samples(target)
    if target not in samples:
        samples = sorted({*samples, target})
    was_training = model.training
    try:
        deterministic = accuracy_vs_samples(model, x, y, [1], 1, seed=seed, batch_size=batch_size, prepare=prepare)
        sweep = []
        for value in values:
            spec = conversion_spec(method, **{key: value}, layers=layers)
            converted = to_sampled(model, **spec)
            if recalibrate_bn:
                recalibrate_batchnorm(converted, x, bn_samples, batch_size, prepare, seed)
            rows = accuracy_vs_samples(converted, x, y, samples, repeats, seed=seed, batch_size=batch_size,
                                       prepare=prepare)
            by_t = {r["samples"]: r["accuracy_mean"] for r in rows}
            sweep.append({key: spec[key], "results": rows, "accuracy_at_target": by_t[target],
                          "mean_accuracy": sum(by_t.values()) / len(by_t)})
            if progress:
                print(f"  {key} = {spec[key]:g}: " + "  ".join(f"T={t}: {100 * a:.2f}%" for t, a in by_t.items()),
                      flush=True)
    finally:
        model.train(was_training)
    best = max(row["accuracy_at_target"] for row in sweep)
    tolerance = binomial_stderr(best, len(y))
    candidates = [row for row in sweep if row["accuracy_at_target"] >= best - tolerance]
    chosen = max(candidates, key=lambda row: row["mean_accuracy"])  # max() keeps the first of ties
    for row in sweep:
        row["within_tolerance"] = any(row is c for c in candidates)
    return {
        "method": method,
        "parameter": key,
        "layers": layers if isinstance(layers, str) else list(layers),
        "values": [row[key] for row in sweep],
        "samples": samples,
        "target_samples": target,
        "repeats": repeats,
        "seed": seed,
        "examples": len(y),
        "recalibrate_bn": bool(recalibrate_bn),
        "bn_samples": bn_samples if recalibrate_bn else None,
        "criterion": CRITERION,
        "tolerance": tolerance,
        "deterministic_accuracy": deterministic[0]["accuracy_mean"],
        "sweep": sweep,
        "chosen": chosen[key],
        "chosen_beats_deterministic": chosen["accuracy_at_target"] > deterministic[0]["accuracy_mean"],
        "spec": conversion_spec(method, **{key: chosen[key]}, layers=layers),
    }


_calibrate = calibrate  # convert_run's argument ``calibrate`` shadows the function


# --------------------------------------------------------------------------------------------
# Run directories
# --------------------------------------------------------------------------------------------

def holdout_indices(n_train: int, holdout: float | int) -> tuple[int, int]:
    """``(start, stop)`` of the held-out part of a training split of ``n_train`` examples: the
    last ``holdout`` examples (an integer >= 1) or the last fraction (0 < holdout < 1)."""
    if isinstance(holdout, bool) or not isinstance(holdout, (int, float)) or not math.isfinite(holdout) \
            or holdout <= 0:
        raise ValueError(f"holdout must be a count >= 1 or a fraction in (0, 1), got {holdout!r}")
    if isinstance(holdout, float) and holdout < 1:
        count = max(1, round(n_train * holdout))
    elif float(holdout).is_integer():
        count = int(holdout)
    else:
        raise ValueError(f"holdout must be a count >= 1 or a fraction in (0, 1), got {holdout!r}")
    if n_train < 1 or count > n_train:
        raise ValueError(f"holdout of {count} examples is more than the {n_train} training examples")
    return n_train - count, n_train


def _held_out_training_data(config: dict, holdout, roots, subset, device, progress):
    """The last examples of the run's *training* split (the test split is never read)."""
    from . import data as data_package

    dataset = config.get("data", {}).get("dataset")
    if not dataset:
        raise ValueError("the run's config.json names no dataset ('data': {'dataset': ...}), which calibration needs")
    subset = subset if subset is not None else config["data"].get("subset")
    ds = data_package.load(dataset, roots=roots, subset=subset, progress=progress)
    start, stop = holdout_indices(len(ds.train_y), holdout)
    x = ds.train_x[start:stop].to(device)
    y = ds.train_y[start:stop].to(device)
    split = {"dataset": dataset, "split": "train", "subset": subset, "start": start, "stop": stop,
             "examples": stop - start, "train_examples": len(ds.train_y)}
    return x, y, ds.normalize, split


def convert_run(
    source: str | Path,
    out: str | Path,
    method: str = "pbit",
    scale: float | dict | None = None,
    beta: float | dict | None = None,
    layers: str | Sequence[str] = "hidden",
    calibrate: bool = False,
    values: Sequence[float] | None = None,
    samples: Sequence[int] = (1, 2, 5, 10, 20),
    target: int | None = None,
    holdout: float | int = 0.1,
    repeats: int = 1,
    recalibrate_bn: bool = False,
    bn_samples: int = 4,
    seed: int = 0,
    roots: list[str] | None = None,
    subset: int | None = None,
    device: str = "cpu",
    force: bool = False,
    label: str | None = None,
    progress: bool = True,
) -> dict:
    """Write a converted run directory ``out`` from the trained run ``source``.

    ``out/config.json`` is the source's config plus ``"convert"`` (the :func:`to_sampled`
    keyword arguments, replayed by :func:`pdnn.runs.load_model`) and ``"source_run"``;
    ``out/checkpoint.pt`` holds the source's weights unchanged (``{"model": state_dict}``).
    With ``calibrate`` the scale/β is chosen by :func:`calibrate` on the held-out end of the
    training split (``holdout``: a count or a fraction) and the sweep is written to
    ``out/calibration.json``. With ``recalibrate_bn`` the BatchNorm statistics behind the noise
    are re-estimated on the same held-out examples (stored in ``convert["bn_stats"]``).

    An existing ``out`` is refused unless ``force`` (then its stale ``eval-*.json`` and
    ``calibration.json`` are removed). Returns ``{"out", "spec", "converted", "calibration"}``
    (``spec`` without the bulky ``bn_stats``).
    """
    from .runs import CHECKPOINT, CONFIG, RunError, load_checkpoint, load_model, read_config, save_checkpoint, \
        write_json

    source, out = Path(source), Path(out)
    if out.resolve() == source.resolve():
        raise RunError("the converted run must go to a new directory, not over its source")
    if out.exists() and not force:
        raise RunError(f"{out} already exists; choose a new directory or pass --force to replace its results")
    config = read_config(source)
    if "convert" in config:
        raise RunError(f"{source} is itself a converted run (of {config.get('source_run')}); convert its source")
    if calibrate and (scale is not None or beta is not None):
        raise ValueError("--calibrate chooses the scale (beta for pbit) itself; give the values to try instead")
    model, _ = load_model(source, map_location=device)
    state = load_checkpoint(source / CHECKPOINT)["model"]
    spec = conversion_spec(method, scale, beta, layers)
    converted_sites = _select(_discover(model)[0], spec["layers"])  # tracing reads, never modifies
    to_sampled(model, **spec)  # fail on an unconvertible model before any data is read

    calibration = None
    if calibrate or recalibrate_bn:
        x, y, prepare, split = _held_out_training_data(config, holdout, roots, subset, device, progress)
        if calibrate:
            calibration = _calibrate(model, x, y, method, values, samples, target, spec["layers"],
                                                 repeats, seed, prepare=prepare, recalibrate_bn=recalibrate_bn,
                                                 bn_samples=bn_samples, progress=progress)
            calibration = {"source_run": str(source), "data": split, **calibration}
            spec = dict(calibration["spec"])
        if recalibrate_bn:
            converted = to_sampled(model, **spec)
            spec["bn_stats"] = recalibrate_batchnorm(converted, x, bn_samples, prepare=prepare, seed=seed)

    new_config = copy.deepcopy(config)
    new_config["convert"] = spec
    new_config["source_run"] = str(source)
    base = config.get("label") or source.name
    new_config["label"] = label or f"{base} ({method})"
    out.mkdir(parents=True, exist_ok=force)
    if force:
        for stale in [*out.glob("eval-*.json"), out / CALIBRATION]:
            stale.unlink(missing_ok=True)
    save_checkpoint(out / CHECKPOINT, {"model": state})
    if calibration is not None:
        write_json(out / CALIBRATION, calibration)
    write_json(out / CONFIG, new_config)
    summary = {k: v for k, v in spec.items() if k != "bn_stats"}
    if "bn_stats" in spec:
        summary["bn_stats"] = sorted(spec["bn_stats"])
    return {"out": str(out), "spec": summary, "converted": [f"{s.name} ({s.op})" for s in converted_sites],
            "calibration": calibration}


def format_calibration(document: dict) -> str:
    """A plain-text table of a calibration sweep, accuracies in percent."""
    key, samples = document["parameter"], document["samples"]
    lines = [f"{key:>8}  " + "  ".join(f"{'T=' + str(t):>7}" for t in samples) + "   mean"]
    for row in document["sweep"]:
        by_t = {r["samples"]: r["accuracy_mean"] for r in row["results"]}
        mark = " <- chosen" if row[key] == document["chosen"] else ""
        lines.append(f"{row[key]:>8g}  " + "  ".join(f"{100 * by_t[t]:>7.2f}" for t in samples)
                     + f"  {100 * row['mean_accuracy']:>5.2f}{mark}")
    lines.append(f"deterministic: {100 * document['deterministic_accuracy']:.2f}% "
                 f"({document['examples']} held-out training examples)")
    return "\n".join(lines)
