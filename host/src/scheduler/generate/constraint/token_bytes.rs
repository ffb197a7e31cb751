//! The bytes each token of a vocabulary writes into the generated text, read from
//! the vocabulary itself (no decode call per token): byte-level BPE (GPT-2 style,
//! SmolLM2) maps each character of a token back to one byte; SentencePiece-style
//! vocabularies (Gemma, Llama) write `▁` as a space and `<0xXX>` as that byte.
//! Special tokens write nothing a constraint could accept.
//! `prepared_vocabularies_match_the_tokenizers_own_decoding` checks the result
//! against `Tokenizer::decode` token by token.

use tokenizers::Tokenizer;

/// All tokens' bytes back to back; `None` for tokens that are not text.
pub struct TokenBytes {
    data: Vec<u8>,
    /// Token `i` is `data[ends[i - 1]..ends[i]]` (`ends[-1]` = 0).
    ends: Vec<u32>,
    text: Vec<bool>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scheme {
    ByteLevel,
    SentencePiece,
}

impl TokenBytes {
    /// Fails when the tokenizer's decoder is of a kind this module does not know
    /// (WordPiece's `##`, BPE end-of-word suffixes...).
    pub fn from_tokenizer(tokenizer: &Tokenizer) -> Result<Self, String> {
        let decoder = serde_json::to_string(&tokenizer.get_decoder()).unwrap_or_default();
        let scheme = if decoder.contains("\"ByteLevel\"") {
            Scheme::ByteLevel
        } else if ["\"ByteFallback\"", "\"Metaspace\"", "\u{2581}"]
            .iter()
            .any(|k| decoder.contains(k))
        {
            Scheme::SentencePiece
        } else {
            return Err(format!(
                "its tokenizer's decoder is not supported ({decoder})"
            ));
        };
        let added = tokenizer.get_added_tokens_decoder();
        let special: std::collections::HashSet<u32> = added
            .iter()
            .filter(|(_, token)| token.special)
            .map(|(&id, _)| id)
            .collect();
        // Not `get_vocab_size(true)`, which builds the whole vocabulary map.
        let size = added
            .keys()
            .map(|&id| id as usize + 1)
            .fold(tokenizer.get_vocab_size(false), usize::max);
        let byte_of_char = byte_level_chars();
        // Added tokens go through the decoder like the others (`Tokenizer::decode` does).
        let tokens = (0..size as u32).map(|id| {
            let piece = tokenizer
                .id_to_token(id)
                .filter(|_| !special.contains(&id))?;
            Some(match scheme {
                // As the ByteLevel decoder: a piece with a character outside the byte
                // alphabet is written as it is.
                Scheme::ByteLevel => piece
                    .chars()
                    .map(&byte_of_char)
                    .collect::<Option<Vec<u8>>>()
                    .unwrap_or_else(|| piece.into_bytes()),
                Scheme::SentencePiece => sentencepiece_bytes(&piece),
            })
        });
        Ok(Self::from_tokens(tokens))
    }

    /// From each token's bytes, in id order (`None`: not text).
    pub fn from_tokens(tokens: impl IntoIterator<Item = Option<Vec<u8>>>) -> Self {
        let mut table = TokenBytes {
            data: Vec::new(),
            ends: Vec::new(),
            text: Vec::new(),
        };
        for token in tokens {
            table
                .text
                .push(token.as_ref().is_some_and(|b| !b.is_empty()));
            table.data.extend(token.unwrap_or_default());
            table.ends.push(table.data.len() as u32);
        }
        table
    }

    /// The bytes of token `id`, if it is text.
    pub fn get(&self, id: u32) -> Option<&[u8]> {
        let i = id as usize;
        if !*self.text.get(i)? {
            return None;
        }
        let start = if i == 0 { 0 } else { self.ends[i - 1] as usize };
        Some(&self.data[start..self.ends[i] as usize])
    }

