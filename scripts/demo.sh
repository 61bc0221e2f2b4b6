#!/usr/bin/env bash
# The demo as far as the pipeline exists today: synthesise the SYNTHETIC Vietnamese demo
# corpus and print the acoustic evidence of one clip per class.
set -euo pipefail
out="${1:-demo-out}"
bin="target/debug/camxuc"

echo "== 1/2 synthesising the demo corpus (espeak-ng, SYNTHETIC speech) into $out/corpus"
"$bin" synth --out "$out/corpus" --per-class 12 --speakers 4 --seed 7

echo
echo "== 2/2 acoustic evidence, one clip per class"
for label in calm angry panic; do
    clip=$(awk -F, -v l="$label" 'NR > 1 && $2 == l { print $1; exit }' "$out/corpus/manifest.csv")
    echo "-- $label: $clip"
    "$bin" features "$out/corpus/$clip"
done

cat <<'MSG'

Done. What exists today: the synthetic corpus and the evidence extractor.
Coming next (see the open issues): the acoustic model (`camxuc train`), confidence routing
with the human-written rules (`camxuc classify`), the local LLM reasoner, refinement and the
evaluation report (`camxuc eval --report`).
MSG
