import PetrelCore

/// A STOMP connection's state on its loop: the core's session, and per subscription the topic
/// it reads, where a resume left off, and messages held back by the cap on unacknowledged ones.
final class StompConnection {
    struct Subscription {
        let topic: String
        let destination: String
        /// A client ack mode: MESSAGE frames carry `ack`, and each one is counted.
        let acknowledges: Bool
        /// Messages up to this id were replayed when it resumed: the same ones still on their
        /// way to this loop are skipped.
        var floor: UInt64
        var held: [SharedFrame] = []
    }

    var session: StompServerSession
    var subscriptions: [String: Subscription] = [:]
    /// Subscription ids by topic, in the order they were made.
    var byTopic: [String: [String]] = [:]
    /// When something was last sent, for heart-beats.
    var lastSent: UInt64
    let configuration: StompConfiguration

    init(configuration: StompConfiguration, now: UInt64) {
        self.configuration = configuration
        self.session = StompServerSession(options: configuration.options)
        self.lastSent = now
    }

    /// How long the client may be silent once it agreed to send heart-beats (0: no check).
    var silenceLimit: UInt64 {
        let every = self.session.expectHeartBeatEvery
        guard every > 0 else { return 0 }
        return UInt64(max(every * self.configuration.heartBeatGrace, self.configuration.minimumSilence))
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
            guard let s = stomp.subscriptions.removeValue(forKey: subscription.id) else { return }
            stomp.byTopic[s.topic]?.removeAll { $0 == subscription.id }
            if stomp.byTopic[s.topic]?.isEmpty ?? false {
                stomp.byTopic.removeValue(forKey: s.topic)
                self.unsubscribeOnLoop(s.topic)
            }
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
        stomp.subscriptions[subscription.id] = StompConnection.Subscription(
            topic: topic, destination: subscription.destination, acknowledges: subscription.ackMode != .auto, floor: 0)
        stomp.byTopic[topic, default: []].append(subscription.id)
        for frame in replay { self.stompDeliver(frame, to: subscription.id, stomp) }
        stomp.subscriptions[subscription.id]?.floor = floor
        if !self.subscriptions.contains(where: { $0.topic == topic }) { self.subscribeOnLoop(topic) }
    }

    /// A topic message to every STOMP subscription of its topic on this connection.
    func stompWrite(_ frame: SharedFrame, _ stomp: StompConnection) {
        guard let ids = stomp.byTopic[frame.topic] else { return }
        for id in ids { self.stompDeliver(frame, to: id, stomp) }
    }

    private func stompDeliver(_ frame: SharedFrame, to id: String, _ stomp: StompConnection) {
        guard let s = stomp.subscriptions[id], frame.eventID > s.floor else { return }
        if s.acknowledges && (!s.held.isEmpty || !stomp.session.delivered(subscription: id, eventID: frame.eventID)) {
            // Over the cap of unacknowledged messages: held, as many as the topic's queue allows.
            stomp.subscriptions[id]!.held.append(frame)
            let limit = self.server?.configuration.policy(for: frame.topic).maxQueuedMessages ?? 1024
            if stomp.subscriptions[id]!.held.count > limit {
                stomp.subscriptions[id]!.held.removeFirst()
                self.dropped.add(1, ordering: .relaxed)
                self.server?.countDropped(topic: frame.topic)
            }
            return
        }
        let message = frame.stompMessage(subscription: id, destination: s.destination, ack: s.acknowledges, version: stomp.session.version)
        self.writeWire(message)
        stomp.lastSent = self.loop.now
    }

    /// Sends held messages that an ACK or NACK made room for.
    private func stompRelease(_ id: String, _ stomp: StompConnection) {
        while let s = stomp.subscriptions[id], let first = s.held.first, stomp.session.delivered(subscription: id, eventID: first.eventID) {
            stomp.subscriptions[id]!.held.removeFirst()
            let message = first.stompMessage(subscription: id, destination: s.destination, ack: true, version: stomp.session.version)
            self.writeWire(message)
            stomp.lastSent = self.loop.now
        }
        self.loop.markDirty(self)
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
        let limit = stomp.silenceLimit
        if limit > 0 { due = min(due ?? .max, self.lastReceive + limit) }
        return due
    }

    /// From `checkTimers`: sends a heart-beat when due; returns true when it closed the connection.
    func stompTimers(now: UInt64, _ stomp: StompConnection) -> Bool {
        let limit = stomp.silenceLimit
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
