//! Properties of the generated stream: determinism, order, rate, contract validity, failure
//! and retry behaviour, key skew and pricing. Measured values are printed (`--nocapture`).

use std::collections::{HashMap, HashSet};

use tripline_core::event::ValidationRules;
use tripline_core::event::{decode_gateway, decode_provider, GatewayRequest, ProviderAttempt};
use tripline_core::price::PriceTable;

use crate::catalog::{provider_index, MODELS, PROVIDERS};
use crate::{EventTopic, SimConfig, SimEvent, Simulator, TraceSource};

fn rules() -> ValidationRules {
    ValidationRules {
        now_ms: SimConfig::default().start_ms + 365 * 86_400_000,
        max_future_skew_ms: 0,
    }
}

/// The first `n` gateway events (and the provider events among them), decoded.
fn run(config: SimConfig, n: usize) -> (Vec<GatewayRequest>, Vec<ProviderAttempt>) {
    let rules = rules();
    let mut gateway = Vec::with_capacity(n);
    let mut provider = Vec::new();
    for ev in Simulator::new(config) {
        match ev.topic {
            EventTopic::Gateway => {
                let g = decode_gateway(&ev.payload, &rules).expect("gateway payload decodes");
                assert_eq!(ev.key, g.api_key_id);
                assert_eq!(ev.ts_ms, g.ts_ms);
                gateway.push(g);
                if gateway.len() == n {
                    break;
                }
            }
            EventTopic::Provider => {
                let p = decode_provider(&ev.payload, &rules).expect("provider payload decodes");
                assert_eq!(ev.key, p.api_key_id);
                assert_eq!(ev.ts_ms, p.ts_ms);
                provider.push(p);
            }
        }
    }
    (gateway, provider)
}

fn failed(g: &GatewayRequest) -> bool {
    g.status >= 400
}

#[test]
fn same_seed_same_events_other_seed_other_events() {
    let take = |seed| -> Vec<SimEvent> {
        Simulator::new(SimConfig {
            seed,
            ..SimConfig::default()
        })
        .take(2_000)
        .collect()
    };
    let a = take(42);
    assert_eq!(a, take(42));
    let b = take(43);
    assert_ne!(
        a.iter().map(|e| &e.payload).collect::<Vec<_>>(),
        b.iter().map(|e| &e.payload).collect::<Vec<_>>()
    );
}

#[test]
fn events_come_in_time_order_from_start() {
    let config = SimConfig::default();
    let start = config.start_ms;
    let events: Vec<SimEvent> = Simulator::new(config).take(30_000).collect();
    assert_eq!(events[0].ts_ms, start);
    assert!(events.windows(2).all(|w| w[0].ts_ms <= w[1].ts_ms));
    let ids: HashSet<&[u8]> = events.iter().map(|e| e.payload.as_slice()).collect();
    assert_eq!(ids.len(), events.len(), "payloads are unique (event ids)");
}

#[test]
fn mean_rate_matches_config_for_every_trace() {
    for (trace, rate) in [
        (TraceSource::AzureConv, 200.0),
        (TraceSource::AzureCode, 50.0),
        (TraceSource::Mooncake, 1_000.0),
    ] {
        let config = SimConfig {
            seed: 9,
            rate_per_s: rate,
            trace,
            ..SimConfig::default()
        };
        let start = config.start_ms;
        let (gateway, _) = run(config, 20_000);
        let firsts: Vec<&GatewayRequest> = gateway.iter().filter(|g| g.attempt == 1).collect();
        let span_s = (firsts[firsts.len() - 1].ts_ms - start) as f64 / 1000.0;
        let measured = (firsts.len() - 1) as f64 / span_s;
        println!("{trace}: {measured:.1} req/s (target {rate}) over {span_s:.0} s");
        assert!(
            (measured / rate - 1.0).abs() < 0.1,
            "{trace}: {measured} req/s, want {rate}"
        );
    }
}

