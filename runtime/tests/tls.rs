//! The `tls` module against embedded TLS servers: handshakes, resumption,
//! rejected certificates (each rule named), timeouts through TLS, the
//! non-blocking peer check, STARTTLS leftovers.
#![cfg(feature = "tls")]

use std::io::{self, BufReader, Read, Write};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use greenpool_runtime::line::{read_line, write_line};
use greenpool_runtime::net::{connect_addr, ConnectOptions, PeerStatus, TcpListener, TcpStream};
use greenpool_runtime::tls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use greenpool_runtime::tls::{self, rustls, ServerTlsStream, TlsConnector, TlsError};
use greenpool_runtime::{Builder, JoinHandle};

struct Cert {
    der: CertificateDer<'static>,
    pem: String,
    key: Vec<u8>,
}

fn cert_with(params: rcgen::CertificateParams) -> Cert {
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = params.self_signed(&key).unwrap();
    Cert {
        der: cert.der().clone(),
        pem: cert.pem(),
        key: key.serialize_der(),
    }
}

fn localhost_cert() -> Cert {
    cert_with(rcgen::CertificateParams::new(vec!["localhost".to_owned()]).unwrap())
}

fn server_config(c: &Cert) -> Arc<rustls::ServerConfig> {
    tls::server_config(
        vec![c.der.clone()],
        PrivateKeyDer::Pkcs8(c.key.clone().into()),
    )
    .unwrap()
}

/// A server that accepts `conns` connections in turn and runs `serve` on
/// each after a TLS handshake (`Err` from the handshake is passed on too).
fn tls_server<F>(cert: &Cert, conns: usize, serve: F) -> (SocketAddr, JoinHandle<()>)
where
    F: Fn(io::Result<ServerTlsStream>) + Send + 'static,
{
    let config = server_config(cert);
    plain_server(conns, move |s| serve(tls::accept(&config, s)))
}

fn plain_server<F>(conns: usize, serve: F) -> (SocketAddr, JoinHandle<()>)
where
    F: Fn(TcpStream) + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let h = Builder::new()
        .stack_size(tls::HANDSHAKE_STACK_SIZE)
        .spawn(move || {
            for _ in 0..conns {
                let (s, _) = listener.accept().unwrap();
                s.set_nodelay(true).unwrap();
                serve(s);
            }
        })
        .unwrap();
    (addr, h)
}

fn echo_once(s: io::Result<ServerTlsStream>) {
    let Ok(s) = s else { return };
    let mut r = BufReader::new(s);
    if let Ok(line) = read_line(&mut r, 100) {
        let _ = write_line(r.get_mut(), &line);
    }
}

fn opts() -> ConnectOptions {
    ConnectOptions::new()
        .read_timeout(Some(Duration::from_secs(5)))
        .write_timeout(Some(Duration::from_secs(5)))
}

fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        greenpool_runtime::sleep(Duration::from_millis(2));
    }
}

#[test]
fn connects_echoes_and_resumes_sessions() {
    let cert = localhost_cert();
    let (addr, server) = tls_server(&cert, 2, echo_once);
    let connector = TlsConnector::from_pem(cert.pem.as_bytes()).unwrap();
    for round in 0..2 {
        let mut s = connector
            .connect(&addr.to_string(), "localhost", &opts())
            .unwrap();
        assert_eq!(s.is_resumed(), round == 1, "round {round}");
        write_line(&mut s, &format!("hello {round}")).unwrap();
        let mut r = BufReader::new(s);
        assert_eq!(read_line(&mut r, 100).unwrap(), format!("hello {round}"));
    }
    server.join().unwrap();
}

#[test]
fn resumption_can_be_turned_off() {
    let cert = localhost_cert();
    let (addr, server) = tls_server(&cert, 2, echo_once);
    let connector = TlsConnector::from_pem(cert.pem.as_bytes())
        .unwrap()
        .resumption(false);
    for _ in 0..2 {
        let mut s = connector
            .connect(&addr.to_string(), "localhost", &opts())
            .unwrap();
        assert!(!s.is_resumed());
        write_line(&mut s, "x").unwrap();
        assert_eq!(read_line(&mut BufReader::new(s), 10).unwrap(), "x");
    }
    server.join().unwrap();
}

