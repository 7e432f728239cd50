@_exported import PetrelCore
@_exported import PetrelRuntime
import Synchronization

/// A whole message, as the Swift API hands it out.
public enum WebSocketMessage: Sendable, Hashable {
    case text(String)
    case binary([UInt8])
}

/// Why a send or a connection failed, in the Swift API.
public struct WebSocketError: Error, Sendable, Hashable, CustomStringConvertible {
    public enum Kind: Sendable, Hashable { case backpressure, closed, connectFailed }
    public let kind: Kind
    public let message: String

    public var description: String { self.message }

    public static let backpressure = WebSocketError(kind: .backpressure, message: "send buffer is full: wait for drain")
    public static let closed = WebSocketError(kind: .closed, message: "the connection is closed")
}

/// One side of a WebSocket connection in a server's handlers. Safe to use from any thread or task.
public struct WebSocketConnection: Sendable, Hashable {
    public let connection: Connection

    public var id: ConnectionID { self.connection.id }
    /// The upgrade request: path, query and headers (for routing and authentication).
    public var request: HandshakeRequest? { self.connection.request }
    public var subprotocol: String? { self.connection.subprotocol }
    /// True for a Server-Sent Events stream (an event-stream path), false for a WebSocket.
    public var isEventStream: Bool { self.connection.isEventStream }
    /// The request path (WebSocket upgrade or event stream), without the query.
    public var path: String { self.connection.request?.head.path ?? self.connection.httpRequest?.path ?? "" }
    /// A decoded query parameter of the request.
    public func queryParameter(_ name: String) -> String? {
        (self.connection.request?.head ?? self.connection.httpRequest)?.queryParameter(name)
    }
    /// The event id a reconnecting client saw last (`Last-Event-ID`, or `?last_event_id=`).
    public var lastEventID: UInt64? { self.connection.lastEventID }

    /// Queues a message; throws `.backpressure` when the outgoing buffer is over its limit, or
    /// `.closed`.
    public func send(_ message: WebSocketMessage) throws(WebSocketError) {
        let status: SendStatus
        switch message {
        case .text(let s): status = self.connection.send(text: s)
        case .binary(let b): status = self.connection.send(binary: b)
        }
        try status.check()
    }

    /// Sends text that carries an event id: on an event stream it is the event's `id:`; on a
    /// WebSocket it is only sent as text.
    public func send(_ text: String, eventID: UInt64) throws(WebSocketError) {
        try self.connection.send(text: text, eventID: eventID).check()
    }

    public func close(code: CloseCode = .normalClosure, reason: String = "") {
        self.connection.close(code: code, reason: reason)
    }

    public func subscribe(to topic: String) { self.connection.subscribe(topic) }

    /// Subscribes so that every message after `eventID` arrives once, in order (replayed from
    /// the topic's ring, then live); false when the ring no longer has them (send a snapshot).
    @discardableResult
    public func subscribe(to topic: String, after eventID: UInt64) -> Bool { self.connection.subscribe(topic, after: eventID) }
    public func unsubscribe(from topic: String) { self.connection.unsubscribe(topic) }

    public static func == (a: Self, b: Self) -> Bool { a.connection === b.connection }
    public func hash(into h: inout Hasher) { h.combine(self.connection.id) }
}

extension SendStatus {
    func check() throws(WebSocketError) {
        switch self {
        case .ok: return
        case .backpressure: throw .backpressure
        case .closed: throw .closed
        }
    }
}

/// A WebSocket server with closure handlers. Handlers run on the connection's loop thread, one
/// at a time per connection: keep them short, or hand work to a task.
public final class WebSocketServer: Sendable {
    public let server: Server

    /// - Parameters:
    ///   - onMessage: called for every message; reply with `connection.send`.
    public init(
        configuration: ServerConfiguration = ServerConfiguration(),
        onOpen: (@Sendable (WebSocketConnection) -> Void)? = nil,
        onMessage: @escaping @Sendable (WebSocketConnection, WebSocketMessage) -> Void,
        onClose: (@Sendable (WebSocketConnection, CloseCode, String) -> Void)? = nil
    ) {
        let handlers = Handlers()
        if let onOpen { handlers.onOpen = { onOpen(WebSocketConnection(connection: $0)) } }
        handlers.onMessage = { c, kind, payload in
            let m: WebSocketMessage = kind == .text ? .text(String(decoding: payload, as: UTF8.self)) : .binary(Array(payload))
            onMessage(WebSocketConnection(connection: c), m)
        }
        if let onClose { handlers.onClose = { onClose(WebSocketConnection(connection: $0), $1, $2) } }
        self.server = Server(configuration: configuration, handlers: handlers)
    }

    /// The runtime's handlers, for hooks beyond the three above (accept hook, HTTP routes,
    /// drain). Set them before `start`.
    public var handlers: Handlers { self.server.handlers }

    /// Answers plain HTTP requests on the server's port (a `/health` route, say). Return nil to
    /// let the server go on: event-stream paths, then static files. Set it before `start`.
    public func onHTTPRequest(_ route: @escaping @Sendable (HTTPRequest) -> HTTPAnswer?) {
        self.server.handlers.onHTTPRequest = { request, _ in route(request) }
    }

