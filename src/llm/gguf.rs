//! Opening a GGUF file and reading its metadata with typed accessors.
//!
//! candle's `gguf_file::Content::read` already bounds every length it reads in the header, but
//! it only checks a tensor's data when that tensor is loaded; [`GgufFile::open`] checks all
//! tensor extents against the file size up front, so a half-copied file fails at open with the
//! file's name instead of deep inside model loading.

use std::fs::File;
use std::io::{BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use candle_core::quantized::gguf_file::{Content, Value};

use super::error::{LlmError, SUPPORTED_ARCHITECTURES};

const GGUF_MAGIC: &[u8; 4] = b"GGUF";

/// The model families camxuc can run, from `general.architecture`: llama, qwen2 and qwen3 on
/// camxuc's decoder in src/llm/transformer.rs, Gemma 3 on src/llm/gemma3.rs (both checked
/// against a textbook f32 decoder and candle-transformers' quantized models in
/// tests/llm_oracle.rs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Architecture {
    /// Llama family (SmolLM2, Llama 3.x).
    Llama,
    Qwen2,
    Qwen3,
    Gemma3,
}

impl Architecture {
    /// The `general.architecture` string, which also prefixes the model's own keys.
    pub fn as_str(self) -> &'static str {
        match self {
            Architecture::Llama => "llama",
            Architecture::Qwen2 => "qwen2",
            Architecture::Qwen3 => "qwen3",
            Architecture::Gemma3 => "gemma3",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        match s {
            "llama" => Some(Architecture::Llama),
            "qwen2" => Some(Architecture::Qwen2),
            "qwen3" => Some(Architecture::Qwen3),
            "gemma3" => Some(Architecture::Gemma3),
            _ => None,
        }
    }
}

/// A GGUF file whose header has been read and checked: known architecture, tensors inside
/// the file. Tensor data stays on disk until a model loader asks for it.
#[derive(Debug)]
pub struct GgufFile {
    path: PathBuf,
    content: Content,
    file_size: u64,
    architecture: Architecture,
}

impl GgufFile {
    /// A required unsigned integer of the metadata, as a size (the one reader: `metadata_u64`).
    pub fn meta_usize(&self, key: &str) -> Result<usize, LlmError> {
        metadata_u64(&self.content, &self.path, key).map(|v| v as usize)
    }

    /// An optional unsigned integer of the metadata, as a size.
    pub fn meta_opt_usize(&self, key: &str) -> Result<Option<usize>, LlmError> {
        metadata_opt_u64(&self.content, &self.path, key).map(|v| v.map(|v| v as usize))
    }

    /// An optional number of the metadata.
    pub fn meta_opt_f32(&self, key: &str) -> Result<Option<f32>, LlmError> {
        metadata_opt_f32(&self.content, &self.path, key)
    }

