import PetrelCore

/// The request a server sees before it upgrades, for authentication and routing.
public struct UpgradeRequest: Sendable {
    public let request: HandshakeRequest
    public let peer: SocketAddress
    /// The id the connection will have (and has in `onOpen`) if it is accepted.
    public let connectionID: ConnectionID
    /// The client's address: the peer's, or what a PROXY header or a trusted proxy's
    /// `Forwarded`/`X-Forwarded-For` said (`ServerConfiguration.trustedProxies`).
    public var clientAddress: String = ""

    public init(request: HandshakeRequest, peer: SocketAddress, connectionID: ConnectionID, clientAddress: String? = nil) {
        self.request = request
        self.peer = peer
        self.connectionID = connectionID
        self.clientAddress = clientAddress ?? peer.description
    }
}

/// An accept hook's answer.
public enum UpgradeDecision: Sendable {
    /// Upgrade, optionally choosing the subprotocol (else the configured preference decides) and
    /// attaching user data to the connection.
    case accept(subprotocol: String? = nil, userData: UInt = 0, headers: [HTTPField] = [])
    /// Refuse with an HTTP status and a text body (sent as text/plain, with a line feed added).
    case reject(status: Int, body: String)
    /// A refusal with its body sent byte for byte, as `contentType`.
    case refuse(status: Int, contentType: String, body: [UInt8])
}

/// Callbacks. Each runs on the connection's loop thread, never concurrently for one connection.
/// Payload pointers are borrowed until the callback returns. Set them before starting: the loop
/// threads read them as loop-thread state (behind a pointer, without Swift's run-time
/// exclusivity check; see `Connection.State`), `onMessage` once per read of a socket, the
/// others for every event.
public final class Handlers: @unchecked Sendable {
    struct Callbacks {
        var onOpen: (@Sendable (Connection) -> Void)? = nil
        var onMessage: (@Sendable (Connection, MessageKind, UnsafeRawBufferPointer) -> Void)? = nil
        var onClose: (@Sendable (Connection, CloseCode, String) -> Void)? = nil
        var onDrain: (@Sendable (Connection) -> Void)? = nil
        var onPong: (@Sendable (Connection, UnsafeRawBufferPointer) -> Void)? = nil
        var onUpgrade: (@Sendable (UpgradeRequest) -> UpgradeDecision)? = nil
        var onHTTPRequest: (@Sendable (HTTPRequest, Connection) -> HTTPAnswer?)? = nil
        var onConnectFailed: (@Sendable (Connection, RuntimeError) -> Void)? = nil
        var onStompConnect: (@Sendable (Connection, StompConnectRequest) -> StompConnectAnswer)? = nil
        var onStompSubscribe: (@Sendable (Connection, StompSubscription) -> StompSubscribeAnswer)? = nil
        var onStompSend: (@Sendable (Connection, StompFrame, String) -> StompSendAnswer)? = nil
        var onStompAck: (@Sendable (Connection, StompAcknowledgement) -> Void)? = nil
    }
    let callbacks: UnsafeMutablePointer<Callbacks>

