//! The reasoner's prompt, split so that everything identical for every clip comes first.
//!
//! ```text
//! [prefix: guideline, label meanings, the rules in plain language, "Clip:"]   cached once
//! [evidence: strongest deviations, fired rule ids, acoustic probabilities]   per clip
//! [question: the labels in one order, end of turn, answer cue "Label:"]     per clip × order
//! [answer: " calm" | " angry" | " panic"]                                     scored
//! ```
//!
//! The evidence is kept short (a handful of deviations) because every token of it is paid for
//! on each routed clip.
//!
//! The compact layout ([`PromptBuilder::compact`]) moves the question into the cached prefix
//! and writes the evidence tersely, so a decision pays only for the clip's numbers and the
//! answer cue (one label order; the label bias is left to the calibration):
//!
//! ```text
//! [prefix: guideline, labels, rules, the question, "Clip:"]                  cached once
//! [evidence: "pitch variability +1.8; …", fired rule ids, probabilities]     per clip
//! [tail: end of turn, answer cue "Label:"]                                   per clip
//! ```

use crate::types::{Case, LabelSet};

use super::chat::ChatTemplate;

/// Language of the prompt (the rule set chooses it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PromptLanguage {
    #[default]
    English,
    Vietnamese,
}

impl PromptLanguage {
    /// ISO 639-1 code (`en`, `vi`), as `Decision::rationale_language` records it.
    pub fn code(self) -> &'static str {
        match self {
            PromptLanguage::English => "en",
            PromptLanguage::Vietnamese => "vi",
        }
    }
}

/// A rule as the prompt states it.
#[derive(Debug, Clone, PartialEq)]
pub struct RuleText {
    pub id: String,
    /// The label the rule supports.
    pub label: String,
    pub statement: String,
}

impl RuleText {
    pub fn new(id: &str, label: &str, statement: &str) -> Self {
        Self {
            id: id.into(),
            label: label.into(),
            statement: statement.into(),
        }
    }

    /// The enabled rules of a rule set as the prompt states them, in English (the small
    /// catalogue models read English far better): what the reasoner is built with.
    pub fn enabled(rules: &crate::rules::RuleSet) -> Vec<Self> {
        rules
            .rules()
            .iter()
            .filter(|r| r.enabled())
            .map(|r| Self::new(r.id(), r.label(), r.statement(crate::rules::Language::En)))
            .collect()
    }
}

/// Splits the chat template at the clip's evidence; never appears in real text.
const MARK: &str = "\u{1}EVIDENCE\u{1}";

/// Builds the reasoner's prompt pieces for one label set, rule list and language.
#[derive(Debug, Clone)]
pub struct PromptBuilder {
    language: PromptLanguage,
    labels: LabelSet,
    prefix: String,
    /// Closes the user turn and opens the answer (template-specific).
    tail: String,
    /// How many deviations the evidence lists (the largest |z| first).
    pub max_deviations: usize,
    /// Spell out each fired rule's statement, not only its id and label (more suffix tokens;
    /// a small model may not look the id up in the prefix).
    pub fired_statements: bool,
    /// The compact layout: question in the prefix, terse evidence.
    compact: bool,
}

impl PromptBuilder {
    pub fn new(
        template: ChatTemplate,
        language: PromptLanguage,
        labels: &LabelSet,
        rules: &[RuleText],
    ) -> Self {
        let system = system_text(language, labels, rules);
        let (intro, cue) = match language {
            PromptLanguage::English => ("Clip:\n", "Label:"),
            PromptLanguage::Vietnamese => ("Đoạn ghi âm:\n", "Nhãn:"),
        };
        let full = template.render(&system, &format!("{intro}{MARK}"), cue);
        let (prefix, tail) = full.split_once(MARK).unwrap_or((full.as_str(), ""));
        Self {
            language,
            labels: labels.clone(),
            prefix: prefix.to_string(),
            tail: tail.to_string(),
            max_deviations: 4,
            fired_statements: false,
            compact: false,
        }
    }

