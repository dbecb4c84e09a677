//! Descriptor-driven transcoding between the text tree of [`super::text`] and protobuf messages,
//! so one parser serves every message type (NetParameter, SolverParameter, ...), plus the text
//! writer (mimicking C++ protobuf's `TextFormat::PrintToString`, which Caffe reads back).

use std::fmt::Write as _;
use std::path::Path;

use anyhow::{Context, anyhow};
use prost_reflect::{DynamicMessage, FieldDescriptor, Kind, MessageDescriptor, Value as PValue};

use super::text::{self, Field, Scalar, Span, TextError, Value};

/// Parse text-format `src` as a message of type `desc`. Errors read
/// `"<file_label>:<line>:<col>: <message>"`, e.g.
/// `train_val.prototxt:12:5: message caffe.LayerParameter has no field named "insanity_param"`.
pub fn text_to_dynamic(
    src: &str,
    file_label: &str,
    desc: &MessageDescriptor,
) -> anyhow::Result<DynamicMessage> {
    text_to_dynamic_raw(src, desc).map_err(|e| anyhow!("{file_label}:{e}"))
}

/// Like [`text_to_dynamic`] but returns the positioned error itself.
pub fn text_to_dynamic_raw(
    src: &str,
    desc: &MessageDescriptor,
) -> Result<DynamicMessage, TextError> {
    let fields = text::parse(src)?;
    fields_to_message(desc, &fields)
}

/// Parse text-format `src` as the message `full_name` of proto/caffe.proto (e.g.
/// `"caffe.NetParameter"`) and decode it into the generated type `M`.
pub fn parse_text<M: prost::Message + Default>(
    src: &str,
    file_label: &str,
    full_name: &str,
) -> anyhow::Result<M> {
    let desc = crate::proto::descriptor_pool()
        .get_message_by_name(full_name)
        .ok_or_else(|| anyhow!("unknown message type {full_name}"))?;
    let dynamic = text_to_dynamic(src, file_label, &desc)?;
    let bytes = prost::Message::encode_to_vec(&dynamic);
    M::decode(bytes.as_slice()).with_context(|| format!("{file_label}: decoding as {full_name}"))
}

/// Read and parse a text-format file (see [`parse_text`]); errors name the path.
pub fn read_text_file<M: prost::Message + Default>(
    path: &Path,
    full_name: &str,
) -> anyhow::Result<M> {
    let label = path.display().to_string();
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {label}"))?;
    let src = match String::from_utf8(bytes) {
        Ok(s) => s,
        Err(e) => {
            let valid = &e.as_bytes()[..e.utf8_error().valid_up_to()];
            let line = valid.iter().filter(|&&b| b == b'\n').count() + 1;
            anyhow::bail!("{label}:{line}: the file is not valid UTF-8 text");
        }
    };
    parse_text(&src, &label, full_name)
}

// ---------------------------------------------------------------------------------------------
// text tree -> DynamicMessage

fn err(span: Span, message: impl Into<String>) -> TextError {
    TextError::new(span, message)
}

