/// The client side of the opening handshake (RFC 6455 §4.1), as one state machine: it makes the
/// request to send; then the response's bytes go in, in any split, and out comes the agreement
/// (the open `Session`'s parameters) or why the response was refused. Every client-side limit
/// and check of the handshake is decided here: the runtime, the C session API and the fuzzers
/// all drive this type.
public struct ClientHandshake: Sendable {
    public let key: String
    public let subprotocols: [String]
    public let extensionOffers: [ExtensionOffer]
    /// The request to send.
    public let request: [UInt8]
    /// permessage-deflate as offered (the server's answer is checked against it), or nil.
    public let compression: DeflateOptions?
    public let maxHeaderCount: Int
    public let session: SessionConfiguration
    private var reader: HTTPHeadReader
    /// A response other than 101 whose body is still coming: the refusal, the body so far and
    /// how many bytes it waits for.
    private var refused: (error: ClientHandshakeError, body: [UInt8], expected: Int)?

    /// At most this many bytes of a refusal's body are kept (`ClientHandshakeError.body`).
    public static let maxRefusalBody = 16 * 1024

    /// What `feed` decided. Every payload is boxed: an unboxed multi-payload layout kept its
    /// tag in bytes that a `.fail` left unwritten, which valgrind (rightly strict about
    /// branching on them) reported in every client whose handshake failed.
    public indirect enum Step: Sendable {
        /// Every byte was taken; the response head is not complete yet.
        case needMore
        /// The server agreed; the input's bytes from `consumed` on are the first WebSocket bytes.
        case open(HandshakeAgreement, consumed: Int)
        /// The response is refused: close the transport.
        case fail(ClientHandshakeError)
    }

    /// - Parameters:
    ///   - host: the `Host` value: the host, in brackets for an IPv6 literal, plus `:port` when not the default.
    ///   - target: the path and query, starting with `/`.
    ///   - compression: permessage-deflate to offer, or nil.
    ///   - extensions: the offers to send; by default those of `compression`.
    ///   - maxHeaderBytes, maxHeaderCount: limits on the response head.
    ///   - entropy: where the 16-byte nonce comes from (`.system` on a network).
    public init(
        host: String, target: String, origin: String? = nil, subprotocols: [String] = [],
        compression: DeflateOptions? = nil, extensions: [ExtensionOffer]? = nil, headers: [HTTPField] = [],
        maxHeaderBytes: Int = 16 * 1024, maxHeaderCount: Int = 100, session: SessionConfiguration = SessionConfiguration(),
        entropy: inout EntropySource
    ) {
        let offers = extensions ?? compression.map { PerMessageDeflate.offers(options: $0) } ?? []
        self.key = HandshakeCrypto.makeKey(using: &entropy)
        self.subprotocols = subprotocols
        self.extensionOffers = offers
        self.compression = compression
        self.maxHeaderCount = maxHeaderCount
        self.session = session
        self.reader = HTTPHeadReader(limit: maxHeaderBytes)
        var s = "GET \(target.isEmpty ? "/" : target) HTTP/1.1\r\nHost: \(host)\r\n"
        s += "Upgrade: websocket\r\nConnection: Upgrade\r\n"
        s += "Sec-WebSocket-Key: \(self.key)\r\nSec-WebSocket-Version: 13\r\n"
        if let o = origin { s += "Origin: \(o)\r\n" }
        if !subprotocols.isEmpty { s += "Sec-WebSocket-Protocol: \(subprotocols.joined(separator: ", "))\r\n" }
        if !offers.isEmpty { s += "Sec-WebSocket-Extensions: \(ExtensionOffer.format(offers))\r\n" }
        for f in headers { s += "\(f.name): \(f.value)\r\n" }
        s += "\r\n"
        self.request = Array(s.utf8)
    }

    /// Why `field` cannot be one of the request's extra headers, or nil when it can: the name
    /// must be a token and not one the handshake writes itself (or one that would give a GET a
    /// body); the value must have no control characters but tab (no CR or LF: no injected
    /// lines).
    public static func refusal(ofExtraHeader field: HTTPField) -> String? {
        guard ASCII.isToken(field.name) else { return "header name \"\(field.name)\" is not an HTTP token" }
        let name = field.name.lowercasedASCII
        let reserved = ["host", "upgrade", "connection", "origin", "content-length", "transfer-encoding"]
        if reserved.contains(name) || name.hasPrefix("sec-websocket-") {
            return "header \(field.name) is written by the handshake (origin and subprotocols are options of their own)"
        }
        if field.value.utf8.contains(where: { ($0 < 0x20 && $0 != 0x09) || $0 == 0x7F }) {
            return "header \(field.name)'s value has a control character"
        }
        return nil
    }

