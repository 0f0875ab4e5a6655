//! [`Broker`]: the [`Handler`] that binds the sans-IO core (parser, CONNECT options, sublist,
//! protocol writers) to the reactor, following the flow in the [module docs](super).
//!
//! # Storage
//!
//! Everything lives in caller storage handed in as a [`BrokerMem`] (slices), or the
//! ready-made [`BrokerStorage`] (const generics). [`BrokerStorage`] is
//! [`crate::pool::ZeroInit`] (every piece is: [`SlabStorage`]s and `u64` arrays), so a program
//! makes it zeroed in place once at start-up ([`crate::sys::mem::map_zeroed`], a
//! [`crate::pool::StaticSlot`], or [`crate::pool::init_zeroed`]) and never builds it on
//! the stack (the broker tests' `tests/broker_util` and `examples/static_broker/` do this):
//!
//! - per connection slot: a [`Session`] (the [`BareParser`] and the
//!   [`ConnectionPipeReader`] over the receive leases), a [`Client`] (its [`ClientOptions`],
//!   timers and counters), its [`ClientSubs`] (up to [`SUBS_PER_CLIENT`] subscriptions with
//!   their sid, UNSUB max and delivered count) and the pending PUB's subject and reply (at
//!   most [`MAX_CONTROL_LINE`] bytes);
//! - a few line buffers shared by all connections, lent to a parser only while a control
//!   line is split across receives ([`BrokerMem::line_bufs`]);
//! - a [`Sublist`] of `u64` values (connection slot << 32 | subscription slot);
//! - a match output buffer as long as the sublist's subscription capacity.
//!
//! Memory (measured on x86-64; see [`BrokerStorage`]): 11.4 KiB per connection slot (a
//! session of 3.5 KiB: reader with [`READER_SEGS`] lease slots and a 256-byte carry; a
//! client of 0.4 KiB; its subscriptions, 3.5 KiB: 64 of 56 bytes; the pending PUB's line,
//! 4 KiB), 4 KiB per shared line buffer, 176 bytes per subscription (entry, queue-group slot,
//! match output), 112 per trie node (with its hash-table slots), 48 per text chunk and 232
//! per cache line. Receive buffers and write slabs are the reactor's
//! ([`crate::reactor::Resources`]).
//!
//! What a connection makes resident (storage from zeroed pages, see
//! [`crate::sys::mem::map_zeroed`]): its session and client are written whole when it
//! arrives (3.9 KiB); its subscriptions only when it subscribes, its pending-PUB line only
//! when it publishes, a line buffer only while one of its lines is split (and freed line
//! buffers are reused most recently freed first, so the pool's resident part is what was
//! ever in use at once). An idle client that only sent CONNECT and PING costs its session
//! and client plus the reactor's share (the first page of its write slab, where INFO and
//! PONG went).
//!
//! # Payloads are held, not copied
//!
//! A PUB's payload stays in the connection's receive leases until [`Op::PayloadEnd`]: the
//! reader's consumed position is held at the payload's first byte, and only then is the
//! message written, MSG line, payload segments and `\r\n`, into each target's write slab (one
//! copy per target). Past [`READER_QUOTA`] leases the reader packs new leases densely, so a
//! payload of `n` bytes holds at most [`ServerConfig::buffers_for`]`(n)` leases
//! (`READER_QUOTA + n / buf_size + 3`); [`READER_SEGS`] bounds it
//! ([`ServerConfig::check_capacity`]).
//!
//! # Large messages
//!
//! A connection may hold the reactor's
//! [`Config::lease_quota`](crate::reactor::Config::lease_quota) receive buffers at once; a
//! message that needs more (a big PUB payload, held whole) *reserves* them up front, when its
//! PUB line is parsed and the payload has not all arrived:
//!
//! - The reservation comes from a budget: the pool's receive buffers minus
//!   [`ServerConfig::buffer_reserve`] (a quarter by default), so large messages together
//!   never hold more than the budget, and the reserve is always left for everyone else.
//! - Granted, the connection's lease quota is raised to the reservation
//!   ([`Context::set_lease_quota`]) until the message is delivered, then it goes back to the
//!   default and the buffers go back to the budget (also when the connection closes).
//! - When the budget is taken, the connection's receive is paused (it holds only what had
//!   already arrived) and it waits, in connection-slot order from where the last grant
//!   stopped, for a reservation to end. Meanwhile every other connection is served.
//! - A message that needs more than the whole budget can never be granted: `-ERR 'Maximum
//!   Payload Violation'` and close ([`ServerConfig::check_budget`] tells at start-up).
//!
//! Counters: [`BrokerStats::reservations`], [`BrokerStats::reservation_waits`],
//! [`BrokerStats::reserved_high_water`].
//!
//! # Slow consumers
//!
//! The policy never buffers without bound, never loses part of a message and never cuts a
//! consumer that keeps reading:
//!
//! - **All or nothing, then hold.** Before a message is written anywhere, every target's
//!   write slab must have room for it. If one has not, nobody gets it yet: the message stays
//!   in the publisher's receive leases (with everything the publisher sent after it, unparsed),
//!   and the publisher's receive is paused. Every [`Handler::on_flushed`] (and every close)
//!   resumes the paused publishers and retries the held messages (`Broker::unblock`). So a
//!   fast publisher slows to its slowest consumer's pace, and per-publisher order is kept.
//! - **Early backpressure.** After a fan-out that leaves a target's slab more than half full,
//!   the publisher is paused too, so it rarely gets as far as holding.
//! - **max_pending.** A consumer never has more than [`ServerConfig::max_pending`] bytes
//!   staged and unsent for messages (nor more than its write slab holds: the lower of the two
//!   is its *limit*). A message that would take it past the limit waits, as for a full slab:
//!   that is the all-or-nothing hold above, so a burst slows the publisher down and never cuts
//!   a consumer that keeps reading. Protocol replies (`PONG`, `+OK`, `-ERR`) may go past
//!   max_pending, up to the slab (a client whose slab cannot take one is closed).
//! - **Write deadline.** When a consumer goes past half its limit, or a message waits for
//!   it, a one-shot timer of [`ServerConfig::write_deadline`] is armed; its
//!   [`Handler::on_flushed`] (everything staged was sent) cancels it. If it fires first, the
//!   consumer is a *slow consumer*: counted ([`BrokerStats::slow_consumers`]), aborted (its
//!   socket is not draining, so a graceful close would only linger; like recent nats-servers,
//!   no `-ERR`), and the held publishers go on. A consumer that stops reading thus holds its
//!   publishers back for at most the write deadline.
//! - **Past the limit.** A message larger than a target's whole limit (its slab, or
//!   max_pending) can never be written: its pending bytes would pass the limit, so that target
//!   is counted as a slow consumer and closed at once, while the others get the message.
//!   (nats-server refuses to start with `max_payload` above `max_pending`; ringlet takes the
//!   configuration and applies this rule.)
//!
//! So where nats-server cuts a consumer the moment its pending bytes pass max_pending,
//! ringlet first holds the publishers (backpressure), and cuts the consumer only if it stays
//! behind for the write deadline, or if one message alone is past its limit.
//!
//! # Monitoring
//!
//! [`Broker::set_monitor_listener`] names a listener of the same reactor whose connections
//! are HTTP monitoring clients, served by [`super::monitor`] from this state.
//!
//! # Deviations from nats-server
//!
//! - `client_ip` in INFO is the peer's address as the kernel reports it at accept
//!   ([`Context::peer_addr`]); an IPv4 client of a dual-stack listener shows as
//!   `::ffff:a.b.c.d`.
//! - A sid is at most [`SID_MAX`] bytes and a connection has at most [`SUBS_PER_CLIENT`]
//!   subscriptions: beyond, `-ERR 'maximum subscriptions exceeded'` (connection stays open).
//! - The first server PING comes after `min(2 s, ping_interval)`, then every ping_interval;
//!   a PING is skipped when the client sent anything since the last tick.

use core::net::SocketAddr;
use core::time::Duration;

use heapless::String as HString;

use super::connect::{self, ClientOptions};
use super::monitor::{MONITOR_TOKEN, Monitor};
use super::parser::{BareParser, LineBuf, MAX_CONTROL_LINE, Op, ParseError, ParserConfig};
use super::proto::{self, Info, OK, PONG, ServerError, Sink, SliceSink};
use super::subject;
use super::sublist::{
    CacheLine, Chunk, Group, InsertError, Node, SubEntry, SubKey, Sublist, SublistError, SublistMem,
};
use crate::pipe::{ConnectionPipeReader, Position, ReadBuf};
use crate::pool::{Key, Lease, Slab, SlabStorage, Slot};
use crate::reactor::timer::TimerId;
use crate::reactor::{CloseReason, ConnId, Context, Handler, ListenerId};
use crate::time::Instant;

/// Lease slots of a connection's reader.
pub const READER_SEGS: usize = 128;
/// Leases a connection's reader holds before it packs further leases densely.
pub const READER_QUOTA: usize = 8;
/// Subscriptions one connection may hold.
pub const SUBS_PER_CLIENT: usize = 64;
/// The longest sid kept.
pub const SID_MAX: usize = 32;
/// Line buffers of a [`BrokerStorage`] unless its `LINES` says otherwise: how many
/// connections may have a control line split across receives at once (see
/// [`BrokerMem::line_bufs`]).
pub const LINE_BUFS: usize = 64;
/// Room for a MSG/HMSG control line: subject and reply (within the control line), sid, sizes.
const LINE_BUF: usize = MAX_CONTROL_LINE + SID_MAX + 64;
/// Payloads up to this size are copied behind their MSG line and written with it in one go.
const INLINE_PAYLOAD: usize = 256;

/// The reader type of a connection.
pub type Reader<'r> = ConnectionPipeReader<'r, READER_SEGS, 256>;

