use super::*;

const T0: Duration = Duration::from_secs(1_795_687_200);

fn at(secs: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH + T0 + Duration::from_secs(secs)
}

fn status(code: u16, retry_after: Option<&str>) -> Result<(), DeliveryError> {
    Err(DeliveryError::from_status(code, retry_after, "err"))
}

#[test]
fn backoff_ceiling_grows_exponentially_and_is_capped() {
    let p = RetryPolicy::default();
    let ceilings: Vec<u64> = (1..=9).map(|n| p.backoff_ceiling(n).as_secs()).collect();
    assert_eq!(ceilings, [1, 2, 4, 8, 16, 32, 60, 60, 60]);
    assert_eq!(p.backoff_ceiling(0), Duration::from_secs(1));
    assert_eq!(p.backoff_ceiling(u32::MAX), Duration::from_secs(60));
    let huge = RetryPolicy {
        max_backoff: Duration::MAX,
        ..p
    };
    assert_eq!(
        huge.backoff_ceiling(200),
        Duration::MAX,
        "saturates, no overflow"
    );
}

#[test]
fn full_jitter_stays_within_zero_and_the_ceiling() {
    let p = RetryPolicy::default();
    assert_eq!(p.backoff(5, &mut || 0.0), Duration::ZERO);
    assert_eq!(p.backoff(5, &mut || 0.5), Duration::from_secs(8));
    assert_eq!(p.backoff(5, &mut || 1.0), Duration::from_secs(16));
    assert_eq!(
        p.backoff(5, &mut || 7.0),
        Duration::from_secs(16),
        "clamped"
    );
    assert_eq!(p.backoff(5, &mut || -1.0), Duration::ZERO, "clamped");
    assert_eq!(p.backoff(5, &mut || f64::NAN), Duration::ZERO);
    // A cheap deterministic generator over many draws.
    let mut x = 0x2545_f491_4f6c_dd1du64;
    let mut rnd = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        (x >> 11) as f64 / (1u64 << 53) as f64
    };
    for failures in 1..20 {
        let d = p.backoff(failures, &mut rnd);
        assert!(d <= p.backoff_ceiling(failures), "{failures}: {d:?}");
    }
}

#[test]
fn transient_failures_are_retried_with_backoff() {
    let p = RetryPolicy::default();
    for result in [
        status(500, None),
        status(502, None),
        status(408, None),
        status(422, None),
        status(429, None),
        Err(DeliveryError::Transient("connection refused".into())),
    ] {
        assert_eq!(
            p.decide(&result, 3, at(0), at(10), &mut || 0.5),
            Outcome::Retry {
                after: Duration::from_secs(2)
            },
            "{result:?}"
        );
    }
    assert_eq!(
        p.decide(&Ok(()), 7, at(0), at(10), &mut || 0.5),
        Outcome::Delivered
    );
}

#[test]
fn retry_after_is_honoured_on_429_and_503_only() {
    let p = RetryPolicy::default();
    let retry = |after| Outcome::Retry {
        after: Duration::from_secs(after),
    };
    assert_eq!(
        p.decide(&status(429, Some("120")), 1, at(0), at(0), &mut || 0.0),
        retry(120)
    );
    let date = httpdate::fmt_http_date(at(100));
    assert_eq!(
        p.decide(&status(503, Some(&date)), 1, at(0), at(10), &mut || 0.0),
        retry(90),
        "HTTP-date relative to now"
    );
    assert_eq!(
        p.decide(
            &status(503, Some(&httpdate::fmt_http_date(at(5)))),
            1,
            at(0),
            at(10),
            &mut || 0.9
        ),
        retry(0),
        "a date in the past: retry now"
    );
    // Not on a 500; an unparseable header falls back to backoff.
    assert_eq!(
        p.decide(&status(500, Some("120")), 1, at(0), at(0), &mut || 0.5),
        Outcome::Retry {
            after: Duration::from_millis(500)
        }
    );
    assert_eq!(
        p.decide(&status(429, Some("soon")), 1, at(0), at(0), &mut || 0.5),
        Outcome::Retry {
            after: Duration::from_millis(500)
        }
    );
    // Longer than the budget allows: give up rather than retry early.
    assert!(matches!(
        p.decide(&status(429, Some("7200")), 1, at(0), at(0), &mut || 0.0),
        Outcome::GaveUp { .. }
    ));
}

#[test]
fn retry_after_parses_seconds_and_all_http_date_formats() {
    assert_eq!(
        RetryAfter::parse(" 30 "),
        Some(RetryAfter::Delay(Duration::from_secs(30)))
    );
    let t = SystemTime::UNIX_EPOCH + Duration::from_secs(784_111_777);
    for s in [
        "Sun, 06 Nov 1994 08:49:37 GMT",
        "Sunday, 06-Nov-94 08:49:37 GMT",
        "Sun Nov  6 08:49:37 1994",
    ] {
        assert_eq!(RetryAfter::parse(s), Some(RetryAfter::At(t)), "{s}");
    }
    assert_eq!(RetryAfter::parse("-5"), None);
    assert_eq!(RetryAfter::parse("1.5"), None);
    assert_eq!(RetryAfter::parse(""), None);
    assert_eq!(
        RetryAfter::parse("99999999999999999999999"),
        Some(RetryAfter::Delay(Duration::from_secs(u64::MAX)))
    );
}

