//! Reservations: readers–writer claims on labels for the length of one flow.
//!
//! Owns the reservation table, its FIFO wait queues and the RAII [`Reservation`] guard.
//! It does not know what a key means (the engine uses interned labels), what a grant or a
//! lease is, or why a flow wants its claims.
//!
//! Over 600 lines with its unit tests (more than a third of the file: the queue's
//! fairness and cancellation cases), kept beside the code they check.
//!
//! # Acquisition, fairness, deadlock freedom
//!
//! All claims of one flow are taken **atomically** under the table lock: either every
//! claim is compatible and nobody is queued on any of its keys, and all are taken at
//! once, or the request enqueues itself (as one waiter) at the back of the queue of every
//! claimed key, in the same critical section. A queued waiter is granted only when it is
//! at the **front** of every one of its queues and every claim is compatible with the
//! current holders; then it takes all its claims at once and leaves all its queues.
//!
//! - *No hold-and-wait*: a waiter holds nothing, so holders never wait on waiters.
//! - *Queues agree on one order*: a waiter enters all its queues in one critical section,
//!   so if `W1` is ahead of `W2` in one queue it entered before `W2`, hence is ahead of it
//!   in every queue they share. The oldest waiter is therefore at the front of all its
//!   queues and waits only for holders, which release in finite time (every grant has a
//!   lease in the engine). So the oldest waiter is always eventually granted: no deadlock,
//!   no starvation, and nobody overtakes an earlier waiter on a shared key (FIFO: a reader
//!   arriving after a queued writer waits behind it).
//!
//! Claims are sorted by the key's `Ord` and deduplicated (a write claim absorbs a read
//! claim of the same key), which makes the "first busy key" of a timeout deterministic;
//! correctness does not depend on the order since acquisition is atomic.
//!
//! Nothing leaks: a [`Reservation`] releases on drop, and a waiting future that is dropped
//! (timeout, cancellation) removes itself from every queue — or, if it was granted in the
//! meantime but never picked up, releases what it was granted.

use std::collections::VecDeque;
use std::fmt::Debug;
use std::hash::Hash;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use smallvec::SmallVec;
use tokio::sync::oneshot;

use crate::FastMap;

/// How a key is claimed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Mode {
    /// Shared: any number of readers, no writer.
    Read,
    /// Exclusive.
    Write,
}

/// One claim of a flow: a key and how it is held.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Claim<K> {
    /// What is reserved.
    pub key: K,
    /// How.
    pub mode: Mode,
}

impl<K> Claim<K> {
    /// A shared claim.
    pub fn read(key: K) -> Self {
        Self { key, mode: Mode::Read }
    }

    /// An exclusive claim.
    pub fn write(key: K) -> Self {
        Self { key, mode: Mode::Write }
    }
}

/// The claims stayed incompatible with other flows until the timeout.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{key:?} stayed reserved by other flows")]
pub struct Busy<K: Debug> {
    /// The first key (in claim order) that was still unavailable.
    pub key: K,
}

/// A flow's claims, sorted and deduplicated: inline up to two (a flow's source and
/// destination), so an uncontended acquire/release allocates nothing.
pub type Claims<K> = SmallVec<[Claim<K>; 2]>;

/// Idle entries (nothing held, nobody queued) are kept for reuse until the table has this
/// many entries (or twice what the last sweep left, if more); then all idle ones are
/// dropped at once: amortized O(1) per release.
const IDLE_KEPT: usize = 4096;

/// Identifier of a queued waiter; waiters are numbered in arrival order.
type WaiterId = u64;

#[derive(Debug, Default)]
struct Entry {
    /// Number of read holders.
    readers: u32,
    /// Whether a write holder exists (then `readers == 0`).
    writer: bool,
    /// Waiters in arrival order; each appears at most once.
    queue: VecDeque<WaiterId>,
}

impl Entry {
    fn compatible(&self, mode: Mode) -> bool {
        match mode {
            Mode::Read => !self.writer,
            Mode::Write => !self.writer && self.readers == 0,
        }
    }

