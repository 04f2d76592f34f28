//! `switchyard config check FILE`: every problem of a file and of each of its profiles.

use std::path::Path;

use figment::value::{Dict, Value};

use super::{File, Given, Layers};

/// `switchyard config check FILE`: the file alone, and merged with each of its profiles,
/// against the built-in defaults; every problem found, one per line (empty: the file is good).
pub fn check(path: &Path) -> anyhow::Result<Vec<String>> {
    let file = match File::read(path) {
        Ok(file) => file,
        Err(error) => return Ok(vec![format!("{error:#}")]),
    };
    let mut problems: Vec<String> = Vec::new();
    let mut profiles: Vec<Option<&str>> = vec![None];
    profiles.extend(file.profiles.keys().map(|p| Some(p.as_str())));
    for profile in profiles {
        let scope = profile
            .map(|p| format!("[profiles.{p}] "))
            .unwrap_or_default();
        let mut found = Vec::new();
        match Layers::stack(Some(&file), profile, Given::defaults_only()?) {
            Err(error) => found.push(format!("{error:#}")),
            Ok(layers) => {
                if let Err(error) = layers.serve_args() {
                    found.push(format!("{error:#}"));
                }
                found.extend(shape_problems(&layers));
                if found.is_empty() {
                    match layers.document() {
                        Err(error) => found.push(format!("{error:#}")),
                        Ok(config) => {
                            if let Err(error) = config.checked() {
                                found.extend(error.to_string().lines().map(str::to_owned));
                            }
                        }
                    }
                }
            }
        }
        for problem in found {
            if profile.is_some() && problems.iter().any(|p| p == &problem) {
                continue;
            }
            problems.push(format!("{scope}{problem}"));
        }
    }
    Ok(problems)
}

/// Problems of shape, each provider and model on its own, and unknown sections.
fn shape_problems(layers: &Layers) -> Vec<String> {
    const SECTIONS: [&str; 8] = [
        "default_model",
        "providers",
        "models",
        "router",
        "tenant_max_concurrency",
        "default_output_reservation",
        "cache",
        "server",
    ];
    let mut problems = Vec::new();
    let Ok(document) = layers.figment.extract::<Dict>() else {
        return vec!["the config is not a table".into()];
    };
    for key in document.keys() {
        if !SECTIONS.contains(&key.as_str()) {
            problems.push(format!(
                "`{key}` is not a config section (they are: {}, profiles)",
                SECTIONS.join(", ")
            ));
        }
    }
    let mut each = |list: &str, check: &dyn Fn(&Value) -> Result<(), String>| {
        if let Some(items) = document.get(list) {
            match items {
                Value::Array(_, items) => {
                    for (i, item) in items.iter().enumerate() {
                        if let Err(error) = check(item) {
                            problems.push(format!("{list}[{i}]: {error}"));
                        }
                    }
                }
                _ => problems.push(format!("`{list}` must be a list ([[{list}]])")),
            }
        }
    };
    each("providers", &|v| {
        v.deserialize::<switchyard_inference::config::ProviderConfig>()
            .map(drop)
            .map_err(|e| e.to_string())
    });
    each("models", &|v| {
        v.deserialize::<switchyard_inference::config::ModelConfig>()
            .map(drop)
            .map_err(|e| e.to_string())
    });
    for (section, check) in [
        (
            "router",
            (|v: &Value| {
                v.deserialize::<switchyard_inference::config::RouterConfig>()
                    .map(drop)
                    .map_err(|e| e.to_string())
            }) as fn(&Value) -> Result<(), String>,
        ),
        ("cache", |v: &Value| {
            v.deserialize::<switchyard_inference::config::CacheConfig>()
                .map(drop)
                .map_err(|e| e.to_string())
        }),
    ] {
        if let Some(value) = document.get(section)
            && let Err(error) = check(value)
        {
            problems.push(format!("[{section}]: {error}"));
        }
    }
    problems
}
