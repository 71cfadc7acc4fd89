/work/main/vendor/may/target/debug/deps/crossbeam-aabedb575457b6b6.d: /root/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/crossbeam-0.8.4/src/lib.rs

/work/main/vendor/may/target/debug/deps/libcrossbeam-aabedb575457b6b6.rmeta: /root/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/crossbeam-0.8.4/src/lib.rs

/root/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/crossbeam-0.8.4/src/lib.rs:
