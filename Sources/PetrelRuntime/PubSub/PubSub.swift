import PetrelCore
import Synchronization

/// A message published to a topic: encoded once, shared by every subscriber on every loop.
public final class SharedFrame: @unchecked Sendable {
    public let topic: String
    /// The coalescing key (e.g. a ticker), if the publisher gave one.
    public let key: String?
    /// The topic's event id: increasing by one per publish, starting at 1 (with the Redis
    /// engine, an epoch in the top bits: `EventIDLayout`).
    public let eventID: UInt64
    public let kind: MessageKind
    public let payload: [UInt8]
    /// The unmasked, uncompressed frame, at a fixed address for its whole life: subscribers'
    /// sockets are written straight from it (writev), never from a copy per subscriber.
    let wire: UnsafeMutableRawBufferPointer
    var encoded: UnsafeRawBufferPointer { UnsafeRawBufferPointer(self.wire) }
    private let compressedByWindow = Lock<[Int: [UInt8]]>([:])
    private let sse = Lock<[UInt8]?>(nil)
    /// STOMP MESSAGE frames of this message, by subscription id, destination, ack mode and
    /// escaping: one per kind of subscriber, shared by all of that kind.
    private let stomp = Lock<[StompMessageKey: SharedFrame]>([:])

    init(topic: String, key: String?, eventID: UInt64, kind: MessageKind, payload: [UInt8]) {
        self.topic = topic
        self.key = key
        self.eventID = eventID
        self.kind = kind
        self.payload = payload
        let frame = UnsafeMutableRawBufferPointer.allocate(
            byteCount: FrameHeader.size(payloadLength: payload.count, masked: false) + payload.count, alignment: 16)
        let n = FrameHeader.encode(fin: true, opcode: kind.opcode, payloadLength: payload.count, maskKey: nil, into: frame.baseAddress!)
        payload.withUnsafeBytes { src in
            if src.count > 0 { (frame.baseAddress! + n).copyMemory(from: src.baseAddress!, byteCount: src.count) }
        }
        self.wire = frame
    }

    deinit {
        self.wire.deallocate()
    }

    /// The frame compressed on its own for a window of `windowBits`: made by the first loop that
    /// needs it, then shared.
    func compressedFrame(windowBits: Int, options: DeflateOptions, pool: ZlibPool) -> [UInt8] {
        if let hit = self.compressedByWindow.withLock({ $0[windowBits] }) { return hit }
        let made = self.payload.withUnsafeBytes {
            PerMessageDeflate.encodeStandaloneFrame(self.kind, $0, windowBits: windowBits, options: options, pool: pool)
        }
        self.compressedByWindow.withLock { $0[windowBits] = made }
        return made
    }

    /// The message as a STOMP MESSAGE frame (in a frame of its own kind: text or binary) for a
    /// subscription `subscription` to `destination`, with an `ack` header if `ack`. Made by the
    /// first subscriber of its kind, then shared (compressed once for all, as any topic frame).
    func stompMessage(subscription: String, destination: String, ack: Bool, version: StompVersion) -> SharedFrame {
        // 1.0 escapes nothing, 1.1 and 1.2 escape the same way in every header we write.
        self.stompMessage(StompMessageKey(subscription: subscription, destination: destination, ack: ack, escapes: version > .v1_0))
    }

    /// At most this many kinds of MESSAGE frame are kept per message (clients that number their
    /// subscriptions share a few); a subscriber of another kind gets a frame of its own.
    static let stompKinds = 16

    func stompMessage(_ key: StompMessageKey) -> SharedFrame {
        if let hit = self.stomp.withLock({ $0[key] }) { return hit }
        let bytes = self.payload.withUnsafeBytes {
            StompServerSession.message(
                destination: key.destination, subscription: key.subscription, eventID: self.eventID, ack: key.ack, body: $0,
                version: key.escapes ? .v1_2 : .v1_0)
        }
        let made = SharedFrame(topic: self.topic, key: self.key, eventID: self.eventID, kind: self.kind, payload: bytes)
        return self.stomp.withLock { cache in
            if let raced = cache[key] { return raced }
            if cache.count < SharedFrame.stompKinds { cache[key] = made }
            return made
        }
    }

