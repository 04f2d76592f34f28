//! OpenAI's rate-limit headers (`x-ratelimit-{limit,remaining,reset}-{requests,tokens}`) from
//! the status that admission reports.

use actix_web::http::header::{HeaderName, HeaderValue};
use switchyard_inference::RateStatus;

/// Limit, remaining, and time until the limit is whole again, for requests and for tokens.
pub fn rate_headers(status: &RateStatus) -> Vec<(HeaderName, HeaderValue)> {
    let mut headers = Vec::with_capacity(6);
    for (decision, unit) in [(status.requests, "requests"), (status.tokens, "tokens")] {
        let Some(decision) = decision else { continue };
        let reset = format!("{:.3}s", decision.reset_after.as_secs_f64());
        for (name, value) in [
            ("limit", HeaderValue::from(decision.limit)),
            ("remaining", HeaderValue::from(decision.remaining)),
            (
                "reset",
                HeaderValue::from_str(&reset).unwrap_or(HeaderValue::from_static("0s")),
            ),
        ] {
            if let Ok(name) =
                HeaderName::from_bytes(format!("x-ratelimit-{name}-{unit}").as_bytes())
            {
                headers.push((name, value));
            }
        }
    }
    headers
}

/// A response with these headers added.
pub fn with_headers(
    mut response: actix_web::HttpResponse,
    headers: Vec<(HeaderName, HeaderValue)>,
) -> actix_web::HttpResponse {
    for (name, value) in headers {
        response.headers_mut().insert(name, value);
    }
    response
}
