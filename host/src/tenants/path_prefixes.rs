//! Where keyless requests go: a public tenant answers the paths under its prefixes,
//! and of several public tenants the one with the longest matching prefix wins (the
//! console at `/`, the OpenAI router at `/v1`, `/tokenize`, `/rerank`...). Written as
//! one string or a list, in the config file and the admin API alike.

use serde::{Deserialize, Deserializer, Serialize, Serializer};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathPrefixes(Vec<String>);

impl PathPrefixes {
    pub fn new(prefixes: impl IntoIterator<Item = impl Into<String>>) -> Self {
        Self(prefixes.into_iter().map(Into::into).collect())
    }

    /// `/`: every path.
    pub fn root() -> Self {
        Self::new(["/"])
    }

    /// The length of the longest prefix that matches `path` (whole segments), if any.
    pub fn longest_match(&self, path: &str) -> Option<usize> {
        self.0
            .iter()
            .filter(|p| prefix_matches(p, path))
            .map(|p| p.trim_end_matches('/').len())
            .max()
    }
}

impl Default for PathPrefixes {
    fn default() -> Self {
        Self::root()
    }
}

/// "/v1" matches "/v1" and "/v1/models" but not "/v10".
fn prefix_matches(prefix: &str, path: &str) -> bool {
    let prefix = prefix.trim_end_matches('/');
    prefix.is_empty() || path == prefix || path.starts_with(&format!("{prefix}/"))
}

impl Serialize for PathPrefixes {
    /// One prefix as a string (as it was always written), several as a list.
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.0.as_slice() {
            [one] => one.serialize(s),
            all => all.serialize(s),
        }
    }
}

impl<'de> Deserialize<'de> for PathPrefixes {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Form {
            One(String),
            Several(Vec<String>),
        }
        let prefixes = match Form::deserialize(d).map_err(|_| {
            serde::de::Error::custom("path_prefix must be a path or a list of paths")
        })? {
            Form::One(p) => vec![p],
            Form::Several(ps) => ps,
        };
        if prefixes.is_empty() {
            return Err(serde::de::Error::custom(
                "path_prefix must name at least one path",
            ));
        }
        if let Some(bad) = prefixes.iter().find(|p| !p.starts_with('/')) {
            return Err(serde::de::Error::custom(format!(
                "path_prefix {bad:?} must start with '/'"
            )));
        }
        Ok(Self(prefixes))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_match_whole_segments() {
        assert!(prefix_matches("/", "/anything"));
        assert!(prefix_matches("/v1", "/v1/models"));
        assert!(prefix_matches("/v1/", "/v1"));
        assert!(!prefix_matches("/v1", "/v10"));
        assert!(!prefix_matches("/v1", "/"));
    }

    #[test]
    fn the_longest_matching_prefix_counts() {
        let router = PathPrefixes::new(["/v1", "/tokenize", "/v2/rerank"]);
        assert_eq!(router.longest_match("/v1/models"), Some(3));
        assert_eq!(router.longest_match("/tokenize"), Some(9));
        assert_eq!(router.longest_match("/v2/rerank"), Some(10));
        assert_eq!(router.longest_match("/v2/models"), None);
        assert_eq!(PathPrefixes::root().longest_match("/x"), Some(0));
    }

    #[test]
    fn one_prefix_is_a_string_and_several_a_list() {
        let one: PathPrefixes = serde_json::from_str(r#""/v1""#).unwrap();
        assert_eq!(serde_json::to_string(&one).unwrap(), r#""/v1""#);
        let two: PathPrefixes = serde_json::from_str(r#"["/v1", "/rerank"]"#).unwrap();
        assert_eq!(serde_json::to_string(&two).unwrap(), r#"["/v1","/rerank"]"#);
        for bad in [r#"[]"#, r#""v1""#, r#"3"#] {
            assert!(serde_json::from_str::<PathPrefixes>(bad).is_err(), "{bad}");
        }
    }
}
