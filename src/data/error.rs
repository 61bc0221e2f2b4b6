//! Errors of the data stage. Every variant names the file it is about (the manifest, the
//! output folder, or the sentence espeak-ng choked on) and what is wrong, so that a user can
//! fix the input without reading code.

use std::path::PathBuf;

/// Everything that can go wrong while reading/writing manifests, splitting, or synthesising
/// the demo corpus.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    #[error("manifest {path}: file not found")]
    ManifestMissing { path: PathBuf },

    #[error("manifest {path}: cannot read it as CSV{}: {source}", at_line(*line))]
    ManifestUnreadable {
        path: PathBuf,
        line: Option<usize>,
        #[source]
        source: csv::Error,
    },

    #[error(
        "manifest {path}: bad header: required column '{missing}' is missing \
         (a manifest needs at least `{required}`; found columns: {found})"
    )]
    BadHeader {
        path: PathBuf,
        missing: String,
        required: String,
        found: String,
    },

    #[error("manifest {path}, line {line}: column '{column}' is empty")]
    EmptyField {
        path: PathBuf,
        line: usize,
        column: String,
    },

    #[error("manifest {path}, line {line}: unknown label '{label}' (valid labels: {valid})")]
    UnknownLabel {
        path: PathBuf,
        line: usize,
        label: String,
        valid: String,
    },

    #[error(
        "manifest {path}: duplicate row: '{rel_path}' appears on line {first_line} and again on \
         line {second_line}"
    )]
    DuplicateRow {
        path: PathBuf,
        rel_path: String,
        first_line: usize,
        second_line: usize,
    },

    #[error("manifest {path}: no data rows (only a header, or an empty file)")]
    EmptyManifest { path: PathBuf },

    #[error("manifest {path}: {count} audio file(s) missing: {listing}")]
    MissingAudio {
        path: PathBuf,
        count: usize,
        listing: String,
    },

    #[error("manifest {path}: cannot write it: {source}")]
    ManifestWrite {
        path: PathBuf,
        #[source]
        source: csv::Error,
    },

    #[error("manifest {path}: cannot split it: {reason}")]
    CannotSplit { path: PathBuf, reason: String },

    #[error(
        "manifest {path}: speaker selector '{selector}' matches no speaker (speakers: {known})"
    )]
    UnknownSpeaker {
        path: PathBuf,
        selector: String,
        known: String,
    },

    #[error(
        "espeak-ng not found (tried '{program}'): the synthetic demo corpus needs it. Install it \
         with `apt-get install espeak-ng` on Debian/Ubuntu or `brew install espeak-ng` on macOS"
    )]
    EspeakMissing { program: String },

    /// espeak-ng ran and failed (its exit status and stderr are in `message`).
    #[error("espeak-ng failed on sentence \"{sentence}\" (voice {voice}): {message}")]
    EspeakFailed {
        voice: String,
        sentence: String,
        message: String,
    },

    /// espeak-ng could not be started at all (other than not being installed).
    #[error(
        "espeak-ng failed on sentence \"{sentence}\" (voice {voice}): cannot start {program}: \
         {source}"
    )]
    EspeakStart {
        voice: String,
        sentence: String,
        program: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("output folder {path} is not writable: {source}")]
    OutputNotWritable {
        path: PathBuf,
        #[source]
        source: WriteError,
    },

    #[error("synth: {message}")]
    SynthConfig { message: String },

    #[error("synth: cannot resample clip {clip}: {source}")]
    Resample {
        clip: String,
        #[source]
        source: crate::audio::AudioError,
    },
}

/// What failed while writing a file of the output folder: the folder or a README (io), a
/// clip (WAV) or the manifest (CSV). Shown as the underlying error's own text.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    #[error(transparent)]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    Wav(#[from] hound::Error),
    #[error(transparent)]
    Csv(#[from] csv::Error),
}

fn at_line(line: Option<usize>) -> String {
    line.map(|l| format!(" at line {l}")).unwrap_or_default()
}
