#!/usr/bin/env bash
# Regenerate everything under results/noise/ (sampling a deterministically trained network
# without retraining) from the study's trained runs:
#
#   scripts/noise_study.sh [cifar10] [fashion-mnist] [layer] [energy] [summary]   (default: all)
#
# Needs the study runs results/cifar10/runs/{tanh,quant1,quant2,pbit-s4} and
# results/fashion-mnist/runs/{tanh,quant1,quant2,pbit-s4}, with their checkpoint.pt for the steps
# still to run (the CIFAR-10 checkpoints are committed; the Fashion-MNIST ones are not, and are
# trained again by the command `pdnn train --out RUN --resume` names), and the data ($PDNN_DATA,
# default ../shared/data, for CIFAR-10; Fashion-MNIST is found in the default roots). It only
# reads the study's run directories; everything it writes is under results/noise/.
#
# Resumable: a converted run whose config.json exists is not converted again (its checkpoint.pt,
# a copy of the source weights that is not committed, is restored with `pdnn convert --restore`
# when a step measures it); an eval-<aggregate>.json that exists is not recomputed. Delete a file
# to redo that step. On a fresh checkout every step is done, so the script only rewrites the
# summary; a Fashion-MNIST conversion cannot be measured again as it is (its source's retrained
# checkpoint is not the one converted: results/fashion-mnist/README.md, "Checkpoints").
#
# Cost knobs (defaults are what results/noise/README.md reports):
#   CIFAR_TEST=2000   first N CIFAR-10 test images used for every CIFAR evaluation
#   REPEATS=3         independent sampling repeats per T
set -euo pipefail
cd "$(dirname "$0")/.."

export PDNN_DATA=${PDNN_DATA:-../shared/data}
PDNN=(python -m pdnn)
OUT=results/noise
RUNS=$OUT/runs
C=results/cifar10/runs
F=results/fashion-mnist/runs
T=1,2,5,10,20,50
REPEATS=${REPEATS:-3}
CIFAR_TEST=${CIFAR_TEST:-2000}
# The study trained on the first 45000 CIFAR-10 / 54000 Fashion-MNIST training images, so
# calibration and BatchNorm re-estimation use training images the models never saw (pdnn convert
# takes them after the run's training subset): 2000 of 45000..49999 for CIFAR-10 (CPU budget),
# the default 10 % (5400 of 54000..59999) for Fashion-MNIST.
CIFAR_HOLD=(--holdout 2000)
FM_HOLD=()
CAL=(--calibrate --samples 1,2,5,10 --target-samples 10)

mkdir -p "$RUNS" "$OUT/deterministic" "$OUT/energy"
say() { printf '\n== %s\n' "$*" >&2; }

# conv NAME SOURCE ARGS...: pdnn convert SOURCE ARGS --out runs/NAME, unless done already
conv() {
    local name=$1 src=$2; shift 2
    local d=$RUNS/$name
    [[ -f $d/config.json ]] && return 0  # its checkpoint is restored when a step measures it
    [[ -f $src/checkpoint.pt ]] || { echo "missing $src/checkpoint.pt: run the study command of $(dirname "$(dirname "$src")")/README.md" >&2; return 1; }
    say "convert $name"
    local force=(); [[ -e $d ]] && force=(--force)  # an interrupted conversion left no config.json
    "${PDNN[@]}" convert "$src" --out "$d" --label "$name" "${force[@]}" "$@" --quiet | tee "$d.convert.log"
    mv "$d.convert.log" "$d/convert.log"
}

# restore DIR: the checkpoint.pt of a run here (not committed) before a step measures it: a
# converted run's with `pdnn convert --restore` (which checks its source), a copied run's copied again
restore() {
    local d=$1 src
    [[ -f $d/checkpoint.pt ]] && return 0
    src=$(python -c 'import json, sys; print(json.load(open(sys.argv[1])).get("copied_from", ""))' "$d/config.json")
    if [[ -z $src ]]; then
        "${PDNN[@]}" convert "$d" --restore
    elif [[ -f $src/checkpoint.pt ]]; then
        cp "$src/checkpoint.pt" "$d/checkpoint.pt"
    else
        echo "cannot measure $d: $src/checkpoint.pt, which it copies, does not exist (not committed:" \
             "\`pdnn train --out $src --resume\` names the command that trains it again)" >&2
        return 1
    fi
}

