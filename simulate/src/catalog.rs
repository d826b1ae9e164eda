//! Static tables the key profiles are drawn from: countries with address blocks, models with
//! their providers, SDK user agents, project and team names; and what incidents add to them:
//! country coordinates, hosting networks attackers rent, an expensive model to probe.
//!
//! Everything here is plain data so that a reviewer can check it against the outside world
//! (the price table, an IP database) without reading any generation logic.

/// A home country for API keys: where its clients sit and which gateway region serves them.
#[derive(Debug)]
pub(crate) struct Country {
    /// ISO 3166-1 alpha-2, sent as `client_country`.
    pub code: &'static str,
    /// Relative share of keys (the US dominates LLM API traffic).
    pub weight: u32,
    /// Gateway regions that serve this country, with the local UTC offset in minutes (used to
    /// place the ServeGen hour-of-day curves in the key's own day).
    pub regions: &'static [(&'static str, i32)],
    /// First two octets of /16 blocks held by large ISPs and clouds registered in this country.
    /// Every block was checked against `data/geo/country.mmdb`, so ingest's IP lookup agrees with
    /// the `client_country` the events state.
    pub blocks: &'static [[u8; 2]],
}

pub(crate) const COUNTRIES: &[Country] = &[
    Country {
        code: "US",
        weight: 40,
        regions: &[("us-east-1", -300), ("us-west-2", -480)],
        // Comcast, AWS us-east-1, Google Cloud us-east4, Comcast (CA), Comcast.
        blocks: &[[73, 162], [3, 210], [34, 86], [98, 207], [24, 5]],
    },
    Country {
        code: "DE",
        weight: 10,
        regions: &[("eu-central-1", 60)],
        // Deutsche Telekom (three blocks), AWS eu-central-1.
        blocks: &[[91, 12], [79, 200], [84, 150], [3, 120]],
    },
    Country {
        code: "GB",
        weight: 9,
        regions: &[("eu-west-2", 0)],
        // BT (two blocks), AWS eu-west-2.
        blocks: &[[86, 140], [31, 50], [35, 176]],
    },
    Country {
        code: "IN",
        weight: 8,
        regions: &[("ap-south-1", 330)],
        // BSNL, Reliance Jio, AWS ap-south-1, Bharti Airtel.
        blocks: &[[117, 200], [49, 36], [13, 232], [106, 200]],
    },
    Country {
        code: "JP",
        weight: 7,
        regions: &[("ap-northeast-1", 540)],
        // SoftBank, KDDI, AWS ap-northeast-1.
        blocks: &[[126, 10], [106, 130], [13, 112]],
    },
    Country {
        code: "FR",
        weight: 6,
        regions: &[("eu-west-3", 60)],
        // Orange, Free, Orange, AWS eu-west-3.
        blocks: &[[90, 10], [82, 65], [86, 200], [15, 236]],
    },
    Country {
        code: "CA",
        weight: 6,
        regions: &[("ca-central-1", -300)],
        // Rogers, Bell Canada, AWS ca-central-1, Bell Canada.
        blocks: &[[99, 230], [70, 26], [15, 222], [142, 113]],
    },
    Country {
        code: "BR",
        weight: 5,
        regions: &[("sa-east-1", -180)],
        // Brazilian ISPs (LACNIC/NIC.br blocks), AWS sa-east-1.
        blocks: &[[177, 20], [179, 100], [189, 40], [18, 228]],
    },
    Country {
        code: "SG",
        weight: 5,
        regions: &[("ap-southeast-1", 480)],
        // AWS ap-southeast-1 (two blocks), StarHub, SingNet.
        blocks: &[[18, 136], [13, 228], [116, 88], [175, 156]],
    },
    Country {
        code: "AU",
        weight: 4,
        regions: &[("ap-southeast-2", 600)],
        // Telstra (two blocks), AWS ap-southeast-2.
        blocks: &[[1, 130], [101, 170], [13, 236]],
    },
];

/// Countries no key lives in, where a key can move to: the nearest neighbours of the
/// [`COUNTRIES`] that have none within 2,500 km among them, so that a slow move from any home
/// takes at most 4 hours at 700 km/h (Australia to Indonesia, 2,740 km, is the longest). Every
/// block is one ISP's in both shipped databases, every address checked.
pub(crate) const NEIGHBOURS: &[Country] = &[
    Country {
        code: "MX",
        weight: 0,
        regions: &[("mx-central-1", -360)],
        // Uninet (Telmex), AS8151.
        blocks: &[[187, 130], [187, 131]],
    },
    Country {
        code: "KR",
        weight: 0,
        regions: &[("ap-northeast-2", 540)],
        // Korea Telecom, AS4766.
        blocks: &[[1, 96], [1, 97]],
    },
    Country {
        code: "PY",
        weight: 0,
        regions: &[("sa-east-1", -180)],
        // Telecel (Tigo), AS23201.
        blocks: &[[181, 120], [181, 121]],
    },
    Country {
        code: "MY",
        weight: 0,
        regions: &[("ap-southeast-5", 480)],
        // TM Technology Services, AS4788.
        blocks: &[[42, 188], [42, 189]],
    },
    Country {
        code: "NP",
        weight: 0,
        regions: &[("ap-south-1", 345)],
        // Ncell, AS38565.
        blocks: &[[36, 252], [36, 253]],
    },
    Country {
        code: "ID",
        weight: 0,
        regions: &[("ap-southeast-3", 420)],
        // Telkom Indonesia, AS7713.
        blocks: &[[36, 64], [36, 65]],
    },
];