    /// The compact layout (see the module docs): the question, with the labels in label-set
    /// order, is part of the cached prefix; the evidence lists the two strongest deviations
    /// as signed numbers. A warm decision then feeds about 40 tokens.
    pub fn compact(
        template: ChatTemplate,
        language: PromptLanguage,
        labels: &LabelSet,
        rules: &[RuleText],
    ) -> Self {
        let system = system_text(language, labels, rules);
        let order: Vec<usize> = (0..labels.len()).collect();
        let mut b = Self {
            language,
            labels: labels.clone(),
            prefix: String::new(),
            tail: String::new(),
            max_deviations: 2,
            fired_statements: false,
            compact: true,
        };
        let (intro, cue) = match language {
            PromptLanguage::English => ("Clip:\n", "Label:"),
            PromptLanguage::Vietnamese => ("Đoạn ghi âm:\n", "Nhãn:"),
        };
        let user = format!("{}\n{intro}{MARK}", b.question_text(&order));
        let full = template.render(&system, &user, cue);
        let (prefix, tail) = full.split_once(MARK).unwrap_or((full.as_str(), ""));
        b.prefix = prefix.to_string();
        b.tail = tail.to_string();
        b
    }

    /// Whether this is the compact layout (one label order: the question is in the prefix).
    pub fn is_compact(&self) -> bool {
        self.compact
    }

    pub fn language(&self) -> PromptLanguage {
        self.language
    }

    pub fn labels(&self) -> &LabelSet {
        &self.labels
    }

    /// Guideline and rules: the same text for every clip, so its KV cache is reused.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The clip's evidence in words and numbers.
    pub fn evidence(&self, case: &Case<'_>) -> String {
        let vi = self.language == PromptLanguage::Vietnamese;
        let zs: Vec<(&str, f64)> = case
            .evidence
            .deviations()
            .into_iter()
            .filter(|(name, _)| describe_feature(name, vi).is_some())
            .collect();
        if self.compact {
            return self.compact_evidence(case, &zs);
        }
        let mut s = String::new();
        for (name, z) in zs.iter().take(self.max_deviations) {
            let what = describe_feature(name, vi).unwrap_or(name);
            s.push_str(&format!("- {what} {} ({z:+.1} SD)\n", degree(*z, vi)));
        }
        if zs.is_empty() {
            s.push_str(if vi {
                "- không có số đo\n"
            } else {
                "- no measurements\n"
            });
        }
        let fired: Vec<String> = case
            .fired
            .iter()
            .map(|r| {
                let statement = match (vi, &r.statement_vi) {
                    (true, Some(s)) => s.as_str(),
                    _ => r.statement_en.as_str(),
                };
                if self.fired_statements && !statement.trim().is_empty() {
                    format!("{} ({}): {}", r.id, r.label, statement.trim())
                } else {
                    format!("{} ({})", r.id, r.label)
                }
            })
            .collect();
        let none = if vi { "không" } else { "none" };
        let fired = if fired.is_empty() {
            none.to_string()
        } else {
            fired.join(", ")
        };
        s.push_str(&format!(
            "{}: {fired}\n",
            if vi { "Luật khớp" } else { "Rules fired" }
        ));
        let probs: Vec<String> = case
            .acoustic
            .labels
            .iter()
            .zip(&case.acoustic.values)
            .map(|(l, p)| format!("{l} {p:.2}"))
            .collect();
        if !probs.is_empty() {
            let head = if vi {
                "Mô hình âm học"
            } else {
                "Acoustic model"
            };
            s.push_str(&format!("{head}: {}\n", probs.join(", ")));
        }
        push_words(&mut s, case, vi);
        s
    }

