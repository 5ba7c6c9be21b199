"""``pdnn train``: sample-aware training into a run directory."""
from __future__ import annotations

from ..checks import LOSS_RULES, SCHEDULES
from ..data import describe
from ..devices import resolve_device
from ..models import ModelConfig, available
from ..nn import NEURONS
from ..runs import CONFIG, read_json
from ..train import TrainConfig, train
from .common import add_data_options, add_device_option


def add_parser(sub) -> None:
    p = sub.add_parser("train", help="train a p-DNN (or a baseline) into a run directory",
                       description="Sample-aware training: the loss is computed on the average of s samples.")
    p.add_argument("--dataset", default="demo", help="demo | fashion-mnist | mnist | cifar10 (default: demo)")
    p.add_argument("--model", default="cnn", help=f"reference model: {', '.join(available())} (default: cnn)")
    p.add_argument("--neuron", default="pbit", help=f"{', '.join(NEURONS)} (default: pbit)")
    p.add_argument("--weight-bits", type=int, default=32, help="1..8, or 32 for float (default: 32)")
    p.add_argument("--beta", type=float, default=1.0, help="p-bit inverse temperature (default: 1)")
    p.add_argument("--width", type=int, help="base width (default: the model's own)")
    p.add_argument("--train-samples", "-s", type=int, default=1, help="samples averaged in the loss (default: 1)")
    p.add_argument("--epochs", type=int, help="epochs in total (default: 10; on --resume: the stored number)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--schedule", choices=SCHEDULES, default="constant")
    p.add_argument("--weight-decay", type=float, default=0.0)
    p.add_argument("--loss-rule", choices=LOSS_RULES, default="mean-output")
    p.add_argument("--no-augment", action="store_true", help="disable crop/flip augmentation")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--label", help="name used in plots and tables (default: the directory name)")
    p.add_argument("--out", required=True, metavar="RUN_DIR", help="run directory to create")
    p.add_argument("--resume", action="store_true",
                   help="continue RUN_DIR from its last checkpoint (its config.json is reused; --epochs may grow)")
    add_data_options(p)
    add_device_option(p)
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(run=run)


def run(args) -> int:
    device = resolve_device(args.device)
    if args.resume:
        saved = read_json(f"{args.out}/{CONFIG}")
        model_config = ModelConfig.from_dict(saved["model"])
        dataset, subset = saved["data"]["dataset"], saved["data"]["subset"]
        train_config = TrainConfig(**saved["train"])
        train_config.epochs = args.epochs or train_config.epochs
        label = saved.get("label")
    else:
        info = describe(args.dataset)
        model_config = ModelConfig(name=args.model, neuron=args.neuron, weight_bits=args.weight_bits,
                                   beta=args.beta, input_shape=tuple(info["input_shape"]),
                                   num_classes=info["num_classes"], width=args.width)
        model_config.build()  # validate names and sizes before touching the disk
        dataset, subset = args.dataset, args.subset
        label = args.label
        train_config = TrainConfig(samples=args.train_samples, epochs=args.epochs or 10, batch_size=args.batch_size,
                                   lr=args.lr, schedule=args.schedule, weight_decay=args.weight_decay,
                                   seed=args.seed, loss_rule=args.loss_rule, augment=not args.no_augment)
    metrics = train(args.out, model_config, dataset, train_config, roots=args.data_dir, subset=subset,
                    resume=args.resume, device=device, progress=not args.quiet, label=label)
    if metrics:
        last = metrics[-1]
        print(f"{args.out}: epoch {last['epoch']}  test accuracy (T={last['test_samples']}) "
              f"{100 * last['test_accuracy']:.2f}%")
    return 0
