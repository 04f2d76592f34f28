//! The routes the server registers and the OpenAPI document describe the same endpoints.

use std::collections::BTreeSet;

use super::{ApiDoc, registered};

/// (method, path) of every operation in `/openapi.json`.
fn documented() -> BTreeSet<(String, String)> {
    let doc = serde_json::to_value(<ApiDoc as utoipa::OpenApi>::openapi()).unwrap();
    let mut out = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            if [
                "get", "put", "post", "delete", "options", "head", "patch", "trace",
            ]
            .contains(&method.as_str())
            {
                out.insert((method.clone(), path.clone()));
            }
        }
    }
    out
}

#[test]
fn every_registered_route_is_documented_and_every_documented_one_registered() {
    let routes: Vec<_> = registered()
        .map(|e| (e.method.to_owned(), e.path.to_owned()))
        .collect();
    let served: BTreeSet<_> = routes.iter().cloned().collect();
    assert_eq!(served.len(), routes.len(), "a route registered twice");
    let documented = documented();
    let undocumented: Vec<_> = served.difference(&documented).collect();
    let unserved: Vec<_> = documented.difference(&served).collect();
    assert!(
        undocumented.is_empty() && unserved.is_empty(),
        "registered but not in /openapi.json: {undocumented:?}; \
         in /openapi.json but not registered: {unserved:?}"
    );
}

/// actix tries routes in registration order and matches a path with a `{segment}` by regex:
/// no such route may come before the hot path's routes, or every completion pays for the
/// regexes (the flame graphs of issue 14 showed `regex_lite` at 2% of the CPU).
#[test]
fn the_hot_path_is_routed_by_static_paths_alone() {
    let routes: Vec<_> = registered().collect();
    let hot = ["/v1/chat/completions", "/v1/embeddings", "/v1/feedback"];
    let last_hot = routes
        .iter()
        .rposition(|e| hot.contains(&e.path))
        .expect("the hot routes are registered");
    let dynamic_before: Vec<_> = routes[..last_hot]
        .iter()
        .filter(|e| e.path.contains('{'))
        .map(|e| e.path)
        .collect();
    assert!(
        dynamic_before.is_empty(),
        "routes with path parameters registered before the hot path: {dynamic_before:?}"
    );
}
