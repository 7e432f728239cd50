import PetrelCore

/// A STOMP connection's state on its loop: the core's session, and per subscription the topic
/// it reads, where a resume left off, and messages held back by the cap on unacknowledged ones.
final class StompConnection {
    struct Subscription {
        let id: String
        let topic: String
        let destination: String
        /// A client ack mode: MESSAGE frames carry `ack`, and each one is counted.
        let acknowledges: Bool
        let kind: StompKind
        /// Messages up to this id were replayed when it resumed: the same ones still on their
        /// way to this loop are skipped.
        var floor: UInt64
        var held: [SharedFrame] = []
    }

    // Loop thread only, as `Connection.State` is: a delivery reads and writes these with no
    // run-time exclusivity check. What a delivery reads comes first, in one cache line.
    /// In the order they were made (at most `maxSubscriptions`: a scan beats hashing here).
    @exclusivity(unchecked) var subscriptions: [Subscription] = []
    /// When something was last sent, for heart-beats.
    @exclusivity(unchecked) var lastSent: UInt64
    @exclusivity(unchecked) var session: StompServerSession
    let configuration: StompConfiguration

    init(configuration: StompConfiguration, now: UInt64) {
        self.configuration = configuration
        self.session = StompServerSession(options: configuration.options)
        self.lastSent = now
    }

    func index(of id: String) -> Int? { self.subscriptions.firstIndex { $0.id == id } }

    /// How long the client may be silent once it agreed to send heart-beats (0: no check).
    var silenceLimit: UInt64 {
        let every = self.session.expectHeartBeatEvery  // at most an hour (StompServerSession.maxHeartBeat)
        guard every > 0 else { return 0 }
        let grace = min(max(1, self.configuration.heartBeatGrace), 1_000)
        return UInt64(max(every * grace, self.configuration.minimumSilence))
    }
}

/// One kind of STOMP subscriber on a loop (subscription id, destination, ack mode, escaping),
/// shared by every subscription of that kind: it remembers the MESSAGE frame of the last topic
/// message, so that the fan-out to thousands of `sub-0` subscribers makes or finds it once and
/// then compares one pointer per subscriber. Loop thread only.
final class StompKind {
    let key: StompMessageKey
    @exclusivity(unchecked) var lastFrame: SharedFrame? = nil
    @exclusivity(unchecked) var lastMessage: SharedFrame? = nil
    /// For the loop's sweep (`isKnownUniquelyReferenced` needs a variable).
    var reference: StompKind { get { self } set {} }

    init(_ key: StompMessageKey) { self.key = key }

    /// `frame` as a MESSAGE frame of this kind.
    @inline(__always)
    func message(_ frame: SharedFrame) -> SharedFrame {
        if self.lastFrame === frame, let m = self.lastMessage { return m }
        let m = frame.stompMessage(self.key)
        self.lastFrame = frame
        self.lastMessage = m
        return m
    }
}

/// STOMP over WebSocket: frames from the client through the core's `StompServerSession`, the
/// application's hooks, topic messages as MESSAGE frames, heart-beats.
extension Connection {
    /// The STOMP version agreed on this connection, or nil if it does not speak STOMP (or has
    /// not sent CONNECT yet). Loop thread only (in callbacks).
    public var stompVersion: StompVersion? {
        guard let s = self.stomp, s.session.state != .awaitingConnect else { return nil }
        return s.session.version
    }

    /// The acknowledged position of a STOMP subscription (see `StompSubscription.acknowledged`).
    /// Loop thread only.
    public func stompSubscription(_ id: String) -> StompSubscription? { self.stomp?.session.subscriptions[id] }

    /// At the upgrade: does this connection speak STOMP?
    func startStompIfAsked(_ request: HandshakeRequest, subprotocol: String?) {
        guard let configuration = self.server?.configuration.stomp else { return }
        let bySubprotocol = configuration.subprotocols && subprotocol.flatMap { StompVersion(subprotocol: $0) } != nil
        guard bySubprotocol || configuration.paths.contains(request.path) else { return }
        self.stomp = StompConnection(configuration: configuration, now: self.loop.now)
        self.transportFlag.store(Connection.stompTransport, ordering: .releasing)
    }

