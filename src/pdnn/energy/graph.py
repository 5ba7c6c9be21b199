"""Reading a torch model for energy accounting: the layers that compute EOs, and what feeds them.

:func:`analyze` runs the model once on a zero input of the given shape and returns a
:class:`Network`: one :class:`Layer` per call of a weight layer (``nn.Linear``, ``nn.Conv1d/2d/3d``
and their pdnn k-bit subclasses) with

* its fan-in n (``in_features``; ``C_in/groups * prod(kernel)`` for a convolution) and its number
  of EOs (output neurons x output positions, read from the output shape);
* ``b_w``: the layer's ``weight_bits`` (32, float, if it has none);
* ``b_a``: the precision of the tensor that feeds it, propagated through the graph: the network
  input has ``input_bits``; a module with a ``precision`` attribute (p-bit, k-bit quantiser,
  dithered quantiser) sets it; a float activation or a weight layer's raw sum gives 32; batch
  norm, max pooling, flatten, dropout and reshapes keep it (batch norm folds into the next
  layer's weights); average pooling over a window of k values of b bits gives their sum,
  ``ceil(log2(k(2^b - 1) + 1))`` bits (the mean of four 1-bit values has five levels: the next
  layer reads 3 bits, its 1/k folded into its weights), and so does a mean or sum over
  dimensions; a residual sum of two k-bit tensors has k + 1 bits;
* the *neuron parts* that follow it up to the next weight layer (p-bit, noise injector,
  threshold quantiser, float nonlinearity, clipping), each marked stochastic if it runs once per
  sample;
* whether its input depends on a random draw (``stochastic_input``): only such layers must be
  recomputed for every sample; the others form the deterministic prefix that
  :class:`pdnn.SampledModel` computes once.

Modules are matched with ``isinstance`` and the ``stochastic`` / ``precision`` attributes, never by
class name. The graph comes from ``torch.fx`` (tracing into containers, with pdnn modules and
torch layers as leaves); a model fx cannot trace is walked with forward hooks instead, following
each tensor from the module that produced it to the module that reads it. Whatever cannot be
determined is *listed*, not guessed silently: a layer whose input precision is unknown is priced
at 32 bits and named in ``Network.unresolved``; modules and functions the model does not know how
to price are named in ``Network.notes``.
"""
from __future__ import annotations

import contextlib
import inspect
import io
import math
import operator
from dataclasses import asdict, dataclass, field, replace
from fractions import Fraction
from functools import reduce

import torch
from torch import fx, nn
from torch.fx.passes.shape_prop import ShapeProp, TensorMetadata
from torch.nn import functional as torch_F
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.modules.conv import _ConvNd, _ConvTransposeNd
from torch.nn.modules.dropout import _DropoutNd
from torch.nn.modules.pooling import (_AdaptiveAvgPoolNd, _AdaptiveMaxPoolNd, _AvgPoolNd, _MaxPoolNd)
from torch.nn.utils import parametrize

from ..checks import positive_ints
from ..errors import UsageError
from ..functional import _nearest_levels, straight_through
from ..nn import DitheredQuantize, HardPBit, PBit, Quantize, is_stochastic
from ..sampling import SampledModel
from ..tracing import (DROPOUT_FUNCTIONS, ModelState, Tracer, draws_node, evaluated, steering_gradients_only, unsized,
                       why_untraceable)
from .eo import NeuronPart, check_bit_width
from .tech import FLOAT_BITS

# max pooling, reshaping and batch norm keep the precision of what they carry (batch norm not the
# values' step, which _Walker.module says); average pooling widens it (see the module docstring)
TRANSPARENT_MODULES = (_MaxPoolNd, _AdaptiveMaxPoolNd, nn.Flatten, nn.Unflatten, _DropoutNd, nn.Identity)
AVERAGE_POOLING_MODULES = (_AvgPoolNd, _AdaptiveAvgPoolNd)
_POOLING_MODULE_DIMS = {nn.AvgPool1d: 1, nn.AvgPool2d: 2, nn.AvgPool3d: 3, nn.AdaptiveAvgPool1d: 1,
                        nn.AdaptiveAvgPool2d: 2, nn.AdaptiveAvgPool3d: 3}  # spatial dimensions
NONLINEAR_MODULES = (nn.Tanh, nn.Sigmoid, nn.GELU, nn.SiLU, nn.ELU, nn.SELU, nn.CELU, nn.Softplus,
                     nn.Mish, nn.LogSigmoid, nn.Softsign, nn.Tanhshrink, nn.Hardswish)
CLIPPING_MODULES = (nn.ReLU, nn.Hardtanh, nn.LeakyReLU, nn.PReLU, nn.Hardsigmoid, nn.Threshold)
FLOAT_UNPRICED_MODULES = (nn.LayerNorm, nn.GroupNorm, nn.modules.instancenorm._InstanceNorm,
                          nn.Softmax, nn.LogSoftmax)

_SHAPE_FUNCTIONS = {torch.flatten, torch.reshape, torch.cat, torch.concat, torch.stack, torch.squeeze,
                    torch.unsqueeze, torch.permute, torch.transpose, operator.getitem, torch_F.max_pool1d,
                    torch_F.max_pool2d, torch_F.max_pool3d, torch_F.adaptive_max_pool1d,
                    torch_F.adaptive_max_pool2d, torch_F.adaptive_max_pool3d, torch_F.dropout, torch_F.batch_norm}
_ADAPTIVE_AVERAGE_POOLING_FUNCTIONS = {torch_F.adaptive_avg_pool1d, torch_F.adaptive_avg_pool2d,
                                       torch_F.adaptive_avg_pool3d}  # (their second argument is the output size)
_POOLING_FUNCTION_DIMS = {torch_F.avg_pool1d: 1, torch_F.avg_pool2d: 2, torch_F.avg_pool3d: 3,
                          torch_F.adaptive_avg_pool1d: 1, torch_F.adaptive_avg_pool2d: 2,
                          torch_F.adaptive_avg_pool3d: 3}
_REDUCTIONS = {torch.mean, torch.sum, "mean", "sum"}  # (x.mean((2, 3)): a global average pool written by hand)
_SHAPE_METHODS = {"flatten", "view", "reshape", "permute", "transpose", "squeeze", "unsqueeze",
                  "contiguous", "chunk", "split", "expand", "clone", "detach", "float", "to"}
_NONLINEAR_FUNCTIONS = {torch.tanh, torch.sigmoid, torch_F.tanh, torch_F.sigmoid, torch_F.gelu,
                        torch_F.silu, torch_F.elu, torch_F.softplus, torch_F.mish}
_NONLINEAR_METHODS = {"tanh", "sigmoid"}
_CLIPPING_FUNCTIONS = {torch.relu, torch_F.relu, torch_F.relu6, torch_F.hardtanh, torch_F.leaky_relu,
                       torch.clamp, torch.clip}
