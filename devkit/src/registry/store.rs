//! The development registry's state: schemas by id, subjects with their
//! versions, compatibility levels, and the file that keeps them.

use apache_avro::Schema;
use apache_avro::schema_compatibility::SchemaCompatibility;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

/// Confluent's compatibility levels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Compatibility {
    #[default]
    Backward,
    BackwardTransitive,
    Forward,
    ForwardTransitive,
    Full,
    FullTransitive,
    None,
}

impl Compatibility {
    const ALL: [Compatibility; 7] = [
        Compatibility::Backward,
        Compatibility::BackwardTransitive,
        Compatibility::Forward,
        Compatibility::ForwardTransitive,
        Compatibility::Full,
        Compatibility::FullTransitive,
        Compatibility::None,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Compatibility::Backward => "BACKWARD",
            Compatibility::BackwardTransitive => "BACKWARD_TRANSITIVE",
            Compatibility::Forward => "FORWARD",
            Compatibility::ForwardTransitive => "FORWARD_TRANSITIVE",
            Compatibility::Full => "FULL",
            Compatibility::FullTransitive => "FULL_TRANSITIVE",
            Compatibility::None => "NONE",
        }
    }

    fn transitive(self) -> bool {
        matches!(
            self,
            Compatibility::BackwardTransitive
                | Compatibility::ForwardTransitive
                | Compatibility::FullTransitive
        )
    }

    /// Whether the new schema may read data written with the old one.
    fn needs_backward(self) -> bool {
        !matches!(
            self,
            Compatibility::Forward | Compatibility::ForwardTransitive | Compatibility::None
        )
    }

    /// Whether the old schema may read data written with the new one.
    fn needs_forward(self) -> bool {
        !matches!(
            self,
            Compatibility::Backward | Compatibility::BackwardTransitive | Compatibility::None
        )
    }
}