    /// The message as a Server-Sent Event: `id:` then one `data:` line per line of the payload.
    public var sseEvent: [UInt8] {
        self.sse.withLock { cached in
            if let c = cached { return c }
            let made = self.payload.withUnsafeBytes { ServerSentEvents.event(id: self.eventID, payload: $0) }
            cached = made
            return made
        }
    }
}

struct StompMessageKey: Hashable {
    let subscription: String
    let destination: String
    let ack: Bool
    let escapes: Bool
}

/// Counters of one topic.
public struct TopicStatistics: Sendable, Hashable {
    public var published: UInt64 = 0
    /// Messages dropped for slow subscribers, and coalesced away (summed over subscribers).
    public var dropped: Int = 0
    public var coalesced: Int = 0
    /// The last event id given out (0 before the first publish).
    public var lastEventID: UInt64 = 0
}

/// Event ids, replay rings and counters of every topic. Publishing takes its lock, so that the
/// order of event ids is the order in which loops receive the messages.
final class TopicRegistry: @unchecked Sendable {
    struct Topic {
        var statistics = TopicStatistics()
        var ring: [SharedFrame] = []
        var ringStart = 0
        /// With an engine: the epoch of the ids this node reads (0 until known).
        var epoch: UInt64 = 0

        var ordered: [SharedFrame] { Array(self.ring[self.ringStart...] + self.ring[..<self.ringStart]) }

        mutating func keep(_ frame: SharedFrame, capacity: Int) {
            guard capacity > 0 else { return }
            if self.ring.count > capacity {  // the capacity shrank: keep the newest
                self.ring = Array(self.ordered.suffix(capacity))
                self.ringStart = 0
            }
            if self.ring.count < capacity {
                self.ring.append(frame)
            } else {
                self.ring[self.ringStart] = frame
                self.ringStart = (self.ringStart + 1) % capacity
            }
        }
    }

    let state = Lock<[String: Topic]>([:])

    /// Creates the frame with the topic's next event id and hands it to `distribute` under the
    /// lock. `stampID`: the payload's `{{id}}` is replaced by the id (`IDStamp`; the caller
    /// checked that it has one).
    func publish(
        topic: String, key: String?, kind: MessageKind, payload: [UInt8], stampID: Bool = false, replayCapacity: Int,
        distribute: (SharedFrame) -> Void
    ) -> SharedFrame {
        self.state.withLock { topics in
            var t = topics[topic] ?? Topic()
            t.statistics.lastEventID += 1
            t.statistics.published += 1
            let id = t.statistics.lastEventID
            let body = stampID ? IDStamp.stamp(payload, id: id) ?? payload : payload
            let frame = SharedFrame(topic: topic, key: key, eventID: id, kind: kind, payload: body)
            t.keep(frame, capacity: replayCapacity)
            topics[topic] = t
            distribute(frame)
            return frame
        }
    }

    /// Runs `body` under the lock with the messages after `eventID` (oldest first) and the
    /// topic's last event id, so that no publish falls between the two; nil (and `body` is not
    /// run) when some of them are no longer kept, or `eventID` was never given out.
    ///
    /// `older(after, before)` reads, from an engine, the messages between `after` and the
    /// ring's first (or, with an empty ring, the last one's successor), when the ring does not
    /// reach back far enough; it is called only for an id of the topic's current epoch.
    ///
    /// `ahead(id)` says whether an engine gave out an id this node has not read yet (a client
    /// that comes from a node that is a little ahead): then the client is subscribed with that
    /// id as its floor.
    func resume<R>(
        topic: String, after eventID: UInt64, older: ((UInt64, UInt64) -> [SharedFrame]?)? = nil,
        ahead: ((UInt64) -> Bool)? = nil, _ body: ([SharedFrame], UInt64) -> R
    ) -> R? {
        self.state.withLock { topics in
            let last = topics[topic]?.statistics.lastEventID ?? 0
            // 0 is "from the first message": with an engine, of the current epoch.
            let eventID = eventID == 0 ? EventIDLayout.id(epoch: EventIDLayout.epoch(of: last), sequence: 0) : eventID
            if eventID > last {
                guard let ahead, ahead(eventID) else { return nil }
                return body([], eventID)
            }
            if eventID == last { return body([], last) }
            guard let t = topics[topic] else { return nil }
            let ordered = t.ordered
            if let first = ordered.first, first.eventID <= eventID + 1 {
                return body(ordered.filter { $0.eventID > eventID }, last)
            }
            // Older than the ring: only an engine may still have them, and only in this epoch
            // (0 = from the epoch's first message).
            guard let older, EventIDLayout.epoch(of: eventID) == EventIDLayout.epoch(of: last) else { return nil }
            let before = ordered.first?.eventID ?? last + 1
            guard let missing = older(eventID, before) else { return nil }
            return body(missing + ordered, last)
        }
    }

