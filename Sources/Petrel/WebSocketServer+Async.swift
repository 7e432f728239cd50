import PetrelCore
import PetrelRuntime

/// What a connection's async handler gets: its messages, its sending side, and the connection
/// itself (request, path, subprotocol, topics, event ids).
public typealias WebSocketHandler = @Sendable (
    _ inbound: WebSocketInbound, _ outbound: WebSocketOutbound, _ context: WebSocketConnection
) async throws -> Void

extension WebSocketServer {
    /// A server that runs `handler` in a child task of `run()` for every connection (WebSocket or
    /// event stream), in the style of Swift's structured concurrency:
    ///
    ///     let server = WebSocketServer(configuration: config) { inbound, outbound, context in
    ///         for try await message in inbound { try await outbound.send(message) }
    ///     }
    ///     try await server.run()
    ///
    /// The connection closes when the handler returns (1000), or throws (1011). Run it with
    /// `run()`: cancelling the task that runs it stops the server gracefully. Topics, event
    /// ids, resume, HTTP routes and the STOMP hooks work as with the closure API; the handler
    /// reaches them through `context` and the server.
    ///
    /// Costlier per message than the closure API (each message is copied into a
    /// `WebSocketMessage` and crosses to a task); `init(configuration:onOpen:onMessage:onClose:)`,
    /// whose closures run on the loop thread, is the fast path.
    public convenience init(
        configuration: Configuration = Configuration(), inboundLimits: InboundLimits = InboundLimits(),
        handler: @escaping WebSocketHandler
    ) {
        let serving = AsyncServing(handler: handler, limits: inboundLimits)
        let handlers = Handlers()
        serving.install(on: handlers)
        self.init(server: Server(configuration: configuration, handlers: handlers), serving: serving)
    }
}

/// The async handler's plumbing: the loop threads register each opening connection and feed its
/// inbound sequence; `run()` takes the registrations and runs the handler in its task group.
final class AsyncServing: Sendable {
    let handler: WebSocketHandler
    let limits: InboundLimits
    /// Per loop (the low byte of a connection id): the open connections' flows, each touched
    /// only by its own loop's thread.
    private let registry: LoopLocalRegistry
    /// Opened connections on their way to `run()`'s task group; finished when the server stops.
    let opened: AsyncStream<Opened>
    private let openedContinuation: AsyncStream<Opened>.Continuation

    struct Opened: Sendable {
        let connection: Connection
        let inbound: WebSocketInbound
        let outbound: WebSocketOutbound
    }

    init(handler: @escaping WebSocketHandler, limits: InboundLimits) {
        self.handler = handler
        self.limits = limits
        self.registry = LoopLocalRegistry()
        (self.opened, self.openedContinuation) = AsyncStream<Opened>.makeStream()
    }

    func install(on handlers: Handlers) {
        handlers.onOpen = { [self] c in
            let (inbound, flow) = InboundFlow.make(connection: c, limits: self.limits)
            let drain = DrainSignal()
            self.registry[c.id] = LoopLocalRegistry.Entry(flow: flow, drain: drain)
            self.openedContinuation.yield(Opened(connection: c, inbound: inbound, outbound: WebSocketOutbound(connection: c, drain: drain)))
        }
        handlers.onMessage = { [self] c, kind, payload in self.registry[c.id]?.flow.received(kind, payload) }
        handlers.onDrain = { [self] c in self.registry[c.id]?.drain.drained() }
        handlers.onClose = { [self] c, code, reason in
            guard let entry = self.registry.remove(c.id) else { return }
            // An event stream's end is its browser going away, never an error of the handler's.
            entry.flow.closed(c.isEventStream ? .normalClosure : code, reason)
            entry.drain.closed()
        }
    }

    /// The server stopped: no connection opens any more.
    func finish() { self.openedContinuation.finish() }

    /// Runs the handler for every opened connection until the server stops, then cancels
    /// handlers that are still running (their connections are closed by then) and waits for them.
    /// A discarding group: a finished handler's task is freed at once, not kept until the end.
    func serve() async {
        await withDiscardingTaskGroup { group in
            for await o in self.opened {
                group.addTask { await self.handle(o) }
            }
            group.cancelAll()
        }
    }

    private func handle(_ o: Opened) async {
        let context = WebSocketConnection(connection: o.connection)
        do {
            try await self.handler(o.inbound, o.outbound, context)
            o.connection.close(code: .normalClosure, reason: "")
        } catch {
            o.connection.close(code: .internalError, reason: "")
        }
    }
}

/// Connection id → flows, one dictionary per loop, each read and written only by that loop's
/// thread (open, message, drain and close of a connection all run there), so it needs no lock.
final class LoopLocalRegistry: @unchecked Sendable {
    struct Entry {
        let flow: InboundFlow
        let drain: DrainSignal
    }
    private let tables: UnsafeMutablePointer<[UInt64: Entry]>

    init() {
        self.tables = .allocate(capacity: 256)
        self.tables.initialize(repeating: [:], count: 256)
    }

    deinit {
        self.tables.deinitialize(count: 256)
        self.tables.deallocate()
    }

    subscript(id: ConnectionID) -> Entry? {
        get { self.tables[id.loopIndex][id.rawValue] }
        set { self.tables[id.loopIndex][id.rawValue] = newValue }
    }

    func remove(_ id: ConnectionID) -> Entry? { self.tables[id.loopIndex].removeValue(forKey: id.rawValue) }
}

/// Fires once; `wait` returns once it has fired, before or after the call.
final class StopSignal: Sendable {
    private let state = Lock<(fired: Bool, waiters: [CheckedContinuation<Void, Never>])>((false, []))

    func fire() {
        let waiting = self.state.withLock { s -> [CheckedContinuation<Void, Never>] in
            s.fired = true
            defer { s.waiters = [] }
            return s.waiters
        }
        for k in waiting { k.resume() }
    }

    func wait() async {
        await withCheckedContinuation { (k: CheckedContinuation<Void, Never>) in
            let now = self.state.withLock { s -> Bool in
                if s.fired { return true }
                s.waiters.append(k)
                return false
            }
            if now { k.resume() }
        }
    }
}
