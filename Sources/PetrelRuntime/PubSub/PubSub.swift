import PetrelCore
import Synchronization

/// A message published to a topic: encoded once, shared by every subscriber on every loop.
public final class SharedFrame: @unchecked Sendable {
    public let topic: String
    /// The coalescing key (e.g. a ticker), if the publisher gave one.
    public let key: String?
    /// The topic's event id: increasing by one per publish, starting at 1.
    public let eventID: UInt64
    public let kind: MessageKind
    public let payload: [UInt8]
    /// The unmasked, uncompressed frame, at a fixed address for its whole life: subscribers'
    /// sockets are written straight from it (writev), never from a copy per subscriber.
    let wire: UnsafeMutableRawBufferPointer
    var encoded: UnsafeRawBufferPointer { UnsafeRawBufferPointer(self.wire) }
    private let compressedByWindow = Lock<[Int: [UInt8]]>([:])
    private let sse = Lock<[UInt8]?>(nil)

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
    }

    let state = Lock<[String: Topic]>([:])

    /// Creates the frame with the topic's next event id and hands it to `distribute` under the lock.
    func publish(
        topic: String, key: String?, kind: MessageKind, payload: [UInt8], replayCapacity: Int,
        distribute: (SharedFrame) -> Void
    ) -> UInt64 {
        self.state.withLock { topics in
            var t = topics[topic] ?? Topic()
            t.statistics.lastEventID += 1
            t.statistics.published += 1
            let frame = SharedFrame(topic: topic, key: key, eventID: t.statistics.lastEventID, kind: kind, payload: payload)
            if replayCapacity > 0 {
                if t.ring.count < replayCapacity {
                    t.ring.append(frame)
                } else {
                    t.ring[t.ringStart] = frame
                    t.ringStart = (t.ringStart + 1) % replayCapacity
                }
            }
            topics[topic] = t
            distribute(frame)
            return frame.eventID
        }
    }

    /// Runs `body` under the lock with the messages after `eventID` (oldest first) and the
    /// topic's last event id, so that no publish falls between the two; nil (and `body` is not
    /// run) when some of them are no longer kept, or `eventID` was never given out.
    func resume<R>(topic: String, after eventID: UInt64, _ body: ([SharedFrame], UInt64) -> R) -> R? {
        self.state.withLock { topics in
            let last = topics[topic]?.statistics.lastEventID ?? 0
            if eventID > last { return nil }
            if eventID == last { return body([], last) }
            guard let t = topics[topic] else { return nil }
            let ordered = Array(t.ring[t.ringStart...] + t.ring[..<t.ringStart])
            guard let first = ordered.first, first.eventID <= eventID + 1 else { return nil }
            return body(ordered.filter { $0.eventID > eventID }, last)
        }
    }

    /// The messages after `eventID`, oldest first; nil when some of them are no longer kept.
    func replay(topic: String, after eventID: UInt64) -> [SharedFrame]? {
        self.state.withLock { topics in
            guard let t = topics[topic] else { return eventID == 0 ? [] : nil }
            if eventID >= t.statistics.lastEventID { return [] }
            let ordered = Array(t.ring[t.ringStart...] + t.ring[..<t.ringStart])
            guard let first = ordered.first, first.eventID <= eventID + 1 else { return nil }
            return ordered.filter { $0.eventID > eventID }
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
