"""Energy per inference of a whole network: ε_EO summed over every layer's EOs, term by term.

For a layer with fan-in n, N EOs, W weights, weight and activation bits ``b_w``, ``b_a`` and T
samples, the four terms of :mod:`pdnn.energy.eo` become (in pJ, then joules)::

    weight memory      = F * b_w * ε_wM            F = N*n (per-eo), W (per-inference), W/B (per-batch B)
    activation memory  = S * N * (n+1) * b_a * ε_aM
    synapse            = S * N * ε_S(n, b_a, b_w)
    neuron             = Σ_parts  S_part * N * ε_part

``S`` is how many times the layer's sums are computed per inference: T for a layer whose input
depends on a random draw, 1 for a layer of the deterministic prefix (it is computed once and
shared by the T samples, as :class:`pdnn.SampledModel` does; ``shared_prefix=False`` multiplies
every layer by T, which is the paper's formula literally). A neuron part that draws (a p-bit) or
depends on a draw runs T times. With ``per-eo`` reuse, ``shared_prefix=False`` and
``aggregate="network"``, the total is exactly Σ_layers N·ε_EO of the paper.

``aggregate="layer"`` prices the random bit-stream baseline of :mod:`pdnn.sampling`: every
stochastic module draws T times and its T outputs are summed by a counter into one
``ceil(log2(T·(2^p−1)+1))``-bit value (p: its precision), which the next layer reads once; every
layer is computed once. A sum wider than 32 bits is held as a 32-bit float, as the float
baseline's activations are, so an averaged activation never costs more than a float one.

Memory levels for weights and activations are chosen independently (e.g. weights in DRAM,
activations in SRAM).
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

from ..checks import AGGREGATIONS, REUSE_MODES, one_of, positive_int, shown
from ..errors import UsageError
from .eo import MAX_SAMPLES, TERM_NAMES, accumulator_bits, check_energy_samples, eo_terms_pj, finite_energy
from .graph import Layer, Network
from .tech import FLOAT_BITS, TechError, Technology, load_table

PJ = 1e-12  # joules per picojoule
TERMS = tuple(f"{name}_j" for name in TERM_NAMES)
# Why ΔE(T→T+1)/E misleads under layer aggregation; reports print it beside that column.
LAYER_STEP_NOTE = ("layer aggregation: ΔE(T→T+1)/E is not a per-sample average: the counters' width "
                   "ceil(log2(T·(2^p−1)+1)) grows only when T+1 reaches a power of two, so one more sample costs "
                   "almost nothing between those steps and a whole bit per input at them; compare the energies "
                   "at the measured T instead")


@dataclass(frozen=True)
class Reuse:
    """How often weights are fetched from the weight memory.

    * ``per-eo``: for every elementary operation (the paper's formula: N·n fetches per layer,
      shared only by the T samples of that EO);
    * ``per-inference``: each layer's W weights once per inference into an on-chip buffer (a
      module called twice, as weight sharing does, or layers tied to one weight tensor, once);
    * ``per-batch`` with ``batch = B``: once per B inferences.

    The buffer's own read energy is not counted (as the paper does not count register-level
    operand traffic): reuse moves the weight term from N·n to W (or W/B) fetches.
    """

    mode: str = "per-eo"
    batch: int = 1

    def __post_init__(self):
        one_of("reuse", self.mode, REUSE_MODES)
        positive_int("reuse batch size", self.batch)
        if self.batch != 1 and self.mode != "per-batch":  # (it was ignored without a word)
            raise UsageError(f"a reuse batch size applies to per-batch only, got batch={self.batch} with {self.mode}")

    @classmethod
    def parse(cls, text: str) -> "Reuse":
        """``"per-eo"``, ``"per-inference"`` or ``"per-batch:B"`` (also ``per-batch=B``)."""
        text = str(text).strip()
        if text in ("per-eo", "per-inference"):
            return cls(text)
        match = re.fullmatch(r"per-batch[:=](\d+)", text)
        if match:
            return cls("per-batch", int(match.group(1)))
        raise UsageError(f"reuse must be per-eo, per-inference or per-batch:B (B an integer >= 1), got {text!r}")

    def fetches(self, layer: Layer) -> float:
        """Weight reads per inference for ``layer`` (one call of a weight layer)."""
        if self.mode == "per-eo":
            return float(layer.eos * layer.fan_in)
        if layer.repeat_call:  # a shared module: its weights are in the buffer since its first call
            return 0.0
        return layer.weights / (self.batch if self.mode == "per-batch" else 1)

    def __str__(self) -> str:
        return f"per-batch:{self.batch}" if self.mode == "per-batch" else self.mode


@dataclass(frozen=True)
class Settings:
    """Everything besides the network and T that the energy depends on."""

    tech: Technology = field(default_factory=load_table)
    weight_memory: str = "dram"
    activation_memory: str = "dram"
    reuse: Reuse = Reuse()
    aggregate: str = "network"
    shared_prefix: bool = True

    def __post_init__(self):
        if isinstance(self.tech, (str, Path)):  # a table's name or file, as eo_energy_pj takes it
            object.__setattr__(self, "tech", load_table(self.tech))
        if not isinstance(self.tech, Technology):
            raise UsageError(f"tech must be a Technology, a shipped table's name or a TOML file's path, got "
                             f"{shown(self.tech)}")
        if not isinstance(self.shared_prefix, bool):  # (the string "false" would be taken as true)
            raise UsageError(f"shared_prefix must be True or False, got {shown(self.shared_prefix)}")
        if self.aggregate == "layer" and not self.shared_prefix:
            raise UsageError("shared_prefix=False has no effect under layer aggregation, which computes every layer "
                             "once per inference; leave it True")
        self.tech.memory(self.weight_memory, "weight memory")  # raises, naming the level, if unknown
        self.tech.memory(self.activation_memory, "activation memory")
        one_of("aggregate", self.aggregate, AGGREGATIONS)
        if isinstance(self.reuse, str):  # as the command line writes it
            object.__setattr__(self, "reuse", Reuse.parse(self.reuse))
        if not isinstance(self.reuse, Reuse):
            raise UsageError(f"reuse must be a Reuse or its name (per-eo, per-inference, per-batch:B), "
                             f"got {shown(self.reuse)}")

    def to_dict(self) -> dict:
        """The settings and, under ``table``, every number of the technology table with its source."""
        wm, am = self.tech.memory(self.weight_memory), self.tech.memory(self.activation_memory)
        return {
            "technology": self.tech.name,
            "weight_memory": self.weight_memory,
            "weight_memory_pj_per_bit": wm.pj_per_bit,
            "activation_memory": self.activation_memory,
            "activation_memory_pj_per_bit": am.pj_per_bit,
            "reuse": str(self.reuse),
            "aggregate": self.aggregate,
            "shared_prefix": self.shared_prefix,
            "table": self.tech.to_dict(),
        }


def averaged_bits(bits: int, samples: int) -> int:
    """Width of the sum of T values of ``bits`` bits: ``ceil(log2(T·(2^bits − 1) + 1))``."""
    return max(bits, math.ceil(math.log2(samples * (2**bits - 1) + 1)))


def layer_energy(layer: Layer, samples: int, settings: Settings) -> dict:
    """One layer's energy per inference at T = ``samples``: JSON-ready, energies in joules."""
    t = check_energy_samples(samples)
    tech = settings.tech
    n, b_w, b_a = layer.fan_in, layer.weight_bits, layer.activation_bits
    neuron_pj = 0.0
    if settings.aggregate == "layer":
        repeats = 1
        if layer.averaged_input and b_a < FLOAT_BITS:  # the sum of T draws, of the pools and sums since
            levels = layer.averaged_levels  # (0: on grids of unknown ratio, priced as a float beyond T = 1)
            if levels:
                b_a = min(max(b_a, math.ceil(math.log2(t * levels + 1))), FLOAT_BITS)
            elif t > 1:
                b_a = FLOAT_BITS
        acc = accumulator_bits(n, b_a, b_w)
        for part in layer.neuron:
            draws = part.kind in ("pbit", "noise")
            neuron_pj += (t if draws else 1) * part.energy_pj(tech, acc)
            if draws and part.bits < FLOAT_BITS and t > 1:  # the counter that averages the draws
                neuron_pj += t * tech.int_add_pj(averaged_bits(part.bits, t))
    else:
        repeats = t if (layer.stochastic_input or not settings.shared_prefix) else 1
        acc = accumulator_bits(n, b_a, b_w)
        for part in layer.neuron:
            part_repeats = t if (part.stochastic or not settings.shared_prefix) else 1
            neuron_pj += part_repeats * part.energy_pj(tech, acc)
    terms_pj = eo_terms_pj(n, b_w, b_a, tech, tech.memory(settings.weight_memory).pj_per_bit,
                           tech.memory(settings.activation_memory).pj_per_bit,
                           weight_reads=settings.reuse.fetches(layer), sums=repeats * layer.eos,
                           neuron_pj=layer.eos * neuron_pj)
    terms = {f"{name}_j": value * PJ for name, value in terms_pj.items()}
    return {
        "name": layer.name,
        "kind": layer.kind,
        "module_type": layer.module_type,
        "fan_in": n,
        "eos": layer.eos,
        "weights": layer.weights,
        "weight_bits": b_w,
        "activation_bits": b_a,
        "activation_bits_known": layer.activation_bits_known,
        "stochastic_input": layer.stochastic_input,
        "sums_per_inference": repeats,
        "total_j": sum(terms.values()),
        "terms": terms,
    }


