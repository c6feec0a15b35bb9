//! Provenance: which resources a resource's data came from, and the lineage graph.
//!
//! Owns label identities ([`LabelId`], an interned `LocalizedResource`), provenance sets
//! with their versions and the merge-skip cache ([`LabelProvenance`]), and the direct
//! lineage edges between labels ([`Lineage`]). It does not own policies, decide flows, or
//! mutate anything by itself: `state::State::apply` drives every change.
//!
//! Merge on a flow `src → dst`: `prov(dst) ∪= prov(src) ∪ {src}` (a resource is never
//! in its own provenance). Each provenance carries a version bumped whenever it grows,
//! and remembers the version of every source it merged: a repeated flow from an
//! unchanged source is O(1).

use trace2e_proto::LocalizedResource;

use crate::FastMap;

/// An interned label: one `LocalizedResource` known to this daemon. Ids are dense,
/// allocated in order from 0, never reused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize)]
pub struct LabelId(u32);

impl LabelId {
    /// The id at `index` in allocation order.
    pub fn from_index(index: usize) -> Option<Self> {
        u32::try_from(index).ok().map(Self)
    }

    /// Position in allocation order.
    pub fn index(self) -> usize {
        self.0 as usize
    }
}

/// The provenance of one label: a set of labels, with the versions that make repeated
/// merges cheap.
#[derive(Debug, Clone, Default)]
pub struct LabelProvenance {
    /// Sorted by id, without duplicates.
    set: Vec<LabelId>,
    /// Bumped whenever `set` grows.
    version: u64,
    /// For each source merged into this label, its version at that merge.
    merged: FastMap<LabelId, u64>,
}

/// What a merge did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Merge {
    /// The source's version was already merged: nothing was looked at.
    Skipped,
    /// The source's provenance was already included.
    Unchanged,
    /// The provenance grew by this many labels.
    Grew(usize),
}

impl LabelProvenance {
    /// The labels, sorted by id.
    pub fn labels(&self) -> &[LabelId] {
        &self.set
    }

    /// Whether `id` is in this provenance.
    pub fn contains(&self, id: LabelId) -> bool {
        self.set.binary_search(&id).is_ok()
    }

    /// Number of labels.
    pub fn len(&self) -> usize {
        self.set.len()
    }

    /// Whether it is empty.
    pub fn is_empty(&self) -> bool {
        self.set.is_empty()
    }

    /// The version: changes whenever the set grows.
    pub fn version(&self) -> u64 {
        self.version
    }

    /// `self ∪= source.set ∪ {source_id}`, without `own_id`. Skipped in O(1) when this
    /// version of the source was merged before.
    pub fn merge(&mut self, own_id: LabelId, source_id: LabelId, source: &LabelProvenance) -> Merge {
        if self.merged.get(&source_id) == Some(&source.version) {
            return Merge::Skipped;
        }
        self.merged.insert(source_id, source.version);
        // The source set with the source itself inserted, sorted and deduplicated.
        let pos = source.set.partition_point(|x| *x < source_id);
        let extra: &[LabelId] =
            if source.set.get(pos) == Some(&source_id) { &[] } else { std::slice::from_ref(&source_id) };
        let candidates = source.set[..pos].iter().chain(extra).chain(&source.set[pos..]);
        let mut incoming: Vec<LabelId> = Vec::new();
        let mut i = 0;
        for &id in candidates {
            while i < self.set.len() && self.set[i] < id {
                i += 1;
            }
            if id != own_id && self.set.get(i) != Some(&id) {
                incoming.push(id);
            }
        }
        if incoming.is_empty() {
            return Merge::Unchanged;
        }
        let grew = incoming.len();
        let mut out = Vec::with_capacity(self.set.len() + grew);
        let (mut i, mut j) = (0, 0);
        while i < self.set.len() && j < incoming.len() {
            if self.set[i] < incoming[j] {
                out.push(self.set[i]);
                i += 1;
            } else {
                out.push(incoming[j]);
                j += 1;
            }
        }
        out.extend_from_slice(&self.set[i..]);
        out.extend_from_slice(&incoming[j..]);
        self.set = out;
        self.version += 1;
        Merge::Grew(grew)
    }
}

