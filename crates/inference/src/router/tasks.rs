//! The task classes a request's text shows (code, math, summary, translation), as router
//! features: whole words and phrases, not substrings, so that "trust" is not Rust and
//! "resolve" is not "solve". Words are Unicode letters and digits, lower-cased; besides English
//! each class knows the common words of French, Spanish, German and Portuguese.

/// Words that mark a class (matched whole).
const CODE: &[&str] = &[
    "code",
    "coding",
    "codes",
    "function",
    "functions",
    "method",
    "compile",
    "compiler",
    "compiles",
    "compiling",
    "rust",
    "python",
    "javascript",
    "typescript",
    "java",
    "golang",
    "sql",
    "regex",
    "bug",
    "bugs",
    "debug",
    "debugging",
    "refactor",
    "stacktrace",
    "segfault",
    "api",
    "json",
    "yaml",
    "script",
    "programming",
    "program",
    "código",
    "programa",
    "programmieren",
    "funktion",
    "fonction",
    "programmation",
    "função",
    "programação",
];
const MATH: &[&str] = &[
    "calculate",
    "calculates",
    "calculating",
    "calculation",
    "compute",
    "solve",
    "solves",
    "solving",
    "equation",
    "equations",
    "math",
    "maths",
    "mathematics",
    "integral",
    "derivative",
    "algebra",
    "arithmetic",
    "probability",
    "theorem",
    "prove",
    "calcular",
    "calcule",
    "calculer",
    "resolver",
    "résoudre",
    "ecuación",
    "équation",
    "gleichung",
    "berechne",
    "berechnen",
    "mathematik",
    "matemáticas",
    "mathématiques",
    "equação",
];
const SUMMARY: &[&str] = &[
    "summarize",
    "summarise",
    "summarizes",
    "summarises",
    "summarizing",
    "summarising",
    "summary",
    "summaries",
    "summarization",
    "summarisation",
    "tldr",
    "recap",
    "résumer",
    "résumé",
    "resumir",
    "resumen",
    "zusammenfassen",
    "zusammenfassung",
    "resumo",
];
const TRANSLATION: &[&str] = &[
    "translate",
    "translates",
    "translating",
    "translation",
    "translations",
    "traducir",
    "traducción",
    "traduire",
    "traduction",
    "übersetzen",
    "übersetze",
    "übersetzung",
    "traduzir",
    "tradução",
];
/// Phrases of several words (matched as consecutive whole words).
const MATH_PHRASES: &[&[&str]] = &[
    &["sum", "of"],
    &["how", "much", "is"],
    &["what", "is", "the", "product"],
];
const SUMMARY_PHRASES: &[&[&str]] = &[&["tl", "dr"], &["in", "short"], &["key", "points"]];

/// The lower-cased words of `text`.
fn words(text: &str) -> Vec<String> {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_lowercase)
        .collect()
}

fn any_word(words: &[String], class: &[&str]) -> bool {
    words.iter().any(|w| class.contains(&w.as_str()))
}

fn any_phrase(words: &[String], phrases: &[&[&str]]) -> bool {
    phrases.iter().any(|phrase| {
        words
            .windows(phrase.len())
            .any(|window| window.iter().zip(phrase.iter()).all(|(w, p)| w == p))
    })
}

/// The task classes of `text`: (code, math, summary, translation), each 0 or 1.
pub fn classes(text: &str) -> [bool; 4] {
    let words = words(text);
    [
        text.contains("```") || any_word(&words, CODE),
        any_word(&words, MATH) || any_phrase(&words, MATH_PHRASES),
        any_word(&words, SUMMARY) || any_phrase(&words, SUMMARY_PHRASES),
        any_word(&words, TRANSLATION),
    ]
}

#[cfg(test)]
mod tests {
    use super::classes;

    #[test]
    fn substrings_of_other_words_are_not_classes() {
        // The audit's cases: "trust" contains "rust", "resolve" contains "solve".
        assert_eq!(
            classes("Summarize why trust matters between teams."),
            [false, false, true, false]
        );
        assert_eq!(
            classes("Please resolve the dispute in a short summary."),
            [false, false, true, false]
        );
        for text in [
            "The frustrated customer wants a refund.",
            "He debugged nothing; the bugle played.",
            "A mathematician's biography, briefly.",
            "Consummate professionals.",
        ] {
            assert_eq!(classes(text), [false; 4], "{text}");
        }
    }

    #[test]
    fn whole_words_phrases_and_other_languages_are_classes() {
        assert!(classes("Why does my Rust code not compile?")[0]);
        assert!(classes("```\nfn main() {}\n```")[0]);
        assert!(classes("What is the sum of 2 and 3?")[1]);
        assert!(classes("Solve x^2 = 4")[1]);
        assert!(classes("TL;DR of this thread please")[2]);
        assert!(classes("Translate this into German")[3]);
        assert!(classes("Bitte fasse zusammen: Zusammenfassung des Textes")[2]);
        assert!(classes("Traduire ce texte en anglais")[3]);
        assert!(classes("Resolver la ecuación 2x = 4")[1]);
        assert!(classes("¿Puedes traducir esto?")[3]);
    }
}