def check_network(net, owner: str) -> None:
    """Raise a ``UsageError`` unless ``net`` is a :class:`Network`: a module given in its place
    (a likely slip) failed on a missing ``.layers``."""
    if not isinstance(net, Network):
        hint = "; read a model first: pdnn.energy.analyze(model, input_shape)" if hasattr(net, "modules") else ""
        raise UsageError(f"{owner} prices a pdnn.energy.Network, got {type(net).__name__}{hint}")


def check_settings(settings) -> Settings:
    """``settings``, or the default ones for ``None``; anything else but :class:`Settings` is refused."""
    if settings is None:
        return Settings()
    if not isinstance(settings, Settings):
        raise UsageError(f"settings must be a pdnn.energy.Settings (or None for the defaults), got "
                         f"{type(settings).__name__}")
    return settings


def network_energy(net: Network, samples: int, settings: Settings | None = None) -> dict:
    """Energy per inference of ``net`` at T = ``samples``:
    ``{"samples", "total_j", "terms": {TERMS...}, "layers": [layer_energy...]}``."""
    check_network(net, "network_energy")
    settings = check_settings(settings)
    samples = check_energy_samples(samples)  # (a tensor or numpy T as the int it stands for: the result is JSON)
    layers = [layer_energy(layer, samples, settings) for layer in net.layers]
    terms = {k: sum(layer["terms"][k] for layer in layers) for k in TERMS}
    total = finite_energy(sum(terms.values()), settings.tech, samples)
    return {"samples": samples, "total_j": total, "terms": terms, "layers": layers}