/// How the broker behaves: identity, limits and authentication.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    /// `server_id` in INFO.
    pub server_id: HString<64>,
    /// `server_name` in INFO.
    pub server_name: HString<64>,
    /// `host` in INFO.
    pub host: HString<64>,
    /// `port` in INFO (set it to the bound port).
    pub port: u16,
    /// Largest PUB/HPUB size accepted, advertised in INFO.
    pub max_payload: u32,
    /// Client connections accepted at most (beyond: `maximum connections exceeded`).
    pub max_connections: usize,
    /// Required user name (with [`ServerConfig::pass`]); empty: none.
    pub user: HString<128>,
    /// Required password.
    pub pass: HString<128>,
    /// Required token; empty: none.
    pub token: HString<128>,
    /// Time a client has to send its CONNECT when auth is required.
    pub auth_timeout: Duration,
    /// Server PING interval (zero: no server PINGs). The first PING comes after
    /// `min(2 s, ping_interval)`.
    pub ping_interval: Duration,
    /// Outstanding PINGs allowed: at the tick that would exceed it, `-ERR 'Stale
    /// Connection'` and close.
    pub ping_max: u32,
    /// How long a consumer whose write slab went past half full may take to send all it has
    /// staged before it is closed as a slow consumer (zero: no deadline).
    pub write_deadline: Duration,
    /// Bytes a client may have staged and not yet sent (nats-server's `max_pending`, default
    /// 64 MiB); see "Slow consumers" in the [module docs](self) for what happens at the
    /// limit. The write slab bounds it too: the lower of the two applies.
    pub max_pending: usize,
    /// Receive buffers large messages never reserve: always left for everyone else (see
    /// "Large messages" in the [module docs](self)). `None`: a quarter of the pool.
    pub buffer_reserve: Option<usize>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            server_id: HString::new(),
            server_name: HString::new(),
            host: str64("0.0.0.0"),
            port: 4222,
            max_payload: super::parser::DEFAULT_MAX_PAYLOAD,
            max_connections: 64 * 1024,
            user: HString::new(),
            pass: HString::new(),
            token: HString::new(),
            auth_timeout: Duration::from_secs(2),
            ping_interval: Duration::from_secs(120),
            ping_max: 2,
            write_deadline: Duration::from_secs(10),
            max_pending: 64 * 1024 * 1024,
            buffer_reserve: None,
        }
    }
}

fn str64(s: &str) -> HString<64> {
    let mut h = HString::new();
    let _ = h.push_str(s);
    h
}

impl ServerConfig {
    /// Whether clients must authenticate (a user or a token is set).
    pub fn auth_required(&self) -> bool {
        !self.user.is_empty() || !self.token.is_empty()
    }

    /// Whether a payload of `max_payload` bytes (plus a full control line) can be held in a
    /// connection's reader ([`READER_SEGS`] leases) with receive buffers of `buf_size` bytes.
    /// Returns the largest max_payload that fits when it cannot.
    ///
    /// `lease_quota` is the reactor's default quota. It does not limit max_payload: a message
    /// that needs more leases than the quota reserves them (see "Large messages" in the
    /// [module docs](self)); with a quota that covers max_payload, no message ever has to.
    ///
    /// # Errors
    ///
    /// The largest payload that would fit.
    pub fn check_capacity(&self, buf_size: usize, lease_quota: usize) -> Result<(), u64> {
        let _ = lease_quota;
        let slots = READER_SEGS.saturating_sub(READER_QUOTA + 2);
        let room = (slots as u64) * (buf_size as u64);
        let need = u64::from(self.max_payload) + MAX_CONTROL_LINE as u64 + 2;
        if need <= room {
            Ok(())
        } else {
            Err(room.saturating_sub(MAX_CONTROL_LINE as u64 + 2))
        }
    }

    /// The receive buffers a message of `total` payload bytes may need held at once: its
    /// bytes in whole buffers, plus the [`READER_QUOTA`] receives the reader keeps unpacked
    /// and two partial ones at the ends.
    pub fn buffers_for(total: u64, buf_size: usize) -> u64 {
        (total + 2).div_ceil(buf_size.max(1) as u64) + READER_QUOTA as u64 + 2
    }

    /// Buffers large messages may reserve together, of a pool with `recv_buffers` receive
    /// buffers: all but [`ServerConfig::buffer_reserve`] (by default a quarter).
    pub fn reservation_budget(&self, recv_buffers: usize) -> usize {
        let reserve = self.buffer_reserve.unwrap_or(recv_buffers / 4);
        recv_buffers.saturating_sub(reserve)
    }

    /// Whether a max_payload message fits the reservation budget of a pool of
    /// `recv_buffers` buffers of `buf_size` bytes (a message that does not is refused with
    /// `Maximum Payload Violation` when it needs a reservation).
    ///
    /// # Errors
    ///
    /// The largest payload whose reservation would fit.
    pub fn check_budget(&self, buf_size: usize, recv_buffers: usize) -> Result<(), u64> {
        let budget = self.reservation_budget(recv_buffers) as u64;
        if Self::buffers_for(u64::from(self.max_payload), buf_size) <= budget {
            Ok(())
        } else {
            let whole = budget.saturating_sub(READER_QUOTA as u64 + 2);
            Err((whole * buf_size as u64).saturating_sub(2))
        }
    }
}

/// Counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BrokerStats {
    /// Connections accepted in all.
    pub total_connections: u64,
    /// Connections refused (max_connections or full storage).
    pub refused: u64,
    /// Messages received from clients.
    pub in_msgs: u64,
    /// Payload bytes received.
    pub in_bytes: u64,
    /// Messages delivered.
    pub out_msgs: u64,
    /// Payload bytes delivered.
    pub out_bytes: u64,
    /// Consumers closed because their slab could not take a message.
    pub slow_consumers: u64,
    /// Times a publisher was paused for a consumer's full slab.
    pub publisher_pauses: u64,
    /// Large messages that reserved receive buffers.
    pub reservations: u64,
    /// Large messages that had to wait for the reservation budget.
    pub reservation_waits: u64,
    /// Times a connection with a split control line waited because every line buffer was
    /// lent (see [`BrokerMem::line_bufs`]).
    pub line_waits: u64,
    /// The most line buffers lent at once.
    pub line_bufs_high_water: u64,
    /// The most receive buffers reserved at once.
    pub reserved_high_water: u64,
}

/// One subscription of a client.
#[derive(Clone, Copy, Debug)]
struct SubSlot {
    used: bool,
    sid_len: u8,
    sid: [u8; SID_MAX],
    /// The sublist key ([`SubKey::to_u64`]; a `u64` so that all-zero is a valid slot).
    key: u64,
    max: u32,
    delivered: u32,
}

// All-zero is `SubSlot::EMPTY`: unused, no sid, key 0, no max, nothing delivered.
crate::impl_zero_init! { impl SubSlot { used, sid_len, sid, key, max, delivered } }

/// One connection slot's subscriptions (up to [`SUBS_PER_CLIENT`] of them, with their sids,
/// UNSUB max and delivered counts): an entry of [`BrokerMem::client_subs`].
///
/// Kept apart from the [`Client`] so that a connection that never subscribes never touches
/// it (from zeroed storage, its memory is never resident). All-zero bytes is the empty set
/// ([`ZeroInit`](crate::pool::ZeroInit)), the same as [`ClientSubs::new`].
pub struct ClientSubs {
    slots: [SubSlot; SUBS_PER_CLIENT],
}

impl ClientSubs {
    /// No subscriptions.
    pub const fn new() -> ClientSubs {
        ClientSubs {
            slots: [SubSlot::EMPTY; SUBS_PER_CLIENT],
        }
    }

    /// Empties every used slot (reads the others only, so an untouched set stays untouched).
    fn clear(&mut self) {
        for s in self.slots.iter_mut().filter(|s| s.used) {
            *s = SubSlot::EMPTY;
        }
    }
}

impl Default for ClientSubs {
    fn default() -> Self {
        Self::new()
    }
}

crate::impl_zero_init! { impl ClientSubs { slots } }

impl SubSlot {
    const EMPTY: SubSlot = SubSlot {
        used: false,
        sid_len: 0,
        sid: [0; SID_MAX],
        key: 0,
        max: 0,
        delivered: 0,
    };

    fn sid(&self) -> &[u8] {
        &self.sid[..usize::from(self.sid_len)]
    }

    fn key(&self) -> SubKey {
        SubKey::from_u64(self.key)
    }
}

/// Per-connection protocol state a fan-out reads: options, timers, counters (its
/// subscriptions are in its slot's [`ClientSubs`]).
pub struct Client {
    conn: ConnId,
    opts: ClientOptions,
    connected: bool,
    closing: bool,
    paused: bool,
    auth_timer: Option<TimerId>,
    ping_timer: Option<TimerId>,
    deadline_timer: Option<TimerId>,
    reserve: usize,
    pings_out: u32,
    active: bool,
    /// Waiting for a line buffer (its receive paused meanwhile).
    line_wait: bool,
    in_msgs: u64,
    out_msgs: u64,
    in_bytes: u64,
    out_bytes: u64,
    /// `client_id` in INFO, `cid` in `/connz`.
    cid: u64,
    /// The peer's address, asked of the kernel at accept.
    peer: Option<SocketAddr>,
    start: Instant,
    last_activity: Instant,
    /// When the last server PING went out, until its PONG; and the round trip it measured.
    ping_sent: Option<Instant>,
    rtt: u64,
    /// Receive buffers reserved for the message being received (its lease quota), and the
    /// reservation it waits for (its receive paused meanwhile).
    reservation: u16,
    wants: u16,
}

/// What the monitoring endpoints read of a client.
impl Client {
    pub(super) fn conn_id(&self) -> ConnId {
        self.conn
    }

    pub(super) fn cid(&self) -> u64 {
        self.cid
    }

