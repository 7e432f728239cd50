/// How a subscription's messages are acknowledged (STOMP 1.2, SUBSCRIBE's `ack` header).
public enum StompAckMode: String, Hashable, Sendable, CaseIterable {
    /// Delivered is acknowledged.
    case auto
    /// An ACK acknowledges the message it names and every message before it on the subscription.
    case client
    /// An ACK acknowledges the message it names only.
    case clientIndividual = "client-individual"
}

/// What a STOMP server offers, and how much it accepts.
public struct StompServerOptions: Hashable, Sendable {
    public var limits = StompLimits()
    /// The heart-beat periods the server offers, in milliseconds (0: none): how often it can send
    /// one, and how often it wants one (CONNECTED's `heart-beat:send,receive`). Default 10,000 each.
    public var heartBeatSend = 10_000
    public var heartBeatReceive = 10_000
    /// Messages a subscription in a client ack mode may have delivered and not acknowledged; more
    /// wait until ACKs (or NACKs) make room. 0 (the default): no cap.
    public var maxUnacknowledged = 0
    /// Without a cap, how many unacknowledged messages a subscription remembers (default 8,192):
    /// past it the oldest counts as acknowledged, so that a client that never ACKs costs bounded
    /// memory (an ACK of it later settles nothing).
    public var maxRemembered = 8_192
    /// Frames one transaction may hold before its COMMIT (default 1,024).
    public var maxTransactionFrames = 1024
    /// Bytes (bodies and headers) all open transactions of a connection may hold (default 1 MiB).
    public var maxTransactionBytes = 1 << 20
    /// Subscriptions one connection may hold at once (default 64).
    public var maxSubscriptions = 64
    /// CONNECTED's `server` header.
    public var server = "Petrel"

    public init() {}
}

/// A client's CONNECT (or STOMP) frame, read.
public struct StompConnectRequest: Hashable, Sendable {
    public var frame: StompFrame
    /// The version agreed: the highest of `accept-version` the server speaks (1.0 without one).
    public var version: StompVersion
    public var login: String? { self.frame["login"] }
    public var passcode: String? { self.frame["passcode"] }
    public var host: String? { self.frame["host"] }
}

/// One subscription of a connection: its id, destination and ack mode, and where its
/// acknowledgements stand.
public struct StompSubscription: Hashable, Sendable {
    public let id: String
    public let destination: String
    public let ackMode: StompAckMode
    /// The SUBSCRIBE frame's headers (an application may read its own, e.g. a selector).
    public let headers: [StompHeader]
    /// The highest event id up to which everything delivered is acknowledged (0: none yet). In
    /// `auto` mode, the last delivered that the runtime recorded (it records none: 0).
    public internal(set) var acknowledged: UInt64 = 0
    /// Event ids delivered and not yet acknowledged, oldest first (client modes only).
    public var unacknowledged: ArraySlice<UInt64> { self.pending[self.pendingHead...] }

    var pending: [UInt64] = []
    var pendingHead = 0

    init(id: String, destination: String, ackMode: StompAckMode, headers: [StompHeader]) {
        self.id = id
        self.destination = destination
        self.ackMode = ackMode
        self.headers = headers
    }

    /// The SUBSCRIBE frame's resume point: `last-event-id` (as in Server-Sent Events), if present and a number.
    public var lastEventID: UInt64? { self.headers.first(where: { $0.name == "last-event-id" }).flatMap { UInt64($0.value) } }

    /// Where `eventID` is among the outstanding ids (kept in increasing order: a binary search).
    func outstandingIndex(of eventID: UInt64) -> Int? {
        var lo = self.pendingHead, hi = self.pending.count
        while lo < hi {
            let mid = (lo + hi) / 2
            if self.pending[mid] < eventID { lo = mid + 1 } else { hi = mid }
        }
        return lo < self.pending.count && self.pending[lo] == eventID ? lo : nil
    }

    mutating func compact() {
        if self.pendingHead > 64 && self.pendingHead * 2 > self.pending.count {
            self.pending.removeSubrange(0..<self.pendingHead)
            self.pendingHead = 0
        }
    }
}

/// The server side of one STOMP connection, without I/O: bytes in, events out for the
/// application (each answered before the next is asked for), frames out in `output`.
///
/// MESSAGE frames are not made here but by `StompServerSession.message`, so that one frame can
/// be shared by every subscriber with the same subscription id; the runtime reports each one it
/// sends in a client ack mode with `delivered`, which keeps the acknowledgement count.
public struct StompServerSession: Sendable {
    public enum State: Sendable, Hashable {
        case awaitingConnect, connected, closed
    }

