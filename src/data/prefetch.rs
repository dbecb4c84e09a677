//! A background thread that prepares batches ahead of the consumer (Caffe's
//! BasePrefetchingDataLayer with `prefetch` batches in flight).
use std::sync::mpsc::{Receiver, Sender, SyncSender, channel, sync_channel};
use std::thread::JoinHandle;

use anyhow::{Result, anyhow};

/// One prepared batch: `data` [N, C, H, W] and `label` [N] (empty when the layer has no label top).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Batch {
    pub data: Vec<f32>,
    pub label: Vec<f32>,
}

/// Runs a producer on its own thread and hands out what it makes, in order.
///
/// The producer is built on the worker thread by `init` (so it may hold non-`Send` state such
/// as a LevelDB handle). It receives a used item handed back with [`recycle`](Self::recycle)
/// when one is available, so big buffers are reused instead of re-allocated (Caffe's free
/// queue). The first error ends the worker; it is returned by the next [`next`](Self::next_item)
/// call and repeated by every later call.
pub struct Prefetcher<T: Send + 'static> {
    rx: Option<Receiver<Result<T>>>,
    free: Option<Sender<T>>,
    handle: Option<JoinHandle<()>>,
    failed: Option<String>,
}

impl<T: Send + 'static> Prefetcher<T> {
    /// Starts the worker; at most `depth` items are prepared ahead (at least 1).
    pub fn spawn<I, P>(name: &str, depth: usize, init: I) -> Result<Self>
    where
        I: FnOnce() -> Result<P> + Send + 'static,
        P: FnMut(Option<T>) -> Result<T>,
    {
        let (tx, rx): (SyncSender<Result<T>>, Receiver<Result<T>>) = sync_channel(depth.max(1) - 1);
        let (free_tx, free_rx) = channel::<T>();
        let handle = std::thread::Builder::new()
            .name(format!("prefetch {name}"))
            .spawn(move || {
                let mut produce = match init() {
                    Ok(p) => p,
                    Err(e) => {
                        let _ = tx.send(Err(e));
                        return;
                    }
                };
                loop {
                    let item = produce(free_rx.try_recv().ok());
                    let stop = item.is_err();
                    if tx.send(item).is_err() || stop {
                        return;
                    }
                }
            })
            .map_err(|e| anyhow!("cannot start the prefetch thread: {e}"))?;
        Ok(Prefetcher {
            rx: Some(rx),
            free: Some(free_tx),
            handle: Some(handle),
            failed: None,
        })
    }

    /// Hands a consumed item back to the worker for reuse.
    pub fn recycle(&self, item: T) {
        if let Some(free) = &self.free {
            let _ = free.send(item);
        }
    }

    /// The next item, waiting for the worker if it is not ready yet.
    pub fn next_item(&mut self) -> Result<T> {
        if let Some(msg) = &self.failed {
            return Err(anyhow!("{msg}"));
        }
        let rx = self
            .rx
            .as_ref()
            .ok_or_else(|| anyhow!("prefetch thread stopped"))?;
        match rx.recv() {
            Ok(Ok(item)) => Ok(item),
            Ok(Err(e)) => {
                self.failed = Some(format!("{e:#}"));
                Err(e)
            }
            Err(_) => {
                let msg = "prefetch thread stopped unexpectedly".to_string();
                self.failed = Some(msg.clone());
                Err(anyhow!(msg))
            }
        }
    }
}

impl<T: Send + 'static> Drop for Prefetcher<T> {
    fn drop(&mut self) {
        // Closing the channel makes the worker's next send fail, so it stops after its current item.
        drop(self.rx.take());
        drop(self.free.take());
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn in_order_and_errors_stick() {
        let mut p = Prefetcher::spawn("test", 3, || {
            let mut i = 0;
            Ok(move |_: Option<i32>| {
                i += 1;
                if i > 5 {
                    Err(anyhow!("done at {i}"))
                } else {
                    Ok(i)
                }
            })
        })
        .unwrap();
        for want in 1..=5 {
            assert_eq!(p.next_item().unwrap(), want);
        }
        assert!(p.next_item().unwrap_err().to_string().contains("done at 6"));
        assert!(p.next_item().unwrap_err().to_string().contains("done at 6"));
    }

    #[test]
    fn drop_stops_an_endless_worker() {
        let mut p = Prefetcher::spawn("endless", 2, || Ok(|_| Ok(0u8))).unwrap();
        assert_eq!(p.next_item().unwrap(), 0);
        drop(p);
    }
}
