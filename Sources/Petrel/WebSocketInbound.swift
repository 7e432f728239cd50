import PetrelCore
import PetrelRuntime

/// The messages a connection receives, in order, as an `AsyncSequence`:
///
///     for try await message in inbound { ... }
///
/// It ends (returns nil) when the connection closes with a close code (whoever sent it, for
/// whatever reason: `closeCode` on the client says which) and throws `WebSocketError.closed`
/// when it ended without one (1006: the transport dropped). An event stream's only ends.
///
/// Bounded: when the messages waiting for the consumer reach `InboundLimits.highWaterMessages`
/// or `highWaterBytes`, the connection stops reading from its socket, so that TCP slows the
/// peer down; it reads again once the consumer has brought both down to half. The pause takes
/// effect before the next message is parsed (the rest of that read waits, unparsed).
///
/// When the sequence is dropped or its consuming task is cancelled before it ended, the
/// connection is closed (1001). A consumer that stops iterating but keeps the sequence keeps
/// the connection paused: the peer's pings and close frame go unread until the idle or pong
/// timers end it. Drain it or drop it.
public struct WebSocketInbound: AsyncSequence, Sendable {
    public typealias Element = WebSocketMessage
    public typealias Failure = any Error

    let stream: AsyncThrowingStream<WebSocketMessage, any Error>
    let flow: InboundFlow

    public struct AsyncIterator: AsyncIteratorProtocol {
        var base: AsyncThrowingStream<WebSocketMessage, any Error>.AsyncIterator
        let flow: InboundFlow

        public mutating func next() async throws -> WebSocketMessage? {
            let message = try await self.base.next()
            if let message { self.flow.consumed(message) }
            return message
        }
    }

    public func makeAsyncIterator() -> AsyncIterator {
        AsyncIterator(base: self.stream.makeAsyncIterator(), flow: self.flow)
    }
}

/// How many received messages may wait for the consumer of a `WebSocketInbound`.
public struct InboundLimits: Sendable, Hashable {
    /// Reading pauses when this many messages, or this many payload bytes, are waiting.
    public var highWaterMessages: Int
    public var highWaterBytes: Int
    /// Reading resumes when both are back at or below half their high-water mark.
    public init(highWaterMessages: Int = 256, highWaterBytes: Int = 1 << 20) {
        self.highWaterMessages = max(1, highWaterMessages)
        self.highWaterBytes = max(1, highWaterBytes)
    }
}

/// The producer side of a `WebSocketInbound`: the loop thread yields into it; the consumer's
/// `next` counts messages out. Pauses and resumes the connection's reading.
final class InboundFlow: Sendable {
    struct State {
        var messages = 0
        var bytes = 0
        var paused = false
        /// The most messages that have waited at once (for tests and diagnostics).
        var peakMessages = 0
    }
    let connection: Connection
    let limits: InboundLimits
    let continuation: AsyncThrowingStream<WebSocketMessage, any Error>.Continuation
    private let state = Lock(State())

    /// The sequence and its producer. Dropping or cancelling the sequence before it ends closes
    /// the connection.
    static func make(connection: Connection, limits: InboundLimits) -> (WebSocketInbound, InboundFlow) {
        let (stream, continuation) = AsyncThrowingStream<WebSocketMessage, any Error>.makeStream()
        let flow = InboundFlow(connection: connection, limits: limits, continuation: continuation)
        continuation.onTermination = { [connection] termination in
            if case .cancelled = termination { connection.close(code: .goingAway, reason: "") }
        }
        return (WebSocketInbound(stream: stream, flow: flow), flow)
    }

    private init(connection: Connection, limits: InboundLimits, continuation: AsyncThrowingStream<WebSocketMessage, any Error>.Continuation) {
        self.connection = connection
        self.limits = limits
        self.continuation = continuation
    }

    /// A message read (on the connection's loop thread).
    func received(_ kind: MessageKind, _ payload: UnsafeRawBufferPointer) {
        let message: WebSocketMessage = kind == .text ? .text(String(decoding: payload, as: UTF8.self)) : .binary(Array(payload))
        let size = payload.count
        let pause = self.state.withLock { s -> Bool in
            s.messages += 1
            s.bytes += size
            s.peakMessages = max(s.peakMessages, s.messages)
            guard !s.paused, s.messages >= self.limits.highWaterMessages || s.bytes >= self.limits.highWaterBytes else { return false }
            s.paused = true
            return true
        }
        // On the loop thread this takes effect at once, before the next read.
        if pause { self.connection.holdReading(true) }
        self.continuation.yield(message)
    }

    /// The most messages that have waited for the consumer at once.
    var peakMessages: Int { self.state.withLock { $0.peakMessages } }

    /// A message the consumer took.
    func consumed(_ message: WebSocketMessage) {
        let size: Int
        switch message {
        case .text(let s): size = s.utf8.count
        case .binary(let b): size = b.count
        }
        let resume = self.state.withLock { s -> Bool in
            s.messages -= 1
            s.bytes -= size
            guard s.paused, s.messages <= self.limits.highWaterMessages / 2, s.bytes <= self.limits.highWaterBytes / 2 else { return false }
            s.paused = false
            return true
        }
        // Queued to the loop, after any pause the loop thread asked for meanwhile.
        if resume { self.connection.holdReading(false) }
    }

    /// The connection ended: a closing handshake ends the sequence, anything else fails it.
    func closed(_ code: CloseCode, _ reason: String) {
        if code == .abnormalClosure {
            self.continuation.finish(throwing: WebSocketError(kind: .closed, message: "connection lost: \(reason)"))
        } else {
            self.continuation.finish()
        }
    }
}
