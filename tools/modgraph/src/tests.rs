use std::path::Path;

use super::*;

/// Writes a crate's files (path → text) into a temporary folder.
fn fixture(files: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for (path, text) in files {
        let file = dir.path().join(path);
        std::fs::create_dir_all(file.parent().unwrap()).unwrap();
        std::fs::write(file, text).unwrap();
    }
    dir
}

/// A surface over plumbing over a domain, with facades (`mod.rs` using its children and
/// children using their parent's items), relative paths through child modules, and a test
/// module that imports from above.
const LAYERED: &[(&str, &str)] = &[
    (
        "main.rs",
        "mod api;\nmod http;\nmod domain;\nfn main() { api::routes(); }\n#[cfg(test)]\nmod tests;\n",
    ),
    ("tests.rs", "use crate::api::openai::Handler;\n"),
    (
        "api/mod.rs",
        "pub mod openai;\npub mod admin;\npub fn routes() { openai::routes(); }\n",
    ),
    (
        "api/openai.rs",
        "use crate::http::{ApiError, parse};\nuse super::admin::Admin;\npub struct Handler;\npub fn routes() {}\n",
    ),
    (
        "api/admin.rs",
        "use crate::http::error::ApiError;\npub struct Admin;\n",
    ),
    (
        "http/mod.rs",
        "pub mod error;\npub use error::ApiError;\npub fn parse() -> crate::domain::Thing { todo!() }\n",
    ),
    (
        "http/error.rs",
        "use super::parse;\npub struct ApiError(crate::domain::Thing);\n",
    ),
    ("domain.rs", "pub struct Thing;\n"),
];

#[test]
fn layered_modules_pass() {
    let dir = fixture(LAYERED);
    let findings = check(&dir.path().join("main.rs"), 600).unwrap();
    assert_eq!(findings.cycles, Vec::new());
    assert!(findings.oversized.is_empty());
}

#[test]
fn a_planted_back_import_from_plumbing_into_a_surface_is_a_cycle() {
    let mut files = LAYERED.to_vec();
    files.retain(|(path, _)| *path != "http/error.rs");
    files.push((
        "http/error.rs",
        "use super::parse;\nuse crate::api::admin::Admin;\npub struct ApiError(Admin);\n",
    ));
    let dir = fixture(&files);
    let findings = check(&dir.path().join("main.rs"), 600).unwrap();
    assert_eq!(findings.cycles.len(), 1, "{:?}", findings.cycles);
    let cycle = &findings.cycles[0];
    assert!(cycle.parent.is_empty());
    assert_eq!(cycle.members, vec!["api".to_owned(), "http".to_owned()]);
    assert!(
        cycle
            .witnesses
            .iter()
            .any(|w| w.starts_with("http -> api") && w.contains("error.rs:2")),
        "{:?}",
        cycle.witnesses
    );
}

#[test]
fn inline_paths_and_super_chains_count_as_imports() {
    let mut files = LAYERED.to_vec();
    files.retain(|(path, _)| *path != "domain.rs");
    // An inline path, not a `use`: the domain reaches up into a surface.
    files.push((
        "domain.rs",
        "pub struct Thing;\npub fn f() { let _ = crate::api::routes; }\n",
    ));
    let dir = fixture(&files);
    let findings = check(&dir.path().join("main.rs"), 600).unwrap();
    assert_eq!(findings.cycles.len(), 1, "{:?}", findings.cycles);
    assert_eq!(
        findings.cycles[0].members,
        vec!["api".to_owned(), "domain".to_owned(), "http".to_owned()]
    );

    // `super::super::` from a nested module resolves to the crate root's children.
    let dir = fixture(&[
        ("lib.rs", "pub mod a;\npub mod b;\n"),
        ("a/mod.rs", "pub mod inner;\npub struct A;\n"),
        ("a/inner.rs", "use super::super::b::B;\n"),
        ("b.rs", "use crate::a::A;\npub struct B;\n"),
    ]);
    let findings = check(&dir.path().join("lib.rs"), 600).unwrap();
    assert_eq!(
        findings.cycles[0].members,
        vec!["a".to_owned(), "b".to_owned()]
    );
}

