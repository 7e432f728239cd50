import PetrelCore
import PetrelRuntime
import Synchronization

/// A client connection: `inbound`, an `AsyncSequence` of the messages it receives, and
/// `outbound`, whose `send` waits while the outgoing buffer is full.
///
///     let ws = try await WebSocketClient.connect(to: "ws://localhost:8080/stream")
///     try await ws.outbound.send(.text("hello"))
///     for try await message in ws.inbound { print(message) }
///
/// Or scoped, closed when the body returns:
///
///     try await WebSocketClient.connect(to: url) { inbound, outbound, client in ... }
public final class WebSocketClient: Sendable {
    /// Limits, timers, compression, subprotocols, headers, TLS, proxy.
    public typealias Configuration = ClientConfiguration
    public typealias TLSConfiguration = TLSClientConfiguration
    public typealias HTTPField = PetrelCore.HTTPField

    let connection: Connection
    /// Messages in arrival order, bounded (`InboundLimits`: reading pauses when the consumer
    /// falls behind). It ends when the connection closes with a closing handshake and throws
    /// after an abnormal end (no closing handshake). Dropping it, or cancelling the task that
    /// iterates it, before it ended closes the connection (1001).
    public let inbound: WebSocketInbound
    /// The sending side: `send` waits while the outgoing buffer is over `maxBackpressure`.
    public let outbound: WebSocketOutbound
    private let state: ClientState

    private init(connection: Connection, inbound: WebSocketInbound, outbound: WebSocketOutbound, state: ClientState) {
        self.connection = connection
        self.inbound = inbound
        self.outbound = outbound
        self.state = state
    }

    /// Connects and completes the opening handshake. The name is resolved and TLS files are
    /// loaded on a thread of the library's, not on Swift's cooperative pool. Cancelling the
    /// calling task ends the attempt: the socket is closed and `CancellationError` thrown.
    /// - Throws: `PetrelError` when the URL is invalid, the connect fails or the handshake is
    ///   refused (a refusal's HTTP status and body: `httpStatus`, `responseBody`).
    public static func connect(
        to url: String, configuration: Configuration = Configuration(), inboundLimits: InboundLimits = InboundLimits()
    ) async throws -> WebSocketClient {
        let state = ClientState()
        let handlers = Handlers()
        let waiter = OpenWaiter()
        handlers.onOpen = { c in
            let (inbound, flow) = InboundFlow.make(connection: c, limits: inboundLimits)
            let drain = DrainSignal()
            state.flow = flow
            state.drain = drain
            waiter.finish(.success(Opened(connection: c, inbound: inbound, drain: drain)))
        }
        handlers.onConnectFailed = { _, error in waiter.finish(.failure(error)) }
        handlers.onMessage = { _, kind, payload in state.flow?.received(kind, payload) }
        handlers.onDrain = { _ in state.drain?.drained() }
        handlers.onClose = { _, code, reason in
            state.closeInfo.withLock { $0 = (code, reason) }
            state.flow?.closed(code, reason)
            state.drain?.closed()
        }
        let pending = PendingConnection()
        let opened = try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { (k: CheckedContinuation<Opened, any Error>) in
                waiter.arm(k)
                do throws(RuntimeError) {
                    try runDetached(name: "petrel-connect") {
                        do throws(RuntimeError) {
                            let c = try ClientConnector.connect(to: url, configuration: configuration, handlers: handlers)
                            if pending.set(c) { c.close(code: .goingAway, reason: "") }
                        } catch {
                            waiter.finish(.failure(error))
                        }
                    }
                } catch {
                    waiter.finish(.failure(error))
                }
            }
        } onCancel: {
            if waiter.finish(.failure(CancellationError())) { pending.cancel()?.close(code: .goingAway, reason: "") }
        }
        return WebSocketClient(
            connection: opened.connection, inbound: opened.inbound,
            outbound: WebSocketOutbound(connection: opened.connection, drain: opened.drain), state: state)
    }

    /// Connects, runs `body` with the connection, and closes it (1000) when `body` returns, or
    /// (1011) when it throws; returns what `body` returns.
    public static func connect<Result: Sendable>(
        to url: String, configuration: Configuration = Configuration(), inboundLimits: InboundLimits = InboundLimits(),
        _ body: (_ inbound: WebSocketInbound, _ outbound: WebSocketOutbound, _ client: WebSocketClient) async throws -> Result
    ) async throws -> Result {
        let client = try await Self.connect(to: url, configuration: configuration, inboundLimits: inboundLimits)
        do {
            let result = try await body(client.inbound, client.outbound, client)
            client.close()
            return result
        } catch {
            client.close(code: .internalError)
            throw error
        }
    }

    /// Queues a message without waiting: throws `.backpressure` when the outgoing buffer is
    /// over its limit (`outbound.send` waits instead), `.closed` once closing.
    public func send(_ message: WebSocketMessage) throws(WebSocketError) {
        try WebSocketConnection(connection: self.connection).send(message)
    }

    /// Starts the closing handshake; the `inbound` sequence ends when it completes.
    public func close(code: WebSocketCloseCode = .normalClosure, reason: String = "") {
        self.outbound.close(code: code, reason: reason)
    }

    /// The subprotocol the server chose, if any.
    public var subprotocol: String? { self.connection.subprotocol }
    /// Sends a ping; its pong updates `roundTripTime`.
    public func ping(_ payload: [UInt8] = []) { self.connection.ping(payload) }
    /// The last ping's round trip in milliseconds, or nil before the first pong.
    public var roundTripTime: Int? { self.connection.roundTripTime }

    /// The code and reason the connection ended with, once it has.
    public var closeCode: WebSocketCloseCode? { self.state.closeInfo.withLock { $0?.0 } }
    public var closeReason: String? { self.state.closeInfo.withLock { $0?.1 } }
}

