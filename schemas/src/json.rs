//! JSON in one canonical form: object keys sorted at every level, no
//! whitespace. Two values that differ only in key order print the same,
//! whether or not serde_json keeps insertion order (its `preserve_order`
//! feature, which a dependency may turn on for the whole build).

use serde_json::{Map, Value};

/// `v` as canonical JSON text.
pub fn canonical(v: &Value) -> String {
    let mut out = String::new();
    write(v, &mut out);
    out
}

/// A JSON object as canonical JSON text.
pub fn canonical_object(map: &Map<String, Value>) -> String {
    let mut out = String::new();
    write_object(map, &mut out);
    out
}

fn write_object(map: &Map<String, Value>, out: &mut String) {
    let mut entries: Vec<(&String, &Value)> = map.iter().collect();
    entries.sort_by(|a, b| a.0.cmp(b.0));
    out.push('{');
    for (i, (k, v)) in entries.into_iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(&Value::String(k.clone()).to_string());
        out.push(':');
        write(v, out);
    }
    out.push('}');
}

fn write(v: &Value, out: &mut String) {
    match v {
        Value::Object(map) => write_object(map, out),
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write(item, out);
            }
            out.push(']');
        }
        scalar => out.push_str(&scalar.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_order_does_not_matter_and_values_do() {
        let a: Value =
            serde_json::from_str(r#"{"b": [1, {"y": 2, "x": "s"}], "a": null}"#).unwrap();
        let b: Value =
            serde_json::from_str(r#"{"a": null, "b": [1, {"x": "s", "y": 2}]}"#).unwrap();
        assert_eq!(canonical(&a), r#"{"a":null,"b":[1,{"x":"s","y":2}]}"#);
        assert_eq!(canonical(&a), canonical(&b));
        let c: Value =
            serde_json::from_str(r#"{"a": null, "b": [{"x": "s", "y": 2}, 1]}"#).unwrap();
        assert_ne!(canonical(&a), canonical(&c), "array order matters");
    }
}
