/work/main/vendor/may/target/debug/deps/num_cpus-c40efc42caa90988.d: /root/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/num_cpus-1.16.0/src/lib.rs /root/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/num_cpus-1.16.0/src/linux.rs

/work/main/vendor/may/target/debug/deps/libnum_cpus-c40efc42caa90988.rmeta: /root/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/num_cpus-1.16.0/src/lib.rs /root/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/num_cpus-1.16.0/src/linux.rs

/root/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/num_cpus-1.16.0/src/lib.rs:
/root/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/num_cpus-1.16.0/src/linux.rs:
