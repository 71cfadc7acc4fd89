//! Feature `metrics`: `MetricsEvents` reports the pool's events through the
//! `metrics` facade. Each test has a recorder of its own (no global state):
//! the Prometheus exporter's, read back from its text.

mod common;

use std::io;
use std::sync::Arc;
use std::time::Duration;

use common::{wait_until, Mock};
use greenpool::metrics::{self, MetricsEvents};
use greenpool::{Builder, ConnectionPool};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle, PrometheusRecorder};

const LONG: Duration = Duration::from_secs(10);

/// A metric's name, its labels other than `pool`, and its value.
type Sample = (String, Vec<(String, String)>, f64);

/// What a Prometheus recorder of the test's own renders for one pool.
struct Seen {
    handle: PrometheusHandle,
    pool: &'static str,
}

impl Seen {
    /// A recorder for `MetricsEvents::with_recorder`, and its reader.
    fn new(pool: &'static str) -> (Arc<PrometheusRecorder>, Self) {
        let recorder = PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        (Arc::new(recorder), Seen { handle, pool })
    }

    /// Every sample of the pool: (name, other labels, value).
    fn samples(&self) -> Vec<Sample> {
        let pool = format!("pool=\"{}\"", self.pool);
        let mut out = Vec::new();
        for line in self.handle.render().lines() {
            if line.starts_with('#') || line.is_empty() {
                continue;
            }
            let (key, value) = line.rsplit_once(' ').expect("name value");
            let (name, labels) = match key.split_once('{') {
                Some((n, rest)) => (n, rest.trim_end_matches('}')),
                None => (key, ""),
            };
            let labels: Vec<&str> = labels.split(',').filter(|l| !l.is_empty()).collect();
            if !labels.contains(&pool.as_str()) {
                continue;
            }
            let labels = labels
                .iter()
                .filter(|l| **l != pool)
                .map(|l| {
                    let (k, v) = l.split_once('=').expect("k=v");
                    (k.to_owned(), v.trim_matches('"').to_owned())
                })
                .collect();
            out.push((name.to_owned(), labels, value.parse().expect("a number")));
        }
        out
    }

    /// A metric's value summed over every label set that has `labels`.
    fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.samples()
            .into_iter()
            .filter(|(n, l, _)| {
                n == name
                    && labels
                        .iter()
                        .all(|(k, v)| l.iter().any(|(lk, lv)| lk == k && lv == v))
            })
            .map(|(_, _, v)| v)
            .sum()
    }

    fn counter(&mut self, name: &str, labels: &[(&str, &str)]) -> u64 {
        self.value(name, labels) as u64
    }

    fn gauge(&mut self, name: &str) -> Option<f64> {
        self.samples()
            .into_iter()
            .find(|(n, _, _)| n == name)
            .map(|(_, _, v)| v)
    }

    /// How many samples a histogram (a summary here) has.
    fn samples_of(&mut self, name: &str) -> usize {
        self.value(&format!("{name}_count"), &[]) as usize
    }
}

/// A ready pool built by `builder` (plus a long checkout timeout and a
/// short backoff) whose metrics, labelled `name`, `Seen` reads.
fn metered(name: &'static str, builder: Builder<Mock>) -> (ConnectionPool<Mock>, Seen) {
    let (recorder, seen) = Seen::new(name);
    let p = builder
        .checkout_timeout(LONG)
        .reconnect_backoff(Duration::from_millis(1), Duration::from_millis(2))
        .event_handler(MetricsEvents::new(name).with_recorder(recorder))
        .build(Mock::default())
        .unwrap();
    p.wait_ready(LONG).unwrap();
    (p, seen)
}

#[test]
fn metrics_report_gauges_counters_by_reason_and_wait_times() {
    let (p, mut m) = metered("orders", ConnectionPool::builder().size(3).no_validation());
    assert_eq!(m.counter(metrics::CONNECTS, &[]), 3);

    for _ in 0..5 {
        p.with(|_c| Ok::<_, io::Error>(())).unwrap();
    }
    let _: io::Result<()> = p.with(|_c| Err(io::Error::other("broken")));
    p.get().unwrap().discard();
    let held: Vec<_> = (0..3).map(|_| p.get().unwrap()).collect();
    assert!(p.try_get().is_err());

    assert_eq!(m.samples_of(metrics::CHECKOUT_WAIT), 10);
    // Three connects, and one replacement for each discard.
    assert!(wait_until(LONG, || m.samples_of(metrics::CONNECT_TIME) == 5));
    assert_eq!(m.counter(metrics::CHECKOUTS, &[]), 10);
    assert_eq!(m.counter(metrics::CHECKINS, &[]), 7);
    assert_eq!(m.counter(metrics::DISCARDS, &[("reason", "error")]), 1);
    assert_eq!(m.counter(metrics::DISCARDS, &[("reason", "explicit")]), 1);
    assert_eq!(
        m.counter(metrics::CHECKOUT_FAILURES, &[("reason", "timeout")]),
        1
    );

    // Gauges, once per maintenance tick: all three in use.
    assert!(
        wait_until(LONG, || {
            m.gauge(metrics::IN_USE) == Some(3.0)
                && m.gauge(metrics::OPEN) == Some(3.0)
                && m.gauge(metrics::IDLE) == Some(0.0)
        }),
        "{:?}",
        m.samples()
    );
    assert_eq!(m.gauge(metrics::SIZE), Some(3.0));
    let p2 = p.clone();
    let waiter = greenpool::runtime::spawn(move || p2.get().map(drop));
    assert!(wait_until(LONG, || m.gauge(metrics::WAITING) == Some(1.0)));
    drop(held);
    waiter.join().unwrap().unwrap();
    assert!(wait_until(LONG, || {
        m.gauge(metrics::IDLE) == Some(3.0) && m.gauge(metrics::WAITING) == Some(0.0)
    }));
}

#[test]
fn metrics_report_connect_failures_and_health_checks() {
    let builder = ConnectionPool::builder()
        .size(2)
        .keepalive(Duration::from_millis(20));
    let (p, mut m) = metered("cache", builder);
    let checks = |m: &mut Seen, result| {
        m.counter(
            metrics::HEALTH_CHECKS,
            &[("kind", "keepalive"), ("result", result)],
        )
    };
    assert!(wait_until(LONG, || checks(&mut m, "ok") >= 2));
    p.manager()
        .fail
        .store(true, std::sync::atomic::Ordering::SeqCst);
    p.manager()
        .unhealthy
        .store(true, std::sync::atomic::Ordering::SeqCst);
    assert!(wait_until(LONG, || checks(&mut m, "failed") >= 1));
    assert!(wait_until(LONG, || {
        m.counter(metrics::CONNECT_FAILURES, &[("permanent", "false")]) >= 1
    }));
    assert!(wait_until(LONG, || {
        m.counter(metrics::DISCARDS, &[("reason", "keepalive")]) >= 1
    }));
}
