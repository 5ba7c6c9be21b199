"""The conversion itself: a checked spec, and a copy of the model with its activations replaced.

Activation modules are swapped in the copy; activations called as functions are rewritten in
its ``torch.fx`` graph (the copy is then a ``GraphModule``). BatchNorm statistics re-estimated
under sampling (``bn_stats``) are loaded into the copy; no weight ever changes.
"""
from __future__ import annotations

import copy
import json
import warnings
from typing import Sequence

import torch
from torch import fx, nn
from torch.nn import functional as F
from torch.nn.modules.batchnorm import _BatchNorm

from ..checks import shown
from ..errors import UsageError
from ..foldcheck import own_hooks
from ..functional import _nearest_levels, check_beta
from ..nn import DitheredQuantize, GaussianNoise, HardPBit, LogisticNoise, PBit
from ..nn.noise import check_scale
from ..sampling import attributes_read
from ..tracing import add_module, why_untraceable
from .methods import DEFAULT_SCALE, LAYER_SETS, ConversionError, _check_method, parameter_of
from .sites import (ON_WEIGHTS_WHERE_TRACED, _Discovery, _discover, _input_node, _Site, _supports,
                    MAX_TRACED_OPTIONAL, branches_on_none, check_module)


def _module_aliases(model: nn.Module) -> dict[int, list[str]]:
    aliases: dict[int, list[str]] = {}
    for name, m in model.named_modules(remove_duplicate=False):
        if name:
            aliases.setdefault(id(m), []).append(name)
    return aliases


class HeldFunction(nn.Module):
    """An activation function a torch layer held as an attribute, as a module, so that noise can
    stand before it where the function stood."""

    def __init__(self, function):
        super().__init__()
        self.function = function

    def forward(self, x):
        return self.function(x)

    def extra_repr(self) -> str:
        return getattr(self.function, "__name__", repr(self.function))


def _replacement(method: str, site: _Site, value: float) -> nn.Module:
    """The module that takes the place of ``site`` (module and held-function sites) or is inserted
    at it (functional calls)."""
    if method == "pbit":
        if site.kind == "tanh":
            return PBit("bipolar", value)
        if site.kind == "sigmoid":
            return PBit("unipolar", value)
        if site.kind == "hardtanh":
            return HardPBit(*site.bounds, beta=value)
        return PBit(site.module.mode, check_beta(site.module.beta * value,  # quantize: its beta scaled
                                                 f"the {type(site.module).__name__} at {site.name!r}: its beta "
                                                 f"{site.module.beta:g} times beta={value:g}"))
    if method == "dither":
        q = site.module
        return DitheredQuantize(q.bits, q.beta, q.mode, width=value)
    noise = GaussianNoise(value) if method == "gaussian" else LogisticNoise(value)
    if site.holder is not None:
        return nn.Sequential(noise, HeldFunction(getattr(site.holder, site.name.rpartition(".")[2])))
    return noise if site.module is None else nn.Sequential(noise, site.module)


def _why_not(method: str, site: _Site) -> str | None:
    if site.problem:
        return site.problem
    if site.kind == "stochastic":
        return "already stochastic"
    if not _supports(method, site.kind):
        return f"not supported by {method!r}"
    if method == "pbit" and site.kind == "hardtanh" and site.bounds is None:
        return "hardtanh bounds are not constants with min_val < max_val"
    return None


def _select(sites: list[_Site], layers) -> list[_Site]:
    if isinstance(layers, str):
        if layers in LAYER_SETS:  # already stochastic activations are left as they are
            return [s for s in sites if s.kind != "stochastic" and s.problem != ON_WEIGHTS_WHERE_TRACED
                    and (s.hidden or layers == "all")]
        layers = [layers]
    if not isinstance(layers, (list, tuple)) or not all(isinstance(n, str) for n in layers):
        raise UsageError(f"layers must be 'hidden', 'all' or a list of activation names, got {shown(layers)}")
    by_name = {s.name: s for s in sites}
    unknown = [n for n in layers if n not in by_name]
    if unknown:
        raise ConversionError(
            f"unknown layer name(s) {', '.join(map(repr, unknown))}; the model's activations are: "
            + (", ".join(f"{s.name} ({s.op})" for s in sites) or "none")
        )
    return [by_name[n] for n in layers]