    fn idle(&self) -> bool {
        self.readers == 0 && !self.writer && self.queue.is_empty()
    }
}

#[derive(Debug)]
struct Waiter<K> {
    claims: Arc<[Claim<K>]>,
    /// `Some` while queued; taken (and fired) when granted.
    wake: Option<oneshot::Sender<()>>,
}

#[derive(Debug)]
struct Table<K> {
    /// Entries held or queued on, and idle ones kept for reuse (up to [`IDLE_KEPT`]).
    entries: FastMap<K, Entry>,
    waiters: FastMap<WaiterId, Waiter<K>>,
    next_waiter: WaiterId,
    /// Sweep idle entries once `entries` grows past this.
    sweep_at: usize,
}

impl<K: Ord + Hash + Clone + Debug> Table<K> {
    fn free_now(&self, claims: &[Claim<K>]) -> bool {
        claims.iter().all(|c| self.entries.get(&c.key).is_none_or(|e| e.queue.is_empty() && e.compatible(c.mode)))
    }

    fn take(&mut self, claims: &[Claim<K>]) {
        for c in claims {
            let e = self.entries.entry(c.key.clone()).or_default();
            match c.mode {
                Mode::Read => e.readers += 1,
                Mode::Write => e.writer = true,
            }
        }
    }

    fn release(&mut self, claims: &[Claim<K>]) {
        let mut queued = false;
        for c in claims {
            if let Some(e) = self.entries.get_mut(&c.key) {
                match c.mode {
                    Mode::Read => e.readers = e.readers.saturating_sub(1),
                    Mode::Write => e.writer = false,
                }
                queued |= !e.queue.is_empty();
            }
        }
        if queued {
            self.settle(claims.iter().map(|c| c.key.clone()).collect());
        } else if self.entries.len() > self.sweep_at {
            // Nobody waits on these keys: nothing to grant. Idle entries are kept for the
            // next flow on the same labels (no remove/insert per flow) up to a bound.
            self.entries.retain(|_, e| !e.idle());
            self.sweep_at = IDLE_KEPT.max(2 * self.entries.len());
        }
    }

    fn grantable(&self, id: WaiterId, claims: &[Claim<K>]) -> bool {
        claims
            .iter()
            .all(|c| self.entries.get(&c.key).is_some_and(|e| e.queue.front() == Some(&id) && e.compatible(c.mode)))
    }

    fn dequeue(&mut self, id: WaiterId, claims: &[Claim<K>]) {
        for c in claims {
            if let Some(e) = self.entries.get_mut(&c.key) {
                e.queue.retain(|w| *w != id);
            }
        }
    }

    /// Grants every waiter that became grantable after a change on `keys`, then drops
    /// idle entries among the keys it looked at.
    fn settle(&mut self, mut work: Vec<K>) {
        let mut seen = Vec::new();
        while let Some(key) = work.pop() {
            let head = self.entries.get(&key).and_then(|e| e.queue.front().copied());
            if let Some(id) = head {
                let claims = match self.waiters.get(&id) {
                    Some(w) if w.wake.is_some() => w.claims.clone(),
                    _ => {
                        // Not a queued waiter (cannot happen): drop the stale id.
                        if let Some(e) = self.entries.get_mut(&key) {
                            e.queue.pop_front();
                        }
                        work.push(key);
                        continue;
                    }
                };
                if self.grantable(id, &claims) {
                    self.dequeue(id, &claims);
                    self.take(&claims);
                    if let Some(tx) = self.waiters.get_mut(&id).and_then(|w| w.wake.take()) {
                        // The receiver may be gone (the future is being dropped); its
                        // drop handler then releases what was granted.
                        let _ = tx.send(());
                    }
                    work.extend(claims.iter().map(|c| c.key.clone()));
                }
            }
            seen.push(key);
        }
        for key in seen {
            if self.entries.get(&key).is_some_and(Entry::idle) {
                self.entries.remove(&key);
            }
        }
    }

