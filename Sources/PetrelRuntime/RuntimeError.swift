import Glibc

/// Errors of the runtime's own (sockets, threads, configuration).
public struct RuntimeError: Error, Hashable, Sendable, CustomStringConvertible {
    public enum Kind: UInt8, Sendable {
        case resolve, socket, bind, listen, connect, connectTimeout, thread, stopped, invalidURL, handshake, closed, configuration, tls, proxy
    }

    public let kind: Kind
    public let message: String
    /// The errno behind a system-call failure, else 0.
    public let errno: Int32

    public init(_ kind: Kind, _ message: String, errno: Int32 = 0) {
        self.kind = kind
        self.message = message
        self.errno = errno
    }

    static func system(_ kind: Kind, _ what: String, _ code: Int32 = Glibc.errno) -> RuntimeError {
        RuntimeError(kind, "\(what): \(String(cString: strerror(code)))", errno: code)
    }

    public var description: String { self.message }
}

