//! Reading and naming object metadata.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

/// The value of annotation `key`; an empty value counts as no annotation.
pub fn annotation<'a>(meta: &'a ObjectMeta, key: &str) -> Option<&'a str> {
    meta.annotations
        .as_ref()?
        .get(key)
        .map(String::as_str)
        .filter(|v| !v.is_empty())
}

/// How logs, events and errors name an object: `namespace/name`, or the name alone of a
/// cluster-scoped one.
pub fn qualified(namespace: Option<&str>, name: &str) -> String {
    match namespace {
        Some(ns) => format!("{ns}/{name}"),
        None => name.to_string(),
    }
}

/// [`qualified`] of an object's metadata.
pub fn label(meta: &ObjectMeta) -> String {
    qualified(
        meta.namespace.as_deref(),
        meta.name.as_deref().unwrap_or(""),
    )
}
