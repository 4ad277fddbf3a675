//! The refresh policy as a table (one row per rule) and as properties over random event
//! sequences (proptest): never two requests within 1 s, never asleep past a held token's
//! expiry, at most `retry.max_expired` apart once expired, and no shortcut through a
//! rejected-credentials wait.

use super::*;
use proptest::prelude::*;

const T0: u64 = 1_800_000_000;

/// `T0 + s` seconds (s may be negative or fractional).
fn at(s: f64) -> SystemTime {
    let base = SystemTime::UNIX_EPOCH + Duration::from_secs(T0);
    if s >= 0.0 {
        base + Duration::from_secs_f64(s)
    } else {
        base - Duration::from_secs_f64(-s)
    }
}

fn secs(s: f64) -> Duration {
    Duration::from_secs_f64(s)
}

/// A account with nothing: now = T0, no request yet, no token, no failure, no plan.
fn idle() -> Facts {
    Facts {
        now: at(0.0),
        since_last_request: None,
        token: None,
        failures: 0,
        superseded: false,
        last_failure: None,
        planned: None,
    }
}

/// Deterministic draws: no refresh jitter, the full backoff ceiling.
const FULL: Samples = Samples {
    jitter: 0.0,
    backoff: 1.0,
};

fn transient(retry_after: Option<f64>) -> Event {
    Event::Failed {
        kind: FailureKind::Transient,
        retry_after: retry_after.map(secs),
    }
}

fn failed(kind: FailureKind) -> Event {
    Event::Failed {
        kind,
        retry_after: None,
    }
}

