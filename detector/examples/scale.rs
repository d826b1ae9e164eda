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
//! 2. Memory: a counting global allocator (around mimalloc, as the binary runs) gives the heap bytes held after the
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

mod common;

use std::sync::atomic::Ordering;
use std::time::Instant;

use common::measure::*;
use common::traffic::*;
use tripline_core::config::{DetectConfig, EntityOverride};
use tripline_detector::data::CycleData;
use tripline_detector::engine::Engine;

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
        "RSS growth over the warm-up (mimalloc, indicative): {:.1} MiB = {:.0} bytes/key",
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
            *by_kind.entry(cand.detector.as_str()).or_default() += 1;
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
