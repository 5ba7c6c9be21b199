#!/usr/bin/env bash
# Generative p-DNNs on Fashion-MNIST (results/generation/): VAEs whose decoders use p-bits trained
# with s = 1, 2, 4, 8 samples, 32-bit (tanh) and k-bit (1-4) deterministic decoders, and the
# classifier whose penultimate features give fid-clf; each VAE is then scored with pdnn fid.
# Reduced schedule for a shared 2-core CPU (stated in results/generation/README.md):
#   VAEs: the first SUBSET training images, EPOCHS epochs, width 8, latent 16, batch 64, Adam, LR;
#   fid-clf: N generated against the first N test images, REPEATS generations, T = 1..50.
# Usage: scripts/generation_study.sh [a|b|all]  -- two halves that can run side by side.
# Resumable: re-running skips finished steps and continues interrupted runs.
set -euo pipefail
OUT=${OUT:-results/generation}
SUBSET=${SUBSET:-3000}
EPOCHS=${EPOCHS:-3}
LR=${LR:-1e-3}
N=${N:-1000}
REPEATS=${REPEATS:-2}
RUNS=$OUT/runs
PDNN=${PDNN:-"python -m pdnn"}
PART=${1:-all}
mkdir -p "$RUNS"

train() {  # train NAME ARGS...: resumes runs/NAME if it holds a checkpoint
  local dir=$RUNS/$1; shift
  if [ -f "$dir/checkpoint.pt" ]; then $PDNN train --out "$dir" --resume --quiet
  else $PDNN train --out "$dir" --quiet "$@"; fi
}
score() {  # score NAME: fid-clf against T, once
  [ -f "$RUNS/$1/fid-clf.json" ] || $PDNN fid "$RUNS/$1" --classifier "$RUNS/classifier" --n "$N" \
    --repeats "$REPEATS" --samples 1,2,5,10,20,50 --quiet
}

common=(--dataset fashion-mnist --batch-size 64 --seed 0 --monitor-examples 500)
# the fid-clf feature network: a deterministic CNN classifier (first 6000 training images, 4 epochs)
train classifier --model cnn --neuron tanh --width 8 --lr 1e-3 --subset 6000 --epochs 4 "${common[@]}"
vae=(--task vae --width 8 --latent 16 --subset "$SUBSET" --epochs "$EPOCHS" --lr "$LR" "${common[@]}")
if [ "$PART" != b ]; then
  for s in 8; do train "pbit-s$s" --neuron pbit -s "$s" "${vae[@]}"; score "pbit-s$s"; done
  for k in 1 2; do train "quant$k" --neuron "quant:$k" "${vae[@]}"; score "quant$k"; done
fi
if [ "$PART" != a ]; then
  train tanh --neuron tanh "${vae[@]}"; score tanh
  for s in 1 2 4; do train "pbit-s$s" --neuron pbit -s "$s" "${vae[@]}"; score "pbit-s$s"; done
  for k in 3 4; do train "quant$k" --neuron "quant:$k" "${vae[@]}"; score "quant$k"; done
fi
