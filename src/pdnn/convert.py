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

:func:`calibrate` chooses the scale (or β) by a sweep on held-out *training* examples (globally,
then optionally layer by layer), :func:`convert_run` writes a converted run directory and
:func:`restore_checkpoint` recreates its weights from the source run. Only pdnn ``Quantize``
modules are quantisers here: a ``torch.sign`` or ``torch.clamp`` inside ``forward`` is not
recognised. See ``docs/convert.md``.
"""
from __future__ import annotations

import copy
import hashlib
import json
import math
import operator
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, NamedTuple, Sequence

import torch
from torch import fx, nn
from torch.nn import functional as TF
from torch.nn.modules.batchnorm import _BatchNorm, _NormBase

from .nn import DitheredQuantize, GaussianNoise, HardPBit, LogisticNoise, PBit, Quantize, is_stochastic
from .nn.noise import check_scale
from .functional import check_beta

METHODS = ("pbit", "dither", "gaussian", "logistic")
LAYER_SETS = ("hidden", "all")
DEFAULT_SCALE = {"gaussian": 0.5, "logistic": 0.25, "dither": 1.0}
# the sweep of calibrate(): beta for pbit, the noise scale for the others. Wide enough that the
# choices seen on real runs (cold p-bits, narrow dither, almost no noise) lie inside, not at an edge.
DEFAULT_VALUES = {
    "pbit": (0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0, 8.0, 12.0),
    "dither": (0.05, 0.1, 0.25, 0.5, 0.75, 1.0),
    "gaussian": (0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 1.0),
    "logistic": (0.005, 0.01, 0.03, 0.05, 0.1, 0.2, 0.3),
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


class _Discovery(NamedTuple):
    """What :func:`_discover` found in a model."""

    sites: list[_Site]  # activations, in execution order (registration order without a trace)
    graph: fx.Graph | None  # None: torch.fx could not trace the model
    trace_error: Exception | None
    ops: list[str]  # the distinct operations seen, for error messages


def _discover(model: nn.Module) -> _Discovery:
    """The activation sites of ``model`` and its fx graph (tracing reads, never modifies)."""
    try:
        graph = _Tracer().trace(model)
    except Exception as err:  # fx raises many types for untraceable code
        return _Discovery(_discover_modules(model), None, err, [])
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
    return _Discovery(list(sites.values()), graph, None, list(dict.fromkeys(ops)))


def _discover_modules(model: nn.Module) -> list[_Site]:
    """Without a trace: activation modules in registration order; those registered after the last
    module with weights count as output activations."""
    named = [(n, m) for n, m in model.named_modules() if n and not list(m.children())]
    last_weighted = max((i for i, (_, m) in enumerate(named) if _has_weights(m) and _module_kind(m) is None),
                        default=-1)
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
    return [s.describe() for s in _discover(model).sites]


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


def _values_for(selected: list[_Site], value: float | dict, key: str) -> dict[str, float]:
    """The (already checked) ``scale``/``beta`` of every selected activation, by name."""
    if not isinstance(value, dict):
        return {s.name: value for s in selected}
    names = {s.name for s in selected}
    unknown = [k for k in value if k != "*" and k not in names]
    if unknown:
        raise ValueError(f"per-layer {key} for {', '.join(map(repr, unknown))}, which are not among the "
                         f"converted activations ({', '.join(sorted(names))})")
    missing = [n for n in names if n not in value and "*" not in value]
    if missing:
        raise ValueError(f"no {key} for {', '.join(sorted(missing))}; give one per layer or a default under '*'")
    return {s.name: value.get(s.name, value.get("*")) for s in selected}


def _check_value(key: str, value, what: str) -> float:
    """``value`` as a float if it is a valid ``key`` -- ``"scale"``: finite and >= 0 (0: no noise);
    ``"beta"``: finite and > 0 -- else a ``ValueError`` naming ``what`` and the value."""
    if isinstance(value, bool):  # float(True) == 1.0 would pass silently
        raise ValueError(f"{what} must be a number, got {value!r}")
    if key == "scale":
        return check_scale(value, what)
    try:
        return check_beta(value)
    except ValueError:
        raise ValueError(f"{what} must be a finite number > 0, got {value!r}") from None


def _check_setting(key: str, value) -> float | dict[str, float]:
    """A ``scale``/``beta`` setting checked and canonical: a float, or ``{name: float}`` per layer."""
    if isinstance(value, dict):
        return {str(name): _check_value(key, v, f"{key} of {name}") for name, v in value.items()}
    return _check_value(key, value, key)


def conversion_spec(method: str = "pbit", scale=None, beta=None, layers="hidden", bn_stats=None) -> dict:
    """The canonical, JSON-serialisable spec of a conversion (the keyword arguments of
    :func:`to_sampled`), with defaults filled in, values checked (so that ``scale=nan`` is named as
    such rather than failing as JSON) and options that do not apply rejected."""
    _check_method(method)
    if method == "pbit" and scale is not None:
        raise ValueError("method 'pbit' is tuned by beta (its inverse temperature), not by scale")
    if method != "pbit" and beta is not None:
        raise ValueError(f"beta applies to method 'pbit' only; {method!r} is tuned by scale")
    key = parameter_of(method)
    value = beta if key == "beta" else scale
    if value is None:
        value = 1.0 if key == "beta" else DEFAULT_SCALE[method]
    spec = {"method": method, key: _check_setting(key, value)}
    if isinstance(layers, str) and layers not in LAYER_SETS:
        layers = [layers]
    spec["layers"] = list(layers) if isinstance(layers, (list, tuple)) else layers
    if bn_stats:
        spec["bn_stats"] = bn_stats
    json.dumps(spec, allow_nan=False)  # must survive config.json
    return spec


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
        ValueError: a scale or β that is not a finite number in range (the message names it).

    Example:
        >>> net = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 2))
        >>> to_sampled(net, "pbit")[1]
        PBit(mode='bipolar', beta=1, ste='mean')
    """
    return _convert(model, conversion_spec(method, scale, beta, layers, bn_stats))[0]


