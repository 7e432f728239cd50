import CLinux
import Glibc
import PetrelCore
import Synchronization

/// A connection's id: never reused in the process. The low 8 bits name its loop.
public struct ConnectionID: Hashable, Sendable, CustomStringConvertible {
    public let rawValue: UInt64

    public init(rawValue: UInt64) { self.rawValue = rawValue }

    var loopIndex: Int { Int(self.rawValue & 0xFF) }

    private static let counter = Atomic<UInt64>(1)

    static func next(loop: Int) -> ConnectionID {
        let n = counter.add(1, ordering: .relaxed).oldValue
        return ConnectionID(rawValue: n << 8 | UInt64(loop & 0xFF))
    }

    public var description: String { String(self.rawValue) }
}

/// The outcome of a send.
public enum SendStatus: Sendable, Equatable {
    /// Queued.
    case ok
    /// Not queued: the connection's outgoing buffer is over `maxBackpressure`. `onDrain` fires
    /// when it has been written out.
    case backpressure
    /// Not queued: the connection is closing or closed.
    case closed
}

/// The request a server sees before it upgrades, for authentication and routing.
public struct UpgradeRequest: Sendable {
    public let request: HandshakeRequest
    public let peer: SocketAddress
    /// The id the connection will have (and has in `onOpen`) if it is accepted.
    public let connectionID: ConnectionID
}

/// An accept hook's answer.
public enum UpgradeDecision: Sendable {
    /// Upgrade, optionally choosing the subprotocol (else the configured preference decides) and
    /// attaching user data to the connection.
    case accept(subprotocol: String? = nil, userData: UInt = 0, headers: [HTTPField] = [])
    /// Refuse with an HTTP status and a text body.
    case reject(status: Int, body: String)
}

/// Callbacks. Each runs on the connection's loop thread, never concurrently for one connection.
/// Payload pointers are borrowed until the callback returns. Set them before starting.
public final class Handlers: @unchecked Sendable {
    public var onOpen: ((Connection) -> Void)?
    public var onMessage: ((Connection, MessageKind, UnsafeRawBufferPointer) -> Void)?
    /// The connection is gone: the code from the peer's close frame, or the code we failed it
    /// with, or 1006 when the transport ended without a closing handshake; and the reason.
    public var onClose: ((Connection, CloseCode, String) -> Void)?
    /// The outgoing buffer, which was over its limit, has been written out.
    public var onDrain: ((Connection) -> Void)?
    public var onPong: ((Connection, UnsafeRawBufferPointer) -> Void)?
    /// Server: decides, before the upgrade, whether a request may connect.
    public var onUpgrade: ((UpgradeRequest) -> UpgradeDecision)?
    /// Server: answers requests that are not WebSocket upgrades. Returning nil lets the server
    /// go on: an event-stream path, then static files, then 426 (404 with a static root).
    public var onHTTPRequest: ((HTTPRequest, Connection) -> HTTPAnswer?)?
    /// Client: the connection or its handshake failed.
    public var onConnectFailed: ((Connection, RuntimeError) -> Void)?

    public init() {}

    /// No callbacks: what a closed connection keeps.
    static let none = Handlers()
}

enum Phase {
    case connecting, handshaking, open, draining, closed
}

enum QueuedFrame {
    case shared(SharedFrame)
    case direct(MessageKind, [UInt8])
    case raw([UInt8])

    var byteCount: Int {
        switch self {
        case .shared(let f): return f.encoded.count
        case .direct(_, let b), .raw(let b): return b.count
        }
    }
}

/// One connection, pinned to one loop thread for life. Its methods are safe from any thread:
/// called off the loop, they are queued to it.
public final class Connection: @unchecked Sendable {
    public let id: ConnectionID
    public let role: Role
    public private(set) var peerAddress: SocketAddress
    /// Strong, not `unowned`: an unowned reference costs a checked retain on every use (it was a
    /// fifth of a fan-out's time). The loop drops its connections when they close or it stops,
    /// which ends the cycle.
    let loop: EventLoop
    var fd: Int32
    /// The callbacks; replaced by an empty set once the connection is gone, so that closures
    /// capturing an object that holds this connection do not keep both alive.
    private(set) var handlers: Handlers
    /// The options, shared by every connection of a server (not copied into each one).
    let sharedOptions: SharedOptions
    var options: ConnectionOptions { _read { yield self.sharedOptions.value } }
    unowned(unsafe) let server: Server?

    var phase: Phase
    /// The HTTP head being read (the handshake only): boxed, 8 bytes for the rest of the
    /// connection's life instead of 32.
    private var headBox: HeadBox?
    var head: HTTPHeadReader? {
        get { self.headBox?.reader }
        set {
            if let reader = newValue {
                if let box = self.headBox { box.reader = reader } else { self.headBox = HeadBox(reader) }
            } else {
                self.headBox = nil
            }
        }
    }
    var session: Session
    /// The upgrade request (server side), for the application's routing and authentication.
    /// An open connection keeps only the request's bytes; the parsed form exists while the
    /// handshake and `onOpen` run, and is parsed again on each later access.
    public var request: HandshakeRequest? {
        // The parsed form is the loop thread's (it drops it after onOpen); others parse the
        // bytes, which are written before onOpen runs or any event about it is queued.
        if self.loop.isCurrentThread, let (id, r) = self.loop.openingRequest, id == self.id { return r }
        guard let raw = self.requestBytes, case .success(let head) = HTTPRequestHead.parse(raw, maxFieldCount: Int.max),
            case .success(let r) = HandshakeRequest.validate(head)
        else { return nil }
        return r
    }
    private var requestBytes: [UInt8]?
    /// Whatever the application attached (the accept hook may set it).
    public var userData: UInt = 0
    /// True for a Server-Sent Events stream (an event-stream path, or `HTTPAnswer.eventStream`).
    public private(set) var isStream = false
    /// Topics this connection is subscribed to.
    var subscriptions: [String] = []
    /// Topic frames queued after the session's bytes, written straight from the shared frames
    /// with one writev per flush: fan-out copies nothing per subscriber. `sharedHead` bytes of
    /// the first are already written; `sharedBytes` are still to go. Any other write first
    /// moves these into the session's buffer (`spillShared`), so that order is kept.
    var sharedOut: [SharedFrame] = []
    var sharedHead = 0
    var sharedBytes = 0
    /// Free the session's buffers once the handshake response is written.
    private var releaseBuffersAfterFlush = false
    /// What only some connections need (clients, TLS, proxies, plain HTTP, resumed topics),
    /// out of line: an idle server-side WebSocket stays small. Made on first write.
    private var extras: ConnectionExtras?
    private var more: ConnectionExtras {
        if let e = self.extras { return e }
        let e = ConnectionExtras()
        self.extras = e
        return e
    }

    var deadline: UInt64 = 0
    var lastReceive: UInt64 = 0
    var lastPing: UInt64 = 0
    var pingQueued = false
    var pingSentAt: UInt64 = 0
    var awaitingPong = false
    var isDirty = false
    var writeInterest = false
    var readPaused = false
    var overLimit = false
    var closeAfterFlush = false
    var wantsDrain = false
    var openNotified = false
    var closeCode: CloseCode = .abnormalClosure
    /// We sent the first close frame: `onClose` reports our code and reason, not the peer's echo.
    var closedFirst = false

    let bufferedBytes = Atomic<Int>(0)
    let inFlight = Atomic<Int>(0)
    let closedFlag = Atomic<Bool>(false)
    let compressing = Atomic<Bool>(false)
    let isStreamFlag = Atomic<Bool>(false)
    let rtt = Atomic<Int>(-1)
    let dropped = Atomic<Int>(0)
    let coalesced = Atomic<Int>(0)


