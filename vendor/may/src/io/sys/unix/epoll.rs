use std::io;
use std::os::fd::AsFd;
use std::os::fd::BorrowedFd;
use std::sync::atomic::Ordering;
use std::sync::Arc;
#[cfg(feature = "io_timeout")]
use std::time::Duration;

use super::{from_nix_error, EventData, IoData};
#[cfg(feature = "io_timeout")]
use super::{timeout_handler, TimerData, TimerHandle, TimerList};
#[cfg(feature = "io_timeout")]
use crate::scheduler::WORKER_ID;
use crate::scheduler::Scheduler;
#[cfg(feature = "io_timeout")]
use crate::timeout_list::now;

use may_queue::mpsc::Queue;
use nix::sys::epoll::*;
use nix::sys::eventfd::*;
use nix::unistd::{read, write};
use smallvec::SmallVec;

pub type SysEvent = EpollEvent;

struct SingleSelector {
    epoll: Epoll,
    evfd: EventFd,
    #[cfg(feature = "io_timeout")]
    timer_list: TimerList,
    // timer entries that other threads ask this selector to unlink; only
    // this selector's thread may unlink entries from its timer_list
    #[cfg(feature = "io_timeout")]
    timer_del: Queue<TimerHandle>,
    free_ev: Queue<Arc<EventData>>,
    // the last turn of the event loop left coroutines in the local queue
    // (it ran out of budget): poll without blocking (only this selector's
    // thread touches it)
    work_left: std::sync::atomic::AtomicBool,
}

impl SingleSelector {
    pub fn new() -> io::Result<Self> {
        // wakeup data is 0
        let info = EpollEvent::new(EpollFlags::EPOLLIN, 0);

        let epoll = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC)?;
        let evfd = EventFd::from_flags(EfdFlags::EFD_NONBLOCK | EfdFlags::EFD_CLOEXEC)?;

        // add the eventfd to the epfd
        epoll.add(evfd.as_fd(), info)?;

        Ok(SingleSelector {
            epoll,
            evfd,
            free_ev: Queue::new(),
            work_left: std::sync::atomic::AtomicBool::new(false),
            #[cfg(feature = "io_timeout")]
            timer_list: TimerList::new(),
            #[cfg(feature = "io_timeout")]
            timer_del: Queue::new(),
        })
    }
}

pub(crate) struct Selector {
    // 128 should be fine for max io threads
    vec: SmallVec<[SingleSelector; 128]>,
}

impl Selector {
    pub fn new(io_workers: usize) -> io::Result<Self> {
        let mut s = Selector {
            vec: SmallVec::new(),
        };

        for _ in 0..io_workers {
            let ss = SingleSelector::new()?;
            s.vec.push(ss);
        }

        Ok(s)
    }

    #[inline]
    pub fn select(
        &self,
        scheduler: &Scheduler,
        id: usize,
        events: &mut [SysEvent],
        _timeout: Option<u64>,
    ) -> io::Result<Option<u64>> {
        assert!(id < self.vec.len());
        #[cfg(feature = "io_timeout")]
        let timeout_ms = _timeout
            .map(|to| EpollTimeout::try_from(to.div_ceil(1_000_000)).unwrap())
            .unwrap_or(EpollTimeout::NONE);
        #[cfg(not(feature = "io_timeout"))]
        let timeout_ms = EpollTimeout::NONE;
        // info!("select; timeout={:?}", timeout_ms);

        let single_selector = &self.vec[id];
        let epoll = &single_selector.epoll;

        // Coroutines are still queued: only look for events, do not sleep.
        let timeout_ms = if single_selector.work_left.load(Ordering::Relaxed) {
            EpollTimeout::ZERO
        } else {
            timeout_ms
        };
        // Wait for epoll events for at most timeout_ms milliseconds
        let n = epoll.wait(events, timeout_ms)?;
        // println!("epoll_wait = {}", n);

        // collect coroutines
        for event in &events[..n] {
            if event.data() == 0 {
                // this is just a wakeup event, ignore it
                let mut buf = [0u8; 8];
                // clear the eventfd, ignore the result
                read(single_selector.evfd.as_fd(), &mut buf).ok();
                // info!("got wakeup event in select, id={}", id);
                scheduler.collect_global(id);
                continue;
            }
            let data = unsafe { &mut *(event.data() as *mut EventData) };
            let events = event.events().bits() as usize;
            // info!("select got event, data={:p}, events={}", data, events);
            data.io_flag.fetch_or(events, Ordering::Release);

            // first check the atomic co, this may be grab by the worker first
            let co = match data.co.take() {
                Some(co) => co,
                None => continue,
            };

            // we own this fd's timer list, so this unlinks the entry directly
            data.disarm_timer();

            #[cfg(feature = "work_steal")]
            scheduler.schedule_with_id(co, id);
            #[cfg(not(feature = "work_steal"))]
            crate::coroutine_impl::run_coroutine(co);
        }

        // run the local tasks, up to a budget
        let left = scheduler.run_queued_tasks(id);
        single_selector.work_left.store(left, Ordering::Relaxed);

        // free the unused event_data
        self.free_unused_event_data(id);

        // unlink the timer entries that other threads gave back
        #[cfg(feature = "io_timeout")]
        loop {
            let v = single_selector.timer_del.bulk_pop();
            if v.is_empty() {
                break;
            }
            for h in v {
                h.remove();
            }
        }

        // deal with the timer list
        #[cfg(feature = "io_timeout")]
        let next_expire = single_selector
            .timer_list
            .schedule_timer(now(), &timeout_handler);
        #[cfg(not(feature = "io_timeout"))]
        let next_expire = None;
        Ok(next_expire)
    }

