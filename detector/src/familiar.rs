//! What a key has been seen doing: its countries, networks, model families and user agents,
//! in small bounded sets, so that "never seen before" can be answered in a few bytes per key.

use crate::data::Usage;

const MAX_COUNTRIES: usize = 24;
const MAX_ASNS: usize = 48;
const MAX_MODELS: usize = 24;
const MAX_USER_AGENTS: usize = 24;

#[derive(Debug, Clone, Default)]
pub struct Familiar {
    countries: Vec<[u8; 2]>,
    asns: Vec<u32>,
    /// Hashes of model families.
    models: Vec<u64>,
    /// Hashes of user agents (the client software).
    user_agents: Vec<u64>,
    /// Whether the key ever called from a hosting/datacenter network.
    pub used_hosting: bool,
    /// Active minutes folded in so far: "new" means little on a key with no history.
    pub minutes: u32,
    /// Active minutes per UTC hour of the day (saturating), to know the hours a key sleeps.
    active_by_hour: [u16; 24],
}

/// Active minutes of history before a key's quiet hours mean anything (about two busy days).
const IDLE_HOURS_HISTORY_MINUTES: u32 = 2_000;

impl Familiar {
    /// Records an active minute (epoch seconds of its start).
    pub fn note_active(&mut self, minute: u32) {
        self.minutes += 1;
        let hour = (minute / 3600 % 24) as usize;
        self.active_by_hour[hour] = self.active_by_hour[hour].saturating_add(1);
    }

    /// Whether the key is normally idle at this minute's hour: long history, never active at
    /// that hour, and busy at others.
    pub fn idle_at(&self, minute: u32) -> bool {
        let hour = (minute / 3600 % 24) as usize;
        self.minutes >= IDLE_HOURS_HISTORY_MINUTES
            && self.active_by_hour[hour] == 0
            && self.active_by_hour.iter().any(|&n| n >= 60)
    }

    pub fn learn(&mut self, usage: &Usage) {
        if let Some(code) = country_code(&usage.country) {
            push_bounded(&mut self.countries, code, MAX_COUNTRIES);
        }
        // An ASN's organisation is the IP database's, one per ASN: a network already learned
        // was checked for hosting then (is_hosting is a tenth of a 100,000-key cycle if called
        // per row).
        let known_network = usage.asn != 0 && self.asns.contains(&usage.asn);
        if usage.asn != 0 {
            push_bounded(&mut self.asns, usage.asn, MAX_ASNS);
        }
        push_bounded(&mut self.models, family_hash(&usage.model), MAX_MODELS);
        if !usage.user_agent.is_empty() {
            push_bounded(
                &mut self.user_agents,
                text_hash(&usage.user_agent),
                MAX_USER_AGENTS,
            );
        }
        if !self.used_hosting && !known_network {
            self.used_hosting = is_hosting(&usage.as_org);
        }
    }

    pub fn has_country(&self, country: &str) -> bool {
        // A full set means the key is used from everywhere: nothing is new any more.
        country_code(country).is_none_or(|c| self.countries.contains(&c))
            || self.countries.len() >= MAX_COUNTRIES
    }

    /// Whether this network's organisation could be a hosting network the key never used: not
    /// when it used one already, nor when it used this very network (learning checked it).
    pub fn may_be_new_hosting(&self, asn: u32) -> bool {
        !self.used_hosting && (asn == 0 || !self.asns.contains(&asn))
    }

    pub fn has_asn(&self, asn: u32) -> bool {
        self.asns.contains(&asn) || self.asns.len() >= MAX_ASNS
    }

    pub fn has_user_agent(&self, user_agent: &str) -> bool {
        self.user_agents.contains(&text_hash(user_agent))
            || self.user_agents.len() >= MAX_USER_AGENTS
    }

    pub fn has_model(&self, model: &str) -> bool {
        self.models.contains(&family_hash(model)) || self.models.len() >= MAX_MODELS
    }
}

fn push_bounded<T: PartialEq>(set: &mut Vec<T>, value: T, max: usize) {
    if !set.contains(&value) && set.len() < max {
        set.push(value);
    }
}

fn country_code(country: &str) -> Option<[u8; 2]> {
    let bytes = country.as_bytes();
    (bytes.len() == 2).then(|| [bytes[0], bytes[1]])
}