#[test]
fn each_rule_as_a_table_row() {
    use Action::{Request, Wait};
    let just_asked = Some(secs(0.0));
    let hour_token = Some((at(0.0), at(3600.0)));
    let rejected = |failures, planned| Facts {
        failures,
        last_failure: Some(FailureKind::Rejected),
        planned,
        ..idle()
    };
    // (what the row shows, facts, event, action, next, reason)
    #[rustfmt::skip]
    let rows: Vec<(&str, Facts, Event, Action, SystemTime, Reason)> = vec![
        ("a 1 h token is refreshed at 75 %",
         Facts { since_last_request: just_asked, ..idle() },
         Event::Obtained { obtained_at: at(0.0), expires_at: at(3600.0) }, Wait, at(2700.0), Reason::RefreshAhead),
        ("a token that lives 0.5 s is still not asked for again within 1 s",
         Facts { since_last_request: just_asked, ..idle() },
         Event::Obtained { obtained_at: at(0.0), expires_at: at(0.5) }, Wait, at(1.0), Reason::RefreshAhead),
        ("start: a fresh saved token keeps its saved plan",
         Facts { token: Some((at(-100.0), at(3500.0))), planned: Some(at(2600.0)), ..idle() },
         Event::Start, Wait, at(2600.0), Reason::RefreshAhead),
        ("start: a saved plan the timing could not have drawn is drawn again",
         Facts { token: Some((at(-100.0), at(3500.0))), planned: Some(at(10.0)), ..idle() },
         Event::Start, Wait, at(2600.0), Reason::RefreshAhead),
        ("start: new credentials log in at once while the old token is served",
         Facts { token: Some((at(-100.0), at(3500.0))), planned: Some(at(2600.0)), superseded: true, ..idle() },
         Event::Start, Request, at(0.0), Reason::Superseded),
        ("start: an expired token means a request now",
         Facts { token: Some((at(-3600.0), at(-1.0))), ..idle() },
         Event::Start, Request, at(0.0), Reason::NoToken),
        ("start: a valid token past its refresh time means a request now",
         Facts { token: Some((at(-3000.0), at(600.0))), ..idle() },
         Event::Start, Request, at(0.0), Reason::NoToken),
        ("start: a rejected-credentials wait survives a restart",
         rejected(1, Some(at(40.0))), Event::Start, Wait, at(40.0), Reason::Rejected),
        ("start: a saved wait from a bad state file is bounded by retry.max",
         rejected(1, Some(at(10.0 * 365.0 * 86400.0))), Event::Start, Wait, at(300.0), Reason::Rejected),
        ("due: woken early, keep waiting",
         Facts { planned: Some(at(5.0)), ..idle() }, Event::Due, Wait, at(5.0), Reason::Due),
        ("due: the planned time came",
         Facts { planned: Some(at(-0.001)), ..idle() }, Event::Due, Request, at(0.0), Reason::Due),
        ("SIGUSR1 asks now",
         Facts { token: hour_token, planned: Some(at(2700.0)), ..idle() }, Event::Nudge, Request, at(0.0), Reason::Nudge),
        ("SIGUSR1 0.3 s after a request waits for the 1 s spacing",
         Facts { since_last_request: Some(secs(0.3)), ..idle() }, Event::Nudge, Wait, at(0.7), Reason::Spacing),
        ("SIGUSR1 does not cut a rejected-credentials wait short",
         rejected(1, Some(at(50.0))), Event::Nudge, Wait, at(50.0), Reason::Rejected),
        ("a cron time asks now",
         Facts { token: hour_token, planned: Some(at(2700.0)), ..idle() }, Event::Cron, Request, at(0.0), Reason::Cron),
        ("a cron time does not cut a configuration-error wait short",
         Facts { failures: 1, last_failure: Some(FailureKind::Misconfigured), planned: Some(at(50.0)), ..idle() },
         Event::Cron, Wait, at(50.0), Reason::Misconfigured),
        ("a reload of the timing re-draws a fresh token's refresh",
         Facts { token: hour_token, planned: Some(at(1000.0)), ..idle() }, Event::TimingChanged, Wait, at(2700.0), Reason::RefreshAhead),
        ("a reload of the timing keeps a running backoff",
         Facts { failures: 2, last_failure: Some(FailureKind::Transient), planned: Some(at(7.0)), ..idle() },
         Event::TimingChanged, Wait, at(7.0), Reason::Backoff),
        ("a reload of the timing does not cut a rejected wait short",
         rejected(1, Some(at(30.0))), Event::TimingChanged, Wait, at(30.0), Reason::Rejected),
        ("first transient failure: retry.initial",
         Facts { since_last_request: just_asked, failures: 1, ..idle() }, transient(None), Wait, at(1.0), Reason::Backoff),
        ("fourth transient failure: 8 s",
         Facts { since_last_request: just_asked, failures: 4, token: hour_token, ..idle() }, transient(None), Wait, at(8.0), Reason::Backoff),
        ("a backoff past the held token's expiry is cut to half the time left",
         Facts { since_last_request: just_asked, failures: 9, token: Some((at(-10.0), at(36.0))), ..idle() },
         transient(None), Wait, at(18.0), Reason::BeforeExpiry),
        ("issue 11: eight 503s with 1 s left retries in 1 s, not 44 s",
         Facts { since_last_request: just_asked, failures: 8, token: Some((at(-35.0), at(1.0))), ..idle() },
         transient(None), Wait, at(1.0), Reason::BeforeExpiry),
        ("Retry-After is honoured while it lands before expiry",
         Facts { since_last_request: just_asked, failures: 1, token: hour_token, ..idle() },
         transient(Some(20.0)), Wait, at(20.0), Reason::RetryAfter),
        ("Retry-After is cut to land before expiry",
         Facts { since_last_request: just_asked, failures: 1, token: Some((at(-10.0), at(30.0))), ..idle() },
         transient(Some(120.0)), Wait, at(15.0), Reason::BeforeExpiry),
        ("expired: a long backoff is cut to retry.max_expired",
         Facts { since_last_request: just_asked, failures: 10, token: Some((at(-3600.0), at(-5.0))), ..idle() },
         transient(None), Wait, at(10.0), Reason::Expired),
        ("expired: so is a long Retry-After",
         Facts { since_last_request: just_asked, failures: 1, ..idle() },
         transient(Some(3600.0)), Wait, at(10.0), Reason::Expired),
        ("rejected credentials wait retry.rejected",
         Facts { since_last_request: just_asked, failures: 1, ..idle() }, failed(FailureKind::Rejected), Wait, at(60.0), Reason::Rejected),
        ("then double",
         Facts { since_last_request: just_asked, failures: 2, ..idle() }, failed(FailureKind::Rejected), Wait, at(120.0), Reason::Rejected),
        ("up to retry.max",
         Facts { since_last_request: just_asked, failures: 30, ..idle() }, failed(FailureKind::Rejected), Wait, at(300.0), Reason::Rejected),
        ("even while a valid token is held",
         Facts { since_last_request: just_asked, failures: 1, token: Some((at(-10.0), at(20.0))), ..idle() },
         failed(FailureKind::Rejected), Wait, at(60.0), Reason::Rejected),
        ("404/405 back off like rejected credentials",
         Facts { since_last_request: just_asked, failures: 1, ..idle() }, failed(FailureKind::Misconfigured), Wait, at(60.0), Reason::Misconfigured),
        ("another instance's live claim: look again after the recheck",
         Facts { since_last_request: just_asked, token: hour_token, ..idle() },
         Event::ClaimHeld { recheck: secs(1.0) }, Wait, at(1.0), Reason::ClaimHeld),
        ("a recheck sooner than 1 s still keeps attempts 1 s apart",
         Facts { since_last_request: just_asked, ..idle() },
         Event::ClaimHeld { recheck: secs(0.25) }, Wait, at(1.0), Reason::ClaimHeld),
        ("an absurd recheck stays within the horizon",
         Facts { since_last_request: None, ..idle() },
         Event::ClaimHeld { recheck: Duration::MAX }, Wait, at(0.0) + HORIZON, Reason::ClaimHeld),
    ];
    let (timing, retry) = (Timing::default(), Retry::default());
    for (what, facts, event, action, next, reason) in rows {
        let d = decide(&facts, event, &timing, &retry, FULL);
        assert_eq!(
            (d.action, d.next, d.reason),
            (action, next, reason),
            "\n{what}\nfacts: {facts:?}\nevent: {event:?}"
        );
    }
}

