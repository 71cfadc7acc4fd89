#[cfg(any(target_os = "linux", target_os = "android"))]
#[path = "epoll.rs"]
mod select;

#[cfg(any(
    target_os = "dragonfly",
    target_os = "freebsd",
    target_os = "ios",
    target_os = "macos",
    target_os = "netbsd",
    target_os = "openbsd"
))]
#[path = "kqueue.rs"]
mod select;

#[cfg(feature = "io_cancel")]
pub mod cancel;
pub mod co_io;
pub mod net;
pub mod wait_io;

use std::ops::Deref;
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::io::{AsRawFd, RawFd};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::{fmt, io};

use crate::coroutine_impl::{run_coroutine, CoroutineImpl};
use crate::io::thread::ASSOCIATED_IO_RET;
use crate::likely::likely;
use crate::scheduler::get_scheduler;
use crate::sync::AtomicOption;
#[cfg(feature = "io_timeout")]
use crate::timeout_list::{TimeOutList, TimeoutHandle};
#[cfg(feature = "io_timeout")]
use parking_lot::Mutex;
use crate::yield_now::get_co_para;
#[cfg(feature = "io_timeout")]
use crate::yield_now::set_co_para;

pub(crate) use self::select::{Selector, SysEvent};

#[inline]
pub fn add_socket<T: AsRawFd + ?Sized>(t: &T) -> io::Result<IoData> {
    get_scheduler().get_selector().add_fd(IoData::new(t))
}

#[inline]
pub fn mod_socket(io: &IoData, is_read: bool) -> io::Result<()> {
    get_scheduler().get_selector().mod_fd(io, is_read)
}

#[inline]
fn del_socket(io: &IoData) {
    // transfer the io to the selector
    get_scheduler().get_selector().del_fd(io);
}

// deal with the io result
#[inline]
fn co_io_result(is_coroutine: bool) -> io::Result<()> {
    if likely(is_coroutine) {
        match get_co_para() {
            None => Ok(()),
            Some(err) => Err(err),
        }
    } else {
        let err = ASSOCIATED_IO_RET.with(|io_ret| io_ret.take());
        match err {
            None => Ok(()),
            Some(err) => Err(*err),
        }
    }
}

#[inline]
fn from_nix_error(err: nix::Error) -> ::std::io::Error {
    std::io::Error::from_raw_os_error(err as i32)
}

/// Set in `io_flag` by the timer of the armed wait when it found no coroutine
/// to resume (the waiting coroutine is still in `subscribe`, between arming the
/// timer and storing itself): `subscribe` then sees a non-zero `io_flag` and
/// `fast_schedule` resumes the coroutine with `TimedOut`.
/// (The EPOLLONESHOT bit value, which epoll never reports.)
#[cfg(feature = "io_timeout")]
const IO_TIMED_OUT: usize = 0x4000_0000;

// Runs on the thread that owns the timer list: the selector of `fd % workers`.
#[cfg(feature = "io_timeout")]
fn timeout_handler(data: TimerData) {
    let event_data = &*data.event_data;
    let mut co = {
        let mut slot = event_data.timer.lock();
        // a stale timer: its wait was finished by an io event, a wakeup or a
        // cancel, or a newer wait was armed since
        if event_data.timer_gen.load(Ordering::Relaxed) != data.gen {
            return;
        }
        // before co.take(), so that a `subscribe` that stores the coroutine
        // after this sees the flag (same protocol as the selector's io_flag)
        event_data.io_flag.fetch_or(IO_TIMED_OUT, Ordering::AcqRel);
        let co = match event_data.co.take() {
            Some(co) => co,
            // not stored yet (see IO_TIMED_OUT), or just taken by the thread
            // that finishes the wait, which will disarm the timer
            None => return,
        };
        event_data.timer_gen.store(0, Ordering::Relaxed);
        event_data.io_flag.fetch_and(!IO_TIMED_OUT, Ordering::AcqRel);
        // this entry has been popped from the list already
        drop(slot.take());
        co
    };

    set_co_para(&mut co, io::Error::new(io::ErrorKind::TimedOut, "timeout"));

    // resume the coroutine with timeout error
    run_coroutine(co);
}

// the timeout data
#[cfg(feature = "io_timeout")]
pub struct TimerData {
    // keeps the event data alive while the entry is in the timer list
    event_data: Arc<EventData>,
    // the armed wait this timer belongs to
    gen: usize,
}

#[cfg(feature = "io_timeout")]
pub type TimerList = TimeOutList<TimerData>;
#[cfg(feature = "io_timeout")]
pub type TimerHandle = TimeoutHandle<TimerData>;

