#!/usr/bin/env bash
# Site adaptation on a site of REAL speech (`just site-adapt-ravdess`; the README's table):
# the source model is trained on the SYNTHETIC Vietnamese corpus only (espeak-ng, 12 voices,
# 240 clips: the protocol's corpus), and the "site" is RAVDESS (../shared/data/ravdess-3class),
# a corpus, a language and real voices the source never heard. For each of three splits of the
# 16 actors: 2 actors are labelled (48 clips, one man and one woman), 4 others give unlabelled
# clips, and the remaining 10 actors (240 clips) are the test set, never used by `adapt`.
# Each adapted model and the source are scored acoustic only (`eval --llm none`).
#
#   scripts/site_adapt_ravdess.sh [OUT_DIR]
#
# OUT_DIR: default target/site-adapt-ravdess. Needs espeak-ng, the Whisper front end
# (`camxuc models fetch whisper-base`) and ../shared beside the repository. RAVDESS is
# CC BY-NC-SA 4.0: the clips are read where they are, never copied.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-target/site-adapt-ravdess}
BIN=${BIN:-target/debug/camxuc}
RAV=${RAVDESS:-../shared/data/ravdess-3class}
[ -x "$BIN" ] || cargo build --bin camxuc
[ -f "$RAV/manifest.csv" ] || { echo "no RAVDESS manifest at $RAV/manifest.csv" >&2; exit 1; }
mkdir -p "$OUT"
RAV=$(cd "$RAV" && pwd)

if [ ! -f "$OUT/synthetic/manifest.csv" ]; then
  "$BIN" synth --out "$OUT/synthetic" --per-class 80 --speakers 12 --seed 23
fi
if [ ! -f "$OUT/source/model.json" ]; then
  "$BIN" train --manifest "$OUT/synthetic/manifest.csv" --out "$OUT/source" --seed 7 --force \
    > "$OUT/source.train.log" 2>&1
fi

# name, labelled actors, unlabelled actors (the rest are tested)
splits=("a:01 02:03 04 05 06" "b:15 16:11 12 13 14" "c:07 08:01 02 03 04")
for s in "${splits[@]}"; do
  IFS=: read -r name lab unl <<<"$s"
  d="$OUT/split-$name"
  mkdir -p "$d"
  python3 - "$RAV" "$d" "$lab" "$unl" <<'EOF'
import csv, os, sys
rav, d, lab, unl = sys.argv[1], sys.argv[2], sys.argv[3].split(), sys.argv[4].split()
rows = list(csv.DictReader(open(f"{rav}/manifest.csv")))
parts = {"labelled": [], "unlabelled": [], "test": []}
for r in rows:
    actor = r["speaker"][-2:]
    part = "labelled" if actor in lab else "unlabelled" if actor in unl else "test"
    path = r["path"] if os.path.isabs(r["path"]) else os.path.join(rav, r["path"])
    parts[part].append((path, r["label"], r["speaker"]))
for name, rs in parts.items():
    with open(f"{d}/{name}.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["path", "label", "speaker"])
        w.writerows(rs)
assert len(parts["labelled"]) == 24 * len(lab), "each RAVDESS actor has 24 clips"
EOF
  adapt() {
    local n=$1; shift
    "$BIN" adapt --model "$OUT/source" --out "$d/$n" --force --json "$d/$n.adapt.json" "$@" >/dev/null
  }
  adapt unlabelled --unlabelled "$d/unlabelled.csv"
  adapt labelled --labelled "$d/labelled.csv"
  adapt both --labelled "$d/labelled.csv" --unlabelled "$d/unlabelled.csv"
  score() {
    local n=$1; shift
    rm -f "$d/$n.eval.jsonl"
    "$BIN" eval --manifest "$d/test.csv" --llm none --no-rationale "$@" \
      --json "$d/$n.eval.json" --out "$d/$n.eval.jsonl" >/dev/null 2>"$d/$n.eval.log"
  }
  score source --model "$OUT/source"
  for m in unlabelled labelled both; do score "$m" --model "$d/$m"; done
done

python3 - "$OUT" <<'EOF'
import json, sys
out = sys.argv[1]
splits = {"a": "01, 02", "b": "15, 16", "c": "07, 08"}
rows = [("source", "source (SYNTHETIC only)"), ("unlabelled", "adapted, unlabelled clips only"),
        ("labelled", "adapted, labelled clips"), ("both", "adapted, labelled + unlabelled")]
# Acoustic only, then the product's decision (routed clips fused with the rules as the
# model's fusion.json says), with the share of clips routed.
print("| model | " + " | ".join(f"labelled actors {a}: acoustic [95 % CI] / pipeline (routed)" for a in splits.values()) + " | mean acoustic / pipeline |")
print("|---|" + "---|" * (len(splits) + 1))
for name, what in rows:
    cells, f1s, pipe = [], [], []
    for s in splits:
        e = json.load(open(f"{out}/split-{s}/{name}.eval.json"))
        a = e["ablations"]["acoustic_only"]
        lo, hi = a.get("macro_f1_ci95") or (float("nan"), float("nan"))
        routed = 100 * e["routing"]["routed_fraction"]
        cells.append(f"{a['macro_f1']:.3f} [{lo:.3f}, {hi:.3f}] / {e['macro_f1']:.3f} ({routed:.0f} %)")
        f1s.append(a["macro_f1"])
        pipe.append(e["macro_f1"])
    print(f"| {what} | " + " | ".join(cells) + f" | {sum(f1s) / len(f1s):.3f} / {sum(pipe) / len(pipe):.3f} |")
for s in splits:
    r = json.load(open(f"{out}/split-{s}/both.adapt.json"))
    print(f"split {s}: " + "; ".join(x for x in r["refitted"] if "λ" in x))
    for name in ["labelled", "both"]:
        r = json.load(open(f"{out}/split-{s}/{name}.adapt.json"))
        print(f"split {s}, {name}: " + " ".join(x.strip() for x in r.get("fusion", [])[:2]))
EOF