/// The model without provider prefix and date/version suffixes: `openai/gpt-4o-2024-08-06` and
/// `gpt-4o` are one family; `gpt-4o-mini` and `claude-opus-4-5` are others.
pub fn model_family(model: &str) -> &str {
    let bare = model.rsplit('/').next().unwrap_or(model);
    let mut family = bare.split(':').next().unwrap_or(bare);
    while let Some((head, last)) = family.rsplit_once('-') {
        let digits = last.len() >= 2 && last.bytes().all(|b| b.is_ascii_digit());
        let version = last.len() >= 2
            && last.starts_with('v')
            && last[1..].bytes().all(|b| b.is_ascii_digit());
        if digits || version || matches!(last, "latest" | "preview" | "exp") {
            family = head;
        } else {
            break;
        }
    }
    family
}

fn family_hash(model: &str) -> u64 {
    text_hash(model_family(model))
}

fn text_hash(text: &str) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    text.hash(&mut hasher);
    hasher.finish()
}

/// Organisations whose networks are clouds and hosting providers rather than offices or homes.
const HOSTING: [&str; 24] = [
    "amazon",
    "aws",
    "google cloud",
    "microsoft",
    "azure",
    "digitalocean",
    "linode",
    "akamai",
    "ovh",
    "hetzner",
    "vultr",
    "choopa",
    "oracle",
    "alibaba",
    "tencent",
    "leaseweb",
    "contabo",
    "scaleway",
    "online s.a.s",
    "m247",
    "datacamp",
    "hostinger",
    "ionos",
    "cloudflare",
];

pub fn is_hosting(as_org: &str) -> bool {
    let org = as_org.to_ascii_lowercase();
    !org.is_empty() && HOSTING.iter().any(|h| org.contains(h))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn model_families_drop_prefixes_and_dates() {
        assert_eq!(model_family("openai/gpt-4o-2024-08-06"), "gpt-4o");
        assert_eq!(model_family("gpt-4o"), "gpt-4o");
        assert_eq!(model_family("gpt-4o-mini"), "gpt-4o-mini");
        assert_eq!(
            model_family("claude-sonnet-4-5-20250929"),
            "claude-sonnet-4-5"
        );
        assert_eq!(
            model_family("anthropic.claude-3-5-sonnet-20241022-v2:0"),
            "anthropic.claude-3-5-sonnet"
        );
        assert_ne!(
            model_family("claude-opus-4-5"),
            model_family("claude-sonnet-4-5")
        );
    }

    #[test]
    fn hosting_networks_are_recognised() {
        assert!(is_hosting("AMAZON-02"));
        assert!(is_hosting("DigitalOcean, LLC"));
        assert!(is_hosting("Hetzner Online GmbH"));
        assert!(!is_hosting("Deutsche Telekom AG"));
        assert!(!is_hosting(""));
    }

    #[test]
    fn a_network_learned_is_never_a_new_hosting_network() {
        let mut f = Familiar::default();
        let home = Usage {
            asn: 3320,
            as_org: "Deutsche Telekom AG".into(),
            ..Usage::default()
        };
        assert!(f.may_be_new_hosting(3320) && f.may_be_new_hosting(16509));
        f.learn(&home);
        assert!(!f.may_be_new_hosting(3320) && f.may_be_new_hosting(16509));
        f.learn(&Usage {
            asn: 16509,
            as_org: "AMAZON-02".into(),
            ..Usage::default()
        });
        assert!(f.used_hosting && !f.may_be_new_hosting(14061));
    }

    #[test]
    fn learning_makes_values_familiar_within_bounds() {
        let mut f = Familiar::default();
        let usage = Usage {
            country: "DE".into(),
            asn: 3320,
            model: "gpt-4o-2024-08-06".into(),
            ..Usage::default()
        };
        assert!(!f.has_country("DE") && !f.has_asn(3320) && !f.has_model("gpt-4o"));
        f.learn(&usage);
        assert!(f.has_country("DE") && f.has_asn(3320) && f.has_model("openai/gpt-4o"));
        assert!(!f.has_country("SG"));
        for i in 0..100 {
            f.learn(&Usage {
                asn: 10_000 + i,
                ..usage.clone()
            });
        }
        assert!(f.asns.len() <= MAX_ASNS);
        assert!(f.has_asn(99_999), "a saturated set knows everything");
    }
}

#[cfg(test)]
mod idle_tests {
    use super::*;

    #[test]
    fn hours_never_used_over_a_long_history_are_idle() {
        let mut f = Familiar::default();
        // Four days of office hours: 08:00-17:59 UTC, every minute.
        for day in 0..4u32 {
            for minute in (8 * 60)..(18 * 60) {
                f.note_active(day * 86_400 + minute * 60);
            }
        }
        assert!(f.idle_at(4 * 86_400 + 3 * 3600), "03:00 was never used");
        assert!(!f.idle_at(4 * 86_400 + 9 * 3600), "09:00 is a working hour");
        let young = Familiar::default();
        assert!(
            !young.idle_at(3 * 3600),
            "no history: nothing is known to be idle"
        );
    }
}