    /// The port actually bound.
    public var port: UInt16 { self.server.port }

    /// Open sockets: WebSocket, event streams and requests in progress.
    public var connectionCount: Int { self.server.connectionCount }

    public func start() throws(RuntimeError) { try self.server.start() }

    /// Starts the server and suspends until it is stopped (by `stop` or a signal, see
    /// `Server.stopOnSignals`).
    public func run() async throws(RuntimeError) {
        try self.server.start()
        while self.server.isRunning { try? await Task.sleep(for: .milliseconds(50)) }
    }

    public func stop(grace: Duration = .seconds(5)) {
        let ms = grace.components.seconds * 1000 + grace.components.attoseconds / 1_000_000_000_000_000
        self.server.stop(grace: Int(ms))
    }

    /// Publishes to every subscriber of `topic`; returns the message's event id.
    @discardableResult
    public func publish(_ message: WebSocketMessage, to topic: String, key: String? = nil) -> UInt64 {
        switch message {
        case .text(let s): return self.server.publish(topic, .text, Array(s.utf8), key: key)
        case .binary(let b): return self.server.publish(topic, .binary, b, key: key)
        }
    }
}

/// A client connection with an `AsyncSequence` of inbound messages.
///
///     let ws = try await WebSocketClient.connect(to: "ws://localhost:8080/stream")
///     try ws.send(.text("hello"))
///     for try await message in ws.inbound { print(message) }
public final class WebSocketClient: Sendable {
    public let connection: Connection
    /// Messages in arrival order. It ends when the connection closes; after an abnormal end
    /// (no closing handshake) it throws.
    public let inbound: AsyncThrowingStream<WebSocketMessage, any Error>
    fileprivate let closeInfo = Lock<(CloseCode, String)?>(nil)

    private init(connection: Connection, inbound: AsyncThrowingStream<WebSocketMessage, any Error>) {
        self.connection = connection
        self.inbound = inbound
    }

    /// Connects and completes the opening handshake.
    /// - Throws: `RuntimeError` when the URL is invalid, the connect fails or the handshake is refused.
    public static func connect(to url: String, configuration: ClientConfiguration = ClientConfiguration()) async throws -> WebSocketClient {
        let (stream, continuation) = AsyncThrowingStream<WebSocketMessage, any Error>.makeStream()
        let handlers = Handlers()
        let waiter = OpenWaiter()
        handlers.onOpen = { c in waiter.finish(.success(c)) }
        handlers.onConnectFailed = { _, error in waiter.finish(.failure(error)) }
        handlers.onMessage = { _, kind, payload in
            continuation.yield(kind == .text ? .text(String(decoding: payload, as: UTF8.self)) : .binary(Array(payload)))
        }
        let client = ClientBox()
        handlers.onClose = { _, code, reason in
            client.value?.closeInfo.withLock { $0 = (code, reason) }
            if code == .abnormalClosure {
                continuation.finish(throwing: WebSocketError(kind: .closed, message: "connection lost: \(reason)"))
            } else {
                continuation.finish()
            }
        }
        let connection = try await withCheckedThrowingContinuation { (k: CheckedContinuation<Connection, any Error>) in
            waiter.arm(k)
            do {
                _ = try ClientConnector.connect(to: url, configuration: configuration, handlers: handlers)
            } catch {
                waiter.finish(.failure(error))
            }
        }
        let result = WebSocketClient(connection: connection, inbound: stream)
        client.value = result
        return result
    }

    public func send(_ message: WebSocketMessage) throws(WebSocketError) {
        try WebSocketConnection(connection: self.connection).send(message)
    }

    /// Starts the closing handshake; the `inbound` sequence ends when it completes.
    public func close(code: CloseCode = .normalClosure, reason: String = "") {
        self.connection.close(code: code, reason: reason)
    }

    /// The code and reason the connection ended with, once it has.
    public var closeCode: CloseCode? { self.closeInfo.withLock { $0?.0 } }
    public var closeReason: String? { self.closeInfo.withLock { $0?.1 } }
}

/// Resumes the connect continuation exactly once, whichever of open or failure comes first.
private final class OpenWaiter: Sendable {
    private let state = Lock<(CheckedContinuation<Connection, any Error>?, Result<Connection, any Error>?)>((nil, nil))

    func arm(_ k: CheckedContinuation<Connection, any Error>) {
        let early = self.state.withLock { s -> Result<Connection, any Error>? in
            if let r = s.1 { return r }
            s.0 = k
            return nil
        }
        if let early { k.resume(with: early) }
    }

    func finish(_ result: Result<Connection, any Error>) {
        let k = self.state.withLock { s -> CheckedContinuation<Connection, any Error>? in
            guard s.1 == nil else { return nil }
            s.1 = result
            return s.0.take()
        }
        k?.resume(with: result)
    }
}

/// Lets the close handler reach the client object created after the handlers.
private final class ClientBox: @unchecked Sendable {
    private let lock = Lock<WebSocketClient?>(nil)
    var value: WebSocketClient? {
        get { self.lock.withLock { $0 } }
        set { self.lock.withLock { $0 = newValue } }
    }
}
