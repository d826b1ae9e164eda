//! OpenTelemetry GenAI spans (OTLP/HTTP `POST /v1/traces`) → contract-v1 gateway requests.
//!
//! An inference span (`gen_ai.operation.name` `chat`, `text_completion`, `generate_content` or
//! `embeddings`; or a span naming both a GenAI provider and a model whose operation is not an
//! agent's or a tool's: instrumentations older than the attribute, and LiteLLM, which writes its
//! own call types such as `acompletion`) is one gateway request. Every other span (HTTP
//! servers, tools, agents, a gateway's own steps) is ignored and counted. Only the attributes below are read:
//! prompts and completions (span events, `gen_ai.input.messages`, `gen_ai.prompt`, …) never
//! leave the decoder, and the status message is not read at all. The README's "Connect
//! OpenTelemetry" lists the mapping field by field.

pub mod proto;

use tripline_core::config::OtlpConfig;
use tripline_core::event::{Reject, RejectReason};

use crate::draft::GatewayDraft;
use proto::{ExportTraceServiceRequest, KeyValue, Span, Value};

/// `gen_ai.operation.name` values that are a call to a model.
const INFERENCE_OPERATIONS: [&str; 4] =
    ["chat", "text_completion", "generate_content", "embeddings"];
/// Ones that are not, though such spans may name a provider and a model.
const OTHER_OPERATIONS: [&str; 3] = ["create_agent", "invoke_agent", "execute_tool"];

/// The two encodings of OTLP/HTTP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Protobuf,
    Json,
}

impl Format {
    /// From the request's `Content-Type`; `None` for anything else (answered 415).
    pub fn from_content_type(content_type: Option<&str>) -> Option<Format> {
        let essence = content_type?.split(';').next()?.trim().to_ascii_lowercase();
        match essence.as_str() {
            "application/x-protobuf" | "application/protobuf" => Some(Format::Protobuf),
            "application/json" => Some(Format::Json),
            _ => None,
        }
    }

    pub fn content_type(self) -> &'static str {
        match self {
            Format::Protobuf => "application/x-protobuf",
            Format::Json => "application/json",
        }
    }
}

/// Decodes a whole request body; the error says why it is not an `ExportTraceServiceRequest`.
pub fn decode(format: Format, body: &[u8]) -> Result<ExportTraceServiceRequest, String> {
    match format {
        Format::Protobuf => <ExportTraceServiceRequest as prost::Message>::decode(body)
            .map_err(|err| format!("not an OTLP ExportTraceServiceRequest in protobuf: {err}")),
        Format::Json => proto::from_json(body)
            .map_err(|err| format!("not an OTLP ExportTraceServiceRequest in JSON: {err}")),
    }
}

/// What became of one span.
#[derive(Debug)]
pub enum Mapped {
    /// An inference call: a contract-v1 gateway event, not redacted nor validated yet.
    Inference(Vec<u8>),
    /// Not a call to a model.
    Ignored,
    /// An inference call that cannot be an event (no time, no key): dead-lettered.
    Refused(Reject),
}

/// Every span of the request, in order, with its resource's attributes.
pub fn spans(request: &ExportTraceServiceRequest) -> impl Iterator<Item = (&[KeyValue], &Span)> {
    request.resource_spans.iter().flat_map(|rs| {
        let resource = rs.resource.as_ref().map_or(&[][..], |r| &r.attributes[..]);
        rs.scope_spans
            .iter()
            .flat_map(move |ss| ss.spans.iter().map(move |span| (resource, span)))
    })
}

/// Maps one span (see the module doc).
pub fn map(resource: &[KeyValue], span: &Span, config: &OtlpConfig) -> Mapped {
    let attrs = Attributes { span, resource };
    let provider = attrs
        .text("gen_ai.provider.name")
        .or_else(|| attrs.text("gen_ai.system"));
    let requested_model = attrs.text("gen_ai.request.model");
    let model = requested_model
        .clone()
        .or_else(|| attrs.text("gen_ai.response.model"));
    let inference = match attrs.text("gen_ai.operation.name") {
        Some(op) if INFERENCE_OPERATIONS.contains(&op.as_str()) => true,
        Some(op) if OTHER_OPERATIONS.contains(&op.as_str()) => false,
        _ => provider.is_some() && model.is_some(),
    };
    if !inference {
        return Mapped::Ignored;
    }
    if span.trace_id.is_empty() || span.span_id.is_empty() {
        return Mapped::Refused(Reject::new(
            RejectReason::MissingField,
            "span has no traceId or spanId",
        ));
    }
    if span.start_time_unix_nano == 0 {
        return Mapped::Refused(Reject::new(
            RejectReason::MissingField,
            "span has no startTimeUnixNano",
        ));
    }
    let Some(key) = attrs.first_text(&config.key_attributes) else {
        return Mapped::Refused(Reject::new(
            RejectReason::MissingField,
            format!(
                "no key: none of collector.otlp.key_attributes ({}) is on the span or its resource",
                config.key_attributes.join(", ")
            ),
        ));
    };

    let (status, error_type) = outcome(&attrs, span);
    let tokens = |current: &str, older: &str| {
        attrs
            .int(current)
            .or_else(|| attrs.int(older))
            .filter(|n| *n >= 0)
    };
    let ms = |nanos: u64| i64::try_from(nanos / 1_000_000).unwrap_or(i64::MAX);
    let draft = GatewayDraft {
        event_id: Some(format!(
            "otel-{}-{}",
            hex(&span.trace_id),
            hex(&span.span_id)
        )),
        ts: Some(ms(span.start_time_unix_nano)),
        api_key: Some(key),
        model,
        status: Some(status),
        project: attrs.first_text(&config.project_attributes),
        team: attrs.first_text(&config.team_attributes),
        user: attrs.first_text(&config.user_attributes),
        provider,
        error_type,
        prompt_tokens: tokens("gen_ai.usage.input_tokens", "gen_ai.usage.prompt_tokens"),
        completion_tokens: tokens(
            "gen_ai.usage.output_tokens",
            "gen_ai.usage.completion_tokens",
        ),
        cost_usd: config
            .cost_attributes
            .iter()
            .find_map(|name| attrs.number(name))
            .filter(|c| c.is_finite() && *c >= 0.0),
        latency_ms: (span.end_time_unix_nano >= span.start_time_unix_nano)
            .then(|| ms(span.end_time_unix_nano - span.start_time_unix_nano)),
        // `client.address` may be a host name: only an IP address is the contract's client_ip.
        client_ip: attrs
            .first_text(&config.client_address_attributes)
            .filter(|a| a.parse::<std::net::IpAddr>().is_ok()),
        user_agent: attrs.first_text(&config.user_agent_attributes),
        request_id: attrs.text("gen_ai.response.id"),
        ..GatewayDraft::default()
    };
    Mapped::Inference(serde_json::to_vec(&draft).expect("plain struct serializes"))
}

