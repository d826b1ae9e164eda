//! Scale benchmark of the detector engine: one evaluation cycle over many active keys.
//!
//! The target (detectors issue): one evaluation cycle over 100,000 active keys takes at most
//! 1 s of detector CPU and at most 2 KB of memory per key. This program measures both; it
//! asserts nothing (see BENCHMARKS.md, "Detectors: scale", for the recorded results).
//!
//! ```sh
//! cargo run --release -p tripline-detector --example scale
//! cargo run --release -p tripline-detector --example scale -- --keys 100000 --history-minutes 60 --cycles 10
//! ```
//!
//! 1. Warm-up: an `Engine` with the default `DetectConfig` is fed `--history-minutes` closed
//!    minutes of synthetic traffic for `--keys` keys the way the detector replays history: one
//!    quiet `cycle` per minute, `now_s` just after that minute closed (end + allowed lateness).
//! 2. Memory: a counting global allocator (around `System`) gives the heap bytes held after the
//!    warm-up minus before the engine was created, with every `CycleData` already dropped, so
//!    only the engine's state is counted. Requested bytes, not allocator overhead.
//! 3. Live cycles: each holds the previous (closed) minute and the current (open, 45 s in)
//!    minute for every key, so every key is assessed twice and the closed minute is folded:
//!    the most expensive cycle of a minute. CPU time is the process's (utime + stime from
//!    `/proc/self/stat`, 10 ms ticks) and the thread's (`/proc/thread-self/schedstat`, ns).
//!
//! The data is synthetic but shaped like a busy gateway: heavy-tailed request rates and
//! per-request costs, a project per key, one home country with one or two networks, one to
//! three models and a user agent per key, a diurnal swing and noise, a few retry chains. The
//! live minutes also carry `--incidents` keys of each kind (spend spike, use from a far
//! country, retry storm) so the assessment has something to find. A small xorshift PRNG
//! keeps it deterministic under `--seed`.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use tripline_core::config::{DetectConfig, EntityOverride};
use tripline_detector::data::{
    CycleData, KeyMinute, KeyProviderFailures, KeyRetries, ProviderBucket, ProviderMinute,
    SpendMinute, Usage,
};
use tripline_detector::engine::Engine;

// ---------------------------------------------------------------------------------------------
// Counting allocator

struct Counting;

static CURRENT: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);
static ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);

fn grew(by: usize) {
    let now = CURRENT.fetch_add(by, Ordering::Relaxed) + by;
    PEAK.fetch_max(now, Ordering::Relaxed);
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            grew(layout.size());
            ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            grew(layout.size());
            ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) };
        CURRENT.fetch_sub(layout.size(), Ordering::Relaxed);
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            if new_size >= layout.size() {
                grew(new_size - layout.size());
            } else {
                CURRENT.fetch_sub(layout.size() - new_size, Ordering::Relaxed);
            }
            ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        }
        p
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn heap_bytes() -> usize {
    CURRENT.load(Ordering::Relaxed)
}

// ---------------------------------------------------------------------------------------------
// CPU time and machine

/// Process CPU seconds (user + system) from `/proc/self/stat`, in clock ticks of 1/100 s
/// (`USER_HZ`, 100 on Linux).
fn process_cpu_s() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // The command name may hold spaces: fields are counted after its closing parenthesis.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After ")": state is field 3 (index 0 here), utime field 14, stime field 15.
    let tick = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    (tick(11) + tick(12)) as f64 / 100.0
}

/// This thread's CPU seconds from `/proc/thread-self/schedstat` (nanoseconds on the CPU).
fn thread_cpu_s() -> f64 {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<u64>().ok())
        .map_or(0.0, |ns| ns as f64 / 1e9)
}

fn rss_bytes() -> usize {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<usize>().ok())
        .map_or(0, |kb| kb * 1024)
}

