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
    /// Strong, not `unowned`: an unowned reference costs a checked retain on every use (it was a
    /// fifth of a fan-out's time). The loop drops its connections when they close or it stops,
    /// which ends the cycle.
    let loop: EventLoop
    /// The options, shared by every connection of a server (not copied into each one).
    let sharedOptions: SharedOptions
    var options: ConnectionOptions { _read { yield self.sharedOptions.value } }
    unowned(unsafe) let server: Server?
    /// Everything the loop thread changes, in one value that this connection owns (see `State`).
    let state: UnsafeMutablePointer<State>

    /// A connection's loop-thread state. It lives behind a pointer rather than in stored `var`s
    /// of the class because Swift checks every access to a class's stored `var` at run time for
    /// overlap (a thread-local access set: begin, insert, end), and those checks were 40% of
    /// the instructions of an echoed message. Memory reached through a pointer is not checked:
    /// keeping its accesses exclusive is this type's rule instead, and the loop keeps it:
    /// - Only the loop thread touches the state; other threads queue a closure to it. What
    ///   other threads read lives outside it: stored properties set before the connection is
    ///   announced (`peerAddress`, `requestBytes`), and atomics (`userData`, the reference to
    ///   `extras`, the flags below). An access to one field of the state is, to Swift and to
    ///   ThreadSanitizer, an access to the whole state.
    /// - No access stays open across a call into the application: the session returns events
    ///   rather than calling back, and callbacks run between accesses. The open accesses that
    ///   do span a call reach other state only: `withPendingOutput` into a write or TLS, and the
    ///   loop's subscriber lists into another connection's `subscriptionMoved`.
    struct State: ~Copyable {
        var fd: Int32
        var timerIndex: Int32 = 0
        var handlers: Handlers
        var phase: Phase
        /// Set when the backlog takes a frame, cleared by a flush that emptied it: false means
        /// the backlog is empty, with no look at the extras (where the backlog lives). Next
        /// to `phase`, in room it leaves.
        var backlogged = false
        /// The server keeps an access log: bytes read and written are counted (in the extras).
        var counting = false
        /// The listener speaks the PROXY protocol: its header comes before anything else.
        var awaitingProxyHeader = false
        var handshakeBox: ServerHandshakeBox? = nil
        var session: Session
        var subscriptions: [Subscription] = []
        var sharedOut = RefQueue<SharedFrame>()
        var sharedHead = 0
        var sharedBytes = 0
        /// A STOMP subscriber that a delivery can serve from here, as a plain one is served: its
        /// one subscription's kind, while that subscription is in auto mode and past any resume
        /// floor, on a connection with no TLS (`stompRefreshFast`). Not retained: the
        /// subscription holds the kind, and every change to it refreshes this.
        var stompFast: Unmanaged<StompKind>? = nil
        var deadline: UInt64 = 0
        /// The loop's timer wheel: the tick this connection is armed for (0: none); its place
        /// in that tick's slot is `timerIndex`, next to `fd` where it takes no room.
        var timerTick: UInt64 = 0
        var lastReceive: UInt64 = 0
        var lastPing: UInt64 = 0
        var pingSentAt: UInt64 = 0
        var awaitingPong = false
        var isDirty = false
        var writeInterest = false
        var readPaused = false
        var readHeld = false
        var closeAfterFlush = false
        var wantsDrain = false
        var openNotified = false
        var closeCode: CloseCode = .abnormalClosure
        var closedFirst = false
        var wantsTLS = false
        var refusedPlaintext = false
        // Flags together at the end: a Bool between two 8-byte fields costs 8 bytes.
        var eventStream = false
        var releaseBuffersAfterFlush = false
        var pingQueued = false
    }

    deinit {
        self.state.deinitialize(count: 1)
        self.state.deallocate()
        self.extrasReference.load(ordering: .acquiring)?.release()
    }

    /// Read by any thread (set before the connection is announced), so a stored property: a
    /// read through `state` would be an access to the whole state, which the loop changes.
    public internal(set) var peerAddress: SocketAddress
    var fd: Int32 {
        @inline(__always) _read { yield self.state.pointee.fd }
        @inline(__always) _modify { yield &self.state.pointee.fd }
    }
    /// The callbacks; replaced by an empty set once the connection is gone, so that closures
    /// capturing an object that holds this connection do not keep both alive.
    var handlers: Handlers {
        @inline(__always) _read { yield self.state.pointee.handlers }
        @inline(__always) _modify { yield &self.state.pointee.handlers }
    }
    var phase: Phase {
        @inline(__always) _read { yield self.state.pointee.phase }
        @inline(__always) _modify { yield &self.state.pointee.phase }
    }
    /// The server's opening handshake while it is read: boxed, 8 bytes for the rest of the
    /// connection's life.
    var handshakeBox: ServerHandshakeBox? {
        @inline(__always) _read { yield self.state.pointee.handshakeBox }
        @inline(__always) _modify { yield &self.state.pointee.handshakeBox }
    }
    var session: Session {
        @inline(__always) _read { yield self.state.pointee.session }
        @inline(__always) _modify { yield &self.state.pointee.session }
    }
    /// The upgrade request (server side), for the application's routing and authentication.
    /// An open connection keeps only the request's bytes; the parsed form exists while the
    /// handshake and `onOpen` run, and is parsed again on each later access.
    public var request: HandshakeRequest? {
        // The parsed form is the loop thread's (it drops it after onOpen); others parse the
        // bytes, which are written before onOpen runs or any event about it is queued.
        if self.loop.isCurrentThread, let (id, r) = self.loop.openingRequest, id == self.id { return r }
        return self.requestBytes.flatMap(ServerHandshake.reparse)
    }
    /// Written before `onOpen`; read by any thread (a stored property, like `peerAddress`).
    var requestBytes: [UInt8]?
    /// Whatever the application attached (the C API keeps its per-connection pointer here): set
    /// by the accept hook or from any thread. A store releases and a load acquires, so what a
    /// thread wrote before storing a pointer is seen by the thread that loads it.
    @inlinable public var userData: UInt {
        get { self.userDataValue.load(ordering: .acquiring) }
        set { self.userDataValue.store(newValue, ordering: .releasing) }
    }
    @usableFromInline let userDataValue = Atomic<UInt>(0)

    /// Stores `new` in `userData` and returns what was there (acquiring and releasing).
    public func exchangeUserData(_ new: UInt) -> UInt {
        self.userDataValue.exchange(new, ordering: .acquiringAndReleasing)
    }

    /// Stores `new` in `userData` unless it holds `closed` (a value the closing code put there):
    /// then returns false and stores nothing.
    public func replaceUserData(_ new: UInt, unless closed: UInt) -> Bool {
        var current = self.userDataValue.load(ordering: .acquiring)
        while current != closed {
            let (exchanged, original) = self.userDataValue.compareExchange(
                expected: current, desired: new, successOrdering: .acquiringAndReleasing, failureOrdering: .acquiring)
            if exchanged { return true }
            current = original
        }
        return false
    }
    /// True for a Server-Sent Events stream (an event-stream path, or `HTTPAnswer.eventStream`).
    /// Loop thread only; `isEventStream` is the same for any thread.
    var eventStream: Bool {
        @inline(__always) _read { yield self.state.pointee.eventStream }
        @inline(__always) _modify { yield &self.state.pointee.eventStream }
    }
    /// True for a Server-Sent Events stream. Safe from any thread.
    public var isEventStream: Bool { self.transportFlag.load(ordering: .acquiring) & ~Connection.openedBit == Connection.eventStreamTransport }
    /// True for a connection that speaks STOMP (decided at the upgrade, before `onOpen`): its
    /// messages go to the STOMP session, and topics reach it as MESSAGE frames of its
    /// subscriptions. Safe from any thread.
    public var isStomp: Bool { self.transportFlag.load(ordering: .acquiring) & ~Connection.openedBit == Connection.stompTransport }
    /// True from the return of `onOpen` until the connection closes (a WebSocket, STOMP or an
    /// event stream; never a plain HTTP exchange). Safe from any thread.
    public var isOpen: Bool {
        self.transportFlag.load(ordering: .acquiring) & Connection.openedBit != 0 && !self.closedFlag.load(ordering: .acquiring)
    }
    static let eventStreamTransport: UInt8 = 1
    static let stompTransport: UInt8 = 2
    /// Set in `transportFlag` once `onOpen` has returned.
    static let openedBit: UInt8 = 0x80

    /// Marks the connection open for other threads (`isOpen`), once `onOpen` has returned.
    func noteOpened() {
        self.transportFlag.bitwiseOr(Connection.openedBit, ordering: .releasing)
    }
    /// Topics this connection is subscribed to.
    var subscriptions: [Subscription] {
        @inline(__always) _read { yield self.state.pointee.subscriptions }
        @inline(__always) _modify { yield &self.state.pointee.subscriptions }
    }
    /// Topic frames queued after the session's bytes, written straight from the shared frames
    /// with one writev per flush: fan-out copies nothing per subscriber. `sharedHead` bytes of
    /// the first are already written; `sharedBytes` are still to go. Any other write first
    /// moves these into the session's buffer (`spillShared`), so that order is kept.
    var sharedOut: RefQueue<SharedFrame> {
        @inline(__always) _read { yield self.state.pointee.sharedOut }
        @inline(__always) _modify { yield &self.state.pointee.sharedOut }
    }
    var sharedHead: Int {
        @inline(__always) _read { yield self.state.pointee.sharedHead }
        @inline(__always) _modify { yield &self.state.pointee.sharedHead }
    }
    var sharedBytes: Int {
        @inline(__always) _read { yield self.state.pointee.sharedBytes }
        @inline(__always) _modify { yield &self.state.pointee.sharedBytes }
    }
    /// Free the session's buffers once the handshake response is written.
    var releaseBuffersAfterFlush: Bool {
        @inline(__always) _read { yield self.state.pointee.releaseBuffersAfterFlush }
        @inline(__always) _modify { yield &self.state.pointee.releaseBuffersAfterFlush }
    }
    /// What only some connections need (clients, TLS, proxies, plain HTTP, resumed topics),
    /// out of line: an idle server-side WebSocket stays small. Made on first write.
    /// Made once, never replaced, and read by other threads too (`subprotocol`, `httpRequest`):
    /// published through an atomic reference, which also costs no run-time exclusivity check.
    var extras: ConnectionExtras? {
        @inline(__always) get { self.extrasReference.load(ordering: .acquiring)?.takeUnretainedValue() }
    }
    /// Holds one reference to the extras, released in `deinit`.
    let extrasReference = Atomic<Unmanaged<ConnectionExtras>?>(nil)
    var more: ConnectionExtras {
        if let e = self.extras { return e }
        let e = ConnectionExtras()
        self.extrasReference.store(Unmanaged.passRetained(e), ordering: .releasing)
        return e
    }

    /// The handshake, connect or closing deadline (0: none). Setting one arms the loop's timer
    /// wheel for it, so no path that sets a deadline can forget to.
    var deadline: UInt64 {
        @inline(__always) get { self.state.pointee.deadline }
        set {
            self.state.pointee.deadline = newValue
            if newValue != 0 { self.loop.armTimer(self, at: newValue) }
        }
    }
    var timerTick: UInt64 {
        @inline(__always) _read { yield self.state.pointee.timerTick }
        @inline(__always) _modify { yield &self.state.pointee.timerTick }
    }
    var timerIndex: Int {
        @inline(__always) get { Int(self.state.pointee.timerIndex) }
        @inline(__always) set { self.state.pointee.timerIndex = Int32(truncatingIfNeeded: newValue) }
    }
    var lastReceive: UInt64 {
        @inline(__always) _read { yield self.state.pointee.lastReceive }
        @inline(__always) _modify { yield &self.state.pointee.lastReceive }
    }
    var lastPing: UInt64 {
        @inline(__always) _read { yield self.state.pointee.lastPing }
        @inline(__always) _modify { yield &self.state.pointee.lastPing }
    }
    var pingQueued: Bool {
        @inline(__always) _read { yield self.state.pointee.pingQueued }
        @inline(__always) _modify { yield &self.state.pointee.pingQueued }
    }
    var pingSentAt: UInt64 {
        @inline(__always) _read { yield self.state.pointee.pingSentAt }
        @inline(__always) _modify { yield &self.state.pointee.pingSentAt }
    }
    var awaitingPong: Bool {
        @inline(__always) _read { yield self.state.pointee.awaitingPong }
        @inline(__always) _modify { yield &self.state.pointee.awaitingPong }
    }
    var isDirty: Bool {
        @inline(__always) _read { yield self.state.pointee.isDirty }
        @inline(__always) _modify { yield &self.state.pointee.isDirty }
    }
    var writeInterest: Bool {
        @inline(__always) _read { yield self.state.pointee.writeInterest }
        @inline(__always) _modify { yield &self.state.pointee.writeInterest }
    }
    var readPaused: Bool {
        @inline(__always) _read { yield self.state.pointee.readPaused }
        @inline(__always) _modify { yield &self.state.pointee.readPaused }
    }
    /// The application asked not to read (`holdReading`): nothing resumes reading until it lets go.
    var readHeld: Bool {
        @inline(__always) _read { yield self.state.pointee.readHeld }
        @inline(__always) _modify { yield &self.state.pointee.readHeld }
    }
    var backlogged: Bool {
        @inline(__always) _read { yield self.state.pointee.backlogged }
        @inline(__always) _modify { yield &self.state.pointee.backlogged }
    }
    var closeAfterFlush: Bool {
        @inline(__always) _read { yield self.state.pointee.closeAfterFlush }
        @inline(__always) _modify { yield &self.state.pointee.closeAfterFlush }
    }
    var wantsDrain: Bool {
        @inline(__always) _read { yield self.state.pointee.wantsDrain }
        @inline(__always) _modify { yield &self.state.pointee.wantsDrain }
    }
    var openNotified: Bool {
        @inline(__always) _read { yield self.state.pointee.openNotified }
        @inline(__always) _modify { yield &self.state.pointee.openNotified }
    }
    var closeCode: CloseCode {
        @inline(__always) _read { yield self.state.pointee.closeCode }
        @inline(__always) _modify { yield &self.state.pointee.closeCode }
    }
    /// We sent the first close frame: `onClose` reports our code and reason, not the peer's echo.
    var closedFirst: Bool {
        @inline(__always) _read { yield self.state.pointee.closedFirst }
        @inline(__always) _modify { yield &self.state.pointee.closedFirst }
    }

    let bufferedBytes = Atomic<Int>(0)
    let inFlight = Atomic<Int>(0)
    let closedFlag = Atomic<Bool>(false)
    let compressing = Atomic<Bool>(false)
    /// What the connection carries besides plain WebSocket messages (0, or an event stream, or
    /// STOMP), and `openedBit`.
    let transportFlag = Atomic<UInt8>(0)
    let rtt = Atomic<Int>(-1)
    let dropped = Atomic<Int>(0)
    let coalesced = Atomic<Int>(0)

    // TLS.
    var tls: TLSSession? { self.tlsLayers.last }
    /// Server: this port speaks TLS. Client: the URL was wss://.
    var wantsTLS: Bool {
        @inline(__always) _read { yield self.state.pointee.wantsTLS }
        @inline(__always) _modify { yield &self.state.pointee.wantsTLS }
    }
    /// Plain HTTP arrived on a TLS port: the 400 is being written; input is ignored.
    var refusedPlaintext: Bool {
        @inline(__always) _read { yield self.state.pointee.refusedPlaintext }
        @inline(__always) _modify { yield &self.state.pointee.refusedPlaintext }
    }

    init(serverSideOf server: Server, loop: EventLoop, fd: Int32, peer: SocketAddress) {
        self.id = .next(loop: loop.index)
        self.role = .server
        self.loop = loop
        self.sharedOptions = server.sharedOptions
        self.server = server
        self.state = .allocate(capacity: 1)
        self.peerAddress = peer
        self.state.initialize(to: State(
            fd: fd, handlers: server.handlers, phase: .handshaking,
            handshakeBox: ServerHandshakeBox(ServerHandshake(policy: server.handshakePolicy)),
            session: Session(role: .server)))
        self.deadline = loop.now + UInt64(self.options.handshakeTimeout)
        self.lastReceive = loop.now
        // Counted from accept; over the limit, a request that parses is answered 503.
        self.handshakeBox?.handshake.atCapacity = !server.connectionOpened()
        self.wantsTLS = server.tlsContexts != nil
        if server.accessLog != nil {
            self.state.pointee.counting = true
            self.more.access = AccessCounts()
        }
        self.state.pointee.awaitingProxyHeader = server.configuration.proxyProtocol
    }

    init(clientOn loop: EventLoop, fd: Int32, peer: SocketAddress, configuration: ClientConfiguration, handlers: Handlers, handshake: ClientHandshake) {
        self.id = .next(loop: loop.index)
        self.role = .client
        self.loop = loop
        self.sharedOptions = SharedOptions(configuration.options)
        self.server = nil
        self.state = .allocate(capacity: 1)
        self.peerAddress = peer
        self.state.initialize(to: State(fd: fd, handlers: handlers, phase: .connecting, session: Session(role: .client)))
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
        self.armTimer()
        self.loop.markDirty(self)
        self.handlers.onOpen?(self)
        self.noteOpened()
        if self.phase == .open && leftover.count > 0 { self.parseFrames(leftover) }
    }
}

final class ServerHandshakeBox {
    var handshake: ServerHandshake
    init(_ handshake: ServerHandshake) { self.handshake = handshake }
}