    public enum Event: Hashable, Sendable {
        /// CONNECT or STOMP: answer with `accept` (or `fail`, e.g. for bad credentials).
        case connect(StompConnectRequest)
        /// SUBSCRIBE: answer with `subscribe` (or `fail`). `receipt` is sent by `subscribe`.
        case subscribe(StompSubscription, receipt: String?)
        /// UNSUBSCRIBE: the subscription is gone (and its receipt queued).
        case unsubscribe(StompSubscription)
        /// SEND (on its own, or at its transaction's COMMIT): answer with `complete` (or `fail`).
        case send(StompFrame, destination: String, receipt: String?)
        /// ACK or NACK: `eventIDs` are the messages it settles (several for a cumulative one), now
        /// acknowledged; their receipt is queued. An ACK or NACK of nothing outstanding settles nothing.
        case ack(subscription: String, eventIDs: [UInt64])
        case nack(subscription: String, eventIDs: [UInt64])
        /// DISCONNECT: its receipt is queued; close once it is written.
        case disconnect
        /// A protocol error: the ERROR frame is queued; close once it is written.
        case failed(StompError)
    }

    public let options: StompServerOptions
    public private(set) var state = State.awaitingConnect
    public private(set) var version = StompVersion.v1_2
    /// The agreed heart-beat periods in milliseconds (0: none): how often the server sends one,
    /// and how often the client said it would.
    public private(set) var sendHeartBeatEvery = 0
    public private(set) var expectHeartBeatEvery = 0
    public private(set) var subscriptions: [String: StompSubscription] = [:]
    /// Encoded frames to send, each as one WebSocket message.
    public var output: [[UInt8]] = []

    private var parser: StompParser
    private var transactions: [String: [StompFrame]] = [:]
    private var transactionBytes = 0
    private var committed: [StompFrame] = []
    /// A COMMIT's receipt, sent once its frames have been handled.
    private var commitReceipt: String?

    public init(options: StompServerOptions = StompServerOptions()) {
        self.options = options
        self.parser = StompParser(limits: options.limits)
    }

    /// Heart-beat EOLs read so far.
    public var heartbeatsReceived: Int { self.parser.heartbeats }

    public mutating func receive(_ bytes: UnsafeRawBufferPointer) {
        guard self.state != .closed else { return }
        self.parser.append(bytes)
    }

    /// The next thing the application must see, or nil when more bytes are needed.
    public mutating func nextEvent() -> Event? {
        guard self.state != .closed else { return nil }
        do {
            while true {
                // A COMMIT's frames come before anything read after it, then its receipt.
                if !self.committed.isEmpty {
                    if let event = try self.handle(self.committed.removeFirst(), inTransaction: true) { return event }
                    continue
                }
                if let r = self.commitReceipt {
                    self.commitReceipt = nil
                    self.complete(receipt: r)
                }
                guard let frame = try self.parser.next() else { return nil }
                if let event = try self.handle(frame, inTransaction: false) { return event }
            }
        } catch {
            return .failed(self.fail(error))
        }
    }

    // MARK: Answers

    /// Agrees to a CONNECT: queues CONNECTED (version, heart-beat, server, `session` if given).
    public mutating func accept(_ request: StompConnectRequest, session: String? = nil) {
        guard self.state == .awaitingConnect else { return }
        self.state = .connected
        self.version = request.version
        self.parser.version = request.version
        var headers = [StompHeader("version", request.version.description)]
        let (cx, cy) = StompServerSession.heartBeat(request.frame["heart-beat"]) ?? (0, 0)
        let sx = self.options.heartBeatSend, sy = self.options.heartBeatReceive
        self.sendHeartBeatEvery = sx > 0 && cy > 0 ? max(sx, cy) : 0
        self.expectHeartBeatEvery = sy > 0 && cx > 0 ? max(sy, cx) : 0
        headers.append(StompHeader("heart-beat", "\(sx),\(sy)"))
        headers.append(StompHeader("server", self.options.server))
        if let session { headers.append(StompHeader("session", session)) }
        self.output.append(StompFrame(.connected, headers).encoded(version: self.version))
    }

    /// Adds the subscription (after the application allowed it) and queues its receipt.
    public mutating func subscribe(_ subscription: StompSubscription, receipt: String?) {
        guard self.state == .connected else { return }
        self.subscriptions[subscription.id] = subscription
        self.complete(receipt: receipt)
    }

    /// Queues the RECEIPT of a frame the application has handled (nothing when `receipt` is nil).
    public mutating func complete(receipt: String?) {
        guard let receipt, self.state == .connected else { return }
        self.output.append(StompFrame(.receipt, [StompHeader("receipt-id", receipt)]).encoded(version: self.version))
    }

    /// Ends the connection with an ERROR frame (a refusal by the application, or a protocol error).
    @discardableResult
    public mutating func fail(_ error: StompError) -> StompError {
        guard self.state != .closed else { return error }
        self.state = .closed
        self.output.append(error.errorFrame.encoded(version: self.version))
        return error
    }

    /// A MESSAGE for subscription `subscription` was sent (client ack modes). Returns false, and
    /// records nothing, when the subscription is at its cap of unacknowledged messages: the caller
    /// keeps the message until an ACK or NACK makes room (`hasRoom`).
    public mutating func delivered(subscription: String, eventID: UInt64) -> Bool {
        // In place: a copy of the subscription would copy its list of ids on every append.
        guard let i = self.subscriptions.index(forKey: subscription) else { return false }
        let cap = self.options.maxUnacknowledged
        return Self.record(&self.subscriptions.values[i], eventID, cap: cap, remembered: self.options.maxRemembered)
    }

    private static func record(_ s: inout StompSubscription, _ eventID: UInt64, cap: Int, remembered: Int) -> Bool {
        if s.ackMode == .auto {
            s.acknowledged = eventID
            return true
        }
        let outstanding = s.pending.count - s.pendingHead
        if cap > 0 && outstanding >= cap { return false }
        if cap == 0 && outstanding >= max(1, remembered) {
            s.acknowledged = max(s.acknowledged, s.pending[s.pendingHead])
            s.pendingHead += 1
            s.compact()
        }
        s.pending.append(eventID)
        return true
    }

    /// Whether a subscription may be sent another message now.
    public func hasRoom(subscription: String) -> Bool {
        guard let s = self.subscriptions[subscription] else { return false }
        return s.ackMode == .auto || self.options.maxUnacknowledged == 0
            || s.pending.count - s.pendingHead < self.options.maxUnacknowledged
    }

    /// The heart-beat a server sends: one EOL.
    public static let heartBeat: [UInt8] = [0x0A]

    // MARK: MESSAGE frames

    /// The `ack` header of a MESSAGE in a client ack mode: the event id, `@`, the subscription id
    /// (unique on the connection, and the same for every subscriber with that subscription id).
    public static func ackID(eventID: UInt64, subscription: String) -> String { "\(eventID)@\(subscription)" }

    /// A MESSAGE frame for a topic message, to every subscriber with subscription id
    /// `subscription` and a client ack mode if `ack`: `subscription`, `message-id` (the event
    /// id), `destination`, `ack` when asked, `content-length`, the body.
    public static func message(
        destination: String, subscription: String, eventID: UInt64, ack: Bool, body: UnsafeRawBufferPointer,
        version: StompVersion
    ) -> [UInt8] {
        var headers = [
            StompHeader("subscription", subscription), StompHeader("message-id", String(eventID)),
            StompHeader("destination", destination),
        ]
        if ack { headers.append(StompHeader("ack", StompServerSession.ackID(eventID: eventID, subscription: subscription))) }
        headers.append(StompHeader("content-length", String(body.count)))
        var out: [UInt8] = []
        out.reserveCapacity(96 + destination.utf8.count + 2 * subscription.utf8.count + body.count)
        StompFrame(.message, headers).encode(into: &out, version: version)
        out.removeLast()  // the NUL: the body goes before it
        out.append(contentsOf: body)
        out.append(0)
        return out
    }

    // MARK: Reading frames

    /// The longest heart-beat period either side may ask for: one hour.
    public static let maxHeartBeat = 3_600_000

    /// `heart-beat:cx,cy`, each 0 to `maxHeartBeat` milliseconds; nil when malformed.
    private static func heartBeat(_ value: String?) -> (Int, Int)? {
        guard let value else { return nil }
        let parts = value.split(separator: ",", omittingEmptySubsequences: false)
        guard parts.count == 2, let a = Int(parts[0].trimmingSpaces), let b = Int(parts[1].trimmingSpaces),
            (0...maxHeartBeat).contains(a), (0...maxHeartBeat).contains(b)
        else { return nil }
        return (a, b)
    }