    pub(super) fn peer(&self) -> Option<SocketAddr> {
        self.peer
    }

    pub(super) fn started(&self) -> Instant {
        self.start
    }

    pub(super) fn last_activity(&self) -> Instant {
        self.last_activity
    }

    pub(super) fn rtt_nanos(&self) -> u64 {
        self.rtt
    }

    pub(super) fn options(&self) -> &ClientOptions {
        &self.opts
    }

    /// (in_msgs, out_msgs, in_bytes, out_bytes).
    pub(super) fn counters(&self) -> (u64, u64, u64, u64) {
        (self.in_msgs, self.out_msgs, self.in_bytes, self.out_bytes)
    }

    /// Whether its receive may run: no reason of the broker's to hold it (a full consumer,
    /// a reservation, a line buffer) remains.
    fn may_resume(&self) -> bool {
        !self.paused && self.wants == 0 && !self.line_wait
    }
}

/// A client and its subscriptions, as the monitoring endpoints read them.
#[derive(Clone, Copy)]
pub(super) struct ClientView<'c> {
    client: &'c Client,
    subs: &'c ClientSubs,
}

impl core::ops::Deref for ClientView<'_> {
    type Target = Client;

    fn deref(&self) -> &Client {
        self.client
    }
}

impl<'c> ClientView<'c> {
    pub(super) fn subscription_count(&self) -> usize {
        self.subs.slots.iter().filter(|s| s.used).count()
    }

    pub(super) fn subscription_slots(&self) -> usize {
        self.subs.slots.len()
    }

    pub(super) fn sub_used(&self, i: usize) -> bool {
        self.subs.slots.get(i).is_some_and(|s| s.used)
    }

    /// (sid, delivered, max) of subscription slot `i` (empty for a free one).
    pub(super) fn sub_facts(&self, i: usize) -> (&'c [u8], u64, u64) {
        match self.subs.slots.get(i).filter(|s| s.used) {
            Some(s) => (s.sid(), u64::from(s.delivered), u64::from(s.max)),
            None => (&[], 0, 0),
        }
    }

    /// The subject of subscription slot `i`, into `out`.
    pub(super) fn sub_subject(&self, core: &Core<'_>, i: usize, out: &mut [u8]) -> Option<usize> {
        let s = self.subs.slots.get(i).filter(|s| s.used)?;
        core.sublist.subject_of(s.key(), out)
    }

    /// The queue group of subscription slot `i` (0 bytes: none), into `out`.
    pub(super) fn sub_queue(&self, core: &Core<'_>, i: usize, out: &mut [u8]) -> Option<usize> {
        let s = self.subs.slots.get(i).filter(|s| s.used)?;
        core.sublist.queue_of(s.key(), out)
    }
}

/// A PUB waiting for its payload: subject and reply copied out of the line, and where the
/// payload starts in the connection's stream.
#[derive(Clone, Copy)]
struct Pending {
    subject_len: usize,
    reply_len: Option<usize>,
    header_len: Option<u32>,
    total_len: u32,
    start: Position,
}

/// Per-connection input state: parser, reader over the receive leases, pending PUB (its
/// subject and reply are in the slot's entry of [`BrokerMem::lines`]), and the line buffer
/// lent from [`BrokerMem::line_bufs`] while a control line is split.
pub struct Session<'r> {
    parser: BareParser,
    /// The line buffer the parser holds a partial control line in, if any.
    line_buf: Option<u32>,
    reader: Reader<'r>,
    parsed: Position,
    pending: Option<Pending>,
    blocked: bool,
}

/// The broker's storage as slices (see [`BrokerStorage`] for a ready-made set).
pub struct BrokerMem<'a, 'r> {
    /// One per connection slot.
    pub sessions: &'a mut [Slot<Session<'r>>],
    /// One per connection slot.
    pub clients: &'a mut [Slot<Client>],
    /// One per connection slot: the session and client keys.
    pub keys: &'a mut [u64],
    /// One per connection slot: the subject and reply of the PUB whose payload the session
    /// awaits. Apart from the sessions so that a connection touches it only when it publishes
    /// (a session is moved into its slot whole when a connection arrives; this is never
    /// cleared): from zeroed storage, an idle connection's line takes no memory.
    pub lines: &'a mut [[u8; MAX_CONTROL_LINE]],
    /// One per connection slot: its subscriptions. Touched only by a connection that
    /// subscribes (from zeroed storage, an idle connection's set takes no memory).
    pub client_subs: &'a mut [ClientSubs],
    /// Line buffers, shared: a connection holds one only while a control line of its input
    /// is split across receives (lent to its parser until the line is complete), so this
    /// may be far shorter than the connection slots (at least 1). Buffers are reused most
    /// recently freed first, so only as many become resident as were ever in use at once.
    ///
    /// The limit: when every buffer is lent, a connection that needs one *waits*: its
    /// partial line stays unconsumed in its receive buffers, its receive is paused, and it
    /// goes on (in connection-slot order from where the last one stopped) as soon as a
    /// buffer is given back, by a line completing or a connection closing. Nothing is lost
    /// and no error is sent; [`BrokerStats::line_waits`] counts the waits. A waiting client is
    /// not pinged (its PONGs would wait behind its line), so waiting does not make it stale.
    ///
    /// What a shared pool cannot prevent: a client that never finishes its line holds a
    /// buffer until it is closed. A silent one is closed by the ping timer (`Stale
    /// Connection`, within about `ping_interval * (ping_max + 2)`); one that trickles its line
    /// a byte at a time keeps it until the line passes the control-line limit (4096 bytes).
    /// As many such clients as there are buffers make every other split line wait that long:
    /// give the pool more buffers than the slow clients you must tolerate (unused buffers cost
    /// address space only).
    pub line_bufs: &'a mut [LineBuf],
    /// The sublist's storage.
    pub sublist: SublistMem<'a, u64>,
    /// Match output: as long as the sublist's subscription capacity.
    pub targets: &'a mut [u64],
}

/// Ready-made storage: `CONNS` connection slots (match the reactor's), `SUBS` subscriptions,
/// `NODES` trie nodes, `CHUNKS` chunks of subject text, `CACHE` match-cache lines, `LINES`
/// shared line buffers (by default [`LINE_BUFS`]; see [`BrokerMem::line_bufs`]).
///
/// Memory: about `CONNS * 11.4 KiB + LINES * 4 KiB + SUBS * 176 + NODES * 112 + CHUNKS * 48 +
/// CACHE * 232` bytes (x86-64). [`BrokerStorage::new`] builds it where it is called: fine for small
/// capacities; any size can be made in place instead, because all-zero bytes is the same empty
/// storage ([`ZeroInit`](crate::pool::ZeroInit), see the [module docs](self)).
pub struct BrokerStorage<
    'r,
    const CONNS: usize,
    const SUBS: usize,
    const NODES: usize,
    const CHUNKS: usize,
    const CACHE: usize,
    const LINES: usize = LINE_BUFS,
> {
    sessions: SlabStorage<Session<'r>, CONNS>,
    clients: SlabStorage<Client, CONNS>,
    keys: [u64; CONNS],
    lines: [[u8; MAX_CONTROL_LINE]; CONNS],
    client_subs: [ClientSubs; CONNS],
    line_bufs: [LineBuf; LINES],
    subs: SlabStorage<SubEntry<u64>, SUBS>,
    groups: SlabStorage<Group, SUBS>,
    nodes: SlabStorage<Node, NODES>,
    index: [[u64; 2]; NODES],
    chunks: SlabStorage<Chunk, CHUNKS>,
    cache: SlabStorage<CacheLine, CACHE>,
    cache_index: [u64; CACHE],
    targets: [u64; SUBS],
}

impl<
    'r,
    const CONNS: usize,
    const SUBS: usize,
    const NODES: usize,
    const CHUNKS: usize,
    const CACHE: usize,
    const LINES: usize,
> BrokerStorage<'r, CONNS, SUBS, NODES, CHUNKS, CACHE, LINES>
{
    /// Empty storage.
    pub const fn new() -> Self {
        BrokerStorage {
            sessions: SlabStorage::new(),
            clients: SlabStorage::new(),
            keys: [0; CONNS],
            lines: [[0; MAX_CONTROL_LINE]; CONNS],
            client_subs: [const { ClientSubs::new() }; CONNS],
            line_bufs: [const { LineBuf::new() }; LINES],
            subs: SlabStorage::new(),
            groups: SlabStorage::new(),
            nodes: SlabStorage::new(),
            index: [[0; 2]; NODES],
            chunks: SlabStorage::new(),
            cache: SlabStorage::new(),
            cache_index: [0; CACHE],
            targets: [0; SUBS],
        }
    }

    /// The storage as slices.
    pub fn mem(&mut self) -> BrokerMem<'_, 'r> {
        BrokerMem {
            sessions: self.sessions.as_mut_slice(),
            clients: self.clients.as_mut_slice(),
            keys: &mut self.keys,
            lines: &mut self.lines,
            client_subs: &mut self.client_subs,
            line_bufs: &mut self.line_bufs,
            sublist: SublistMem {
                subs: self.subs.as_mut_slice(),
                nodes: self.nodes.as_mut_slice(),
                groups: self.groups.as_mut_slice(),
                chunks: self.chunks.as_mut_slice(),
                index: self.index.as_flattened_mut(),
                cache: self.cache.as_mut_slice(),
                cache_index: &mut self.cache_index,
            },
            targets: &mut self.targets,
        }
    }
}

// All-zero is the empty storage: every field is ZeroInit (checked by the macro), and
// `BrokerStorage::new` builds exactly that (empty slab storage and zeroed arrays).
crate::impl_zero_init! {
    impl['r, const CONNS: usize, const SUBS: usize, const NODES: usize, const CHUNKS: usize, const CACHE: usize, const LINES: usize]
    BrokerStorage<'r, CONNS, SUBS, NODES, CHUNKS, CACHE, LINES> {
        sessions, clients, keys, lines, client_subs, line_bufs, subs, groups, nodes, index,
        chunks, cache, cache_index, targets
    }
}

impl<
    const CONNS: usize,
    const SUBS: usize,
    const NODES: usize,
    const CHUNKS: usize,
    const CACHE: usize,
    const LINES: usize,
> Default for BrokerStorage<'_, CONNS, SUBS, NODES, CHUNKS, CACHE, LINES>
{
    fn default() -> Self {
        Self::new()
    }
}

/// Building a [`Broker`] failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BrokerError {
    /// The sublist storage is unusable.
    Sublist(SublistError),
    /// The storage pieces do not agree (sessions, clients, keys, lines and client_subs must
    /// be as long; targets as long as the subscription capacity; at least one line buffer).
    Storage(&'static str),
}

impl core::fmt::Display for BrokerError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            BrokerError::Sublist(e) => write!(f, "sublist storage: {e}"),
            BrokerError::Storage(s) => f.write_str(s),
        }
    }
}

impl core::error::Error for BrokerError {}

/// Sentinel of [`LinePool::free`]: no free buffer.
const NO_LINE: u32 = u32::MAX;

/// The shared line buffers ([`BrokerMem::line_bufs`]): a stack of freed buffers (the most
/// recently freed is lent first, so the same few stay resident), then the never-used ones
/// in order, untouched until lent.
struct LinePool<'a> {
    bufs: &'a mut [LineBuf],
    /// Buffers from here on were never lent (their memory is untouched).
    fresh: usize,
    /// The most recently freed buffer, or [`NO_LINE`]; a free buffer's first four bytes
    /// hold the next one's index (they are its contents, meaningless while it is free).
    free: u32,
    lent: usize,
    high_water: usize,
}

impl<'a> LinePool<'a> {
    fn new(bufs: &'a mut [LineBuf]) -> LinePool<'a> {
        LinePool {
            bufs,
            fresh: 0,
            free: NO_LINE,
            lent: 0,
            high_water: 0,
        }
    }

    /// Lends a buffer, or `None` when every one is lent.
    fn take(&mut self) -> Option<u32> {
        let i = if self.free != NO_LINE {
            let i = self.free;
            let b = self.bufs.get_mut(i as usize)?.as_mut_bytes();
            self.free = u32::from_ne_bytes([b[0], b[1], b[2], b[3]]);
            i
        } else if self.fresh < self.bufs.len() {
            self.fresh += 1;
            (self.fresh - 1) as u32
        } else {
            return None;
        };
        self.lent += 1;
        self.high_water = self.high_water.max(self.lent);
        Some(i)
    }

    /// Takes back a buffer lent by [`LinePool::take`].
    fn give(&mut self, i: u32) {
        if let Some(b) = self.bufs.get_mut(i as usize) {
            b.as_mut_bytes()[..4].copy_from_slice(&self.free.to_ne_bytes());
            self.free = i;
            self.lent -= 1;
        }
    }

    fn get(&mut self, i: u32) -> Option<&mut LineBuf> {
        self.bufs.get_mut(i as usize)
    }

    fn available(&self) -> bool {
        self.lent < self.bufs.len()
    }
}

/// The protocol state shared by all connections (everything but the sessions).
pub(super) struct Core<'a> {
    config: ServerConfig,
    clients: Slab<'a, Client>,
    keys: &'a mut [u64],
    /// Per client slot (by client key index).
    subs: &'a mut [ClientSubs],
    sublist: Sublist<'a, u64>,
    targets: &'a mut [u64],
    stats: BrokerStats,
    next_client_id: u64,
    paused_publishers: usize,
    /// The monotonic and the wall clock when the broker was built (to show times).
    start: Instant,
    start_wall: u64,
    /// Targets per published message: the most, the sum, and messages counted.
    fanout_max: u64,
    fanout_sum: u64,
    fanout_n: u64,
    /// Receive buffers reserved by large messages, and clients waiting for a reservation.
    reserved: usize,
    waiting: usize,
    /// Where the next scan for waiting clients starts (so none waits forever behind others).
    wait_cursor: usize,
    /// Clients waiting for a line buffer, and where the next scan for them starts.
    line_waiters: usize,
    line_cursor: usize,
    /// Where a delivery's MSG line is formatted, reused: a fresh zeroed line buffer per
    /// delivered message cost a 4 KiB memset each (a tenth of the loop's time at 16 B).
    msg_line: [u8; LINE_BUF],
}

/// What the monitoring endpoints read of the broker.
impl Core<'_> {
    pub(super) fn config(&self) -> &ServerConfig {
        &self.config
    }

    pub(super) fn stats(&self) -> BrokerStats {
        self.stats
    }

    pub(super) fn started(&self) -> Instant {
        self.start
    }

    /// The wall-clock time (ns since the Unix epoch) of a monotonic instant.
    pub(super) fn wall_at(&self, t: Instant) -> u64 {
        if t >= self.start {
            let d = t.saturating_duration_since(self.start).as_nanos() as u64;
            self.start_wall.saturating_add(d)
        } else {
            let d = self.start.saturating_duration_since(t).as_nanos() as u64;
            self.start_wall.saturating_sub(d)
        }
    }

    /// Connection slots (the range of [`Core::client_at`]).
    pub(super) fn client_slots(&self) -> usize {
        self.keys.len()
    }

    /// The client on connection slot `index`, if any.
    pub(super) fn client_at(&self, index: usize) -> Option<ClientView<'_>> {
        let key = self.client_key(index)?;
        Some(ClientView {
            client: self.clients.get(key).ok()?,
            subs: self.subs.get(key.index() as usize)?,
        })
    }

    pub(super) fn client_count(&self) -> usize {
        self.clients.len()
    }

    pub(super) fn sublist_len(&self) -> usize {
        self.sublist.len()
    }

    pub(super) fn sublist_stats(&self) -> super::sublist::SublistStats {
        self.sublist.stats()
    }

    /// (max_fanout, avg_fanout) over the messages published.
    pub(super) fn fanout(&self) -> (u64, f64) {
        let avg = if self.fanout_n == 0 {
            0.0
        } else {
            self.fanout_sum as f64 / self.fanout_n as f64
        };
        (self.fanout_max, avg)
    }
}

/// The NATS broker: a [`Handler`] for a reactor whose connections are NATS clients.
pub struct Broker<'a, 'r> {
    sessions: Slab<'a, Session<'r>>,
    /// The pending PUB's control line, per session slot (by session key index).
    lines: &'a mut [[u8; MAX_CONTROL_LINE]],
    /// Line buffers lent to sessions with a split control line.
    line_bufs: LinePool<'a>,
    core: Core<'a>,
    monitor: Monitor,
}

impl core::fmt::Debug for Broker<'_, '_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Broker")
            .field("stats", &self.core.stats)
            .field("connections", &self.core.clients.len())
            .field("subscriptions", &self.core.sublist.len())
            .finish_non_exhaustive()
    }
}

/// What the handling of one op asks of the session's parser afterwards.
#[derive(Default)]
struct After {
    close: bool,
    headers: Option<bool>,
    authenticated: bool,
}

fn key_of(raw: u64) -> Key {
    Key::from_u64(raw)
}

impl<'a, 'r> Broker<'a, 'r> {
    /// A broker over `mem`, with `seed` for the sublist's hashing and queue choice.
    ///
    /// # Errors
    ///
    /// [`BrokerError`] when the storage is unusable.
    pub fn new(
        mem: BrokerMem<'a, 'r>,
        config: ServerConfig,
        seed: u64,
    ) -> Result<Self, BrokerError> {
        if mem.sessions.len() != mem.clients.len()
            || mem.keys.len() != mem.clients.len()
            || mem.lines.len() != mem.clients.len()
            || mem.client_subs.len() != mem.clients.len()
        {
            return Err(BrokerError::Storage(
                "sessions, clients, keys, lines and client_subs must have one entry per \
                 connection slot",
            ));
        }
        if mem.line_bufs.is_empty() || mem.line_bufs.len() >= NO_LINE as usize {
            return Err(BrokerError::Storage(
                "line_bufs must have at least one buffer (and fewer than 2^32 - 1)",
            ));
        }
        if mem.targets.len() < mem.sublist.subs.len() {
            return Err(BrokerError::Storage(
                "targets must be as long as the subscription capacity",
            ));
        }
        let sublist = Sublist::new(mem.sublist, seed).map_err(BrokerError::Sublist)?;
        Ok(Broker {
            sessions: Slab::new(mem.sessions),
            lines: mem.lines,
            line_bufs: LinePool::new(mem.line_bufs),
            core: Core {
                config,
                clients: Slab::new(mem.clients),
                keys: mem.keys,
                subs: mem.client_subs,
                sublist,
                targets: mem.targets,
                stats: BrokerStats::default(),
                next_client_id: 1,
                paused_publishers: 0,
                start: crate::sys::clock::now(),
                start_wall: crate::sys::clock::realtime_nanos(),
                fanout_max: 0,
                fanout_sum: 0,
                fanout_n: 0,
                reserved: 0,
                waiting: 0,
                wait_cursor: 0,
                line_waiters: 0,
                line_cursor: 0,
                msg_line: [0; LINE_BUF],
            },
            monitor: Monitor::new(),
        })
    }

    /// The configuration.
    pub fn config(&self) -> &ServerConfig {
        &self.core.config
    }

    /// Sets the port INFO advertises (after binding port 0).
    pub fn set_port(&mut self, port: u16) {
        self.core.config.port = port;
    }

    /// Counters.
    pub fn stats(&self) -> BrokerStats {
        self.core.stats
    }