impl LabelProvenance {
    /// `self ∪= ids`, without `own_id`: the merge of a provenance received from a peer
    /// node (no version of it is known here, so nothing is skipped).
    pub fn merge_set(&mut self, own_id: LabelId, ids: &[LabelId]) -> Merge {
        let mut incoming: Vec<LabelId> =
            ids.iter().copied().filter(|id| *id != own_id && self.set.binary_search(id).is_err()).collect();
        if incoming.is_empty() {
            return Merge::Unchanged;
        }
        incoming.sort_unstable();
        incoming.dedup();
        let grew = incoming.len();
        self.set.extend_from_slice(&incoming);
        self.set.sort_unstable();
        self.version += 1;
        Merge::Grew(grew)
    }
}

/// Accumulated statistics of one direct edge.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EdgeStats {
    /// First flow, unix µs.
    pub first_us: u64,
    /// Last flow, unix µs.
    pub last_us: u64,
    /// Number of flows.
    pub flows: u64,
    /// Bytes carried in total.
    pub bytes: u64,
}

/// One direct flow edge of the lineage graph, with its history.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct LineageEdge {
    /// Where the data came from.
    pub source: LocalizedResource,
    /// Where it went.
    pub destination: LocalizedResource,
    /// First flow, unix µs.
    pub first_us: u64,
    /// Last flow, unix µs.
    pub last_us: u64,
    /// Number of flows.
    pub flows: u64,
    /// Bytes carried in total.
    pub bytes: u64,
}

/// Direct edges between labels, one per (source, destination) pair.
#[derive(Debug, Default)]
pub struct Lineage {
    edges: FastMap<(LabelId, LabelId), EdgeStats>,
    /// destination → its direct sources, for backwards traversal.
    into: FastMap<LabelId, Vec<LabelId>>,
}

impl Lineage {
    /// Records one flow `source → destination` of `bytes` at `time_us`.
    pub fn record(&mut self, source: LabelId, destination: LabelId, bytes: u64, time_us: u64) {
        match self.edges.get_mut(&(source, destination)) {
            Some(e) => {
                e.first_us = e.first_us.min(time_us);
                e.last_us = e.last_us.max(time_us);
                e.flows += 1;
                e.bytes = e.bytes.saturating_add(bytes);
            }
            None => {
                self.edges
                    .insert((source, destination), EdgeStats { first_us: time_us, last_us: time_us, flows: 1, bytes });
                self.into.entry(destination).or_default().push(source);
            }
        }
    }

    /// Every edge, in no particular order.
    pub fn edges(&self) -> impl Iterator<Item = (&(LabelId, LabelId), &EdgeStats)> {
        self.edges.iter()
    }

    /// Every edge reachable backwards from `to` (edges into `to`, into their sources, ...).
    pub fn reachable(&self, to: LabelId) -> Vec<(LabelId, LabelId, EdgeStats)> {
        let mut out = Vec::new();
        let mut visited = crate::FastSet::from_iter([to]);
        let mut work = vec![to];
        while let Some(dst) = work.pop() {
            for &src in self.into.get(&dst).into_iter().flatten() {
                if let Some(stats) = self.edges.get(&(src, dst)) {
                    out.push((src, dst, *stats));
                }
                if visited.insert(src) {
                    work.push(src);
                }
            }
        }
        out
    }

    /// Number of edges.
    pub fn len(&self) -> usize {
        self.edges.len()
    }

