//! The verifier against a stand-in identity provider with locally generated keys.

use serde_json::json;

use super::*;

#[path = "../../../../tests/blackbox/idp.rs"]
mod idp;

use idp::{AUDIENCE, ISSUER, JwksServer, Key, claims, now};

fn args(jwks_url: &str) -> OidcArgs {
    let _ = rustls::crypto::ring::default_provider().install_default();
    OidcArgs {
        issuer: Some(ISSUER.into()),
        audience: vec![AUDIENCE.into()],
        jwks_url: Some(jwks_url.into()),
        jwks_file: None,
        roles_claim: "roles".into(),
        tenants_claim: "switchyard_tenants".into(),
        role_map: vec!["Switchyard-Owners=platform-admin".into()],
        leeway_secs: 60,
        jwks_ttl_secs: 300,
    }
}

fn invalid(result: Result<Identity, OidcError>, why: &str) -> String {
    match result {
        Err(OidcError::InvalidToken(reason)) => reason,
        Err(OidcError::UnknownKey(kid)) => format!("unknown key {kid}"),
        other => panic!("{why}: expected a refusal, got {other:?}"),
    }
}

#[tokio::test]
async fn tokens_signed_by_published_rsa_and_ec_keys_are_accepted_with_their_roles() {
    let (rsa, ec) = (Key::rsa("rsa-1"), Key::ec("ec-1"));
    let idp = JwksServer::start(idp::jwks(&[&rsa, &ec])).await;
    let verifier = Verifier::from_args(&args(&idp.url)).unwrap().unwrap();
    let tenant = TenantId::new().to_string();
    for key in [&rsa, &ec] {
        let identity = verifier
            .verify(&key.sign(&claims("alice", &["tenant-admin", "auditor"], &[&tenant])))
            .await
            .unwrap();
        assert_eq!(identity.subject, "alice");
        assert_eq!(identity.issuer, ISSUER);
        assert_eq!(identity.roles, vec![Role::TenantAdmin, Role::Auditor]);
        assert_eq!(identity.tenants, vec![tenant.parse().unwrap()]);
    }
    // An IdP group mapped to a role; unknown role names grant nothing.
    let mapped = verifier
        .verify(&rsa.sign(&claims("bob", &["Switchyard-Owners", "admin", "root"], &[])))
        .await
        .unwrap();
    assert_eq!(mapped.roles, vec![Role::PlatformAdmin]);
    // The keys were read once for all of that.
    assert_eq!(idp.hits(), 1);
}

#[tokio::test]
async fn forged_expired_misaddressed_and_unsigned_tokens_are_refused() {
    let (good, other) = (Key::rsa("rsa-1"), Key::ec("ec-1"));
    let idp = JwksServer::start(idp::jwks(&[&good])).await;
    let verifier = Verifier::from_args(&args(&idp.url)).unwrap().unwrap();
    let base = claims("mallory", &["platform-admin"], &[]);
    let with = |field: &str, value: serde_json::Value| {
        let mut c = base.clone();
        c[field] = value;
        c
    };

    // Signed by a key the IdP does not publish, under the published key's id: bad signature.
    let rsa_impostor = Key::rsa("rsa-1");
    let reason = invalid(verifier.verify(&rsa_impostor.sign(&base)).await, "forged");
    assert!(reason.contains("signature"), "{reason}");
    // A key id missing from the JWKS.
    let reason = invalid(verifier.verify(&other.sign(&base)).await, "unknown kid");
    assert!(reason.contains("unknown key ec-1"), "{reason}");
    // Wrong audience, wrong issuer.
    let reason = invalid(
        verifier
            .verify(&good.sign(&with("aud", json!("someone-else"))))
            .await,
        "audience",
    );
    assert!(reason.contains("audience"), "{reason}");
    let reason = invalid(
        verifier
            .verify(&good.sign(&with("iss", json!("https://evil.example/"))))
            .await,
        "issuer",
    );
    assert!(reason.contains("issuer"), "{reason}");
    // Expired beyond the leeway; but within it, still good (clock skew).
    let reason = invalid(
        verifier
            .verify(&good.sign(&with("exp", json!(now() - 120))))
            .await,
        "expired",
    );
    assert!(reason.contains("expired"), "{reason}");
    verifier
        .verify(&good.sign(&with("exp", json!(now() - 30))))
        .await
        .expect("30 s past exp is within the 60 s leeway");
    let reason = invalid(
        verifier
            .verify(&good.sign(&with("nbf", json!(now() + 600))))
            .await,
        "not yet valid",
    );
    assert!(reason.contains("nbf"), "{reason}");
    // Required claims.
    for missing in ["exp", "sub", "aud", "iss"] {
        let mut c = base.clone();
        c.as_object_mut().unwrap().remove(missing);
        invalid(verifier.verify(&good.sign(&c)).await, missing);
    }
    // alg none, and a shared-secret algorithm keyed with public material (algorithm confusion).
    invalid(verifier.verify(&idp::unsigned(&base)).await, "alg none");
    let public = good.jwk["n"].as_str().unwrap().as_bytes();
    let reason = invalid(
        verifier
            .verify(&idp::hmac_signed("rsa-1", public, &base))
            .await,
        "HS256",
    );
    assert!(reason.contains("not accepted"), "{reason}");
    // Garbage.
    for junk in ["", "a.b.c", "not a token", "..", "eyJhbGciOiJSUzI1NiJ9.e30"] {
        invalid(verifier.verify(junk).await, junk);
    }
    // A tenants claim that is not a list of tenant ids.
    invalid(
        verifier
            .verify(&good.sign(&with("switchyard_tenants", json!(["acme"]))))
            .await,
        "tenants",
    );
}