/// What the client loop's handlers share: the flows, set in onOpen and read by the later
/// handlers, all on the client loop's thread; the close code under a lock for any thread.
private final class ClientState: @unchecked Sendable {
    var flow: InboundFlow?
    var drain: DrainSignal?
    let closeInfo = Lock<(WebSocketCloseCode, String)?>(nil)
}

private struct Opened: Sendable {
    let connection: Connection
    let inbound: WebSocketInbound
    let drain: DrainSignal
}

/// The connection being opened, for a cancellation that comes before it is known.
private final class PendingConnection: Sendable {
    private let state = Lock<(connection: Connection?, cancelled: Bool)>((nil, false))

    /// Records the connection; true when the attempt was cancelled already (close it).
    func set(_ c: Connection) -> Bool {
        self.state.withLock { s in
            s.connection = c
            return s.cancelled
        }
    }

    /// Marks the attempt cancelled; returns the connection if it is known.
    func cancel() -> Connection? {
        self.state.withLock { s in
            s.cancelled = true
            return s.connection
        }
    }
}

/// Resumes the connect continuation exactly once, whichever of open, failure or cancellation
/// comes first. It keeps the outcome only until the continuation takes it: the handlers hold
/// the waiter for the connection's life, and a kept `Opened` would keep the client's inbound
/// sequence alive after the client is dropped (which must close the connection).
private final class OpenWaiter: Sendable {
    private struct State {
        var continuation: CheckedContinuation<Opened, any Error>?
        /// An outcome that came before `arm`.
        var early: Result<Opened, any Error>?
        var done = false
    }
    private let state = Lock(State())

    func arm(_ k: CheckedContinuation<Opened, any Error>) {
        let early = self.state.withLock { s -> Result<Opened, any Error>? in
            if let r = s.early {
                s.early = nil
                return r
            }
            s.continuation = k
            return nil
        }
        if let early { k.resume(with: early) }
    }

    /// True when this was the first outcome (the one the caller gets).
    @discardableResult
    func finish(_ result: Result<Opened, any Error>) -> Bool {
        let (first, k) = self.state.withLock { s -> (Bool, CheckedContinuation<Opened, any Error>?) in
            guard !s.done else { return (false, nil) }
            s.done = true
            guard let k = s.continuation.take() else {
                s.early = result
                return (true, nil)
            }
            return (true, k)
        }
        k?.resume(with: result)
        return first
    }
}
