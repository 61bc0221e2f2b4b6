#!/usr/bin/env bash
# Rebuilds the shipped default acoustic model, models/acoustic/default, from ../shared:
# `camxuc train` (the defaults chosen by `just generalise`) on all 16 RAVDESS actors of
# ravdess-3class plus their neutral clips (labelled calm, ravdess-extra), with their happy /
# sad / disgust / surprised clips (ravdess-extra, unlabelled) as outlier exposure, then
# `camxuc refine --accept` on the same clips' held-out predictions. The weights derive from
# RAVDESS and are therefore CC BY-NC-SA 4.0 (see models/acoustic/default/MODEL_CARD.md).
# The fused decision's parameters (fusion.json) come from the protocol's fusion study with the
# served mixture of a linear classifier and the attention head (`generalise --fusion`, every
# condition: held-out speakers, field chains,
# RAVDESS <-> SYNTHETIC); FUSION_STUDY=FILE reuses a study's JSON instead of running it (~30 min).
# It replaces the fusion `camxuc train` fits itself (held-out speakers and perturbed copies
# only, which comes out acoustic-only on RAVDESS), because the study also sees other corpora.
# On the same machine and thread count the weights are byte-identical run to run; the
# hashes in MODEL_CARD.md are rewritten at the end (tests/default_model.rs checks them).
set -euo pipefail
cd "$(dirname "$0")/.."

bin=target/debug/camxuc
data=${RAVDESS_SHARED:-../shared/data}
work=target/default-model
out=models/acoustic/default
mkdir -p "$work"

# One manifest of both parts, paths relative to the manifest's folder (no machine paths in
# model.json). Both manifests start with the columns path,label,speaker.
for m in "$data/ravdess-3class/manifest.csv" "$data/ravdess-extra/manifest-neutral.csv"; do
    head -1 "$m" | grep -q '^path,label,speaker' || {
        echo "default-model: $m: expected the columns path,label,speaker first" >&2
        exit 1
    }
done
case "$data" in /*) rel="$data" ;; *) rel="../../$data" ;; esac
{
    echo "path,label,speaker"
    tail -n +2 "$data/ravdess-3class/manifest.csv" | awk -F, -v r="$rel/ravdess-3class/" '{print r $1 "," $2 "," $3}'
    tail -n +2 "$data/ravdess-extra/manifest-neutral.csv" | awk -F, -v r="$rel/ravdess-extra/" '{print r $1 "," $2 "," $3}'
} > "$work/manifest.csv"

# A fresh folder: files of an earlier run (refine rounds) must not ship.
rm -rf "$work/model"
"$bin" train --manifest "$work/manifest.csv" --out "$work/model" --force --seed 1 \
    --outliers "$data/ravdess-extra/out-of-scope.csv" --outlier-weight 0.5
"$bin" refine --manifest "$work/manifest.csv" --model "$work/model" --rounds 2 --accept

mkdir -p "$out"
for f in model.json model.safetensors routing.json; do
    cp "$work/model/$f" "$out/$f"
done
rm -f "$out"/rules*.toml "$out"/refine-round-*.md
cp "$work/model"/rules*.toml "$out/" 2>/dev/null || true
cp "$work/model"/refine-round-*.md "$out/" 2>/dev/null || true
# rules.toml is the rule set the model uses: refinement's when a round was kept, else the
# shipped human-written rules (what the model would read anyway); the binary embeds it.
[ -f "$out/rules.toml" ] || cp rules/vi-default.toml "$out/rules.toml"
# The fusion fitted on every condition of the study (rules/vi-default.toml, the served mixture).
study=${FUSION_STUDY:-}
if [ -z "$study" ]; then
    cargo run --features research --example generalise -- --out target/generalise \
        --attention --fusion "mean of linear +neutral +outliers 0.5 and attention frozen conv"
    study=$(ls -t target/generalise/fusion-*attention*.json | head -1)
fi
python3 - "$study" "$out/fusion.json" <<'EOF'
import json, sys
doc = json.load(open(sys.argv[1]))
fit = doc["fusion_all_conditions"]
fit["fitted_on"] = "generalise --fusion: %s, %s, routed clips of every condition" % (doc["acoustic_model"], doc["rules"])
open(sys.argv[2], "w").write(json.dumps(fit, indent=2) + "\n")
EOF

# The training clips' file names (not the clips), so `eval` can warn when it is asked to
# score the model on its own training clips.
python3 -c 'import json,os,sys; [print(os.path.basename(json.loads(l)["path"])) for l in open(sys.argv[1])]' \
    "$work/model/train_evidence.jsonl" | sort > "$out/training_clips.txt"

# Hashes into the model card, between its markers.
card="$out/MODEL_CARD.md"
sums=$(cd "$out" && sha256sum model.safetensors routing.json rules*.toml fusion.json training_clips.txt 2>/dev/null | awk '{print "| `" $2 "` | `" $1 "` |"}')
python3 - "$card" "$sums" <<'EOF'
import sys
card, sums = sys.argv[1], sys.argv[2]
text = open(card).read()
start, end = "<!-- hashes -->", "<!-- /hashes -->"
a, b = text.index(start) + len(start), text.index(end)
table = "\n| file | sha256 |\n|---|---|\n" + sums + "\n"
open(card, "w").write(text[:a] + table + text[b:])
EOF
echo "default model written to $out (hashes in $card)"
