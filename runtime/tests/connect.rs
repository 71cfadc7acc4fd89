//! `net::connect`: errors that keep their kind and name the address,
//! per-attempt timeouts, socket options visible with getsockopt, and use from
//! a plain OS thread. Loopback only.

mod common;

use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::{closed_port, echo_server, run_green};
use greenpool_runtime::net::{connect, connect_addr, ConnectOptions, TcpKeepalive, TcpStream};
use greenpool_runtime::sync::mpsc;
use greenpool_runtime::{is_green, sleep, timeout, GreenPool};
use socket2::SockRef;

fn roundtrip(s: &mut TcpStream, msg: &[u8]) {
    s.write_all(msg).unwrap();
    let mut buf = vec![0u8; msg.len()];
    s.read_exact(&mut buf).unwrap();
    assert_eq!(buf, msg);
}

/// A closed loopback port is refused at once; the error keeps
/// `ConnectionRefused` and names the address, from a green thread and from an
/// OS thread.
#[test]
fn closed_port_is_refused_fast_and_named() {
    let addr = closed_port();
    let check = move || {
        let start = Instant::now();
        let e = connect(&addr.to_string(), &ConnectOptions::new()).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::ConnectionRefused, "{e}");
        assert!(e.to_string().contains(&addr.to_string()), "{e}");
        assert!(e.to_string().starts_with("connect to "), "{e}");
        assert!(
            start.elapsed() < Duration::from_secs(1),
            "{:?}",
            start.elapsed()
        );
        let e = connect_addr(addr, &ConnectOptions::new()).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::ConnectionRefused, "{e}");
        assert!(e.to_string().contains(&addr.to_string()), "{e}");
    };
    run_green(check);
    check();
}

/// A loopback listener whose accept queue is full: it never answers a SYN.
/// Keep the returned values alive while using the address.
fn full_backlog() -> (socket2::Socket, SocketAddr, Vec<std::net::TcpStream>) {
    let listener =
        socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    listener
        .bind(&SocketAddr::from(([127, 0, 0, 1], 0)).into())
        .unwrap();
    listener.listen(0).unwrap();
    let addr = listener.local_addr().unwrap().as_socket().unwrap();
    // Fill the accept queue (never accepted) until a connect goes unanswered.
    let mut held = Vec::new();
    for _ in 0..16 {
        match std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(300)) {
            Ok(s) => held.push(s),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock
                ) =>
            {
                return (listener, addr, held);
            }
            Err(e) => panic!("unexpected error while filling the backlog of {addr}: {e}"),
        }
    }
    panic!("could not fill the accept queue of {addr}");
}

/// A connect to a full backlog gets no answer, so connect gives up after the
/// per-attempt timeout with `TimedOut`, naming the address and the limit.
#[test]
fn full_backlog_times_out_after_the_connect_timeout() {
    let (_listener, addr, _held) = full_backlog();
    let (elapsed, e) = run_green(move || {
        let opts = ConnectOptions::new().connect_timeout(Duration::from_millis(200));
        let start = Instant::now();
        let e = connect(&addr.to_string(), &opts).unwrap_err();
        (start.elapsed(), e)
    });
    assert_eq!(e.kind(), io::ErrorKind::TimedOut, "{e}");
    assert!(e.to_string().contains(&addr.to_string()), "{e}");
    assert!(e.to_string().contains("200ms"), "{e}");
    assert!(
        elapsed >= Duration::from_millis(150),
        "gave up too early: {elapsed:?}"
    );
    assert!(
        elapsed < Duration::from_secs(3),
        "gave up too late: {elapsed:?}"
    );

    // The same from a plain OS thread.
    let opts = ConnectOptions::new().connect_timeout(Duration::from_millis(200));
    let start = Instant::now();
    let e = connect(&addr.to_string(), &opts).unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::TimedOut, "{e}");
    assert!(start.elapsed() >= Duration::from_millis(150));
    assert!(start.elapsed() < Duration::from_secs(3));
}

