#if !os(Linux)
#error("Petrel runs on Linux only: its runtime is built on epoll, eventfd and timerfd")
#endif

import CLinux
import Glibc
import PetrelCore
import Synchronization

/// Work handed to a loop from another thread.
enum Command {
    case send(ConnectionID, MessageKind, [UInt8])
    case close(ConnectionID, CloseCode, String)
    case ping(ConnectionID, [UInt8])
    case subscribe(ConnectionID, String)
    case unsubscribe(ConnectionID, String)
    case publish(SharedFrame)
    case attach(Connection)
    case stop(graceMilliseconds: Int)
    case call(@Sendable () -> Void)
}

/// What an epoll registration refers to.
enum Slot {
    case empty
    case wake
    case timer
    case listener(Listener)
    case connection(Connection)
}

final class Listener {
    let fd: Int32
    var paused = false

    init(fd: Int32) { self.fd = fd }
}

/// One event-loop thread: an epoll set, an eventfd through which other threads hand it work, a
/// timerfd that ticks the coarse timers, and the connections pinned to it for life. Everything
/// here is touched only by the loop's own thread, except `enqueue` and `registry`.
final class EventLoop: @unchecked Sendable {
    let index: Int
    let epfd: Int32
    let wakeFd: Int32
    let timerFd: Int32
    let timerResolution: Int

    private let queue = Lock<[Command]>([])
    /// Cross-thread view of the connections, for sends and lookups from other threads.
    let registry = Lock<[ConnectionID: Connection]>([:])
    private let threadID = Atomic<UInt>(0)
    /// The kernel's id of the thread running `run()` (0 before it starts): for leak tests.
    let kernelThreadID = Atomic<Int32>(0)

    /// Everything only the loop thread changes, in one value the loop owns: behind a pointer,
    /// its accesses are not checked for overlap at run time, as class `var`s are (see
    /// `Connection.State`, which follows the same rule).
    let state: UnsafeMutablePointer<State>

    struct State: ~Copyable {
        var connections: [ConnectionID: Connection] = [:]
        var slots: [Slot] = []
        var dirty = RefQueue<Connection>()
        var timers: TimerWheel<Connection>
        /// Scratch for the connections a tick takes off the wheel.
        var due: [Connection] = []
        var openingRequest: (ConnectionID, HandshakeRequest)? = nil
        var topics = LoopSubscribers()
        /// The kinds of STOMP subscriber on this loop (`Connection+Stomp`), one object per key.
        var stompKinds: [StompMessageKey: StompKind] = [:]
        var listeners: [Listener] = []
        var tlsBufferStorage: UnsafeMutableRawBufferPointer? = nil
        var now: UInt64 = monotonicMilliseconds()
        var stopping = false
        var stopDeadline: UInt64 = 0
        var finished = false
    }

