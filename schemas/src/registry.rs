//! The Schema Registry client: registering the schemas this build writes and
//! fetching writer schemas by id, over Confluent's REST API through
//! `schema_registry_converter`.

use crate::config::RegistryConfig;
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
    /// The registry refused the credentials (401) or the access (403).
    refused: bool,
}

impl RegistryError {
    /// True for outages (connection refused, timeouts, 5xx), false for
    /// answers such as "schema not found" or "incompatible schema".
    pub fn is_retriable(&self) -> bool {
        self.retriable
    }

    /// True when the registry refused the credentials or the access: wrong
    /// user or password, or a user without the right to read schemas. No
    /// retry helps; the component stops.
    pub fn is_refused(&self) -> bool {
        self.refused
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
    /// For [`RegistryClient::check`], which needs the whole cause of a
    /// failed connection; the settings' client keeps only its summary.
    http: reqwest::Client,
    basic: Option<(String, Option<String>)>,
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
    /// A client for the registry at `url`, with a request timeout, no
    /// credentials and the system's CAs.
    pub fn new(url: &str, timeout: Duration) -> Result<Self, RegistryError> {
        Self::from_config(&RegistryConfig {
            url: url.to_owned(),
            timeout_ms: timeout.as_millis().try_into().unwrap_or(u64::MAX),
            username: None,
            password_env: None,
            password_file: None,
            ca_file: None,
        })
    }

    /// A client for `[registry]`: its URL and timeout, basic auth with the
    /// password read now, and the CAs of `ca_file` trusted besides the
    /// system's.
    pub fn from_config(config: &RegistryConfig) -> Result<Self, RegistryError> {
        let url = config.url.as_str();
        let refuse = |message: String| RegistryError {
            url: url.to_owned(),
            message,
            retriable: false,
            refused: false,
        };
        let mut builder = SrSettings::new_builder(url.trim_end_matches('/').to_owned());
        let timeout = Duration::from_millis(config.timeout_ms);
        builder.set_timeout(timeout);
        let mut basic = None;
        if let Some(user) = &config.username {
            let password = config.password().map_err(|e| refuse(e.to_string()))?;
            builder.set_basic_authorization(user, password.as_deref());
            basic = Some((user.clone(), password));
        }
        let mut client = reqwest::Client::builder().timeout(timeout);
        let mut check = reqwest::Client::builder().timeout(timeout);
        if let Some(path) = &config.ca_file {
            let pem = std::fs::read(path).map_err(|e| {
                refuse(format!(
                    "registry.ca_file: cannot read {}: {e}",
                    path.display()
                ))
            })?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem)
                .ok()
                .filter(|certs| !certs.is_empty())
                .ok_or_else(|| {
                    refuse(format!(
                        "registry.ca_file: {} holds no PEM certificate",
                        path.display()
                    ))
                })?;
            client = client.tls_certs_merge(certs.clone());
            check = check.tls_certs_merge(certs);
        }
        let settings = builder
            .build_with(client)
            .map_err(|e| Self::error(url, &e))?;
        Ok(Self {
            http: check
                .build()
                .map_err(|e| refuse(format!("cannot make an HTTP client: {e}")))?,
            basic,
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
            refused: ["status 401", "status 403"]
                .iter()
                .any(|status| e.error.contains(status)),
        }
    }

    /// Asks the registry for its subjects. A refused login or access, and a
    /// TLS handshake that fails (an untrusted certificate), are refused
    /// errors with the whole cause; an outage is retriable.
    pub async fn check(&self) -> Result<(), RegistryError> {
        let mut request = self
            .http
            .get(format!("{}/subjects", self.url.trim_end_matches('/')));
        if let Some((user, password)) = &self.basic {
            request = request.basic_auth(user, password.as_ref());
        }
        let failure = |message: String, retriable: bool, refused: bool| RegistryError {
            url: self.url.clone(),
            message,
            retriable,
            refused,
        };
        match request.send().await {
            Ok(answer) if answer.status().is_success() => Ok(()),
            Ok(answer) => {
                let status = answer.status();
                Err(failure(
                    format!("answered status {status}"),
                    status.is_server_error(),
                    matches!(status.as_u16(), 401 | 403),
                ))
            }
            Err(e) => {
                let mut cause = e.to_string();
                let mut source = std::error::Error::source(&e);
                while let Some(s) = source {
                    cause = format!("{cause}: {s}");
                    source = s.source();
                }
                let tls = ["certificate", "handshake", "SSL"]
                    .iter()
                    .any(|w| cause.contains(w));
                Err(failure(cause, !tls, tls))
            }
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
