//! The README's table of a Helm chart's values, generated from its `values.yaml`: each key
//! documented by a `# -- description` line right above it (helm-docs' convention), its default
//! what the file sets. Every value must be documented, by itself or by a parent key.

use serde_json::Value;

/// One documented key: its dotted path, its default and its description.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValueDoc {
    pub key: String,
    pub default: Value,
    pub description: String,
}

/// The documented keys of `values_yaml`, in file order; an error names what is undocumented
/// or cannot be read.
pub fn value_docs(values_yaml: &str) -> Result<Vec<ValueDoc>, String> {
    let values: Value =
        serde_saphyr::from_str(values_yaml).map_err(|e| format!("values.yaml: {e}"))?;
    let mut docs = Vec::new();
    // (indent, key) of the keys enclosing the current line.
    let mut stack: Vec<(usize, String)> = Vec::new();
    let mut pending: Option<String> = None;
    for (n, line) in values_yaml.lines().enumerate() {
        let trimmed = line.trim_start();
        let indent = line.len() - trimmed.len();
        if trimmed.is_empty() {
            pending = None;
            continue;
        }
        if let Some(d) = trimmed.strip_prefix("# --") {
            pending = Some(d.trim().to_string());
            continue;
        }
        if trimmed.starts_with('#') || trimmed.starts_with('-') {
            continue;
        }
        let Some((key, _)) = trimmed.split_once(':') else {
            continue;
        };
        if key.is_empty() || !key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(format!(
                "values.yaml line {}: cannot read key in {line:?}",
                n + 1
            ));
        }
        while stack.last().is_some_and(|(i, _)| *i >= indent) {
            stack.pop();
        }
        stack.push((indent, key.to_string()));
        if let Some(description) = pending.take() {
            let path: Vec<&str> = stack.iter().map(|(_, k)| k.as_str()).collect();
            let default = lookup(&values, &path)
                .ok_or_else(|| format!("values.yaml line {}: {} not found", n + 1, path.join(".")))?
                .clone();
            docs.push(ValueDoc {
                key: path.join("."),
                default,
                description,
            });
        }
    }
    let mut undocumented = Vec::new();
    leaves(&values, String::new(), &mut undocumented);
    undocumented.retain(|leaf| {
        !docs
            .iter()
            .any(|d| *leaf == d.key || leaf.starts_with(&format!("{}.", d.key)))
    });
    if !undocumented.is_empty() {
        return Err(format!(
            "values.yaml: no `# --` description for {} (write one above the key or a parent key)",
            undocumented.join(", ")
        ));
    }
    Ok(docs)
}

/// The Markdown table of [`value_docs`]: key, type, default (as JSON), description.
pub fn values_table(values_yaml: &str) -> Result<String, String> {
    let mut out = String::from("| Key | Type | Default | Description |\n|---|---|---|---|\n");
    for d in value_docs(values_yaml)? {
        let ty = match &d.default {
            Value::Null => "null",
            Value::Bool(_) => "bool",
            Value::Number(n) if n.is_i64() || n.is_u64() => "int",
            Value::Number(_) => "float",
            Value::String(_) => "string",
            Value::Array(_) => "list",
            Value::Object(_) => "object",
        };
        out.push_str(&format!(
            "| `{}` | {ty} | `{}` | {} |\n",
            d.key,
            d.default.to_string().replace('|', "\\|"),
            d.description.replace('|', "\\|"),
        ));
    }
    Ok(out)
}

/// Where the lines between the line holding `begin` and the one holding `end` are in `text`.
pub fn between(text: &str, begin: &str, end: &str) -> Option<std::ops::Range<usize>> {
    let start = text.find(begin)? + begin.len();
    let start = start + text[start..].find('\n')? + 1;
    let stop = start + text[start..].find(end)?;
    Some(start..stop)
}

fn lookup<'a>(v: &'a Value, path: &[&str]) -> Option<&'a Value> {
    path.iter().try_fold(v, |v, k| v.get(k))
}

/// Dotted paths of the non-object values (an empty object counts as a value).
fn leaves(v: &Value, prefix: String, out: &mut Vec<String>) {
    match v {
        Value::Object(m) if !m.is_empty() => {
            for (k, v) in m {
                let p = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                leaves(v, p, out);
            }
        }
        _ => out.push(prefix),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "# header, not a description\n\n# -- How many.\nreplicas: 2\nimage:\n  # -- Where from.\n  repository: x\n  # -- Which.\n  tag: \"\"\n# -- Whole map documented once.\nresources:\n  requests:\n    cpu: 10m\n# -- A list.\nnames:\n  - a # not a key\n";

    #[test]
    fn table_in_file_order_with_defaults() {
        let t = values_table(GOOD).unwrap();
        assert_eq!(
            t,
            "| Key | Type | Default | Description |\n|---|---|---|---|\n\
             | `replicas` | int | `2` | How many. |\n\
             | `image.repository` | string | `\"x\"` | Where from. |\n\
             | `image.tag` | string | `\"\"` | Which. |\n\
             | `resources` | object | `{\"requests\":{\"cpu\":\"10m\"}}` | Whole map documented once. |\n\
             | `names` | list | `[\"a\"]` | A list. |\n"
        );
    }

    #[test]
    fn undocumented_values_are_named() {
        let text = GOOD.replace("  # -- Which.\n", "");
        let err = value_docs(&text).unwrap_err();
        assert!(err.contains("image.tag"), "{err}");
        // A description separated from its key by a blank line documents nothing.
        let err = value_docs(&GOOD.replace("# -- How many.\n", "# -- How many.\n\n")).unwrap_err();
        assert!(err.contains("replicas"), "{err}");
    }

    #[test]
    fn between_markers() {
        let text = "a\n<!-- b --> x\nrow 1\nrow 2\n<!-- e -->\nz";
        let r = between(text, "<!-- b -->", "<!-- e -->").unwrap();
        assert_eq!(&text[r], "row 1\nrow 2\n");
        assert_eq!(between(text, "<!-- nope -->", "<!-- e -->"), None);
    }
}
