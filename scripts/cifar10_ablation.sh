#!/usr/bin/env bash
# What moves a CIFAR-10 p-DNN: a small ablation run before the study, on a budget that fits a
# 2-core CPU (first 10000 training images, 3 epochs; accuracy on the first 2000 test images).
#
#   scripts/cifar10_ablation.sh            # writes results/cifar10-ablation/{runs,README.md,summary.json}
#
# Every variant changes one thing against the base (reference CNN width 16, p-bit neurons, s = 2,
# beta 1, Adam lr 1e-3 with a cosine schedule, batch 64, crop+flip augmentation); the float tanh
# network under the same settings is the yardstick. Resumable: a finished run or evaluation is
# not redone (delete its directory to redo it). Data: $PDNN_DATA (default ../shared/data).
set -euo pipefail
if [[ $# -gt 0 ]]; then  # it takes none: --help or a typo had started the ablation
    sed -n '2,10p' "$0" | sed 's/^# \{0,1\}//'
    [[ $1 == -h || $1 == --help ]] && exit 0
    echo "$0: takes no arguments, got $*" >&2; exit 2
fi
cd "$(dirname "$0")/.."
export PDNN_DATA=${PDNN_DATA:-$(cd .. && pwd)/shared/data}
OUT=results/cifar10-ablation
BASE=(--dataset cifar10 --model cnn --width 16 --subset 10000 --epochs 3 --schedule cosine --lr 1e-3
      --batch-size 64 --seed 0 --quiet)
TEST=(--subset 2000 --samples 1,2,10 --repeats 2 --quiet)

# variant NAME TRAIN-OPTIONS...: later options override the base ones
variant() {
    local name=$1; shift
    local d=$OUT/runs/$name
    if [[ ! -f $d/metrics.json ]] || ! python - "$d" <<'EOF'
import json, sys
config = json.load(open(f"{sys.argv[1]}/config.json"))
sys.exit(json.load(open(f"{sys.argv[1]}/metrics.json"))[-1]["epoch"] < config["train"]["epochs"])
EOF
    then
        if [[ -f $d/checkpoint.pt ]]; then
            pdnn train --out "$d" --resume --quiet
        else
            pdnn train "${BASE[@]}" "$@" --label "$name" --out "$d"
        fi
    fi
    [[ -f $d/eval-network.json ]] || pdnn eval "$d" "${TEST[@]}"
}

variant tanh            --neuron tanh
variant pbit-base       --neuron pbit -s 2
variant pbit-beta0.5    --neuron pbit -s 2 --beta 0.5
variant pbit-beta2      --neuron pbit -s 2 --beta 2
variant pbit-beta4      --neuron pbit -s 2 --beta 4
variant pbit-constant   --neuron pbit -s 2 --schedule constant
variant pbit-lr3e-3     --neuron pbit -s 2 --lr 3e-3
variant tanh-lr3e-3     --neuron tanh --lr 3e-3
variant pbit-beta2-lr3e-3 --neuron pbit -s 2 --beta 2 --lr 3e-3
variant pbit-mean-loss  --neuron pbit -s 2 --loss-rule mean-loss
variant pbit-no-augment --neuron pbit -s 2 --no-augment
variant tanh-no-augment --neuron tanh --no-augment
variant pbit-6-epochs   --neuron pbit -s 2 --epochs 6
variant tanh-6-epochs   --neuron tanh --epochs 6
variant pbit-width32    --neuron pbit -s 2 --width 32
variant tanh-width32    --neuron tanh --width 32

python scripts/ablation_summary.py "$OUT"
