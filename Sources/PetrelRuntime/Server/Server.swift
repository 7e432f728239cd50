import CLinux
import Glibc
import PetrelCore
import Synchronization

/// A WebSocket server: N loop threads, each with its own listening socket on the same port.
///
/// `send`, `close`, `publish`, `subscribe` and `stop` are safe from any thread. Callbacks run on
/// the loop thread that owns the connection.
public final class Server: @unchecked Sendable {
    public let configuration: ServerConfiguration
    public let handlers: Handlers
    let topics = TopicRegistry()
    /// `configuration.options`, once for all connections.
    let sharedOptions: SharedOptions
    /// What the opening handshake accepts, made once from the configuration.
    let handshakePolicy: ServerHandshake.Policy
    /// Runs once every loop has finished after a stop, on the last loop's thread (or the
    /// host's thread in external-poll mode). Set it before `start`.
    public var onStopped: (@Sendable () -> Void)?
    /// The loops: written by `start` before any of them runs, then read by every thread (to find
    /// a connection's loop on each send). Behind a pointer, like the loops' own state, so that
    /// those reads pay no run-time exclusivity check (see `Connection.State`).
    private let loopsStorage: UnsafeMutablePointer<[EventLoop]> = {
        let p = UnsafeMutablePointer<[EventLoop]>.allocate(capacity: 1)
        p.initialize(to: [])
        return p
    }()
    private(set) var loops: [EventLoop] {
        @inline(__always) _read { yield self.loopsStorage.pointee }
        @inline(__always) _modify { yield &self.loopsStorage.pointee }
    }
    private let openConnections = Atomic<Int>(0)
    private let lifecycle = Lock<Lifecycle>(.idle)
    private var threads: [pthread_t] = []
    /// Driven by the host through `service` (external-poll mode) rather than by threads.
    public private(set) var external = false
    private let stoppedLoops = Atomic<Int>(0)
    /// The port actually bound (useful with port 0).
    public private(set) var port: UInt16 = 0
    public let startedAt = monotonicMilliseconds()
    /// The static file root, resolved at start.
    private(set) var staticFiles: StaticFiles?
    /// Set at start, before any loop runs; read by the loops only.
    private(set) var accessLog: AccessLogWriter?
    private(set) var trustedProxies: TrustedProxies?
    /// The TLS context(s), made at start when the configuration has TLS.
    private(set) var tlsContexts: TLSServerContexts?
    /// The Redis engine, when the configuration names one (connected at start).
    private(set) var redis: RedisEngine?
    /// `observe`'s observers, by topic: set before start, read-only after.
    private var observers: [String: @Sendable (SharedFrame) -> Void] = [:]

    enum Lifecycle { case idle, starting, running, stopping, stopped }

    public init(configuration: ServerConfiguration, handlers: Handlers) {
        self.configuration = configuration
        self.handlers = handlers
        self.sharedOptions = SharedOptions(configuration.options)
        var policy = ServerHandshake.Policy()
        policy.maxHeaderBytes = configuration.options.maxHeaderBytes
        policy.maxHeaderCount = configuration.options.maxHeaderCount
        policy.allowedOrigins = configuration.allowedOrigins
        policy.subprotocols = configuration.subprotocols
        if let stomp = configuration.stomp, stomp.subprotocols {
            for v in StompVersion.allCases.reversed() where !policy.subprotocols.contains(v.subprotocol) {
                policy.subprotocols.append(v.subprotocol)
            }
        }
        policy.compression = configuration.compression
        policy.session = configuration.options.session
        policy.answersPlainRequests = true
        self.handshakePolicy = policy
    }

    deinit {
        self.loopsStorage.deinitialize(count: 1)
        self.loopsStorage.deallocate()
    }

    /// Binds and starts every loop on background threads; returns once the server is listening.
    public func start() throws(RuntimeError) {
        try self.prepare()
        for loop in self.loops { try self.spawn(loop) }
    }

