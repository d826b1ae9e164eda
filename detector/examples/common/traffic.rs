//! Deterministic synthetic gateway traffic for the detector examples, shaped like a busy
//! gateway (see scale.rs).

use tripline_detector::data::{
    CycleData, KeyMinute, KeyProviderFailures, KeyRetries, ProviderBucket, ProviderMinute,
    SpendMinute, Usage,
};

// ---------------------------------------------------------------------------------------------
// Deterministic synthetic traffic

/// xorshift64* (Vigna): small, fast and good enough for synthetic traffic.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        // SplitMix64 of the seed, so that small seeds still start well mixed and never at 0.
        let mut z = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        Self((z ^ (z >> 31)) | 1)
    }

    pub fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in [0, 1).
    pub fn f64(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    pub fn chance(&mut self, p: f64) -> bool {
        self.f64() < p
    }

    /// Log-uniform in [lo, hi): most values small, a long tail of large ones.
    pub fn log_uniform(&mut self, lo: f64, hi: f64) -> f64 {
        (lo.ln() + self.f64() * (hi.ln() - lo.ln())).exp()
    }
}

/// (country, ASN, AS organisation): home networks, some of them clouds.
pub const NETWORKS: &[(&str, u32, &str)] = &[
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
pub const FAR_NETWORKS: &[(&str, u32, &str)] = &[
    ("VN", 135905, "VNPT Corp"),
    ("RU", 197695, "Domain names registrar REG.RU, Ltd"),
    ("ZA", 37611, "Afrihost"),
    ("AR", 7303, "Telecom Argentina S.A."),
];

pub const MODELS: &[(&str, &str)] = &[
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

pub const USER_AGENTS: &[&str] = &[
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
pub struct KeyProfile {
    pub id: String,
    pub project: String,
    /// Requests per minute at the daily mean.
    pub rpm: f64,
    pub usd_per_request: f64,
    pub ips: u64,
    /// Indexes into `NETWORKS` (one or two, same country).
    pub networks: Vec<usize>,
    /// Indexes into `MODELS` (one to three).
    pub models: Vec<usize>,
    pub user_agent: usize,
    /// Share of requests that are retries (`attempt > 1`).
    pub retry_share: f64,
}

pub fn profiles(keys: usize, rng: &mut Rng) -> Vec<KeyProfile> {
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
pub enum Incident {
    None,
    SpendSpike,
    FarCountry,
    RetryStorm,
}

/// Adds one minute of every key to `data`. `fraction` of the minute has elapsed (1 = closed).
pub fn add_minute(
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
            auth_failures: 0,
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
                model: MODELS[k.models[0]].1.to_owned(),
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
                    model: MODELS[m].1.to_owned(),
                    minute,
                    bucket: minute + b * 10,
                    attempts: attempts / 6,
                    failures: (attempts - successes) / 6,
                    first_attempts: attempts / 6,
                });
            }
        }
    }
}

pub fn usage_row(
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

pub fn rows(data: &CycleData) -> String {
    format!(
        "{} key rows, {} usage rows, {} retry rows, {} project rows, {} provider rows",
        data.keys.len(),
        data.usage.len(),
        data.retries.len(),
        data.projects.len(),
        data.providers.len()
    )
}
