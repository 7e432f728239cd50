import CLinux
import Glibc
import PetrelCore
import Synchronization

/// Where a connection is in its life: a client's TCP connect, the opening handshake (or a
/// plain request being read), open (a WebSocket or an event stream), reading until the peer's
/// FIN after a half-close, gone.
enum Phase {
    case connecting, handshaking, open, draining, closed
}

/// One connection, pinned to one loop thread for life. Its methods are safe from any thread:
/// called off the loop, they are queued to it.
///
/// This file holds its state and its birth; what it does is in one file per concern beside it:
/// `+API` (the public surface), `+Read`, `+TLS`, `+ServerDoor` (a server's first request),
/// `+Connector` (a client's way to its server), `+Output`, `+Delivery` (topic messages),
/// `+Timers` and `+Close`; rarely needed state lives in `ConnectionExtras`.
public final class Connection: @unchecked Sendable {
    public let id: ConnectionID
    public let role: Role
    public internal(set) var peerAddress: SocketAddress
    /// Strong, not `unowned`: an unowned reference costs a checked retain on every use (it was a
    /// fifth of a fan-out's time). The loop drops its connections when they close or it stops,
    /// which ends the cycle.
    let loop: EventLoop
    var fd: Int32
    /// The callbacks; replaced by an empty set once the connection is gone, so that closures
    /// capturing an object that holds this connection do not keep both alive.
    var handlers: Handlers
    /// The options, shared by every connection of a server (not copied into each one).
    let sharedOptions: SharedOptions
    var options: ConnectionOptions { _read { yield self.sharedOptions.value } }
    unowned(unsafe) let server: Server?

    var phase: Phase
    /// The server's opening handshake while it is read: boxed, 8 bytes for the rest of the
    /// connection's life.
    var handshakeBox: ServerHandshakeBox?
    var session: Session
    /// The upgrade request (server side), for the application's routing and authentication.
    /// An open connection keeps only the request's bytes; the parsed form exists while the
    /// handshake and `onOpen` run, and is parsed again on each later access.
    public var request: HandshakeRequest? {
        // The parsed form is the loop thread's (it drops it after onOpen); others parse the
        // bytes, which are written before onOpen runs or any event about it is queued.
        if self.loop.isCurrentThread, let (id, r) = self.loop.openingRequest, id == self.id { return r }
        return self.requestBytes.flatMap(ServerHandshake.reparse)
    }
    var requestBytes: [UInt8]?
    /// Whatever the application attached (the accept hook may set it).
    public var userData: UInt = 0
    /// True for a Server-Sent Events stream (an event-stream path, or `HTTPAnswer.eventStream`).
    /// Loop thread only; `isEventStream` is the same for any thread.
    var eventStream = false
    /// True for a Server-Sent Events stream. Safe from any thread.
    public var isEventStream: Bool { self.isEventStreamFlag.load(ordering: .acquiring) }
    /// Topics this connection is subscribed to.
    var subscriptions: [Subscription] = []
    /// Topic frames queued after the session's bytes, written straight from the shared frames
    /// with one writev per flush: fan-out copies nothing per subscriber. `sharedHead` bytes of
    /// the first are already written; `sharedBytes` are still to go. Any other write first
    /// moves these into the session's buffer (`spillShared`), so that order is kept.
    var sharedOut: [SharedFrame] = []
    var sharedHead = 0
    var sharedBytes = 0
    /// Free the session's buffers once the handshake response is written.
    var releaseBuffersAfterFlush = false
    /// What only some connections need (clients, TLS, proxies, plain HTTP, resumed topics),
    /// out of line: an idle server-side WebSocket stays small. Made on first write.
    var extras: ConnectionExtras?
    var more: ConnectionExtras {
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
    /// The application asked not to read (`holdReading`): nothing resumes reading until it lets go.
    var readHeld = false
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
    let isEventStreamFlag = Atomic<Bool>(false)
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
        self.handshakeBox = ServerHandshakeBox(ServerHandshake(policy: server.handshakePolicy))
        self.session = Session(role: .server)
        self.deadline = loop.now + UInt64(self.options.handshakeTimeout)
        self.lastReceive = loop.now
        // Counted from accept; over the limit, a request that parses is answered 503.
        self.handshakeBox?.handshake.atCapacity = !server.connectionOpened()
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

    /// The handshake is done (either role): the connection opens, `onOpen` runs, and the bytes
    /// that came after the handshake are parsed.
    func open(leftover: UnsafeMutableRawBufferPointer) {
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
}

final class ServerHandshakeBox {
    var handshake: ServerHandshake
    init(_ handshake: ServerHandshake) { self.handshake = handshake }
}
