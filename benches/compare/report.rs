//! BENCHMARKS.md: tables, the targets the issue names, and the machine the
//! figures come from.

use std::fmt::Write as _;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::settings::{Settings, QUICK_VAR};

/// The command that runs everything and writes BENCHMARKS.md.
pub const COMMAND: &str = "cargo bench --bench compare";

/// A markdown table.
pub struct Table {
    header: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(header: &[&str]) -> Table {
        Table {
            header: header.iter().map(|h| h.to_string()).collect(),
            rows: Vec::new(),
        }
    }

    pub fn row(&mut self, cells: Vec<String>) {
        debug_assert_eq!(cells.len(), self.header.len());
        self.rows.push(cells);
    }

    fn markdown(&self) -> String {
        let line = |cells: &[String]| format!("| {} |\n", cells.join(" | "));
        let mut out = line(&self.header);
        let rule: Vec<String> = self
            .header
            .iter()
            .enumerate()
            .map(|(i, _)| if i == 0 { "---" } else { "---:" }.to_string())
            .collect();
        out.push_str(&line(&rule));
        for row in &self.rows {
            out.push_str(&line(row));
        }
        out
    }
}

/// One numbered part of the report.
pub struct Section {
    pub title: String,
    body: String,
}

impl Section {
    pub fn new(title: impl Into<String>) -> Section {
        Section {
            title: title.into(),
            body: String::new(),
        }
    }

    /// A paragraph.
    pub fn text(&mut self, text: impl AsRef<str>) {
        self.body.push_str(text.as_ref().trim());
        self.body.push_str("\n\n");
    }

    pub fn table(&mut self, table: &Table) {
        self.body.push_str(&table.markdown());
        self.body.push('\n');
    }

    pub fn markdown(&self) -> String {
        format!("## {}\n\n{}", self.title, self.body)
    }
}

/// A target the issue names, and whether this run met it.
pub struct Target {
    pub what: String,
    pub measured: String,
    /// `None`: not measured in this run.
    pub held: Option<bool>,
}

impl Target {
    pub fn new(what: impl Into<String>, measured: impl Into<String>, held: Option<bool>) -> Self {
        Target {
            what: what.into(),
            measured: measured.into(),
            held,
        }
    }
}

/// Everything measured, in order.
#[derive(Default)]
pub struct Report {
    sections: Vec<Section>,
    targets: Vec<Target>,
    backend: String,
}

impl Report {
    pub fn add(&mut self, section: Section, targets: Vec<Target>) {
        println!("\n{}", section.markdown());
        self.sections.push(section);
        self.targets.extend(targets);
    }

    /// What the end-to-end figures ran against.
    pub fn set_backend(&mut self, backend: impl Into<String>) {
        self.backend = backend.into();
    }

    pub fn render(&self, settings: &Settings, took: Duration) -> String {
        let mut out = String::new();
        let mode = if settings.quick {
            format!(" (smoke run: {QUICK_VAR}=1; too short to quote)")
        } else {
            String::new()
        };
        let _ = write!(
            out,
            "# Benchmarks: greenpool beside r2d2, deadpool and bb8\n\n\
             Written by `{COMMAND}`{mode}, which runs every table below in one process \
             (took {took:.0?}). `{QUICK_VAR}=1 {COMMAND}` is a smoke run of the same \
             code in about a minute; it writes `target/BENCHMARKS-quick.md` and leaves \
             this file alone. Benchmarks measure; they never fail a build.\n\n"
        );
        out.push_str(&machine_table(&self.backend));
        out.push_str(&format!(
            "\n**How to read it.** Every figure is the median of several runs \
             (the number is given per section); ratios compare figures from the same \
             run. Everything runs on its default configuration: greenpool's workers \
             are green threads on {} worker threads (one per CPU, `Config::new()`), \
             r2d2's are OS threads, deadpool's and bb8's are tasks on a tokio runtime \
             with its default worker count (one per CPU). All four pools have a \
             30 s checkout timeout and do no work on checkout or return beyond the \
             checkout itself (no `is_valid`/`recycle` round trip, no `has_broken`). \
             Everything shares one 2-core machine with the server, so the absolute \
             numbers move with the machine; the ratios move less.\n\n",
            greenpool::runtime::may::config().get_workers()
        ));
        out.push_str("## Targets\n\n");
        let mut t = Table::new(&["target", "measured", "held?"]);
        for target in &self.targets {
            let held = match target.held {
                Some(true) => "yes",
                Some(false) => "**no**",
                None => "not measured",
            };
            t.row(vec![
                target.what.clone(),
                target.measured.clone(),
                held.into(),
            ]);
        }
        out.push_str(&t.markdown());
        out.push('\n');
        for s in &self.sections {
            out.push_str(&s.markdown());
        }
        out
    }

    pub fn write(&self, path: &Path, settings: &Settings, took: Duration) -> std::io::Result<()> {
        std::fs::write(path, self.render(settings, took))
    }
}

fn machine_table(backend: &str) -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .and_then(|rest| rest.split_once(':'))
        .map(|(_, m)| m.trim().to_string())
        .unwrap_or_else(|| "unknown".into());
    let cores = cpuinfo
        .lines()
        .filter(|l| l.starts_with("processor"))
        .count();
    let memory = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .map(|kb| format!("{:.1} GiB", kb as f64 / (1024.0 * 1024.0)))
        .unwrap_or_else(|| "unknown".into());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "unknown".into());
    let git = command_line("git", &["rev-parse", "--short", "HEAD"])
        .map(|rev| {
            let dirty = command_line("git", &["status", "--porcelain", "--untracked-files=no"])
                .is_some_and(|s| !s.is_empty());
            if dirty {
                format!("{rev} (with uncommitted changes)")
            } else {
                rev
            }
        })
        .unwrap_or_else(|| "unknown".into());
    let mut t = Table::new(&["", ""]);
    t.row(vec!["date (UTC)".into(), utc_now()]);
    t.row(vec!["command".into(), format!("`{COMMAND}`")]);
    t.row(vec!["CPU".into(), format!("{model}, {cores} cores")]);
    t.row(vec!["memory".into(), memory]);
    t.row(vec!["kernel".into(), kernel]);
    // Each green thread's stack is two memory maps: the 100,000-waiter row
    // needs this raised above the default 65,530 (`sysctl vm.max_map_count`).
    let max_map_count = std::fs::read_to_string("/proc/sys/vm/max_map_count")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "unknown".into());
    t.row(vec![
        "vm.max_map_count".into(),
        format!("{max_map_count} (two per green thread; the default 65,530 caps them near 31,000)"),
    ]);
    t.row(vec![
        "rustc".into(),
        command_line("rustc", &["--version"]).unwrap_or_else(|| "unknown".into()),
    ]);
    t.row(vec!["commit".into(), git]);
    t.row(vec!["server".into(), backend.to_string()]);
    t.markdown()
}

/// The first line a command prints, if it runs and succeeds.
pub fn command_line(program: &str, args: &[&str]) -> Option<String> {
    let out = Command::new(program).args(args).output().ok()?;
    if !out.status.success() {
        return None;
    }
    let text = String::from_utf8_lossy(&out.stdout);
    Some(text.lines().next().unwrap_or("").trim().to_string())
}

/// The current UTC time as `YYYY-MM-DD HH:MM`.
fn utc_now() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}",
        rem / 3_600,
        rem % 3_600 / 60
    )
}
