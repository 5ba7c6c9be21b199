"""Reference models created by name (``pdnn.models.create``), as in timm's registry."""
from __future__ import annotations

import inspect
from dataclasses import asdict, dataclass, field
from typing import Callable

from torch import nn

from ..checks import integer, positive_int, positive_ints
from ..errors import UsageError
from ..functional import check_beta, check_bits

_REGISTRY: dict[str, Callable[..., nn.Module]] = {}


def register(name: str):
    """Decorator: make a model builder available to :func:`create` under ``name``."""

    def wrap(builder: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        _REGISTRY[name] = builder
        return builder

    return wrap


def available() -> list[str]:
    return sorted(_REGISTRY)


@dataclass
class ModelConfig:
    """Everything needed to rebuild a reference model; stored in a run's ``config.json``."""

    name: str = "cnn"
    neuron: str = "pbit"
    weight_bits: int = 32
    beta: float = 1.0
    input_shape: tuple[int, ...] = (1, 28, 28)
    num_classes: int = 10
    width: int | None = None  # None: the model's own default
    extra: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        # checked here rather than in each builder: a width of 0 or -5 otherwise surfaces as a
        # torch error about tensor sizes, far from the option that caused it
        if self.width is not None:
            self.width = positive_int("width", self.width, "an integer >= 1 (or None for the model's own)")
        # kept as Python's numbers, which config.json can hold (numpy's cannot, nor nan)
        self.weight_bits = check_bits(self.weight_bits, "weight bits", allow_float=True)
        self.beta = check_beta(self.beta)  # float neurons ignore it, but config.json records it
        self.num_classes = positive_int("num_classes", self.num_classes)
        self.input_shape = positive_ints("input_shape", self.input_shape, "(channels, height, width)")
        if isinstance(self.extra, dict):  # (a builder's keywords: the builder judges them)
            self.extra = {key: value if integer(value) is None else integer(value) for key, value in self.extra.items()}

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "ModelConfig":
        d = dict(d)
        d["input_shape"] = tuple(d["input_shape"])
        return cls(**d)

    def build(self) -> nn.Module:
        return create(
            self.name,
            neuron=self.neuron,
            weight_bits=self.weight_bits,
            beta=self.beta,
            input_shape=self.input_shape,
            num_classes=self.num_classes,
            **({} if self.width is None else {"width": self.width}),
            **self.extra,
        )


def builder_defaults(name: str) -> dict:
    """The keyword defaults of model ``name``'s builder: what a config that leaves an option out
    (``width`` None) builds."""
    if name not in _REGISTRY:
        raise UsageError(f"unknown model {name!r}; expected one of {', '.join(available())}")
    return {key: parameter.default for key, parameter in inspect.signature(_REGISTRY[name]).parameters.items()
            if parameter.default is not inspect.Parameter.empty}


def create(name: str, **kwargs) -> nn.Module:
    """Build the reference model ``name`` (see :func:`available`), e.g.
    ``create("cnn", neuron="pbit", weight_bits=32, input_shape=(3, 32, 32))``. Each model keeps
    the input shape it was built for as ``model.input_shape``, which :class:`pdnn.SampledModel`
    names when an input of another shape fails."""
    if name not in _REGISTRY:
        raise UsageError(f"unknown model {name!r}; expected one of {', '.join(available())}")
    for size in ("width", "depth", "num_classes"):  # or a division by zero, a model of no layer, a torch error
        if size in kwargs and kwargs[size] is None:
            del kwargs[size]  # None: the model's own, as ModelConfig has it
        elif size in kwargs:
            kwargs[size] = positive_int(size, kwargs[size])
    return _REGISTRY[name](**kwargs)