fn cpu_model() -> String {
    let info = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = info
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split_once(':'))
        .map_or("unknown".to_owned(), |(_, v)| v.trim().to_owned());
    let processors = info.lines().filter(|l| l.starts_with("processor")).count();
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    format!(
        "{model}, {processors} logical CPUs in /proc/cpuinfo, {cores} available to this process"
    )
}

// ---------------------------------------------------------------------------------------------
// Deterministic synthetic traffic

/// xorshift64* (Vigna): small, fast and good enough for synthetic traffic.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        // SplitMix64 of the seed, so that small seeds still start well mixed and never at 0.
        let mut z = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        Self((z ^ (z >> 31)) | 1)
    }

    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in [0, 1).
    fn f64(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    fn chance(&mut self, p: f64) -> bool {
        self.f64() < p
    }

    /// Log-uniform in [lo, hi): most values small, a long tail of large ones.
    fn log_uniform(&mut self, lo: f64, hi: f64) -> f64 {
        (lo.ln() + self.f64() * (hi.ln() - lo.ln())).exp()
    }
}

/// (country, ASN, AS organisation): home networks, some of them clouds.
const NETWORKS: &[(&str, u32, &str)] = &[
    ("US", 7922, "COMCAST-7922"),
    ("US", 16509, "AMAZON-02"),
    ("US", 15169, "GOOGLE"),
    ("US", 701, "UUNET"),
    ("DE", 3320, "Deutsche Telekom AG"),
    ("DE", 24940, "Hetzner Online GmbH"),
    ("GB", 2856, "British Telecommunications PLC"),
    ("GB", 5089, "Virgin Media Limited"),
    ("FR", 3215, "Orange S.A."),
    ("FR", 16276, "OVH SAS"),
    ("NL", 1136, "KPN B.V."),
    ("IE", 8075, "MICROSOFT-CORP-MSN-AS-BLOCK"),
    ("IN", 55836, "Reliance Jio Infocomm Limited"),
    ("IN", 9498, "BHARTI Airtel Ltd."),
    ("JP", 2516, "KDDI CORPORATION"),
    ("SG", 45102, "Alibaba (US) Technology Co., Ltd."),
    ("BR", 28573, "Claro NXT Telecomunicacoes Ltda"),
    ("CA", 812, "Rogers Communications Canada Inc."),
    ("AU", 1221, "Telstra Limited"),
];

/// Where leaked keys turn up: far from most homes, on hosting networks.
const FAR_NETWORKS: &[(&str, u32, &str)] = &[
    ("VN", 135905, "VNPT Corp"),
    ("RU", 197695, "Domain names registrar REG.RU, Ltd"),
    ("ZA", 37611, "Afrihost"),
    ("AR", 7303, "Telecom Argentina S.A."),
];

const MODELS: &[(&str, &str)] = &[
    ("openai", "gpt-4o-mini"),
    ("openai", "gpt-4o-2024-08-06"),
    ("openai", "gpt-4.1"),
    ("openai", "text-embedding-3-small"),
    ("anthropic", "claude-sonnet-4-5-20250929"),
    ("anthropic", "claude-haiku-4-5"),
    ("anthropic", "claude-opus-4-5"),
    ("google", "gemini-2.5-flash"),
    ("google", "gemini-2.5-pro"),
    ("groq", "llama-3.3-70b-versatile"),
    ("mistral", "mistral-large-latest"),
    ("openai", "o4-mini"),
];

const USER_AGENTS: &[&str] = &[
    "openai-python/1.52.0",
    "openai-python/1.99.1",
    "anthropic-python/0.69.0",
    "OpenAI/NodeJS/4.77.0",
    "litellm/1.106.12",
    "langchain-openai/0.3.33",
    "curl/8.5.0",
    "Go-http-client/2.0",
];

/// What one key normally looks like.
struct KeyProfile {
    id: String,
    project: String,
    /// Requests per minute at the daily mean.
    rpm: f64,
    usd_per_request: f64,
    ips: u64,
    /// Indexes into `NETWORKS` (one or two, same country).
    networks: Vec<usize>,
    /// Indexes into `MODELS` (one to three).
    models: Vec<usize>,
    user_agent: usize,
    /// Share of requests that are retries (`attempt > 1`).
    retry_share: f64,
}

