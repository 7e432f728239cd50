import PetrelCore
import PetrelRuntime

/// A WebSocket server with closure handlers. Handlers run on the connection's loop thread, one
/// at a time per connection: keep them short, or hand work to a task.
public final class WebSocketServer: Sendable {
    /// Port, threads, limits, timers, compression, TLS, topics, static files: see docs/limits.md.
    public typealias Configuration = ServerConfiguration
    public typealias TLSConfiguration = TLSServerConfiguration
    public typealias TopicPolicy = PetrelRuntime.TopicPolicy
    /// Where topics get their ids and history (`Configuration.engine`): in-process, or Redis
    /// Streams shared by several servers (docs/cluster.md). `EventIDLayout` splits its ids.
    public typealias Engine = PetrelRuntime.Engine
    public typealias EventIDLayout = PetrelCore.EventIDLayout
    /// permessage-deflate settings (`Configuration.compression`).
    public typealias Compression = DeflateOptions
    /// A plain HTTP request on the server's port, and the answer a route gives.
    public typealias HTTPRequest = PetrelRuntime.HTTPRequest
    public typealias HTTPAnswer = PetrelRuntime.HTTPAnswer
    public typealias HTTPField = PetrelCore.HTTPField
    /// Cross-origin pages (`Configuration.cors`) and the access log (`Configuration.accessLog`).
    public typealias CORSConfiguration = PetrelRuntime.CORSConfiguration
    public typealias AccessLog = PetrelRuntime.AccessLog
    public typealias AccessLogEntry = PetrelRuntime.AccessLogEntry
    /// The runtime's callbacks, for hooks beyond the closures (accept hook, drain).
    public typealias Handlers = PetrelRuntime.Handlers
    /// STOMP over WebSocket (`Configuration.stomp`, the `onStomp*` hooks; docs/stomp.md).
    public typealias StompConfiguration = PetrelRuntime.StompConfiguration
    public typealias StompOptions = PetrelCore.StompServerOptions
    public typealias StompConnectRequest = PetrelCore.StompConnectRequest
    public typealias StompSubscription = PetrelCore.StompSubscription
    public typealias StompFrame = PetrelCore.StompFrame
    public typealias StompAcknowledgement = PetrelRuntime.StompAcknowledgement
    public typealias StompConnectAnswer = PetrelRuntime.StompConnectAnswer
    public typealias StompSubscribeAnswer = PetrelRuntime.StompSubscribeAnswer
    public typealias StompSendAnswer = PetrelRuntime.StompSendAnswer

    let server: Server
    /// The async handler's plumbing (`init(configuration:inboundLimits:handler:)`), or nil.
    let serving: AsyncServing?

    init(server: Server, serving: AsyncServing?) {
        self.server = server
        self.serving = serving
    }

    /// The closure API, the fast path: the closures run on the connection's loop thread.
    /// - Parameters:
    ///   - onMessage: called for every message; reply with `connection.send`.
    public init(
        configuration: Configuration = Configuration(),
        onOpen: (@Sendable (WebSocketConnection) -> Void)? = nil,
        onMessage: @escaping @Sendable (WebSocketConnection, WebSocketMessage) -> Void,
        onClose: (@Sendable (WebSocketConnection, WebSocketCloseCode, String) -> Void)? = nil
    ) {
        let handlers = Handlers()
        if let onOpen { handlers.onOpen = { onOpen(WebSocketConnection(connection: $0)) } }
        handlers.onMessage = { c, kind, payload in
            let m: WebSocketMessage = kind == .text ? .text(String(decoding: payload, as: UTF8.self)) : .binary(Array(payload))
            onMessage(WebSocketConnection(connection: c), m)
        }
        if let onClose { handlers.onClose = { onClose(WebSocketConnection(connection: $0), $1, $2) } }
        self.server = Server(configuration: configuration, handlers: handlers)
        self.serving = nil
    }

