"""Mark the weight quantisers of trained checkpoints as initialised.

    python scripts/repair_quantizer_flags.py CHECKPOINT...

Before commit 498357d,
sample-aware training with s > 1 saved every ``WeightQuantizer.initialised`` buffer as False:
the scales were initialised by the first forward pass, inside :class:`pdnn.SampledModel`'s fold
check, which then restored the buffers it had found. The scales themselves were trained and saved
correctly, but loading such a checkpoint re-initialised them from the weights, so its evaluations
measured another network. A checkpoint of epoch >= 1 has run forward passes, so its scales are
initialised: this sets the flags to True (atomically; nothing else in the file changes) and
prints each file it changed. Checkpoints of epoch 0 and those already correct are left alone.
"""
from __future__ import annotations

import sys

import torch

from pdnn.io import load_checkpoint, save_checkpoint


def repair(path: str) -> bool:
    state = load_checkpoint(path)
    flags = [k for k, v in state["model"].items() if k.endswith("initialised") and not bool(v)]
    if not flags or state.get("epoch", 0) < 1:
        return False
    for key in flags:
        state["model"][key] = torch.ones_like(state["model"][key])
    save_checkpoint(path, state)
    return True


def main() -> None:
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    for path in sys.argv[1:]:
        if repair(path):
            print(f"repaired {path}")


if __name__ == "__main__":
    main()
