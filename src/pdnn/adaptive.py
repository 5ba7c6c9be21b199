"""T chosen per input: draw samples in rounds and stop each input once its prediction is settled.

The p-DNN's prediction at T samples is the argmax of the mean of T per-sample outputs. Most
inputs are decided after a few samples; a few need many. :func:`adaptive_sample` draws samples
in rounds at the checkpoints of a :class:`StoppingRule` (T = 1, 2, 3, 4, 5, 6, 8, ... up to
``max_samples``) and, after each round, removes from the batch every input whose decision is
settled, so no further work is spent on it.

The ``"predictive"`` rule (derived in ``docs/adaptive.md``): after t samples, let k be the
leading class and, for each rival j, ``D = f_k − f_j`` the per-sample lead, with mean ``m`` over
the t samples. Under a normal model of D (flat prior on its mean; for its variance, ν₀ =
``prior_samples`` pseudo-samples of the network's typical spread σ₀², so that a few identical
samples do not look certain), the lead summed over all N = ``max_samples`` samples is negative
(the decision at N differs) with predictive probability ``F_ν(−m·sqrt(t·N/(N−t))/S)``: F the
Student-t CDF with ν = ν₀ + t − 1 degrees of freedom, S the posterior spread. The input stops
once the sum of this over the rivals is at most ``error``. A posterior probability needs no
correction for looking after every round.

σ₀² is learnt at the first look that shows a spread (at T >= 2, where each input has a spread of
its own: the mean variance of the lead over the runner-up among the inputs; a look at which every
input's samples agree settles none of them), once :data:`PRIOR_INPUTS` inputs have shown theirs --
in the first batch, or pooled over the first batches where they are smaller; until then no input
stops before ``max_samples``. It is kept for the batches after it, which can then stop an input
after one sample (:attr:`StoppingRule.prior_variance`; it may also be given).

``"never"`` runs every input to ``max_samples`` in the same rounds (a reference, and a check).
"""
from __future__ import annotations

import math
import numbers
from dataclasses import dataclass, replace
from typing import Callable

import torch
from torch.utils._pytree import tree_map

from .checks import as_real, batch_tensor, integer, positive_int, shown
from .errors import UsageError

RULES = ("predictive", "never")
NO_SPREAD = 1e-9  # a learnt spread below this share of the mean squared lead is rounding, not spread
# σ₀² stands for the network's typical spread only as a mean over many inputs: learnt from one (a
# first call of one input), its chance spread at T = 2 (a χ² of one degree of freedom) could be
# near 0, and later calls then stopped up to 7 times more often wrongly than the error level
PRIOR_INPUTS = 32
CHECKPOINTS = (1, 2, 3, 4, 5, 6, 8, 10, 12, 16, 20, 25, 32, 40, 50, 64, 80, 100, 128, 160, 200, 256)
# a round draws its samples in pieces of at most this many, added to the running sums as they come,
# so that memory stays bounded when a round is long (the last runs from 256 to max_samples)
ROUND_PIECE = 1024
# max_samples at most: an input left undecided draws them all, and a look at T sums about T/2
# terms of the Student-t series (student_t_cdf): N = 10**11 ran on without end, and "every" look
# up to it was a tuple larger than memory
MAX_SAMPLES = 10_000


def check_max_samples(value, name: str = "max_samples") -> int:
    """``value`` as an ``int`` if it is a possible N, 1 to :data:`MAX_SAMPLES`, else a
    ``UsageError`` naming ``name``: checked before the looks are made from it
    (:func:`parse_checkpoints`' ``"every"`` holds one per T)."""
    number = positive_int(name, value)
    if number > MAX_SAMPLES:
        raise UsageError(f"{name} must be at most {MAX_SAMPLES} (an input left undecided draws that many samples, "
                         f"and a look at T sums about T/2 terms of the rule's Student-t series), got {number}")
    return number


