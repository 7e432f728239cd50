/// The server side of the opening handshake (RFC 6455 §4.2), as one state machine: the request's
/// bytes in, in any split; out, a decision. Every server-side limit and default of the handshake
/// is decided here, once: the runtime, the C session API and the fuzzers all drive this type.
///
///     var handshake = ServerHandshake(policy: policy)
///     switch handshake.feed(bytes) {
///     case .needMore: read more
///     case .upgrade(let request, let consumed): (optionally ask the application, then)
///         let agreement = handshake.accept(request)   // write agreement.response, then frames
///         var session = agreement.makeSession()       // bytes[consumed...] are its first input
///     case .plainRequest(let head, let consumed): a request that is not an upgrade
///     case .refuse(let error): write error.response and close
///     }
public struct ServerHandshake: Sendable {
    /// What a server accepts and prefers. One value serves every connection of a server.
    public struct Policy: Sendable {
        /// Largest request head, in bytes (431 beyond it).
        public var maxHeaderBytes = 16 * 1024
        /// Most header fields in a request head (431 beyond it).
        public var maxHeaderCount = 100
        /// If set, only these `Origin` values may connect (403 otherwise; §10.2).
        public var allowedOrigins: [String]? = nil
        /// Subprotocols in order of preference; the first one the client also offers is chosen.
        public var subprotocols: [String] = []
        /// permessage-deflate to agree to, or nil to decline it.
        public var compression: DeflateOptions? = DeflateOptions.serverDefault
        /// Frame and message limits of the session that opens.
        public var session = SessionConfiguration()
        /// With true, a request that is not an upgrade comes back as `.plainRequest` (the
        /// runtime's HTTP routes); with false, it is refused with 426.
        public var answersPlainRequests = false

        public init() {}
    }

    /// What `feed` decided.
    public enum Step: Sendable {
        /// Every byte was taken; the head is not complete yet.
        case needMore
        /// A valid upgrade request. Call `accept` (after asking the application, if it decides);
        /// the input's bytes from `consumed` on are the first WebSocket bytes.
        case upgrade(HandshakeRequest, consumed: Int)
        /// A well-formed request that does not ask for an upgrade (only with
        /// `answersPlainRequests`); the input's bytes from `consumed` on follow its head.
        case plainRequest(HTTPRequestHead, consumed: Int)
        /// Refuse: write `error.response`, then close.
        case refuse(HandshakeError)
    }

    public let policy: Policy
    /// Set when the server is at its connection limit: a request whose head parses is refused
    /// with 503 before anything else about it is checked.
    public var atCapacity = false
    private var reader: HTTPHeadReader

    public init(policy: Policy = Policy()) {
        self.policy = policy
        self.reader = HTTPHeadReader(limit: policy.maxHeaderBytes)
    }

    /// The request head's bytes, complete once `feed` has returned anything but `.needMore`.
    public var headBytes: [UInt8] { self.reader.bytes }

    /// Takes bytes of the request. Call it until it returns something other than `.needMore`,
    /// and not after.
    public mutating func feed(_ input: UnsafeRawBufferPointer) -> Step {
        switch self.reader.feed(input) {
        case .needMore:
            return .needMore
        case .tooLarge:
            return .refuse(.headersTooLarge(limit: self.policy.maxHeaderBytes))
        case .complete(let consumed):
            let head: HTTPRequestHead
            switch HTTPRequestHead.parse(self.reader.bytes, maxFieldCount: self.policy.maxHeaderCount) {
            case .failure(let e): return .refuse(e)
            case .success(let h): head = h
            }
            if self.atCapacity { return .refuse(.serviceUnavailable) }
            if !HandshakeRequest.isUpgrade(head) {
                return self.policy.answersPlainRequests ? .plainRequest(head, consumed: consumed) : .refuse(.notUpgrade)
            }
            switch HandshakeRequest.validate(head, allowedOrigins: self.policy.allowedOrigins) {
            case .failure(let e): return .refuse(e)
            case .success(let request): return .upgrade(request, consumed: consumed)
            }
        }
    }

    /// Agrees to `request`: the subprotocol (`subprotocol` if given, which must be one the client
    /// offered, else the policy's first preference the client offered), permessage-deflate per
    /// the policy, and the 101 response carrying them and `headers`.
    public func accept(_ request: HandshakeRequest, subprotocol: String? = nil, headers: [HTTPField] = []) -> HandshakeAgreement {
        let chosen = subprotocol ?? request.selectSubprotocol(from: self.policy.subprotocols)
        let negotiated = self.policy.compression.flatMap { PerMessageDeflate.negotiate(offers: request.extensions, options: $0) }
        let response = request.acceptResponse(
            subprotocol: chosen, extensions: negotiated.map { [$0.response] } ?? [], headers: headers)
        return HandshakeAgreement(
            role: .server, subprotocol: chosen, compression: negotiated?.compression, session: self.policy.session,
            response: response)
    }

    /// Parses a head that an earlier handshake accepted (kept as bytes) back into its request.
    public static func reparse(_ headBytes: [UInt8]) -> HandshakeRequest? {
        guard case .success(let head) = HTTPRequestHead.parse(headBytes, maxFieldCount: Int.max),
            case .success(let request) = HandshakeRequest.validate(head)
        else { return nil }
        return request
    }
}

/// What both ends agreed in an opening handshake: all that the open `Session` needs.
public struct HandshakeAgreement: Sendable {
    public let role: Role
    /// The subprotocol agreed, if any.
    public let subprotocol: String?
    /// permessage-deflate as agreed, or nil.
    public let compression: Compression?
    public let session: SessionConfiguration
    /// Server: the 101 response, to write before any frame. Client: empty.
    public let response: [UInt8]

    /// The open session.
    /// - Parameter zlibPool: where streams without context takeover are kept between messages
    ///   (one pool per thread), or nil.
    public func makeSession(zlibPool: ZlibPool? = nil) -> Session {
        Session(role: self.role, configuration: self.session, compression: self.compression, zlibPool: zlibPool)
    }
}

extension DeflateOptions {
    /// A server's default: its compressor keeps no context between messages (256 KiB less per
    /// connection, and a published frame can be compressed once for every subscriber).
    public static var serverDefault: DeflateOptions {
        var o = DeflateOptions()
        o.localNoContextTakeover = true
        return o
    }
}
