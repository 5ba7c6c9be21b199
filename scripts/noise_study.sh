#!/usr/bin/env bash
# Regenerate everything under results/noise/ (issue 5: sampling a deterministically trained
# network without retraining) from the study's trained runs:
#
#   scripts/noise_study.sh [cifar10] [fashion-mnist] [layer] [energy] [summary]   (default: all)
#
# Needs the study runs results/cifar10/runs/{tanh,quant1,quant2,pbit-s4} and
# results/fashion-mnist/runs/{tanh,quant1,quant2,pbit-s4} (run directories with checkpoint.pt),
# and the data ($PDNN_DATA, default /work/shared/data, for CIFAR-10; Fashion-MNIST is found in
# the default roots). It only ever reads those run directories; everything it writes is under
# results/noise/.
#
# Resumable: a converted run whose config.json exists is not converted again (its checkpoint.pt,
# a copy of the source weights that is not committed, is restored from the source if missing);
# an eval-<aggregate>.json that exists is not recomputed. Delete a file to redo that step.
#
# Cost knobs (defaults are what results/noise/README.md reports):
#   CIFAR_TEST=500    first N CIFAR-10 test images used for every CIFAR evaluation
#   REPEATS=3         independent sampling repeats per T
set -euo pipefail
cd "$(dirname "$0")/.."

export PDNN_DATA=${PDNN_DATA:-/work/shared/data}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}   # one core: the machine is shared
PDNN=(python -m pdnn)
OUT=results/noise
RUNS=$OUT/runs
C=results/cifar10/runs
F=results/fashion-mnist/runs
T=1,2,5,10,20,50
T_LAYER=${T_LAYER:-1,2,5,10,20}
REPEATS=${REPEATS:-3}
CIFAR_TEST=${CIFAR_TEST:-500}
# CIFAR runs were trained on the first 8000 training images (data.subset=8000): calibrate and
# re-estimate BatchNorm on training images 8000..8999 (= the last 1000 of the first 9000), which
# the models never saw. Fashion-MNIST runs saw all 60000: the default held-out part, the last
# 10 % (54000..59999), was seen in training.
CIFAR_HOLD=(--subset 9000 --holdout 1000)
FM_HOLD=(--holdout 0.1)
CAL=(--calibrate --samples 1,2,5 --target-samples 5)

mkdir -p "$RUNS" "$OUT/deterministic" "$OUT/energy"
say() { printf '\n== %s\n' "$*" >&2; }

# conv NAME SOURCE ARGS...: pdnn convert SOURCE ARGS --out runs/NAME, unless done already
conv() {
    local name=$1 src=$2; shift 2
    local d=$RUNS/$name
    if [[ -f $d/config.json ]]; then
        [[ -f $d/checkpoint.pt ]] || python scripts/noise_summary.py restore "$d"
        return 0
    fi
    [[ -f $src/checkpoint.pt ]] || { echo "missing $src/checkpoint.pt (study run not trained yet?)" >&2; return 1; }
    say "convert $name"
    local force=(); [[ -e $d ]] && force=(--force)  # an interrupted conversion left no config.json
    "${PDNN[@]}" convert "$src" --out "$d" --label "$name" "${force[@]}" "$@" --quiet | tee "$d.convert.log"
    mv "$d.convert.log" "$d/convert.log"
}

# copy NAME SOURCE: a trained p-DNN run copied here, so that evaluating it writes under results/noise
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
    [[ -f $d/checkpoint.pt ]] || cp "$src/checkpoint.pt" "$d/checkpoint.pt"
}

