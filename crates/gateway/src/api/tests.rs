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