fn handshake_error(connector: &TlsConnector, addr: SocketAddr, name: &str) -> io::Error {
    connector
        .connect(&addr.to_string(), name, &opts())
        .expect_err("the handshake must fail")
}

#[test]
fn rejected_certificates_say_which_rule_they_broke() {
    let cert = localhost_cert();
    // Another CA altogether (same-named self-signed certificates would be
    // a bad signature, not an unknown issuer).
    let mut other_params = rcgen::CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
    other_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "some other CA");
    let other = cert_with(other_params);
    let mut expired_params = rcgen::CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
    expired_params.not_before = rcgen::date_time_ymd(2000, 1, 1);
    expired_params.not_after = rcgen::date_time_ymd(2001, 1, 1);
    let expired = cert_with(expired_params);

    // Unknown issuer: the client trusts another certificate.
    let (addr, server) = tls_server(&cert, 1, drop);
    let e = handshake_error(
        &TlsConnector::from_pem(other.pem.as_bytes()).unwrap(),
        addr,
        "localhost",
    );
    assert_eq!(e.kind(), io::ErrorKind::InvalidData);
    let t = TlsError::find(&e).expect("a TlsError inside");
    assert_eq!(
        t.certificate_error(),
        Some(&rustls::CertificateError::UnknownIssuer)
    );
    let msg = e.to_string();
    assert!(
        msg.contains("unknown issuer") && msg.contains("localhost"),
        "{msg}"
    );
    server.join().unwrap();

    // Name mismatch.
    let (addr, server) = tls_server(&cert, 1, drop);
    let e = handshake_error(
        &TlsConnector::from_pem(cert.pem.as_bytes()).unwrap(),
        addr,
        "api.example.com",
    );
    let msg = e.to_string();
    assert!(msg.contains("name mismatch"), "{msg}");
    assert!(msg.contains("api.example.com"), "{msg}");
    server.join().unwrap();

    // Expired.
    let (addr, server) = tls_server(&expired, 1, drop);
    let e = handshake_error(
        &TlsConnector::from_pem(expired.pem.as_bytes()).unwrap(),
        addr,
        "localhost",
    );
    assert!(e.to_string().contains("expired"), "{e}");
    server.join().unwrap();
}

#[test]
fn a_plain_text_server_is_reported_as_not_speaking_tls() {
    let (addr, server) = plain_server(1, |mut s| {
        let _ = s.write_all(b"220 smtp.example ESMTP ready\r\n");
        let mut buf = [0u8; 512];
        let _ = s.read(&mut buf);
    });
    let cert = localhost_cert();
    let e = handshake_error(
        &TlsConnector::from_pem(cert.pem.as_bytes()).unwrap(),
        addr,
        "localhost",
    );
    assert!(e.to_string().contains("does not speak TLS"), "{e}");
    server.join().unwrap();
}

#[test]
fn handshake_timeout_bounds_a_silent_server() {
    let (tx, rx) = greenpool_runtime::may::sync::mpsc::channel::<()>();
    let (addr, server) = plain_server(1, move |_s| {
        // Hold the connection open, say nothing, until the client is done.
        let _ = rx.recv();
    });
    let cert = localhost_cert();
    let connector = TlsConnector::from_pem(cert.pem.as_bytes())
        .unwrap()
        .handshake_timeout(Duration::from_millis(200));
    let started = Instant::now();
    let e = handshake_error(&connector, addr, "localhost");
    let took = started.elapsed();
    assert_eq!(e.kind(), io::ErrorKind::TimedOut, "{e}");
    assert!(e.to_string().contains("handshake_timeout"), "{e}");
    assert!(
        took >= Duration::from_millis(190) && took < Duration::from_secs(3),
        "{took:?}"
    );
    tx.send(()).unwrap();
    server.join().unwrap();
}