# ev NAME AGGREGATE SAMPLES [eval args]: pdnn eval, unless eval-AGGREGATE.json exists
ev() {
    local name=$1 agg=$2 samples=$3; shift 3
    local d=$RUNS/$name
    [[ -f $d/eval-$agg.json ]] && return 0
    say "eval $name ($agg, T=$samples)"
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

cifar10() {
    local S=(--subset "$CIFAR_TEST")
    for src in tanh quant1 quant2; do det "cifar10-$src" "$C/$src" "${S[@]}"; done
    # the trap: tanh -> p-bits of equal mean, nothing else
    conv cifar10-tanh-pbit            "$C/tanh"   --method pbit
    # calibrated on held-out training images (sweeps in calibration.json)
    conv cifar10-tanh-pbit-cal        "$C/tanh"   --method pbit     "${CAL[@]}" --values 0.5,1,2,3,4,6 "${CIFAR_HOLD[@]}"
    conv cifar10-tanh-pbit-cal-bn     "$C/tanh"   --method pbit     "${CAL[@]}" --values 0.5,1,1.5,2,3 --recalibrate-bn "${CIFAR_HOLD[@]}"
    conv cifar10-tanh-gaussian-cal    "$C/tanh"   --method gaussian "${CAL[@]}" --values 0.1,0.2,0.3,0.5,0.75 "${CIFAR_HOLD[@]}"
    conv cifar10-tanh-gaussian-cal-bn "$C/tanh"   --method gaussian "${CAL[@]}" --values 0.1,0.2,0.3,0.5,0.75 --recalibrate-bn "${CIFAR_HOLD[@]}"
    conv cifar10-tanh-logistic-cal-bn "$C/tanh"   --method logistic "${CAL[@]}" --values 0.05,0.1,0.2,0.3 --recalibrate-bn "${CIFAR_HOLD[@]}"
    # which layers: only the last hidden layer (16), or the last two (12, 16); nothing after them is a BatchNorm
    conv cifar10-tanh-pbit-last-cal   "$C/tanh"   --method pbit --layers 16    "${CAL[@]}" --values 0.5,1,2,3 "${CIFAR_HOLD[@]}"
    conv cifar10-tanh-pbit-last2-cal  "$C/tanh"   --method pbit --layers 12,16 "${CAL[@]}" --values 0.5,1,2,3,4 "${CIFAR_HOLD[@]}"
    # quantised sources: dither keeps the trained levels (w = 1 on quant1 is the p-bit of mean tanh)
    conv cifar10-quant1-dither-cal    "$C/quant1" --method dither   "${CAL[@]}" --values 0.25,0.5,0.75,1 "${CIFAR_HOLD[@]}"
    conv cifar10-quant2-dither-cal    "$C/quant2" --method dither   "${CAL[@]}" --values 0.25,0.5,1 "${CIFAR_HOLD[@]}"
    # evaluated on the test images (the others are reported from their held-out sweeps: CPU budget)
    for name in cifar10-tanh-pbit cifar10-tanh-pbit-cal cifar10-tanh-gaussian-cal-bn cifar10-quant1-dither-cal \
                cifar10-tanh-pbit-last-cal cifar10-tanh-pbit-last2-cal; do
        ev "$name" network "$T" "${S[@]}"
    done
}

fashion_mnist() {
    for src in tanh quant1 quant2; do det "fashion-mnist-$src" "$F/$src"; done
    conv fashion-mnist-tanh-pbit               "$F/tanh"   --method pbit
    conv fashion-mnist-tanh-pbit-bn            "$F/tanh"   --method pbit --recalibrate-bn "${FM_HOLD[@]}"
    conv fashion-mnist-tanh-pbit-cal           "$F/tanh"   --method pbit     "${CAL[@]}" --values 0.5,1,2,3,4,6 "${FM_HOLD[@]}"
    conv fashion-mnist-tanh-pbit-cal-bn        "$F/tanh"   --method pbit     "${CAL[@]}" --values 0.5,1,2,3,4,6 --recalibrate-bn "${FM_HOLD[@]}"
    conv fashion-mnist-tanh-gaussian-cal       "$F/tanh"   --method gaussian "${CAL[@]}" "${FM_HOLD[@]}"
    conv fashion-mnist-tanh-gaussian-cal-bn    "$F/tanh"   --method gaussian "${CAL[@]}" --recalibrate-bn "${FM_HOLD[@]}"
    conv fashion-mnist-tanh-logistic-cal       "$F/tanh"   --method logistic "${CAL[@]}" "${FM_HOLD[@]}"
    conv fashion-mnist-tanh-logistic-cal-bn    "$F/tanh"   --method logistic "${CAL[@]}" --recalibrate-bn "${FM_HOLD[@]}"
    conv fashion-mnist-tanh-pbit-last-cal      "$F/tanh"   --method pbit --layers 6 "${CAL[@]}" --values 0.5,1,2,3,4,6 "${FM_HOLD[@]}"
    conv fashion-mnist-quant1-dither           "$F/quant1" --method dither
    conv fashion-mnist-quant1-dither-cal-bn    "$F/quant1" --method dither   "${CAL[@]}" --recalibrate-bn "${FM_HOLD[@]}"
    conv fashion-mnist-quant2-dither-cal-bn    "$F/quant2" --method dither   "${CAL[@]}" --recalibrate-bn "${FM_HOLD[@]}"
    local d
    for d in "$RUNS"/fashion-mnist-*/; do ev "$(basename "$d")" network "$T"; done
}

# network (p-DNN) vs layer (random bit-stream) aggregation at equal T: a conversion and a trained p-DNN
layer() {
    # the two all-layer p-bit conversions (tanh -> p-bits, sign -> dithered sign); a conversion of
    # the last layer only is not compared: a linear classifier follows it, so both aggregations
    # give the same output mean
    ev cifar10-tanh-pbit-cal layer "$T_LAYER" --subset "$CIFAR_TEST"
    ev cifar10-quant1-dither-cal layer "$T_LAYER" --subset "$CIFAR_TEST"
    ev fashion-mnist-tanh-pbit-cal layer "$T"
    ev fashion-mnist-quant1-dither-cal-bn layer "$T"
    if copy cifar10-pbit-s4 "$C/pbit-s4"; then
        ev cifar10-pbit-s4 network "$T_LAYER" --subset "$CIFAR_TEST"
        ev cifar10-pbit-s4 layer "$T_LAYER" --subset "$CIFAR_TEST"
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
                fashion-mnist-tanh-pbit-cal fashion-mnist-quant1-dither-cal-bn fashion-mnist-pbit-s4; do
        [[ -f $RUNS/$name/config.json ]] || continue
        for agg in network layer; do
            for reuse in per-eo per-inference; do
                [[ -f $OUT/energy/$name-$agg-$reuse.json ]] && continue
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
