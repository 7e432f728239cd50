import Glibc
import PetrelCore

/// Errors of the runtime's own (sockets, threads, configuration).
public struct RuntimeError: Error, Hashable, Sendable, CustomStringConvertible {
    public enum Kind: Sendable, CaseIterable {
        case resolve, socket, bind, listen, connect, connectTimeout, thread, stopped, invalidURL, handshake, closed, configuration, tls, proxy
        /// The pub/sub engine (Redis) could not be reached, or refused a command.
        case engine
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

    /// The status the C API reports for this error (`PETREL_E_*`).
    public var code: StatusCode {
        switch self.kind {
        case .resolve: return .resolve
        case .socket: return .socket
        case .bind, .listen: return .bind
        case .connect: return .connect
        case .connectTimeout: return .connectTimeout
        case .thread: return .thread
        case .stopped: return .state
        case .invalidURL: return .url
        case .handshake: return .handshake
        case .closed: return .closed
        case .configuration: return .invalidArgument
        case .tls: return .tls
        case .proxy: return .proxy
        case .engine: return .engine
        }
    }

    public var description: String { self.message }
}

