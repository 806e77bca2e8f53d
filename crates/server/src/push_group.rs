//! Group commit for `POST /v1/ops/push`. Pushes that arrive while the store's writer
//! is busy wait in a queue; the next push to get the writer applies every waiting
//! push in one transaction — each inside its own savepoint, so a push that fails
//! changes nothing and the others still land — recomputes the institutions any of
//! them touched once, and commits once: one fsync for the group instead of one per
//! push. Each push is answered only after that commit, as before.
//!
//! Every push's own store task tries to apply the queue, so a push never depends on
//! another task staying alive to be applied: by the time its task holds the writer,
//! either its push was taken by an earlier task (which answers it after committing) or
//! the task takes it itself.

use std::collections::{BTreeSet, VecDeque};
use std::sync::Mutex;

use sidak_core::wire::{PushRequest, PushResponse};
use tokio::sync::oneshot;

use crate::auth::Principal;
use crate::db::on_blocking_thread;
use crate::error::ApiError;
use crate::push::push;
use crate::results;
use crate::state::AppState;

/// At most this many ops are applied in one group (a push holds at most
/// `limits::MAX_OPS_PER_PUSH`, 1000): it bounds how long one transaction holds the
/// writer, and so how long a review or an upload waits behind a burst of pushes.
pub const MAX_GROUP_OPS: usize = 8_000;

/// What a push's request handler gets back: the answer and how many ops it stored.
pub type Outcome = Result<(PushResponse, usize), ApiError>;

/// A push waiting for the writer.
struct Waiting {
    who: Principal,
    /// Taken when the push is applied.
    request: Option<PushRequest>,
    ops: usize,
    now: i64,
    answer: oneshot::Sender<Outcome>,
}

/// The pushes waiting for the store's writer.
#[derive(Default)]
pub struct PushQueue {
    waiting: Mutex<VecDeque<Waiting>>,
}

impl PushQueue {
    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<Waiting>> {
        self.waiting.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn is_empty(&self) -> bool {
        self.lock().is_empty()
    }

    /// The waiting pushes, oldest first, up to [`MAX_GROUP_OPS`] ops (at least one).
    fn take_group(&self) -> Vec<Waiting> {
        let mut waiting = self.lock();
        let mut group = Vec::new();
        let mut ops = 0;
        while let Some(next) = waiting.front() {
            ops += next.ops;
            if !group.is_empty() && ops > MAX_GROUP_OPS {
                break;
            }
            group.extend(waiting.pop_front());
        }
        group
    }
}

/// Applies one push (with whatever else waits for the writer) and returns its answer
/// once the transaction that holds it has committed.
pub async fn apply(state: &AppState, who: Principal, request: PushRequest, now: i64) -> Outcome {
    let answered = submit(state, who, request, now);
    let worker = state.clone();
    tokio::task::spawn_blocking(move || on_blocking_thread(|| apply_waiting(&worker)))
        .await
        .expect("database task panicked");
    answered.await.map_err(|_| ApiError::internal("the push was dropped before it was applied"))?
}

/// Queues a push; its answer comes on the returned channel once a task running
/// [`apply_waiting`] has applied and committed it. [`apply`] does both.
pub fn submit(state: &AppState, who: Principal, request: PushRequest, now: i64) -> oneshot::Receiver<Outcome> {
    let (answer, answered) = oneshot::channel();
    let ops = request.ops.len();
    state.push_queue().lock().push_back(Waiting { who, request: Some(request), ops, now, answer });
    answered
}

/// Applies the waiting pushes in groups until none waits, answering each group after
/// its commit. Returns at once when the queue is empty, which is when an earlier task
/// took the push this task was started for. Blocking: on a store thread.
pub fn apply_waiting(state: &AppState) {
    let queue = state.push_queue();
    loop {
        let mut group = Vec::new();
        let committed = state.db().write_blocking_if(
            || !queue.is_empty(),
            |tx| {
                group = queue.take_group();
                // Read after the group is taken, so that it holds every instrument any of
                // its pushes saw published (the set only grows).
                let instruments = state.instruments();
                let mut outcomes = Vec::with_capacity(group.len());
                let mut dirty = BTreeSet::new();
                for w in &mut group {
                    let Some(request) = w.request.take() else {
                        outcomes.push(Err(ApiError::internal("a push was taken to be applied twice")));
                        continue;
                    };
                    tx.execute_batch("SAVEPOINT push")?;
                    match push(tx, &instruments, &w.who, request, w.now) {
                        Ok((response, effects)) => {
                            tx.execute_batch("RELEASE push")?;
                            dirty.extend(effects.dirty);
                            outcomes.push(Ok((response, effects.stored)));
                        }
                        Err(e) => {
                            tx.execute_batch("ROLLBACK TO push; RELEASE push")?;
                            outcomes.push(Err(e));
                        }
                    }
                }
                for institution in &dirty {
                    results::recompute(tx, &instruments, institution)?;
                }
                Ok::<_, ApiError>(outcomes)
            },
        );
        match committed {
            Ok(None) => return,
            Ok(Some(outcomes)) => {
                for (w, outcome) in group.into_iter().zip(outcomes) {
                    // A handler whose client went away no longer listens: nothing to do.
                    let _ = w.answer.send(outcome);
                }
            }
            Err(e) => {
                // Nothing of the group is stored. If the transaction did not even begin,
                // the group was never taken: answer what waits, so that none waits forever.
                if group.is_empty() {
                    group = queue.take_group();
                }
                for w in group {
                    let _ = w.answer.send(Err(e.clone()));
                }
            }
        }
    }
}
