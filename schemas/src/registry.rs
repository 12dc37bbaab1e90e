//! The Schema Registry client: registering the schemas this build writes and
//! fetching writer schemas by id, over Confluent's REST API through
//! `schema_registry_converter`.

use apache_avro::Schema;
use schema_registry_converter::async_impl::avro::AvroDecoder;
use schema_registry_converter::async_impl::schema_registry::{
    SrSettings, get_all_subjects, post_schema,
};
use schema_registry_converter::error::SRCError;
use schema_registry_converter::schema_registry_common::{SchemaType, SuppliedSchema};
use std::sync::Arc;
use std::time::Duration;

/// A registry request that failed.
#[derive(Debug, Clone, thiserror::Error)]
#[error("schema registry at {url}: {message}")]
pub struct RegistryError {
    url: String,
    message: String,
    retriable: bool,
}

impl RegistryError {
    /// True for outages (connection refused, timeouts, 5xx), false for
    /// answers such as "schema not found" or "incompatible schema".
    pub fn is_retriable(&self) -> bool {
        self.retriable
    }
}

/// The subject a topic's values are registered under (TopicNameStrategy).
pub fn value_subject(topic: &str) -> String {
    format!("{topic}-value")
}

/// A client for one Schema Registry (Confluent, Karapace, Apicurio in its
/// Confluent mode, Redpanda, or the development registry of `vecsync-devkit`).
pub struct RegistryClient {
    url: String,
    settings: SrSettings,
    /// Caches writer schemas by id; schemas never change once registered.
    decoder: AvroDecoder,
}

impl std::fmt::Debug for RegistryClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegistryClient")
            .field("url", &self.url)
            .finish()
    }
}

impl RegistryClient {
    /// A client for the registry at `url`, with a request timeout.
    pub fn new(url: &str, timeout: Duration) -> Result<Self, RegistryError> {
        let settings = SrSettings::new_builder(url.trim_end_matches('/').to_owned())
            .set_timeout(timeout)
            .build()
            .map_err(|e| Self::error(url, &e))?;
        Ok(Self {
            url: url.to_owned(),
            decoder: AvroDecoder::new(settings.clone()),
            settings,
        })
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    fn error(url: &str, e: &SRCError) -> RegistryError {
        RegistryError {
            url: url.to_owned(),
            message: e.to_string(),
            retriable: e.retriable,
        }
    }

    /// Registers `schema` under `subject` and returns its id. Registering a
    /// schema that is already there returns the id it already has.
    pub async fn register(&self, subject: &str, schema: &str) -> Result<u32, RegistryError> {
        let supplied = SuppliedSchema::new(None, SchemaType::Avro, schema.to_owned());
        post_schema(&self.settings, subject.to_owned(), supplied)
            .await
            .map(|registered| registered.id)
            .map_err(|e| Self::error(&self.url, &e))
    }

    /// Every subject the registry holds; also a cheap reachability check.
    pub async fn subjects(&self) -> Result<Vec<String>, RegistryError> {
        get_all_subjects(&self.settings)
            .await
            .map_err(|e| Self::error(&self.url, &e))
    }

    /// The writer schema registered under `id`.
    pub async fn schema(&self, id: u32) -> Result<Arc<Schema>, RegistryError> {
        let schema = self
            .decoder
            .get_schema(id)
            .await
            .map_err(|e| Self::error(&self.url, &e))?;
        Ok(Arc::new(schema.parsed.clone()))
    }
}
