"""T chosen per input: the stopping rule's error level, rows leaving the batch, equality with fixed T."""
import io
import json
import math
import re
import sys

import numpy as np
import pytest
import torch
from torch import nn

from pdnn import SampledModel
from pdnn.adaptive import (SampleStats, StoppingRule, adaptive_sample, disagreement_probability, oracle_samples,
                           parse_checkpoints, simulate, student_t_cdf)
from pdnn.cli import main
from pdnn.errors import UsageError
from pdnn.nn import PBit


def binomial_bound(p: float, n: int, z: float = 4.0) -> float:
    """The most a rate with true value <= p measured on n trials exceeds it, z standard errors."""
    return p + z * math.sqrt(p * (1 - p) / n)


def test_student_t_cdf_matches_closed_forms():
    x = torch.linspace(-40, 40, 161, dtype=torch.float64)
    cauchy = 0.5 + torch.atan(x) / math.pi
    two = 0.5 + x / (2 * torch.sqrt(2 + x**2))
    assert torch.allclose(student_t_cdf(x, 1), cauchy, atol=1e-14)
    assert torch.allclose(student_t_cdf(x, 2), two, atol=1e-14)
    # many degrees of freedom: close to the normal CDF
    normal = 0.5 * (1 + torch.erf(x / math.sqrt(2)))
    assert torch.allclose(student_t_cdf(x, 200), normal, atol=2e-3)
    assert student_t_cdf(torch.tensor([-math.inf, math.inf]), 3).tolist() == [0.0, 1.0]


def test_student_t_cdf_matches_scipy():
    stats = pytest.importorskip("scipy.stats")
    x = torch.linspace(-30, 30, 121, dtype=torch.float64)
    for dof in (3, 4, 7, 10, 49):
        assert torch.allclose(student_t_cdf(x, dof), torch.from_numpy(stats.t.cdf(x.numpy(), dof)), atol=1e-13)


def normal_leads(rows: int, n: int, generator: torch.Generator, relative: bool, prior_samples: int = 2) -> torch.Tensor:
    """Two-class outputs whose per-sample lead D = f_0 - f_1 follows the rule's own model:
    variance from a scaled inverse chi-square with ``prior_samples`` degrees of freedom around 1
    (the rule's prior, with σ₀² = 1), mean uniform on [-1, 1] or, ``relative``, on ±2σ: spread
    widely against each input's own spread, a near-flat prior even for one sample (docs/adaptive.md
    says what the narrower one does to a stop at T = 1)."""
    chi2 = torch.distributions.Chi2(torch.tensor(float(prior_samples), dtype=torch.float64)).sample((rows,))
    sigma = (prior_samples / chi2.clamp(min=1e-3)).sqrt()
    mu = (torch.rand(rows, generator=generator, dtype=torch.float64) - 0.5) * (4.0 * sigma if relative else 2.0)
    d = mu + sigma * torch.randn(n, rows, generator=generator, dtype=torch.float64)
    return torch.stack([d / 2, -d / 2], -1)


@pytest.mark.parametrize("error", [0.05, 0.01])
@pytest.mark.parametrize("prior_variance, relative", [(None, False), (None, True), (1.0, True)])
def test_error_level_holds_on_inputs_drawn_from_the_rules_model(error, prior_variance, relative):
    """With the prior variance given (its true value) the rule may stop at T = 1; learnt, it
    looks from T = 2 and learns it there from the batch."""
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    rows, n = 20_000, 50
    outputs = normal_leads(rows, n, g, relative)
    rule = StoppingRule(n, error, prior_variance=prior_variance)
    mean, taken, learnt = simulate(outputs, rule)
    differs = (mean.argmax(-1) != outputs.sum(0).argmax(-1)).double().mean().item()
    assert differs <= binomial_bound(error, rows)
    assert (taken < n).double().mean() > 0.5  # and it does stop early
    if prior_variance is None:
        assert taken.min() == 2 and learnt.prior_variance > 0 and learnt.first_look() == 1
    else:
        assert (taken == 1).any() and learnt == rule


def test_a_first_call_of_one_input_does_not_teach_the_prior_alone():
    """A first call of one input had taught σ₀² from that input's chance spread at T = 2 (near 0
    for some), and the next call stopped up to 19 % of its inputs wrongly at error 0.05 (8 of the 20
    first inputs below gave a rate above the bound). The spreads are pooled until PRIOR_INPUTS inputs
    have shown theirs; until then no input stops early."""
    from pdnn.adaptive import PRIOR_INPUTS

    torch.manual_seed(1)  # (normal_leads draws the inputs' spreads from the global stream)
    g = torch.Generator().manual_seed(1)
    rows, n, error = 20_000, 50, 0.05
    later = normal_leads(rows, n, g, relative=True)
    spread_at_two = lambda first: 2 * (first[0, :, 0] - first[1, :, 0]).pow(2)  # noqa: E731 (of D = 2 f_0 at T = 2)
    for _ in range(20):
        first = normal_leads(1, n, g, relative=True)
        _, taken, rule = simulate(first, StoppingRule(n, error))
        assert taken.tolist() == [n] and rule.prior_variance is None
        assert rule.prior_pool == (pytest.approx(spread_at_two(first).item(), rel=1e-12), 1)
        mean, _, learnt = simulate(later, rule)
        differs = (mean.argmax(-1) != later.sum(0).argmax(-1)).double().mean().item()
        assert differs <= binomial_bound(error, rows) and learnt.prior_pool == (0.0, 0)
        pooled = (rule.prior_pool[0] + spread_at_two(later).sum().item()) / (rows + 1)
        assert learnt.prior_variance == pytest.approx(pooled, rel=1e-9)
    # inputs one at a time: none stops early until PRIOR_INPUTS have shown their spread, then σ₀² is their mean
    rule, spreads = StoppingRule(n, error), []
    for i in range(PRIOR_INPUTS + 8):
        one = later[:, i : i + 1]
        _, taken, rule = simulate(one, rule)
        if len(spreads) < PRIOR_INPUTS:
            spreads.append(spread_at_two(one).item())
            assert taken.item() == n if len(spreads) < PRIOR_INPUTS else taken.item() >= 2
    assert rule.prior_variance == pytest.approx(sum(spreads) / PRIOR_INPUTS, rel=1e-9)
    # votes one at a time give the σ₀² of the same votes in a batch: an input whose first two votes
    # agree counts its spread of 0, as in the batch's mean (skipped, the 32 lone inputs had learnt none)
    votes = nn.functional.one_hot(torch.randint(0, 2, (n, PRIOR_INPUTS), generator=g), 2).double()
    alone = StoppingRule(n, error)
    for i in range(PRIOR_INPUTS):
        _, taken, alone = simulate(votes[:, i : i + 1], alone)
    _, _, together = simulate(votes, StoppingRule(n, error))
    assert alone.prior_variance == pytest.approx(together.prior_variance, rel=1e-12) and taken.item() < n
    assert alone.forget() == StoppingRule(n, error)  # (a forgotten prior keeps no spreads of the old network)
    for pool in ((-1.0, 2), (1000.0, 0), (1.0, PRIOR_INPUTS)):
        with pytest.raises(ValueError, match="prior_pool must be"):
            StoppingRule(n, error, prior_pool=pool)
    # with ν₀ = 0 the prior has no weight: a first call of a few inputs need not wait for it
    _, taken, rule = simulate(later[:, :4], StoppingRule(n, error, prior_samples=0))
    assert taken.min() < n and rule.prior_pool[1] == 4


@pytest.mark.parametrize("classes", [2, 10])
def test_error_level_holds_for_votes_with_known_class_probabilities(classes):
    """Each sample votes for one class with known probabilities p (drawn from a uniform Dirichlet),
    the discrete worst case for a rule built on a normal model."""
    g = torch.Generator().manual_seed(1)
    rows, n, error = 20_000, 50, 0.05
    p = torch.distributions.Dirichlet(torch.ones(classes)).sample((rows,))
    votes = nn.functional.one_hot(torch.multinomial(p, n, replacement=True, generator=g).T, classes).double()
    mean, taken, _ = simulate(votes, StoppingRule(n, error))
    differs = (mean.argmax(-1) != votes.sum(0).argmax(-1)).double().mean().item()
    assert differs <= binomial_bound(error, rows)
    assert taken.double().mean() < n


def test_oracle_is_the_last_change_of_the_running_decision():
    # running argmax per row: row 0: 0,1,0,0 -> settles at 3; row 1: always 1 -> 1; row 2: 1,1,1,0 -> 4
    scores = torch.tensor([
        [[1.0, 0.0], [0.0, 1.0], [0.0, 1.0]],
        [[0.0, 2.0], [0.0, 1.0], [0.0, 1.0]],
        [[2.0, 0.0], [0.0, 1.0], [0.0, 1.0]],
        [[0.0, 0.0], [0.0, 1.0], [5.0, 0.0]],
    ])
    assert oracle_samples(scores).tolist() == [3, 1, 4]


