r"""The energy of one elementary operation (EO): one output neuron computed from its n inputs.

The paper (arXiv 2507.07763, eq. for :math:`\varepsilon_{EO}`) writes it as

.. math::
    \varepsilon_{EO} = \underbrace{n\,b_w\,\varepsilon_{wM}}_{\text{weight memory}}
      + T\,\Big[\underbrace{(n+1)\,b_a\,\varepsilon_{aM}}_{\text{activation memory}}
      + \underbrace{\varepsilon_S(n, b_a, b_w)}_{\text{synapse}}
      + \underbrace{\varepsilon_N}_{\text{neuron}}\Big]

* the n weights (``b_w`` bits each) are read once and shared by all T samples;
* every sample reads the n input activations and writes one output (``b_a`` bits each);
* the synapse combines the n inputs with the weights: n multiply-accumulates when ``b_a > 1``,
  n accumulates (add or subtract the ``b_w``-bit weight) when the input is one bit;
* the neuron turns the sum into the output: a p-bit's random bits, lookup table and comparator,
  or a deterministic activation.

This module prices each term from a :class:`~pdnn.energy.tech.Technology`; a bit width of 32
(:data:`~pdnn.energy.tech.FLOAT_BITS`) means 32-bit floating point; an integer sum of any width
(wider than 32 bits too) is priced as an integer addition of that width. The per-layer,
per-network accounting that multiplies these by the number of EOs is in :mod:`pdnn.energy.account`. Every function returns picojoules.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from ..checks import integer, positive_int, shown
from ..errors import UsageError
from ..nn import NeuronSpec
from ..sampling import check_samples
from .tech import FLOAT_BITS, TechError, Technology, load_table

NEURON_PART_KINDS = ("pbit", "noise", "threshold", "nonlinearity", "compare")
MAX_SAMPLES = 2**53  # the largest T a float counts one by one (E(T + 1) − E(T) is one sample's cost)
TERM_NAMES = ("weight_memory", "activation_memory", "synapse", "neuron")


def check_bit_width(bits, what: str) -> int:
    """A bit width the energy model can price: an integer from 1 to 32 (32 means float; a wider
    one would be priced as float arithmetic on wider words, which no table describes).

    Wider than :func:`pdnn.nn.check_bits` (1..8 or 32) on purpose: pricing asks "what if" about
    widths pdnn's layers do not offer (a 16-bit input, 12-bit weights of another accelerator).
    """
    number = positive_int(what, bits, "an integer from 1 to 32 (32 = float)")
    if number > FLOAT_BITS:
        raise UsageError(f"{what} must be an integer from 1 to 32 (32 = float), got {shown(bits)}")
    return number


def check_fan_in(n) -> int:
    return positive_int("fan-in n", n)  # (a 0-d tensor or numpy integer as a Python int)


def is_float(bits: int) -> bool:
    return bits >= FLOAT_BITS


def check_energy_samples(samples) -> int:
    """``samples`` (T) if it is an integer from 1 to :data:`MAX_SAMPLES`, else a ``UsageError``
    naming it (a larger T gave float's OverflowError, or energies that no longer grow by a sample)."""
    if (number := integer(samples)) is not None and number > MAX_SAMPLES:
        raise UsageError(f"samples (T) must be at most 2**53 to be priced (a float counts no further by ones), "
                         f"got {shown(number)}")
    return check_samples(samples)


def finite_energy(total: float, tech: Technology, samples: int) -> float:
    """``total`` (an energy in any unit) if it is finite, else a ``TechError``: finite table
    entries whose sums overflow (the tables printed inf and nan, and the JSON could not be written)."""
    if not math.isfinite(total):
        raise TechError(f"technology table {tech.path}: the energy at T = {samples} overflows a float; "
                        f"its energies are too large")
    return total


def accumulator_bits(n: int, activation_bits: int, weight_bits: int) -> int | None:
    """Width of the integer sum of n products, or ``None`` when the arithmetic is float.

    A ``b_a``-bit by ``b_w``-bit product has ``b_a + b_w`` bits (``b_w`` when the input is one
    bit: the product is ±w); adding n of them needs ``ceil(log2 n)`` more bits.
    """
    n = check_fan_in(n)
    activation_bits = check_bit_width(activation_bits, "activation bits")
    weight_bits = check_bit_width(weight_bits, "weight bits")
    if is_float(activation_bits) or is_float(weight_bits):
        return None
    product = weight_bits if activation_bits == 1 else activation_bits + weight_bits
    return product + math.ceil(math.log2(n))


def compare_pj(tech: Technology, acc_bits: int | None) -> float:
    """One comparison of an accumulator against a threshold (a comparator is a subtractor)."""
    return tech.float_add_pj() if acc_bits is None else tech.int_add_pj(acc_bits)


def weight_memory_pj(reads: float, weight_bits: int, pj_per_bit: float) -> float:
    """n·b_w·ε_wM for one EO's n weights; in general ``reads`` weights of ``b_w`` bits."""
    return reads * weight_bits * pj_per_bit


def activation_memory_pj(n: int, activation_bits: int, pj_per_bit: float) -> float:
    """(n+1)·b_a·ε_aM: reading n inputs and writing one output, for one sample.

    As in the paper, the output is counted at the input width ``b_a`` (a simplification: it
    differs from the true output width only in the one word out of n+1 that is written).
    """
    return (n + 1) * activation_bits * pj_per_bit


def synapse_pj(n: int, activation_bits: int, weight_bits: int, tech: Technology) -> float:
    """ε_S(n, b_a, b_w): combining n inputs with their weights, for one sample.

    * ``b_a == 1``: accumulate only; each input selects +w or -w, one addition of the
      accumulator width (float addition for float weights);
    * ``b_a > 1``: n multiply-accumulates; integer multiply of ``b_a`` by ``b_w`` bits plus an
      accumulator-width addition, or a 32-bit float multiply and add if either side is float.
    """
    acc = accumulator_bits(n, activation_bits, weight_bits)
    if activation_bits == 1:
        return n * compare_pj(tech, acc)  # one add per input, integer or float
    if acc is None:
        return n * (tech.float_mult_pj() + tech.float_add_pj())
    return n * (tech.int_mult_pj(activation_bits, weight_bits) + tech.int_add_pj(acc))


def eo_terms_pj(n: int, weight_bits: int, activation_bits: int, tech: Technology, weight_pj_per_bit: float,
                activation_pj_per_bit: float, weight_reads: float, sums: float, neuron_pj: float) -> dict:
    """The four terms of ε_EO in pJ, keyed by :data:`TERM_NAMES`: the one place they are assembled,
    for one EO (:func:`eo_energy_pj`) and for a whole layer (:mod:`pdnn.energy.account`).

    * weight memory = ``weight_reads`` · b_w · ε_wM (n for one EO; fewer with reuse);
    * activation memory = ``sums`` · (n+1) · b_a · ε_aM and synapse = ``sums`` · ε_S(n, b_a, b_w),
      ``sums`` being how many times an n-input sum is computed (T for one EO);
    * neuron = ``neuron_pj``, already summed by the caller, because the parts of one neuron may
      run a different number of times (a p-bit after a shared prefix runs T times, the prefix once).
    """
    return {
        "weight_memory": weight_memory_pj(weight_reads, weight_bits, weight_pj_per_bit),
        "activation_memory": sums * activation_memory_pj(n, activation_bits, activation_pj_per_bit),
        "synapse": sums * synapse_pj(n, activation_bits, weight_bits, tech),
        "neuron": neuron_pj,
    }


@dataclass(frozen=True)
class NeuronPart:
    """One piece of what follows a weight layer's sum, priced per output value.

    ``kind``:
        * ``pbit``: ``pbit_random_bits`` random bits index a lookup table holding the inverse of
          the sigmoid/tanh (the threshold at which the p-bit flips; batch norm folds into it),
          and one comparator of the accumulator's width compares the sum with it. So a p-bit
          costs a sign neuron plus the random bits and the lookup;
        * ``noise``: any other module that draws random numbers (noise injectors): its random
          bits plus one addition, plus ``bits`` threshold comparisons if its output has
          ``bits < 32`` levels (dithered quantiser, hard p-bit);
        * ``threshold``: a deterministic ``bits``-bit quantiser (sign: 1 bit); batch norm folds
          into its thresholds, so it costs ``bits`` comparisons at the accumulator width
          (a binary search over the 2**bits - 1 thresholds);
        * ``nonlinearity``: a float activation (tanh, sigmoid, ...);
        * ``compare``: a clipping activation (ReLU, hardtanh): one comparison.

    ``stochastic``: it runs once per sample (it draws, or depends on a draw); otherwise once per
    inference when the deterministic prefix is shared.
    """

    kind: str
    bits: int = FLOAT_BITS
    stochastic: bool = False
    module: str = ""

    def __post_init__(self):
        if self.kind not in NEURON_PART_KINDS:
            raise UsageError(f"unknown neuron part {self.kind!r}; expected one of {', '.join(NEURON_PART_KINDS)}")

    def energy_pj(self, tech: Technology, acc_bits: int | None) -> float:
        """Energy per output value; ``acc_bits`` is the layer's accumulator width (None: float)."""
        if self.kind == "pbit":
            r = tech.pbit_random_bits
            return tech.rng_pj(r) + tech.op("pbit_lut").energy_pj(r) + compare_pj(tech, acc_bits)
        if self.kind == "noise":  # the noise is added to the sum: a float add where either is float
            r = tech.noise_random_bits
            if is_float(self.bits):
                return tech.rng_pj(r) + tech.float_add_pj()
            add = tech.float_add_pj() if acc_bits is None else tech.int_add_pj(max(r, acc_bits))
            return tech.rng_pj(r) + add + self.bits * compare_pj(tech, acc_bits)
        if self.kind == "threshold":
            return self.bits * compare_pj(tech, acc_bits)
        if self.kind == "nonlinearity":
            return tech.op("float_nonlinearity").energy_pj(FLOAT_BITS)
        return compare_pj(tech, acc_bits)


def neuron_parts(neuron) -> tuple[NeuronPart, ...]:
    """The parts of a neuron named as in :data:`pdnn.nn.NEURONS` (or its :class:`~pdnn.nn.NeuronSpec`),
    or ``"none"`` (an output layer)."""
    if neuron == "none":
        return ()
    spec = NeuronSpec.parse(neuron)
    if spec.kind == "pbit":
        return (NeuronPart("pbit", 1, stochastic=True, module=spec.name),)
    if spec.kind == "float":
        return (NeuronPart("nonlinearity", module=spec.name),)
    return (NeuronPart("threshold", spec.bits, module=spec.name),)


def eo_energy_pj(
    n: int,
    weight_bits: int,
    activation_bits: int,
    samples: int = 1,
    tech: Technology | None = None,
    weight_memory: str = "dram",
    activation_memory: str = "dram",
    neuron: str = "pbit",
) -> dict:
    """The paper's ε_EO in pJ, with its four terms (the last three already multiplied by T).

    Args:
        n: fan-in (inputs per output neuron).
        weight_bits, activation_bits: ``b_w`` and ``b_a`` (32 = float).
        samples: T.
        tech: technology table (default: the shipped 45 nm table).
        weight_memory, activation_memory: memory levels of ``tech`` (e.g. ``"dram"``, ``"sram"``).
        neuron: what follows the sum (``"pbit"``, ``"tanh"``, ``"sign"``, ``"quant:k"``, ``"none"``).

    Returns:
        ``{"weight_memory_pj", "activation_memory_pj", "synapse_pj", "neuron_pj", "total_pj"}``.

    Example (the worked example of docs/energy.md):
        >>> e = eo_energy_pj(4, 2, 1, samples=3, weight_memory="sram_8kb", activation_memory="sram_8kb")
        >>> round(e["total_pj"], 6)
        4.70375
    """
    tech = tech if isinstance(tech, Technology) else load_table(tech)  # (a table's name or path too)
    n = check_fan_in(n)
    b_w, b_a = check_bit_width(weight_bits, "weight bits"), check_bit_width(activation_bits, "activation bits")
    t = check_energy_samples(samples)
    acc = accumulator_bits(n, b_a, b_w)
    terms = eo_terms_pj(n, b_w, b_a, tech, tech.memory(weight_memory, "weight memory").pj_per_bit,
                        tech.memory(activation_memory, "activation memory").pj_per_bit, weight_reads=n, sums=t,
                        neuron_pj=t * sum(p.energy_pj(tech, acc) for p in neuron_parts(neuron)))
    terms = {f"{name}_pj": value for name, value in terms.items()}
    terms["total_pj"] = finite_energy(sum(terms.values()), tech, t)
    return terms