    /// Takes bytes of the server's response. Call it until it returns something other than
    /// `.needMore`, and not after.
    ///
    /// A status other than 101 is a refusal (`unexpectedStatus`) that carries the response's
    /// body: one with a Content-Length is read to that length (at most `maxRefusalBody` bytes)
    /// before `.fail` comes; without one, the body is what came with the head; a chunked body is
    /// not decoded (the refusal has none). If the transport ends or times out first,
    /// `refusalSoFar` has what came.
    public mutating func feed(_ input: UnsafeRawBufferPointer) -> Step {
        if var r = self.refused {
            r.body += input.prefix(r.expected - r.body.count)
            self.refused = r
            return r.body.count >= r.expected ? .fail(r.error.with(body: r.body)) : .needMore
        }
        switch self.reader.feed(input) {
        case .needMore:
            return .needMore
        case .tooLarge:
            return .fail(.responseTooLarge(limit: self.reader.limit))
        case .complete(let consumed):
            let head: HTTPResponseHead
            switch HTTPResponseHead.parse(self.reader.bytes, maxFieldCount: self.maxHeaderCount) {
            case .failure(let e): return .fail(e)
            case .success(let h): head = h
            }
            if head.status != 101 { return self.refuse(head, rest: UnsafeRawBufferPointer(rebasing: input[consumed...])) }
            let accepted: Accepted
            switch self.validate(head) {
            case .failure(let e): return .fail(e)
            case .success(let a): accepted = a
            }
            var compression: Compression? = nil
            if let ext = accepted.extensions.first {
                guard let offered = self.compression else { return .fail(.unexpectedExtension(ext.name)) }
                switch PerMessageDeflate.accept(response: ext, options: offered) {
                case .failure(let e): return .fail(e)
                case .success(let c): compression = c
                }
            }
            let agreement = HandshakeAgreement(
                role: .client, subprotocol: accepted.subprotocol, compression: compression, session: self.session, response: [])
            return .open(agreement, consumed: consumed)
        }
    }

    /// The refusal so far, when a response other than 101 came and its body has not: for a
    /// transport that ended or timed out while waiting for it. Nil otherwise.
    public var refusalSoFar: ClientHandshakeError? {
        self.refused.map { $0.error.with(body: $0.body) }
    }

    private mutating func refuse(_ head: HTTPResponseHead, rest: UnsafeRawBufferPointer) -> Step {
        let error = ClientHandshakeError.unexpectedStatus(head.status, reason: head.reason)
        let limit = Self.maxRefusalBody
        if head.headers.first("Transfer-Encoding") != nil { return .fail(error) }
        guard let declared = head.headers.first("Content-Length").flatMap({ Int($0) }), declared >= 0 else {
            return .fail(error.with(body: Array(rest.prefix(limit))))
        }
        let expected = min(declared, limit)
        let body = Array(rest.prefix(expected))
        if body.count >= expected { return .fail(error.with(body: body)) }
        self.refused = (error, body, expected)
        return .needMore
    }

    /// What the server agreed to.
    public struct Accepted: Sendable {
        public var subprotocol: String?
        /// The extensions the server accepted, with the parameters it answered.
        public var extensions: [ExtensionOffer]
        public var headers: HTTPHeaders
    }

    /// Validates the server's response (§4.1, the client's checks 1–6).
    public func validate(_ response: HTTPResponseHead) -> Result<Accepted, ClientHandshakeError> {
        guard response.status == 101 else { return .failure(.unexpectedStatus(response.status, reason: response.reason)) }
        guard response.headers.containsToken("Upgrade", "websocket") else { return .failure(.missingUpgrade) }
        guard response.headers.containsToken("Connection", "Upgrade") else { return .failure(.missingConnection) }
        let accepts = response.headers.values("Sec-WebSocket-Accept")
        guard accepts.count == 1, accepts[0] == HandshakeCrypto.acceptValue(forKey: self.key) else {
            return .failure(.acceptMismatch)
        }
        let chosen = response.headers.listElements("Sec-WebSocket-Protocol")
        var subprotocol: String? = nil
        if !chosen.isEmpty {
            guard chosen.count == 1, self.subprotocols.contains(chosen[0]) else {
                return .failure(.unexpectedSubprotocol(chosen.joined(separator: ",")))
            }
            subprotocol = chosen[0]
        }
        let extValues = response.headers.values("Sec-WebSocket-Extensions")
        var accepted: [ExtensionOffer] = []
        if !extValues.isEmpty {
            guard let parsed = ExtensionOffer.parse(extValues) else {
                return .failure(.malformedResponse("malformed Sec-WebSocket-Extensions"))
            }
            for e in parsed where !self.extensionOffers.contains(where: { $0.name == e.name }) {
                return .failure(.unexpectedExtension(e.name))
            }
            // The same extension twice in a response is not something any offer allows.
            if Set(parsed.map(\.name)).count != parsed.count {
                return .failure(.invalidExtensionParameters("an extension was accepted twice"))
            }
            accepted = parsed
        }
        return .success(Accepted(subprotocol: subprotocol, extensions: accepted, headers: response.headers))
    }
}