    /// The first of `claims` that keeps waiter `id` waiting (else the first claim).
    fn blocking_key(&self, id: WaiterId, claims: &[Claim<K>]) -> Option<K> {
        claims
            .iter()
            .find(|c| !self.entries.get(&c.key).is_some_and(|e| e.queue.front() == Some(&id) && e.compatible(c.mode)))
            .or(claims.first())
            .map(|c| c.key.clone())
    }
}

/// A table of readers–writer reservations keyed by `K`. Cheap to clone (shared).
#[derive(Debug)]
pub struct ReservationTable<K> {
    table: Arc<Mutex<Table<K>>>,
}

impl<K> Clone for ReservationTable<K> {
    fn clone(&self) -> Self {
        Self { table: self.table.clone() }
    }
}

impl<K: Ord + Hash + Clone + Debug> Default for ReservationTable<K> {
    fn default() -> Self {
        Self::new()
    }
}

impl<K: Ord + Hash + Clone + Debug> ReservationTable<K> {
    /// An empty table.
    pub fn new() -> Self {
        Self {
            table: Arc::new(Mutex::new(Table {
                entries: FastMap::default(),
                waiters: FastMap::default(),
                next_waiter: 0,
                sweep_at: IDLE_KEPT,
            })),
        }
    }

    /// Takes all `claims` at once, waiting (FIFO) up to `timeout` for them to become
    /// available. An empty claim set is granted at once.
    ///
    /// Dropping the returned future removes the request from every queue.
    pub async fn acquire(
        &self,
        claims: impl IntoIterator<Item = Claim<K>>,
        timeout: Duration,
    ) -> Result<Reservation<K>, Busy<K>> {
        let claims = normalize(claims);
        let (id, rx, shared) = {
            let mut t = self.table.lock();
            if t.free_now(&claims) {
                t.take(&claims);
                return Ok(Reservation { table: self.table.clone(), claims });
            }
            let shared: Arc<[Claim<K>]> = claims.iter().cloned().collect();
            let id = t.next_waiter;
            t.next_waiter += 1;
            for c in claims.iter() {
                t.entries.entry(c.key.clone()).or_default().queue.push_back(id);
            }
            let (tx, rx) = oneshot::channel();
            t.waiters.insert(id, Waiter { claims: Arc::clone(&shared), wake: Some(tx) });
            (id, rx, shared)
        };
        let mut waiting = Waiting { table: &self.table, id, claims: shared, finished: false };
        let _ = tokio::time::timeout(timeout, rx).await;
        let mut t = self.table.lock();
        waiting.finished = true;
        let granted = t.waiters.get(&id).is_some_and(|w| w.wake.is_none());
        if granted {
            t.waiters.remove(&id);
            return Ok(Reservation { table: self.table.clone(), claims });
        }
        let key = t.blocking_key(id, &claims);
        t.waiters.remove(&id);
        t.dequeue(id, &claims);
        t.settle(claims.iter().map(|c| c.key.clone()).collect());
        match key {
            Some(key) => Err(Busy { key }),
            // Only an empty claim set has no key, and it never waits.
            None => Ok(Reservation { table: self.table.clone(), claims }),
        }
    }

    /// Takes all `claims` at once if that needs no waiting (every claim compatible and
    /// nobody queued on its key: a waiter is never overtaken), else takes nothing and
    /// returns `None`.
    pub fn try_acquire(&self, claims: impl IntoIterator<Item = Claim<K>>) -> Option<Reservation<K>> {
        let claims = normalize(claims);
        let mut t = self.table.lock();
        t.free_now(&claims).then(|| {
            t.take(&claims);
            Reservation { table: self.table.clone(), claims }
        })
    }

    /// Number of keys currently held or queued on.
    pub fn len(&self) -> usize {
        self.table.lock().entries.values().filter(|e| !e.idle()).count()
    }

    /// Whether nothing is held and nobody waits.
    pub fn is_empty(&self) -> bool {
        let t = self.table.lock();
        t.entries.values().all(Entry::idle) && t.waiters.is_empty()
    }

