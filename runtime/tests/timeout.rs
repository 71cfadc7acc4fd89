//! `timeout`, `Deadline` and `clamp_timeout`, especially inside green threads,
//! where may treats a zero or sub-millisecond timeout as "wait forever".

mod common;

use std::time::{Duration, Instant};

use common::{run_green, Ticker};
use greenpool_runtime::sync::mpsc;
use greenpool_runtime::{clamp_timeout, is_green, timeout, Deadline, Wait};

/// `timeout` gives up on an operation that never completes (a receive on a
/// channel nobody sends to) close to its deadline, and other green threads
/// keep running while the caller waits.
#[test]
fn timeout_fires_on_never_completing_recv_while_others_run() {
    let (elapsed, ticks, result) = run_green(|| {
        let ticker = Ticker::start();
        let (tx, rx) = mpsc::channel::<u32>();
        let start = Instant::now();
        let r = timeout(Duration::from_millis(300), move || rx.recv());
        let elapsed = start.elapsed();
        drop(tx); // kept alive until here: the receive can only time out
        (elapsed, ticker.stop(), r.map(|_| ()))
    });
    assert!(result.is_err(), "the receive cannot complete");
    assert!(
        elapsed >= Duration::from_millis(295),
        "timed out too early: {elapsed:?}"
    );
    assert!(
        elapsed < Duration::from_millis(800),
        "timed out too late: {elapsed:?}"
    );
    // 10 ms ticks over ~300 ms: ~30 expected; a blocked worker gives ~0.
    assert!(ticks >= 10, "ticker starved during the wait: {ticks} ticks");
}

/// Zero and sub-millisecond timeouts return promptly inside a coroutine
/// (passed straight to may they would wait forever).
#[test]
fn zero_and_sub_millisecond_timeouts_return_promptly_in_a_green_thread() {
    run_green(|| {
        assert!(is_green());
        let (tx, rx) = mpsc::channel::<u32>();
        let start = Instant::now();
        let r = timeout(Duration::ZERO, move || rx.recv());
        assert!(r.is_err());
        assert!(start.elapsed() < Duration::from_millis(100));

        let (tx2, rx2) = mpsc::channel::<u32>();
        let start = Instant::now();
        let r = timeout(Duration::from_micros(500), move || rx2.recv());
        assert!(r.is_err());
        let e = start.elapsed();
        assert!(e < Duration::from_millis(300), "500µs timeout took {e:?}");
        drop((tx, tx2));
    });
}

/// `Deadline::after(ZERO)` is expired; `Deadline::after(500µs)` waits 1 ms (or
/// is already expired), and a wait driven by it returns promptly inside a
/// coroutine.
#[test]
fn deadlines_of_zero_and_sub_millisecond() {
    assert_eq!(clamp_timeout(Duration::ZERO), None);
    assert_eq!(
        clamp_timeout(Duration::from_micros(500)),
        Some(Duration::from_millis(1))
    );

    let d = Deadline::after(Duration::ZERO);
    assert!(d.is_expired());
    assert_eq!(d.wait(), Wait::Expired);

    let d = Deadline::after(Duration::from_micros(500));
    match d.wait() {
        Wait::For(w) => assert_eq!(w, Duration::from_millis(1)),
        Wait::Expired => {}
        Wait::Forever => panic!("a deadline is never Forever"),
    }
    assert_eq!(Deadline::never().wait(), Wait::Forever);

    run_green(|| {
        let (tx, rx) = mpsc::channel::<u32>();
        let start = Instant::now();
        let d = Deadline::after(Duration::from_micros(500));
        let got = match d.wait() {
            Wait::For(w) => rx.recv_timeout(w).ok(),
            Wait::Expired => None,
            Wait::Forever => unreachable!(),
        };
        assert_eq!(got, None);
        assert!(start.elapsed() < Duration::from_millis(300));
        drop(tx);
    });
}

/// A fast operation returns its value; a panic inside is re-raised.
#[test]
fn timeout_returns_value_and_reraises_panic() {
    run_green(|| {
        assert_eq!(timeout(Duration::from_secs(5), || 7).unwrap(), 7);
        let r = std::panic::catch_unwind(|| {
            timeout(Duration::from_secs(5), || -> u32 { panic!("inner boom") })
        });
        let payload = r.unwrap_err();
        assert_eq!(
            greenpool_runtime::panic_message(&*payload),
            Some("inner boom")
        );
    });
}
