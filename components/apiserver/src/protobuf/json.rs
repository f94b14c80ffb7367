//! A decoded Kubernetes message to its JSON form, as Go's `encoding/json` would write the same object.

use base64::Engine as _;
use prost_reflect::{DynamicMessage, MapKey, ReflectMessage as _, Value as PbValue};
use serde_json::{Map, Number, Value};
use time::OffsetDateTime;
use time::macros::format_description;

use super::ProtobufError;

/// Marks a field whose message Go inlines into its parent (`json:",inline"`); set by the descriptor generator.
const INLINE: &str = ",inline";

const TIME: &str = "k8s.io.apimachinery.pkg.apis.meta.v1.Time";
const MICRO_TIME: &str = "k8s.io.apimachinery.pkg.apis.meta.v1.MicroTime";
const DURATION: &str = "k8s.io.apimachinery.pkg.apis.meta.v1.Duration";
const FIELDS_V1: &str = "k8s.io.apimachinery.pkg.apis.meta.v1.FieldsV1";
const QUANTITY: &str = "k8s.io.apimachinery.pkg.api.resource.Quantity";
const INT_OR_STRING: &str = "k8s.io.apimachinery.pkg.util.intstr.IntOrString";
const RAW_EXTENSION: &str = "k8s.io.apimachinery.pkg.runtime.RawExtension";

/// Go's zero `time.Time` (January 1, year 1): gogo-protobuf writes it for every unset non-pointer Time, and Go's
/// JSON writes `null` for it.
const GO_ZERO_TIME_SECONDS: i64 = -62_135_596_800;

/// The message's JSON, or `Null` for a value Go leaves out (a zero Time, an empty RawExtension).
pub(super) fn message(msg: &DynamicMessage) -> Result<Value, ProtobufError> {
    let descriptor = msg.descriptor();
    match descriptor.full_name() {
        TIME => timestamp(msg, false),
        MICRO_TIME => timestamp(msg, true),
        DURATION => Ok(Value::String(go_duration(int(msg, "duration")))),
        QUANTITY => Ok(Value::String(text(msg, "string"))),
        INT_OR_STRING => Ok(match int(msg, "type") {
            0 => Value::from(int(msg, "int_val")),
            _ => Value::String(text(msg, "str_val")),
        }),
        RAW_EXTENSION | FIELDS_V1 => embedded_json(msg, descriptor.full_name()),
        _ => {
            let mut object = Map::new();
            for (field, value) in msg.fields() {
                let json = value_json(value)?;
                if json.is_null() {
                    continue;
                }
                if field.json_name() == INLINE {
                    if let Value::Object(inner) = json {
                        object.extend(inner);
                    }
                    continue;
                }
                // gogo-protobuf writes every non-pointer string, and Go's `omitempty` drops the empty ones; an
                // empty singular string means "not set" in Kubernetes' API conventions.
                if !field.is_list() && !field.is_map() && json.as_str() == Some("") {
                    continue;
                }
                object.insert(field.json_name().to_string(), json);
            }
            Ok(Value::Object(object))
        }
    }
}

fn value_json(value: &PbValue) -> Result<Value, ProtobufError> {
    Ok(match value {
        PbValue::Bool(b) => Value::Bool(*b),
        PbValue::I32(n) => Value::from(*n),
        PbValue::I64(n) => Value::from(*n),
        PbValue::U32(n) => Value::from(*n),
        PbValue::U64(n) => Value::from(*n),
        PbValue::EnumNumber(n) => Value::from(*n),
        PbValue::F32(f) => float(f64::from(*f))?,
        PbValue::F64(f) => float(*f)?,
        PbValue::String(s) => Value::String(s.clone()),
        PbValue::Bytes(b) => Value::String(base64::engine::general_purpose::STANDARD.encode(b)),
        PbValue::Message(m) => message(m)?,
        PbValue::List(items) => Value::Array(items.iter().map(value_json).collect::<Result<_, _>>()?),
        PbValue::Map(entries) => {
            let mut object = Map::new();
            for (key, value) in entries {
                let key = match key {
                    MapKey::String(s) => s.clone(),
                    MapKey::Bool(b) => b.to_string(),
                    MapKey::I32(n) => n.to_string(),
                    MapKey::I64(n) => n.to_string(),
                    MapKey::U32(n) => n.to_string(),
                    MapKey::U64(n) => n.to_string(),
                };
                object.insert(key, value_json(value)?);
            }
            Value::Object(object)
        }
    })
}

