"""pdnn: probabilistic deep neural networks built from p-bit neurons, sampled at run time."""
from . import functional, nn
from .sampling import SampledModel, sample_aware_loss

__version__ = "0.1.0"
__all__ = ["functional", "nn", "SampledModel", "sample_aware_loss", "__version__"]
