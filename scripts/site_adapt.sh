#!/usr/bin/env bash
# Site adaptation on a SYNTHETIC "site" (`just site-adapt [MODEL]`; the README's table):
# a synthetic Vietnamese corpus (espeak-ng; 8 voices, 15 clips each) plays a site the source
# model never heard. 2 voices are labelled (30 clips), 3 others give unlabelled clips, and the
# remaining 3 voices (45 clips) are the test set, never used by `adapt`. Each adapted model and
# the source are scored acoustic only (`eval --llm none`, ablation `acoustic_only`).
#
#   scripts/site_adapt.sh [MODEL_DIR] [OUT_DIR]
#
# MODEL_DIR: the source model (default: the default model); OUT_DIR: default
# target/site-adapt. Needs espeak-ng and the Whisper front end (`camxuc models fetch
# whisper-base`).
set -euo pipefail
cd "$(dirname "$0")/.."
MODEL=${1:-}
OUT=${2:-target/site-adapt}
BIN=${BIN:-target/debug/camxuc}
[ -x "$BIN" ] || cargo build --bin camxuc
mkdir -p "$OUT"

if [ ! -f "$OUT/site/manifest.csv" ]; then
  "$BIN" synth --out "$OUT/site" --per-class 40 --speakers 8 --seed 31
fi
# Speakers in order of first appearance: 2 labelled, 3 unlabelled, 3 test.
python3 - "$OUT" <<'EOF'
import csv, sys
out = sys.argv[1]
rows = list(csv.DictReader(open(f"{out}/site/manifest.csv")))
speakers = []
for r in rows:
    if r["speaker"] not in speakers:
        speakers.append(r["speaker"])
assert len(speakers) == 8, speakers
parts = {"labelled": speakers[:2], "unlabelled": speakers[2:5], "test": speakers[5:]}
for name, sp in parts.items():
    with open(f"{out}/{name}.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["path", "label", "speaker"])
        for r in rows:
            if r["speaker"] in sp:
                w.writerow([f"site/{r['path']}" if not r["path"].startswith("/") else r["path"], r["label"], r["speaker"]])
    print(f"{name}: {', '.join(sp)}")
EOF

model_args=()
[ -n "$MODEL" ] && model_args=(--model "$MODEL")
adapt() {
  local name=$1; shift
  "$BIN" adapt "${model_args[@]}" --out "$OUT/$name" --force --json "$OUT/$name.adapt.json" "$@" >/dev/null
}
adapt unlabelled --unlabelled "$OUT/unlabelled.csv"
adapt labelled --labelled "$OUT/labelled.csv"
adapt both --labelled "$OUT/labelled.csv" --unlabelled "$OUT/unlabelled.csv"

score() {
  local name=$1; shift
  rm -f "$OUT/$name.eval.jsonl"
  "$BIN" eval --manifest "$OUT/test.csv" --llm none --no-rationale "$@" \
    --json "$OUT/$name.eval.json" --out "$OUT/$name.eval.jsonl" >/dev/null 2>"$OUT/$name.eval.log"
}
score source "${model_args[@]}"
for m in unlabelled labelled both; do score "$m" --model "$OUT/$m"; done

python3 - "$OUT" <<'EOF'
import json, sys
out = sys.argv[1]
print("| model | macro-F1 [95 % CI] | accuracy | pipeline macro-F1 (routed) |")
print("|---|---|---|---|")
for name, what in [("source", "source"), ("unlabelled", "adapted, unlabelled clips only"),
                   ("labelled", "adapted, labelled clips"), ("both", "adapted, labelled + unlabelled")]:
    e = json.load(open(f"{out}/{name}.eval.json"))
    a = e["ablations"]["acoustic_only"]
    lo, hi = a.get("macro_f1_ci95") or (float("nan"), float("nan"))
    routed = 100 * e["routing"]["routed_fraction"]
    print(f"| {what} | {a['macro_f1']:.3f} [{lo:.3f}, {hi:.3f}] | {a['accuracy']:.3f} | {e['macro_f1']:.3f} ({routed:.0f} %) |")
for name in ["labelled", "both"]:
    r = json.load(open(f"{out}/{name}.adapt.json"))
    print(f"{name}: λ {r.get('prior_lambda')}, temperature {r.get('temperature_before'):.3f} -> {r.get('temperature_after'):.3f}")
EOF
