//! Given events, when a command, then events (or a rejection): the tenant's rules with no
//! runtime and no store.

use switchyard_events::Event;
use time::OffsetDateTime;
use uuid::Uuid;

use super::*;

const NOW: i64 = 1_800_000_000;

fn now() -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp(NOW).unwrap()
}

fn given(events: &[Event]) -> TenantState {
    let mut state = TenantState::default();
    for event in events {
        Tenant::apply(&mut state, event);
    }
    state
}

fn when(history: &[Event], command: TenantCommand) -> Result<Vec<Event>, TenantRejection> {
    Tenant::decide(&given(history), command, now())
}

fn created() -> Event {
    Event::TenantCreated(TenantCreated {
        name: "Acme".into(),
        plan: "pro".into(),
    })
}

fn issue(key_id: Uuid) -> TenantCommand {
    TenantCommand::IssueKey {
        key_id,
        name: "backend".into(),
        key_hash: "ab".repeat(32),
        prefix: "sy_ab12".into(),
        scopes: vec!["inference".into()],
        expires_at_unix: Some(NOW + 3600),
    }
}

#[test]
fn a_new_tenant_is_created_once() {
    let create = TenantCommand::Create {
        name: "Acme".into(),
        plan: "pro".into(),
    };
    assert_eq!(when(&[], create.clone()), Ok(vec![created()]));
    assert_eq!(
        when(&[created()], create),
        Err(TenantRejection::AlreadyExists)
    );
}

#[test]
fn nothing_but_create_works_before_the_tenant_exists() {
    for command in [
        TenantCommand::Rename { name: "x".into() },
        TenantCommand::Resume,
        issue(Uuid::now_v7()),
    ] {
        assert_eq!(when(&[], command), Err(TenantRejection::NotFound));
    }
}

#[test]
fn hostile_names_plans_and_flags_are_refused() {
    for (name, plan) in [
        ("", "pro"),
        ("   ", "pro"),
        ("a\u{0}b", "pro"),
        (&*"n".repeat(101), "pro"),
        ("Acme", "Pro Plan"),
        ("Acme", ""),
    ] {
        let command = TenantCommand::Create {
            name: name.into(),
            plan: plan.into(),
        };
        assert!(
            matches!(when(&[], command), Err(TenantRejection::Invalid(_))),
            "{name:?}/{plan:?} accepted"
        );
    }
    let flag = TenantCommand::SetFlag {
        flag: "DROP TABLE".into(),
        enabled: true,
    };
    assert!(matches!(
        when(&[created()], flag),
        Err(TenantRejection::Invalid(_))
    ));
}

#[test]
fn renaming_to_the_same_name_changes_nothing() {
    assert_eq!(
        when(
            &[created()],
            TenantCommand::Rename {
                name: "Acme".into()
            }
        ),
        Ok(vec![])
    );
    let renamed = when(
        &[created()],
        TenantCommand::Rename {
            name: "Acme Corp".into(),
        },
    )
    .unwrap();
    assert_eq!(given(&[created(), renamed[0].clone()]).name, "Acme Corp");
}

#[test]
fn suspension_and_resumption_alternate() {
    let suspended = Event::TenantSuspended(TenantSuspended {
        reason: "unpaid".into(),
    });
    assert_eq!(
        when(
            &[created()],
            TenantCommand::Suspend {
                reason: "unpaid".into()
            }
        ),
        Ok(vec![suspended.clone()])
    );
    assert_eq!(
        when(
            &[created(), suspended.clone()],
            TenantCommand::Suspend {
                reason: "again".into()
            }
        ),
        Err(TenantRejection::Suspended)
    );
    assert_eq!(
        when(&[created()], TenantCommand::Resume),
        Err(TenantRejection::NotSuspended)
    );
    let resumed = when(&[created(), suspended.clone()], TenantCommand::Resume).unwrap();
    assert_eq!(
        given(&[created(), suspended, resumed[0].clone()]).suspended,
        None
    );
}