#[test]
fn every_event_carries_the_contract_fields_consistently() {
    let config = SimConfig::default();
    let id_prefix = format!("sim-{:x}-{:x}-", config.seed, config.start_ms);
    let (gateway, provider) = run(config, 20_000);
    let table = PriceTable::builtin();
    let mut country_of_key: HashMap<&str, &str> = HashMap::new();
    let mut priced = 0;
    let mut stated_cost = 0;
    let mut streamed = 0;
    for g in &gateway {
        assert!(g.event_id.starts_with(&id_prefix));
        assert!(g.request_id.starts_with("req-") && g.idempotency_key.starts_with("idem-"));
        assert!(g.key_hint.starts_with("sk-…") && !g.project.is_empty() && !g.team.is_empty());
        assert!(g.user.starts_with("user-") && !g.user_agent.is_empty());
        assert!(g.client_ip.is_some() && g.client_country.len() == 2);
        assert!(!g.gateway_region.is_empty() && !g.provider.is_empty());
        let home = country_of_key
            .entry(&g.api_key_id)
            .or_insert(&g.client_country);
        assert_eq!(*home, g.client_country, "a key keeps its home country");
        if table.lookup(&g.provider, &g.model).is_some() {
            priced += 1;
        }
        stated_cost += usize::from(g.cost_usd.is_some());
        streamed += usize::from(g.stream);
        if failed(g) {
            assert!(!g.error_type.is_empty() && g.prompt_tokens == 0);
        } else {
            assert!(g.error_type.is_empty() && g.latency_ms > 0);
        }
    }
    let n = gateway.len() as f64;
    println!(
        "priced {:.1} %, cost stated {:.1} %, streamed {:.1} %",
        100.0 * priced as f64 / n,
        100.0 * stated_cost as f64 / n,
        100.0 * streamed as f64 / n
    );
    assert!(priced as f64 >= 0.95 * n);
    assert!((0.05..0.15).contains(&(stated_cost as f64 / n)));
    assert!((0.3..0.7).contains(&(streamed as f64 / n)));

    // Every provider attempt serves a gateway request of the same key, model and provider, and
    // finishes before the gateway answered.
    let by_request: HashMap<&str, &GatewayRequest> =
        gateway.iter().map(|g| (g.request_id.as_str(), g)).collect();
    let mut matched = 0;
    for p in &provider {
        if let Some(g) = by_request.get(p.request_id.as_str()) {
            assert_eq!((&p.api_key_id, &p.model), (&g.api_key_id, &g.model));
            assert_eq!(p.provider, g.provider);
            assert!(p.ts_ms >= g.ts_ms && p.ts_ms <= g.ts_ms + i64::from(g.latency_ms));
            assert_eq!(p.status == 429, p.retry_after_ms > 0);
            matched += 1;
        }
    }
    assert!(matched as f64 > 0.99 * provider.len() as f64);
}

#[test]
fn failures_are_a_small_clustered_share_and_clients_retry() {
    // 20 req/s, so that 40k requests span enough time (about 33 min) for several incidents.
    let config = SimConfig {
        seed: 5,
        rate_per_s: 20.0,
        ..SimConfig::default()
    };
    let (gateway, provider) = run(config, 40_000);
    let failures = gateway.iter().filter(|g| failed(g)).count();
    let share = failures as f64 / gateway.len() as f64;
    let mut statuses: HashMap<u16, usize> = HashMap::new();
    for g in gateway.iter().filter(|g| failed(g)) {
        *statuses.entry(g.status).or_default() += 1;
    }
    let mut statuses: Vec<_> = statuses.into_iter().collect();
    statuses.sort();
    println!("failure share {:.2} % {statuses:?}", 100.0 * share);
    assert!((0.01..=0.03).contains(&share), "failure share {share}");
    assert!(statuses.iter().any(|(s, _)| *s == 429) && statuses.iter().any(|(s, _)| *s >= 500));

    // Bursts: the worst 10-second window is far above the average failure share.
    let mut windows: HashMap<i64, (usize, usize)> = HashMap::new();
    for g in &gateway {
        let w = windows.entry(g.ts_ms / 10_000).or_default();
        w.0 += 1;
        w.1 += usize::from(failed(g));
    }
    let worst = windows
        .values()
        .filter(|(n, _)| *n >= 100)
        .map(|(n, f)| *f as f64 / *n as f64)
        .fold(0.0, f64::max);
    println!("worst 10 s window failure share {:.1} %", 100.0 * worst);
    assert!(worst > 4.0 * share);

    // Client retries: same idempotency key, next attempt, later, at most 3 attempts.
    let mut by_idem: HashMap<&str, Vec<&GatewayRequest>> = HashMap::new();
    for g in &gateway {
        by_idem.entry(&g.idempotency_key).or_default().push(g);
    }
    let retried: Vec<&Vec<&GatewayRequest>> = by_idem.values().filter(|v| v.len() > 1).collect();
    println!(
        "{} logical requests retried ({:.2} % of gateway events are retries)",
        retried.len(),
        100.0 * gateway.iter().filter(|g| g.attempt > 1).count() as f64 / gateway.len() as f64
    );
    assert!(!retried.is_empty());
    for chain in &retried {
        assert!(chain.len() <= 3);
        for (i, pair) in chain.windows(2).enumerate() {
            assert_eq!(pair[0].attempt as usize, i + 1);
            assert_eq!(pair[1].attempt, pair[0].attempt + 1);
            assert!(failed(pair[0]) && pair[0].status != 400 && pair[0].status != 401);
            assert!(pair[1].ts_ms >= pair[0].ts_ms + i64::from(pair[0].latency_ms) + 500);
            assert_eq!(pair[0].api_key_id, pair[1].api_key_id);
        }
    }

    // Gateway-internal retries: one gateway 200 behind a failed and a successful attempt.
    let mut attempts: HashMap<&str, Vec<&ProviderAttempt>> = HashMap::new();
    for p in &provider {
        attempts.entry(&p.request_id).or_default().push(p);
    }
    let ok_by_request: HashSet<&str> = gateway
        .iter()
        .filter(|g| g.status == 200)
        .map(|g| g.request_id.as_str())
        .collect();
    let rescued = attempts
        .iter()
        .filter(|(id, a)| {
            ok_by_request.contains(*id)
                && a.len() == 2
                && a[0].attempt == 1
                && a[0].status >= 429
                && a[1].attempt == 2
                && a[1].status == 200
        })
        .count();
    println!("{rescued} gateway 200s rescued by an internal retry");
    assert!(rescued > 0);
    // 401s are answered by the gateway: no provider attempt.
    for g in gateway.iter().filter(|g| g.status == 401) {
        assert!(!attempts.contains_key(g.request_id.as_str()));
    }
}

#[test]
fn a_few_keys_carry_most_requests() {
    for keys in [100, 200] {
        let config = SimConfig {
            seed: 3,
            rate_per_s: 200.0,
            keys,
            ..SimConfig::default()
        };
        let (gateway, _) = run(config, 20_000);
        let mut counts: HashMap<&str, usize> = HashMap::new();
        for g in &gateway {
            *counts.entry(&g.api_key_id).or_default() += 1;
        }
        let mut volumes: Vec<usize> = counts.values().copied().collect();
        volumes.sort_unstable_by(|a, b| b.cmp(a));
        let top: usize = volumes.iter().take(keys / 10).sum();
        let share = top as f64 / gateway.len() as f64;
        println!(
            "{keys} keys: top 10 % carry {:.1} % of requests, {} keys active",
            100.0 * share,
            volumes.len()
        );
        assert!(share > 0.5, "top 10 % of {keys} keys carry {share}");
    }
}

#[test]
fn diurnal_flag_changes_the_key_mix_only() {
    let base = SimConfig {
        seed: 11,
        start_ms: SimConfig::default().start_ms + 8 * 3_600_000,
        ..SimConfig::default()
    };
    let flat = SimConfig {
        diurnal: false,
        ..base.clone()
    };
    let (a, _) = run(base, 5_000);
    let (b, _) = run(flat, 5_000);
    let keys = |g: &[GatewayRequest]| g.iter().map(|g| g.api_key_id.clone()).collect::<Vec<_>>();
    assert_ne!(keys(&a), keys(&b));
    let tokens = |g: &[GatewayRequest]| g.iter().map(|g| g.ts_ms).collect::<Vec<_>>();
    assert_eq!(
        tokens(&a)[..100],
        tokens(&b)[..100],
        "arrivals do not depend on the mix"
    );
}

#[test]
fn switches_turn_parts_off() {
    let config = SimConfig {
        provider_events: false,
        failure_rate: 0.0,
        ..SimConfig::default()
    };
    let events: Vec<SimEvent> = Simulator::new(config).take(5_000).collect();
    assert!(events.iter().all(|e| e.topic == EventTopic::Gateway));
    let rules = rules();
    assert!(events
        .iter()
        .all(|e| decode_gateway(&e.payload, &rules).unwrap().status == 200));

    for config in [
        SimConfig {
            keys: 0,
            ..SimConfig::default()
        },
        SimConfig {
            rate_per_s: 0.0,
            ..SimConfig::default()
        },
        SimConfig {
            rate_per_s: f64::NAN,
            ..SimConfig::default()
        },
    ] {
        let mut sim = Simulator::new(config);
        assert!(sim.next_event().is_none() && sim.key_ids().is_empty());
    }
    fn send<T: Send + 'static>(_: &T) {}
    let sim = Simulator::new(SimConfig {
        keys: 3,
        ..SimConfig::default()
    });
    assert_eq!(sim.key_ids(), ["key-0000", "key-0001", "key-0002"]);
    send(&sim); // the binary runs it on a worker thread
}

#[test]
fn catalog_models_are_priced_and_trace_names_parse() {
    let table = PriceTable::builtin();
    for m in MODELS {
        let price = table.lookup(m.provider, m.name);
        assert!(
            price.is_some_and(|p| p.input > 0.0 && p.output > 0.0),
            "{}",
            m.name
        );
        assert_eq!(PROVIDERS[provider_index(m.provider)], m.provider);
    }
    for t in TraceSource::ALL {
        assert_eq!(t.as_str().parse::<TraceSource>(), Ok(t));
    }
    assert_eq!(
        "Azure_Code".parse::<TraceSource>(),
        Ok(TraceSource::AzureCode)
    );
    assert!("sharegpt".parse::<TraceSource>().is_err());
}
