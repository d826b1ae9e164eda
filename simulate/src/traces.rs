//! The compacted real traces of `data/traces/` (see its README), embedded at build time and
//! parsed once per process.
//!
//! Embedding keeps the simulator free of IO and its output independent of the working
//! directory; the files are small (about 1 MB together).

use std::sync::OnceLock;

use crate::TraceSource;

const AZURE_CODE_CSV: &str = include_str!("../../data/traces/azure_code.csv");
const AZURE_CONV_CSV: &str = include_str!("../../data/traces/azure_conv.csv");
const MOONCAKE_CSV: &str = include_str!("../../data/traces/mooncake.csv");
const CLIENTS_CSV: &str = include_str!("../../data/traces/servegen_clients.csv");
const HOUR_OF_WEEK_CSV: &str = include_str!("../../data/traces/servegen_hour_of_week.csv");

/// One real request: its arrival (ms since the trace's first request) and token counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TraceRow {
    pub offset_ms: u32,
    pub prompt_tokens: u32,
    pub completion_tokens: u32,
}

/// A request trace, sorted by arrival.
#[derive(Debug)]
pub(crate) struct Trace {
    pub rows: Vec<TraceRow>,
    /// Mean gap between consecutive requests, in trace ms.
    pub mean_gap_ms: f64,
    /// Mean token counts per request (incidents size their extra spend with them).
    pub mean_prompt_tokens: f64,
    pub mean_completion_tokens: f64,
}

impl Trace {
    fn parse(name: &str, csv: &str) -> Self {
        let rows: Vec<TraceRow> = data_lines(csv)
            .map(|(line_no, fields)| {
                let [offset_ms, prompt_tokens, completion_tokens] = numbers(name, line_no, fields);
                TraceRow {
                    offset_ms,
                    prompt_tokens,
                    completion_tokens,
                }
            })
            .collect();
        assert!(rows.len() >= 2, "trace {name} has fewer than two rows");
        let span = f64::from(rows[rows.len() - 1].offset_ms - rows[0].offset_ms);
        let mean = |f: fn(&TraceRow) -> u32| {
            rows.iter().map(|r| f64::from(f(r))).sum::<f64>() / rows.len() as f64
        };
        Self {
            mean_gap_ms: span / (rows.len() - 1) as f64,
            mean_prompt_tokens: mean(|r| r.prompt_tokens),
            mean_completion_tokens: mean(|r| r.completion_tokens),
            rows,
        }
    }

    /// The real gap after row `i`, in trace ms. Past the last row the trace starts over after a
    /// mean gap, so every full cycle keeps the trace's own mean rate and the time scaling stays
    /// exact over the long run.
    pub fn gap_after_ms(&self, i: usize) -> f64 {
        match self.rows.get(i + 1) {
            Some(next) => f64::from(next.offset_ms - self.rows[i].offset_ms),
            None => self.mean_gap_ms,
        }
    }
}

/// The parsed trace for a source; parsed on first use and shared by all simulators.
pub(crate) fn trace(source: TraceSource) -> &'static Trace {
    static CODE: OnceLock<Trace> = OnceLock::new();
    static CONV: OnceLock<Trace> = OnceLock::new();
    static MOONCAKE: OnceLock<Trace> = OnceLock::new();
    match source {
        TraceSource::AzureCode => CODE.get_or_init(|| Trace::parse("azure_code", AZURE_CODE_CSV)),
        TraceSource::AzureConv => CONV.get_or_init(|| Trace::parse("azure_conv", AZURE_CONV_CSV)),
        TraceSource::Mooncake => MOONCAKE.get_or_init(|| Trace::parse("mooncake", MOONCAKE_CSV)),
    }
}

/// One ServeGen client: its share of all requests and its daily rhythm.
#[derive(Debug)]
pub(crate) struct Client {
    pub id: u32,
    pub share: f64,
    /// Relative request rate by local hour of day, mean 1 over the day. ServeGen's hour buckets
    /// count from local midnight of an undisclosed day, so only `hour_of_week % 24` means
    /// anything; averaging the 7 days of each hour smooths the sparse clients.
    pub hourly: [f64; 24],
}