#[test]
fn permanent_failures_are_not_retried() {
    let p = RetryPolicy::default();
    for code in [400, 401, 403, 404, 410, 301, 302] {
        let outcome = p.decide(&status(code, Some("1")), 1, at(0), at(0), &mut || 0.5);
        assert!(
            matches!(&outcome, Outcome::Permanent { reason } if reason.contains(&code.to_string())),
            "{code}: {outcome:?}"
        );
    }
    assert!(matches!(
        p.decide(
            &Err(DeliveryError::Permanent("550 mailbox unavailable".into())),
            1,
            at(0),
            at(0),
            &mut || 0.5
        ),
        Outcome::Permanent { .. }
    ));
}

#[test]
fn budget_exhausted_gives_up() {
    let p = RetryPolicy {
        max_attempts: 5,
        max_elapsed: Duration::from_secs(300),
        ..RetryPolicy::default()
    };
    let err = status(500, None);
    assert!(matches!(
        p.decide(&err, 4, at(0), at(60), &mut || 0.5),
        Outcome::Retry { .. }
    ));
    assert!(matches!(
        p.decide(&err, 5, at(0), at(60), &mut || 0.5),
        Outcome::GaveUp { .. }
    ));
    // Time: 297 s elapsed + a 4 s wait > 300 s.
    assert!(matches!(
        p.decide(&err, 4, at(0), at(297), &mut || 0.5),
        Outcome::GaveUp { reason } if reason.contains("budget")
    ));
    assert!(matches!(
        p.decide(&err, 4, at(0), at(297), &mut || 0.0),
        Outcome::Retry { .. }
    ));
    // A clock that went backwards does not give up.
    assert!(matches!(
        p.decide(&err, 2, at(100), at(0), &mut || 0.5),
        Outcome::Retry { .. }
    ));
}

#[test]
fn a_whole_schedule_fits_the_budget() {
    // Simulate a receiver that always fails: the sum of waits never exceeds max_elapsed,
    // and the loop ends with GaveUp.
    let p = RetryPolicy {
        max_attempts: 1000,
        max_elapsed: Duration::from_secs(600),
        ..RetryPolicy::default()
    };
    let mut now = at(0);
    let mut attempts = 0;
    let outcome = loop {
        attempts += 1;
        match p.decide(&status(502, None), attempts, at(0), now, &mut || 0.99) {
            Outcome::Retry { after } => now += after,
            other => break other,
        }
    };
    assert!(matches!(outcome, Outcome::GaveUp { .. }));
    assert!(now.duration_since(at(0)).unwrap() <= p.max_elapsed);
    assert!(attempts > 10, "{attempts}");
}

#[test]
fn error_body_is_short_and_on_one_line() {
    let e =
        DeliveryError::from_status(400, None, &format!("invalid_payload\n{}", "x".repeat(1000)));
    let DeliveryError::Status { body, .. } = &e else {
        panic!()
    };
    assert!(body.starts_with("invalid_payload x") && body.ends_with('…'));
    assert!(body.chars().count() <= 301);
    assert_eq!(e.to_string().lines().count(), 1);
}

/// A wait within a microsecond of `ms` milliseconds (the bucket counts in f64 seconds).
fn wait_of(r: Result<(), Duration>, ms: u64) -> bool {
    r.is_err_and(|d| d.abs_diff(Duration::from_millis(ms)) < Duration::from_micros(1))
}

#[test]
fn rate_limiter_spaces_messages() {
    let t0 = Instant::now();
    let ms = |n| t0 + Duration::from_millis(n);
    let mut slack = RateLimiter::slack();
    assert_eq!(slack.try_acquire(ms(0)), Ok(()));
    assert!(wait_of(slack.try_acquire(ms(0)), 1000));
    assert!(wait_of(slack.try_acquire(ms(400)), 600));
    assert_eq!(slack.try_acquire(ms(1000)), Ok(()));
    // Idle time does not accumulate beyond the burst.
    assert_eq!(slack.try_acquire(ms(10_000)), Ok(()));
    assert!(slack.try_acquire(ms(10_000)).is_err());
    // Sending as fast as allowed for 10 s gives 1 per second.
    let mut limiter = RateLimiter::slack();
    let (mut now, mut sent) = (ms(0), Vec::new());
    while now < ms(9_500) {
        match limiter.try_acquire(now) {
            Ok(()) => sent.push(now),
            Err(wait) => now += wait,
        }
    }
    assert_eq!(sent.len(), 10);
    for pair in sent.windows(2) {
        let gap = pair[1] - pair[0];
        assert!(gap >= Duration::from_millis(999), "{gap:?}");
    }
    // A burst of 3 at 2/s.
    let mut b = RateLimiter::new(2.0, 3);
    assert!((0..3).all(|_| b.try_acquire(ms(0)).is_ok()));
    assert!(wait_of(b.try_acquire(ms(0)), 500));
    // Time going backwards neither panics nor mints tokens.
    assert!(wait_of(b.try_acquire(ms(100)), 400));
    assert!(wait_of(b.try_acquire(ms(50)), 400));
}
