"""Energy per inference of a network: is it cheaper to add samples or to add bits?

The model is the paper's elementary-operation energy (arXiv 2507.07763),

    ε_EO = n·b_w·ε_wM + T·[(n+1)·b_a·ε_aM + ε_S(n, b_a, b_w) + ε_N],

priced from a technology table (TOML, every number with its source; the default is Horowitz's
45 nm table, ISSCC 2014) and summed over every layer of a torch model::

    from pdnn.energy import Settings, analyze, energy_report, load_table
    net = analyze(model, input_shape=(3, 32, 32), input_bits=8)
    report = energy_report(net, samples=[1, 2, 5, 10],
                           settings=Settings(load_table(), weight_memory="dram", activation_memory="sram"))
    report["configs"][0]["total_j"]          # joules per inference at T = 1

Modules: :mod:`.tech` (tables), :mod:`.eo` (the formula, term by term), :mod:`.graph` (reading a
model), :mod:`.account` (per-layer and per-network energy), :mod:`.tradeoff` (accuracy vs energy,
Pareto front), :mod:`.report` (tables and figures). See ``docs/energy.md``.
"""
from .account import (AGGREGATES, REUSE_MODES, TERMS, Reuse, Settings, energy_report, energy_sweep, layer_energy,
                      network_energy, next_sample_increase_pct)
from .eo import NeuronPart, accumulator_bits, check_bit_width, eo_energy_pj, neuron_parts, synapse_pj
from .graph import Layer, Network, analyze
from .report import format_markdown, format_report, plot_energy, plot_tradeoff
from .tech import (DEFAULT_TABLE, FLOAT_BITS, MemoryLevel, Op, Technology, TechError, available_tables, load_table,
                   parse_table)
from .tradeoff import (check_one_dataset, format_tradeoff, marginal_costs, pareto_front, parse_tolerance, run_network,
                       run_points, tradeoff, tradeoff_runs)

__all__ = [
    "analyze", "Network", "Layer", "NeuronPart",
    "eo_energy_pj", "synapse_pj", "accumulator_bits", "neuron_parts", "check_bit_width",
    "Settings", "Reuse", "REUSE_MODES", "AGGREGATES", "TERMS", "layer_energy", "network_energy", "energy_report",
    "energy_sweep", "next_sample_increase_pct",
    "Technology", "Op", "MemoryLevel", "TechError", "load_table", "parse_table", "available_tables",
    "DEFAULT_TABLE", "FLOAT_BITS",
    "pareto_front", "tradeoff", "tradeoff_runs", "run_points", "run_network", "marginal_costs", "parse_tolerance",
    "check_one_dataset",
    "format_report", "format_markdown", "format_tradeoff", "plot_energy", "plot_tradeoff",
]
