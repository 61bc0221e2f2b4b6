#!/usr/bin/env bash
# Issue 3 device check: does the `--features cuda` build train and evaluate on the GPU, and
# does it agree with the CPU? Run on the GPU machine, in the repository root, with `.devbin`
# carried (see scripts/device_cuda_build.sh, which makes it on a machine without a GPU):
#   .devbin/camxuc.gz    release binary built with --features cuda (CUDA 13.0, sm_90a), stripped
#                        and gzipped (75 MB stripped, 19 MB packed: the carried tree must stay < 64 MiB)
#   .devbin/lib/         libcudart.so.13 (small; the big CUDA libraries must be on the machine)
#   .devbin/corpus/      `camxuc synth --per-class 6 --speakers 3 --seed 2`
# Everything it prints also goes to $OUT/log; the per-clip eval records, each command's output
# and the model.json files come back packed in $OUT/work.tar.gz ($OUT returns 8 files at most).
#   .devbin/models/whisper-base/  `camxuc models export-frontend` (3 blocks, f16, 22 MB)
# Training uses the log-mel front end with an empty CAMXUC_MODELS_DIR (nothing else is needed);
# the default model (built into the binary) then runs with the exported Whisper front end on
# the GPU and on the CPU, and their probabilities and speeds are compared.
set -u
OUT=${OUT:-/tmp/cuda-check-out}
W=$(mktemp -d)
mkdir -p "$OUT"
if [ -z "${BIN:-}" ]; then
  BIN=$W/camxuc
  gunzip -c .devbin/camxuc.gz >"$BIN" && chmod +x "$BIN" || exit 1
fi
MANIFEST=.devbin/corpus/manifest.csv
export CAMXUC_MODELS_DIR=$(mktemp -d) RUST_BACKTRACE=1

