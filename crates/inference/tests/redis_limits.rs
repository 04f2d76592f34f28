//! The Redis limiter (the limits several nodes share) against a real Redis: taking, refusing,
//! charging after the fact and giving back, in the same steps as the in-process GCRA.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "tests: a panic is the failure report"
)]

use switchyard_inference::admission::ratelimit::{Limit, RedisLimiter};

fn redis_url() -> String {
    std::env::var("SWITCHYARD_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

#[tokio::test]
async fn units_given_back_can_be_taken_again_but_no_more() {
    let limiter = RedisLimiter::connect(&redis_url())
        .await
        .expect("Redis must be running for this test (scripts/services.sh starts it)");
    let key = format!("test:{}", uuid::Uuid::now_v7().simple());
    let limit = Limit::per_minute(60);
    assert!(limiter.check(&key, limit, 60).await.unwrap().allowed);
    assert!(!limiter.check(&key, limit, 1).await.unwrap().allowed);
    limiter.refund(&key, limit, 20).await.unwrap();
    assert!(limiter.check(&key, limit, 20).await.unwrap().allowed);
    assert!(!limiter.check(&key, limit, 1).await.unwrap().allowed);
    // A refund larger than what was taken leaves a full bucket, not more.
    limiter.refund(&key, limit, 1_000).await.unwrap();
    assert!(!limiter.check(&key, limit, 61).await.unwrap().allowed);
    assert!(limiter.check(&key, limit, 60).await.unwrap().allowed);
    // Charged after the fact: the next request waits for it.
    limiter.refund(&key, limit, 60).await.unwrap();
    limiter.charge(&key, limit, 60).await.unwrap();
    let refused = limiter.check(&key, limit, 1).await.unwrap();
    assert!(!refused.allowed);
    assert!(refused.retry_after.as_millis() > 0);
}