    // MARK: With an engine

    /// An engine's first look at a topic on this node: its epoch, the id of its newest message
    /// (0 if none) and the newest messages of its history (oldest first) for the ring. Nothing is
    /// delivered; the engine reads on after `newest`.
    func fill(topic: String, epoch: UInt64, frames: [SharedFrame], newest: UInt64, capacity: Int) {
        self.state.withLock { topics in
            var t = topics[topic] ?? Topic()
            t.epoch = newest != 0 ? EventIDLayout.epoch(of: newest) : epoch
            t.ring = []
            t.ringStart = 0
            for f in frames.suffix(capacity) { t.keep(f, capacity: capacity) }
            if newest != 0 { t.statistics.lastEventID = newest }
            topics[topic] = t
        }
    }

    /// A message an engine read, with its id: kept for replay and handed to `distribute` under
    /// the lock, after the messages before it. An id already seen is skipped (returns false). An id that does
    /// not follow the last one (another epoch: the engine lost its history; or a gap: entries
    /// were trimmed before this node read them) empties the ring and runs `discontinuity` under
    /// the lock, before the delivery.
    @discardableResult
    func arrive(_ frame: SharedFrame, capacity: Int, discontinuity: () -> Void, distribute: (SharedFrame) -> Void) -> Bool {
        self.state.withLock { topics in
            var t = topics[frame.topic] ?? Topic()
            let last = t.statistics.lastEventID
            let epoch = EventIDLayout.epoch(of: frame.eventID)
            let sequence = EventIDLayout.sequence(of: frame.eventID)
            if last != 0 && epoch == EventIDLayout.epoch(of: last) && frame.eventID <= last { return false }
            let follows = last == 0 ? (t.epoch == 0 || t.epoch == epoch) && sequence == 1 : frame.eventID == last + 1
            if !follows && !(last == 0 && t.epoch == 0) {
                t.ring = []
                t.ringStart = 0
                discontinuity()
            }
            t.epoch = epoch
            t.statistics.lastEventID = frame.eventID
            t.statistics.published += 1
            t.keep(frame, capacity: capacity)
            topics[frame.topic] = t
            distribute(frame)
            return true
        }
    }

    /// An epoch this node's own publish was given, kept if the topic has none yet.
    func noteEpoch(topic: String, epoch: UInt64) {
        self.state.withLock { topics in
            if topics[topic]?.epoch ?? 0 == 0 { topics[topic, default: Topic()].epoch = epoch }
        }
    }

    /// The engine's epoch of `topic` on this node (0 until known).
    func epoch(of topic: String) -> UInt64 { self.state.withLock { $0[topic]?.epoch ?? 0 } }

    /// The engine lost the topic's history: forget the ring, the last id and the epoch (the next fill learns the new one).
    func forget(topic: String) {
        self.state.withLock { topics in
            guard var t = topics[topic] else { return }
            t.ring = []
            t.ringStart = 0
            t.statistics.lastEventID = 0
            t.epoch = 0
            topics[topic] = t
        }
    }

    func count(topic: String, dropped: Int = 0, coalesced: Int = 0) {
        self.state.withLock { topics in
            topics[topic, default: Topic()].statistics.dropped += dropped
            topics[topic, default: Topic()].statistics.coalesced += coalesced
        }
    }

    func statistics(_ topic: String) -> TopicStatistics {
        self.state.withLock { $0[topic]?.statistics ?? TopicStatistics() }
    }
}
