//! Printing what a run measured: a table for people, one JSON document for
//! machines, and the targets judged from the same figures.

use serde_json::{json, Value};

use crate::driver::PhaseResult;

/// The targets of issue 5 that one run can judge.
pub const DEPOSIT_RATIO_TARGET: f64 = 0.40;
/// Redemption throughput over the echo ceiling.
pub const REDEMPTION_RATIO_TARGET: f64 = 0.50;
/// Both operations' p99.
pub const P99_TARGET_MS: f64 = 10.0;

/// The machine the run was on.
#[derive(Debug, Clone)]
pub struct Machine {
    /// Logical CPUs available to this process.
    pub nproc: usize,
    /// `model name` of /proc/cpuinfo.
    pub cpu: String,
}

impl Machine {
    /// This machine.
    pub fn detect() -> Self {
        let cpu = std::fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(|s| {
                s.lines()
                    .find(|l| l.starts_with("model name"))
                    .and_then(|l| l.split_once(':'))
                    .map(|(_, v)| v.trim().to_owned())
            })
            .unwrap_or_else(|| "unknown".into());
        Machine {
            nproc: std::thread::available_parallelism().map_or(1, |n| n.get()),
            cpu,
        }
    }
}

/// Everything one run produced.
pub struct Report {
    /// Where it ran.
    pub machine: Machine,
    /// The run's settings, as JSON.
    pub config: Value,
    /// `--preload`.
    pub preload: Option<PhaseResult>,
    /// `--baseline`.
    pub echo: Option<PhaseResult>,
    /// The deposit phase.
    pub deposit: PhaseResult,
    /// The redemption phase (absent with `--skip-redemption`).
    pub redemption: Option<PhaseResult>,
}

/// One judged target.
#[derive(Debug, Clone)]
pub struct Verdict {
    /// What is measured.
    pub measure: String,
    /// The target, in words.
    pub target: String,
    /// The measured value, in words.
    pub value: String,
    /// Whether it is met.
    pub met: bool,
}

impl Report {
    /// Deposit and redemption success throughput over the echo ceiling.
    pub fn ratios(&self) -> Option<(f64, Option<f64>)> {
        let ceiling = self.echo.as_ref()?.ok_throughput();
        if ceiling <= 0.0 {
            return None;
        }
        Some((
            self.deposit.ok_throughput() / ceiling,
            self.redemption
                .as_ref()
                .map(|r| r.ok_throughput() / ceiling),
        ))
    }

    /// The per-run targets, judged.
    pub fn verdicts(&self) -> Vec<Verdict> {
        let mut v = Vec::new();
        let ratios = self.ratios();
        let phases = [
            (
                "deposit",
                Some(&self.deposit),
                ratios.map(|r| r.0),
                DEPOSIT_RATIO_TARGET,
            ),
            (
                "redemption",
                self.redemption.as_ref(),
                ratios.and_then(|r| r.1),
                REDEMPTION_RATIO_TARGET,
            ),
        ];
        for (name, phase, ratio, target) in phases {
            let Some(phase) = phase else { continue };
            if let Some(r) = ratio {
                v.push(Verdict {
                    measure: format!("{name} throughput / echo ceiling"),
                    target: format!(">= {target:.2}"),
                    value: format!("{r:.3}"),
                    met: r >= target,
                });
            }
            let p99 = phase.quantile_ms(0.99);
            v.push(Verdict {
                measure: format!("{name} p99"),
                target: format!("<= {P99_TARGET_MS} ms"),
                value: format!("{p99:.2} ms"),
                met: phase.requests > 0 && p99 <= P99_TARGET_MS,
            });
            let errors = phase.requests - phase.ok + phase.transport_errors + phase.timeouts;
            v.push(Verdict {
                measure: format!("{name} failures"),
                target: "0".into(),
                value: errors.to_string(),
                met: errors == 0 && phase.ok > 0,
            });
        }
        v
    }

    /// The JSON document of `--json`.
    pub fn to_json(&self) -> Value {
        let ratios = self.ratios();
        json!({
            "tool": "dzl-load",
            "version": env!("CARGO_PKG_VERSION"),
            "machine": {"nproc": self.machine.nproc, "cpu": self.machine.cpu},
            "config": self.config,
            "preload": self.preload.as_ref().map(phase_json),
            "echo": self.echo.as_ref().map(phase_json),
            "deposit": phase_json(&self.deposit),
            "redemption": self.redemption.as_ref().map(phase_json),
            "ratios": ratios.map(|(d, r)| json!({"deposit": d, "redemption": r})),
            "targets": self.verdicts().iter().map(|v| json!({
                "measure": v.measure, "target": v.target, "value": v.value, "met": v.met,
            })).collect::<Vec<_>>(),
        })
    }