#[test]
fn waits_are_logged_to_the_millisecond_as_one_word() {
    for (d, text) in [
        (secs(3.996), "3.996s"),
        (secs(300.0), "300s"),
        (secs(0.5), "0.5s"),
        (secs(0.0), "0s"),
        (secs(61.25), "61.25s"),
    ] {
        assert_eq!(wait_text(d), text);
    }
}

#[test]
fn once_retries_only_short_transient_waits() {
    let d = |secs_from_now: f64, reason| Decision {
        action: Action::Wait,
        next: at(secs_from_now),
        reason,
    };
    #[rustfmt::skip]
    let rows = [
        ("a 2 s backoff is waited for", d(2.0, Reason::Backoff), 1, Some(secs(2.0))),
        ("a short Retry-After is waited for", d(5.0, Reason::RetryAfter), 2, Some(secs(5.0))),
        ("not after the last attempt", d(2.0, Reason::Backoff), ONCE_ATTEMPTS, None),
        ("not a long wait", d(30.0, Reason::Backoff), 1, None),
        ("never rejected credentials", d(1.0, Reason::Rejected), 1, None),
        ("never a configuration error", d(1.0, Reason::Misconfigured), 1, None),
    ];
    for (what, decision, attempts, expected) in rows {
        assert_eq!(once_retry(&decision, at(0.0), attempts), expected, "{what}");
    }
}

#[test]
fn sink_retries_back_off_and_permanent_errors_wait_a_minute() {
    let r = Retry::default();
    assert_eq!(sink_retry(0, true, &r, 1.0), secs(1.0));
    assert_eq!(sink_retry(3, true, &r, 1.0), secs(8.0));
    assert_eq!(sink_retry(0, false, &r, 0.0), secs(60.0));
    assert_eq!(sink_retry(u32::MAX, true, &r, 1.0), secs(300.0));
}

#[test]
fn status_shows_the_saved_plan_or_what_a_start_would_do() {
    let (t, r) = (Timing::default(), Retry::default());
    let planned = Facts {
        planned: Some(at(42.0)),
        ..idle()
    };
    assert_eq!(planned_attempt(&planned, &t, &r), at(42.0));
    assert_eq!(planned_attempt(&idle(), &t, &r), at(0.0));
}

