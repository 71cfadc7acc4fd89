//! Error types a service uses work with `with`, `with_guard`, `check`,
//! `retry` and `Retry`: `Box<dyn Error + Send + Sync>`, `Box<dyn Error>`,
//! `anyhow::Error`, next to `io::Error` and an own error enum; `ErrorSet`
//! matches through the boxes and reports.

mod common;

use std::error::Error as StdError;
use std::io;
use std::time::Duration;

use common::{mock_pool as pool, wait_until, Mock};
use greenpool::{retry, ConnectionPool, ErrorSet, Retry};

const LONG: Duration = Duration::from_secs(10);

type BoxError = Box<dyn StdError + Send + Sync>;

fn reset() -> io::Error {
    io::Error::new(io::ErrorKind::ConnectionReset, "peer reset")
}

#[derive(Debug, PartialEq)]
enum Imap {
    Bye,
    No(&'static str),
}
impl std::fmt::Display for Imap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{self:?}")
    }
}
impl StdError for Imap {}

fn discarded(p: &ConnectionPool<Mock>) -> u64 {
    p.state().counters.discarded.error
}

#[test]
fn with_takes_a_boxed_error_and_discards_on_the_io_error_inside() {
    let p = pool(1, ErrorSet::io());
    let r: Result<(), BoxError> = p.with(|_c| Err(reset().into()));
    assert_eq!(
        r.unwrap_err().downcast_ref::<io::Error>().unwrap().kind(),
        io::ErrorKind::ConnectionReset
    );
    assert_eq!(discarded(&p), 1);

    // A boxed error that is not in the set gives the connection back.
    let id = p.get().unwrap().id;
    let r: Result<(), BoxError> = p.with(|_c| Err("no such key".into()));
    assert_eq!(r.unwrap_err().to_string(), "no such key");
    assert_eq!(discarded(&p), 1);
    assert_eq!(p.get().unwrap().id, id);

    // `?` converts into the box, as code written for Box<dyn Error> does.
    let r: Result<u32, BoxError> = p.with(|_c| Ok("12".parse::<u32>()?));
    assert_eq!(r.unwrap(), 12);
    // Box<dyn Error> without Send + Sync too.
    let r: Result<(), Box<dyn StdError>> = p.with(|_c| Err(reset().into()));
    assert!(r.is_err());
    assert_eq!(discarded(&p), 2);
}

#[test]
fn with_takes_anyhow_and_matches_through_its_context() {
    let p = pool(1, ErrorSet::kind(io::ErrorKind::ConnectionReset));
    let r: anyhow::Result<()> = p.with(|_c| {
        Err(anyhow::Error::new(reset())
            .context("reading the reply")
            .context("GET x"))
    });
    let e = r.unwrap_err();
    assert_eq!(e.to_string(), "GET x");
    assert_eq!(discarded(&p), 1);

    let r: anyhow::Result<()> = p.with(|_c| anyhow::bail!("no such key"));
    assert!(r.is_err());
    assert_eq!(
        discarded(&p),
        1,
        "an error outside the set keeps the connection"
    );
}

#[test]
fn check_takes_boxes_and_anyhow() {
    let p = pool(1, ErrorSet::io());
    {
        let mut g = p.get().unwrap();
        let r: Result<(), BoxError> = g.check(Err("fine".into()));
        assert!(r.is_err());
        assert!(!g.is_marked_broken());
        let r: Result<(), BoxError> = g.check(Err(reset().into()));
        assert!(r.is_err());
        assert!(g.is_marked_broken());
    }
    assert!(wait_until(LONG, || discarded(&p) == 1));
    let mut g = p.get().unwrap();
    let _ = g.check(Err::<(), _>(anyhow::Error::new(reset())));
    assert!(g.is_marked_broken());
}

