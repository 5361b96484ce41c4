//! A cached object's identity in one allocation: name, namespace, uid and resourceVersion,
//! with its deletionTimestamp. An `ObjectMeta` is 360 bytes before its strings, and kube's
//! machinery asks for one only of the objects of watch events, not of those the stores keep.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};

#[derive(Clone, Copy)]
pub enum Field {
    Name = 0,
    Namespace = 1,
    Uid = 2,
    ResourceVersion = 3,
}

const FIELDS: [Field; 4] = [
    Field::Name,
    Field::Namespace,
    Field::Uid,
    Field::ResourceVersion,
];

fn field(m: &ObjectMeta, f: Field) -> Option<&String> {
    match f {
        Field::Name => m.name.as_ref(),
        Field::Namespace => m.namespace.as_ref(),
        Field::Uid => m.uid.as_ref(),
        Field::ResourceVersion => m.resource_version.as_ref(),
    }
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct Identity {
    /// The four fields one after the other.
    text: Box<str>,
    /// Where each ends in `text`.
    ends: [u32; 4],
    /// Which of them are set (bit per [`Field`]): `None` and `Some("")` stay apart.
    set: u8,
    deletion: Option<Time>,
}

impl Identity {
    pub fn of(m: &ObjectMeta) -> Identity {
        let mut text = String::new();
        let mut id = Identity {
            deletion: m.deletion_timestamp.clone(),
            ..Identity::default()
        };
        for f in FIELDS {
            if let Some(v) = field(m, f) {
                text.push_str(v);
                id.set |= 1 << f as u8;
            }
            id.ends[f as usize] = text.len() as u32;
        }
        id.text = text.into_boxed_str();
        id
    }

    pub fn get(&self, f: Field) -> Option<&str> {
        let i = f as usize;
        let start = if i == 0 { 0 } else { self.ends[i - 1] as usize };
        (self.set & (1 << i) != 0).then(|| &self.text[start..self.ends[i] as usize])
    }

    pub fn deletion(&self) -> Option<&Time> {
        self.deletion.as_ref()
    }

    pub fn meta(&self) -> ObjectMeta {
        let get = |f| self.get(f).map(str::to_string);
        ObjectMeta {
            name: get(Field::Name),
            namespace: get(Field::Namespace),
            uid: get(Field::Uid),
            resource_version: get(Field::ResourceVersion),
            deletion_timestamp: self.deletion.clone(),
            ..ObjectMeta::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_field_reads_back_as_it_was_set_or_unset() {
        let at = Some(Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH));
        let some = |s: &str| Some(s.to_string());
        for m in [
            ObjectMeta::default(),
            ObjectMeta {
                name: some("pvc-1"),
                namespace: some("team-a"),
                uid: some("0b7a-4c3e"),
                resource_version: some("42"),
                deletion_timestamp: at.clone(),
                ..ObjectMeta::default()
            },
            // Empty and unset stay apart; unicode; a field unset between two set.
            ObjectMeta {
                name: some(""),
                namespace: None,
                uid: some("ü-1"),
                resource_version: some(""),
                ..ObjectMeta::default()
            },
            ObjectMeta {
                name: None,
                namespace: some("ns"),
                uid: None,
                resource_version: some("7"),
                deletion_timestamp: at.clone(),
                ..ObjectMeta::default()
            },
        ] {
            let id = Identity::of(&m);
            assert_eq!(id.meta(), m);
            assert_eq!(id.get(Field::Name), m.name.as_deref());
            assert_eq!(id.get(Field::Namespace), m.namespace.as_deref());
            assert_eq!(id.get(Field::Uid), m.uid.as_deref());
            assert_eq!(
                id.get(Field::ResourceVersion),
                m.resource_version.as_deref()
            );
            assert_eq!(id.deletion(), m.deletion_timestamp.as_ref());
        }
    }
}