def _convert(model: nn.Module, spec: dict) -> tuple[nn.Module, list[_Site]]:
    """:func:`to_sampled` of a canonical ``spec``; also returns the converted sites (execution order)."""
    method, key = spec["method"], parameter_of(spec["method"])
    converted = copy.deepcopy(model)
    found = _discover(converted)
    selected = _select(found.sites, spec["layers"])
    _check_convertible(type(model).__name__, method, spec["layers"], found, selected)
    values = _values_for(selected, spec[key], key)
    aliases = _module_aliases(converted)
    for site in selected:
        if site.module is None:
            continue
        new = _replacement(method, site, values[site.name])
        for path in aliases.get(id(site.module), [site.name]):
            parent, _, attr = path.rpartition(".")
            setattr(converted.get_submodule(parent) if parent else converted, attr, new)
    functional = [s for s in selected if s.module is None]  # found by the trace, so there is a graph
    if functional:
        converted = _rewrite_functions(converted, found.graph, functional, method, values, type(model).__name__)
    elif found.trace_error is not None:
        warnings.warn(
            f"{type(model).__name__} could not be traced by torch.fx ({found.trace_error}); only activation modules "
            "were converted -- activations called as functions inside forward (torch.tanh, F.sigmoid, ...) stay "
            "deterministic, and layers='hidden' took the activation modules registered after the last weight layer "
            "as output ones",
            stacklevel=3,
        )
    if spec.get("bn_stats"):
        load_bn_stats(converted, spec["bn_stats"])
    return converted, selected