/// A model a key can call. `provider` + `name` resolve in `data/prices/prices.json` through
/// `PriceTable::lookup` (a test checks every entry), so ingest can cost events that omit
/// `cost_usd`. The list follows the price table's snapshot, not older model names it dropped.
#[derive(Debug)]
pub(crate) struct Model {
    pub provider: &'static str,
    pub name: &'static str,
    /// Relative popularity when keys pick their models.
    pub weight: u32,
    /// Decode time per completion token, in ms: small and hosted-on-LPU models stream faster.
    pub ms_per_token: f64,
}

pub(crate) const MODELS: &[Model] = &[
    model("openai", "gpt-4o-mini", 20, 11.0),
    model("openai", "gpt-4o", 14, 18.0),
    model("openai", "gpt-4.1-mini", 8, 11.0),
    model("openai", "gpt-5-mini", 5, 14.0),
    model("openai", "o3-mini", 4, 9.0),
    model("anthropic", "claude-sonnet-4-5", 12, 20.0),
    model("anthropic", "claude-haiku-4-5", 8, 10.0),
    model("gemini", "gemini-2.5-flash", 8, 6.0),
    model("gemini", "gemini-2.5-pro", 3, 14.0),
    model("deepseek", "deepseek-chat", 4, 25.0),
    model("mistral", "mistral-small-latest", 3, 9.0),
    model("groq", "openai/gpt-oss-20b", 3, 2.0),
    // No key calls these on its own (weight 0, last so that the keys' draws are unchanged):
    // they are what a price shift moves a key to, so that the drawn 5-200x ratios exist
    // whatever the key's usual model ($15 / $60 and $150 / $600 per million tokens).
    model("openai", "o1", 0, 20.0),
    model("openai", "o1-pro", 0, 30.0),
];

/// The expensive model a leaked key is probed and abused on: no key ever draws it, and the
/// detectors' model family (`claude-opus-4-5`, versions stripped) is distinct from every family
/// in [`MODELS`]. $5 / $25 per million tokens in the price table, 20x `gpt-4o-mini`'s prompt.
pub(crate) static EXPENSIVE_MODEL: Model = model("anthropic", "claude-opus-4-5", 0, 22.0);

const fn model(provider: &'static str, name: &'static str, weight: u32, ms: f64) -> Model {
    Model {
        provider,
        name,
        weight,
        ms_per_token: ms,
    }
}

/// The distinct providers, in first-appearance order of [`MODELS`]; failure bursts are tracked
/// per provider, because outages and rate limits hit a provider, not a single model.
pub(crate) const PROVIDERS: &[&str] = &[
    "openai",
    "anthropic",
    "gemini",
    "deepseek",
    "mistral",
    "groq",
];

/// Index of a provider in [`PROVIDERS`].
pub(crate) fn provider_index(provider: &str) -> usize {
    PROVIDERS
        .iter()
        .position(|p| *p == provider)
        .unwrap_or_default()
}

/// Client libraries as they announce themselves, with relative frequency and how often their
/// users stream (chat front-ends stream, batch scripts and curl mostly do not).
pub(crate) const USER_AGENTS: &[(&str, u32, f64)] = &[
    ("openai-python/1.52.0", 30, 0.5),
    ("OpenAI/JS 4.67.3", 14, 0.7),
    ("litellm/1.50.0", 12, 0.4),
    ("langchain-openai/0.2.3", 10, 0.6),
    ("anthropic-sdk-python/0.39.0", 8, 0.5),
    ("python-requests/2.32.3", 6, 0.1),
    ("Go-http-client/2.0", 5, 0.2),
    ("curl/8.5.0", 3, 0.05),
];

/// The user agent of Anthropic's SDK, preferred by keys whose main model is Claude.
pub(crate) const ANTHROPIC_SDK: &str = "anthropic-sdk-python/0.39.0";

/// The user agent of a leaked key's abuser: a bare script, unlike any SDK in [`USER_AGENTS`]
/// (which has `python-requests/2.32.3`, not this version).
pub(crate) const ATTACKER_UA: &str = "python-requests/2.31.0";
/// The user agent of a key scanner.
pub(crate) const SCANNER_UA: &str = "Go-http-client/1.1";

/// /16 blocks of [`COUNTRIES`] that belong to clouds (Amazon, Google) rather than ISPs. A key
/// that moves house takes ISP addresses in its new country, so that the move shows no hosting
/// network (which would be a leaked-key signal).
pub(crate) const CLOUD_BLOCKS: &[[u8; 2]] = &[
    [3, 210],
    [34, 86],
    [3, 120],
    [35, 176],
    [13, 232],
    [13, 112],
    [15, 236],
    [15, 222],
    [18, 228],
    [18, 136],
    [13, 228],
    [13, 236],
];

