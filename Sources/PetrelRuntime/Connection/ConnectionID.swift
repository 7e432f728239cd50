import Synchronization

/// A connection's id: never reused in the process. The low 8 bits name its loop.
public struct ConnectionID: Hashable, Sendable, CustomStringConvertible {
    public let rawValue: UInt64

    public init(rawValue: UInt64) { self.rawValue = rawValue }

    /// The loop that owns the connection (0-255): its callbacks all run on that loop's thread.
    public var loopIndex: Int { Int(self.rawValue & 0xFF) }

    private static let counter = Atomic<UInt64>(1)

    static func next(loop: Int) -> ConnectionID {
        let n = counter.add(1, ordering: .relaxed).oldValue
        return ConnectionID(rawValue: n << 8 | UInt64(loop & 0xFF))
    }

    public var description: String { String(self.rawValue) }
}

/// The outcome of a send.
public enum SendStatus: Sendable, Equatable {
    /// Queued.
    case ok
    /// Not queued: the connection's outgoing buffer is over `maxBackpressure`. `onDrain` fires
    /// when it has been written out.
    case backpressure
    /// Not queued: the connection is closing or closed.
    case closed
}