    /// The runtime's handlers, for hooks beyond the three above (accept hook, HTTP routes,
    /// drain). Set them before `start`.
    public var handlers: Handlers { self.server.handlers }

    /// Answers plain HTTP requests on the server's port (a `/health` route, say). Return nil to
    /// let the server go on: event-stream paths, then static files. Set it before `start`.
    public func onHTTPRequest(_ route: @escaping @Sendable (HTTPRequest) -> HTTPAnswer?) {
        self.server.handlers.onHTTPRequest = { request, _ in route(request) }
    }

    /// STOMP (`Configuration.stomp`): a CONNECT, with its login, passcode and host. Without
    /// this hook every CONNECT is accepted. Set the STOMP hooks before `start`.
    public func onStompConnect(_ hook: @escaping @Sendable (WebSocketConnection, StompConnectRequest) -> StompConnectAnswer) {
        self.server.handlers.onStompConnect = { hook(WebSocketConnection(connection: $0), $1) }
    }

    /// STOMP: a SUBSCRIBE, to allow onto a topic or refuse. Without this hook `/topic/NAME` is
    /// topic NAME and other destinations are refused.
    public func onStompSubscribe(_ hook: @escaping @Sendable (WebSocketConnection, StompSubscription) -> StompSubscribeAnswer) {
        self.server.handlers.onStompSubscribe = { hook(WebSocketConnection(connection: $0), $1) }
    }

    /// STOMP: a SEND to a destination: publish it to a topic, take it, or refuse it. Without this
    /// hook every SEND is refused.
    public func onStompSend(_ hook: @escaping @Sendable (WebSocketConnection, StompFrame, String) -> StompSendAnswer) {
        self.server.handlers.onStompSend = { hook(WebSocketConnection(connection: $0), $1, $2) }
    }

    /// STOMP: an ACK or NACK settled messages of a subscription.
    public func onStompAck(_ hook: @escaping @Sendable (WebSocketConnection, StompAcknowledgement) -> Void) {
        self.server.handlers.onStompAck = { hook(WebSocketConnection(connection: $0), $1) }
    }

    /// The port actually bound.
    public var port: UInt16 { self.server.port }

    /// Open sockets: WebSocket, event streams and requests in progress.
    public var connectionCount: Int { self.server.connectionCount }

    /// The WebSocket, STOMP and event-stream connections open now (their `onOpen` has returned),
    /// in no particular order: a snapshot for a health page or a sweep, not for each message
    /// (it copies each loop's table). Safe from any thread.
    public var openConnections: [WebSocketConnection] {
        self.server.openConnectionsNow().map { WebSocketConnection(connection: $0) }
    }

    /// Starts the server on its loop threads and returns. A server with an async handler runs
    /// with `run()` instead (its handlers are child tasks of that call).
    public func start() throws(PetrelError) {
        if self.serving != nil { throw PetrelError(.configuration, "a server with an async handler is started by run()") }
        try self.server.start()
    }

    /// Whether the server is running (started and not yet stopped).
    public var isRunning: Bool { self.server.isRunning }

    /// Stops the server gracefully on SIGINT or SIGTERM (call before `start`).
    public func stopOnSignals(grace: Duration = .seconds(5)) throws(PetrelError) {
        try self.server.stopOnSignals(grace: Self.milliseconds(grace))
    }

    static func milliseconds(_ d: Duration) -> Int {
        Int(d.components.seconds * 1000 + d.components.attoseconds / 1_000_000_000_000_000)
    }

