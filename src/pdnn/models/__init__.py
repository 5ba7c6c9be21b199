"""Reference architectures, created by name: ``pdnn.models.create("cnn", neuron="pbit")``."""
from . import reference  # noqa: F401  (registers the models)
from .registry import ModelConfig, available, create, register

__all__ = ["ModelConfig", "available", "create", "register"]