    pub fn len(&self) -> usize {
        self.ends.len()
    }
}

/// `<0x0A>` is the byte 0x0A; otherwise `▁` is a space.
fn sentencepiece_bytes(piece: &str) -> Vec<u8> {
    if let Some(hex) = piece
        .strip_prefix("<0x")
        .and_then(|rest| rest.strip_suffix('>'))
        .filter(|h| h.len() == 2)
    {
        if let Ok(byte) = u8::from_str_radix(hex, 16) {
            return vec![byte];
        }
    }
    piece.replace('\u{2581}', " ").into_bytes()
}

/// The inverse of GPT-2's `bytes_to_unicode`: printable bytes stand for
/// themselves, the other 68 are shifted to U+0100 onwards in byte order.
fn byte_level_chars() -> impl Fn(char) -> Option<u8> {
    let mut table = std::collections::HashMap::with_capacity(256);
    let mut shifted = 0u32;
    for b in 0u8..=255 {
        let printable = matches!(b, b'!'..=b'~' | 0xa1..=0xac | 0xae..=0xff);
        let c = if printable {
            char::from(b)
        } else {
            shifted += 1;
            char::from_u32(255 + shifted).expect("U+0100..U+0143 are chars")
        };
        table.insert(c, b);
    }
    move |c| table.get(&c).copied()
}

/// The prepared chat models' tokenizers, for tests on real vocabularies. `just test`
/// prepares the models before the unit tests run; a bare `cargo test` without them
/// skips those tests (with a line saying so).
#[cfg(test)]
pub(super) fn prepared_tokenizers() -> Vec<(&'static str, Tokenizer)> {
    let prepared = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/prepared");
    ["smollm2-135m-instruct", "gemma-3-270m"]
        .into_iter()
        .filter_map(|model| {
            let path = prepared.join(model).join("tokenizer.json");
            if !path.is_file() {
                eprintln!("skipped: {} is not prepared", path.display());
                return None;
            }
            Some((model, Tokenizer::from_file(&path).unwrap()))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tokenizer(model: serde_json::Value, decoder: serde_json::Value) -> Tokenizer {
        let json = serde_json::json!({
            "version": "1.0", "truncation": null, "padding": null,
            "added_tokens": [
                {"id": 0, "content": "<eos>", "single_word": false, "lstrip": false, "rstrip": false,
                 "normalized": false, "special": true},
                {"id": 1, "content": "\n\n", "single_word": false, "lstrip": false, "rstrip": false,
                 "normalized": false, "special": false}
            ],
            "normalizer": null, "pre_tokenizer": null, "post_processor": null,
            "decoder": decoder, "model": model,
        });
        Tokenizer::from_bytes(serde_json::to_vec(&json).unwrap()).unwrap()
    }

    #[test]
    fn byte_level_vocabularies_map_characters_to_bytes() {
        let t = tokenizer(
            serde_json::json!({"type": "BPE", "dropout": null, "unk_token": null,
                "continuing_subword_prefix": null, "end_of_word_suffix": null, "fuse_unk": false,
                "byte_fallback": false, "ignore_merges": false,
                "vocab": {"<eos>": 0, "\n\n": 1, "{\"": 2, "Ġname": 3, "Ċ": 4, "Ã©": 5, "Ã": 6},
                "merges": []}),
            serde_json::json!({"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true,
                "use_regex": true}),
        );
        let bytes = TokenBytes::from_tokenizer(&t).unwrap();
        assert_eq!(bytes.len(), 7);
        assert_eq!(bytes.get(0), None);
        assert_eq!(bytes.get(1), Some(&b"\n\n"[..]));
        assert_eq!(bytes.get(2), Some(&b"{\""[..]));
        assert_eq!(bytes.get(3), Some(&b" name"[..]));
        assert_eq!(bytes.get(4), Some(&b"\n"[..]));
        assert_eq!(bytes.get(5), Some("é".as_bytes()));
        assert_eq!(bytes.get(6), Some(&[0xc3][..]));
        assert_eq!(bytes.get(7), None);
    }

    #[test]
    fn sentencepiece_vocabularies_map_spaces_and_byte_tokens() {
        let t = tokenizer(
            serde_json::json!({"type": "BPE", "dropout": null, "unk_token": null,
                "continuing_subword_prefix": null, "end_of_word_suffix": null, "fuse_unk": false,
                "byte_fallback": true, "ignore_merges": false,
                "vocab": {"<eos>": 0, "\n\n": 1, "▁{\"": 2, "<0xC3>": 3, "café": 4},
                "merges": []}),
            serde_json::json!({"type": "Sequence", "decoders": [
                {"type": "Replace", "pattern": {"String": "▁"}, "content": " "},
                {"type": "ByteFallback"}, {"type": "Fuse"}]}),
        );
        let bytes = TokenBytes::from_tokenizer(&t).unwrap();
        assert_eq!(bytes.get(0), None);
        assert_eq!(bytes.get(1), Some(&b"\n\n"[..]));
        assert_eq!(bytes.get(2), Some(&b" {\""[..]));
        assert_eq!(bytes.get(3), Some(&[0xc3][..]));
        assert_eq!(bytes.get(4), Some("café".as_bytes()));
    }

    #[test]
    fn unknown_decoders_are_refused() {
        let t = tokenizer(
            serde_json::json!({"type": "WordPiece", "unk_token": "[UNK]",
                "continuing_subword_prefix": "##", "max_input_chars_per_word": 100,
                "vocab": {"<eos>": 0, "\n\n": 1, "[UNK]": 2}}),
            serde_json::json!({"type": "WordPiece", "prefix": "##", "cleanup": true}),
        );
        assert!(TokenBytes::from_tokenizer(&t).is_err());
    }

    /// The prepared chat models' real vocabularies: every token's bytes, where they
    /// are whole UTF-8, are what the tokenizer decodes it to.
    #[test]
    fn prepared_vocabularies_match_the_tokenizers_own_decoding() {
        for (model, t) in prepared_tokenizers() {
            let started = std::time::Instant::now();
            let bytes = TokenBytes::from_tokenizer(&t).unwrap();
            eprintln!(
                "{model}: {} tokens read in {:?}",
                bytes.len(),
                started.elapsed()
            );
            let (mut checked, mut text) = (0, 0);
            for id in 0..bytes.len() as u32 {
                let Some(b) = bytes.get(id) else { continue };
                text += 1;
                if let Ok(s) = std::str::from_utf8(b) {
                    assert_eq!(t.decode(&[id], false).unwrap(), s, "{model} token {id}");
                    checked += 1;
                }
            }
            // Nearly all tokens are text; only byte pieces are not whole UTF-8.
            assert!(text > bytes.len() * 9 / 10, "{model}: {text} text tokens");
            assert!(
                checked > text * 9 / 10,
                "{model}: {checked} of {text} checked"
            );
        }
    }
}
