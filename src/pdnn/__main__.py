"""``python -m pdnn`` (also what ``torchrun ... -m pdnn train`` runs)."""
import sys

from .cli import main

sys.exit(main())
