//! Tiny latency sampling for the benchmark binaries (p50/p99 tables).

use std::future::Future;
use std::time::{Duration, Instant};

/// Latency samples of one operation.
#[derive(Clone, Debug)]
pub struct Samples {
    /// What was measured.
    pub label: String,
    sorted: Vec<Duration>,
}

impl Samples {
    /// The `q`-quantile (0.0..=1.0).
    pub fn quantile(&self, q: f64) -> Duration {
        if self.sorted.is_empty() {
            return Duration::ZERO;
        }
        let i = ((self.sorted.len() - 1) as f64 * q).round() as usize;
        self.sorted[i.min(self.sorted.len() - 1)]
    }

    /// Median.
    pub fn p50(&self) -> Duration {
        self.quantile(0.5)
    }

    /// 99th percentile.
    pub fn p99(&self) -> Duration {
        self.quantile(0.99)
    }

    /// Number of samples.
    pub fn len(&self) -> usize {
        self.sorted.len()
    }

    /// True without samples.
    pub fn is_empty(&self) -> bool {
        self.sorted.is_empty()
    }
}

/// Runs `op` `warmup` times unmeasured, then `n` times measured.
/// `op` returns an error message to abort the benchmark.
pub async fn sample<F, Fut>(
    label: &str,
    warmup: usize,
    n: usize,
    mut op: F,
) -> Result<Samples, String>
where
    F: FnMut(usize) -> Fut,
    Fut: Future<Output = Result<(), String>>,
{
    for i in 0..warmup {
        op(i).await.map_err(|e| format!("{label}: {e}"))?;
    }
    let mut v = Vec::with_capacity(n);
    for i in 0..n {
        let t = Instant::now();
        op(warmup + i).await.map_err(|e| format!("{label}: {e}"))?;
        v.push(t.elapsed());
    }
    v.sort();
    Ok(Samples {
        label: label.to_string(),
        sorted: v,
    })
}

/// A markdown table of p50/p99 in microseconds, each row also as a ratio of
/// the first row's p50 (the baseline).
pub fn table(title: &str, rows: &[Samples]) -> String {
    let mut s = format!("\n### {title}\n\n| operation | n | p50 µs | p99 µs | p50 / baseline |\n|---|---:|---:|---:|---:|\n");
    let base = rows.first().map(|r| r.p50().as_secs_f64()).unwrap_or(0.0);
    for r in rows {
        let ratio = if base > 0.0 {
            r.p50().as_secs_f64() / base
        } else {
            0.0
        };
        s.push_str(&format!(
            "| {} | {} | {:.0} | {:.0} | {:.2} |\n",
            r.label,
            r.len(),
            r.p50().as_secs_f64() * 1e6,
            r.p99().as_secs_f64() * 1e6,
            ratio
        ));
    }
    s
}
