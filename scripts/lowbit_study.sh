#!/usr/bin/env bash
# Low-bit weights: p-DNNs and deterministic networks whose weights have b_w = 1, 2, 4, 8 bits
# (learned per-channel scales, pdnn.nn.WeightQuantizer), against the 32-bit float network.
#
#   scripts/lowbit_study.sh fashion-mnist     # results/lowbit/fashion-mnist/runs/...
#   scripts/lowbit_study.sh cifar10 [NAMES]   # CIFAR-10 (optionally only the named runs)
#   scripts/lowbit_study.sh matched           # unipolar p-bits at beta 4 (= bipolar at beta 2)
#   scripts/lowbit_study.sh tradeoff          # Pareto fronts and the cheapest run within 1 point
#
# Per b_w: float tanh, sign (quant1), quant2, quant4, and p-DNNs trained with s = 1, 4, 8. The
# schedules are those of the accuracy-vs-T studies (results/fashion-mnist, results/cifar10), whose
# runs are the 32-bit-weight points of the trade-off; so the only change is the weight width.
# Resumable: a finished run or evaluation is not redone (delete its directory to redo it).
set -euo pipefail
cd "$(dirname "$0")/.."
export PDNN_DATA=${PDNN_DATA:-$(cd .. && pwd)/shared/data}
OUT=results/lowbit
PDNN=${PDNN:-pdnn}
BITS=${BITS:-"4 2 1 8"}  # the most informative widths first

# train_and_eval DIR EVAL-OPTIONS -- TRAIN-OPTIONS...
run() {
    local d=$1; shift
    local -a test=(); while [[ $1 != -- ]]; do test+=("$1"); shift; done; shift
    if [[ ! -f $d/metrics.json ]] || ! python - "$d" <<'PY'
import json, sys
config = json.load(open(f"{sys.argv[1]}/config.json"))
sys.exit(json.load(open(f"{sys.argv[1]}/metrics.json"))[-1]["epoch"] < config["train"]["epochs"])
PY
    then
        if [[ -f $d/checkpoint.pt ]]; then
            $PDNN train --out "$d" --resume --quiet
        else
            $PDNN train "$@" --label "$(basename "$d")" --out "$d"
        fi
    fi
    [[ -f $d/eval-network.json ]] || $PDNN eval "$d" "${test[@]}"
}

study() {  # study DATASET TRAIN-BASE... ; reads TEST and ONLY
    local dataset=$1; shift
    for bw in $BITS; do
        for spec in "tanh:tanh:1" "pbit-s4:pbit:4" "pbit-s8:pbit:8" "quant2:quant:2:1" \
                    "pbit-s1:pbit:1" "quant1:quant:1:1" "quant4:quant:4:1"; do
            local name=${spec%%:*} rest=${spec#*:}
            local neuron=${rest%:*} s=${rest##*:}
            local label=w$bw-$name
            [[ -z ${ONLY:-} || " $ONLY " == *" $label "* ]] || continue
            local -a extra=(); [[ $neuron == pbit ]] && extra=(--beta 2)
            echo "== $dataset $label" >&2
            run "$OUT/$dataset/runs/$label" "${TEST[@]}" -- "$@" --neuron "$neuron" -s "$s" --weight-bits "$bw" "${extra[@]}"
        done
    done
}

case ${1:-} in
fashion-mnist)
    TEST=(--samples 1,2,5,10,20,50 --repeats 3 --quiet)
    study fashion-mnist --dataset fashion-mnist --model mlp --width 256 --epochs 5 --subset 54000 \
        --schedule cosine --lr 1e-3 --batch-size 64 --seed 0 --quiet ;;
cifar10)
    ONLY=${2:-${ONLY:-}}
    TEST=(--subset 5000 --samples 1,2,5,10,20,50 --repeats 3 --quiet)
    study cifar10 --dataset cifar10 --model cnn --width 16 --epochs 4 --subset 45000 \
        --schedule cosine --lr 1e-3 --batch-size 64 --seed 0 --quiet ;;
matched)
    # sigma(4x) = (1 + tanh(2x)) / 2: a unipolar p-bit at beta 4 has the temperature of the bipolar
    # p-bits at beta 2 of results/fashion-mnist (whose unipolar runs also used beta 2).
    TEST=(--samples 1,2,5,10,20,50 --repeats 3 --quiet)
    for s in 1 2 4 8; do
        echo "== fashion-mnist matched pbit-unipolar-beta4-s$s" >&2
        run "$OUT/matched/runs/pbit-unipolar-beta4-s$s" "${TEST[@]}" -- --dataset fashion-mnist --model mlp \
            --width 256 --epochs 5 --subset 54000 --schedule cosine --lr 1e-3 --batch-size 64 --seed 0 --quiet \
            --neuron pbit-unipolar --beta 4 -s "$s"
    done ;;
tradeoff)
    for dataset in fashion-mnist cifar10; do
        [[ -d $OUT/$dataset/runs ]] || continue
        for memory in dram sram; do
            $PDNN tradeoff results/$dataset/runs/* $OUT/$dataset/runs/* --tolerance 1 --memory $memory \
                --json $OUT/$dataset/tradeoff-$memory.json --png $OUT/$dataset/tradeoff-$memory.png
        done
    done ;;
-h|--help) echo "usage: $0 fashion-mnist | cifar10 [NAMES] | matched | tradeoff" ;;
*) echo "usage: $0 fashion-mnist | cifar10 [NAMES] | matched | tradeoff" >&2; exit 2 ;;
esac
