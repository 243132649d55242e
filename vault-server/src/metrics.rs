//! Prometheus metrics, hand-rolled over atomics and small maps: requests by
//! route pattern and status, latency histograms by route, redemptions by
//! result, the active key version. Labels are route patterns, problem codes
//! and the HTTP methods of [`method_label`] only — never ids, never
//! personal data, never text a client chose, so the label sets are bounded.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Mutex;

/// The metrics and log label of a request's method: the standard methods
/// by name, any other as `other` (a client can invent any number of
/// methods, each as long as the request head allows).
pub fn method_label(method: &actix_web::http::Method) -> &'static str {
    use actix_web::http::Method;
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::DELETE => "DELETE",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        Method::TRACE => "TRACE",
        Method::CONNECT => "CONNECT",
        _ => "other",
    }
}

const BUCKETS: [f64; 12] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
];

#[derive(Default)]
struct Histogram {
    counts: [u64; BUCKETS.len()],
    sum: f64,
    count: u64,
}

/// The server's metrics.
#[derive(Default)]
pub struct Metrics {
    requests: Mutex<BTreeMap<(String, String, u16), u64>>,
    latency: Mutex<BTreeMap<String, Histogram>>,
    redemptions: Mutex<BTreeMap<String, u64>>,
    key_version: AtomicI64,
}

impl Metrics {
    /// Records one request.
    pub fn observe(&self, method: &str, route: &str, status: u16, seconds: f64) {
        if let Ok(mut m) = self.requests.lock() {
            *m.entry((method.to_owned(), route.to_owned(), status))
                .or_default() += 1;
        }
        if let Ok(mut m) = self.latency.lock() {
            let h = m.entry(route.to_owned()).or_default();
            for (i, b) in BUCKETS.iter().enumerate() {
                if seconds <= *b {
                    h.counts[i] += 1;
                }
            }
            h.sum += seconds;
            h.count += 1;
        }
    }

    /// Records a redemption attempt's result (`ok` or a problem code).
    pub fn redemption(&self, result: &str) {
        if let Ok(mut m) = self.redemptions.lock() {
            *m.entry(result.to_owned()).or_default() += 1;
        }
    }

    /// Sets the active key version.
    pub fn set_key_version(&self, v: u32) {
        self.key_version.store(i64::from(v), Ordering::Relaxed);
    }

    /// The exposition text.
    pub fn render(&self, ready: bool) -> String {
        let mut out = String::new();
        out.push_str("# HELP dzl_http_requests_total HTTP requests by method, route and status.\n");
        out.push_str("# TYPE dzl_http_requests_total counter\n");
        if let Ok(m) = self.requests.lock() {
            for ((method, route, status), n) in m.iter() {
                let _ = writeln!(
                    out,
                    "dzl_http_requests_total{{method=\"{method}\",route=\"{route}\",status=\"{status}\"}} {n}"
                );
            }
        }
        out.push_str("# HELP dzl_http_request_duration_seconds Request latency by route.\n");
        out.push_str("# TYPE dzl_http_request_duration_seconds histogram\n");
        if let Ok(m) = self.latency.lock() {
            for (route, h) in m.iter() {
                for (i, b) in BUCKETS.iter().enumerate() {
                    let _ = writeln!(
                        out,
                        "dzl_http_request_duration_seconds_bucket{{route=\"{route}\",le=\"{b}\"}} {}",
                        h.counts[i]
                    );
                }
                let _ = writeln!(
                    out,
                    "dzl_http_request_duration_seconds_bucket{{route=\"{route}\",le=\"+Inf\"}} {}",
                    h.count
                );
                let _ = writeln!(
                    out,
                    "dzl_http_request_duration_seconds_sum{{route=\"{route}\"}} {}",
                    h.sum
                );
                let _ = writeln!(
                    out,
                    "dzl_http_request_duration_seconds_count{{route=\"{route}\"}} {}",
                    h.count
                );
            }
        }
        out.push_str("# HELP dzl_redemptions_total Redemption attempts by result.\n");
        out.push_str("# TYPE dzl_redemptions_total counter\n");
        if let Ok(m) = self.redemptions.lock() {
            for (result, n) in m.iter() {
                let _ = writeln!(out, "dzl_redemptions_total{{result=\"{result}\"}} {n}");
            }
        }
        out.push_str("# HELP dzl_keyring_active_version The active key-encryption key version.\n");
        out.push_str("# TYPE dzl_keyring_active_version gauge\n");
        let _ = writeln!(
            out,
            "dzl_keyring_active_version {}",
            self.key_version.load(Ordering::Relaxed)
        );
        out.push_str("# HELP dzl_ready Whether the vault is ready (store and keyring usable).\n");
        out.push_str("# TYPE dzl_ready gauge\n");
        let _ = writeln!(out, "dzl_ready {}", u8::from(ready));
        out
    }
}
