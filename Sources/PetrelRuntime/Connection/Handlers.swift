import PetrelCore

/// The request a server sees before it upgrades, for authentication and routing.
public struct UpgradeRequest: Sendable {
    public let request: HandshakeRequest
    public let peer: SocketAddress
    /// The id the connection will have (and has in `onOpen`) if it is accepted.
    public let connectionID: ConnectionID
}

/// An accept hook's answer.
public enum UpgradeDecision: Sendable {
    /// Upgrade, optionally choosing the subprotocol (else the configured preference decides) and
    /// attaching user data to the connection.
    case accept(subprotocol: String? = nil, userData: UInt = 0, headers: [HTTPField] = [])
    /// Refuse with an HTTP status and a text body.
    case reject(status: Int, body: String)
}

/// Callbacks. Each runs on the connection's loop thread, never concurrently for one connection.
/// Payload pointers are borrowed until the callback returns. Set them before starting.
public final class Handlers: @unchecked Sendable {
    public var onOpen: ((Connection) -> Void)?
    public var onMessage: ((Connection, MessageKind, UnsafeRawBufferPointer) -> Void)?
    /// The connection is gone: the code from the peer's close frame, or the code we failed it
    /// with, or 1006 when the transport ended without a closing handshake; and the reason.
    public var onClose: ((Connection, CloseCode, String) -> Void)?
    /// The outgoing buffer, which was over its limit, has been written out.
    public var onDrain: ((Connection) -> Void)?
    public var onPong: ((Connection, UnsafeRawBufferPointer) -> Void)?
    /// Server: decides, before the upgrade, whether a request may connect.
    public var onUpgrade: ((UpgradeRequest) -> UpgradeDecision)?
    /// Server: answers requests that are not WebSocket upgrades. Returning nil lets the server
    /// go on: an event-stream path, then static files, then 426 (404 with a static root).
    public var onHTTPRequest: ((HTTPRequest, Connection) -> HTTPAnswer?)?
    /// Client: the connection or its handshake failed.
    public var onConnectFailed: ((Connection, RuntimeError) -> Void)?

    public init() {}

    /// No callbacks: what a closed connection keeps.
    static let none = Handlers()
}