class RowCounter(nn.Module):
    """Counts the rows that reach it (after the first p-bit: samples x inputs per pass)."""

    def __init__(self):
        super().__init__()
        self.rows = 0

    def forward(self, x):
        self.rows += x.shape[0]
        return x


def mixed_net(counter: nn.Module) -> nn.Module:
    """Input 0 gives a decided input (p-bits saturated towards class 0), input 1 a coin flip."""
    lin = nn.Linear(1, 2)
    with torch.no_grad():
        lin.weight.copy_(torch.tensor([[1.0], [-1.0]]))
        lin.bias.zero_()
    return nn.Sequential(nn.Linear(1, 1), PBit(beta=1.0), counter, lin)


def test_stopped_rows_leave_the_batch():
    counter = RowCounter()
    net = mixed_net(counter)
    with torch.no_grad():
        net[0].weight.fill_(1.0)
        net[0].bias.zero_()
    x = torch.tensor([[20.0]] * 50 + [[0.0]] * 50)  # 50 settled inputs, 50 coin flips
    sampled = SampledModel(net, samples="auto", max_samples=40, error=0.01, seed=3)
    sampled.plan(x), sampled.plan(x[:1])  # the one-time checks of the fold (a few rows), not counted
    counter.rows, first_look = 0, []
    hook = counter.register_forward_hook(lambda m, i, o: first_look.append(o.view(2, 100)) if not first_look else None)
    out = sampled(x)
    hook.remove()
    taken = sampled.last_samples
    assert out.shape == (100, 2) and taken.shape == (100,)
    assert counter.rows == int(taken.sum())  # no work on a stopped row
    # the decided rows' samples all agree (lead 2), so their spread is the prior's alone: the
    # batch's mean variance of the lead at the first look (T = 2), 8 for each coin flip whose two
    # bits differ. They stop at the first look where that spread allows it.
    bits = first_look[0]
    assert torch.all(bits[:, :50] == 1)
    stats = SampleStats(1, 2)
    stats.prior_variance = 8 * (bits[0, 50:] != bits[1, 50:]).sum().item() / 100
    rule = StoppingRule(40, 0.01)
    for t in rule.schedule():
        stats.count, stats.total = t, torch.tensor([[t, -t]], dtype=torch.float64)
        stats.outer = t * torch.tensor([[[1.0, -1.0], [-1.0, 1.0]]], dtype=torch.float64)
        if t == 40 or disagreement_probability(stats, 40) <= 0.01:
            break
    assert torch.all(taken[:50] == t) and t <= 4
    assert (taken[50:] > 2).float().mean() > 0.5
    assert counter.rows < 100 * 40


def test_batched_tensors_inside_an_argument_leave_the_batch_with_their_rows():
    class Scaled(nn.Module):
        def __init__(self):
            super().__init__()
            self.body, self.act, self.head = nn.Linear(2, 8), PBit(), nn.Linear(8, 3)

        def forward(self, x, extras):
            return self.head(self.act(self.body(x))) * extras["scale"]

    x = torch.cat([torch.full((20, 2), 20.0), torch.zeros(20, 2)])  # 20 settle early, 20 do not
    scale = torch.arange(1.0, 41.0)[:, None].expand(40, 3)
    sampled = SampledModel(Scaled().eval(), samples="auto", max_samples=20, seed=0)
    out = sampled(x, {"scale": scale})
    assert out.shape == (40, 3) and sampled.last_samples.min() < sampled.last_samples.max()


def test_each_round_is_split_by_max_rows_and_evaluation_bounds_its_passes():
    """A round of T samples of B inputs runs in passes of at most max_rows rows (one input's T
    rows where T alone exceeds it), as a fixed T is split; `pdnn eval --adaptive` bounds them."""
    from pdnn.evaluate import SPLIT_ROWS, adaptive_accuracy

    passes = []
    counter = RowCounter()
    counter.register_forward_hook(lambda m, i, o: passes.append(o.shape[0]))
    net = mixed_net(counter)
    x = torch.tensor([[0.0]] * 64)  # coin flips: most inputs run many rounds
    sampled = SampledModel(net, samples="auto", max_samples=50, seed=1, max_rows=32)
    sampled(x)
    looks = sampled.stopping.schedule()
    longest_round = max(t - s for s, t in zip([0, *looks], looks) if (sampled.last_samples >= t).any())
    assert max(passes) <= max(32, longest_round) and len(passes) > len(looks)
    passes.clear()
    adaptive_accuracy(net, torch.zeros(500, 1), torch.zeros(500, dtype=torch.long), StoppingRule(50), seed=1)
    assert max(passes) <= SPLIT_ROWS


def test_a_long_round_is_drawn_in_pieces_that_bound_memory():
    """The last round runs from 256 to max_samples: drawn at once, max_samples 10^8 ran out of
    memory (a traceback); its samples come in pieces of at most ROUND_PIECE, summed as they come."""
    from pdnn.adaptive import ROUND_PIECE

    calls = []
    g = torch.Generator().manual_seed(0)

    def sample(x, samples):
        calls.append(samples)
        return torch.randn(samples, len(x), 3, generator=g, dtype=torch.float64)

    n = 2 * ROUND_PIECE + 300
    mean, taken, _ = adaptive_sample(sample, torch.zeros(4, 1), rule=StoppingRule(n, rule="never"))
    assert max(calls) == ROUND_PIECE and sum(calls) == n and (taken == n).all()
    replay = torch.Generator().manual_seed(0)
    drawn = torch.cat([torch.randn(k, 4, 3, generator=replay, dtype=torch.float64) for k in calls])
    assert torch.allclose(mean, drawn.mean(0), rtol=0, atol=1e-12)


def test_a_sampling_function_that_returns_fewer_samples_is_named():
    """A replay over a recording shorter than max_samples returned no samples, and the rounds
    asked again forever."""
    recorded = torch.randn(30, 4, 3, dtype=torch.float64)
    drawn = 0

    def replay(x, samples):
        nonlocal drawn
        drawn += samples
        return recorded[drawn - samples : drawn, x]

    with pytest.raises(ValueError, match=r"returned outputs of shape \(\d+, 4, 3\) for \d+ samples of 4 inputs"):
        adaptive_sample(replay, torch.arange(4), rule=StoppingRule(50, rule="never"))


def test_the_first_call_learns_the_prior_that_lets_later_calls_stop_at_one_sample():
    """The first call cannot look at T = 1 (no spread yet); it learns the prior variance, and the
    next call stops the decided inputs after one sample where the rule, given that prior, says so."""
    net = mixed_net(nn.Identity())
    with torch.no_grad():
        net[0].weight.fill_(1.0)
        net[0].bias.zero_()
    x = torch.tensor([[20.0]] * 95 + [[0.0]] * 5)  # 95 decided inputs (lead 2 every sample), 5 coin flips
    sampled = SampledModel(net, samples="auto", max_samples=40, error=0.05, seed=0)
    assert sampled.stopping.prior_variance is None
    sampled(x)
    assert sampled.last_samples.min() == 2
    learnt = sampled.stopping.prior_variance
    assert learnt is not None and sampled.stopping.schedule()[0] == 1
    stats = SampleStats(1, 2)
    stats.count, stats.total = 1, torch.tensor([[1.0, -1.0]], dtype=torch.float64)
    stats.outer = torch.tensor([[[1.0, -1.0], [-1.0, 1.0]]], dtype=torch.float64)
    settles = disagreement_probability(stats, 40, 2, learnt).item() <= 0.05
    sampled(x)
    assert settles and torch.all(sampled.last_samples[:95] == 1)
    assert sampled.stopping.prior_variance == learnt  # kept, not learnt again


def test_a_rule_whose_only_look_is_at_max_samples_learns_the_prior_there():
    """At max_samples 2 the look at N is the only one with a spread: it teaches σ₀², so that later
    batches look at T = 1 (they had run every input to 2, which is fixed T = 2)."""
    g = torch.Generator().manual_seed(1)
    outputs = normal_leads(400, 2, g, relative=True)
    _, taken, learnt = simulate(outputs[:, :200], StoppingRule(2, 0.1))
    assert torch.all(taken == 2) and learnt.prior_variance is not None and learnt.schedule() == [1, 2]
    assert learnt.prior_variance == pytest.approx(outputs[:, :200].diff(dim=-1).squeeze(-1).var(0).mean().item())
    _, taken, _ = simulate(outputs[:, 200:], learnt)
    assert (taken == 1).any() and (taken == 2).any()


def test_the_looks_recorded_are_those_some_batch_made():
    """The first batch learns the prior from T = 2; only later batches look at T = 1, and an
    evaluation of one batch says it never did."""
    from pdnn.cli.evaluate import prior_note
    from pdnn.evaluate import adaptive_accuracy
    net = mixed_net(nn.Identity())
    with torch.no_grad():
        net[0].weight.fill_(1.0)
        net[0].bias.zero_()
    x, y = torch.tensor(([[20.0]] * 30 + [[0.0]] * 2) * 2), torch.zeros(64, dtype=torch.long)
    one = adaptive_accuracy(net, x, y, StoppingRule(10, 0.05), batch_size=64)["rule"]
    two = adaptive_accuracy(net, x, y, StoppingRule(10, 0.05), batch_size=32)["rule"]
    assert one["checkpoints"] == [2, 3, 4, 5, 6, 8, 10] and prior_note(one) == ""
    assert two["checkpoints"] == [1, 2, 3, 4, 5, 6, 8, 10] and prior_note(two) == ", the first batch from T = 2"
    assert one["prior_variance_learnt"] and two["prior_variance_learnt"]


