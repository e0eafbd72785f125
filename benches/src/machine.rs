//! What machine a report's figures come from, and when.

use std::{
    process::Command,
    time::{SystemTime, UNIX_EPOCH},
};

/// The machine and toolchain a run measured on.
#[derive(Clone, Debug, Default)]
pub struct Machine {
    /// `model name` from `/proc/cpuinfo`.
    pub cpu: String,
    /// Logical CPUs this process may use.
    pub cores: usize,
    /// `MemTotal` from `/proc/meminfo`, in GiB.
    pub memory_gib: f64,
    /// The kernel release (`/proc/sys/kernel/osrelease`).
    pub kernel: String,
    /// `rustc --version`.
    pub rustc: String,
    /// `redis-server --version`.
    pub redis: String,
    /// `/proc/loadavg`'s three load averages when the description was taken.
    pub load: String,
}

fn first_line_of(program: &str, arg: &str) -> String {
    Command::new(program)
        .arg(arg)
        .output()
        .ok()
        .and_then(|out| String::from_utf8(out.stdout).ok())
        .and_then(|s| s.lines().next().map(str::to_owned))
        .unwrap_or_else(|| "unknown".to_owned())
}

/// `/proc/loadavg`'s three load averages (`0.52 0.61 0.70`), or `unknown`.
pub fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|| "unknown".to_owned())
}

impl Machine {
    /// Describes this machine (Linux's `/proc`; `unknown` for what cannot be read).
    pub fn describe() -> Self {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu = cpuinfo
            .lines()
            .find(|l| l.starts_with("model name"))
            .and_then(|l| l.split_once(':'))
            .map(|(_, v)| v.trim().to_owned())
            .unwrap_or_else(|| "unknown".to_owned());
        let memory_gib = std::fs::read_to_string("/proc/meminfo")
            .unwrap_or_default()
            .lines()
            .find(|l| l.starts_with("MemTotal:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|kib| kib.parse::<f64>().ok())
            .map_or(0.0, |kib| kib / 1024.0 / 1024.0);
        let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .map(|s| s.trim().to_owned())
            .unwrap_or_else(|_| "unknown".to_owned());
        Self {
            cpu,
            cores: std::thread::available_parallelism().map_or(0, usize::from),
            memory_gib,
            kernel,
            rustc: first_line_of("rustc", "--version"),
            redis: first_line_of("redis-server", "--version"),
            load: load_average(),
        }
    }

    /// One line: `CPU, N cores, M GiB, Linux K`.
    pub fn summary(&self) -> String {
        format!(
            "{}, {} cores, {:.1} GiB, Linux {}",
            self.cpu, self.cores, self.memory_gib, self.kernel
        )
    }
}

/// Seconds since the Unix epoch as `YYYY-MM-DD HH:MM UTC`.
pub fn utc(seconds: u64) -> String {
    let days = seconds / 86_400;
    let (hour, minute) = ((seconds % 86_400) / 3_600, (seconds % 3_600) / 60);
    // Days to a civil date (the proleptic Gregorian calendar), after Howard Hinnant's
    // well-known derivation: eras of 400 years, years starting in March.
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02} {hour:02}:{minute:02} UTC")
}

/// Now, as [`utc`] writes it.
pub fn now_utc() -> String {
    utc(SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_dates() {
        assert_eq!(utc(0), "1970-01-01 00:00 UTC");
        assert_eq!(utc(951_782_400), "2000-02-29 00:00 UTC");
        assert_eq!(utc(1_796_651_700), "2026-12-07 13:55 UTC");
    }

    #[test]
    fn describes_something() {
        let m = Machine::describe();
        assert!(m.summary().contains("cores"));
    }
}
