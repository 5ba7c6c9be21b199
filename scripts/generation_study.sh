#!/usr/bin/env bash
# Generative p-DNNs on Fashion-MNIST (results/generation/): VAEs whose decoders use p-bits trained
# with s = 1, 2, 4, 8 samples, 32-bit (tanh) and k-bit (1-4) deterministic decoders, and the
# classifier whose penultimate features give fid-clf; each VAE is then scored with pdnn fid.
# Reduced schedule for a shared 2-core CPU (stated in results/generation/README.md):
#   VAEs: the first SUBSET training images, EPOCHS epochs, width 8, latent 16, batch 64, Adam, LR;
#   fid-clf: N generated against the first N test images, REPEATS generations, T = 1..50.
# Usage: scripts/generation_study.sh [RUN...]  -- the named runs (default: all, in order); several
# invocations with disjoint names can run side by side. Runs: tanh, pbit-s1/2/4/8, quant1..4,
# tanh-pbit (the tanh decoder converted to p-bits by pdnn convert, no retraining), tanh-lr1e-4
# (the paper's generation lr on the same reduced schedule, for comparison), pbit-s8-clf60k (pbit-s8
# scored with a classifier trained on all 60000 training images, to check fid-clf's trend).
# Resumable: re-running skips finished steps and continues interrupted runs.
set -euo pipefail
cd "$(dirname "$0")/.."
KNOWN="tanh pbit-s1 pbit-s2 pbit-s4 pbit-s8 quant1 quant2 quant3 quant4 tanh-pbit tanh-lr1e-4 pbit-s8-clf60k"
for name in "$@"; do  # every name checked before anything trains
  known=0; for k in $KNOWN; do [[ $name == "$k" ]] && known=1; done
  (( known )) || { echo "unknown run '$name' (one of: $KNOWN)" >&2; exit 2; }
done
OUT=${OUT:-results/generation}
SUBSET=${SUBSET:-2000}
EPOCHS=${EPOCHS:-3}
LR=${LR:-1e-3}
N=${N:-500}
REPEATS=${REPEATS:-2}
RUNS=$OUT/runs
PDNN=${PDNN:-"python -m pdnn"}
mkdir -p "$RUNS"

train() {  # train NAME ARGS...: resumes runs/NAME if it holds a checkpoint (a finished run stays as it is)
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
one() {  # one NAME: train (or convert) and score the run NAME
  case $1 in
    tanh) train tanh --neuron tanh "${vae[@]}" ;;
    tanh-lr1e-4) train tanh-lr1e-4 --neuron tanh "${vae[@]}" --lr 1e-4 ;;  # the paper's lr, same schedule
    pbit-s8-clf60k)  # robustness of fid-clf: pbit-s8 scored with a classifier trained on all 60000 images
      train classifier-60k --model cnn --neuron tanh --width 8 \
        --lr 1e-3 --epochs 2 "${common[@]}" --seed 1 --monitor-examples 1000
      [ -f "$RUNS/pbit-s8-clf60k/checkpoint.pt" ] || {  # copied whole, or not at all: a folder moved into place
        part=$RUNS/.pbit-s8-clf60k.part; rm -rf "$part"; mkdir "$part"
        cp "$RUNS/pbit-s8/config.json" "$RUNS/pbit-s8/checkpoint.pt" "$RUNS/pbit-s8/metrics.json" "$part/"
        rm -rf "$RUNS/pbit-s8-clf60k"; mv "$part" "$RUNS/pbit-s8-clf60k"; }
      [ -f "$RUNS/pbit-s8-clf60k/fid-clf.json" ] || $PDNN fid "$RUNS/pbit-s8-clf60k" --classifier "$RUNS/classifier-60k" \
        --n "$N" --repeats "$REPEATS" --samples 1,2,5,10,20,50 --quiet
      return ;;
    pbit-s*) train "$1" --neuron pbit -s "${1#pbit-s}" "${vae[@]}" ;;
    quant*) train "$1" --neuron "quant:${1#quant}" "${vae[@]}" ;;
    tanh-pbit) if [ ! -f "$RUNS/tanh-pbit/config.json" ]; then
                 local force=(); [[ -e $RUNS/tanh-pbit ]] && force=(--force)  # an interrupted conversion: replaced
                 $PDNN convert "$RUNS/tanh" --method pbit --layers decoder.2,decoder.7 --out "$RUNS/tanh-pbit" \
                   "${force[@]}" --quiet
               fi ;;
    *) echo "unknown run $1" >&2; return 2 ;;
  esac
  score "$1"
}
names=("$@")
[ ${#names[@]} -gt 0 ] || read -r -a names <<< "$KNOWN"
for name in "${names[@]}"; do one "$name"; done