def parse_checkpoints(text: str, max_samples: int) -> tuple[int, ...]:
    """The checkpoints the command lines take: comma-separated T values, or ``"every"`` for a
    look after every sample from T = 1 to ``max_samples`` (T = 1 is looked at only once the prior
    variance is known, :meth:`StoppingRule.first_look`). A look is a round, so looking more often
    stops inputs sooner at the cost of more, smaller passes."""
    if text.strip() == "every":
        return tuple(range(1, check_max_samples(max_samples) + 1))
    try:
        points = tuple(int(t) for t in text.split(","))
    except ValueError:
        raise UsageError(f"checkpoints must be 'every' or comma-separated integers, got {text!r}") from None
    if not _increasing_looks(points):  # (named as typed, not as the tuple StoppingRule would show)
        raise UsageError(f"checkpoints must be increasing integers >= 1, got {text!r}")
    return points


def refuse_looks_beyond(text: str, points: tuple[int, ...], max_samples: int) -> None:
    """Refuse checkpoints ``points`` given on a command line as ``--checkpoints text`` that look
    beyond ``--max-samples`` (the rule would drop them unsaid). The default checkpoints are not
    refused: their looks beyond a smaller N are simply not reached."""
    if beyond := [t for t in points if t > max_samples]:
        raise UsageError(f"--checkpoints {text} looks at T = {', '.join(map(str, beyond))}, beyond --max-samples "
                         f"{max_samples}; expected checkpoints up to it")


def _increasing_looks(points: tuple) -> bool:
    """Whether ``points`` (integers, or None where a value was not one) are increasing T >= 1."""
    return bool(points) and all(t is not None and t >= 1 for t in points) and list(points) == sorted(set(points))


