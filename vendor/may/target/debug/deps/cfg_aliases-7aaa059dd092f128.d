/work/main/vendor/may/target/debug/deps/cfg_aliases-7aaa059dd092f128.d: /root/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/cfg_aliases-0.2.1/src/lib.rs

/work/main/vendor/may/target/debug/deps/libcfg_aliases-7aaa059dd092f128.rlib: /root/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/cfg_aliases-0.2.1/src/lib.rs

/work/main/vendor/may/target/debug/deps/libcfg_aliases-7aaa059dd092f128.rmeta: /root/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/cfg_aliases-0.2.1/src/lib.rs

/root/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/cfg_aliases-0.2.1/src/lib.rs:
