#!/usr/bin/env bash
# Rebuilds the shipped default acoustic model, models/acoustic/default, from ../shared:
# `camxuc train` (the defaults chosen by `just generalise`) on all 16 RAVDESS actors of
# ravdess-3class plus their neutral clips (labelled calm, ravdess-extra), then
# `camxuc refine --accept` on the same clips' held-out predictions. The weights derive from
# RAVDESS and are therefore CC BY-NC-SA 4.0 (see models/acoustic/default/MODEL_CARD.md).
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

"$bin" train --manifest "$work/manifest.csv" --out "$work/model" --force --seed 1
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
# The training clips' file names (not the clips), so `eval` can warn when it is asked to
# score the model on its own training clips.
python3 -c 'import json,os,sys; [print(os.path.basename(json.loads(l)["path"])) for l in open(sys.argv[1])]' \
    "$work/model/train_evidence.jsonl" | sort > "$out/training_clips.txt"

# Hashes into the model card, between its markers.
card="$out/MODEL_CARD.md"
sums=$(cd "$out" && sha256sum model.safetensors routing.json rules*.toml 2>/dev/null | awk '{print "| `" $2 "` | `" $1 "` |"}')
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