def _check_convertible(name: str, method: str, layers, found: _Discovery, selected: list[_Site]) -> None:
    """Raise a :class:`ConversionError` naming every operation that stops the conversion."""
    if not selected:
        if found.trace_error is not None and not found.sites:
            raise ConversionError(
                f"nothing to convert in {name}: it has no activation modules, and torch.fx could not trace its "
                f"forward ({type(found.trace_error).__name__}: {found.trace_error}), so activations called as "
                "functions could not be found or rewritten"
            )
        described = ", ".join(f"{s.name} ({s.op}, {'already stochastic' if s.kind == 'stochastic' else 'output'})"
                              for s in found.sites)
        raise ConversionError(
            f"nothing to convert in {name} with layers={layers!r}: "
            + (f"the activations are {described}; pass layers='all' or names to include output activations"
               if found.sites else f"it has no activation; operations seen: {', '.join(map(str, found.ops)) or 'none'}")
        )
    problems = [(s, why) for s in selected if (why := _why_not(method, s))]
    if problems:
        bad = {id(s) for s, _ in problems}
        ok = [s.name for s in selected if id(s) not in bad]
        raise ConversionError(
            f"cannot convert {name} with method {method!r}: "
            + "; ".join(f"{s.name} ({s.op}): {why}" for s, why in problems)
            + (f". Convertible: {', '.join(ok)} (pass layers=[...] to convert only those)" if ok else "")
        )


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
PER_LAYER_RULE = (
    "after the global sweep, one coordinate-wise pass over the converted activations in execution order: each "
    "one's value is swept over the same values with the others held at their current ones and chosen by the "
    "same criterion among the values no worse at the target T than its current one, so that every step can only "
    "raise the held-out accuracy at the target T"
)


@dataclass
class _Trials:
    """Measures conversions of one model on one set of held-out examples, always the same way.

    A trial converts ``model`` with a spec, re-estimates the BatchNorm statistics behind the noise
    (if ``bn_samples``) and measures the accuracy for every T in ``samples``. The seed and the
    examples are fixed, so a conversion always gives the same numbers: each is measured once
    (the per-layer pass meets the global choice again in every layer's sweep).
    """

    model: nn.Module
    x: torch.Tensor
    y: torch.Tensor
    names: list[str]  # the converted activations, in execution order
    samples: list[int]
    target: int
    repeats: int
    seed: int
    batch_size: int
    prepare: Callable[[torch.Tensor], torch.Tensor]
    bn_samples: int | None  # None: keep the trained BatchNorm statistics
    progress: bool
    measured: dict = field(default_factory=dict)

    def measure(self, spec: dict, label: str) -> tuple[dict, dict | None]:
        """``(row, bn_stats)`` of the conversion ``spec``: the accuracies (``results`` as in
        ``eval-*.json``, ``accuracy_at_target``, ``mean_accuracy``) and its re-estimated
        BatchNorm statistics (``None`` without ``bn_samples``)."""
        from .evaluate import accuracy_vs_samples

        value = spec[parameter_of(spec["method"])]
        # the value of every converted activation: a per-layer dict equal everywhere is the number
        per_layer = tuple(value[n] if isinstance(value, dict) else value for n in self.names)
        if per_layer not in self.measured:
            converted = to_sampled(self.model, **spec)
            bn_stats = None
            if self.bn_samples:
                bn_stats = recalibrate_batchnorm(converted, self.x, self.bn_samples, self.batch_size, self.prepare,
                                                 self.seed)
            results = accuracy_vs_samples(converted, self.x, self.y, self.samples, self.repeats, seed=self.seed,
                                          batch_size=self.batch_size, prepare=self.prepare)
            by_t = {r["samples"]: r["accuracy_mean"] for r in results}
            row = {"results": results, "accuracy_at_target": by_t[self.target],
                   "mean_accuracy": sum(by_t.values()) / len(by_t)}
            self.measured[per_layer] = row, bn_stats
            if self.progress:
                print(f"  {label}: " + "  ".join(f"T={t}: {100 * a:.2f}%" for t, a in by_t.items()), flush=True)
        row, bn_stats = self.measured[per_layer]
        return dict(row), bn_stats


def _sweep_values(method: str, values: Sequence[float] | None) -> list[float]:
    """The values a calibration tries (default :data:`DEFAULT_VALUES`), each checked."""
    key = parameter_of(method)
    values = [_check_value(key, v, f"{key} in the calibration sweep")
              for v in (DEFAULT_VALUES[method] if values is None else values)]
    if not values:
        raise ValueError("calibration needs at least one value to try")
    return values


def _sweep(trials: _Trials, method: str, layers, values: list[float], current: dict | None = None,
           name: str | None = None) -> tuple[list[dict], list[dict | None]]:
    """Measure every value of the sweep: on all layers at once, or (``name``) on one layer with the
    others at their ``current`` values. Returns the rows (``{key: value, ...}``) and BatchNorm stats."""
    key = parameter_of(method)
    rows, stats = [], []
    for v in values:
        setting = v if name is None else {**current, name: v}
        label = f"{key} = {v:g}" if name is None else f"{name}: {key} = {v:g}"
        row, bn_stats = trials.measure(conversion_spec(method, **{key: setting}, layers=layers), label)
        rows.append({key: v, **row})
        stats.append(bn_stats)
    return rows, stats


