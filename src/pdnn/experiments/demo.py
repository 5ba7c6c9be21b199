"""The quick demo: train a small p-DNN and its float baseline on the embedded data, then show
accuracy versus the number of samples T as a table and a figure: 13 s on 2 idle CPU cores."""
from __future__ import annotations

from pathlib import Path

from ..data import describe
from ..evaluate import format_table
from ..models import ModelConfig
from ..plots import plot_accuracy_vs_samples
from ..train import TrainConfig
from .runs import ensure_evaluated, ensure_trained

SAMPLES = [1, 2, 5, 10, 20, 50]


def run_demo(out: str | Path = "runs/demo", epochs: int = 10, progress: bool = True) -> Path:
    """Train ``pdnn`` (p-bit MLP, s = 4) and ``tanh`` (float MLP) on the ``demo`` dataset into
    ``out``; evaluate and plot. Rerunning reuses finished work. Returns the figure's path."""
    out = Path(out)
    info = describe("demo")
    runs = {"p-DNN (p-bit, s=4)": ("pbit", 4), "32-bit tanh": ("tanh", 1)}
    for label, (neuron, samples) in runs.items():
        run_dir = out / neuron
        model = ModelConfig(name="mlp", neuron=neuron, input_shape=tuple(info["input_shape"]),
                            num_classes=info["num_classes"], width=256)
        ensure_trained(run_dir, model, "demo", TrainConfig(samples=samples, epochs=epochs, seed=0),
                       progress=progress, label=label, device="cpu")
        document = ensure_evaluated(run_dir, SAMPLES, repeats=3, progress=progress)
        print(f"\n{label}  ({document['examples']} test images of the embedded Fashion-MNIST subset)")
        print(format_table(document))
    figure = plot_accuracy_vs_samples([out / n for n, _ in runs.values()], out / "accuracy_vs_samples.png",
                                      title="demo: p-DNN accuracy vs samples")
    print(f"\nfigure: {figure}")
    return figure