    /// `start`, with `onStopped` set once this call has claimed the server (a server starts
    /// once) and before any loop thread can read it: a second caller gets the error and leaves
    /// the first caller's `onStopped` in place.
    public func start(onStopped: @escaping @Sendable () -> Void) throws(RuntimeError) {
        try self.prepare()
        self.onStopped = onStopped
        for loop in self.loops { try self.spawn(loop) }
    }

    /// Binds and runs the server on the calling thread (plus background threads for the other
    /// loops) until `stop` is called from another thread or a callback.
    public func run() throws(RuntimeError) {
        try self.prepare()
        for loop in self.loops.dropFirst() { try self.spawn(loop) }
        self.loops[0].run()
        self.loopFinished()
        self.waitForLoops()
    }

    /// External-poll mode: binds one loop and runs no thread. The host watches the returned file
    /// descriptor (readable when there is work: network events, timer ticks, work queued from
    /// other threads) and calls `service` on one thread of its own, which runs the callbacks.
    public func startExternal() throws(RuntimeError) -> Int32 {
        try self.prepare(forceThreads: 1)
        self.external = true
        return self.loops[0].epfd
    }

    /// Runs one iteration of the external loop, waiting up to `timeout` milliseconds (0: not at
    /// all). Returns false once the server has stopped.
    public func service(timeout: Milliseconds) -> Bool {
        guard self.external, let loop = self.loops.first else { return false }
        if loop.finished { return false }
        loop.asCurrentThread { loop.runOnce(timeoutMilliseconds: Int32(clamping: timeout)) }
        if loop.finished {
            loop.releaseState()
            self.loopFinished()
            self.lifecycle.withLock { $0 = .stopped }
            return false
        }
        return true
    }

    private func prepare(forceThreads: Int? = nil) throws(RuntimeError) {
        try self.lifecycle.withLock { (state: inout Lifecycle) throws(RuntimeError) in
            guard state == .idle else { throw RuntimeError(.stopped, "a server can be started once") }
            state = .starting
        }
        if case .redis(let address) = self.configuration.engine {
            let engine = RedisEngine(address: address, server: self, timeout: self.configuration.engineTimeout)
            do throws(RuntimeError) {
                try engine.connect()
            } catch {
                self.lifecycle.withLock { $0 = .stopped }
                throw error
            }
            self.redis = engine
            // Observed topics: their history goes to the observers before any client or reader.
            for topic in self.observers.keys.sorted() { engine.track(topic) }
        }
        do throws(RuntimeError) {
            try self.openResources()
        } catch {
            self.lifecycle.withLock { $0 = .stopped }
            self.redis?.stop()
            throw error
        }
        let count = forceThreads ?? (self.configuration.threads > 0 ? self.configuration.threads : max(1, Int(sysconf(Int32(_SC_NPROCESSORS_ONLN)))))
        guard count <= 255 else { throw RuntimeError(.thread, "at most 255 loop threads") }
        let address: SocketAddress
        do throws(RuntimeError) {
            guard let first = try SocketAddress.resolve(host: self.configuration.host, port: self.configuration.port).first else {
                throw RuntimeError(.resolve, "no address for \(self.configuration.host)")
            }
            address = first
        } catch {
            self.lifecycle.withLock { $0 = .stopped }
            self.redis?.stop()
            throw error
        }
        var fds: [Int32] = []
        do throws(RuntimeError) {
            var bindAddress = address
            for _ in 0..<count {
                let fd = try Syscall.listen(bindAddress, backlog: self.configuration.backlog)
                fds.append(fd)
                // With port 0 the first bind picks the port; the others must share it.
                bindAddress = Syscall.localAddress(fds[0])
            }
            self.port = Syscall.localAddress(fds[0]).port
            for i in 0..<count {
                let loop = try EventLoop(index: i, timerResolution: self.configuration.timerResolution)
                loop.server = self
                loop.addListener(fd: fds[i])
                self.loops.append(loop)
            }
            try self.redis?.startReading()
            self.lifecycle.withLock { $0 = .running }
        } catch {
            if self.loops.isEmpty { for fd in fds { Syscall.close(fd) } }
            self.lifecycle.withLock { $0 = .stopped }
            self.redis?.stop()
            throw error
        }
    }