    /// The table for people.
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        out.push_str(&format!(
            "machine: {} CPUs, {}\nconfig:  {}\n\n",
            self.machine.nproc, self.machine.cpu, self.config
        ));
        out.push_str(&format!(
            "{:<11} {:>9} {:>9} {:>10} {:>10} {:>8} {:>8} {:>8} {:>8}  statuses\n",
            "operation", "requests", "ok", "req/s", "ok/s", "p50 ms", "p90 ms", "p99 ms", "max ms"
        ));
        let rows = [
            ("preload", self.preload.as_ref()),
            ("echo", self.echo.as_ref()),
            ("deposit", Some(&self.deposit)),
            ("redemption", self.redemption.as_ref()),
        ];
        for (name, p) in rows {
            let Some(p) = p else { continue };
            out.push_str(&format!(
                "{:<11} {:>9} {:>9} {:>10.0} {:>10.0} {:>8.2} {:>8.2} {:>8.2} {:>8.2}  {}\n",
                name,
                p.requests,
                p.ok,
                p.throughput(),
                p.ok_throughput(),
                p.quantile_ms(0.50),
                p.quantile_ms(0.90),
                p.quantile_ms(0.99),
                p.max_ms(),
                statuses_text(p),
            ));
        }
        out.push('\n');
        for (name, p) in rows {
            let Some(p) = p else { continue };
            let mut notes = Vec::new();
            if p.exhausted {
                notes.push(format!(
                    "ran out of work after {:.2} s",
                    p.elapsed.as_secs_f64()
                ));
            }
            if p.transport_errors > 0 {
                notes.push(format!("{} transport errors", p.transport_errors));
            }
            if p.timeouts > 0 {
                notes.push(format!("{} timeouts", p.timeouts));
            }
            let total: f64 = p.cpu.values().map(|u| u.total.as_secs_f64()).sum();
            if total > 0.0 && p.requests > 0 {
                let per_req = |d: f64| d * 1e6 / p.requests as f64;
                let groups: Vec<String> = p
                    .cpu
                    .iter()
                    .filter(|(_, u)| !u.total.is_zero())
                    .map(|(g, u)| {
                        format!(
                            "{g} {:.0} (sys {:.0})",
                            per_req(u.total.as_secs_f64()),
                            per_req(u.system.as_secs_f64())
                        )
                    })
                    .collect();
                notes.push(format!(
                    "CPU {:.2} cores busy, {:.0} us/request ({})",
                    total / p.elapsed.as_secs_f64().max(1e-9),
                    per_req(total),
                    groups.join(", ")
                ));
            }
            if !notes.is_empty() {
                out.push_str(&format!("{name}: {}\n", notes.join("; ")));
            }
        }
        if let Some((d, r)) = self.ratios() {
            out.push_str(&format!(
                "ratio to the echo ceiling ({:.0} req/s): deposit {d:.3}{}\n",
                self.echo.as_ref().map_or(0.0, PhaseResult::ok_throughput),
                r.map(|r| format!(", redemption {r:.3}"))
                    .unwrap_or_default()
            ));
        }
        out.push_str("\ntargets (per run):\n");
        for v in self.verdicts() {
            out.push_str(&format!(
                "  {:<40} {:<12} {:<12} {}\n",
                v.measure,
                v.target,
                v.value,
                if v.met { "met" } else { "MISSED" }
            ));
        }
        out
    }
}

fn statuses_text(p: &PhaseResult) -> String {
    let mut parts: Vec<String> = p.statuses.iter().map(|(s, n)| format!("{s}:{n}")).collect();
    if p.transport_errors > 0 {
        parts.push(format!("transport:{}", p.transport_errors));
    }
    if p.timeouts > 0 {
        parts.push(format!("timeout:{}", p.timeouts));
    }
    parts.join(" ")
}

/// One phase as JSON.
pub fn phase_json(p: &PhaseResult) -> Value {
    json!({
        "connections": p.connections,
        "elapsed_s": p.elapsed.as_secs_f64(),
        "requests": p.requests,
        "ok": p.ok,
        "ok_status": p.ok_status,
        "throughput_rps": p.throughput(),
        "ok_rps": p.ok_throughput(),
        "latency_ms": {
            "p50": p.quantile_ms(0.50),
            "p90": p.quantile_ms(0.90),
            "p99": p.quantile_ms(0.99),
            "max": p.max_ms(),
            "mean": p.mean_ms(),
        },
        "statuses": p.statuses.iter().map(|(s, n)| (s.to_string(), json!(n))).collect::<serde_json::Map<_, _>>(),
        "transport_errors": p.transport_errors,
        "timeouts": p.timeouts,
        "exhausted": p.exhausted,
        "cpu_s": p.cpu.iter().map(|(g, u)| ((*g).to_owned(), json!({
            "total": u.total.as_secs_f64(),
            "system": u.system.as_secs_f64(),
        }))).collect::<serde_json::Map<_, _>>(),
    })
}
