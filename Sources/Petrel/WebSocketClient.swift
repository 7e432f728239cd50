import PetrelCore
import PetrelRuntime
import Synchronization

/// A client connection with an `AsyncSequence` of inbound messages.
///
///     let ws = try await WebSocketClient.connect(to: "ws://localhost:8080/stream")
///     try ws.send(.text("hello"))
///     for try await message in ws.inbound { print(message) }
public final class WebSocketClient: Sendable {
    /// Limits, timers, compression, subprotocols, headers, TLS, proxy.
    public typealias Configuration = ClientConfiguration
    public typealias TLSConfiguration = TLSClientConfiguration
    public typealias HTTPField = PetrelCore.HTTPField

    let connection: Connection
    /// Messages in arrival order. It ends when the connection closes; after an abnormal end
    /// (no closing handshake) it throws.
    public let inbound: AsyncThrowingStream<WebSocketMessage, any Error>
    fileprivate let closeInfo = Lock<(WebSocketCloseCode, String)?>(nil)

    private init(connection: Connection, inbound: AsyncThrowingStream<WebSocketMessage, any Error>) {
        self.connection = connection
        self.inbound = inbound
    }

    /// Connects and completes the opening handshake.
    /// - Throws: `PetrelError` when the URL is invalid, the connect fails or the handshake is refused.
    public static func connect(to url: String, configuration: Configuration = Configuration()) async throws -> WebSocketClient {
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
    public func close(code: WebSocketCloseCode = .normalClosure, reason: String = "") {
        self.connection.close(code: code, reason: reason)
    }

    /// The code and reason the connection ended with, once it has.
    public var closeCode: WebSocketCloseCode? { self.closeInfo.withLock { $0?.0 } }
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