#[test]
fn absurd_times_never_panic_and_stay_within_the_horizon() {
    let far = SystemTime::UNIX_EPOCH + Duration::from_secs(i64::MAX as u64 / 4);
    let (t, r) = (Timing::default(), Retry::default());
    let huge = Retry {
        initial: Duration::MAX,
        max: Duration::MAX,
        max_expired: Duration::MAX,
        rejected: Duration::MAX,
    };
    let facts = [
        Facts {
            token: Some((SystemTime::UNIX_EPOCH, far)),
            planned: Some(far),
            failures: u32::MAX,
            last_failure: Some(FailureKind::Rejected),
            ..idle()
        },
        Facts {
            now: far,
            token: Some((far, SystemTime::UNIX_EPOCH)),
            since_last_request: Some(Duration::MAX),
            ..idle()
        },
    ];
    let events = [
        Event::Start,
        Event::Due,
        Event::Nudge,
        Event::Cron,
        Event::TimingChanged,
        Event::Obtained {
            obtained_at: SystemTime::UNIX_EPOCH,
            expires_at: far,
        },
        transient(Some(1e12)),
        failed(FailureKind::Rejected),
    ];
    for f in &facts {
        for e in events {
            for retry in [&r, &huge] {
                let d = decide(f, e, &t, retry, FULL);
                assert!(
                    d.next <= f.now.checked_add(HORIZON).unwrap_or(f.now),
                    "{f:?} {e:?}: {d:?}"
                );
            }
        }
    }
}

/// What happens between two decisions in a random run.
#[derive(Debug, Clone)]
enum Step {
    /// Sleep until the plan (a `Due` event).
    Sleep,
    /// An outside event after `ms`.
    After(u64, Event),
}

/// How a request in a random run ends.
#[derive(Debug, Clone, Copy)]
enum Answer {
    Token { lifetime_ms: u64 },
    Transient { retry_after_ms: Option<u64> },
    Rejected,
    Misconfigured,
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        3 => Just(Step::Sleep),
        1 => (0u64..120_000).prop_map(|ms| Step::After(ms, Event::Nudge)),
        1 => (0u64..120_000).prop_map(|ms| Step::After(ms, Event::Cron)),
        1 => (0u64..120_000).prop_map(|ms| Step::After(ms, Event::TimingChanged)),
    ]
}

