"""``pdnn train``: sample-aware training into a run directory."""
from __future__ import annotations

import warnings
from pathlib import Path

from ..errors import UsageError
from ..checks import LOSS_RULES, SCHEDULES, positive_int
from ..data import describe
from ..devices import resolve_device
from ..models import ModelConfig, available, builder_defaults
from ..nn import NEURONS, NeuronSpec
from ..convert.rundir import build_model
from ..runs import CONFIG, RunError, read_config
from ..tasks import TASKS
from ..train import TrainConfig, check_not_a_results_folder, speaks_for_the_run, train
from ..train_config import recorded_options
from .common import TRAINING_OPTIONS, add_data_options, add_device_option, label_text, named_path, options_named

NEW_RUN_OPTIONS = ("dataset", "subset", "task", "model", "latent", "neuron", "weight_bits", "beta", "width",
                   "train_samples", "batch_size", "lr", "schedule", "weight_decay", "loss_rule", "no_augment", "seed",
                   "monitor_examples", "label")


def add_parser(sub) -> None:
    p = sub.add_parser("train", help="train a p-DNN (or a baseline) into a run directory",
                       description="Sample-aware training: the loss is computed on the average of s samples.")
    p.add_argument("--dataset", default="demo", help="demo | fashion-mnist | mnist | cifar10 | celeba (default: demo)")
    p.add_argument("--task", choices=tuple(TASKS), default="classify",
                   help="what the model is trained to do (default: classify)")
    p.add_argument("--model", help=f"reference model: {', '.join(available())} (default: cnn; vae for --task vae)")
    p.add_argument("--latent", type=int, help="latent dimensions of a VAE (default: 16)")
    p.add_argument("--neuron", default="pbit", help=f"{', '.join(NEURONS)} (default: pbit)")
    p.add_argument("--weight-bits", type=int, default=32, help="1..8, or 32 for float (default: 32)")
    p.add_argument("--beta", type=float, default=1.0, help="p-bit inverse temperature (default: 1)")
    p.add_argument("--width", type=int, help="base width (default: the model's own)")
    p.add_argument("--train-samples", "-s", type=int, default=1, help="samples averaged in the loss (default: 1)")
    p.add_argument("--epochs", type=int, help="epochs in total (default: 10; on --resume: the stored number)")
    p.add_argument("--batch-size", type=int, default=64, help="examples per step (default: 64)")
    p.add_argument("--lr", type=float,
                   help="Adam learning rate (default: 1e-3; 1e-4 for --task vae, the paper's generation runs)")
    p.add_argument("--schedule", choices=SCHEDULES, default="constant",
                   help="learning rate over the run: constant, or cosine from --lr down to 0, set at every step "
                        "(default: constant)")
    p.add_argument("--weight-decay", type=float, default=0.0, help="Adam's L2 penalty (default: 0)")
    p.add_argument("--loss-rule", choices=LOSS_RULES, default="mean-output",
                   help="mean-output: the loss of the mean of the s outputs (the paper's); mean-loss: the mean "
                        "of the s losses (default: mean-output)")
    p.add_argument("--no-augment", action="store_true",
                   help="disable crop/flip augmentation (only CIFAR-10 is augmented; elsewhere it changes nothing)")
    p.add_argument("--seed", type=int, default=0,
                   help="fixes the initial weights, the example order, augmentation and the p-bits' draws (default: 0); "
                        "torch's CPU generator reads its low 32 bits, so seeds 2**32 apart train alike")
    p.add_argument("--monitor-examples", type=int, metavar="N",
                   help="test examples for the per-epoch held-out metric (default: all)")
    p.add_argument("--label", type=label_text, help="name used in plots and tables (default: the directory name)")
    p.add_argument("--out", type=named_path, required=True, metavar="RUN_DIR", help="run directory to create")
    p.add_argument("--resume", action="store_true",
                   help="continue RUN_DIR from its last checkpoint (its config.json is reused; --epochs may "
                        "change, never below the epochs already trained)")
    add_data_options(p)
    add_device_option(p)
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    # a new run's options, which --resume takes from config.json: None marks one as not given
    p.set_defaults(run=run, new_run_defaults={name: p.get_default(name) for name in NEW_RUN_OPTIONS},
                   **dict.fromkeys(NEW_RUN_OPTIONS))


# what a resumed run keeps where it was given no value for an option
_KEPT_UNSET = {"subset": "all the training data", "monitor_examples": "every test example", "label": "no label"}