    /// Serves HTTP monitoring (see [`super::monitor`]) on connections accepted by `listener`
    /// (a listener of the same reactor; `port` is what `/varz` shows as `http_port`). Every
    /// other listener's connections are NATS clients.
    pub fn set_monitor_listener(&mut self, listener: ListenerId, port: u16) {
        self.monitor.listener = Some(listener);
        self.monitor.port = port;
    }

    /// Monitoring connections refused because all
    /// [`MONITOR_CONNS`](super::monitor::MONITOR_CONNS) were busy.
    pub fn monitor_refused(&self) -> u64 {
        self.monitor.refused
    }

    /// Open client connections.
    pub fn connections(&self) -> usize {
        self.core.clients.len()
    }

    /// Subscriptions in the index.
    pub fn subscriptions(&self) -> usize {
        self.core.sublist.len()
    }

    /// Consumers made room (a flush completed, a connection closed): resume the paused
    /// publishers and retry every message held for full consumers.
    fn unblock(&mut self, cx: &mut Context<'_, '_>) {
        if self.core.paused_publishers == 0 {
            return;
        }
        self.core.resume_publishers(cx);
        for (key, session) in self.sessions.iter_mut() {
            if !session.blocked {
                continue;
            }
            let Ok(c) = self.core.clients.get(key) else {
                continue;
            };
            let conn = c.conn;
            if c.closing || !cx.is_open(conn) {
                continue;
            }
            let Some(line) = self.lines.get_mut(key.index() as usize) else {
                continue;
            };
            process(
                session,
                line,
                &mut self.line_bufs,
                &mut self.core,
                cx,
                conn,
                key,
            );
        }
        self.serve_line_waiters(cx);
    }

    /// Line buffers were given back: clients waiting for one go on, in connection-slot order
    /// from where the last one stopped, while buffers last.
    fn serve_line_waiters(&mut self, cx: &mut Context<'_, '_>) {
        let n = self.core.keys.len();
        let mut i = 0;
        while self.core.line_waiters > 0 && self.line_bufs.available() && i < n {
            let index = (self.core.line_cursor + i) % n;
            i += 1;
            let Some(key) = self.core.client_key(index) else {
                continue;
            };
            let Ok(c) = self.core.clients.get(key) else {
                continue;
            };
            let conn = c.conn;
            if !c.line_wait || c.closing || !cx.is_open(conn) {
                continue;
            }
            self.core.line_cursor = (index + 1) % n;
            self.core.line_granted(cx, key);
            let (Ok(session), Some(line)) = (
                self.sessions.get_mut(key),
                self.lines.get_mut(key.index() as usize),
            ) else {
                continue;
            };
            // Its partial line is still unconsumed in its reader: parsing it again takes a
            // buffer (one is free).
            process(
                session,
                line,
                &mut self.line_bufs,
                &mut self.core,
                cx,
                conn,
                key,
            );
        }
    }

    fn session_key(&self, conn: ConnId) -> Option<Key> {
        let raw = *self.core.keys.get(conn.index())?;
        if raw == 0 {
            return None;
        }
        let key = key_of(raw - 1);
        let c = self.core.clients.get(key).ok()?;
        (c.conn == conn).then_some(key)
    }
}

/// Writes the INFO a new connection gets (`client_ip` from its peer address, when known).
fn send_info(
    cx: &mut Context<'_, '_>,
    conn: ConnId,
    cfg: &ServerConfig,
    client_id: u64,
    peer: Option<SocketAddr>,
) {
    let mut ip_buf = [0u8; 48];
    let mut ip_out = super::monitor::SliceOut::new(&mut ip_buf);
    if let Some(p) = peer {
        use core::fmt::Write as _;
        let _ = write!(FmtSink(&mut ip_out), "{}", p.ip());
    }
    let client_ip = core::str::from_utf8(ip_out.written()).unwrap_or("");
    let info = Info {
        server_id: &cfg.server_id,
        server_name: &cfg.server_name,
        host: &cfg.host,
        port: cfg.port,
        max_payload: cfg.max_payload,
        auth_required: cfg.auth_required(),
        client_id,
        client_ip,
        ..Info::DEFAULT
    };
    let mut buf = [0u8; 1024];
    let mut sink = SliceSink::new(&mut buf);
    if info.write(&mut sink).is_ok() {
        send(cx, conn, sink.written());
    }
}

/// Writes a whole `-ERR` and closes when it says so.
fn send_err(cx: &mut Context<'_, '_>, conn: ConnId, e: ServerError<'_>) {
    let mut buf = [0u8; 256];
    let mut sink = SliceSink::new(&mut buf);
    if e.write(&mut sink).is_ok() {
        let _ = cx.write(conn, sink.written());
        let _ = cx.flush(conn);
    }
    if e.closes() {
        cx.close(conn);
    }
}

/// Writes protocol bytes to a client; a client whose slab cannot take them is closed.
fn send(cx: &mut Context<'_, '_>, conn: ConnId, bytes: &[u8]) {
    match cx.write(conn, bytes) {
        Ok(()) => {
            let _ = cx.flush(conn);
        }
        Err(_) => cx.close(conn),
    }
}

