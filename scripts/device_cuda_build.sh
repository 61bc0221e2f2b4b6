#!/usr/bin/env bash
# Build camxuc with `--features cuda` on a machine WITHOUT a GPU or a CUDA install, for the
# device machine (H100, driver 580 = CUDA 13.0, its own CUDA 13 libraries), and pack what
# scripts/device_cuda_check.sh carries into .devbin/ (ignore it: `/.devbin/` in
# .git/info/exclude). Run in the repository root. Takes about 30 minutes on 2 cores, most of
# it nvcc compiling candle-kernels' quantised-matmul kernels.
#
# Why each piece:
# - nvcc, headers and libraries come from NVIDIA's CUDA 13.0 pip wheels (unpacked into
#   /tmp/cuda-tools, outside the repo). 13.0 and not newer: the driver (580) JIT-compiles
#   candle's PTX only up to PTX ISA 9.0, and the binary must find the same sonames
#   (libcublas.so.13, libcurand.so.10, libcudart.so.13) on the device.
# - candle-core turns on cudarc's `dynamic-linking`, so the link needs libcuda.so, which only
#   a driver install has: a stub with the same soname and the driver symbols cudarc names is
#   made here; the real libcuda.so.1 is loaded on the device.
# - CUDA_COMPUTE_CAP=90: there is no GPU for nvidia-smi to ask (cudaforge builds sm_90a).
set -euo pipefail
T=/tmp/cuda-tools
C=$T/nvidia/cu13
if [ ! -x "$C/bin/nvcc" ]; then
  python3 -m pip install -q --no-deps --target "$T" nvidia-cuda-nvcc==13.0.88 \
    nvidia-cuda-runtime==13.0.96 nvidia-cublas==13.0.2.14 nvidia-curand==10.4.0.35 \
    nvidia-cuda-nvrtc==13.0.88 nvidia-cuda-crt==13.0.88 nvidia-cuda-cccl==13.0.85
  # nvvm (cicc, libdevice) lands in the same nvidia/cu13 tree, which pip --target will not merge.
  python3 -m pip download -q --no-deps -d /tmp/nvvm-wheel nvidia-nvvm==13.0.88
  unzip -q -o /tmp/nvvm-wheel/nvidia_nvvm-13.0.88-*.whl 'nvidia/*' -d "$T"
  chmod +x "$C"/bin/* "$C"/nvvm/bin/*
fi
(cd "$C/lib" && for l in cublas cublasLt cudart nvrtc; do ln -sf "lib$l.so.13" "lib$l.so"; done &&
  ln -sf libcurand.so.10 libcurand.so)
if [ ! -f "$C/lib/stubs/libcuda.so" ]; then
  mkdir -p "$C/lib/stubs"
  cudarc=$(ls -d ~/.cargo/registry/src/*/cudarc-0.19.10 | head -1)
  grep -oE 'load::<_F>\("[A-Za-z0-9_]+"\)' "$cudarc/src/driver/sys/mod.rs" |
    sed -E 's/.*\("([^"]+)"\)/int \1(void) { return 100; }/' | sort -u >/tmp/libcuda_stub.c
  gcc -shared -fPIC -Wl,-soname,libcuda.so.1 -o "$C/lib/stubs/libcuda.so" /tmp/libcuda_stub.c
  ln -sf libcuda.so "$C/lib/stubs/libcuda.so.1"
fi

export PATH=$C/bin:$PATH CUDA_HOME=$C CUDA_COMPUTE_CAP=90 CUDARC_CUDA_VERSION=13000
export LIBRARY_PATH=$C/lib:$C/lib/stubs CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-/tmp/cuda-target}
cargo build --release --features cuda --bin camxuc

mkdir -p .devbin/lib
strip -o /tmp/camxuc-cuda "$CARGO_TARGET_DIR/release/camxuc"
gzip -9 -c /tmp/camxuc-cuda >.devbin/camxuc.gz
cp "$C/lib/libcudart.so.13" .devbin/lib/
# The stub (every call answers CUDA_ERROR_NO_DEVICE) lets the binary run here on the CPU: it
# proves the binary loads with all its libraries and falls back to the CPU, and makes the corpus.
rm -rf .devbin/corpus
LD_LIBRARY_PATH=$C/lib/stubs:$C/lib /tmp/camxuc-cuda synth --out .devbin/corpus \
  --per-class 6 --speakers 3 --seed 2
# The Whisper front end travels as an export of the 3 encoder blocks the default model uses
# (22 MB in f16; the 145 MB model.bin cannot).
rm -rf .devbin/models
LD_LIBRARY_PATH=$C/lib/stubs:$C/lib /tmp/camxuc-cuda models export-frontend \
  --out .devbin/models/whisper-base
ls -l /tmp/camxuc-cuda .devbin/camxuc.gz
du -sh .devbin
