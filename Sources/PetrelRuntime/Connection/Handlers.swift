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
/// Payload pointers are borrowed until the callback returns. Set them before starting: the loop
/// threads read them as loop-thread state (behind a pointer, without Swift's run-time
/// exclusivity check; see `Connection.State`), `onMessage` once per read of a socket, the
/// others for every event.
public final class Handlers: @unchecked Sendable {
    struct Callbacks {
        var onOpen: ((Connection) -> Void)? = nil
        var onMessage: ((Connection, MessageKind, UnsafeRawBufferPointer) -> Void)? = nil
        var onClose: ((Connection, CloseCode, String) -> Void)? = nil
        var onDrain: ((Connection) -> Void)? = nil
        var onPong: ((Connection, UnsafeRawBufferPointer) -> Void)? = nil
        var onUpgrade: ((UpgradeRequest) -> UpgradeDecision)? = nil
        var onHTTPRequest: ((HTTPRequest, Connection) -> HTTPAnswer?)? = nil
        var onConnectFailed: ((Connection, RuntimeError) -> Void)? = nil
    }
    let callbacks: UnsafeMutablePointer<Callbacks>

    public var onOpen: ((Connection) -> Void)? {
        get { self.callbacks.pointee.onOpen }
        set { self.callbacks.pointee.onOpen = newValue }
    }
    public var onMessage: ((Connection, MessageKind, UnsafeRawBufferPointer) -> Void)? {
        get { self.callbacks.pointee.onMessage }
        set { self.callbacks.pointee.onMessage = newValue }
    }
    /// The connection is gone: the code from the peer's close frame, or the code we failed it
    /// with, or 1006 when the transport ended without a closing handshake; and the reason.
    public var onClose: ((Connection, CloseCode, String) -> Void)? {
        get { self.callbacks.pointee.onClose }
        set { self.callbacks.pointee.onClose = newValue }
    }
    /// The outgoing buffer, which was over its limit, has been written out.
    public var onDrain: ((Connection) -> Void)? {
        get { self.callbacks.pointee.onDrain }
        set { self.callbacks.pointee.onDrain = newValue }
    }
    public var onPong: ((Connection, UnsafeRawBufferPointer) -> Void)? {
        get { self.callbacks.pointee.onPong }
        set { self.callbacks.pointee.onPong = newValue }
    }
    /// Server: decides, before the upgrade, whether a request may connect.
    public var onUpgrade: ((UpgradeRequest) -> UpgradeDecision)? {
        get { self.callbacks.pointee.onUpgrade }
        set { self.callbacks.pointee.onUpgrade = newValue }
    }
    /// Server: answers requests that are not WebSocket upgrades. Returning nil lets the server
    /// go on: an event-stream path, then static files, then 426 (404 with a static root).
    public var onHTTPRequest: ((HTTPRequest, Connection) -> HTTPAnswer?)? {
        get { self.callbacks.pointee.onHTTPRequest }
        set { self.callbacks.pointee.onHTTPRequest = newValue }
    }
    /// Client: the connection or its handshake failed.
    public var onConnectFailed: ((Connection, RuntimeError) -> Void)? {
        get { self.callbacks.pointee.onConnectFailed }
        set { self.callbacks.pointee.onConnectFailed = newValue }
    }

    public init() {
        self.callbacks = .allocate(capacity: 1)
        self.callbacks.initialize(to: Callbacks())
    }

    deinit {
        self.callbacks.deinitialize(count: 1)
        self.callbacks.deallocate()
    }

    /// No callbacks: what a closed connection keeps.
    static let none = Handlers()
}