impl Core<'_> {
    fn client_key(&self, index: usize) -> Option<Key> {
        let raw = *self.keys.get(index)?;
        (raw != 0).then(|| key_of(raw - 1))
    }

    #[allow(clippy::too_many_arguments)]
    fn on_op(
        &mut self,
        cx: &mut Context<'_, '_>,
        conn: ConnId,
        ckey: Key,
        op: Op<'_>,
        pending: &mut Option<Pending>,
        line: &mut [u8; MAX_CONTROL_LINE],
        pos: Position,
    ) -> After {
        let mut after = After::default();
        let Ok(client) = self.clients.get_mut(ckey) else {
            after.close = true;
            return after;
        };
        match op {
            Op::Connect(json) => {
                let Ok(c) = client.opts.update(json) else {
                    cx.close(conn);
                    after.close = true;
                    return after;
                };
                let cfg = &self.config;
                if cfg.auth_required() {
                    let str_eq = |v: Option<connect::JsonStr<'_>>, want: &str| {
                        v.is_some_and(|s| s.eq_str(want))
                    };
                    let ok = if !cfg.token.is_empty() {
                        str_eq(c.auth_token, &cfg.token)
                    } else {
                        str_eq(c.user, &cfg.user) && str_eq(c.pass, &cfg.pass)
                    };
                    if !ok {
                        send_err(cx, conn, ServerError::AuthorizationViolation);
                        after.close = true;
                        return after;
                    }
                }
                if client.opts.account_requested() {
                    send_err(cx, conn, ServerError::AuthorizationViolation);
                    after.close = true;
                    return after;
                }
                if let Err(e) = client.opts.check(true) {
                    send_err(cx, conn, e);
                    after.close = true;
                    return after;
                }
                client.connected = true;
                if let Some(t) = client.auth_timer.take() {
                    let _ = cx.cancel_timer(t);
                }
                after.headers = Some(client.opts.headers_enabled(true));
                after.authenticated = true;
                if client.opts.verbose {
                    send(cx, conn, OK);
                }
            }
            Op::Info(json) => {
                if connect::validate_json_object(json).is_err() {
                    cx.close(conn);
                    after.close = true;
                }
            }
            Op::Ping => send(cx, conn, PONG),
            Op::Pong => {
                client.pings_out = 0;
                if let Some(t) = client.ping_sent.take() {
                    client.rtt = cx.now().saturating_duration_since(t).as_nanos() as u64;
                }
            }
            Op::Ok => {}
            Op::Err(_) => {
                cx.close(conn);
                after.close = true;
            }
            Op::Sub {
                subject: subj,
                queue,
                sid,
            } => {
                let verbose = client.opts.verbose;
                let Some(subs) = self.subs.get_mut(ckey.index() as usize) else {
                    after.close = true;
                    return after;
                };
                if subs.slots.iter().any(|s| s.used && s.sid() == sid) {
                    if verbose {
                        send(cx, conn, OK);
                    }
                    return after;
                }
                let free = subs.slots.iter().position(|s| !s.used);
                let (Some(slot), true) = (free, sid.len() <= SID_MAX) else {
                    send_err(cx, conn, ServerError::MaxSubscriptionsExceeded);
                    return after;
                };
                let value = ((conn.index() as u64) << 32) | slot as u64;
                match self.sublist.insert(subj, queue, value) {
                    Ok(key) => {
                        let mut s = SubSlot::EMPTY;
                        s.used = true;
                        s.sid_len = sid.len() as u8;
                        s.sid[..sid.len()].copy_from_slice(sid);
                        s.key = key.to_u64();
                        subs.slots[slot] = s;
                        if verbose {
                            send(cx, conn, OK);
                        }
                    }
                    Err(InsertError::Full(_)) => {
                        send_err(cx, conn, ServerError::MaxSubscriptionsExceeded)
                    }
                    Err(_) => send_err(cx, conn, ServerError::InvalidSubject),
                }
            }
            Op::Unsub { sid, max } => {
                let subs = self.subs.get_mut(ckey.index() as usize);
                let slots = subs.map_or(&mut [][..], |s| &mut s.slots[..]);
                if let Some(s) = slots.iter_mut().find(|s| s.used && s.sid() == sid) {
                    if max == 0 || max <= s.delivered {
                        let _ = self.sublist.remove(s.key());
                        *s = SubSlot::EMPTY;
                    } else {
                        s.max = max;
                    }
                }
                if client.opts.verbose {
                    send(cx, conn, OK);
                }
            }
            Op::Pub {
                subject: subj,
                reply,
                header_len,
                total_len,
            } => {
                if client.opts.pedantic && !subject::is_valid_literal_subject(subj) {
                    send_err(cx, conn, ServerError::InvalidPublishSubject);
                }
                // nats-server answers a verbose PUB on its line, before the payload: so the
                // `+OK` comes before the publisher's own copy of the message and before a
                // no-responders status (the differential test pins this order).
                if client.opts.verbose {
                    send(cx, conn, OK);
                }
                let rlen = reply.map(<[u8]>::len);
                let total = subj.len() + rlen.unwrap_or(0);
                if total > line.len() {
                    // Cannot happen: the parser bounds the control line.
                    cx.close(conn);
                    after.close = true;
                    return after;
                }
                line[..subj.len()].copy_from_slice(subj);
                if let Some(r) = reply {
                    line[subj.len()..total].copy_from_slice(r);
                }
                *pending = Some(Pending {
                    subject_len: subj.len(),
                    reply_len: rlen,
                    header_len,
                    total_len,
                    start: pos,
                });
            }
            Op::Headers(_) | Op::Payload(_) => {}
            Op::PayloadEnd => {}
        }
        after
    }

    /// Delivers a complete message: `payload` is its whole payload (headers included).
    fn deliver(
        &mut self,
        cx: &mut Context<'_, '_>,
        conn: ConnId,
        ckey: Key,
        p: &Pending,
        line: &[u8],
        payload: ReadBuf<'_>,
    ) -> bool {
        let subj = &line[..p.subject_len];
        let reply = p.reply_len.map(|r| &line[p.subject_len..p.subject_len + r]);
        let (echo, no_responders) = match self.clients.get(ckey) {
            Ok(c) => (c.opts.echo, c.opts.no_responders),
            Err(_) => return true,
        };
        let me = conn.index();
        let Core {
            clients,
            keys,
            subs,
            sublist,
            targets,
            msg_line,
            ..
        } = self;
        let lookup = |keys: &[u64], v: u64| -> (usize, usize, Option<Key>) {
            let ci = (v >> 32) as usize;
            let si = (v & 0xffff_ffff) as usize;
            let k = keys
                .get(ci)
                .copied()
                .filter(|&r| r != 0)
                .map(|r| key_of(r - 1));
            (ci, si, k)
        };
        let matched = sublist.match_into(subj, targets, |&v| {
            let (ci, si, k) = lookup(keys, v);
            if ci == me && !echo {
                return false;
            }
            let Some((k, c)) = k.and_then(|k| Some((k, clients.get(k).ok()?))) else {
                return false;
            };
            let Some(s) = sub_slot(subs, k, si) else {
                return false;
            };
            !c.closing && s.used && (s.max == 0 || s.delivered < s.max)
        });
        let n = match matched {
            Ok(m) => m.len(),
            Err(_) => targets.len(),
        };
        let hdr = p.header_len.filter(|&h| h > 0);
        // All or nothing: every target must have room before anyone gets the message. A
        // connection with several matching subscriptions needs room for all its copies:
        // `reserve` sums them (reset first).
        for &v in targets[..n].iter() {
            let (_, _, k) = lookup(keys, v);
            if let Some(c) = k.and_then(|k| clients.get_mut(k).ok()) {
                c.reserve = 0;
            }
        }
        let mut blocked = false;
        for &v in targets[..n].iter() {
            let (_, si, k) = lookup(keys, v);
            let Some((k, c)) = k.and_then(|k| Some((k, clients.get_mut(k).ok()?))) else {
                continue;
            };
            let Some(s) = sub_slot(subs, k, si) else {
                continue;
            };
            let (header_len, body_len) = match hdr {
                Some(h) if c.opts.headers_enabled(true) => (Some(h), p.total_len),
                Some(h) => (None, p.total_len.saturating_sub(h)),
                None => (None, p.total_len),
            };
            let need = proto::msg_line_len(subj, s.sid(), reply, header_len, body_len)
                + body_len as usize
                + 2;
            let target = c.conn;
            let staged = cx.staged(target);
            // What this consumer may hold: its slab, and no more than max_pending.
            let limit = (cx.write_capacity(target) + staged).min(self.config.max_pending);
            let room = limit.saturating_sub(staged);
            c.reserve += need;
            if c.closing || room >= c.reserve {
                continue;
            }
            if c.reserve > limit {
                // More than its slab or max_pending even when drained: it can never take
                // it. Its pending bytes would pass the limit: a slow consumer.
                c.closing = true;
                self.stats.slow_consumers += 1;
                cx.close(target);
                continue;
            }
            blocked = true;
            let deadline = self.config.write_deadline;
            if c.deadline_timer.is_none() && !deadline.is_zero() {
                let token = timer_token(target) | DEADLINE_TOKEN;
                c.deadline_timer = cx.set_timer(deadline, None, token).ok();
            }
        }
        if blocked {
            return false;
        }
        if let Ok(c) = clients.get_mut(ckey) {
            c.in_msgs += 1;
            c.in_bytes += u64::from(p.total_len);
        }
        self.fanout_max = self.fanout_max.max(n as u64);
        self.fanout_sum += n as u64;
        self.fanout_n += 1;
        self.stats.in_msgs += 1;
        self.stats.in_bytes += u64::from(p.total_len);
        let mut delivered_any = false;
        let mut pause_publisher = false;
        for &v in targets[..n].iter() {
            let (_, si, k) = lookup(keys, v);
            let Some(k) = k else { continue };
            let Ok(c) = clients.get_mut(k) else { continue };
            let Some(s) = subs
                .get_mut(k.index() as usize)
                .and_then(|s| s.slots.get_mut(si))
            else {
                continue;
            };
            let target = c.conn;
            let (header_len, body) = match hdr {
                Some(h) if c.opts.headers_enabled(true) => (Some(h), payload),
                Some(h) => match payload.slice(h as usize..) {
                    Some(b) => (None, b),
                    None => continue,
                },
                None => (None, payload),
            };
            let mut sink = SliceSink::new(&mut msg_line[..]);
            let body_len = body.len() as u32;
            if proto::write_msg_line(&mut sink, subj, s.sid(), reply, header_len, body_len).is_err()
            {
                continue;
            }
            let need = sink.len() + body.len() + 2;
            if c.closing || cx.write_capacity(target) < need {
                continue;
            }
            let mut ok;
            if body.len() <= INLINE_PAYLOAD && sink.free() >= body.len() + 2 {
                // A small payload joins its line in the line buffer: one write into the slab
                // instead of three (each validates the connection and copies a few bytes).
                ok = true;
                for seg in body.segments() {
                    ok = ok && sink.put(seg).is_ok();
                }
                ok = ok && sink.put(proto::CRLF).is_ok();
                ok = ok && cx.write(target, sink.written()).is_ok();
            } else {
                ok = cx.write(target, sink.written()).is_ok();
                for seg in body.segments() {
                    ok = ok && cx.write(target, seg).is_ok();
                }
                ok = ok && cx.write(target, proto::CRLF).is_ok();
            }
            if !ok {
                c.closing = true;
                cx.close(target);
                continue;
            }
            let _ = cx.flush(target);
            delivered_any = true;
            c.out_msgs += 1;
            c.out_bytes += u64::from(body_len);
            self.stats.out_msgs += 1;
            self.stats.out_bytes += u64::from(body_len);
            s.delivered = s.delivered.saturating_add(1);
            if s.max != 0 && s.delivered >= s.max {
                let _ = sublist.remove(s.key());
                *s = SubSlot::EMPTY;
            }
            let staged = cx.staged(target);
            let limit = (cx.write_capacity(target) + staged).min(self.config.max_pending);
            if staged > limit / 2 {
                pause_publisher = true;
                let deadline = self.config.write_deadline;
                if c.deadline_timer.is_none() && !deadline.is_zero() {
                    let token = timer_token(target) | DEADLINE_TOKEN;
                    c.deadline_timer = cx.set_timer(deadline, None, token).ok();
                }
            }
        }
        if !delivered_any
            && no_responders
            && let Some(r) = reply
        {
            let mine = sublist.match_into(r, targets, |&v| (v >> 32) as usize == me);
            if mine.is_ok_and(|m| !m.is_empty()) {
                let (_, si, _) = lookup(keys, targets[0]);
                if clients.contains(ckey)
                    && let Some(s) = sub_slot(subs, ckey, si).filter(|s| s.used)
                {
                    let mut lbuf = [0u8; LINE_BUF];
                    let mut sink = SliceSink::new(&mut lbuf);
                    if proto::write_no_responders(&mut sink, r, s.sid()).is_ok() {
                        send(cx, conn, sink.written());
                    }
                }
            }
        }
        if pause_publisher {
            self.pause_publisher(cx, conn, ckey);
        }
        true
    }

    /// Stops receiving from a publisher until consumers flush.
    fn pause_publisher(&mut self, cx: &mut Context<'_, '_>, conn: ConnId, ckey: Key) {
        if let Ok(c) = self.clients.get_mut(ckey)
            && !c.paused
            && cx.pause(conn).is_ok()
        {
            c.paused = true;
            self.paused_publishers += 1;
            self.stats.publisher_pauses += 1;
        }
    }

    /// Resumes every publisher paused for a full consumer (they pause again if still needed).
    fn resume_publishers(&mut self, cx: &mut Context<'_, '_>) {
        if self.paused_publishers == 0 {
            return;
        }
        for (_, c) in self.clients.iter_mut() {
            if c.paused {
                c.paused = false;
                if c.may_resume() {
                    let _ = cx.resume(c.conn);
                }
            }
        }
        self.paused_publishers = 0;
    }

    /// Every line buffer is lent and this client needs one: pause its receive until one is
    /// given back (see [`BrokerMem::line_bufs`]).
    fn wait_for_line(&mut self, cx: &mut Context<'_, '_>, conn: ConnId, key: Key) {
        if let Ok(c) = self.clients.get_mut(key)
            && !c.line_wait
        {
            c.line_wait = true;
            self.line_waiters += 1;
            self.stats.line_waits += 1;
            let _ = cx.pause(conn);
        }
    }

    /// This client got a line buffer: if it was waiting for one, it waits no more.
    fn line_granted(&mut self, cx: &mut Context<'_, '_>, key: Key) {
        if let Ok(c) = self.clients.get_mut(key)
            && c.line_wait
        {
            c.line_wait = false;
            self.line_waiters = self.line_waiters.saturating_sub(1);
            if c.may_resume() {
                let _ = cx.resume(c.conn);
            }
        }
    }

    fn remove_client(&mut self, index: usize) {
        let Some(key) = self.client_key(index) else {
            return;
        };
        if let Some(subs) = self.subs.get_mut(key.index() as usize) {
            for s in subs.slots.iter().filter(|s| s.used) {
                let _ = self.sublist.remove(s.key());
            }
            subs.clear();
        }
        if let Ok(c) = self.clients.remove(key) {
            if c.paused {
                self.paused_publishers = self.paused_publishers.saturating_sub(1);
            }
            self.reserved = self.reserved.saturating_sub(usize::from(c.reservation));
            if c.wants > 0 {
                self.waiting = self.waiting.saturating_sub(1);
            }
            if c.line_wait {
                self.line_waiters = self.line_waiters.saturating_sub(1);
            }
        }
        self.keys[index] = 0;
    }

    /// A PUB whose payload starts at `p.start` was parsed and `have` of its bytes (with the
    /// trailing CRLF) are here: reserve receive buffers for it if it needs more than the
    /// connection's quota (see "Large messages" in the module docs).
    fn reserve_for(
        &mut self,
        cx: &mut Context<'_, '_>,
        conn: ConnId,
        key: Key,
        p: &Pending,
        have: u64,
    ) -> Reserve {
        let total = u64::from(p.total_len) + 2;
        if have >= total {
            return Reserve::NotNeeded;
        }
        let pool = cx.pool();
        let need = ServerConfig::buffers_for(u64::from(p.total_len), pool.buf_size());
        if need <= u64::from(cx.lease_quota(conn)) {
            return Reserve::NotNeeded;
        }
        let budget = self.budget(cx);
        if need > budget as u64 || need > READER_SEGS as u64 {
            return Reserve::Never;
        }
        let Ok(c) = self.clients.get_mut(key) else {
            return Reserve::Never;
        };
        c.wants = need as u16;
        self.waiting += 1;
        if self.try_grant(cx, key) {
            Reserve::Granted
        } else {
            self.stats.reservation_waits += 1;
            let _ = cx.pause(conn);
            Reserve::Waiting
        }
    }

    fn budget(&self, cx: &Context<'_, '_>) -> usize {
        let pool = cx.pool();
        let recv = pool
            .total()
            .saturating_sub(usize::from(pool.user_reserve()));
        self.config.reservation_budget(recv)
    }

    /// Grants the reservation `key` waits for, if the budget has room: raises its lease
    /// quota and resumes its receive (unless backpressure holds it).
    fn try_grant(&mut self, cx: &mut Context<'_, '_>, key: Key) -> bool {
        let budget = self.budget(cx);
        let Ok(c) = self.clients.get_mut(key) else {
            return false;
        };
        let need = usize::from(c.wants);
        if need == 0 || self.reserved + need > budget {
            return false;
        }
        if cx.set_lease_quota(c.conn, Some(c.wants)).is_err() {
            return false;
        }
        self.reserved += need;
        c.reservation = c.wants;
        c.wants = 0;
        self.waiting = self.waiting.saturating_sub(1);
        self.stats.reservations += 1;
        self.stats.reserved_high_water = self.stats.reserved_high_water.max(self.reserved as u64);
        if c.may_resume() {
            let _ = cx.resume(c.conn);
        }
        true
    }

    /// The message `key` reserved for is done: give the buffers back to the budget, the
    /// connection back to the default quota, and grant waiting reservations.
    fn release(&mut self, cx: &mut Context<'_, '_>, key: Key) {
        let Ok(c) = self.clients.get_mut(key) else {
            return;
        };
        if c.wants > 0 {
            // It completed with what had arrived before its receive paused: no more waiting.
            c.wants = 0;
            self.waiting = self.waiting.saturating_sub(1);
            if c.may_resume() {
                let _ = cx.resume(c.conn);
            }
        }
        if c.reservation == 0 {
            return;
        }
        self.reserved = self.reserved.saturating_sub(usize::from(c.reservation));
        c.reservation = 0;
        let _ = cx.set_lease_quota(c.conn, None);
        self.grant_waiting(cx);
    }

    /// Grants what the budget allows to waiting clients, scanning from where the last scan
    /// stopped.
    fn grant_waiting(&mut self, cx: &mut Context<'_, '_>) {
        let n = self.keys.len();
        let mut i = 0;
        while self.waiting > 0 && i < n {
            let index = (self.wait_cursor + i) % n;
            i += 1;
            let Some(key) = self.client_key(index) else {
                continue;
            };
            if self
                .clients
                .get(key)
                .is_ok_and(|c| c.wants > 0 && !c.closing)
                && !self.try_grant(cx, key)
            {
                // Wait in order: later clients do not overtake this one.
                self.wait_cursor = index;
                return;
            }
        }
        self.wait_cursor = 0;
    }
}

