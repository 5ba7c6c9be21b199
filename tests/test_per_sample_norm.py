"""The per-sample batch norm over folded samples is bit-for-bit T calls of the norm on each
sample's rows: outputs, input gradients, running statistics and batch counts."""
import copy

import pytest
import torch
from torch import nn

from pdnn.per_sample_norm import PerSampleBatchNorm, _fast

SAMPLES = 4


def per_sample_by_calls(norm, x):
    return torch.cat([norm(rows) for rows in x.chunk(SAMPLES)])


CASES = [
    (nn.BatchNorm1d(6), (SAMPLES * 5, 6), None),
    (nn.BatchNorm1d(6), (SAMPLES * 5, 6, 7), None),
    (nn.BatchNorm2d(6), (SAMPLES * 3, 6, 5, 4), None),
    (nn.BatchNorm2d(6), (SAMPLES * 3, 6, 5, 4), torch.channels_last),
    (nn.BatchNorm2d(6, momentum=None), (SAMPLES * 3, 6, 5, 4), torch.channels_last),
    (nn.BatchNorm2d(6, track_running_stats=False), (SAMPLES * 3, 6, 5, 4), None),
    (nn.BatchNorm3d(6), (SAMPLES * 2, 6, 3, 4, 2), torch.channels_last_3d),
]


@pytest.mark.parametrize("norm, shape, layout", CASES)
def test_equals_one_call_per_sample(norm, shape, layout):
    torch.manual_seed(0)
    with torch.no_grad():
        norm.weight.uniform_(0.5, 2)
        norm.bias.uniform_(-1, 1)
    reference = copy.deepcopy(norm)
    x = 3 * torch.randn(shape) + 1
    grad = torch.randn(shape)
    if layout is not None:  # as in a network, the gradient arrives in the activations' layout
        x, grad = x.to(memory_format=layout), grad.to(memory_format=layout)
    assert _fast(norm, x, SAMPLES)
    outs, grads = [], []
    for module, run in ((PerSampleBatchNorm(norm, SAMPLES), None), (reference, per_sample_by_calls)):
        for _ in range(2):  # the second call sees the updated running statistics and counts
            xi = x.clone().requires_grad_()
            out = module(xi) if run is None else run(module, xi)
            out.backward(grad)
        outs.append(out)
        grads.append((xi.grad, module.weight.grad if run else module.norm.weight.grad,
                      module.bias.grad if run else module.norm.bias.grad))
    assert torch.equal(outs[0], outs[1])
    assert torch.equal(grads[0][0], grads[1][0])
    for ours, theirs in zip(grads[0][1:], grads[1][1:]):
        torch.testing.assert_close(ours, theirs)  # summed over samples in another order
    for name, buffer in reference.named_buffers():
        assert torch.equal(buffer, dict(norm.named_buffers())[name]), name


@pytest.mark.parametrize("norm, shape, layout", CASES[2:4])
def test_second_derivatives_equal_one_call_per_sample(norm, shape, layout):
    """A gradient penalty differentiates the backward pass (``create_graph=True``)."""
    torch.manual_seed(0)
    x = (3 * torch.randn(shape) + 1).to(memory_format=layout or torch.contiguous_format)
    params = list(norm.parameters())
    found = []
    for run in (PerSampleBatchNorm(norm, SAMPLES), lambda rows: per_sample_by_calls(norm, rows)):
        xi = x.clone().requires_grad_()
        out = run(xi)
        first = torch.autograd.grad((out**3).sum(), [xi, *params], create_graph=True)
        found.append(torch.autograd.grad(sum((g**2).sum() for g in first), [xi, *params]))
    for ours, theirs in zip(*found):
        torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-5 * theirs.abs().max().item())


def test_eval_mode_uses_the_running_statistics():
    norm = nn.BatchNorm2d(3)
    with torch.no_grad():
        norm.running_mean.fill_(0.5)
    norm.eval()
    x = torch.randn(SAMPLES * 2, 3, 4, 4)
    assert torch.equal(PerSampleBatchNorm(norm, SAMPLES)(x), norm(x))


def test_a_backward_hook_runs_once_per_sample():
    norm, seen = nn.BatchNorm2d(3), []
    norm.register_full_backward_hook(lambda module, grad_in, grad_out: seen.append(len(grad_out[0])))
    x = torch.randn(SAMPLES * 2, 3, 4, 4, requires_grad=True)
    assert not _fast(norm, x, SAMPLES)
    PerSampleBatchNorm(norm, SAMPLES)(x).sum().backward()
    assert seen == [2] * SAMPLES  # as T forwards of the module


def test_other_cases_take_the_calls_and_keep_their_errors():
    class Scaled(nn.BatchNorm1d):
        def forward(self, x):
            return 2 * super().forward(x)

    norm = Scaled(3)
    x = torch.randn(SAMPLES * 2, 3)
    assert not _fast(norm, x, SAMPLES)
    assert torch.equal(PerSampleBatchNorm(norm, SAMPLES)(x), per_sample_by_calls(copy.deepcopy(Scaled(3)), x))
    with pytest.raises(ValueError, match="more than 1 value per channel"):
        PerSampleBatchNorm(nn.BatchNorm1d(3), SAMPLES)(torch.randn(SAMPLES, 3))
    with pytest.raises(ValueError, match="expected 4D input"):
        PerSampleBatchNorm(nn.BatchNorm2d(3), SAMPLES)(torch.randn(SAMPLES * 2, 3))
