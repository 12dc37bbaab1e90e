//! Checks that an HTTP listener and its OpenAPI document agree, for the
//! tests of each listener: the document names every route the code
//! declares and no other, every documented operation is routed, every
//! method it does not document is refused with 405, and `/openapi.json`
//! serves the document itself.

use serde_json::Value;
use std::collections::BTreeSet;

/// Methods probed on every documented path.
const METHODS: [&str; 5] = ["get", "post", "put", "delete", "patch"];

/// Checks the listener at `base` against `document`. `source` is the code
/// that builds its router (its `.route("…"` calls are read), and `values`
/// fill the documented path parameters (`("collection", "docs")`) so that
/// a handler's own 404 cannot pass for a missing route.
pub async fn check(
    base: &str,
    document: &str,
    source: &[&str],
    values: &[(&str, &str)],
) -> Result<(), String> {
    let doc: Value =
        serde_json::from_str(document).map_err(|e| format!("the document is not JSON: {e}"))?;
    let version = doc["openapi"].as_str().unwrap_or_default();
    if !version.starts_with("3.") {
        return Err(format!("not an OpenAPI 3 document: openapi = {version:?}"));
    }
    let paths = doc["paths"]
        .as_object()
        .ok_or("the document has no paths")?;
    let documented: BTreeSet<&str> = paths.keys().map(String::as_str).collect();
    let routed: BTreeSet<&str> = source.iter().flat_map(|s| routes_in(s)).collect();
    if documented != routed {
        return Err(format!(
            "routes not documented: {:?}; documented but not routed: {:?}",
            routed.difference(&documented).collect::<Vec<_>>(),
            documented.difference(&routed).collect::<Vec<_>>()
        ));
    }
    let client = reqwest::Client::new();
    for (path, item) in paths {
        let mut url = format!("{base}{path}");
        for (name, value) in values {
            url = url.replace(&format!("{{{name}}}"), value);
        }
        if url.contains('{') {
            return Err(format!("{path}: no value given for its parameters"));
        }
        for method in METHODS {
            let request = reqwest::Method::from_bytes(method.to_uppercase().as_bytes())
                .map_err(|e| e.to_string())?;
            let status = client
                .request(request, &url)
                .send()
                .await
                .map_err(|e| format!("{method} {url}: {e}"))?
                .status()
                .as_u16();
            let described = item.get(method).is_some();
            match (described, status) {
                (true, 404 | 405) => {
                    return Err(format!(
                        "{method} {path} is documented but answers {status}"
                    ));
                }
                (false, s) if s != 405 => {
                    return Err(format!("{method} {path} is not documented but answers {s}"));
                }
                _ => {}
            }
        }
    }
    let served: Value = client
        .get(format!("{base}/openapi.json"))
        .send()
        .await
        .map_err(|e| e.to_string())?
        .json()
        .await
        .map_err(|e| format!("/openapi.json is not JSON: {e}"))?;
    if served != doc {
        return Err("/openapi.json serves another document".into());
    }
    Ok(())
}

/// The paths of the `.route("…"` calls in `source`.
fn routes_in(source: &str) -> impl Iterator<Item = &str> {
    source.split(".route(").skip(1).filter_map(|rest| {
        let rest = rest.trim_start().strip_prefix('"')?;
        rest.split('"').next()
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn routes_are_read_from_the_code() {
        let source = r#"Router::new()
            .route("/v1/x/{c}", post(x))
            .route(
                "/healthz",
                get(h),
            )
            // .route is mentioned here without a path
        "#;
        let found: Vec<_> = super::routes_in(source).collect();
        assert_eq!(found, ["/v1/x/{c}", "/healthz"]);
    }
}