    private func spawn(_ loop: EventLoop) throws(RuntimeError) {
        let t = try spawnThread(name: "petrel-loop") { [self] in
            loop.run()
            self.loopFinished()
        }
        self.threads.append(t)
    }

    /// Counts a loop that has finished; the last one runs `onStopped` (on its own thread), even
    /// when the stop began on a loop thread and nobody waits for it.
    private func loopFinished() {
        if self.stoppedLoops.add(1, ordering: .acquiringAndReleasing).newValue == self.loops.count {
            self.onStopped?()
        }
    }

    /// Stops accepting, sends close 1001 to every WebSocket peer, waits up to `grace`
    /// milliseconds for them to close, then closes what is left and ends the loop threads.
    /// From a non-loop thread it returns when everything is stopped; from a callback it only
    /// starts the shutdown (it cannot wait for its own thread).
    public func stop(grace: Milliseconds = 5_000) {
        let first = self.lifecycle.withLock { (state: inout Lifecycle) -> Bool in
            guard state == .running else { return false }
            state = .stopping
            return true
        }
        if first {
            // The engine first: nothing more arrives for the loops to deliver.
            self.redis?.stop()
            for loop in self.loops { loop.enqueue(.stop(graceMilliseconds: grace)) }
        }
        if self.loops.contains(where: { $0.isCurrentThread }) { return }
        // In external-poll mode only the host's thread drives the loop: the host sees the stop
        // complete when `service` returns false.
        if self.external { return }
        self.waitForLoops()
    }

    /// `stop`, begun from any thread without waiting for it (a task's cancellation handler, say):
    /// the stop runs on a thread of its own, and `onStopped` says when the loops are done.
    public func beginStop(grace: Milliseconds = 5_000) {
        do throws(RuntimeError) {
            try runDetached(name: "petrel-stop") { [self] in self.stop(grace: grace) }
        } catch {
            // No thread to wait on: start the shutdown here; the loops still finish it.
            let first = self.lifecycle.withLock { (state: inout Lifecycle) -> Bool in
                guard state == .running else { return false }
                state = .stopping
                return true
            }
            if first { for loop in self.loops { loop.enqueue(.stop(graceMilliseconds: grace)) } }
        }
    }

    private func waitForLoops() {
        while self.stoppedLoops.load(ordering: .acquiring) < self.loops.count {
            var ts = timespec(tv_sec: 0, tv_nsec: 1_000_000)
            nanosleep(&ts, nil)
        }
        let join = self.lifecycle.withLock { (state: inout Lifecycle) -> Bool in
            guard state != .stopped else { return false }
            state = .stopped
            return true
        }
        if join {
            for t in self.threads { pthread_join(t, nil) }
            self.threads = []
        }
    }

    /// Loads the certificate and key again (from `configuration`, or the files given at start),
    /// for connections accepted from now on; open ones keep theirs. Safe from any thread. On
    /// failure the server goes on with the files it had.
    public func reloadTLS(_ configuration: TLSServerConfiguration? = nil) throws(RuntimeError) {
        guard let contexts = self.tlsContexts else { throw RuntimeError(.configuration, "the server was not started with TLS") }
        try contexts.reload(configuration)
    }

    /// The kernel thread ids of the loop threads that have started (for leak tests).
    var loopKernelThreadIDs: [Int32] { self.loops.map { $0.kernelThreadID.load(ordering: .acquiring) }.filter { $0 != 0 } }

    /// Whether the calling thread is the loop thread that owns connection `id`.
    public func isLoopThread(of id: ConnectionID) -> Bool {
        id.loopIndex < self.loops.count && self.loops[id.loopIndex].isCurrentThread
    }

    /// Whether the calling thread is one of this server's loop threads (a callback is running).
    public var isCurrentLoopThread: Bool { self.loops.contains { $0.isCurrentThread } }

    /// Whether the caller is the Redis engine's reader thread, where observers run.
    public var isCurrentEngineThread: Bool { self.redis?.isReaderThread ?? false }

