#!/usr/bin/env python3
"""Reference arrays for the Whisper front end tests (tests/whisper_*.rs).

Computes, for a fixed 1.0 s synthetic voiced signal (the same formula as
`synthetic_voice` in tests/whisper_frontend.rs):
  * Whisper's 80-bin mel filter bank (from openai-whisper's assets/mel_filters.npz),
  * the log-mel spectrogram exactly as openai-whisper's `log_mel_spectrogram`
    (periodic Hann 400, hop 160, centred reflect-padded STFT, last frame dropped,
    log10 clamp 1e-10, max - 8 floor, (x + 4) / 4), unpadded and 30 s padded,
  * CTranslate2's Whisper encoder output on the 3000-frame padded input and on the
    unpadded 100-frame input.

Needs: pip install ctranslate2 numpy; the openai-whisper sdist for mel_filters.npz
(pip download --no-deps openai-whisper, untar). Writes little-endian f32 files and
meta.json into the output folder. Each file stays well under 100 KB.

usage: scripts/whisper_reference.py MODEL_DIR MEL_FILTERS_NPZ OUT_DIR
"""
import hashlib
import json
import os
import sys

import numpy as np

SR = 16000
N_FFT = 400
HOP = 160
N_FRAMES = 3000
N_SAMPLES = N_FRAMES * HOP
KEEP_FRAMES = 8  # encoder frames stored besides the time mean


def synthetic_voice(n_samples):
    """Rising-pitch harmonic tone (120 -> 160 Hz, 8 harmonics, 1/k) under a sin^2 envelope."""
    t = np.arange(n_samples, dtype=np.float64) / SR
    dur = n_samples / SR
    phase = 2.0 * np.pi * (120.0 * t + 20.0 * t * t)
    x = np.zeros_like(t)
    for k in range(1, 9):
        x += np.sin(k * phase) / k
    env = np.sin(np.pi * t / dur) ** 2
    return (0.25 * env * x).astype(np.float32)


def log_mel(audio, filters, padding=0):
    audio = audio.astype(np.float64)
    if padding > 0:
        audio = np.pad(audio, (0, padding))
    window = 0.5 - 0.5 * np.cos(2.0 * np.pi * np.arange(N_FFT) / N_FFT)  # periodic Hann
    padded = np.pad(audio, (N_FFT // 2, N_FFT // 2), mode="reflect")
    n_frames = 1 + (len(padded) - N_FFT) // HOP
    frames = np.stack([padded[i * HOP : i * HOP + N_FFT] for i in range(n_frames)])
    spec = np.fft.rfft(frames * window, axis=1)
    mags = (np.abs(spec) ** 2).T[:, :-1]  # drop the last frame, as whisper does
    mel = filters.astype(np.float64) @ mags
    log_spec = np.log10(np.maximum(mel, 1e-10))
    log_spec = np.maximum(log_spec, log_spec.max() - 8.0)
    return ((log_spec + 4.0) / 4.0).astype(np.float32)


def write(out_dir, name, array):
    array = np.ascontiguousarray(array, dtype="<f4")
    path = os.path.join(out_dir, name)
    array.tofile(path)
    return {"file": name, "shape": list(array.shape)}


def main():
    model_dir, filters_npz, out_dir = sys.argv[1:4]
    import ctranslate2

    os.makedirs(out_dir, exist_ok=True)
    filters = np.load(filters_npz)["mel_80"]
    audio = synthetic_voice(SR)

    mel_trimmed = log_mel(audio, filters)
    mel_padded = log_mel(audio, filters, padding=N_SAMPLES)[:, :N_FRAMES]

    model = ctranslate2.models.Whisper(model_dir, device="cpu", compute_type="float32")
    features = ctranslate2.StorageView.from_array(np.ascontiguousarray(mel_padded[None, :, :]))
    enc = np.array(model.encode(features, to_cpu=True))[0]  # [1500, 512]
    # CTranslate2 also accepts a shorter input (it slices the position encodings):
    # the reference for running the encoder over the real, unpadded length.
    short = ctranslate2.StorageView.from_array(np.ascontiguousarray(mel_trimmed[None, :, :]))
    enc_short = np.array(model.encode(short, to_cpu=True))[0]  # [50, 512]

    # Language detection on the unpadded input checks the decoder weights too.
    with open(os.path.join(model_dir, "tokenizer.json")) as f:
        token_ids = {t["content"]: t["id"] for t in json.load(f)["added_tokens"]}
    languages = [
        {"token": token, "id": token_ids[token], "probability": prob}
        for token, prob in model.detect_language(short)[0][:3]
    ]

    with open(os.path.join(model_dir, "model.bin"), "rb") as f:
        model_sha = hashlib.sha256(f.read()).hexdigest()
    meta = {
        "signal": "synthetic_voice(16000): see scripts/whisper_reference.py",
        "ctranslate2_version": ctranslate2.__version__,
        "model_sha256": model_sha,
        "mel_filters": write(out_dir, "mel_filters_80.f32", filters),
        "mel_trimmed": write(out_dir, "mel_trimmed.f32", mel_trimmed),
        "mel_padded_head": write(out_dir, "mel_padded_head.f32", mel_padded[:, :120]),
        "encoder_full_mean": write(out_dir, "encoder_full_mean.f32", enc.mean(axis=0)),
        "encoder_full_head": write(out_dir, "encoder_full_head.f32", enc[:KEEP_FRAMES]),
        "encoder_trimmed_mean": write(out_dir, "encoder_trimmed_mean.f32", enc_short.mean(axis=0)),
        "encoder_trimmed_head": write(out_dir, "encoder_trimmed_head.f32", enc_short[:KEEP_FRAMES]),
        "detected_languages_trimmed": languages,
    }
    with open(os.path.join(out_dir, "meta.json"), "w") as f:
        json.dump(meta, f, indent=2)
    print(json.dumps(meta, indent=2))


if __name__ == "__main__":
    main()
