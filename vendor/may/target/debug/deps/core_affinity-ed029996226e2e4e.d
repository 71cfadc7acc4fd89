/work/main/vendor/may/target/debug/deps/core_affinity-ed029996226e2e4e.d: /root/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/core_affinity-0.8.3/src/lib.rs

/work/main/vendor/may/target/debug/deps/libcore_affinity-ed029996226e2e4e.rmeta: /root/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/core_affinity-0.8.3/src/lib.rs

/root/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/core_affinity-0.8.3/src/lib.rs:
