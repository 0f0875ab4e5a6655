//! [`Sublist`]: the subscription index. A trie of subject tokens with `*` and `>` wildcards,
//! queue groups and a match cache, all in caller storage.
//!
//! # Structure
//!
//! Like nats-server's `server/sublist.go`, the index is a trie with one level per token. Every
//! node has up to three kinds of children: literal children, found through one hash table
//! shared by the whole trie (keyed by the parent node and the token bytes, open addressing with
//! linear probing and backward-shift deletion), and one `*` and one `>` child held directly.
//! A subscription hangs off the node its last token leads to: plain subscriptions in one list,
//! queue subscriptions in one list per queue group at that node.
//!
//! Everything lives in [`Slab`]s over storage the caller hands in ([`SublistMem`], or the
//! ready-made [`SublistStorage`]): nodes, subscriptions, queue groups, and the bytes of tokens
//! and queue names, kept in chains of fixed-size chunks (so a 3-byte token costs one chunk and a
//! 200-byte one nine, with no fixed limit on token length). Links between entries are
//! generational keys, so a stale link is detected, never followed into a reused slot.
//!
//! # Matching
//!
//! [`Sublist::match_into`] walks the trie depth first *without recursion and without a stack*:
//! each node knows its parent, and when the walk climbs back to a node it can tell from the
//! child it came from what to try next (the `*` child is tried before the literal child). The
//! cost is the number of trie nodes that partially match, as in the reference, and no input
//! can make it use more memory or deeper recursion.
//!
//! The result goes into a caller-provided `&mut [T]`: every plain subscriber first, then one
//! member of each distinct queue group. Groups are distinct by *name* across the whole result,
//! as in the reference (`q` on `foo.*` and `q` on `foo.bar` are one group for `foo.bar`).
//!
//! # Queue-group selection
//!
//! Within a group's member list at one node, members take turns: each group keeps a rotating
//! cursor, and a message goes to the first *eligible* member from the cursor on (the caller's
//! predicate decides eligibility: an `echo: false` publisher, a closed connection, a
//! subscription past its auto-unsubscribe limit), after which the cursor moves past it. When a
//! group name spans several nodes, the node is drawn at random, weighted by its member count,
//! from a xorshift generator seeded at construction, so tests are deterministic; with one node
//! (the usual case) no random number is drawn at all. nats-server picks a random start index
//! per message; rotation gives the same long-run share with less variance, and like the
//! reference it falls through to the next member when one cannot take the message.
//!
//! # Match cache
//!
//! Recent subjects are remembered in a direct-mapped cache (one line per bucket, a new subject
//! replaces the line in its bucket): the line holds the subject and the keys of the trie nodes
//! with subscriptions that it matched (at most [`CACHE_NODES`]; subjects longer than
//! [`CACHE_SUBJECT_MAX`] bytes or matching more nodes are not cached). A hit skips the trie walk,
//! but members, queue cursors and eligibility are still read live, so a line stays right while
//! subscriptions come and go on the nodes it names. Only a node that gains its *first*
//! subscription changes which nodes a subject matches, so only that invalidates: for a literal
//! subject, the one line for that subject; for a wildcard subject, every line whose subject it
//! matches (nats-server does the same on insert). Removals never invalidate: an emptied node is
//! skipped, and a pruned node's key is stale. Lookup, fill and literal invalidation are O(1);
//! wildcard invalidation is O(cache lines).
//!
//! # Capacity
//!
//! An insert checks up front that every slab has room for what it needs, so a full sublist
//! refuses the subscription with [`InsertError::Full`] (naming the storage to grow) and is left
//! unchanged; the broker answers `-ERR 'maximum subscriptions exceeded'` and keeps the
//! connection. Nothing here allocates or panics.

use core::fmt;

use crate::pool::{Key, Slab, SlabStorage, Slot, StaleKey};

use super::subject::{self, TokenKind};

/// Bytes of token or queue-name text per chunk.
pub const CHUNK_BYTES: usize = 24;
/// The longest subject the match cache remembers.
pub const CACHE_SUBJECT_MAX: usize = 128;
/// The most trie nodes one cache line records.
pub const CACHE_NODES: usize = 8;

/// An optional [`Key`] in 8 bytes: 0 is none, otherwise the packed key plus one.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
struct Link(u64);

impl Link {
    const NONE: Link = Link(0);

    fn some(key: Key) -> Link {
        // A key's index is below u32::MAX, so the packed value is below u64::MAX.
        Link(key.to_u64() + 1)
    }

    fn get(self) -> Option<Key> {
        self.0.checked_sub(1).map(Key::from_u64)
    }

    fn is_none(self) -> bool {
        self.0 == 0
    }
}

/// A string kept in chunks: the first chunk and the length.
#[derive(Clone, Copy, Debug, Default)]
struct StrRef {
    head: Link,
    len: u32,
}

/// One chunk of token or queue-name bytes (storage element; contents are private).
#[derive(Debug)]
pub struct Chunk {
    data: [u8; CHUNK_BYTES],
    next: Link,
}

/// The node kinds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum NodeKind {
    Root,
    Literal,
    Pwc,
    Fwc,
}

/// One trie node (storage element; contents are private).
#[derive(Debug)]
pub struct Node {
    parent: Link,
    kind: NodeKind,
    /// Hash of (parent, token) for the literal-child table.
    hash: u64,
    token: StrRef,
    pwc: Link,
    fwc: Link,
    children: u32,
    /// Subscriptions at this node, plain and queue.
    subs: u32,
    plain: Link,
    groups: Link,
}

/// One subscription (storage element; contents are private).
#[derive(Debug)]
pub struct SubEntry<T> {
    node: Key,
    group: Link,
    prev: Link,
    next: Link,
    value: T,
}

/// One queue group at one node (storage element; contents are private).
#[derive(Debug)]
pub struct Group {
    node: Key,
    name: StrRef,
    name_hash: u64,
    members: Link,
    count: u32,
    cursor: Link,
    prev: Link,
    next: Link,
    /// The match (epoch) that last linked this group into its touched list.
    seen: u64,
    /// The match (epoch) in which this group's name was served.
    done: u64,
    touched_next: Link,
}

/// One match-cache line (storage element; contents are private).
#[derive(Debug)]
pub struct CacheLine {
    hash: u64,
    len: u16,
    n: u8,
    subject: [u8; CACHE_SUBJECT_MAX],
    nodes: [u64; CACHE_NODES],
}

/// A handle to one subscription, from [`Sublist::insert`]. Stale once removed.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct SubKey(Key);

impl SubKey {
    /// The underlying slab key.
    pub const fn key(self) -> Key {
        self.0
    }

    /// Packs the handle into a `u64` (see [`Key::to_u64`]).
    pub const fn to_u64(self) -> u64 {
        self.0.to_u64()
    }

    /// Unpacks a handle packed by [`SubKey::to_u64`]. A forged value is rejected as stale.
    pub const fn from_u64(raw: u64) -> SubKey {
        SubKey(Key::from_u64(raw))
    }
}

/// Which storage ran out.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum Capacity {
    /// The subscription slab (`SUBS` of [`SublistStorage`], `subs` of [`SublistMem`]).
    Subscriptions,
    /// The trie node slab (`NODES`, `nodes`).
    Nodes,
    /// The queue-group slab (`SUBS` in [`SublistStorage`], `groups` in [`SublistMem`]).
    Groups,
    /// The chunks holding token and queue-name bytes (`CHUNKS`, `chunks`).
    Chunks,
}

/// Why [`Sublist::insert`] refused a subscription. The sublist is unchanged.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
#[non_exhaustive]
pub enum InsertError {
    /// The subject fails [`subject::is_valid_subject`] (`-ERR 'Invalid Subject'`).
    InvalidSubject,
    /// The queue group name is empty.
    InvalidQueue,
    /// A storage is full (`-ERR 'maximum subscriptions exceeded'`).
    Full(Capacity),
}

impl fmt::Display for InsertError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            InsertError::InvalidSubject => f.write_str("invalid subject"),
            InsertError::InvalidQueue => f.write_str("invalid queue group name"),
            InsertError::Full(c) => {
                let what = match c {
                    Capacity::Subscriptions => "subscription slots (SUBS / subs)",
                    Capacity::Nodes => "trie nodes (NODES / nodes)",
                    Capacity::Groups => "queue-group slots (SUBS / groups)",
                    Capacity::Chunks => "token chunks (CHUNKS / chunks)",
                };
                write!(f, "sublist full: out of {what}; raise that capacity")
            }
        }
    }
}

impl core::error::Error for InsertError {}

/// Why a [`Sublist`] could not be built over the given storage.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
#[non_exhaustive]
pub enum SublistError {
    /// No node slot: the root needs one.
    NoNodes,
    /// The literal-child table must have more slots than there are nodes (twice as many is
    /// recommended).
    IndexTooSmall {
        /// Slots in the table.
        index: usize,
        /// Node slots.
        nodes: usize,
    },
    /// The cache index and the cache lines must be the same length.
    CacheMismatch,
}

