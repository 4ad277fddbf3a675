//! Unit tests of the token keeper's pure policy ([`super::next_step`]) as a table.

use super::*;

fn life(remaining: Option<u64>, renewable: bool, capped: bool, replaceable: bool) -> Lifetime {
    Lifetime {
        remaining: remaining.map(Duration::from_secs),
        renewable,
        capped,
        replaceable,
    }
}

#[test]
fn renews_at_two_thirds_of_the_remaining_ttl() {
    assert_eq!(
        next_step(life(Some(3600), true, false, true), 0),
        Some((Duration::from_secs(2400), Action::Renew))
    );
    // Token auth can renew too.
    assert_eq!(
        next_step(life(Some(30), true, false, false), 0),
        Some((Duration::from_secs(20), Action::Renew))
    );
}

#[test]
fn logs_in_again_when_renewing_cannot_help() {
    // Max TTL reached: the last renewal came back short.
    assert_eq!(
        next_step(life(Some(3), true, true, true), 0),
        Some((Duration::from_secs(2), Action::Replace))
    );
    // Not renewable at all.
    assert_eq!(
        next_step(life(Some(60), false, false, true), 0),
        Some((Duration::from_secs(40), Action::Replace))
    );
    // Token auth whose source has nothing newer: nothing to do.
    assert_eq!(next_step(life(Some(60), false, false, false), 0), None);
}

#[test]
fn tokens_without_ttl_need_nothing() {
    assert_eq!(next_step(life(None, false, false, true), 0), None);
    assert_eq!(next_step(life(Some(0), true, false, true), 0), None);
}

#[test]
fn failures_back_off_and_give_up_when_the_token_dies_first() {
    assert_eq!(
        next_step(life(Some(100), true, false, true), 1),
        Some((Duration::from_secs(1), Action::Renew))
    );
    assert_eq!(
        next_step(life(Some(100), true, false, true), 3),
        Some((Duration::from_secs(4), Action::Renew))
    );
    assert_eq!(
        next_step(life(Some(1000), true, false, true), 20),
        Some((MAX_BACKOFF, Action::Renew))
    );
    assert_eq!(next_step(life(Some(3), true, false, true), 3), None);
}

#[test]
fn tiny_ttls_do_not_spin() {
    let step = next_step(
        Lifetime {
            remaining: Some(Duration::from_millis(300)),
            renewable: true,
            capped: false,
            replaceable: true,
        },
        0,
    );
    assert_eq!(step, Some((MIN_STEP, Action::Renew)));
    let step = next_step(
        Lifetime {
            remaining: Some(Duration::from_millis(100)),
            renewable: true,
            capped: false,
            replaceable: true,
        },
        0,
    );
    assert_eq!(step, None);
}

#[test]
fn writes_log_in_when_little_life_is_left() {
    assert_eq!(write_margin(Duration::from_secs(5)), Duration::from_secs(1));
    assert_eq!(write_margin(Duration::from_secs(3600)), MAX_WRITE_MARGIN);
}
