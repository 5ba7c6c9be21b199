#!/usr/bin/env bash
# Does the p-DNN's gap at small T close with training length or with width? (results/lowbit/)
#
#   scripts/length_study.sh length   # Fashion-MNIST study at 15 and 50 epochs (5 is results/fashion-mnist)
#   scripts/length_study.sh width    # Fashion-MNIST MLP width 64, 128, 512, 1024 at 5 epochs (256: results/fashion-mnist)
#   scripts/length_study.sh cifar10  # CIFAR-10 tanh and p-bit s = 4: width 32 at the study's 4 epochs, then
#                                    # width 16 at 20 epochs (hours on 2 CPU cores; rerun to continue)
#   scripts/length_study.sh gpu      # the same two CIFAR-10 networks on the paper's schedule (1000 epochs,
#                                    # all 50000 training images), for a GPU
#
# Every run has the schedule of results/fashion-mnist (first 54000 training images, cosine
# schedule over the run's own length, Adam lr 1e-3, batch 64, p-bit beta 2, seed 0); only the
# number of epochs or the width changes. Bipolar p-bits only (the claims are about them).
# Resumable: `pdnn study` skips finished runs and resumes a partial one.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=results/lowbit
PDNN=${PDNN:-pdnn}
base=(--dataset fashion-mnist --model mlp --beta 2 --subset 54000 --schedule cosine --lr 1e-3 --batch-size 64
      --seed 0 --pbit-neurons pbit --quiet)
case ${1:-} in
length)
    for epochs in 15 50; do
        $PDNN study "${base[@]}" --width 256 --epochs "$epochs" --out "$OUT/length/epochs-$epochs"
    done ;;
width)
    for width in 64 128 512 1024; do
        $PDNN study "${base[@]}" --width "$width" --epochs 5 --quant-bits 3 --out "$OUT/width/width-$width"
    done ;;
cifar10|gpu)
    export PDNN_DATA=${PDNN_DATA:-$(cd .. && pwd)/shared/data}
    cifar=(--dataset cifar10 --model cnn --schedule cosine --lr 1e-3 --batch-size 64 --seed 0 --quiet)
    if [[ $1 == cifar10 ]]; then
        plans=("width-32:--width 32 --epochs 4 --subset 45000" "epochs-20:--width 16 --epochs 20 --subset 45000")
        test=(--subset 5000 --samples 1,2,5,10,20,50 --repeats 3 --quiet)
    else
        plans=("paper:--width 16 --epochs 1000 --device cuda")
        test=(--samples 1,2,5,10,20,50 --repeats 3 --quiet)
    fi
    for plan in "${plans[@]}"; do
        name=${plan%%:*}; read -ra extra <<< "${plan#*:}"
        for spec in "tanh:tanh:1" "pbit-s4:pbit:4"; do
            label=${spec%%:*} rest=${spec#*:}
            d=$OUT/cifar10/$name/$label
            beta=(); [[ $label == pbit-s4 ]] && beta=(--beta 2)
            if [[ -f $d/checkpoint.pt ]]; then $PDNN train --out "$d" --resume --quiet
            else $PDNN train "${cifar[@]}" "${extra[@]}" --neuron "${rest%:*}" -s "${rest##*:}" "${beta[@]}" --label "$label" --out "$d"; fi
            [[ -f $d/eval-network.json ]] || $PDNN eval "$d" "${test[@]}"
        done
    done ;;
-h|--help) echo "usage: $0 length | width | cifar10 | gpu" ;;
*) echo "usage: $0 length | width | cifar10 | gpu" >&2; exit 2 ;;
esac
