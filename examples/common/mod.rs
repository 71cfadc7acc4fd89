//! Start-up shared by the examples: flags, `--help`, logging and the runtime.
// Each example uses the parts it needs.
#![allow(dead_code)]

use std::fmt::Display;
use std::process::ExitCode;
use std::str::FromStr;

/// The command line after the program's name.
pub struct Flags {
    args: std::iter::Skip<std::env::Args>,
}

impl Flags {
    /// The next flag, if any.
    pub fn next(&mut self) -> Option<String> {
        self.args.next()
    }

    /// The value that follows `flag`, parsed.
    pub fn value<T>(&mut self, flag: &str) -> Result<T, String>
    where
        T: FromStr,
        T::Err: Display,
    {
        self.args
            .next()
            .ok_or_else(|| format!("{flag} needs a value"))?
            .parse()
            .map_err(|e| format!("{flag}: {e}"))
    }
}

/// Read the options with `parse`, which returns `Err("")` for `-h`/`--help`
/// and `Err(message)` for a bad flag. `Err(code)` is the exit code to return
/// at once: 0 after printing `help`, 2 after a usage error.
pub fn options<T>(
    program: &str,
    help: &str,
    parse: impl FnOnce(&mut Flags) -> Result<T, String>,
) -> Result<T, ExitCode> {
    let mut flags = Flags {
        args: std::env::args().skip(1),
    };
    match parse(&mut flags) {
        Ok(options) => Ok(options),
        Err(e) if e.is_empty() => {
            println!("{help}");
            Err(ExitCode::SUCCESS)
        }
        Err(e) => {
            eprintln!("{program}: {e}\n\n{help}");
            Err(ExitCode::from(2))
        }
    }
}

/// Print log records to stderr; `RUST_LOG` overrides `default_filter`.
pub fn init_logging(default_filter: &str) {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or(default_filter))
        .init();
}

/// Configure the green-thread runtime with its defaults. First thing in
/// `main`: may sizes its coroutine stacks when its scheduler starts.
pub fn start_runtime() {
    greenpool::runtime::Config::new()
        .apply()
        .expect("the runtime is configured first thing");
}
