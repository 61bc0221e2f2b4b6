//! Plain-language statements, in Vietnamese and English, for rules the refinement loop writes.
//! A person reviews every proposal: the statement must say what the rule listens for, not
//! only its formula.

use crate::rules::Statements;

/// (feature, Vietnamese, English) names of what a feature measures, as an annotator says it.
const NAMES: &[(&str, &str, &str)] = &[
    ("f0_mean_hz", "cao độ trung bình", "average pitch"),
    ("f0_median_hz", "cao độ", "pitch"),
    (
        "f0_std_hz",
        "độ biến thiên cao độ (Hz)",
        "pitch variability (Hz)",
    ),
    ("f0_range_hz", "quãng cao độ (Hz)", "pitch range (Hz)"),
    ("f0_median_st27", "độ cao giọng", "pitch height"),
    ("f0_std_st", "độ biến thiên cao độ", "pitch variability"),
    ("f0_range_st", "quãng cao độ", "pitch range"),
    (
        "f0_slope_st_per_s",
        "xu hướng lên/xuống của cao độ",
        "overall pitch slope",
    ),
    (
        "f0_rise_count",
        "số lần cao độ vút lên",
        "number of pitch rises",
    ),
    (
        "f0_rise_rate_per_s",
        "tần suất cao độ vút lên",
        "rate of pitch rises",
    ),
    ("f0_tremor_ratio", "độ run của giọng", "voice tremor"),
    ("f0_tremor_st", "biên độ run của giọng", "tremor depth"),
    (
        "voiced_ratio",
        "tỉ lệ phát âm hữu thanh",
        "share of voiced sound",
    ),
    (
        "voiced_segment_mean_s",
        "độ dài đoạn hữu thanh",
        "length of voiced stretches",
    ),
    (
        "jitter_local_pct",
        "độ rung bất ổn của cao độ (jitter)",
        "pitch irregularity (jitter)",
    ),
    (
        "shimmer_local_db",
        "độ bất ổn của biên độ (shimmer)",
        "loudness irregularity (shimmer)",
    ),
    (
        "hnr_db",
        "độ trong của giọng (HNR)",
        "voice clarity (harmonics-to-noise)",
    ),
    (
        "f0_aperiodicity",
        "độ khàn, hơi của giọng",
        "breathiness/harshness",
    ),
    (
        "loudness_range_db",
        "biên độ thay đổi âm lượng",
        "loudness range",
    ),
    (
        "loudness_std_db",
        "độ dao động âm lượng",
        "loudness variability",
    ),
    (
        "loudness_rise_db_per_s",
        "tốc độ tăng âm lượng",
        "speed of loudness rises",
    ),
    (
        "loudness_fall_db_per_s",
        "tốc độ giảm âm lượng",
        "speed of loudness falls",
    ),
    ("speech_rate_syl_per_s", "tốc độ nói", "speaking rate"),
    (
        "articulation_rate_syl_per_s",
        "tốc độ phát âm",
        "articulation rate",
    ),
    ("pause_ratio", "tỉ lệ ngừng nghỉ", "share of pauses"),
    ("speech_span_s", "độ dài lời nói", "length of speech"),
    (
        "spectral_centroid_hz",
        "độ sáng của âm sắc",
        "brightness of the voice",
    ),
    ("spectral_flux", "độ biến đổi phổ", "spectral change"),
    (
        "alpha_ratio_db",
        "năng lượng tần số cao (gắng sức)",
        "high-frequency energy (effort)",
    ),
    (
        "hammarberg_db",
        "chỉ số Hammarberg (cao = ít gắng sức)",
        "Hammarberg index (high = little effort)",
    ),
    (
        "spectral_slope_0_500_db_per_khz",
        "độ dốc phổ 0–500 Hz",
        "spectral slope 0–500 Hz",
    ),
    (
        "spectral_slope_500_1500_db_per_khz",
        "độ dốc phổ 500–1500 Hz",
        "spectral slope 500–1500 Hz",
    ),
];

/// Vietnamese and English names of a label (the label itself when it is not one of ours).
pub fn label_names(label: &str) -> (String, String) {
    let vi = match label {
        "calm" => "bình tĩnh",
        "angry" => "tức giận",
        "panic" => "hoảng loạn",
        other => other,
    };
    (vi.to_string(), label.to_string())
}

/// What a feature name (with or without `_z`) measures, in Vietnamese and English.
pub fn feature_names(name: &str) -> (String, String) {
    let base = name.strip_suffix("_z").unwrap_or(name);
    NAMES
        .iter()
        .find(|(n, _, _)| *n == base)
        .map(|(_, vi, en)| (vi.to_string(), en.to_string()))
        .unwrap_or_else(|| (base.to_string(), base.to_string()))
}

/// The statement of a mined one-feature rule `feature_z > θ` (`above`) or `< θ` → `label`.
pub fn stump(feature: &str, above: bool, threshold: f64, label: &str) -> Statements {
    let (fvi, fen) = feature_names(feature);
    let (lvi, len) = label_names(label);
    let z = feature.ends_with("_z");
    let (dir_vi, dir_en) = if above {
        ("cao hơn", "higher")
    } else {
        ("thấp hơn", "lower")
    };
    let how_en = if z {
        format!("{dir_en} than usual ({threshold:+.1} SD from the baseline)")
    } else {
        format!("{dir_en} than {threshold}")
    };
    let how_vi = if z {
        format!("{dir_vi} mức thường ({threshold:+.1} độ lệch chuẩn so với mức nền)")
    } else {
        format!("{dir_vi} {threshold}")
    };
    Statements::new(
        format!("Khi {fvi} {how_vi}, đoạn ghi âm thường là {lvi} (luật rút ra từ phân tích lỗi, cần người duyệt)."),
        format!("When {fen} is {how_en}, the clip was more often {len} (mined from error analysis; needs review)."),
    )
}

/// The statement of a rule whose label refinement reversed (`from` → `to`).
pub fn relabelled(old: &Statements, from: &str, to: &str) -> Statements {
    let (fvi, fen) = label_names(from);
    let (tvi, ten) = label_names(to);
    Statements::new(
        format!(
            "Đảo ngược sau phân tích lỗi: khi điều sau đúng, đoạn ghi âm thường là {tvi} chứ không phải {fvi}. (Trước đây: {})",
            old.vi
        ),
        format!(
            "Reversed by error analysis: when this holds the clip was more often {ten} than {fen}. (Was: {})",
            old.en
        ),
    )
}
