//! Capturing a worker's stdout and stderr: both pipes are read to their end
//! concurrently (a full pipe would block the worker), totals are counted and
//! only a bounded tail of each is kept.
//!
//! This module also meters stdout and stderr together against a bundle's
//! `max_output_bytes`; it reports when the cap is passed and leaves
//! stopping the process to the executor.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use tokio::io::AsyncReadExt as _;
use tokio_util::sync::CancellationToken;

/// The first read of a pipe asks for this much.
const FIRST_READ: usize = 4 * 1024;

/// Reads grow up to this much, for workers that write a lot.
const LARGEST_READ: usize = 64 * 1024;

/// The last bytes of a stream, at most `capacity` of them.
#[derive(Debug, Clone)]
pub struct Tail {
    bytes: VecDeque<u8>,
    capacity: usize,
    total: u64,
}

impl Tail {
    /// An empty tail keeping at most `capacity` bytes. It takes memory only
    /// as output arrives: most workers write little.
    pub fn new(capacity: usize) -> Self {
        Tail {
            bytes: VecDeque::new(),
            capacity,
            total: 0,
        }
    }

    /// Appends `chunk`, dropping the oldest bytes past the capacity.
    pub fn push(&mut self, chunk: &[u8]) {
        self.total += chunk.len() as u64;
        if chunk.len() >= self.capacity {
            self.bytes.clear();
            self.bytes.extend(&chunk[chunk.len() - self.capacity..]);
            return;
        }
        let overflow = (self.bytes.len() + chunk.len()).saturating_sub(self.capacity);
        self.bytes.drain(..overflow);
        self.bytes.extend(chunk);
    }

    /// Every byte pushed so far, kept or not.
    pub fn total(&self) -> u64 {
        self.total
    }

    /// Whether bytes were dropped from the front.
    pub fn is_truncated(&self) -> bool {
        self.total > self.bytes.len() as u64
    }

    /// The kept bytes as text: when bytes were dropped, the partial UTF-8
    /// sequence at the front is skipped so the text starts on a character
    /// boundary; invalid UTF-8 elsewhere becomes U+FFFD.
    pub fn to_text(&self) -> String {
        let (front, back) = self.bytes.as_slices();
        let mut bytes = Vec::with_capacity(self.bytes.len());
        bytes.extend_from_slice(front);
        bytes.extend_from_slice(back);
        let mut start = 0;
        if self.is_truncated() {
            // At most three continuation bytes can precede a character start.
            while start < bytes.len().min(3) && is_continuation(bytes[start]) {
                start += 1;
            }
        }
        String::from_utf8_lossy(&bytes[start..]).into_owned()
    }
}

fn is_continuation(byte: u8) -> bool {
    byte & 0b1100_0000 == 0b1000_0000
}

/// Counts stdout and stderr together against an optional cap.
#[derive(Debug)]
pub struct OutputMeter {
    total: AtomicU64,
    limit: Option<u64>,
    exceeded: CancellationToken,
}

impl OutputMeter {
    /// A meter with the given cap (`None`: no cap).
    pub fn new(limit: Option<u64>) -> Self {
        OutputMeter {
            total: AtomicU64::new(0),
            limit,
            exceeded: CancellationToken::new(),
        }
    }

    /// Counts `n` more bytes.
    pub fn add(&self, n: usize) {
        let total = self.total.fetch_add(n as u64, Ordering::Relaxed) + n as u64;
        if self.limit.is_some_and(|limit| total > limit) {
            self.exceeded.cancel();
        }
    }

    /// Whether more than the cap has been written.
    pub fn is_exceeded(&self) -> bool {
        self.exceeded.is_cancelled()
    }

    /// Completes once more than the cap has been written (never without one).
    pub async fn exceeded(&self) {
        self.exceeded.cancelled().await;
    }
}

/// A tail shared between the task reading a pipe and the executor, so that
/// what was read survives the reader being abandoned.
pub type SharedTail = Arc<Mutex<Tail>>;