    /// A WebSocket message of a STOMP connection.
    func stompReceive(_ payload: UnsafeRawBufferPointer) {
        guard let stomp = self.stomp else { return }
        stomp.session.receive(payload)
        while self.phase == .open, let event = stomp.session.nextEvent() {
            self.stompHandle(event, stomp)
            self.stompFlush(stomp)
        }
        self.stompFlush(stomp)
    }

    private func stompHandle(_ event: StompServerSession.Event, _ stomp: StompConnection) {
        switch event {
        case .connect(let request):
            switch self.handlers.onStompConnect?(self, request) ?? .accept {
            case .accept:
                stomp.session.accept(request, session: String(describing: self.id))
                self.armTimer()
            case .refuse(let message):
                self.stompFail(StompError(.protocolViolation, message, receiptID: request.frame["receipt"]), stomp)
            }
        case .subscribe(let subscription, let receipt):
            let answer = self.handlers.onStompSubscribe?(self, subscription) ?? Connection.defaultStompRoute(subscription.destination)
            switch answer {
            case .refuse(let message):
                self.stompFail(StompError(.protocolViolation, message, receiptID: receipt), stomp)
            case .allow(let topic):
                stomp.session.subscribe(subscription, receipt: receipt)
                self.stompFlush(stomp)
                self.stompSubscribe(subscription, topic: topic, stomp)
            }
        case .unsubscribe(let subscription):
            guard let i = stomp.index(of: subscription.id) else { return }
            let topic = stomp.subscriptions.remove(at: i).topic
            self.stompRefreshFast(stomp)
            if !stomp.subscriptions.contains(where: { $0.topic == topic }) { self.unsubscribeOnLoop(topic) }
        case .send(let frame, let destination, let receipt):
            switch self.handlers.onStompSend?(self, frame, destination) ?? .refuse("this server takes no SEND") {
            case .refuse(let message):
                self.stompFail(StompError(.protocolViolation, message, receiptID: receipt), stomp)
            case .handled:
                stomp.session.complete(receipt: receipt)
            case .publish(let topic):
                let kind: MessageKind = String(validating: frame.body, as: UTF8.self) != nil ? .text : .binary
                do {
                    try self.server?.publish(topic, kind, frame.body)
                    stomp.session.complete(receipt: receipt)
                } catch {
                    self.stompFail(StompError(.protocolViolation, "not published: \(error.message)", receiptID: receipt), stomp)
                }
            }
        case .ack(let id, let eventIDs), .nack(let id, let eventIDs):
            guard !id.isEmpty else { return }  // a 1.0 ACK of nothing outstanding
            var negative = false
            if case .nack = event { negative = true }
            let position = stomp.session.subscriptions[id]?.acknowledged ?? 0
            self.handlers.onStompAck?(self, StompAcknowledgement(subscription: id, eventIDs: eventIDs, negative: negative, position: position))
            self.stompRelease(id, stomp)
        case .disconnect:
            self.stompFlush(stomp)
            self.closeOnLoop(code: .normalClosure, reason: "STOMP DISCONNECT")
        case .failed(let error):
            self.stompFail(error, stomp)
        }
    }

    /// `/topic/NAME` is topic NAME; nothing else is known without a hook.
    public static func defaultStompRoute(_ destination: String) -> StompSubscribeAnswer {
        let prefix = "/topic/"
        guard destination.hasPrefix(prefix), destination.utf8.count > prefix.utf8.count else {
            return .refuse("unknown destination \(destination): this server has /topic/NAME")
        }
        return .allow(topic: String(destination.dropFirst(prefix.count)))
    }