#[tokio::test]
async fn a_rotated_key_is_found_by_reading_the_jwks_again_at_most_every_ten_seconds() {
    let (old, new) = (Key::rsa("2026-11"), Key::ec("2026-12"));
    let idp = JwksServer::start(idp::jwks(&[&old])).await;
    let mut verifier = Verifier::from_args(&args(&idp.url)).unwrap().unwrap();
    verifier.keys.min_refresh = std::time::Duration::from_millis(300);
    let token = |key: &Key| key.sign(&claims("alice", &["auditor"], &[]));
    verifier.verify(&token(&old)).await.unwrap();
    assert_eq!(idp.hits(), 1);
    // The IdP publishes the new key; the first token naming it makes the verifier look again.
    idp.publish(idp::jwks(&[&old, &new]));
    // Within MIN_REFRESH of the last read, an unknown kid does not cause another read...
    invalid(verifier.verify(&token(&new)).await, "too soon");
    assert_eq!(idp.hits(), 1);
    // ...and many made-up key ids cause none either.
    for i in 0..20 {
        let _ = verifier
            .verify(&old.sign_as(&format!("made-up-{i}"), &claims("x", &[], &[])))
            .await;
    }
    assert_eq!(idp.hits(), 1);
    // Once that interval has passed, the new key is read and accepted, and the old one still is.
    tokio::time::sleep(std::time::Duration::from_millis(350)).await;
    let identity = verifier.verify(&token(&new)).await.unwrap();
    assert_eq!(identity.roles, vec![Role::Auditor]);
    assert_eq!(idp.hits(), 2);
    verifier.verify(&token(&old)).await.unwrap();
    assert_eq!(idp.hits(), 2);
}

#[tokio::test]
async fn keys_already_held_keep_working_while_the_idp_is_down() {
    let key = Key::rsa("rsa-1");
    let idp = JwksServer::start(idp::jwks(&[&key])).await;
    let mut args = args(&idp.url);
    args.jwks_ttl_secs = 1;
    let mut verifier = Verifier::from_args(&args).unwrap().unwrap();
    verifier.keys.min_refresh = std::time::Duration::from_millis(10);
    let token = key.sign(&claims("alice", &["auditor"], &[]));
    verifier.verify(&token).await.unwrap();
    // The IdP now answers garbage; after the TTL the refresh fails and the held keys serve.
    idp.publish("<html>maintenance</html>".into());
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    verifier.verify(&token).await.unwrap();
    assert_eq!(idp.hits(), 2);
    // With no keys ever read, the answer is "unavailable", not "invalid".
    let cold = Verifier::from_args(&args).unwrap().unwrap();
    assert!(matches!(
        cold.verify(&token).await,
        Err(OidcError::KeysUnavailable(_))
    ));
}

#[test]
fn settings_are_checked_at_start() {
    let mut bad = args("http://127.0.0.1:1/jwks.json");
    bad.audience.clear();
    assert!(matches!(
        Verifier::from_args(&bad),
        Err(OidcError::Config(_))
    ));
    let mut bad = args("ftp://idp/jwks.json");
    bad.jwks_file = None;
    assert!(matches!(
        Verifier::from_args(&bad),
        Err(OidcError::Config(_))
    ));
    let mut both = args("http://127.0.0.1:1/jwks.json");
    both.jwks_file = Some("/tmp/jwks.json".into());
    assert!(matches!(
        Verifier::from_args(&both),
        Err(OidcError::Config(_))
    ));
    let mut map = args("http://127.0.0.1:1/jwks.json");
    map.role_map = vec!["group=superuser".into()];
    assert!(matches!(
        Verifier::from_args(&map),
        Err(OidcError::Config(_))
    ));
    let off = OidcArgs::default();
    assert!(Verifier::from_args(&off).unwrap().is_none());
}

#[test]
fn claims_are_read_by_path_and_in_every_common_shape() {
    let claims: Map<String, Value> = serde_json::from_value(json!({
        "roles": "auditor billing-viewer",
        "realm_access": {"roles": ["tenant-admin"]},
        "a.b": ["platform-admin"],
        "n": 5,
    }))
    .unwrap();
    assert_eq!(
        strings(claim(&claims, "roles")),
        ["auditor", "billing-viewer"]
    );
    assert_eq!(
        strings(claim(&claims, "realm_access.roles")),
        ["tenant-admin"]
    );
    assert_eq!(strings(claim(&claims, "a.b")), ["platform-admin"]);
    assert!(strings(claim(&claims, "n")).is_empty());
    assert!(strings(claim(&claims, "missing.path")).is_empty());
}

#[test]
fn a_jwks_with_unknown_key_types_keeps_the_keys_it_can_use() {
    let ec = Key::ec("ec-1");
    let doc = json!({"keys": [{"kty": "future", "kid": "x"}, ec.jwk]}).to_string();
    let keys = jwks::parse(doc.as_bytes()).unwrap();
    assert_eq!(keys.keys.len(), 1);
    assert!(jwks::parse(b"{\"keys\": 5}").is_err());
    assert!(jwks::parse(b"<html>").is_err());
}
