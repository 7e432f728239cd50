import PetrelCore
import PetrelRuntime

/// The sending side of a connection, for async code: `send` suspends while the connection's
/// outgoing buffer is over its limit (`maxBackpressure`) and resumes when it has been written
/// out, so a fast producer is paced by the peer instead of being refused.
public struct WebSocketOutbound: Sendable {
    let connection: Connection
    let drain: DrainSignal

    /// Queues `message`, waiting first while the outgoing buffer is full.
    /// - Throws: `WebSocketError.closed` once the connection is closing or closed;
    ///   `CancellationError` when the task is cancelled while it waits (nothing was queued).
    public func send(_ message: WebSocketMessage) async throws {
        while true {
            let generation = self.drain.generation
            let status: SendStatus
            switch message {
            case .text(let s): status = self.connection.send(text: s)
            case .binary(let b): status = self.connection.send(binary: b)
            }
            switch status {
            case .ok: return
            case .closed: throw WebSocketError.closed
            case .backpressure: try await self.drain.wait(after: generation)
            }
        }
    }

    /// Text with an event id: on an event stream, the event's `id:` (a browser sends it back as
    /// `Last-Event-ID`); on a WebSocket, plain text. Waits as `send` does.
    public func send(_ text: String, eventID: UInt64) async throws {
        while true {
            let generation = self.drain.generation
            switch self.connection.send(text: text, eventID: eventID) {
            case .ok: return
            case .closed: throw WebSocketError.closed
            case .backpressure: try await self.drain.wait(after: generation)
            }
        }
    }

    /// Sends a ping; its pong updates `roundTripTime`.
    public func ping(_ payload: [UInt8] = []) { self.connection.ping(payload) }

    /// The last ping's round trip in milliseconds, or nil before the first pong.
    public var roundTripTime: Int? { self.connection.roundTripTime }

    /// Bytes queued and not yet written.
    public var bufferedAmount: Int { self.connection.bufferedAmount }

    /// Starts the closing handshake.
    public func close(code: WebSocketCloseCode = .normalClosure, reason: String = "") {
        self.drain.closedByApplication()
        self.connection.close(code: code, reason: reason)
    }
}

/// Wakes senders waiting for a connection's outgoing buffer to drain. `generation` counts
/// drains; a sender reads it before trying, so a drain between its try and its wait is not
/// missed.
final class DrainSignal: Sendable {
    private struct State {
        var generation: UInt64 = 0
        var closed = false
        var closedByApplication = false
        var nextWaiter = 0
        var waiters: [(id: Int, continuation: CheckedContinuation<Void, any Error>)] = []
    }
    private let state = Lock(State())

    var generation: UInt64 { self.state.withLock { $0.generation } }

    /// Whether the application closed the connection (`close` on the client or its outbound):
    /// a reconnecting sequence then ends, whatever the code.
    var wasClosedByApplication: Bool { self.state.withLock { $0.closedByApplication } }

    func closedByApplication() { self.state.withLock { $0.closedByApplication = true } }

    /// The buffer drained (the loop's onDrain).
    func drained() {
        let waiting = self.state.withLock { s -> [(id: Int, continuation: CheckedContinuation<Void, any Error>)] in
            s.generation &+= 1
            defer { s.waiters = [] }
            return s.waiters
        }
        for w in waiting { w.continuation.resume() }
    }

    /// The connection ended: every waiter, now and later, gets `WebSocketError.closed`.
    func closed() {
        let waiting = self.state.withLock { s -> [(id: Int, continuation: CheckedContinuation<Void, any Error>)] in
            s.closed = true
            defer { s.waiters = [] }
            return s.waiters
        }
        for w in waiting { w.continuation.resume(throwing: WebSocketError.closed) }
    }

    /// Returns once a drain after `generation` has happened.
    func wait(after generation: UInt64) async throws {
        let id = self.state.withLock { s -> Int in
            s.nextWaiter += 1
            return s.nextWaiter
        }
        try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { (k: CheckedContinuation<Void, any Error>) in
                let outcome = self.state.withLock { s -> Result<Void, any Error>? in
                    if s.closed { return .failure(WebSocketError.closed) }
                    if s.generation != generation { return .success(()) }
                    if Task.isCancelled { return .failure(CancellationError()) }
                    s.waiters.append((id, k))
                    return nil
                }
                if let outcome { k.resume(with: outcome) }
            }
        } onCancel: {
            let k = self.state.withLock { s -> CheckedContinuation<Void, any Error>? in
                guard let i = s.waiters.firstIndex(where: { $0.id == id }) else { return nil }
                return s.waiters.remove(at: i).continuation
            }
            k?.resume(throwing: CancellationError())
        }
    }
}
