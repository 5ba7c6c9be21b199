"""Energy per inference of a network: is it cheaper to add samples or to add bits?

The model is the paper's elementary-operation energy (arXiv 2507.07763),

    ε_EO = n·b_w·ε_wM + T·[(n+1)·b_a·ε_aM + ε_S(n, b_a, b_w) + ε_N],

priced from a technology table (TOML, every number with its source; the default is Horowitz's
45 nm table, ISSCC 2014) and summed over every layer of a torch model:

    >>> from pdnn.energy import Settings, analyze, energy_report, load_table
    >>> from pdnn.models import create
    >>> net = analyze(create("mlp", neuron="pbit", width=8), input_shape=(1, 28, 28), input_bits=8)
    >>> report = energy_report(net, samples=[1, 2, 5, 10],
    ...                        settings=Settings(load_table(), weight_memory="dram", activation_memory="sram"))
    >>> [c["samples"] for c in report["configs"]], report["configs"][0]["total_j"] > 0  # joules per inference
    ([1, 2, 5, 10], True)

Modules: :mod:`.tech` (tables), :mod:`.eo` (the formula, term by term), :mod:`.graph` (reading a
model), :mod:`.account` (per-layer and per-network energy), :mod:`.tradeoff` (accuracy vs energy,
Pareto front), :mod:`.report` (tables and figures). See ``docs/energy.md``.
"""
from .account import Reuse, Settings, energy_report, energy_sweep, network_energy, next_sample_increase_pct
from .eo import FLOAT_BITS, NeuronPart, accumulator_bits, eo_energy_pj, neuron_parts
from .graph import Layer, Network, analyze
from .report import format_markdown, format_report, plot_energy, plot_tradeoff
from .tech import Technology, TechError, load_table
from .tradeoff import (format_tradeoff, model_network, pareto_front, parse_tolerance, run_network, tradeoff,
                       tradeoff_runs)

# what the commands and docs/energy.md use; the functions behind them stay in their modules
__all__ = [
    "analyze", "Network", "Layer", "NeuronPart", "FLOAT_BITS",
    "eo_energy_pj", "accumulator_bits", "neuron_parts",
    "Settings", "Reuse", "network_energy", "energy_report", "energy_sweep", "next_sample_increase_pct",
    "Technology", "TechError", "load_table",
    "pareto_front", "tradeoff", "tradeoff_runs", "run_network", "model_network", "parse_tolerance",
    "format_report", "format_markdown", "format_tradeoff", "plot_energy", "plot_tradeoff",
]