impl fmt::Display for SublistError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SublistError::NoNodes => f.write_str("sublist needs at least one node slot"),
            SublistError::IndexTooSmall { index, nodes } => write!(
                f,
                "sublist index has {index} slots for {nodes} nodes; it needs more than the nodes"
            ),
            SublistError::CacheMismatch => {
                f.write_str("sublist cache index and cache lines differ in length")
            }
        }
    }
}

impl core::error::Error for SublistError {}

/// Why [`Sublist::match_into`] could not report a match.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
#[non_exhaustive]
pub enum MatchError {
    /// `out` was too short; `needed` entries were matched. Only the first `out.len()` were
    /// written. A buffer as long as the subscription capacity never overflows (every
    /// subscription appears at most once).
    OutputTooSmall {
        /// Entries the match produced.
        needed: usize,
    },
}

impl fmt::Display for MatchError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MatchError::OutputTooSmall { needed } => {
                write!(f, "match output buffer too small: {needed} entries needed")
            }
        }
    }
}

impl core::error::Error for MatchError {}

/// The result of a match: how many entries of the output buffer were written.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Default)]
pub struct Matched {
    /// Plain subscribers, at `out[..plain]`.
    pub plain: usize,
    /// Chosen queue-group members, one per group, at `out[plain..plain + queued]`.
    pub queued: usize,
}

impl Matched {
    /// Total entries written (`plain + queued`).
    pub const fn len(&self) -> usize {
        self.plain + self.queued
    }

    /// Whether nobody matched.
    pub const fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Counters, for monitoring (`/subsz`).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Default)]
pub struct SublistStats {
    /// Subscriptions in the index.
    pub subscriptions: usize,
    /// Trie nodes in use (the root included).
    pub nodes: usize,
    /// Queue groups (per node).
    pub groups: usize,
    /// Chunks of token text in use.
    pub chunks: usize,
    /// Lines in the match cache.
    pub cache_lines: usize,
    /// Inserts since construction.
    pub inserts: u64,
    /// Removals since construction.
    pub removes: u64,
    /// Matches since construction.
    pub matches: u64,
    /// Matches answered from the cache.
    pub cache_hits: u64,
}

/// The storage a [`Sublist`] works over, as slices (each piece can come from a
/// [`SlabStorage`] or a zeroed `static`; see [`SublistStorage`] for a ready-made set).
pub struct SublistMem<'a, T> {
    /// One slot per subscription.
    pub subs: &'a mut [Slot<SubEntry<T>>],
    /// One slot per trie node (the root takes one).
    pub nodes: &'a mut [Slot<Node>],
    /// One slot per queue group per node (at most one per subscription).
    pub groups: &'a mut [Slot<Group>],
    /// Chunks of [`CHUNK_BYTES`] bytes for token and queue-name text.
    pub chunks: &'a mut [Slot<Chunk>],
    /// The literal-child hash table: more slots than `nodes` (twice as many is good).
    pub index: &'a mut [u64],
    /// Match-cache lines; empty disables the cache.
    pub cache: &'a mut [Slot<CacheLine>],
    /// The cache's bucket table, as long as `cache`.
    pub cache_index: &'a mut [u64],
}

/// Ready-made storage for a [`Sublist`]: `SUBS` subscriptions (and as many queue-group
/// slots), `NODES` trie nodes (with a literal-child table of `2 * NODES` slots), `CHUNKS`
/// chunks of token text and a match cache of `CACHE` lines.
///
/// `new` is `const`, but the value is built where it is called; for big capacities put the
/// pieces in `static`s ([`crate::pool::StaticSlot`] of a [`SlabStorage`] each) and hand them in
/// as a [`SublistMem`].
pub struct SublistStorage<
    T,
    const SUBS: usize,
    const NODES: usize,
    const CHUNKS: usize,
    const CACHE: usize,
> {
    subs: SlabStorage<SubEntry<T>, SUBS>,
    groups: SlabStorage<Group, SUBS>,
    nodes: SlabStorage<Node, NODES>,
    index: [[u64; 2]; NODES],
    chunks: SlabStorage<Chunk, CHUNKS>,
    cache: SlabStorage<CacheLine, CACHE>,
    cache_index: [u64; CACHE],
}

impl<T, const SUBS: usize, const NODES: usize, const CHUNKS: usize, const CACHE: usize>
    SublistStorage<T, SUBS, NODES, CHUNKS, CACHE>
{
    /// Empty storage.
    pub const fn new() -> Self {
        SublistStorage {
            subs: SlabStorage::new(),
            groups: SlabStorage::new(),
            nodes: SlabStorage::new(),
            index: [[0; 2]; NODES],
            chunks: SlabStorage::new(),
            cache: SlabStorage::new(),
            cache_index: [0; CACHE],
        }
    }

    /// The storage as slices.
    pub fn mem(&mut self) -> SublistMem<'_, T> {
        SublistMem {
            subs: self.subs.as_mut_slice(),
            nodes: self.nodes.as_mut_slice(),
            groups: self.groups.as_mut_slice(),
            chunks: self.chunks.as_mut_slice(),
            index: self.index.as_flattened_mut(),
            cache: self.cache.as_mut_slice(),
            cache_index: &mut self.cache_index,
        }
    }

    /// A sublist over this storage (see [`Sublist::new`]).
    pub fn sublist(&mut self, seed: u64) -> Result<Sublist<'_, T>, SublistError>
    where
        T: Copy,
    {
        Sublist::new(self.mem(), seed)
    }
}

impl<T, const SUBS: usize, const NODES: usize, const CHUNKS: usize, const CACHE: usize> Default
    for SublistStorage<T, SUBS, NODES, CHUNKS, CACHE>
{
    fn default() -> Self {
        Self::new()
    }
}

/// Seeded 64-bit hash (a multiply-xorshift mix over 8-byte words, finished with murmur3's
/// fmix64). Not cryptographic; the seed keeps collisions from being precomputed.
///
/// The bytes after the last whole word are read as one word that overlaps it (or, for a
/// string shorter than a word, as overlapping 4-byte or single-byte reads): every byte is
/// read, the length is mixed in first, and no partial word is assembled in memory (copying
/// the tail into a zeroed word and loading it back stalled the load on the copy's stores,
/// a quarter of a cached match's time).
fn hash_bytes(seed: u64, extra: u64, bytes: &[u8]) -> u64 {
    const K: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut h = seed ^ extra.wrapping_mul(K) ^ (bytes.len() as u64);
    let mut words = bytes.chunks_exact(8);
    for w in &mut words {
        h = (h ^ word8(w)).wrapping_mul(K);
        h ^= h >> 29;
    }
    let rest = words.remainder().len();
    if rest > 0 {
        let n = bytes.len();
        let tail = if n >= 8 {
            word8(&bytes[n - 8..])
        } else if n >= 4 {
            u64::from(word4(bytes)) | (u64::from(word4(&bytes[n - 4..])) << 32)
        } else {
            u64::from(bytes[0]) | (u64::from(bytes[n / 2]) << 8) | (u64::from(bytes[n - 1]) << 16)
        };
        h = (h ^ tail).wrapping_mul(K);
        h ^= h >> 29;
    }
    fmix64(h)
}

/// The first 8 bytes of `b` (at least 8 long), little endian.
fn word8(b: &[u8]) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[..8]);
    u64::from_le_bytes(a)
}

/// The first 4 bytes of `b` (at least 4 long), little endian.
fn word4(b: &[u8]) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[..4]);
    u32::from_le_bytes(a)
}

fn fmix64(mut h: u64) -> u64 {
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^ (h >> 33)
}

/// `h` mapped onto `0..n` (`n > 0`) without division.
fn reduce(h: u64, n: usize) -> usize {
    ((u128::from(h) * n as u128) >> 64) as usize
}

/// Token and queue-name text in chunk chains.
struct Strings<'a> {
    chunks: Slab<'a, Chunk>,
}

fn chunks_for(len: usize) -> usize {
    len.div_ceil(CHUNK_BYTES)
}

impl Strings<'_> {
    fn free_chunks(&self) -> usize {
        self.chunks.capacity() - self.chunks.len()
    }

    /// Stores `bytes`; on a full slab frees what it took and fails.
    fn store(&mut self, bytes: &[u8]) -> Result<StrRef, Capacity> {
        let n = chunks_for(bytes.len());
        let mut next = Link::NONE;
        // Back to front, so each chunk is written once with its successor known.
        for i in (0..n).rev() {
            let part = &bytes[i * CHUNK_BYTES..bytes.len().min((i + 1) * CHUNK_BYTES)];
            let mut data = [0u8; CHUNK_BYTES];
            data[..part.len()].copy_from_slice(part);
            match self.chunks.try_insert(Chunk { data, next }) {
                Ok(key) => next = Link::some(key),
                Err(_) => {
                    self.free(StrRef { head: next, len: 0 });
                    return Err(Capacity::Chunks);
                }
            }
        }
        Ok(StrRef {
            head: next,
            len: bytes.len() as u32,
        })
    }

    fn free(&mut self, s: StrRef) {
        let mut link = s.head;
        while let Some(key) = link.get() {
            match self.chunks.remove(key) {
                Ok(chunk) => link = chunk.next,
                Err(_) => break,
            }
        }
    }

    /// The chunks of `s` as byte slices, in order.
    fn parts(&self, s: StrRef) -> Parts<'_, '_> {
        Parts {
            strings: self,
            link: s.head,
            left: s.len as usize,
        }
    }

    fn eq(&self, s: StrRef, bytes: &[u8]) -> bool {
        if s.len as usize != bytes.len() {
            return false;
        }
        let mut off = 0;
        for part in self.parts(s) {
            if bytes.get(off..off + part.len()) != Some(part) {
                return false;
            }
            off += part.len();
        }
        off == bytes.len()
    }

    fn eq_ref(&self, a: StrRef, b: StrRef) -> bool {
        if a.len != b.len {
            return false;
        }
        let mut pa = self.parts(a);
        let mut pb = self.parts(b);
        loop {
            match (pa.next(), pb.next()) {
                (Some(x), Some(y)) if x == y => {}
                (None, None) => return true,
                _ => return false,
            }
        }
    }
}