    /// Number of queued requests.
    pub fn waiting(&self) -> usize {
        self.table.lock().waiters.len()
    }
}

fn normalize<K: Ord>(claims: impl IntoIterator<Item = Claim<K>>) -> Claims<K> {
    let mut v: Claims<K> = claims.into_iter().collect();
    if let [a, b] = &mut v[..]
        && a.key < b.key
    {
        // A flow's (source, destination) pair, already in order: the common case.
        return v;
    }
    // Write sorts after Read: keep the last claim of each key, which is the strongest.
    v.sort_unstable_by(|a, b| a.key.cmp(&b.key).then(a.mode.cmp(&b.mode)));
    v.dedup_by(|later, kept| {
        let same = later.key == kept.key;
        if same {
            kept.mode = later.mode;
        }
        same
    });
    v
}

/// Cleans up a queued request whose future is dropped before it finished.
struct Waiting<'a, K: Ord + Hash + Clone + Debug> {
    table: &'a Mutex<Table<K>>,
    id: WaiterId,
    claims: Arc<[Claim<K>]>,
    finished: bool,
}

impl<K: Ord + Hash + Clone + Debug> Drop for Waiting<'_, K> {
    fn drop(&mut self) {
        if self.finished {
            return;
        }
        let mut t = self.table.lock();
        let Some(w) = t.waiters.remove(&self.id) else {
            return;
        };
        if w.wake.is_none() {
            // Granted but never picked up.
            t.release(&self.claims);
        } else {
            t.dequeue(self.id, &self.claims);
            t.settle(self.claims.iter().map(|c| c.key.clone()).collect());
        }
    }
}

/// Held claims; released when dropped.
#[derive(Debug)]
pub struct Reservation<K: Ord + Hash + Clone + Debug> {
    table: Arc<Mutex<Table<K>>>,
    claims: Claims<K>,
}

impl<K: Ord + Hash + Clone + Debug> Reservation<K> {
    /// The claims held, sorted and deduplicated.
    pub fn claims(&self) -> &[Claim<K>] {
        &self.claims
    }
}

impl<K: Ord + Hash + Clone + Debug> Drop for Reservation<K> {
    fn drop(&mut self) {
        self.table.lock().release(&self.claims);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};
    use std::sync::atomic::{AtomicUsize, Ordering};
    use trace2e_proto::{LocalizedResource, NodeId, Resource};

    const LONG: Duration = Duration::from_secs(30);
    const SHORT: Duration = Duration::from_millis(50);

    fn res(path: &str) -> LocalizedResource {
        Resource::file(path).unwrap().at(&NodeId::new("n1").unwrap())
    }

    /// Fails the test instead of hanging.
    async fn within<T>(f: impl std::future::Future<Output = T>) -> T {
        tokio::time::timeout(Duration::from_secs(20), f).await.expect("timed out")
    }