#[test]
fn read_timeouts_work_through_tls_and_leave_the_stream_usable() {
    let cert = localhost_cert();
    let (go_tx, go_rx) = greenpool_runtime::may::sync::mpsc::channel::<()>();
    let (addr, server) = tls_server(&cert, 1, move |s| {
        let mut s = s.unwrap();
        go_rx.recv().unwrap();
        write_line(&mut s, "late").unwrap();
    });
    let connector = TlsConnector::from_pem(cert.pem.as_bytes()).unwrap();
    let mut s = connector
        .connect(&addr.to_string(), "localhost", &opts())
        .unwrap();
    s.set_read_timeout(Some(Duration::from_millis(150)))
        .unwrap();
    let started = Instant::now();
    let mut buf = [0u8; 16];
    let e = s.read(&mut buf).unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::TimedOut);
    assert!(started.elapsed() >= Duration::from_millis(140));
    go_tx.send(()).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    assert_eq!(read_line(&mut BufReader::new(s), 10).unwrap(), "late");
    server.join().unwrap();
}

#[test]
fn peer_status_sees_idle_close_notify_fin_and_unsolicited_data() {
    let cert = localhost_cert();
    let (step_tx, step_rx) = greenpool_runtime::may::sync::mpsc::channel::<&'static str>();
    let (addr, server) = tls_server(&cert, 3, move |s| {
        let mut s = s.unwrap();
        match step_rx.recv().unwrap() {
            "notify" => {
                s.conn.send_close_notify();
                s.flush().unwrap();
                // Keep the socket open: only the alert says "closed".
                let _ = step_rx.recv();
            }
            "fin" => drop(s),
            "data" => {
                write_line(&mut s, "unsolicited").unwrap();
                let _ = step_rx.recv();
            }
            other => panic!("{other}"),
        }
    });
    let connector = TlsConnector::from_pem(cert.pem.as_bytes()).unwrap();
    for (step, want) in [
        ("notify", PeerStatus::Closed),
        ("fin", PeerStatus::Closed),
        ("data", PeerStatus::Pending),
    ] {
        let mut s = connector
            .connect(&addr.to_string(), "localhost", &opts())
            .unwrap();
        // Idle even with the server's TLS 1.3 session tickets in flight.
        let started = Instant::now();
        while started.elapsed() < Duration::from_millis(50) {
            assert_eq!(s.peer_status(), PeerStatus::Idle, "{step}");
            greenpool_runtime::sleep(Duration::from_millis(5));
        }
        step_tx.send(step).unwrap();
        wait_until(step, || s.peer_status() == want);
        if step != "fin" {
            step_tx.send("done").unwrap();
        }
    }
    server.join().unwrap();
}

#[test]
fn starttls_refuses_plain_text_left_over_before_the_handshake() {
    let (addr, server) = plain_server(1, |mut s| {
        let _ = s.write_all(b"OK begin TLS\r\nINJECTED\r\n");
        let mut buf = [0u8; 512];
        let _ = s.read(&mut buf);
    });
    let stream = connect_addr(addr, &opts()).unwrap();
    let mut r = BufReader::new(stream);
    assert_eq!(read_line(&mut r, 100).unwrap(), "OK begin TLS");
    // The injected line came in the same write; if the segments split,
    // wait for the rest.
    if r.buffer().is_empty() {
        use std::io::BufRead;
        r.fill_buf().unwrap();
    }
    let cert = localhost_cert();
    let e = TlsConnector::from_pem(cert.pem.as_bytes())
        .unwrap()
        .upgrade_buffered(r, "localhost")
        .unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::InvalidData);
    assert!(e.to_string().contains("plain-text bytes"), "{e}");
    server.join().unwrap();
}

#[test]
fn pem_errors_name_their_source() {
    let e = TlsConnector::from_pem(b"not a certificate").unwrap_err();
    assert!(e.to_string().contains("BEGIN CERTIFICATE"), "{e}");
    let e = TlsConnector::from_pem_file("/nonexistent/ca.pem").unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::NotFound);
    assert!(e.to_string().contains("/nonexistent/ca.pem"), "{e}");
    let dir = std::env::temp_dir().join(format!("greenpool-tls-pem-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("ca.pem");
    std::fs::write(&path, localhost_cert().pem).unwrap();
    TlsConnector::from_pem_file(&path).unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn system_roots_load_where_the_machine_has_them() {
    match TlsConnector::system_roots() {
        Ok(c) => assert!(format!("{c:?}").contains("TlsConnector")),
        Err(e) => {
            assert_eq!(e.kind(), io::ErrorKind::NotFound);
            eprintln!("SKIPPED: {e}");
        }
    }
}