def _choose(rows: list[dict], n: int, floor: float = -math.inf) -> tuple[int, float]:
    """The index of the row :data:`CRITERION` picks among those with at least ``floor`` accuracy at
    the target T, and the tolerance (one binomial standard error of the best accuracy at the
    target T, on ``n`` examples). Marks every row's ``within_tolerance``."""
    from .evaluate import binomial_stderr

    best = max(row["accuracy_at_target"] for row in rows)
    tolerance = binomial_stderr(best, n)
    for row in rows:
        row["within_tolerance"] = row["accuracy_at_target"] >= best - tolerance
    # the best row always qualifies (floor is one of the rows' accuracies); max() keeps the first of ties
    candidates = [i for i, row in enumerate(rows) if row["within_tolerance"] and row["accuracy_at_target"] >= floor]
    return max(candidates, key=lambda i: rows[i]["mean_accuracy"]), tolerance


def _at_edge(values: list[float], chosen: float) -> bool:
    """Whether ``chosen`` is the smallest or largest of at least three values: the optimum may lie outside."""
    return len(set(values)) >= 3 and chosen in (min(values), max(values))


def _per_layer_pass(trials: _Trials, method: str, layers, values: list[float], start: float, row: dict) -> dict:
    """The coordinate-wise pass of :data:`PER_LAYER_RULE`, from ``start`` on every layer (measured as
    ``row``). Returns its record: every layer's sweep and choice, the chosen ``{name: value}`` and
    its accuracies."""
    current = {name: start for name in trials.names}
    record = []
    for name in trials.names:
        sweep, _ = _sweep(trials, method, layers, values, current, name)
        i, tolerance = _choose(sweep, len(trials.y), floor=row["accuracy_at_target"])
        current[name], row = values[i], sweep[i]
        record.append({"name": name, "sweep": sweep, "chosen": values[i], "tolerance": tolerance,
                       "at_edge": _at_edge(values, values[i])})
    return {"rule": PER_LAYER_RULE, "layers": record, "chosen": current, "results": row["results"],
            "accuracy_at_target": row["accuracy_at_target"], "mean_accuracy": row["mean_accuracy"]}


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
    per_layer: bool = False,
) -> dict:
    """Choose the noise scale (β for pbit) of a conversion by a sweep on held-out examples.

    For every value the model is converted (``to_sampled``), optionally its BatchNorm
    statistics are re-estimated on the same examples (``recalibrate_bn``; images only, no
    labels), and its accuracy is measured for every T in ``samples`` (network aggregation,
    ``repeats`` independent repeats, seed ``seed``). The choice follows :data:`CRITERION`:
    accuracy at ``target`` (default: the largest T), then the mean over the swept T. A choice at
    the edge of a sweep of three or more values is warned about (the optimum may lie outside).

    ``per_layer`` then refines the choice one activation at a time (:data:`PER_LAYER_RULE`), so
    that each may end with its own value; the result is never worse at ``target`` on these
    examples than the global choice (it costs up to ``len(layers) × (len(values) − 1)`` more trials).

    ``x, y`` must be held-out *training* examples (the caller's split; :func:`convert_run` prefers
    training examples the run never saw); test data must never reach this function.

    Returns a JSON-serialisable document: the sweep (accuracy vs T per value), the accuracy of
    the deterministic model on the same examples, the chosen value (``at_edge`` if it is the
    smallest or largest), the per-layer pass (``per_layer``, or ``None``) and the resulting
    ``spec``: the keyword arguments of :func:`to_sampled` (a per-layer ``{name: value}`` after
    ``per_layer``), with ``bn_stats`` when ``recalibrate_bn`` -- it replays the measured conversion.
    """
    from .evaluate import accuracy_vs_samples
    from .sampling import check_samples

    key = parameter_of(method)
    values = _sweep_values(method, values)
    layers = conversion_spec(method, layers=layers)["layers"]
    samples = sorted({check_samples(t) for t in samples})
    target = max(samples) if target is None else check_samples(target)
    samples = sorted({*samples, target})
    names = [s.name for s in _select(_discover(model).sites, layers)]
    trials = _Trials(model, x, y, names, samples, target, repeats, seed, batch_size, prepare,
                     bn_samples if recalibrate_bn else None, progress)
    was_training = model.training
    try:
        deterministic = accuracy_vs_samples(model, x, y, [1], 1, seed=seed, batch_size=batch_size,
                                            prepare=prepare)[0]["accuracy_mean"]
        sweep, stats = _sweep(trials, method, layers, values)
        i, tolerance = _choose(sweep, len(y))
        refined, setting, final, bn_stats = None, values[i], sweep[i], stats[i]
        if per_layer:
            refined = _per_layer_pass(trials, method, layers, values, values[i], sweep[i])
            setting = dict(refined["chosen"])
            final, bn_stats = trials.measure(conversion_spec(method, **{key: setting}, layers=layers),
                                             "per layer")  # measured during the pass: looked up, not redone
    finally:
        model.train(was_training)
    document = {
        "method": method,
        "parameter": key,
        "layers": layers,
        "values": values,
        "samples": samples,
        "target_samples": target,
        "repeats": repeats,
        "seed": seed,
        "examples": len(y),
        "recalibrate_bn": bool(recalibrate_bn),
        "bn_samples": bn_samples if recalibrate_bn else None,
        "criterion": CRITERION,
        "tolerance": tolerance,
        "deterministic_accuracy": deterministic,
        "sweep": sweep,
        "chosen": values[i],
        "at_edge": _at_edge(values, values[i]),
        "per_layer": refined,
        "chosen_beats_deterministic": final["accuracy_at_target"] > deterministic,
        "spec": conversion_spec(method, **{key: setting}, layers=layers, bn_stats=bn_stats),
    }
    _warn_at_edge(document)
    return document


