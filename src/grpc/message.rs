//! JSON in, protobuf out and back (the proto3 JSON mapping of `prost-reflect`): a request
//! message from the body, the path's variables and the query; an answer as JSON.

use super::Body;
use prost::Message;
use prost_reflect::{DynamicMessage, FieldDescriptor, Kind, MessageDescriptor};
use serde_json::{Map, Value};

/// The request message, encoded; the error names the field or parameter that does not fit.
pub fn request(
    input: &MessageDescriptor,
    body_rule: &Body,
    body: &[u8],
    vars: &[(&[String], String)],
    query: Option<&str>,
) -> Result<Vec<u8>, String> {
    let mut root = match body_rule {
        Body::All => match parse(body)? {
            Value::Object(o) => o,
            Value::Null => Map::new(),
            _ => return Err("the body must be a JSON object".into()),
        },
        Body::Field(f) => {
            let mut o = Map::new();
            let v = parse(body)?;
            if !v.is_null() {
                o.insert(f.json_name().to_string(), v);
            }
            o
        }
        Body::None => Map::new(),
    };
    for (field, value) in vars {
        set(&mut root, input, field, value.clone())
            .map_err(|e| format!("path field {:?}: {e}", field.join(".")))?;
    }
    if !matches!(body_rule, Body::All) {
        for (name, value) in query_pairs(query.unwrap_or("")) {
            let path: Vec<String> = name.split('.').map(str::to_string).collect();
            set(&mut root, input, &path, value)
                .map_err(|e| format!("query parameter {name:?}: {e}"))?;
        }
    }
    let mut track = serde_path_to_error::Track::new();
    let de = serde_path_to_error::Deserializer::new(Value::Object(root), &mut track);
    match DynamicMessage::deserialize(input.clone(), de) {
        Ok(m) => Ok(m.encode_to_vec()),
        Err(e) => {
            let at = track.path().to_string();
            if at == "." || at.is_empty() {
                Err(e.to_string())
            } else {
                Err(format!("field {:?}: {e}", at.trim_start_matches('.')))
            }
        }
    }
}

/// An answer message as JSON (lowerCamelCase names, int64 as strings, enums by name).
pub fn answer(output: &MessageDescriptor, bytes: bytes::Bytes) -> Result<Vec<u8>, String> {
    let m = DynamicMessage::decode(output.clone(), bytes)
        .map_err(|e| format!("the backend's answer is not a {}: {e}", output.full_name()))?;
    serde_json::to_vec(&m).map_err(|e| e.to_string())
}

fn parse(body: &[u8]) -> Result<Value, String> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(Value::Null);
    }
    serde_json::from_slice(body).map_err(|e| format!("the body is not JSON: {e}"))
}

/// The field `name` names (its proto name or its JSON name).
pub fn field(m: &MessageDescriptor, name: &str) -> Option<FieldDescriptor> {
    m.get_field_by_name(name)
        .or_else(|| m.get_field_by_json_name(name))
}

/// Sets the field at `path` from text (a path variable or a query parameter): a repeated field
/// gets one more element; nested messages are made on the way.
fn set(
    obj: &mut Map<String, Value>,
    m: &MessageDescriptor,
    path: &[String],
    text: String,
) -> Result<(), String> {
    let Some((first, rest)) = path.split_first() else {
        return Err("empty field path".into());
    };
    let f = field(m, first).ok_or_else(|| format!("{} has no field {first:?}", m.name()))?;
    // The key the body already uses for this field, if any (both names would be a duplicate).
    let key = [f.name(), f.json_name()]
        .into_iter()
        .find(|k| obj.contains_key(*k))
        .unwrap_or(f.json_name())
        .to_string();
    if rest.is_empty() {
        let v = scalar(&f, text);
        if f.is_list() {
            match obj.entry(key).or_insert_with(|| Value::Array(Vec::new())) {
                Value::Array(a) => a.push(v),
                _ => return Err("is set twice".into()),
            }
        } else {
            obj.insert(key, v);
        }
        return Ok(());
    }
    let Kind::Message(inner) = f.kind() else {
        return Err(format!("{first:?} is not a message"));
    };
    if f.is_list() {
        return Err(format!("{first:?} is repeated"));
    }
    match obj.entry(key).or_insert_with(|| Value::Object(Map::new())) {
        Value::Object(o) => set(o, &inner, rest, text),
        _ => Err(format!("{first:?} is not an object in the body")),
    }
}

/// Text as the JSON the field's parser takes: booleans as such, everything else as a string
/// (the proto3 JSON mapping accepts numbers, enums, bytes and timestamps as strings).
fn scalar(f: &FieldDescriptor, text: String) -> Value {
    match (f.kind(), text.as_str()) {
        (Kind::Bool, "true") => Value::Bool(true),
        (Kind::Bool, "false") => Value::Bool(false),
        _ => Value::String(text),
    }
}

/// `a=1&b=x+y` → pairs, percent- and `+`-decoded.
fn query_pairs(q: &str) -> impl Iterator<Item = (String, String)> + '_ {
    q.split('&').filter(|p| !p.is_empty()).map(|p| {
        let (k, v) = p.split_once('=').unwrap_or((p, ""));
        let decode = |s: &str| super::template::percent_decode(&s.replace('+', " "));
        (decode(k), decode(v))
    })
}