    public var onOpen: (@Sendable (Connection) -> Void)? {
        get { self.callbacks.pointee.onOpen }
        set { self.callbacks.pointee.onOpen = newValue }
    }
    public var onMessage: (@Sendable (Connection, MessageKind, UnsafeRawBufferPointer) -> Void)? {
        get { self.callbacks.pointee.onMessage }
        set { self.callbacks.pointee.onMessage = newValue }
    }
    /// The connection is gone: the code from the peer's close frame, or the code we failed it
    /// with, or 1006 when the transport ended without a closing handshake; and the reason.
    public var onClose: (@Sendable (Connection, CloseCode, String) -> Void)? {
        get { self.callbacks.pointee.onClose }
        set { self.callbacks.pointee.onClose = newValue }
    }
    /// The outgoing buffer, which was over its limit, has been written out.
    public var onDrain: (@Sendable (Connection) -> Void)? {
        get { self.callbacks.pointee.onDrain }
        set { self.callbacks.pointee.onDrain = newValue }
    }
    public var onPong: (@Sendable (Connection, UnsafeRawBufferPointer) -> Void)? {
        get { self.callbacks.pointee.onPong }
        set { self.callbacks.pointee.onPong = newValue }
    }
    /// Server: decides, before the upgrade, whether a request may connect.
    public var onUpgrade: (@Sendable (UpgradeRequest) -> UpgradeDecision)? {
        get { self.callbacks.pointee.onUpgrade }
        set { self.callbacks.pointee.onUpgrade = newValue }
    }
    /// Server: answers requests that are not WebSocket upgrades. Returning nil lets the server
    /// go on: an event-stream path, then static files, then 426 (404 with a static root).
    public var onHTTPRequest: (@Sendable (HTTPRequest, Connection) -> HTTPAnswer?)? {
        get { self.callbacks.pointee.onHTTPRequest }
        set { self.callbacks.pointee.onHTTPRequest = newValue }
    }
    /// Client: the connection or its handshake failed.
    public var onConnectFailed: (@Sendable (Connection, RuntimeError) -> Void)? {
        get { self.callbacks.pointee.onConnectFailed }
        set { self.callbacks.pointee.onConnectFailed = newValue }
    }

    /// STOMP: a CONNECT (or STOMP) frame, with its login, passcode and host. Without a hook,
    /// every CONNECT is accepted.
    public var onStompConnect: (@Sendable (Connection, StompConnectRequest) -> StompConnectAnswer)? {
        get { self.callbacks.pointee.onStompConnect }
        set { self.callbacks.pointee.onStompConnect = newValue }
    }
    /// STOMP: a SUBSCRIBE: allow it onto a topic, or refuse it. Without a hook, `/topic/NAME`
    /// is topic NAME and other destinations are refused.
    public var onStompSubscribe: (@Sendable (Connection, StompSubscription) -> StompSubscribeAnswer)? {
        get { self.callbacks.pointee.onStompSubscribe }
        set { self.callbacks.pointee.onStompSubscribe = newValue }
    }
    /// STOMP: a SEND (the frame and its destination): publish its body to a topic, take it
    /// yourself, or refuse it. Without a hook, every SEND is refused.
    public var onStompSend: (@Sendable (Connection, StompFrame, String) -> StompSendAnswer)? {
        get { self.callbacks.pointee.onStompSend }
        set { self.callbacks.pointee.onStompSend = newValue }
    }
    /// STOMP: an ACK or NACK settled these messages of a subscription.
    public var onStompAck: (@Sendable (Connection, StompAcknowledgement) -> Void)? {
        get { self.callbacks.pointee.onStompAck }
        set { self.callbacks.pointee.onStompAck = newValue }
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

/// An `onStompConnect` hook's answer.
public enum StompConnectAnswer: Sendable {
    case accept
    /// An ERROR frame with this message, then the connection is closed.
    case refuse(String)
}

/// An `onStompSubscribe` hook's answer.
public enum StompSubscribeAnswer: Sendable {
    /// Subscribe to this topic (the MESSAGE frames still name the destination the client gave).
    case allow(topic: String)
    case refuse(String)
}

/// An `onStompSend` hook's answer.
public enum StompSendAnswer: Sendable {
    /// Publish the body to this topic (as text when it is UTF-8, else binary).
    case publish(topic: String)
    /// The application took it.
    case handled
    case refuse(String)
}

/// What an ACK or NACK settled.
public struct StompAcknowledgement: Sendable, Hashable {
    public let subscription: String
    /// The event ids settled (several for a cumulative ACK in `client` mode; none when the
    /// frame named a message already settled).
    public let eventIDs: [UInt64]
    /// A NACK (topics do not deliver again: the application decides what a NACK means).
    public let negative: Bool
    /// Up to which event id everything delivered to the subscription is now acknowledged.
    public let position: UInt64
}