    /// The compact evidence: `pitch variability +1.8; speech rate -2.4` (SD units, as the
    /// guideline says), the fired rule ids and the acoustic model's guess, one line each.
    fn compact_evidence(&self, case: &Case<'_>, zs: &[(&str, f64)]) -> String {
        let vi = self.language == PromptLanguage::Vietnamese;
        let measures: Vec<String> = zs
            .iter()
            .take(self.max_deviations)
            .map(|(name, z)| {
                let what = describe_feature(name, vi).unwrap_or(name);
                // Without the parenthesised measure name (`vocal effort (alpha ratio)`): the
                // words are what the model reads, the name only costs tokens.
                let what = what.split(" (").next().unwrap_or(what);
                format!("{what} {z:+.1}")
            })
            .collect();
        let mut s = if measures.is_empty() {
            (if vi {
                "không có số đo"
            } else {
                "no measurements"
            })
            .to_string()
        } else {
            measures.join("; ")
        };
        s.push('\n');
        let fired: Vec<&str> = case.fired.iter().map(|r| r.id.as_str()).collect();
        let none = if vi { "không" } else { "none" };
        s.push_str(&format!(
            "{}: {}\n",
            if vi { "Luật" } else { "Rules" },
            if fired.is_empty() {
                none.to_string()
            } else {
                fired.join(", ")
            }
        ));
        // Only the acoustic model's guess: each probability costs about four tokens, and the
        // full distribution is what the router already judged to be unsure.
        if !case.acoustic.labels.is_empty() {
            let (best, p) = case.acoustic.argmax();
            s.push_str(&format!(
                "{}: {} {p:.2}\n",
                if vi { "Âm học" } else { "Acoustic" },
                case.acoustic.labels[best]
            ));
        }
        push_words(&mut s, case, vi);
        s
    }

    /// Evidence that says nothing, for contextual calibration (the model's label prior).
    pub fn null_evidence(&self) -> String {
        match (self.language, self.compact) {
            (PromptLanguage::English, false) => "- no measurements\nRules fired: none\n".into(),
            (PromptLanguage::Vietnamese, false) => "- không có số đo\nLuật khớp: không\n".into(),
            (PromptLanguage::English, true) => "no measurements\nRules: none\n".into(),
            (PromptLanguage::Vietnamese, true) => "không có số đo\nLuật: không\n".into(),
        }
    }

    /// Content-free evidence texts for an ensemble calibration, the plain one first:
    /// "no measurements", every listed measure at its usual value with flat acoustic
    /// probabilities, and "N/A".
    pub fn null_evidences(&self) -> Vec<String> {
        let vi = self.language == PromptLanguage::Vietnamese;
        let n = self.labels.len().max(1);
        let flat: Vec<String> = self
            .labels
            .names()
            .iter()
            .map(|l| format!("{l} {:.2}", 1.0 / n as f32))
            .collect();
        let neutral = match (vi, self.compact) {
            // The compact evidence names only the acoustic guess, and a content-free one has none.
            (true, true) => "cao độ +0.0; tốc độ nói +0.0\nLuật: không\n".to_string(),
            (false, true) => "pitch +0.0; speech rate +0.0\nRules: none\n".to_string(),
            (true, false) => format!(
                "- cao độ như thường (+0.0 SD)\n- tốc độ nói như thường (+0.0 SD)\nLuật khớp: không\nMô hình âm học: {}\n",
                flat.join(", ")
            ),
            (false, false) => format!(
                "- pitch about usual (+0.0 SD)\n- speech rate about usual (+0.0 SD)\nRules fired: none\nAcoustic model: {}\n",
                flat.join(", ")
            ),
        };
        vec![self.null_evidence(), neutral, "N/A\n".to_string()]
    }

    /// The question with the labels in `order` (indices into the label set), closing the turn
    /// and ending at the answer cue. In the compact layout the question is already in the
    /// prefix (label-set order), so only the turn end and cue are left, whatever `order`.
    pub fn question(&self, order: &[usize]) -> String {
        if self.compact {
            return self.tail.clone();
        }
        format!("{}{}", self.question_text(order), self.tail)
    }