    async fn until(mut cond: impl FnMut() -> bool) {
        within(async {
            while !cond() {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        })
        .await
    }

    #[test]
    fn claims_are_sorted_and_deduplicated() {
        let c = normalize([Claim::read(3), Claim::write(1), Claim::write(3), Claim::read(1), Claim::read(2)]);
        assert_eq!(&*c, &[Claim::write(1), Claim::read(2), Claim::write(3)]);
    }

    #[test]
    fn try_acquire_never_overtakes_and_idle_entries_stay_bounded() {
        let table = ReservationTable::new();
        let held = table.try_acquire([Claim::write(1)]).expect("free");
        assert!(table.try_acquire([Claim::read(1)]).is_none(), "held by a writer");
        assert!(table.try_acquire([Claim::read(2), Claim::write(1)]).is_none());
        assert_eq!(table.len(), 1, "a refused try takes nothing");
        drop(held);
        assert!(table.is_empty());
        // Many distinct labels reserved and released: idle entries are swept past the bound.
        for key in 0..(3 * IDLE_KEPT as u32) {
            drop(table.try_acquire([Claim::read(key), Claim::write(key + 1)]).expect("free"));
        }
        assert!(table.is_empty());
        assert_eq!(table.len(), 0);
        assert!(table.table.lock().entries.len() <= IDLE_KEPT + 2);
    }

    #[tokio::test]
    async fn try_acquire_does_not_pass_a_queued_waiter() {
        let table = ReservationTable::new();
        let reader = table.try_acquire([Claim::read(1)]).expect("free");
        let waiting = {
            let table = table.clone();
            tokio::spawn(async move { table.acquire([Claim::write(1)], LONG).await })
        };
        until(|| table.waiting() == 1).await;
        // Compatible with the holder, but a writer is queued first: FIFO.
        assert!(table.try_acquire([Claim::read(1)]).is_none());
        drop(reader);
        let writer = within(waiting).await.unwrap().expect("granted");
        drop(writer);
        assert!(table.is_empty());
    }

    #[tokio::test]
    async fn readers_share_writer_excludes() {
        let t = ReservationTable::new();
        let a = res("/a");
        let r1 = within(t.acquire([Claim::read(a.clone())], LONG)).await.unwrap();
        let _r2 = within(t.acquire([Claim::read(a.clone())], LONG)).await.unwrap();
        let busy = t.acquire([Claim::write(a.clone())], SHORT).await.unwrap_err();
        assert_eq!(busy.key, a);
        drop(r1);
        drop(_r2);
        let w = within(t.acquire([Claim::write(a.clone())], LONG)).await.unwrap();
        assert_eq!(t.acquire([Claim::read(a.clone())], SHORT).await.unwrap_err().key, a);
        drop(w);
        assert!(t.is_empty());
    }

    #[tokio::test]
    async fn timeout_names_the_busy_resource() {
        let t = ReservationTable::new();
        let (a, b) = (res("/a"), res("/b"));
        let _w = t.acquire([Claim::write(b.clone())], LONG).await.unwrap();
        let busy = t.acquire([Claim::read(a.clone()), Claim::write(b.clone())], SHORT).await.unwrap_err();
        assert_eq!(busy.key, b);
        assert_eq!(t.waiting(), 0);
        drop(_w);
        assert!(t.is_empty());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_later_reader_does_not_overtake_a_queued_writer() {
        let t = ReservationTable::new();
        let a = res("/a");
        let r1 = t.acquire([Claim::read(a.clone())], LONG).await.unwrap();
        let writer = tokio::spawn({
            let (t, a) = (t.clone(), a.clone());
            async move { t.acquire([Claim::write(a)], LONG).await }
        });
        until(|| t.waiting() == 1).await;
        let reader = tokio::spawn({
            let (t, a) = (t.clone(), a.clone());
            async move { t.acquire([Claim::read(a)], LONG).await }
        });
        until(|| t.waiting() == 2).await;
        assert!(!writer.is_finished() && !reader.is_finished());
        drop(r1);
        // Had the reader overtaken the writer at the release, the writer would still wait
        // behind it and `within` would fail; the reader is still queued behind the writer.
        let w = within(writer).await.unwrap().unwrap();
        assert_eq!(t.waiting(), 1, "the reader waits for the writer");
        assert!(!reader.is_finished(), "the reader overtook the writer");
        drop(w);
        let r = within(reader).await.unwrap().unwrap();
        drop(r);
        assert!(t.is_empty());
    }

    #[tokio::test]
    async fn readers_queued_behind_a_writer_are_all_granted() {
        let t = ReservationTable::new();
        let a = res("/a");
        let w = t.acquire([Claim::write(a.clone())], LONG).await.unwrap();
        let readers: Vec<_> = (0..3)
            .map(|_| {
                let (t, a) = (t.clone(), a.clone());
                tokio::spawn(async move { t.acquire([Claim::read(a)], LONG).await })
            })
            .collect();
        until(|| t.waiting() == 3).await;
        drop(w);
        let mut held = Vec::new();
        for r in readers {
            held.push(within(r).await.unwrap().unwrap());
        }
        drop(held);
        assert!(t.is_empty());
    }

    #[tokio::test]
    async fn a_cancelled_waiter_leaves_no_trace() {
        let t = ReservationTable::new();
        let (a, b) = (res("/a"), res("/b"));
        let w = t.acquire([Claim::write(a.clone())], LONG).await.unwrap();
        let pending = t.acquire([Claim::write(a.clone()), Claim::read(b.clone())], LONG);
        assert!(tokio::time::timeout(Duration::from_millis(10), pending).await.is_err());
        assert_eq!(t.waiting(), 0);
        assert_eq!(t.len(), 1, "only the held key remains");
        // b was never held: it is free, and a is free once the guard drops.
        drop(t.acquire([Claim::write(b.clone())], SHORT).await.unwrap());
        drop(w);
        assert!(t.is_empty());
    }

    #[tokio::test]
    async fn a_waiter_that_cannot_take_everything_takes_nothing() {
        let t = ReservationTable::new();
        let (a, b) = (res("/a"), res("/b"));
        let wb = t.acquire([Claim::write(b.clone())], LONG).await.unwrap();
        let busy = t.acquire([Claim::write(a.clone()), Claim::write(b.clone())], SHORT).await.unwrap_err();
        assert_eq!(busy.key, b);
        // a was not held while waiting for b.
        drop(t.acquire([Claim::write(a.clone())], SHORT).await.unwrap());
        drop(wb);
        assert!(t.is_empty());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn random_concurrent_claims_keep_the_rw_invariant() {
        const KEYS: usize = 6;
        let t: ReservationTable<usize> = ReservationTable::new();
        let readers: Arc<Vec<AtomicUsize>> = Arc::new((0..KEYS).map(|_| AtomicUsize::new(0)).collect());
        let writers: Arc<Vec<AtomicUsize>> = Arc::new((0..KEYS).map(|_| AtomicUsize::new(0)).collect());
        let granted = Arc::new(AtomicUsize::new(0));
        let mut tasks = Vec::new();
        for seed in 0..16u64 {
            let (t, readers, writers, granted) = (t.clone(), readers.clone(), writers.clone(), granted.clone());
            tasks.push(tokio::spawn(async move {
                let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
                for _ in 0..40 {
                    let n = rng.random_range(1..=3);
                    let claims: Vec<Claim<usize>> = (0..n)
                        .map(|_| Claim {
                            key: rng.random_range(0..KEYS),
                            mode: if rng.random_bool(0.5) { Mode::Read } else { Mode::Write },
                        })
                        .collect();
                    let hold = Duration::from_micros(rng.random_range(0..1500));
                    let g = t.acquire(claims, Duration::from_secs(20)).await.expect("no claim waits 20 s here");
                    for c in g.claims() {
                        match c.mode {
                            Mode::Write => {
                                assert_eq!(writers[c.key].fetch_add(1, Ordering::SeqCst), 0);
                                assert_eq!(readers[c.key].load(Ordering::SeqCst), 0);
                            }
                            Mode::Read => {
                                readers[c.key].fetch_add(1, Ordering::SeqCst);
                                assert_eq!(writers[c.key].load(Ordering::SeqCst), 0);
                            }
                        }
                    }
                    granted.fetch_add(1, Ordering::SeqCst);
                    if hold.as_micros() > 200 {
                        tokio::time::sleep(hold).await;
                    } else {
                        tokio::task::yield_now().await;
                    }
                    for c in g.claims() {
                        match c.mode {
                            Mode::Write => writers[c.key].fetch_sub(1, Ordering::SeqCst),
                            Mode::Read => readers[c.key].fetch_sub(1, Ordering::SeqCst),
                        };
                    }
                    drop(g);
                }
            }));
        }
        within(async {
            for task in tasks {
                task.await.unwrap();
            }
        })
        .await;
        assert_eq!(granted.load(Ordering::SeqCst), 16 * 40, "every claim is granted once");
        assert!(t.is_empty(), "table not empty: {:?}", t.table.lock());
    }
}
