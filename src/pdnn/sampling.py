"""Run T samples of a network in one batched pass, and the sample-aware training loss.

How it works. The model is traced once with ``torch.fx`` (pdnn layers and standard layers are
kept as leaves). Every node that depends on a stochastic module (a p-bit, a noise injector) is in
the *stochastic region*; everything else is the *deterministic prefix*. The graph is rewritten so
that

* ``aggregate="network"`` (the p-DNN): the prefix runs once at batch size B; each prefix tensor
  that enters the stochastic region is repeated T times along the batch dimension (samples are
  folded into the batch, sample-major), so the rest of the network runs T independent samples in
  one pass at batch size T*B, reading every weight once for all T samples. The output is unfolded
  to ``[T, B, ...]`` and reduced.
* ``aggregate="layer"`` (the random bit-stream baseline): each stochastic module receives its
  input repeated T times, and its T outputs are averaged into one multi-bit estimate of its mean
  before the next layer sees them; the rest of the network runs at batch size B.

If a model cannot be traced (data-dependent control flow), network aggregation falls back to
repeating the inputs: still correct, but the prefix is no longer shared (a warning says so).
See ``docs/sampling.md`` for the precise definitions.
"""
from __future__ import annotations

import warnings
from typing import Callable

import torch
from torch import fx, nn

from .adaptive import StoppingRule, adaptive_sample
from .checks import AGGREGATIONS, LOSS_RULES, REDUCTIONS, one_of, positive_int
from .errors import UsageError
from .nn import is_stochastic
from .tracing import Tracer

MAX_ROWS = 256  # a good max_rows on a CPU, see SampledModel(max_rows=...)


def check_samples(samples) -> int:
    """Return ``samples`` if it is an integer >= 1, else raise naming the value."""
    return positive_int("samples (T)", samples)


def repeat_samples(x, samples: int):
    """Fold ``samples`` copies of ``x`` into its batch dimension (sample-major)."""
    if not isinstance(x, torch.Tensor) or samples == 1:
        return x
    return x.repeat(samples, *([1] * (x.dim() - 1)))


def average_samples(x: torch.Tensor, samples: int) -> torch.Tensor:
    """Inverse of :func:`repeat_samples` followed by a mean over the samples."""
    if samples == 1:
        return x
    return x.reshape(samples, -1, *x.shape[1:]).mean(0)


def _deterministic(m: nn.Module) -> bool:
    """Traced only into modules that contain randomness: a module without a stochastic
    descendant is deterministic as a whole and stays one opaque call (see :mod:`pdnn.tracing`)."""
    return not any(is_stochastic(sub) for sub in m.modules())


def _stochastic_nodes(gm: fx.GraphModule) -> set[fx.Node]:
    """Nodes whose value depends on a random draw."""
    modules = dict(gm.named_modules())
    region: set[fx.Node] = set()
    for node in gm.graph.nodes:
        draws = node.op == "call_module" and is_stochastic(modules[node.target])
        if draws or any(a in region for a in node.all_input_nodes):
            region.add(node)
    return region


def _batched_nodes(gm: fx.GraphModule) -> set[fx.Node]:
    """Nodes derived from the inputs (which carry the batch dimension)."""
    batched: set[fx.Node] = set()
    for node in gm.graph.nodes:
        if node.op == "placeholder" or any(a in batched for a in node.all_input_nodes):
            batched.add(node)
    return batched


def _fold_network(gm: fx.GraphModule, samples: int) -> None:
    """Repeat prefix tensors T times where they enter the stochastic region (or the output)."""
    graph = gm.graph
    region, batched = _stochastic_nodes(gm), _batched_nodes(gm)
    repeated: dict[fx.Node, fx.Node] = {}
    for node in list(graph.nodes):
        if node not in region and node.op != "output":
            continue
        for arg in node.all_input_nodes:
            if arg in region or arg not in batched:
                continue
            if arg not in repeated:
                with graph.inserting_after(arg):
                    repeated[arg] = graph.call_function(repeat_samples, (arg, samples))
            node.replace_input_with(arg, repeated[arg])


def _fold_layer(gm: fx.GraphModule, samples: int) -> None:
    """Around every stochastic module: repeat its input T times, average its T outputs."""
    graph = gm.graph
    modules = dict(gm.named_modules())
    for node in list(graph.nodes):
        if node.op != "call_module" or not is_stochastic(modules[node.target]):
            continue
        for arg in node.all_input_nodes:
            with graph.inserting_before(node):
                node.replace_input_with(arg, graph.call_function(repeat_samples, (arg, samples)))
        with graph.inserting_after(node):
            mean = graph.call_function(average_samples, (node, samples))
        node.replace_all_uses_with(mean, delete_user_cb=lambda user: user is not mean)


