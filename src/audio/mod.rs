//! Audio in: decode (isolated), mono mix, resample to 16 kHz, trim silence.