fn profiles(keys: usize, rng: &mut Rng) -> Vec<KeyProfile> {
    let projects = (keys / 300).clamp(1, 400);
    (0..keys)
        .map(|_| {
            // A fingerprinted key id, as ingest writes it (`fp_` + 24 hex digits).
            let id = format!("fp_{:016x}{:08x}", rng.next(), rng.next() as u32);
            // Project sizes are skewed: the square favours low numbers.
            let p = (rng.f64().powi(2) * projects as f64) as usize;
            let home = rng.below(NETWORKS.len() as u64) as usize;
            let mut networks = vec![home];
            if rng.chance(0.5) {
                let same_country: Vec<usize> = (0..NETWORKS.len())
                    .filter(|&i| i != home && NETWORKS[i].0 == NETWORKS[home].0)
                    .collect();
                if !same_country.is_empty() {
                    networks.push(same_country[rng.below(same_country.len() as u64) as usize]);
                }
            }
            let mut models = Vec::new();
            for _ in 0..1 + rng.below(3) {
                let m = rng.below(MODELS.len() as u64) as usize;
                if !models.contains(&m) {
                    models.push(m);
                }
            }
            KeyProfile {
                id,
                project: format!("project-{p:03}"),
                rpm: rng.log_uniform(0.5, 400.0),
                usd_per_request: rng.log_uniform(0.000_05, 0.05),
                ips: 1 + rng.below(4),
                networks,
                models,
                user_agent: rng.below(USER_AGENTS.len() as u64) as usize,
                retry_share: rng.log_uniform(0.001, 0.08),
            }
        })
        .collect()
}

/// How a key misbehaves in a live minute.
#[derive(Clone, Copy, PartialEq)]
enum Incident {
    None,
    SpendSpike,
    FarCountry,
    RetryStorm,
}