fn float(f: f64) -> Result<Value, ProtobufError> {
    Number::from_f64(f)
        .map(Value::Number)
        .ok_or_else(|| ProtobufError::BadValue {
            field: "a floating-point field".into(),
            what: format!("{f}, which JSON cannot represent"),
        })
}

fn int(msg: &DynamicMessage, name: &str) -> i64 {
    match msg.get_field_by_name(name).as_deref() {
        Some(PbValue::I64(n)) => *n,
        Some(PbValue::I32(n)) => i64::from(*n),
        _ => 0,
    }
}

fn text(msg: &DynamicMessage, name: &str) -> String {
    match msg.get_field_by_name(name).as_deref() {
        Some(PbValue::String(s)) => s.clone(),
        _ => String::new(),
    }
}

/// Time is RFC 3339 to the second; MicroTime to the microsecond. Both are UTC on the wire.
fn timestamp(msg: &DynamicMessage, micro: bool) -> Result<Value, ProtobufError> {
    let seconds = int(msg, "seconds");
    let nanos = int(msg, "nanos");
    // An empty Timestamp message is what Go's `metav1.Time.Marshal` writes for a zero Time (it returns no bytes).
    if (seconds == GO_ZERO_TIME_SECONDS || seconds == 0) && nanos == 0 {
        return Ok(Value::Null);
    }
    let bad = |what: String| ProtobufError::BadValue {
        field: msg.descriptor().full_name().into(),
        what,
    };
    let at = OffsetDateTime::from_unix_timestamp(seconds)
        .map_err(|_| bad(format!("{seconds} seconds, out of range")))?
        + time::Duration::nanoseconds(nanos);
    let formatted = if micro {
        at.format(format_description!(
            "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:6]Z"
        ))
    } else {
        at.format(format_description!(
            "[year]-[month]-[day]T[hour]:[minute]:[second]Z"
        ))
    };
    formatted.map(Value::String).map_err(|e| bad(e.to_string()))
}

/// RawExtension and FieldsV1 carry JSON in their `raw` bytes.
fn embedded_json(msg: &DynamicMessage, type_name: &str) -> Result<Value, ProtobufError> {
    let raw = match msg.get_field_by_name("raw").as_deref() {
        Some(PbValue::Bytes(b)) => b.clone(),
        _ => return Ok(Value::Null),
    };
    if raw.is_empty() {
        return Ok(Value::Null);
    }
    serde_json::from_slice(&raw).map_err(|e| ProtobufError::BadValue {
        field: type_name.into(),
        what: format!("bytes that are not JSON ({e})"),
    })
}

/// Go's `time.Duration.String()`: `1h2m3.5s`, `150ms`, `0s`.
pub(super) fn go_duration(nanos: i64) -> String {
    if nanos == 0 {
        return "0s".into();
    }
    let sign = if nanos < 0 { "-" } else { "" };
    let n = nanos.unsigned_abs();
    let decimal = |value: u64, digits: u32| {
        let unit = 10u64.pow(digits);
        let (whole, frac) = (value / unit, value % unit);
        if frac == 0 {
            whole.to_string()
        } else {
            let frac = format!("{frac:0width$}", width = digits as usize);
            format!("{whole}.{}", frac.trim_end_matches('0'))
        }
    };
    if n < 1_000 {
        return format!("{sign}{n}ns");
    }
    if n < 1_000_000 {
        return format!("{sign}{}µs", decimal(n, 3));
    }
    if n < 1_000_000_000 {
        return format!("{sign}{}ms", decimal(n, 6));
    }
    let total_seconds = n / 1_000_000_000;
    let seconds = decimal((total_seconds % 60) * 1_000_000_000 + n % 1_000_000_000, 9);
    let minutes = (total_seconds / 60) % 60;
    let hours = total_seconds / 3600;
    if hours > 0 {
        format!("{sign}{hours}h{minutes}m{seconds}s")
    } else if minutes > 0 {
        format!("{sign}{minutes}m{seconds}s")
    } else {
        format!("{sign}{seconds}s")
    }
}
