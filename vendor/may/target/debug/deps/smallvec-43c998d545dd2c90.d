/work/main/vendor/may/target/debug/deps/smallvec-43c998d545dd2c90.d: /root/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/smallvec-1.15.0/src/lib.rs

/work/main/vendor/may/target/debug/deps/libsmallvec-43c998d545dd2c90.rmeta: /root/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/smallvec-1.15.0/src/lib.rs

/root/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/smallvec-1.15.0/src/lib.rs:
