//! Editing `setting.toml` in place with `toml_edit`: only the changed keys are rewritten, so comments, key
//! order and unknown content stay; the result is written atomically, keeping the file's permissions (it holds
//! the admin password).

use std::path::Path;

use serde_json::Value;
use toml_edit::{DocumentMut, Item, Table};

/// A JSON value as a TOML value; `null` has no TOML form and is an error.
pub fn to_toml_value(v: &Value) -> Result<toml_edit::Value, String> {
    Ok(match v {
        Value::Null => return Err("null is not a value (omit the key to keep it)".into()),
        Value::Bool(b) => (*b).into(),
        Value::Number(n) => match (n.as_i64(), n.as_f64()) {
            (Some(i), _) => i.into(),
            (None, Some(f)) if f.is_finite() => f.into(),
            _ => return Err(format!("{n} is out of range")),
        },
        Value::String(s) => s.as_str().into(),
        Value::Array(a) => {
            let mut arr = toml_edit::Array::new();
            for x in a {
                arr.push(to_toml_value(x)?);
            }
            toml_edit::Value::Array(arr)
        }
        Value::Object(o) => {
            let mut t = toml_edit::InlineTable::new();
            for (k, x) in o {
                t.insert(k, to_toml_value(x)?);
            }
            toml_edit::Value::InlineTable(t)
        }
    })
}

/// `plugins.config` (`{"NAME": {…}}`) as `[plugins.config.NAME]` tables.
pub fn config_table(v: &Value) -> Result<Item, String> {
    let o = v
        .as_object()
        .ok_or("must be an object of plugin names to tables")?;
    let mut t = Table::new();
    t.set_implicit(true);
    for (name, cfg) in o {
        let cfg = cfg
            .as_object()
            .ok_or_else(|| format!("config of `{name}` must be an object"))?;
        let mut sub = Table::new();
        for (k, x) in cfg {
            sub.insert(k, Item::Value(to_toml_value(x)?));
        }
        t.insert(name, Item::Table(sub));
    }
    Ok(Item::Table(t))
}

/// Sets each `(section, key, value)` in the document `text`, keeping everything else as it was (a replaced
/// value keeps its trailing comment).
pub fn patch(text: &str, changes: &[(String, String, Item)]) -> Result<String, String> {
    let mut doc: DocumentMut = text.parse().map_err(|e: toml_edit::TomlError| {
        format!(
            "the settings file does not parse: {}",
            super::without_source_lines(&e.to_string())
        )
    })?;
    for (sec, key, item) in changes {
        if !doc.contains_key(sec) {
            doc.insert(sec, Item::Table(Table::new()));
        }
        let table = doc[sec.as_str()]
            .as_table_like_mut()
            .ok_or_else(|| format!("`{sec}` in the settings file is not a table"))?;
        let mut item = item.clone();
        if let (Some(old), Item::Value(new)) = (table.get(key).and_then(Item::as_value), &mut item)
        {
            *new.decor_mut() = old.decor().clone();
        }
        // In place, so the key keeps its decor (the comment lines above it).
        match table.get_mut(key) {
            Some(slot) => *slot = item,
            None => {
                table.insert(key, item);
            }
        }
    }
    Ok(doc.to_string())
}

/// Writes atomically (temp file, fsync, rename, fsync of the directory) with the old file's permissions.
pub fn write_atomic_keep_mode(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(format!(
        ".tmp-{}-{}",
        std::process::id(),
        rand::random::<u32>()
    ));
    let tmp = dir.join(name);
    let result = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        if let Ok(meta) = std::fs::metadata(path) {
            f.set_permissions(meta.permissions())?;
        }
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        std::fs::File::open(dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patch_keeps_comments_and_unknown_content() {
        let text = "# top comment\n[grok]\n# retries\nmax_retries = 2 # trailing\nbase_url = \"http://x/v1\"\n\n[custom]\nkeep = 1\n";
        let out = patch(
            text,
            &[
                (
                    "grok".into(),
                    "max_retries".into(),
                    Item::Value(to_toml_value(&Value::from(5)).unwrap()),
                ),
                (
                    "global".into(),
                    "log_max_count".into(),
                    Item::Value(to_toml_value(&Value::from(7)).unwrap()),
                ),
            ],
        )
        .unwrap();
        assert!(out.contains("# top comment"), "{out}");
        assert!(
            out.contains("# retries\nmax_retries = 5 # trailing"),
            "{out}"
        );
        assert!(out.contains("[custom]\nkeep = 1"), "{out}");
        assert!(out.contains("[global]\nlog_max_count = 7"), "{out}");
    }

    #[test]
    fn json_to_toml() {
        let v: Value = serde_json::json!([1, 2.5, "a", true]);
        assert_eq!(
            to_toml_value(&v).unwrap().to_string(),
            "[1, 2.5, \"a\", true]"
        );
        assert!(to_toml_value(&Value::Null).is_err());
        let item = config_table(&serde_json::json!({"p": {"url": "u"}})).unwrap();
        let out = patch("", &[("plugins".into(), "config".into(), item)]).unwrap();
        assert!(out.contains("[plugins.config.p]\nurl = \"u\""), "{out}");
    }
}
