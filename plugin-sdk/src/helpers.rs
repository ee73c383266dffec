//! Helpers that do not depend on the world: config parsing and small JSON utilities.

use serde::de::DeserializeOwned;

/// Parses the JSON config `init` receives into `T`. An empty string means `{}`. The error names the problem,
/// ready to return from `init`.
///
/// ```
/// #[derive(serde::Deserialize, Default)]
/// #[serde(default, deny_unknown_fields)]
/// struct Config { max_failures: u32 }
/// let c: Config = grok2api_plugin_sdk::parse_config(r#"{"max_failures": 3}"#).unwrap();
/// assert_eq!(c.max_failures, 3);
/// assert!(grok2api_plugin_sdk::parse_config::<Config>(r#"{"nope": 1}"#).is_err());
/// ```
pub fn parse_config<T: DeserializeOwned>(json: &str) -> Result<T, String> {
    let json = if json.trim().is_empty() { "{}" } else { json };
    serde_json::from_str(json).map_err(|e| format!("invalid config: {e}"))
}

/// Follows a dotted path (`data.list`, `result.0.proxies`) into a JSON value; numbers index arrays.
/// An empty path is the value itself.
///
/// ```
/// let v = serde_json::json!({"data": {"list": [{"ip": "1.2.3.4"}]}});
/// let ip = grok2api_plugin_sdk::json_path(&v, "data.list.0.ip").unwrap();
/// assert_eq!(ip, "1.2.3.4");
/// ```
pub fn json_path<'a>(value: &'a serde_json::Value, path: &str) -> Option<&'a serde_json::Value> {
    let mut v = value;
    for part in path.split('.').filter(|p| !p.is_empty()) {
        v = match v {
            serde_json::Value::Object(m) => m.get(part)?,
            serde_json::Value::Array(a) => a.get(part.parse::<usize>().ok()?)?,
            _ => return None,
        };
    }
    Some(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_empty_means_defaults() {
        #[derive(serde::Deserialize, Default, Debug, PartialEq)]
        #[serde(default)]
        struct C {
            a: u32,
        }
        assert_eq!(parse_config::<C>("").unwrap(), C { a: 0 });
        assert_eq!(parse_config::<C>(r#"{"a": 2}"#).unwrap(), C { a: 2 });
        assert!(parse_config::<C>("not json")
            .unwrap_err()
            .contains("invalid config"));
    }

    #[test]
    fn json_path_walks_objects_and_arrays() {
        let v = serde_json::json!({"a": [{"b": 1}, {"b": 2}]});
        assert_eq!(json_path(&v, "a.1.b").unwrap(), 2);
        assert_eq!(json_path(&v, "").unwrap(), &v);
        assert!(json_path(&v, "a.x").is_none());
        assert!(json_path(&v, "a.5").is_none());
    }
}