    /// Whether there is no edge.
    pub fn is_empty(&self) -> bool {
        self.edges.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeSet;

    fn id(i: u32) -> LabelId {
        LabelId(i)
    }

    #[test]
    fn read_then_write_chain() {
        // file1(0) → P1(1) → file2(2)
        let file1 = LabelProvenance::default();
        let mut p1 = LabelProvenance::default();
        let mut file2 = LabelProvenance::default();
        assert_eq!(p1.merge(id(1), id(0), &file1), Merge::Grew(1));
        assert_eq!(file2.merge(id(2), id(1), &p1), Merge::Grew(2));
        assert_eq!(file2.labels(), &[id(0), id(1)]);
    }

    #[test]
    fn unchanged_sources_are_skipped() {
        let mut src = LabelProvenance::default();
        src.merge(id(5), id(3), &LabelProvenance::default());
        let mut dst = LabelProvenance::default();
        assert_eq!(dst.merge(id(9), id(5), &src), Merge::Grew(2));
        let v = dst.version();
        assert_eq!(dst.merge(id(9), id(5), &src), Merge::Skipped);
        assert_eq!(dst.version(), v);
        // The source grows: the merge happens again.
        src.merge(id(5), id(4), &LabelProvenance::default());
        assert_eq!(dst.merge(id(9), id(5), &src), Merge::Grew(1));
        assert_eq!(dst.labels(), &[id(3), id(4), id(5)]);
        // Same content through another source: looked at, unchanged, version kept.
        let v = dst.version();
        let mut other = LabelProvenance::default();
        other.merge(id(4), id(3), &LabelProvenance::default());
        assert_eq!(dst.merge(id(9), id(4), &other), Merge::Unchanged);
        assert_eq!(dst.version(), v);
    }

    #[test]
    fn a_label_is_never_in_its_own_provenance() {
        let mut f = LabelProvenance::default();
        let mut p = LabelProvenance::default();
        p.merge(id(1), id(0), &f); // f → p
        f.merge(id(0), id(1), &p); // p → f
        assert_eq!(f.labels(), &[id(1)]);
    }

    #[test]
    fn lineage_walks_backwards() {
        let mut l = Lineage::default();
        l.record(id(0), id(1), 10, 100);
        l.record(id(0), id(1), 5, 200);
        l.record(id(1), id(2), 7, 300);
        l.record(id(3), id(4), 1, 400);
        let mut edges = l.reachable(id(2));
        edges.sort_by_key(|e| (e.0, e.1));
        assert_eq!(edges.len(), 2);
        assert_eq!(edges[0], (id(0), id(1), EdgeStats { first_us: 100, last_us: 200, flows: 2, bytes: 15 }));
        assert_eq!(edges[1].2.bytes, 7);
        assert!(l.reachable(id(0)).is_empty());
    }

    proptest! {
        #[test]
        fn merge_is_set_union(a in proptest::collection::btree_set(0u32..64, 0..30),
                              b in proptest::collection::btree_set(0u32..64, 0..30),
                              own in 0u32..64, src in 0u32..64) {
            let mut dst = LabelProvenance::default();
            for x in &a { dst.merge(id(own), id(*x), &LabelProvenance::default()); }
            let mut s = LabelProvenance::default();
            for x in &b { s.merge(id(src), id(*x), &LabelProvenance::default()); }
            dst.merge(id(own), id(src), &s);
            // The model: a label's provenance is the set of what flowed into it, never itself.
            let model_s: BTreeSet<u32> = b.iter().copied().filter(|x| *x != src).collect();
            let got_s: Vec<u32> = s.labels().iter().map(|l| l.0).collect();
            prop_assert_eq!(got_s, model_s.iter().copied().collect::<Vec<_>>());
            let mut want: BTreeSet<u32> = a.union(&model_s).copied().collect();
            want.insert(src);
            want.remove(&own);
            let got: Vec<u32> = dst.labels().iter().map(|l| l.0).collect();
            prop_assert_eq!(got, want.into_iter().collect::<Vec<_>>());
        }
    }
}