def build_sampled_graph(model: nn.Module, samples: int, aggregate: str) -> nn.Module | None:
    """Trace ``model`` and rewrite it for ``samples`` samples; ``None`` if it cannot be traced."""
    try:
        gm = fx.GraphModule(model, Tracer(_deterministic).trace(model))
    except Exception as err:  # fx raises many types for untraceable code
        if aggregate == "layer":
            raise TypeError(
                f"aggregate='layer' needs a model torch.fx can trace; tracing failed with: {err}"
            ) from err
        warnings.warn(
            f"{type(model).__name__} could not be traced ({err}); sampling by repeating the "
            "input, so the deterministic prefix is recomputed for every sample",
            stacklevel=3,
        )
        return None
    (_fold_network if aggregate == "network" else _fold_layer)(gm, samples)
    gm.graph.lint()
    gm.recompile()
    return gm


def reduce_samples(out: torch.Tensor, reduce: str) -> torch.Tensor:
    """Reduce per-sample outputs ``[T, B, ...]``.

    ``mean``: the average output (the paper's rule). ``vote``: for class scores ``[T, B, C]``,
    the fraction of samples whose argmax is each class (``argmax`` of it is the majority vote).
    ``none``: the samples themselves.
    """
    if reduce == "mean":
        return out.mean(0)
    if reduce == "vote":
        votes = nn.functional.one_hot(out.argmax(-1), out.shape[-1]).to(out.dtype)
        return votes.mean(0)
    return out


