#!/usr/bin/env python3
"""Reference token ids for camxuc's GGUF tokenizer tests (tests/llm_tokenizer.rs).

The ids come from tokenizers that share no code with camxuc: the GGUF metadata is read with
the `gguf` package, and the strings are encoded by

* gpt2-style BPE (SmolLM2, Qwen2.5): Hugging Face `tokenizers`, rebuilt from the GGUF vocab and
  merges with the pre-tokenizer of the model's original tokenizer.json (`tokenizer.ggml.pre`
  names it: "smollm" = individual digits + GPT-2 byte-level regex, "qwen2" = Qwen's split
  regex + byte-level);
* SentencePiece (Gemma 3, `tokenizer.ggml.model = llama`): Google's `sentencepiece`, from a
  ModelProto rebuilt from the GGUF pieces, scores and types (BPE, byte fallback).

transformers' own GGUF loader is not used: it ignores `tokenizer.ggml.pre` (SmolLM2 loses its
digit splitting) and its Gemma 3 conversion splits common words into pieces.

Usage (outside the repository's environment):
    python -m venv /tmp/refenv && /tmp/refenv/bin/pip install gguf tokenizers sentencepiece protobuf
    /tmp/refenv/bin/python scripts/llm_tokenizer_reference.py models/smollm2-135m/*.gguf \
        tests/fixtures/llm/smollm2-135m.tokens.json
"""

import json
import sys

from gguf import GGUFReader

# The fixed inputs: English, Vietnamese with diacritics, numbers, punctuation, runs of spaces,
# newlines, and chat-formatted prompts whose markers must stay single tokens.
STRINGS = [
    "Hello world",
    "The speaker sounds calm, steady and quiet.",
    "  leading spaces and trailing spaces   ",
    "Tabs\tand\nnewlines\n\n\nthree blank lines",
    "Numbers: 3.14159, 2026-05-24, 1,000,000 and 42%!",
    "Punctuation?! (brackets) [square] {curly} \"quotes\" 'single' — dash… ellipsis",
    "I'm sure you'll see it's what they've done, we'd say.",
    "Tôi rất tức giận!",
    "Cứu tôi với, có ai không? Làm ơn giúp tôi!",
    "Bình tĩnh nào, mọi chuyện sẽ ổn thôi.",
    "Giọng nói cao hơn bình thường +1,8 SD; tốc độ nói nhanh.",
    "Nhãn: bình tĩnh / tức giận / hoảng loạn",
    "Đường phố Hà Nội lúc 7 giờ sáng   rất đông đúc.\nNgười đi bộ, xe máy, ô tô.",
    "Mixed tiếng Việt and English: pitch cao (+2.1 SD), loudness thấp.",
    "<|im_start|>system\nYou are an annotator.<|im_end|>\n<|im_start|>user\n"
    "Nhãn nào đúng?<|im_end|>\n<|im_start|>assistant\n",
    "<start_of_turn>user\nGiọng nói này bình tĩnh hay tức giận?<end_of_turn>\n<start_of_turn>model\n",
    "emoji 😀 and symbols © ® ™ ∑ √",
    "",
]

CONTROL, USER_DEFINED = 3, 4


def field(reader, key):
    f = reader.fields.get(key)
    return None if f is None else f.contents()


def gpt2_tokenizer(reader):
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers

    tokens = field(reader, "tokenizer.ggml.tokens")
    types = field(reader, "tokenizer.ggml.token_type")
    merges = [tuple(m.split(" ", 1)) for m in field(reader, "tokenizer.ggml.merges")]
    pre = field(reader, "tokenizer.ggml.pre")
    vocab = {t: i for i, t in enumerate(tokens)}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges, ignore_merges=False))
    if pre == "smollm":
        tok.pre_tokenizer = pre_tokenizers.Sequence(
            [
                pre_tokenizers.Digits(individual_digits=True),
                pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
            ]
        )
    elif pre == "qwen2":
        pattern = (
            r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
            r"|\s*[\r\n]+|\s+(?!\S)|\s+"
        )
        tok.pre_tokenizer = pre_tokenizers.Sequence(
            [
                pre_tokenizers.Split(Regex(pattern), behavior="isolated", invert=False),
                pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
            ]
        )
    else:
        raise SystemExit(f"no reference pre-tokenizer for tokenizer.ggml.pre = {pre!r}")
    tok.decoder = decoders.ByteLevel()
    specials = [
        AddedToken(t, special=True, normalized=False)
        for t, ty in zip(tokens, types)
        if ty in (CONTROL, USER_DEFINED)
    ]
    tok.add_special_tokens(specials)
    return lambda s: tok.encode(s, add_special_tokens=False).ids


