//! The search a worker answers on its listener (`POST
//! /v1/collections/{collection}/points/search`): Qdrant's search body, with
//! the subset of its filter that both store backends take.

use crate::bookkeeping::KEY;
use crate::store::Hit;
use serde_json::Value;

/// A search, as Qdrant's REST API takes it (`vector`, `limit`,
/// `with_payload`, `filter`).
#[derive(Debug, Clone, PartialEq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SearchBody {
    pub vector: Vec<f32>,
    #[serde(default = "default_limit")]
    pub limit: usize,
    #[serde(default)]
    pub with_payload: bool,
    #[serde(default)]
    pub filter: Option<Filter>,
}

fn default_limit() -> usize {
    10
}

/// The most hits one search returns.
pub const MAX_LIMIT: usize = 10_000;

/// Points that match every `must` condition, at least one `should`
/// condition (when there are any) and no `must_not` condition.
#[derive(Debug, Clone, Default, PartialEq, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct Filter {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub must: Vec<Condition>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub should: Vec<Condition>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub must_not: Vec<Condition>,
}

/// A condition on one payload field: a `match` or a `range`.
#[derive(Debug, Clone, PartialEq, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct Condition {
    pub key: String,
    #[serde(default, rename = "match", skip_serializing_if = "Option::is_none")]
    pub matches: Option<Match>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub range: Option<Range>,
}

/// `{"value": v}` (a string, an integer or a boolean), `{"any": [...]}` or
/// `{"except": [...]}` (strings, or integers).
#[derive(Debug, Clone, PartialEq, serde::Deserialize, serde::Serialize)]
#[serde(untagged, deny_unknown_fields)]
pub enum Match {
    Value { value: Value },
    Any { any: Vec<Value> },
    Except { except: Vec<Value> },
}

/// Bounds on a numeric field.
#[derive(Debug, Clone, Default, PartialEq, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct Range {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gt: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gte: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lt: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lte: Option<f64>,
}

impl SearchBody {
    /// What is wrong with the search for a collection of `dimension`, in
    /// words for a 400.
    pub fn check(&self, dimension: usize) -> Result<(), String> {
        if self.vector.len() != dimension {
            return Err(format!(
                "vector: {} dimensions, the collection has {dimension}",
                self.vector.len()
            ));
        }
        if self.vector.iter().any(|x| !x.is_finite()) {
            return Err("vector: every component must be a finite number".into());
        }
        if self.limit == 0 || self.limit > MAX_LIMIT {
            return Err(format!("limit: from 1 to {MAX_LIMIT}, got {}", self.limit));
        }
        self.filter.as_ref().map_or(Ok(()), Filter::check)
    }
}

impl Filter {
    /// Every condition in turn, with the clause it is in.
    pub fn conditions(&self) -> impl Iterator<Item = (&'static str, &Condition)> {
        self.must
            .iter()
            .map(|c| ("must", c))
            .chain(self.should.iter().map(|c| ("should", c)))
            .chain(self.must_not.iter().map(|c| ("must_not", c)))
    }

    fn check(&self) -> Result<(), String> {
        for (clause, c) in self.conditions() {
            let at = format!("filter.{clause}[key={:?}]", c.key);
            let plain = |part: &str| {
                !part.is_empty()
                    && part
                        .chars()
                        .all(|ch| ch.is_ascii_alphanumeric() || ch == '_' || ch == '-')
            };
            if !c.key.split('.').all(plain) || c.key.starts_with(KEY) {
                return Err(format!(
                    "{at}: not a key a filter may use (fields of letters, digits, _ and -, \
                     joined by dots)"
                ));
            }
            match (&c.matches, &c.range) {
                (Some(m), None) => check_match(m).map_err(|e| format!("{at}.match: {e}"))?,
                (None, Some(r)) => {
                    let bounds = [r.gt, r.gte, r.lt, r.lte];
                    if bounds.iter().all(Option::is_none) {
                        return Err(format!("{at}.range: give gt, gte, lt or lte"));
                    }
                    if bounds.iter().flatten().any(|b| !b.is_finite()) {
                        return Err(format!("{at}.range: bounds must be finite numbers"));
                    }
                }
                _ => return Err(format!("{at}: give either match or range")),
            }
        }
        Ok(())
    }
}

fn check_match(m: &Match) -> Result<(), String> {
    match m {
        Match::Value { value } => match value {
            Value::String(_) | Value::Bool(_) => Ok(()),
            Value::Number(n) if n.is_i64() => Ok(()),
            other => Err(format!(
                "value must be a string, an integer or a boolean, got {other}"
            )),
        },
        Match::Any { any: list } | Match::Except { except: list } => {
            let strings = list.iter().all(Value::is_string);
            let integers = list.iter().all(Value::is_i64);
            if strings || integers {
                Ok(())
            } else {
                Err("any and except take strings, or integers, all of one kind".into())
            }
        }
    }
}

/// A hit as the search answers it: Qdrant's shape, without vecsync's
/// bookkeeping in the payload.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ScoredPoint {
    pub id: Value,
    pub score: f32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payload: Option<serde_json::Map<String, Value>>,
}

impl From<Hit> for ScoredPoint {
    fn from(hit: Hit) -> Self {
        Self {
            id: hit.id.to_json(),
            score: hit.score,
            payload: hit.payload.map(|mut p| {
                p.remove(KEY);
                p
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn body(v: Value) -> Result<SearchBody, String> {
        let body: SearchBody = serde_json::from_value(v).map_err(|e| e.to_string())?;
        body.check(2).map(|()| body)
    }

    #[test]
    fn a_search_body_is_taken_or_refused_with_the_reason() {
        let ok = body(json!({"vector": [1, 0], "limit": 3, "with_payload": true, "filter": {
            "must": [{"key": "lang", "match": {"value": "de"}}],
            "should": [{"key": "n", "match": {"any": [1, 2]}}, {"key": "n", "range": {"gte": 5}}],
            "must_not": [{"key": "tag", "match": {"except": ["a"]}}]
        }}))
        .unwrap();
        assert_eq!(ok.filter.unwrap().conditions().count(), 4);
        assert_eq!(body(json!({"vector": [1, 0]})).unwrap().limit, 10);
        for (bad, says) in [
            (json!({"vector": [1]}), "1 dimensions"),
            (json!({"vector": [1, 0], "limit": 0}), "limit"),
            (json!({"vector": [1, 0], "offset": 3}), "unknown field"),
            (
                json!({"vector": [1, 0], "filter": {"must": [{"key": "a"}]}}),
                "either match or range",
            ),
            (
                json!({"vector": [1, 0], "filter": {"must": [{"key": "a", "match": {"value": 1.5}}]}}),
                "a string, an integer or a boolean",
            ),
            (
                json!({"vector": [1, 0], "filter": {"must": [{"key": "a", "match": {"any": ["x", 1]}}]}}),
                "all of one kind",
            ),
            (
                json!({"vector": [1, 0], "filter": {"must": [{"key": "a", "range": {}}]}}),
                "gt, gte, lt or lte",
            ),
            (
                json!({"vector": [1, 0], "filter": {"must": [{"key": "_vecsync", "match": {"value": 1}}]}}),
                "not a key",
            ),
            (
                json!({"vector": [1, 0], "filter": {"must": [{"key": "a[", "match": {"value": 1}}]}}),
                "not a key",
            ),
            (
                json!({"vector": [1, 0], "filter": {"min_should": {}}}),
                "unknown field",
            ),
        ] {
            let err = body(bad.clone()).unwrap_err();
            assert!(err.contains(says), "{bad}: {err}");
        }
    }
}