/// Adds one minute of every key to `data`. `fraction` of the minute has elapsed (1 = closed).
fn add_minute(
    data: &mut CycleData,
    keys: &[KeyProfile],
    incidents: &dyn Fn(usize) -> Incident,
    minute: u32,
    fraction: f64,
    rng: &mut Rng,
) {
    let span_ms = (60_000.0 * fraction) as i64;
    let start_ms = i64::from(minute) * 1000;
    // A diurnal swing: the busiest hour is about twice the quietest.
    let hour = f64::from(minute % 86_400) / 3600.0;
    let diurnal = 1.0 + 0.33 * ((hour - 9.0) / 24.0 * std::f64::consts::TAU).cos();
    let mut projects: std::collections::HashMap<&str, f64> = std::collections::HashMap::new();
    let mut providers = vec![(0u64, 0u64); MODELS.len()];
    let mut overall = 0.0;
    for (i, k) in keys.iter().enumerate() {
        let incident = incidents(i);
        let noise = 0.6 + 0.8 * rng.f64();
        let mut requests = (k.rpm * diurnal * noise * fraction).round() as u64;
        if requests == 0 && !rng.chance(k.rpm.min(1.0) * fraction) {
            continue; // quiet minute for a low-rate key
        }
        requests = requests.max(1);
        let mut usd_per_request = k.usd_per_request * (0.7 + 0.6 * rng.f64());
        let mut retries = (requests as f64 * k.retry_share * 2.0 * rng.f64()).round() as u64;
        let mut failures = (requests as f64 * 0.02 * rng.f64()).round() as u64;
        let mut ips = k.ips.min(requests);
        match incident {
            Incident::SpendSpike => {
                requests *= 20;
                usd_per_request *= 5.0;
            }
            Incident::RetryStorm => {
                requests = requests.max(40);
                retries = requests * 6 / 10;
                failures = requests / 2;
            }
            Incident::FarCountry => ips += 6,
            Incident::None => {}
        }
        let cost = requests as f64 * usd_per_request;
        data.keys.push(KeyMinute {
            api_key_id: k.id.clone(),
            minute,
            project: k.project.clone(),
            requests,
            failures,
            // Rate limits and server errors: most failures of a busy gateway.
            throttled: failures * 4 / 5,
            retries,
            cost_usd: cost,
            tokens: requests * 1_500,
            distinct_ips: ips,
        });
        *projects.entry(&k.project).or_default() += cost;
        overall += cost;

        // Usage: split the requests over up to three (network, model) combinations.
        let rows = (1 + rng.below(3) as usize).min(requests as usize);
        let mut left = requests;
        for r in 0..rows {
            let n = if r + 1 == rows {
                left
            } else {
                (left as f64 * (0.3 + 0.4 * rng.f64())).round().max(1.0) as u64
            }
            .min(left);
            if n == 0 {
                break;
            }
            left -= n;
            let network = NETWORKS[k.networks[rng.below(k.networks.len() as u64) as usize]];
            let m = k.models[rng.below(k.models.len() as u64) as usize];
            let first = start_ms + rng.below(span_ms as u64 / 2 + 1) as i64;
            let last = (first + rng.below(span_ms as u64 / 2 + 1) as i64).min(start_ms + span_ms);
            data.usage
                .push(usage_row(k, minute, network, MODELS[m].1, n, first, last));
            providers[m].0 += n;
            providers[m].1 += n - n.min(failures);
        }
        if incident == Incident::FarCountry {
            let far = FAR_NETWORKS[rng.below(FAR_NETWORKS.len() as u64) as usize];
            let at = start_ms + span_ms - 1;
            data.usage
                .push(usage_row(k, minute, far, "gpt-4o", 30, at - 20_000, at));
        }

        // Failed upstream attempts, on the provider of the key's first model.
        if failures > 0 {
            data.key_failures.push(KeyProviderFailures {
                api_key_id: k.id.clone(),
                minute,
                provider: MODELS[k.models[0]].0.to_owned(),
                attempts: requests + retries,
                failures,
                first_ms: start_ms,
                last_ms: start_ms + span_ms - 1,
            });
        }

        // Retry chains for a few key-minutes (and every storm).
        if incident == Incident::RetryStorm || (retries > 0 && rng.chance(0.05)) {
            let attempts = requests + retries;
            let chains = retries.div_ceil(2);
            data.retries.push(KeyRetries {
                api_key_id: k.id.clone(),
                minute,
                provider_attempts: attempts,
                provider_successes: requests - failures,
                chains,
                fast_chains: if incident == Incident::RetryStorm {
                    chains
                } else {
                    chains / 10
                },
            });
        }
    }
    let mut projects: Vec<(&str, f64)> = projects.into_iter().collect();
    projects.sort_by(|a, b| a.0.cmp(b.0));
    for (p, cost) in projects {
        data.projects.push(SpendMinute {
            entity: p.to_owned(),
            minute,
            cost_usd: cost,
        });
    }
    data.overall.push(SpendMinute {
        entity: String::new(),
        minute,
        cost_usd: overall,
    });
    for (m, (attempts, successes)) in providers.into_iter().enumerate() {
        if attempts > 0 {
            data.providers.push(ProviderMinute {
                provider: MODELS[m].0.to_owned(),
                model: MODELS[m].1.to_owned(),
                minute,
                attempts,
                successes,
            });
            // The same attempts in the minute's six 10 s buckets.
            for b in 0..6 {
                data.provider_buckets.push(ProviderBucket {
                    provider: MODELS[m].0.to_owned(),
                    minute,
                    bucket: minute + b * 10,
                    attempts: attempts / 6,
                    failures: (attempts - successes) / 6,
                });
            }
        }
    }
}