/// Subscription slot `si` of the client `key`.
fn sub_slot(subs: &[ClientSubs], key: Key, si: usize) -> Option<&SubSlot> {
    subs.get(key.index() as usize)?.slots.get(si)
}

/// What [`Core::reserve_for`] decided.
enum Reserve {
    /// The connection's quota holds the message (or it is here already).
    NotNeeded,
    /// Buffers reserved; the connection's quota is raised until the message is done.
    Granted,
    /// The budget is taken: the connection's receive is paused until a reservation ends.
    Waiting,
    /// The message could never be reserved (larger than the budget or the reader).
    Never,
}

impl<'r> Handler<'r> for Broker<'_, 'r> {
    fn on_accept(&mut self, cx: &mut Context<'_, 'r>, conn: ConnId, listener: ListenerId) {
        if self.monitor.listener == Some(listener) {
            self.monitor.accept(&self.core, cx, conn);
            return;
        }
        let core = &mut self.core;
        core.stats.total_connections += 1;
        if core.clients.len() >= core.config.max_connections
            || core.clients.is_full()
            || self.sessions.is_full()
            || conn.index() >= core.keys.len()
        {
            core.stats.refused += 1;
            // Like nats-server: the INFO first (its clients read it before anything else),
            // then the refusal.
            let client_id = core.next_client_id;
            core.next_client_id += 1;
            let peer = cx.peer_addr(conn).ok();
            send_info(cx, conn, &core.config, client_id, peer);
            send_err(cx, conn, ServerError::MaxConnectionsExceeded);
            return;
        }
        // A previous tenant of the slot is gone (on_close ran), but be safe.
        if let Some(k) = core.client_key(conn.index()) {
            drop_session(&mut self.sessions, &mut self.line_bufs, k);
            core.remove_client(conn.index());
        }
        let Ok(reader) = Reader::new(READER_QUOTA) else {
            cx.abort(conn);
            return;
        };
        let auth = core.config.auth_required();
        let mut parser = BareParser::new(ParserConfig {
            max_payload: core.config.max_payload,
            max_control_line: MAX_CONTROL_LINE,
        });
        parser.set_awaiting_auth(auth);
        let Ok(skey) = self.sessions.try_insert(Session {
            parser,
            line_buf: None,
            reader,
            parsed: Position::from_absolute(0),
            pending: None,
            blocked: false,
        }) else {
            cx.abort(conn);
            return;
        };
        let token = timer_token(conn);
        let auth_timer = if auth {
            cx.set_timer(core.config.auth_timeout, None, token).ok()
        } else {
            None
        };
        let interval = core.config.ping_interval;
        let ping_timer = if interval.is_zero() {
            None
        } else {
            let first = interval.min(Duration::from_secs(2));
            cx.set_timer(first, Some(interval), token | PING_TOKEN).ok()
        };
        let client_id = core.next_client_id;
        let peer = cx.peer_addr(conn).ok();
        let now = cx.now();
        let Ok(ckey) = core.clients.try_insert(Client {
            conn,
            opts: ClientOptions::new(),
            connected: false,
            closing: false,
            paused: false,
            auth_timer,
            ping_timer,
            deadline_timer: None,
            reserve: 0,
            pings_out: 0,
            active: false,
            line_wait: false,
            in_msgs: 0,
            out_msgs: 0,
            in_bytes: 0,
            out_bytes: 0,
            cid: client_id,
            peer,
            start: now,
            last_activity: now,
            ping_sent: None,
            rtt: 0,
            reservation: 0,
            wants: 0,
        }) else {
            let _ = self.sessions.remove(skey);
            cx.abort(conn);
            return;
        };
        debug_assert_eq!(skey, ckey);
        // Empty since its last client left (remove_client); this only reads, so a set never
        // used stays untouched.
        if let Some(subs) = core.subs.get_mut(ckey.index() as usize) {
            subs.clear();
        }
        core.keys[conn.index()] = ckey.to_u64() + 1;
        core.next_client_id += 1;
        send_info(cx, conn, &core.config, client_id, peer);
    }

    fn on_data(&mut self, cx: &mut Context<'_, 'r>, conn: ConnId, lease: Lease<'r>) {
        let Some(key) = self.session_key(conn) else {
            if self.monitor.owns(conn) {
                self.monitor.on_data(&self.core, cx, conn, lease);
            }
            return;
        };
        let Ok(session) = self.sessions.get_mut(key) else {
            return;
        };
        if session.reader.push(lease).is_err() {
            cx.abort(conn);
            return;
        }
        if let Ok(c) = self.core.clients.get_mut(key) {
            c.active = true;
            c.last_activity = cx.now();
        }
        let Some(line) = self.lines.get_mut(key.index() as usize) else {
            cx.abort(conn);
            return;
        };
        process(
            session,
            line,
            &mut self.line_bufs,
            &mut self.core,
            cx,
            conn,
            key,
        );
        self.serve_line_waiters(cx);
    }