@pytest.mark.parametrize("max_samples", [1, 2, 7, 50])
def test_samples_per_input_lie_in_the_schedule_between_min_and_max(max_samples):
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(4, 16), PBit(), nn.Linear(16, 5))
    sampled = SampledModel(net, samples="auto", max_samples=max_samples, error=0.05, seed=0)
    sampled(torch.randn(64, 4) * 3)
    taken = sampled.last_samples
    assert taken.min() >= min(2, max_samples) and taken.max() <= max_samples
    assert set(taken.tolist()) <= set(StoppingRule(max_samples).schedule())


@pytest.mark.parametrize("checkpoints", [(10,), range(2, 21)])
def test_inputs_stop_only_at_the_checkpoints_given(checkpoints):
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(4, 16), PBit(), nn.Linear(16, 5))
    sampled = SampledModel(net, samples="auto", max_samples=20, error=0.05, seed=0, checkpoints=checkpoints)
    sampled(torch.randn(64, 4) * 3)
    schedule = [t for t in checkpoints if t < 20] + [20]
    assert sampled.stopping.schedule() == schedule
    assert set(sampled.last_samples.tolist()) <= set(schedule)
    if len(schedule) > 2:  # looking after every sample, some input stops where the default never looks
        assert set(sampled.last_samples.tolist()) - set(StoppingRule(20).schedule())


def test_checkpoints_from_the_command_line():
    assert parse_checkpoints("every", 5) == (1, 2, 3, 4, 5)
    assert parse_checkpoints("every", 1) == (1,) and StoppingRule(1, checkpoints=(1,)).schedule() == [1]
    # T = 1 is looked at only with a prior variance, and one pseudo-sample of it at least
    assert StoppingRule(5, checkpoints=(1, 2, 4)).schedule() == [2, 4, 5]
    assert StoppingRule(5, checkpoints=(1, 2, 4), prior_variance=1.0).schedule() == [1, 2, 4, 5]
    assert StoppingRule(5, checkpoints=(1, 2, 4), prior_variance=1.0, prior_samples=0).schedule() == [2, 4, 5]
    assert StoppingRule(5, rule="never", checkpoints=(1, 2, 4), prior_variance=1.0).schedule() == [2, 4, 5]
    for bad in (-1.0, math.inf, math.nan, "1", True):
        with pytest.raises(ValueError, match="prior_variance must be a finite number > 0 or None"):
            StoppingRule(prior_variance=bad)
    assert parse_checkpoints("2,4,8", 50) == (2, 4, 8)
    with pytest.raises(ValueError, match="checkpoints must be 'every' or comma-separated integers, got '2,x'"):
        parse_checkpoints("2,x", 50)
    with pytest.raises(ValueError, match="checkpoints must be increasing integers >= 1, got '0,5'"):
        parse_checkpoints("0,5", 50)
    with pytest.raises(ValueError, match="checkpoints must be increasing integers >= 1, got 5"):
        StoppingRule(checkpoints=5)
    assert StoppingRule(checkpoints=[2, 4]).checkpoints == (2, 4)
    with pytest.raises(ValueError, match=r"checkpoints must be increasing integers >= 1, got \{1, 2\}"):
        StoppingRule(checkpoints={1, 2})  # (a set's order is its hashes': {40, 33} iterates as 40, 33)
    # the error level as every other option takes a number: a tensor or numpy scalar of one too
    assert StoppingRule(error=torch.tensor(0.05)).error == pytest.approx(0.05) and StoppingRule(
        error=np.float32(0.05)).error == pytest.approx(0.05)
    for bad in (True, "0.05", torch.tensor([0.1, 0.2]), math.nan):
        with pytest.raises(ValueError, match="error level must be 0 .* or a number in"):
            StoppingRule(error=bad)


def test_never_stopping_equals_fixed_t_on_the_same_draws():
    """With no early stop every round runs the whole batch, so the draws are those of fixed-T calls
    of the same sizes on the same generator; integer-valued outputs make the means exact."""
    torch.manual_seed(0)
    lin = nn.Linear(8, 3, bias=False)
    with torch.no_grad():
        lin.weight.copy_(torch.randint(-3, 4, (3, 8)).float())
    net = nn.Sequential(nn.Linear(5, 8), PBit(), lin)
    x = torch.randn(32, 5)
    n = 20
    auto = SampledModel(net, samples="auto", max_samples=n, rule="never", seed=7)
    adaptive = auto(x)
    assert (auto.last_samples == n).all()
    fixed = SampledModel(net, reduce="none", seed=7)
    schedule, parts, done = StoppingRule(n).schedule(), [], 0
    for target in schedule:
        parts.append(fixed.sample(x, samples=target - done))
        done = target
    reference = torch.cat(parts)
    assert reference.shape[0] == n
    assert torch.equal(adaptive, reference.mean(0))


def test_a_rule_that_never_settles_matches_fixed_t():
    """Inputs at an exact tie never settle at a small error level: the predictive rule then runs
    them to max_samples and returns the fixed-T mean of the same draws."""
    votes = torch.zeros(30, 4, 2)
    votes[0::2, :, 0] = 1.0  # classes alternate: the lead is 1, -1, 1, ... -> sums 1, 0, 1, 0
    votes[1::2, :, 1] = 1.0
    mean, taken, _ = simulate(votes, StoppingRule(30, 1e-6))
    assert (taken == 30).all()
    assert torch.equal(mean, votes.mean(0))


@pytest.mark.filterwarnings("ignore:`torch.jit.trace")  # deprecated in favour of export, still used
def test_bad_arguments_are_named():
    net = nn.Sequential(nn.Linear(2, 4), PBit(), nn.Linear(4, 3))
    with pytest.raises(ValueError, match="max_samples must be an integer >= 1, got 0"):
        SampledModel(net, samples="auto", max_samples=0)
    with pytest.raises(ValueError, match="unknown stopping rule 'sprt'"):
        SampledModel(net, samples="auto", rule="sprt")
    with pytest.raises(ValueError, match=r"error level must be 0 .* or a number in \[1e-12, 1\) .*, got nan"):
        SampledModel(net, samples="auto", error=float("nan"))
    with pytest.raises(ValueError, match="needs reduce=\"mean\""):
        SampledModel(net, samples="auto", reduce="vote")
    sampled = SampledModel(net, samples="auto")
    sampled(torch.randn(40, 2))
    with pytest.raises(ValueError, match="contains NaN"):
        sampled(torch.full((3, 2), float("nan")))
    assert sampled.last_samples is None  # (it kept the call before's, of 40 inputs, as if of this one)
    for word in ("many", "Auto", "auto "):  # (a case or a space away from "auto": named with it)
        with pytest.raises(ValueError, match=f"samples \\(T\\) must be an integer >= 1 or \"auto\" \\(T chosen per "
                                             f"input\\), got '{word}'"):
            SampledModel(net, samples=word)
    with pytest.raises(ValueError, match="checkpoints must be increasing"):
        StoppingRule(checkpoints=(3, 2))
    sampled = SampledModel(net, samples="auto")
    with pytest.raises(ValueError, match='samples="auto" cannot be traced, exported or transformed'):
        torch.jit.trace(sampled, torch.randn(4, 2), check_trace=False)  # (it named 3 degrees of freedom as bad)
    with pytest.raises(ValueError, match='samples="auto" cannot be traced, exported or transformed'):
        torch.func.vmap(sampled, randomness="different")(torch.randn(3, 4, 2))
    with pytest.raises(ValueError, match=r"input of shape \(2, 2\) contains NaN"):
        sampled(torch.tensor([[0.0, float("nan")], [1.0, 1.0]]))
    with pytest.raises(ValueError, match=r"input 0 of the batch of shape \(2, 2\) contains an infinite value, and the "
                                         r"model's output for it"):
        sampled(torch.full((2, 2), float("inf")))  # (inf - inf in the first layer: it blamed the output)
    overflowing = lambda x, samples: torch.tensor([[0.0, 1.0], [float("inf"), 0.0]]).expand(samples, 2, 2)  # noqa: E731
    with pytest.raises(ValueError, match="output contains an infinite score"):  # (input 0 was blamed for row 1's)
        adaptive_sample(overflowing, torch.tensor([[float("inf")], [1.0]]))
    with pytest.raises(ValueError, match="output contains NaN"):
        simulate(torch.full((50, 2, 3), float("nan")), StoppingRule(50))
    log_probabilities = torch.zeros(50, 2, 3).log_softmax(-1)
    log_probabilities[..., 2] = -float("inf")  # a class that can never win: no spread to judge by
    with pytest.raises(ValueError, match="output contains an infinite score"):
        simulate(log_probabilities, StoppingRule(50))
    votes = torch.zeros(50, 2, 3, dtype=torch.long)  # a mean of integer votes would be cut to an integer
    with pytest.raises(ValueError, match="needs floating-point class scores, but the output is torch.int64"):
        simulate(votes, StoppingRule(50))
    with pytest.raises(ValueError, match="class scores"):
        adaptive_sample(lambda x, samples: torch.zeros(samples, len(x)), torch.zeros(3, 2))
    one_logit = nn.Sequential(nn.Linear(2, 4), PBit(), nn.Linear(4, 1))  # no rival class to settle against
    with pytest.raises(ValueError, match=r"class scores \[B, C >= 2\] per sample, got shape \(3, 1\)"):
        SampledModel(one_logit, samples="auto")(torch.zeros(3, 2))
    for shape in ((4, 2), (4, 2, 0), (4, 2, 1)):  # (no class failed in argmax; one has no rival)
        with pytest.raises(ValueError, match=rf"oracle needs recorded outputs \[N >= 1, B, C >= 2\], got shape "
                                             rf"{re.escape(str(shape))}"):
            oracle_samples(torch.zeros(shape))
    recorded = torch.randn(4, 3, 2)
    recorded[2, 1, 0] = float("nan")  # its argmax was taken as a class
    with pytest.raises(ValueError, match="the recorded outputs of 1 of 3 inputs hold NaN"):
        oracle_samples(recorded)