# copy NAME SOURCE: a trained p-DNN run copied here (its config.json; its checkpoint when a step
# measures it), so that evaluating it writes under results/noise
copy() {
    local name=$1 src=$2 d=$RUNS/$1
    # the study writes eval-network.json after the last epoch: before it, checkpoint.pt may be mid-training
    [[ -f $src/eval-network.json ]] || { echo "skipping $name: $src is not finished (no eval-network.json)" >&2; return 1; }
    mkdir -p "$d"
    [[ -f $d/config.json ]] || python - "$src" "$d" <<'EOF'
import json, sys
src, d = sys.argv[1:]
config = json.load(open(f"{src}/config.json"))
config["copied_from"] = src
config["label"] = d.rstrip("/").split("/")[-1]
json.dump(config, open(f"{d}/config.json", "w"), indent=2)
EOF
}

# ev NAME AGGREGATE SAMPLES [eval args]: pdnn eval, unless eval-AGGREGATE.json exists
ev() {
    local name=$1 agg=$2 samples=$3; shift 3
    local d=$RUNS/$name
    [[ -f $d/eval-$agg.json ]] && return 0
    say "eval $name ($agg, T=$samples)"
    restore "$d"
    "${PDNN[@]}" eval "$d" --samples "$samples" --repeats "$REPEATS" --aggregate "$agg" --quiet "$@"
}

# det NAME SOURCE [--subset N]: the deterministic source on the same test images (written here,
# never into the study's run directory)
det() {
    local name=$1 src=$2; shift 2
    [[ -f $OUT/deterministic/$name.json ]] && return 0
    say "deterministic $name"
    python scripts/noise_summary.py deterministic "$src" --out "$OUT/deterministic/$name.json" "$@"
}

# the conversions of one dataset: SOURCE_DIR PREFIX HOLD-ARGS... (layer ids: the reference models'
# hidden activations, CNN 2,5,9,12,16 and MLP 3,6)
conversions() {
    local src=$1 p=$2 last=$3 last2=$4; shift 4
    local H=("$@")
    # the trap: tanh -> p-bits of equal mean, nothing else; then the same with BatchNorm re-estimated
    conv "$p-tanh-pbit"              "$src/tanh"   --method pbit
    conv "$p-tanh-pbit-bn"           "$src/tanh"   --method pbit --recalibrate-bn "${H[@]}"
    # beta calibrated on held-out training images (sweeps in calibration.json): one beta for all
    # layers, with and without BN re-estimation, and one beta per layer (coordinate-wise)
    conv "$p-tanh-pbit-cal"          "$src/tanh"   --method pbit     "${CAL[@]}" "${H[@]}"
    conv "$p-tanh-pbit-cal-bn"       "$src/tanh"   --method pbit     "${CAL[@]}" --recalibrate-bn "${H[@]}"
    conv "$p-tanh-pbit-perlayer"     "$src/tanh"   --method pbit     "${CAL[@]}" --per-layer "${H[@]}"
    # which layers: only the last hidden activation, or the last two
    conv "$p-tanh-pbit-last-cal"     "$src/tanh"   --method pbit --layers "$last"  "${CAL[@]}" "${H[@]}"
    [[ -z $last2 ]] || conv "$p-tanh-pbit-last2-cal" "$src/tanh" --method pbit --layers "$last2" "${CAL[@]}" "${H[@]}"
    # noise on the pre-activations, the activation unchanged
    conv "$p-tanh-gaussian-cal"      "$src/tanh"   --method gaussian "${CAL[@]}" "${H[@]}"
    conv "$p-tanh-gaussian-cal-bn"   "$src/tanh"   --method gaussian "${CAL[@]}" --recalibrate-bn "${H[@]}"
    conv "$p-tanh-logistic-cal"      "$src/tanh"   --method logistic "${CAL[@]}" "${H[@]}"
    conv "$p-tanh-logistic-cal-bn"   "$src/tanh"   --method logistic "${CAL[@]}" --recalibrate-bn "${H[@]}"
    # quantised sources: dither keeps the trained levels (w = 1 on quant1 is the p-bit of mean tanh)
    conv "$p-quant1-dither"          "$src/quant1" --method dither
    conv "$p-quant1-dither-cal"      "$src/quant1" --method dither   "${CAL[@]}" "${H[@]}"
    conv "$p-quant1-dither-cal-bn"   "$src/quant1" --method dither   "${CAL[@]}" --recalibrate-bn "${H[@]}"
    conv "$p-quant2-dither-cal"      "$src/quant2" --method dither   "${CAL[@]}" "${H[@]}"
}