    /// Starts the server and suspends until it has stopped: by `stop`, by a signal (see
    /// `stopOnSignals`), or by cancelling the task that runs it, which stops it as `stop` does
    /// (close 1001 to every peer, up to `gracePeriod` for them to answer, then the rest closed)
    /// and returns. With an async handler, each connection's handler is a child task of this
    /// call: it returns once every handler has (those still running when the server has
    /// stopped are cancelled; their connections are closed by then).
    public func run(gracePeriod: Duration = .seconds(5)) async throws(PetrelError) {
        let stopped = StopSignal()
        let serving = self.serving
        // Set by start once it has claimed the server: a second run() throws and leaves it be.
        try self.server.start(onStopped: {
            serving?.finish()
            stopped.fire()
        })
        let grace = Self.milliseconds(gracePeriod)
        let server = self.server
        // The handlers run in a task of their own, which a cancellation of this one does not
        // reach: a cancel stops the server, whose close (1001) ends each handler's inbound, and
        // the handlers get the grace period to finish, as with stop(). Awaited below, so run()
        // still returns only after every handler has.
        let handlers = serving.map { s in Task { await s.serve() } }
        await withTaskCancellationHandler {
            await stopped.wait()
        } onCancel: {
            server.beginStop(grace: grace)
        }
        await handlers?.value
        // The loops have ended; this joins their threads.
        server.stop(grace: grace)
    }

    public func stop(grace: Duration = .seconds(5)) {
        self.server.stop(grace: Self.milliseconds(grace))
    }

    /// Counters of a topic: published, dropped and coalesced for slow subscribers, the last id.
    public typealias TopicStatistics = PetrelRuntime.TopicStatistics

    public func statistics(topic: String) -> TopicStatistics { self.server.statistics(topic: topic) }

    /// The messages published to `topic` after `eventID` that its replay ring still holds,
    /// oldest first, with their ids; nil when some have already left the ring (send a snapshot).
    public func replay(topic: String, after eventID: UInt64) -> [(eventID: UInt64, message: WebSocketMessage)]? {
        self.server.replay(topic: topic, after: eventID)?.map { frame in
            (frame.eventID, frame.kind == .text ? .text(String(decoding: frame.payload, as: UTF8.self)) : .binary(frame.payload))
        }
    }

    /// Loads the certificate and key again (or `configuration`'s): new connections use them,
    /// open ones go on with theirs.
    public func reloadTLS(_ configuration: TLSConfiguration? = nil) throws(PetrelError) {
        try self.server.reloadTLS(configuration)
    }

    /// Publishes to every subscriber of `topic`; returns the message's event id.
    ///
    /// `stampingID`: the message carries `{{id}}` where its own id goes; the engine writes the
    /// id there (first occurrence) before anyone sees it. This is how a payload holds its id
    /// when several servers share Redis and only Redis knows the next id.
    ///
    /// Throws `PetrelError` of kind `.engine`, with the Redis engine (`Configuration.engine`),
    /// when Redis cannot be reached or refuses (the message was not published) or times out
    /// (Redis may still add it); `.configuration` for `stampingID` without `{{id}}`. The
    /// in-process engine throws only for that.
    @discardableResult
    public func publish(
        _ message: WebSocketMessage, to topic: String, key: String? = nil, stampingID: Bool = false
    ) throws(PetrelError) -> UInt64 {
        switch message {
        case .text(let s): return try self.server.publish(topic, .text, Array(s.utf8), key: key, stampID: stampingID)
        case .binary(let b): return try self.server.publish(topic, .binary, b, key: key, stampID: stampingID)
        }
    }

    /// Calls `body` with every message of `topic` (its id, its key, the message), in id order,
    /// whoever published it: with the Redis engine, what every server on that Redis reads,
    /// starting with the topic's recent history during `start`, on the engine's thread;
    /// in-process, on the publishing thread (in order when one thread at a time publishes to
    /// the topic). Call before `start`. Repeated ids after Redis lost its history, and what
    /// `body` must not wait for: `Server.observe` (docs/cluster.md).
    public func observe(
        topic: String, _ body: @escaping @Sendable (_ eventID: UInt64, _ key: String?, _ message: WebSocketMessage) -> Void
    ) throws(PetrelError) {
        try self.server.observe(topic) { frame in
            body(frame.eventID, frame.key, frame.kind == .text ? .text(String(decoding: frame.payload, as: UTF8.self)) : .binary(frame.payload))
        }
    }
}