def test_a_rule_or_recording_of_another_type_is_named():
    recorded = torch.randn(50, 2, 3)
    for call in (lambda: simulate(recorded.numpy(), StoppingRule(50)), lambda: oracle_samples(recorded.numpy())):
        with pytest.raises(UsageError, match="recorded outputs must be a torch.Tensor .*, got a ndarray"):
            call()
    with pytest.raises(UsageError, match=r"must be a pdnn.adaptive.StoppingRule, got \{'max_samples': 50\}"):
        simulate(recorded, {"max_samples": 50})
    sampled = SampledModel(nn.Sequential(nn.Linear(3, 4), PBit(), nn.Linear(4, 2)), samples="auto")
    sampled.stopping = None  # an attribute anyone can set: checked where it is used
    with pytest.raises(UsageError, match="must be a pdnn.adaptive.StoppingRule, got None"):
        sampled(torch.randn(2, 3))


def test_numpy_numbers_set_the_rule_as_python_numbers_do():
    rule = StoppingRule(max_samples=np.int64(20), error=np.float32(0.25), checkpoints=np.arange(1, 11),
                        prior_samples=np.int64(2), prior_variance=np.float64(1.5))
    assert rule == StoppingRule(20, float(np.float32(0.25)), checkpoints=tuple(range(1, 11)), prior_variance=1.5)
    assert type(rule.max_samples) is type(rule.prior_samples) is int and type(rule.error) is float
    for bad in (dict(max_samples=20.0), dict(prior_samples=True), dict(checkpoints=[1.0, 2])):
        with pytest.raises(ValueError, match=f"{next(iter(bad))} must be"):
            StoppingRule(**bad)