def _values_for(selected: list[_Site], value: float | dict, key: str) -> dict[str, float]:
    """The (already checked) ``scale``/``beta`` of every selected activation, by name."""
    if not isinstance(value, dict):
        return {s.name: value for s in selected}
    names = {s.name for s in selected}
    unknown = [k for k in value if k != "*" and k not in names]
    if unknown:
        raise UsageError(f"per-layer {key} for {', '.join(map(repr, unknown))}, which are not among the "
                         f"converted activations ({', '.join(sorted(names))})")
    missing = [n for n in names if n not in value and "*" not in value]
    if missing:
        raise UsageError(f"no {key} for {', '.join(sorted(missing))}; give one per layer or a default under '*'")
    return {s.name: value.get(s.name, value.get("*")) for s in selected}


def _check_value(key: str, value, what: str) -> float:
    """``value`` as a float if it is a valid ``key`` -- ``"scale"``: finite and >= 0 (0: no noise);
    ``"beta"``: in p-bits' range, [1e-30, 1e30] (:func:`pdnn.functional.check_beta`) -- else a
    ``ValueError`` naming ``what`` and the value."""
    if isinstance(value, bool):  # float(True) == 1.0 would pass silently
        raise UsageError(f"{what} must be a number, got {shown(value)}")
    if key == "scale":
        return check_scale(value, what)
    return check_beta(value, what)


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
        raise UsageError("method 'pbit' is tuned by beta (its inverse temperature), not by scale")
    if method != "pbit" and beta is not None:
        raise UsageError(f"beta applies to method 'pbit' only; {method!r} is tuned by scale")
    key = parameter_of(method)
    value = beta if key == "beta" else scale
    if value is None:
        value = 1.0 if key == "beta" else DEFAULT_SCALE[method]
    spec = {"method": method, key: _check_setting(key, value)}
    if isinstance(layers, str) and layers not in LAYER_SETS:
        layers = [layers]
    if not isinstance(layers, str) and not (isinstance(layers, (list, tuple)) and all(isinstance(n, str) for n in layers)):
        raise UsageError(f"layers must be 'hidden', 'all' or a list of activation names, got {shown(layers)}")
    if isinstance(layers, (list, tuple)):
        twice = [name for name in dict.fromkeys(layers) if list(layers).count(name) > 1]
        if twice:  # "3,3" is more likely a slip for "3,4" than a wish to convert 3 once
            raise UsageError(f"layers lists {', '.join(map(repr, twice))} more than once: {list(layers)!r}")
        layers = list(layers)
    spec["layers"] = layers
    if bn_stats:  # as lists of numbers, however given (a BatchNorm's own buffers failed as JSON)
        spec["bn_stats"] = {name: {key: value.tolist() for key, value in stats.items()}
                            for name, stats in _check_bn_stats(bn_stats).items()}
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
        UsageError: ``model`` is not an ``nn.Module``, is TorchScript, or has lazy modules not yet
            sized (call it once on an input first).

    Example:
        >>> net = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 2))
        >>> to_sampled(net, "pbit")[1]
        PBit(mode='bipolar', beta=1, ste='mean')
    """
    return _convert(model, conversion_spec(method, scale, beta, layers, bn_stats))[0]


def _convert(model: nn.Module, spec: dict) -> tuple[nn.Module, list[_Site]]:
    """:func:`to_sampled` of a canonical ``spec``; also returns the converted sites (execution order)."""
    check_module(model)
    method, key = spec["method"], parameter_of(spec["method"])
    converted = _copy(model)
    found = _discover(converted)
    selected = _select(found.sites, spec["layers"])
    _check_convertible(type(model).__name__, method, spec["layers"], found, selected)
    values = _values_for(selected, spec[key], key)
    # traced before any swap, as the graph was: calls whose None arguments the graph does not follow
    check = (ArgumentNeeded(*branches_on_none(converted, found.graph), type(model).__name__)
             if any(s.node is not None for s in selected) else None)
    if check is not None and check.refuses():
        warnings.warn(f"the converted {type(model).__name__} refuses a call with None for {check.refused()}: its "
                      "forward does other things then, and the graph that rewrites its functional activations "
                      "(torch.fx) holds only what it does with them given", stacklevel=3)
    aliases = _module_aliases(converted)
    unhooked = []  # replaced modules whose hooks the replacement does not have
    for site in selected:
        if site.holder is not None:  # a function a torch layer calls: the layer gets a module instead
            setattr(site.holder, site.name.rpartition(".")[2], _replacement(method, site, values[site.name]))
            continue
        if site.module is None:
            continue
        new = _replacement(method, site, values[site.name])
        if own_hooks(site.module) and not any(m is site.module for m in new.modules()):
            unhooked.append(f"{site.name} ({type(site.module).__name__})")
        for path in aliases.get(id(site.module), [site.name]):
            parent, _, attr = path.rpartition(".")
            setattr(converted.get_submodule(parent) if parent else converted, attr, new)
    _decide_fused_paths_again(converted)
    _keep_activation_modules_through_copies(converted)
    if unhooked:
        warnings.warn(f"hooks on {', '.join(unhooked)} stay behind: the {method} module that replaces each in the "
                      "converted copy has none; register them on the copy", stacklevel=3)
    functional = [s for s in selected if s.node is not None]  # found by the trace, so there is a graph
    if functional:
        converted = _rewrite_functions(converted, found.graph, functional, method, values, type(model).__name__,
                                       check if check is not None and check.refuses() else None)
    elif found.trace_error is not None:
        guessed = spec["layers"] == "hidden" and any(s.module is not None and not s.hidden for s in found.sites)
        warnings.warn(
            f"{type(model).__name__} could not be traced by torch.fx ({why_untraceable(found.trace_error)}); "
            "activations called as functions inside its forward (torch.tanh, F.sigmoid, ...) cannot be found and "
            "stay deterministic"
            + (", and layers='hidden' took the activation modules registered after the last weight layer as output "
               "ones" if guessed else ""),
            stacklevel=3,
        )
    if spec.get("bn_stats"):
        load_bn_stats(converted, spec["bn_stats"])
    return converted, selected


def _copy(model: nn.Module) -> nn.Module:
    """``copy.deepcopy(model)``, without two changes deepcopy would make to a model:

    * a tensor a forward kept as an attribute (``self.last_hidden = h``) is no graph leaf, which
      deepcopy refuses: the copy gets it detached;
    * ``nn.TransformerDecoderLayer`` restores a copy with ``activation = F.relu`` in the
      instance's own dict when its activation is a module, hiding the module: the copy would
      compute ReLU. Entries the copy has and the model has not, under a submodule's name, go."""
    memo = {id(value): value.detach().clone() for m in model.modules() for value in vars(m).values()
            if isinstance(value, torch.Tensor) and not value.is_leaf}
    try:
        converted = copy.deepcopy(model, memo)
    except RuntimeError as err:
        raise ConversionError(f"{type(model).__name__} cannot be copied for conversion: {err}") from err
    for original, copied in zip(model.modules(), converted.modules()):
        for name in set(copied._modules) & (set(vars(copied)) - set(vars(original))):
            del copied.__dict__[name]
    return converted


