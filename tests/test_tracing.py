"""pdnn.tracing: the one rule for which modules a torch.fx trace keeps opaque."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn import functional as F

from pdnn.convert.sites import _is_activation
from pdnn.energy.graph import _priced_whole
from pdnn.nn import GaussianNoise, PBit, QuantLinear, Quantize
from pdnn import SampledModel
from pdnn.sampling import _opaque, average_samples, build_sampled_graph
from pdnn.tracing import ModelState, Tracer

READERS = {"sampling": _opaque, "convert": _is_activation, "energy": _priced_whole}


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


def test_draws_the_layer_aggregation_names_or_averages():
    """Random torch calls beyond the usual ones: each is averaged T times (a fractional max pool
    module, like a dropout) or named as drawn once per call."""
    class Drawing(nn.Module):
        def __init__(self):
            super().__init__()
            self.pbit, self.pool = PBit(), nn.FractionalMaxPool2d(2, output_ratio=0.5)

        def forward(self, x):
            h = self.pool(self.pbit(x))
            q = h.flatten(2)
            a = F.scaled_dot_product_attention(q, q, q, dropout_p=0.5)
            return a + torch.binomial(torch.full_like(a, 4.0), torch.full_like(a, 0.5))

    with pytest.warns(UserWarning, match="but scaled_dot_product_attention, binomial draws once per call"):
        out = SampledModel(Drawing(), samples=4, aggregate="layer")(torch.randn(2, 3, 4, 4))
    assert out.shape == (2, 3, 4)
    graph = build_sampled_graph(Drawing(), 4, "layer")
    averaged = [node.args[0].target for node in graph.graph.nodes if node.target is average_samples]
    assert averaged[1:] == ["pool"]  # (the p-bit first, drawing for its input repeated)


def test_modules_another_thread_calls_while_a_model_is_traced_run_as_they_are():
    """fx patches nn.Module.__call__ for the whole process while it traces: a module another
    thread called meanwhile went into the trace's graph, and failed ("module is not installed as
    a submodule"). The two threads meet inside the trace."""
    import threading

    meeting = threading.Barrier(2, timeout=10)

    class Meets(nn.Module):
        def forward(self, h):
            meeting.wait()  # (fx runs the forward's Python: here the other thread calls its module)
            meeting.wait()
            return h

    other, results = nn.Linear(4, 2), []

    def call_other():
        meeting.wait()
        try:
            results.append(other(torch.ones(1, 4)))
        except Exception as error:  # noqa: BLE001 -- reported below
            results.append(error)
        meeting.wait()

    thread = threading.Thread(target=call_other)
    thread.start()
    graph = Tracer().trace(nn.Sequential(nn.Linear(4, 4), Meets(), PBit()))
    thread.join()
    assert isinstance(results[0], torch.Tensor) and torch.equal(results[0], other(torch.ones(1, 4)))
    assert [n.op for n in graph.nodes] == ["placeholder", "call_module", "call_module", "output"]


def test_the_state_put_back_undoes_what_a_pass_left_and_nothing_another_call_set():
    """A value a pass leaves in an attribute (a tensor or a string where there was ``None``, a new
    attribute) is undone (R165, R169); what another thread's seeded call lent a p-bit and took back
    meanwhile is not: a check put back the ``None`` lent as its generator, over the user's own,
    for good (R166); nor is another object a pass left: a hook's handle put back to ``None`` left
    its hook registered, and the forward registered it again at every pass (R172)."""
    pbit, own = PBit(), torch.Generator()
    model = nn.Sequential(nn.Linear(2, 2), pbit)
    model.last, model.mode, model.seen, model.handle, pbit.count = None, None, [], None, 0
    model.steps, model.kinds = np.int64(0), frozenset()
    object.__setattr__(pbit, "generator", None)  # lent by a seeded call in another thread
    state = ModelState(model)
    object.__setattr__(pbit, "generator", own)  # that call ends and gives it back
    model.last, model.added, pbit.count = torch.ones(2), [torch.ones(2)], 3  # what the pass leaves
    model.mode, model.seen = "warm", None
    model.handle = model[0].register_forward_hook(lambda *args: None)
    model.steps, model.kinds = np.int64(3), frozenset({1})  # (a numpy number, a frozenset: left, R173)
    state.restore()
    assert model.last is None and not hasattr(model, "added") and pbit.count == 0 and pbit.generator is own
    assert model.mode is None and model.seen == [] and list(model[0]._forward_hooks) == [model.handle.id]
    assert model.steps == 0 and model.kinds == frozenset()