    private static func size(of frame: StompFrame) -> Int {
        frame.body.count + frame.headers.reduce(0) { $0 + $1.name.utf8.count + $1.value.utf8.count + 2 }
    }

    private func required(_ frame: StompFrame, _ name: String) throws(StompError) -> String {
        guard let v = frame[name] else {
            throw StompError(.protocolViolation, "\(frame.command.rawValue) needs a \(name) header", receiptID: frame["receipt"])
        }
        return v
    }

    private mutating func handle(_ frame: StompFrame, inTransaction: Bool) throws(StompError) -> Event? {
        let receipt = frame["receipt"]
        func violation(_ message: String) -> StompError { StompError(.protocolViolation, message, receiptID: receipt) }
        if frame.command.isServerCommand { throw violation("\(frame.command.rawValue) is a server frame") }
        if !frame.body.isEmpty && frame.command != .send { throw violation("\(frame.command.rawValue) must not have a body") }
        guard self.state == .connected else {
            guard frame.command == .connect || frame.command == .stomp else { throw violation("the first frame must be CONNECT") }
            let offered = frame["accept-version"].map { $0.split(separator: ",").compactMap { StompVersion($0.trimmingSpaces) } } ?? [.v1_0]
            guard let version = offered.max() else {
                var headers = [StompHeader("version", "1.0,1.1,1.2"), StompHeader("message", "no common version: this server speaks 1.0, 1.1 and 1.2")]
                if let receipt { headers.append(StompHeader("receipt-id", receipt)) }
                self.output.append(StompFrame(.error, headers).encoded(version: self.version))  // escaped as every ERROR before CONNECTED is
                self.state = .closed
                throw violation("no common version: this server speaks 1.0, 1.1 and 1.2")
            }
            // An ERROR in answer (a refused login) is written the way this client reads.
            self.version = version
            self.parser.version = version
            if let hb = frame["heart-beat"], StompServerSession.heartBeat(hb) == nil { throw violation("a bad heart-beat header (0 to 3600000 ms each)") }
            return .connect(StompConnectRequest(frame: frame, version: version))
        }
        // A frame of an open transaction waits for its COMMIT.
        if !inTransaction, let tx = frame["transaction"], [.send, .ack, .nack].contains(frame.command) {
            guard self.transactions[tx] != nil else { throw violation("transaction \(tx) was not begun") }
            guard self.transactions[tx]!.count < self.options.maxTransactionFrames else {
                throw violation("transaction \(tx) holds over \(self.options.maxTransactionFrames) frames")
            }
            let size = Self.size(of: frame)
            guard self.transactionBytes + size <= self.options.maxTransactionBytes else {
                throw violation("transactions hold over \(self.options.maxTransactionBytes) bytes")
            }
            self.transactionBytes += size
            // Its receipt is sent now; the frame is handled at COMMIT without one.
            var held = frame
            held.headers.removeAll { $0.name == "receipt" }
            self.transactions[tx]!.append(held)
            self.complete(receipt: receipt)
            return nil
        }
        switch frame.command {
        case .connect, .stomp:
            throw violation("already connected")
        case .send:
            return .send(frame, destination: try self.required(frame, "destination"), receipt: receipt)
        case .subscribe:
            let destination = try self.required(frame, "destination")
            let id = self.version == .v1_0 ? frame["id"] ?? destination : try self.required(frame, "id")
            guard self.subscriptions[id] == nil else { throw violation("subscription \(id) exists") }
            guard self.subscriptions.count < self.options.maxSubscriptions else {
                throw violation("over \(self.options.maxSubscriptions) subscriptions")
            }
            guard let mode = StompAckMode(rawValue: frame["ack"] ?? "auto"), mode != .clientIndividual || self.version > .v1_0 else {
                throw violation("a bad ack mode")
            }
            return .subscribe(StompSubscription(id: id, destination: destination, ackMode: mode, headers: frame.headers), receipt: receipt)
        case .unsubscribe:
            let id = self.version == .v1_0 ? frame["id"] ?? frame["destination"] : frame["id"]
            guard let id else { throw violation("UNSUBSCRIBE needs an id header") }
            guard let s = self.subscriptions.removeValue(forKey: id) else { throw violation("no subscription \(id)") }
            self.complete(receipt: receipt)
            return .unsubscribe(s)
        case .ack, .nack:
            if frame.command == .nack && self.version == .v1_0 { throw violation("NACK is not in STOMP 1.0") }
            let (subscription, ids) = try self.settle(frame)
            self.complete(receipt: receipt)
            return frame.command == .ack ? .ack(subscription: subscription, eventIDs: ids) : .nack(subscription: subscription, eventIDs: ids)
        case .begin:
            let tx = try self.required(frame, "transaction")
            guard self.transactions[tx] == nil else { throw violation("transaction \(tx) is already open") }
            guard self.transactions.count < 64 else { throw violation("over 64 open transactions") }
            self.transactions[tx] = []
            self.complete(receipt: receipt)
            return nil
        case .commit, .abort:
            let tx = try self.required(frame, "transaction")
            guard let held = self.transactions.removeValue(forKey: tx) else { throw violation("transaction \(tx) is not open") }
            self.transactionBytes -= held.reduce(0) { $0 + Self.size(of: $1) }
            if frame.command == .commit && !held.isEmpty {
                self.committed.append(contentsOf: held)
                self.commitReceipt = receipt
            } else {
                self.complete(receipt: receipt)
            }
            return nil
        case .disconnect:
            self.complete(receipt: receipt)
            self.state = .closed
            return .disconnect
        case .connected, .message, .receipt, .error:
            throw violation("\(frame.command.rawValue) is a server frame")
        }
    }

