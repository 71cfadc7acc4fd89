//! greenpool side by side with r2d2, deadpool and bb8, in one run, on the
//! same work; writes BENCHMARKS.md at the repository root.
//!
//! ```sh
//! cargo bench --bench compare                            # everything, ~7 min
//! GREENPOOL_BENCH_QUICK=1 cargo bench --bench compare    # smoke run, ~1 min
//! cargo bench --bench compare -- overhead memory         # some sections only (prints, writes nothing)
//! ```
//!
//! Sections: `overhead` (1), `end-to-end` (2 and 5), `io-timeouts` (2b),
//! `checkout-checks` (2c),
//! `memory` (3), `recovery` (4). See BENCHMARKS.md for what each measures.

mod backend;
mod drive;
mod end_to_end;
mod memory;
mod overhead;
mod pools;
mod recovery;
mod report;
mod settings;
mod stats;

use std::path::PathBuf;
use std::time::Instant;

use backend::Backend;
use report::Report;
use settings::Settings;

const SECTIONS: [&str; 6] = [
    "overhead",
    "end-to-end",
    "io-timeouts",
    "checkout-checks",
    "memory",
    "recovery",
];

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let Some(i) = args.iter().position(|a| a == memory::CHILD_FLAG) {
        memory::child(&args[i + 1..]);
        return;
    }
    // The default configuration: one worker per CPU (GREENPOOL_WORKERS=n
    // overrides it), and tokio's default worker count, which is the same.
    greenpool::runtime::Config::new()
        .apply()
        .expect("the runtime is configured before anything uses it");
    memory::raise_open_files_limit();

    // `cargo bench` passes `--bench`; anything else names sections to run.
    let chosen: Vec<&str> = args
        .iter()
        .map(String::as_str)
        .filter(|a| !a.starts_with("--"))
        .collect();
    if let Some(bad) = chosen.iter().find(|a| !SECTIONS.contains(a)) {
        eprintln!("unknown section {bad:?}; sections: {}", SECTIONS.join(", "));
        std::process::exit(2);
    }
    let wanted = |name: &str| chosen.is_empty() || chosen.contains(&name);

    let settings = Settings::from_env();
    let started = Instant::now();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime starts");
    let mut report = Report::default();

    if wanted("overhead") {
        let (section, targets) = overhead::run(&settings, &rt);
        report.add(section, targets);
    }
    let mut backend = Backend::start();
    report.set_backend(backend.describe());
    if wanted("end-to-end") {
        let (section, targets) = end_to_end::run(&settings, &rt, &backend);
        report.add(section, targets);
    }
    if wanted("io-timeouts") {
        report.add(end_to_end::io_timeout_cost(&settings, &backend), Vec::new());
    }
    if wanted("checkout-checks") {
        report.add(
            end_to_end::checkout_check_cost(&settings, &backend),
            Vec::new(),
        );
    }
    if wanted("memory") {
        let (section, targets) = memory::run(&settings, &backend);
        report.add(section, targets);
    }
    if wanted("recovery") {
        let (section, targets) = recovery::run(&settings, &mut backend);
        report.add(section, targets);
    }
    if wanted("end-to-end") {
        let (section, targets) = end_to_end::no_pool(&settings, &backend);
        report.add(section, targets);
    }
    drop(backend);

    let took = started.elapsed();
    if !chosen.is_empty() {
        eprintln!("\nsome sections only: BENCHMARKS.md left as it was");
        return;
    }
    let path = if settings.quick {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/BENCHMARKS-quick.md")
    } else {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("BENCHMARKS.md")
    };
    match report.write(&path, &settings, took) {
        Ok(()) => eprintln!("\nwrote {} ({took:.0?})", path.display()),
        Err(e) => {
            eprintln!("cannot write {}: {e}", path.display());
            std::process::exit(1);
        }
    }
}
