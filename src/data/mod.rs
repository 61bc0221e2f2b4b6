//! Manifests, speaker-disjoint splits, and the synthetic demo corpus.