/// The ServeGen clients, by share descending (the order of the file).
pub(crate) fn clients() -> &'static [Client] {
    static CLIENTS: OnceLock<Vec<Client>> = OnceLock::new();
    CLIENTS.get_or_init(parse_clients)
}

fn parse_clients() -> Vec<Client> {
    let mut clients: Vec<Client> = data_lines(CLIENTS_CSV)
        .map(|(line_no, mut fields)| {
            let id = field(&mut fields, "servegen_clients", line_no);
            let share = field(&mut fields, "servegen_clients", line_no);
            Client {
                id,
                share,
                hourly: [0.0; 24],
            }
        })
        .collect();
    assert!(!clients.is_empty(), "servegen_clients has no rows");
    let mut sums = vec![[0.0f64; 24]; clients.len()];
    for (line_no, mut fields) in data_lines(HOUR_OF_WEEK_CSV) {
        let id: u32 = field(&mut fields, "servegen_hour_of_week", line_no);
        let hour: usize = field(&mut fields, "servegen_hour_of_week", line_no);
        let rate: f64 = field(&mut fields, "servegen_hour_of_week", line_no);
        if let Some(i) = clients.iter().position(|c| c.id == id) {
            sums[i][hour % 24] += rate;
        }
    }
    for (client, sum) in clients.iter_mut().zip(sums) {
        let mean = sum.iter().sum::<f64>() / 24.0;
        // A client with no recorded rate at all keeps a flat day rather than vanishing.
        client.hourly = if mean > 0.0 {
            sum.map(|s| s / mean)
        } else {
            [1.0; 24]
        };
    }
    clients
}

/// The data lines of an embedded CSV (header skipped), with 1-based line numbers for messages.
fn data_lines(csv: &str) -> impl Iterator<Item = (usize, std::str::Split<'_, char>)> {
    csv.lines()
        .enumerate()
        .skip(1)
        .filter(|(_, line)| !line.trim().is_empty())
        .map(|(i, line)| (i + 1, line.split(',')))
}

fn field<T: std::str::FromStr>(
    fields: &mut std::str::Split<'_, char>,
    file: &str,
    line: usize,
) -> T {
    // The files are embedded at build time, so a bad value is a build defect, caught by the
    // crate's tests, never something a running service can meet.
    fields
        .next()
        .and_then(|f| f.trim().parse().ok())
        .unwrap_or_else(|| panic!("{file}.csv line {line} is malformed"))
}

fn numbers(file: &str, line: usize, mut fields: std::str::Split<'_, char>) -> [u32; 3] {
    [(); 3].map(|()| field(&mut fields, file, line))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traces_parse_with_the_documented_row_counts() {
        assert_eq!(trace(TraceSource::AzureCode).rows.len(), 8_819);
        assert_eq!(trace(TraceSource::AzureConv).rows.len(), 19_366);
        assert_eq!(trace(TraceSource::Mooncake).rows.len(), 12_031);
        for source in TraceSource::ALL {
            let t = trace(source);
            assert!(t.rows.windows(2).all(|w| w[0].offset_ms <= w[1].offset_ms));
            assert!(t.mean_gap_ms > 0.0);
        }
    }

    #[test]
    fn clients_have_shares_and_normalised_days() {
        let clients = clients();
        assert_eq!(clients.len(), 162);
        assert_eq!(clients[0].id, 61);
        let total: f64 = clients.iter().map(|c| c.share).sum();
        assert!((total - 1.0).abs() < 1e-6, "shares sum to {total}");
        for c in clients {
            let mean = c.hourly.iter().sum::<f64>() / 24.0;
            assert!((mean - 1.0).abs() < 1e-9, "client {} mean {mean}", c.id);
        }
    }
}