    /// Reads and checks the header of `path`.
    pub fn open(path: &Path) -> Result<Self, LlmError> {
        let io_err = |source| LlmError::Io {
            path: path.to_path_buf(),
            source,
        };
        let mut file = File::open(path).map_err(io_err)?;
        let file_size = file.metadata().map_err(io_err)?.len();
        let mut magic = [0u8; 4];
        // Checked before candle so that "not a GGUF at all" and "a broken GGUF" read differently.
        if file.read_exact(&mut magic).is_err() || &magic != GGUF_MAGIC {
            return Err(LlmError::NotGguf {
                path: path.to_path_buf(),
            });
        }
        file.seek(SeekFrom::Start(0)).map_err(io_err)?;
        let content =
            Content::read(&mut BufReader::new(file)).map_err(|e| LlmError::Malformed {
                path: path.to_path_buf(),
                reason: e.to_string(),
            })?;
        check_tensor_extents(path, &content, file_size)?;
        let arch = metadata_str(&content, path, "general.architecture")?;
        let architecture =
            Architecture::parse(arch).ok_or_else(|| LlmError::UnsupportedArchitecture {
                path: path.to_path_buf(),
                found: arch.to_string(),
            })?;
        debug_assert!(SUPPORTED_ARCHITECTURES.contains(&architecture.as_str()));
        Ok(Self {
            path: path.to_path_buf(),
            content,
            file_size,
            architecture,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// candle's parsed header, for the model loaders.
    pub fn content(&self) -> &Content {
        &self.content
    }

    pub fn file_size(&self) -> u64 {
        self.file_size
    }

    pub fn architecture(&self) -> Architecture {
        self.architecture
    }

    /// `general.name`, when the converter wrote one.
    pub fn name(&self) -> Option<&str> {
        self.opt_str("general.name")
    }

    /// `{arch}.context_length`: the longest context the model was trained for.
    pub fn context_length(&self) -> Result<u64, LlmError> {
        let key = format!("{}.context_length", self.architecture.as_str());
        metadata_u64(&self.content, &self.path, &key)
    }

    /// The Jinja chat template (`tokenizer.chat_template`); absent in base models.
    pub fn chat_template(&self) -> Option<&str> {
        self.opt_str("tokenizer.chat_template")
    }

    /// A string value, or None when the key is absent or not a string.
    pub fn opt_str(&self, key: &str) -> Option<&str> {
        match self.content.metadata.get(key) {
            Some(Value::String(s)) => Some(s.as_str()),
            _ => None,
        }
    }
}

/// Every tensor's data must lie inside the file; candle would otherwise find out only when
/// that tensor is loaded.
fn check_tensor_extents(path: &Path, content: &Content, file_size: u64) -> Result<(), LlmError> {
    for (name, info) in &content.tensor_infos {
        // Not `shape.elem_count()`: its product overflows (a panic with overflow checks) on
        // a hostile shape such as [u64::MAX, 10] (found by fuzz/gguf).
        let elems = info
            .shape
            .dims()
            .iter()
            .try_fold(1u64, |acc, &d| acc.checked_mul(d as u64))
            .unwrap_or(u64::MAX);
        let block = info.ggml_dtype.block_size() as u64;
        let bytes = (elems / block.max(1)).saturating_mul(info.ggml_dtype.type_size() as u64);
        let end = content
            .tensor_data_offset
            .saturating_add(info.offset)
            .saturating_add(bytes);
        if end > file_size {
            return Err(LlmError::Truncated {
                path: path.to_path_buf(),
                tensor: name.clone(),
                needed: end,
                file_size,
            });
        }
    }
    Ok(())
}

fn missing(path: &Path, key: &str) -> LlmError {
    LlmError::MissingMetadata {
        path: path.to_path_buf(),
        key: key.to_string(),
    }
}

fn bad(path: &Path, key: &str, reason: impl Into<String>) -> LlmError {
    LlmError::BadMetadata {
        path: path.to_path_buf(),
        key: key.to_string(),
        reason: reason.into(),
    }
}

/// A required string value.
pub fn metadata_str<'a>(content: &'a Content, path: &Path, key: &str) -> Result<&'a str, LlmError> {
    match content.metadata.get(key) {
        None => Err(missing(path, key)),
        Some(Value::String(s)) => Ok(s),
        Some(v) => Err(bad(
            path,
            key,
            format!("expected a string, found {:?}", v.value_type()),
        )),
    }
}

/// A required unsigned integer of any width (converters differ in the width they write).
pub fn metadata_u64(content: &Content, path: &Path, key: &str) -> Result<u64, LlmError> {
    let value = content
        .metadata
        .get(key)
        .ok_or_else(|| missing(path, key))?;
    value
        .to_u64()
        .or_else(|_| value.to_u32().map(u64::from))
        .or_else(|_| match value {
            Value::I32(v) if *v >= 0 => Ok(*v as u64),
            Value::I64(v) if *v >= 0 => Ok(*v as u64),
            Value::U16(v) => Ok(u64::from(*v)),
            Value::U8(v) => Ok(u64::from(*v)),
            _ => Err(()),
        })
        .map_err(|_| {
            bad(
                path,
                key,
                format!("expected an unsigned integer, found {value:?}"),
            )
        })
}

/// An optional unsigned integer (`None` when the key is absent; an error when it holds
/// something else).
pub fn metadata_opt_u64(
    content: &Content,
    path: &Path,
    key: &str,
) -> Result<Option<u64>, LlmError> {
    if !content.metadata.contains_key(key) {
        return Ok(None);
    }
    metadata_u64(content, path, key).map(Some)
}

/// A required number (the file may store it as f32 or f64).
pub fn metadata_f32(content: &Content, path: &Path, key: &str) -> Result<f32, LlmError> {
    match content.metadata.get(key) {
        None => Err(missing(path, key)),
        Some(Value::F32(x)) => Ok(*x),
        Some(Value::F64(x)) => Ok(*x as f32),
        Some(v) => Err(bad(path, key, format!("expected a number, found {v:?}"))),
    }
}

/// An optional number.
pub fn metadata_opt_f32(
    content: &Content,
    path: &Path,
    key: &str,
) -> Result<Option<f32>, LlmError> {
    if !content.metadata.contains_key(key) {
        return Ok(None);
    }
    metadata_f32(content, path, key).map(Some)
}

/// An optional token id.
pub fn metadata_opt_u32(
    content: &Content,
    path: &Path,
    key: &str,
) -> Result<Option<u32>, LlmError> {
    if !content.metadata.contains_key(key) {
        return Ok(None);
    }
    let v = metadata_u64(content, path, key)?;
    u32::try_from(v)
        .map(Some)
        .map_err(|_| bad(path, key, format!("{v} does not fit a token id")))
}

/// An optional boolean flag.
pub fn metadata_opt_bool(
    content: &Content,
    path: &Path,
    key: &str,
) -> Result<Option<bool>, LlmError> {
    match content.metadata.get(key) {
        None => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(v) => Err(bad(
            path,
            key,
            format!("expected a bool, found {:?}", v.value_type()),
        )),
    }
}

fn metadata_array<'a>(
    content: &'a Content,
    path: &Path,
    key: &str,
) -> Result<&'a [Value], LlmError> {
    match content.metadata.get(key) {
        None => Err(missing(path, key)),
        Some(Value::Array(items)) => Ok(items),
        Some(v) => Err(bad(
            path,
            key,
            format!("expected an array, found {:?}", v.value_type()),
        )),
    }
}