struct Parts<'s, 'a> {
    strings: &'s Strings<'a>,
    link: Link,
    left: usize,
}

impl<'s> Iterator for Parts<'s, '_> {
    type Item = &'s [u8];

    fn next(&mut self) -> Option<&'s [u8]> {
        if self.left == 0 {
            return None;
        }
        let chunk = self.strings.chunks.get(self.link.get()?).ok()?;
        let n = self.left.min(CHUNK_BYTES);
        self.left -= n;
        self.link = chunk.next;
        Some(&chunk.data[..n])
    }
}

/// The trie proper: nodes, the literal-child table and token text.
struct Trie<'a> {
    nodes: Slab<'a, Node>,
    index: &'a mut [u64],
    strings: Strings<'a>,
    root: Key,
    seed: u64,
}

impl Trie<'_> {
    fn node(&self, key: Key) -> Option<&Node> {
        self.nodes.get(key).ok()
    }

    fn literal_hash(&self, parent: Key, token: &[u8]) -> u64 {
        hash_bytes(self.seed, parent.to_u64(), token)
    }

    /// The literal child of `parent` for `token`.
    fn find_literal(&self, parent: Key, token: &[u8]) -> Option<Key> {
        let n = self.index.len();
        let h = self.literal_hash(parent, token);
        let mut i = reduce(h, n);
        for _ in 0..n {
            let key = Link(self.index[i]).get()?;
            if let Some(node) = self.node(key)
                && node.hash == h
                && node.parent == Link::some(parent)
                && self.strings.eq(node.token, token)
            {
                return Some(key);
            }
            i = if i + 1 == n { 0 } else { i + 1 };
        }
        None
    }

    /// The child of `parent` for a subscription token (wildcards included).
    fn find_child(&self, parent: Key, token: &[u8]) -> Option<Key> {
        let node = self.node(parent)?;
        match subject::token_kind(token) {
            TokenKind::Pwc => node.pwc.get(),
            TokenKind::Fwc => node.fwc.get(),
            TokenKind::Literal => self.find_literal(parent, token),
        }
    }

    fn index_insert(&mut self, key: Key, h: u64) {
        let n = self.index.len();
        let mut i = reduce(h, n);
        for _ in 0..n {
            if self.index[i] == 0 {
                self.index[i] = Link::some(key).0;
                return;
            }
            i = if i + 1 == n { 0 } else { i + 1 };
        }
        // Unreachable: the table has more slots than there are nodes (checked in `new`).
    }

    fn index_remove(&mut self, key: Key) {
        let n = self.index.len();
        let Some(h) = self.node(key).map(|node| node.hash) else {
            return;
        };
        let target = Link::some(key).0;
        let mut i = reduce(h, n);
        let mut found = None;
        for _ in 0..n {
            if self.index[i] == 0 {
                break;
            }
            if self.index[i] == target {
                found = Some(i);
                break;
            }
            i = if i + 1 == n { 0 } else { i + 1 };
        }
        let Some(mut hole) = found else { return };
        // Backward-shift deletion: move later entries of the probe run into the hole when
        // their home bucket allows it.
        let mut j = hole;
        loop {
            j = if j + 1 == n { 0 } else { j + 1 };
            let raw = self.index[j];
            if raw == 0 {
                break;
            }
            let home = match Link(raw).get().and_then(|k| self.node(k)) {
                Some(node) => reduce(node.hash, n),
                None => j,
            };
            // Whether `home` lies cyclically in (hole, j]: then the entry must stay.
            let stays = if hole <= j {
                hole < home && home <= j
            } else {
                hole < home || home <= j
            };
            if !stays {
                self.index[hole] = raw;
                hole = j;
            }
        }
        self.index[hole] = 0;
    }
}

/// Where the stackless walk is in its visit of the current node.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Phase {
    /// Just arrived at the node.
    Enter,
    /// The `>` child was reported (or absent); the `*` child is next.
    Pwc,
    /// The `*` subtree is done; the literal child is next.
    Literal,
    /// Done with this node; climb.
    Up,
}

/// The state of a stackless depth-first walk over the nodes matching a subject.
struct Walk {
    node: Key,
    /// Start of the token at this node's depth, or `len + 1` when every token is consumed.
    pos: usize,
    phase: Phase,
}

impl Walk {
    /// The next node holding subscriptions that `subject` (valid: no empty token) matches.
    fn next(&mut self, trie: &Trie<'_>, subject: &[u8]) -> Option<Key> {
        let len = subject.len();
        loop {
            let node = trie.node(self.node)?;
            match self.phase {
                Phase::Enter => {
                    if self.pos > len {
                        // Every token consumed: this node is matched.
                        self.phase = Phase::Up;
                        if node.kind != NodeKind::Root && node.subs > 0 {
                            return Some(self.node);
                        }
                        continue;
                    }
                    self.phase = Phase::Pwc;
                    // `>` here matches the one or more tokens left.
                    if let Some(f) = node.fwc.get()
                        && trie.node(f).is_some_and(|n| n.subs > 0)
                    {
                        return Some(f);
                    }
                }
                Phase::Pwc => {
                    self.phase = Phase::Literal;
                    if let Some(p) = node.pwc.get() {
                        self.descend(p, subject);
                    }
                }
                Phase::Literal => {
                    self.phase = Phase::Up;
                    let end = token_end(subject, self.pos);
                    if let Some(c) = trie.find_literal(self.node, &subject[self.pos..end]) {
                        self.descend(c, subject);
                    }
                }
                Phase::Up => {
                    if self.node == trie.root {
                        return None;
                    }
                    let child = self.node;
                    let parent = node.parent.get()?;
                    self.node = parent;
                    self.pos = token_start_before(subject, self.pos);
                    let from_pwc = trie.node(parent)?.pwc == Link::some(child);
                    self.phase = if from_pwc { Phase::Literal } else { Phase::Up };
                }
            }
        }
    }

    fn descend(&mut self, child: Key, subject: &[u8]) {
        self.pos = token_end(subject, self.pos) + 1;
        self.node = child;
        self.phase = Phase::Enter;
    }
}

/// End (exclusive) of the token starting at `pos`.
fn token_end(subject: &[u8], pos: usize) -> usize {
    match subject.get(pos..) {
        Some(rest) => pos + rest.iter().position(|&b| b == b'.').unwrap_or(rest.len()),
        None => subject.len(),
    }
}

/// Start of the token before the one starting at `pos` (`pos` is a token start, or `len + 1`).
fn token_start_before(subject: &[u8], pos: usize) -> usize {
    // The previous token ends at pos - 1 (its '.', or the subject's end).
    let end = pos.saturating_sub(1).min(subject.len());
    match subject[..end].iter().rposition(|&b| b == b'.') {
        Some(dot) => dot + 1,
        None => 0,
    }
}

/// xorshift64*, for weighted choice between same-named queue groups.
#[derive(Clone, Copy, Debug)]
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
}

/// The subscription index: see the [module documentation](self).
///
/// `T` is the caller's opaque subscriber value (a connection key and subscription id, say),
/// copied into match results.
pub struct Sublist<'a, T> {
    trie: Trie<'a>,
    subs: Slab<'a, SubEntry<T>>,
    groups: Slab<'a, Group>,
    cache: Slab<'a, CacheLine>,
    cache_index: &'a mut [u64],
    rng: Rng,
    epoch: u64,
    stats: SublistStats,
}

impl<T: Copy> fmt::Debug for Sublist<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sublist")
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

impl<'a, T: Copy> Sublist<'a, T> {
    /// An empty sublist over `mem`. `seed` keys the hash functions and the queue-group
    /// generator (use a random one in a server; a fixed one makes tests deterministic).
    pub fn new(mem: SublistMem<'a, T>, seed: u64) -> Result<Self, SublistError> {
        if mem.nodes.is_empty() {
            return Err(SublistError::NoNodes);
        }
        if mem.index.len() <= mem.nodes.len() {
            return Err(SublistError::IndexTooSmall {
                index: mem.index.len(),
                nodes: mem.nodes.len(),
            });
        }
        if mem.cache.len() != mem.cache_index.len() {
            return Err(SublistError::CacheMismatch);
        }
        mem.index.fill(0);
        mem.cache_index.fill(0);
        let mut nodes = Slab::new(mem.nodes);
        let root = nodes
            .try_insert(Node::new(Link::NONE, NodeKind::Root, 0, StrRef::default()))
            .map_err(|_| SublistError::NoNodes)?;
        Ok(Sublist {
            trie: Trie {
                nodes,
                index: mem.index,
                strings: Strings {
                    chunks: Slab::new(mem.chunks),
                },
                root,
                seed: fmix64(seed ^ 0x6a09_e667_f3bc_c908),
            },
            subs: Slab::new(mem.subs),
            groups: Slab::new(mem.groups),
            cache: Slab::new(mem.cache),
            cache_index: mem.cache_index,
            rng: Rng(fmix64(seed) | 1),
            epoch: 0,
            stats: SublistStats::default(),
        })
    }