    /// `Which label fits best: calm, angry or panic?` in the prompt's language.
    fn question_text(&self, order: &[usize]) -> String {
        let names: Vec<&str> = order.iter().map(|&i| self.labels.name(i)).collect();
        let list = match names.split_last() {
            Some((last, rest)) if !rest.is_empty() => {
                let or = if self.language == PromptLanguage::Vietnamese {
                    "hay"
                } else {
                    "or"
                };
                format!("{} {or} {last}", rest.join(", "))
            }
            _ => names.join(""),
        };
        match self.language {
            PromptLanguage::English => format!("Which label fits best: {list}?"),
            PromptLanguage::Vietnamese => format!("Nhãn nào phù hợp nhất: {list}?"),
        }
    }

    /// The answer text whose likelihood scores label `index` (follows the cue).
    pub fn answer(&self, index: usize) -> String {
        format!(" {}", self.labels.name(index))
    }

    /// Written after the chosen answer to start the rationale.
    pub fn rationale_cue(&self) -> &'static str {
        match self.language {
            PromptLanguage::English => ".\nReason: the voice",
            PromptLanguage::Vietnamese => ".\nLý do: giọng nói",
        }
    }
}

/// What was said, when the clip was transcribed: the same line in both layouts.
fn push_words(s: &mut String, case: &Case<'_>, vi: bool) {
    if let Some(t) = case.transcript.filter(|t| !t.trim().is_empty()) {
        let head = if vi { "Lời nói" } else { "Words" };
        s.push_str(&format!("{head}: \"{}\"\n", t.trim()));
    }
}

fn system_text(lang: PromptLanguage, labels: &LabelSet, rules: &[RuleText]) -> String {
    let vi = lang == PromptLanguage::Vietnamese;
    let mut s = String::new();
    if vi {
        s.push_str("Bạn gán nhãn cảm xúc cho đoạn lời nói ngắn tiếng Việt, như người chú thích: nghe giọng, không nghe nội dung trừ khi có lời nói.\nNhãn:\n");
    } else {
        s.push_str("You label the emotion of short Vietnamese speech clips, as the annotators did: judge the voice, not the topic.\nLabels:\n");
    }
    for name in labels.names() {
        s.push_str(&format!("- {name}: {}\n", label_meaning(name, vi)));
    }
    if !rules.is_empty() {
        s.push_str(if vi {
            "Luật của người chú thích:\n"
        } else {
            "Annotator rules:\n"
        });
        for r in rules {
            s.push_str(&format!("{} ({}): {}\n", r.id, r.label, r.statement.trim()));
        }
    }
    s.push_str(if vi {
        "Số đo được so với giọng bình thường; SD là số độ lệch chuẩn. Trả lời bằng một nhãn."
    } else {
        "Measurements are compared with the usual voice, in standard deviations (SD). Answer with one label."
    });
    s
}

fn label_meaning(name: &str, vi: bool) -> &'static str {
    match (name, vi) {
        ("calm", false) => "relaxed, steady voice; usual pitch, loudness and tempo",
        ("angry", false) => {
            "forceful, tense, harsh voice; loud bursts, strong vocal effort, emphatic"
        }
        ("panic", false) => {
            "fear and alarm; high, shaky, rising pitch, fast breathless speech, trembling"
        }
        ("calm", true) => "giọng thư thái, đều; cao độ, độ lớn và tốc độ bình thường",
        ("angry", true) => "giọng gắt, căng, mạnh; to bất chợt, nhấn mạnh",
        ("panic", true) => "sợ hãi, hoảng hốt; giọng cao, run, nói nhanh, hụt hơi",
        (_, false) => "as the annotators used it",
        (_, true) => "theo cách người chú thích dùng",
    }
}