    // TLS.
    var tls: TLSSession? { self.tlsLayers.last }
    /// Server: this port speaks TLS. Client: the URL was wss://.
    var wantsTLS = false
    /// Plain HTTP arrived on a TLS port: the 400 is being written; input is ignored.
    var refusedPlaintext = false

    init(serverSideOf server: Server, loop: EventLoop, fd: Int32, peer: SocketAddress) {
        self.id = .next(loop: loop.index)
        self.role = .server
        self.peerAddress = peer
        self.loop = loop
        self.fd = fd
        self.handlers = server.handlers
        self.sharedOptions = server.sharedOptions
        self.server = server
        self.phase = .handshaking
        self.headBox = HeadBox(HTTPHeadReader(limit: server.configuration.options.maxHeaderBytes))
        self.session = Session(role: .server)
        self.deadline = loop.now + UInt64(self.options.handshakeTimeout)
        self.lastReceive = loop.now
        self.overLimit = !server.connectionOpened()
        self.wantsTLS = server.tlsContexts != nil
    }

    init(clientOn loop: EventLoop, fd: Int32, peer: SocketAddress, configuration: ClientConfiguration, handlers: Handlers, handshake: ClientHandshake) {
        self.id = .next(loop: loop.index)
        self.role = .client
        self.peerAddress = peer
        self.loop = loop
        self.fd = fd
        self.handlers = handlers
        self.sharedOptions = SharedOptions(configuration.options)
        self.server = nil
        self.phase = .connecting
        self.session = Session(role: .client)
        self.clientConfiguration = configuration
        self.clientHandshake = handshake
    }

    // MARK: Public API (any thread)

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
        if eventID == 0 || !self.isStreamFlag.load(ordering: .acquiring) { return self.send(text: text) }
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

    /// Sends a ping. Safe from any thread.
    public func ping(_ payload: [UInt8] = []) {
        self.loop.execute(.ping(self.id, payload))
    }