class SampledModel(nn.Module):
    """Wrap a network so that one call runs T samples of it and reduces them.

    Args:
        model: any ``nn.Module`` built from standard layers and pdnn layers. It is shared, not
            copied: training the model trains the wrapper. Its structure is traced on first use
            for each T; replacing its submodules afterwards needs a new ``SampledModel``.
        samples: T, the number of samples (integer >= 1); may be changed on a live object.
            ``"auto"``: T chosen per input by a stopping rule (:mod:`pdnn.adaptive`), up to
            ``max_samples``, at predictive error level ``error``; ``last_samples`` then holds
            each input's T. Needs ``reduce="mean"`` and ``aggregate="network"``.
        reduce: ``"mean"``, ``"vote"`` or ``"none"`` (returns ``[T, B, ...]``; with
            ``aggregate="layer"`` T is consumed inside and ``none`` returns ``[1, B, ...]``).
        aggregate: ``"network"`` (p-DNN) or ``"layer"`` (random bit-stream baseline).
        seed: if given, every stochastic module draws from a ``torch.Generator`` seeded with it
            (one per device), so the same seed gives the same samples. ``None`` uses torch's
            global generator.
        max_rows: the most samples x batch rows one folded pass may hold. A larger batch is
            split into sub-batches of ``max_rows // T`` inputs (each still shares its prefix), so
            the activations stay small and memory stays bounded: on a 2-core CPU the reference
            CNN (width 16) at T = 10, batch 256, split to 1024 rows, ran 1.6x slower than a loop
            of 10 passes of 256 rows (``benchmarks/bench_speed.py``; glibc maps every buffer
            above 32 MiB afresh, and page faults then dominate); ``MAX_ROWS`` (256) is the
            measured choice, which evaluation uses. ``None`` (the default) never splits. The split
            changes the order of the draws, so a seed's samples depend on it. Only inputs
            without extra positional arguments are split.

    Example:
        >>> from pdnn.nn import PBit
        >>> net = nn.Sequential(nn.Linear(4, 8), PBit(), nn.Linear(8, 3))
        >>> sampled = SampledModel(net, samples=10)
        >>> sampled(torch.randn(5, 4)).shape
        torch.Size([5, 3])
    """

    def __init__(
        self,
        model: nn.Module,
        samples: int = 1,
        reduce: str = "mean",
        aggregate: str = "network",
        seed: int | None = None,
        max_samples: int = 50,
        error: float = 0.01,
        rule: str = "predictive",
        max_rows: int | None = None,
    ):
        super().__init__()
        self.max_rows = None if max_rows is None else positive_int("max_rows", max_rows, "an integer >= 1 or None")
        one_of("reduce", reduce, REDUCTIONS)
        one_of("aggregate", aggregate, AGGREGATIONS)
        self.model = model
        self.reduce = reduce
        self.aggregate = aggregate
        self.samples = samples
        self.seed = seed
        self.stopping = StoppingRule(max_samples, error, rule)
        if samples == "auto" and (reduce, aggregate) != ("mean", "network"):
            raise UsageError(f'samples="auto" needs reduce="mean" and aggregate="network", got {reduce!r}, {aggregate!r}')
        self.last_samples: torch.Tensor | None = None
        self._generators: dict[str, torch.Generator] = {}
        self._graphs: dict[int, nn.Module | None] = {}

    @property
    def samples(self) -> int | str:
        return self._samples

    @samples.setter
    def samples(self, value: int | str) -> None:
        self._samples = value if value == "auto" else check_samples(value)

    def generator(self, device: torch.device | str) -> torch.Generator | None:
        """The seeded generator for ``device`` (created on first use), or ``None`` if unseeded."""
        if self.seed is None:
            return None
        key = str(torch.device(device))
        if key not in self._generators:
            self._generators[key] = torch.Generator(device=device).manual_seed(self.seed)
        return self._generators[key]

    def _graph(self, samples: int) -> nn.Module | None:
        if samples not in self._graphs:
            self._graphs[samples] = build_sampled_graph(self.model, samples, self.aggregate)
        return self._graphs[samples]

    def sample(self, x: torch.Tensor, *args, samples: int | None = None) -> torch.Tensor:
        """Per-sample outputs ``[T, B, ...]`` (``[1, B, ...]`` for layer aggregation); ``samples``
        overrides T for this call."""
        if not isinstance(x, torch.Tensor) or x.dim() == 0:
            raise ValueError("SampledModel expects a batched tensor input [B, ...]")
        batch, samples = x.shape[0], check_samples(self.samples if samples is None else samples)
        stochastic = [m for m in self.model.modules() if is_stochastic(m)]
        generator = self.generator(x.device)
        saved = [m.generator for m in stochastic]
        if generator is not None:
            for m in stochastic:
                m.generator = generator
        try:
            graph = self._graph(samples)
            if graph is None:
                out = self.model(*(repeat_samples(a, samples) for a in (x, *args)))
            else:
                out = graph(x, *args)
        except RuntimeError as err:  # e.g. a shape mismatch, whose sizes count samples x batch rows
            rows = (f"after the deterministic prefix the network runs {samples} samples x batch {batch} = "
                    f"{samples * batch} rows" if self.aggregate == "network" else
                    f"each stochastic module runs {samples} samples x batch {batch} rows, the rest batch {batch}")
            raise RuntimeError(f"{err} [input of shape {tuple(x.shape)}; {rows}]") from err
        finally:
            for m, g in zip(stochastic, saved):
                m.generator = g
        per_sample = 1 if self.aggregate == "layer" else samples
        if out.shape[0] != per_sample * batch:
            raise RuntimeError(
                f"the model's output has batch size {out.shape[0]}, expected {per_sample * batch} "
                f"({per_sample} samples x batch {batch}); does the model use a batch size it "
                "computed before its first stochastic layer?"
            )
        return out.reshape(per_sample, batch, *out.shape[1:])

    def forward(self, x: torch.Tensor, *args) -> torch.Tensor:
        if self.samples == "auto":
            mean, self.last_samples = adaptive_sample(self.sample, x, *args, rule=self.stopping)
            return mean
        step = self.max_rows and max(1, self.max_rows // self.samples)
        if args or not step or not isinstance(x, torch.Tensor) or x.dim() == 0 or len(x) <= step:
            return reduce_samples(self.sample(x, *args), self.reduce)
        return torch.cat([reduce_samples(self.sample(part), self.reduce) for part in x.split(step)],
                         dim=1 if self.reduce == "none" else 0)

    def extra_repr(self) -> str:
        return f"samples={self.samples}, reduce={self.reduce!r}, aggregate={self.aggregate!r}"


def sample_aware_loss(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    samples: int = 1,
    criterion: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = nn.functional.cross_entropy,
    rule: str = "mean-output",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Loss of a network trained with ``samples`` (s) samples per example.

    ``rule="mean-output"`` (the paper's): ``criterion(mean_s(f_s(x)), y)`` -- the network is
    trained to be right *after* averaging, as it is used at test time. ``rule="mean-loss"``:
    ``mean_s criterion(f_s(x), y)``, for comparison. Gradients flow through the bits by the
    p-bits' straight-through estimator.

    ``model`` may be a plain network or a :class:`SampledModel` (pass one in a training loop so
    the traced graph is reused; its ``samples`` is set to ``samples``).

    Returns ``(loss, averaged_output)``; the output is useful for training accuracy.
    """
    sampled = model if isinstance(model, SampledModel) else SampledModel(model)
    sampled.samples = samples
    return loss_of_samples(sampled.sample(x), y, criterion, rule)


def loss_of_samples(
    outs: torch.Tensor,
    y: torch.Tensor,
    criterion: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = nn.functional.cross_entropy,
    rule: str = "mean-output",
) -> tuple[torch.Tensor, torch.Tensor]:
    """The sample-aware loss of per-sample outputs ``[s, B, ...]``; see :func:`sample_aware_loss`."""
    one_of("rule", rule, LOSS_RULES)
    mean = outs.mean(0)
    if rule == "mean-output":
        return criterion(mean, y), mean
    return torch.stack([criterion(o, y) for o in outs]).mean(), mean
