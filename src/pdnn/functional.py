"""Pure functions for p-bit sampling, quantisation and straight-through gradients.

A p-bit is a binary stochastic neuron whose *mean* is a deterministic activation:

* bipolar:  ``b = sign(tanh(beta*x) - u)``,  ``u ~ U(-1, 1)``,  ``b in {-1, +1}``,
  ``P(b = +1) = (1 + tanh(beta*x)) / 2`` so ``E[b] = tanh(beta*x)``;
* unipolar: ``b = 1[sigmoid(beta*x) > u]``, ``u ~ U(0, 1)``, ``b in {0, 1}``,
  ``E[b] = sigmoid(beta*x)``.

Gradients flow through the random bit by a straight-through estimator (STE). The forward value
is always exactly the bit; the backward pass uses the derivative of a *surrogate*:

* ``"mean"``: the mean function (``tanh(beta*x)`` or ``sigmoid(beta*x)``) -- the default;
* ``"identity"``: ``x`` itself (gradient 1);
* ``"clipped"``: ``clamp(x, -1, 1)`` (gradient ``1[|x| <= 1]``).

On the CPU the bits come from :mod:`pdnn.pbit_kernel`, one fused pass with a counter-based
stream keyed by the generator; elsewhere (other devices, other dtypes, ``torch.func`` transforms,
``torch.compile``) from torch ops on 16-bit thresholds (:func:`draw_thresholds`). Both decide
``P(b = 1)`` exactly to the 16-bit grid.

For p-bits the estimator is one autograd function (the forward returns the bit, the backward
multiplies by ``ds/dx``); for the deterministic quantisers it is ``q + (s - s.detach())``, whose
bracket is exactly zero in the forward pass. No input is modified in place.

NaN handling: a NaN pre-activation propagates as NaN to the output instead of silently becoming a
bit, without any host-device synchronisation.
"""
from __future__ import annotations

import math

import torch
from torch.autograd import forward_ad

from . import pbit_kernel, stacked_passes
from .checks import as_real, integer, is_boolean, one_of, positive_int, shown
from .errors import UsageError

MODES = ("bipolar", "unipolar")
MAX_BITS = 8  # the widest k-bit activation or weight
STES = ("mean", "identity", "clipped")
# b = 1 iff (r - HALF_WAY) + 2**16 * p >= 0, r uniform on [-2**15, 2**15): P(b = 1) is p rounded to
# the nearest 2**-16
HALF_WAY = 2**15 - 0.5


def check_beta(beta: float, what: str = "beta") -> float:
    """Return ``beta`` as a float, or raise (naming it ``what``) if it is not a finite positive
    number in range. A tensor that requires a gradient is refused: it would be read once as a
    number and never learn."""
    low, high = pbit_kernel.ESTIMATED_BETAS
    if type(beta) is float and low <= beta <= high:  # the common case, first: every p-bit call checks
        return beta
    if isinstance(beta, torch.Tensor) and beta.requires_grad:
        raise UsageError(f"{what} must be a fixed number; a learnable temperature is not supported, got a tensor "
                         f"that requires grad ({beta.detach().tolist()!r})")
    if isinstance(beta, torch.Tensor) and beta.numel() != 1:
        raise UsageError(f"{what} must be one number for the whole call, got a tensor of shape {tuple(beta.shape)}")
    try:
        value = as_real(beta)
    except RuntimeError:  # torch.func.vmap over a beta per example: no one value to read
        raise UsageError(f"{what} must be one number for the whole call, got a tensor whose value cannot be "
                         "read here (a beta per example under torch.func.vmap?)") from None
    if value is None:
        raise UsageError(f"{what} must be a positive number, got {shown(beta)}")
    if not math.isfinite(value) or value <= 0:
        raise UsageError(f"{what} must be a finite number > 0, got {shown(beta)}")
    if not low <= value <= high:  # beyond, float32 thresholds and gradients overflow or vanish
        raise UsageError(f"{what} must be in [{low:g}, {high:g}], where a p-bit's float32 thresholds and gradient "
                         f"stay finite and exact, got {shown(beta)}")
    return value