def next_sample_increase_pct(net: Network, samples: int, settings: Settings,
                             total_j: float | None = None) -> float | None:
    """``ΔE(T→T+1)/E(T)`` in percent: what one more sample costs. ``None`` when E(T) is 0 (a table
    whose energies are all zero for this network) or T is the largest priced (:data:`MAX_SAMPLES`).
    ``total_j``: E(T) if already computed."""
    if samples >= MAX_SAMPLES:
        return None
    if total_j is None:
        total_j = network_energy(net, samples, settings)["total_j"]
    if not total_j:
        return None
    step = network_energy(net, samples + 1, settings)["total_j"] - total_j
    return 100.0 * _finite_ratio(step, total_j, settings, f"one sample more than T = {samples}")


def _finite_ratio(energy: float, reference: float, settings: Settings, what: str) -> float | None:
    """``energy / reference`` (None if the reference is 0): finite totals of a table with huge and
    tiny entries can still have a ratio beyond a float (the report printed inf, and its JSON could
    not be written)."""
    if not reference:
        return None
    ratio = energy / reference
    if not math.isfinite(ratio):
        raise TechError(f"technology table {settings.tech.path}: the energy of {what} is {energy:.3g} J against "
                        f"{reference:.3g} J, a ratio beyond a float; its energies span too wide a range")
    return ratio


