//! API key profiles: who holds each simulated key and how much it sends.
//!
//! Volume follows the real ServeGen client shares (key 0 is the busiest client), so the skew a
//! detector sees per key is the skew of a production service. The other attributes (project,
//! country, addresses, SDK, models) are drawn once from the seed and stay fixed, because
//! detectors learn them per key and a key that changed country every request would look like an
//! incident.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::catalog::{Country, ANTHROPIC_SDK, COUNTRIES, MODELS, PROJECTS, TEAMS, USER_AGENTS};
use crate::traces::clients;

/// Keys per project, on average.
const KEYS_PER_PROJECT: usize = 5;
/// Distinct users a project has (each key uses 1-3 of them).
const USERS_PER_PROJECT: usize = 10;
/// Share of keys whose home country differs from their project's (a contractor, a second
/// office); the rest share it.
const FOREIGN_KEY_SHARE: f64 = 0.2;
/// How a key splits its traffic over its 1-3 models, addresses or users: the first one carries
/// most of it.
const SPLIT: [f64; 4] = [0.6, 0.25, 0.1, 0.05];

/// The fixed attributes and volume of one simulated API key.
#[derive(Debug, Clone)]
pub(crate) struct KeyProfile {
    pub id: String,
    pub hint: String,
    pub project: String,
    pub team: &'static str,
    pub users: Vec<String>,
    pub country: &'static str,
    pub region: &'static str,
    /// Local time offset from UTC, in minutes, for the diurnal curve.
    pub utc_offset_min: i32,
    pub ips: Vec<String>,
    pub user_agent: &'static str,
    /// Probability that a request streams.
    pub stream_p: f64,
    /// Indexes into [`MODELS`].
    pub models: Vec<usize>,
    /// Index into [`clients()`] whose share and daily rhythm this key follows.
    pub client: usize,
    /// Long-run share of all requests (before normalising over the keys).
    pub share: f64,
}

/// Picks one of `n` items where earlier items are the more frequent (see [`SPLIT`]).
pub(crate) fn pick_split(rng: &mut impl Rng, n: usize) -> usize {
    let weights = &SPLIT[..n.min(SPLIT.len())];
    pick_weighted(rng, weights.iter().copied())
}

/// Index drawn with probability proportional to its weight.
pub(crate) fn pick_weighted(
    rng: &mut impl Rng,
    weights: impl Iterator<Item = f64> + Clone,
) -> usize {
    let total: f64 = weights.clone().sum();
    let mut u = rng.random::<f64>() * total;
    let mut last = 0;
    for (i, w) in weights.enumerate() {
        if u < w {
            return i;
        }
        u -= w;
        if w > 0.0 {
            // Rounding can leave `u` past the end: the last entry that can be drawn, never
            // one of weight 0.
            last = i;
        }
    }
    last
}