def _kept_by_resume(args, saved: dict) -> None:
    """Warn about the given options that a resumed run ignores, naming the value it keeps."""
    kept, built = recorded_options(saved), builder_defaults(saved["model"]["name"])
    ignored = []
    for name in NEW_RUN_OPTIONS:
        if kept[name] is None and name in built:  # left to the model: what it built
            kept[name] = built[name]
        given = getattr(args, name)
        if given is not None and given != kept[name]:
            option = f"--{name.replace('_', '-')}" + ("" if given is True else f" {given}")  # a flag has no value
            keeps = "augmentation" if name == "no_augment" else kept[name] if kept[name] is not None else \
                _KEPT_UNSET.get(name, "none")
            ignored.append(f"{option} (it keeps {keeps})")
    if ignored and speaks_for_the_run():  # (every process would say it)
        warnings.warn(f"{args.out} is resumed with its own configuration; ignored: {', '.join(ignored)}", stacklevel=2)


def _warn_idle_options(args, given: set[str]) -> None:
    """Options a new run records but its neurons do not use: said, since the record reads as if
    they mattered (and s > 1 costs s times the forward passes for the same loss)."""
    neuron = NeuronSpec.parse(args.neuron)
    if "beta" in given and neuron.kind == "float":
        warnings.warn(f"--beta {args.beta} does nothing to {args.neuron} neurons (the normalisation before a float "
                      "activation absorbs it); it applies to p-bits and quantised neurons", stacklevel=2)
    if args.train_samples > 1 and not neuron.stochastic:  # (a generator's latent is drawn once for its samples)
        warnings.warn(f"-s {args.train_samples} with deterministic {args.neuron} neurons: every sample is the same, "
                      f"so the loss is that of s = 1, at the cost of {args.train_samples} samples' passes",
                      stacklevel=2)


def run(args) -> int:
    device = resolve_device(args.device)
    if args.resume:
        check_not_a_results_folder(Path(args.out))  # (said as: no config.json)
        saved = read_config(args.out)
        if not isinstance(saved.get("data"), dict) or not isinstance(saved.get("train"), dict):
            raise RunError(f"{args.out}/{CONFIG} has no 'data' and 'train' sections to resume from")
        if not isinstance(saved["data"].get("dataset"), str):
            raise RunError(f"{args.out}/{CONFIG}: its 'data' section names no dataset to resume on")
        build_model(args.out, saved)  # a bad model section is said before any work
        model_config = ModelConfig.from_dict(saved["model"])
        dataset, subset = saved["data"]["dataset"], saved["data"].get("subset")
        try:  # (a value edited by hand was named as if given on the command line)
            train_config = TrainConfig.from_dict(saved["train"]).validate()
            if subset is not None:
                positive_int("subset", subset, "an integer >= 1 or null (all the training data)", most=None)
        except (UsageError, RunError) as err:
            raise RunError(f"{args.out}/{CONFIG}: bad 'train' or 'data' section ({err})") from None
        _kept_by_resume(args, saved)
        train_config.epochs = train_config.epochs if args.epochs is None else positive_int("--epochs", args.epochs)
        label = saved.get("label")
    else:
        given = {name for name in args.new_run_defaults if getattr(args, name) is not None}
        for name, default in args.new_run_defaults.items():
            if getattr(args, name) is None:
                setattr(args, name, default)
        info = describe(args.dataset)
        name = args.model if args.model is not None else ("vae" if args.task == "vae" else "cnn")
        if args.latent is not None and name != "vae":
            raise UsageError(f"--latent applies to the model 'vae', not {name!r}")
        with options_named(TRAINING_OPTIONS):
            model_config = ModelConfig(name=name, neuron=args.neuron, weight_bits=args.weight_bits,
                                       beta=args.beta, input_shape=tuple(info["input_shape"]),
                                       num_classes=info["num_classes"], width=args.width,
                                       extra={} if args.latent is None else {"latent": args.latent})
        dataset, subset = args.dataset, args.subset
        label = args.label
        train_config = TrainConfig(samples=args.train_samples, epochs=10 if args.epochs is None else args.epochs,
                                   batch_size=args.batch_size,
                                   lr=(1e-4 if args.task == "vae" else 1e-3) if args.lr is None else args.lr,
                                   schedule=args.schedule, weight_decay=args.weight_decay,
                                   seed=args.seed, loss_rule=args.loss_rule, augment=not args.no_augment,
                                   task=args.task, monitor_examples=args.monitor_examples)
        with options_named(TRAINING_OPTIONS):  # validate names and sizes before touching the disk
            TASKS[args.task](train_config.validate()).build(model_config)
        if speaks_for_the_run():
            _warn_idle_options(args, given)
    metrics = train(args.out, model_config, dataset, train_config, roots=args.data_dir, subset=subset,
                    resume=args.resume, device=device, progress=not args.quiet, label=label)
    if metrics:
        last = metrics[-1]
        score = (f"test loss {last['test_loss']:.2f} nats/image" if "test_loss" in last
                 else f"test accuracy {100 * last['test_accuracy']:.2f}%")
        print(f"{args.out}: epoch {last['epoch']}  {score} (T={last['test_samples']})")
    return 0