_CLIPPING_METHODS = {"relu", "clamp", "clip"}
_SUM_FUNCTIONS = {operator.add, operator.sub, operator.iadd, operator.isub, torch.add, torch.sub}
_SUM_METHODS = {"add", "sub"}
_SCALE_FUNCTIONS = {operator.mul, operator.truediv, operator.imul, operator.itruediv, operator.neg, torch.mul,
                    torch.div}
_SCALE_METHODS = {"mul", "div", "neg"}


def is_weight_layer(module: nn.Module) -> bool:
    """Layers whose outputs are sums of weighted inputs: Linear, ConvNd and ConvTransposeNd."""
    return isinstance(module, (nn.Linear, _ConvNd))


def layer_weight_bits(module: nn.Module) -> int:
    """``b_w``: a pdnn layer's ``weight_bits``, else 32 (float)."""
    bits = getattr(module, "weight_bits", None)
    if bits is None:
        return FLOAT_BITS
    try:
        return check_bit_width(bits, f"{type(module).__name__}.weight_bits")
    except ValueError as err:  # an AnalysisError, so that analyze() does not take it for a tracing failure
        raise AnalysisError(str(err)) from None


def fan_in(module: nn.Module, in_shape=None, out_shape=None) -> int:
    """n: inputs per output neuron. Linear: ``in_features``; ConvNd: ``C_in/groups * prod(kernel)``.
    ConvTransposeNd scatters each of its input positions over ``kernel`` outputs: n is its
    products per output value, ``C_in/groups * prod(kernel) * inputs / outputs`` (positions, from
    the shapes ``[N, C, ...]``; rounded up), which is ``C_in/groups * prod(kernel / stride)`` when
    the output is the input enlarged by the stride -- the value used without shapes."""
    if isinstance(module, nn.Linear):
        return module.in_features
    if isinstance(module, _ConvTransposeNd):
        if in_shape is not None and out_shape is not None:
            per_position = math.prod(module.kernel_size) * math.prod(in_shape[2:]) / math.prod(out_shape[2:])
        else:
            per_position = math.prod(k / s for k, s in zip(module.kernel_size, module.stride))
        return math.ceil(module.in_channels // module.groups * per_position - 1e-9)
    return module.in_channels // module.groups * math.prod(module.kernel_size)


def pooled_bits(bits: int | None, window: int) -> int | None:
    """Bits of the sum of ``window`` values of ``bits`` bits, ``ceil(log2(window (2^bits - 1) + 1))``:
    what the layer after an average pool reads (the pool's 1/k folds into that layer's weights,
    as batch norm does). Float stays float; a sum wider than 32 bits is held as a float."""
    if bits is None or bits >= FLOAT_BITS:
        return bits
    return min(FLOAT_BITS, math.ceil(math.log2(window * (2**bits - 1) + 1)))


def pooling_window(kernel_size, dims: int | None, in_shape, out_shape) -> int | None:
    """Values averaged into one output of a pool over the last ``dims`` dimensions (torch's pools
    take ``[N, C, *spatial]`` and ``[C, *spatial]`` alike): the kernel's size (``int`` or one per
    spatial dimension), or without a kernel (adaptive pooling) the largest window torch uses, from
    ``floor(i I / O)`` to ``ceil((i + 1) I / O)`` along each dimension. None when it is not known."""
    if isinstance(kernel_size, (tuple, list)):
        return math.prod(kernel_size)
    if dims is None:
        return None
    if kernel_size is not None:
        return kernel_size**dims
    if in_shape is None or out_shape is None:
        return None
    window = 1
    for size, out in zip(in_shape[-dims:], out_shape[-dims:]):
        window *= max(-(-(i + 1) * size // out) - i * size // out for i in range(out))
    return window


def _pooling_dims(pool) -> int | None:
    """Spatial dimensions of an average pool, a module (a subclass of torch's by its base) or a
    function; None for another."""
    if isinstance(pool, nn.Module):
        return next((d for kind, d in _POOLING_MODULE_DIMS.items() if isinstance(pool, kind)), None)
    return _POOLING_FUNCTION_DIMS.get(pool)


class AnalysisError(UsageError):
    """The model cannot be accounted for (no weight layer, several inputs, a bad bit width)."""


@dataclass(frozen=True)
class Layer:
    """One call of a weight layer, as the energy model sees it.

    ``eos``: elementary operations (output values per inference); ``weights``: weight count
    (``eos`` / output positions x n); ``activation_bits``: ``b_a`` (32 when not known, with
    ``activation_bits_known`` False); ``stochastic_input``: recomputed for every sample;
    ``averaged_input``: its input is the (k-bit) output of a stochastic module, which layer
    aggregation averages over T samples before this layer reads it -- directly, or through clips,
    average pools and sums; ``averaged_levels``: the steps one input value spans then, per sample,
    on the finest grid its terms share (1 for a p-bit, 2^k - 1 for k bits, times the window of
    each average pool; a sum of a p-bit and a 3-bit value in [-1, 1]: 7 + 7), so that T samples
    of it take ``ceil(log2(T * averaged_levels + 1))`` bits; 0 when those grids are not known,
    and the average is then priced as a float.
    ``repeat_call``: a later call of a module called before in the same inference, or a layer
    whose weight tensor an earlier one holds (weight sharing, tied weights): a buffer that reuses
    weights already holds them.
    """

    name: str
    kind: str
    module_type: str
    fan_in: int
    eos: int
    weights: int
    weight_bits: int
    activation_bits: int
    activation_bits_known: bool = True
    activation_source: str = "input"
    stochastic_input: bool = False
    averaged_input: bool = False
    averaged_levels: int = 0
    repeat_call: bool = False
    neuron: tuple[NeuronPart, ...] = ()

    def to_dict(self) -> dict:
        d = asdict(self)
        d["neuron"] = [asdict(p) for p in self.neuron]
        return d


@dataclass
class Network:
    """The energy-relevant structure of a model on one input shape (see :func:`analyze`)."""

    layers: list[Layer]
    input_shape: tuple[int, ...]
    input_bits: int
    method: str = "torch.fx"
    unresolved: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def stochastic(self) -> bool:
        return any(layer.stochastic_input or any(p.stochastic for p in layer.neuron) for layer in self.layers)

    def float_reference(self) -> "Network":
        """The same network with 32-bit float weights and deterministic float activations: every
        quantiser, p-bit or k-bit noise module becomes a float nonlinearity, float noise is
        dropped, and only the network input keeps its own precision."""
        layers = []
        for layer in self.layers:
            parts = []
            for p in layer.neuron:
                if p.kind == "noise" and p.bits >= FLOAT_BITS:
                    continue
                kind = "nonlinearity" if p.kind in ("pbit", "noise", "threshold") else p.kind
                parts.append(NeuronPart(kind, FLOAT_BITS, False, p.module))
            b_a = layer.activation_bits if layer.activation_source == "input" else FLOAT_BITS
            layers.append(replace(layer, weight_bits=FLOAT_BITS, activation_bits=b_a, activation_bits_known=True,
                                  stochastic_input=False, averaged_input=False, averaged_levels=0,
                                  neuron=tuple(parts)))
        return Network(layers, self.input_shape, self.input_bits, self.method, [], list(self.notes))

    def to_dict(self) -> dict:
        return {"input_shape": list(self.input_shape), "input_bits": self.input_bits, "method": self.method,
                "layers": [layer.to_dict() for layer in self.layers], "unresolved": list(self.unresolved),
                "notes": list(self.notes)}


@dataclass(frozen=True)
class _Info:
    """What is known about one tensor: its precision (None: unknown), whether it depends on a
    random draw, the weight layer whose neuron it belongs to, whether a stochastic module set
    its precision, and for a k-bit value its :class:`_Grid` (see :class:`Layer`'s
    ``averaged_levels``)."""

    prec: int | None
    stoch: bool = False
    owner: int | None = None
    averaged: bool = False
    source: str = "input"
    grid: "_Grid | None" = None


def _precision(module: nn.Module, default: int | None = None) -> int:
    """The bits per output value a module declares (``precision``; ``default`` if it declares
    none), checked as the widths given to the model are: 2.5 had been priced as 2, 64 above float."""
    bits = getattr(module, "precision", None)
    if bits is None:
        return default
    try:
        return check_bit_width(bits, f"{type(module).__name__}.precision")
    except ValueError as err:  # an AnalysisError, as for weight_bits: the model runs, its declared width is wrong
        raise AnalysisError(str(err)) from None


@dataclass(frozen=True)
class _Grid:
    """Where a k-bit tensor's values lie: on ``low + i * step`` for ``i`` from 0 to ``steps``
    (exact fractions), or, with ``step`` None, ``steps + 1`` values at most, spaced unknown."""

    low: Fraction | None
    step: Fraction | None
    steps: int

    @property
    def spaced(self) -> bool:
        return self.step is not None


def _module_grid(module: nn.Module, bits: int) -> _Grid | None:
    """The grid of a module's ``2**bits`` equally spaced output values: pdnn's p-bits and
    quantisers span [-1, 1] (or [0, 1] in ``"unipolar"`` mode), a ``HardPBit`` its two values; the
    spacing of another module's values is not known."""
    if bits >= FLOAT_BITS:
        return None
    steps = 2**bits - 1
    if isinstance(module, HardPBit):
        low, high = _fraction(module.min_val), _fraction(module.max_val)
    elif isinstance(module, (PBit, Quantize, DitheredQuantize)):
        low, high = Fraction(0 if module.mode == "unipolar" else -1), Fraction(1)
    else:
        low = high = None
    return _Grid(low, (high - low) / steps, steps) if low is not None and high is not None else _Grid(None, None, steps)


def _fraction(value) -> Fraction | None:
    """A finite number as an exact fraction, else None."""
    try:
        return Fraction(value)
    except (OverflowError, ValueError, TypeError):
        return None


def _sum_grid(grids: list) -> _Grid | None:
    """The grid of a sum of values on ``grids``: their lows added, their finest common step, the
    steps spanned on it (a term of step 0 is a constant, which moves the values but spans
    nothing); None if a value is not on a grid, or one is spaced unknown. One value keeps its grid."""
    if len(grids) == 1:
        return grids[0]
    if not grids or None in grids or not all(g.spaced for g in grids):
        return None
    steps = [g.step for g in grids if g.step]
    step = reduce(lambda a, b: Fraction(math.gcd(a.numerator, b.numerator), math.lcm(a.denominator, b.denominator)),
                  steps) if steps else Fraction(1)
    return _Grid(sum(g.low for g in grids), step, sum(int(g.step * g.steps / step) for g in grids if g.step))


def _union_grid(grids: list) -> _Grid | None:
    """The grid of values drawn from either of ``grids`` (a cat): that grid, widest, if they share
    their low and step; else spaced unknown, with as many values as theirs together."""
    if not grids or None in grids:
        return None
    if len(set(grids)) == 1 or (len({(g.low, g.step) for g in grids}) == 1 and grids[0].spaced):
        return max(grids, key=lambda g: g.steps)
    return _Grid(None, None, sum(g.steps + 1 for g in grids) - 1)


def multiset_bits(bits: int | None, window: int, extra: int = 0) -> int | None:
    """Bits of the sum of ``window`` values from any set of ``2**bits + extra`` values, not equally
    spaced: there are at most C(n + window - 1, window) such sums. (``extra`` 1: a padding zero or
    an absent value, for windows that differ. Beyond a thousand in both the count and the window,
    the sum needs more than 32 bits: float.)"""
    if bits is None or bits >= FLOAT_BITS:
        return bits
    n = 2**bits + extra
    k = min(window, n - 1)
    return FLOAT_BITS if k > 1000 else min(FLOAT_BITS, math.ceil(math.log2(math.comb(n + window - 1, k))))


def _scaled(grid: _Grid | None, factor) -> _Grid | None:
    """A grid times a constant (a negative one turns it over); spaced unknown if the factor is
    (None, or not a finite number)."""
    if grid is None:
        return None
    factor = None if factor is None else _fraction(factor)
    if not grid.spaced or factor is None:
        return _unspaced(grid)
    low = grid.low * factor if factor >= 0 else (grid.low + grid.step * grid.steps) * factor
    return _Grid(low, grid.step * abs(factor), grid.steps)


def _input_info(bits: int) -> _Info:
    """The network input: ``bits`` bits, spaced as the model does not say."""
    return _Info(bits, source="input", grid=_Grid(None, None, 2**bits - 1))


def _unspaced(grid: _Grid | None) -> _Grid | None:
    """As many values, spaced unknown: after a clip or ReLU (whose bounds may lie off the grid), a
    batch norm (a scale per channel), or a constant that is not a finite number."""
    return None if grid is None else _Grid(None, None, grid.steps)


def _regular_pool(padding, ceil_mode: bool, divisor_override, dims, in_shape, out_shape, adaptive: bool) -> bool:
    """Whether every window of an average pool divides the same number of values: no padding, no
    partial windows at the edge, no divisor of its own, adaptive windows of one size."""
    if adaptive:
        return dims is not None and in_shape is not None and out_shape is not None and \
            all(size % out == 0 for size, out in zip(in_shape[-dims:], out_shape[-dims:]))
    pads = padding if isinstance(padding, (tuple, list)) else (padding,)
    return not any(pads) and not ceil_mode and divisor_override is None


def _merge(infos: list[_Info]) -> _Info:
    if not infos:
        return _Info(FLOAT_BITS, source="constant")
    precs = [i.prec for i in infos]
    owners = [i.owner for i in infos if i.owner is not None]
    return _Info(None if None in precs else max(precs), any(i.stoch for i in infos), max(owners) if owners else None,
                 any(i.averaged for i in infos), "+".join(dict.fromkeys(i.source for i in infos)),
                 _union_grid([i.grid for i in infos]))


def _joined(info: _Info) -> _Info:
    """A tensor joined from several (a cat) whose grids differ: one reader sees all their values,
    so the bits of their count."""
    if info.prec is None or info.prec >= FLOAT_BITS or info.grid is None or info.grid.spaced:
        return info
    return replace(info, prec=min(FLOAT_BITS, max(info.prec, math.ceil(math.log2(info.grid.steps + 1)))))


class _Walker:
    """Applies the precision / stochasticity / neuron rules one module or function at a time."""

    def __init__(self, input_bits: int):
        self.input_bits = input_bits
        self.layers: list[Layer] = []
        self.parts: list[list[NeuronPart]] = []
        self.unresolved: list[str] = []
        self.notes: list[str] = []
        self.calls: dict[str, int] = {}
        self.weights_held: set[int] = set()  # ids of the tensors the layers so far hold their weights in

    def note(self, text: str) -> None:
        if text not in self.notes:
            self.notes.append(text)

    def _add_part(self, info: _Info, part: NeuronPart, where: str) -> None:
        if info.owner is None:
            self.note(f"{where} acts before any layer the energy model prices (Linear, Conv); its cost is not counted")
        else:
            self.parts[info.owner].append(part)

    def call_name(self, name: str) -> str:
        count = self.calls.get(name, 0)
        self.calls[name] = count + 1
        return name if count == 0 else f"{name}[{count}]"

    def module(self, name: str, m: nn.Module, inputs: list[_Info], out_shape, in_shape=None) -> _Info:
        """``out_shape`` and ``in_shape`` (of the first input) are ``[N, C, ...]`` or None."""
        repeat = name in self.calls
        name = self.call_name(name)
        if is_weight_layer(m):
            held = _weight_sources(m)
            repeat = repeat or bool(held & self.weights_held)  # tied to an earlier layer's weight
            self.weights_held |= held
            if others := _other_weights(m):
                self.note(f"{name} ({type(m).__name__}): holds weights besides its .weight ({', '.join(others)}); "
                          "their EOs are not counted")
            inp = inputs[0] if inputs else _Info(None, source="unknown")
            return self._weight_layer(name, m, inp, out_shape, in_shape, repeat)
        inp = _merge(inputs)
        if _is_unit(m) and (inside := _weights_inside(m)):
            self.note(f"{name} ({type(m).__name__}): {'draws' if is_stochastic(m) else 'declares a precision'}, so "
                      f"it is priced as a neuron; the weights inside it ({', '.join(inside)}) are not counted "
                      "(a Linear or Conv of its own, outside it, would be)")
        if is_stochastic(m):
            prec = _precision(m, FLOAT_BITS)
            kind = "pbit" if isinstance(m, PBit) else "noise"
            self._add_part(inp, NeuronPart(kind, 1 if kind == "pbit" else prec, True, name), name)
            return _Info(prec, True, inp.owner, prec < FLOAT_BITS, name, _module_grid(m, prec))
        if getattr(m, "precision", None) is not None:
            prec = _precision(m)
            self._add_part(inp, NeuronPart("threshold", prec, inp.stoch, name), name)
            return _Info(prec, inp.stoch, inp.owner, False, name, _module_grid(m, prec))
        if isinstance(m, AVERAGE_POOLING_MODULES):
            dims = _pooling_dims(m)
            window = pooling_window(getattr(m, "kernel_size", None), dims, in_shape, out_shape)
            regular = _regular_pool(getattr(m, "padding", 0), getattr(m, "ceil_mode", False),
                                    getattr(m, "divisor_override", None), dims, in_shape, out_shape,
                                    adaptive=isinstance(m, _AdaptiveAvgPoolNd))
            return self.average_pool(inp, window, name, window if regular else None)
        if isinstance(m, _BatchNorm):  # the same precision; a per-channel scale: the step is not known any more
            return replace(inp, grid=_unspaced(inp.grid))
        if isinstance(m, TRANSPARENT_MODULES) or (isinstance(m, nn.Upsample) and m.mode == "nearest"):
            return inp  # nearest upsampling copies values: no operation, same precision
        if isinstance(m, nn.Sequential) and len(m) == 0:
            return inp  # an empty Sequential is the identity: a residual block's plain shortcut
        if isinstance(m, nn.Upsample):
            self.note(f"{name} (Upsample, {m.mode}): interpolated float output, its own cost is not counted")
            return _Info(FLOAT_BITS, inp.stoch, inp.owner, False, name)
        if isinstance(m, NONLINEAR_MODULES):
            self._add_part(inp, NeuronPart("nonlinearity", FLOAT_BITS, inp.stoch, name), name)
            return _Info(FLOAT_BITS, inp.stoch, inp.owner, False, name)
        if isinstance(m, CLIPPING_MODULES):
            self._add_part(inp, NeuronPart("compare", FLOAT_BITS, inp.stoch, name), name)
            keeps = inp.prec is not None and inp.prec < FLOAT_BITS  # clipping k-bit values keeps k bits
            return replace(inp, source=inp.source if keeps else name, grid=_unspaced(inp.grid))
        if isinstance(m, FLOAT_UNPRICED_MODULES):
            self.note(f"{name} ({type(m).__name__}): float output, its own cost is not counted")
            return _Info(FLOAT_BITS, inp.stoch, inp.owner, False, name)
        if any(True for _ in m.parameters(recurse=False)):
            self.note(f"{name} ({type(m).__name__}): layer type not supported, its EOs are not counted")
            return _Info(FLOAT_BITS, inp.stoch, inp.owner, False, name)
        held = ""
        if any(True for _ in m.parameters()):  # a torch layer the tracer keeps whole
            inside = sum(1 for sub in m.modules() if is_weight_layer(sub))
            held = "; the weights inside it are not counted" + (f" ({inside} Linear or Conv layers among them)"
                                                                if inside else "")
        self.note(f"{name} ({type(m).__name__}): unknown module, output precision unknown, not priced{held}")
        return _Info(None, inp.stoch, inp.owner, False, name)

    def _weight_layer(self, name: str, m: nn.Module, inp: _Info, out_shape, in_shape, repeat: bool) -> _Info:
        known = inp.prec is not None
        if not known:
            self.unresolved.append(name)
        b_a = inp.prec if known else FLOAT_BITS
        averaged = known and inp.averaged and b_a < FLOAT_BITS
        levels = max(1, inp.grid.steps) if averaged and inp.grid is not None else 0  # (a constant: one level)
        if averaged and not levels:
            self.note(f"{name}: its input sums values on grids of unknown ratio; layer aggregation prices their "
                      "average over T as a float")
        n = fan_in(m, in_shape, out_shape)
        eos = math.prod(out_shape)  # of one input: all, also where dimension 0 is not the batch (time folded in)
        kind = "linear" if isinstance(m, nn.Linear) else \
            f"conv{'-transpose' if isinstance(m, _ConvTransposeNd) else ''}{len(m.kernel_size)}d"
        self.layers.append(Layer(
            name=name, kind=kind, module_type=type(m).__name__, fan_in=n, eos=int(eos), weights=int(m.weight.numel()),
            weight_bits=layer_weight_bits(m), activation_bits=int(b_a), activation_bits_known=known,
            activation_source=inp.source, stochastic_input=inp.stoch,
            averaged_input=averaged, averaged_levels=levels, repeat_call=repeat,
        ))
        self.parts.append([])
        return _Info(FLOAT_BITS, inp.stoch, len(self.layers) - 1, False, name)

    def quantiser(self, label: str, inp: _Info, bits: int) -> _Info:
        """pdnn's k-bit rounding (``quantize_levels``, which ``quantized_activation`` calls after its
        tanh) called in a forward: ``bits`` threshold comparisons, as the ``Quantize`` module is
        priced, its output on ``2**bits`` levels spanning [-1, 1]."""
        self._add_part(inp, NeuronPart("threshold", bits, inp.stoch, label), label)
        steps = 2**bits - 1
        return _Info(bits, inp.stoch, inp.owner, False, label, _Grid(Fraction(-1), Fraction(2, steps), steps))

    def average_pool(self, inp: _Info, window: int | None, where: str, divisor: int | None) -> _Info:
        """A pool of ``window`` values carries their sum's width at each position: :func:`pooled_bits`
        for values on a grid, :func:`multiset_bits` for values of unknown spacing. On the grid,
        ``window`` times the steps, at the step divided by ``divisor`` (``window`` for a mean, 1 for
        a sum; None where windows differ in what they divide by: padding, partial or uneven windows,
        whose positions then lie on grids of unknown ratio)."""
        if window is None:
            self.note(f"{where}: pooling window unknown, output precision unknown")
            return _Info(None, inp.stoch, inp.owner, False, where)
        if inp.grid is None or not inp.grid.spaced:  # (windows that differ: a padding zero is one more value)
            return replace(inp, prec=multiset_bits(inp.prec, window, 0 if divisor else 1), grid=None)
        g = inp.grid  # the sum of `window` values from low up, divided by `divisor`
        grid = _Grid(g.low * window / divisor, g.step / divisor, g.steps * window) if divisor else \
            _Grid(None, None, g.steps * window)  # (each position's own values: as many, spaced unknown)
        return replace(inp, prec=pooled_bits(inp.prec, window), grid=grid)

    def function(self, label: str, target, is_method: bool, inputs: list[_Info], number=None, leading=False,
                 rounding=None) -> _Info:
        """``number``: the call's numeric argument (a scale's constant), ``leading`` if it comes
        first (``3 / h``); ``rounding``: ``torch.div``'s."""
        inp = _merge(inputs)
        shape_ops, nonlin, clip, sums, scales = ((_SHAPE_METHODS, _NONLINEAR_METHODS, _CLIPPING_METHODS,
                                                  _SUM_METHODS, _SCALE_METHODS) if is_method else
                                                 (_SHAPE_FUNCTIONS, _NONLINEAR_FUNCTIONS, _CLIPPING_FUNCTIONS,
                                                  _SUM_FUNCTIONS, _SCALE_FUNCTIONS))
        if target in shape_ops:
            return _joined(inp) if len(inputs) > 1 else inp
        if target in nonlin:
            self._add_part(inp, NeuronPart("nonlinearity", FLOAT_BITS, inp.stoch, label), label)
            return _Info(FLOAT_BITS, inp.stoch, inp.owner, False, label)
        if target in clip:
            self._add_part(inp, NeuronPart("compare", FLOAT_BITS, inp.stoch, label), label)
            return replace(inp, grid=_unspaced(inp.grid))  # clipping keeps k bits, and an averaged value its width
        if target in sums:
            subtracts = target in (operator.sub, operator.isub, torch.sub, "sub")
            if len(inputs) >= 2 and inp.prec is not None and inp.prec < FLOAT_BITS:
                grid = _sum_grid([inputs[0].grid] + [_scaled(i.grid, -1) if subtracts else i.grid for i in inputs[1:]])
                # at least one bit more; at most the terms' bits together (n1 n2 values); on a grid, its span's
                together = sum(i.prec for i in inputs)
                span = math.ceil(math.log2(grid.steps + 1)) if grid is not None and grid.spaced else together
                bits = max(inp.prec + 1, min(span, together))
                return _Info(min(FLOAT_BITS, bits), inp.stoch, inp.owner, inp.averaged, label, grid)
            if len(inputs) >= 2:
                return replace(inp, averaged=False, source=label)
            shift = _fraction(number) if number is not None else None  # (h + c, h - c, c - h: moves the low)
            grid = _scaled(inp.grid, -1) if subtracts and leading else inp.grid
            if grid is not None and grid.spaced and shift is not None:
                return replace(inp, grid=_Grid(grid.low + (-shift if subtracts and not leading else shift), grid.step,
                                               grid.steps))
            return replace(inp, grid=grid if shift is not None or number is None else _unspaced(grid))
        if target in scales and len(inputs) == 1:  # scaling by a constant folds into the next layer's weights
            if target in (operator.neg, "neg"):
                return replace(inp, grid=_scaled(inp.grid, -1))
            factor = _fraction(number) if number is not None and number != 0 else None
            if target in (operator.truediv, operator.itruediv, torch.div, "div"):  # (3 / h, or rounded: no scale)
                factor = None if leading or rounding is not None or factor is None else 1 / factor
            return replace(inp, grid=_scaled(inp.grid, factor))
        self.note(f"{label}: unknown operation, not priced; output precision unknown")
        return _Info(None, inp.stoch, inp.owner, False, label)

    def network(self, input_shape, method: str) -> Network:
        layers = [replace(layer, neuron=tuple(parts)) for layer, parts in zip(self.layers, self.parts)]
        return Network(layers, tuple(input_shape), self.input_bits, method, self.unresolved, self.notes)


# the tensors a weight is computed from, under torch.nn.utils' weight_norm and spectral_norm
_WEIGHT_SOURCES = {"weight", "weight_g", "weight_v", "weight_orig"}


def _weight_sources(m: nn.Module) -> set[int]:
    """Ids of the tensors a layer's ``.weight`` is stored in: the weight itself, or what it is
    computed from (a parametrization's originals, not the parametrization's own tensors, which
    layers may share; weight_norm's ``weight_g`` and ``weight_v``). A computed ``.weight`` is a new
    tensor at every access, freed at once, so its id is soon another layer's: two layers share a
    weight when they share these."""
    if parametrize.is_parametrized(m, "weight"):
        stored = m.parametrizations.weight
        return {id(t) for t in (*stored.parameters(recurse=False), *stored.buffers(recurse=False))}
    stored = {id(t) for name, t in (*m.named_parameters(recurse=False), *m.named_buffers(recurse=False))
              if name in _WEIGHT_SOURCES}
    return stored or {id(m.weight)}


def _weights_inside(unit: nn.Module) -> list[str]:
    """The weights a unit priced as a whole holds: its Linear and Conv layers' (a ``Linear(8, 1)``
    too), and any tensor of its own with two dimensions above 1 (not a per-channel gain)."""
    layers = [f"{name}.weight" for name, sub in unit.named_modules() if sub is not unit and is_weight_layer(sub)]
    own = [name for name, p in unit.named_parameters() if sum(d > 1 for d in p.shape) >= 2 and name not in layers]
    return layers + own


def _other_weights(m: nn.Module) -> list[str]:
    """Weight tensors (dim >= 2) a Linear or Conv layer holds besides its ``.weight`` and what
    computes it (a parametrization's, weight_norm's): a subclass's second projection, a LoRA
    adapter's factors. The layer is costed from ``.weight`` alone, so these are not."""
    return [name for name, p in m.named_parameters() if p.dim() >= 2 and name not in _WEIGHT_SOURCES
            and not name.startswith("parametrizations.weight.")]


def _is_unit(m: nn.Module) -> bool:
    """Modules priced as a whole, whatever they contain (e.g. a weight quantiser inside a layer)."""
    return is_weight_layer(m) or is_stochastic(m) or getattr(m, "precision", None) is not None


def _priced_whole(m: nn.Module) -> bool:
    """Traced into containers; units and childless modules stay opaque, as torch layers and pdnn
    modules do (see :mod:`pdnn.tracing`)."""
    return _is_unit(m) or next(m.children(), None) is None


def _leaves(module: nn.Module) -> list[nn.Module]:
    """The modules the hook walk follows: units and childless modules, not what is inside a unit."""
    if _is_unit(module) or next(module.children(), None) is None:
        return [module]
    return [leaf for child in module.children() for leaf in _leaves(child)]


_IN_PLACE_FUNCTIONS = {operator.iadd, operator.isub, operator.imul, operator.itruediv}


_VALUE_KEEPING = {"requires_grad_", "detach_", "share_memory_"}  # in place, values unchanged


def _out_of_place(node: fx.Node):
    """For an in-place operation that changes values (``out.relu_()``, ``torch.exp_(out)``,
    ``out.add_(h)``): its out-of-place form, which prices it (a method's name, or torch's
    function); else None."""
    if node.op == "call_method":
        name = node.target
        return name[:-1] if name.endswith("_") and not name.startswith("_") and \
            name not in _VALUE_KEEPING else None
    name = getattr(node.target, "__name__", "")
    if name.endswith("_") and not name.startswith("_") and name not in _VALUE_KEEPING:
        for namespace in (torch, torch_F):
            if getattr(namespace, name, None) is node.target:
                return getattr(namespace, name[:-1], None)
    return None


def _argument(node: fx.Node, index: int, name: str, default=None):
    """A call's argument, given by position or by name."""
    return node.args[index] if len(node.args) > index else node.kwargs.get(name, default)


def _defaults(model: nn.Module) -> dict:
    """The arguments of ``forward`` after the input that have a default other than a tensor
    (``mask=None``, ``return_features=False``): a call with one input runs with these, so the trace
    does too (a placeholder for each read as a second input, and was refused)."""
    try:
        parameters = list(inspect.signature(model.forward).parameters.values())[1:]
    except (TypeError, ValueError):  # (a forward without a signature Python can read)
        return {}
    return {p.name: p.default for p in parameters if p.default is not inspect.Parameter.empty
            and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and not isinstance(p.default, torch.Tensor)}


def _analyze_fx(model: nn.Module, x: torch.Tensor, walker: _Walker) -> None:
    gm = fx.GraphModule(model, Tracer(_priced_whole).trace(model, concrete_args=_defaults(model) or None))
    with contextlib.redirect_stderr(io.StringIO()):  # fx prints its own report of a shape error, raised below
        ShapeProp(gm).propagate(x)
    modules = dict(gm.named_modules())
    infos: dict[fx.Node, _Info] = {}
    placeholders = 0
    unused = steering_gradients_only(gm.graph)
    for node in gm.graph.nodes:
        if node in unused:
            continue
        meta = node.meta.get("tensor_meta")
        tensor_inputs = [a for a in node.all_input_nodes if a in infos]
        ins = [infos[a] for a in tensor_inputs]
        if node.op == "placeholder":
            if node.args and placeholders:  # a later argument left at its default (_defaults): its value fixed
                continue
            placeholders += 1
            if placeholders > 1:
                raise AnalysisError("energy accounting supports models with one input tensor")
            infos[node] = _input_info(walker.input_bits)
        elif node.op == "call_module":
            shape = meta.shape if isinstance(meta, TensorMetadata) else None
            first = node.args[0].meta.get("tensor_meta") if node.args and isinstance(node.args[0], fx.Node) else None
            infos[node] = walker.module(str(node.target), modules[node.target], ins, shape,
                                        first.shape if isinstance(first, TensorMetadata) else None)
        elif node.op in ("call_function", "call_method"):
            if meta is None:  # not a tensor (x.size(0), ...): no precision to carry
                continue
            label = node.target if node.op == "call_method" else getattr(node.target, "__name__", str(node.target))
            target = _out_of_place(node)
            if target in ("copy", "set") and len(node.args) > 1 and node.args[1] in infos:
                infos[node] = infos[node.args[1]]  # the source's values, computed by nothing
            elif node.target in _POOLING_FUNCTION_DIMS or node.target in _REDUCTIONS:
                tensor = node.args[0] if node.args else node.kwargs.get("input")  # (torch.sum(input=h, ...))
                source = tensor.meta.get("tensor_meta") if isinstance(tensor, fx.Node) else None
                in_shape = source.shape if isinstance(source, TensorMetadata) else None
                out_shape = meta.shape if isinstance(meta, TensorMetadata) else None
                if node.target in _REDUCTIONS:  # the values summed into one output: the sizes' ratio
                    known = in_shape is not None and out_shape is not None
                    window = math.prod(in_shape) // max(1, math.prod(out_shape)) if known else None
                    divisor = window if node.target in (torch.mean, "mean") else 1
                else:
                    dims, adaptive = _pooling_dims(node.target), node.target in _ADAPTIVE_AVERAGE_POOLING_FUNCTIONS
                    window = pooling_window(None if adaptive else _argument(node, 1, "kernel_size"), dims, in_shape,
                                            out_shape)
                    regular = _regular_pool(_argument(node, 3, "padding", 0), _argument(node, 4, "ceil_mode", False),
                                            _argument(node, 6, "divisor_override"), dims, in_shape, out_shape, adaptive)
                    divisor = window if regular else None
                infos[node] = walker.average_pool(_merge(ins), window, f"{label} ({node.name})", divisor)
            elif node.target is _nearest_levels:  # pdnn's k-bit rounding (one call: torch.fx.wrap)
                steps = int(_argument(node, 1, "steps"))
                infos[node] = walker.quantiser(f"{label} ({node.name})", _merge(ins), steps.bit_length())
            elif node.target is straight_through and _argument(node, 0, "value") in infos:
                infos[node] = infos[_argument(node, 0, "value")]  # its value, exactly (the surrogate steers the
                #                                                   gradient only)
            elif draws_node(node, modules):  # what depends on it runs once per sample, as SampledModel runs it
                dropout = node.target in DROPOUT_FUNCTIONS  # keeps its input's precision; another draw has its own
                walker.note(f"{label} ({node.name}): a random draw, not priced; what depends on it is priced once "
                            "per sample" + ("" if dropout else "; output precision unknown"))
                merged = _merge(ins)
                infos[node] = replace(merged, stoch=True) if dropout else _Info(None, True, merged.owner, False, label)
            else:
                numbers = [i for i, a in enumerate(node.args)
                           if isinstance(a, (int, float)) and not isinstance(a, bool)]
                adds = (target or node.target) in (_SUM_METHODS if node.op == "call_method" else _SUM_FUNCTIONS)
                alpha, other = node.kwargs.get("alpha") if adds else None, _argument(node, 1, "other")
                if adds and alpha is None and len(node.args) == 3 and isinstance(node.args[1], (int, float)) and \
                        isinstance(node.args[2], fx.Node):  # (the old torch.add(a, 2, b))
                    alpha, other = node.args[1], node.args[2]
                if alpha is not None:  # (torch.add(a, b, alpha=2): a + 2b) scales its `other`
                    ins = [replace(infos[a], grid=_scaled(infos[a].grid, alpha)) if a is other else infos[a]
                           for a in tensor_inputs]
                infos[node] = walker.function(f"{label} ({node.name})", target or node.target,
                                              node.op == "call_method", ins, node.args[numbers[0]] if numbers else None,
                                              numbers[:1] == [0], node.kwargs.get("rounding_mode"))
            changed = node.args[0] if node.args else node.kwargs.get("input")  # (F.relu_(input=out))
            if (target or node.target in _IN_PLACE_FUNCTIONS) and changed in infos:
                infos[changed] = infos[node]  # later readers of the tensor it changed read the change
        elif node.op == "get_attr":
            infos[node] = _Info(FLOAT_BITS, source=str(node.target))
    # (a layer left out of the graph: behind a branch the trace took the other way, as a Python coin)
    used = {m for n in gm.graph.nodes if n.op == "call_module" for m in modules[n.target].modules()}  # (a layer
    for n in gm.graph.nodes:  # called whole uses its own); weights read as tensors by a function are named with it
        owner = str(n.target).rpartition(".")[0]
        if n.op == "get_attr" and owner:  # (a constant fx made lies on the graph module itself)
            with contextlib.suppress(AttributeError):
                used.add(model.get_submodule(owner))
    _note_weights_not_called(model, used, walker)


def _analyze_hooks(model: nn.Module, x: torch.Tensor, walker: _Walker) -> None:
    """Follow tensors by identity from the module that produced them to the module reading them;
    where that fails (a tensor computed outside a module), and for what a module draws inside, a
    draw shows as a difference from the same call in a forward under another seed
    (:func:`_other_draws`): the walk's forward runs under seed 1, that one under seed 2."""
    names = {m: name for name, m in model.named_modules()}
    leaves = list(dict.fromkeys(_leaves(model)))
    other = _other_draws(model, x, leaves)
    produced: dict[int, _Info] = {id(x): _input_info(walker.input_bits)}
    keep: list[torch.Tensor] = [x]  # holds produced tensors alive so their ids stay unique
    state = {"calls": 0, "last_layer": None, "parted": False}
    called: set[nn.Module] = set()

    def hook(module, inputs, output):
        called.add(module)
        tensors = [t for t in inputs if isinstance(t, torch.Tensor)]
        out = output if isinstance(output, torch.Tensor) else None
        seen = other[state["calls"]] if state["calls"] < len(other) else None
        state["calls"] += 1
        # (once this forward calls another module than the other one did, a draw chose its path:
        # from there on everything differs)
        state["parted"] = state["parted"] or seen is None or seen[0] is not module or len(seen[1]) != len(tensors)
        matched = not state["parted"]
        inputs_vary = not matched or not all(map(_same_values, tensors, seen[1]))
        output_varies = not matched or not _same_values(out, seen[2])
        ins = []
        for t in inputs:
            if not isinstance(t, torch.Tensor):
                continue
            if id(t) in produced:
                ins.append(produced[id(t)])
            else:
                repeated = ("it differs between two forwards under two seeds of torch's generator: priced once per "
                            "sample" if matched and inputs_vary else "the same under two seeds of torch's generator: "
                            "shared by the samples" if matched else "two forwards under two seeds of torch's "
                            "generator called different modules before it (a draw chose the path): priced once per "
                            "sample")
                walker.note(f"{names[module]}: its input was computed outside a module (forward hooks cannot "
                            f"follow it); precision unknown, and {repeated}")
                ins.append(_Info(None, inputs_vary, state["last_layer"], False, "unknown"))
        if not matched:  # (what ran before it may differ from sample to sample)
            ins = [replace(i, stoch=True) for i in ins]
        shape = tuple(out.shape) if out is not None else None
        first = next((t for t in inputs if isinstance(t, torch.Tensor)), None)
        info = walker.module(names[module], module, ins, shape, tuple(first.shape) if first is not None else None)
        if output_varies and not is_stochastic(module):
            if not inputs_vary:
                walker.note(f"{names[module]} ({type(module).__name__}): its output differs between two forwards "
                            "under two seeds of torch's generator where its input does not, so it draws inside (not "
                            "priced): what depends on it is priced once per sample")
            info = replace(info, stoch=True)
        if is_weight_layer(module):
            state["last_layer"] = len(walker.layers) - 1
        if out is not None:
            produced[id(out)] = info
            keep.append(out)

    handles = [m.register_forward_hook(hook) for m in leaves]
    try:
        with _seeded(x, 1):  # (seeded: the totals do not follow the caller's draws)
            model(x)
    finally:
        for h in handles:
            h.remove()
    _note_weights_not_called(model, called, walker)


def _note_weights_not_called(model: nn.Module, called: set[nn.Module], walker: _Walker) -> None:
    """A note for each module whose weights the walk did not count (:func:`_weights_not_called`)."""
    for name, m in _weights_not_called(model, called):
        where = f"{name} ({type(m).__name__})" if name else f"{type(m).__name__} itself"
        walker.note(f"{where}: holds weights that no module call was seen to use (a layer using them as tensors, "
                    "as nn.MultiheadAttention does, or not used in this forward); their EOs are not counted")


def _other_draws(model: nn.Module, x: torch.Tensor, leaves: list[nn.Module]) -> list[tuple]:
    """``(module, tensor inputs, output)`` of each call of a leaf module in a forward of ``model``
    on ``x`` under seed 2 of torch's generator (that of ``x``'s device), beside which the walk's
    forward under seed 1 shows what a draw the hooks cannot see changes (``x + torch.randn_like(x)``
    between modules, a module of the user's that draws inside); a forward that reseeds changes
    nothing. The model's state (a state carried from call to call would differ otherwise) and the
    random state are put back after it, so a draw a forward keeps for later calls (a permutation
    drawn at the first call) is drawn anew by the walk's, and read as a draw. Lazy modules are sized by a forward before, whose other effects are put
    back too (a sized module keeps its sizes: put back, they would be left beside sized weights)."""
    if unsized(model):
        _forward_put_back(model, x, seed=1)
    calls: list = []

    def record(module, inputs, output):
        calls.append((module, [t.clone() for t in inputs if isinstance(t, torch.Tensor)],
                      output.clone() if isinstance(output, torch.Tensor) else None))

    _forward_put_back(model, x, seed=2, hook=record, leaves=leaves)
    return calls


def _forward_put_back(model: nn.Module, x: torch.Tensor, seed: int, hook=None, leaves: list[nn.Module] = ()) -> None:
    """A forward of ``model`` on ``x`` under ``seed``, ``hook`` on each of ``leaves``, with the
    model's state put back after it."""
    state = ModelState(model)
    handles = [m.register_forward_hook(hook) for m in leaves]
    try:
        with _seeded(x, seed):
            model(x)
    finally:
        for h in handles:
            h.remove()
        state.restore()


@contextlib.contextmanager
def _seeded(x: torch.Tensor, seed: int):
    """Torch's generators of ``x``'s device (the CPU's, and a GPU's for an input on it) seeded
    with ``seed`` for a while, then as they were (``torch.manual_seed`` would seed every GPU's)."""
    with torch.random.fork_rng(devices=[x.device] if x.device.type == "cuda" else []):
        torch.default_generator.manual_seed(seed)
        if x.device.type == "cuda":
            torch.cuda.default_generators[x.device.index or 0].manual_seed(seed)
        yield


def _same_values(a: torch.Tensor | None, b: torch.Tensor | None) -> bool:
    """Equal shapes and values, NaN where the other has NaN (sparse and quantized ones compared
    as the dense values they stand for)."""
    if a is None or b is None:
        return a is b
    a, b = (t.dequantize() if t.is_quantized else t.to_dense() if t.layout != torch.strided else t for t in (a, b))
    return a.shape == b.shape and bool(((a == b) | (a.isnan() & b.isnan())).all())


def _weights_not_called(model: nn.Module, called: set[nn.Module]) -> list[tuple[str, nn.Module]]:
    """The outermost modules holding weight tensors (dim >= 2) that the hook walk never saw
    called, and that no called unit holds: what a count of the called layers leaves out."""
    missed: list[tuple[str, nn.Module]] = []
    for name, m in model.named_modules():
        inside = [prefix for prefix, _ in missed if name.startswith(prefix + ".")]
        if m in called or inside or any(u in called and _is_unit(u) for u in _ancestors(model, name)):
            continue
        if any(p.dim() >= 2 for p in m.parameters(recurse=False)):
            missed.append((name, m))
    return missed


def _ancestors(model: nn.Module, name: str) -> list[nn.Module]:
    parts = name.split(".") if name else []
    return [model.get_submodule(".".join(parts[:i])) for i in range(len(parts))]


def _walk(model: nn.Module, x: torch.Tensor, input_bits: int) -> tuple[_Walker, str]:
    """The walker of ``model`` run on ``x``, and how it was walked: traced with torch.fx, or where
    that fails, with forward hooks; an :class:`AnalysisError` where the model does not run on ``x``
    (caused by the model's own error)."""
    walker = _Walker(input_bits)
    try:
        _analyze_fx(model, x, walker)
        return walker, "torch.fx"
    except AnalysisError:
        raise
    except Exception as err:  # fx raises many types for untraceable code
        walker = _Walker(input_bits)
        walker.note(f"torch.fx could not trace the model ({why_untraceable(err)}); "
                    "walked with forward hooks instead")
    try:
        _analyze_hooks(model, x, walker)
    except AnalysisError:
        raise
    except Exception as run_err:  # a forward of several inputs, or one that needs a batch of two
        raise AnalysisError(f"{type(model).__name__} does not run on inputs of shape {tuple(x.shape[1:])}: "
                            f"{str(run_err) or type(run_err).__name__}") from run_err  # (a StopIteration says nothing)
    return walker, "forward hooks"


def analyze(model: nn.Module, input_shape, input_bits: int = 8) -> Network:
    """Read the energy-relevant structure of ``model`` for inputs of shape ``input_shape``
    (without the batch dimension, e.g. ``(3, 32, 32)``).

    ``input_bits`` is the precision of the network input (8 for 8-bit pixels). The model runs
    once, in eval mode, on one zero input (where fx cannot trace it, once more before, under
    another seed, whose effects on the model's state are undone: :func:`_other_draws`); its
    training flags and torch's random state are restored afterwards.

    Example:
        >>> from pdnn.models import create
        >>> net = analyze(create("mlp", neuron="pbit", weight_bits=4), (1, 28, 28))
        >>> [(l.fan_in, l.eos, l.weight_bits, l.activation_bits) for l in net.layers]
        [(784, 256, 4, 8), (256, 256, 4, 1), (256, 10, 4, 1)]
    """
    if not isinstance(model, nn.Module):
        raise UsageError(f"analyze expects an nn.Module, got {type(model).__name__}")
    wrapped = isinstance(model, SampledModel)
    if wrapped:  # (its forward, T passes folded, is not the network; T is given to the energy model)
        model = model.model
    if is_weight_layer(model):  # (the tracer traces into the module it is given: a bare layer was a call)
        model = nn.Sequential(model)
    shape = positive_ints("input_shape", input_shape, "positive integers without the batch dimension")
    check_bit_width(input_bits, "input_bits")
    param = next(model.parameters(), None)
    device = param.device if param is not None else "cpu"
    x = torch.zeros(1, *shape, device=device,
                    dtype=param.dtype if param is not None and param.is_floating_point() else torch.float32)
    cuda = [x.device] if x.device.type == "cuda" else []
    with evaluated(model), torch.no_grad(), torch.random.fork_rng(devices=cuda):  # (the caller's draws go on)
        try:
            walker, method = _walk(model, x, input_bits)
        except AnalysisError as err:  # token ids into an embedding: integer inputs
            if not isinstance(err.__cause__, Exception) or not any(
                    isinstance(m, (nn.Embedding, nn.EmbeddingBag)) for m in model.modules()):
                raise
            try:
                walker, method = _walk(model, torch.zeros(1, *shape, device=device, dtype=torch.long), input_bits)
            except AnalysisError:
                raise err from err.__cause__  # (the float input's failure is the one to read)
            walker.note("read with integer inputs (token ids): the model does not run on float ones")
    if wrapped:
        walker.note("read the network a SampledModel samples; the number of samples T is the energy model's")
    floats = sorted({str(p.dtype).removeprefix("torch.") for p in model.parameters()
                     if p.is_floating_point() and p.dtype != torch.float32})
    if floats:  # (a bfloat16 baseline's energy would be overstated unsaid)
        walker.note(f"the model's weights are {' and '.join(floats)}: float weights, activations and arithmetic are "
                    "priced as 32-bit floats whatever the tensors' dtype")
    if not walker.layers:
        found = "; ".join(walker.notes) or "nothing"
        raise AnalysisError(f"{type(model).__name__} has no Linear or Conv layer to account for (found: {found})")
    return walker.network(shape, method)
