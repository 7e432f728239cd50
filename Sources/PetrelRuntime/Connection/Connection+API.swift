import CLinux
import Glibc
import PetrelCore

/// The connection's public API. Every method is safe from any thread: called off the
/// connection's loop thread, it is queued to that thread.
extension Connection {
    /// Queues a message. Safe from any thread; off the loop thread the payload is copied.
    @discardableResult
    public func send(_ kind: MessageKind, _ payload: UnsafeRawBufferPointer) -> SendStatus {
        if self.loop.isCurrentThread { return self.sendOnLoop(kind, payload) }
        if self.closedFlag.load(ordering: .relaxed) { return .closed }
        if self.bufferedAmount >= self.options.maxBackpressure {
            if self.options.closeOnBackpressure { self.close(code: .policyViolation, reason: self.backpressureReason) }
            self.wantsDrainFlag()
            return .backpressure
        }
        self.inFlight.add(payload.count, ordering: .relaxed)
        self.loop.enqueue(.send(self.id, kind, [UInt8](payload)))
        return .ok
    }

    /// Sends a text message; on a Server-Sent Events stream it becomes an event with this `id:`
    /// (0 for none), which the browser sends back as `Last-Event-ID` when it reconnects.
    @discardableResult
    public func send(text: String, eventID: UInt64) -> SendStatus {
        if eventID == 0 || !self.isEventStream { return self.send(text: text) }
        let event = text.utf8.withContiguousStorageIfAvailable { ServerSentEvents.event(id: eventID, payload: UnsafeRawBufferPointer($0)) }
            ?? Array(text.utf8).withUnsafeBytes { ServerSentEvents.event(id: eventID, payload: $0) }
        return self.sendRaw(event)
    }

    @discardableResult
    public func send(text: String) -> SendStatus {
        var s = text
        return s.withUTF8 { self.send(.text, UnsafeRawBufferPointer($0)) }
    }

    @discardableResult
    public func send(binary: [UInt8]) -> SendStatus {
        binary.withUnsafeBytes { self.send(.binary, $0) }
    }

    /// Starts the closing handshake (or, before the upgrade, just closes). Safe from any thread.
    public func close(code: CloseCode = .normalClosure, reason: String = "") {
        self.loop.execute(.close(self.id, code, reason))
    }

    /// Stops reading from the peer (`true`) until called with `false`: the application's own
    /// flow control, for a consumer that has fallen behind (TCP then slows the peer down).
    /// Off the loop thread the call is queued: messages the loop reads before it gets there
    /// still arrive.
    /// Closing lets go of the hold, so that the peer's close frame is read, and a hold asked
    /// for once a close has begun is ignored. While held, pings from the peer are not answered,
    /// the idle and pong timers run on, and a reset by the peer ends the connection at once.
    /// Safe from any thread.
    public func holdReading(_ hold: Bool) {
        self.loop.execute(.call { [self] in self.holdReadingOnLoop(hold) })
    }

    /// Sends a ping. Safe from any thread.
    public func ping(_ payload: [UInt8] = []) {
        self.loop.execute(.ping(self.id, payload))
    }

    /// Adds the connection to `topic`'s subscribers. Safe from any thread.
    public func subscribe(_ topic: String) {
        self.server?.track(topic)
        self.loop.execute(.subscribe(self.id, topic))
    }

    public func unsubscribe(_ topic: String) { self.loop.execute(.unsubscribe(self.id, topic)) }

    /// Subscribes so that every message published to `topic` after `eventID` arrives exactly
    /// once and in order: first those the topic's replay ring still holds, then live ones.
    /// Returns false, and subscribes nothing, when the ring no longer holds them all (or the id
    /// was never given out, e.g. by an earlier run): send the client a snapshot, then subscribe
    /// after the snapshot's id. Safe from any thread.
    ///
    /// For a snapshot without gaps or repeats, build it under the same lock as your publishes,
    /// with the last event id `publish` returned, and call this before releasing that lock.
    @discardableResult
    public func subscribe(_ topic: String, after eventID: UInt64) -> Bool {
        guard let server = self.server else { return false }
        let onLoop = self.loop.isCurrentThread
        let found: ([SharedFrame], UInt64)? = server.resume(topic: topic, after: eventID) { frames, last in
            // Under the topic lock: every message up to `last` is already queued to this loop,
            // every later one will be queued after this. Off the loop, the subscription must be
            // queued here too, to keep that order; on it, the loop runs nothing meanwhile.
            if !onLoop { self.loop.enqueue(.call { [self] in self.subscribeOnLoop(topic, replay: frames, floor: last) }) }
            return (frames, last)
        }
        guard let (frames, last) = found else { return false }
        // Replayed outside the lock: delivering may count drops, which takes the topic lock.
        if onLoop { self.subscribeOnLoop(topic, replay: frames, floor: last) }
        return true
    }

    /// The event id a reconnecting client says it saw last: the `Last-Event-ID` header (sent by
    /// a browser's EventSource), else a `last_event_id` query parameter; nil when neither is
    /// there or it is not a number.
    public var lastEventID: UInt64? {
        guard let head = self.request?.head ?? self.httpRequest else { return nil }
        let value = head.headers["Last-Event-ID"] ?? head.queryParameter("last_event_id")
        return value.flatMap { UInt64($0) }
    }

    /// Bytes queued but not yet written to the socket (including sends still on their way to the loop).
    public var bufferedAmount: Int { self.bufferedBytes.load(ordering: .relaxed) + self.inFlight.load(ordering: .relaxed) }

    /// The last measured ping round trip in milliseconds, or nil before the first pong.
    public var roundTripTime: Int? {
        let v = self.rtt.load(ordering: .relaxed)
        return v < 0 ? nil : v
    }

    public var isClosed: Bool { self.closedFlag.load(ordering: .relaxed) }

    /// Whether permessage-deflate was negotiated (set once, before `onOpen`).
    public var isCompressing: Bool { self.compressing.load(ordering: .acquiring) }

    /// Messages of topics dropped, and coalesced away, because this subscriber was slow.
    public var droppedMessages: Int { self.dropped.load(ordering: .relaxed) }
    public var coalescedMessages: Int { self.coalesced.load(ordering: .relaxed) }

    var backpressureReason: String { "send buffer over \(self.options.maxBackpressure) bytes" }

    func wantsDrainFlag() {
        self.loop.execute(.call { [self] in
            self.wantsDrain = true
            // The sender read a count that was already stale: if the buffer has been written
            // out since, no flush is coming to notice, so flush now (it calls onDrain).
            if self.queuedBytes == 0 && self.phase == .open { self.loop.markDirty(self) }
        })
    }

    /// Writes already-encoded bytes (for an SSE stream). Safe from any thread.
    @discardableResult
    public func sendRaw(_ bytes: [UInt8]) -> SendStatus {
        if self.loop.isCurrentThread { return bytes.withUnsafeBytes { self.sendRawOnLoop($0) } }
        if self.closedFlag.load(ordering: .relaxed) { return .closed }
        if self.bufferedAmount >= self.options.maxBackpressure {
            self.wantsDrainFlag()
            return .backpressure
        }
        self.inFlight.add(bytes.count, ordering: .relaxed)
        self.loop.enqueue(.call { [self] in
            self.inFlight.subtract(bytes.count, ordering: .relaxed)
            _ = bytes.withUnsafeBytes { self.sendRawOnLoop($0, accepted: true) }
        })
        return .ok
    }
}
