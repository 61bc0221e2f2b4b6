#!/usr/bin/env bash
# The RAVDESS experiment, one command (`just ravdess`): speaker-independent, per clip.
#   train on actors 01-12 (validation actors held out inside them, out-of-fold predictions for
#   the rest) -> refine the rules on those held-out predictions (rounds kept only when the
#   cross-fitted check passes) -> evaluate ONCE on actors 13-16 -> JSON + report.
# Actors 13-16 are never used for training, routing, calibration or refinement.
# RAVDESS is CC BY-NC-SA 4.0: the model and refined rules written here are for evaluation
# only; never ship them as defaults.
set -euo pipefail
out="${1:-ravdess-out}"
seed="${2:-1}"
llm="${3:-none}"
bin="target/debug/camxuc"
data="${RAVDESS_DIR:-../shared/data/ravdess-3class}"
manifest="$data/manifest.csv"
if [[ ! -f "$manifest" ]]; then
    echo "error: $manifest not found (set RAVDESS_DIR to the folder with manifest.csv)" >&2
    exit 1
fi
mkdir -p "$out"
echo "== 1/4 training on actors 01-12 (seed $seed)"
"$bin" train --manifest "$manifest" --speakers actor01-actor12 --out "$out/model" --force --seed "$seed"
echo
echo "== 2/4 refining the rules on held-out predictions of actors 01-12"
"$bin" refine --manifest "$manifest" --speakers actor01-actor12 --model "$out/model" \
    --rounds 3 --accept --json "$out/refine.json"
echo
rm -f "$out/decisions.jsonl"
echo "== 3/4 evaluating on the test actors 13-16 (reasoner: $llm)"
"$bin" eval --manifest "$manifest" --speakers actor13-actor16 --model "$out/model" --llm "$llm" \
    --robustness --json "$out/eval.json" --out "$out/decisions.jsonl" --report "$out/report" \
    --report-note "RAVDESS actors 13-16: acted North American English speech (CC BY-NC-SA 4.0), test speakers never used for training, routing or refinement. Evaluation only."
echo
echo "== 4/4 done: $out/eval.json, $out/refine.json, $out/report/report.html"
