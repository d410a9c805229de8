//! Broker resource readings from Linux `/proc`: CPU time (`/proc/PID/stat`) and memory
//! high-water mark / resident set (`/proc/PID/status`).

use std::process::Command;

/// Clock ticks per second for `/proc/PID/stat` times: `getconf CLK_TCK`, or 100 if unknown.
pub fn clock_ticks() -> u64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .filter(|o| o.status.success())
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse::<u64>().ok())
        .filter(|&t| t > 0)
        .unwrap_or(100)
}

/// User + system CPU time of process `pid`, in clock ticks.
pub fn cpu_ticks(pid: u32) -> anyhow::Result<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    parse_cpu_ticks(&stat)
}

/// `utime` and `stime` are fields 14 and 15; the command name (field 2) may contain spaces and
/// parentheses, so fields are counted from the last `)`.
fn parse_cpu_ticks(stat: &str) -> anyhow::Result<u64> {
    let rest = stat
        .rsplit_once(')')
        .map(|(_, r)| r)
        .ok_or_else(|| anyhow::anyhow!("malformed /proc stat line"))?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // `rest` starts at field 3 (state).
    let field = |n: usize| -> anyhow::Result<u64> {
        Ok(fields
            .get(n - 3)
            .ok_or_else(|| anyhow::anyhow!("short /proc stat line"))?
            .parse()?)
    };
    Ok(field(14)? + field(15)?)
}

/// Peak and current resident memory (`VmHWM`, `VmRSS`) of process `pid`, in KiB.
pub fn memory_kib(pid: u32) -> anyhow::Result<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let get = |key: &str| -> anyhow::Result<u64> {
        let line = status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .ok_or_else(|| anyhow::anyhow!("no {key} in /proc/{pid}/status"))?;
        Ok(line
            .trim_start_matches(':')
            .trim()
            .trim_end_matches("kB")
            .trim()
            .parse()?)
    };
    Ok((get("VmHWM")?, get("VmRSS")?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_with_odd_command_name() {
        let line = "42 (a) b (c) S 1 42 42 0 -1 4194560 100 0 0 0 250 75 0 0 20 0 9 0 1 2 3";
        assert_eq!(parse_cpu_ticks(line).unwrap(), 325);
    }

    #[test]
    fn reads_own_process() {
        let me = std::process::id();
        cpu_ticks(me).unwrap();
        let (hwm, rss) = memory_kib(me).unwrap();
        assert!(hwm >= rss && rss > 0);
    }
}
