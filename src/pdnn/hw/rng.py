"""The p-bit neurons' random number generators, as the hardware computes them (numpy, bit exact).

Two arrangements are modelled, both built on Marsaglia's xorshift32 (``x ^= x << 13;
x ^= x >> 17; x ^= x << 5``), which produces 32 new bits per clock from 32 flip-flops and a
few XOR gates per bit:

* ``per-neuron``: every neuron owns a generator with its own seed and reads the low ``b_u``
  bits of its state;
* ``shared``: one generator per layer; bit ``m`` of neuron ``i``'s random number is the XOR of
  three taps of the shared state (a fixed, distinct triple per ``(i, m)``, a neuron's triples
  linearly independent: see :func:`tap_triples`), so a neuron costs
  ``b_u`` three-input XORs instead of a generator. Pairs of neurons are not kept independent
  (docs/hardware.md: some fire correlated).

A generator's state advances once per sample; sample ``g`` (counted from reset over all the
images a core has processed) uses the state after ``g`` steps.
"""
from __future__ import annotations

import itertools

import numpy as np

from ..errors import UsageError

ARRANGEMENTS = ("per-neuron", "shared")
TAPS = 3
_MASK32 = np.uint32(0xFFFFFFFF)


def check_arrangement(name: str) -> str:
    if name not in ARRANGEMENTS:
        raise UsageError(f"unknown RNG arrangement {name!r}; expected one of {', '.join(ARRANGEMENTS)}")
    return name


def xorshift32(x: np.ndarray) -> np.ndarray:
    """One step of xorshift32 on a uint32 array (element-wise)."""
    x = x.astype(np.uint32)
    x = x ^ ((x << np.uint32(13)) & _MASK32)
    x = x ^ (x >> np.uint32(17))
    return x ^ ((x << np.uint32(5)) & _MASK32)


def seeds(layer: int, count: int, base: int = 0x2545F491) -> np.ndarray:
    """Distinct nonzero 32-bit seeds for ``count`` generators of p-bit layer ``layer``."""
    rng = np.random.default_rng(base + 7919 * layer)
    values: list[int] = []
    while len(values) < count:
        v = int(rng.integers(1, 2**32))
        if v not in values:
            values.append(v)
    return np.array(values, dtype=np.uint32)


def tap_triples(layer: int, neurons: int, bits: int) -> np.ndarray:
    """``[neurons, bits, 3]`` triples of state-bit positions (0..31) for the shared RNG: distinct
    across the layer (while an untried one that fits remains), and each neuron's ``bits`` triples
    linearly independent over GF(2). A dependent triple makes one XOR of the neuron's bits always
    0: its random number then takes half of its 2**bits values, and its firing probability misses
    the 2**-bits bound. (Independent ones take every value equally often, up to the one state
    xorshift32 never visits.) A triple is drawn again only when it would break either rule, so a
    layer whose triples were all independent keeps the ones it always had."""
    if not 1 <= bits <= 31:
        raise UsageError(f"a shared generator's neuron takes 1..31 random bits from 32 state bits, got {bits}")
    rng = np.random.default_rng(0x5EED + 104729 * layer)
    chosen: set[tuple[int, ...]] = set()
    out = np.zeros((neurons, bits, TAPS), dtype=np.int64)
    for i in range(neurons):
        span: dict[int, int] = {}  # a basis of the neuron's taps so far, by leading bit
        for m in range(bits):
            reuse = len(chosen) >= 4960  # C(32, 3): every triple used
            for attempt in itertools.count(1):
                triple = tuple(sorted(rng.choice(32, size=TAPS, replace=False).tolist()))
                if (reuse or triple not in chosen) and _outside(span, _mask(triple)):
                    break
                if attempt % 1000 == 0 and not reuse:  # perhaps no untried triple is independent
                    reuse = not any(_outside(span, _mask(t)) for t in itertools.combinations(range(32), TAPS)
                                    if t not in chosen)
            reduced = _reduced(span, _mask(triple))
            span[reduced.bit_length() - 1] = reduced
            chosen.add(triple)
            out[i, m] = triple
    return out


def _mask(triple) -> int:
    return sum(1 << t for t in triple)


def _reduced(span: dict[int, int], mask: int) -> int:
    """``mask`` less its part in the GF(2) span of ``span`` (a basis keyed by leading bit)."""
    while mask and (mask.bit_length() - 1) in span:
        mask ^= span[mask.bit_length() - 1]
    return mask


def _outside(span: dict[int, int], mask: int) -> bool:
    return _reduced(span, mask) != 0


def states(seed: np.ndarray, start: int, count: int) -> np.ndarray:
    """``[count, len(seed)]`` generator states for samples ``start .. start + count - 1``."""
    x = np.asarray(seed, dtype=np.uint32).copy()
    for _ in range(start):
        x = xorshift32(x)
    out = np.empty((count, x.size), dtype=np.uint32)
    for g in range(count):
        out[g] = x
        x = xorshift32(x)
    return out


def random_indices(arrangement: str, layer: int, neurons: int, bits: int, start: int, count: int) -> np.ndarray:
    """``[count, neurons]`` the ``bits``-bit random numbers each neuron reads, samples ``start..``."""
    check_arrangement(arrangement)
    if arrangement == "per-neuron":
        s = states(seeds(layer, neurons), start, count)
        return (s & np.uint32(2**bits - 1)).astype(np.int64)
    s = states(seeds(layer, 1), start, count)[:, 0].astype(np.int64)[:, None]  # [count, 1]
    taps = tap_triples(layer, neurons, bits)  # [neurons, bits, 3]
    out = np.zeros((count, neurons), dtype=np.int64)
    for m in range(bits):
        a, b, c = taps[:, m, 0], taps[:, m, 1], taps[:, m, 2]
        out |= (((s >> a) ^ (s >> b) ^ (s >> c)) & 1) << m
    return out
