//! Reader for the CTranslate2 binary model format (`model.bin`, binary version 6).
//!
//! Layout, as written by `ctranslate2/specs/model_spec.py::_serialize` (all little-endian):
//!
//! ```text
//! u32 binary_version            (6)
//! str spec_name                 ("WhisperSpec")
//! u32 spec_revision
//! u32 n_variables
//!   n_variables × { str name, u8 rank, rank × u32 dim, u8 dtype_id, u32 n_bytes, n_bytes data }
//! u32 n_aliases
//!   n_aliases × { str alias, str target }
//! str = u16 length (including the trailing NUL), UTF-8 bytes, NUL
//! ```
//!
//! The file is read once into memory and variables are kept as byte ranges into it, so the
//! largest allocation is the file itself; every length read from the file is checked against
//! what is left before it is used, so a truncated or corrupt file is an error, never a panic.

use std::collections::BTreeMap;
use std::ops::Range;
use std::path::{Path, PathBuf};

use thiserror::Error;

/// The only binary version whose layout has been checked against real files.
pub const SUPPORTED_BINARY_VERSION: u32 = 6;

/// CTranslate2 allows at most this many dimensions in practice; a larger rank means corruption.
const MAX_RANK: u8 = 8;

/// What went wrong reading or mapping a CTranslate2 model; every variant names the file.
#[derive(Debug, Error)]
pub enum Ct2Error {
    #[error("{path}: cannot read: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: not a CTranslate2 model of a supported version: binary version {found}, this reader supports {SUPPORTED_BINARY_VERSION}")]
    UnsupportedVersion { path: PathBuf, found: u32 },
    #[error(
        "{path}: truncated: needed {needed} bytes for {what} at offset {offset}, file has {len}"
    )]
    Truncated {
        path: PathBuf,
        what: String,
        offset: usize,
        needed: usize,
        len: usize,
    },
    #[error("{path}: bad string at offset {offset}: {reason}")]
    BadString {
        path: PathBuf,
        offset: usize,
        reason: &'static str,
    },
    #[error("{path}: variable `{name}` has unknown dtype id {id} (known: 0 float32, 1 int8, 2 int16, 3 int32, 4 float16, 5 bfloat16)")]
    UnknownDType { path: PathBuf, name: String, id: u8 },
    #[error("{path}: variable `{name}`: {reason}")]
    BadVariable {
        path: PathBuf,
        name: String,
        reason: String,
    },
    #[error("{path}: {trailing} unexpected bytes after the alias table (wrong concatenation of the parts?)")]
    TrailingBytes { path: PathBuf, trailing: usize },
    #[error("{path}: expected a {expected} model, found spec `{found}`")]
    WrongSpec {
        path: PathBuf,
        expected: &'static str,
        found: String,
    },
    #[error("{path}: missing variable `{name}`")]
    MissingVariable { path: PathBuf, name: String },
    #[error("{path}: bad config: {reason}")]
    Config { path: PathBuf, reason: String },
}

/// Element types of the format, by their on-disk id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ct2DType {
    F32,
    I8,
    I16,
    I32,
    F16,
    BF16,
}

impl Ct2DType {
    fn from_id(id: u8) -> Option<Self> {
        Some(match id {
            0 => Self::F32,
            1 => Self::I8,
            2 => Self::I16,
            3 => Self::I32,
            4 => Self::F16,
            5 => Self::BF16,
            _ => return None,
        })
    }

    pub fn size_in_bytes(self) -> usize {
        match self {
            Self::I8 => 1,
            Self::I16 | Self::F16 | Self::BF16 => 2,
            Self::F32 | Self::I32 => 4,
        }
    }
}

/// One stored variable: its shape, element type and where its bytes are in the file.
#[derive(Debug, Clone)]
pub struct Ct2Variable {
    pub shape: Vec<usize>,
    pub dtype: Ct2DType,
    bytes: Range<usize>,
}

/// A parsed `model.bin`: header, variables by name, and aliases (alias → target name).
#[derive(Debug)]
pub struct Ct2Model {
    pub path: PathBuf,
    pub binary_version: u32,
    pub spec_name: String,
    pub spec_revision: u32,
    pub variables: BTreeMap<String, Ct2Variable>,
    pub aliases: BTreeMap<String, String>,
    data: Vec<u8>,
}