    /// Number of subscriptions.
    pub fn len(&self) -> usize {
        self.subs.len()
    }

    /// Whether there is no subscription.
    pub fn is_empty(&self) -> bool {
        self.subs.is_empty()
    }

    /// The subscription capacity (also the output length that never overflows a match).
    pub fn capacity(&self) -> usize {
        self.subs.capacity()
    }

    /// Counters for monitoring.
    pub fn stats(&self) -> SublistStats {
        SublistStats {
            subscriptions: self.subs.len(),
            nodes: self.trie.nodes.len(),
            groups: self.groups.len(),
            chunks: self.trie.strings.chunks.len(),
            cache_lines: self.cache.len(),
            ..self.stats
        }
    }

    /// The value of a subscription.
    pub fn get(&self, key: SubKey) -> Result<&T, StaleKey> {
        self.subs.get(key.0).map(|s| &s.value)
    }

    /// Adds a subscription on `subject` (validated by [`subject::is_valid_subject`]), in queue
    /// group `queue` if given (any non-empty bytes), for subscriber `value`.
    ///
    /// On error nothing changed. Subscribing the same value twice makes two subscriptions (the
    /// broker ignores a SUB that reuses a sid before it gets here).
    pub fn insert(
        &mut self,
        subject: &[u8],
        queue: Option<&[u8]>,
        value: T,
    ) -> Result<SubKey, InsertError> {
        if !subject::is_valid_subject(subject) {
            return Err(InsertError::InvalidSubject);
        }
        if queue.is_some_and(|q| q.is_empty()) {
            return Err(InsertError::InvalidQueue);
        }
        // Dry run: what is missing, and is there room for it?
        let mut node = Some(self.trie.root);
        let mut new_nodes = 0usize;
        let mut new_chunks = 0usize;
        for token in subject::tokens(subject) {
            node = node.and_then(|n| self.trie.find_child(n, token));
            if node.is_none() {
                new_nodes += 1;
                if subject::token_kind(token) == TokenKind::Literal {
                    new_chunks += chunks_for(token.len());
                }
            }
        }
        let mut group = None;
        if let Some(q) = queue {
            group = node.and_then(|n| self.find_group(n, q));
            if group.is_none() {
                new_chunks += chunks_for(q.len());
            }
        }
        if self.subs.is_full() {
            return Err(InsertError::Full(Capacity::Subscriptions));
        }
        if self.trie.nodes.capacity() - self.trie.nodes.len() < new_nodes {
            return Err(InsertError::Full(Capacity::Nodes));
        }
        if queue.is_some() && group.is_none() && self.groups.is_full() {
            return Err(InsertError::Full(Capacity::Groups));
        }
        if self.trie.strings.free_chunks() < new_chunks {
            return Err(InsertError::Full(Capacity::Chunks));
        }

        // Commit; every step below has room.
        let mut at = self.trie.root;
        for token in subject::tokens(subject) {
            at = match self.trie.find_child(at, token) {
                Some(child) => child,
                None => self.add_child(at, token)?,
            };
        }
        let first_at_node = self.trie.node(at).is_some_and(|n| n.subs == 0);
        let group = match (queue, group) {
            (Some(q), None) => Some(self.add_group(at, q)?),
            (_, g) => g,
        };
        let head = match group {
            Some(g) => self.groups.get(g).map(|g| g.members).unwrap_or_default(),
            None => self.trie.node(at).map(|n| n.plain).unwrap_or_default(),
        };
        let key = self
            .subs
            .try_insert(SubEntry {
                node: at,
                group: group.map(Link::some).unwrap_or_default(),
                prev: Link::NONE,
                next: head,
                value,
            })
            .map_err(|_| InsertError::Full(Capacity::Subscriptions))?;
        if let Some(h) = head.get()
            && let Ok(s) = self.subs.get_mut(h)
        {
            s.prev = Link::some(key);
        }
        match group {
            Some(g) => {
                if let Ok(g) = self.groups.get_mut(g) {
                    g.members = Link::some(key);
                    g.count += 1;
                }
            }
            None => {
                if let Ok(n) = self.trie.nodes.get_mut(at) {
                    n.plain = Link::some(key);
                }
            }
        }
        if let Ok(n) = self.trie.nodes.get_mut(at) {
            n.subs += 1;
        }
        if first_at_node {
            self.invalidate(subject);
        }
        self.stats.inserts += 1;
        Ok(SubKey(key))
    }

    /// Removes a subscription and returns its value. The trie is pruned of nodes nobody uses
    /// any more.
    pub fn remove(&mut self, key: SubKey) -> Result<T, StaleKey> {
        let sub = self.subs.remove(key.0)?;
        // Unlink from its list.
        if let Some(p) = sub.prev.get()
            && let Ok(prev) = self.subs.get_mut(p)
        {
            prev.next = sub.next;
        }
        if let Some(n) = sub.next.get()
            && let Ok(next) = self.subs.get_mut(n)
        {
            next.prev = sub.prev;
        }
        let own = Link::some(key.0);
        match sub.group.get() {
            Some(gk) => {
                let mut empty = false;
                if let Ok(g) = self.groups.get_mut(gk) {
                    if g.members == own {
                        g.members = sub.next;
                    }
                    if g.cursor == own {
                        g.cursor = sub.next;
                    }
                    g.count = g.count.saturating_sub(1);
                    empty = g.count == 0;
                }
                if empty {
                    self.remove_group(gk);
                }
            }
            None => {
                if let Ok(n) = self.trie.nodes.get_mut(sub.node)
                    && n.plain == own
                {
                    n.plain = sub.next;
                }
            }
        }
        if let Ok(n) = self.trie.nodes.get_mut(sub.node) {
            n.subs = n.subs.saturating_sub(1);
        }
        self.prune(sub.node);
        self.stats.removes += 1;
        Ok(sub.value)
    }

    /// Matches a published subject: every plain subscriber, then one member of each distinct
    /// queue group, into `out` (see the [module documentation](self) for the order and the
    /// queue-group choice). A subject with an empty token matches nothing.
    pub fn match_subject(&mut self, subject: &[u8], out: &mut [T]) -> Result<Matched, MatchError> {
        self.match_into(subject, out, |_| true)
    }

    /// [`Sublist::match_subject`] with an eligibility predicate: subscribers for which
    /// `eligible` is false are left out, and a queue group's turn passes to its next eligible
    /// member (a group with none is left out).
    pub fn match_into<F: FnMut(&T) -> bool>(
        &mut self,
        subject: &[u8],
        out: &mut [T],
        mut eligible: F,
    ) -> Result<Matched, MatchError> {
        self.stats.matches += 1;
        let hash = hash_bytes(self.trie.seed, 0xcace, subject);
        let mut found = [0u64; CACHE_NODES];
        let hit = self.cache_lookup(subject, hash).map(|line| {
            let n = usize::from(line.n).min(CACHE_NODES);
            found[..n].copy_from_slice(&line.nodes[..n]);
            n
        });
        // A cached subject passed this check when its line was filled.
        if hit.is_none() && (subject.is_empty() || subject::tokens(subject).any(|t| t.is_empty())) {
            return Ok(Matched::default());
        }
        self.epoch += 1;
        let epoch = self.epoch;
        let mut written = 0usize;
        let mut plain = 0usize;
        let mut touched = TouchedList::default();

        // Pass 1: the matching nodes, from the cache or the trie. Plain subscribers go out
        // at once; queue groups are linked into the touched list.
        let mut nfound = 0usize;
        let mut cacheable = subject.len() <= CACHE_SUBJECT_MAX && !self.cache_index.is_empty();
        if let Some(n) = hit {
            self.stats.cache_hits += 1;
            cacheable = false;
            nfound = n;
            for &raw in &found[..nfound] {
                {
                    let node = Key::from_u64(raw);
                    self.visit(
                        node,
                        epoch,
                        out,
                        &mut written,
                        &mut plain,
                        &mut touched,
                        &mut eligible,
                    );
                }
            }
        } else {
            let mut walk = Walk {
                node: self.trie.root,
                pos: 0,
                phase: Phase::Enter,
            };
            while let Some(node) = walk.next(&self.trie, subject) {
                if nfound < CACHE_NODES {
                    found[nfound] = node.to_u64();
                    nfound += 1;
                } else {
                    cacheable = false;
                }
                self.visit(
                    node,
                    epoch,
                    out,
                    &mut written,
                    &mut plain,
                    &mut touched,
                    &mut eligible,
                );
            }
        }

        // Pass 2: one member per distinct group name.
        let mut queued = 0usize;
        let mut cur = touched.head;
        while let Some(gk) = cur.get() {
            let Ok(g) = self.groups.get(gk) else { break };
            cur = g.touched_next;
            if g.done == epoch {
                continue;
            }
            if let Some(v) = self.serve_group(gk, epoch, &mut eligible) {
                if let Some(slot) = out.get_mut(written) {
                    *slot = v;
                }
                written += 1;
                queued += 1;
            }
        }

        if cacheable {
            self.cache_fill(subject, hash, &found[..nfound]);
        }
        if written > out.len() {
            return Err(MatchError::OutputTooSmall { needed: written });
        }
        Ok(Matched { plain, queued })
    }

