//! Acoustic features and the named evidence record.
