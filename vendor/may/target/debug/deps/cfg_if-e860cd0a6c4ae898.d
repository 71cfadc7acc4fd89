/work/main/vendor/may/target/debug/deps/cfg_if-e860cd0a6c4ae898.d: /root/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/cfg-if-1.0.0/src/lib.rs

/work/main/vendor/may/target/debug/deps/libcfg_if-e860cd0a6c4ae898.rmeta: /root/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/cfg-if-1.0.0/src/lib.rs

/root/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/cfg-if-1.0.0/src/lib.rs:
