#!/usr/bin/env bash
# The synthetic-corpus experiment (`just synthetic`): the same protocol as `just ravdess` on a
# SYNTHETIC Vietnamese corpus large enough for refinement to be judged (12 espeak-ng voices,
# 160 clips per class):
#   synthesise -> train on 8 voices (validation voice held out inside them, out-of-fold
#   predictions for the rest) -> refine the rules on those held-out predictions -> evaluate
#   ONCE on the 4 other voices, with the refined rules and with the shipped ones.
# Everything here is synthetic speech (espeak-ng), labelled so in the manifest and reports.
set -euo pipefail
out="${1:-synthetic-out}"
seed="${2:-11}"
bin="target/debug/camxuc"
train="synth-m1,synth-m2,synth-m3,synth-m4,synth-m5,synth-f1,synth-f2,synth-f3"
test="synth-m6,synth-m7,synth-f4,synth-f5"
mkdir -p "$out"
echo "== 1/5 synthesising 12 voices x 40 clips (seed $seed)"
"$bin" synth --out "$out/corpus" --per-class 160 --speakers 12 --seed "$seed"
manifest="$out/corpus/manifest.csv"
echo
echo "== 2/5 training on 8 voices"
"$bin" train --manifest "$manifest" --speakers "$train" --out "$out/model" --force --seed 1
echo
echo "== 3/5 evaluating the shipped rules on the 4 test voices (for comparison)"
"$bin" eval --manifest "$manifest" --speakers "$test" --model "$out/model" --llm none \
    --rules rules/vi-default.toml --json "$out/eval-shipped-rules.json"
echo
echo "== 4/5 refining the rules on held-out predictions of the 8 training voices"
"$bin" refine --manifest "$manifest" --speakers "$train" --model "$out/model" \
    --rounds 3 --accept --json "$out/refine.json"
echo
echo "== 5/5 evaluating on the 4 test voices with the model's active (refined) rules"
"$bin" eval --manifest "$manifest" --speakers "$test" --model "$out/model" --llm none \
    --json "$out/eval.json" --report "$out/report" \
    --report-note "SYNTHETIC speech (espeak-ng, voice vi): test voices m6, m7, f4, f5 were never used for training, routing or refinement."
echo
echo "done: $out/eval.json, $out/eval-shipped-rules.json, $out/refine.json, $out/report/report.html"
