import PetrelCore

/// Accessors for the state kept out of line in `ConnectionExtras`, where each is documented.
/// A read finds the default when there are no extras; the first write makes them.
extension Connection {
    public internal(set) var subprotocol: String? {
        get { self.extras?.subprotocol ?? nil }
        _modify { yield &self.more.subprotocol }
    }
    var backlog: [QueuedFrame] {
        get { self.extras?.backlog ?? [] }
        _modify { yield &self.more.backlog }
    }
    var backlogHead: Int {
        get { self.extras?.backlogHead ?? 0 }
        _modify { yield &self.more.backlogHead }
    }
    var backlogBytes: Int {
        get { self.extras?.backlogBytes ?? 0 }
        _modify { yield &self.more.backlogBytes }
    }
    var unparsedInput: [UInt8] {
        get { self.extras?.unparsedInput ?? [] }
        _modify { yield &self.more.unparsedInput }
    }
    var closeReason: String {
        get { self.extras?.closeReason ?? "" }
        // An empty reason (most closes) makes no extras object.
        set { if !newValue.isEmpty || self.extras != nil { self.more.closeReason = newValue } }
    }
    var connectError: RuntimeError? {
        get { self.extras?.connectError ?? nil }
        _modify { yield &self.more.connectError }
    }
    var clientHandshake: ClientHandshake? {
        get { self.extras?.clientHandshake ?? nil }
        _modify { yield &self.more.clientHandshake }
    }
    var clientConfiguration: ClientConfiguration? {
        get { self.extras?.clientConfiguration ?? nil }
        _modify { yield &self.more.clientConfiguration }
    }
    var pendingAddresses: [SocketAddress] {
        get { self.extras?.pendingAddresses ?? [] }
        _modify { yield &self.more.pendingAddresses }
    }
    var tlsLayers: [TLSSession] {
        get { self.extras?.tlsLayers ?? [] }
        _modify { yield &self.more.tlsLayers }
    }
    var layerPending: [[UInt8]] {
        get { self.extras?.layerPending ?? [] }
        _modify { yield &self.more.layerPending }
    }
    var innerPlain: [UInt8] {
        get { self.extras?.innerPlain ?? [] }
        _modify { yield &self.more.innerPlain }
    }
    var proxy: ProxyURL? {
        get { self.extras?.proxy ?? nil }
        _modify { yield &self.more.proxy }
    }
    var proxyHandshake: ProxyHandshake? {
        get { self.extras?.proxyHandshake ?? nil }
        _modify { yield &self.more.proxyHandshake }
    }
    var proxyOut: [UInt8] {
        get { self.extras?.proxyOut ?? [] }
        _modify { yield &self.more.proxyOut }
    }
    var tlsHost: String? {
        get { self.extras?.tlsHost ?? nil }
        _modify { yield &self.more.tlsHost }
    }
    var tlsOut: [UInt8] {
        get { self.extras?.tlsOut ?? [] }
        _modify { yield &self.more.tlsOut }
    }
    var tlsOutHead: Int {
        get { self.extras?.tlsOutHead ?? 0 }
        _modify { yield &self.more.tlsOutHead }
    }
    var pendingRequest: (head: HTTPRequestHead, reader: HTTPRequestBodyReader)? {
        get { self.extras?.pendingRequest ?? nil }
        _modify { yield &self.more.pendingRequest }
    }
    var resumeFloors: [String: UInt64] {
        get { self.extras?.resumeFloors ?? [:] }
        _modify { yield &self.more.resumeFloors }
    }
    public internal(set) var httpRequest: HTTPRequestHead? {
        get { self.extras?.httpRequest ?? nil }
        _modify { yield &self.more.httpRequest }
    }
    var stomp: StompConnection? {
        get { self.extras?.stomp ?? nil }
        _modify { yield &self.more.stomp }
    }
}

/// The options of a server's connections, shared rather than copied into each.
final class SharedOptions: Sendable {
    let value: ConnectionOptions
    init(_ value: ConnectionOptions) { self.value = value }
}

/// A connection's rarely needed state (see `Connection.extras`).
final class ConnectionExtras {
    /// The subprotocol agreed in the handshake.
    var subprotocol: String? = nil
    /// Frames waiting for room under the backpressure limit, from `backlogHead` on.
    var backlog: [QueuedFrame] = []
    var backlogHead: Int = 0
    var backlogBytes: Int = 0
    /// Input kept while reading is paused.
    var unparsedInput: [UInt8] = []
    /// HTTP bytes that are not WebSocket frames (a plain response, an event stream, a client's
    /// request), written before the session's, from `plainOutputHead` on.
    var plainOutput: [UInt8] = []
    var plainOutputHead = 0
    var closeReason: String = ""
    /// Why a connecting client failed, reported by `closeTransport` through `onConnectFailed`.
    var connectError: RuntimeError? = nil
    var clientHandshake: ClientHandshake? = nil
    var clientConfiguration: ClientConfiguration? = nil
    /// Client: the addresses still to try.
    var pendingAddresses: [SocketAddress] = []
    /// TLS sessions, outermost first: none, the one to the peer, or (through an https:// proxy) the one to the proxy and the one to the server inside it. A server makes its session when the first bytes arrive.
    var tlsLayers: [TLSSession] = []
    /// Ciphertext of layer i waiting to be written into layer i - 1 (nested TLS only).
    var layerPending: [[UInt8]] = []
    /// Where the inner TLS layer's plaintext is read (nested TLS only).
    var innerPlain: [UInt8] = []
    /// Client: the proxy and where the tunnel goes; the negotiation under way; its bytes out.
    var proxy: ProxyURL? = nil
    var proxyHandshake: ProxyHandshake? = nil
    var proxyOut: [UInt8] = []
    /// Client: the URL's host, for SNI and the certificate check.
    var tlsHost: String? = nil
    /// Ciphertext not yet written, from `tlsOutHead` on.
    var tlsOut: [UInt8] = []
    var tlsOutHead: Int = 0
    /// A plain request whose body is still arriving: its head, and the reader of its body.
    var pendingRequest: (head: HTTPRequestHead, reader: HTTPRequestBodyReader)? = nil
    /// Per topic resumed with `subscribe(_:after:)`: the last event id already replayed, so that the same message still on its way to this loop is not delivered twice.
    var resumeFloors: [String: UInt64] = [:]
    /// The plain HTTP request of a streaming (SSE) connection.
    var httpRequest: HTTPRequestHead? = nil
    /// The STOMP session of a connection that speaks STOMP.
    var stomp: StompConnection? = nil
}