    fn on_read_closed(&mut self, cx: &mut Context<'_, 'r>, conn: ConnId) {
        if self.monitor.owns(conn) {
            self.monitor.on_read_closed(cx, conn);
            return;
        }
        cx.close(conn);
    }

    fn on_flushed(&mut self, cx: &mut Context<'_, 'r>, conn: ConnId) {
        if self.monitor.owns(conn) {
            self.monitor.on_flushed(&self.core, cx, conn);
            return;
        }
        if let Some(k) = self.session_key(conn)
            && let Ok(c) = self.core.clients.get_mut(k)
            && let Some(t) = c.deadline_timer.take()
        {
            let _ = cx.cancel_timer(t);
        }
        self.unblock(cx);
    }

    fn on_timer(&mut self, cx: &mut Context<'_, 'r>, _: TimerId, token: u64) {
        if token & MONITOR_TOKEN != 0 {
            self.monitor.on_timer(&self.core, cx, token);
            return;
        }
        let index = (token & 0xffff_ffff) as usize;
        let generation = ((token >> 32) & u64::from(GEN_MASK)) as u32;
        let Some(k) = self.core.client_key(index) else {
            return;
        };
        let ping_max = self.core.config.ping_max;
        let Ok(c) = self.core.clients.get_mut(k) else {
            return;
        };
        if c.conn.generation() & GEN_MASK != generation {
            return;
        }
        if token & DEADLINE_TOKEN != 0 {
            c.deadline_timer = None;
            if !c.closing && cx.staged(c.conn) > 0 {
                // Its slab did not drain within the write deadline: a slow consumer.
                c.closing = true;
                cx.abort(c.conn);
                self.core.stats.slow_consumers += 1;
                self.unblock(cx);
            }
            return;
        }
        if token & PING_TOKEN != 0 {
            if c.closing || c.line_wait {
                // (Waiting for a line buffer, its receive is paused by the broker: its PONGs
                // would wait behind its line, so it is not pinged meanwhile.)
                return;
            }
            if c.active {
                c.active = false;
            } else if c.pings_out >= ping_max {
                c.closing = true;
                send_err(cx, c.conn, ServerError::StaleConnection);
            } else {
                c.pings_out += 1;
                if c.ping_sent.is_none() {
                    c.ping_sent = Some(cx.now());
                }
                send(cx, c.conn, proto::PING);
            }
            return;
        }
        if !c.connected && c.auth_timer.is_some() {
            c.auth_timer = None;
            let conn = c.conn;
            send_err(cx, conn, ServerError::AuthenticationTimeout);
        }
    }

    fn on_close(&mut self, cx: &mut Context<'_, 'r>, conn: ConnId, _: CloseReason) {
        if self.session_key(conn).is_none() {
            self.monitor.on_close(cx, conn);
            return;
        }
        let index = conn.index();
        if let Some(k) = self.core.client_key(index) {
            if let Ok(c) = self.core.clients.get_mut(k) {
                for t in [
                    c.auth_timer.take(),
                    c.ping_timer.take(),
                    c.deadline_timer.take(),
                ]
                .into_iter()
                .flatten()
                {
                    let _ = cx.cancel_timer(t);
                }
            }
            drop_session(&mut self.sessions, &mut self.line_bufs, k);
        }
        self.core.remove_client(index);
        // Its reservation (if any) is back in the budget: waiting large messages go on.
        self.core.grant_waiting(cx);
        // Publishers held back for this connection (or any) try again.
        self.unblock(cx);
        // Its line buffer, if it held one, goes to a waiting client.
        self.serve_line_waiters(cx);
    }
}

/// Removes a session, giving back its line buffer if it holds one.
fn drop_session(sessions: &mut Slab<'_, Session<'_>>, line_bufs: &mut LinePool<'_>, key: Key) {
    if let Ok(s) = sessions.remove(key)
        && let Some(i) = s.line_buf
    {
        line_bufs.give(i);
    }
}

/// Timer tokens: connection slot in the low 32 bits, generation (masked) above, and this bit
/// for the ping timer.
const PING_TOKEN: u64 = 1 << 62;
/// The bit for the write-deadline timer.
const DEADLINE_TOKEN: u64 = 1 << 61;
const GEN_MASK: u32 = 0x1fff_ffff;

fn timer_token(conn: ConnId) -> u64 {
    (u64::from(conn.generation() & GEN_MASK) << 32) | conn.index() as u64
}

/// The payload of `p` in `buf`.
fn payload_of<'b>(buf: &ReadBuf<'b>, p: &Pending) -> Option<ReadBuf<'b>> {
    let off = buf.offset_of(p.start)?;
    buf.slice(off..off + p.total_len as usize)
}

/// Parses and handles what a session holds: first a message blocked on full consumers (if
/// any), then everything after it. A message that cannot be delivered yet stays held (its
/// bytes and everything after them stay in the reader, unconsumed) and the publisher is
/// paused until consumers flush ([`Broker::unblock`]).
fn process(
    session: &mut Session<'_>,
    line: &mut [u8; MAX_CONTROL_LINE],
    line_bufs: &mut LinePool<'_>,
    core: &mut Core<'_>,
    cx: &mut Context<'_, '_>,
    conn: ConnId,
    key: Key,
) {
    let Session {
        parser,
        line_buf,
        reader,
        parsed,
        pending,
        blocked,
    } = session;
    while let Some(rr) = reader.try_read() {
        let buf = rr.buffer();
        if *blocked {
            let Some(p) = *pending else {
                *blocked = false;
                continue;
            };
            let Some(payload) = payload_of(&buf, &p) else {
                cx.abort(conn);
                return;
            };
            if !core.deliver(cx, conn, key, &p, &line[..], payload) {
                core.pause_publisher(cx, conn, key);
                // Nothing new was looked at: the next read sees the held bytes again.
                let _ = reader.advance_to_examined(p.start, p.start);
                return;
            }
            *blocked = false;
            *pending = None;
            core.release(cx, key);
        }
        let from = buf.offset_of(*parsed).unwrap_or(0);
        let Some(view) = buf.slice(from..) else {
            cx.abort(conn);
            return;
        };
        let mut pos = parsed.absolute();
        for seg in view.segments() {
            let mut rest = seg;
            while !rest.is_empty() {
                let mut after = After::default();
                let lent = match *line_buf {
                    Some(i) => line_bufs.get(i),
                    None => None,
                };
                match parser.parse_with(rest, lent) {
                    Err(e) => {
                        fail(cx, conn, e);
                        return;
                    }
                    Ok((used, None)) if used < rest.len() => {
                        // A control line split across receives: it needs a line buffer.
                        rest = &rest[used..];
                        pos += used as u64;
                        if line_buf.is_none()
                            && let Some(i) = line_bufs.take()
                        {
                            *line_buf = Some(i);
                            core.stats.line_bufs_high_water = core
                                .stats
                                .line_bufs_high_water
                                .max(line_bufs.high_water as u64);
                            core.line_granted(cx, key);
                            continue;
                        }
                        // Every buffer is lent: keep the line's bytes (unconsumed) and wait
                        // for one (Broker::serve_line_waiters).
                        *parsed = Position::from_absolute(pos);
                        let consumed = pending.map_or(*parsed, |p| p.start);
                        if reader.advance_to_examined(consumed, *parsed).is_err() {
                            cx.abort(conn);
                            return;
                        }
                        core.wait_for_line(cx, conn, key);
                        return;
                    }
                    Ok((used, op)) => {
                        rest = &rest[used..];
                        pos += used as u64;
                        match op {
                            Some(Op::PayloadEnd) => {
                                if let Some(p) = *pending {
                                    let Some(payload) = payload_of(&buf, &p) else {
                                        cx.abort(conn);
                                        return;
                                    };
                                    if core.deliver(cx, conn, key, &p, &line[..], payload) {
                                        *pending = None;
                                        core.release(cx, key);
                                    } else {
                                        *blocked = true;
                                        *parsed = Position::from_absolute(pos);
                                        core.pause_publisher(cx, conn, key);
                                        let _ = reader.advance_to_examined(p.start, p.start);
                                        return;
                                    }
                                }
                            }
                            Some(op) => {
                                let publish = matches!(op, Op::Pub { .. });
                                after = core.on_op(
                                    cx,
                                    conn,
                                    key,
                                    op,
                                    pending,
                                    line,
                                    Position::from_absolute(pos),
                                );
                                if publish && let Some(p) = *pending {
                                    let have = buf.end().absolute().saturating_sub(pos);
                                    if let Reserve::Never =
                                        core.reserve_for(cx, conn, key, &p, have)
                                    {
                                        send_err(cx, conn, ServerError::MaxPayloadViolation);
                                        return;
                                    }
                                }
                            }
                            None => {}
                        }
                    }
                }
                if parser.buffered() == 0
                    && let Some(i) = line_buf.take()
                {
                    line_bufs.give(i);
                }
                if after.close {
                    return;
                }
                if let Some(h) = after.headers {
                    parser.set_headers(h);
                }
                if after.authenticated {
                    parser.set_awaiting_auth(false);
                }
            }
        }
        *parsed = Position::from_absolute(pos);
        let consumed = pending.map_or(*parsed, |p| p.start);
        if reader.advance_to_examined(consumed, *parsed).is_err() {
            cx.abort(conn);
            return;
        }
    }
}

fn fail(cx: &mut Context<'_, '_>, conn: ConnId, e: ParseError) {
    match e.server_error() {
        Some(se) => {
            send_err(cx, conn, se);
            cx.close(conn);
        }
        None => cx.close(conn),
    }
}

/// `core::fmt` into a monitoring [`Out`](super::monitor::Out).
struct FmtSink<'o, O: super::monitor::Out>(&'o mut O);

impl<O: super::monitor::Out> core::fmt::Write for FmtSink<'_, O> {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        self.0.put(s.as_bytes());
        Ok(())
    }
}