    /// Whether the server was started and has not finished stopping: it must be stopped (and
    /// waited for) before it is released.
    public var needsStop: Bool { self.lifecycle.withLock { $0 == .running || $0 == .stopping || $0 == .starting } }

    /// Whether the server is accepting and serving.
    public var isRunning: Bool { self.lifecycle.withLock { $0 == .running } }

    // MARK: Connections

    /// Open sockets (WebSocket, SSE, or still in their handshake).
    public var connectionCount: Int { self.openConnections.load(ordering: .relaxed) }

    /// Counts a new socket; false when it is over `maxConnections` (it will be answered 503).
    func connectionOpened() -> Bool {
        self.openConnections.add(1, ordering: .relaxed).newValue <= self.configuration.maxConnections
    }

    /// What `start` opens from the configuration before any loop runs: the static root, the
    /// trusted proxies, the access log and the TLS contexts. A failure stops the start.
    private func openResources() throws(RuntimeError) {
        if let root = self.configuration.staticRoot {
            guard let files = StaticFiles(root: root, maxFileSize: self.configuration.maxStaticFileSize) else {
                throw RuntimeError(.configuration, "static root \(root): \(String(cString: strerror(errno)))", errno: errno)
            }
            self.staticFiles = files
        }
        self.trustedProxies = try TrustedProxies(self.configuration.trustedProxies)
        if let log = self.configuration.accessLog { self.accessLog = try AccessLogWriter(log) }
        if let tls = self.configuration.tls { self.tlsContexts = try TLSServerContexts(tls) }
    }

    func connectionClosed() {
        self.openConnections.subtract(1, ordering: .relaxed)
    }

    /// The connection with this id, if it is still open. Safe from any thread.
    public func connection(_ id: ConnectionID) -> Connection? {
        guard id.loopIndex < self.loops.count else { return nil }
        return self.loops[id.loopIndex].lookup(id)
    }

    /// The connections open at this moment (WebSocket, STOMP and event streams whose `onOpen`
    /// has returned, and not closed): a snapshot of each loop's registry. One may close as soon
    /// as it is returned; a send to it then returns `.closed`. Safe from any thread.
    public func openConnectionsNow() -> [Connection] {
        var open: [Connection] = []
        for loop in self.loops {
            loop.registry.withLock { registry in
                for c in registry.values where c.isOpen { open.append(c) }
            }
        }
        return open
    }

    /// Sends to a connection by id. Safe from any thread.
    @discardableResult
    public func send(to id: ConnectionID, _ kind: MessageKind, _ payload: UnsafeRawBufferPointer) -> SendStatus {
        guard let c = self.connection(id) else { return .closed }
        return c.send(kind, payload)
    }

    // MARK: Pub/sub

    /// Publishes to every subscriber of `topic`, on every loop. Safe from any thread. The frame is
    /// encoded once; per topic, subscribers receive messages in publish order.
    ///
    /// With the Redis engine the message goes to Redis, which gives its id, and reaches the
    /// subscribers of every server on that Redis (this one included) when each reads it back.
    /// - Parameter key: for `coalesceByKey` topics, the key whose older queued message this replaces.
    /// - Returns: the message's event id.
    /// - Throws: with the Redis engine, `.engine` when Redis cannot be reached or refuses (the
    ///   message was not published; after a timeout Redis may still add it), `.stopped` when the server is not running. The in-process engine never throws.
    /// - Parameter stampID: the payload carries `{{id}}` where its own id goes (`IDStamp`): the
    ///   engine writes the id there (the first occurrence), for subscribers and history alike.
    ///   Throws `.configuration` if the payload has no `{{id}}`.
    @discardableResult
    public func publish(
        _ topic: String, _ kind: MessageKind, _ payload: [UInt8], key: String? = nil, stampID: Bool = false
    ) throws(RuntimeError) -> UInt64 {
        if stampID && payload.withUnsafeBytes({ IDStamp.find(in: $0) }) == nil {
            throw RuntimeError(.configuration, "publish to \(topic) with stampID: the payload has no {{id}}")
        }
        if let redis = self.redis {
            guard self.isRunning else { throw RuntimeError(.stopped, "publish to \(topic): the server is not running") }
            return try redis.publish(topic: topic, key: key, kind: kind, payload: payload, stampID: stampID)
        }
        if case .redis(let address) = self.configuration.engine {
            throw RuntimeError(.stopped, "publish to \(topic): the server is not running, so it has no link to \(address)")
        }
        let capacity = self.configuration.policy(for: topic).replayCapacity
        let frame = self.topics.publish(
            topic: topic, key: key, kind: kind, payload: payload, stampID: stampID, replayCapacity: capacity
        ) { frame in
            for loop in self.loops { loop.enqueue(.publish(frame)) }
        }
        if let observe = self.observer(of: topic) { observe(frame) }
        return frame.eventID
    }