def _relu_or_gelu(activation) -> int:
    """What ``nn.TransformerEncoderLayer`` notes of its activation when built: 1 for ReLU, 2 for GELU."""
    if activation is F.relu or isinstance(activation, nn.ReLU):
        return 1
    return 2 if activation is F.gelu or isinstance(activation, nn.GELU) else 0


def _decide_fused_paths_again(model: nn.Module) -> None:
    """torch's transformer layers decide when built whether their activation is ReLU or GELU; if
    so, in inference, a layer runs a fused kernel that applies the activation itself (never
    calling the module now in its place), and an encoder stack with a padding mask passes nested
    tensors, which noise cannot be drawn for. Where an activation was replaced, both decisions are
    made again, as torch makes them for the new activation."""
    for m in model.modules():
        if hasattr(m, "activation_relu_or_gelu") and hasattr(m, "activation"):
            m.activation_relu_or_gelu = _relu_or_gelu(m.activation)
    for m in model.modules():
        if getattr(m, "use_nested_tensor", False) and not all(
                getattr(layer, "activation_relu_or_gelu", 0) for layer in getattr(m, "layers", [])):
            m.use_nested_tensor = False


def _keep_activation_modules_through_copies(model: nn.Module) -> None:
    """``nn.TransformerDecoderLayer.__setstate__`` (deepcopy, pickling, ``torch.save``) puts
    ``activation = F.relu`` in the instance's dict where the state has no ``activation`` entry,
    as it has none when the activation is a module (it is under ``_modules``): the copy of a
    converted layer computed ReLU, its p-bits or noise hidden. The module is put in the instance's
    dict too, the same object, so the state has the entry and the copy the module; assigning
    another activation later drops it, as ``nn.Module.__setattr__`` drops a dict entry of a
    submodule's name."""
    for m in model.modules():
        if isinstance(m, nn.TransformerDecoderLayer) and "activation" in m._modules:
            m.__dict__["activation"] = m._modules["activation"]


