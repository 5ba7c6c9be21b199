"""Tracing a model with ``torch.fx``: one rule for which modules stay opaque.

Three parts of pdnn read a model's graph: :class:`pdnn.SampledModel` (which nodes depend on a
random draw), :mod:`pdnn.convert` (where the activations are) and :mod:`pdnn.energy` (where the
elementary operations are). All three trace with :class:`Tracer`, which keeps a module opaque --
one call node, not traced into -- when

* it is one of torch's own layers (fx's default: a ``torch.nn`` module other than ``Sequential``),
* it is a pdnn module (``pdnn.nn``: p-bits, quantisers, k-bit layers, noise injectors) or draws
  random numbers (``stochastic``): to every reader it is one unit, whatever it computes inside,
* or the reader's own ``opaque`` predicate says so.

The readers add to the rule, never take from it, because they need different detail:

* sampling keeps every module without randomness or batch norm inside opaque: it only needs where
  the draws flow and which batch norms see folded samples, and user code with Python control flow
  then cannot defeat tracing;
* convert keeps activation modules opaque (user subclasses of ``nn.Tanh`` too): it swaps them whole;
* energy keeps weight layers (user subclasses too), modules with a ``precision`` and modules
  without children opaque: each is priced whole.
"""
from __future__ import annotations

from typing import Callable

from torch import fx, nn

from .nn import is_stochastic


def is_pdnn_unit(m: nn.Module) -> bool:
    """A module every reader treats as one unit: a ``pdnn.nn`` module or one that draws."""
    return type(m).__module__.startswith("pdnn.nn") or is_stochastic(m)


class Tracer(fx.Tracer):
    """An ``fx.Tracer`` that keeps torch layers, pdnn units and what ``opaque`` accepts as leaves."""

    def __init__(self, opaque: Callable[[nn.Module], bool] = lambda m: False):
        super().__init__()
        self.opaque = opaque

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        return is_pdnn_unit(m) or self.opaque(m) or super().is_leaf_module(m, qualname)


def wrap_module_calls(gm: fx.GraphModule, selected: Callable[[nn.Module], bool],
                      wrapper: Callable[[nn.Module], nn.Module], prefix: str) -> bool:
    """Route ``gm``'s calls of the modules ``selected`` accepts through ``wrapper(module)``, one
    wrapper per module (added to ``gm`` as ``prefix_0``, ``prefix_1``, ...); the user's modules
    are not modified. Returns whether any call was rerouted."""
    wrappers: dict[str, str] = {}
    for node in gm.graph.nodes:
        if node.op == "call_module" and selected(gm.get_submodule(node.target)):
            if node.target not in wrappers:
                wrappers[node.target] = f"{prefix}_{len(wrappers)}"
                gm.add_submodule(wrappers[node.target], wrapper(gm.get_submodule(node.target)))
            node.target = wrappers[node.target]
    return bool(wrappers)