fn fields_to_message(
    desc: &MessageDescriptor,
    fields: &[Field],
) -> Result<DynamicMessage, TextError> {
    let mut msg = DynamicMessage::new(desc.clone());
    // Numbers of the singular fields seen so far (and where), to reject duplicates.
    let mut seen: Vec<(u32, Span)> = Vec::new();
    for f in fields {
        let Some(fd) = desc.get_field_by_name(&f.name) else {
            return Err(err(
                f.name_span,
                format!(
                    "message {} has no field named \"{}\"",
                    desc.full_name(),
                    f.name
                ),
            ));
        };
        if fd.is_map() {
            return Err(err(
                f.name_span,
                format!(
                    "map field \"{}\" is not supported in text format here",
                    f.name
                ),
            ));
        }
        if !fd.is_list() {
            if seen.iter().any(|&(n, _)| n == fd.number()) {
                return Err(err(
                    f.name_span,
                    format!(
                        "non-repeated field \"{}\" is specified multiple times",
                        f.name
                    ),
                ));
            }
            if let Some(oneof) = fd.containing_oneof()
                && let Some(other) = oneof.fields().find(|o| {
                    o.number() != fd.number() && seen.iter().any(|&(n, _)| n == o.number())
                })
            {
                return Err(err(
                    f.name_span,
                    format!(
                        "field \"{}\" is specified along with field \"{}\", another member of oneof \"{}\"",
                        f.name,
                        other.name(),
                        oneof.name()
                    ),
                ));
            }
            seen.push((fd.number(), f.name_span));
        }
        let kind = fd.kind();
        match (&kind, &f.value) {
            (Kind::Message(md), Value::Message(sub, _)) => {
                let m = fields_to_message(md, sub)?;
                store(&mut msg, &fd, PValue::Message(m), f.name_span)?;
            }
            (Kind::Message(_), Value::Scalar(_, sp)) => {
                return Err(err(
                    *sp,
                    format!("field \"{}\" is a message; expected \"{{\"", f.name),
                ));
            }
            (k, Value::Message(_, sp)) => {
                return Err(err(
                    *sp,
                    format!(
                        "field \"{}\" is a {} field, not a message; expected \":\" and a value",
                        f.name,
                        kind_name(k)
                    ),
                ));
            }
            (k, Value::Scalar(s, sp)) => {
                if !f.colon {
                    return Err(err(
                        *sp,
                        format!("expected \":\" after field name \"{}\"", f.name),
                    ));
                }
                let v = convert(&fd, k, s, *sp)?;
                store(&mut msg, &fd, v, *sp)?;
            }
            (k, Value::List(items, sp)) => {
                if !fd.is_list() {
                    return Err(err(
                        *sp,
                        format!(
                            "field \"{}\" is not repeated; a list \"[...]\" is not allowed",
                            f.name
                        ),
                    ));
                }
                let is_msg = matches!(k, Kind::Message(_));
                if !is_msg && !f.colon {
                    return Err(err(
                        *sp,
                        format!("expected \":\" after field name \"{}\"", f.name),
                    ));
                }
                for item in items {
                    let v = match (k, item) {
                        (Kind::Message(md), Value::Message(sub, _)) => {
                            PValue::Message(fields_to_message(md, sub)?)
                        }
                        (Kind::Message(_), other) => {
                            return Err(err(
                                other.span(),
                                format!("field \"{}\" is a message; expected \"{{\"", f.name),
                            ));
                        }
                        (k, Value::Scalar(s, isp)) => convert(&fd, k, s, *isp)?,
                        (k, other) => {
                            return Err(err(
                                other.span(),
                                format!(
                                    "field \"{}\" is a {} field, not a message; expected a value",
                                    f.name,
                                    kind_name(k)
                                ),
                            ));
                        }
                    };
                    store(&mut msg, &fd, v, item.span())?;
                }
            }
        }
    }
    Ok(msg)
}

/// Set a singular field or append to a repeated one.
fn store(
    msg: &mut DynamicMessage,
    fd: &FieldDescriptor,
    v: PValue,
    span: Span,
) -> Result<(), TextError> {
    if fd.is_list() {
        match msg.get_field_mut(fd) {
            PValue::List(items) => {
                items.push(v);
                Ok(())
            }
            _ => Err(err(
                span,
                format!("internal error: field \"{}\" is not a list", fd.name()),
            )),
        }
    } else {
        msg.try_set_field(fd, v).map_err(|e| {
            err(
                span,
                format!("internal error setting field \"{}\": {e}", fd.name()),
            )
        })
    }
}

