//! No file descriptor and no connection outlives a pool. In its own test
//! binary: the process-wide fd count must not be disturbed by other tests.

use std::time::Duration;

use greenpool::testing::{fd_count, LineManager, TestServer};
use greenpool::ConnectionPool;

#[test]
fn close_and_drop_return_the_fd_count_to_where_it_was() {
    let Some(_) = fd_count() else {
        eprintln!("fd_count is not available on this OS; skipping");
        return;
    };
    let server = TestServer::start().unwrap();
    // Warm up the runtime (its epoll descriptors) before the baseline.
    {
        let pool = ConnectionPool::new(LineManager::new(server.addr()), 1).unwrap();
        pool.wait_ready(Duration::from_secs(10)).unwrap();
    }
    assert!(server.wait_open(0, Duration::from_secs(10)));
    let base = fd_count().unwrap();

    for round in 0..3 {
        let pool = ConnectionPool::new(LineManager::new(server.addr()), 8).unwrap();
        pool.wait_ready(Duration::from_secs(10)).unwrap();
        let held = pool.get().unwrap();
        assert!(server.wait_open(8, Duration::from_secs(10)));
        // Both ends of 8 connections are ours (some slack for descriptors the
        // runtime may have had open transiently when `base` was read).
        assert!(
            fd_count().unwrap() >= base + 8,
            "the test sees real sockets"
        );
        if round % 2 == 0 {
            pool.close();
            // No background green thread outlives the closed pool.
            let deadline = std::time::Instant::now() + Duration::from_secs(10);
            while pool.state().background_tasks > 0 && std::time::Instant::now() < deadline {
                greenpool::runtime::sleep(Duration::from_millis(5));
            }
            assert_eq!(pool.state().background_tasks, 0, "{:?}", pool.state());
        }
        drop(pool);
        drop(held);
        assert!(server.wait_open(0, Duration::from_secs(10)));
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while fd_count().unwrap() > base && std::time::Instant::now() < deadline {
            greenpool::runtime::sleep(Duration::from_millis(5));
        }
        assert!(
            fd_count().unwrap() <= base,
            "round {round}: descriptors leaked"
        );
    }
}
