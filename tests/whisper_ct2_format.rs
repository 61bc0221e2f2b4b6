//! The CTranslate2 reader on small files written here in the format's own layout, and on
//! broken ones: every defect is a typed error naming the file, never a panic.

use std::path::Path;

use camxuc::acoustic::whisper::{Ct2DType, Ct2Error, Ct2Model};

fn string(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&((s.len() + 1) as u16).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
    out.push(0);
}

/// A version-6 file with one float16 [2, 3] matrix, one int16 scalar and one alias, as
/// `model_spec.py::_serialize` writes it.
fn tiny_model() -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(&6u32.to_le_bytes());
    string(&mut out, "WhisperSpec");
    out.extend_from_slice(&3u32.to_le_bytes());
    out.extend_from_slice(&2u32.to_le_bytes());
    string(&mut out, "encoder/w");
    out.push(2);
    out.extend_from_slice(&2u32.to_le_bytes());
    out.extend_from_slice(&3u32.to_le_bytes());
    out.push(4); // float16
    out.extend_from_slice(&12u32.to_le_bytes());
    for v in [1.0f32, -2.0, 0.5, 3.0, 0.0, -0.25] {
        out.extend_from_slice(&half::f16::from_f32(v).to_le_bytes());
    }
    string(&mut out, "encoder/num_heads");
    out.push(0);
    out.push(2); // int16
    out.extend_from_slice(&2u32.to_le_bytes());
    out.extend_from_slice(&8i16.to_le_bytes());
    out.extend_from_slice(&1u32.to_le_bytes());
    string(&mut out, "decoder/projection/weight");
    string(&mut out, "encoder/w");
    out
}

fn parse(bytes: Vec<u8>) -> Result<Ct2Model, Ct2Error> {
    Ct2Model::parse(bytes, Path::new("tiny/model.bin"))
}

#[test]
fn reads_header_variables_and_aliases() {
    let model = parse(tiny_model()).expect("valid file");
    assert_eq!(
        (
            model.binary_version,
            model.spec_name.as_str(),
            model.spec_revision
        ),
        (6, "WhisperSpec", 3)
    );
    let w = model.variable("encoder/w").expect("w");
    assert_eq!(
        (w.shape.as_slice(), w.dtype),
        (&[2usize, 3][..], Ct2DType::F16)
    );
    assert_eq!(
        model.to_f32("encoder/w").expect("f32"),
        vec![1.0, -2.0, 0.5, 3.0, 0.0, -0.25]
    );
    assert_eq!(
        model.to_f32("decoder/projection/weight").expect("alias"),
        model.to_f32("encoder/w").expect("w")
    );
    assert_eq!(model.scalar_int("encoder/num_heads").expect("heads"), 8);
    assert!(matches!(
        model.variable("nope"),
        Err(Ct2Error::MissingVariable { .. })
    ));
}

#[test]
fn every_truncation_is_an_error_naming_the_file() {
    let full = tiny_model();
    for len in 0..full.len() {
        let err = parse(full[..len].to_vec()).expect_err("truncated file must fail");
        assert!(matches!(err, Ct2Error::Truncated { .. }), "at {len}: {err}");
        assert!(err.to_string().contains("tiny/model.bin"), "{err}");
    }
}

#[test]
fn wrong_version_unknown_dtype_bad_sizes_and_trailing_bytes_are_refused() {
    let mut bad_version = tiny_model();
    bad_version[0] = 5;
    let err = parse(bad_version).expect_err("version 5");
    assert!(
        matches!(err, Ct2Error::UnsupportedVersion { found: 5, .. }),
        "{err}"
    );

    // The dtype byte of `encoder/w` follows: header (4 + 2+12 + 4 + 4), name (2+10), rank, 2 dims.
    let dtype_at = 4 + 14 + 4 + 4 + 12 + 1 + 8;
    let mut bad_dtype = tiny_model();
    assert_eq!(bad_dtype[dtype_at], 4);
    bad_dtype[dtype_at] = 9;
    let err = parse(bad_dtype).expect_err("dtype 9");
    assert!(matches!(err, Ct2Error::UnknownDType { id: 9, .. }), "{err}");

    let mut bad_size = tiny_model();
    bad_size[dtype_at + 1] = 200; // byte count no longer matches 2×3 float16
    let err = parse(bad_size).expect_err("size mismatch");
    assert!(matches!(err, Ct2Error::BadVariable { .. }), "{err}");

    let mut huge_dim = tiny_model();
    huge_dim[dtype_at - 4..dtype_at].copy_from_slice(&u32::MAX.to_le_bytes());
    assert!(parse(huge_dim).is_err());

    let mut trailing = tiny_model();
    trailing.extend_from_slice(&[0; 7]);
    let err = parse(trailing).expect_err("trailing bytes");
    assert!(
        matches!(err, Ct2Error::TrailingBytes { trailing: 7, .. }),
        "{err}"
    );
}

#[test]
fn a_missing_file_is_an_io_error_naming_it() {
    let err = Ct2Model::read(Path::new("/nonexistent/whisper/model.bin")).expect_err("missing");
    assert!(matches!(err, Ct2Error::Io { .. }));
    assert!(err.to_string().contains("/nonexistent/whisper/model.bin"));
}
