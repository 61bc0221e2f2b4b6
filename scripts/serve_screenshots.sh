#!/usr/bin/env bash
# Screenshots of the workbench pages for the README (docs/img/serve-*.png, each < 200 KB):
# starts `camxuc serve` on a throwaway data folder, classifies a few SYNTHETIC espeak-ng
# clips (every clip routed with --threshold 0.99, so the review queue has items), labels one,
# writes a small evaluation report for the report page, and renders each page with headless
# Chromium. Needs espeak-ng, Chromium and the Whisper front end (camxuc models fetch
# whisper-base). Offline.
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-docs/img}"
mkdir -p "$out"
browser="$(command -v chromium || command -v chromium-browser || true)"
[ -n "$browser" ] || { echo "serve_screenshots: chromium is not installed" >&2; exit 2; }
command -v espeak-ng >/dev/null || { echo "serve_screenshots: espeak-ng is not installed" >&2; exit 2; }

cargo build --quiet --bin camxuc
bin="${CARGO_TARGET_DIR:-target}/debug/camxuc"
# Inside the checkout (ignored target/), so the pages show short relative paths.
work="target/serve-screenshots"
rm -rf "$work"
mkdir -p "$work"
server=""
cleanup() {
    [ -n "$server" ] && kill "$server" 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

# A few SYNTHETIC Vietnamese utterances, and a longer recording made of three of them.
espeak-ng -v vi -s 150 -w "$work/goi-dien.wav" "Xin chào, tôi gọi để hỏi về lịch khám ngày mai."
espeak-ng -v vi -s 230 -a 200 -p 70 -w "$work/to-tieng.wav" "Tại sao không ai trả lời tôi? Tôi đã chờ cả buổi sáng rồi!"
espeak-ng -v vi -s 260 -p 90 -w "$work/hoang-so.wav" "Cứu với, cứu với, có người bị ngã, nhanh lên!"
espeak-ng -v vi -s 160 -w "$work/cuoc-goi-dai.wav" \
    "Xin chào. [[_:_:_:_:]] Tôi muốn hỏi về kết quả xét nghiệm. [[_:_:_:_:]] Tại sao lại lâu như vậy? Tôi đã chờ ba ngày rồi! [[_:_:_:_:]] Thôi được, cảm ơn."

# A small SYNTHETIC corpus and an evaluation report for the report page.
"$bin" synth --out "$work/corpus" --per-class 2 --speakers 2 >/dev/null 2>&1
"$bin" eval --model models/acoustic/default --manifest "$work/corpus/manifest.csv" --report "$work/data/report" \
    --report-note "SYNTHETIC speech (espeak-ng), for the screenshot only" >/dev/null 2>&1

"$bin" serve --port 0 --data "$work/data" --threshold 0.99 --model models/acoustic/default >"$work/stdout" 2>"$work/stderr" &
server=$!
for _ in $(seq 1 100); do
    grep -q "^listening on" "$work/stdout" 2>/dev/null && break
    sleep 0.2
done
url="$(sed -n 's/^listening on //p' "$work/stdout" | head -1)"
[ -n "$url" ] || { cat "$work/stderr" >&2; exit 1; }

for f in hoang-so to-tieng goi-dien; do
    curl -sf -F "file=@$work/$f.wav" "$url/api/classify" >/dev/null
done
curl -sf -F "file=@$work/cuoc-goi-dai.wav" "$url/api/classify?segments=true" >/dev/null
# One clip labelled (the adapt page counts it; the review queue keeps the others).
first="$(curl -sf "$url/api/review" | sed -n 's/.*"file":"\([^"]*goi-dien.wav\)".*/\1/p' | head -1)"
[ -n "$first" ] && curl -sf -H 'Content-Type: application/json' \
    -d "{\"file\":\"$first\",\"label\":\"calm\"}" "$url/api/label" >/dev/null

shot() { # page file height
    local profile
    profile="$(mktemp -d)"
    "$browser" --headless --no-sandbox --disable-gpu --hide-scrollbars --no-first-run \
        --user-data-dir="$profile" --window-size="1280,$3" --virtual-time-budget=5000 \
        --screenshot="$out/$2" "$url$1" >/dev/null 2>&1
    rm -rf "$profile"
    # Quantised (pngquant, when installed) to keep each image well under 200 KB.
    if command -v pngquant >/dev/null; then pngquant --force --skip-if-larger --output "$out/$2" 64 -- "$out/$2" || true; fi
    local size
    size="$(stat -c %s "$out/$2")"
    echo "$out/$2 $size bytes"
    [ "$size" -lt 204800 ] || echo "serve_screenshots: $out/$2 is over 200 KB (install pngquant or lower the height)" >&2
}
shot "/" serve-classify.png 1200
shot "/review" serve-review.png 900
shot "/adapt?lang=en" serve-adapt-en.png 700
shot "/report" serve-report.png 900
