//! The backend conformance suite, run against every backend: the test names read
//! `conformance::<backend>::<what is proven>`.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

mod common;

mod conformance {
    mod memory {
        switchyard_events::conformance_suite!(async { switchyard_events::MemoryStore::new() });
    }

    mod sqlite {
        switchyard_events::conformance_suite!(crate::common::sqlite_store());
    }

    mod postgres {
        switchyard_events::conformance_suite!(crate::common::postgres_store());
    }
}
