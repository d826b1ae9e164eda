//! Spray benchmark of the detector engine: state size and cycle time while a key scanner
//! presents a new key id per attempt, against the same engine without the spray.
//!
//! ```sh
//! cargo run --release -p tripline-detector --example spray
//! # = --keys 100000 --spray-per-hour 1000000 --minutes 180 --warm-minutes 60 --seed 1
//! cargo run --release -p tripline-detector --example spray -- --minutes 60 --no-evict
//! ```
//!
//! 1. Warm-up: `--keys` ordinary keys (the traffic of scale.rs), `--warm-minutes` quiet minutes.
//! 2. Without the spray: five live cycles (the previous closed minute folded and the current
//!    one 45 s in, every key assessed twice: the most expensive cycle of a minute).
//! 3. With the spray: `--minutes` minutes, one such live cycle per minute, each minute also
//!    holding `--spray-per-hour / 60` key ids never seen before, one request each. By default
//!    each is refused (401: a row in the key rollup, none in usage, from 16 scanning IPs), as
//!    a key scanner's; with `--accepted` each is served (200, a usage row, $0.001): the worst
//!    case, ids that are tracked until the cap.
//!
//! Engine state is the heap the engine holds (a counting allocator, requested bytes) with no
//! cycle data alive; cycle CPU is the thread's (`/proc/thread-self/schedstat`) around
//! `Engine::cycle` only. `--no-evict` turns idle eviction and the cap off. The config is
//! otherwise `DetectConfig::default()`.

mod common;

use std::time::Instant;

use common::measure::*;
use common::traffic::*;
use tripline_core::config::DetectConfig;
use tripline_detector::data::{CycleData, KeyMinute, ScanCandidate, Usage};
use tripline_detector::engine::Engine;

struct Args {
    keys: usize,
    spray_per_hour: usize,
    minutes: u32,
    warm_minutes: u32,
    seed: u64,
    evict: bool,
    accepted: bool,
}

fn parse_args() -> Args {
    let mut args = Args {
        keys: 100_000,
        spray_per_hour: 1_000_000,
        minutes: 180,
        warm_minutes: 60,
        seed: 1,
        evict: true,
        accepted: false,
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
            "--spray-per-hour" => args.spray_per_hour = value("--spray-per-hour") as usize,
            "--minutes" => args.minutes = value("--minutes") as u32,
            "--warm-minutes" => args.warm_minutes = value("--warm-minutes") as u32,
            "--seed" => args.seed = value("--seed"),
            "--no-evict" => args.evict = false,
            "--accepted" => args.accepted = true,
            "-h" | "--help" => {
                println!(
                    "usage: spray [--keys N (100000)] [--spray-per-hour N (1000000)] \
                     [--minutes N (180)] [--warm-minutes N (60)] [--seed N (1)] [--no-evict] \
                     [--accepted]"
                );
                std::process::exit(0);
            }
            other => panic!("unknown argument {other} (see --help)"),
        }
    }
    args
}

/// One minute of the spray: `count` new key ids from `first`, one request each, refused (from
/// 16 scanning IPs) or `accepted`.
fn add_spray(
    data: &mut CycleData,
    minute: u32,
    first: usize,
    count: usize,
    fraction: f64,
    accepted: bool,
) {
    let count = (count as f64 * fraction) as usize;
    let start_ms = i64::from(minute) * 1000;
    for n in first..first + count {
        let api_key_id = format!("fp_spray{n:016x}");
        let refused = u64::from(!accepted);
        data.keys.push(KeyMinute {
            api_key_id: api_key_id.clone(),
            minute,
            requests: 1,
            failures: refused,
            auth_failures: refused,
            cost_usd: if accepted { 0.001 } else { 0.0 },
            tokens: if accepted { 500 } else { 0 },
            distinct_ips: 1,
            ..KeyMinute::default()
        });
        if accepted {
            data.usage.push(Usage {
                api_key_id,
                minute,
                country: "US".into(),
                asn: 16509,
                as_org: "AMAZON-02".into(),
                model: "gpt-4o-mini".into(),
                user_agent: "python-requests/2.31.0".into(),
                requests: 1,
                first_ms: start_ms + (n % 60_000) as i64,
                last_ms: start_ms + (n % 60_000) as i64,
            });
        }
    }
    if accepted {
        return;
    }
    data.scans.extend((0..16).map(|ip| ScanCandidate {
        client_ip: format!("198.51.100.{ip}"),
        keys: (count / 16) as u64,
        requests: (count / 16) as u64,
        first_ms: start_ms,
        last_ms: start_ms + (60_000.0 * fraction) as i64 - 1,
    }));
}

/// Engine state in bytes: the heap now, less what it was before the engine existed.
fn state(heap_before: usize) -> usize {
    heap_bytes().saturating_sub(heap_before)
}

fn median(values: &[f64]) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => 0.0,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