fn usage_row(
    k: &KeyProfile,
    minute: u32,
    network: (&str, u32, &str),
    model: &str,
    requests: u64,
    first_ms: i64,
    last_ms: i64,
) -> Usage {
    Usage {
        api_key_id: k.id.clone(),
        minute,
        country: network.0.to_owned(),
        asn: network.1,
        as_org: network.2.to_owned(),
        model: model.to_owned(),
        user_agent: USER_AGENTS[k.user_agent].to_owned(),
        requests,
        first_ms,
        last_ms,
    }
}

fn rows(data: &CycleData) -> String {
    format!(
        "{} key rows, {} usage rows, {} retry rows, {} project rows, {} provider rows",
        data.keys.len(),
        data.usage.len(),
        data.retries.len(),
        data.projects.len(),
        data.providers.len()
    )
}

// ---------------------------------------------------------------------------------------------

struct Args {
    keys: usize,
    history_minutes: u32,
    cycles: usize,
    incidents: usize,
    overrides: usize,
    seed: u64,
}

fn parse_args() -> Args {
    let mut args = Args {
        keys: 100_000,
        history_minutes: 60,
        cycles: 10,
        incidents: 50,
        overrides: 0,
        seed: 1,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = |name: &str| -> u64 {
            it.next()
                .and_then(|v| v.replace('_', "").parse().ok())
                .unwrap_or_else(|| panic!("{name} needs a number"))
        };
        match flag.as_str() {
            "--keys" => args.keys = value("--keys") as usize,
            "--history-minutes" => args.history_minutes = value("--history-minutes") as u32,
            "--cycles" => args.cycles = value("--cycles").max(1) as usize,
            "--incidents" => args.incidents = value("--incidents") as usize,
            "--overrides" => args.overrides = value("--overrides") as usize,
            "--seed" => args.seed = value("--seed"),
            "-h" | "--help" => {
                println!(
                    "usage: scale [--keys N (100000)] [--history-minutes N (60)] [--cycles N (10)] \
                     [--incidents N per kind (50)] [--overrides N keys with their own spend floor (0)] \
                     [--seed N (1)]"
                );
                std::process::exit(0);
            }
            other => panic!("unknown argument {other} (see --help)"),
        }
    }
    args
}

fn mib(bytes: usize) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

fn stats(values: &[f64]) -> (f64, f64, f64) {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let median = if v.len() % 2 == 1 {
        v[v.len() / 2]
    } else {
        (v[v.len() / 2 - 1] + v[v.len() / 2]) / 2.0
    };
    (v[0], median, v[v.len() - 1])
}