/// A hosting network that attackers rent machines in (leaked-key abuse, key scanning).
#[derive(Debug)]
pub(crate) struct HostingPool {
    /// ISO 3166-1 alpha-2 as `data/geo/country.mmdb` places every address of `ranges`.
    pub country: &'static str,
    /// The gateway region that would serve a client there.
    pub region: &'static str,
    /// The AS organisation and number `data/geo/asn.mmdb` gives every address of `ranges`.
    pub org: &'static str,
    pub asn: u32,
    /// `[a, b, c_first, c_last]`: hosts `a.b.c.d` with `c` in `c_first..=c_last` and `d` in
    /// 1..=254. Every such address was looked up in both shipped databases (Python `maxminddb`)
    /// and resolves to `country` and `asn`; the rest of each /16 may not (DigitalOcean and
    /// Hetzner split their /16s between countries).
    pub ranges: &'static [[u8; 4]],
}

pub(crate) const HOSTING_POOLS: &[HostingPool] = &[
    HostingPool {
        country: "FI",
        region: "eu-north-1",
        org: "Hetzner Online GmbH",
        asn: 24940,
        ranges: &[[95, 216, 0, 29], [65, 21, 0, 29]],
    },
    HostingPool {
        country: "NL",
        region: "eu-west-1",
        org: "DigitalOcean, LLC",
        asn: 14061,
        ranges: &[[188, 166, 0, 39]],
    },
    HostingPool {
        country: "CA",
        region: "ca-central-1",
        org: "OVH SAS",
        asn: 16276,
        ranges: &[[144, 217, 0, 255], [51, 79, 0, 155]],
    },
    HostingPool {
        country: "DE",
        region: "eu-central-1",
        org: "Hetzner Online GmbH",
        asn: 24940,
        ranges: &[[88, 198, 0, 255], [5, 9, 0, 255]],
    },
    HostingPool {
        country: "SG",
        region: "ap-southeast-1",
        org: "DigitalOcean, LLC",
        asn: 14061,
        ranges: &[[128, 199, 64, 103]],
    },
    HostingPool {
        country: "US",
        region: "us-east-1",
        org: "DigitalOcean, LLC",
        asn: 14061,
        ranges: &[[143, 198, 0, 31]],
    },
];

/// One representative point (lat, lon in degrees) per country the simulator uses: the values
/// of `data/geo/country_centroids.csv`, which the cross-region detector measures with.
const CENTROIDS: &[(&str, f64, f64)] = &[
    ("US", 39.76, -98.5),
    ("DE", 51.5, 10.5),
    ("GB", 54.7584, -2.69531),
    ("IN", 22.0, 79.0),
    ("JP", 35.6854, 139.753),
    ("FR", 46.0, 2.0),
    ("CA", 60.1087, -113.643),
    ("BR", -10.0, -55.0),
    ("SG", 1.36667, 103.8),
    ("AU", -25.0, 135.0),
    ("FI", 64.0, 26.0),
    ("NL", 52.25, 5.75),
    ("MX", 23.0, -102.0),
    ("KR", 36.5, 127.75),
    ("PY", -23.3333, -58.0),
    ("MY", 2.5, 112.5),
    ("NP", 28.0, 84.0),
    ("ID", -5.0, 120.0),
];

/// Great-circle distance in km between two countries' points (haversine, mean Earth radius);
/// `None` for a country not in [`CENTROIDS`].
pub(crate) fn distance_km(a: &str, b: &str) -> Option<f64> {
    let point = |code: &str| CENTROIDS.iter().find(|c| c.0 == code).map(|c| (c.1, c.2));
    let ((lat1, lon1), (lat2, lon2)) = (point(a)?, point(b)?);
    let (p1, p2) = (lat1.to_radians(), lat2.to_radians());
    let h = ((p2 - p1) / 2.0).sin().powi(2)
        + p1.cos() * p2.cos() * ((lon2 - lon1).to_radians() / 2.0).sin().powi(2);
    Some(2.0 * 6_371.008_8 * h.clamp(0.0, 1.0).sqrt().asin())
}

/// Project names; cycled with a numeric suffix when there are more projects than names.
pub(crate) const PROJECTS: &[&str] = &[
    "search",
    "support-bot",
    "code-review",
    "doc-summarizer",
    "sales-assistant",
    "ticket-triage",
    "data-extraction",
    "translation",
    "onboarding-agent",
    "eval-harness",
    "marketing-copy",
    "sql-copilot",
    "meeting-notes",
    "fraud-review",
    "kb-qa",
    "release-notes",
];

/// Teams that own projects.
pub(crate) const TEAMS: &[&str] = &[
    "platform",
    "growth",
    "customer-success",
    "data",
    "ml-infra",
    "devex",
    "security",
    "finance-ops",
];