    /// Adds the connection to `topic`'s subscribers. Safe from any thread.
    public func subscribe(_ topic: String) { self.loop.execute(.subscribe(self.id, topic)) }

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
        let found: ([SharedFrame], UInt64)? = server.topics.resume(topic: topic, after: eventID) { frames, last in
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

    private func wantsDrainFlag() {
        self.loop.execute(.call { [self] in self.wantsDrain = true })
    }

    // MARK: Loop-thread operations

    func sendOnLoop(_ kind: MessageKind, _ payload: UnsafeRawBufferPointer) -> SendStatus {
        if self.isStream { return ServerSentEvents.event(id: 0, payload: payload).withUnsafeBytes { self.sendRawOnLoop($0) } }
        guard self.phase == .open, self.session.state == .open else { return .closed }
        if self.queuedBytes >= self.options.maxBackpressure {
            self.wantsDrain = true
            if self.options.closeOnBackpressure { self.closeOnLoop(code: .policyViolation, reason: self.backpressureReason) }
            return .backpressure
        }
        if self.backlogHead < self.backlog.count {
            // Keep order behind queued topic messages.
            self.pushBacklog(.direct(kind, [UInt8](payload)))
        } else {
            self.spillShared()
            do { try self.session.send(kind, payload) } catch { return .closed }
        }
        self.bufferedBytes.store(self.queuedBytes, ordering: .relaxed)
        self.loop.markDirty(self)
        return .ok
    }

    /// Writes bytes that are already encoded (an SSE event, a shared frame). Loop thread only.
    func sendRawOnLoop(_ bytes: UnsafeRawBufferPointer) -> SendStatus {
        guard self.phase == .open, self.session.state == .open, !self.closeAfterFlush else { return .closed }
        if self.queuedBytes >= self.options.maxBackpressure {
            self.wantsDrain = true
            return .backpressure
        }
        if self.backlogHead < self.backlog.count {
            self.pushBacklog(.raw([UInt8](bytes)))
        } else {
            self.spillShared()
            do { try self.session.queueEncoded(bytes) } catch { return .closed }
        }
        self.loop.markDirty(self)
        return .ok
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
            _ = bytes.withUnsafeBytes { self.sendRawOnLoop($0) }
        })
        return .ok
    }

    func pingOnLoop(_ payload: UnsafeRawBufferPointer) -> SendStatus {
        guard self.phase == .open, !self.isStream else { return .closed }
        do { try self.session.sendPing(payload) } catch { return .closed }
        self.pingQueued = true
        self.lastPing = self.loop.now
        self.loop.markDirty(self)
        return .ok
    }

    func closeOnLoop(code: CloseCode, reason: String) {
        switch self.phase {
        case .open where !self.isStream:
            guard self.session.state == .open else { return }
            self.spillShared()
            self.moveBacklogIntoOutput(all: true)
            var r = reason
            while r.utf8.count > 123 { r.removeLast() }
            do { try self.session.close(code: code, reason: r) } catch { return }
            self.closeCode = code
            self.closeReason = r
            self.closedFirst = true
            self.deadline = self.loop.now + UInt64(self.options.closeTimeout)
            self.loop.markDirty(self)
        case .open:
            self.closeCode = code
            self.closeReason = reason
            self.closeAfterFlush = true
            // A stream whose client does not read is closed anyway after closeTimeout.
            self.deadline = self.loop.now + UInt64(self.options.closeTimeout)
            self.loop.markDirty(self)
        case .connecting, .handshaking:
            self.closeTransport(reason: code, message: reason)
        case .draining, .closed:
            break
        }
    }

    func subscribeOnLoop(_ topic: String, replay: [SharedFrame] = [], floor: UInt64 = 0) {
        guard self.phase == .open, !self.subscriptions.contains(topic) else { return }
        self.subscriptions.append(topic)
        self.loop.topics[topic, default: []].append(self)
        self.extras?.resumeFloors.removeValue(forKey: topic)
        for frame in replay { self.deliver(frame) }
        if floor > 0 { self.resumeFloors[topic] = floor }
    }

    func unsubscribeOnLoop(_ topic: String) {
        self.extras?.resumeFloors.removeValue(forKey: topic)
        guard let i = self.subscriptions.firstIndex(of: topic) else { return }
        self.subscriptions.remove(at: i)
        self.loop.topics[topic]?.removeAll { $0 === self }
        if self.loop.topics[topic]?.isEmpty == true { self.loop.topics.removeValue(forKey: topic) }
    }

    /// Output past the backlog: the session's bytes and, with TLS, what is encrypted but unsent.
    var outputBytes: Int {
        guard let e = self.extras else { return self.session.pendingOutputCount + self.sharedBytes }
        var n = self.session.pendingOutputCount + self.sharedBytes + (e.tlsOut.count - e.tlsOutHead) + e.proxyOut.count
        for p in e.layerPending { n += p.count }
        return n
    }

    var queuedBytes: Int { self.outputBytes + self.backlogBytes }

    var backlogIsEmpty: Bool {
        guard let e = self.extras else { return true }
        return e.backlogHead == e.backlog.count
    }

    // MARK: Reading

    func readable() {
        switch self.phase {
        case .closed:
            return
        case .connecting:
            return  // the loop hands connect completion to writable()
        default:
            break
        }
        if self.readPaused { return }
        let buffer = self.loop.readBuffer
        while true {
            switch Sys.read(self.fd, buffer) {
            case .wouldBlock:
                return
            case .eof:
                self.endOfStream()
                return
            case .failed(let e):
                self.closeTransport(reason: .abnormalClosure, message: "read failed: \(String(cString: strerror(e)))")
                return
            case .done(let n):
                self.lastReceive = self.loop.now
                if self.wantsTLS || self.proxy != nil || self.refusedPlaintext {
                    self.receiveCiphertext(UnsafeRawBufferPointer(rebasing: buffer[0..<n]))
                } else {
                    self.consume(UnsafeMutableRawBufferPointer(rebasing: buffer[0..<n]))
                }
                if self.phase == .closed || self.readPaused || n < buffer.count { return }
            }
        }
    }

    private func consume(_ bytes: UnsafeMutableRawBufferPointer) {
        switch self.phase {
        case .handshaking:
            if self.role == .server { self.serverHandshake(bytes) } else { self.clientHandshakeBytes(bytes) }
        case .open:
            if self.isStream { return }  // an SSE client has nothing more to say
            self.parseFrames(bytes)
        default:
            break  // draining: discard until the peer closes
        }
    }

    private func parseFrames(_ bytes: UnsafeMutableRawBufferPointer) {
        var offset = 0
        while offset < bytes.count {
            if self.queuedBytes >= self.options.maxBackpressure && self.session.wantsRead {
                // The peer is not reading what we send: stop reading what it sends (TCP pushes
                // back), keeping the unparsed rest, until our buffer drains.
                self.stash.append(contentsOf: UnsafeRawBufferPointer(rebasing: bytes[offset...]))
                self.pauseReading()
                break
            }
            // Parsing may queue a close frame: it must follow every topic frame already queued.
            if !self.sharedOut.isEmpty { self.spillShared() }
            let (used, event) = self.session.parse(UnsafeMutableRawBufferPointer(rebasing: bytes[offset...]))
            offset += used
            if let event { self.dispatch(event) }
            if self.phase != .open { return }
        }
        if self.session.pendingOutputCount > 0 || self.session.state != .open { self.loop.markDirty(self) }
    }

    private func dispatch(_ event: Event) {
        switch event {
        case .text(let p):
            self.handlers.onMessage?(self, .text, p)
        case .binary(let p):
            self.handlers.onMessage?(self, .binary, p)
        case .ping:
            self.loop.markDirty(self)
        case .pong(let p):
            if self.awaitingPong {
                self.awaitingPong = false
                self.rtt.store(Int(self.loop.now - self.pingSentAt), ordering: .relaxed)
            }
            self.handlers.onPong?(self, p)
        case .close(let code, let reason):
            if !self.closedFirst {
                self.closeCode = code ?? .noStatusReceived
                self.closeReason = String(decoding: reason, as: UTF8.self)
            }
            self.moveBacklogIntoOutput(all: false)
            self.deadline = self.loop.now + UInt64(self.options.closeTimeout)
        case .failed(let error):
            self.closeCode = error.closeCode
            self.closeReason = error.description
            self.deadline = self.loop.now + UInt64(self.options.closeTimeout)
        }
    }

    private func pauseReading() {
        guard !self.readPaused else { return }
        self.readPaused = true
        self.updateInterest()
    }

    private func resumeReading() {
        guard self.readPaused else { return }
        self.readPaused = false
        self.updateInterest()
        if !self.stash.isEmpty {
            var pending = self.stash
            self.stash = []
            pending.withUnsafeMutableBytes { self.parseFrames($0) }
        }
    }

    private func endOfStream() {
        switch self.phase {
        case .open where !self.isStream:
            if let error = self.session.receiveEndOfStream() {
                self.closeCode = error.closeCode
                self.closeReason = error.description
            }
            self.closeTransport(reason: self.closeCode, message: self.closeReason)
        case .handshaking where self.role == .client:
            self.failConnect(RuntimeError(.handshake, "server closed the connection during the handshake"))
        default:
            self.closeTransport(reason: self.closeCode, message: self.closeReason)
        }
    }

    // MARK: Server handshake

    private func serverHandshake(_ bytes: UnsafeMutableRawBufferPointer) {
        if self.pendingRequest != nil { return self.requestBody(UnsafeRawBufferPointer(bytes)) }
        guard var reader = self.head else { return }
        let progress = reader.feed(UnsafeRawBufferPointer(bytes))
        self.head = reader
        switch progress {
        case .needMore:
            return
        case .tooLarge:
            self.reject(HandshakeError.headersTooLarge(limit: self.options.maxHeaderBytes).response)
        case .complete(let consumed):
            self.head = nil
            switch HTTPRequestHead.parse(reader.bytes, maxFieldCount: self.options.maxHeaderCount) {
            case .failure(let e):
                self.reject(e.response)
            case .success(let head):
                self.route(head, raw: reader.bytes, leftover: UnsafeMutableRawBufferPointer(rebasing: bytes[consumed...]))
            }
        }
    }

    private func route(_ head: HTTPRequestHead, raw: [UInt8], leftover: UnsafeMutableRawBufferPointer) {
        guard let server = self.server else { return }
        if self.overLimit { return self.reject(HandshakeError.serviceUnavailable.response) }
        guard HandshakeRequest.isUpgrade(head) else { return self.plainRequest(head, leftover: UnsafeRawBufferPointer(leftover)) }
        let request: HandshakeRequest
        switch HandshakeRequest.validate(head, allowedOrigins: server.configuration.allowedOrigins) {
        case .failure(let e): return self.reject(e.response)
        case .success(let r): request = r
        }
        var chosen: String? = nil
        var extraHeaders: [HTTPField] = []
        if let hook = self.handlers.onUpgrade {
            switch hook(UpgradeRequest(request: request, peer: self.peerAddress, connectionID: self.id)) {
            case .reject(let status, let body):
                return self.reject(HTTPResponse.error(status: status, body: body))
            case .accept(let subprotocol, let userData, let headers):
                if let s = subprotocol, !request.subprotocols.contains(s) {
                    return self.reject(HTTPResponse.error(status: 500, body: "accept hook chose a subprotocol the client did not offer"))
                }
                chosen = subprotocol
                self.userData = userData
                extraHeaders = headers
            }
        }
        let subprotocol = chosen ?? request.selectSubprotocol(from: server.configuration.subprotocols)
        let negotiated = server.configuration.compression.flatMap {
            PerMessageDeflate.negotiate(offers: request.extensions, options: $0)
        }
        let response = request.acceptResponse(
            subprotocol: subprotocol, extensions: negotiated.map { [$0.response] } ?? [], headers: extraHeaders)
        self.session = Session(
            role: .server, configuration: self.options.session, compression: negotiated?.compression, zlibPool: self.loop.zlibPool)
        _ = response.withUnsafeBytes { try? self.session.queueEncoded($0) }
        // Kept in an exactly sized array: the reader's may have grown with room to spare.
        self.requestBytes = [UInt8](unsafeUninitializedCapacity: raw.count) { buffer, n in
            n = buffer.initialize(fromContentsOf: raw)
        }
        if subprotocol != nil { self.subprotocol = subprotocol }
        self.loop.openingRequest = (self.id, request)
        self.releaseBuffersAfterFlush = true
        self.open(leftover: leftover)
        self.loop.openingRequest = nil
    }

    private func open(leftover: UnsafeMutableRawBufferPointer) {
        self.compressing.store(self.session.isCompressing, ordering: .releasing)
        self.phase = .open
        self.deadline = 0
        self.lastReceive = self.loop.now
        self.lastPing = self.loop.now
        self.openNotified = true
        self.loop.markDirty(self)
        self.handlers.onOpen?(self)
        if self.phase == .open && leftover.count > 0 { self.parseFrames(leftover) }
    }

    // MARK: Plain HTTP: the application's routes, event streams, static files

    private func plainRequest(_ head: HTTPRequestHead, leftover: UnsafeRawBufferPointer) {
        guard let server = self.server else { return }
        if head.headers["Transfer-Encoding"] != nil {
            return self.reject(HTTPResponse.error(status: 411, body: "a request body needs Content-Length"))
        }
        let lengths = head.headers.values("Content-Length")
        var length = 0
        if let first = lengths.first {
            guard lengths.allSatisfy({ $0 == first }), !first.isEmpty, first.utf8.count <= 18, first.utf8.allSatisfy({ $0 >= 0x30 && $0 <= 0x39 }),
                let n = Int(first)
            else { return self.reject(HTTPResponse.error(status: 400, body: "bad Content-Length")) }
            length = n
        }
        if length > server.configuration.maxRequestBody {
            return self.reject(HTTPResponse.error(status: 413, body: "request body over \(server.configuration.maxRequestBody) bytes"))
        }
        self.pendingRequest = (head, length, [])
        self.requestBody(leftover)
    }

    private func requestBody(_ bytes: UnsafeRawBufferPointer) {
        guard var pending = self.pendingRequest else { return }
        let take = min(bytes.count, pending.length - pending.body.count)
        pending.body.append(contentsOf: UnsafeRawBufferPointer(rebasing: bytes[0..<take]))
        self.pendingRequest = pending
        guard pending.body.count == pending.length else { return }
        self.pendingRequest = nil
        self.answer(HTTPRequest(head: pending.head, body: pending.body, peer: self.peerAddress))
    }

    private func answer(_ request: HTTPRequest) {
        guard let server = self.server else { return }
        if let answer = self.handlers.onHTTPRequest?(request, self) {
            switch answer {
            case .respond(let bytes): return self.reject(bytes)
            case .eventStream: return self.openEventStream(request.head)
            }
        }
        if server.configuration.eventStreamPaths.contains(request.path) {
            guard request.method == "GET" else {
                return self.reject(HTTPResponse.error(status: 405, body: "method not allowed", headers: [HTTPField(name: "Allow", value: "GET")]))
            }
            return self.openEventStream(request.head)
        }
        if let files = server.staticFiles { return self.reject(files.respond(request.head)) }
        self.reject(HandshakeError.notUpgrade.response)
    }

    private func openEventStream(_ head: HTTPRequestHead) {
        self.httpRequest = head
        self.isStream = true
        self.isStreamFlag.store(true, ordering: .releasing)
        self.phase = .open
        self.deadline = 0
        self.lastPing = self.loop.now
        self.openNotified = true
        _ = ServerSentEvents.head.withUnsafeBytes { try? self.session.queueEncoded($0) }
        self.loop.markDirty(self)
        self.handlers.onOpen?(self)
    }

    /// Answers an HTTP error (or a plain response) and closes once it is written.
    private func reject(_ response: [UInt8]) {
        self.session = Session(role: .server)
        _ = response.withUnsafeBytes { try? self.session.queueEncoded($0) }
        self.closeAfterFlush = true
        self.loop.markDirty(self)
    }

    // MARK: Client connect and handshake

    /// Registers a connecting client socket with the loop (on the loop thread).
    func attach() {
        self.loop.adopt(self)
        self.deadline = self.loop.now + UInt64(self.clientConfiguration?.connectTimeout ?? 10_000)
        self.loop.register(fd: self.fd, slot: .connection(self), events: UInt32(EPOLLIN.rawValue | EPOLLOUT.rawValue))
        self.writeInterest = true
    }

    private func connectCompleted() {
        var err: Int32 = 0
        var len = socklen_t(MemoryLayout<Int32>.size)
        getsockopt(self.fd, SOL_SOCKET, SO_ERROR, &err, &len)
        if err != 0 {
            if !self.pendingAddresses.isEmpty {
                self.retryNextAddress()
            } else {
                self.failConnect(.system(.connect, "connect to \(self.peerAddress)", err))
            }
            return
        }
        Sys.noDelay(self.fd)
        self.phase = .handshaking
        self.deadline = self.loop.now + UInt64(self.options.handshakeTimeout)
        if let proxy = self.proxy, let target = self.proxyTarget {
            // First the tunnel: TLS to an https:// proxy, then CONNECT, or the SOCKS5 exchange.
            if proxy.kind == .https {
                guard self.startClientTLS(hostname: proxy.host, forProxy: true) else { return }
            }
            switch proxy.kind {
            case .http, .https:
                self.proxyNegotiation = .http(HTTPHeadReader(limit: self.options.maxHeaderBytes))
                self.proxyOut = ProxyNegotiation.connectRequest(host: target.host, port: target.port, proxy: proxy)
            case .socks5:
                self.proxyNegotiation = .socksMethod([])
                self.proxyOut = ProxyNegotiation.socksGreeting(proxy)
            }
            self.loop.markDirty(self)
            return
        }
        self.startWebSocketHandshake()
    }

    /// Starts TLS to the server (wss://) if asked, and queues the opening handshake.
    private func startWebSocketHandshake() {
        guard let handshake = self.clientHandshake else { return }
        if self.wantsTLS {
            guard self.startClientTLS(hostname: self.clientConfiguration?.tls.serverName ?? self.tlsHost, forProxy: false) else { return }
        }
        self.head = HTTPHeadReader(limit: self.options.maxHeaderBytes)
        _ = handshake.request.withUnsafeBytes { try? self.session.queueEncoded($0) }
        self.loop.markDirty(self)
    }

    /// Adds a client TLS layer (to the server, or to an https:// proxy) and sends its hello.
    private func startClientTLS(hostname: String?, forProxy: Bool) -> Bool {
        guard let configuration = self.clientConfiguration else { return false }
        do throws(RuntimeError) {
            var tls = configuration.tls
            if forProxy {
                // The proxy's certificate is checked against the same CAs, for the proxy's name.
                tls.serverName = nil
                tls.certificateChainFile = nil
                tls.privateKeyFile = nil
            }
            let session = try TLSSession(
                context: try ClientTLSContexts.context(for: tls), server: false, hostname: hostname,
                verifyHostname: !tls.insecureSkipVerification)
            session.startHandshake()
            self.addLayer(session)
            return true
        } catch {
            self.failConnect(error)
            return false
        }
    }

    /// Bytes from the proxy while the tunnel is being set up.
    private func proxyBytes(_ bytes: UnsafeRawBufferPointer) {
        guard let negotiation = self.proxyNegotiation, let proxy = self.proxy, let target = self.proxyTarget else { return }
        func fail(_ why: String) { self.failConnect(RuntimeError(.proxy, "proxy \(proxy): \(why)")) }
        switch negotiation {
        case .http(var reader):
            switch reader.feed(bytes) {
            case .needMore:
                self.proxyNegotiation = .http(reader)
            case .tooLarge:
                fail("response head too large")
            case .complete(let consumed):
                switch HTTPResponseHead.parse(reader.bytes, maxFieldCount: self.options.maxHeaderCount) {
                case .failure(let e):
                    fail(e.message)
                case .success(let head):
                    guard (200...299).contains(head.status) else {
                        return fail("CONNECT refused: \(head.status) \(head.reason)")
                    }
                    self.tunnelEstablished(leftover: UnsafeRawBufferPointer(rebasing: bytes[consumed...]))
                }
            }
        case .socksMethod(var got), .socksAuth(var got), .socksConnect(var got):
            got.append(contentsOf: bytes)
            switch negotiation {
            case .socksMethod:
                guard got.count >= 2 else { return self.proxyNegotiation = .socksMethod(got) }
                guard got[0] == 5 else { return fail("not a SOCKS5 server") }
                switch got[1] {
                case 0:
                    self.proxyNegotiation = .socksConnect(Array(got[2...]))
                    self.proxyOut += ProxyNegotiation.socksConnect(host: target.host, port: target.port)
                case 2 where proxy.username != nil:
                    self.proxyNegotiation = .socksAuth(Array(got[2...]))
                    self.proxyOut += ProxyNegotiation.socksAuth(proxy)
                case 2:
                    return fail("SOCKS5 proxy wants a user name and password")
                default:
                    return fail("SOCKS5 proxy accepts none of our authentication methods")
                }
                self.loop.markDirty(self)
            case .socksAuth:
                guard got.count >= 2 else { return self.proxyNegotiation = .socksAuth(got) }
                guard got[0] == 1 else { return fail("malformed SOCKS5 authentication reply") }
                guard got[1] == 0 else { return fail("SOCKS5 authentication failed (status \(got[1]))") }
                self.proxyNegotiation = .socksConnect(Array(got[2...]))
                self.proxyOut += ProxyNegotiation.socksConnect(host: target.host, port: target.port)
                self.loop.markDirty(self)
            default:
                guard let n = ProxyNegotiation.socksReplyLength(got) else { return self.proxyNegotiation = .socksConnect(got) }
                guard got[0] == 5, n > 4 else { return fail("malformed SOCKS5 reply") }
                guard got[1] == 0 else {
                    return fail("SOCKS5 CONNECT refused: \(ProxyNegotiation.socksReplyText(got[1])) (reply \(got[1]))")
                }
                got.removeFirst(n)
                got.withUnsafeBytes { self.tunnelEstablished(leftover: $0) }
            }
        }
    }

    /// The tunnel is up: what follows is the connection to the server.
    private func tunnelEstablished(leftover: UnsafeRawBufferPointer) {
        let depth = self.tlsLayers.count
        self.proxyNegotiation = nil
        self.proxyOut = []
        self.startWebSocketHandshake()
        guard self.phase != .closed, leftover.count > 0 else { return }
        self.receive(leftover, depth: depth)
    }

    private func retryNextAddress() {
        self.loop.unregister(fd: self.fd)
        Sys.close(self.fd)
        self.fd = -1
        while !self.pendingAddresses.isEmpty {
            let next = self.pendingAddresses.removeFirst()
            let fd = petrel_socket(next.family)
            guard fd >= 0 else { return self.failConnect(.system(.socket, "socket")) }
            self.peerAddress = next
            let rc = next.withSockaddr { Glibc.connect(fd, $0, $1) }
            if rc != 0 && errno != EINPROGRESS {
                let error = RuntimeError.system(.connect, "connect to \(next)")
                Sys.close(fd)
                if self.pendingAddresses.isEmpty { return self.failConnect(error) }
                continue
            }
            self.fd = fd
            self.loop.register(fd: fd, slot: .connection(self), events: UInt32(EPOLLIN.rawValue | EPOLLOUT.rawValue))
            return
        }
        self.failConnect(RuntimeError(.connect, "no address of \(self.peerAddress.host) accepted the connection"))
    }

    private func clientHandshakeBytes(_ bytes: UnsafeMutableRawBufferPointer) {
        guard var reader = self.head, let handshake = self.clientHandshake, let config = self.clientConfiguration else { return }
        let progress = reader.feed(UnsafeRawBufferPointer(bytes))
        self.head = reader
        switch progress {
        case .needMore:
            return
        case .tooLarge:
            self.failConnect(RuntimeError(.handshake, ClientHandshakeError.responseTooLarge(limit: self.options.maxHeaderBytes).message))
        case .complete(let consumed):
            self.head = nil
            let accepted: ClientHandshake.Accepted
            switch HTTPResponseHead.parse(reader.bytes, maxFieldCount: self.options.maxHeaderCount).flatMap(handshake.validate) {
            case .failure(let e): return self.failConnect(RuntimeError(.handshake, e.message))
            case .success(let a): accepted = a
            }
            var compression: Compression? = nil
            if let ext = accepted.extensions.first {
                guard let offered = config.compression else {
                    return self.failConnect(RuntimeError(.handshake, ClientHandshakeError.unexpectedExtension(ext.name).message))
                }
                switch PerMessageDeflate.accept(response: ext, options: offered) {
                case .failure(let e): return self.failConnect(RuntimeError(.handshake, e.message))
                case .success(let c): compression = c
                }
            }
            self.session = Session(role: .client, configuration: self.options.session, compression: compression, zlibPool: self.loop.zlibPool)
            self.subprotocol = accepted.subprotocol
            self.clientHandshake = nil
            self.open(leftover: UnsafeMutableRawBufferPointer(rebasing: bytes[consumed...]))
        }
    }

    private func failConnect(_ error: RuntimeError) {
        guard self.phase != .closed else { return }
        self.connectError = error
        self.closeTransport(reason: .abnormalClosure, message: error.message)
    }

    // MARK: Writing

    func writable() {
        if self.phase == .connecting {
            self.connectCompleted()
            return
        }
        self.flush()
    }

    func flush() {
        guard self.phase != .closed, self.phase != .connecting else { return }
        while true {
            guard self.writeQueued() else { return }
            if self.pingQueued {
                self.pingQueued = false
                self.awaitingPong = true
                self.pingSentAt = self.loop.now
            }
            if !self.moveBacklogIntoOutput(all: false) { break }
        }
        if self.releaseBuffersAfterFlush {
            // The 101 is out: an idle connection keeps no buffer (the first message makes one).
            self.releaseBuffersAfterFlush = false
            self.session.releaseIdleBuffers()
        }
        self.setWriteInterest(false)
        self.bufferedBytes.store(self.queuedBytes, ordering: .relaxed)
        if self.readPaused {
            self.resumeReading()
            // The stashed input may have queued output (replies, a close echo): write it first.
            if self.session.pendingOutputCount > 0 || self.phase == .closed { return self.loop.markDirty(self) }
        }
        if self.wantsDrain && self.queuedBytes == 0 && self.phase == .open {
            self.wantsDrain = false
            self.handlers.onDrain?(self)
            if self.session.pendingOutputCount > 0 { return self.loop.markDirty(self) }
        }
        self.afterOutputWritten()
    }

    /// Writes the session's output (through the TLS layers and any proxy negotiation). Returns
    /// false when the socket is full (write interest is then on) or the connection failed.
    private func writeQueued() -> Bool {
        if self.extras == nil || (self.tlsLayers.isEmpty && self.proxyOut.isEmpty && self.tlsOutHead == self.tlsOut.count) {
            while self.session.pendingOutputCount > 0 {
                let result = self.session.withPendingOutput { Sys.write(self.fd, $0) }
                guard case .done(let n) = result else { return self.writeFailed(result) }
                self.session.consumeOutput(n)
            }
            while !self.sharedOut.isEmpty {
                guard self.writeShared() else { return false }
            }
            return true
        }
        self.spillShared()
        while true {
            // What is already encrypted goes first: nothing more is encrypted while the socket is full.
            while self.tlsOutHead < self.tlsOut.count {
                let result = self.tlsOut.withUnsafeBytes { Sys.write(self.fd, UnsafeRawBufferPointer(rebasing: $0[self.tlsOutHead...])) }
                guard case .done(let n) = result else { return self.writeFailed(result) }
                self.tlsOutHead += n
            }
            self.tlsOut.removeAll(keepingCapacity: self.tlsOut.capacity <= 64 * 1024)
            self.tlsOutHead = 0
            guard self.pumpLayers() else { return false }
            if self.tlsOut.isEmpty { return true }
        }
    }

    /// Moves output down the stack: the session's plaintext into the innermost TLS layer (once
    /// any proxy tunnel is up), proxy negotiation bytes into the layer under the tunnel, each
    /// layer's ciphertext into the layer below, and the outermost's into `tlsOut`.
    private func pumpLayers() -> Bool {
        if self.proxyNegotiation == nil, let top = self.tlsLayers.last {
            while self.session.pendingOutputCount > 0 {
                guard let n = self.session.withPendingOutput({ top.write($0) }) else {
                    self.tlsFailed(top.failureText())
                    return false
                }
                if n == 0 { break }  // that layer's handshake is not done yet
                self.session.consumeOutput(n)
            }
        } else if self.proxyNegotiation == nil && self.tlsLayers.isEmpty {
            // A plain tunnel: the session's bytes go out as they are.
            while self.session.pendingOutputCount > 0 {
                let n = self.session.withPendingOutput { p in self.tlsOut.append(contentsOf: p); return p.count }
                self.session.consumeOutput(n)
            }
        }
        if !self.proxyOut.isEmpty {
            if let under = self.tlsLayers.last {
                guard let n = self.proxyOut.withUnsafeBytes({ under.write($0) }) else {
                    self.tlsFailed(under.failureText())
                    return false
                }
                self.proxyOut.removeFirst(n)
            } else {
                self.tlsOut += self.proxyOut
                self.proxyOut = []
            }
        }
        for d in stride(from: self.tlsLayers.count - 1, through: 0, by: -1) {
            let layer = self.tlsLayers[d]
            if d == 0 {
                layer.takeOutput(into: &self.tlsOut)
                continue
            }
            layer.takeOutput(into: &self.layerPending[d])
            while !self.layerPending[d].isEmpty {
                guard let n = self.layerPending[d].withUnsafeBytes({ self.tlsLayers[d - 1].write($0) }) else {
                    self.tlsFailed(self.tlsLayers[d - 1].failureText())
                    return false
                }
                if n == 0 { break }  // the outer handshake is not done yet
                self.layerPending[d].removeFirst(n)
            }
        }
        return true
    }

    /// One writev of queued topic frames (up to `EventLoop.maxIovecs`), straight from their
    /// shared memory. False when the socket is full or failed.
    private func writeShared() -> Bool {
        let iov = self.loop.iovecs
        var count = 0
        for f in self.sharedOut {
            if count == EventLoop.maxIovecs { break }
            let skip = count == 0 ? self.sharedHead : 0
            iov[count] = iovec(iov_base: f.wire.baseAddress! + skip, iov_len: f.wire.count - skip)
            count += 1
        }
        let result = Sys.writev(self.fd, iov, count)
        guard case .done(var n) = result else { return self.writeFailed(result) }
        self.sharedBytes -= n
        var done = 0
        while done < self.sharedOut.count {
            let left = self.sharedOut[done].wire.count - (done == 0 ? self.sharedHead : 0)
            if n < left {
                self.sharedHead = (done == 0 ? self.sharedHead : 0) + n
                break
            }
            n -= left
            done += 1
            self.sharedHead = 0
        }
        if done == self.sharedOut.count {
            self.sharedOut.removeAll(keepingCapacity: self.sharedOut.count <= 64)
        } else if done > 0 {
            self.sharedOut.removeFirst(done)
        }
        return true
    }

    /// Moves queued topic frames into the session's buffer (a copy), ahead of whatever is
    /// written next: for writes that are not topic frames, and for TLS.
    func spillShared() {
        guard !self.sharedOut.isEmpty else { return }
        for (i, f) in self.sharedOut.enumerated() {
            let bytes = i == 0 ? UnsafeRawBufferPointer(rebasing: f.encoded[self.sharedHead...]) : f.encoded
            _ = try? self.session.queueEncoded(bytes)
        }
        self.sharedOut.removeAll(keepingCapacity: false)
        self.sharedHead = 0
        self.sharedBytes = 0
    }

    private func writeFailed(_ result: IOResult) -> Bool {
        switch result {
        case .wouldBlock:
            self.setWriteInterest(true)
            self.bufferedBytes.store(self.queuedBytes, ordering: .relaxed)
        case .failed(let e):
            self.closeTransport(reason: .abnormalClosure, message: "write failed: \(String(cString: strerror(e)))")
        case .eof, .done:
            break
        }
        return false
    }

    // MARK: TLS

    /// Bytes from the socket: up through the TLS layers, then to the proxy negotiation or the
    /// protocol as plaintext.
    private func receiveCiphertext(_ bytes: UnsafeRawBufferPointer) {
        if self.refusedPlaintext { return }
        if self.tlsLayers.isEmpty && self.role == .server {
            guard let contexts = self.server?.tlsContexts else { return }
            // A TLS connection starts with a handshake record (content type 22).
            guard bytes.first == 0x16 else {
                self.refusedPlaintext = true  // from now on every byte is dropped
                self.head = nil
                return self.reject(HTTPResponse.error(status: 400, body: "this port speaks TLS: use https:// or wss://"))
            }
            do throws(RuntimeError) {
                self.addLayer(try TLSSession(context: contexts.context, server: true))
            } catch {
                return self.closeTransport(reason: .abnormalClosure, message: error.message)
            }
        }
        let before = self.tlsLayers.map(\.handshakeComplete)
        self.receive(bytes, depth: 0)
        guard self.phase != .closed else { return }
        let progressed = self.tlsLayers.map(\.handshakeComplete) != before
        if self.tlsLayers.contains(where: { $0.pendingOutput > 0 }) || (progressed && (self.session.pendingOutputCount > 0 || !self.proxyOut.isEmpty)) {
            self.loop.markDirty(self)
        }
    }

    private func addLayer(_ tls: TLSSession) {
        self.tlsLayers.append(tls)
        self.layerPending.append([])
    }

    /// Feeds `bytes` to layer `depth` and passes its plaintext up; above the last layer, to the
    /// proxy negotiation or the protocol.
    private func receive(_ bytes: UnsafeRawBufferPointer, depth: Int) {
        guard depth < self.tlsLayers.count else {
            if self.proxyNegotiation != nil { return self.proxyBytes(bytes) }
            return self.consume(UnsafeMutableRawBufferPointer(mutating: bytes))
        }
        let tls = self.tlsLayers[depth]
        tls.feed(bytes)
        // The outermost layer reads into the loop's buffer; the inner one (TLS inside an https://
        // proxy's tunnel) into the connection's own, made once.
        if depth > 0 && self.innerPlain.isEmpty { self.innerPlain = [UInt8](repeating: 0, count: 16 * 1024) }
        if depth > 0 {
            self.innerPlain.withUnsafeMutableBytes { self.readLayer(tls, into: $0, depth: depth) }
        } else {
            self.readLayer(tls, into: self.loop.tlsBuffer, depth: depth)
        }
    }

    /// Reads layer `depth`'s plaintext and passes it up.
    private func readLayer(_ tls: TLSSession, into plain: UnsafeMutableRawBufferPointer, depth: Int) {
        while self.phase != .closed {
            switch tls.read(into: plain) {
            case .data(let n):
                self.receive(UnsafeRawBufferPointer(rebasing: plain[0..<n]), depth: depth + 1)
            case .needMore:
                return
            case .closed:
                return self.endOfStream()
            case .failed(let reason):
                return self.tlsFailed(reason)
            }
        }
    }

    private func tlsFailed(_ reason: String) {
        let error = RuntimeError(.tls, "TLS: \(reason)")
        if self.role == .client && self.phase != .open { return self.failConnect(error) }
        self.closeTransport(reason: .abnormalClosure, message: error.message)
    }

    /// With everything written: close the transport if the protocol says so.
    private func afterOutputWritten() {
        if self.closeAfterFlush {
            self.closeAfterFlush = false
            return self.beginDrain()
        }
        guard self.phase == .open, self.session.state == .closed else { return }
        if self.session.shouldCloseTransport {
            // §7.1.1: the server closes TCP first; after a failure, either side does.
            self.beginDrain()
        } else {
            // A client that completed the closing handshake waits for the server's FIN.
            self.phase = .draining
            self.deadline = self.loop.now + UInt64(self.options.closeTimeout)
        }
    }

    /// Half-closes (FIN after our last bytes) and reads until the peer closes, so that unread
    /// input does not turn our close into a reset that could destroy what we sent.
    private func beginDrain() {
        guard self.phase != .closed, self.phase != .draining else { return }
        if let tls = self.tls, self.tlsOutHead == self.tlsOut.count {
            // close_notify, best effort: the socket has room, everything else is written.
            tls.shutdown()
            if self.pumpLayers() { _ = self.tlsOut.withUnsafeBytes { Sys.write(self.fd, $0) } }
            self.extras?.tlsOut = []
            self.extras?.tlsOutHead = 0
        }
        shutdown(self.fd, Int32(SHUT_WR))
        self.phase = .draining
        self.readPaused = false
        self.updateInterest()
        self.deadline = self.loop.now + UInt64(min(self.options.closeTimeout, 2_000))
    }

    private func setWriteInterest(_ on: Bool) {
        guard on != self.writeInterest else { return }
        self.writeInterest = on
        self.updateInterest()
    }

    private func updateInterest() {
        guard self.phase != .closed else { return }
        var events: UInt32 = 0
        if !self.readPaused { events |= UInt32(EPOLLIN.rawValue) }
        if self.writeInterest { events |= UInt32(EPOLLOUT.rawValue) }
        self.loop.modify(fd: self.fd, events: events)
    }

    // MARK: Pub/sub delivery

    func deliver(_ frame: SharedFrame) {
        if let e = self.extras, !e.resumeFloors.isEmpty, let floor = e.resumeFloors[frame.topic] {
            if frame.eventID <= floor { return }
            self.extras?.resumeFloors.removeValue(forKey: frame.topic)
        }
        guard self.phase == .open, self.session.state == .open, !self.closeAfterFlush else { return }
        // The fast path: a plain WebSocket (no TLS, proxy, backlog or compression) whose socket
        // took everything at the last flush queues a reference to the frame, not a copy.
        if self.extras == nil && !self.isStream && !self.writeInterest && !self.session.isCompressing
            && self.sharedBytes + frame.wire.count <= self.options.maxBackpressure
        {
            self.sharedOut.append(frame)
            self.sharedBytes += frame.wire.count
            self.loop.markDirty(self)
            return
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

    private func dropOldest(topic: String) {
        guard let i = self.backlog[self.backlogHead...].firstIndex(where: { if case .shared = $0 { return true } else { return false } }) else {
            return
        }
        if case .shared(let f) = self.backlog[i] { self.server?.countDropped(topic: f.topic) }
        self.backlogBytes -= self.backlog[i].byteCount
        self.backlog.remove(at: i)
        self.dropped.add(1, ordering: .relaxed)
    }

    private func pushBacklog(_ item: QueuedFrame) {
        self.backlog.append(item)
        self.backlogBytes += item.byteCount
        self.bufferedBytes.store(self.queuedBytes, ordering: .relaxed)
    }

    /// Moves queued frames into the session's output while it is under the limit (or all of
    /// them). Returns whether anything moved.
    @discardableResult
    private func moveBacklogIntoOutput(all: Bool) -> Bool {
        var moved = false
        while self.backlogHead < self.backlog.count && (all || self.outputBytes < self.options.maxBackpressure) {
            let item = self.backlog[self.backlogHead]
            self.backlogHead += 1
            self.backlogBytes -= item.byteCount
            switch item {
            case .shared(let f): self.write(f)
            case .direct(let kind, let bytes): _ = bytes.withUnsafeBytes { try? self.session.send(kind, $0) }
            case .raw(let bytes): _ = bytes.withUnsafeBytes { try? self.session.queueEncoded($0) }
            }
            moved = true
        }
        if moved && self.backlogHead == self.backlog.count {
            self.backlog.removeAll(keepingCapacity: self.backlog.count < 64)
            self.backlogHead = 0
        }
        return moved
    }

    /// Writes a shared frame: its shared compressed form when this connection's compressor keeps
    /// no context, compressed by the session when it does, or as encoded.
    private func write(_ frame: SharedFrame) {
        self.spillShared()
        if self.isStream {
            _ = frame.sseEvent.withUnsafeBytes { try? self.session.queueEncoded($0) }
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

    // MARK: Timers

    func checkTimers(now: UInt64) {
        switch self.phase {
        case .connecting:
            if now >= self.deadline { self.failConnect(RuntimeError(.connectTimeout, "connect to \(self.peerAddress) timed out")) }
        case .handshaking:
            guard now >= self.deadline else { return }
            if self.role == .client {
                self.failConnect(RuntimeError(.handshake, "handshake not completed in \(self.options.handshakeTimeout) ms"))
            } else if !self.tlsLayers.allSatisfy(\.handshakeComplete) {
                self.closeTransport(reason: .abnormalClosure, message: "TLS handshake not completed in \(self.options.handshakeTimeout) ms")
            } else if self.wantsTLS && self.tls == nil {
                self.closeTransport(reason: .abnormalClosure, message: "nothing received in \(self.options.handshakeTimeout) ms")
            } else if !self.closeAfterFlush {
                self.reject(HandshakeError.timeout.response)
            } else {
                self.closeTransport(reason: .abnormalClosure, message: "handshake timeout")
            }
        case .open:
            if self.isStream {
                if self.closeAfterFlush && now >= self.deadline && self.deadline != 0 { self.closeTransport(reason: self.closeCode, message: self.closeReason) }
                let interval = self.options.pingInterval
                if interval > 0 && !self.closeAfterFlush && now - self.lastPing >= UInt64(interval) {
                    self.lastPing = now
                    _ = ServerSentEvents.keepalive.withUnsafeBytes { self.sendRawOnLoop($0) }
                }
                return
            }
            if self.session.state != .open {
                if self.deadline != 0 && now >= self.deadline {
                    self.closeTransport(reason: self.closeCode, message: self.closeReason.isEmpty ? "close timeout" : self.closeReason)
                }
                return
            }
            let idle = self.options.idleTimeout
            if idle > 0 && now - self.lastReceive >= UInt64(idle) {
                return self.closeOnLoop(code: .goingAway, reason: "idle for \(idle) ms")
            }
            let interval = self.options.pingInterval
            guard interval > 0 else { return }
            if self.awaitingPong {
                if now - self.pingSentAt >= UInt64(self.options.pongTimeout) {
                    self.closeOnLoop(code: .internalError, reason: "no pong within \(self.options.pongTimeout) ms")
                }
            } else if !self.pingQueued && now - max(self.lastReceive, self.lastPing) >= UInt64(interval) {
                _ = self.pingOnLoop(UnsafeRawBufferPointer(start: nil, count: 0))
            }
        case .draining:
            if now >= self.deadline { self.closeTransport(reason: self.closeCode, message: self.closeReason) }
        case .closed:
            break
        }
    }

    /// Server stop: close 1001 to a WebSocket peer, end everything else.
    func shutdownForStop() {
        switch self.phase {
        case .open where !self.isStream:
            self.closeOnLoop(code: .goingAway, reason: "server shutting down")
        case .open:
            self.closeAfterFlush = true
            self.deadline = self.loop.now + UInt64(self.options.closeTimeout)
            self.loop.markDirty(self)
        default:
            self.closeTransport(reason: .goingAway, message: "server shutting down")
        }
    }

    // MARK: Closing

    /// Closes the socket and forgets the connection; calls `onClose` if it had opened.
    func closeTransport(reason: CloseCode, message: String) {
        guard self.phase != .closed else { return }
        let wasOpen = self.openNotified
        self.phase = .closed
        self.closedFlag.store(true, ordering: .relaxed)
        if self.fd >= 0 {
            self.loop.unregister(fd: self.fd)
            Sys.close(self.fd)
            self.fd = -1
        }
        self.loop.forget(self)
        for t in self.subscriptions {
            self.loop.topics[t]?.removeAll { $0 === self }
            if self.loop.topics[t]?.isEmpty == true { self.loop.topics.removeValue(forKey: t) }
        }
        self.subscriptions = []
        self.sharedOut = []
        self.sharedHead = 0
        self.sharedBytes = 0
        if let e = self.extras {
            e.backlog = []
            e.backlogHead = 0
            e.backlogBytes = 0
            e.stash = []
        }
        self.bufferedBytes.store(0, ordering: .relaxed)
        if self.role == .server { self.server?.connectionClosed() }
        if self.closeReason.isEmpty && self.closeCode == .abnormalClosure { self.closeReason = message }
        if wasOpen {
            self.handlers.onClose?(self, self.closeCode, self.closeReason)
        } else if self.role == .client {
            // Whatever ended a connecting client (refused, reset, timeout, bad handshake) is reported.
            self.handlers.onConnectFailed?(self, self.connectError ?? RuntimeError(.connect, message))
        }
        self.handlers = Handlers.none
        self.session = Session(role: self.role)
    }
}

// MARK: State out of line

extension Connection {
    /// The subprotocol agreed in the handshake.
    public private(set) var subprotocol: String? {
        get { self.extras?.subprotocol ?? nil }
        _modify { yield &self.more.subprotocol }
    }
    /// Frames waiting for room under the backpressure limit, from `backlogHead` on.
    var backlog: [QueuedFrame] {
        get { self.extras?.backlog ?? [] }
        _modify { yield &self.more.backlog }
    }
    var backlogHead: Int {
        get { self.extras?.backlogHead ?? 0 }
        _modify { yield &self.more.backlogHead }
    }
    var backlogBytes: Int {
        get { self.extras?.backlogBytes ?? 0 }
        _modify { yield &self.more.backlogBytes }
    }
    /// Input kept while reading is paused.
    var stash: [UInt8] {
        get { self.extras?.stash ?? [] }
        _modify { yield &self.more.stash }
    }
    var closeReason: String {
        get { self.extras?.closeReason ?? "" }
        // An empty reason (most closes) makes no extras object.
        set { if !newValue.isEmpty || self.extras != nil { self.more.closeReason = newValue } }
    }
    /// Why a connecting client failed, reported by `closeTransport` through `onConnectFailed`.
    var connectError: RuntimeError? {
        get { self.extras?.connectError ?? nil }
        _modify { yield &self.more.connectError }
    }
    var clientHandshake: ClientHandshake? {
        get { self.extras?.clientHandshake ?? nil }
        _modify { yield &self.more.clientHandshake }
    }
    var clientConfiguration: ClientConfiguration? {
        get { self.extras?.clientConfiguration ?? nil }
        _modify { yield &self.more.clientConfiguration }
    }
    /// Client: the addresses still to try.
    var pendingAddresses: [SocketAddress] {
        get { self.extras?.pendingAddresses ?? [] }
        _modify { yield &self.more.pendingAddresses }
    }
    /// TLS sessions, outermost first: none, the one to the peer, or (through an https:// proxy) the one to the proxy and the one to the server inside it. A server makes its session when the first bytes arrive.
    var tlsLayers: [TLSSession] {
        get { self.extras?.tlsLayers ?? [] }
        _modify { yield &self.more.tlsLayers }
    }
    /// Ciphertext of layer i waiting to be written into layer i - 1 (nested TLS only).
    var layerPending: [[UInt8]] {
        get { self.extras?.layerPending ?? [] }
        _modify { yield &self.more.layerPending }
    }
    /// Where the inner TLS layer's plaintext is read (nested TLS only).
    var innerPlain: [UInt8] {
        get { self.extras?.innerPlain ?? [] }
        _modify { yield &self.more.innerPlain }
    }
    /// Client: the proxy and where the tunnel goes; the negotiation under way; its bytes out.
    var proxy: ProxyURL? {
        get { self.extras?.proxy ?? nil }
        _modify { yield &self.more.proxy }
    }
    var proxyTarget: (host: String, port: UInt16)? {
        get { self.extras?.proxyTarget ?? nil }
        _modify { yield &self.more.proxyTarget }
    }
    var proxyNegotiation: ProxyNegotiation? {
        get { self.extras?.proxyNegotiation ?? nil }
        _modify { yield &self.more.proxyNegotiation }
    }
    var proxyOut: [UInt8] {
        get { self.extras?.proxyOut ?? [] }
        _modify { yield &self.more.proxyOut }
    }
    /// Client: the URL's host, for SNI and the certificate check.
    var tlsHost: String? {
        get { self.extras?.tlsHost ?? nil }
        _modify { yield &self.more.tlsHost }
    }
    /// Ciphertext not yet written, from `tlsOutHead` on.
    var tlsOut: [UInt8] {
        get { self.extras?.tlsOut ?? [] }
        _modify { yield &self.more.tlsOut }
    }
    var tlsOutHead: Int {
        get { self.extras?.tlsOutHead ?? 0 }
        _modify { yield &self.more.tlsOutHead }
    }
    /// A plain request whose body is still arriving: its head, and the body so far.
    var pendingRequest: (head: HTTPRequestHead, length: Int, body: [UInt8])? {
        get { self.extras?.pendingRequest ?? nil }
        _modify { yield &self.more.pendingRequest }
    }
    /// Per topic resumed with `subscribe(_:after:)`: the last event id already replayed, so that the same message still on its way to this loop is not delivered twice.
    var resumeFloors: [String: UInt64] {
        get { self.extras?.resumeFloors ?? [:] }
        _modify { yield &self.more.resumeFloors }
    }
    /// The plain HTTP request of a streaming (SSE) connection.
    public private(set) var httpRequest: HTTPRequestHead? {
        get { self.extras?.httpRequest ?? nil }
        _modify { yield &self.more.httpRequest }
    }
}

final class HeadBox {
    var reader: HTTPHeadReader
    init(_ reader: HTTPHeadReader) { self.reader = reader }
}

/// The options of a server's connections, shared rather than copied into each.
final class SharedOptions: Sendable {
    let value: ConnectionOptions
    init(_ value: ConnectionOptions) { self.value = value }
}

/// A connection's rarely needed state (see `Connection.extras`).
final class ConnectionExtras {
    /// The subprotocol agreed in the handshake.
    var subprotocol: String? = nil
    /// Frames waiting for room under the backpressure limit, from `backlogHead` on.
    var backlog: [QueuedFrame] = []
    var backlogHead: Int = 0
    var backlogBytes: Int = 0
    /// Input kept while reading is paused.
    var stash: [UInt8] = []
    var closeReason: String = ""
    /// Why a connecting client failed, reported by `closeTransport` through `onConnectFailed`.
    var connectError: RuntimeError? = nil
    var clientHandshake: ClientHandshake? = nil
    var clientConfiguration: ClientConfiguration? = nil
    /// Client: the addresses still to try.
    var pendingAddresses: [SocketAddress] = []
    /// TLS sessions, outermost first: none, the one to the peer, or (through an https:// proxy) the one to the proxy and the one to the server inside it. A server makes its session when the first bytes arrive.
    var tlsLayers: [TLSSession] = []
    /// Ciphertext of layer i waiting to be written into layer i - 1 (nested TLS only).
    var layerPending: [[UInt8]] = []
    /// Where the inner TLS layer's plaintext is read (nested TLS only).
    var innerPlain: [UInt8] = []
    /// Client: the proxy and where the tunnel goes; the negotiation under way; its bytes out.
    var proxy: ProxyURL? = nil
    var proxyTarget: (host: String, port: UInt16)? = nil
    var proxyNegotiation: ProxyNegotiation? = nil
    var proxyOut: [UInt8] = []
    /// Client: the URL's host, for SNI and the certificate check.
    var tlsHost: String? = nil
    /// Ciphertext not yet written, from `tlsOutHead` on.
    var tlsOut: [UInt8] = []
    var tlsOutHead: Int = 0
    /// A plain request whose body is still arriving: its head, and the body so far.
    var pendingRequest: (head: HTTPRequestHead, length: Int, body: [UInt8])? = nil
    /// Per topic resumed with `subscribe(_:after:)`: the last event id already replayed, so that the same message still on its way to this loop is not delivered twice.
    var resumeFloors: [String: UInt64] = [:]
    /// The plain HTTP request of a streaming (SSE) connection.
    var httpRequest: HTTPRequestHead? = nil
}