def student_t_cdf(x: torch.Tensor, dof: int) -> torch.Tensor:
    """``P(X <= x)`` for Student's t with an integer ``dof`` >= 1 (the closed form by series in
    ``cos²θ``, ``θ = atan(x/sqrt(dof))``; exact up to rounding, ``±inf`` allowed)."""
    if isinstance(dof, bool) or not isinstance(dof, int) or dof < 1:
        raise UsageError(f"degrees of freedom must be an integer >= 1, got {shown(dof)}")
    x = x.double()
    theta = torch.atan(x / math.sqrt(dof))
    c2 = torch.cos(theta) ** 2
    if dof % 2:  # odd: (2/π)[θ + sinθ cosθ (1 + 2/3 c² + 2·4/(3·5) c⁴ + ...)]
        series, term = torch.zeros_like(x), torch.ones_like(x)
        for i in range(1, (dof - 1) // 2 + 1):
            series = series + term
            term = term * c2 * (2 * i) / (2 * i + 1)
        a = 2 / math.pi * (theta + torch.sin(theta) * torch.cos(theta) * series)
    else:  # even: sinθ (1 + 1/2 c² + 1·3/(2·4) c⁴ + ...)
        series, term = torch.zeros_like(x), torch.ones_like(x)
        for i in range(1, dof // 2 + 1):
            series = series + term
            term = term * c2 * (2 * i - 1) / (2 * i)
        a = torch.sin(theta) * series
    return (1 + a) / 2


# the least error level above 0: the Student-t tails are exact to rounding in absolute terms
# (2e-16 at small ν, up to 2e-13 at ν = 20 000: docs/adaptive.md), so a smaller level would compare the rounding
LEAST_ERROR = 1e-12
MAX_PRIOR_SAMPLES = 10_000  # ν₀ at most: the closed-form CDF sums about ν/2 terms per look


def _is_real(value) -> bool:
    """Whether ``value`` is a real number (numpy's too; not ``True``)."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


@dataclass(frozen=True)
class StoppingRule:
    """When to stop sampling an input.

    Args:
        max_samples: N, the most samples any input gets (its decision at N is what the rule
            protects).
        error: the largest predictive probability, summed over rival classes, that the decision
            at N differs from the decision at stopping (``"predictive"`` only).
        rule: ``"predictive"`` or ``"never"`` (always N samples).
        checkpoints: the T values after which the rule looks (rounds draw the samples between
            them); those >= N are dropped and N is always last, and T = 1 is dropped until the
            prior variance is known (:meth:`first_look`).
        prior_samples: ν₀, the pseudo-samples of spread σ₀² in the prior of an input's variance
            (docs/adaptive.md). At least 1 for a look at T = 1: one sample has no spread of its
            own. With 1, the predictive distribution after one sample is a Cauchy, whose tails
            settle next to no input; 2 is the least that does.
        prior_variance: σ₀², the typical variance of the per-sample lead over the runner-up;
            ``None`` until learnt at the first look at T >= 2 that shows a spread, over at least
            :data:`PRIOR_INPUTS` inputs (:func:`adaptive_sample` returns the rule with it filled
            in, for the next batch).
        prior_pool: while ``prior_variance`` is None, the sum of the spreads shown by the inputs
            of earlier batches and their number (fewer than :data:`PRIOR_INPUTS`); kept for the
            next batch, which learns σ₀² from them and its own.
    """

    max_samples: int = 50
    error: float = 0.01
    rule: str = "predictive"
    checkpoints: tuple[int, ...] = CHECKPOINTS
    prior_samples: int = 2
    prior_variance: float | None = None
    prior_pool: tuple[float, int] = (0.0, 0)

    def __post_init__(self):
        # numpy's numbers are accepted as Python's are, and kept as Python's
        object.__setattr__(self, "max_samples", check_max_samples(self.max_samples))
        if self.rule not in RULES:
            raise UsageError(f"unknown stopping rule {shown(self.rule)}; expected one of {', '.join(RULES)}")
        error = as_real(self.error)  # (a tensor of one number too, as max_samples takes one)
        if error is None or not (error == 0 or LEAST_ERROR <= error < 1):
            raise UsageError(f"error level must be 0 (every input runs to max_samples) or a number in "
                             f"[{LEAST_ERROR:g}, 1) (the tail probabilities it is compared with are exact to about "
                             f"1e-16 to 2e-13, not relative to their size), got {shown(self.error)}")
        object.__setattr__(self, "error", error)
        prior_samples = integer(self.prior_samples)
        if prior_samples is None or not 0 <= prior_samples <= MAX_PRIOR_SAMPLES:
            raise UsageError(f"prior_samples must be an integer from 0 to {MAX_PRIOR_SAMPLES} (each look costs "
                             f"about ν/2 steps; so many pseudo-samples fix the spread at σ₀² anyway), got "
                             f"{shown(self.prior_samples)}")
        object.__setattr__(self, "prior_samples", prior_samples)
        if self.prior_variance is not None:
            variance = as_real(self.prior_variance) if _is_real(self.prior_variance) else None  # (None: beyond a float)
            if variance is None or not 0 < variance < math.inf:
                raise UsageError(f"prior_variance must be a finite number > 0 or None (a spread of 0 would stop "
                                 f"every input whose first samples agree), got {shown(self.prior_variance)}")
            object.__setattr__(self, "prior_variance", variance)
        pool = tuple(self.prior_pool) if isinstance(self.prior_pool, (tuple, list)) else ()
        spread = as_real(pool[0]) if len(pool) == 2 and _is_real(pool[0]) else None
        if spread is None or not 0 <= spread < math.inf or integer(pool[1]) is None \
                or not 0 <= pool[1] < PRIOR_INPUTS or (pool[0] and not pool[1]):
            raise UsageError(f"prior_pool must be (a sum of spreads >= 0, the number of inputs that showed them, "
                             f"0 to {PRIOR_INPUTS - 1}; 0 for a sum of 0), got {shown(self.prior_pool)}")
        object.__setattr__(self, "prior_pool", (spread, integer(pool[1])))
        try:  # (a set's order is its hashes', not the one meant: refused with the rest)
            points = () if isinstance(self.checkpoints, (set, frozenset)) else tuple(map(integer, self.checkpoints))
        except TypeError:
            points = ()
        if not _increasing_looks(points):
            raise UsageError(f"checkpoints must be increasing integers >= 1, got {shown(self.checkpoints)}")
        object.__setattr__(self, "checkpoints", points)  # a list given is kept as the tuple it reads as

    def forget(self) -> "StoppingRule":
        """This rule without what it learnt, σ₀² and the spreads pooled towards it: for the
        network after it has changed (trained further)."""
        return replace(self, prior_variance=None, prior_pool=(0.0, 0))

    def first_look(self) -> int:
        """1 where one sample can settle an input (the predictive rule with a prior variance
        known and ``prior_samples`` >= 1), else 2, the first T with a spread of its own."""
        return first_decidable(self.prior_samples, self.prior_variance) if self.rule == "predictive" else 2

    def schedule(self) -> list[int]:
        """The T values at which the rule looks, ending at ``max_samples``."""
        first = self.first_look()
        return [t for t in self.checkpoints if first <= t < self.max_samples] + [self.max_samples]

    def settled(self, stats: "SampleStats") -> torch.Tensor:
        """Which rows may stop now (bool ``[B]``); every row stops at ``max_samples``."""
        last = stats.count >= self.max_samples
        if self.rule == "never" or self.error == 0 or stats.count < self.first_look():
            return torch.full((stats.rows,), last, dtype=torch.bool, device=stats.total.device)
        if last:  # the last look teaches σ₀² too (at max_samples 2 it is the only look with a spread)
            if self.prior_variance is None:
                learnt_prior(stats, self.prior_samples, self.prior_pool)
            return torch.ones(stats.rows, dtype=torch.bool, device=stats.total.device)
        probability = disagreement_probability(stats, self.max_samples, self.prior_samples, self.prior_variance,
                                               self.prior_pool)
        return probability <= self.error


class SampleStats:
    """Running sums of per-sample class scores for B rows: ``Σ f`` ``[B, C]`` and ``Σ f fᵀ``
    ``[B, C, C]`` (float64), enough for the mean and spread of the lead of any class over any
    other. All rows have seen the same number of samples, ``count``."""

    def __init__(self, rows: int, classes: int, device=None):
        self.count = 0
        self.total = torch.zeros(rows, classes, dtype=torch.float64, device=device)
        self.outer = torch.zeros(rows, classes, classes, dtype=torch.float64, device=device)
        self.prior_variance: float | None = None  # learnt at the first look showing a spread
        self.spread: tuple[float, int] | None = None  # that look's mean spread, and its rows
        self.typical = 0.0  # that look's mean squared lead

    @property
    def rows(self) -> int:
        return self.total.shape[0]

    def add(self, outputs: torch.Tensor) -> None:
        """Add per-sample outputs ``[k, B, C]`` of finite floating-point class scores (a mean of
        integers would be cut to an integer; an infinite score has no spread)."""
        _check_floating(outputs)
        if not torch.isfinite(outputs).all():
            bad = "NaN" if torch.isnan(outputs).any() else "an infinite score"
            raise UsageError(f"the model's output contains {bad}; the stopping rule needs finite class scores "
                             "(for log-probabilities, return logits or probabilities instead)")
        f = outputs.double()
        self.count += f.shape[0]
        self.total += f.sum(0)
        self.outer += torch.einsum("kbi,kbj->bij", f, f)

    def keep(self, rows: torch.Tensor) -> None:
        """Keep only ``rows`` (a bool mask or an index)."""
        self.total, self.outer = self.total[rows], self.outer[rows]

    def mean(self) -> torch.Tensor:
        return self.total / self.count


def first_decidable(prior_samples: int, prior_variance: float | None) -> int:
    """The fewest samples the predictive rule can judge: 1 with a known prior variance of weight
    ``prior_samples`` >= 1, else 2 (one sample has no spread of its own)."""
    return 1 if prior_variance is not None and prior_samples >= 1 else 2


def lead_moments(stats: SampleStats) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per row: the leading class ``[B]``, and over each class ``[B, C]`` the mean lead, the sum of
    the squared per-sample leads and their sample variance."""
    t = stats.count
    leader = stats.total.argmax(1)
    rows = torch.arange(stats.rows, device=stats.total.device)
    lead = (stats.total[rows, leader][:, None] - stats.total) / t
    diag = stats.outer.diagonal(dim1=1, dim2=2)
    squares = diag[rows, leader][:, None] + diag - 2 * stats.outer[rows, leader]
    variance = (squares - t * lead**2).clamp(min=0) / max(t - 1, 1)
    return leader, lead, squares, variance


def learnt_prior(stats: SampleStats, prior_samples: int, prior_pool: tuple[float, int],
                 moments: tuple[torch.Tensor, ...] | None = None) -> float | None:
    """The prior variance σ₀² learnt from these rows at their first look with a spread (the mean
    variance of the lead over the runner-up), pooled with ``prior_pool`` and kept in ``stats``;
    None where no row may settle at this look: fewer than :data:`PRIOR_INPUTS` inputs have shown
    their spread (with ``prior_samples`` 0 there is no prior to wait for: 0), or none is shown.
    ``moments``: :func:`lead_moments` of ``stats``, where the caller has them."""
    if stats.prior_variance is not None:
        return stats.prior_variance
    if stats.spread is None:  # the batch's first look: its rows' mean spread, zeros included
        leader, _, squares, variance = moments or lead_moments(stats)
        rows = torch.arange(stats.rows, device=stats.total.device)
        runner_up = stats.total.scatter(1, leader[:, None], -math.inf).argmax(1)
        stats.spread = (variance[rows, runner_up].mean().item(), stats.rows)
        stats.typical = (squares[rows, runner_up] / stats.count).mean().item()  # the mean squared lead, E[D²]
    (total, inputs), (mean, count) = prior_pool, stats.spread
    if inputs + count < PRIOR_INPUTS:  # too few to stand for the network's: pooled with the next batch
        return None if prior_samples else 0.0  # (of weight ν₀ = 0: no prior to wait for)
    learnt = mean if not inputs else (total + mean * count) / (inputs + count)
    if learnt <= NO_SPREAD * stats.typical:
        # every row's samples agree so far (to rounding: equal scores like 0.9 leave a spread of
        # 1e-16): no spread to learn, and none to judge by (it would settle each row, coin flips
        # included); no row settles here, the next look learns again
        stats.spread = None
        return None
    stats.prior_variance = learnt
    return learnt


def disagreement_probability(stats: SampleStats, max_samples: int, prior_samples: int = 2,
                             prior_variance: float | None = None, prior_pool: tuple[float, int] = (0.0, 0)
                             ) -> torch.Tensor:
    """Predictive probability (summed over rivals) that the decision at ``max_samples`` differs
    from the current leader's, per row ``[B]``; see the module docstring and docs/adaptive.md.
    ``prior_variance`` None: learnt from these rows (:func:`learnt_prior`); 1 for every row where
    none is learnt yet."""
    t, n = stats.count, max_samples
    first = first_decidable(prior_samples, prior_variance)
    if not first <= t < n:
        raise RuntimeError(f"the predictive rule needs {first} <= t < max_samples here, got t={t}, max_samples={n}")
    moments = lead_moments(stats)
    leader, lead, _, variance = moments
    if prior_variance is None and (prior_variance := learnt_prior(stats, prior_samples, prior_pool, moments)) is None:
        return torch.ones(stats.rows, dtype=torch.float64, device=stats.total.device)
    rows = torch.arange(stats.rows, device=stats.total.device)
    dof = prior_samples + t - 1
    spread = ((prior_samples * prior_variance + (t - 1) * variance) / dof).sqrt()
    z = lead * math.sqrt(t * n / (n - t)) / spread  # spread 0: certain (inf), or a tie (nan -> 1/2)
    p = torch.where(torch.isnan(z), torch.full_like(z, 0.5), student_t_cdf(-z, dof))
    p[rows, leader] = 0.0
    return p.sum(1)


def fresh_inputs(values: tuple, rows_of: Callable[[torch.Tensor], torch.Tensor | None]) -> tuple:
    """``values`` as one pass of a model gets them (tensors inside tuples, lists and dicts too):
    each tensor cut to the rows ``rows_of`` gives for it, or copied where it gives None -- a model
    may change its inputs in place, and a pass must not see another's change -- and a tensor given
    twice still one tensor. (Distinct tensors viewing one memory come apart: a model writing to
    one is refused, :func:`pdnn.foldcheck.share_memory`.)"""
    made = {}

    def take(value):
        if isinstance(value, torch.Tensor) and id(value) not in made:
            rows = rows_of(value)
            made[id(value)] = value.clone() if rows is None else value[rows]
        return made[id(value)] if isinstance(value, torch.Tensor) else value

    return tree_map(take, values)


@torch.no_grad()
def adaptive_sample(
    sample: Callable[..., torch.Tensor], x: torch.Tensor, *args, rule: StoppingRule = StoppingRule(),
    kept: frozenset[int] = frozenset(),
) -> tuple[torch.Tensor, torch.Tensor, StoppingRule]:
    """Mean class scores ``[B, C]``, the number of samples each row took (``[B]``, int64), and
    the rule for the next batch: ``rule`` with the prior variance it learnt here, if it had none.

    ``sample(x, *args, samples=k)`` must return ``k`` per-sample outputs ``[k, B', C]`` for the
    ``B'`` rows it is given (:meth:`pdnn.SampledModel.sample`). Each round runs only the rows
    not yet settled; tensor arguments with the batch as first dimension are cut alike, but for
    those in ``kept`` (their ids: a per-class tensor as long as the batch, say).
    """
    check_rule(rule)
    batch_tensor("adaptive sampling", x)
    if x.is_floating_point() and torch.isnan(x).any():
        raise UsageError(f"the input of shape {tuple(x.shape)} contains NaN")
    batch = x.shape[0]
    active = torch.arange(batch, device=x.device)
    taken = torch.zeros(batch, dtype=torch.long, device=x.device)
    result, stats = None, None
    if batch == 0:  # nothing to settle; one sample tells the number of classes, checked as a round's
        return _scores(sample(*fresh_inputs((x, *args), lambda a: None), samples=1), 1, 0)[0], taken, rule
    for target in rule.schedule():
        if len(active) == 0:
            break
        while (drawn := stats.count if stats else 0) < target:
            asked = min(target - drawn, ROUND_PIECE)
            cut = lambda a: active if a.dim() and len(a) == batch and id(a) not in kept else None  # noqa: E731
            inputs = fresh_inputs((x, *args), cut)
            out = _scores(sample(*inputs, samples=asked), asked, len(inputs[0]))
            if stats is None:
                stats = SampleStats(batch, out.shape[-1], out.device)
                result = torch.zeros(batch, out.shape[-1], dtype=out.dtype, device=out.device)
            _add(stats, out, inputs[0], active, tuple(x.shape))
        done = rule.settled(stats)
        result[active[done]] = stats.mean()[done].to(out.dtype)
        taken[active[done]] = stats.count
        active = active[~done]
        stats.keep(~done)
    # a batch whose samples agreed at every look taught no spread: the next batch learns it; one
    # of too few inputs passes their spreads on, to be pooled with the next batch's
    if rule.prior_variance is None and stats is not None and stats.spread is not None:
        if stats.prior_variance:
            rule = replace(rule, prior_variance=stats.prior_variance, prior_pool=(0.0, 0))
        else:
            (total, inputs), (mean, count) = rule.prior_pool, stats.spread
            rule = replace(rule, prior_pool=(total + mean * count, inputs + count))
    return result, taken, rule


def check_rule(rule) -> None:
    """Refuse a rule that is not a :class:`StoppingRule` (``SampledModel.stopping`` can be set to anything)."""
    if not isinstance(rule, StoppingRule):
        raise UsageError(f"the stopping rule must be a pdnn.adaptive.StoppingRule, got {shown(rule)}")


def _check_recorded(outputs) -> None:
    """Refuse recorded outputs that are not a tensor (a numpy array: ``torch.from_numpy`` first)."""
    if not isinstance(outputs, torch.Tensor):
        raise UsageError(f"recorded outputs must be a torch.Tensor [N, B, C], got a {type(outputs).__name__}")


def _scores(out, asked: int, rows: int) -> torch.Tensor:
    """``out``, the sampling function's outputs for ``asked`` samples of ``rows`` inputs, if they
    are floating-point class scores ``[asked, rows, C >= 2]``; else an error saying what they are."""
    if not isinstance(out, torch.Tensor):
        raise UsageError(f"adaptive sampling needs the model to return one tensor of class scores [B, C], "
                         f"got a {type(out).__name__}")
    if out.dim() != 3 or out.shape[-1] < 2:  # one column has no rival class to be settled against
        raise UsageError(f"adaptive sampling needs class scores [B, C >= 2] per sample, got shape "
                         f"{tuple(out.shape[1:])}")
    if out.shape[:2] != (asked, rows):  # (fewer, as from a short recording, looped forever)
        raise UsageError(f"the sampling function returned outputs of shape {tuple(out.shape)} for {asked} "
                         f"samples of {rows} inputs; expected [{asked}, {rows}, C]")
    _check_floating(out)
    return out


def _check_floating(scores: torch.Tensor) -> None:
    """Refuse class scores that are not floating point: a mean of integers would be cut to one."""
    if not scores.is_floating_point():
        raise UsageError(f"adaptive sampling needs floating-point class scores, but the output is "
                         f"{scores.dtype}; return logits or probabilities (as floats)")


def _add(stats: SampleStats, out: torch.Tensor, x: torch.Tensor, index: torch.Tensor, shape: tuple) -> None:
    """``stats.add(out)``, naming an infinite input as the cause of the scores that are not finite
    in its row (``x``: the rows of ``out``, rows ``index`` of the batch of ``shape``)."""
    if x.is_floating_point() and out.is_floating_point() and not torch.isfinite(out).all():
        infinite = torch.isinf(x.reshape(len(x), -1)).any(1) & ~torch.isfinite(out).all(2).all(0)
        if infinite.any():
            raise UsageError(f"input {int(index[infinite][0])} of the batch of shape {shape} contains an infinite "
                             "value, and the model's output for it holds scores that are not finite; the stopping "
                             "rule needs finite ones")
    stats.add(out)


def simulate(outputs: torch.Tensor, rule: StoppingRule) -> tuple[torch.Tensor, torch.Tensor, StoppingRule]:
    """The rule applied to recorded per-sample outputs ``[N, B, C]`` (N >= ``max_samples``):
    the same decisions and sample counts :func:`adaptive_sample` gives when the network draws
    these samples. Returns ``(mean scores at stopping [B, C], samples taken [B], rule for the
    next batch)``."""
    check_rule(rule)
    _check_recorded(outputs)
    if outputs.dim() != 3 or outputs.shape[0] < rule.max_samples:
        raise UsageError(f"need recorded outputs [N >= {rule.max_samples}, B, C], got {tuple(outputs.shape)}")
    drawn = 0  # all rows still running have seen the same samples, so one position serves

    def replay(rows: torch.Tensor, samples: int) -> torch.Tensor:
        nonlocal drawn
        drawn += samples
        return outputs[drawn - samples : drawn, rows]

    return adaptive_sample(replay, torch.arange(outputs.shape[1], device=outputs.device), rule=rule)


def rounds_taken(taken: torch.Tensor, schedule: list[int]) -> torch.Tensor:
    """How many rounds (passes) each input took part in: the looks of ``schedule`` up to its T."""
    return (torch.tensor(schedule, device=taken.device)[None, :] <= taken[:, None]).sum(1)


def oracle_samples(outputs: torch.Tensor) -> torch.Tensor:
    """For each row of ``[N, B, C]`` outputs: the smallest T after which the argmax of the
    running mean never changes again up to N (what a rule that knew the future would take)."""
    _check_recorded(outputs)
    if outputs.dim() != 3 or outputs.shape[0] < 1 or outputs.shape[2] < 2:  # (C = 0 failed in argmax)
        raise UsageError(f"the oracle needs recorded outputs [N >= 1, B, C >= 2], got shape {tuple(outputs.shape)}")
    if outputs.is_floating_point() and (nan := torch.isnan(outputs).any(2).any(0)).any():  # (argmax takes NaN first)
        raise UsageError(f"the oracle needs scores that are numbers; the recorded outputs of {int(nan.sum())} of "
                         f"{outputs.shape[1]} inputs hold NaN")
    running = outputs.double().cumsum(0).argmax(-1)  # [N, B] (mean and sum share the argmax)
    differs = running != running[-1]
    n = outputs.shape[0]
    last_wrong = torch.where(differs, torch.arange(1, n + 1, device=outputs.device)[:, None], 0).amax(0)
    return last_wrong + 1