#[test]
fn cycles_inside_a_folder_are_reported_at_that_folder() {
    let dir = fixture(&[
        ("lib.rs", "pub mod api;\n"),
        ("api/mod.rs", "pub mod x;\npub mod y;\n"),
        ("api/x.rs", "use super::y::Y;\npub struct X;\n"),
        ("api/y.rs", "use super::x::X;\npub struct Y;\n"),
    ]);
    let findings = check(&dir.path().join("lib.rs"), 600).unwrap();
    assert_eq!(findings.cycles.len(), 1);
    assert_eq!(findings.cycles[0].parent, vec!["api".to_owned()]);
}

#[test]
fn long_files_fail_unless_tests_or_explained() {
    let long = "fn f() {}\n".repeat(700);
    let explained =
        format!("//! The catalog: one piece, because every variant is listed once.\n{long}");
    let dir = fixture(&[
        (
            "lib.rs",
            "pub mod big;\npub mod fine;\n#[cfg(test)]\nmod tests;\n",
        ),
        ("big.rs", long.as_str()),
        ("fine.rs", explained.as_str()),
        ("tests.rs", long.as_str()),
    ]);
    let findings = check(&dir.path().join("lib.rs"), 600).unwrap();
    let names: Vec<_> = findings
        .oversized
        .iter()
        .map(|(file, lines)| (file.file_name().unwrap().to_owned(), *lines))
        .collect();
    assert_eq!(names, vec![(std::ffi::OsString::from("big.rs"), 700)]);
    assert!(exempt(Path::new("crates/x/tests/big.rs"), ""));
}

#[test]
fn path_attributes_and_inline_modules_are_followed() {
    let dir = fixture(&[
        (
            "lib.rs",
            "#[path = \"elsewhere/impl.rs\"]\npub mod a;\npub mod b { pub use crate::a::A; }\n",
        ),
        ("elsewhere/impl.rs", "use crate::b::B;\npub struct A;\n"),
    ]);
    let findings = check(&dir.path().join("lib.rs"), 600).unwrap();
    assert_eq!(
        findings.cycles[0].members,
        vec!["a".to_owned(), "b".to_owned()]
    );
}

#[test]
fn unreadable_input_is_a_clear_error() {
    let dir = fixture(&[("lib.rs", "pub mod missing;\n")]);
    let error = check(&dir.path().join("lib.rs"), 600).unwrap_err();
    assert!(format!("{error:#}").contains("missing"), "{error:#}");
    let dir = fixture(&[("lib.rs", "fn (\n")]);
    let error = check(&dir.path().join("lib.rs"), 600).unwrap_err();
    assert!(format!("{error:#}").contains("cannot parse"), "{error:#}");
    assert!(run(&["--max-lines".into(), "x".into()]).is_err());
    assert!(run(&[]).is_err());
}

#[test]
fn the_crate_error_module_may_be_imported_by_all_and_import_all() {
    let dir = fixture(&[
        ("lib.rs", "pub mod error;\npub mod store;\npub mod ids;\n"),
        (
            "error.rs",
            "use crate::store::Expected;\nuse crate::ids::Id;\npub enum Error {}\n",
        ),
        (
            "store/mod.rs",
            "use crate::error::Error;\nuse crate::ids::Id;\npub struct Expected;\n",
        ),
        ("ids.rs", "use crate::error::Error;\npub struct Id;\n"),
    ]);
    let findings = check(&dir.path().join("lib.rs"), 600).unwrap();
    assert_eq!(findings.cycles, Vec::new());
    // Only at the root: a nested `error` module is a module like any other.
    let dir = fixture(&[
        ("lib.rs", "pub mod http;\npub mod api;\n"),
        ("http/mod.rs", "pub mod error;\n"),
        ("http/error.rs", "use crate::api::Surface;\n"),
        ("api.rs", "use crate::http::error;\npub struct Surface;\n"),
    ]);
    let findings = check(&dir.path().join("lib.rs"), 600).unwrap();
    assert_eq!(findings.cycles.len(), 1);
}
