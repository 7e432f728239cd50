import PetrelCore
import PetrelRuntime

/// Why a send or a connection failed, in the Swift API.
public struct WebSocketError: Error, Sendable, Hashable, CustomStringConvertible {
    public enum Kind: Sendable, Hashable { case backpressure, closed, connectFailed }
    public let kind: Kind
    public let message: String

    public var description: String { self.message }

    public static let backpressure = WebSocketError(kind: .backpressure, message: "send buffer is full: wait for drain")
    public static let closed = WebSocketError(kind: .closed, message: "the connection is closed")
}

/// Why the server could not start, or a client could not connect: the kind (resolve, bind,
/// connect, TLS, proxy, handshake...), the message, and the C status `code`.
public typealias PetrelError = RuntimeError

/// A close code (RFC 6455 §7.4): `.normalClosure`, `.goingAway`, or `WebSocketCloseCode(4000)`.
public typealias WebSocketCloseCode = CloseCode
