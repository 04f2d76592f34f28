//! Spend attribution below the tenant: the end user a request is made for (OpenAI's `user`)
//! and its tags (`metadata.tags`, a list or a comma-separated string, as the OpenAI SDK's
//! string-valued `metadata` allows, plus the `x-switchyard-tags` header). Both are logged with
//! the inference (its record's `request`) and are what the analytics group spend by.

use serde_json::Value;

/// Most tags one request may carry.
pub const MAX_TAGS: usize = 16;
/// Longest tag.
const MAX_TAG_LEN: usize = 64;
/// Longest `user`.
const MAX_USER_LEN: usize = 256;

fn check_tag(tag: &str) -> Result<(), String> {
    if tag.is_empty()
        || tag.len() > MAX_TAG_LEN
        || !tag
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.:/".contains(&b))
    {
        return Err(format!(
            "tag {tag:?} must be 1-{MAX_TAG_LEN} characters of letters, digits and - _ . : /"
        ));
    }
    Ok(())
}

/// The tags of a request: `metadata.tags` and then the header's, each once, in order.
pub fn tags(metadata: Option<&Value>, header: Option<&str>) -> Result<Vec<String>, String> {
    let mut raw: Vec<String> = Vec::new();
    match metadata.and_then(|m| m.get("tags")) {
        None | Some(Value::Null) => {}
        Some(Value::String(list)) => raw.extend(list.split(',').map(|t| t.trim().to_owned())),
        Some(Value::Array(items)) => {
            for item in items {
                let tag = item
                    .as_str()
                    .ok_or_else(|| "metadata.tags must hold strings".to_owned())?;
                raw.push(tag.trim().to_owned());
            }
        }
        Some(_) => return Err("metadata.tags must be a list or a comma-separated string".into()),
    }
    if let Some(header) = header {
        raw.extend(header.split(',').map(|t| t.trim().to_owned()));
    }
    let mut tags: Vec<String> = Vec::new();
    for tag in raw.into_iter().filter(|t| !t.is_empty()) {
        check_tag(&tag)?;
        if !tags.contains(&tag) {
            tags.push(tag);
        }
    }
    if tags.len() > MAX_TAGS {
        return Err(format!("at most {MAX_TAGS} tags per request"));
    }
    Ok(tags)
}

/// Checks `user`: 1-256 characters, none of them control characters.
pub fn check_user(user: Option<&str>) -> Result<(), String> {
    match user {
        Some(user)
            if user.is_empty()
                || user.len() > MAX_USER_LEN
                || user.chars().any(char::is_control) =>
        {
            Err(format!(
                "user must be 1-{MAX_USER_LEN} characters without control characters"
            ))
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn tags_come_from_the_body_and_the_header_once_each() {
        let metadata = json!({"tags": "team-a, exp:b", "other": "x"});
        assert_eq!(
            tags(Some(&metadata), Some("team-a,ci/nightly")).unwrap(),
            vec!["team-a", "exp:b", "ci/nightly"]
        );
        let listed = json!({"tags": ["a", "b"]});
        assert_eq!(tags(Some(&listed), None).unwrap(), vec!["a", "b"]);
        assert!(tags(None, None).unwrap().is_empty());
        assert!(
            tags(Some(&json!({"tags": ", ,"})), Some(""))
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn hostile_tags_and_users_are_refused_with_the_reason() {
        for (metadata, header, says) in [
            (json!({"tags": 7}), None, "list or a comma-separated"),
            (json!({"tags": [1]}), None, "hold strings"),
            (json!({"tags": "spaced tag"}), None, "must be 1-64"),
            (json!({"tags": "x".repeat(65)}), None, "must be 1-64"),
            (json!({}), Some("ok,\u{0}bad"), "must be 1-64"),
            (
                json!({"tags": (0..17).map(|i| format!("t{i}")).collect::<Vec<_>>()}),
                None,
                "at most 16",
            ),
        ] {
            let error = tags(Some(&metadata), header).unwrap_err();
            assert!(error.contains(says), "{metadata} {header:?}: {error}");
        }
        assert!(check_user(Some("")).is_err());
        assert!(check_user(Some(&"u".repeat(257))).is_err());
        assert!(check_user(Some("a\nb")).is_err());
        assert!(check_user(Some("user-4711@example")).is_ok());
        assert!(check_user(None).is_ok());
    }
}
