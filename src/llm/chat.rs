//! Prompt formats. Only the two turn formats the catalogue models were trained with are
//! rendered (ChatML for SmolLM2 and Qwen, Gemma turns); a base model without a chat template
//! gets a plain completion prompt, since turn markers it never saw would only confuse it.

use super::gguf::{Architecture, GgufFile};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChatTemplate {
    /// `<|im_start|>role\n…<|im_end|>\n` turns (SmolLM2, Qwen2/2.5/3).
    ChatMl,
    /// `<start_of_turn>user\n…<end_of_turn>\n<start_of_turn>model\n` (Gemma; no system role).
    Gemma,
    /// Completion text for base models.
    Plain,
}

impl ChatTemplate {
    /// Picks the format from the GGUF's `tokenizer.chat_template` (recognised by its turn
    /// markers); without a template the model is a base model and gets [`ChatTemplate::Plain`].
    /// An unrecognised template falls back to the architecture's usual format.
    pub fn detect(architecture: Architecture, chat_template: Option<&str>) -> Self {
        let Some(template) = chat_template else {
            return ChatTemplate::Plain;
        };
        if template.contains("<|im_start|>") {
            ChatTemplate::ChatMl
        } else if template.contains("<start_of_turn>") {
            ChatTemplate::Gemma
        } else {
            match architecture {
                Architecture::Qwen2 | Architecture::Qwen3 => ChatTemplate::ChatMl,
                Architecture::Gemma3 => ChatTemplate::Gemma,
                Architecture::Llama => ChatTemplate::Plain,
            }
        }
    }

    /// [`ChatTemplate::detect`] for an opened file.
    pub fn for_file(file: &GgufFile) -> Self {
        Self::detect(file.architecture(), file.chat_template())
    }

    /// One system + user exchange, ending where the assistant's answer starts, with
    /// `assistant_prefix` already written (e.g. "Nhãn:" so the next tokens are the label).
    /// BOS is not included: the tokenizer adds it when the model asks for it.
    pub fn render(&self, system: &str, user: &str, assistant_prefix: &str) -> String {
        match self {
            ChatTemplate::ChatMl => {
                let mut s = String::new();
                if !system.is_empty() {
                    s.push_str(&format!("<|im_start|>system\n{system}<|im_end|>\n"));
                }
                s.push_str(&format!(
                    "<|im_start|>user\n{user}<|im_end|>\n<|im_start|>assistant\n{assistant_prefix}"
                ));
                s
            }
            ChatTemplate::Gemma => {
                // Gemma has no system turn; its own template puts the system text first in
                // the user turn, separated by a blank line.
                let user = if system.is_empty() {
                    user.to_string()
                } else {
                    format!("{system}\n\n{user}")
                };
                format!(
                    "<start_of_turn>user\n{user}<end_of_turn>\n<start_of_turn>model\n{assistant_prefix}"
                )
            }
            ChatTemplate::Plain => {
                let mut s = String::new();
                if !system.is_empty() {
                    s.push_str(system);
                    s.push_str("\n\n");
                }
                s.push_str(user);
                s.push_str("\n\n");
                s.push_str(assistant_prefix);
                s
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detects_format_from_template_markers() {
        let chatml = "{% for m in messages %}<|im_start|>{{ m.role }}{% endfor %}";
        assert_eq!(
            ChatTemplate::detect(Architecture::Llama, Some(chatml)),
            ChatTemplate::ChatMl
        );
        let gemma = "{{ '<start_of_turn>' + role }}";
        assert_eq!(
            ChatTemplate::detect(Architecture::Gemma3, Some(gemma)),
            ChatTemplate::Gemma
        );
        assert_eq!(
            ChatTemplate::detect(Architecture::Gemma3, None),
            ChatTemplate::Plain
        );
        assert_eq!(
            ChatTemplate::detect(Architecture::Qwen2, Some("{{ x }}")),
            ChatTemplate::ChatMl
        );
    }

    #[test]
    fn renders_turns_ending_at_the_answer() {
        let s = ChatTemplate::ChatMl.render("Be brief.", "Nhãn?", "Nhãn:");
        assert_eq!(
            s,
            "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nNhãn?<|im_end|>\n<|im_start|>assistant\nNhãn:"
        );
        let g = ChatTemplate::Gemma.render("Be brief.", "Nhãn?", "");
        assert_eq!(
            g,
            "<start_of_turn>user\nBe brief.\n\nNhãn?<end_of_turn>\n<start_of_turn>model\n"
        );
        let p = ChatTemplate::Plain.render("", "Clip: loud.", "Label:");
        assert_eq!(p, "Clip: loud.\n\nLabel:");
    }
}