impl Ct2Model {
    /// Reads and parses `path` (the `model.bin` file itself).
    pub fn read(path: &Path) -> Result<Self, Ct2Error> {
        let data = std::fs::read(path).map_err(|source| Ct2Error::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(data, path)
    }

    /// Parses the bytes of a model file; `path` is only used in error messages.
    pub fn parse(data: Vec<u8>, path: &Path) -> Result<Self, Ct2Error> {
        let mut cur = Cursor {
            data: &data,
            pos: 0,
            path,
        };
        let binary_version = cur.u32("binary version")?;
        if binary_version != SUPPORTED_BINARY_VERSION {
            return Err(Ct2Error::UnsupportedVersion {
                path: path.to_path_buf(),
                found: binary_version,
            });
        }
        let spec_name = cur.string("spec name")?;
        let spec_revision = cur.u32("spec revision")?;
        let n_variables = cur.u32("variable count")?;
        let mut variables = BTreeMap::new();
        for _ in 0..n_variables {
            let (name, variable) = cur.variable()?;
            variables.insert(name, variable);
        }
        let n_aliases = cur.u32("alias count")?;
        let mut aliases = BTreeMap::new();
        for _ in 0..n_aliases {
            let alias = cur.string("alias name")?;
            let target = cur.string("alias target")?;
            aliases.insert(alias, target);
        }
        let trailing = data.len() - cur.pos;
        if trailing != 0 {
            return Err(Ct2Error::TrailingBytes {
                path: path.to_path_buf(),
                trailing,
            });
        }
        Ok(Self {
            path: path.to_path_buf(),
            binary_version,
            spec_name,
            spec_revision,
            variables,
            aliases,
            data,
        })
    }

    /// The variable called `name`, following one level of aliasing as CTranslate2 does.
    pub fn variable(&self, name: &str) -> Result<&Ct2Variable, Ct2Error> {
        let target = self.aliases.get(name).map(String::as_str).unwrap_or(name);
        self.variables
            .get(target)
            .ok_or_else(|| Ct2Error::MissingVariable {
                path: self.path.clone(),
                name: name.to_string(),
            })
    }

    /// The raw little-endian bytes of a variable.
    pub fn bytes(&self, variable: &Ct2Variable) -> &[u8] {
        &self.data[variable.bytes.clone()]
    }

    /// The values of a float variable (float32, float16 or bfloat16) widened to f32.
    pub fn to_f32(&self, name: &str) -> Result<Vec<f32>, Ct2Error> {
        let variable = self.variable(name)?;
        let bytes = self.bytes(variable);
        Ok(match variable.dtype {
            Ct2DType::F32 => bytes
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect(),
            Ct2DType::F16 => bytes
                .chunks_exact(2)
                .map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32())
                .collect(),
            Ct2DType::BF16 => bytes
                .chunks_exact(2)
                .map(|b| half::bf16::from_le_bytes([b[0], b[1]]).to_f32())
                .collect(),
            other => {
                return Err(Ct2Error::BadVariable {
                    path: self.path.clone(),
                    name: name.to_string(),
                    reason: format!("expected a float tensor, found {other:?}"),
                })
            }
        })
    }

    /// A scalar integer variable (e.g. `encoder/num_heads`, stored as int16).
    pub fn scalar_int(&self, name: &str) -> Result<i64, Ct2Error> {
        let variable = self.variable(name)?;
        let bytes = self.bytes(variable);
        let bad = |reason: String| Ct2Error::BadVariable {
            path: self.path.clone(),
            name: name.to_string(),
            reason,
        };
        if variable.shape.iter().product::<usize>() != 1 {
            return Err(bad(format!(
                "expected a scalar, shape {:?}",
                variable.shape
            )));
        }
        Ok(match variable.dtype {
            Ct2DType::I8 => i64::from(bytes[0] as i8),
            Ct2DType::I16 => i64::from(i16::from_le_bytes([bytes[0], bytes[1]])),
            Ct2DType::I32 => {
                i64::from(i32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]))
            }
            other => return Err(bad(format!("expected an integer scalar, found {other:?}"))),
        })
    }
}

/// A bounds-checked reader over the file bytes.
struct Cursor<'a> {
    data: &'a [u8],
    pos: usize,
    path: &'a Path,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8], Ct2Error> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&end| end <= self.data.len());
        match end {
            Some(end) => {
                let bytes = &self.data[self.pos..end];
                self.pos = end;
                Ok(bytes)
            }
            None => Err(Ct2Error::Truncated {
                path: self.path.to_path_buf(),
                what: what.to_string(),
                offset: self.pos,
                needed: n,
                len: self.data.len(),
            }),
        }
    }

    fn u8(&mut self, what: &str) -> Result<u8, Ct2Error> {
        Ok(self.take(1, what)?[0])
    }

    fn u16(&mut self, what: &str) -> Result<u16, Ct2Error> {
        let b = self.take(2, what)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }

    fn u32(&mut self, what: &str) -> Result<u32, Ct2Error> {
        let b = self.take(4, what)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn string(&mut self, what: &str) -> Result<String, Ct2Error> {
        let offset = self.pos;
        let len = usize::from(self.u16(what)?);
        let bytes = self.take(len, what)?;
        let bad = |reason| Ct2Error::BadString {
            path: self.path.to_path_buf(),
            offset,
            reason,
        };
        let (last, text) = bytes.split_last().ok_or_else(|| bad("zero length"))?;
        if *last != 0 {
            return Err(bad("missing NUL terminator"));
        }
        String::from_utf8(text.to_vec()).map_err(|_| bad("not UTF-8"))
    }

    fn variable(&mut self) -> Result<(String, Ct2Variable), Ct2Error> {
        let name = self.string("variable name")?;
        let bad = |reason: String| Ct2Error::BadVariable {
            path: self.path.to_path_buf(),
            name: name.clone(),
            reason,
        };
        let rank = self.u8("variable rank")?;
        if rank > MAX_RANK {
            return Err(bad(format!("rank {rank} exceeds {MAX_RANK}")));
        }
        let mut shape = Vec::with_capacity(usize::from(rank));
        for _ in 0..rank {
            shape.push(self.u32("variable dimension")? as usize);
        }
        let id = self.u8("variable dtype")?;
        let dtype = Ct2DType::from_id(id).ok_or_else(|| Ct2Error::UnknownDType {
            path: self.path.to_path_buf(),
            name: name.clone(),
            id,
        })?;
        let n_bytes = self.u32("variable byte count")? as usize;
        let expected = shape
            .iter()
            .try_fold(dtype.size_in_bytes(), |acc, &d| acc.checked_mul(d));
        if expected != Some(n_bytes) {
            return Err(bad(format!(
                "shape {shape:?} of {dtype:?} does not match its byte count {n_bytes}"
            )));
        }
        let start = self.pos;
        self.take(n_bytes, &format!("data of `{name}`"))?;
        let variable = Ct2Variable {
            shape,
            dtype,
            bytes: start..self.pos,
        };
        Ok((name, variable))
    }
}
