//! Fault injection: the failures tokend must classify as transient (SPEC §4 "Transient
//! failures"): 5xx, 429 with `Retry-After`, timeouts, dropped connections and unparseable
//! bodies, plus Funcional's GraphQL errors on HTTP 200.
//!
//! [`inject`] is an axum middleware in front of every token endpoint. It counts the request,
//! then either passes it on or answers with the fault. [`Fault::Drop`] can't be expressed
//! as a response: the middleware marks its response with [`DropConnection`] and the
//! connection service in `server.rs` turns that into an error, which makes hyper close the
//! socket without writing anything.

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use rand::RngExt;
use rand::rngs::StdRng;

use super::state::Api;

/// A failure to answer with instead of the real response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// That HTTP status with a short plain-text body (e.g. 500, 502, 503). A number that is
    /// not a valid status code becomes 500.
    Status(u16),
    /// 429 Too Many Requests with `Retry-After: <retry_after_secs>`.
    TooManyRequests {
        /// The `Retry-After` value, in seconds.
        retry_after_secs: u64,
    },
    /// Waits this long, then handles the request normally: longer than the client's
    /// timeout, it looks like a hung server. If the client gives up first, its closed
    /// connection ends the request and nothing is issued (hyper drops the handler).
    Delay(Duration),
    /// Handles the request at once (tokens are issued, a refresh token is spent), then
    /// holds the answer this long: a client killed meanwhile has made its provider call
    /// but never learns the result, the case a rotating refresh token must survive.
    DelayAnswer(Duration),
    /// Closes the connection without writing any response.
    Drop,
    /// 200 with `Content-Type: application/json` and a body that is not JSON.
    Garbage,
    /// 200 with a GraphQL `errors` array and `"data": null` (Funcional's way to fail; on
    /// the other providers it is a 200 body without a token).
    GraphqlError,
}

/// Response extension that asks the connection service to close the socket unanswered.
#[derive(Debug, Clone, Copy)]
pub(crate) struct DropConnection;

/// The faults planned for one provider.
#[derive(Debug, Default)]
pub(crate) struct FaultPlan {
    queued: VecDeque<Fault>,
    rate: f64,
    kinds: Vec<Fault>,
}

impl FaultPlan {
    pub(crate) fn queue(&mut self, n: usize, fault: Fault) {
        self.queued.extend(std::iter::repeat_n(fault, n));
    }

    pub(crate) fn set_random(&mut self, rate: f64, kinds: Vec<Fault>) {
        // NaN clamps to NaN; treat it as "off" like any rate that can never fire.
        self.rate = if rate.is_nan() {
            0.0
        } else {
            rate.clamp(0.0, 1.0)
        };
        self.kinds = kinds;
    }

    pub(crate) fn clear(&mut self) {
        *self = FaultPlan::default();
    }

    /// The fault for the next request: a queued one first, else a random draw.
    pub(crate) fn next(&mut self, rng: &mut StdRng) -> Option<Fault> {
        if let Some(fault) = self.queued.pop_front() {
            return Some(fault);
        }
        if self.kinds.is_empty() || self.rate <= 0.0 || rng.random::<f64>() >= self.rate {
            return None;
        }
        let pick = rng.random_range(0..self.kinds.len());
        Some(self.kinds[pick].clone())
    }
}

/// Middleware in front of every token endpoint: counts the request, keeps it in flight
/// while it runs, and applies the next planned fault.
pub(crate) async fn inject(State(api): State<Api>, request: Request, next: Next) -> Response {
    let _in_flight = api.stats().begin_request();
    tracing::debug!(
        provider = %api.provider,
        method = %request.method(),
        path = request.uri().path(),
        "emulator request"
    );
    let Some(fault) = api.next_fault() else {
        return next.run(request).await;
    };
    api.stats().faults.fetch_add(1, Ordering::Relaxed);
    tracing::debug!(provider = %api.provider, ?fault, "emulator injects fault");
    match fault {
        Fault::Delay(delay) => {
            tokio::time::sleep(delay).await;
            next.run(request).await
        }
        Fault::DelayAnswer(delay) => {
            let response = next.run(request).await;
            tokio::time::sleep(delay).await;
            response
        }
        Fault::Status(code) => {
            let status = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            (status, format!("emulated fault: {status}\n")).into_response()
        }
        Fault::TooManyRequests { retry_after_secs } => {
            let mut response = (
                StatusCode::TOO_MANY_REQUESTS,
                "emulated fault: 429 Too Many Requests\n",
            )
                .into_response();
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(retry_after_secs));
            response
        }
        Fault::Drop => {
            let mut response = StatusCode::INTERNAL_SERVER_ERROR.into_response();
            response.extensions_mut().insert(DropConnection);
            response
        }
        Fault::Garbage => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "application/json")],
            "<html><body>upstream says hello</body></html>\n",
        )
            .into_response(),
        Fault::GraphqlError => (
            StatusCode::OK,
            axum::Json(serde_json::json!({
                "errors": [{
                    "message": "Internal server error",
                    "extensions": {"code": "INTERNAL_SERVER_ERROR"},
                }],
                "data": null,
            })),
        )
            .into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn queued_faults_come_first_then_random_draws_follow_the_rate() {
        let mut rng = StdRng::seed_from_u64(7);
        let mut plan = FaultPlan::default();
        plan.queue(2, Fault::Drop);
        plan.set_random(1.0, vec![Fault::Status(503)]);
        assert_eq!(plan.next(&mut rng), Some(Fault::Drop));
        assert_eq!(plan.next(&mut rng), Some(Fault::Drop));
        assert_eq!(plan.next(&mut rng), Some(Fault::Status(503)));
        plan.set_random(0.0, vec![Fault::Status(503)]);
        assert_eq!(plan.next(&mut rng), None);
        plan.set_random(0.5, vec![Fault::Garbage]);
        let hits = (0..1000).filter(|_| plan.next(&mut rng).is_some()).count();
        assert!((400..600).contains(&hits), "{hits} of 1000 at rate 0.5");
        plan.clear();
        assert_eq!(plan.next(&mut rng), None);
    }
}
