//! Opt-in dynamic micro-batching (as Triton's dynamic batcher): concurrent predict requests
//! for one model version wait at most a fixed delay in a queue, and the windows of everything
//! queued by then run through the engine's batch path together. Each request gets exactly the
//! predictions it would have got alone (the batch path gives the single path's bits, tested in
//! the engine), so batching only trades a bounded wait for throughput.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TryRecvError, TrySendError};
use std::thread::Thread;
use std::time::{Duration, Instant};

use tns_engine::{Engine, EngineError, Prediction};

use crate::error::ApiError;

/// How requests are batched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MicroBatching {
    /// The longest a request waits in the queue for others to join its batch.
    pub max_delay: Duration,
    /// Windows at which a batch runs without waiting any longer.
    pub max_windows: usize,
    /// Requests the queue holds; one more is answered 503 at once.
    pub queue: usize,
}

/// What a queued request gets: its predictions, and the windows of the batch it ran in.
type Reply = Result<(Vec<Prediction>, usize), EngineError>;

/// One request in the queue: its windows and where its predictions go.
struct Job {
    windows: Vec<f64>,
    reply: tokio::sync::oneshot::Sender<Reply>,
}

/// The queue of one model version and the thread that empties it; the thread ends when the
/// version is dropped (after a reload, once its last request is answered).
pub(crate) struct Batcher {
    queue: SyncSender<Job>,
    capacity: usize,
    /// Windows sent and not yet taken into a batch, which tells a request whether the
    /// waiting batch is full.
    queued: Arc<AtomicUsize>,
    max_windows: usize,
    /// The batching thread, woken when its batch fills before the delay is up.
    thread: Thread,
    /// Values of a window.
    per: usize,
}

impl std::fmt::Debug for Batcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Batcher")
    }
}

impl Batcher {
    /// Starts the batching thread of `engine`.
    pub(crate) fn start(engine: Arc<Engine>, config: MicroBatching) -> std::io::Result<Self> {
        let (queue, jobs) = std::sync::mpsc::sync_channel(config.queue.max(1));
        let queued = Arc::new(AtomicUsize::new(0));
        let per = engine.input_len().max(1);
        let taken = queued.clone();
        let thread = std::thread::Builder::new()
            .name("tns-batcher".into())
            .spawn(move || run(&engine, &jobs, &taken, config))?
            .thread()
            .clone();
        Ok(Self {
            queue,
            capacity: config.queue.max(1),
            queued,
            max_windows: config.max_windows,
            thread,
            per,
        })
    }

    /// Queues `windows` (whole windows, flat) and waits for their predictions and the size
    /// of the batch they ran in.
    pub(crate) async fn predict(&self, windows: Vec<f64>) -> Result<Reply, ApiError> {
        let (reply, answer) = tokio::sync::oneshot::channel();
        let count = windows.len() / self.per;
        // Counted before it is sent, so that the thread never takes more than was counted.
        let queued = self.queued.fetch_add(count, Ordering::AcqRel) + count;
        if let Err(e) = self.queue.try_send(Job { windows, reply }) {
            self.queued.fetch_sub(count, Ordering::AcqRel);
            return Err(match e {
                TrySendError::Full(_) => ApiError::Overloaded(self.capacity),
                TrySendError::Disconnected(_) => {
                    ApiError::Internal("the batching thread stopped".into())
                }
            });
        }
        if queued >= self.max_windows {
            self.thread.unpark();
        }
        answer
            .await
            .map_err(|_| ApiError::Internal("the batching thread dropped a request".into()))
    }
}

/// Takes the first request, gathers more until `max_delay` has passed since it arrived or
/// `max_windows` are queued, predicts them as one batch and answers each.
///
/// While it gathers, the thread sleeps (parked) until the delay is up and is woken early
/// only by the request that fills the batch: waking it for every request, as a blocking
/// receive would, costs two context switches per request, which on a server with one core
/// is more than the batching saves.
fn run(engine: &Engine, jobs: &Receiver<Job>, queued: &AtomicUsize, config: MicroBatching) {
    let per = engine.input_len().max(1);
    let mut batch: Vec<Job> = Vec::new();
    while let Ok(first) = jobs.recv() {
        let deadline = Instant::now() + config.max_delay;
        let mut windows = first.windows.len() / per;
        batch.push(first);
        'gather: loop {
            while windows < config.max_windows {
                match jobs.try_recv() {
                    Ok(job) => {
                        windows += job.windows.len() / per;
                        batch.push(job);
                    }
                    Err(TryRecvError::Empty) => break,
                    Err(TryRecvError::Disconnected) => break 'gather,
                }
            }
            let now = Instant::now();
            if windows >= config.max_windows || now >= deadline {
                break;
            }
            // Wakes early (at worst spuriously) when a request fills the batch; the loop
            // looks again either way.
            std::thread::park_timeout(deadline - now);
        }
        queued.fetch_sub(windows, Ordering::AcqRel);
        answer(engine, &mut batch);
    }
}

/// Predicts every queued request's windows together and sends each its share. A request
/// with a bad window would fail the whole batch, so then each request runs alone and gets
/// its own answer.
fn answer(engine: &Engine, batch: &mut Vec<Job>) {
    let flat: Vec<f64> = batch
        .iter()
        .flat_map(|j| j.windows.iter().copied())
        .collect();
    if let Ok(all) = engine.predict_all(&flat) {
        let windows = all.len();
        let mut predictions = all.into_iter();
        let per = engine.input_len().max(1);
        for job in batch.drain(..) {
            let mine: Vec<Prediction> =
                predictions.by_ref().take(job.windows.len() / per).collect();
            // A request whose client went away has no one to answer.
            let _ = job.reply.send(Ok((mine, windows)));
        }
        return;
    }
    for job in batch.drain(..) {
        let single = job.windows.len() == engine.input_len();
        let answer = engine
            .predict_all(&job.windows)
            .map(|p| {
                let n = p.len();
                (p, n)
            })
            .map_err(|e| match e {
                // One window alone: the error a request answered without batching gets.
                EngineError::BatchInput { source, .. } if single => EngineError::Input(source),
                e => e,
            });
        let _ = job.reply.send(answer);
    }
}