    /// Writes the subject of a subscription into `out`; returns its length, or `None` if the
    /// key is stale or `out` too short.
    pub fn subject_of(&self, key: SubKey, out: &mut [u8]) -> Option<usize> {
        let sub = self.subs.get(key.0).ok()?;
        // First pass: the length.
        let mut len = 0usize;
        let mut at = sub.node;
        while at != self.trie.root {
            let n = self.trie.node(at)?;
            len += token_len(n) + usize::from(len > 0);
            at = n.parent.get()?;
        }
        let out = out.get_mut(..len)?;
        // Second pass: the tokens, from the end.
        let mut end = len;
        let mut at = sub.node;
        while at != self.trie.root {
            let n = self.trie.node(at)?;
            let start = end - token_len(n);
            match n.kind {
                NodeKind::Pwc => out[start] = subject::PWC,
                NodeKind::Fwc => out[start] = subject::FWC,
                _ => {
                    let mut off = start;
                    for part in self.trie.strings.parts(n.token) {
                        out[off..off + part.len()].copy_from_slice(part);
                        off += part.len();
                    }
                }
            }
            if start > 0 {
                out[start - 1] = subject::SEP;
                end = start - 1;
            } else {
                end = 0;
            }
            at = n.parent.get()?;
        }
        Some(len)
    }

    /// Writes the queue group of a subscription into `out`: `Some(0)` for a plain
    /// subscription, `None` if the key is stale or `out` too short.
    pub fn queue_of(&self, key: SubKey, out: &mut [u8]) -> Option<usize> {
        let sub = self.subs.get(key.0).ok()?;
        let Some(gk) = sub.group.get() else {
            return Some(0);
        };
        let g = self.groups.get(gk).ok()?;
        let out = out.get_mut(..g.name.len as usize)?;
        let mut off = 0;
        for part in self.trie.strings.parts(g.name) {
            out[off..off + part.len()].copy_from_slice(part);
            off += part.len();
        }
        Some(off)
    }

    /// Every subscription: keys and values, in slot order (O(capacity)).
    pub fn iter(&self) -> impl Iterator<Item = (SubKey, &T)> + '_ {
        self.subs.iter().map(|(k, s)| (SubKey(k), &s.value))
    }

    // ---- internals ----

    /// Pass 1 for one matched node.
    #[allow(clippy::too_many_arguments)]
    fn visit<F: FnMut(&T) -> bool>(
        &mut self,
        node: Key,
        epoch: u64,
        out: &mut [T],
        written: &mut usize,
        plain: &mut usize,
        touched: &mut TouchedList,
        eligible: &mut F,
    ) {
        let Some(n) = self.trie.node(node) else {
            return;
        };
        let (mut link, mut glink) = (n.plain, n.groups);
        while let Some(sk) = link.get() {
            let Ok(s) = self.subs.get(sk) else { break };
            link = s.next;
            if eligible(&s.value) {
                if let Some(slot) = out.get_mut(*written) {
                    *slot = s.value;
                }
                *written += 1;
                *plain += 1;
            }
        }
        while let Some(gk) = glink.get() {
            let Ok(g) = self.groups.get_mut(gk) else {
                break;
            };
            glink = g.next;
            if g.count == 0 || g.seen == epoch {
                continue;
            }
            g.seen = epoch;
            g.touched_next = Link::NONE;
            if let Some(t) = touched.tail.get()
                && let Ok(tg) = self.groups.get_mut(t)
            {
                tg.touched_next = Link::some(gk);
            }
            if touched.head.is_none() {
                touched.head = Link::some(gk);
            }
            touched.tail = Link::some(gk);
        }
    }

    /// Pass 2 for the group name of `first` (the first touched group with that name): picks
    /// one eligible member among all touched groups of that name.
    fn serve_group<F: FnMut(&T) -> bool>(
        &mut self,
        first: Key,
        epoch: u64,
        eligible: &mut F,
    ) -> Option<T> {
        let (name, name_hash) = {
            let g = self.groups.get(first).ok()?;
            (g.name, g.name_hash)
        };
        // The same-named groups among the touched ones, from `first` on; mark them served.
        let mut total = 0u64;
        let mut entries = 0usize;
        let mut link = Link::some(first);
        while let Some(gk) = link.get() {
            let Ok(g) = self.groups.get(gk) else { break };
            link = g.touched_next;
            if g.done != epoch && g.name_hash == name_hash && self.trie.strings.eq_ref(g.name, name)
            {
                total += u64::from(g.count);
                entries += 1;
                if let Ok(g) = self.groups.get_mut(gk) {
                    g.done = epoch;
                }
            }
        }
        // The starting group: weighted by member count when there are several.
        let mut start = first;
        if entries > 1 && total > 0 {
            let mut r = self.rng.next() % total;
            let mut link = Link::some(first);
            while let Some(gk) = link.get() {
                let Ok(g) = self.groups.get(gk) else { break };
                link = g.touched_next;
                if g.done == epoch && g.name_hash == name_hash && g.seen == epoch {
                    let same = self.trie.strings.eq_ref(g.name, name);
                    if same {
                        if r < u64::from(g.count) {
                            start = gk;
                            break;
                        }
                        r -= u64::from(g.count);
                    }
                }
            }
        }
        // Try the starting group, then the others of the name (cyclically in touched order).
        if let Some(v) = self.take_member(start, eligible) {
            return Some(v);
        }
        if entries > 1 {
            let mut wrapped = false;
            let mut link = self.groups.get(start).ok()?.touched_next;
            loop {
                let gk = match link.get() {
                    Some(gk) => gk,
                    None if !wrapped => {
                        wrapped = true;
                        first
                    }
                    None => break,
                };
                if gk == start {
                    break;
                }
                let g = self.groups.get(gk).ok()?;
                link = g.touched_next;
                let same = g.done == epoch
                    && g.name_hash == name_hash
                    && self.trie.strings.eq_ref(g.name, name);
                if same && let Some(v) = self.take_member(gk, eligible) {
                    return Some(v);
                }
            }
        }
        None
    }

    /// The first eligible member of a group from its cursor on (rotating), moving the cursor
    /// past it.
    fn take_member<F: FnMut(&T) -> bool>(&mut self, gk: Key, eligible: &mut F) -> Option<T> {
        let g = self.groups.get(gk).ok()?;
        let (head, count) = (g.members, g.count);
        let start = if g.cursor.is_none() { head } else { g.cursor };
        let mut link = start;
        for _ in 0..count {
            let sk = match link.get() {
                Some(sk) => sk,
                None => head.get()?,
            };
            let s = self.subs.get(sk).ok()?;
            let next = s.next;
            if eligible(&s.value) {
                let v = s.value;
                if let Ok(g) = self.groups.get_mut(gk) {
                    g.cursor = next;
                }
                return Some(v);
            }
            link = if next.is_none() { head } else { next };
        }
        None
    }

    fn find_group(&self, node: Key, name: &[u8]) -> Option<Key> {
        let h = hash_bytes(self.trie.seed, 0x9e0e, name);
        let mut link = self.trie.node(node)?.groups;
        while let Some(gk) = link.get() {
            let g = self.groups.get(gk).ok()?;
            if g.name_hash == h && self.trie.strings.eq(g.name, name) {
                return Some(gk);
            }
            link = g.next;
        }
        None
    }

    fn add_group(&mut self, node: Key, name: &[u8]) -> Result<Key, InsertError> {
        let name_ref = self.trie.strings.store(name).map_err(InsertError::Full)?;
        let head = self.trie.node(node).map(|n| n.groups).unwrap_or_default();
        let group = Group {
            node,
            name: name_ref,
            name_hash: hash_bytes(self.trie.seed, 0x9e0e, name),
            members: Link::NONE,
            count: 0,
            cursor: Link::NONE,
            prev: Link::NONE,
            next: head,
            seen: 0,
            done: 0,
            touched_next: Link::NONE,
        };
        let key = match self.groups.try_insert(group) {
            Ok(key) => key,
            Err(_) => {
                self.trie.strings.free(name_ref);
                return Err(InsertError::Full(Capacity::Groups));
            }
        };
        if let Some(h) = head.get()
            && let Ok(g) = self.groups.get_mut(h)
        {
            g.prev = Link::some(key);
        }
        if let Ok(n) = self.trie.nodes.get_mut(node) {
            n.groups = Link::some(key);
        }
        Ok(key)
    }

    fn remove_group(&mut self, gk: Key) {
        let Ok(g) = self.groups.remove(gk) else {
            return;
        };
        if let Some(p) = g.prev.get()
            && let Ok(prev) = self.groups.get_mut(p)
        {
            prev.next = g.next;
        }
        if let Some(n) = g.next.get()
            && let Ok(next) = self.groups.get_mut(n)
        {
            next.prev = g.prev;
        }
        if let Ok(n) = self.trie.nodes.get_mut(g.node)
            && n.groups == Link::some(gk)
        {
            n.groups = g.next;
        }
        self.trie.strings.free(g.name);
    }

    fn add_child(&mut self, parent: Key, token: &[u8]) -> Result<Key, InsertError> {
        let kind = match subject::token_kind(token) {
            TokenKind::Pwc => NodeKind::Pwc,
            TokenKind::Fwc => NodeKind::Fwc,
            TokenKind::Literal => NodeKind::Literal,
        };
        let (hash, text) = if kind == NodeKind::Literal {
            let text = self.trie.strings.store(token).map_err(InsertError::Full)?;
            (self.trie.literal_hash(parent, token), text)
        } else {
            (0, StrRef::default())
        };
        let node = Node::new(Link::some(parent), kind, hash, text);
        let key = match self.trie.nodes.try_insert(node) {
            Ok(key) => key,
            Err(_) => {
                self.trie.strings.free(text);
                return Err(InsertError::Full(Capacity::Nodes));
            }
        };
        if let Ok(p) = self.trie.nodes.get_mut(parent) {
            p.children += 1;
            match kind {
                NodeKind::Pwc => p.pwc = Link::some(key),
                NodeKind::Fwc => p.fwc = Link::some(key),
                _ => {}
            }
        }
        if kind == NodeKind::Literal {
            self.trie.index_insert(key, hash);
        }
        Ok(key)
    }

    /// Removes `node` and then its ancestors while they hold nothing.
    fn prune(&mut self, mut node: Key) {
        while node != self.trie.root {
            let Some(n) = self.trie.node(node) else {
                return;
            };
            if n.subs > 0 || n.children > 0 || !n.plain.is_none() || !n.groups.is_none() {
                return;
            }
            let (parent, kind, token) = (n.parent, n.kind, n.token);
            if kind == NodeKind::Literal {
                self.trie.index_remove(node);
            }
            let _ = self.trie.nodes.remove(node);
            self.trie.strings.free(token);
            let Some(pk) = parent.get() else { return };
            if let Ok(p) = self.trie.nodes.get_mut(pk) {
                p.children = p.children.saturating_sub(1);
                if p.pwc == Link::some(node) {
                    p.pwc = Link::NONE;
                }
                if p.fwc == Link::some(node) {
                    p.fwc = Link::NONE;
                }
            }
            node = pk;
        }
    }

    fn cache_lookup(&self, subject: &[u8], hash: u64) -> Option<&CacheLine> {
        if subject.len() > CACHE_SUBJECT_MAX || self.cache_index.is_empty() {
            return None;
        }
        let b = reduce(hash, self.cache_index.len());
        let line = self.cache.get(Link(self.cache_index[b]).get()?).ok()?;
        (line.hash == hash
            && usize::from(line.len) == subject.len()
            && &line.subject[..subject.len()] == subject)
            .then_some(line)
    }

    fn cache_fill(&mut self, subject: &[u8], hash: u64, nodes: &[u64]) {
        let b = reduce(hash, self.cache_index.len());
        let mut line = CacheLine {
            hash,
            len: subject.len() as u16,
            n: nodes.len() as u8,
            subject: [0; CACHE_SUBJECT_MAX],
            nodes: [0; CACHE_NODES],
        };
        line.subject[..subject.len()].copy_from_slice(subject);
        line.nodes[..nodes.len()].copy_from_slice(nodes);
        if let Some(k) = Link(self.cache_index[b]).get()
            && let Ok(old) = self.cache.get_mut(k)
        {
            *old = line;
            return;
        }
        if let Ok(k) = self.cache.try_insert(line) {
            self.cache_index[b] = Link::some(k).0;
        }
    }

    /// Drops the cache lines a new subscription on `pattern` could change.
    fn invalidate(&mut self, pattern: &[u8]) {
        if self.cache.is_empty() {
            return;
        }
        if subject::is_literal(pattern) {
            let hash = hash_bytes(self.trie.seed, 0xcace, pattern);
            if self.cache_lookup(pattern, hash).is_some() {
                let b = reduce(hash, self.cache_index.len());
                if let Some(k) = Link(self.cache_index[b]).get() {
                    let _ = self.cache.remove(k);
                }
                self.cache_index[b] = 0;
            }
            return;
        }
        for b in 0..self.cache_index.len() {
            let Some(k) = Link(self.cache_index[b]).get() else {
                continue;
            };
            let hit = match self.cache.get(k) {
                Ok(line) => subject::matches(pattern, &line.subject[..usize::from(line.len)]),
                Err(_) => true,
            };
            if hit {
                let _ = self.cache.remove(k);
                self.cache_index[b] = 0;
            }
        }
    }
}

