"""pdnn.tracing: the one rule for which modules a torch.fx trace keeps opaque."""
from __future__ import annotations

import pytest
from torch import nn

from pdnn.convert.sites import _is_activation
from pdnn.energy.graph import _priced_whole
from pdnn.nn import GaussianNoise, PBit, QuantLinear, Quantize
from pdnn.sampling import _deterministic
from pdnn.tracing import Tracer

READERS = {"sampling": _deterministic, "convert": _is_activation, "energy": _priced_whole}


class Drawing(nn.Module):
    """A user module that draws random numbers: one unit to every reader."""

    stochastic = True

    def __init__(self):
        super().__init__()
        self.inner = nn.Sequential(nn.Linear(2, 2), nn.Tanh())


@pytest.mark.parametrize("reader", READERS)
def test_every_reader_keeps_torch_layers_and_pdnn_units_opaque(reader):
    tracer = Tracer(READERS[reader])
    for module in (nn.Linear(2, 2), nn.Tanh(), nn.BatchNorm1d(2), PBit(), Quantize(2), QuantLinear(2, 2),
                   GaussianNoise(0.1), Drawing()):
        assert tracer.is_leaf_module(module, "m"), (reader, module)


def test_readers_differ_only_by_what_they_add():
    """A deterministic user block is opaque to sampling only; a container with a p-bit is
    traced into by all three."""
    block = nn.Sequential(nn.Linear(2, 2), nn.ReLU())
    assert [Tracer(r).is_leaf_module(block, "b") for r in READERS.values()] == [True, False, False]
    noisy = nn.Sequential(nn.Linear(2, 2), PBit())
    assert not any(Tracer(r).is_leaf_module(noisy, "n") for r in READERS.values())