#[test]
fn flags_and_settings_record_only_changes() {
    let on = Event::TenantFlagSet(TenantFlagSet {
        flag: "streaming".into(),
        enabled: true,
    });
    assert_eq!(
        when(
            &[created()],
            TenantCommand::SetFlag {
                flag: "streaming".into(),
                enabled: true
            }
        ),
        Ok(vec![on.clone()])
    );
    assert_eq!(
        when(
            &[created(), on.clone()],
            TenantCommand::SetFlag {
                flag: "streaming".into(),
                enabled: true
            }
        ),
        Ok(vec![])
    );
    let set = Event::TenantSettingSet(TenantSettingSet {
        key: "cors_origins".into(),
        value: Some("*".into()),
    });
    let state = given(&[created(), on, set.clone()]);
    assert_eq!(state.flags.get("streaming"), Some(&true));
    assert_eq!(
        state.settings.get("cors_origins").map(String::as_str),
        Some("*")
    );
    let removed = when(
        &[created(), set.clone()],
        TenantCommand::SetSetting {
            key: "cors_origins".into(),
            value: None,
        },
    )
    .unwrap();
    assert!(
        given(&[created(), set, removed[0].clone()])
            .settings
            .is_empty()
    );
}

#[test]
fn keys_are_issued_with_their_hash_only_and_revoked_for_good() {
    let key_id = Uuid::now_v7();
    let issued = when(&[created()], issue(key_id)).unwrap();
    let Event::ApiKeyIssued(payload) = &issued[0] else {
        panic!("{issued:?}")
    };
    assert_eq!(payload.key_hash, "ab".repeat(32));
    let state = given(&[created(), issued[0].clone()]);
    assert!(state.keys[&key_id].is_usable(now()));
    assert_eq!(
        when(&[created(), issued[0].clone()], issue(key_id)),
        Err(TenantRejection::DuplicateKey)
    );

    let revoked = when(
        &[created(), issued[0].clone()],
        TenantCommand::RevokeKey { key_id },
    )
    .unwrap();
    let history = [created(), issued[0].clone(), revoked[0].clone()];
    assert!(!given(&history).keys[&key_id].is_usable(now()));
    assert_eq!(
        when(&history, TenantCommand::RevokeKey { key_id }),
        Ok(vec![]),
        "revoking twice is a no-op"
    );
    assert_eq!(
        when(&[created()], TenantCommand::RevokeKey { key_id }),
        Err(TenantRejection::UnknownKey)
    );
}

#[test]
fn keys_expire_and_cannot_be_born_expired() {
    let key_id = Uuid::now_v7();
    let issued = when(&[created()], issue(key_id)).unwrap();
    let key = &given(&[created(), issued[0].clone()]).keys[&key_id];
    assert!(key.is_usable(now()));
    assert!(!key.is_usable(OffsetDateTime::from_unix_timestamp(NOW + 3600).unwrap()));
    let TenantCommand::IssueKey {
        name,
        key_hash,
        prefix,
        scopes,
        ..
    } = issue(key_id)
    else {
        unreachable!()
    };
    let expired = TenantCommand::IssueKey {
        key_id,
        name,
        key_hash,
        prefix,
        scopes,
        expires_at_unix: Some(NOW),
    };
    assert!(matches!(
        when(&[created()], expired),
        Err(TenantRejection::Invalid(_))
    ));
}

#[test]
fn a_suspended_tenant_gets_no_new_keys() {
    let suspended = Event::TenantSuspended(TenantSuspended {
        reason: "abuse".into(),
    });
    assert_eq!(
        when(&[created(), suspended], issue(Uuid::now_v7())),
        Err(TenantRejection::Suspended)
    );
}

#[test]
fn limits_are_replaced_whole_and_zero_is_refused() {
    let limits = Limits {
        requests_per_minute: Some(600),
        tokens_per_minute: None,
        monthly_budget_micros: Some(250_000_000),
        daily_budget_micros: Some(20_000_000),
        monthly_token_budget: None,
        daily_token_budget: Some(1_000_000),
    };
    let set = when(&[created()], TenantCommand::SetLimits(limits)).unwrap();
    let state = given(&[created(), set[0].clone()]);
    assert_eq!(state.limits, limits);
    assert_eq!(
        when(
            &[created(), set[0].clone()],
            TenantCommand::SetLimits(limits)
        ),
        Ok(vec![])
    );
    let zero = Limits {
        requests_per_minute: Some(0),
        ..Limits::default()
    };
    assert!(matches!(
        when(&[created()], TenantCommand::SetLimits(zero)),
        Err(TenantRejection::Invalid(_))
    ));
}

