#!/usr/bin/env bash
# Generative p-DNNs on Fashion-MNIST (results/generation/): VAEs whose decoders use p-bits trained
# with s = 1, 2, 4, 8 samples, 32-bit (tanh) and k-bit (1-4) deterministic decoders, a tanh
# decoder converted to p-bits without retraining, and the classifier whose features give fid-clf.
# Reduced schedule for a shared 2-core CPU (stated in results/generation/README.md):
#   first SUBSET training images, EPOCHS epochs, width 8, latent 16, batch 64, Adam.
# Resumable: re-running skips finished steps and continues interrupted runs.
set -euo pipefail
OUT=${OUT:-results/generation}
SUBSET=${SUBSET:-6000}
EPOCHS=${EPOCHS:-4}
LR=${LR:-1e-3}
RUNS=$OUT/runs
PDNN=${PDNN:-"python -m pdnn"}
mkdir -p "$RUNS"

train() {  # train DIR ARGS...: resumes DIR if it holds a checkpoint
  local dir=$RUNS/$1; shift
  if [ -f "$dir/checkpoint.pt" ]; then $PDNN train --out "$dir" --resume --quiet
  else $PDNN train --out "$dir" --quiet "$@"; fi
}

common=(--dataset fashion-mnist --subset "$SUBSET" --epochs "$EPOCHS" --batch-size 64 --seed 0 --monitor-examples 1000)
# the fid-clf feature network: a deterministic CNN classifier on the same training images
train classifier --model cnn --neuron tanh --width 8 --lr 1e-3 "${common[@]}"
vae=(--task vae --width 8 --latent 16 "${common[@]}")
# the paper's lr (1e-4) beside the reduced schedule's, on the 32-bit decoder
train tanh-lr1e-4 --neuron tanh --lr 1e-4 "${vae[@]}"
train tanh --neuron tanh --lr "$LR" "${vae[@]}"
for s in 1 2 4 8; do train "pbit-s$s" --neuron pbit -s "$s" --lr "$LR" "${vae[@]}"; done
for k in 1 2 3 4; do train "quant$k" --neuron "quant:$k" --lr "$LR" "${vae[@]}"; done
