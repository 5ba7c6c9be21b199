"""Reference architectures, created by name: ``pdnn.models.create("cnn", neuron="pbit")``."""
from . import reference, vae  # noqa: F401  (registers the models)
from .registry import ModelConfig, available, builder_defaults, create, register
from .vae import VAE, is_generator

__all__ = ["ModelConfig", "available", "builder_defaults", "create", "register", "VAE", "is_generator"]