    private func stompSubscribe(_ subscription: StompSubscription, topic: String, _ stomp: StompConnection) {
        var replay: [SharedFrame] = []
        var floor: UInt64 = 0
        self.server?.track(topic)
        if let after = subscription.lastEventID, let server = self.server,
            let (frames, last) = server.resume(topic: topic, after: after, { ($0, $1) })
        {
            replay = frames
            floor = last
        }
        // A resume the ring no longer covers starts live, as an SSE resume without a snapshot.
        let acknowledges = subscription.ackMode != .auto
        let key = StompMessageKey(
            subscription: subscription.id, destination: subscription.destination, ack: acknowledges, escapes: stomp.session.version > .v1_0)
        stomp.subscriptions.append(StompConnection.Subscription(
            id: subscription.id, topic: topic, destination: subscription.destination, acknowledges: acknowledges,
            kind: self.loop.stompKind(key), floor: 0))
        let index = stomp.subscriptions.count - 1
        // Behind whatever is queued, and under the topic's bound (`stompQueue`).
        let extras = self.more
        for frame in replay where self.phase == .open { self.stompDeliver(frame, to: index, stomp, extras, direct: false) }
        guard self.phase == .open else { return }
        stomp.subscriptions[index].floor = floor
        if !self.subscriptions.contains(where: { $0.topic == topic }) { self.subscribeOnLoop(topic) }
        self.stompRefreshFast(stomp)
    }

    /// Sets or clears `State.stompFast`: set while this connection has one subscription, the same
    /// one to STOMP and to the loop, in auto mode (nothing counted or held), past its resume
    /// floor, with no TLS and no plain resume floor. The fast path then writes the kind's MESSAGE
    /// frame by reference, as `stompDeliver` would, but does not note the time it sent: a
    /// heart-beat may go out while messages flow, which STOMP allows (an EOL between frames).
    func stompRefreshFast(_ stomp: StompConnection) {
        var fast: Unmanaged<StompKind>? = nil
        if stomp.subscriptions.count == 1, self.subscriptions.count == 1, let e = self.extras, e.tlsLayers.isEmpty,
            e.resumeFloors.isEmpty, !self.eventStream
        {
            let s = stomp.subscriptions[0]
            if !s.acknowledges && s.floor == 0 && s.held.isEmpty && s.topic == self.subscriptions[0].topic {
                fast = Unmanaged.passUnretained(s.kind)
            }
        }
        self.state.pointee.stompFast = fast
    }

    /// A topic message to every STOMP subscription of its topic on this connection, from
    /// `write`: the topic's slow-consumer policy has already let it through.
    func stompWrite(_ frame: SharedFrame, _ stomp: StompConnection, _ extras: ConnectionExtras) {
        var i = 0
        while i < stomp.subscriptions.count {
            if stomp.subscriptions[i].topic == frame.topic { self.stompDeliver(frame, to: i, stomp, extras, direct: true) }
            i += 1
        }
    }

    /// `direct`: from `write` (the output is known to have room, or the backlog is being moved
    /// into it, in order). Else (a replay, a release after an ACK) behind anything queued.
    private func stompDeliver(_ frame: SharedFrame, to i: Int, _ stomp: StompConnection, _ extras: ConnectionExtras, direct: Bool) {
        guard frame.eventID > stomp.subscriptions[i].floor else { return }
        if direct && stomp.subscriptions[i].floor > 0 {
            // Past the resume: what follows is newer still (a topic's ids rise).
            stomp.subscriptions[i].floor = 0
            self.stompRefreshFast(stomp)
        }
        let acknowledges = stomp.subscriptions[i].acknowledges
        if acknowledges
            && (!stomp.subscriptions[i].held.isEmpty || !stomp.session.delivered(subscription: stomp.subscriptions[i].id, eventID: frame.eventID))
        {
            // Over the cap of unacknowledged messages: held, as many as the topic's queue allows
            // (then the oldest held is dropped and counted).
            stomp.subscriptions[i].held.append(frame)
            let limit = self.server?.configuration.policy(for: frame.topic).maxQueuedMessages ?? 1024
            if stomp.subscriptions[i].held.count > limit {
                stomp.subscriptions[i].held.removeFirst()
                self.dropped.add(1, ordering: .relaxed)
                self.server?.countDropped(topic: frame.topic)
            }
            return
        }
        self.stompQueue(stomp.subscriptions[i].kind.message(frame), topic: frame.topic, extras, direct: direct)
        stomp.lastSent = self.loop.now
    }

