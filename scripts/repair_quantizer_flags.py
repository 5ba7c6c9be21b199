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

import argparse

import torch

from pdnn.interrupts import run_script
from pdnn.io import RunError, load_checkpoint, save_checkpoint


def repair(path: str) -> bool:
    state = load_checkpoint(path)
    if not isinstance(state.get("model") if isinstance(state, dict) else None, dict):
        raise RunError(f"{path} is not a pdnn checkpoint (expected a state dict under 'model')")
    found = {k: v for k, v in state["model"].items() if isinstance(k, str) and k.endswith("initialised")}
    for key, value in found.items():
        if not isinstance(value, torch.Tensor) or value.numel() != 1:
            what = (f"a tensor of shape {list(value.shape)}" if isinstance(value, torch.Tensor)
                    else " ".join(repr(value).split())[:60])  # on one line: an array's repr spans several
            raise RunError(f"{path}: flag {key} is {what}; expected a tensor of one value (is it a pdnn checkpoint?)")
    epoch = state.get("epoch", 0)
    if type(epoch) is not int:  # (True is an int to isinstance)
        raise RunError(f"{path}: 'epoch' is {epoch!r}; expected a whole number (is it a pdnn checkpoint?)")
    flags = [k for k, v in found.items() if not bool(v)]
    if not flags or state.get("epoch", 0) < 1:
        return False
    for key in flags:
        state["model"][key] = torch.ones_like(state["model"][key])
    save_checkpoint(path, state)
    return True


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoints", nargs="+", metavar="CHECKPOINT")
    for path in parser.parse_args(argv).checkpoints:
        try:
            if repair(path):
                print(f"repaired {path}")
        except RunError as err:  # missing, or not a checkpoint: nothing was written to it
            parser.error(str(err))


if __name__ == "__main__":
    run_script(main)