def _warn_at_edge(document: dict) -> None:
    key, values = document["parameter"], document["values"]
    edges = [f"{key} = {document['chosen']:g}"] if document["at_edge"] else []
    if document["per_layer"]:
        edges += [f"{key} of {r['name']} = {r['chosen']:g}" for r in document["per_layer"]["layers"] if r["at_edge"]]
    if edges:
        warnings.warn(f"calibration chose {', '.join(edges)}: at the edge of the sweep ({min(values):g} to "
                      f"{max(values):g}); the best value may lie outside it, widen --values", stacklevel=3)


def format_calibration(document: dict) -> str:
    """A plain-text table of a calibration sweep (and its per-layer pass), accuracies in percent."""
    key, samples = document["parameter"], document["samples"]
    lines = [f"{key:>8}  " + "  ".join(f"{'T=' + str(t):>7}" for t in samples) + "   mean"]
    for row in document["sweep"]:
        by_t = {r["samples"]: r["accuracy_mean"] for r in row["results"]}
        mark = " <- chosen" if row[key] == document["chosen"] else ""
        lines.append(f"{row[key]:>8g}  " + "  ".join(f"{100 * by_t[t]:>7.2f}" for t in samples)
                     + f"  {100 * row['mean_accuracy']:>5.2f}{mark}")
    refined = document.get("per_layer")
    if refined:
        lines.append(f"per layer, accuracy (%) at T={document['target_samples']} for each {key} (* kept):")
        for layer in refined["layers"]:
            lines.append(f"{layer['name']:>8}  " + "  ".join(
                f"{row[key]:g}: {100 * row['accuracy_at_target']:.2f}{'*' if row[key] == layer['chosen'] else ''}"
                for row in layer["sweep"]))
        by_t = {r["samples"]: r["accuracy_mean"] for r in refined["results"]}
        lines.append(f"{'result':>8}  " + "  ".join(f"{100 * by_t[t]:>7.2f}" for t in samples)
                     + f"  {100 * refined['mean_accuracy']:>5.2f}")
    lines.append(f"deterministic: {100 * document['deterministic_accuracy']:.2f}% "
                 f"({document['examples']} held-out training examples)")
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# Run directories
# --------------------------------------------------------------------------------------------

