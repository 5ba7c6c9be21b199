#!/usr/bin/env bash
# Does the p-DNN's gap at small T close with training length or with width? (results/lowbit/)
#
#   scripts/length_study.sh length   # Fashion-MNIST study at 15 and 50 epochs (5 is results/fashion-mnist)
#   scripts/length_study.sh width    # Fashion-MNIST MLP width 64, 128, 512, 1024 at 5 epochs (256: results/fashion-mnist)
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
*) echo "usage: $0 length | width" >&2; exit 2 ;;
esac
