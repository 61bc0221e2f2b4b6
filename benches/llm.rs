//! LLM speed and memory: `cargo bench --bench llm` (default model, 2 threads), or
//! `CAMXUC_BENCH_MODEL=SPEC CAMXUC_BENCH_THREADS=N cargo bench --bench llm`;
//! `CAMXUC_BENCH_PACKED=1` measures `LoadOptions::packed_kernels`. Prints the
//! `camxuc models bench` JSON report.

use camxuc::catalog::{models_dir, ModelSpec};

fn main() {
    let spec = std::env::var("CAMXUC_BENCH_MODEL").unwrap_or_else(|_| "smollm2-135m".into());
    let threads = std::env::var("CAMXUC_BENCH_THREADS")
        .ok()
        .and_then(|t| t.parse().ok())
        .unwrap_or(2);
    let path = match ModelSpec::parse(&spec).and_then(|s| s.resolve(&models_dir())) {
        Ok(Some(p)) if p.exists() => p,
        Ok(_) => {
            eprintln!("llm bench skipped: model `{spec}` is not installed (camxuc models fetch)");
            return;
        }
        Err(e) => {
            eprintln!("llm bench skipped: {e}");
            return;
        }
    };
    let options = camxuc::llm::LoadOptions {
        threads,
        #[cfg(feature = "research")]
        packed_kernels: std::env::var("CAMXUC_BENCH_PACKED").is_ok_and(|v| v == "1"),
        ..camxuc::llm::LoadOptions::default()
    };
    match camxuc::llm::bench_with(&path, &options) {
        Ok(report) => match serde_json::to_string_pretty(&report) {
            Ok(s) => println!("{s}"),
            Err(e) => eprintln!("llm bench: cannot serialise the report: {e}"),
        },
        Err(e) => {
            eprintln!("llm bench failed: {e}");
            std::process::exit(1);
        }
    }
}