/// The protobuf name of a field type, for messages.
fn kind_name(k: &Kind) -> String {
    match k {
        Kind::Double => "double".into(),
        Kind::Float => "float".into(),
        Kind::Int32 => "int32".into(),
        Kind::Int64 => "int64".into(),
        Kind::Uint32 => "uint32".into(),
        Kind::Uint64 => "uint64".into(),
        Kind::Sint32 => "sint32".into(),
        Kind::Sint64 => "sint64".into(),
        Kind::Fixed32 => "fixed32".into(),
        Kind::Fixed64 => "fixed64".into(),
        Kind::Sfixed32 => "sfixed32".into(),
        Kind::Sfixed64 => "sfixed64".into(),
        Kind::Bool => "bool".into(),
        Kind::String => "string".into(),
        Kind::Bytes => "bytes".into(),
        Kind::Message(m) => format!("message {}", m.full_name()),
        Kind::Enum(e) => format!("enum {}", e.full_name()),
    }
}

fn integer(
    fd: &FieldDescriptor,
    k: &Kind,
    s: &Scalar,
    sp: Span,
    min: i128,
    max: i128,
) -> Result<i128, TextError> {
    match s {
        Scalar::Int { raw, value } => {
            if (min..=max).contains(value) {
                Ok(*value)
            } else {
                Err(err(
                    sp,
                    format!(
                        "value {raw} out of range for {} field \"{}\"",
                        kind_name(k),
                        fd.name()
                    ),
                ))
            }
        }
        other => Err(err(
            sp,
            format!(
                "expected an integer for field \"{}\", got {}",
                fd.name(),
                other.describe()
            ),
        )),
    }
}

fn float(fd: &FieldDescriptor, s: &Scalar, sp: Span) -> Result<f64, TextError> {
    match s {
        Scalar::Float { value, .. } => Ok(*value),
        Scalar::Int { raw, value } => {
            // Like C++ protobuf, float fields take decimal integers only (no hex or octal); the
            // f64 parser keeps large literals exact up to rounding.
            let digits = raw.trim_start_matches('-');
            let decimal = digits == "0" || !digits.starts_with('0');
            match raw.parse::<f64>() {
                Ok(v) if decimal => Ok(v),
                _ if decimal => Ok(*value as f64),
                _ => Err(err(
                    sp,
                    format!(
                        "expected a decimal number for field \"{}\", got \"{raw}\"",
                        fd.name()
                    ),
                )),
            }
        }
        Scalar::Ident(id) => text::special_float(id).ok_or_else(|| {
            err(
                sp,
                format!(
                    "expected a number for field \"{}\", got \"{id}\"",
                    fd.name()
                ),
            )
        }),
        Scalar::Str(_) => Err(err(
            sp,
            format!(
                "expected a number for field \"{}\", got a string",
                fd.name()
            ),
        )),
    }
}

