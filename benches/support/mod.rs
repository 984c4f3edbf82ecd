//! What the Rust benchmarks share.

/// CPU time this process has used (all threads, user + system), from /proc/self/stat.
pub fn process_cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").expect("/proc/self/stat");
    // Fields after the command name, which ends with the last ')'.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .expect("stat format")
        .1
        .split_whitespace()
        .collect();
    let ticks = |i: usize| fields[i].parse::<f64>().expect("clock ticks");
    // Clock ticks; 100 per second on Linux.
    (ticks(11) + ticks(12)) / 100.0
}