fn answer() -> impl Strategy<Value = Answer> {
    prop_oneof![
        3 => (0u64..7_200_000).prop_map(|lifetime_ms| Answer::Token { lifetime_ms }),
        4 => proptest::option::of(0u64..600_000)
            .prop_map(|retry_after_ms| Answer::Transient { retry_after_ms }),
        1 => Just(Answer::Rejected),
        1 => Just(Answer::Misconfigured),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

    /// Runs the policy the way the account task does, over random steps, answers, request
    /// durations and draws, and checks every rule at every decision.
    #[test]
    fn rules_hold_over_random_event_sequences(
        steps in proptest::collection::vec(step(), 1..60),
        answers in proptest::collection::vec(answer(), 1..60),
        took_ms in proptest::collection::vec(0u64..3_000, 1..60),
        jitter in -1.0f64..=1.0,
        backoff in 0.0f64..=1.0,
    ) {
        let (timing, retry) = (Timing::default(), Retry::default());
        let samples = Samples { jitter, backoff };
        let ms = |n: u64| Duration::from_millis(n);
        let mut f = idle();
        let mut last_request: Option<SystemTime> = None;
        let mut n_answer = 0usize;
        let mut event = Event::Start;
        for step in steps.iter().chain(std::iter::once(&Step::Sleep)) {
            f.since_last_request = last_request.map(|t| f.now.duration_since(t).unwrap_or_default());
            let held = f.last_failure.filter(|k| *k != FailureKind::Transient).and(f.planned).filter(|p| *p > f.now);
            let d = decide(&f, event, &timing, &retry, samples);
            // No shortcut through a rejected/misconfigured wait.
            if let (Some(p), Event::Nudge | Event::Cron | Event::TimingChanged | Event::Start) = (held, event) {
                prop_assert_eq!(d.action, Action::Wait, "{:?} in a hold", event);
                prop_assert!(d.next >= p.min(f.now + retry.max), "hold shortened: {:?} < {:?}", d.next, p);
            }
            if d.action == Action::Request {
                // Never two requests within 1 s.
                if let Some(t) = last_request {
                    prop_assert!(f.now.duration_since(t).unwrap_or_default() >= MIN_INTERVAL,
                        "two requests {:?} apart", f.now.duration_since(t));
                }
                last_request = Some(f.now);
                let answer = answers[n_answer % answers.len()];
                let took = ms(took_ms[n_answer % took_ms.len()]);
                n_answer += 1;
                let obtained_at = f.now;
                f.now += took;
                f.since_last_request = Some(took);
                let outcome = match answer {
                    Answer::Token { lifetime_ms } => {
                        f.token = Some((obtained_at, obtained_at + ms(lifetime_ms)));
                        f.failures = 0;
                        f.last_failure = None;
                        Event::Obtained { obtained_at, expires_at: obtained_at + ms(lifetime_ms) }
                    }
                    Answer::Transient { retry_after_ms } => {
                        f.failures += 1;
                        f.last_failure = Some(FailureKind::Transient);
                        Event::Failed { kind: FailureKind::Transient, retry_after: retry_after_ms.map(ms) }
                    }
                    Answer::Rejected | Answer::Misconfigured => {
                        let kind = if matches!(answer, Answer::Rejected) { FailureKind::Rejected } else { FailureKind::Misconfigured };
                        f.failures += 1;
                        f.last_failure = Some(kind);
                        Event::Failed { kind, retry_after: None }
                    }
                };
                let after = decide(&f, outcome, &timing, &retry, samples);
                prop_assert_eq!(after.action, Action::Wait);
                let spacing_floor = obtained_at + MIN_INTERVAL;
                prop_assert!(after.next >= spacing_floor, "next {:?} within 1 s of the request", after.next);
                let valid_until = f.token.map(|(_, e)| e).filter(|e| *e > f.now);
                match outcome {
                    Event::Failed { kind: FailureKind::Transient, .. } => match valid_until {
                        // Never asleep past the held token's expiry (but for the spacing).
                        Some(e) => prop_assert!(after.next <= e.max(spacing_floor),
                            "retry at {:?} after expiry {:?}", after.next, e),
                        // Expired: at most retry.max_expired apart.
                        None => prop_assert!(after.next <= (f.now + retry.max_expired).max(spacing_floor),
                            "expired, yet retry {:?} after now {:?}", after.next, f.now),
                    },
                    Event::Failed { .. } => prop_assert!(after.next >= f.now + retry.rejected,
                        "rejected, yet retry at {:?}", after.next),
                    _ => {}
                }
                f.planned = Some(after.next);
            } else {
                f.planned = Some(d.next);
            }
            // The next event.
            match step {
                Step::Sleep => {
                    f.now = f.planned.expect("every decision plans").max(f.now);
                    event = Event::Due;
                }
                Step::After(n, e) => {
                    f.now += ms(*n);
                    event = *e;
                }
            }
        }
    }
}

/// Instances sharing an account plan the same refresh for the same token, and different
/// tokens or accounts spread over the whole jitter range.
#[test]
fn shared_tokens_draw_the_same_jitter_everywhere() {
    let a = Samples::for_token("zarv-prod", 7);
    assert_eq!(a.jitter, Samples::for_token("zarv-prod", 7).jitter);
    assert_ne!(a.jitter, Samples::for_token("zarv-prod", 8).jitter);
    assert_ne!(a.jitter, Samples::for_token("zarv-test", 7).jitter);
    let draws: Vec<f64> = (0..2000)
        .map(|g| Samples::for_token("acct", g).jitter)
        .collect();
    assert!(draws.iter().all(|j| (-1.0..1.0).contains(j)));
    let mean = draws.iter().sum::<f64>() / draws.len() as f64;
    assert!(mean.abs() < 0.1, "mean {mean}");
    assert!(draws.iter().any(|j| *j < -0.9) && draws.iter().any(|j| *j > 0.9));
}