#[test]
fn key_and_model_rate_limits_are_set_replaced_and_removed() {
    let key_id = Uuid::now_v7();
    let issued = when(&[created()], issue(key_id)).unwrap();
    let history: Vec<Event> = std::iter::once(created()).chain(issued).collect();
    let limits = RateLimits {
        requests_per_minute: Some(10),
        tokens_per_minute: Some(5_000),
    };
    let set_key = TenantCommand::SetRateLimit {
        scope: LimitScope::Key(key_id),
        limits,
    };
    let events = when(&history, set_key.clone()).unwrap();
    assert_eq!(
        events,
        vec![Event::RateLimitSet(RateLimitSet {
            scope: LimitScope::Key(key_id),
            requests_per_minute: Some(10),
            tokens_per_minute: Some(5_000),
        })]
    );
    let history: Vec<Event> = history.into_iter().chain(events).collect();
    assert_eq!(given(&history).key_limits.get(&key_id), Some(&limits));
    // The same limits again change nothing.
    assert_eq!(when(&history, set_key), Ok(vec![]));
    // All None removes the tier.
    let cleared = when(
        &history,
        TenantCommand::SetRateLimit {
            scope: LimitScope::Key(key_id),
            limits: RateLimits::default(),
        },
    )
    .unwrap();
    let history: Vec<Event> = history.into_iter().chain(cleared).collect();
    assert!(given(&history).key_limits.is_empty());

    let model = TenantCommand::SetRateLimit {
        scope: LimitScope::Model("sim-large".into()),
        limits,
    };
    let events = when(&history, model).unwrap();
    let history: Vec<Event> = history.into_iter().chain(events).collect();
    assert_eq!(given(&history).model_limits.get("sim-large"), Some(&limits));
}

#[test]
fn rate_limits_of_unknown_keys_zero_limits_and_hostile_models_are_refused() {
    let limits = RateLimits {
        requests_per_minute: Some(1),
        tokens_per_minute: None,
    };
    assert_eq!(
        when(
            &[created()],
            TenantCommand::SetRateLimit {
                scope: LimitScope::Key(Uuid::now_v7()),
                limits,
            }
        ),
        Err(TenantRejection::UnknownKey)
    );
    for model in ["", "a\u{0}b", &"m".repeat(201)] {
        assert!(matches!(
            when(
                &[created()],
                TenantCommand::SetRateLimit {
                    scope: LimitScope::Model(model.to_owned()),
                    limits,
                }
            ),
            Err(TenantRejection::Invalid(_))
        ));
    }
    let zero = RateLimits {
        requests_per_minute: Some(0),
        tokens_per_minute: None,
    };
    assert!(matches!(
        when(
            &[created()],
            TenantCommand::SetRateLimit {
                scope: LimitScope::Model("sim-small".into()),
                limits: zero,
            }
        ),
        Err(TenantRejection::Invalid(_))
    ));
    assert_eq!(
        when(
            &[],
            TenantCommand::SetRateLimit {
                scope: LimitScope::Model("sim-small".into()),
                limits,
            }
        ),
        Err(TenantRejection::NotFound)
    );
}

fn issued_events(key_id: Uuid) -> Vec<Event> {
    let state = given(&[created()]);
    Tenant::decide(&state, issue(key_id), now()).unwrap()
}

fn rotate(key_id: Uuid, new_key_id: Uuid, grace_until_unix: i64) -> TenantCommand {
    TenantCommand::RotateKey {
        key_id,
        new_key_id,
        key_hash: "cd".repeat(32),
        prefix: "sy_cd34".into(),
        grace_until_unix,
    }
}