    @discardableResult
    public func publish(_ topic: String, text: String, key: String? = nil, stampID: Bool = false) throws(RuntimeError) -> UInt64 {
        try self.publish(topic, .text, Array(text.utf8), key: key, stampID: stampID)
    }

    /// Calls `body` with every message of `topic`, in id order: what a server that
    /// keeps state from a topic (prices for a snapshot, say) needs on every node, whoever
    /// published. Call it before `start`; one observer per topic (a second replaces the first).
    ///
    /// - In-process engine: on the publishing thread, as `publish` returns, after the message
    ///   is in the replay ring and on its way to subscribers. In id order as long as one thread
    ///   at a time publishes to the topic.
    /// - Redis engine: first, during `start`, the topic's recent history (its last
    ///   `replayCapacity` messages); then every message this server reads, on the engine's
    ///   reader thread.
    ///
    /// `body` runs outside Petrel's locks and may publish, subscribe and stop the server (not
    /// release it). It must not wait for a lock held across an in-process `publish` to that
    /// topic (the observer runs inside that call) or across `stop` (which waits for the reader
    /// thread). Ids tell what happened upstream: an id that does not follow the last one means
    /// messages were lost (a new history, or entries trimmed before this server read them);
    /// after Redis lost or went back in its history, the observer is given the stream's newest
    /// messages again, which may repeat ids it saw. Call before `start` and before any publish.
    public func observe(_ topic: String, _ body: @escaping @Sendable (SharedFrame) -> Void) throws(RuntimeError) {
        try self.lifecycle.withLock { (state: inout Lifecycle) throws(RuntimeError) in
            guard state == .idle else { throw RuntimeError(.stopped, "observe(\(topic)) comes before start") }
            self.observers[topic] = body
        }
    }

    /// The observer of `topic`, if any (read-only once started).
    func observer(of topic: String) -> (@Sendable (SharedFrame) -> Void)? {
        self.observers.isEmpty ? nil : self.observers[topic]
    }

    /// The messages published to `topic` after `eventID` that the replay ring (or, with the Redis
    /// engine, the stream) still holds, oldest first; nil when some are no longer kept (the
    /// caller should resynchronise).
    public func replay(topic: String, after eventID: UInt64) -> [SharedFrame]? {
        self.resume(topic: topic, after: eventID) { frames, _ in frames }
    }