    /// Queues a MESSAGE frame: by reference, as the plain fan-out does, when nothing stands in
    /// the way (no TLS, compression, backlog or full socket); else copied into the output; else
    /// (not `direct`, and no room) into the backlog, up to the topic's `maxQueuedMessages`, past
    /// which the connection is closed (1008) as too slow.
    private func stompQueue(_ message: SharedFrame, topic: String, _ e: ConnectionExtras, direct: Bool) {
        let limit = self.options.maxBackpressure
        let backlogIsEmpty = e.backlogHead == e.backlog.count
        if !direct && (!backlogIsEmpty || self.outputBytes(e) >= limit) {
            let policy = self.server?.configuration.policy(for: topic) ?? TopicPolicy()
            guard self.backlog.count - self.backlogHead < policy.maxQueuedMessages else {
                return self.closeOnLoop(code: .policyViolation, reason: "STOMP subscriber too slow: \(policy.maxQueuedMessages) messages queued")
            }
            return self.pushBacklog(.wire(message))
        }
        if !self.writeInterest && !self.session.isCompressing && backlogIsEmpty && e.tlsLayers.isEmpty
            && self.sharedBytes + message.wire.count <= limit
        {
            self.sharedOut.append(message)
            self.sharedBytes += message.wire.count
        } else {
            self.writeWire(message)
        }
        self.loop.markDirty(self)
    }

    /// Sends held messages that an ACK or NACK made room for.
    private func stompRelease(_ id: String, _ stomp: StompConnection) {
        guard let i = stomp.index(of: id) else { return }
        while self.phase == .open, let first = stomp.subscriptions[i].held.first,
            stomp.session.delivered(subscription: id, eventID: first.eventID)
        {
            stomp.subscriptions[i].held.removeFirst()
            self.stompQueue(stomp.subscriptions[i].kind.message(first), topic: first.topic, self.more, direct: false)
            stomp.lastSent = self.loop.now
        }
    }

    /// Sends the session's frames (CONNECTED, RECEIPT, ERROR), one WebSocket message each.
    private func stompFlush(_ stomp: StompConnection) {
        guard !stomp.session.output.isEmpty else { return }
        let frames = stomp.session.output
        stomp.session.output = []
        for f in frames {
            _ = f.withUnsafeBytes { self.sendOnLoop(.text, $0, accepted: true) }
        }
        stomp.lastSent = self.loop.now
    }

    /// An ERROR frame, then the WebSocket close: 1009 for a frame over a size limit, else 1008.
    private func stompFail(_ error: StompError, _ stomp: StompConnection) {
        stomp.session.fail(error)
        self.stompFlush(stomp)
        let code: CloseCode = error.kind == .bodyTooLarge || error.kind == .lineTooLong ? .messageTooBig : .policyViolation
        self.closeOnLoop(code: code, reason: "STOMP: \(error.message)")
    }

    /// Heart-beats, from `nextTimerDue`: when one is due to be sent, or the client's silence ends
    /// the connection.
    func stompTimerDue(_ stomp: StompConnection) -> UInt64? {
        var due: UInt64? = nil
        if stomp.session.sendHeartBeatEvery > 0 { due = stomp.lastSent + UInt64(stomp.session.sendHeartBeatEvery) }
        // While reading is paused nothing is received: silence then says nothing of the client.
        let limit = self.readPaused ? 0 : stomp.silenceLimit
        if limit > 0 { due = min(due ?? .max, self.lastReceive + limit) }
        return due
    }

    /// From `checkTimers`: sends a heart-beat when due; returns true when it closed the connection.
    func stompTimers(now: UInt64, _ stomp: StompConnection) -> Bool {
        let limit = self.readPaused ? 0 : stomp.silenceLimit
        if limit > 0 && now - self.lastReceive >= limit {
            self.closeOnLoop(code: .goingAway, reason: "STOMP: no heart-beat for \(limit) ms")
            return true
        }
        let every = UInt64(stomp.session.sendHeartBeatEvery)
        if every > 0 && now - stomp.lastSent >= every {
            _ = StompServerSession.heartBeat.withUnsafeBytes { self.sendOnLoop(.text, $0, accepted: true) }
            stomp.lastSent = now
        }
        return false
    }
}
