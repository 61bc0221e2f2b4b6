//! espeak-ng as a subprocess: one call per clip, WAV on stdout.

use std::io::ErrorKind;
use std::path::Path;
use std::process::Command;

use super::prosody::ClipParams;
use crate::data::error::DataError;

/// Check that `program` runs at all; returns its version line (recorded in the README).
pub fn version(program: &Path) -> Result<String, DataError> {
    match Command::new(program).arg("--version").output() {
        Ok(out) if out.status.success() => Ok(String::from_utf8_lossy(&out.stdout)
            .lines()
            .next()
            .unwrap_or("")
            .trim()
            .to_string()),
        Ok(out) => Err(DataError::EspeakFailed {
            voice: "-".into(),
            sentence: "--version".into(),
            message: format!(
                "exit status {}: {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ),
        }),
        Err(e) if e.kind() == ErrorKind::NotFound => Err(DataError::EspeakMissing {
            program: program.display().to_string(),
        }),
        Err(source) => Err(DataError::EspeakStart {
            voice: "-".into(),
            sentence: "--version".into(),
            program: program.into(),
            source,
        }),
    }
}

/// Speak `text` with `voice` (e.g. `vi+m3`) and the clip's prosody; returns mono samples in
/// [-1, 1] and their sample rate (22 050 Hz for espeak-ng).
pub fn speak(
    program: &Path,
    voice: &str,
    text: &str,
    p: &ClipParams,
) -> Result<(Vec<f32>, u32), DataError> {
    let fail = |message: String| DataError::EspeakFailed {
        voice: voice.into(),
        sentence: text.into(),
        message,
    };
    // Pitch range has no command-line flag; SSML carries it (-m turns SSML on).
    let ssml = format!(
        "<speak><prosody range=\"{}%\">{}</prosody></speak>",
        p.range_pct,
        xml_escape(text)
    );
    let out = Command::new(program)
        .args(["-b", "1", "-m", "--stdout", "-v", voice])
        .args(["-p", &p.pitch.to_string(), "-s", &p.rate_wpm.to_string()])
        .args([
            "-a",
            &p.amplitude.to_string(),
            "-g",
            &p.word_gap.to_string(),
        ])
        .arg(&ssml)
        .output()
        .map_err(|e| match e.kind() {
            ErrorKind::NotFound => DataError::EspeakMissing {
                program: program.display().to_string(),
            },
            _ => DataError::EspeakStart {
                voice: voice.into(),
                sentence: text.into(),
                program: program.into(),
                source: e,
            },
        })?;
    if !out.status.success() {
        return Err(fail(format!(
            "exit status {}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    let (samples, rate) = parse_wav(&out.stdout).map_err(fail)?;
    if samples.iter().all(|&s| s == 0.0) {
        return Err(fail(
            "produced silence (is the Vietnamese voice `vi` installed?)".into(),
        ));
    }
    Ok((samples, rate))
}

/// Parse espeak-ng's streamed WAV. When writing to a pipe it cannot seek back, so the RIFF
/// and data sizes are placeholders (0x7fffffff): the data chunk runs to the end of stdout.
fn parse_wav(bytes: &[u8]) -> Result<(Vec<f32>, u32), String> {
    if bytes.len() < 12 || &bytes[0..4] != b"RIFF" || &bytes[8..12] != b"WAVE" {
        return Err(format!(
            "output is not a WAV stream ({} bytes)",
            bytes.len()
        ));
    }
    let u16_at = |i: usize| u16::from_le_bytes([bytes[i], bytes[i + 1]]);
    let u32_at =
        |i: usize| u32::from_le_bytes([bytes[i], bytes[i + 1], bytes[i + 2], bytes[i + 3]]);
    let mut pos = 12;
    let mut format: Option<(u16, u32, u16)> = None;
    while pos + 8 <= bytes.len() {
        let id = &bytes[pos..pos + 4];
        let size = u32_at(pos + 4) as usize;
        let body = pos + 8;
        if id == b"fmt " {
            if body + 16 > bytes.len() {
                return Err("truncated fmt chunk".into());
            }
            format = Some((u16_at(body + 2), u32_at(body + 4), u16_at(body + 14)));
        } else if id == b"data" {
            let Some((channels, rate, bits)) = format else {
                return Err("data before fmt chunk".into());
            };
            if channels != 1 || bits != 16 {
                return Err(format!(
                    "expected 16-bit mono, got {bits}-bit with {channels} channel(s)"
                ));
            }
            let samples = bytes[body..]
                .chunks_exact(2)
                .map(|c| i16::from_le_bytes([c[0], c[1]]) as f32 / 32768.0)
                .collect();
            return Ok((samples, rate));
        }
        pos = body.saturating_add(size + (size & 1));
    }
    Err("no data chunk in output".into())
}

fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_streamed_wav_with_placeholder_sizes() {
        let mut b = Vec::new();
        b.extend_from_slice(b"RIFF\xff\xff\xff\x7fWAVEfmt ");
        b.extend_from_slice(&16u32.to_le_bytes());
        b.extend_from_slice(&[1, 0, 1, 0]);
        b.extend_from_slice(&22_050u32.to_le_bytes());
        b.extend_from_slice(&44_100u32.to_le_bytes());
        b.extend_from_slice(&[2, 0, 16, 0]);
        b.extend_from_slice(b"data\xff\xff\xff\x7f");
        for s in [0i16, 16384, -16384] {
            b.extend_from_slice(&s.to_le_bytes());
        }
        let (x, rate) = parse_wav(&b).unwrap();
        assert_eq!(rate, 22_050);
        assert_eq!(x, vec![0.0, 0.5, -0.5]);
        assert!(parse_wav(b"not a wav").unwrap_err().contains("not a WAV"));
        assert!(parse_wav(&b[..36]).unwrap_err().contains("no data chunk"));
    }
}
