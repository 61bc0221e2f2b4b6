//! The GGUF metadata reader: `GgufFile::open` (header, metadata, tensor extents, architecture),
//! the tokenizer built from its metadata, and the `models add` check (`catalog::check_gguf`).
//! Any panic or runaway allocation is a bug: a bad GGUF must come back as an error naming it.

#![no_main]

use camxuc::llm::{GgufFile, GgufTokenizer};
use libfuzzer_sys::fuzz_target;

#[path = "common.rs"]
mod common;

fuzz_target!(|data: &[u8]| {
    let path = common::scratch_file("model.gguf", data);
    let name = path.display().to_string();
    if let Err(e) = camxuc::catalog::check_gguf(&path) {
        assert!(e.to_string().contains(&name), "check_gguf error does not name the file: {e}");
    }
    let gguf = match GgufFile::open(&path) {
        Ok(g) => g,
        Err(e) => {
            assert!(e.to_string().contains(&name), "open error does not name the file: {e}");
            return;
        }
    };
    let _ = gguf.context_length();
    let _ = gguf.chat_template();
    if let Ok(tok) = GgufTokenizer::from_gguf(gguf.content(), gguf.path()) {
        if let Ok(ids) = tok.encode("Tôi rất lo lắng, hãy giúp tôi!", true) {
            let _ = tok.decode(&ids);
        }
    }
});