cifar10() {
    local S=(--subset "$CIFAR_TEST")
    for src in tanh quant1 quant2; do det "cifar10-$src" "$C/$src" "${S[@]}"; done
    conversions "$C" cifar10 16 12,16 "${CIFAR_HOLD[@]}"
    local d
    for d in "$RUNS"/cifar10-*/; do [[ -f $d/config.json ]] && ev "$(basename "$d")" network "$T" "${S[@]}"; done
}

fashion_mnist() {
    for src in tanh quant1 quant2; do det "fashion-mnist-$src" "$F/$src"; done
    conversions "$F" fashion-mnist 6 "" "${FM_HOLD[@]}"
    local d
    for d in "$RUNS"/fashion-mnist-*/; do [[ -f $d/config.json ]] && ev "$(basename "$d")" network "$T"; done
}

# network (p-DNN) vs layer (random bit-stream) aggregation at equal T: a conversion and a trained p-DNN
layer() {
    # the two all-layer p-bit conversions (tanh -> p-bits, sign -> dithered sign); a conversion of
    # the last layer only is not compared: a linear classifier follows it, so both aggregations
    # give the same output mean
    ev cifar10-tanh-pbit-cal layer "$T" --subset "$CIFAR_TEST"
    ev cifar10-quant1-dither-cal layer "$T" --subset "$CIFAR_TEST"
    ev fashion-mnist-tanh-pbit-cal layer "$T"
    ev fashion-mnist-quant1-dither-cal layer "$T"
    if copy cifar10-pbit-s4 "$C/pbit-s4"; then
        ev cifar10-pbit-s4 network "$T" --subset "$CIFAR_TEST"
        ev cifar10-pbit-s4 layer "$T" --subset "$CIFAR_TEST"
    fi
    if copy fashion-mnist-pbit-s4 "$F/pbit-s4"; then
        ev fashion-mnist-pbit-s4 network "$T"
        ev fashion-mnist-pbit-s4 layer "$T"
    fi
}

# energy per inference vs T, for both aggregations, when `pdnn energy` exists
energy() {
    if ! "${PDNN[@]}" energy --help >/dev/null 2>&1; then
        echo "pdnn energy is not available: the equal-energy comparison is skipped" >&2
        return 0
    fi
    local name agg reuse
    for name in cifar10-tanh-pbit-cal cifar10-quant1-dither-cal cifar10-pbit-s4 \
                fashion-mnist-tanh-pbit-cal fashion-mnist-quant1-dither-cal fashion-mnist-pbit-s4; do
        [[ -f $RUNS/$name/config.json ]] || continue
        for agg in network layer; do
            for reuse in per-eo per-inference; do
                [[ -f $OUT/energy/$name-$agg-$reuse.json ]] && continue  # (it reads config.json alone)
                "${PDNN[@]}" energy "$RUNS/$name" --samples "$T" --aggregate "$agg" --reuse "$reuse" \
                    --json "$OUT/energy/$name-$agg-$reuse.json" --png "$OUT/energy/$name-$agg-$reuse.png" >/dev/null
            done
        done
    done
}

summary() { python scripts/noise_summary.py summary --root "$OUT"; }

steps=("$@")
[[ ${#steps[@]} -gt 0 ]] || steps=(cifar10 fashion-mnist layer energy summary)
for step in "${steps[@]}"; do
    case $step in
        cifar10) cifar10 ;;
        fashion-mnist) fashion_mnist ;;
        layer) layer ;;
        energy) energy ;;
        summary) summary ;;
        *) echo "unknown step $step (cifar10, fashion-mnist, layer, energy, summary)" >&2; exit 2 ;;
    esac
done