def _holdout_count(n_trained: int, holdout: float | int) -> int:
    if isinstance(holdout, bool) or not isinstance(holdout, (int, float)) or not math.isfinite(holdout) \
            or holdout <= 0 or (holdout >= 1 and not float(holdout).is_integer()):
        raise ValueError(f"holdout must be a count >= 1 or a fraction in (0, 1), got {holdout!r}")
    return max(1, round(n_trained * holdout)) if holdout < 1 else int(holdout)


def holdout_indices(n_trained: int, holdout: float | int, n_available: int | None = None) -> tuple[int, int]:
    """``(start, stop)`` of the held-out examples of a training split, for a run trained on its
    first ``n_trained`` examples, of which the first ``n_available`` can be read (default:
    ``n_trained``, i.e. none beyond).

    ``holdout`` is a count (an integer >= 1) or a fraction of ``n_trained`` (0 < holdout < 1).
    Examples the run never saw are taken when there are any: ``[n_trained, n_trained + count)``,
    capped at ``n_available``. Otherwise it is the last ``count`` readable examples, which the
    run was trained on -- ``start < n_trained`` tells the caller so.
    """
    if n_trained < 1:
        raise ValueError(f"a run trained on {n_trained} examples has nothing to hold out")
    count = _holdout_count(n_trained, holdout)
    n_available = n_trained if n_available is None else n_available
    if n_available > n_trained:
        return n_trained, min(n_trained + count, n_available)
    if count > n_available:
        raise ValueError(f"holdout of {count} examples is more than the {n_available} training examples")
    return n_available - count, n_available


class _HeldOut(NamedTuple):
    x: torch.Tensor
    y: torch.Tensor
    prepare: Callable[[torch.Tensor], torch.Tensor]  # the dataset's normalisation
    split: dict  # where the examples come from, as calibration.json records it


def _held_out_training_data(config: dict, holdout, roots, subset, device, progress) -> _HeldOut:
    """Held-out examples of the run's *training* split (the test split is never read): preferably
    ones beyond the run's own ``subset``, which it never saw (see :func:`holdout_indices`).
    ``subset`` limits what is read to the first N training examples, as everywhere else."""
    from . import data as data_package

    dataset = config.get("data", {}).get("dataset")
    if not dataset:
        raise ValueError("the run's config.json names no dataset ('data': {'dataset': ...}), which calibration needs")
    if subset is not None and (isinstance(subset, bool) or not isinstance(subset, int) or subset < 1):
        raise ValueError(f"subset must be an integer >= 1 or None, got {subset!r}")
    ds = data_package.load(dataset, roots=roots, progress=progress)  # whole: what lies beyond the run's subset
    n_split = len(ds.train_y)
    n_trained = min(config["data"].get("subset") or n_split, n_split)
    n_available = n_split if subset is None else min(subset, n_split)
    start, stop = holdout_indices(n_trained, holdout, n_available)
    seen = start < n_trained
    if seen:
        warnings.warn(
            f"the run was trained on all {min(n_trained, n_available)} readable training examples of {dataset}, so "
            f"calibration uses the last {stop - start} of them, which the model has seen: its accuracies are "
            "optimistic (calibration.json records seen_in_training: true)", stacklevel=3)
    if progress:
        print(f"held-out data: {dataset} training examples {start}..{stop - 1}"
              + (" (seen in training)" if seen else f" (the run was trained on the first {n_trained})"), flush=True)
    split = {"dataset": dataset, "split": "train", "subset": subset, "trained_examples": n_trained,
             "start": start, "stop": stop, "examples": stop - start, "train_examples": n_available,
             "seen_in_training": seen}
    return _HeldOut(ds.train_x[start:stop].to(device), ds.train_y[start:stop].to(device), ds.normalize, split)