    // this will post an os event so that we can wake up the event loop
    #[inline]
    pub fn wakeup(&self, id: usize) {
        let buf = 1u64.to_le_bytes();
        let ret = write(&self.vec[id].evfd, &buf);
        trace!("wakeup id={:?}, ret={:?}", id, ret);
    }

    // register io event to the selector
    #[inline]
    pub fn add_fd(&self, io_data: IoData) -> io::Result<IoData> {
        let info = EpollEvent::new(
            EpollFlags::EPOLLIN
                | EpollFlags::EPOLLOUT
                | EpollFlags::EPOLLRDHUP
                | EpollFlags::EPOLLET,
            io_data.as_ref() as *const _ as _,
        );

        let fd = io_data.fd;
        let id = fd as usize % self.vec.len();
        let single_selector = &self.vec[id];
        let epoll = &single_selector.epoll;
        info!("add fd to epoll select, fd={:?}", fd);
        epoll
            .add(unsafe { BorrowedFd::borrow_raw(fd) }, info)
            .map_err(from_nix_error)
            .map(|_| io_data)
    }

    #[inline]
    pub fn mod_fd(&self, io_data: &IoData, is_read: bool) -> io::Result<()> {
        let mut info = if is_read {
            EpollEvent::new(
                EpollFlags::EPOLLIN | EpollFlags::EPOLLRDHUP | EpollFlags::EPOLLET,
                io_data.as_ref() as *const _ as _,
            )
        } else {
            EpollEvent::new(
                EpollFlags::EPOLLOUT | EpollFlags::EPOLLHUP | EpollFlags::EPOLLET,
                io_data.as_ref() as *const _ as _,
            )
        };

        let fd = io_data.fd;
        let id = fd as usize % self.vec.len();
        let single_selector = &self.vec[id];
        let epoll = &single_selector.epoll;
        info!("mod fd to epoll select, fd={:?}, is_read={}", fd, is_read);
        epoll
            .modify(unsafe { BorrowedFd::borrow_raw(fd) }, &mut info)
            .map_err(from_nix_error)
    }

    #[inline]
    pub fn del_fd(&self, io_data: &IoData) {
        // normally nothing is armed here: every path that resumes a wait
        // disarms its timer; a timer entry that is still queued keeps its
        // own reference to the event data and is ignored when it fires
        io_data.disarm_timer();

        let fd = io_data.fd;
        let id = fd as usize % self.vec.len();
        let single_selector = &self.vec[id];
        let epoll = &single_selector.epoll;
        info!("del fd from epoll select, fd={:?}", fd);
        epoll.delete(unsafe { BorrowedFd::borrow_raw(fd) }).ok();

        // after EpollCtlDel push the unused event data
        single_selector.free_ev.push((*io_data).clone());
    }

    // we can't free the event data directly in the worker thread
    // must free them before the next epoll_wait
    #[inline]
    fn free_unused_event_data(&self, id: usize) {
        let free_ev = &self.vec[id].free_ev;
        while !free_ev.bulk_pop().is_empty() {}
    }

    // register the io request to the timeout list
    // called by the waiting coroutine's subscribe, before it stores itself
    #[inline]
    #[cfg(feature = "io_timeout")]
    pub fn add_io_timer(&self, io: &IoData, timeout: Duration) {
        let id = io.fd as usize % self.vec.len();
        // info!("io timeout = {:?}", dur);
        let (old, b_new) = {
            let mut slot = io.timer.lock();
            // written only here, under the slot lock: no read-modify-write
            let gen = match io.next_gen.load(Ordering::Relaxed).wrapping_add(1) {
                0 => 1, // 0 means "none"
                g => g,
            };
            io.next_gen.store(gen, Ordering::Relaxed);
            let data = TimerData {
                event_data: (*io).clone(),
                gen,
            };
            // pushing is safe from any thread (multi-producer list)
            let (h, b_new) = self.vec[id].timer_list.add_timer(timeout, data);
            io.timer_gen.store(gen, Ordering::Relaxed);
            (slot.replace(h), b_new)
        };
        if let Some(h) = old {
            // not expected: every resumed wait disarms its timer
            self.del_io_timer(io.fd, h);
        }
        if b_new {
            // wake up the event loop thread to recall the next wait timeout
            self.wakeup(id);
        }
    }

    // give back a timer entry: unlink it now if we are the thread that owns
    // the fd's timer list, else queue it for that thread (unlinking from
    // another thread races with the owner walking the list)
    #[inline]
    #[cfg(feature = "io_timeout")]
    pub fn del_io_timer(&self, fd: std::os::unix::io::RawFd, h: TimerHandle) {
        let id = fd as usize % self.vec.len();
        if WORKER_ID.get() == id {
            h.remove();
        } else {
            self.vec[id].timer_del.push(h);
        }
    }
}