/// The HTTP status and error type: `http.response.status_code` or a numeric `error.code` when
/// present, else what `error.type` (an exception class, as the Python instrumentations set it)
/// says, else 500 for a span whose status is an error and 200 for one that is not.
fn outcome(attrs: &Attributes<'_>, span: &Span) -> (i64, Option<String>) {
    let stated = ["http.response.status_code", "error.code"]
        .iter()
        .find_map(|name| attrs.int(name))
        .filter(|code| (100..=599).contains(code));
    // `openai.RateLimitError` and `RateLimitError` alike; `_OTHER` says nothing.
    let class = attrs
        .text("error.type")
        .map(|t| t.rsplit('.').next().unwrap_or(&t).to_owned())
        .filter(|c| !c.is_empty() && c != "_OTHER");
    let failed = span
        .status
        .as_ref()
        .is_some_and(|s| s.code == proto::STATUS_CODE_ERROR)
        || class.is_some()
        || stated.is_some_and(|code| code >= 400);
    if !failed {
        return (stated.unwrap_or(200), None);
    }
    let status = stated
        .or_else(|| class.as_deref().and_then(class_status))
        .unwrap_or(500);
    let status = if status < 400 { 500 } else { status };
    (
        status,
        Some(crate::litellm::error_type(class.as_deref(), status)),
    )
}

/// The HTTP status behind the OpenAI and Anthropic SDKs' exception classes.
fn class_status(class: &str) -> Option<i64> {
    Some(match class {
        "BadRequestError" => 400,
        "AuthenticationError" => 401,
        "PermissionDeniedError" => 403,
        "NotFoundError" => 404,
        "ConflictError" => 409,
        "UnprocessableEntityError" => 422,
        "RateLimitError" => 429,
        "InternalServerError" => 500,
        "APIConnectionError" => 502,
        "ServiceUnavailableError" => 503,
        "APITimeoutError" | "Timeout" => 504,
        "OverloadedError" => 529,
        _ => return None,
    })
}

/// A span's attributes over its resource's: the span's win.
struct Attributes<'a> {
    span: &'a Span,
    resource: &'a [KeyValue],
}

impl<'a> Attributes<'a> {
    fn value(&self, name: &str) -> Option<&'a Value> {
        fn find<'v>(list: &'v [KeyValue], name: &str) -> Option<&'v Value> {
            list.iter()
                .rev()
                .find(|kv| kv.key == name)
                .and_then(|kv| kv.value.as_ref()?.value.as_ref())
        }
        find(&self.span.attributes, name).or_else(|| find(self.resource, name))
    }

    /// A string, number or boolean as text; blank strings are absent.
    fn text(&self, name: &str) -> Option<String> {
        match self.value(name)? {
            Value::String(s) => Some(s.trim().to_owned()).filter(|s| !s.is_empty()),
            Value::Int(n) => Some(n.to_string()),
            Value::Double(d) => Some(d.to_string()),
            Value::Bool(b) => Some(b.to_string()),
            Value::Bytes(_) => None,
        }
    }

    fn first_text(&self, names: &[String]) -> Option<String> {
        names.iter().find_map(|name| self.text(name))
    }

    fn int(&self, name: &str) -> Option<i64> {
        match self.value(name)? {
            Value::Int(n) => Some(*n),
            Value::Double(d) if d.fract() == 0.0 && d.abs() < 9e15 => Some(*d as i64),
            Value::String(s) => s.trim().parse().ok(),
            _ => None,
        }
    }

    fn number(&self, name: &str) -> Option<f64> {
        match self.value(name)? {
            Value::Int(n) => Some(*n as f64),
            Value::Double(d) => Some(*d),
            Value::String(s) => s.trim().parse().ok(),
            _ => None,
        }
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests;