/// Head and tail of the touched-groups list of one match.
#[derive(Default)]
struct TouchedList {
    head: Link,
    tail: Link,
}

fn token_len(n: &Node) -> usize {
    match n.kind {
        NodeKind::Pwc | NodeKind::Fwc => 1,
        _ => n.token.len as usize,
    }
}

impl Node {
    fn new(parent: Link, kind: NodeKind, hash: u64, token: StrRef) -> Node {
        Node {
            parent,
            kind,
            hash,
            token,
            pwc: Link::NONE,
            fwc: Link::NONE,
            children: 0,
            subs: 0,
            plain: Link::NONE,
            groups: Link::NONE,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pool::test_rng::XorShift;
    use std::collections::{BTreeMap, BTreeSet};
    use std::string::ToString;
    use std::vec;
    use std::vec::Vec;

    type Small = SublistStorage<u32, 64, 128, 256, 16>;

    #[test]
    fn hash_reads_every_byte_and_the_length() {
        let base: Vec<u8> = (0..40u8).map(|i| b'a' + i % 26).collect();
        for n in 0..=base.len() {
            let s = &base[..n];
            let h = hash_bytes(7, 1, s);
            assert_eq!(h, hash_bytes(7, 1, s), "deterministic");
            assert_ne!(h, hash_bytes(8, 1, s), "seeded");
            assert_ne!(h, hash_bytes(7, 2, s), "extra word mixed in");
            if n < base.len() {
                assert_ne!(h, hash_bytes(7, 1, &base[..n + 1]), "length {n}");
            }
            for i in 0..n {
                let mut t = s.to_vec();
                t[i] ^= 0x20;
                assert_ne!(h, hash_bytes(7, 1, &t), "byte {i} of {n}");
            }
        }
        // A zero byte at the end is not the same as a shorter string.
        assert_ne!(hash_bytes(7, 1, b"abc"), hash_bytes(7, 1, b"abc\0"));
    }

    fn sorted(out: &[u32], m: Matched) -> Vec<u32> {
        let mut v = out[..m.len()].to_vec();
        v.sort();
        v
    }

    fn boxed<S: Default>() -> std::boxed::Box<S> {
        std::boxed::Box::default()
    }

    /// Storage on the heap, piece by piece (big sizes overflow a test thread's stack).
    struct HeapMem {
        subs: Vec<Slot<SubEntry<u32>>>,
        nodes: Vec<Slot<Node>>,
        groups: Vec<Slot<Group>>,
        chunks: Vec<Slot<Chunk>>,
        index: Vec<u64>,
        cache: Vec<Slot<CacheLine>>,
        cache_index: Vec<u64>,
    }

    fn slots<T>(n: usize) -> Vec<Slot<T>> {
        (0..n).map(|_| Slot::new()).collect()
    }

    impl HeapMem {
        fn new(subs: usize, nodes: usize, index: usize, chunks: usize, cache: usize) -> Self {
            HeapMem {
                subs: slots(subs),
                nodes: slots(nodes),
                groups: slots(subs),
                chunks: slots(chunks),
                index: vec![0; index],
                cache: slots(cache),
                cache_index: vec![0; cache],
            }
        }

        fn mem(&mut self) -> SublistMem<'_, u32> {
            SublistMem {
                subs: &mut self.subs,
                nodes: &mut self.nodes,
                groups: &mut self.groups,
                chunks: &mut self.chunks,
                index: &mut self.index,
                cache: &mut self.cache,
                cache_index: &mut self.cache_index,
            }
        }
    }

    #[test]
    fn literal_and_wildcards() {
        let mut st = boxed::<Small>();
        let mut sl = st.sublist(1).unwrap();
        let a = sl.insert(b"foo.bar", None, 1).unwrap();
        sl.insert(b"foo.*", None, 2).unwrap();
        sl.insert(b"foo.>", None, 3).unwrap();
        sl.insert(b">", None, 4).unwrap();
        sl.insert(b"*.bar", None, 5).unwrap();
        sl.insert(b"foo.bar.baz", None, 6).unwrap();
        let mut out = [0u32; 16];
        let m = sl.match_subject(b"foo.bar", &mut out).unwrap();
        assert_eq!(sorted(&out, m), [1, 2, 3, 4, 5]);
        let m = sl.match_subject(b"foo.bar.baz", &mut out).unwrap();
        assert_eq!(sorted(&out, m), [3, 4, 6]);
        let m = sl.match_subject(b"foo", &mut out).unwrap();
        assert_eq!(sorted(&out, m), [4]);
        // A published `*` is a literal token.
        let m = sl.match_subject(b"foo.*", &mut out).unwrap();
        assert_eq!(sorted(&out, m), [2, 3, 4]);
        // Empty tokens match nothing.
        for bad in [&b""[..], b".", b"foo.", b".foo", b"foo..bar"] {
            assert!(sl.match_subject(bad, &mut out).unwrap().is_empty());
        }
        assert_eq!(sl.remove(a), Ok(1));
        assert_eq!(sl.remove(a).map_err(|e| e.key()), Err(a.key()));
        let m = sl.match_subject(b"foo.bar", &mut out).unwrap();
        assert_eq!(sorted(&out, m), [2, 3, 4, 5]);
    }

    #[test]
    fn invalid_subjects_refused() {
        let mut st = boxed::<Small>();
        let mut sl = st.sublist(1).unwrap();
        for bad in [&b""[..], b"foo.", b"a..b", b"foo.>.bar", b"a b", b"a\x0cb"] {
            assert_eq!(sl.insert(bad, None, 1), Err(InsertError::InvalidSubject));
        }
        assert_eq!(
            sl.insert(b"foo", Some(b""), 1),
            Err(InsertError::InvalidQueue)
        );
        assert_eq!(sl.stats().nodes, 1);
        assert!(sl.insert(b"foo*.>", None, 1).is_ok());
    }

    #[test]
    fn removal_prunes_everything() {
        let mut st = boxed::<Small>();
        let mut sl = st.sublist(7).unwrap();
        let long = [b'x'; 100];
        let mut subject = b"a.".to_vec();
        subject.extend_from_slice(&long);
        subject.extend_from_slice(b".*.>");
        let k1 = sl
            .insert(&subject, Some(b"workers-with-a-long-name-over-24"), 1)
            .unwrap();
        let k2 = sl.insert(b"a.b", None, 2).unwrap();
        let k3 = sl.insert(b"a.b", Some(b"q"), 3).unwrap();
        assert!(sl.stats().chunks > 5);
        let mut buf = [0u8; 200];
        let n = sl.subject_of(k1, &mut buf).unwrap();
        assert_eq!(&buf[..n], &subject[..]);
        let n = sl.queue_of(k1, &mut buf).unwrap();
        assert_eq!(&buf[..n], b"workers-with-a-long-name-over-24");
        assert_eq!(sl.queue_of(k2, &mut buf), Some(0));
        assert_eq!(sl.subject_of(k3, &mut buf[..2]), None, "too short");
        for k in [k2, k1, k3] {
            sl.remove(k).unwrap();
        }
        let s = sl.stats();
        assert_eq!((s.subscriptions, s.nodes, s.groups, s.chunks), (0, 1, 0, 0));
        assert_eq!((s.inserts, s.removes), (3, 3));
    }

    #[test]
    fn queue_groups_rotate_and_merge() {
        let mut st = boxed::<Small>();
        let mut sl = st.sublist(3).unwrap();
        sl.insert(b"work", Some(b"q"), 1).unwrap();
        sl.insert(b"work", Some(b"q"), 2).unwrap();
        sl.insert(b"work", Some(b"q"), 3).unwrap();
        sl.insert(b"work", Some(b"r"), 10).unwrap();
        sl.insert(b"work", None, 100).unwrap();
        let mut out = [0u32; 8];
        let mut counts = BTreeMap::new();
        for _ in 0..30 {
            let m = sl.match_subject(b"work", &mut out).unwrap();
            assert_eq!((m.plain, m.queued), (1, 2));
            assert_eq!(out[0], 100);
            let q: Vec<u32> = out[1..3].to_vec();
            assert!(q.contains(&10));
            for v in q {
                *counts.entry(v).or_insert(0) += 1;
            }
        }
        // Rotation: exactly even.
        assert_eq!(counts[&1], 10);
        assert_eq!(counts[&2], 10);
        assert_eq!(counts[&3], 10);
        assert_eq!(counts[&10], 30);

        // The same name on another node that also matches: still one member of `q`.
        sl.insert(b"*", Some(b"q"), 4).unwrap();
        let mut seen = BTreeSet::new();
        for _ in 0..200 {
            let m = sl.match_subject(b"work", &mut out).unwrap();
            assert_eq!((m.plain, m.queued), (1, 2));
            let q: Vec<u32> = out[1..3].iter().copied().filter(|&v| v != 10).collect();
            assert_eq!(q.len(), 1);
            seen.insert(q[0]);
        }
        assert_eq!(seen, BTreeSet::from([1, 2, 3, 4]));

        // Eligibility: 1, 2 and 4 cannot take it, so 3 always does.
        for _ in 0..10 {
            let m = sl
                .match_into(b"work", &mut out, |&v| !matches!(v, 1 | 2 | 4))
                .unwrap();
            assert_eq!(sorted(&out, m), [3, 10, 100]);
        }
        // Nobody eligible in `q`: the group is left out, and plain 100 too.
        let m = sl.match_into(b"work", &mut out, |&v| v == 10).unwrap();
        assert_eq!((m.plain, m.queued, out[0]), (0, 1, 10));
    }

    #[test]
    fn cursor_survives_member_removal() {
        let mut st = boxed::<Small>();
        let mut sl = st.sublist(3).unwrap();
        let keys: Vec<SubKey> = (1..=4)
            .map(|v| sl.insert(b"s", Some(b"g"), v).unwrap())
            .collect();
        let mut out = [0u32; 4];
        sl.match_subject(b"s", &mut out).unwrap();
        let first = out[0];
        // Remove the member the cursor points at next, and others, in turn.
        for k in keys.iter().rev() {
            let before = sl.len();
            sl.remove(*k).unwrap();
            if before > 1 {
                let m = sl.match_subject(b"s", &mut out).unwrap();
                assert_eq!(m.queued, 1);
            }
        }
        assert!(first >= 1);
        assert!(sl.match_subject(b"s", &mut out).unwrap().is_empty());
        assert_eq!(sl.stats().groups, 0);
    }

    #[test]
    fn cache_hits_and_invalidation() {
        let mut st = boxed::<Small>();
        let mut sl = st.sublist(5).unwrap();
        let mut out = [0u32; 8];
        sl.insert(b"a.b", None, 1).unwrap();
        assert_eq!(sl.match_subject(b"a.b", &mut out).unwrap().len(), 1);
        assert_eq!(sl.match_subject(b"a.b", &mut out).unwrap().len(), 1);
        assert_eq!(sl.stats().cache_hits, 1);
        // A new wildcard node that matches: the line goes.
        sl.insert(b"a.*", None, 2).unwrap();
        let m = sl.match_subject(b"a.b", &mut out).unwrap();
        assert_eq!(sorted(&out, m), [1, 2]);
        // Another sub on an existing node: no invalidation needed, still right.
        let k3 = sl.insert(b"a.*", None, 3).unwrap();
        let m = sl.match_subject(b"a.b", &mut out).unwrap();
        assert_eq!(sorted(&out, m), [1, 2, 3]);
        // Removals: still right from the cache.
        sl.remove(k3).unwrap();
        let m = sl.match_subject(b"a.b", &mut out).unwrap();
        assert_eq!(sorted(&out, m), [1, 2]);
        // A literal insert on a new node invalidates its own subject.
        sl.insert(b"x.y", None, 9).unwrap();
        assert!(sl.match_subject(b"x.z", &mut out).unwrap().is_empty());
        assert!(sl.match_subject(b"x.z", &mut out).unwrap().is_empty());
        sl.insert(b"x.z", None, 8).unwrap();
        assert_eq!(sl.match_subject(b"x.z", &mut out).unwrap().len(), 1);
        assert!(sl.stats().cache_hits >= 3);
    }

    #[test]
    fn pruned_node_in_cache_is_skipped() {
        let mut st = boxed::<Small>();
        let mut sl = st.sublist(5).unwrap();
        let mut out = [0u32; 8];
        let k = sl.insert(b"p.q", None, 1).unwrap();
        sl.match_subject(b"p.q", &mut out).unwrap();
        sl.remove(k).unwrap();
        assert_eq!(sl.stats().nodes, 1);
        // Reuse the node slots for something else.
        sl.insert(b"z.z", None, 2).unwrap();
        assert!(sl.match_subject(b"p.q", &mut out).unwrap().is_empty());
        sl.insert(b"p.q", None, 3).unwrap();
        let m = sl.match_subject(b"p.q", &mut out).unwrap();
        assert_eq!(sorted(&out, m), [3]);
    }

    #[test]
    fn capacity_errors_leave_it_unchanged() {
        let mut st = boxed::<SublistStorage<u32, 2, 4, 3, 2>>();
        let mut sl = st.sublist(1).unwrap();
        sl.insert(b"a.b", None, 1).unwrap();
        let before = sl.stats();
        // Nodes: root + a + b used, one left; a.c.d needs two.
        assert_eq!(
            sl.insert(b"a.c.d", None, 2),
            Err(InsertError::Full(Capacity::Nodes))
        );
        // Chunks: 2 used, 1 left; a 30-byte token needs 2.
        assert_eq!(
            sl.insert(&[b'x'; 30], None, 2),
            Err(InsertError::Full(Capacity::Chunks))
        );
        assert_eq!(
            sl.insert(b"a.b", Some(&[b'q'; 30]), 2),
            Err(InsertError::Full(Capacity::Chunks))
        );
        let s = sl.stats();
        assert_eq!(
            (s.nodes, s.chunks, s.subscriptions),
            (before.nodes, before.chunks, 1)
        );
        sl.insert(b"a.b", None, 2).unwrap();
        assert_eq!(
            sl.insert(b"a.b", None, 3),
            Err(InsertError::Full(Capacity::Subscriptions))
        );
        let mut out = [0u32; 1];
        assert_eq!(
            sl.match_subject(b"a.b", &mut out),
            Err(MatchError::OutputTooSmall { needed: 2 })
        );
        assert!(
            InsertError::Full(Capacity::Nodes)
                .to_string()
                .contains("NODES")
        );
    }

    #[test]
    fn construction_errors() {
        let mut nodes: [Slot<Node>; 4] = Default::default();
        let mut index = [0u64; 4];
        let mut mem_subs: [Slot<SubEntry<u8>>; 1] = Default::default();
        let mut groups: [Slot<Group>; 1] = Default::default();
        let mut chunks: [Slot<Chunk>; 1] = Default::default();
        let mem = SublistMem {
            subs: &mut mem_subs,
            nodes: &mut nodes,
            groups: &mut groups,
            chunks: &mut chunks,
            index: &mut index,
            cache: &mut [],
            cache_index: &mut [],
        };
        assert_eq!(
            Sublist::new(mem, 0).err(),
            Some(SublistError::IndexTooSmall { index: 4, nodes: 4 })
        );
        let mem = SublistMem {
            subs: &mut mem_subs,
            nodes: &mut [],
            groups: &mut groups,
            chunks: &mut chunks,
            index: &mut index,
            cache: &mut [],
            cache_index: &mut [],
        };
        assert_eq!(Sublist::new(mem, 0).err(), Some(SublistError::NoNodes));
    }

    #[test]
    fn deep_subjects_need_no_stack() {
        // 3000 tokens: the walk climbs and descends without recursion.
        let mut heap = HeapMem::new(4, 7000, 14000, 4000, 0);
        let mut sl = Sublist::new(heap.mem(), 1).unwrap();
        let n = 3000;
        let pattern: Vec<u8> = vec!["*"; n].join(".").into_bytes();
        let subject: Vec<u8> = vec!["t"; n].join(".").into_bytes();
        let mut mixed: Vec<&str> = vec!["*"; n];
        mixed[n - 1] = ">";
        let mixed = mixed.join(".").into_bytes();
        sl.insert(&pattern, None, 1).unwrap();
        sl.insert(&mixed, None, 2).unwrap();
        sl.insert(&subject, None, 3).unwrap();
        let mut out = [0u32; 4];
        let m = sl.match_subject(&subject, &mut out).unwrap();
        assert_eq!(sorted(&out, m), [1, 2, 3]);
        let mut longer = subject.clone();
        longer.extend_from_slice(b".u.v");
        let m = sl.match_subject(&longer, &mut out).unwrap();
        assert_eq!(sorted(&out, m), [2]);
    }

    #[test]
    fn literal_table_survives_churn() {
        // A table barely bigger than the node slab: long probe runs, many deletions.
        let mut heap = HeapMem::new(200, 200, 201, 400, 0);
        let mut sl = Sublist::new(heap.mem(), 42).unwrap();
        let mut rng = XorShift::new(9);
        let mut live: BTreeMap<u32, SubKey> = BTreeMap::new();
        let mut out = [0u32; 200];
        for step in 0..20_000u32 {
            let id = rng.below(250) as u32;
            let name = std::format!("n{id}");
            if let Some(k) = live.remove(&id) {
                assert_eq!(sl.remove(k), Ok(id));
            } else {
                match sl.insert(name.as_bytes(), None, id) {
                    Ok(k) => {
                        live.insert(id, k);
                    }
                    Err(InsertError::Full(_)) => {}
                    Err(e) => panic!("{e}"),
                }
            }
            if step % 97 == 0 {
                for probe in 0..250u32 {
                    let name = std::format!("n{probe}");
                    let m = sl.match_subject(name.as_bytes(), &mut out).unwrap();
                    let want = usize::from(live.contains_key(&probe));
                    assert_eq!(m.len(), want, "n{probe} at step {step}");
                }
            }
        }
    }

    /// A naive model: a list of (pattern, queue, value).
    struct Model {
        subs: Vec<ModelSub>,
    }

    /// Pattern, queue group, value, key.
    type ModelSub = (Vec<u8>, Option<Vec<u8>>, u32, SubKey);

    fn random_pattern(rng: &mut XorShift) -> Vec<u8> {
        const TOKENS: [&str; 6] = ["a", "b", "cc", "*", ">", "a*"];
        let n = 1 + rng.below(4);
        let mut toks = Vec::new();
        for i in 0..n {
            let t = TOKENS[rng.below(TOKENS.len())];
            if t == ">" && i + 1 != n {
                toks.push("*");
            } else {
                toks.push(t);
            }
        }
        toks.join(".").into_bytes()
    }

    fn random_subject(rng: &mut XorShift) -> Vec<u8> {
        const TOKENS: [&str; 5] = ["a", "b", "cc", "a*", "*"];
        let n = 1 + rng.below(5);
        (0..n)
            .map(|_| TOKENS[rng.below(TOKENS.len())])
            .collect::<Vec<_>>()
            .join(".")
            .into_bytes()
    }

    fn check_against_model(seed: u64, cache: bool) {
        let mut heap = HeapMem::new(256, 512, 1024, 1024, 8);
        let mut mem = heap.mem();
        if !cache {
            mem.cache = &mut [];
            mem.cache_index = &mut [];
        }
        let mut sl = Sublist::new(mem, seed).unwrap();
        let mut rng = XorShift::new(seed);
        let mut model = Model { subs: Vec::new() };
        let mut next_value = 0u32;
        let mut out = vec![0u32; 256];
        for _ in 0..3000 {
            match rng.below(10) {
                0..=3 if model.subs.len() < 200 => {
                    let p = random_pattern(&mut rng);
                    let q = match rng.below(4) {
                        0 => Some(b"q1".to_vec()),
                        1 => Some(b"q2".to_vec()),
                        _ => None,
                    };
                    next_value += 1;
                    let k = sl.insert(&p, q.as_deref(), next_value).unwrap();
                    model.subs.push((p, q, next_value, k));
                }
                4..=5 if !model.subs.is_empty() => {
                    let i = rng.below(model.subs.len());
                    let (_, _, v, k) = model.subs.swap_remove(i);
                    assert_eq!(sl.remove(k), Ok(v));
                }
                _ => {
                    let s = random_subject(&mut rng);
                    let excluded = rng.below(8) as u32;
                    let eligible = |v: &u32| v % 8 != excluded;
                    let m = sl.match_into(&s, &mut out, eligible).unwrap();
                    let mut want_plain: Vec<u32> = Vec::new();
                    let mut groups: BTreeMap<Vec<u8>, BTreeSet<u32>> = BTreeMap::new();
                    for (p, q, v, _) in &model.subs {
                        if !subject::matches(p, &s) || !eligible(v) {
                            continue;
                        }
                        match q {
                            None => want_plain.push(*v),
                            Some(q) => {
                                groups.entry(q.clone()).or_default().insert(*v);
                            }
                        }
                    }
                    want_plain.sort();
                    let mut got_plain = out[..m.plain].to_vec();
                    got_plain.sort();
                    assert_eq!(got_plain, want_plain, "plain for {:?}", s);
                    assert_eq!(m.queued, groups.len(), "groups for {:?}", s);
                    let chosen = &out[m.plain..m.len()];
                    for members in groups.values() {
                        assert_eq!(
                            chosen.iter().filter(|v| members.contains(v)).count(),
                            1,
                            "one member per group"
                        );
                    }
                }
            }
            let st = sl.stats();
            assert_eq!(st.subscriptions, model.subs.len());
        }
        // Drain: everything pruned.
        for (_, _, v, k) in model.subs.drain(..) {
            assert_eq!(sl.remove(k), Ok(v));
        }
        let st = sl.stats();
        assert_eq!((st.nodes, st.groups, st.chunks), (1, 0, 0));
    }

    #[test]
    fn property_matches_naive_model() {
        for seed in 1..=12 {
            check_against_model(seed, true);
            check_against_model(seed, false);
        }
    }

    #[test]
    fn seeded_choice_is_deterministic() {
        let run = |seed| {
            let mut st = boxed::<Small>();
            let mut sl = st.sublist(seed).unwrap();
            for v in 0..5 {
                sl.insert(b"x.y", Some(b"g"), v).unwrap();
                sl.insert(b"x.*", Some(b"g"), 10 + v).unwrap();
            }
            let mut out = [0u32; 4];
            (0..50)
                .map(|_| {
                    sl.match_subject(b"x.y", &mut out).unwrap();
                    out[0]
                })
                .collect::<Vec<_>>()
        };
        assert_eq!(run(77), run(77));
        let picks = run(77);
        assert!(picks.iter().any(|&v| v < 10) && picks.iter().any(|&v| v >= 10));
    }
}