// event associated io data, must be construct in
// each file handle, the epoll event.data would point to it
//
// Threads: the selector thread that owns the fd (`fd % workers`) handles its
// io events and runs its timer list; the waiting coroutine subscribes from
// whatever thread runs it (any worker, may's timer thread, or a worker running
// the proxy coroutine of a plain thread); wakers and cancels come from any
// thread. Only the owner may unlink entries from its timer list (the list is
// multi-producer, single-consumer), so other threads hand their handles to the
// owner (`Selector::del_io_timer`). The timer slot is guarded by a lock, and
// `timer_gen` names the armed wait so that a stale timer never resumes a
// newer wait.
pub struct EventData {
    pub fd: RawFd,
    pub io_flag: AtomicUsize,
    // the handle of the armed wait's timer, if any
    #[cfg(feature = "io_timeout")]
    pub(crate) timer: Mutex<Option<TimerHandle>>,
    // generation of the armed wait, 0 when none; written under `timer`
    #[cfg(feature = "io_timeout")]
    pub(crate) timer_gen: AtomicUsize,
    // the last generation given out; written under `timer`
    #[cfg(feature = "io_timeout")]
    pub(crate) next_gen: AtomicUsize,
    pub co: AtomicOption<CoroutineImpl>,
}

unsafe impl Send for EventData {}
unsafe impl Sync for EventData {}

impl EventData {
    pub fn new(fd: RawFd) -> EventData {
        EventData {
            fd,
            io_flag: AtomicUsize::new(0),
            #[cfg(feature = "io_timeout")]
            timer: Mutex::new(None),
            #[cfg(feature = "io_timeout")]
            timer_gen: AtomicUsize::new(0),
            #[cfg(feature = "io_timeout")]
            next_gen: AtomicUsize::new(1),
            co: AtomicOption::none(),
        }
    }

    /// Disarm the timer of the wait whose coroutine the caller has just taken
    /// from `co`, and give the timer entry back to the owning selector.
    /// Returns true if that timer had fired already (IO_TIMED_OUT).
    #[inline]
    pub(crate) fn disarm_timer(&self) -> bool {
        #[cfg(feature = "io_timeout")]
        {
            // the caller won `co`, so it sees the arming of this wait (done
            // before `co.store`); nobody else can disarm it meanwhile
            if self.timer_gen.load(Ordering::Relaxed) == 0 {
                return false;
            }
            let (h, fired) = {
                let mut slot = self.timer.lock();
                self.timer_gen.store(0, Ordering::Relaxed);
                // the bit is set only under this lock, so a plain load sees it
                let fired = self.io_flag.load(Ordering::Acquire) & IO_TIMED_OUT != 0;
                if fired {
                    self.io_flag.fetch_and(!IO_TIMED_OUT, Ordering::AcqRel);
                }
                (slot.take(), fired)
            };
            if let Some(h) = h {
                get_scheduler().get_selector().del_io_timer(self.fd, h);
            }
            fired
        }
        #[cfg(not(feature = "io_timeout"))]
        false
    }

    #[inline]
    pub fn schedule(&self) {
        let co = match self.co.take() {
            Some(co) => co,
            None => return, // it's already take by selector
        };

        self.disarm_timer();

        // schedule the coroutine
        get_scheduler().schedule(co);
    }

    /// used by local re-schedule that in `subscribe`
    #[inline]
    pub fn fast_schedule(&self) {
        #[allow(unused_mut)]
        let mut co = match self.co.take() {
            Some(co) => co,
            None => return, // it's already take by selector
        };

        // the timer of this wait fired before the coroutine was stored
        #[cfg(feature = "io_timeout")]
        if self.disarm_timer() {
            set_co_para(&mut co, io::Error::new(io::ErrorKind::TimedOut, "timeout"));
        }

        // run the coroutine
        run_coroutine(co);
    }
}

// each file associated data
pub struct IoData(Arc<EventData>);

impl IoData {
    pub fn new<T: AsRawFd + ?Sized>(t: &T) -> Self {
        let fd = t.as_raw_fd();
        let event_data = Arc::new(EventData::new(fd));
        IoData(event_data)
    }

    // clear the io flag
    #[inline]
    pub fn reset(&self) -> usize {
        self.io_flag.swap(0, Ordering::AcqRel)
    }
}

impl Deref for IoData {
    type Target = Arc<EventData>;

    fn deref(&self) -> &Arc<EventData> {
        &self.0
    }
}

impl fmt::Debug for IoData {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "IoData = {{ ... }}")
    }
}

impl Drop for IoData {
    fn drop(&mut self) {
        del_socket(self);
    }
}

impl AsFd for IoData {
    fn as_fd(&self) -> BorrowedFd<'_> {
        unsafe { BorrowedFd::borrow_raw(self.0.fd) }
    }
}

unsafe impl Send for IoData {}
