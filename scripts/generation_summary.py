"""Tables, figures and the claim verdicts of results/generation/ from its scored runs
(:func:`pdnn.experiments.generation_summary.main`).

Usage: python scripts/generation_summary.py [DIR]   (default results/generation)
"""
import sys
from pathlib import Path

import torch

from pdnn.experiments.generation_summary import main

if __name__ == "__main__":
    torch.set_num_threads(1)
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "results/generation"))