fn mib(bytes: usize) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

fn main() {
    let args = parse_args();
    let shown: Vec<String> = std::env::args().skip(1).collect();
    println!("# Tripline detector spray benchmark");
    println!(
        "command: cargo run --release -p tripline-detector --example spray{}{}",
        if shown.is_empty() { "" } else { " -- " },
        shown.join(" ")
    );
    println!("machine: {}", cpu_model());
    let mut config = DetectConfig::default();
    if !args.evict {
        config.idle_evict_after_s = 10 * 365 * 86_400;
        config.max_tracked_keys = u64::MAX;
    }
    println!(
        "keys: {}, spray: {} new key ids per hour ({}), {} minutes; eviction: {} (idle {} s, cap {})",
        args.keys,
        args.spray_per_hour,
        if args.accepted { "accepted" } else { "refused, 401" },
        args.minutes,
        if args.evict { "on" } else { "off" },
        config.idle_evict_after_s,
        config.max_tracked_keys
    );
    let lateness = config.allowed_lateness_s as u32;
    let mut rng = Rng::new(args.seed);
    let keys = profiles(args.keys, &mut rng);
    let quiet = |_: usize| Incident::None;
    let start: u32 = 1_795_392_000 / 3600 * 3600;

    let heap_before = heap_bytes();
    let mut engine = Engine::new(config).expect("valid config");
    engine.folded_through = start;
    for i in 0..args.warm_minutes {
        let minute = start + i * 60;
        let mut data = CycleData::default();
        add_minute(&mut data, &keys, &quiet, minute, 1.0, &mut rng);
        engine.cycle(&data, minute + 60 + lateness, true);
    }
    let warm = state(heap_before);
    println!(
        "\n## After the warm-up\ntracked keys: {}, engine state {:.1} MiB = {:.0} bytes/key",
        engine.tracked_keys(),
        mib(warm),
        warm as f64 / engine.tracked_keys().max(1) as f64
    );

    // One live cycle: the closed minute folded, the open one 45 s in; `spray` new ids a minute.
    let mut sprayed = 0usize;
    let mut live = |engine: &mut Engine, rng: &mut Rng, spray: usize| -> (f64, usize) {
        let closed = engine.folded_through;
        let open = closed + 60;
        let mut data = CycleData::default();
        add_minute(&mut data, &keys, &quiet, closed, 1.0, rng);
        add_minute(&mut data, &keys, &quiet, open, 0.75, rng);
        if spray > 0 {
            add_spray(&mut data, closed, sprayed, spray, 1.0, args.accepted);
            add_spray(&mut data, open, sprayed + spray, spray, 0.75, args.accepted);
            sprayed += spray;
        }
        let t = thread_cpu_s();
        let found = engine.cycle(&data, open + 45, false);
        (thread_cpu_s() - t, found.len())
    };

    println!("\n## Without the spray (5 live cycles)");
    let mut calm = Vec::new();
    for _ in 0..5 {
        let (cpu, found) = live(&mut engine, &mut rng, 0);
        println!("cycle: {cpu:.3} s thread CPU, {found} candidates");
        calm.push(cpu);
    }

    println!("\n## With the spray (one live cycle per minute)");
    println!("| minute | tracked keys | engine state | bytes/key | cycle CPU |");
    println!("|---|---|---|---|---|");
    let per_minute = args.spray_per_hour / 60;
    let (mut sprayed_cpu, mut peak_state, mut peak_keys) = (Vec::new(), 0usize, 0usize);
    let started = Instant::now();
    for m in 1..=args.minutes {
        let (cpu, _) = live(&mut engine, &mut rng, per_minute);
        let held = state(heap_before);
        peak_state = peak_state.max(held);
        peak_keys = peak_keys.max(engine.tracked_keys());
        // Steady state: the last hour (or all of it when shorter).
        if m + 60 > args.minutes {
            sprayed_cpu.push(cpu);
        }
        if m % 15 == 0 || m == args.minutes {
            println!(
                "| {m} | {} | {:.1} MiB | {:.0} | {cpu:.3} s |",
                engine.tracked_keys(),
                mib(held),
                held as f64 / engine.tracked_keys().max(1) as f64
            );
        }
    }
    let evictions = engine.evictions();
    println!("\n## Summary");
    println!(
        "spray phase: {:.0} s wall; evicted: {} idle, {} over the cap",
        started.elapsed().as_secs_f64(),
        evictions.idle,
        evictions.cap
    );
    println!(
        "engine state: {:.1} MiB after the warm-up ({} keys); at most {:.1} MiB and {peak_keys} keys during the spray",
        mib(warm),
        args.keys,
        mib(peak_state)
    );
    println!(
        "cycle CPU median: {:.3} s without the spray, {:.3} s with it (its last {} minutes)",
        median(&calm),
        median(&sprayed_cpu),
        sprayed_cpu.len()
    );
}