/// Plain words for the evidence features the prompt reports (others are left out: their
/// names alone would mean nothing to the model).
fn describe_feature(name: &str, vi: bool) -> Option<&'static str> {
    let (en, vn) = match name {
        "f0_median_st27" | "f0_mean_hz" => ("pitch", "cao độ"),
        "f0_std_st" => ("pitch variability", "độ biến thiên cao độ"),
        "f0_range_st" => ("pitch range", "quãng cao độ"),
        "f0_slope_st_per_s" => ("pitch rise over the clip", "cao độ tăng dần"),
        "f0_rise_rate_per_s" => ("pitch jumps", "số lần vọt cao độ"),
        "f0_tremor_ratio" => ("voice tremor", "độ run giọng"),
        "jitter_local_pct" => ("pitch roughness (jitter)", "độ rung cao độ (jitter)"),
        "shimmer_local_db" => ("loudness roughness (shimmer)", "độ rung âm lượng (shimmer)"),
        "hnr_db" => (
            "voice clarity (harmonics-to-noise)",
            "độ trong của giọng (HNR)",
        ),
        "loudness_range_db" => ("loudness range", "biên độ âm lượng"),
        "loudness_std_db" => ("loudness variability", "độ biến thiên âm lượng"),
        "loudness_rise_db_per_s" => ("loudness attacks", "độ dồn âm lượng"),
        "speech_rate_syl_per_s" => ("speech rate", "tốc độ nói"),
        "articulation_rate_syl_per_s" => ("articulation rate", "tốc độ phát âm"),
        "pause_ratio" => ("pauses", "khoảng ngừng"),
        "spectral_centroid_hz" => ("voice brightness", "độ sáng của giọng"),
        "alpha_ratio_db" => ("vocal effort (alpha ratio)", "độ gắng sức (alpha ratio)"),
        "hammarberg_db" => ("vocal softness (Hammarberg)", "độ mềm giọng (Hammarberg)"),
        "spectral_slope_500_1500_db_per_khz" => ("spectral tilt", "độ dốc phổ"),
        _ => return None,
    };
    Some(if vi { vn } else { en })
}