/// may resumes a green thread whose IO timed out from its event loop after
/// the ready queue ran; a green thread it wakes from there used to wait for
/// the worker's next IO timer (seconds). With long IO timers pending on every
/// worker (blocked reads with a 30 s timeout), a green thread woken right
/// after a connect timeout must still run promptly.
#[test]
fn waking_another_green_thread_after_a_connect_timeout_is_prompt() {
    let echo = echo_server();
    let (_listener, addr, _held) = full_backlog();
    // Pending 30 s read timers on many fds, hence on every worker's selector.
    let mut readers = Vec::new();
    for _ in 0..8 {
        let opts = ConnectOptions::new().read_timeout(Some(Duration::from_secs(30)));
        let mut s = connect(&echo.to_string(), &opts).unwrap();
        readers.push(greenpool_runtime::spawn(move || {
            let mut buf = [0u8; 1];
            let _ = s.read(&mut buf);
        }));
    }
    // A few rounds: whether a given round would be delayed depends on which
    // worker the timed-out socket lands on.
    let woke_after = run_green(move || {
        let mut worst = Duration::ZERO;
        for _ in 0..4 {
            let (tx, rx) = mpsc::channel::<Instant>();
            let waiter = greenpool_runtime::spawn(move || rx.recv().unwrap().elapsed());
            sleep(Duration::from_millis(20)); // let the readers and the waiter block
            let opts = ConnectOptions::new().connect_timeout(Duration::from_millis(100));
            let e = connect(&addr.to_string(), &opts).unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::TimedOut, "{e}");
            tx.send(Instant::now()).unwrap();
            worst = worst.max(waiter.join().unwrap());
        }
        worst
    });
    for r in &readers {
        r.cancel();
    }
    assert!(
        woke_after < Duration::from_millis(500),
        "a green thread woken after a connect timeout ran {woke_after:?} later"
    );
}

/// nodelay, keepalive idle/interval/retries, TCP_USER_TIMEOUT and the
/// read/write timeouts are set on the new socket, as getsockopt shows.
#[test]
fn socket_options_are_visible_with_getsockopt() {
    let echo = echo_server();
    let opts = ConnectOptions::new()
        .tcp_keepalive(Some(TcpKeepalive::new(
            Duration::from_secs(30),
            Duration::from_secs(5),
            3,
        )))
        .user_timeout(Some(Duration::from_secs(20)))
        .read_timeout(Some(Duration::from_millis(1500)))
        .write_timeout(Some(Duration::from_secs(2)));
    let mut s = run_green({
        let opts = opts.clone();
        move || connect(&echo.to_string(), &opts).unwrap()
    });
    {
        let sock = SockRef::from(s.inner());
        assert!(sock.tcp_nodelay().unwrap());
        assert!(sock.keepalive().unwrap());
        assert_eq!(sock.tcp_keepalive_time().unwrap(), Duration::from_secs(30));
        assert_eq!(
            sock.tcp_keepalive_interval().unwrap(),
            Duration::from_secs(5)
        );
        assert_eq!(sock.tcp_keepalive_retries().unwrap(), 3);
        #[cfg(target_os = "linux")]
        assert_eq!(
            sock.tcp_user_timeout().unwrap(),
            Some(Duration::from_secs(20))
        );
    }
    assert_eq!(s.read_timeout().unwrap(), Some(Duration::from_millis(1500)));
    assert_eq!(s.write_timeout().unwrap(), Some(Duration::from_secs(2)));
    roundtrip(&mut s, b"options\n");

    // The defaults: nodelay on, keepalive and user timeout left to the OS.
    let plain = connect(&echo.to_string(), &ConnectOptions::new()).unwrap();
    let sock = SockRef::from(plain.inner());
    assert!(sock.tcp_nodelay().unwrap());
    assert!(!sock.keepalive().unwrap());
    assert_eq!(plain.read_timeout().unwrap(), None);

    let off = connect(&echo.to_string(), &ConnectOptions::new().nodelay(false)).unwrap();
    assert!(!SockRef::from(off.inner()).tcp_nodelay().unwrap());
}

