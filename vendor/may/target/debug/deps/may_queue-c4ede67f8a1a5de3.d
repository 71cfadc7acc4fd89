/work/main/vendor/may/target/debug/deps/may_queue-c4ede67f8a1a5de3.d: /root/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/may_queue-0.1.23/src/lib.rs /root/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/may_queue-0.1.23/src/atomic.rs /root/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/may_queue-0.1.23/src/mpsc.rs /root/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/may_queue-0.1.23/src/mpsc_list.rs /root/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/may_queue-0.1.23/src/mpsc_list_v1.rs /root/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/may_queue-0.1.23/src/spmc.rs /root/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/may_queue-0.1.23/src/spsc.rs

/work/main/vendor/may/target/debug/deps/libmay_queue-c4ede67f8a1a5de3.rmeta: /root/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/may_queue-0.1.23/src/lib.rs /root/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/may_queue-0.1.23/src/atomic.rs /root/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/may_queue-0.1.23/src/mpsc.rs /root/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/may_queue-0.1.23/src/mpsc_list.rs /root/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/may_queue-0.1.23/src/mpsc_list_v1.rs /root/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/may_queue-0.1.23/src/spmc.rs /root/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/may_queue-0.1.23/src/spsc.rs

/root/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/may_queue-0.1.23/src/lib.rs:
/root/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/may_queue-0.1.23/src/atomic.rs:
/root/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/may_queue-0.1.23/src/mpsc.rs:
/root/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/may_queue-0.1.23/src/mpsc_list.rs:
/root/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/may_queue-0.1.23/src/mpsc_list_v1.rs:
/root/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/may_queue-0.1.23/src/spmc.rs:
/root/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/may_queue-0.1.23/src/spsc.rs:
