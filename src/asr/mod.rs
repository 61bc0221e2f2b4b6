//! Speech recognition (what was said), for the reasoner: the offline Whisper decoder.