    var connections: [ConnectionID: Connection] {
        @inline(__always) _read { yield self.state.pointee.connections }
        @inline(__always) _modify { yield &self.state.pointee.connections }
    }
    var slots: [Slot] {
        @inline(__always) _read { yield self.state.pointee.slots }
        @inline(__always) _modify { yield &self.state.pointee.slots }
    }
    /// Connections with output to flush at the end of this turn.
    var dirty: RefQueue<Connection> {
        @inline(__always) _read { yield self.state.pointee.dirty }
        @inline(__always) _modify { yield &self.state.pointee.dirty }
    }
    /// The parsed upgrade request of the connection whose onOpen is running (kept here rather
    /// than in every connection).
    var openingRequest: (ConnectionID, HandshakeRequest)? {
        @inline(__always) _read { yield self.state.pointee.openingRequest }
        @inline(__always) _modify { yield &self.state.pointee.openingRequest }
    }
    var topics: LoopSubscribers {
        @inline(__always) _read { yield self.state.pointee.topics }
        @inline(__always) _modify { yield &self.state.pointee.topics }
    }
    /// The one `StompKind` of `key` on this loop. Kinds no subscription holds any more are
    /// dropped once there are over 1,024.
    func stompKind(_ key: StompMessageKey) -> StompKind {
        if let k = self.state.pointee.stompKinds[key] { return k }
        if self.state.pointee.stompKinds.count >= 1024 {
            self.state.pointee.stompKinds = self.state.pointee.stompKinds.filter { !isKnownUniquelyReferenced(&$0.value.reference) }
        }
        let k = StompKind(key)
        self.state.pointee.stompKinds[key] = k
        return k
    }
    var listeners: [Listener] {
        @inline(__always) _read { yield self.state.pointee.listeners }
        @inline(__always) _modify { yield &self.state.pointee.listeners }
    }
    /// Scratch for gathering a subscriber's queued topic frames into one writev.
    let iovecs = UnsafeMutablePointer<iovec>.allocate(capacity: EventLoop.maxIovecs)
    static let maxIovecs = 64
    let zlibPool = ZlibPool()
    /// One receive buffer per loop (uWS): every connection reads into it and parses in place.
    let readBuffer: UnsafeMutableRawBufferPointer
    /// Plaintext out of TLS sessions (allocated when the loop first meets one).
    var tlsBuffer: UnsafeMutableRawBufferPointer {
        if let b = self.state.pointee.tlsBufferStorage { return b }
        let b = UnsafeMutableRawBufferPointer.allocate(byteCount: 64 * 1024, alignment: 64)
        self.state.pointee.tlsBufferStorage = b
        return b
    }
    var now: UInt64 {
        @inline(__always) _read { yield self.state.pointee.now }
        @inline(__always) _modify { yield &self.state.pointee.now }
    }

    /// The server this loop serves, or nil for a client loop (set before the loop starts).
    unowned(unsafe) var server: Server?
    var stopping: Bool {
        @inline(__always) _read { yield self.state.pointee.stopping }
        @inline(__always) _modify { yield &self.state.pointee.stopping }
    }
    var stopDeadline: UInt64 {
        @inline(__always) _read { yield self.state.pointee.stopDeadline }
        @inline(__always) _modify { yield &self.state.pointee.stopDeadline }
    }
    private(set) var finished: Bool {
        @inline(__always) _read { yield self.state.pointee.finished }
        @inline(__always) _modify { yield &self.state.pointee.finished }
    }

    static let readBufferSize = 256 * 1024

    init(index: Int, timerResolution: Int) throws(RuntimeError) {
        self.index = index
        self.timerResolution = max(10, timerResolution)
        let ep = epoll_create1(Int32(EPOLL_CLOEXEC))
        guard ep >= 0 else { throw .system(.thread, "epoll_create1") }
        let wake = petrel_eventfd()
        guard wake >= 0 else {
            Syscall.close(ep)
            throw .system(.thread, "eventfd")
        }
        let timer = petrel_timerfd(self.timerResolution)
        guard timer >= 0 else {
            Syscall.close(ep)
            Syscall.close(wake)
            throw .system(.thread, "timerfd")
        }
        self.state = .allocate(capacity: 1)
        self.state.initialize(to: State(timers: TimerWheel(resolution: self.timerResolution, now: monotonicMilliseconds())))
        self.epfd = ep
        self.wakeFd = wake
        self.timerFd = timer
        self.readBuffer = .allocate(byteCount: EventLoop.readBufferSize, alignment: 64)
        self.register(fd: wake, slot: .wake, events: UInt32(EPOLLIN.rawValue))
        self.register(fd: timer, slot: .timer, events: UInt32(EPOLLIN.rawValue))
    }

    deinit {
        Syscall.close(self.epfd)
        Syscall.close(self.wakeFd)
        Syscall.close(self.timerFd)
        self.readBuffer.deallocate()
        self.iovecs.deallocate()
        self.state.pointee.tlsBufferStorage?.deallocate()
        self.events.deallocate()
        self.state.deinitialize(count: 1)
        self.state.deallocate()
    }

    // MARK: Threads

    var isCurrentThread: Bool { self.threadID.load(ordering: .acquiring) == UInt(pthread_self()) }

    /// Runs the loop on the calling thread until it is stopped.
    func run() {
        self.kernelThreadID.store(petrel_gettid(), ordering: .releasing)
        self.threadID.store(UInt(pthread_self()), ordering: .releasing)
        while !self.finished { self.runOnce(timeoutMilliseconds: -1) }
        self.releaseState()
        self.threadID.store(0, ordering: .releasing)
    }

