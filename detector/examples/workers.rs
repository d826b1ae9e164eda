//! Detector cycle time with one worker and with several sharing the keys, in one run.
//!
//! ```sh
//! cargo run --release -p tripline-detector --example workers
//! cargo run --release -p tripline-detector --example workers -- --keys 200000 --workers 2
//! ```
//!
//! The same synthetic keys as `scale` (heavy-tailed rates, projects, networks, models). First
//! one engine holds every key; then `--workers` engines each hold the keys of one shard (every
//! `workers`-th key: the detector shards by a hash of the key id, which splits as evenly). Each
//! engine is warmed on `--history-minutes` quiet closed minutes, then runs `--cycles` live
//! cycles (the previous minute folded and the current one 45 s in, the most expensive cycle of
//! a minute); the figure is each engine's median cycle CPU (thread time). Workers run on
//! machines or cores of their own, so a cycle with several takes as long as its slowest
//! worker's: the ratio printed is that over the one worker's. Engines run one after the other
//! in this process, so each is measured alone. Shard 0 of a real deployment also watches the
//! projects, providers and the overall spend; here each worker sees only its keys' rows, which
//! leaves out a small share (a few hundred projects against 200,000 keys).

mod common;

use common::measure::*;
use common::traffic::*;
use tripline_core::config::DetectConfig;
use tripline_detector::data::CycleData;
use tripline_detector::engine::Engine;

struct Args {
    keys: usize,
    workers: usize,
    history_minutes: u32,
    cycles: usize,
    seed: u64,
}

fn parse_args() -> Args {
    let mut args = Args {
        keys: 200_000,
        workers: 2,
        history_minutes: 30,
        cycles: 5,
        seed: 1,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = |name: &str| -> u64 {
            it.next()
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| panic!("{name} takes a number"))
        };
        match flag.as_str() {
            "--keys" => args.keys = value("--keys") as usize,
            "--workers" => args.workers = value("--workers").max(1) as usize,
            "--history-minutes" => args.history_minutes = value("--history-minutes") as u32,
            "--cycles" => args.cycles = value("--cycles").max(1) as usize,
            "--seed" => args.seed = value("--seed"),
            "-h" | "--help" => {
                println!(
                    "usage: workers [--keys N (200000)] [--workers N (2)] [--history-minutes N (30)] \
                     [--cycles N (5)] [--seed N (1)]"
                );
                std::process::exit(0);
            }
            other => panic!("unknown argument {other} (see --help)"),
        }
    }
    args
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    if n % 2 == 1 {
        values[n / 2]
    } else {
        (values[n / 2 - 1] + values[n / 2]) / 2.0
    }
}

/// Warms an engine on `keys` and returns its live cycles' thread CPU, in seconds.
fn cycle_cpu(keys: &[KeyProfile], args: &Args, seed: u64) -> Vec<f64> {
    let mut rng = Rng::new(seed);
    let config = DetectConfig::default();
    let lateness = config.allowed_lateness_s as u32;
    let start: u32 = 1_795_392_000 / 3600 * 3600;
    let quiet = |_: usize| Incident::None;
    let mut engine = Engine::new(config).expect("default config is valid");
    engine.folded_through = start;
    for i in 0..args.history_minutes {
        let minute = start + i * 60;
        let mut data = CycleData::default();
        add_minute(&mut data, keys, &quiet, minute, 1.0, &mut rng);
        engine.cycle(&data, minute + 60 + lateness, true);
    }
    (0..args.cycles)
        .map(|_| {
            let closed = engine.folded_through;
            let open = closed + 60;
            let mut data = CycleData::default();
            add_minute(&mut data, keys, &quiet, closed, 1.0, &mut rng);
            add_minute(&mut data, keys, &quiet, open, 0.75, &mut rng);
            let t = thread_cpu_s();
            engine.cycle(&data, open + 45, false);
            thread_cpu_s() - t
        })
        .collect()
}

fn main() {
    let args = parse_args();
    let shown: Vec<String> = std::env::args().skip(1).collect();
    println!("# Tripline detector cycle with one and with several workers");
    println!(
        "command: cargo run --release -p tripline-detector --example workers{}{}",
        if shown.is_empty() { "" } else { " -- " },
        shown.join(" ")
    );
    println!("machine: {}", cpu_model());
    println!(
        "keys: {}, workers: {}, history: {} min, live cycles: {}, seed: {}",
        args.keys, args.workers, args.history_minutes, args.cycles, args.seed
    );

    let all = profiles(args.keys, &mut Rng::new(args.seed));
    let mut one = cycle_cpu(&all, &args, args.seed + 1);
    let one = median(&mut one);
    println!("1 worker, {} keys: median cycle CPU {one:.3} s", all.len());

    let mut shards: Vec<Vec<KeyProfile>> = (0..args.workers).map(|_| Vec::new()).collect();
    for (i, key) in all.into_iter().enumerate() {
        shards[i % args.workers].push(key);
    }
    let mut slowest: f64 = 0.0;
    for (w, keys) in shards.iter().enumerate() {
        let mut cpu = cycle_cpu(keys, &args, args.seed + 1);
        let cpu = median(&mut cpu);
        println!(
            "worker {} of {}, {} keys: median cycle CPU {cpu:.3} s",
            w + 1,
            args.workers,
            keys.len()
        );
        slowest = slowest.max(cpu);
    }
    println!(
        "cycle time with {} workers over 1 worker: {:.2} (the slowest worker's median over the one worker's)",
        args.workers,
        slowest / one
    );
}