def _check_convertible(name: str, method: str, layers, found: _Discovery, selected: list[_Site]) -> None:
    """Raise a :class:`ConversionError` naming every operation that stops the conversion."""
    if not selected:
        if found.trace_error is not None and not found.sites:
            raise ConversionError(
                f"nothing to convert in {name}: it has no activation modules, and torch.fx could not trace its "
                f"forward ({why_untraceable(found.trace_error)}), so activations called as "
                "functions could not be found or rewritten"
            )
        def role(s: _Site) -> str:
            if s.kind == "stochastic":
                return "already stochastic"
            if s.problem == ON_WEIGHTS_WHERE_TRACED:
                return "on weights"
            return "hidden" if s.hidden else "output and hidden: one module at both" if s.also_hidden else "output"

        roles = {role(s) for s in found.sites}
        described = ", ".join(f"{s.name} ({s.op}, {role(s)})" for s in found.sites)
        shared = any(s.also_hidden for s in found.sites)
        advice = ("pass layers='all' or names to include output activations" if "output" in roles or shared else
                  "pass layers='hidden' or names" if "hidden" in roles else
                  "every activation is already stochastic" if roles == {"already stochastic"} else
                  "none of them is an activation of the input that can be converted")
        if shared:
            advice += "; to convert only a module's hidden calls, give them a module of their own"
        raise ConversionError(
            f"nothing to convert in {name} with layers={layers!r}: "
            + (f"the activations are {described}; {advice}"
               if found.sites else f"it has no activation; operations seen: {', '.join(map(str, found.ops)) or 'none'}")
        )
    problems = [(s, why) for s in selected if (why := _why_not(method, s))]
    if problems:
        bad = {id(s) for s, _ in problems}
        ok = [s.name for s in selected if id(s) not in bad]
        raise ConversionError(
            f"cannot convert {name} with method {method!r}: "
            + "; ".join(f"{s.name} ({s.op}): {why}" for s, why in problems)
            + (f". Convertible: {', '.join(ok)} (to convert only those: layers={ok!r} in Python, --layers "
               f"{','.join(ok)} to pdnn convert)" if ok else "")
        )


def _rewrite_functions(model: nn.Module, graph: fx.Graph, sites: list[_Site], method: str,
                       values: dict[str, float], class_name: str, check: ArgumentNeeded | None) -> fx.GraphModule:
    """The converted copy as a graph; ``check`` (if any) refuses the calls whose None arguments it
    does not follow (:func:`branches_on_none`)."""
    gm = fx.GraphModule(model, graph, class_name=class_name)
    _keep_everything(gm, model)
    _warn_of_hooks_left_behind(gm, model, class_name)
    inputs = {node.target: node for node in gm.graph.nodes if node.op == "placeholder"}
    if check is not None:
        with gm.graph.inserting_after(list(inputs.values())[-1]):
            gm.graph.call_module(add_module(gm, "none_check", check), tuple(inputs[name] for name in check.names))
    if "training" in attributes_read(model.modules()):  # its branches on the mode are the traced mode's
        with gm.graph.inserting_after(list(inputs.values())[-1]):
            gm.graph.call_module(add_module(gm, "mode_check", ModeFixed(model.training, class_name)), ())
    for site in sites:
        node = site.node
        target = site.name  # a p-bit takes the activation's place; noise is inserted before it
        while method != "pbit" and (target == site.name or hasattr(gm, target)):
            target = f"{target}_noise"
        gm.add_submodule(target, _replacement(method, site, values[site.name]).train(model.training))
        source = _input_node(node)
        if method == "pbit":
            with gm.graph.inserting_before(node):
                new = gm.graph.call_module(target, (source,))
            node.replace_all_uses_with(new)
            gm.graph.erase_node(node)
            _drop_rounding_of(new, gm.get_submodule(target), gm.graph)
        else:
            with gm.graph.inserting_before(node):
                noisy = gm.graph.call_module(target, (source,))
            if node.args:
                node.args = (noisy, *node.args[1:])
            else:
                node.kwargs = {k: (noisy if v is source else v) for k, v in node.kwargs.items()}
    gm.graph.lint()
    gm.recompile()
    gm.training = model.training  # its own flag only: each module keeps its mode (a frozen batch norm stays frozen)
    return gm