def _check_destination(source: Path, out: Path, force: bool) -> None:
    """Refuse an ``out`` whose replacement could destroy something: the source itself, any existing
    path without ``force``, and even with ``force`` a trained run (its checkpoint is the only copy
    of its weights). A directory without config.json is an interrupted conversion."""
    from .runs import CONFIG, RunError, read_json

    if out.resolve() == source.resolve():
        raise RunError("the converted run must go to a new directory, not over its source")
    if not out.exists():
        return
    if not force:
        raise RunError(f"{out} already exists; choose a new directory or pass --force to replace its results")
    if (out / CONFIG).is_file() and "convert" not in read_json(out / CONFIG):
        raise RunError(f"{out} is a trained run, not a converted one (its {CONFIG} has no 'convert'); --force only "
                       "replaces converted runs, so choose another directory. Nothing was changed")


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _copy_weights(source: Path, run_dir: Path) -> None:
    """Write ``run_dir/checkpoint.pt`` as ``{"model": <source's state_dict>}`` (no training state)."""
    from .runs import CHECKPOINT, load_checkpoint, save_checkpoint

    save_checkpoint(run_dir / CHECKPOINT, {"model": load_checkpoint(source / CHECKPOINT)["model"]})


def _write_run(out: Path, source: Path, config: dict, calibration: dict | None) -> None:
    """Write a converted run directory. config.json goes first out and last in, so that a directory
    without one is always an interrupted conversion (which ``force`` may replace)."""
    from .runs import CONFIG, write_json

    out.mkdir(parents=True, exist_ok=True)  # an existing one passed _check_destination
    for stale in [out / CONFIG, *out.glob("eval-*.json"), out / CALIBRATION]:
        stale.unlink(missing_ok=True)
    _copy_weights(source, out)
    if calibration is not None:
        write_json(out / CALIBRATION, calibration)
    write_json(out / CONFIG, config)


def _calibrate_run(model: nn.Module, data: _HeldOut, spec: dict, source_run: str, **options) -> dict:
    """:func:`calibrate` on the held-out examples, with where they came from (for calibration.json)."""
    document = calibrate(model, data.x, data.y, spec["method"], layers=spec["layers"], prepare=data.prepare, **options)
    return {"source_run": source_run, "data": data.split, **document}


def _summary(spec: dict) -> dict:
    """``spec`` with its bulky ``bn_stats`` replaced by the names of the re-estimated layers."""
    summary = {k: v for k, v in spec.items() if k != "bn_stats"}
    if "bn_stats" in spec:
        summary["bn_stats"] = sorted(spec["bn_stats"])
    return summary


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
    per_layer: bool = False,
) -> dict:
    """Write a converted run directory ``out`` from the trained run ``source``.

    ``out/config.json`` is the source's config plus ``"convert"`` (the :func:`to_sampled`
    keyword arguments, replayed by :func:`pdnn.runs.load_model`), ``"source_run"`` (the source
    directory relative to ``out``) and ``"source_checkpoint_sha256"``; ``out/checkpoint.pt``
    holds the source's weights unchanged (``{"model": state_dict}``; :func:`restore_checkpoint`
    recreates it). With ``calibrate`` the scale/β is chosen by :func:`calibrate` (``per_layer``:
    then refined layer by layer) on held-out training examples -- beyond the run's own
    ``subset`` if the split has any, else its last trained-on ones, with a warning (``holdout``:
    a count, or a fraction of the examples it was trained on; ``subset``: read only the first N
    training examples) -- and the sweep is written to ``out/calibration.json``. With
    ``recalibrate_bn`` the BatchNorm statistics behind the noise are re-estimated on the same
    examples (stored in ``convert["bn_stats"]``).

    An existing ``out`` is refused unless ``force``, and even then if it is a trained run
    rather than a converted one; a replaced run loses its stale ``eval-*.json`` and
    ``calibration.json``. Returns ``{"out", "spec", "converted", "calibration"}`` (``spec``
    without the bulky ``bn_stats``).
    """
    from .runs import CHECKPOINT, RunError, load_model, read_config

    source, out = Path(source), Path(out)
    _check_destination(source, out, force)
    config = read_config(source)
    if "convert" in config:
        raise RunError(f"{source} is itself a converted run (of {config.get('source_run')}); convert its source")
    if calibrate and (scale is not None or beta is not None):
        raise ValueError("--calibrate chooses the scale (beta for pbit) itself; give the values to try instead")
    if per_layer and not calibrate:
        raise ValueError("--per-layer refines the value --calibrate chooses; pass --calibrate too")
    spec = conversion_spec(method, scale, beta, layers)
    values = _sweep_values(method, values) if calibrate else None
    model, _ = load_model(source, map_location=device)
    converted, sites = _convert(model, spec)  # fails on an unconvertible model before any data is read
    source_run = os.path.relpath(source.resolve(), out.resolve())

    calibration = None
    if calibrate or recalibrate_bn:
        data = _held_out_training_data(config, holdout, roots, subset, device, progress)
        if calibrate:
            calibration = _calibrate_run(model, data, spec, source_run, values=values, samples=samples,
                                         target=target, repeats=repeats, seed=seed, recalibrate_bn=recalibrate_bn,
                                         bn_samples=bn_samples, progress=progress, per_layer=per_layer)
            spec = calibration["spec"]  # with the chosen value's BatchNorm statistics, if re-estimated
            calibration["spec"] = _summary(spec)  # they are stored once, in config.json
        else:
            spec["bn_stats"] = recalibrate_batchnorm(converted, data.x, bn_samples, prepare=data.prepare, seed=seed)

    new_config = copy.deepcopy(config)
    new_config["convert"] = spec
    new_config["source_run"] = source_run
    new_config["source_checkpoint_sha256"] = _sha256(source / CHECKPOINT)
    new_config["label"] = label or f"{config.get('label') or source.name} ({method})"
    _write_run(out, source, new_config, calibration)
    return {"out": str(out), "spec": _summary(spec), "converted": [f"{s.name} ({s.op})" for s in sites],
            "calibration": calibration}


