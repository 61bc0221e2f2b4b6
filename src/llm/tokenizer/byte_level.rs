//! GPT-2's reversible byte ↔ printable-character mapping used by byte-level BPE vocabularies:
//! every byte becomes one visible character, so vocab entries never hold raw control bytes.

/// Printable bytes keep their own code point; the others are numbered from 256 upwards.
fn keeps_code(b: u32) -> bool {
    (33..=126).contains(&b) || (161..=172).contains(&b) || (174..=255).contains(&b)
}

/// The highest code point the mapping uses is 256 + 67 (68 remapped bytes).
const MAPPED_LIMIT: usize = 256 + 68;

#[derive(Debug, Clone)]
pub struct ByteLevel {
    to_char: [char; 256],
    from_char: [Option<u8>; MAPPED_LIMIT],
}

impl ByteLevel {
    pub fn new() -> Self {
        let mut to_char = ['\0'; 256];
        let mut from_char = [None; MAPPED_LIMIT];
        let mut next_free = 256u32;
        for b in 0u32..=255 {
            let code = if keeps_code(b) {
                b
            } else {
                next_free += 1;
                next_free - 1
            };
            // All codes are below 0x144, far from the surrogate range: never the fallback.
            to_char[b as usize] = char::from_u32(code).unwrap_or('\u{FFFD}');
            from_char[code as usize] = Some(b as u8);
        }
        Self { to_char, from_char }
    }

    /// Appends the mapped characters of `bytes` to `out`.
    pub fn encode_into(&self, bytes: &[u8], out: &mut String) {
        out.extend(bytes.iter().map(|&b| self.to_char[b as usize]));
    }

    /// The byte a mapped character stands for; None for characters outside the mapping.
    pub fn byte_of(&self, c: char) -> Option<u8> {
        self.from_char.get(c as usize).copied().flatten()
    }
}

impl Default for ByteLevel {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mapping_round_trips_every_byte() {
        let bl = ByteLevel::new();
        let all: Vec<u8> = (0u8..=255).collect();
        let mut s = String::new();
        bl.encode_into(&all, &mut s);
        let back: Vec<u8> = s.chars().filter_map(|c| bl.byte_of(c)).collect();
        assert_eq!(back, all);
        let mut space = String::new();
        bl.encode_into(b" \na", &mut space);
        assert_eq!(space, "ĠĊa");
    }
}