fn main() {
    let args = parse_args();
    let shown: Vec<String> = std::env::args().skip(1).collect();
    println!("# Tripline detector scale benchmark");
    println!(
        "command: cargo run --release -p tripline-detector --example scale{}{}",
        if shown.is_empty() { "" } else { " -- " },
        shown.join(" ")
    );
    println!("machine: {}", cpu_model());
    println!(
        "keys: {}, history: {} min, live cycles: {}, incidents per kind: {}, overrides: {}, seed: {}",
        args.keys, args.history_minutes, args.cycles, args.incidents, args.overrides, args.seed
    );

    let mut rng = Rng::new(args.seed);
    let keys = profiles(args.keys, &mut rng);
    let mut config = DetectConfig::default();
    // Optional per-key overrides (a batch job with its own dollar floor): they change what the
    // project and overall baselines are fed, so the engine does more work per project row.
    for k in keys
        .iter()
        .step_by((args.keys / args.overrides.max(1)).max(1))
        .take(args.overrides)
    {
        let o = EntityOverride {
            min_abs_usd: Some(50.0),
            ..EntityOverride::default()
        };
        config.keys.insert(k.id.clone(), o);
    }
    let lateness = config.allowed_lateness_s as u32;
    println!(
        "config: DetectConfig::default() (allowed_lateness_s = {lateness}){}",
        if args.overrides > 0 {
            format!(" + {} per-key overrides (min_abs_usd)", config.keys.len())
        } else {
            String::new()
        }
    );

    // Start on a Monday 00:00 UTC, rounded to the hour like the detector's replay.
    let start: u32 = 1_795_392_000 / 3600 * 3600;
    let quiet = |_: usize| Incident::None;

    // ---- warm-up: one quiet cycle per closed minute, the data dropped after each.
    let heap_before = heap_bytes();
    let rss_before = rss_bytes();
    let mut engine = Engine::new(config).expect("default config is valid");
    engine.folded_through = start;
    let warm_started = Instant::now();
    let warm_cpu = process_cpu_s();
    let mut engine_cpu = 0.0;
    let mut peak_data = 0usize;
    for i in 0..args.history_minutes {
        let minute = start + i * 60;
        let mut data = CycleData::default();
        let before_data = heap_bytes();
        add_minute(&mut data, &keys, &quiet, minute, 1.0, &mut rng);
        peak_data = peak_data.max(heap_bytes() - before_data);
        if i == 0 {
            println!("one history minute: {}", rows(&data));
        }
        let t = thread_cpu_s();
        let out = engine.cycle(&data, minute + 60 + lateness, true);
        engine_cpu += thread_cpu_s() - t;
        assert!(out.is_empty(), "a quiet cycle flags nothing");
        drop(data);
    }
    let warm_wall = warm_started.elapsed().as_secs_f64();
    let warm_cpu = process_cpu_s() - warm_cpu;
    let state = heap_bytes().saturating_sub(heap_before);
    let rss_state = rss_bytes().saturating_sub(rss_before);
    println!(
        "\n## Warm-up\n{} minutes in {warm_wall:.1} s wall, {warm_cpu:.1} s process CPU \
         (engine.cycle alone: {engine_cpu:.2} s, {:.1} ms per minute; the rest generates data)",
        args.history_minutes,
        engine_cpu * 1000.0 / f64::from(args.history_minutes.max(1))
    );
    println!(
        "CycleData of one minute while it lives: {:.1} MiB ({:.0} bytes/key, not counted below)",
        mib(peak_data),
        peak_data as f64 / args.keys as f64
    );
    println!("\n## Memory (engine state after warm-up)");
    println!("tracked keys: {}", engine.tracked_keys());
    println!(
        "heap held by the engine: {state} bytes = {:.1} MiB = {:.0} bytes/key (target <= 2048)",
        mib(state),
        state as f64 / engine.tracked_keys().max(1) as f64
    );
    println!(
        "RSS growth over the warm-up (glibc malloc, indicative): {:.1} MiB = {:.0} bytes/key",
        mib(rss_state),
        rss_state as f64 / engine.tracked_keys().max(1) as f64
    );

    // ---- live cycles: previous closed minute + current open minute, every key.
    println!("\n## Live cycles (previous closed minute folded + current open minute, 45 s in)");
    let incidents = args.incidents.min(args.keys / 3);
    // Keys spread over the population; the first third of the picks spike, then far
    // countries, then retry storms. Each cycle picks other keys (`shift`), so an incident is
    // always new to its key's model rather than learned by the previous cycle's fold.
    let stride = (args.keys / (3 * incidents).max(1)).max(1);
    let incidents_in = move |shift: usize| {
        move |i: usize| -> Incident {
            let i = (i + args.keys - shift % args.keys) % args.keys;
            if !i.is_multiple_of(stride) || i / stride >= 3 * incidents {
                return Incident::None;
            }
            match (i / stride) % 3 {
                0 => Incident::SpendSpike,
                1 => Incident::FarCountry,
                _ => Incident::RetryStorm,
            }
        }
    };
    let mut process_cpu = Vec::new();
    let mut thread_cpu = Vec::new();
    let mut wall = Vec::new();
    let mut transient = Vec::new();
    let mut allocations = Vec::new();
    let mut counts = Vec::new();
    let mut digests = Vec::new();
    for c in 0..args.cycles {
        let closed = engine.folded_through;
        let open = closed + 60;
        let incident_of = incidents_in(c * (stride / 2 + 1));
        let mut data = CycleData::default();
        add_minute(&mut data, &keys, &incident_of, closed, 1.0, &mut rng);
        add_minute(&mut data, &keys, &incident_of, open, 0.75, &mut rng);
        if c == 0 {
            println!("cycle data: {}", rows(&data));
        }
        let now = open + 45;
        let held = heap_bytes();
        PEAK.store(held, Ordering::Relaxed);
        let allocs = ALLOCATIONS.load(Ordering::Relaxed);
        let (p0, t0, w0) = (process_cpu_s(), thread_cpu_s(), Instant::now());
        let candidates = engine.cycle(&data, now, false);
        let (w, t, p) = (
            w0.elapsed().as_secs_f64(),
            thread_cpu_s() - t0,
            process_cpu_s() - p0,
        );
        transient.push(PEAK.load(Ordering::Relaxed) - held);
        allocations.push(ALLOCATIONS.load(Ordering::Relaxed) - allocs);
        assert_eq!(engine.folded_through, open, "the closed minute was folded");
        let mut by_kind = std::collections::BTreeMap::<&str, usize>::new();
        for cand in &candidates {
            *by_kind.entry(cand.detector).or_default() += 1;
        }
        // A digest of what was flagged, in order, to compare engine versions run for run.
        let digest = candidates.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, cand| {
            let text = format!(
                "{:?}|{}|{}|{:?}|{}",
                cand.labels, cand.window_start_s, cand.window_end_s, cand.severity, cand.summary
            );
            text.bytes()
                .chain([0xff])
                .fold(h, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3))
        });
        digests.push(digest);
        println!(
            "cycle {:>2}: {:.3} s process CPU, {:.3} s thread CPU, {:.3} s wall, {} candidates {:?} (digest {:016x})",
            c + 1,
            p,
            t,
            w,
            candidates.len(),
            by_kind,
            digest
        );
        process_cpu.push(p);
        thread_cpu.push(t);
        wall.push(w);
        counts.push(candidates.len());
        drop(candidates);
        drop(data);
    }
    let after_live = heap_bytes().saturating_sub(heap_before);
    let (pmin, pmed, pmax) = stats(&process_cpu);
    let (tmin, tmed, tmax) = stats(&thread_cpu);
    let (wmin, wmed, wmax) = stats(&wall);
    let (cmin, _, cmax) = stats(&counts.iter().map(|&c| c as f64).collect::<Vec<_>>());
    let (amin, amed, amax) = stats(&allocations.iter().map(|&a| a as f64).collect::<Vec<_>>());
    let peak_transient = transient.iter().copied().max().unwrap_or(0);

    println!("\n## Summary");
    println!("keys tracked: {}", engine.tracked_keys());
    println!(
        "engine state: {:.0} bytes/key after warm-up, {:.0} bytes/key after the live cycles (target <= 2048)",
        state as f64 / args.keys as f64,
        after_live as f64 / args.keys as f64
    );
    println!(
        "cycle CPU (process, 10 ms ticks): min {pmin:.3} s, median {pmed:.3} s, max {pmax:.3} s (target <= 1 s)"
    );
    println!(
        "cycle CPU (thread, ns):           min {tmin:.3} s, median {tmed:.3} s, max {tmax:.3} s"
    );
    println!(
        "cycle wall:                       min {wmin:.3} s, median {wmed:.3} s, max {wmax:.3} s"
    );
    println!(
        "allocations per cycle: min {amin:.0}, median {amed:.0}, max {amax:.0}; \
         peak transient heap during a cycle: {:.1} MiB",
        mib(peak_transient)
    );
    println!("candidates per cycle: {cmin:.0} to {cmax:.0}");
    let all = digests.iter().fold(0u64, |h, d| h.rotate_left(5) ^ d);
    println!("digest of all cycles' candidates: {all:016x} (equal digests: same alerts in the same order)");
}