fn degree(z: f64, vi: bool) -> &'static str {
    let a = z.abs();
    match (vi, z >= 0.0) {
        (false, true) if a >= 2.0 => "much higher than usual",
        (false, true) if a >= 1.0 => "higher than usual",
        (false, true) if a >= 0.5 => "slightly higher than usual",
        (false, false) if a >= 2.0 => "much lower than usual",
        (false, false) if a >= 1.0 => "lower than usual",
        (false, false) if a >= 0.5 => "slightly lower than usual",
        (false, _) => "about usual",
        (true, true) if a >= 2.0 => "cao hơn nhiều so với thường",
        (true, true) if a >= 1.0 => "cao hơn thường",
        (true, true) if a >= 0.5 => "hơi cao hơn thường",
        (true, false) if a >= 2.0 => "thấp hơn nhiều so với thường",
        (true, false) if a >= 1.0 => "thấp hơn thường",
        (true, false) if a >= 0.5 => "hơi thấp hơn thường",
        (true, _) => "như thường",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::{Evidence, FiredRule, Probs};

    /// Evidence with these z-scores.
    fn evidence_of(zs: &[(&str, f64)]) -> Evidence {
        let mut e = Evidence::default();
        for (n, z) in zs {
            e.z.insert((*n).into(), *z);
        }
        e
    }

    /// Rule R1 (angry) as fired, with this statement.
    fn r1_fired(statement: &str) -> [FiredRule; 1] {
        [FiredRule {
            id: "R1".into(),
            label: "angry".into(),
            weight: 1.0,
            statement_en: statement.into(),
            statement_vi: None,
        }]
    }

    #[test]
    fn prefix_is_shared_and_evidence_lists_strongest_deviations() {
        let labels = LabelSet::default();
        let rules = [RuleText::new(
            "R1",
            "angry",
            "Loud bursts with harsh voice suggest anger.",
        )];
        let b = PromptBuilder::new(
            ChatTemplate::ChatMl,
            PromptLanguage::English,
            &labels,
            &rules,
        );
        assert!(b.prefix().starts_with("<|im_start|>system\n"));
        assert!(b.prefix().contains("R1 (angry): Loud bursts"));
        assert!(b.prefix().ends_with("Clip:\n"));
        let e = evidence_of(&[
            ("f0_std_st", 1.8),
            ("hnr_db", -0.2),
            ("speech_rate_syl_per_s", -2.4),
            ("unknown_x", 9.0),
        ]);
        let fired = r1_fired("Loud bursts with harsh voice suggest anger.");
        let probs = Probs::new(&labels, vec![0.2, 0.5, 0.3]);
        let case = Case {
            unfamiliarity: None,
            evidence: &e,
            acoustic: &probs,
            fired: &fired,
            transcript: None,
        };
        let ev = b.evidence(&case);
        assert_eq!(
            ev,
            "- speech rate much lower than usual (-2.4 SD)\n- pitch variability higher than usual (+1.8 SD)\n\
             - voice clarity (harmonics-to-noise) about usual (-0.2 SD)\nRules fired: R1 (angry)\n\
             Acoustic model: calm 0.20, angry 0.50, panic 0.30\n"
        );
        let mut b2 = b.clone();
        b2.fired_statements = true;
        assert!(
            b2.evidence(&case)
                .contains("Rules fired: R1 (angry): Loud bursts"),
            "{}",
            b2.evidence(&case)
        );
        let q = b.question(&[2, 0, 1]);
        assert_eq!(
            q,
            "Which label fits best: panic, calm or angry?<|im_end|>\n<|im_start|>assistant\nLabel:"
        );
    }

    #[test]
    fn compact_prompt_caches_the_question_and_writes_terse_evidence() {
        let labels = LabelSet::default();
        let rules = [RuleText::new("R1", "angry", "Loud bursts suggest anger.")];
        let b = PromptBuilder::compact(
            ChatTemplate::ChatMl,
            PromptLanguage::English,
            &labels,
            &rules,
        );
        assert!(b.is_compact());
        assert!(
            b.prefix()
                .ends_with("Which label fits best: calm, angry or panic?\nClip:\n"),
            "{}",
            b.prefix()
        );
        // Whatever the order asked for, only the turn end and the cue are left per clip.
        let tail = "<|im_end|>\n<|im_start|>assistant\nLabel:";
        assert_eq!(b.question(&[2, 1, 0]), tail);
        assert_eq!(b.question(&[0, 1, 2]), tail);
        let e = evidence_of(&[
            ("f0_std_st", 1.8),
            ("hnr_db", -0.2),
            ("speech_rate_syl_per_s", -2.4),
            ("alpha_ratio_db", 2.0),
        ]);
        let fired = r1_fired("Loud bursts suggest anger.");
        let probs = Probs::new(&labels, vec![0.2, 0.5, 0.3]);
        let case = Case {
            unfamiliarity: None,
            evidence: &e,
            acoustic: &probs,
            fired: &fired,
            transcript: Some("cứu tôi với"),
        };
        assert_eq!(
            b.evidence(&case),
            "speech rate -2.4; vocal effort +2.0\nRules: R1\n\
             Acoustic: angry 0.50\nWords: \"cứu tôi với\"\n"
        );
        assert_eq!(b.null_evidence(), "no measurements\nRules: none\n");
        assert!(b.null_evidences().iter().all(|t| !t.contains("SD)")));
    }

    #[test]
    fn vietnamese_prompt_uses_vietnamese_words() {
        let labels = LabelSet::default();
        let b = PromptBuilder::new(
            ChatTemplate::Gemma,
            PromptLanguage::Vietnamese,
            &labels,
            &[],
        );
        assert!(b.prefix().contains("Nhãn:\n- calm: giọng thư thái"));
        assert!(b
            .question(&[0, 1, 2])
            .ends_with("<start_of_turn>model\nNhãn:"));
    }
}