def check_bits(bits: int, what: str, allow_float: bool = False) -> int:
    """Validate a bit width: 1..8, or also 32 (float) when ``allow_float``; returned as an ``int``
    (numpy's and torch's integer scalars too: a bit width read from an array)."""
    number = integer(bits)
    if number is not None and (1 <= number <= MAX_BITS or (allow_float and number == 32)):
        return number
    expected = f"an integer 1..{MAX_BITS}" + (" or 32 (float)" if allow_float else "")
    raise UsageError(f"{what} must be {expected}, got {shown(bits)}")


def mean_activation(x: torch.Tensor, mode: str = "bipolar", beta: float = 1.0) -> torch.Tensor:
    """The expectation of a p-bit: ``tanh(beta*x)`` (bipolar) or ``sigmoid(beta*x)`` (unipolar).
    A number ``beta`` is checked as a p-bit's is; a tensor (per element, learnt, under
    ``torch.func``) is used as given."""
    one_of("mode", mode, MODES)
    if not isinstance(beta, torch.Tensor) or is_boolean(beta):  # a tensor temperature broadcasts as given
        beta = check_beta(beta)  # (a flag is refused)
    return torch.tanh(beta * x) if mode == "bipolar" else torch.sigmoid(beta * x)


@torch.fx.wrap
def straight_through(value: torch.Tensor, surrogate: torch.Tensor) -> torch.Tensor:
    """Forward ``value`` exactly, backward the gradient of ``surrogate``.

    ``surrogate - surrogate.detach()`` is exactly 0 for finite numbers and NaN for NaN, so NaN
    inputs propagate to the output as well. One call in a torch.fx trace, whose value the energy
    analysis takes to be ``value``'s (as three operations, a sum with a float, it was priced as a
    float: the layer after a k-bit ``quantized_activation`` as if its input were 32 bits).
    """
    return value + (surrogate - surrogate.detach())


def check_generator(generator, x: torch.Tensor, owner: str) -> None:
    """A generator for draws like ``x``: None, or a ``torch.Generator`` on ``x``'s kind of device."""
    if generator is None:
        return
    if not isinstance(generator, torch.Generator):
        raise UsageError(f"{owner}.generator must be a torch.Generator or None, got {shown(generator)}")
    if isinstance(x, torch.Tensor) and generator.device.type != ("cpu" if x.is_cpu else x.device.type):  # (is_cpu:
        # cheaper, on every p-bit call; what is no tensor is named by the draw's own check)
        raise RuntimeError(f"{owner} generator is on {generator.device} but the input is on {x.device}; "
                           "create the generator on the input's device")