    /// `TopicRegistry.resume`, with the engine's history behind the ring. What the ring lacks is
    /// read from Redis first, outside the registry's lock (one lock for every topic: a Redis
    /// round trip under it would hold up every delivery), then the resume is made under the lock
    /// with what was read, if it still joins up; else it is tried again (three times at most).
    func resume<R>(topic: String, after eventID: UInt64, _ body: ([SharedFrame], UInt64) -> R) -> R? {
        guard let redis = self.redis else { return self.topics.resume(topic: topic, after: eventID, body) }
        redis.track(topic)
        // Until its history has been read (Redis was unreachable), the topic cannot say what a
        // client missed: the client is subscribed with its id as floor, and closed with 1012 to
        // resume again when the history has been read (`RedisEngine.fill(afterGap:)`).
        let state = redis.pending(topic)
        if state.pending {
            // An id of the epoch Redis lost is too old; anything else waits for the fill.
            if state.lostEpoch != 0 && EventIDLayout.epoch(of: eventID) == state.lostEpoch { return nil }
            return self.topics.resume(topic: topic, after: eventID, older: { _, _ in nil }, ahead: { _ in true }, body)
                ?? body([], eventID)
        }
        for _ in 0..<3 {
            let last = self.topics.statistics(topic).lastEventID
            var given = false
            var fetched: [SharedFrame]? = nil
            if eventID > last {
                given = redis.hasGivenOut(topic: topic, eventID)
                if !given { return nil }
            } else if eventID < last && (eventID == 0 || EventIDLayout.epoch(of: eventID) == EventIDLayout.epoch(of: last)) {
                fetched = redis.older(topic: topic, after: eventID, before: last + 1)
            }
            var stale = false
            let result = self.topics.resume(
                topic: topic, after: eventID,
                older: { after, before in
                    // Redis no longer holds them all (or could not be asked): too old.
                    guard let fetched else { return nil }
                    // What was read, `after` + 1 up to `last`, must reach to just before the ring.
                    // More may have arrived since: then read again.
                    guard before <= last + 1 else {
                        stale = true
                        return nil
                    }
                    let needed = fetched.prefix { $0.eventID < before }
                    guard (needed.last?.eventID ?? after) == before - 1 else { return nil }
                    return Array(needed)
                },
                ahead: { _ in given }, body)
            if result != nil || !stale { return result }
        }
        return nil
    }

    /// Makes sure the engine reads `topic` for this server's subscribers.
    func track(_ topic: String) { self.redis?.track(topic) }

    /// A message the engine read: kept for replay, then fanned out to every loop.
    func deliverFromEngine(_ frame: SharedFrame) {
        let capacity = self.configuration.policy(for: frame.topic).replayCapacity
        let new = self.topics.arrive(frame, capacity: capacity, discontinuity: { self.closeSubscribers(of: frame.topic) }) { f in
            for loop in self.loops { loop.enqueue(.publish(f)) }
        }
        if new, let observe = self.observer(of: frame.topic) { observe(frame) }
    }

    /// The engine lost `topic`'s history (Redis restarted without it, or was flushed).
    func historyLost(topic: String) {
        self.topics.forget(topic: topic)
        self.closeSubscribers(of: topic)
    }

    /// Closes this server's subscribers of `topic` with 1012 (an event stream just ends), because
    /// the messages they would get next do not follow the last ones they got. Each resumes with
    /// its last id, which is then too old: the application sends it a snapshot.
    func closeSubscribers(of topic: String) {
        for loop in self.loops {
            loop.enqueue(.call { [loop] in
                for c in loop.topics[topic] ?? [] {
                    c.closeOnLoop(code: .serviceRestart, reason: "messages were lost upstream: resume for a snapshot")
                }
            })
        }
    }

    public func statistics(topic: String) -> TopicStatistics { self.topics.statistics(topic) }

    func countDropped(topic: String) { self.topics.count(topic: topic, dropped: 1) }
    func countCoalesced(topic: String) { self.topics.count(topic: topic, coalesced: 1) }
}

/// Number of open file descriptors of this process (for leak tests and health).
public func openFileDescriptorCount() -> Int { Syscall.openFileCount() }

extension Server {
    /// Stops the server gracefully on SIGINT or SIGTERM. Call it before `start`/`run` on the main
    /// thread: it blocks the two signals in the calling thread (the loop threads inherit that) and
    /// waits for them on a thread of its own.
    public func stopOnSignals(grace: Milliseconds = 5_000) throws(RuntimeError) {
        var set = sigset_t()
        sigemptyset(&set)
        sigaddset(&set, SIGINT)
        sigaddset(&set, SIGTERM)
        pthread_sigmask(SIG_BLOCK, &set, nil)
        _ = try spawnThread(name: "petrel-signals") { [self] in
            var sig: Int32 = 0
            sigwait(&set, &sig)
            self.stop(grace: grace)
        }
    }
}