    /// After the last iteration: drops every connection and queued command, so that nothing
    /// (a connection holds its loop strongly; a queued closure may hold a connection) keeps the
    /// loop and its descriptors alive in a cycle.
    func releaseState() {
        self.queue.withLock { q in q.removeAll() }
        self.connections.removeAll()
        self.registry.withLock { $0.removeAll() }
        self.dirty.removeAll()
        self.topics.removeAll()
        self.state.pointee.stompKinds.removeAll()
        self.slots.removeAll()
        self.state.pointee.timers.removeAll()
        self.state.pointee.due.removeAll()
    }

    private lazy var events = UnsafeMutableRawPointer.allocate(
        byteCount: Int(EventLoop.maxEvents) * petrel_epoll_event_size(), alignment: 16)
    private static let maxEvents: Int32 = 512

    /// One iteration: waits up to `timeoutMilliseconds` (-1: until something happens) for
    /// events, handles them, and flushes what they queued. `run` loops over it; an external
    /// host calls it through `Server.service`.
    func runOnce(timeoutMilliseconds: Int32) {
        let typed = self.events.assumingMemoryBound(to: epoll_event.self)
        let n = epoll_wait(self.epfd, typed, EventLoop.maxEvents, timeoutMilliseconds)
        self.now = monotonicMilliseconds()
        if n < 0 { return }
        for i in 0..<Int(n) {
            let fd = Int(petrel_epoll_event_data(typed, Int32(i)))
            let ev = petrel_epoll_event_events(typed, Int32(i))
            guard fd < self.slots.count else { continue }
            switch self.slots[fd] {
            case .empty: break
            case .wake: self.drainCommands()
            case .timer: self.tick()
            case .listener(let l): self.accept(l)
            case .connection(let c):
                if c.phase == .connecting {
                    // A finished connect (success or failure) is read from SO_ERROR once.
                    c.writable()
                    continue
                }
                if ev & UInt32(EPOLLOUT.rawValue) != 0 { c.writable() }
                if ev & UInt32(EPOLLIN.rawValue | EPOLLERR.rawValue | EPOLLHUP.rawValue) != 0 {
                    // Reading paused (backpressure, or held) masks EPOLLIN but not an error or a
                    // hang-up, which level-triggered epoll reports again at once: end it here.
                    if c.readPaused && ev & UInt32(EPOLLERR.rawValue | EPOLLHUP.rawValue) != 0 {
                        c.closeTransport(reason: .abnormalClosure, message: "connection reset while reading was paused")
                    } else {
                        c.readable()
                    }
                }
            }
        }
        self.flushDirty()
        if self.stopping { self.checkStopped() }
    }

    /// Marks the calling thread as the loop's for the duration of `body` (external-poll mode,
    /// where the host's thread drives the loop).
    func asCurrentThread<R>(_ body: () -> R) -> R {
        self.threadID.store(UInt(pthread_self()), ordering: .releasing)
        defer { self.threadID.store(0, ordering: .releasing) }
        return body()
    }

    /// Hands `command` to the loop from any thread.
    func enqueue(_ command: Command) {
        let wasEmpty = self.queue.withLock { q in
            q.append(command)
            return q.count == 1
        }
        if wasEmpty {
            var one: UInt64 = 1
            _ = Glibc.write(self.wakeFd, &one, 8)
        }
    }

    /// Runs `command` now if called on the loop's thread, else queues it.
    func execute(_ command: Command) {
        if self.isCurrentThread { self.handle(command) } else { self.enqueue(command) }
    }

    private func drainCommands() {
        var counter: UInt64 = 0
        _ = Glibc.read(self.wakeFd, &counter, 8)
        let batch = self.queue.withLock { q -> [Command] in
            let b = q
            q.removeAll(keepingCapacity: true)
            return b
        }
        for c in batch { self.handle(c) }
    }