    /// Which messages an ACK or NACK settles: by `id` (1.2: the MESSAGE's `ack`), by
    /// `subscription` and `message-id` (1.1), or by `message-id` on any subscription (1.0).
    private mutating func settle(_ frame: StompFrame) throws(StompError) -> (String, [UInt64]) {
        let receipt = frame["receipt"]
        var subscriptionID: String?
        var eventID: UInt64?
        if self.version == .v1_2 {
            let id = try self.required(frame, "id")
            if let at = id.firstIndex(of: "@") {
                eventID = UInt64(id[..<at])
                subscriptionID = String(id[id.index(after: at)...])
            }
        } else {
            eventID = UInt64(try self.required(frame, "message-id"))
            if self.version == .v1_1 {
                subscriptionID = try self.required(frame, "subscription")
            } else if let id = eventID {
                // 1.0 names no subscription: the first (by id) with that message outstanding.
                subscriptionID = self.subscriptions.filter { $0.value.outstandingIndex(of: id) != nil }.keys.min()
            }
        }
        guard let eventID else { throw StompError(.protocolViolation, "\(frame.command.rawValue) of an unknown message", receiptID: receipt) }
        guard let subscriptionID, let index = self.subscriptions.index(forKey: subscriptionID) else {
            if self.version == .v1_0 { return ("", []) }  // nothing outstanding has that id
            throw StompError(.protocolViolation, "\(frame.command.rawValue) for no subscription", receiptID: receipt)
        }
        guard self.subscriptions.values[index].ackMode != .auto else {
            throw StompError(.protocolViolation, "subscription \(subscriptionID) acknowledges automatically", receiptID: receipt)
        }
        return (subscriptionID, Self.settle(&self.subscriptions.values[index], eventID))
    }

    /// Settles `eventID` (and, in client mode, every earlier one) on `s`, in place.
    private static func settle(_ s: inout StompSubscription, _ eventID: UInt64) -> [UInt64] {
        var settled: [UInt64] = []
        if s.ackMode == .client {
            while s.pendingHead < s.pending.count && s.pending[s.pendingHead] <= eventID {
                settled.append(s.pending[s.pendingHead])
                s.pendingHead += 1
            }
        } else if let i = s.outstandingIndex(of: eventID) {
            settled.append(eventID)
            s.pending.remove(at: i)
        }
        if let last = settled.last {
            s.acknowledged = s.pendingHead < s.pending.count ? max(s.acknowledged, s.pending[s.pendingHead] - 1) : max(s.acknowledged, last)
        }
        s.compact()
        return settled
    }
}

extension Substring {
    var trimmingSpaces: Substring {
        var s = self
        while s.first == " " { s = s.dropFirst() }
        while s.last == " " { s = s.dropLast() }
        return s
    }
}