def test_eval_cli_adaptive(tmp_path, capsys):
    run = tmp_path / "run"
    tiny = ["--dataset", "demo", "--subset", "256", "--model", "mlp", "--width", "32", "--quiet"]
    assert main(["train", *tiny, "--out", str(run), "--epochs", "1"]) == 0
    copy = tmp_path / "copy.json"
    assert main(["eval", str(run), "--adaptive", "--max-samples", "20", "--error", "0.05", "--json", str(copy),
                 "--quiet"]) == 0
    document = json.loads(copy.read_text())
    assert 0 <= document["accuracy"] <= 1 and 2 <= document["mean_samples"] <= 20
    assert sum(document["samples_histogram"].values()) == document["examples"]
    assert "mean T" in capsys.readouterr().out
    assert main(["eval", str(run), "--adaptive", "--max-samples", "20", "--checkpoints", "every", "--json", str(copy),
                 "--quiet"]) == 0
    rule = json.loads(copy.read_text())["rule"]  # the only batch learns the prior, and never looks at T = 1
    assert rule["checkpoints"] == list(range(2, 21)) and rule["prior_samples"] == 2
    assert rule["prior_variance_learnt"] and rule["prior_variance"] > 0
    out = capsys.readouterr().out
    assert "looks at T = 2, 3, 4, 5, 6, 7," in out and "the first batch" not in out
    assert main(["eval", str(run), "--adaptive", "--max-samples", "50", "--checkpoints", "every", "--subset", "16",
                 "--quiet"]) == 0  # a long list: its ends (it printed every look, 9,999 at the most)
    assert f"looks at T = {', '.join(map(str, range(2, 20)))}, ..., 49, 50 (49 looks)" in capsys.readouterr().out
    assert main(["eval", str(run), "--adaptive", "--max-samples", "20", "--subset", "31", "--quiet"]) == 0
    out = capsys.readouterr().out  # 31 inputs: too few to learn the prior from, so all run to N
    assert "no input stopped early: the rule learns its prior variance from the spread of 32 inputs" in out
    assert "mean T 20.00" in out and "T: 20:31" in out
    assert main(["eval", str(run), "--adaptive", "--max-samples", "2", "--subset", "64", "--quiet"]) == 0
    assert "no input stopped early" not in capsys.readouterr().out  # (the only look is at N: nothing to learn for)
    assert main(["eval", str(run), "--adaptive", "--max-samples", "20", "--subset", "20", "--prior-samples", "0",
                 "--error", "0.3", "--quiet"]) == 0
    assert "no input stopped early" not in capsys.readouterr().out  # (with no weight, inputs do not wait for it)
    assert main(["eval", str(run), "--adaptive", "--max-samples", "4", "--subset", "20", "--error", "0",
                 "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "no input stops early at error 0" in out and "learns its prior variance" not in out
    assert main(["eval", str(run), "--adaptive", "--prior-samples", "-1", "--quiet"]) == 2
    assert "error: --prior-samples must be an integer from 0 to 10000 (each look" in capsys.readouterr().err
    assert main(["eval", str(run), "--adaptive", "--checkpoints", "2,x", "--quiet"]) == 2
    assert "error: --checkpoints must be 'every' or comma-separated integers, got '2,x'" in capsys.readouterr().err
    for looks in ("0,5", "5,3", "2,2"):  # the option named and its value as typed
        assert main(["eval", str(run), "--adaptive", "--checkpoints", looks, "--quiet"]) == 2
        assert f"error: --checkpoints must be increasing integers >= 1, got '{looks}'" in capsys.readouterr().err
    assert main(["eval", str(run), "--adaptive", "--error", "2", "--quiet"]) == 2
    assert "error: --error must be 0 (every input runs to max_samples) or a number in" in capsys.readouterr().err
    for looks in ([], ["--checkpoints", "every"]):  # (the looks were checked against it first)
        assert main(["eval", str(run), "--adaptive", "--max-samples", "0", *looks, "--quiet"]) == 2
        assert "--max-samples must be an integer >= 1, got 0" in capsys.readouterr().err
    assert main(["eval", str(run), "--samples", "1", "--repeats", "0", "--quiet"]) == 2  # named as the option
    assert "--repeats must be an integer >= 1, got 0" in capsys.readouterr().err
    assert main(["eval", str(run), "--adaptive", "--rule", "sprt", "--quiet"]) == 2
    assert "unknown stopping rule 'sprt'" in capsys.readouterr().err
    for unread in (["--error", "0.3"], ["--prior-samples", "7"]):  # accepted and recorded, never read (R162)
        assert main(["eval", str(run), "--adaptive", "--rule", "never", *unread, "--quiet"]) == 2
        assert (f"{unread[0]} is only used by --rule predictive (the never rule runs every input to --max-samples)"
                in capsys.readouterr().err)
    assert main(["eval", str(run), "--adaptive", "--rule", "never", "--max-samples", "3", "--subset", "64",
                 "--quiet"]) == 0
    assert "T per input: never rule, at most 3; looks at T = 2, 3)" in capsys.readouterr().out
    assert main(["eval", str(run), "--adaptive", "--checkpoints", "1,10", "--max-samples", "10", "--subset", "600",
                 "--quiet"]) == 0  # two batches: the first learns the prior, and its only look is at T = 10 (R162)
    assert "looks at T = 1, 10, the first batch from T = 10)" in capsys.readouterr().out
    assert main(["eval", str(run), "--adaptive", "--aggregate", "layer", "--quiet"]) == 2
    assert "got --aggregate layer" in capsys.readouterr().err
    assert main(["eval", str(run), "--adaptive", "--max-samples", "10", "--checkpoints", "2,5,20", "--quiet"]) == 2
    assert ("--checkpoints 2,5,20 looks at T = 20, beyond --max-samples 10; expected checkpoints up to it"
            in capsys.readouterr().err)
    assert main(["eval", str(run), "--adaptive", "--max-samples", "10", "--json", str(copy), "--quiet"]) == 0
    assert json.loads(copy.read_text())["rule"]["checkpoints"] == [2, 3, 4, 5, 6, 8, 10]  # the default's, to 10
    capsys.readouterr()
    evaluations = sorted(p.name for p in run.iterdir() if p.suffix == ".json")
    assert main(["eval", str(run), "--max-samples", "20", "--error", "0.05", "--quiet"]) == 2
    assert "--max-samples, --error are only used with --adaptive" in capsys.readouterr().err
    assert main(["eval", str(run), "--checkpoints", "every", "--quiet"]) == 2
    assert "--checkpoints is only used with --adaptive" in capsys.readouterr().err
    assert main(["eval", str(run), "--adaptive", "--samples", "1,5", "--quiet"]) == 2
    assert "--samples is only used without --adaptive" in capsys.readouterr().err
    assert sorted(p.name for p in run.iterdir() if p.suffix == ".json") == evaluations  # nothing written


def test_max_samples_beyond_the_cap_is_refused_before_any_work(tmp_path, capsys, monkeypatch):
    """--max-samples 10**11 was accepted and ran without end, saying nothing; with --checkpoints every
    it first built a look per T, a tuple larger than memory. Refused where it is given, before the
    run is read or a look made."""
    from pdnn.adaptive import MAX_SAMPLES
    expected = f"must be at most {MAX_SAMPLES} (an input left undecided draws that many samples"
    assert StoppingRule(MAX_SAMPLES).max_samples == MAX_SAMPLES
    for make in (lambda: StoppingRule(MAX_SAMPLES + 1), lambda: parse_checkpoints("every", 10**11),
                 lambda: SampledModel(nn.Sequential(nn.Linear(2, 3), PBit()), samples="auto", max_samples=10**11)):
        with pytest.raises(UsageError, match=re.escape("max_samples " + expected)):
            make()
    sampled = SampledModel(nn.Sequential(nn.Linear(2, 3), PBit()), samples="auto")
    with pytest.raises(UsageError, match=re.escape("max_samples " + expected)):
        sampled.max_samples = MAX_SAMPLES + 1
    assert sampled.max_samples == 50  # the rule as it was
    monkeypatch.setattr("pdnn.adaptive.tuple", lambda *a: pytest.fail("a look was made"), raising=False)
    for looks in ([], ["--checkpoints", "every"]):  # (no run there: the value is refused first)
        assert main(["eval", str(tmp_path / "none"), "--adaptive", "--max-samples", str(10**11), *looks]) == 2
        assert f"error: --max-samples {expected}" in capsys.readouterr().err


def test_eval_cli_adaptive_shows_its_progress_on_a_terminal_unless_quiet(tmp_path, monkeypatch):
    class Terminal(io.StringIO):
        def isatty(self):
            return True

    run = tmp_path / "run"
    assert main(["train", "--dataset", "demo", "--subset", "64", "--model", "mlp", "--width", "8", "--epochs", "1",
                 "--out", str(run), "--quiet"]) == 0
    for quiet, shown in (([], True), (["--quiet"], False)):
        monkeypatch.setattr(sys, "stderr", Terminal())
        assert main(["eval", str(run), "--adaptive", "--max-samples", "4", *quiet]) == 0
        bar = sys.stderr.getvalue()
        assert ("eval (adaptive)" in bar and "64/64" in bar and "mean_T=" in bar) == shown


def test_eval_cli_adaptive_prices_each_input_at_its_own_t(tmp_path, capsys):
    """The energy `pdnn eval --adaptive` reports, derived again from the energy model: each input
    at its own T, weights held (per-eo), read again per round, or read once per round of the batch."""
    from pdnn.energy import Reuse, Settings, network_energy, run_network

    run, copy = tmp_path / "run", tmp_path / "copy.json"
    assert main(["train", "--dataset", "demo", "--subset", "300", "--model", "mlp", "--width", "16", "--quiet",
                 "--out", str(run), "--epochs", "1"]) == 0
    assert main(["eval", str(run), "--adaptive", "--max-samples", "20", "--error", "0.05", "--memory", "sram",
                 "--json", str(copy), "--quiet"]) == 0
    document = json.loads(copy.read_text())
    net, _ = run_network(run)
    per_eo, per_batch = (Settings(weight_memory="sram", activation_memory="sram", reuse=reuse)
                         for reuse in (Reuse("per-eo"), Reuse("per-batch", 500)))
    histogram, n = {int(t): c for t, c in document["samples_histogram"].items()}, document["examples"]
    assert len(histogram) > 1 and n == sum(histogram.values()) < 500  # one batch, inputs stopping at several T
    held = sum(c * network_energy(net, t, per_eo)["total_j"] for t, c in histogram.items()) / n
    weight = network_energy(net, 1, per_eo)["terms"]["weight_memory_j"]
    energy = document["energy_j"]
    assert energy["per-eo held"] == pytest.approx(held, rel=1e-12)
    assert energy["per-eo per round"] == pytest.approx(held + weight * (document["mean_rounds"] - 1), rel=1e-12)
    rounds = sum(look <= max(histogram) for look in document["rule"]["checkpoints"])  # the slowest input's
    batch_weight = network_energy(net, 1, per_batch)["terms"]["weight_memory_j"]
    rest = sum(c * (network_energy(net, t, per_batch)["total_j"] - batch_weight) for t, c in histogram.items()) / n
    assert energy["per-batch:500"] == pytest.approx(rest + batch_weight * rounds * 500 / n, rel=1e-12)
    fixed = document["energy_j_fixed_max_samples"]
    at_max = network_energy(net, 20, per_eo)["total_j"]
    assert fixed["per-eo held"] == fixed["per-eo per round"] == pytest.approx(at_max)
    assert document["energy_settings"]["per-eo"]["weight_memory"] == "sram"
    assert document["time_s"] > 0 and document["energy_time_s"] > 0  # the sampling's time apart from the pricing's
    out = capsys.readouterr().out
    assert f"energy per inference, mJ (sram; per-eo held / per-eo per round / per-batch:500): {1e3 * held:#.4g}" in out
    assert f"fixed T = 20: {1e3 * fixed['per-eo held']:#.4g}" in out
    assert main(["eval", str(run), "--adaptive", "--memory", "tape", "--quiet"]) == 2
    assert "error: --memory: unknown memory level 'tape'" in capsys.readouterr().err
    assert main(["eval", str(run), "--memory", "sram", "--quiet"]) == 2
    assert "--memory is only used with --adaptive" in capsys.readouterr().err


def test_energies_of_own_t_need_every_t_taken_priced():
    """Only the T values inputs took are priced (a large max_samples would price thousands); one
    not priced is an error, not a neighbour's energy."""
    from pdnn.energy.per_input import energies

    def curve(samples):
        t = torch.tensor(samples)
        return {"samples": t, "total": 10.0 + t.double(), "weight": torch.full((len(t),), 8.0, dtype=torch.float64)}

    curves = {"per-eo": curve([1, 5, 400]), "per-batch:2": curve([1, 5, 400])}
    taken, rounds = torch.tensor([5, 400]), torch.tensor([2, 9])
    e = energies(taken, rounds, curves, 2)
    assert e["per-eo held"] == (15 + 410) / 2 and e["per-eo per round"] == (15 + 410 + 8 * (1 + 8)) / 2
    with pytest.raises(ValueError, match=r"price T = \[1, 5, 400\], not every T taken \(\[4, 5\]\)"):
        energies(torch.tensor([4, 5]), rounds, curves, 2)
    with pytest.raises(ValueError, match="not every T taken"):
        energies(torch.tensor([401]), torch.tensor([1]), curves, 2)


def test_a_batch_that_shows_no_spread_teaches_no_prior_and_settles_nothing_on_it():
    """A first batch whose samples all agree shows no spread: a spread of 0 would settle every
    row (it settled them at T = 2), and kept, every later input whose first sample leads at T = 1,
    coin flips included. Nothing settles on it, and nothing is kept."""
    from pdnn.adaptive import PRIOR_INPUTS

    for scores in ([5.0, 0.0], [0.9, 0.1]):  # 0.9 and 0.1 leave a spread of 1e-16 at T = 3: rounding
        agreeing = lambda x, samples: torch.tensor(scores).expand(samples, len(x), 2)  # noqa: E731
        # (enough inputs to learn from: fewer wait for more, and never reach the guard)
        _, taken, rule = adaptive_sample(agreeing, torch.zeros(PRIOR_INPUTS + 8, 1), rule=StoppingRule(50, 0.01))
        assert rule.prior_variance is None and (taken == 50).all()
    with pytest.raises(ValueError, match="prior_variance must be a finite number > 0"):
        StoppingRule(50, 0.01, prior_variance=0.0)


def test_coin_flips_after_a_batch_that_showed_no_spread_are_not_settled_at_two_samples():
    """A first batch whose samples agree to 1e-9 shows no spread to learn; learnt, that spread
    settled every later input at T = 2, and 44 % of a batch of fair coins disagreed with the
    decision at N = 50. Exact coin flips are the rule's worst case (docs/adaptive.md: δ is not a
    bound for every input): 2.3-3.2 % measured on 2000 of them in one batch, seeds 0-3."""
    generator = torch.Generator().manual_seed(0)
    agreeing = torch.tensor([0.9, 0.1]) + 1e-9 * torch.randn(50, 40, 2, generator=generator)
    _, taken, rule = simulate(agreeing, StoppingRule(50, 0.01))
    assert rule.prior_variance is None and (taken == 50).all()
    votes = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    flips = votes[torch.randint(0, 2, (50, 2000), generator=generator)]
    mean, taken, _ = simulate(flips, rule)
    differ = (mean.argmax(1) != flips.sum(0).argmax(1)).float().mean().item()
    assert (taken == 2).float().mean() < 0.5 and differ <= 0.05


def test_a_coin_flip_alone_is_not_settled_by_two_agreeing_samples():
    """A fresh sampler given one input learns the prior from that input alone: two agreeing first
    samples of a fair coin (probability 1/2) had settled it at T = 2, whatever the error level;
    the prior is learnt at the first look that shows a spread, and the error level holds."""
    votes = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    generator = torch.Generator().manual_seed(0)
    inputs = 1000
    flips = votes[torch.randint(0, 2, (50, inputs), generator=generator)]  # [N, inputs, 2]
    rule, differ, early = StoppingRule(50, 0.01), 0, 0
    for i in range(inputs):  # each input as a fresh sampler's first batch
        mean, taken, _ = simulate(flips[:, i : i + 1], rule)
        early += int(taken[0] == 2)
        differ += int(mean.argmax(1)[0] != flips[:, i].sum(0).argmax())
    assert early == 0
    # two-class votes exceed the level a little (docs/adaptive.md: 1.26 % at 0.01 in batches; 1.35 %
    # measured here on 2000 inputs); the bound is 4.5 standard errors above that, and it was 19.6 %
    assert differ / inputs <= 0.0135 + 4.5 * math.sqrt(0.0135 * 0.9865 / inputs)


def test_the_rule_s_options_set_on_a_live_sampler_reach_its_rule():
    """max_samples, error, rule, checkpoints and prior_samples are constructor arguments kept in
    ``stopping``: set on the sampler they were ignored (inputs still ran to the old N)."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(6, 16), PBit(), nn.Linear(16, 3)).eval()
    sampled = SampledModel(net, samples="auto", max_samples=8, seed=0)
    sampled(torch.randn(32, 6))
    learnt = sampled.stopping.prior_variance
    sampled.max_samples, sampled.error, sampled.checkpoints = 3, 0.5, (1, 2, 3)
    sampled(torch.randn(32, 6))
    assert sampled.last_samples.max() <= 3 and sampled.stopping.max_samples == sampled.max_samples == 3
    assert sampled.stopping.error == 0.5 and sampled.stopping.prior_variance == learnt  # the learnt prior kept
    with pytest.raises(ValueError, match="error level must be 0 .* or a number in"):
        sampled.error = 2.0
    assert sampled.error == 0.5
    sampled.samples = 4  # a fixed T: no input's T was chosen
    sampled(torch.randn(2, 6))
    assert sampled.last_samples is None


def test_auto_refuses_a_model_that_returns_more_than_class_scores():
    class TwoOutputs(nn.Module):
        def __init__(self):
            super().__init__()
            self.body, self.act, self.head = nn.Linear(3, 8), PBit(), nn.Linear(8, 4)

        def forward(self, x):
            h = self.act(self.body(x))
            return self.head(h), h

    for batch in (2, 0):  # an empty batch's one sample is checked as a round's
        with pytest.raises(ValueError, match=r"return one tensor of class scores \[B, C\], got a tuple"):
            SampledModel(TwoOutputs(), samples="auto")(torch.randn(batch, 3))


@pytest.mark.parametrize("head, message", [
    (lambda h: {"scores": h}, r"return one tensor of class scores \[B, C\], got a dict"),
    (lambda h: h[:, :1], r"class scores \[B, C >= 2\] per sample, got shape \(0, 1\)"),
    (lambda h: h.long(), "needs floating-point class scores, but the output is torch.int64")])
def test_auto_refuses_on_an_empty_batch_what_it_refuses_on_any_other(head, message):
    class Head(nn.Module):
        def __init__(self):
            super().__init__()
            self.body, self.act = nn.Linear(3, 4), PBit()

        def forward(self, x):
            return head(self.act(self.body(x)))

    with pytest.raises(ValueError, match=message):
        SampledModel(Head(), samples="auto")(torch.randn(0, 3))


def test_eval_cli_adaptive_refuses_deterministic_and_generator_runs(tmp_path, capsys):
    tiny = ["--dataset", "demo", "--subset", "64", "--epochs", "1", "--quiet"]
    tanh, vae = tmp_path / "tanh", tmp_path / "vae"
    assert main(["train", *tiny, "--model", "mlp", "--width", "8", "--neuron", "tanh", "--out", str(tanh)]) == 0
    assert main(["train", *tiny, "--task", "vae", "--out", str(vae)]) == 0
    capsys.readouterr()
    assert main(["eval", str(tanh), "--adaptive", "--quiet"]) == 2  # it recorded a mean T of 2
    assert "is deterministic: every sample is the same, so T = 1 is exact" in capsys.readouterr().err
    assert main(["eval", str(vae), "--adaptive", "--quiet"]) == 2  # it asked for class scores
    assert "is a generator, which has no class scores to settle" in capsys.readouterr().err
    assert not (tanh / "adaptive.json").exists() and not (vae / "adaptive.json").exists()


class _ClassBias(nn.Module):
    """Scores: a bias per class, an argument of C values, plus ``amp`` times p-bit noise per row."""

    def __init__(self, classes: int = 4):
        super().__init__()
        self.classes, self.pbit = classes, PBit()

    def forward(self, amp, bias):
        return bias + amp * self.pbit(torch.zeros(amp.shape[0], self.classes) + 0 * amp)


def test_an_argument_as_long_as_the_batch_but_not_per_input_is_not_cut_as_inputs_leave():
    """A bias per class, with as many inputs as classes: cut with the rows that stay, the noisy
    input that ran on alone had bias[3] for every class (its decision could flip). Every sample's
    scores are bias + amp * bits, so (mean - bias) * T / amp is a whole number."""
    sampled = SampledModel(_ClassBias(), samples="auto", seed=0, max_samples=50, error=0.01)
    bias = torch.tensor([0.5, 0.0, 0.0, 0.0])
    sampled(torch.rand(64, 1) * 2, bias)  # learns the prior
    amp = torch.tensor([[0.01], [0.01], [0.01], [3.0]])
    mean = sampled(amp, bias)
    taken = sampled.last_samples
    assert len(set(taken.tolist())) > 1, "some inputs left before others"
    steps = (mean - bias) * taken[:, None] / amp
    assert torch.allclose(steps, steps.round(), atol=1e-3)
    masks = torch.ones(4, 4)  # per input: cut with the rows
    assert SampledModel(_Masked(), samples="auto", seed=0, max_samples=20)(torch.randn(4, 4), masks).shape == (4, 4)
    # a per-class bias of equal values broadcasts alike from one row, cut or not: kept whole. Its
    # inputs are all coin flips, which leave before others only by the draw's chance (at error
    # 0.01 one seed's did, another plan's draws not): at a loose error level over a few seeds
    left = []
    for seed in range(5):
        equal = SampledModel(_ClassBias(), samples="auto", seed=seed, max_samples=50, error=0.3)
        equal(torch.rand(64, 1) * 2, bias)  # learns the prior
        assert equal(amp, torch.zeros(4)).shape == (4, 4)
        left.append(len(set(equal.last_samples.tolist())) > 1)
    assert any(left), "in some draw, inputs left before others"
    both = SampledModel(_MaskedBias(), samples="auto", seed=0, max_samples=20)  # a mask and a bias, B == C
    assert both(torch.randn(4, 4) * 3, masks, torch.zeros(4)).shape == (4, 4)


class _MaskedBias(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc, self.pbit = nn.Linear(4, 4), PBit()

    def forward(self, x, mask, bias):
        return self.pbit(self.fc(x)) * mask + bias


class _Masked(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc, self.pbit = nn.Linear(4, 4), PBit()

    def forward(self, x, mask):
        return self.pbit(self.fc(x)) * mask


def test_error_zero_runs_every_input_to_max_samples_and_smaller_levels_than_the_tails_resolve_are_refused():
    """The Student-t tails are exact only in absolute terms: a tail of 3e-19 came out 0, and at
    error 0 inputs stopped before N."""
    torch.manual_seed(0)
    sampled = SampledModel(_ClassBias(), samples="auto", seed=0, max_samples=20, error=0.0)
    bias = torch.tensor([5.0, 0.0, 0.0, 0.0])  # settled from the first samples at any level above 0
    sampled(torch.rand(64, 1), bias)
    sampled(torch.rand(64, 1), bias)
    assert sampled.last_samples.min() == 20
    with pytest.raises(ValueError, match=r"or a number in \[1e-12, 1\)"):
        StoppingRule(error=1e-13)
    with pytest.raises(ValueError, match="prior_samples must be an integer from 0 to 10000"):
        StoppingRule(prior_samples=10_001)


class _SelfSliced(nn.Module):
    """A mask per input that the model cuts to its batch itself."""

    def __init__(self):
        super().__init__()
        self.pbit = PBit()

    def forward(self, x, mask):
        return (x + 0.5 * self.pbit(torch.zeros_like(x))) * mask[: x.shape[0]]


class _RandomWeights(nn.Module):
    """p-bits on a weight, and a mask per input."""

    def __init__(self):
        super().__init__()
        self.weight, self.pbit = nn.Parameter(torch.randn(4, 4)), PBit()

    def forward(self, x, mask):
        return (x @ self.pbit(self.weight)) * mask


class _TwoBiases(_ClassBias):
    def forward(self, amp, first, second):
        return first + second + amp * self.pbit(torch.zeros(amp.shape[0], self.classes) + 0 * amp)


def test_what_is_cut_as_inputs_leave_does_not_depend_on_the_arguments_values():
    """Told on one input with the others cut or whole: a mask the model slices itself was kept
    whole (input 1 then had input 0's mask), two per-class biases were refused, and a decision
    made on a bias of zeros was kept for later calls with other values."""
    sliced = SampledModel(_SelfSliced(), samples="auto", seed=0, max_samples=50, error=0.01)
    sliced(torch.randn(64, 4), (torch.rand(64, 4) > 0.3).float())  # learns the prior
    x = torch.tensor([[10.0, 0, 0, 0], [0.2, 0.1, 0, 0], [0.2, 0.1, 0, 0], [0.2, 0.1, 0, 0]])
    mask = torch.tensor([[1.0, 1, 1, 1], [0, 1, 1, 1], [0, 1, 1, 1], [0, 1, 1, 1]])
    sliced(x, torch.ones(4, 4))  # first of its kind, equal rows: whole or cut fit alike, so it is not kept
    for given in (mask, mask.bool()):
        mean = sliced(x, given)
        assert sliced.last_samples[0] < sliced.last_samples[1:].min()  # input 0 left first
        assert torch.equal(mean[1:, 0], torch.zeros(3))  # the masked-out class, exactly
    weights = SampledModel(_RandomWeights(), samples="auto", seed=0, max_samples=20)  # draws beside the batch
    assert weights(torch.randn(8, 4), torch.ones(8, 4)).shape == (8, 4)
    biases = SampledModel(_TwoBiases(), samples="auto", seed=0, max_samples=50, error=0.01)
    biases(torch.rand(64, 1) * 2, torch.zeros(4), torch.zeros(4))  # learns the prior, on biases of zeros
    first, second = torch.tensor([0.5, 0, 0, 0]), torch.tensor([0, 0.2, 0, 0])
    amp = torch.tensor([[0.01], [0.01], [0.01], [3.0]])
    biases(amp, first, first)  # one tensor twice is another kind of call
    mean = biases(amp, first, second)
    assert len(set(biases.last_samples.tolist())) > 1
    steps = (mean - first - second) * biases.last_samples[:, None] / amp
    assert torch.allclose(steps, steps.round(), atol=1e-3)  # every sample had both biases whole


class _NoisePerClass(nn.Module):
    """A score per input plus noise of a scale per class, a tensor read only through a draw."""

    def __init__(self):
        super().__init__()
        self.pbit = PBit()

    def forward(self, base, scale):
        scores = base + 0 * self.pbit(torch.zeros_like(base))
        return scores + scale * torch.randn_like(scores)


def test_an_argument_read_through_a_draw_is_still_told_per_class():
    """With draws standing in as 0, a per-class noise scale showed nowhere, and at two inputs a
    scale cut to one value broadcasts: it was cut, and the input left alone got one class's noise
    on both classes. A noiseless class must come out exactly as its score."""
    sampled = SampledModel(_NoisePerClass(), samples="auto", seed=0, max_samples=50, error=0.01)
    scale = torch.tensor([0.0, 3.0])
    sampled(torch.randn(64, 2), scale)  # learns the prior
    base = torch.tensor([[10.0, 0.0], [0.5, 0.0]])
    mean = sampled(base, scale)
    assert sampled.last_samples[0] < sampled.last_samples[1]
    assert torch.equal(mean[:, 0], base[:, 0])
    # a keep probability per class: one spread of the stand-ins does not part 1.0 from 0.7 (three do)
    kept = SampledModel(_KeptPerClass(), samples="auto", seed=0, max_samples=50, error=0.01)
    keep = torch.tensor([1.0, 0.7])
    kept(torch.randn(64, 2), keep)
    mean = kept(torch.tensor([[10.0, 0.0], [0.25, 0.3]]), keep)
    assert kept.last_samples[0] < kept.last_samples[1] and mean[1, 0] == 0.25  # class 0 is never dropped
    # no three spreads part 1.0 from 0.92: per class or per input sliced by the model, it cannot be told
    kept = SampledModel(_KeptPerClass(), samples="auto", seed=0, max_samples=50, error=0.01)
    kept(torch.randn(64, 2), keep)
    with pytest.raises(UsageError, match="cannot tell which arguments of 2 rows .* are per input"):
        kept(torch.tensor([[10.0, 0.0], [0.25, 0.3]]), torch.tensor([1.0, 0.92]))


class _KeptPerClass(_NoisePerClass):
    def forward(self, base, keep):
        scores = base + 0 * self.pbit(torch.zeros_like(base))
        return scores * (torch.rand_like(scores) < keep)


class _Lead(nn.Module):
    """Scores ``x`` plus one shared +-1 draw per input and ``w``, per input (a lead w[i] of class 0
    over class 1) or per class (``per_class``, an attribute or an argument): the lead of class 0 is
    exact whatever the draws."""

    def __init__(self, per_class: bool = False):
        super().__init__()
        self.pbit, self.per_class = PBit(), per_class

    def forward(self, x, w, per_class=None):
        h = x + self.pbit(x[:, :1] * 0)
        if self.per_class if per_class is None else per_class:
            return h + w[None, :]
        return h + torch.stack([w, torch.zeros_like(w)], 1)


def _leads(sampled, *args):
    out = sampled(*args)
    return (out[:, 0] - out[:, 1]).tolist(), sampled.last_samples.tolist()


def test_what_is_cut_is_asked_again_for_another_model_its_values_or_other_arguments():
    """Kept per kind of call, the decision was keyed by the tensors' shapes alone: a per-input
    call first, then a per-class one with a flag, another model or a changed attribute gave the
    input that ran on alone the other's bias (lead 0.02 for 1)."""
    x = torch.tensor([[10.0, 0.0], [0.0, 0.0]])
    per_input, per_class = torch.tensor([0.0, 1.0]), torch.tensor([1.0, 0.0])

    def sampler(model):
        sampled = SampledModel(model.eval(), samples="auto", seed=0)
        sampled.stopping = StoppingRule(max_samples=50, error=0.01, prior_variance=1.0)
        return sampled

    sampled = sampler(_Lead())
    assert _leads(sampled, x, per_input, False) == ([10.0, 1.0], [1, 5])
    assert _leads(sampled, x, per_class, True) == ([11.0, 1.0], [1, 5])  # a flag
    sampled(x, per_input)
    sampled.model = _Lead(per_class=True).eval()
    assert _leads(sampled, x, per_class) == ([11.0, 1.0], [1, 5])  # another model
    sampled.model.per_class = False
    assert _leads(sampled, x, per_input) == ([10.0, 1.0], [1, 5])  # an attribute it branches on
    buffered = sampler(_BufferedLead())  # a flag a state dict loads in place: the same tensor
    assert _leads(buffered, x, per_input) == ([10.0, 1.0], [1, 5])
    buffered.model.load_state_dict({"per_class": torch.tensor(True)})
    assert _leads(buffered, x, per_class) == ([11.0, 1.0], [1, 5])


_FORWARDS = []  # (outside the model, whose state the checks restore)


class _BufferedLead(_Lead):
    def __init__(self):
        super().__init__()
        self.register_buffer("per_class_flag", torch.tensor(False))
        self.steps = None

    def forward(self, x, w):
        if self.steps is not None:
            self.steps += 1  # a counter the model keeps: no reason to ask again
        _FORWARDS.append(len(x))
        return super().forward(x, w, bool(self.per_class_flag))

    def load_state_dict(self, state, strict=True):
        return super().load_state_dict({"per_class_flag": state["per_class"]}, strict)


def test_every_call_with_arguments_asks_the_model_and_no_argument_is_taken_on_trust():
    """An answer kept per kind of call missed changes a re-check under the stand-ins did not show
    (a keep probability turned per class, read only through a draw); arguments that were all
    numbers or flags were not asked about, though an int or a float may index the batch's rows and
    a flag may make the model read the whole batch. Each call costs the same: nothing is kept."""
    x, shift = torch.tensor([[10.0, 0.0], [0.0, 0.0]]), torch.tensor([0.0, 1.0])
    model = _BufferedLead().eval()
    model.steps = 0
    sampled = SampledModel(model, samples="auto", seed=0)
    sampled.stopping = StoppingRule(max_samples=50, error=0.01, prior_variance=1.0)
    calls = []
    for _ in range(3):
        _FORWARDS.clear()
        assert _leads(sampled, x, shift) == ([10.0, 1.0], [1, 5])
        calls.append(len(_FORWARDS))
    assert calls == [calls[0]] * 3
    rows = torch.tensor([[10.0, 0.0], [0.0, 0.0], [0.0, 10.0]])
    for row in (0, 0.0, torch.tensor(0)):  # an int, a float, a 0-dim tensor naming a row
        indexing = SampledModel(_FromRow(), samples="auto", seed=0, max_samples=50, error=0.01)
        with pytest.raises(UsageError, match="cannot tell which arguments of 3 rows"):
            indexing(rows, row)
    centring = SampledModel(_Centred(), samples="auto", seed=0, max_samples=50, error=0.01)
    with pytest.raises(UsageError, match="cannot tell which arguments of 3 rows"):
        centring(rows, True)
    noisy = SampledModel(_Normal(), samples="auto", seed=0, max_samples=10)
    with pytest.raises(UsageError, match=r"draws with a random function .*\(torch.normal"):
        noisy(torch.randn(3, 2), 1.0)


class _WithPBit(nn.Module):
    """A model of one p-bit, for models whose forward is the test."""

    def __init__(self):
        super().__init__()
        self.pbit = PBit()


class _InPlace(_WithPBit):
    """Scales its input in place, as a model taking raw pixels may."""

    def forward(self, x, temperature):
        x = x.div_(2)
        return x / temperature + self.pbit(x[:, :1] * 0)


def test_the_checks_run_on_copies_of_the_inputs():
    """The probes ran the model on the caller's own tensors: one scaling its input in place was
    refused (each run saw it scaled again) and the caller's input was left divided by 2**5."""
    x = torch.tensor([[8.0, 0.0], [0.0, 0.0]])
    sampled = SampledModel(_InPlace(), samples="auto", seed=0, max_samples=20, error=0.01)
    out = sampled(x.clone(), 1.0)
    assert out[0, 0] - out[0, 1] == 4.0
    # the batch passed again is cut with it (both fitted, cut or whole: refused, or x itself kept whole)
    for rows in (torch.tensor([[8.0, 0.0], [0.0, 0.0], [0.0, 3.0]]), torch.ones(3, 2)):
        twice = SampledModel(_Twice(), samples="auto", seed=0, max_samples=20, error=0.01)
        assert torch.allclose(twice(rows, rows), 2 * rows, atol=1.0)
    # ... unless the model changes it in place: whether the argument sees that depends on the pass
    rows = torch.tensor([[8.0, 0.0], [0.0, 0.0], [0.0, 3.0]])
    scaling = SampledModel(_TwiceInPlace(), samples="auto", seed=0, max_samples=20, error=0.01)
    for again in (lambda r: r, lambda r: r[:], lambda r: r.view(3, 2)):  # a view shares the memory too
        given = rows.clone()
        with pytest.raises(UsageError, match="changes an input in place when another input shares its memory"):
            scaling(given, again(given))
    holed = rows.where(rows != 8.0, torch.nan)
    with pytest.raises(UsageError, match="contains NaN"):  # (no change in place: NaN is not NaN)
        twice(holed, holed)
    mixing = SampledModel(_TwiceFlipped(), samples="auto", seed=0, max_samples=20, error=0.01)
    with pytest.raises(UsageError, match="an input's output depends on the batch's other inputs"):
        mixing(rows, rows)
    # nor do the rounds share the caller's: a weight the model halves in place was halved in every round
    halving = SampledModel(_Halving(), samples="auto", seed=0)
    halving.stopping = StoppingRule(max_samples=20, error=0.01, prior_variance=1.0)
    w = torch.ones(2)
    halving(torch.tensor([[8.0, 0.0], [0.0, 0.0]]), w)
    assert len(set(halving.last_samples.tolist())) > 1 and torch.equal(w, torch.ones(2))
    halving(torch.zeros(0, 2), w)  # (an empty batch ran its one sample on the caller's tensors)
    assert torch.equal(w, torch.ones(2))


def test_one_row_that_views_another_input_is_refused_where_the_model_changes_one():
    # the rounds cut no row of a batch of one, but their copies still take a view apart from what it
    # views: the model's write to one was not seen in the other (16 + 8 where a forward gives 16 + 16)
    scaling = SampledModel(_TwiceInPlace(), samples="auto", seed=0, max_samples=20, error=0.01)
    given = torch.tensor([[8.0, 0.0]])
    with pytest.raises(UsageError, match="changes an input in place when another input shares its memory"):
        scaling(given, given[:])
    assert torch.equal(given, torch.tensor([[8.0, 0.0]]))  # (the check ran on copies)
    # the row passed again stays one tensor in every round, as with a fixed T: what a forward gives
    assert torch.allclose(scaling(given, given), torch.tensor([[32.0, 0.0]]), atol=0.11)


def test_zero_dimensional_input_with_arguments_is_refused_as_unbatched():
    with pytest.raises(UsageError, match=r"takes the batch \[B, ...\] as a tensor, its first positional argument.*got "):
        SampledModel(_Twice(), samples="auto")(torch.tensor(1.0), torch.ones(1))


class _Twice(_WithPBit):
    def forward(self, x, y):
        return x + y + 0.1 * self.pbit(x[:, :1] * 0)


class _TwiceInPlace(_Twice):
    def forward(self, x, y):
        return super().forward(x.mul_(2), y)


class _TwiceFlipped(_Twice):
    def forward(self, x, y):
        return super().forward(x, y.flip(0))


class _Halving(_WithPBit):
    def forward(self, x, w):
        return x * w.mul_(0.5) * 2 + self.pbit(x[:, :1] * 0)


class _Centred(_WithPBit):
    """Scores less the batch's mean where ``centre``: an input's scores depend on the others'."""

    def forward(self, x, centre):
        h = x + self.pbit(x[:, :1] * 0)
        return h - h.mean(0) if centre else h


class _FromRow(_WithPBit):
    """Every input's scores plus half of those of the input at row ``row``."""

    def forward(self, x, row):
        return x + 0.5 * x[int(row)] + self.pbit(x[:, :1] * 0)


class _ListShift(_WithPBit):
    def forward(self, x, shifts):
        h = x + self.pbit(x[:, :1] * 0)
        return torch.stack([row + torch.tensor([float(s), 0.0]) for row, s in zip(h, shifts)])


class _KeepAndMask(nn.Module):
    """R49's keep probability per input that the model slices itself, and a mask of ones, also sliced."""

    def forward(self, x, mask, keep):
        n = len(x)
        return (x + (torch.rand_like(x) < keep[:n, None]).float() * torch.tensor([1.0, 1.0, 0.0])) * mask[:n, None]


class _Normal(nn.Module):
    def forward(self, x, mask):
        return x + torch.normal(torch.zeros_like(x), 1.0) * (mask if isinstance(mask, float) else mask[:, None])


def test_what_cannot_be_told_is_refused_and_the_models_own_error_shown():
    """A list of a value per input was passed whole unprobed; a third argument of equal rows hid
    R49's ambiguity (input 1 got input 0's keep probability); the model's own error was reported
    as one of telling arguments apart; a draw the check cannot hold still was blamed on the model."""
    x = torch.tensor([[10.0, 0.0], [0.0, 0.0]])
    listed = SampledModel(_ListShift().eval(), samples="auto", seed=0, max_samples=50, error=0.01)
    with pytest.raises(UsageError, match="not a list, to be cut"):
        listed(x, [0.0, 1.0])
    assert SampledModel(_ListShift().eval(), samples=3)(x, [0.0, 1.0]).shape == (2, 2)
    keep = SampledModel(_KeepAndMask(), samples="auto", seed=0, max_samples=400, error=0.01)
    with pytest.raises(UsageError, match="cannot tell which arguments of 2 rows"):
        keep(torch.tensor([[20.0, 0.0, 0.0], [0.0, 0.0, -5.0]]), torch.ones(2), torch.tensor([0.36, 0.56]))
    wrong = SampledModel(_Masked(), samples="auto")
    with pytest.raises(RuntimeError, match="mat1 and mat2 shapes cannot be multiplied"):
        wrong(torch.randn(2, 5), torch.ones(2, 4))
    normal = SampledModel(_Normal(), samples="auto")
    with pytest.raises(UsageError, match=r"draws with a random function .*\(torch.normal"):
        normal(torch.randn(3, 2), torch.ones(3))
