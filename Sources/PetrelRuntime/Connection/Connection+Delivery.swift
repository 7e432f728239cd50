import CLinux
import Glibc
import PetrelCore

/// Subscriber delivery: topic subscriptions on the loop, and each published frame queued to
/// this subscriber, or handled by the topic's slow-consumer policy when it cannot keep up.
extension Connection {
    func subscribeOnLoop(_ topic: String, replay: [SharedFrame] = [], floor: UInt64 = 0) {
        guard self.phase == .open, !self.subscriptions.contains(where: { $0.topic == topic }) else { return }
        self.subscriptions.append(Subscription(topic: topic, slot: self.loop.topics.add(self, to: topic)))
        self.extras?.resumeFloors.removeValue(forKey: topic)
        if let stomp = self.extras?.stomp { self.stompRefreshFast(stomp) }
        for frame in replay { self.deliver(frame) }
        if floor > 0 {
            self.resumeFloors[topic] = floor
            if let stomp = self.extras?.stomp { self.stompRefreshFast(stomp) }
        }
    }

    func unsubscribeOnLoop(_ topic: String) {
        self.extras?.resumeFloors.removeValue(forKey: topic)
        guard let i = self.subscriptions.firstIndex(where: { $0.topic == topic }) else { return }
        let s = self.subscriptions.remove(at: i)
        self.loop.topics.remove(slot: s.slot, of: topic)
        if let stomp = self.extras?.stomp { self.stompRefreshFast(stomp) }
    }

    /// The loop moved this subscriber to another slot of `topic`'s list.
    func subscriptionMoved(topic: String, to slot: Int) {
        if let i = self.subscriptions.firstIndex(where: { $0.topic == topic }) { self.subscriptions[i].slot = slot }
    }

    func deliver(_ frame: SharedFrame) {
        // A STOMP subscriber's fast path: what it needs is here and in its kind (which every
        // subscriber of that kind on this loop shares), none of it in the extras.
        if let kind = self.state.pointee.stompFast, self.phase == .open, self.session.state == .open, !self.closeAfterFlush,
            !self.backlogged, !self.writeInterest, !self.session.isCompressing
        {
            let message = kind._withUnsafeGuaranteedRef { $0.message(frame) }
            if self.sharedBytes + message.wire.count <= self.options.maxBackpressure {
                self.sharedOut.append(message)
                self.sharedBytes += message.wire.count
                self.loop.markDirty(self)
                return
            }
        }
        let extras = self.extras  // read once: each read is a reference count
        if let e = extras, !e.resumeFloors.isEmpty, let floor = e.resumeFloors[frame.topic] {
            if frame.eventID <= floor { return }
            e.resumeFloors.removeValue(forKey: frame.topic)
        }
        guard self.phase == .open, self.session.state == .open, !self.closeAfterFlush else { return }
        // The fast path: a plain WebSocket (no TLS, proxy, backlog or compression) whose socket
        // took everything at the last flush queues a reference to the frame, not a copy.
        if extras == nil && !self.eventStream && !self.writeInterest && !self.session.isCompressing
            && self.sharedBytes + frame.wire.count <= self.options.maxBackpressure
        {
            self.sharedOut.append(frame)
            self.sharedBytes += frame.wire.count
            self.loop.markDirty(self)
            return
        }
        // STOMP with room: its MESSAGE frames, queued by reference where they can be.
        if let e = extras, let stomp = e.stomp, e.backlogHead == e.backlog.count,
            self.outputBytes(e) < self.options.maxBackpressure
        {
            return self.stompWrite(frame, stomp, e)
        }
        if self.backlogIsEmpty && self.outputBytes < self.options.maxBackpressure {
            self.write(frame)
            self.loop.markDirty(self)
            return
        }
        let policy = self.server?.configuration.policy(for: frame.topic) ?? TopicPolicy()
        let queued = self.backlog.count - self.backlogHead
        switch policy.slowConsumer {
        case .coalesceByKey:
            if let key = frame.key,
                let i = self.backlog[self.backlogHead...].lastIndex(where: {
                    if case .shared(let f) = $0 { return f.topic == frame.topic && f.key == key }
                    return false
                })
            {
                self.backlogBytes += frame.encoded.count - self.backlog[i].byteCount
                self.backlog[i] = .shared(frame)
                self.coalesced.add(1, ordering: .relaxed)
                self.server?.countCoalesced(topic: frame.topic)
                return
            }
            if queued >= policy.maxQueuedMessages { self.dropOldest(topic: frame.topic) }
        case .dropOldest:
            if queued >= policy.maxQueuedMessages { self.dropOldest(topic: frame.topic) }
        case .dropNewest:
            if queued >= policy.maxQueuedMessages {
                self.dropped.add(1, ordering: .relaxed)
                self.server?.countDropped(topic: frame.topic)
                return
            }
        case .close(let code):
            if queued >= policy.maxQueuedMessages {
                self.dropped.add(1, ordering: .relaxed)
                self.server?.countDropped(topic: frame.topic)
                self.backlog.removeAll()
                self.backlogHead = 0
                self.backlogBytes = 0
                return self.closeOnLoop(code: code, reason: "subscriber too slow: \(queued) messages queued on \(frame.topic)")
            }
        }
        self.pushBacklog(.shared(frame))
    }

    func dropOldest(topic: String) {
        guard let i = self.backlog[self.backlogHead...].firstIndex(where: { if case .shared = $0 { return true } else { return false } }) else {
            return
        }
        if case .shared(let f) = self.backlog[i] { self.server?.countDropped(topic: f.topic) }
        self.backlogBytes -= self.backlog[i].byteCount
        self.backlog.remove(at: i)
        self.dropped.add(1, ordering: .relaxed)
    }

    /// Writes a topic message: as MESSAGE frames on a STOMP connection, else as it is.
    func write(_ frame: SharedFrame) {
        if let e = self.extras, let stomp = e.stomp { return self.stompWrite(frame, stomp, e) }
        self.writeWire(frame)
    }

    /// Writes a shared frame: its shared compressed form when this connection's compressor keeps
    /// no context, compressed by the session when it does, or as encoded.
    func writeWire(_ frame: SharedFrame) {
        self.spillShared()
        if self.eventStream {
            frame.sseEvent.withUnsafeBytes { self.queuePlain($0) }
            return
        }
        if let c = self.session.compression, frame.payload.count >= c.options.minimumSize {
            if c.parameters.localNoContextTakeover {
                let bytes = frame.compressedFrame(windowBits: c.parameters.localMaxWindowBits, options: c.options, pool: self.loop.zlibPool)
                _ = bytes.withUnsafeBytes { try? self.session.queueEncoded($0) }
            } else {
                _ = frame.payload.withUnsafeBytes { try? self.session.send(frame.kind, $0) }
            }
            return
        }
        _ = try? self.session.queueEncoded(frame.encoded)
    }
}
