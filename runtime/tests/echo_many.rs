//! 10,000 green threads, each doing one request/response over its own TCP
//! connection to an embedded echo server, all on one runtime.

mod common;

use std::io::{Read, Write};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::{echo_server, run_green};
use greenpool_runtime::net::{connect_addr, ConnectOptions};
use greenpool_runtime::GreenPool;

const CLIENTS: usize = 10_000;
/// Concurrency is bounded by a GreenPool of 500: each live client holds two
/// fds (its socket and the server's), so at most ~1,000 sockets are open at
/// once, well below a 1,024 `ulimit -n`, while 500 requests are in flight
/// concurrently at every moment.
const CONCURRENCY: usize = 500;

#[test]
fn ten_thousand_green_threads_talk_to_an_echo_server() {
    let echo = echo_server();
    let in_flight = Arc::new(AtomicUsize::new(0));
    let max_in_flight = Arc::new(AtomicUsize::new(0));
    let (answers, max) = run_green({
        let (in_flight, max_in_flight) = (in_flight.clone(), max_in_flight.clone());
        move || {
            let pool = GreenPool::new(CONCURRENCY);
            let opts = ConnectOptions::new()
                .read_timeout(Some(Duration::from_secs(10)))
                .write_timeout(Some(Duration::from_secs(10)));
            let max_seen = max_in_flight.clone();
            let answers = pool.map(0..CLIENTS, move |i| {
                let now = in_flight.fetch_add(1, Ordering::SeqCst) + 1;
                max_in_flight.fetch_max(now, Ordering::SeqCst);
                let mut s = connect_addr(echo, &opts).unwrap_or_else(|e| panic!("client {i}: {e}"));
                let msg = format!("request {i}\n");
                s.write_all(msg.as_bytes()).unwrap();
                let mut buf = vec![0u8; msg.len()];
                s.read_exact(&mut buf)
                    .unwrap_or_else(|e| panic!("client {i}: {e}"));
                in_flight.fetch_sub(1, Ordering::SeqCst);
                String::from_utf8(buf).unwrap()
            });
            (answers, max_seen.load(Ordering::SeqCst))
        }
    });
    assert_eq!(answers.len(), CLIENTS);
    for (i, a) in answers.iter().enumerate() {
        assert_eq!(a, &format!("request {i}\n"));
    }
    assert!(max <= CONCURRENCY, "{max} clients at once");
    assert!(max > 1, "clients never overlapped");
}