def check_floating(x, owner: str) -> None:
    """Raise a ``TypeError`` naming ``owner`` unless ``x`` is a floating-point tensor (a list, an
    array or a string has no bits to draw: say so, not that it lacks ``is_floating_point``)."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{owner} expects a floating-point tensor, got {type(x).__name__} {shown(x)}")
    if not x.is_floating_point():
        raise TypeError(f"{owner} expects a floating-point tensor, got dtype {x.dtype}")


def generator_keyword(generator: torch.Generator | None) -> dict:
    """``{"generator": generator}``, or nothing for ``None``: torch's draw overloads that take a
    generator accept no symbolic shape, so under ``torch.compile`` a draw that named
    ``generator=None`` failed once the batch size changed."""
    return {} if generator is None else {"generator": generator}


def draw_thresholds(shape, generator: torch.Generator | None, device) -> torch.Tensor:
    """Uniform random 16-bit integers in [-2**15, 2**15) of ``shape``, as ``int16``: a p-bit's
    threshold, so that its P(b = 1) is exact to 2**-16.

    A p-bit needs only a threshold of a few bits, as a hardware p-bit compares against an LFSR
    word: one 64-bit draw of the Mersenne Twister serves four p-bits, about ten times cheaper
    than a float per p-bit, with no conversion pass. Inside a ``torch.func`` transform the
    draw is one ``torch.randint``, which ``vmap`` knows how to batch (``randomness=...``). While
    ``torch.compile``, ``torch.export`` or ``torch.jit.trace`` traces, it is the top 16 of the 24
    random bits of a float32 ``torch.rand``: the view of 64-bit words as 16-bit ones, traced by
    ``torch.compile`` for one shape, failed on the next (a storage-size error once the batch size
    changed), ``torch.jit.trace`` cannot record a view that changes the dtype, ``torch.randint``
    takes no symbolic shape, and an exported ``random_(from, to)`` is a Python syntax error.
    """
    if torch.compiler.is_compiling() or torch.jit.is_tracing():
        uniform = torch.rand(tuple(shape), device=device, **generator_keyword(generator))
        return uniform.mul_(2**16).floor_().sub_(2**15).to(torch.int16)  # k * 2**-24 -> k >> 8
    if torch._C._are_functorch_transforms_active():
        return torch.randint(-(2**15), 2**15, tuple(shape), dtype=torch.int16, generator=generator,
                             device=device)
    count = math.prod(shape)
    words = torch.empty((count + 3) // 4, dtype=torch.int64, device=device)
    words.random_(-(2**63), None, generator=generator)  # the full 64-bit range, every bit random
    return words.view(torch.int16)[:count].view(shape)


class _PBitFunction(torch.autograd.Function):
    """Forward: the bits for given thresholds (and ``P(b = 1)``, kept for the backward pass);
    backward: the STE.

    One autograd function rather than ``bits + (s - s.detach())``: sampling is memory-bound,
    and this keeps it at a few elementwise passes (the probability, the thresholds' conversion
    to float, one add, one comparison; a mixed int16-float add is far slower than the two) besides
    the draw, and one saved tensor. Both modes keep ``p = P(b = 1)``: ``sigmoid(2*beta*x)`` for the
    bipolar p-bit (``(1 + tanh(y)) / 2 = sigmoid(2y)``), ``sigmoid(beta*x)`` for the unipolar one.
    A sigmoid costs an eighth of a tanh on the CPU (torch's tanh is the accurate, slow one), and
    the derivative of either mean is a multiple of ``p * (1 - p)``.

    The bit: with ``r`` uniform on [-2**15, 2**15), ``b = 1`` (or ``+1``) iff
    ``(r - (2**15 - 1/2)) + 2**16 * p >= 0``. Both terms are exact, and the one rounding of their
    sum keeps its sign (a tie gives +0, hence +1, so a bipolar bit is never 0): ``P(b = 1)`` is
    ``p`` rounded to the nearest multiple of ``2**-16``, exactly, as the fused kernel's is: within
    ``2**-17`` of it, exactly 0 or 1 within ``2**-17`` of saturation, and a bipolar bit's mean odd
    in ``x`` -- but where the float32 ``2**16 * p`` is exactly a half-step, which goes up at ``x``
    and at ``-x`` alike, so that ``P(x) + P(-x) = 1 + 2**-16`` there. (Rounded down, ``P``
    stopped at ``1 - 2**-16`` short of ``p = 1``: 62 bits in 4.2 M wrong at ``x = 7``, against
    3.5 expected; and ``r + 2**16 * p`` rounded before the comparison gave one more 1 where
    ``2**16 * p`` lay within a rounding below the step.)

    On the fused path the draw input is the kernel's key (an ``int``) and only the bits come from
    the kernel. There ``repeats > 1`` stands for ``x`` repeated along its first dimension: the
    kernel draws the copies' bits from ``x`` itself, ``p`` is computed and kept once, and the
    backward pass sums the copies' gradients in order, as autograd sums them for a repeated
    input (so they are those of the copy, summed alike; the slope, computed on ``x`` and not on
    the copy, can differ in the last bit where torch's vectorised tanh or sigmoid rounds the tail
    of a longer tensor differently). The draw is an input, not part of the
    function, and the function is written in the ``setup_context`` form: ``torch.func``
    transforms (``grad``, ``jacrev``, ``vmap``) then apply, and ``vmap`` batches the draw by its
    ``randomness`` argument like any torch draw.
    """

    generate_vmap_rule = True

    @staticmethod
    def forward(x, thresholds, mode, beta, ste, repeats):
        # eager: in place, and a NaN check that branches on data. Under torch.func transforms
        # (vmap may batch the draw where x is not) and in traced graphs (torch.compile, export,
        # jit.trace: an out= op cannot be recorded for autograd, a branch would be fixed): neither
        eager = not (torch._C._are_functorch_transforms_active() or torch.compiler.is_compiling()
                     or torch.jit.is_tracing())
        p = _probability(x, mode, beta)
        if isinstance(thresholds, int):  # the key of the fused kernel's stream
            return pbit_kernel.bits(x, mode, beta, thresholds, repeats), p
        # r - (2**15 - 1/2) is exact, and 2**16 * p too: the one rounding of their sum keeps its sign
        if eager:
            total = torch.sub(thresholds.expand_as(p), HALF_WAY, out=torch.empty_like(p)).add_(p, alpha=2**16)
        else:
            total = (thresholds.to(p.dtype) - HALF_WAY) + p * 2**16
        if mode == "bipolar":
            one = torch.ones((), dtype=total.dtype, device=total.device)
            bits = torch.copysign(one, total, out=total) if eager else torch.copysign(one, total)
        else:  # (out of place where traced or transformed: vmap has no batching rule for ge_)
            bits = total.ge_(0) if eager else (total >= 0).to(total.dtype)
        # a NaN pre-activation must not become a bit. On the CPU one read-only sum finds it
        # (the full masking pass is paid only then); elsewhere, and where the branch cannot be
        # taken on data, mask unconditionally (no host-device synchronisation)
        if x.device.type != "cpu" or not eager or torch.isnan(p.sum()):
            bits = bits.masked_fill(torch.isnan(x), float("nan"))
        return bits.to(x.dtype), p

    @staticmethod
    def setup_context(ctx, inputs, output):
        x, _, mode, beta, ste, repeats = inputs
        if ste != "mean":
            ctx.mark_non_differentiable(output[1])
        ctx.set_materialize_grads(False)  # else autograd fills a zero gradient for p
        ctx.mode, ctx.beta, ctx.ste, ctx.dtype, ctx.repeats = mode, beta, ste, x.dtype, repeats
        saved = {"mean": (output[1],), "clipped": (x,)}.get(ste, ())
        ctx.save_for_backward(*saved)
        ctx.save_for_forward(*saved)

    @staticmethod
    def jvp(ctx, x_t, thresholds_t, mode_t, beta_t, ste_t, repeats_t):
        """Forward mode (``torch.func.jvp``, ``jacfwd``, ``forward_ad``): the STE's slope times the
        tangent of ``x``, repeated as the bits are, and the tangent of ``p`` (``ste="mean"``)."""
        saved = ctx.saved_tensors[0] if ctx.saved_tensors else None
        bits_t = _surrogate_gradient(x_t, saved, ctx.mode, ctx.beta, ctx.ste, ctx.dtype)  # the slope is diagonal
        p_t = probability_gradient(x_t, saved, ctx.mode, ctx.beta, saved.dtype) if ctx.ste == "mean" else None
        return repeat_samples(bits_t, ctx.repeats), p_t

    @staticmethod
    def backward(ctx, grad, grad_p):
        """The STE's gradient; and, where a backward pass is itself differentiated, the gradient
        of ``p`` (which the first one read): ``dp/dx = g p (1 - p)``, so the surrogate's second
        derivative reaches ``x`` (with ``ste="mean"``: ``p`` is saved, and is differentiable)."""
        if grad is None and grad_p is None:
            return None, None, None, None, None, None
        saved_tensors = ctx.saved_tensors  # read once: non-reentrant checkpointing allows one unpack
        saved = saved_tensors[0] if saved_tensors else None
        total = None
        if grad is not None:
            copies = grad.chunk(ctx.repeats) if ctx.repeats > 1 else (grad,)
            rule = (ctx.mode, ctx.beta, ctx.ste, ctx.dtype)
            total = _surrogate_gradient(copies[0], saved, *rule)
            for k, copy in enumerate(copies[1:]):  # in order, as autograd sums the copies of a repeated input
                part = _surrogate_gradient(copy, saved, *rule)
                total = total + part if k == 0 else total.add_(part)  # the first sum is a new tensor
        if grad_p is not None and ctx.ste == "mean":  # (compiled graphs pass zeros for the others' p)
            part = probability_gradient(grad_p, saved, ctx.mode, ctx.beta, ctx.dtype)
            total = part if total is None else total + part
        return total, None, None, None, None, None


class _KnownBits(_PBitFunction):
    """:class:`_PBitFunction` for bits already drawn: the same saved tensors and backward pass."""

    @staticmethod
    def forward(x, bits, mode, beta, ste, repeats):
        return bits, _probability(x, mode, beta)


class _CompiledPBit(_PBitFunction):
    """:class:`_PBitFunction` as ``torch.compile`` and ``torch.export`` record it: without the
    forward-mode rule, which dynamo cannot trace (it broke the graph at every p-bit where
    gradients were on, and ``fullgraph=True`` and strict export failed)."""

    jvp = torch.autograd.Function.jvp


class _CompiledKnownBits(_KnownBits):
    jvp = torch.autograd.Function.jvp


def _function(known: bool) -> type[torch.autograd.Function]:
    """The p-bit's autograd function for this call: without ``jvp`` while compiling."""
    if torch.compiler.is_compiling():
        return _CompiledKnownBits if known else _CompiledPBit
    return _KnownBits if known else _PBitFunction


def attach_bits(x: torch.Tensor, bits: torch.Tensor, mode: str, beta: float, ste: str,
                repeats: int = 1) -> torch.Tensor:
    """``bits``, drawn earlier from ``x`` (repeated ``repeats`` times), as :func:`pbit` would have
    returned them: with the p-bit's gradient to ``x``, its derivatives included."""
    mode, beta = _checked_rule(mode, beta)
    repeats = positive_int("repeats", repeats)
    drawn = (x.shape[0] * repeats, *x.shape[1:]) if x.dim() else ()
    if tuple(bits.shape) != drawn:  # (bits of other rows gave a gradient `repeats` times too large)
        raise UsageError(f"bits of shape {tuple(bits.shape)} for x of shape {tuple(x.shape)} repeated {repeats} "
                         f"times; expected {drawn}")
    if bits.dtype != x.dtype or bits.device != x.device:  # (integer bits came back without a gradient)
        raise UsageError(f"bits of dtype {bits.dtype} on {bits.device} for x of dtype {x.dtype} on {x.device}; "
                         "expected x's dtype and device, as pbit returns them")
    return _function(known=True).apply(x, bits, mode, beta, one_of("ste", ste, STES), repeats)[0]


def _checked_rule(mode: str, beta: float) -> tuple[str, float]:
    """A p-bit's mode and β, checked (as its surrogate is): an unknown name fell through to the
    ``"mean"`` formula with the wrong saved tensor, and a β <= 0 turned the gradient round."""
    return one_of("mode", mode, MODES), check_beta(beta)


def _probability(x: torch.Tensor, mode: str, beta: float) -> torch.Tensor:
    """``P(b = 1 | x)`` in at least single precision (16-bit floats are exact in it):
    ``sigmoid(2*beta*x)`` for the bipolar p-bit, ``sigmoid(beta*x)`` for the unipolar one."""
    wide = x if x.dtype in (torch.float32, torch.float64) else x.float()
    gain = pbit_kernel.GAIN[mode] * beta
    return torch.sigmoid(wide) if gain == 1.0 else torch.mul(wide, gain).sigmoid_()


def probability_gradient(grad_p: torch.Tensor, p: torch.Tensor, mode: str, beta: float,
                         dtype: torch.dtype) -> torch.Tensor:
    """The gradient to ``x`` of ``p = P(b = 1 | x)`` (kept for the backward pass) for the gradient
    ``grad_p`` of ``p``: ``dp/dx = gain * p * (1 - p)``, what a differentiated backward pass needs."""
    return (torch.ops.aten.sigmoid_backward(grad_p, p) * (pbit_kernel.GAIN[mode] * beta)).to(dtype)


def surrogate_gain(mode: str, beta: float) -> float:
    """``d/dx`` of the mean over ``p * (1 - p)``: ``d/dx tanh(beta*x) = d/dx (2p - 1) = 4*beta*p*(1 - p)``,
    ``d/dx sigmoid(beta*x) = beta*p*(1 - p)``."""
    mode, beta = _checked_rule(mode, beta)
    return _gain(mode, beta)


def _gain(mode: str, beta: float) -> float:
    return 4 * beta if mode == "bipolar" else beta


def _surrogate_gradient(grad: torch.Tensor, saved: torch.Tensor | None, mode: str, beta: float, ste: str,
                        dtype: torch.dtype) -> torch.Tensor:
    """The STE's gradient for one copy of the input: ``grad`` times the surrogate's derivative
    (``saved``: ``p = P(b = 1)`` for ``ste="mean"``, the input for ``"clipped"``)."""
    if ste == "identity":
        return grad
    if ste == "clipped":
        return grad * (saved.abs() <= 1)
    gain = _gain(mode, beta)
    derivative = torch.ops.aten.sigmoid_backward(grad.to(saved.dtype), saved)
    return (derivative if gain == 1.0 else derivative.mul_(gain)).to(dtype)


def straight_through_gradient(grad: torch.Tensor, x: torch.Tensor, mode: str, beta: float, ste: str) -> torch.Tensor:
    """What a p-bit's backward pass returns for the gradient ``grad`` of its bits at the
    pre-activation ``x``: ``grad`` times the derivative of the surrogate ``ste`` at ``x``."""
    (mode, beta), ste = _checked_rule(mode, beta), one_of("ste", ste, STES)
    saved = _probability(x, mode, beta) if ste == "mean" else x
    return _surrogate_gradient(grad, saved, mode, beta, ste, x.dtype)


def pbit(
    x: torch.Tensor,
    mode: str = "bipolar",
    beta: float = 1.0,
    generator: torch.Generator | None = None,
    ste: str = "mean",
    repeats: int = 1,
) -> torch.Tensor:
    """Draw one p-bit per element of ``x`` (of ``x`` repeated ``repeats`` times).

    Args:
        x: pre-activations, any shape, floating point.
        mode: ``"bipolar"`` (bits in {-1, +1}) or ``"unipolar"`` (bits in {0, 1}).
        beta: inverse temperature, > 0: one number for the whole call (a Python number, or a
            tensor of one value, read as one; not one per example under ``torch.func.vmap``).
        generator: source of the uniform draws; must live on ``x.device``. ``None`` uses torch's
            default generator for that device.
        ste: surrogate for the backward pass: ``"mean"``, ``"identity"`` or ``"clipped"``.
        repeats: draw for ``x`` repeated this many times along its first dimension,
            ``torch.cat([x] * repeats)``, as :class:`pdnn.SampledModel` folds T samples of a
            shared tensor into the batch: the bits are those of ``pbit(torch.cat([x] * repeats))``
            for the same generator, and the gradients too, to the last bit of the slope (see
            above); on the CPU the copy is never made.

    Returns:
        A tensor of the shape and dtype of ``x`` (its first dimension times ``repeats``) holding
        the bits (NaN where ``x`` is NaN).

    Example:
        >>> g = torch.Generator().manual_seed(0)
        >>> pbit(torch.zeros(4), generator=g).abs().tolist()
        [1.0, 1.0, 1.0, 1.0]
    """
    one_of("mode", mode, MODES)
    one_of("ste", ste, STES)
    beta = check_beta(beta)
    check_floating(x, "pbit")
    if generator is not None and not isinstance(generator, torch.Generator):  # (PBit checks its device too)
        raise UsageError(f"generator must be a torch.Generator or None, got {shown(generator)}")
    if type(repeats) is not int or repeats != 1:  # (1.0, True and tensor(2) reached the kernel as they were)
        repeats = positive_int("repeats", repeats)
        if repeats != 1 and x.dim() == 0:
            raise UsageError(f"repeats={repeats} needs a tensor with a first dimension, got a scalar")
    stack = stacked_passes.active()
    if stack is not None:  # several passes' rows, each block drawn with its pass's key
        return stack.bits(x, mode, beta, repeats, generator)
    if pbit_kernel.available(x, repeats):
        key = pbit_kernel.draw_key(generator)
        if torch.is_grad_enabled() and x.requires_grad or has_tangent(x):
            return _PBitFunction.apply(x, key, mode, beta, ste, repeats)[0]
        return pbit_kernel.bits(x, mode, beta, key, repeats)  # no autograd: no mean to keep
    x = repeat_samples(x, repeats)
    return _function(known=False).apply(x, draw_thresholds(x.shape, generator, x.device), mode, beta, ste, 1)[0]


def has_tangent(x: torch.Tensor) -> bool:
    """Whether ``x`` carries a forward-mode tangent (a dual tensor of ``torch.autograd.forward_ad``
    or ``torch.func.jvp``), which only an autograd function passes on."""
    return forward_ad.unpack_dual(x).tangent is not None


def repeat_samples(x, samples: int):
    """Fold ``samples`` copies of ``x`` into its batch dimension (sample-major).

    ``torch.cat`` rather than ``Tensor.repeat``: it keeps a channels-last ``x`` channels-last
    (``repeat`` returns NCHW, which every later layer of a channels-last network converts
    back) and copies 5x faster on a CPU. Not beyond ``CAT_SAMPLES`` copies, whose list of
    references alone would take memory (8 GB at T = 10⁹) before torch could say that the
    result does not fit: an expanded view is copied instead."""
    if type(samples) is not int or samples < 1:  # (True and 1.0 acted as 1, 0 failed inside torch.cat)
        samples = positive_int("samples", samples)
    if not isinstance(x, torch.Tensor) or samples == 1:
        return x
    stack = stacked_passes.active()
    if stack is not None:
        return stack.repeat(x, samples)
    if not x.dim():
        return x.repeat(samples)
    if samples > CAT_SAMPLES:
        return x.unsqueeze(0).expand(samples, *x.shape).reshape(samples * x.shape[0], *x.shape[1:])
    return torch.cat([x] * samples)


CAT_SAMPLES = 1 << 16


def quantize_levels(t: torch.Tensor, bits: int) -> torch.Tensor:
    """Round values in [-1, 1] to the nearest of ``2**bits`` equally spaced levels in [-1, 1].

    Values outside [-1, 1] are clipped first. For ``bits=1`` the levels are {-1, +1}. The levels
    are ``(2j + 1) / (2**bits - 1)`` for integers j, so the nearest is ``(2 floor(t s / 2) + 1) / s``
    with ``s = 2**bits - 1``: computed around 0, not from ``t + 1`` (where a t below float
    precision vanished and rounding half to even sent it, and 0, to the level below), the levels
    are exactly antisymmetric, a tiny t keeps its sign, and a tie (0 for one bit) goes up, as
    ``sign`` with ``sign(0) = +1``.

    16-bit floats are rounded in float32, where ``t s / 2`` is exact (11 + 8 significant bits):
    in their own precision a product just below a whole number rounded onto it, which sent a
    negative t to the level above, up to half a step off, and -6e-8 to +1 at one bit.
    """
    steps = 2 ** check_bits(bits, "bits") - 1
    if not isinstance(t, torch.fx.Proxy):
        check_floating(t, "quantize_levels")
    return _nearest_levels(t, steps)


@torch.fx.wrap
def _nearest_levels(t: torch.Tensor, steps: int) -> torch.Tensor:
    """The rounding of :func:`quantize_levels`, one call in a torch.fx trace: it chooses its
    precision by the dtype, which a trace does not know (traced, 16-bit values were rounded in
    their own precision, and a sampled model's levels differed from its forward's)."""
    wide = torch.clamp(t.float() if t.dtype in (torch.float16, torch.bfloat16) else t, -1.0, 1.0)
    return torch.clamp((2.0 * torch.floor(wide * (steps / 2.0)) + 1.0) / steps, -1.0, 1.0).to(t.dtype)


def quantized_activation(
    x: torch.Tensor, bits: int, beta: float = 1.0, mode: str = "bipolar"
) -> torch.Tensor:
    """Deterministic k-bit activation: ``tanh(beta*x)`` (or sigmoid) rounded to ``2**bits`` levels.

    Bipolar levels span [-1, 1]; unipolar levels span [0, 1], rounded as ``2 sigmoid(beta*x) - 1``,
    computed as ``tanh(beta*x / 2)`` (equal, but keeps the sign of an x whose sigmoid rounds to
    1/2). The backward pass is the derivative of the unrounded activation (STE), so a k-bit
    network trains like its float counterpart.
    """
    if not isinstance(x, torch.fx.Proxy):  # (traced, by the energy analysis or the sampler, it is no tensor)
        check_floating(x, "quantized_activation")  # (a list failed in Python's multiplication)
    mean = mean_activation(x, mode, beta)
    if mode == "bipolar":
        q = quantize_levels(mean, bits)
    else:
        q = (quantize_levels(torch.tanh(beta * x * 0.5), bits) + 1.0) / 2.0
    return straight_through(q, mean)
