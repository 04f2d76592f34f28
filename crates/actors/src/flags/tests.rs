//! Flags: the order of evaluation, sticky and proportional rollouts, and refused definitions.

use super::*;

fn subject(tenant: TenantId, key: Uuid) -> Subject<'static> {
    Subject {
        tenant,
        plan: Some("free"),
        key: Some(key),
        user: None,
        tenant_switch: None,
    }
}

fn flag(text: &str) -> Flag {
    Flag::parse(text).unwrap_or_else(|e| panic!("{text}: {e}"))
}

#[test]
fn the_kill_switch_beats_everything_and_targets_beat_the_rollout() {
    let tenant = TenantId::new();
    let key = Uuid::now_v7();
    let on = |f: &Flag, s: &Subject<'_>| f.evaluate("f", s);
    let targeted = flag(&format!(
        r#"{{"rollout_percent": 0, "keys": ["{key}"], "tenants": [], "plans": ["pro"]}}"#
    ));
    assert_eq!(
        on(&targeted, &subject(tenant, key)),
        Decision {
            on: true,
            reason: Reason::Key
        }
    );
    let other = subject(tenant, Uuid::now_v7());
    assert_eq!(on(&targeted, &other).reason, Reason::Rollout);
    assert!(!on(&targeted, &other).on, "0% and not targeted: off");
    let pro = Subject {
        plan: Some("pro"),
        ..other
    };
    assert_eq!(on(&targeted, &pro).reason, Reason::Plan);
    let tenant_flag = flag(&format!(r#"{{"tenants": ["{}"]}}"#, tenant));
    assert_eq!(on(&tenant_flag, &other).reason, Reason::Tenant);

    // The tenant's own switch beats targets and rollout, not the kill switch.
    let everyone = flag(r#"{"rollout_percent": 100}"#);
    let switched_off = Subject {
        tenant_switch: Some(false),
        ..other
    };
    assert_eq!(
        on(&everyone, &switched_off),
        Decision {
            on: false,
            reason: Reason::TenantSwitch
        }
    );
    let killed = flag(&format!(
        r#"{{"enabled": false, "rollout_percent": 100, "keys": ["{key}"]}}"#
    ));
    let switched_on = Subject {
        tenant_switch: Some(true),
        ..subject(tenant, key)
    };
    assert_eq!(
        on(&killed, &switched_on),
        Decision {
            on: false,
            reason: Reason::Kill
        }
    );
}

#[test]
fn a_rollout_is_sticky_proportional_and_only_grows() {
    let tenant = TenantId::new();
    let keys: Vec<Uuid> = (0..4_000).map(|_| Uuid::now_v7()).collect();
    let at = |percent: u32| {
        let f = flag(&format!(r#"{{"rollout_percent": {percent}}}"#));
        keys.iter()
            .map(|k| f.evaluate("new-router", &subject(tenant, *k)).on)
            .collect::<Vec<_>>()
    };
    let quarter = at(25);
    assert_eq!(quarter, at(25), "the same subject, the same answer");
    let share = quarter.iter().filter(|on| **on).count() as f64 / keys.len() as f64;
    assert!((0.22..0.28).contains(&share), "25% rolled out to {share}");
    let half = at(50);
    assert!(
        quarter.iter().zip(&half).all(|(q, h)| !q || *h),
        "raising the percentage keeps everyone who had it"
    );
    assert!(at(0).iter().all(|on| !on));
    assert!(at(100).iter().all(|on| *on));

    // Another flag at the same percentage picks other subjects.
    let f = flag(r#"{"rollout_percent": 25}"#);
    let other: Vec<bool> = keys
        .iter()
        .map(|k| f.evaluate("other-flag", &subject(tenant, *k)).on)
        .collect();
    assert_ne!(quarter, other);
}

#[test]
fn sticky_by_user_and_by_tenant() {
    let tenant = TenantId::new();
    let by_user = flag(r#"{"rollout_percent": 50, "sticky_by": "user"}"#);
    // One user on many keys: one answer.
    let answers: Vec<bool> = (0..50)
        .map(|_| {
            let s = Subject {
                user: Some("alice"),
                ..subject(tenant, Uuid::now_v7())
            };
            by_user.evaluate("f", &s).on
        })
        .collect();
    assert!(answers.iter().all(|a| *a == answers[0]));
    let by_tenant = flag(r#"{"rollout_percent": 50, "sticky_by": "tenant"}"#);
    let answers: Vec<bool> = (0..50)
        .map(|_| by_tenant.evaluate("f", &subject(tenant, Uuid::now_v7())).on)
        .collect();
    assert!(answers.iter().all(|a| *a == answers[0]));
}

#[test]
fn hostile_definitions_are_refused() {
    for bad in [
        "",
        "[]",
        "{",
        r#"{"rollout_percent": 101}"#,
        r#"{"rollout_percent": -1}"#,
        r#"{"rollout_percent": "half"}"#,
        r#"{"enabled": "yes"}"#,
        r#"{"plans": ["Pro Plan"]}"#,
        r#"{"tenants": ["not-a-uuid"]}"#,
        r#"{"colour": "red"}"#,
        r#"{"description": "a\u0000b"}"#,
    ] {
        assert!(Flag::parse(bad).is_err(), "{bad} was taken");
    }
    let many = format!(
        r#"{{"plans": [{}]}}"#,
        (0..=MAX_TARGETS)
            .map(|i| format!("\"p{i}\""))
            .collect::<Vec<_>>()
            .join(",")
    );
    assert!(Flag::parse(&many).is_err());
}

#[test]
fn the_actor_writes_each_change_once_and_refuses_bad_ones() {
    let now = OffsetDateTime::UNIX_EPOCH;
    let set = |name: &str, definition: Option<&str>| FlagsCommand::Set {
        name: name.into(),
        definition: definition.map(str::to_owned),
    };
    let mut state = FlagsState::default();
    let events = FeatureFlags::decide(
        &state,
        set("semantic-cache", Some(r#"{"rollout_percent": 10}"#)),
        now,
    )
    .unwrap();
    assert_eq!(events.len(), 1);
    for event in &events {
        FeatureFlags::apply(&mut state, event);
    }
    // The same definition, written differently: nothing new.
    assert_eq!(
        FeatureFlags::decide(
            &state,
            set(
                "semantic-cache",
                Some(r#"{ "rollout_percent": 10.0, "enabled": true }"#)
            ),
            now
        ),
        Ok(vec![])
    );
    assert!(matches!(
        FeatureFlags::decide(&state, set("Bad Name", Some("{}")), now),
        Err(FlagsRejection::Invalid(_))
    ));
    assert_eq!(
        FeatureFlags::decide(&state, set("absent", None), now),
        Err(FlagsRejection::NotFound("absent".into()))
    );
    let removed = FeatureFlags::decide(&state, set("semantic-cache", None), now).unwrap();
    for event in &removed {
        FeatureFlags::apply(&mut state, event);
    }
    assert!(state.flags.is_empty());
}