    private func handle(_ command: Command) {
        switch command {
        case .send(let id, let kind, let bytes):
            if let c = self.connections[id] {
                c.inFlight.subtract(bytes.count, ordering: .relaxed)
                _ = bytes.withUnsafeBytes { c.sendOnLoop(kind, $0, accepted: true) }
            }
        case .close(let id, let code, let reason):
            self.connections[id]?.closeOnLoop(code: code, reason: reason)
        case .ping(let id, let payload):
            if let c = self.connections[id] { _ = payload.withUnsafeBytes { c.pingOnLoop($0) } }
        case .subscribe(let id, let topic):
            self.connections[id]?.subscribeOnLoop(topic)
        case .unsubscribe(let id, let topic):
            self.connections[id]?.unsubscribeOnLoop(topic)
        case .publish(let frame):
            guard let subscribers = self.topics[frame.topic] else { return }
            // Borrowed, not retained: a retain and release of each subscriber around the call
            // cost a cache miss each, a quarter of a 10,000-subscriber fan-out. The local copy of
            // the list keeps every subscriber alive while it runs, whatever `deliver` closes.
            subscribers.withUnsafeBufferPointer { list in
                list.withMemoryRebound(to: Unmanaged<Connection>.self) { refs in
                    for r in refs { r._withUnsafeGuaranteedRef { $0.deliver(frame) } }
                }
            }
        case .attach(let c):
            c.attach()
        case .stop(let grace):
            self.beginStop(grace: grace)
        case .call(let body):
            body()
        }
    }

    // MARK: Registration

    func register(fd: Int32, slot: Slot, events: UInt32) {
        let i = Int(fd)
        if i >= self.slots.count { self.slots.append(contentsOf: repeatElement(.empty, count: i + 1 - self.slots.count)) }
        self.slots[i] = slot
        _ = petrel_epoll_ctl(self.epfd, EPOLL_CTL_ADD, fd, events, UInt64(fd))
    }

    func modify(fd: Int32, events: UInt32) {
        _ = petrel_epoll_ctl(self.epfd, EPOLL_CTL_MOD, fd, events, UInt64(fd))
    }

    func unregister(fd: Int32) {
        _ = petrel_epoll_ctl(self.epfd, EPOLL_CTL_DEL, fd, 0, 0)
        if Int(fd) < self.slots.count { self.slots[Int(fd)] = .empty }
    }

    func adopt(_ c: Connection) {
        self.connections[c.id] = c
        self.registry.withLock { $0[c.id] = c }
    }

    func forget(_ c: Connection) {
        self.state.pointee.timers.disarm(c)
        self.connections.removeValue(forKey: c.id)
        self.registry.withLock { _ = $0.removeValue(forKey: c.id) }
    }

    func lookup(_ id: ConnectionID) -> Connection? {
        // On the loop's own thread its table needs no lock.
        if self.isCurrentThread { return self.connections[id] }
        return self.registry.withLock { $0[id] }
    }

    /// Inlined: after the first message of a turn a connection is already dirty.
    @inline(__always)
    func markDirty(_ c: Connection) {
        if !c.isDirty { self.addDirty(c) }
    }

    func addDirty(_ c: Connection) {
        c.isDirty = true
        self.dirty.append(c)
    }

    private func flushDirty() {
        // Flushing can dirty more connections (a drain callback sends): they join the end of
        // the list and are flushed in this pass too, until it is quiet. The list holds each
        // connection until the end; the access to it ends before the flush begins.
        var i = 0
        while i < self.dirty.count {
            self.dirty.unmanaged(i)._withUnsafeGuaranteedRef { c in
                c.isDirty = false
                c.flush()
            }
            i += 1
        }
        self.dirty.removeAll(keepingCapacity: true)
    }

    // MARK: Accepting

    func addListener(fd: Int32) {
        let l = Listener(fd: fd)
        self.listeners.append(l)
        self.register(fd: fd, slot: .listener(l), events: UInt32(EPOLLIN.rawValue))
    }