/// A required array of strings (vocabulary, merges).
pub fn metadata_str_array<'a>(
    content: &'a Content,
    path: &Path,
    key: &str,
) -> Result<Vec<&'a str>, LlmError> {
    metadata_array(content, path, key)?
        .iter()
        .enumerate()
        .map(|(i, v)| match v {
            Value::String(s) => Ok(s.as_str()),
            other => Err(bad(
                path,
                key,
                format!("item {i} is {:?}, not a string", other.value_type()),
            )),
        })
        .collect()
}

/// A required array of floats (SentencePiece scores).
pub fn metadata_f32_array(content: &Content, path: &Path, key: &str) -> Result<Vec<f32>, LlmError> {
    metadata_array(content, path, key)?
        .iter()
        .enumerate()
        .map(|(i, v)| {
            v.to_f32().map_err(|_| {
                bad(
                    path,
                    key,
                    format!("item {i} is {:?}, not f32", v.value_type()),
                )
            })
        })
        .collect()
}

/// A required array of small integers (token types).
pub fn metadata_i32_array(content: &Content, path: &Path, key: &str) -> Result<Vec<i32>, LlmError> {
    metadata_array(content, path, key)?
        .iter()
        .enumerate()
        .map(|(i, v)| match v {
            Value::I32(x) => Ok(*x),
            Value::U32(x) => {
                i32::try_from(*x).map_err(|_| bad(path, key, format!("item {i} = {x}")))
            }
            Value::I8(x) => Ok(i32::from(*x)),
            Value::U8(x) => Ok(i32::from(*x)),
            other => Err(bad(
                path,
                key,
                format!("item {i} is {:?}, not an integer", other.value_type()),
            )),
        })
        .collect()
}