/// A read timeout under 1 ms is clamped to 1 ms: inside a green thread the
/// read returns `TimedOut` promptly instead of waiting forever.
#[test]
fn sub_millisecond_read_timeout_returns_in_a_green_thread() {
    let echo = echo_server();
    run_green(move || {
        let opts = ConnectOptions::new().read_timeout(Some(Duration::from_micros(500)));
        let mut s = connect(&echo.to_string(), &opts).unwrap();
        let start = Instant::now();
        let mut buf = [0u8; 8];
        let e = s.read(&mut buf).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::TimedOut);
        greenpool_runtime::net::after_io_timeout();
        assert!(
            start.elapsed() < Duration::from_secs(1),
            "{:?}",
            start.elapsed()
        );
        // The stream stays usable after a read timeout.
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        roundtrip(&mut s, b"still here\n");
    });
}

/// Zero durations and malformed addresses are `InvalidInput` with a message
/// that says what to fix; nothing is connected.
#[test]
fn invalid_input_is_rejected_clearly() {
    let echo = echo_server().to_string();
    let e = connect(
        &echo,
        &ConnectOptions::new().connect_timeout(Duration::ZERO),
    )
    .unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
    assert!(e.to_string().contains("connect_timeout"), "{e}");
    let e = connect(
        &echo,
        &ConnectOptions::new().read_timeout(Some(Duration::ZERO)),
    )
    .unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
    assert!(e.to_string().contains("read_timeout"), "{e}");
    let ka = TcpKeepalive::new(Duration::ZERO, Duration::from_secs(1), 1);
    let e = connect(&echo, &ConnectOptions::new().tcp_keepalive(Some(ka))).unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
    for bad in ["127.0.0.1", "127.0.0.1:http", "::1:80", "[::1:80", ":80"] {
        let e = connect(bad, &ConnectOptions::new()).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput, "{bad}: {e}");
        assert!(e.to_string().contains(bad), "{e}");
    }
    // A sub-millisecond connect timeout is clamped, not rejected.
    let opts = ConnectOptions::new().connect_timeout(Duration::from_micros(500));
    let _ = connect(&echo, &opts);
}

/// IP literals in both notations connect without any resolver call.
#[test]
fn ip_literals_skip_resolution() {
    let echo = echo_server();
    let never =
        ConnectOptions::new().resolver(|host: &str, _port: u16| -> io::Result<Vec<SocketAddr>> {
            panic!("resolver called for {host}")
        });
    let mut s = connect(&echo.to_string(), &never).unwrap();
    roundtrip(&mut s, b"v4\n");
    // IPv6 loopback, where the machine has it.
    if let Ok(l6) = std::net::TcpListener::bind("[::1]:0") {
        let port = l6.local_addr().unwrap().port();
        let s6 = connect(&format!("[::1]:{port}"), &never).unwrap();
        assert!(s6.peer_addr().unwrap().is_ipv6());
    }
}

/// Everything works from a plain OS thread: connect, IO, sleep, timeout,
/// GreenPool.
#[test]
fn works_from_a_plain_os_thread() {
    let echo = echo_server();
    std::thread::spawn(move || {
        assert!(!is_green());
        let mut s = connect(&echo.to_string(), &ConnectOptions::new()).unwrap();
        roundtrip(&mut s, b"from a thread\n");

        let start = Instant::now();
        sleep(Duration::from_millis(20));
        assert!(start.elapsed() >= Duration::from_millis(20));

        let (tx, rx) = mpsc::channel::<u32>();
        let start = Instant::now();
        assert!(timeout(Duration::from_millis(50), move || rx.recv()).is_err());
        let e = start.elapsed();
        assert!(
            e >= Duration::from_millis(45) && e < Duration::from_millis(550),
            "{e:?}"
        );
        drop(tx);

        let e = connect(&closed_port().to_string(), &ConnectOptions::new()).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::ConnectionRefused);

        let pool = GreenPool::new(2);
        assert_eq!(pool.map(0..5, |i| i * 3), vec![0, 3, 6, 9, 12]);
    })
    .join()
    .unwrap();
}
