#!/usr/bin/env bash
# Render an `eval --report DIR` page headless to DIR/report.png (1200 px wide, 3000 px tall)
# so a person or a test can look at what readers will see. Needs Chromium (Debian: apt-get
# install chromium). Offline: the page loads nothing beyond itself.
set -euo pipefail
dir="${1:?usage: scripts/render_report.sh REPORT_DIR [HEIGHT_PX]}"
height="${2:-3000}"
html="$(cd "$dir" && pwd)/report.html"
[ -f "$html" ] || { echo "render_report: no report.html in $dir" >&2; exit 1; }
browser="$(command -v chromium || command -v chromium-browser || command -v google-chrome || true)"
[ -n "$browser" ] || { echo "render_report: chromium is not installed (apt-get install chromium)" >&2; exit 2; }
png="$(cd "$dir" && pwd)/report.png"
# A private profile folder: headless Chromium otherwise writes into $HOME, which may be shared or read-only.
profile="$(mktemp -d)"
trap 'rm -rf "$profile"' EXIT
"$browser" --headless --no-sandbox --disable-gpu --hide-scrollbars --no-first-run \
  --user-data-dir="$profile" --screenshot="$png" --window-size="1200,$height" \
  "file://$html" >/dev/null 2>&1
[ -s "$png" ] || { echo "render_report: chromium wrote no screenshot for $html" >&2; exit 3; }
chmod 600 "$png"
echo "$png"