#[test]
fn a_rotated_key_is_replaced_by_one_like_it_and_works_until_the_grace_ends() {
    let old = Uuid::now_v7();
    let new = Uuid::now_v7();
    let mut history = vec![created()];
    history.extend(issued_events(old));
    // The old key expires in an hour; a 10-minute grace ends first.
    let events = when(&history, rotate(old, new, NOW + 600)).unwrap();
    let [Event::ApiKeyIssued(issued), Event::ApiKeyRotated(rotated)] = events.as_slice() else {
        panic!("unexpected events {events:?}");
    };
    assert_eq!(issued.key_id, new);
    assert_eq!(issued.name, "backend");
    assert_eq!(issued.scopes, vec!["inference".to_owned()]);
    assert_eq!(issued.expires_at_unix, Some(NOW + 3600));
    assert_eq!(rotated.key_id, old);
    assert_eq!(rotated.replaced_by, new);
    assert_eq!(rotated.old_expires_at_unix, NOW + 600);
    history.extend(events);
    let state = given(&history);
    assert!(state.keys[&old].is_usable(now()));
    let after_grace = OffsetDateTime::from_unix_timestamp(NOW + 600).unwrap();
    assert!(!state.keys[&old].is_usable(after_grace));
    assert!(state.keys[&new].is_usable(after_grace));
    // A grace longer than the key's own life does not extend it.
    let mut history = vec![created()];
    history.extend(issued_events(old));
    let events = when(&history, rotate(old, new, NOW + 86_400)).unwrap();
    let Event::ApiKeyRotated(rotated) = &events[1] else {
        panic!("{events:?}")
    };
    assert_eq!(rotated.old_expires_at_unix, NOW + 3600);
}

#[test]
fn only_a_live_key_can_be_rotated() {
    let old = Uuid::now_v7();
    let mut history = vec![created()];
    history.extend(issued_events(old));
    assert_eq!(
        when(&history, rotate(Uuid::now_v7(), Uuid::now_v7(), NOW)),
        Err(TenantRejection::UnknownKey)
    );
    assert_eq!(
        when(&history, rotate(old, old, NOW)),
        Err(TenantRejection::DuplicateKey)
    );
    assert!(matches!(
        when(&history, rotate(old, Uuid::now_v7(), NOW - 1)),
        Err(TenantRejection::Invalid(_))
    ));
    history.push(Event::ApiKeyRevoked(ApiKeyRevoked { key_id: old }));
    assert!(matches!(
        when(&history, rotate(old, Uuid::now_v7(), NOW)),
        Err(TenantRejection::Invalid(_))
    ));
}

#[test]
fn a_deleted_tenant_loses_its_keys_and_refuses_every_command() {
    let (a, b) = (Uuid::now_v7(), Uuid::now_v7());
    let mut history = vec![created()];
    history.extend(issued_events(a));
    history.extend(issued_events(b));
    history.push(Event::ApiKeyRevoked(ApiKeyRevoked { key_id: b }));
    let events = when(
        &history,
        TenantCommand::Delete {
            reason: "closed".into(),
        },
    )
    .unwrap();
    // The live key is revoked (the one already revoked is not again), then the tenant goes.
    assert_eq!(
        events,
        vec![
            Event::ApiKeyRevoked(ApiKeyRevoked { key_id: a }),
            Event::TenantDeleted(TenantDeleted {
                reason: "closed".into()
            }),
        ]
    );
    history.extend(events);
    let state = given(&history);
    assert!(state.deleted);
    assert!(state.keys.values().all(|k| !k.is_usable(now())));
    for command in [
        TenantCommand::Rename { name: "x".into() },
        TenantCommand::Resume,
        TenantCommand::Delete {
            reason: "again".into(),
        },
        issue(Uuid::now_v7()),
        rotate(a, Uuid::now_v7(), NOW),
    ] {
        assert_eq!(when(&history, command), Err(TenantRejection::NotFound));
    }
    assert!(matches!(
        when(
            &[created()],
            TenantCommand::Delete {
                reason: "\u{7}".into()
            }
        ),
        Err(TenantRejection::Invalid(_))
    ));
}