impl fmt::Display for Compatibility {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Compatibility {
    type Err = ();
    fn from_str(s: &str) -> Result<Self, ()> {
        Self::ALL
            .into_iter()
            .find(|c| c.as_str().eq_ignore_ascii_case(s))
            .ok_or(())
    }
}

/// A failed request, as Confluent reports it: an HTTP status, a numeric
/// `error_code` and a message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message} (error {error_code})")]
pub struct ApiError {
    pub status: u16,
    pub error_code: u32,
    pub message: String,
}

impl ApiError {
    pub fn new(status: u16, error_code: u32, message: impl Into<String>) -> Self {
        Self {
            status,
            error_code,
            message: message.into(),
        }
    }
    pub fn subject_not_found(subject: &str) -> Self {
        Self::new(404, 40401, format!("Subject '{subject}' not found."))
    }
    pub fn version_not_found(subject: &str, version: &str) -> Self {
        Self::new(
            404,
            40402,
            format!("Version {version} not found for subject '{subject}'."),
        )
    }
    pub fn schema_not_found(what: impl fmt::Display) -> Self {
        Self::new(404, 40403, format!("Schema {what} not found."))
    }
    pub fn invalid_schema(reason: impl fmt::Display) -> Self {
        Self::new(422, 42201, format!("Invalid schema: {reason}"))
    }
    pub fn invalid_version(version: &str) -> Self {
        Self::new(
            422,
            42202,
            format!(
                "The specified version '{version}' is not a valid version id. Allowed values are between [1, 2^31-1] and the string \"latest\""
            ),
        )
    }
    pub fn invalid_compatibility(level: &str) -> Self {
        Self::new(
            422,
            42203,
            format!(
                "Invalid compatibility level {level:?}. Valid values are none, backward, forward, full, backward_transitive, forward_transitive and full_transitive"
            ),
        )
    }
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(400, 400, message)
    }
    fn storage(e: impl fmt::Display) -> Self {
        Self::new(500, 50001, format!("Error in the backend data store: {e}"))
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct StoredSchema {
    /// The text as first registered; served back unchanged.
    schema: String,
    /// The JSON re-serialized with sorted keys and no spaces: two texts that
    /// differ only in layout are the same schema and get the same id.
    normalized: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct SubjectVersion {
    version: u32,
    id: u32,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct State {
    next_id: u32,
    schemas: BTreeMap<u32, StoredSchema>,
    subjects: BTreeMap<String, Vec<SubjectVersion>>,
    global_compatibility: Compatibility,
    subject_compatibility: BTreeMap<String, Compatibility>,
}

/// A version of a subject, as the REST API returns it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VersionInfo {
    pub subject: String,
    pub version: u32,
    pub id: u32,
    pub schema: String,
}

/// The registry's data, optionally kept in a JSON file.
#[derive(Debug)]
pub struct Store {
    state: State,
    file: Option<PathBuf>,
}

fn parse(schema: &str) -> Result<(Schema, String), ApiError> {
    let json: serde_json::Value = serde_json::from_str(schema).map_err(ApiError::invalid_schema)?;
    let parsed = Schema::parse(&json).map_err(ApiError::invalid_schema)?;
    // The schema's identity: the same schema with its keys in another
    // order gets the same id.
    Ok((parsed, vecsync_schemas::json::canonical(&json)))
}

impl Store {
    /// An empty store kept in memory only.
    pub fn in_memory() -> Self {
        Self {
            state: State {
                next_id: 1,
                ..State::default()
            },
            file: None,
        }
    }

    /// A store kept in `path`, loaded from it if it exists.
    pub fn open(path: &Path) -> Result<Self, String> {
        let state = match std::fs::read(path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map_err(|e| format!("registry data file {} is corrupt: {e}", path.display()))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => State {
                next_id: 1,
                ..State::default()
            },
            Err(e) => {
                return Err(format!(
                    "cannot read registry data file {}: {e}",
                    path.display()
                ));
            }
        };
        Ok(Self {
            state,
            file: Some(path.to_owned()),
        })
    }

    /// Writes the state to the data file, atomically (write, then rename).
    fn persist(&self) -> Result<(), ApiError> {
        let Some(path) = &self.file else {
            return Ok(());
        };
        let tmp = path.with_extension("tmp");
        let bytes = serde_json::to_vec_pretty(&self.state).map_err(ApiError::storage)?;
        std::fs::write(&tmp, bytes).map_err(ApiError::storage)?;
        std::fs::rename(&tmp, path).map_err(ApiError::storage)
    }

    pub fn subjects(&self) -> Vec<String> {
        self.state.subjects.keys().cloned().collect()
    }

    fn versions_of(&self, subject: &str) -> Result<&[SubjectVersion], ApiError> {
        self.state
            .subjects
            .get(subject)
            .map(Vec::as_slice)
            .ok_or_else(|| ApiError::subject_not_found(subject))
    }

    pub fn versions(&self, subject: &str) -> Result<Vec<u32>, ApiError> {
        Ok(self
            .versions_of(subject)?
            .iter()
            .map(|v| v.version)
            .collect())
    }

    fn info(&self, subject: &str, v: &SubjectVersion) -> VersionInfo {
        VersionInfo {
            subject: subject.to_owned(),
            version: v.version,
            id: v.id,
            schema: self.state.schemas[&v.id].schema.clone(),
        }
    }

    /// A version by number or `latest` (also `-1`, as Confluent allows).
    pub fn version(&self, subject: &str, version: &str) -> Result<VersionInfo, ApiError> {
        let versions = self.versions_of(subject)?;
        let found = match version {
            "latest" | "-1" => versions.last(),
            v => {
                let n: u32 = v
                    .parse()
                    .ok()
                    .filter(|n| *n >= 1 && *n <= i32::MAX as u32)
                    .ok_or_else(|| ApiError::invalid_version(v))?;
                versions.iter().find(|sv| sv.version == n)
            }
        };
        found
            .map(|v| self.info(subject, v))
            .ok_or_else(|| ApiError::version_not_found(subject, version))
    }

    pub fn schema_by_id(&self, id: u32) -> Result<&str, ApiError> {
        self.state
            .schemas
            .get(&id)
            .map(|s| s.schema.as_str())
            .ok_or_else(|| ApiError::schema_not_found(id))
    }

    /// Subjects that hold the schema `id`.
    pub fn subjects_of(&self, id: u32) -> Result<Vec<String>, ApiError> {
        self.schema_by_id(id)?;
        Ok(self
            .state
            .subjects
            .iter()
            .filter(|(_, vs)| vs.iter().any(|v| v.id == id))
            .map(|(s, _)| s.clone())
            .collect())
    }

    /// The version of `subject` that holds exactly `schema`.
    pub fn lookup(&self, subject: &str, schema: &str) -> Result<VersionInfo, ApiError> {
        let (_, normalized) = parse(schema)?;
        self.find_version(subject, &normalized)?
            .map(|v| self.info(subject, v))
            .ok_or_else(|| ApiError::schema_not_found("under this subject"))
    }

    fn find_version(
        &self,
        subject: &str,
        normalized: &str,
    ) -> Result<Option<&SubjectVersion>, ApiError> {
        Ok(self
            .versions_of(subject)?
            .iter()
            .find(|v| self.state.schemas[&v.id].normalized == normalized))
    }

    pub fn global_compatibility(&self) -> Compatibility {
        self.state.global_compatibility
    }

    pub fn subject_compatibility(&self, subject: &str) -> Option<Compatibility> {
        self.state.subject_compatibility.get(subject).copied()
    }

    fn effective_compatibility(&self, subject: &str) -> Compatibility {
        self.subject_compatibility(subject)
            .unwrap_or(self.state.global_compatibility)
    }

    pub fn set_global_compatibility(&mut self, level: Compatibility) -> Result<(), ApiError> {
        self.state.global_compatibility = level;
        self.persist()
    }

    pub fn set_subject_compatibility(
        &mut self,
        subject: &str,
        level: Option<Compatibility>,
    ) -> Result<(), ApiError> {
        match level {
            Some(l) => self
                .state
                .subject_compatibility
                .insert(subject.to_owned(), l),
            None => self.state.subject_compatibility.remove(subject),
        };
        self.persist()
    }

    /// Why `new` may not follow `old` under `level`, if it may not.
    fn incompatibility(level: Compatibility, old: &Schema, new: &Schema) -> Option<String> {
        let mut problems = Vec::new();
        if level.needs_backward()
            && let Err(e) = SchemaCompatibility::can_read(old, new)
        {
            problems.push(format!(
                "the new schema cannot read data written with the old one: {e}"
            ));
        }
        if level.needs_forward()
            && let Err(e) = SchemaCompatibility::can_read(new, old)
        {
            problems.push(format!(
                "the old schema cannot read data written with the new one: {e}"
            ));
        }
        (!problems.is_empty()).then(|| problems.join("; "))
    }

    /// Checks `schema` against the versions `level` asks for (the latest,
    /// or all of them when transitive; or only `against` when given).
    /// Returns the reasons it is incompatible; empty when compatible.
    pub fn check(
        &self,
        subject: &str,
        schema: &str,
        against: Option<&str>,
    ) -> Result<Vec<String>, ApiError> {
        let (new, _) = parse(schema)?;
        self.check_parsed(subject, &new, against)
    }

    fn check_parsed(
        &self,
        subject: &str,
        new: &Schema,
        against: Option<&str>,
    ) -> Result<Vec<String>, ApiError> {
        let level = self.effective_compatibility(subject);
        let Some(versions) = self.state.subjects.get(subject) else {
            if against.is_some() {
                return Err(ApiError::subject_not_found(subject));
            }
            return Ok(Vec::new());
        };
        let olds: Vec<&SubjectVersion> = match against {
            Some(v) => {
                let info = self.version(subject, v)?;
                versions
                    .iter()
                    .filter(|sv| sv.version == info.version)
                    .collect()
            }
            None if level.transitive() => versions.iter().collect(),
            None => versions.last().into_iter().collect(),
        };
        let mut reasons = Vec::new();
        for old in olds {
            let (old_schema, _) = parse(&self.state.schemas[&old.id].schema)?;
            if let Some(why) = Self::incompatibility(level, &old_schema, new) {
                reasons.push(format!("version {} ({level}): {why}", old.version));
            }
        }
        Ok(reasons)
    }

    /// Registers `schema` under `subject`: the same schema gets the id it
    /// already has; a new one must pass the subject's compatibility level.
    pub fn register(&mut self, subject: &str, schema: &str) -> Result<u32, ApiError> {
        let (parsed, normalized) = parse(schema)?;
        if let Ok(Some(existing)) = self.find_version(subject, &normalized) {
            return Ok(existing.id);
        }
        let reasons = self.check_parsed(subject, &parsed, None)?;
        if !reasons.is_empty() {
            return Err(ApiError::new(
                409,
                409,
                format!(
                    "Schema being registered is incompatible with an earlier schema for subject \"{subject}\", details: [{}]",
                    reasons.join(", ")
                ),
            ));
        }
        let id = match self
            .state
            .schemas
            .iter()
            .find(|(_, s)| s.normalized == normalized)
        {
            Some((&id, _)) => id,
            None => {
                let id = self.state.next_id;
                self.state.next_id += 1;
                self.state.schemas.insert(
                    id,
                    StoredSchema {
                        schema: schema.to_owned(),
                        normalized,
                    },
                );
                id
            }
        };
        let versions = self.state.subjects.entry(subject.to_owned()).or_default();
        let version = versions.last().map_or(1, |v| v.version + 1);
        versions.push(SubjectVersion { version, id });
        self.persist()?;
        Ok(id)
    }

    /// Deletes a subject and returns the versions it had. Schema ids stay
    /// valid, so records already written remain readable.
    pub fn delete_subject(&mut self, subject: &str) -> Result<Vec<u32>, ApiError> {
        let versions = self.versions(subject)?;
        self.state.subjects.remove(subject);
        self.state.subject_compatibility.remove(subject);
        self.persist()?;
        Ok(versions)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(fields: &str) -> String {
        format!(r#"{{"type":"record","name":"R","fields":[{fields}]}}"#)
    }

    #[test]
    fn compatibility_levels_follow_confluent() {
        let v1 = record(r#"{"name":"a","type":"int"}"#);
        // Adds a field with a default: backward and forward compatible.
        let with_default =
            record(r#"{"name":"a","type":"int"},{"name":"b","type":"string","default":""}"#);
        // Adds a field without a default: forward compatible only.
        let without_default = record(r#"{"name":"a","type":"int"},{"name":"b","type":"string"}"#);
        // Drops the only field and adds another without default: neither.
        let unrelated = record(r#"{"name":"c","type":"string"}"#);

        let cases = [
            (Compatibility::Backward, &with_default, true),
            (Compatibility::Backward, &without_default, false),
            (Compatibility::Forward, &without_default, true),
            (Compatibility::Forward, &unrelated, false),
            (Compatibility::Full, &with_default, true),
            (Compatibility::Full, &without_default, false),
            (Compatibility::None, &unrelated, true),
        ];
        for (level, candidate, ok) in cases {
            let mut store = Store::in_memory();
            store.set_subject_compatibility("s", Some(level)).unwrap();
            store.register("s", &v1).unwrap();
            let result = store.register("s", candidate);
            assert_eq!(result.is_ok(), ok, "{level} {candidate}: {result:?}");
            if let Err(e) = result {
                assert_eq!((e.status, e.error_code), (409, 409));
            }
        }
    }

    #[test]
    fn transitive_levels_check_every_version() {
        let v1 = record(r#"{"name":"a","type":"int"}"#);
        let v2 = record(r#"{"name":"a","type":"int"},{"name":"b","type":"int","default":0}"#);
        // v3 makes b required: it reads v2's data (which has b) but not v1's.
        let v3 = record(r#"{"name":"a","type":"int"},{"name":"b","type":"int"}"#);
        let mut plain = Store::in_memory();
        let mut transitive = Store::in_memory();
        transitive
            .set_global_compatibility(Compatibility::BackwardTransitive)
            .unwrap();
        for store in [&mut plain, &mut transitive] {
            store.register("s", &v1).unwrap();
            store.register("s", &v2).unwrap();
        }
        assert!(plain.register("s", &v3).is_ok());
        let err = transitive.register("s", &v3).unwrap_err();
        assert!(err.message.contains("version 1"), "{}", err.message);
    }

    #[test]
    fn same_schema_same_id_across_layout_and_subjects() {
        let mut store = Store::in_memory();
        let a = store
            .register("s", r#"{"type": "record", "name": "R", "fields": []}"#)
            .unwrap();
        let b = store
            .register("s", r#"{"fields":[],"name":"R","type":"record"}"#)
            .unwrap();
        let c = store
            .register("t", r#"{"type":"record","name":"R","fields":[]}"#)
            .unwrap();
        assert_eq!((a, b, c), (1, 1, 1));
        assert_eq!(store.versions("s").unwrap(), vec![1]);
        assert_eq!(
            store.subjects_of(1).unwrap(),
            vec!["s".to_owned(), "t".to_owned()]
        );
    }

    #[test]
    fn bad_requests_get_confluent_codes() {
        let mut store = Store::in_memory();
        assert_eq!(store.register("s", "{").unwrap_err().error_code, 42201);
        assert_eq!(
            store
                .register("s", r#"{"type":"nope"}"#)
                .unwrap_err()
                .error_code,
            42201
        );
        assert_eq!(store.versions("missing").unwrap_err().error_code, 40401);
        store.register("s", r#""int""#).unwrap();
        assert_eq!(store.version("s", "7").unwrap_err().error_code, 40402);
        assert_eq!(store.version("s", "x").unwrap_err().error_code, 42202);
        assert_eq!(store.schema_by_id(9).unwrap_err().error_code, 40403);
        assert_eq!(store.version("s", "latest").unwrap().id, 1);
    }

    #[test]
    fn a_data_file_keeps_ids_across_restarts() {
        let dir = std::env::temp_dir().join(format!("vecsync-registry-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("registry.json");
        let _ = std::fs::remove_file(&path);
        {
            let mut store = Store::open(&path).unwrap();
            store.register("a", r#""int""#).unwrap();
            store.register("b", r#""string""#).unwrap();
            store
                .set_subject_compatibility("b", Some(Compatibility::Full))
                .unwrap();
        }
        let mut store = Store::open(&path).unwrap();
        assert_eq!(store.version("b", "latest").unwrap().id, 2);
        assert_eq!(store.subject_compatibility("b"), Some(Compatibility::Full));
        assert_eq!(store.register("c", r#""long""#).unwrap(), 3);
        std::fs::write(&path, "not json").unwrap();
        assert!(Store::open(&path).unwrap_err().contains("corrupt"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
