//! What the machine's cores did while a run was measured, from the
//! kernel's counters in `/proc/stat`: user code, the kernel, waiting for
//! the disk, time the host took (steal) and idle. The same build's figures
//! move by several times between hosts, or on one host between days; this
//! shows when the machine, not vecsync, changed.

use serde::{Deserialize, Serialize};

/// The machine's cumulative CPU time, in the kernel's ticks, all cores.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CpuTimes {
    cores: usize,
    user: u64,
    kernel: u64,
    iowait: u64,
    steal: u64,
    idle: u64,
}

/// Shares of the cores' time over a span, percent; they add up to 100.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CoreShares {
    pub cores: usize,
    pub user_pct: f64,
    pub kernel_pct: f64,
    pub iowait_pct: f64,
    pub steal_pct: f64,
    pub idle_pct: f64,
}

impl CpuTimes {
    /// The counters now (`None` where `/proc/stat` is missing or unread).
    pub fn now() -> Option<Self> {
        parse(&std::fs::read_to_string("/proc/stat").ok()?)
    }

    /// How the cores' time since `before` was spent (`None` if none passed).
    pub fn since(&self, before: &Self) -> Option<CoreShares> {
        let d = |now: u64, then: u64| now.saturating_sub(then) as f64;
        let parts = [
            d(self.user, before.user),
            d(self.kernel, before.kernel),
            d(self.iowait, before.iowait),
            d(self.steal, before.steal),
            d(self.idle, before.idle),
        ];
        let total: f64 = parts.iter().sum();
        if total == 0.0 {
            return None;
        }
        let [user_pct, kernel_pct, iowait_pct, steal_pct, idle_pct] =
            parts.map(|p| 100.0 * p / total);
        Some(CoreShares {
            cores: self.cores,
            user_pct,
            kernel_pct,
            iowait_pct,
            steal_pct,
            idle_pct,
        })
    }
}

/// The summed `cpu` line of `/proc/stat`: user, nice, system, idle,
/// iowait, irq, softirq, steal (guest time is inside user already).
fn parse(stat: &str) -> Option<CpuTimes> {
    let mut lines = stat.lines();
    let fields: Vec<u64> = lines
        .next()?
        .strip_prefix("cpu ")?
        .split_whitespace()
        .map(str::parse)
        .collect::<Result<_, _>>()
        .ok()?;
    let [user, nice, system, idle, iowait, irq, softirq, steal, ..] = fields[..] else {
        return None;
    };
    let cores = lines
        .filter(|l| l.starts_with("cpu") && l.as_bytes().get(3).is_some_and(u8::is_ascii_digit))
        .count();
    Some(CpuTimes {
        cores,
        user: user + nice,
        kernel: system + irq + softirq,
        iowait,
        steal,
        idle,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const BEFORE: &str = "\
cpu  1000 10 300 5000 40 5 15 20 0 0
cpu0 500 5 150 2500 20 3 7 10 0 0
cpu1 500 5 150 2500 20 2 8 10 0 0
intr 123456 0 0
ctxt 98765
";
    const AFTER: &str = "\
cpu  1590 20 600 5030 80 15 45 80 0 0
cpu0 800 10 300 2515 40 8 22 40 0 0
cpu1 790 10 300 2515 40 7 23 40 0 0
intr 223456 0 0
";

    #[test]
    fn the_spans_time_is_split_into_user_kernel_disk_host_and_idle() {
        let (before, after) = (parse(BEFORE).unwrap(), parse(AFTER).unwrap());
        // 600 user (590 + 10 nice), 340 kernel (300 + 10 irq + 30
        // softirq), 40 iowait, 60 steal, 30 idle: 1,070 ticks.
        let s = after.since(&before).unwrap();
        assert_eq!(s.cores, 2);
        let pct = |ticks: f64| 100.0 * ticks / 1070.0;
        assert_eq!(
            [
                s.user_pct,
                s.kernel_pct,
                s.iowait_pct,
                s.steal_pct,
                s.idle_pct
            ],
            [pct(600.0), pct(340.0), pct(40.0), pct(60.0), pct(30.0)]
        );
        assert_eq!(after.since(&after), None, "no time passed");
    }

    #[test]
    fn a_stat_without_the_summed_line_or_with_too_few_fields_is_none() {
        assert_eq!(parse("cpu0 1 2 3 4 5 6 7 8\n"), None);
        assert_eq!(parse("cpu  1 2 3 4 5 6 7\n"), None);
        assert_eq!(parse("cpu  1 2 x 4 5 6 7 8\n"), None);
    }
}
