//! Model prices (LiteLLM's table, compacted into `data/prices/prices.json`), used to cost events
//! that arrive without `cost_usd`.

use std::collections::HashMap;

use serde::Deserialize;

/// The compacted table shipped with Tripline (MIT, see `data/prices/LICENSE-litellm-MIT.txt`).
pub const BUILTIN_PRICES_JSON: &str = include_str!("../../data/prices/prices.json");

/// USD per token for one model.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
pub struct ModelPrice {
    #[serde(default)]
    pub input: f64,
    #[serde(default)]
    pub output: f64,
}

impl ModelPrice {
    pub fn cost_usd(&self, prompt_tokens: u32, completion_tokens: u32) -> f64 {
        self.input * f64::from(prompt_tokens) + self.output * f64::from(completion_tokens)
    }
}

/// Price lookups by model name, with or without a provider prefix.
#[derive(Debug, Clone, Default)]
pub struct PriceTable {
    models: HashMap<String, ModelPrice>,
}

#[derive(Deserialize)]
struct PriceFile {
    models: HashMap<String, ModelPrice>,
}

/// The price file could not be read as a price table.
#[derive(Debug, thiserror::Error)]
#[error("price table is not valid: {0}")]
pub struct PriceTableError(#[from] serde_json::Error);

impl PriceTable {
    pub fn builtin() -> Self {
        Self::from_json(BUILTIN_PRICES_JSON).expect("the built-in price table parses")
    }

    pub fn from_json(json: &str) -> Result<Self, PriceTableError> {
        let file: PriceFile = serde_json::from_str(json)?;
        Ok(Self {
            models: file.models,
        })
    }

    pub fn len(&self) -> usize {
        self.models.len()
    }

    pub fn is_empty(&self) -> bool {
        self.models.is_empty()
    }

    /// Resolves `model` as sent (`gpt-4o`), provider-prefixed (`openai/gpt-4o` or provider
    /// `openai` + model `gpt-4o`), or with a prefix the table does not use (`azure/gpt-4o`).
    pub fn lookup(&self, provider: &str, model: &str) -> Option<ModelPrice> {
        if let Some(price) = self.models.get(model) {
            return Some(*price);
        }
        if !provider.is_empty() {
            if let Some(price) = self.models.get(&format!("{provider}/{model}")) {
                return Some(*price);
            }
        }
        let (_, bare) = model.split_once('/')?;
        self.models.get(bare).copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_table_prices_common_models() {
        let table = PriceTable::builtin();
        assert!(table.len() > 1000, "only {} models", table.len());
        let gpt4o = table.lookup("openai", "gpt-4o").expect("gpt-4o priced");
        assert!(gpt4o.input > 0.0 && gpt4o.output > gpt4o.input);
        assert_eq!(table.lookup("", "openai/gpt-4o"), Some(gpt4o));
        assert_eq!(table.lookup("azure", "gpt-4o"), Some(gpt4o));
        assert!(table.lookup("", "no-such-model-xyz").is_none());
    }

    #[test]
    fn provider_prefixed_entries_resolve() {
        let table = PriceTable::from_json(
            r#"{"models":{"groq/llama3-8b":{"input":0.1,"output":0.2},"bare":{"input":1,"output":2}}}"#,
        )
        .unwrap();
        assert_eq!(table.lookup("groq", "llama3-8b").unwrap().input, 0.1);
        assert_eq!(table.lookup("x", "y/bare").unwrap().output, 2.0);
        let price = table.lookup("", "bare").unwrap();
        assert_eq!(price.cost_usd(10, 5), 20.0);
    }
}