/// Builds `n` key profiles, fully determined by `seed`.
pub(crate) fn build_keys(seed: u64, n: usize) -> Vec<KeyProfile> {
    // A stream of its own, so that changes to the traffic model never reshuffle the keys.
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream(1);
    let clients = clients();
    let n_projects = n.div_ceil(KEYS_PER_PROJECT).max(1);
    let projects: Vec<ProjectProfile> = (0..n_projects)
        .map(|p| ProjectProfile::draw(&mut rng, p))
        .collect();
    // Busy and quiet keys are spread over projects instead of the top five sharing one.
    let mut slots: Vec<usize> = (0..n).collect();
    shuffle(&mut rng, &mut slots);

    (0..n)
        .map(|i| {
            let project = &projects[slots[i] % n_projects];
            let client = i % clients.len();
            // Past the last client, keys cycle through the clients again at 1/(cycle + 1) of the
            // share (a Zipf tail): extra keys add a long tail instead of copying the head, and
            // most of 10,000 keys still send something in a day (at 100 requests/s: ~9,700).
            let cycle = (i / clients.len()) as f64;
            let share = clients[client].share / (cycle + 1.0);
            let country = if rng.random_bool(FOREIGN_KEY_SHARE) {
                draw_country(&mut rng)
            } else {
                project.country
            };
            let (region, utc_offset_min) =
                country.regions[rng.random_range(0..country.regions.len())];
            let models = draw_models(&mut rng);
            let user_agent = if MODELS[models[0]].provider == "anthropic" && rng.random_bool(0.6) {
                ANTHROPIC_SDK
            } else {
                USER_AGENTS[pick_weighted(&mut rng, USER_AGENTS.iter().map(|u| f64::from(u.1)))].0
            };
            let sdk_stream_p = USER_AGENTS
                .iter()
                .find(|u| u.0 == user_agent)
                .map_or(0.5, |u| u.2);
            let n_users = rng.random_range(1..=3);
            let users = (0..n_users)
                .map(|_| {
                    let u =
                        project.index * USERS_PER_PROJECT + rng.random_range(0..USERS_PER_PROJECT);
                    format!("user-{u}")
                })
                .collect();
            let n_ips = rng.random_range(1..=4);
            let ips = (0..n_ips).map(|_| draw_ip(&mut rng, country)).collect();
            KeyProfile {
                id: format!("key-{i:04}"),
                hint: format!("sk-…{:04x}", rng.random::<u16>()),
                project: project.name.clone(),
                team: project.team,
                users,
                country: country.code,
                region,
                utc_offset_min,
                ips,
                user_agent,
                // Apps differ around their SDK's habit, but few never or always stream: the
                // busiest keys set the overall share, which should stay near half.
                stream_p: 0.25 + 0.5 * sdk_stream_p + rng.random_range(-0.1..0.1),
                models,
                client,
                share,
            }
        })
        .collect()
}

struct ProjectProfile {
    index: usize,
    name: String,
    team: &'static str,
    country: &'static Country,
}

impl ProjectProfile {
    fn draw(rng: &mut ChaCha8Rng, index: usize) -> Self {
        let base = PROJECTS[index % PROJECTS.len()];
        let name = match index / PROJECTS.len() {
            0 => base.to_owned(),
            round => format!("{base}-{}", round + 1),
        };
        Self {
            index,
            name,
            team: TEAMS[rng.random_range(0..TEAMS.len())],
            country: draw_country(rng),
        }
    }
}

fn draw_country(rng: &mut impl Rng) -> &'static Country {
    &COUNTRIES[pick_weighted(rng, COUNTRIES.iter().map(|c| f64::from(c.weight)))]
}

/// 1-3 distinct models by popularity, the main one first.
fn draw_models(rng: &mut impl Rng) -> Vec<usize> {
    let n = rng.random_range(1..=3);
    let mut chosen: Vec<usize> = Vec::with_capacity(n);
    while chosen.len() < n {
        let weights = MODELS.iter().enumerate().map(|(i, m)| {
            if chosen.contains(&i) {
                0.0
            } else {
                f64::from(m.weight)
            }
        });
        let pick = pick_weighted(rng, weights);
        chosen.push(pick);
    }
    chosen
}

/// A host address inside one of the country's blocks (never a .0 or .255 host).
fn draw_ip(rng: &mut impl Rng, country: &Country) -> String {
    let block = country.blocks[rng.random_range(0..country.blocks.len())];
    host_in(rng, [block[0], block[1], 0, 255])
}

/// A host `a.b.c.d` with `c` in `c_first..=c_last` of `[a, b, c_first, c_last]` and `d` in
/// 1..=254.
pub(crate) fn host_in(rng: &mut impl Rng, [a, b, c_first, c_last]: [u8; 4]) -> String {
    let c: u8 = rng.random_range(c_first..=c_last);
    let d: u8 = rng.random_range(1..=254);
    format!("{a}.{b}.{c}.{d}")
}

fn shuffle<T>(rng: &mut impl Rng, items: &mut [T]) {
    // Fisher-Yates, written out so the order depends only on this crate's RNG calls.
    for i in (1..items.len()).rev() {
        let j = rng.random_range(0..=i);
        items.swap(i, j);
    }
}