FLOAT_REFERENCE = "the same network with 32-bit float weights and activations, deterministic, T=1"


def _label(meta: dict) -> str:
    if meta.get("label"):
        return str(meta["label"])
    parts = [str(meta[k]) for k in ("model", "neuron") if meta.get(k)]
    if meta.get("weight_bits") is not None:
        parts.append(f"w{meta['weight_bits']}")
    return " ".join(parts)


def energy_sweep(
    entries: Sequence[tuple[dict, Network]],
    samples: Sequence[int] = (1, 2, 5, 10),
    settings: Settings | None = None,
    reference: Network | None = None,
    reference_label: str = FLOAT_REFERENCE,
    deterministic_once: bool = True,
) -> dict:
    """Energies of several networks (e.g. one per neuron type and weight width) at every T.

    ``entries`` are ``(meta, network)`` pairs; ``meta`` (e.g. ``{"neuron": "pbit",
    "weight_bits": 4}``) is copied into each of the network's configurations, with a
    ``label``. A deterministic network is priced at T = 1 only when ``deterministic_once``
    (sampling it again gives the same output, so one more sample costs 0 %, even where
    ``shared_prefix=False`` would price a second pass). Every configuration has its ratio to the
    reference (default: the first network's :meth:`Network.float_reference` at T = 1) and the
    marginal cost of one more sample, ``ΔE(T→T+1)/E(T)`` in percent (both ``None`` where they
    would divide by a zero energy). Everything is JSON-serialisable; energies in joules per
    inference.
    """
    settings = check_settings(settings)
    if not isinstance(samples, Iterable) or isinstance(samples, str):
        raise UsageError(f"samples must be a sequence of T values such as [1, 10], got {shown(samples)}")
    samples = sorted({check_energy_samples(t) for t in samples})
    if not samples:
        raise UsageError("samples must name at least one T >= 1")
    if not entries:
        raise ValueError("energy_sweep needs at least one network")
    for _, net in entries:
        check_network(net, "energy_sweep")
    if reference is not None:
        check_network(reference, "energy_sweep's reference")
    ref_net = reference if reference is not None else entries[0][1].float_reference()
    ref = network_energy(ref_net, 1, settings)
    configs, networks, unresolved, notes = [], [], [], []
    for meta, net in entries:
        label = _label(meta)
        once = not net.stochastic and deterministic_once  # no sample after the first is drawn: it costs nothing
        for t in ([1] if once else samples):
            config = {**meta, "label": f"{label} T={t}".strip(), "network": label,
                      **network_energy(net, t, settings)}
            config["ratio_to_reference"] = _finite_ratio(config["total_j"], ref["total_j"], settings, config["label"])
            config["next_sample_increase_pct"] = 0.0 if once else next_sample_increase_pct(net, t, settings,
                                                                                          config["total_j"])
            configs.append(config)
        networks.append({**meta, "label": label, "stochastic": net.stochastic, **net.to_dict()})
        unresolved += [f"{label}: {name}".lstrip(": ") for name in net.unresolved]
        notes += [n for n in net.notes if n not in notes]
    if settings.aggregate == "layer":
        notes.append(LAYER_STEP_NOTE)
    return {
        "units": "J per inference (totals and terms); percentages in %",
        "settings": settings.to_dict(),
        "reference": {"description": reference_label, "samples": 1, "total_j": ref["total_j"], "terms": ref["terms"],
                      "layers": ref["layers"]},
        "configs": configs,
        "networks": networks,
        "unresolved": unresolved,
        "notes": notes,
    }


def energy_report(
    net: Network,
    samples: Sequence[int] = (1, 2, 5, 10),
    settings: Settings | None = None,
    reference: Network | None = None,
    reference_label: str = FLOAT_REFERENCE,
) -> dict:
    """:func:`energy_sweep` for one network, at every T in ``samples`` (deterministic or not)."""
    check_network(net, "energy_report")
    return energy_sweep([({}, net)], samples, settings, reference, reference_label, deterministic_once=False)