def _drop_rounding_of(pbit: fx.Node, module: nn.Module, graph: fx.Graph) -> None:
    """Replaces the k-bit rounding (``quantize_levels``, as ``quantized_activation`` calls it) of
    the output of a p-bit whose bits are ±1 by those bits, detached as the rounding's output was
    (the gradient goes through the straight-through surrogate, once). ±1 lie on every grid, so in
    a loop of forwards the rounding does nothing; under layer aggregation the p-bit passes on the
    mean of its T bits, which the rounding made a majority vote: a deterministic k-bit network,
    not the sampled one. (Other bits, a sigmoid's 0 or a hardtanh's own bounds, are not on the
    grid: their rounding stays.)"""
    plus_minus_one = (isinstance(module, PBit) and module.mode == "bipolar" or
                      isinstance(module, HardPBit) and (module.min_val, module.max_val) == (-1.0, 1.0))
    for user in list(pbit.users) if plus_minus_one else ():
        if user.op == "call_function" and user.target is _nearest_levels and user.args[:1] == (pbit,):
            with graph.inserting_before(user):
                bits = graph.call_method("detach", (pbit,))
            user.replace_all_uses_with(bits)
            graph.erase_node(user)


class ModeFixed(nn.Module):
    """A converted graph's check of its mode: the model's code reads ``self.training``, and the
    graph holds the branches the mode it was converted in took (``F.dropout(h, training=
    self.training)``, logits in training and probabilities in evaluation), so a call in the other
    mode is refused (it ran those branches, with nothing said)."""

    def __init__(self, traced: bool, class_name: str):
        super().__init__()
        self.traced, self.class_name = traced, class_name
        self.train(traced)

    def forward(self) -> None:
        if self.training != self.traced:
            mode, other = ("train", "eval") if self.traced else ("eval", "train")
            raise UsageError(f"the converted {self.class_name} was converted in {mode} mode, and its code reads "
                             f"self.training: the graph that rewrites its functional activations (torch.fx) holds "
                             f"what {mode} mode does; call it in {mode} mode, or convert it in {other} mode "
                             f"(to_sampled(model.{other}(), ...))")


class ArgumentNeeded(nn.Module):
    """A converted graph's check of the arguments defaulting to None (:func:`branches_on_none`): a
    call with a set of them None that the graph does not follow (``unfollowed``), or with any of
    ``untraced`` None, is refused. (A module, so that the graph keeps it when a copy is traced
    again, as unpickling does.)"""

    def __init__(self, names: tuple[str, ...], unfollowed: list[frozenset[str]], untraced: tuple[str, ...],
                 class_name: str):
        super().__init__()
        self.names, self.untraced, self.class_name = tuple(names), tuple(untraced), class_name
        self.unfollowed = [tuple(sorted(none)) for none in unfollowed]

    def refuses(self) -> bool:
        return bool(self.unfollowed or self.untraced)

    def refused(self) -> str:
        """The calls refused, for a warning: the least sets of None arguments."""
        sets = [set(none) for none in self.unfollowed]
        said = [self._listed(none) for none in sets if not any(other < none for other in sets)]
        if self.untraced:
            said.append(f"any of {', '.join(self.untraced)} (of more than {MAX_TRACED_OPTIONAL} arguments defaulting "
                        "to None, whose combinations are not traced)")
        return "; or for ".join(said)

    def _listed(self, names) -> str:
        return " and ".join(name for name in self.names if name in names)

    def forward(self, *values):
        none = {name for name, value in zip(self.names, values) if value is None}
        if tuple(sorted(none)) in self.unfollowed:  # named: the least sets within it the graph does not follow
            within = [set(u) for u in self.unfollowed if set(u) <= none]
            shown = self._listed(set().union(*(u for u in within if not any(o < u for o in within))))
        elif none & set(self.untraced):
            shown = self._listed(none & set(self.untraced))
        else:
            return
        raise UsageError(
            f"the converted {self.class_name} got None for {shown}: its forward does other things then (or, with "
            f"more than {MAX_TRACED_OPTIONAL} arguments defaulting to None, may), and the graph that rewrote its "
            "functional activations holds only what it does with them given (torch.fx decides `is None` once, "
            f"while tracing); pass {shown}, or use activation modules (nn.Tanh, ...) in the model, which "
            "conversion swaps without a graph")

    def extra_repr(self) -> str:
        return ", ".join(map(repr, self.names))


