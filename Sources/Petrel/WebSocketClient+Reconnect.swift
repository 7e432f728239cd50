import PetrelCore
import PetrelRuntime

/// Where a reconnecting client resumes: the last event id the application has handled. Each
/// new connection presents it (a `Last-Event-ID` header and `last_event_id=N` in the query),
/// and a Petrel server resumes after it from its replay ring. Safe from any task.
public final class ResumePoint: Sendable {
    private let id: Lock<UInt64?>

    public init(lastEventID: UInt64? = nil) { self.id = Lock(lastEventID) }

    /// Set it once a message is handled, to the id the message carries.
    public var lastEventID: UInt64? {
        get { self.id.withLock { $0 } }
        set { self.id.withLock { $0 = newValue } }
    }
}

/// A reconnecting client's state changes, in order.
public enum ReconnectState: Sendable, Hashable {
    /// Attempt `attempt` (1, 2, ...) starts.
    case connecting(attempt: Int)
    /// Open (again), after `attempt` attempts (0: the first connect).
    case open(attempt: Int)
    /// The connection was lost or an attempt failed (`reason`); attempt `attempt` follows after `delay` ms.
    case reconnecting(attempt: Int, delay: Milliseconds, reason: String)
    /// The end: `reason` says why (a close the server meant, a refusal, attempts used up).
    case closed(reason: String)
}

extension WebSocketClient {
    /// When a lost connection is made again, and the wait before each attempt.
    public typealias ReconnectPolicy = PetrelRuntime.ReconnectPolicy

    /// Connections to `url`, one after another, for a client that reconnects by itself:
    ///
    ///     let resume = ResumePoint()
    ///     for try await ws in WebSocketClient.connections(to: url, resume: resume) {
    ///         do {
    ///             for try await message in ws.inbound { handle(message); resume.lastEventID = id(of: message) }
    ///         } catch {}  // lost: the next turn reconnects, if the policy says so
    ///     }
    ///
    /// The first connection is made at once and its failure is thrown. Each next turn starts
    /// when the body is done with the one before: if it ended in a way `policy` reconnects after
    /// (the transport was lost, no pong, 1001, 1011, 1012, 1013, 1014), the next connection
    /// comes after the policy's delay, with failures of the network's kind tried again;
    /// otherwise (a close the server meant, a close by the application with any code, or a
    /// connection the body left open, which is closed with 1000) the sequence ends. A refusal that will not change by itself (401, 403...), or
    /// `policy.maxAttempts` failures in a row, is thrown. Cancelling the task ends the wait.
    /// `onState` hears each step. Sends go to the connection of the turn: once it has ended,
    /// they throw `.closed`, and the next turn's connection takes them.
    public static func connections(
        to url: String, configuration: Configuration = Configuration(), inboundLimits: InboundLimits = InboundLimits(),
        policy: ReconnectPolicy = ReconnectPolicy(), resume: ResumePoint? = nil,
        onState: (@Sendable (ReconnectState) -> Void)? = nil
    ) -> Connections {
        Connections(url: url, configuration: configuration, inboundLimits: inboundLimits, policy: policy, resume: resume, onState: onState)
    }

    /// See `connections(to:configuration:inboundLimits:policy:resume:onState:)`.
    public struct Connections: AsyncSequence, Sendable {
        public typealias Element = WebSocketClient
        let url: String
        let configuration: Configuration
        let inboundLimits: InboundLimits
        let policy: ReconnectPolicy
        let resume: ResumePoint?
        let onState: (@Sendable (ReconnectState) -> Void)?

        public func makeAsyncIterator() -> Iterator { Iterator(sequence: self) }

        public struct Iterator: AsyncIteratorProtocol {
            let sequence: Connections
            var previous: WebSocketClient? = nil
            var started = false
            var finished = false

            public mutating func next() async throws -> WebSocketClient? {
                guard !self.finished else { return nil }
                let s = self.sequence
                if !self.started {
                    self.started = true
                    do {
                        let client = try await self.open()
                        s.onState?(.open(attempt: 0))
                        self.previous = client
                        return client
                    } catch {
                        self.finished = true
                        throw error
                    }
                }
                guard let before = self.previous else { return nil }
                self.previous = nil
                guard let code = before.closeCode else {
                    // The body left it open: it is done with the connections.
                    before.close()
                    return self.end("the connection was left open: closed with 1000")
                }
                if before.outbound.drain.wasClosedByApplication {
                    return self.end("closed by the application with \(code.rawValue)")
                }
                let reason = before.closeReason.map { $0.isEmpty ? "closed with \(code.rawValue)" : "closed with \(code.rawValue): \($0)" }
                    ?? "closed with \(code.rawValue)"
                guard ReconnectPolicy.reconnects(after: code) else { return self.end(reason) }
                var why = reason
                var attempt = 1
                var last: PetrelError? = nil
                while true {
                    guard s.policy.allows(attempt: attempt) else {
                        self.finished = true
                        let message = "gave up after \(attempt - 1) attempts: \(why)"
                        s.onState?(.closed(reason: message))
                        // The last attempt's error (its kind, a refusal's status and body), told why.
                        throw PetrelError(last?.kind ?? .connect, message, errno: last?.errno ?? 0,
                                          httpStatus: last?.httpStatus ?? 0, responseBody: last?.responseBody ?? [])
                    }
                    let delay = s.policy.delay(attempt: attempt, random: Double.random(in: 0..<1))
                    s.onState?(.reconnecting(attempt: attempt, delay: delay, reason: why))
                    do {
                        try await Task.sleep(nanoseconds: UInt64(delay) * 1_000_000)
                    } catch {
                        self.finished = true
                        s.onState?(.closed(reason: "cancelled"))
                        throw error
                    }
                    s.onState?(.connecting(attempt: attempt))
                    do {
                        let client = try await self.open()
                        s.onState?(.open(attempt: attempt))
                        self.previous = client
                        return client
                    } catch let error as PetrelError where ReconnectPolicy.retries(error) {
                        why = error.message
                        last = error
                        attempt += 1
                    } catch {
                        self.finished = true
                        s.onState?(.closed(reason: (error as? PetrelError)?.message ?? "\(error)"))
                        throw error
                    }
                }
            }

            private mutating func end(_ reason: String) -> WebSocketClient? {
                self.finished = true
                self.sequence.onState?(.closed(reason: reason))
                return nil
            }

            /// One connect, resuming after the last event id handled.
            private func open() async throws -> WebSocketClient {
                let s = self.sequence
                var url = s.url
                var configuration = s.configuration
                if let id = s.resume?.lastEventID {
                    url = ReconnectPolicy.resumeTarget(url, lastEventID: id)
                    configuration.headers.removeAll { $0.name.lowercased() == "last-event-id" }
                    configuration.headers.append(HTTPField(name: "Last-Event-ID", value: String(id)))
                }
                return try await WebSocketClient.connect(to: url, configuration: configuration, inboundLimits: s.inboundLimits)
            }
        }
    }
}
