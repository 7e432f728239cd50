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
    /// A handshake the server refused with an HTTP status other than 101: that status, else 0.
    public let httpStatus: Int
    /// With `httpStatus`: the response's body as far as it came (at most 16 KiB), else empty.
    public let responseBody: [UInt8]

    public init(_ kind: Kind, _ message: String, errno: Int32 = 0, httpStatus: Int = 0, responseBody: [UInt8] = []) {
        self.kind = kind
        self.message = message
        self.errno = errno
        self.httpStatus = httpStatus
        self.responseBody = responseBody
    }

    /// A client handshake the server refused, or whose response broke RFC 6455.
    public static func handshake(_ e: ClientHandshakeError) -> RuntimeError {
        RuntimeError(.handshake, e.message, httpStatus: e.httpStatus == 101 ? 0 : e.httpStatus, responseBody: e.body)
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

