"""Energy per inference when each input takes its own T (``samples="auto"``, ``pdnn eval --adaptive``).

The energy model prices one inference at a given T (:func:`pdnn.energy.network_energy`). With T
chosen per input, what an input costs also depends on how often the weights are read while its
samples are drawn in rounds, so :func:`energies` gives three accountings side by side.
"""
from __future__ import annotations

from pathlib import Path

import torch

from .account import Reuse, Settings, network_energy
from .tradeoff import run_network


def energy_curves(run_dir: Path, memory: str, samples: list[int], batch: int) -> dict:
    """Energy per inference at each T of ``samples`` (increasing) under per-eo and per-batch reuse,
    split into the weight-memory term and the rest (the rest is what every sample adds). Only the
    T values asked for are priced: a run at large ``max_samples`` needs those its inputs took."""
    net, _ = run_network(run_dir)
    priced = torch.tensor(samples)
    out = {}
    for reuse in (Reuse("per-eo"), Reuse("per-batch", batch)):
        settings = Settings(weight_memory=memory, activation_memory=memory, reuse=reuse)
        rows = [network_energy(net, t, settings) for t in samples]
        weight = torch.tensor([r["terms"]["weight_memory_j"] for r in rows], dtype=torch.float64)
        total = torch.tensor([r["total_j"] for r in rows], dtype=torch.float64)
        out[str(reuse)] = {"samples": priced, "total": total, "weight": weight, "settings": settings.to_dict()}
    return out


def curve_settings(curves: dict) -> dict:
    """The settings behind :func:`energy_curves`, for a JSON record (without the whole table)."""
    return {k: {n: v for n, v in e["settings"].items() if n != "table"} for k, e in curves.items()}


def energies(taken: torch.Tensor, rounds: torch.Tensor, curves: dict, batch: int) -> dict:
    """Mean energy per inference (J) of inputs that took ``taken`` samples in ``rounds`` rounds.

    * ``per-eo held``: each EO's weights are read once per inference and held while its samples
      stream until the input stops (a p-bit array sampling in time): E(T_i).
    * ``per-eo per round``: the weights are read again in every round the input takes part in:
      E(T_i) + (rounds_i - 1) x the weight term.
    * ``per-batch``: the weights are read once per round for the whole batch of ``batch`` inputs
      (every input still running shares them), so a batch pays one weight read per round it runs,
      i.e. until its slowest input stops; a last batch of fewer inputs shares it among fewer.
    """
    taken, rounds = taken.cpu(), rounds.cpu()
    eo, per_batch = curves["per-eo"], curves[f"per-batch:{batch}"]
    at = torch.searchsorted(eo["samples"], taken)  # (both reuses price the same T values)
    if not torch.equal(eo["samples"][at.clamp(max=len(eo["samples"]) - 1)], taken):
        raise ValueError(f"the energy curves price T = {eo['samples'].tolist()}, not every T taken "
                         f"({sorted(set(taken.tolist()))})")
    held = eo["total"][at]
    # the weight term is the same at every T: one read per inference (per-eo) or per batch (per-batch)
    per_round = held + eo["weight"][0] * (rounds - 1)
    rest = per_batch["total"][at] - per_batch["weight"][at]
    # per_batch["weight"] is one read over `batch` inputs; a batch of len(r) inputs shares it among len(r)
    batch_rounds = torch.cat([r.max().expand(len(r)).double() * (batch / len(r)) for r in rounds.split(batch)])
    shared = rest + per_batch["weight"][0] * batch_rounds
    return {"per-eo held": held.mean().item(), "per-eo per round": per_round.mean().item(),
            f"per-batch:{batch}": shared.mean().item()}


def mj(joules: float) -> str:
    """Joules as millijoules with four figures kept (25.9986 mJ is 26.00, not 26)."""
    return f"{1e3 * joules:#.4g}"
