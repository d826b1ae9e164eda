//! The part of OTLP's trace messages (opentelemetry-proto v1, `trace_service.proto`,
//! `trace.proto`, `common.proto`, `resource.proto`) that Tripline reads, in both encodings.
//!
//! Protobuf: `prost` messages declaring only the fields read. Every other field, span events
//! and links (where prompts and completions travel) among them, is skipped on the wire without
//! being decoded, and attribute values that are arrays or maps (tags 5 and 6 of `AnyValue`)
//! are skipped the same way: no Tripline field is a list.
//!
//! JSON (OTLP/JSON): the same messages with the protocol's JSON rules: lowerCamelCase names,
//! trace and span ids in hex, 64-bit integers as strings or numbers, enums as integers (names
//! accepted too). Converted into the protobuf types, so one mapping serves both.

use serde::de::{self, Deserializer};
use serde::Deserialize;

/// `ExportTraceServiceRequest`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ExportTraceServiceRequest {
    #[prost(message, repeated, tag = "1")]
    pub resource_spans: Vec<ResourceSpans>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct ResourceSpans {
    #[prost(message, optional, tag = "1")]
    pub resource: Option<Resource>,
    #[prost(message, repeated, tag = "2")]
    pub scope_spans: Vec<ScopeSpans>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Resource {
    #[prost(message, repeated, tag = "1")]
    pub attributes: Vec<KeyValue>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct ScopeSpans {
    #[prost(message, repeated, tag = "2")]
    pub spans: Vec<Span>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Span {
    #[prost(bytes = "vec", tag = "1")]
    pub trace_id: Vec<u8>,
    #[prost(bytes = "vec", tag = "2")]
    pub span_id: Vec<u8>,
    #[prost(string, tag = "5")]
    pub name: String,
    #[prost(fixed64, tag = "7")]
    pub start_time_unix_nano: u64,
    #[prost(fixed64, tag = "8")]
    pub end_time_unix_nano: u64,
    #[prost(message, repeated, tag = "9")]
    pub attributes: Vec<KeyValue>,
    #[prost(message, optional, tag = "15")]
    pub status: Option<Status>,
}

/// `Status`; the message is not read (it can quote the provider's error, which can quote the
/// prompt).
#[derive(Clone, PartialEq, prost::Message)]
pub struct Status {
    #[prost(int32, tag = "3")]
    pub code: i32,
}

/// `Status.code`: 2 is `STATUS_CODE_ERROR`.
pub const STATUS_CODE_ERROR: i32 = 2;

#[derive(Clone, PartialEq, prost::Message)]
pub struct KeyValue {
    #[prost(string, tag = "1")]
    pub key: String,
    #[prost(message, optional, tag = "2")]
    pub value: Option<AnyValue>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct AnyValue {
    #[prost(oneof = "Value", tags = "1, 2, 3, 4, 7")]
    pub value: Option<Value>,
}

/// A scalar attribute value (arrays and maps are skipped, see the module doc).
#[derive(Clone, PartialEq, prost::Oneof)]
pub enum Value {
    #[prost(string, tag = "1")]
    String(String),
    #[prost(bool, tag = "2")]
    Bool(bool),
    #[prost(int64, tag = "3")]
    Int(i64),
    #[prost(double, tag = "4")]
    Double(f64),
    #[prost(bytes = "vec", tag = "7")]
    Bytes(Vec<u8>),
}

/// `ExportTraceServiceResponse`, with its `partial_success` when spans were refused.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ExportTraceServiceResponse {
    #[prost(message, optional, tag = "1")]
    pub partial_success: Option<PartialSuccess>,
}

#[derive(Clone, PartialEq, prost::Message, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PartialSuccess {
    #[prost(int64, tag = "1")]
    pub rejected_spans: i64,
    #[prost(string, tag = "2")]
    pub error_message: String,
}

// ---- OTLP/JSON --------------------------------------------------------------------------------

/// Reads an OTLP/JSON `ExportTraceServiceRequest`.
pub fn from_json(body: &[u8]) -> Result<ExportTraceServiceRequest, serde_json::Error> {
    let request: JsonRequest = serde_json::from_slice(body)?;
    Ok(request.into())
}

#[derive(Deserialize, Default)]
#[serde(default, rename_all = "camelCase")]
struct JsonRequest {
    resource_spans: Vec<JsonResourceSpans>,
}

#[derive(Deserialize, Default)]
#[serde(default, rename_all = "camelCase")]
struct JsonResourceSpans {
    resource: Option<JsonResource>,
    scope_spans: Vec<JsonScopeSpans>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct JsonResource {
    attributes: Vec<JsonKeyValue>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct JsonScopeSpans {
    spans: Vec<JsonSpan>,
}

#[derive(Deserialize, Default)]
#[serde(default, rename_all = "camelCase")]
struct JsonSpan {
    #[serde(deserialize_with = "hex_id")]
    trace_id: Vec<u8>,
    #[serde(deserialize_with = "hex_id")]
    span_id: Vec<u8>,
    name: String,
    #[serde(deserialize_with = "int64")]
    start_time_unix_nano: i128,
    #[serde(deserialize_with = "int64")]
    end_time_unix_nano: i128,
    attributes: Vec<JsonKeyValue>,
    status: Option<JsonStatus>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct JsonStatus {
    #[serde(deserialize_with = "status_code")]
    code: i32,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct JsonKeyValue {
    key: String,
    value: Option<JsonAnyValue>,
}

/// `AnyValue`: one of these is set; arrays and maps are read as nothing.
#[derive(Deserialize, Default)]
#[serde(default, rename_all = "camelCase")]
struct JsonAnyValue {
    string_value: Option<String>,
    bool_value: Option<bool>,
    #[serde(deserialize_with = "opt_int64")]
    int_value: Option<i128>,
    double_value: Option<JsonDouble>,
    bytes_value: Option<String>,
}

/// A JSON number, or the strings protobuf's JSON mapping uses for the ones JSON lacks.
#[derive(Deserialize)]
#[serde(untagged)]
enum JsonDouble {
    Number(f64),
    Text(String),
}

impl From<JsonRequest> for ExportTraceServiceRequest {
    fn from(r: JsonRequest) -> Self {
        Self {
            resource_spans: r
                .resource_spans
                .into_iter()
                .map(|rs| ResourceSpans {
                    resource: rs.resource.map(|r| Resource {
                        attributes: attributes(r.attributes),
                    }),
                    scope_spans: rs
                        .scope_spans
                        .into_iter()
                        .map(|ss| ScopeSpans {
                            spans: ss.spans.into_iter().map(Span::from).collect(),
                        })
                        .collect(),
                })
                .collect(),
        }
    }
}

impl From<JsonSpan> for Span {
    fn from(s: JsonSpan) -> Self {
        // Out-of-range times become 0 (no time): the mapping refuses the span for it.
        let nanos = |n: i128| u64::try_from(n).unwrap_or(0);
        Span {
            trace_id: s.trace_id,
            span_id: s.span_id,
            name: s.name,
            start_time_unix_nano: nanos(s.start_time_unix_nano),
            end_time_unix_nano: nanos(s.end_time_unix_nano),
            attributes: attributes(s.attributes),
            status: s.status.map(|st| Status { code: st.code }),
        }
    }
}

fn attributes(list: Vec<JsonKeyValue>) -> Vec<KeyValue> {
    list.into_iter()
        .map(|kv| KeyValue {
            key: kv.key,
            value: kv.value.map(|v| AnyValue { value: v.scalar() }),
        })
        .collect()
}

impl JsonAnyValue {
    fn scalar(self) -> Option<Value> {
        use base64::Engine;
        if let Some(s) = self.string_value {
            return Some(Value::String(s));
        }
        if let Some(b) = self.bool_value {
            return Some(Value::Bool(b));
        }
        if let Some(i) = self.int_value {
            return i64::try_from(i).ok().map(Value::Int);
        }
        if let Some(d) = self.double_value {
            return match d {
                JsonDouble::Number(n) => Some(Value::Double(n)),
                JsonDouble::Text(t) => t.trim().parse().ok().map(Value::Double),
            };
        }
        self.bytes_value
            .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
            .map(Value::Bytes)
    }
}

/// A trace or span id: hex, as OTLP/JSON writes them.
fn hex_id<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
    let text = String::deserialize(d)?;
    let text = text.trim();
    if text.len() % 2 != 0 || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(de::Error::custom(format!(
            "trace and span ids are hex in OTLP/JSON, not {text:?}"
        )));
    }
    Ok((0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).expect("checked hex"))
        .collect())
}

/// A 64-bit integer, as a JSON number or (protobuf's JSON mapping) a decimal string.
fn int64<'de, D: Deserializer<'de>>(d: D) -> Result<i128, D::Error> {
    opt_int64(d).map(Option::unwrap_or_default)
}

fn opt_int64<'de, D: Deserializer<'de>>(d: D) -> Result<Option<i128>, D::Error> {
    struct Int;
    impl<'de> de::Visitor<'de> for Int {
        type Value = Option<i128>;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("an integer, or an integer in a string")
        }
        fn visit_u64<E: de::Error>(self, n: u64) -> Result<Self::Value, E> {
            Ok(Some(n.into()))
        }
        fn visit_i64<E: de::Error>(self, n: i64) -> Result<Self::Value, E> {
            Ok(Some(n.into()))
        }
        fn visit_str<E: de::Error>(self, t: &str) -> Result<Self::Value, E> {
            t.trim()
                .parse()
                .map(Some)
                .map_err(|_| E::custom(format!("{t:?} is not an integer")))
        }
        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
    }
    d.deserialize_any(Int)
}

/// `Status.code`: an integer, or its enum name.
fn status_code<'de, D: Deserializer<'de>>(d: D) -> Result<i32, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Code {
        Number(i32),
        Name(String),
    }
    Ok(match Code::deserialize(d)? {
        Code::Number(n) => n,
        Code::Name(name) => match name.as_str() {
            "STATUS_CODE_OK" => 1,
            "STATUS_CODE_ERROR" => STATUS_CODE_ERROR,
            _ => 0,
        },
    })
}