    private func accept(_ l: Listener) {
        guard let server = self.server else { return }
        for _ in 0..<64 {
            var storage = sockaddr_storage()
            var len = socklen_t(MemoryLayout<sockaddr_storage>.size)
            let fd = petrel_accept(l.fd, &storage, &len)
            if fd < 0 {
                let e = errno
                if e == EINTR || e == ECONNABORTED { continue }
                if e == EMFILE || e == ENFILE || e == ENOBUFS || e == ENOMEM {
                    // Out of descriptors: stop listening until the next tick rather than spin.
                    l.paused = true
                    _ = petrel_epoll_ctl(self.epfd, EPOLL_CTL_DEL, l.fd, 0, 0)
                }
                return
            }
            let peer = withUnsafeBytes(of: &storage) { SocketAddress($0.baseAddress!, length: len) }
            Syscall.noDelay(fd)
            let c = Connection(serverSideOf: server, loop: self, fd: fd, peer: peer)
            self.adopt(c)
            self.register(fd: fd, slot: .connection(c), events: UInt32(EPOLLIN.rawValue))
        }
    }

    // MARK: Timers and stopping

    private func tick() {
        var expirations: UInt64 = 0
        _ = Glibc.read(self.timerFd, &expirations, 8)
        for l in self.listeners where l.paused {
            l.paused = false
            _ = petrel_epoll_ctl(self.epfd, EPOLL_CTL_ADD, l.fd, UInt32(EPOLLIN.rawValue), UInt64(l.fd))
        }
        self.state.pointee.timers.expire(now: self.now, into: &self.state.pointee.due)
        for i in self.state.pointee.due.indices {
            let c = self.state.pointee.due[i]
            guard c.phase != .closed else { continue }
            c.checkTimers(now: self.now)
            c.armTimer()
        }
        self.state.pointee.due.removeAll(keepingCapacity: self.state.pointee.due.count <= 1024)
    }

    /// Arms `c`'s timer for `due` (see `TimerWheel`).
    func armTimer(_ c: Connection, at due: UInt64) {
        // A deadline set on the way out of a connection already closed (and forgotten) must not
        // bring it back: the wheel holds only connections the loop still has.
        guard c.phase != .closed else { return }
        self.state.pointee.timers.arm(c, at: due)
    }

    /// Takes `c` off the timer wheel.
    func disarmTimer(_ c: Connection) {
        self.state.pointee.timers.disarm(c)
    }

    /// Connections armed on the wheel (for tests).
    var armedTimers: Int { self.state.pointee.timers.armedCount }

    private func beginStop(grace: Int) {
        if self.stopping { return }
        self.stopping = true
        self.stopDeadline = self.now + UInt64(max(0, grace))
        for l in self.listeners {
            self.unregister(fd: l.fd)
            Syscall.close(l.fd)
        }
        self.listeners.removeAll()
        for c in Array(self.connections.values) { c.shutdownForStop() }
        self.checkStopped()
    }

    private func checkStopped() {
        if self.connections.isEmpty {
            self.finished = true
        } else if self.now >= self.stopDeadline {
            for c in Array(self.connections.values) { c.closeTransport(reason: .abnormalClosure, message: "server stopped") }
            self.finished = true
        }
    }
}

/// Starts a joinable pthread running `body`, named `name` (at most 15 bytes: what `top -H`,
/// gdb and /proc/PID/task/*/comm show).
///
/// `runDetached` is the public form: a thread nobody joins, for blocking work (name
/// resolution, file loading, a stop that waits) that must not hold a Swift concurrency thread.
public func runDetached(name: String, _ body: @escaping @Sendable () -> Void) throws(RuntimeError) {
    let thread = try spawnThread(name: name, body)
    pthread_detach(thread)
}

func spawnThread(name: String, _ body: @escaping () -> Void) throws(RuntimeError) -> pthread_t {
    final class Box {
        let body: () -> Void
        init(_ body: @escaping () -> Void) { self.body = body }
    }
    let box = Unmanaged.passRetained(Box({
        petrel_set_thread_name(name)
        body()
    })).toOpaque()
    var thread = pthread_t()
    let rc = pthread_create(
        &thread, nil,
        { arg in
            Unmanaged<Box>.fromOpaque(arg!).takeRetainedValue().body()
            return nil
        }, box)
    guard rc == 0 else {
        Unmanaged<Box>.fromOpaque(box).release()
        throw .system(.thread, "pthread_create", rc)
    }
    return thread
}
