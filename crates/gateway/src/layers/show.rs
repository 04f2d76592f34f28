//! `switchyard config show`: every effective value with its source, secrets redacted.

use super::REDACTED;

/// One line of `config show`.
#[derive(Debug, serde::Serialize)]
pub struct Shown {
    pub key: String,
    pub value: Option<serde_json::Value>,
    pub source: String,
}

/// A TOML-like rendering of `shown`: `key = value`, the source as a comment, aligned; an unset
/// setting as a commented key.
pub fn render(profile: Option<&str>, shown: &[Shown]) -> String {
    let lines: Vec<(String, &str)> = shown
        .iter()
        .map(|s| {
            let text = match &s.value {
                Some(value) => format!("{} = {value}", s.key),
                None => format!("# {}", s.key),
            };
            (text, s.source.as_str())
        })
        .collect();
    let width = lines
        .iter()
        .map(|(l, _)| l.len())
        .max()
        .unwrap_or(0)
        .min(72);
    let mut out = format!("# profile: {}\n", profile.unwrap_or("(none)"));
    for (line, source) in lines {
        out.push_str(&format!("{line:<width$}  # {source}\n"));
    }
    out
}

/// A flag's text as JSON: numbers and booleans as such, the rest as strings.
pub(super) fn typed(text: &str) -> serde_json::Value {
    match text {
        "true" => serde_json::Value::Bool(true),
        "false" => serde_json::Value::Bool(false),
        _ => text
            .parse::<i64>()
            .map(serde_json::Value::from)
            .unwrap_or_else(|_| serde_json::Value::String(text.to_owned())),
    }
}

/// `scheme://user:password@host` → `scheme://user:<redacted>@host`, and `scheme://token@host`
/// → `scheme://<redacted>@host`: credentials in a URL are secrets, wherever the URL sits.
pub(super) fn redact_url(value: serde_json::Value) -> serde_json::Value {
    let serde_json::Value::String(text) = &value else {
        return value;
    };
    let Some((scheme, rest)) = text.split_once("://") else {
        return value;
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or(rest);
    let Some((userinfo, host)) = authority.rsplit_once('@') else {
        return value;
    };
    let redacted = match userinfo.split_once(':') {
        Some((user, _)) => format!("{user}:{REDACTED}"),
        None => REDACTED.to_owned(),
    };
    serde_json::Value::String(format!(
        "{scheme}://{redacted}@{host}{}",
        &rest[authority.len()..]
    ))
}

/// Every leaf of `value`, keyed `a.b[0].c` (nulls, empty lists and empty tables left out).
pub(super) fn flatten(
    prefix: &str,
    value: &serde_json::Value,
    out: &mut Vec<(String, serde_json::Value)>,
) {
    match value {
        serde_json::Value::Object(map) => {
            for (key, child) in map {
                let key = if prefix.is_empty() {
                    key.clone()
                } else {
                    format!("{prefix}.{key}")
                };
                flatten(&key, child, out);
            }
        }
        serde_json::Value::Array(items) => {
            for (i, child) in items.iter().enumerate() {
                flatten(&format!("{prefix}[{i}]"), child, out);
            }
        }
        serde_json::Value::Null => {}
        leaf => out.push((prefix.to_owned(), leaf.clone())),
    }
}