#[test]
fn error_set_when_and_of_see_into_boxes_and_anyhow() {
    let bye = ErrorSet::when(|e: &Imap| *e == Imap::Bye);
    let boxed: BoxError = Box::new(Imap::Bye);
    assert!(bye.matches(&boxed));
    assert!(ErrorSet::of::<Imap>().matches(&boxed));
    let no: BoxError = Box::new(Imap::No("over quota"));
    assert!(!bye.matches(&no));

    let wrapped = anyhow::Error::new(Imap::Bye).context("LOGIN");
    assert!(bye.matches(&wrapped));
    assert!(!bye.matches(&anyhow::Error::new(Imap::No("x")).context("LOGIN")));
    // An io::Error inside a box inside an own error's source chain.
    let deep = anyhow::Error::new(io::Error::other(Box::new(Imap::Bye) as BoxError));
    assert!(bye.matches(&deep));
    assert!(ErrorSet::io().matches(&deep));

    // In the pool: one variant of an own enum, returned as anyhow::Error.
    let p = pool(1, ErrorSet::io().or(bye));
    let r: anyhow::Result<()> = p.with(|_c| Err(anyhow::Error::new(Imap::No("quota"))));
    assert!(r.is_err());
    assert_eq!(discarded(&p), 0);
    let r: anyhow::Result<()> = p.with(|_c| Err(anyhow::Error::new(Imap::Bye).context("NOOP")));
    assert!(r.is_err());
    assert_eq!(discarded(&p), 1);
}

#[test]
fn retry_and_retry_policies_take_boxes_and_anyhow() {
    let p = pool(2, ErrorSet::io());
    let mut ids = Vec::new();
    let v: anyhow::Result<u64> = retry(|| {
        p.with(|c| {
            ids.push(c.id);
            if ids.len() < 3 {
                Err(anyhow::Error::new(reset()).context("PING"))
            } else {
                Ok(c.id)
            }
        })
    });
    assert_eq!(v.unwrap(), ids[2]);
    assert_eq!(ids.len(), 3);
    assert_ne!(ids[0], ids[1], "each retry on a fresh connection");

    let policy = Retry::new().max_failures(2);
    let outcome = policy.run(|| -> Result<(), BoxError> { Err(reset().into()) });
    assert_eq!(outcome.attempts, 3);
    let outcome = policy.run(|| -> Result<(), BoxError> { Err("not retried".into()) });
    assert_eq!(outcome.attempts, 1);
    let r: Result<(), Box<dyn StdError>> = policy.call(|| Err(reset().into()));
    assert!(r.is_err());

    // The pool's own failure arrives as the box/anyhow and is not retried.
    p.close();
    let mut attempts = 0;
    let r: anyhow::Result<()> = retry(|| {
        attempts += 1;
        p.with(|_c| Ok(()))
    });
    let e = r.unwrap_err();
    assert!(e.downcast_ref::<greenpool::Error>().unwrap().is_closed());
    assert_eq!(attempts, 1);
    let r: Result<(), BoxError> = p.retry(|_c| Ok(()));
    assert!(r
        .unwrap_err()
        .downcast_ref::<greenpool::Error>()
        .unwrap()
        .is_closed());
}

/// Code generic over `E: std::error::Error` keeps compiling, without naming
/// the marker parameter.
fn generic_caller<E>(p: &ConnectionPool<Mock>, fail: impl Fn() -> E) -> Result<u64, E>
where
    E: StdError + From<greenpool::Error> + 'static,
{
    let r = retry(|| p.with(|_c| Err(fail())));
    match r {
        Ok(()) => unreachable!(),
        Err(e) => {
            let mut g = p.get()?;
            g.check(Err::<(), E>(e)).map(|_| 0)
        }
    }
}

#[test]
fn generic_code_over_std_errors_compiles_and_behaves_as_before() {
    let p = pool(1, ErrorSet::io());
    assert!(generic_caller(&p, reset).is_err());
    // 6 attempts and the final check: 7 discards.
    assert!(wait_until(LONG, || discarded(&p) == 7));
}