def _source_dir(run_dir: Path, source_run: str) -> Path:
    """A converted run's source directory: ``source_run`` relative to ``run_dir`` (as
    :func:`convert_run` writes it), or, for runs converted before it did, relative to the
    current directory if only that exists."""
    relative = (run_dir / source_run).resolve()
    return Path(source_run) if not relative.is_dir() and Path(source_run).is_dir() else relative


def _train_command(config: dict, out: Path) -> str:
    """The ``pdnn train`` command line of the run ``config`` describes (its main options)."""
    model, data, train = config.get("model", {}), config.get("data", {}), config.get("train", {})
    options = {"--dataset": data.get("dataset"), "--model": model.get("name"), "--neuron": model.get("neuron"),
               "--weight-bits": model.get("weight_bits"), "--width": model.get("width"),
               "--subset": data.get("subset"), "--epochs": train.get("epochs"), "--seed": train.get("seed")}
    return " ".join(["pdnn train", *(f"{k} {v}" for k, v in options.items() if v is not None), f"--out {out}"])


def restore_checkpoint(run_dir: str | Path) -> Path:
    """Recreate a converted run's missing ``checkpoint.pt`` (a copy of its source's weights).

    Converted runs are often kept without their checkpoint (it duplicates the source's); the
    conversion itself is all in ``config.json``. The source is ``config["source_run"]`` relative
    to ``run_dir`` (or, for older runs, to the current directory), and its checkpoint must have
    the recorded ``source_checkpoint_sha256`` if there is one. An existing checkpoint is left
    as it is. Returns the checkpoint's path.

    Raises:
        RunError: ``run_dir`` is not a converted run, or the source checkpoint is missing (the
            message says how to train it) or is not the one the run was converted from.
    """
    from .runs import CHECKPOINT, CONFIG, RunError, read_config

    run_dir = Path(run_dir)
    config = read_config(run_dir)
    if "convert" not in config or not config.get("source_run"):
        raise RunError(f"{run_dir} is not a converted run (its {CONFIG} has no 'convert' and 'source_run'); "
                       "only a converted run's checkpoint is a copy that can be recreated")
    target = run_dir / CHECKPOINT
    if target.is_file():
        return target
    source = _source_dir(run_dir, config["source_run"])
    checkpoint = source / CHECKPOINT
    if not checkpoint.is_file():
        raise RunError(f"cannot restore {target}: the source run's checkpoint {checkpoint} does not exist; train it "
                       f"with `{_train_command(config, source)}` (the other training options are under 'train' in "
                       f"{run_dir / CONFIG}) and run this again")
    expected = config.get("source_checkpoint_sha256")
    if expected is not None and (actual := _sha256(checkpoint)) != expected:
        raise RunError(f"cannot restore {target}: {checkpoint} has sha256 {actual}, but {run_dir} was converted from "
                       f"one with {expected} (was the source retrained?); convert the source again into a new "
                       "directory instead")
    _copy_weights(source, run_dir)
    return target