fn convert(fd: &FieldDescriptor, k: &Kind, s: &Scalar, sp: Span) -> Result<PValue, TextError> {
    const I32: (i128, i128) = (i32::MIN as i128, i32::MAX as i128);
    const I64: (i128, i128) = (i64::MIN as i128, i64::MAX as i128);
    const U32: (i128, i128) = (0, u32::MAX as i128);
    const U64: (i128, i128) = (0, u64::MAX as i128);
    Ok(match k {
        Kind::Int32 | Kind::Sint32 | Kind::Sfixed32 => {
            PValue::I32(integer(fd, k, s, sp, I32.0, I32.1)? as i32)
        }
        Kind::Int64 | Kind::Sint64 | Kind::Sfixed64 => {
            PValue::I64(integer(fd, k, s, sp, I64.0, I64.1)? as i64)
        }
        Kind::Uint32 | Kind::Fixed32 => PValue::U32(integer(fd, k, s, sp, U32.0, U32.1)? as u32),
        Kind::Uint64 | Kind::Fixed64 => PValue::U64(integer(fd, k, s, sp, U64.0, U64.1)? as u64),
        Kind::Float => PValue::F32(float(fd, s, sp)? as f32),
        Kind::Double => PValue::F64(float(fd, s, sp)?),
        Kind::Bool => {
            let b = match s {
                Scalar::Ident(id) => match id.as_str() {
                    "true" | "True" | "t" => Some(true),
                    "false" | "False" | "f" => Some(false),
                    _ => None,
                },
                Scalar::Int { value: 1, .. } => Some(true),
                Scalar::Int { value: 0, .. } => Some(false),
                _ => None,
            };
            match b {
                Some(b) => PValue::Bool(b),
                None => {
                    return Err(err(
                        sp,
                        format!(
                            "expected \"true\" or \"false\" for field \"{}\", got {}",
                            fd.name(),
                            s.describe()
                        ),
                    ));
                }
            }
        }
        Kind::String => match s {
            Scalar::Str(bytes) => match String::from_utf8(bytes.clone()) {
                Ok(v) => PValue::String(v),
                Err(_) => {
                    return Err(err(
                        sp,
                        format!("string field \"{}\" is not valid UTF-8", fd.name()),
                    ));
                }
            },
            other => {
                return Err(err(
                    sp,
                    format!(
                        "expected a string for field \"{}\", got {}",
                        fd.name(),
                        other.describe()
                    ),
                ));
            }
        },
        Kind::Bytes => match s {
            Scalar::Str(bytes) => PValue::Bytes(prost::bytes::Bytes::from(bytes.clone())),
            other => {
                return Err(err(
                    sp,
                    format!(
                        "expected a string for field \"{}\", got {}",
                        fd.name(),
                        other.describe()
                    ),
                ));
            }
        },
        Kind::Enum(ed) => {
            let expected = || {
                ed.values()
                    .map(|v| v.name().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            match s {
                Scalar::Ident(id) => match ed.get_value_by_name(id) {
                    Some(v) => PValue::EnumNumber(v.number()),
                    None => {
                        return Err(err(
                            sp,
                            format!(
                                "unknown value \"{id}\" for enum {} (expected {})",
                                ed.full_name(),
                                expected()
                            ),
                        ));
                    }
                },
                Scalar::Int { raw, value } => {
                    match i32::try_from(*value).ok().and_then(|n| ed.get_value(n)) {
                        Some(v) => PValue::EnumNumber(v.number()),
                        None => {
                            return Err(err(
                                sp,
                                format!(
                                    "unknown number {raw} for enum {} (expected {})",
                                    ed.full_name(),
                                    expected()
                                ),
                            ));
                        }
                    }
                }
                other => {
                    return Err(err(
                        sp,
                        format!(
                            "expected a value of enum {} for field \"{}\", got {}",
                            ed.full_name(),
                            fd.name(),
                            other.describe()
                        ),
                    ));
                }
            }
        }
        Kind::Message(_) => {
            return Err(err(
                sp,
                format!("field \"{}\" is a message; expected \"{{\"", fd.name()),
            ));
        }
    })
}

// ---------------------------------------------------------------------------------------------
// DynamicMessage -> text

/// Print a message in protobuf text format the way C++ `TextFormat::PrintToString` lays it out:
/// set fields only, in field-number order, two-space indentation, `name: value` / `name {` ... `}`,
/// enums by name, strings C-escaped in double quotes, floats in their shortest round-trip form.
pub fn dynamic_to_text(msg: &DynamicMessage) -> String {
    let mut out = String::new();
    write_message(&mut out, msg, 0);
    out
}

/// Print a generated message as text; `full_name` is its type in proto/caffe.proto.
///
/// # Panics
/// When `full_name` is not a message of proto/caffe.proto or `M` is not that message's type
/// (programming errors, not input errors).
pub fn to_text<M: prost::Message>(msg: &M, full_name: &str) -> String {
    let desc = crate::proto::descriptor_pool()
        .get_message_by_name(full_name)
        .unwrap_or_else(|| panic!("{full_name} is not a message of proto/caffe.proto"));
    let dynamic = DynamicMessage::decode(desc, msg.encode_to_vec().as_slice())
        .unwrap_or_else(|e| panic!("the message does not decode as {full_name}: {e}"));
    dynamic_to_text(&dynamic)
}

fn write_message(out: &mut String, msg: &DynamicMessage, indent: usize) {
    for (fd, value) in msg.fields() {
        match value {
            PValue::List(items) => {
                for item in items {
                    write_field(out, &fd, item, indent);
                }
            }
            PValue::Map(map) => {
                // Printed as repeated entry messages { key: .. value: .. }.
                let Kind::Message(entry) = fd.kind() else {
                    continue;
                };
                let mut entries: Vec<_> = map.iter().collect();
                entries.sort_by(|a, b| format!("{:?}", a.0).cmp(&format!("{:?}", b.0)));
                for (k, v) in entries {
                    let mut m = DynamicMessage::new(entry.clone());
                    let key_fd = entry.map_entry_key_field();
                    let value_fd = entry.map_entry_value_field();
                    if m.try_set_field(&key_fd, PValue::from(k.clone())).is_ok()
                        && m.try_set_field(&value_fd, v.clone()).is_ok()
                    {
                        write_field(out, &fd, &PValue::Message(m), indent);
                    }
                }
            }
            v => write_field(out, &fd, v, indent),
        }
    }
}

fn pad(out: &mut String, indent: usize) {
    for _ in 0..indent {
        out.push_str("  ");
    }
}

fn write_field(out: &mut String, fd: &FieldDescriptor, value: &PValue, indent: usize) {
    pad(out, indent);
    out.push_str(fd.name());
    match value {
        PValue::Message(m) => {
            out.push_str(" {\n");
            write_message(out, m, indent + 1);
            pad(out, indent);
            out.push_str("}\n");
        }
        v => {
            out.push_str(": ");
            write_scalar(out, fd, v);
            out.push('\n');
        }
    }
}

fn write_scalar(out: &mut String, fd: &FieldDescriptor, v: &PValue) {
    match v {
        PValue::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        PValue::I32(x) => {
            let _ = write!(out, "{x}");
        }
        PValue::I64(x) => {
            let _ = write!(out, "{x}");
        }
        PValue::U32(x) => {
            let _ = write!(out, "{x}");
        }
        PValue::U64(x) => {
            let _ = write!(out, "{x}");
        }
        PValue::F32(x) => out.push_str(&format_f32(*x)),
        PValue::F64(x) => out.push_str(&format_f64(*x)),
        PValue::String(s) => write_escaped(out, s.as_bytes()),
        PValue::Bytes(b) => write_escaped(out, b),
        PValue::EnumNumber(n) => {
            let name = match fd.kind() {
                Kind::Enum(ed) => ed.get_value(*n).map(|v| v.name().to_string()),
                _ => None,
            };
            match name {
                Some(name) => out.push_str(&name),
                None => {
                    let _ = write!(out, "{n}");
                }
            }
        }
        // Nested lists/maps/messages never reach here.
        PValue::List(_) | PValue::Map(_) | PValue::Message(_) => {}
    }
}

/// C-escape like protobuf's `CEscape`: `\n \r \t \" \' \\`, other non-printable bytes (and all
/// bytes >= 0x80) as three-digit octal.
fn write_escaped(out: &mut String, bytes: &[u8]) {
    out.push('"');
    for &b in bytes {
        match b {
            b'\n' => out.push_str("\\n"),
            b'\r' => out.push_str("\\r"),
            b'\t' => out.push_str("\\t"),
            b'"' => out.push_str("\\\""),
            b'\'' => out.push_str("\\'"),
            b'\\' => out.push_str("\\\\"),
            0x20..=0x7e => out.push(b as char),
            _ => {
                let _ = write!(out, "\\{b:03o}");
            }
        }
    }
    out.push('"');
}

/// A float in the form C++ `SimpleFtoa` would choose (`%g`-style: `0.001`, `1e-05`, `1e+10`) but
/// with the shortest digits that parse back to the same `f32`.
pub fn format_f32(v: f32) -> String {
    if v.is_nan() {
        return "nan".into();
    }
    if v.is_infinite() {
        return if v > 0.0 { "inf".into() } else { "-inf".into() };
    }
    g_style(&format!("{v:e}"), 6, 9)
}

/// A double like C++ `SimpleDtoa` lays it out, with the shortest round-trip digits.
pub fn format_f64(v: f64) -> String {
    if v.is_nan() {
        return "nan".into();
    }
    if v.is_infinite() {
        return if v > 0.0 { "inf".into() } else { "-inf".into() };
    }
    g_style(&format!("{v:e}"), 15, 17)
}

/// Lay out Rust's shortest scientific form (`-1.25e-5`) the way `printf("%.*g")` would with
/// precision `lo` (when the digits fit) or `hi`.
fn g_style(sci: &str, lo: usize, hi: usize) -> String {
    let Some((mant, exp)) = sci.split_once('e') else {
        return sci.to_string();
    };
    let Ok(exp) = exp.parse::<i32>() else {
        return sci.to_string();
    };
    let (neg, mant) = match mant.strip_prefix('-') {
        Some(m) => (true, m),
        None => (false, mant),
    };
    let digits: String = mant.chars().filter(|c| c.is_ascii_digit()).collect();
    let n = digits.len();
    if n == 0 {
        return sci.to_string();
    }
    let precision = if n <= lo { lo } else { hi.max(n) };
    let mut s = String::with_capacity(n + 8);
    if neg {
        s.push('-');
    }
    if exp < -4 || exp >= precision as i32 {
        s.push_str(&digits[..1]);
        if n > 1 {
            s.push('.');
            s.push_str(&digits[1..]);
        }
        let _ = write!(
            s,
            "e{}{:02}",
            if exp < 0 { '-' } else { '+' },
            exp.unsigned_abs()
        );
    } else if exp >= 0 {
        let int_len = exp as usize + 1;
        if n <= int_len {
            s.push_str(&digits);
            for _ in n..int_len {
                s.push('0');
            }
        } else {
            s.push_str(&digits[..int_len]);
            s.push('.');
            s.push_str(&digits[int_len..]);
        }
    } else {
        s.push_str("0.");
        for _ in 0..(-exp - 1) {
            s.push('0');
        }
        s.push_str(&digits);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn float_layout_matches_printf_g() {
        assert_eq!(format_f32(0.1), "0.1");
        assert_eq!(format_f32(0.00390625), "0.00390625");
        assert_eq!(format_f32(1e-5), "1e-05");
        assert_eq!(format_f32(0.0001), "0.0001");
        assert_eq!(format_f32(100000.0), "100000");
        assert_eq!(format_f32(1e6), "1e+06");
        assert_eq!(format_f32(1234567.0), "1234567");
        assert_eq!(format_f32(1.5), "1.5");
        assert_eq!(format_f32(-2.0), "-2");
        assert_eq!(format_f32(0.0), "0");
        assert_eq!(format_f32(-0.0), "-0");
        assert_eq!(format_f32(0.999), "0.999");
        assert_eq!(format_f32(1e30), "1e+30");
        assert_eq!(format_f32(f32::INFINITY), "inf");
        assert_eq!(format_f32(f32::NEG_INFINITY), "-inf");
        assert_eq!(format_f32(f32::NAN), "nan");
        assert_eq!(format_f64(0.1), "0.1");
        assert_eq!(format_f64(1e-8), "1e-08");
        for v in [
            0.1f32,
            1.0 / 3.0,
            123456.79,
            1e-38,
            f32::MAX,
            f32::MIN_POSITIVE,
            3.4028e-45,
        ] {
            let s = format_f32(v);
            assert_eq!(s.parse::<f32>().ok(), Some(v), "{s}");
        }
    }

    #[test]
    fn escaping_matches_cescape() {
        let mut s = String::new();
        write_escaped(&mut s, b"a\"b'c\\d\n\t\r\x01\xff");
        assert_eq!(s, r#""a\"b\'c\\d\n\t\r\001\377""#);
    }
}