def spm_tokenizer(reader):
    import sentencepiece as spm
    from sentencepiece import sentencepiece_model_pb2 as pb

    tokens = field(reader, "tokenizer.ggml.tokens")
    scores = field(reader, "tokenizer.ggml.scores")
    types = field(reader, "tokenizer.ggml.token_type")
    add_space_prefix = field(reader, "tokenizer.ggml.add_space_prefix")
    proto = pb.ModelProto()
    proto.trainer_spec.model_type = pb.TrainerSpec.BPE
    proto.trainer_spec.vocab_size = len(tokens)
    proto.trainer_spec.byte_fallback = True
    proto.trainer_spec.unk_id = field(reader, "tokenizer.ggml.unknown_token_id")
    proto.trainer_spec.bos_id = field(reader, "tokenizer.ggml.bos_token_id")
    proto.trainer_spec.eos_id = field(reader, "tokenizer.ggml.eos_token_id")
    proto.trainer_spec.pad_id = field(reader, "tokenizer.ggml.padding_token_id")
    proto.normalizer_spec.name = "identity"
    proto.normalizer_spec.add_dummy_prefix = bool(add_space_prefix)
    proto.normalizer_spec.remove_extra_whitespaces = False
    proto.normalizer_spec.escape_whitespaces = True
    for text, score, ty in zip(tokens, scores, types):
        piece = proto.pieces.add()
        # llama.cpp's converter writes Gemma's user-defined whitespace runs with `▁` turned
        # back into spaces; SentencePiece matches user-defined pieces after escaping spaces,
        # so restore the original `▁` form.
        piece.piece = text.replace(" ", "\u2581") if ty == USER_DEFINED else text
        piece.score = float(score)
        piece.type = int(ty)  # GGUF token types use SentencePiece's numbering
    sp = spm.SentencePieceProcessor(model_proto=proto.SerializeToString())
    # SentencePiece never matches control pieces in text; split on them first (longest first),
    # as llama.cpp and Hugging Face do for special tokens.
    controls = sorted(
        ((t, i) for i, (t, ty) in enumerate(zip(tokens, types)) if ty == CONTROL and t),
        key=lambda p: -len(p[0]),
    )

    def encode(s):
        parts = [s]
        for text, ident in controls:
            if not any(isinstance(p, str) and text in p for p in parts):
                continue
            split = []
            for p in parts:
                if not isinstance(p, str):
                    split.append(p)
                    continue
                pieces = p.split(text)
                for k, piece in enumerate(pieces):
                    if k:
                        split.append(ident)
                    if piece:
                        split.append(piece)
            parts = split
        ids = []
        for p in parts:
            ids.extend([p] if isinstance(p, int) else sp.encode(p))
        return ids

    return encode


def main():
    gguf_path, out_path = sys.argv[1], sys.argv[2]
    reader = GGUFReader(gguf_path)
    model = field(reader, "tokenizer.ggml.model")
    encode = gpt2_tokenizer(reader) if model == "gpt2" else spm_tokenizer(reader)
    cases = [{"text": s, "ids": encode(s)} for s in STRINGS]
    out = {
        "generator": "scripts/llm_tokenizer_reference.py",
        "gguf": gguf_path.rsplit("/", 1)[-1],
        "tokenizer_model": model,
        "tokenizer_pre": field(reader, "tokenizer.ggml.pre"),
        "add_special": False,
        "cases": cases,
    }
    with open(out_path, "w", encoding="utf-8") as f:
        json.dump(out, f, ensure_ascii=False, indent=1)
        f.write("\n")


if __name__ == "__main__":
    main()
