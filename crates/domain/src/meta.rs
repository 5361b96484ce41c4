//! Reading object metadata.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

/// The value of annotation `key`; an empty value counts as no annotation.
pub fn annotation<'a>(meta: &'a ObjectMeta, key: &str) -> Option<&'a str> {
    meta.annotations
        .as_ref()?
        .get(key)
        .map(String::as_str)
        .filter(|v| !v.is_empty())
}
