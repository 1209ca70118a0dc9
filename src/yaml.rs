//! YAML as stoker writes it (generated CRDs and templates, `convert`'s output, node user data):
//! serde-saphyr, with long single-line strings kept on one line. Its default folds them at 80
//! characters (`>-`), which reads the same but makes generated files hard to review and diff.

use serde::Serialize;

/// `value` as a YAML document.
pub fn to_string<T: Serialize>(value: &T) -> Result<String, serde_saphyr::SerializeError> {
    let mut options = serde_saphyr::SerializerOptions::default();
    options.folded_wrap_chars = usize::MAX;
    serde_saphyr::to_string_with_options(value, options)
}

#[cfg(test)]
mod tests {
    #[test]
    fn long_lines_stay_whole_and_text_round_trips() {
        let long = "x ".repeat(100);
        let value = serde_json::json!({"rule": long, "block": "a\nb\n", "flag": "n", "number": "1"});
        let text = super::to_string(&value).unwrap();
        assert!(!text.contains(">-"), "{text}");
        let back: serde_json::Value = serde_saphyr::from_str(&text).unwrap();
        assert_eq!(back, value, "strings that look like booleans or numbers are quoted: {text}");
    }
}