def _keep_everything(gm: fx.GraphModule, model: nn.Module) -> None:
    """Give ``gm`` the modules, parameters and buffers of ``model`` (a copy made for it) itself.
    fx copies only what the graph reads, under new empty parent modules: an auxiliary head or a
    buffer forward does not read would be lost, and ``state_dict`` would no longer load. The
    graph calls the same leaf modules through the original parents. Every name is kept, a second
    name of one module or tensor too (``self.dec = self.enc``: ``named_children`` gives one, and
    the model's ``state_dict``, which has both, no longer loaded)."""
    for name, child in model._modules.items():
        if child is not None:
            setattr(gm, name, child)
    for name, parameter in model._parameters.items():
        if parameter is not None:
            gm.register_parameter(name, parameter)
    buffers = {name: buffer for name, buffer in model._buffers.items() if buffer is not None}
    for name, buffer in buffers.items():
        gm.register_buffer(name, buffer, persistent=name not in model._non_persistent_buffers_set)
    for name, _ in gm.named_buffers(recurse=False):
        if name not in buffers:  # a plain tensor attribute forward reads, which fx made a buffer: not state
            gm._non_persistent_buffers_set.add(name)


_HOOK_DICTS = tuple(name for name in vars(nn.Module()) if name.endswith("hooks"))  # forward, backward, state dict


def _warn_of_hooks_left_behind(gm: fx.GraphModule, model: nn.Module, class_name: str) -> None:
    """Warn of the hooks the graph ``gm`` does not run, which were dropped without a word: the
    model's own (``model``, the copy made for the conversion: a hook is bound to it, or is one of
    its methods, and the graph is no instance of its class) and those of the modules the trace
    went into (the graph holds what they compute, not calls to them)."""
    called = {node.target for node in gm.graph.nodes if node.op == "call_module"}
    left = [f"{class_name} itself"] if any(getattr(model, name) for name in _HOOK_DICTS) else []
    left += [name for name, m in model.named_modules() if name and name not in called and own_hooks(m)]
    if left:
        warnings.warn(f"hooks on {', '.join(left)} do not run in the converted {class_name}: its functional "
                      "activations are rewritten in a torch.fx graph, which keeps neither the model's own hooks "
                      "nor calls to the modules it traced into; register them on the converted copy (on modules "
                      "it calls), or make the activations modules (nn.Tanh, ...), which are swapped with no graph",
                      stacklevel=5)


def _check_bn_stats(bn_stats) -> dict[str, dict[str, torch.Tensor]]:
    """``bn_stats`` as tensors, checked: a damaged spec (a converted run's config.json edited by
    hand, say) is a :class:`UsageError` naming the entry, never a failure deep in loading or NaN
    outputs from a negative variance."""
    if not isinstance(bn_stats, dict):
        raise UsageError(f"bn_stats must map BatchNorm names to their statistics, got {bn_stats!r:.80}")
    checked = {}
    for name, stats in bn_stats.items():
        if not isinstance(stats, dict) or set(stats) != {"running_mean", "running_var"}:
            raise UsageError(f"bn_stats[{name!r}] must hold exactly 'running_mean' and 'running_var', "
                             f"got {sorted(stats) if isinstance(stats, dict) else stats!r:.80}")
        checked[name] = {}
        for key, values in stats.items():
            try:
                value = torch.as_tensor(values, dtype=torch.float64)
            except (TypeError, ValueError, RuntimeError) as err:
                raise UsageError(f"bn_stats[{name!r}][{key!r}] is not a list of numbers ({err})") from err
            if not torch.isfinite(value).all():
                raise UsageError(f"bn_stats[{name!r}][{key!r}] holds a non-finite value; expected finite values")
            if key == "running_var" and (value < 0).any():
                raise UsageError(f"bn_stats[{name!r}][{key!r}] holds a negative variance; expected values >= 0")
            checked[name][key] = value
    return checked


def load_bn_stats(model: nn.Module, bn_stats: dict) -> None:
    """Load ``{name: {"running_mean": [...], "running_var": [...]}}`` into ``model``'s BatchNorms;
    every entry is checked (:func:`_check_bn_stats`, names and shapes) before any is loaded."""
    modules = dict(model.named_modules())
    loads = []
    for name, stats in _check_bn_stats(bn_stats).items():
        bn = modules.get(name)
        if not isinstance(bn, _BatchNorm) or bn.running_mean is None:
            raise UsageError(f"bn_stats names {name!r}, which is not a BatchNorm with running statistics")
        for key, value in stats.items():
            buffer = getattr(bn, key)
            if value.shape != buffer.shape:
                raise UsageError(f"bn_stats[{name!r}][{key!r}] has shape {tuple(value.shape)}, "
                                 f"expected {tuple(buffer.shape)}")
            loads.append((buffer, value))
    with torch.no_grad():
        for buffer, value in loads:
            buffer.copy_(value)
