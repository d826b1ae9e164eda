//! Logs (tracing, text or JSON) on stderr. (The Prometheus recorder is `tripline_api::server`'s.)

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

/// Logs go to stderr; `RUST_LOG` filters (default `info`), `TRIPLINE_LOG_FORMAT=json` for JSON.
pub fn init_logs() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let json = std::env::var("TRIPLINE_LOG_FORMAT").is_ok_and(|f| f == "json");
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // Colour codes only for a person at a terminal, never in log files.
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false);
    if json {
        builder.json().init();
    } else {
        builder.compact().init();
    }
}
