//! Whether a worker is ready to serve its region, for `/readyz`: every
//! source has its partitions assigned, and the store and the schema
//! registry answer. The worker keeps it up to date; the API reads it.

use std::sync::{Arc, Mutex, PoisonError};

#[derive(Debug, Default)]
struct State {
    /// Per source: its label and whether its partitions are assigned.
    sources: Vec<(String, bool)>,
    /// The last probe's failure of the store, of the registry; `None` once
    /// a probe succeeded.
    store: Option<String>,
    registry: Option<String>,
}

/// A worker's readiness, shared between the worker and its API.
#[derive(Debug, Clone, Default)]
pub struct Readiness(Arc<Mutex<State>>);

/// What has not been checked yet reads as this.
const UNCHECKED: &str = "not checked yet";

impl Readiness {
    pub fn new() -> Self {
        Self::default()
    }

    /// The worker's sources, none assigned yet, and neither store nor
    /// registry checked yet.
    pub(crate) fn start(&self, sources: Vec<String>) {
        let mut s = self.lock();
        s.sources = sources.into_iter().map(|label| (label, false)).collect();
        s.store = Some(UNCHECKED.into());
        s.registry = Some(UNCHECKED.into());
    }

    /// Source `index` has its assignment (possibly no partitions, when a
    /// group has more workers than partitions), or lost it.
    pub(crate) fn assigned(&self, index: usize, assigned: bool) {
        if let Some(source) = self.lock().sources.get_mut(index) {
            source.1 = assigned;
        }
    }

    /// The last probe of the store: `Err` holds why it failed.
    pub(crate) fn store(&self, result: Result<(), String>) {
        self.lock().store = result.err();
    }

    /// The last probe of the schema registry.
    pub(crate) fn registry(&self, result: Result<(), String>) {
        self.lock().registry = result.err();
    }

    /// `Ok` when ready; otherwise every reason it is not, one per line.
    pub fn check(&self) -> Result<(), Vec<String>> {
        let s = self.lock();
        if s.sources.is_empty() && s.store.is_none() && s.registry.is_none() {
            return Err(vec!["the worker has not started".into()]);
        }
        let mut not = Vec::new();
        for (label, assigned) in &s.sources {
            if !assigned {
                not.push(format!("source {label}: no partitions assigned yet"));
            }
        }
        if let Some(e) = &s.store {
            not.push(format!("store: {e}"));
        }
        if let Some(e) = &s.registry {
            not.push(format!("schema registry: {e}"));
        }
        if not.is_empty() { Ok(()) } else { Err(not) }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_only_once_every_source_is_assigned_and_both_probes_pass() {
        let r = Readiness::new();
        assert_eq!(r.check().unwrap_err(), ["the worker has not started"]);
        r.start(vec![
            "us-east.vecsync.deltas".into(),
            "vecsync.deltas".into(),
        ]);
        assert_eq!(r.check().unwrap_err().len(), 4);
        r.assigned(0, true);
        r.assigned(1, true);
        r.store(Ok(()));
        r.registry(Err("connection refused".into()));
        assert_eq!(
            r.check().unwrap_err(),
            ["schema registry: connection refused"]
        );
        r.registry(Ok(()));
        assert_eq!(r.check(), Ok(()));
        r.assigned(1, false);
        assert_eq!(
            r.check().unwrap_err(),
            ["source vecsync.deltas: no partitions assigned yet"]
        );
    }
}