main() {

echo "== machine"
nvidia-smi -L
nvidia-smi --query-gpu=driver_version,compute_cap --format=csv,noheader
command -v nvcc >/dev/null && nvcc --version | tail -2

# The binary links libcuda.so.1 (driver), libcudart/libcublas/libcublasLt/libnvrtc.so.13 and
# libcurand.so.10. Add every folder that holds one the loader cannot find yet.
echo "== libraries"
LD_LIBRARY_PATH=$PWD/.devbin/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
export LD_LIBRARY_PATH
for lib in $(ldd "$BIN" | awk '/not found/ {print $1}'); do
  hit=$(find /usr/local /usr/lib /opt -name "$lib" 2>/dev/null | head -1)
  echo "$lib -> ${hit:-MISSING}"
  [ -n "$hit" ] && LD_LIBRARY_PATH=$LD_LIBRARY_PATH:$(dirname "$hit")
done
ldd "$BIN" | grep -E 'cuda|cublas|curand|nvrtc|not found'

# run NAME CMD...: time one command, keep its output, stop the script if it fails.
run() {
  local name=$1; shift
  local t0=$(date +%s.%N)
  "$@" >"$W/$name.txt" 2>&1; local rc=$?
  local t1=$(date +%s.%N)
  awk -v n="$name" -v r="$rc" -v a="$t0" -v b="$t1" 'BEGIN {printf "== %s: rc %s, %.2f s wall\n", n, r, b - a}'
  grep -E 'compute device|best epoch|time:|validation:|acoustic only|rror|panicked' "$W/$name.txt"
  [ "$rc" = 0 ] || { tail -30 "$W/$name.txt"; exit "$rc"; }
}
TRAIN=(train --frontend logmel --manifest "$MANIFEST" --force --epochs 3)
EVAL=(eval --manifest "$MANIFEST" --llm none)

run gpu_train "$BIN" "${TRAIN[@]}" --out "$W/m_gpu"
run gpu_eval "$BIN" "${EVAL[@]}" --model "$W/m_gpu" --out "$W/gpu_eval.jsonl"
run gpu_eval_again "$BIN" "${EVAL[@]}" --model "$W/m_gpu" --out "$W/gpu_eval2.jsonl"
# Hidden GPU: the same binary falls back to the CPU (and says so).
run cpu_train env CUDA_VISIBLE_DEVICES= "$BIN" "${TRAIN[@]}" --out "$W/m_cpu"
run cpu_eval env CUDA_VISIBLE_DEVICES= "$BIN" "${EVAL[@]}" --model "$W/m_cpu" --out "$W/cpu_eval.jsonl"
run cpu_eval_gpu_model env CUDA_VISIBLE_DEVICES= "$BIN" "${EVAL[@]}" --model "$W/m_gpu" --out "$W/cpu_eval_gpu_model.jsonl"

# The Whisper front end: the default model (built into the binary) with the exported encoder.
if [ -f .devbin/models/whisper-base/frontend.json ]; then
  WEVAL=(eval --manifest "$MANIFEST" --llm none)
  run whisper_gpu_eval env CAMXUC_MODELS_DIR=$PWD/.devbin/models "$BIN" "${WEVAL[@]}" --out "$W/whisper_gpu_eval.jsonl"
  run whisper_gpu_eval_warm env CAMXUC_MODELS_DIR=$PWD/.devbin/models "$BIN" "${WEVAL[@]}" --out "$W/whisper_gpu_eval2.jsonl"
  run whisper_cpu_eval env CUDA_VISIBLE_DEVICES= CAMXUC_MODELS_DIR=$PWD/.devbin/models "$BIN" "${WEVAL[@]}" --out "$W/whisper_cpu_eval.jsonl"
else
  echo "== whisper: no .devbin/models/whisper-base (run scripts/device_cuda_build.sh): NOT CHECKED"
fi

echo "== device used"
for f in gpu_train gpu_eval; do
  grep -q 'compute device: CUDA' "$W/$f.txt" && echo "$f: CUDA" || echo "$f: NOT ON THE GPU"
done

echo "== agreement of acoustic_probs (max |diff| over clips and labels)"
python3 - "$W" <<'EOF'
import json, sys
out = sys.argv[1]
def probs(name):
    recs = {}
    for line in open(f"{out}/{name}.jsonl"):
        r = json.loads(line)
        if "acoustic_probs" in r:
            recs[r["file"]] = r["acoustic_probs"]
    return recs
def diff(a, b, what, strict=True):
    pa, pb = probs(a), probs(b)
    d = max(abs(pa[f][k] - pb[f][k]) for f in pa for k in pa[f])
    verdict = ("OK" if d < 1e-4 else "DIFFERS") if strict else "(informational)"
    print(f"{what}: {len(pa)} clips, max |diff| {d:.2e} {verdict}")
diff("gpu_eval", "cpu_eval_gpu_model", "same model, GPU vs CPU inference")
diff("gpu_eval", "gpu_eval2", "GPU inference twice")
diff("gpu_eval", "cpu_eval", "GPU-trained vs CPU-trained model (3 epochs)", strict=False)
import os
if os.path.exists(f"{out}/whisper_gpu_eval.jsonl"):
    diff("whisper_gpu_eval", "whisper_cpu_eval", "Whisper front end + default model, GPU vs CPU")
    diff("whisper_gpu_eval", "whisper_gpu_eval2", "Whisper front end on the GPU twice")
EOF
if grep -q 'compute device: CUDA' "$W/whisper_gpu_eval.txt" 2>/dev/null; then
  echo "whisper_gpu_eval: CUDA"
else
  echo "whisper_gpu_eval: NOT ON THE GPU (or not run)"
fi
}

main 2>&1 | tee "$OUT/log"
rc=${PIPESTATUS[0]}
tar -czf "$OUT/work.tar.gz" -C "$W" --exclude=model.safetensors --exclude=train_evidence.jsonl .
exit "$rc"
