//! Expiry between batches: tombstones and delta chains older than the
//! horizon are cleared a page at a time.

use super::*;

/// An expiry pass over every collection, a page per step.
pub(super) struct ExpiryRound {
    pub(super) horizon: Hlc,
    /// Collections still to do, the first under way: where its pass has
    /// come to and what it expired so far.
    pub(super) todo: VecDeque<(String, Pass, Expired)>,
}

impl ExpiryRound {
    pub(super) fn new<'a>(horizon_ms: u64, collections: impl Iterator<Item = &'a String>) -> Self {
        Self {
            horizon: Hlc::new(horizon_ms, 0, ""),
            todo: collections
                .map(|name| (name.clone(), Pass::default(), Expired::default()))
                .collect(),
        }
    }
}

impl Sink {
    /// One page of an expiry round: clears tombstones and folds delta
    /// chains older than its horizon in the next page of the collection it
    /// has come to. True once the round is over: every collection done, or
    /// a failure (logged; the next round tries again). A page at a time
    /// between batches, so that a large collection never holds applying up
    /// for long, and nothing the round rewrites races a batch.
    pub(super) async fn expire_step(&self, round: &mut ExpiryRound) -> bool {
        let Some(front) = round.todo.front_mut() else {
            return true;
        };
        let (name, pass) = (front.0.clone(), front.1.clone());
        let (store, horizon) = (self.store.clone(), round.horizon.clone());
        let step = async {
            let (page, next) =
                off_loop(move || store.plan_expiry(&name, &horizon, pass, SCAN_PAGE)).await?;
            // Dead-lettered before the store forgets them: a failure here
            // leaves them parked for the next round to try again.
            for dropped in &page.never_applied {
                self.dead_letters
                    .send_never_applied(&front.0, dropped)
                    .await?;
            }
            let (store, name) = (self.store.clone(), front.0.clone());
            off_loop(move || {
                let expired = store.carry_out(&name, page)?;
                if next == Pass::Done {
                    store.flush()?;
                }
                Ok::<_, WorkerError>((expired, next))
            })
            .await
        };
        let (expired, next) = match step.await {
            Ok(step) => step,
            Err(e) => {
                tracing::warn!("expiry failed, will try again: {e}");
                return true;
            }
        };
        DeltasDropped {
            collection: &front.0,
            reason: "base_never_came",
            count: expired.parked_dropped,
        }
        .emit();
        front.1 = next;
        front.2 += expired;
        if front.1 == Pass::Done {
            tracing::info!(
                collection = front.0,
                expired = ?front.2,
                "expired what is older than the horizon"
            );
            round.todo.pop_front();
        }
        round.todo.is_empty()
    }
}