/// A new shared tail of `capacity` bytes.
pub fn shared_tail(capacity: usize) -> SharedTail {
    Arc::new(Mutex::new(Tail::new(capacity)))
}

/// Locks a shared tail; a poisoned lock still holds consistent bytes.
pub fn lock(tail: &SharedTail) -> std::sync::MutexGuard<'_, Tail> {
    tail.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Reads `pipe` to its end into `tail`, counting every byte on `meter`.
/// A read error ends the capture as if the pipe were closed.
pub async fn capture<R>(mut pipe: R, tail: SharedTail, meter: Arc<OutputMeter>)
where
    R: tokio::io::AsyncRead + Unpin,
{
    // Starts small and grows while reads fill it: most workers write little,
    // and a run's buffers are allocated afresh for every run.
    let mut buffer = Vec::with_capacity(FIRST_READ);
    loop {
        buffer.clear();
        match pipe.read_buf(&mut buffer).await {
            Ok(0) => return,
            Ok(n) => {
                lock(&tail).push(&buffer[..n]);
                meter.add(n);
                if n == buffer.capacity() && n < LARGEST_READ {
                    buffer.reserve_exact(n);
                }
            }
            Err(error) if error.kind() == std::io::ErrorKind::Interrupted => {}
            Err(error) => {
                tracing::debug!(%error, "reading a worker's output failed; keeping what was read");
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_output_is_kept_whole() {
        let mut tail = Tail::new(16);
        tail.push(b"hello ");
        tail.push(b"world");
        assert_eq!(tail.to_text(), "hello world");
        assert_eq!(tail.total(), 11);
        assert!(!tail.is_truncated());
    }

    #[test]
    fn long_output_keeps_the_last_bytes() {
        let mut tail = Tail::new(4);
        tail.push(b"abc");
        tail.push(b"def");
        assert_eq!(tail.to_text(), "cdef");
        tail.push(b"0123456789");
        assert_eq!(tail.to_text(), "6789");
        assert_eq!(tail.total(), 16);
        assert!(tail.is_truncated());
    }

    #[test]
    fn a_cut_character_is_skipped() {
        let mut tail = Tail::new(4);
        tail.push("aé€".as_bytes()); // 1 + 2 + 3 bytes: the cut lands inside é
        assert_eq!(tail.to_text(), "€");
        let mut tail = Tail::new(5);
        tail.push("aé€".as_bytes()); // the cut lands before é
        assert_eq!(tail.to_text(), "é€");
        let mut tail = Tail::new(2);
        tail.push("x€".as_bytes()); // only the end of € is kept
        assert_eq!(tail.to_text(), "");
    }

    #[test]
    fn zero_capacity_keeps_nothing_but_counts() {
        let mut tail = Tail::new(0);
        tail.push(b"abc");
        assert_eq!(tail.to_text(), "");
        assert_eq!(tail.total(), 3);
    }

    #[test]
    fn meter_trips_past_the_cap_only() {
        let meter = OutputMeter::new(Some(10));
        meter.add(10);
        assert!(!meter.is_exceeded());
        meter.add(1);
        assert!(meter.is_exceeded());
        let unlimited = OutputMeter::new(None);
        unlimited.add(usize::MAX / 2);
        assert!(!unlimited.is_exceeded());
    }

    proptest::proptest! {
        #[test]
        fn tail_is_the_suffix_of_everything_pushed(
            chunks in proptest::collection::vec(proptest::collection::vec(proptest::num::u8::ANY, 0..40), 0..20),
            capacity in 0usize..64,
        ) {
            let mut tail = Tail::new(capacity);
            let mut all = Vec::new();
            for chunk in &chunks {
                tail.push(chunk);
                all.extend_from_slice(chunk);
            }
            let kept: Vec<u8> = tail.bytes.iter().copied().collect();
            let start = all.len().saturating_sub(capacity);
            proptest::prop_assert_eq!(&kept[..], &all[start..]);
            proptest::prop_assert_eq!(tail.total(), all.len() as u64);
        }
    }
}
