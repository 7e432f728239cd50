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

/// A connection's rarely needed state (see `Connection.extras`). Loop thread only, like
/// `Connection.State`: its fields are read on every write of a connection that has extras (TLS,
/// an event stream, STOMP, a backlog), so they are declared without the run-time exclusivity
/// check, which cost more than the work it guarded.
final class ConnectionExtras {
    // The output path's fields come first, together: a write or delivery to a connection with
    // extras reads them, and at 10,000 connections each cache line it touches is a miss.
    /// The STOMP session of a connection that speaks STOMP.
    @exclusivity(unchecked) var stomp: StompConnection? = nil
    /// Frames waiting for room under the backpressure limit, from `backlogHead` on.
    @exclusivity(unchecked) var backlog: [QueuedFrame] = []
    @exclusivity(unchecked) var backlogHead: Int = 0
    @exclusivity(unchecked) var backlogBytes: Int = 0
    /// HTTP bytes that are not WebSocket frames (a plain response, an event stream, a client's
    /// request), written before the session's, from `plainOutputHead` on.
    @exclusivity(unchecked) var plainOutput: [UInt8] = []
    @exclusivity(unchecked) var plainOutputHead = 0
    /// TLS sessions, outermost first: none, the one to the peer, or (through an https:// proxy) the one to the proxy and the one to the server inside it. A server makes its session when the first bytes arrive.
    @exclusivity(unchecked) var tlsLayers: [TLSSession] = []
    /// Ciphertext of layer i waiting to be written into layer i - 1 (nested TLS only).
    @exclusivity(unchecked) var layerPending: [[UInt8]] = []
    /// Client: the proxy negotiation's bytes out.
    @exclusivity(unchecked) var proxyOut: [UInt8] = []
    /// Ciphertext not yet written, from `tlsOutHead` on.
    @exclusivity(unchecked) var tlsOut: [UInt8] = []
    @exclusivity(unchecked) var tlsOutHead: Int = 0
    /// Per topic resumed with `subscribe(_:after:)`: the last event id already replayed, so that the same message still on its way to this loop is not delivered twice.
    @exclusivity(unchecked) var resumeFloors: [String: UInt64] = [:]
    /// The subprotocol agreed in the handshake.
    @exclusivity(unchecked) var subprotocol: String? = nil
    /// Input kept while reading is paused.
    @exclusivity(unchecked) var unparsedInput: [UInt8] = []
    @exclusivity(unchecked) var closeReason: String = ""
    /// Why a connecting client failed, reported by `closeTransport` through `onConnectFailed`.
    @exclusivity(unchecked) var connectError: RuntimeError? = nil
    @exclusivity(unchecked) var clientHandshake: ClientHandshake? = nil
    @exclusivity(unchecked) var clientConfiguration: ClientConfiguration? = nil
    /// Client: the addresses still to try.
    @exclusivity(unchecked) var pendingAddresses: [SocketAddress] = []
    /// Where the inner TLS layer's plaintext is read (nested TLS only).
    @exclusivity(unchecked) var innerPlain: [UInt8] = []
    /// Client: the proxy and where the tunnel goes; the negotiation under way; its bytes out.
    @exclusivity(unchecked) var proxy: ProxyURL? = nil
    @exclusivity(unchecked) var proxyHandshake: ProxyHandshake? = nil
    /// Client: the URL's host, for SNI and the certificate check.
    @exclusivity(unchecked) var tlsHost: String? = nil
    /// A plain request whose body is still arriving: its head, and the reader of its body.
    @exclusivity(unchecked) var pendingRequest: (head: HTTPRequestHead, reader: HTTPRequestBodyReader)? = nil
    /// The plain HTTP request of a streaming (SSE) connection.
    @exclusivity(unchecked) var httpRequest: HTTPRequestHead? = nil
    /// Plain requests answered on this connection (HTTP/1.1 keep-alive).
    @exclusivity(unchecked) var requestsServed = 0
    /// Kept alive after a response, and nothing of the next request has come yet: when the
    /// wait ends the connection closes quietly (no 408).
    @exclusivity(unchecked) var keptAliveIdle = false
    /// What the access log's entries need (`AccessLog`), when the server keeps one.
    @exclusivity(unchecked) var access = AccessCounts()
    /// The client's address as a trusted proxy reported it (`X-Forwarded-For`, `Forwarded`).
    @exclusivity(unchecked) var forwardedFor: String? = nil
    /// The client's address from the PROXY protocol header, and the header while it arrives.
    @exclusivity(unchecked) var proxyAddress: String? = nil
    @exclusivity(unchecked) var proxyHeader: [UInt8] = []
}
