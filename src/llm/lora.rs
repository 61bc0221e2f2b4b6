//! LoRA task adaptation of a small GGUF LLM on training-side prompts (issue 4).
