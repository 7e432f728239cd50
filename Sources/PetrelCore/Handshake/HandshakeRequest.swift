/// A valid client opening handshake (RFC 6455 §4.2.1), as the server sees it.
public struct HandshakeRequest: Sendable {
    public let head: HTTPRequestHead
    public let key: String
    /// Offered subprotocols in the client's order.
    public let subprotocols: [String]
    /// Offered extensions in the client's order.
    public let extensions: [ExtensionOffer]

    public var path: String { self.head.path }
    public var query: String? { self.head.query }
    public var headers: HTTPHeaders { self.head.headers }
    public var origin: String? { self.head.headers.first("Origin") }
    public var host: String { self.head.headers.first("Host") ?? "" }

    /// Whether a request asks for a WebSocket upgrade at all (for routing among WebSocket, SSE and files).
    public static func isUpgrade(_ head: HTTPRequestHead) -> Bool {
        head.headers.containsToken("Upgrade", "websocket")
    }

    /// Checks every rule of RFC 6455 §4.2.1 and, if `allowedOrigins` is given, the `Origin`.
    public static func validate(_ head: HTTPRequestHead, allowedOrigins: [String]? = nil) -> Result<
        HandshakeRequest, HandshakeError
    > {
        // 1. An HTTP/1.1 or higher GET request.
        guard head.method == "GET" else { return .failure(.notGet) }
        guard head.version == "HTTP/1.1" else { return .failure(.httpVersion) }
        guard head.target.utf8.first == UInt8(ascii: "/") else {
            return .failure(.malformed("request target must be an absolute path"))
        }
        // 2. Exactly one Host.
        let hosts = head.headers.values("Host")
        guard hosts.count == 1, !hosts[0].isEmpty else { return .failure(.missingHost) }
        // 3–4. Upgrade: websocket; Connection: Upgrade (case-insensitive token lists).
        guard head.headers.containsToken("Upgrade", "websocket"), head.headers.containsToken("Connection", "Upgrade")
        else { return .failure(.notUpgrade) }
        // 6. Sec-WebSocket-Version: 13 (checked before the key, so old clients learn the version).
        let versions = head.headers.values("Sec-WebSocket-Version")
        guard versions.count == 1, versions[0] == "13" else { return .failure(.unsupportedVersion) }
        // 5. One Sec-WebSocket-Key that decodes to 16 bytes.
        let keys = head.headers.values("Sec-WebSocket-Key")
        guard keys.count == 1, HandshakeCrypto.isValidKey(keys[0]) else { return .failure(.invalidKey) }
        // 7. Origin, when the server restricts it (§10.2).
        if let allowed = allowedOrigins {
            guard let origin = head.headers.first("Origin"), allowed.contains(where: { ASCII.equalsIgnoringCase($0, origin) })
            else { return .failure(.originRefused) }
        }
        // 8. Subprotocols: a list of tokens.
        let protocols = head.headers.listElements("Sec-WebSocket-Protocol")
        guard protocols.allSatisfy(ASCII.isToken) else { return .failure(.invalidSubprotocols) }
        // 9. Extensions.
        let extValues = head.headers.values("Sec-WebSocket-Extensions")
        var extensions: [ExtensionOffer] = []
        if !extValues.isEmpty {
            guard let parsed = ExtensionOffer.parse(extValues) else { return .failure(.invalidExtensions) }
            extensions = parsed
        }
        return .success(HandshakeRequest(head: head, key: keys[0], subprotocols: protocols, extensions: extensions))
    }

    /// The first of `supported` (the server's order of preference) that the client offered.
    public func selectSubprotocol(from supported: [String]) -> String? {
        supported.first { s in self.subprotocols.contains(s) }
    }

    /// The `101 Switching Protocols` response (§4.2.2 step 5).
    public func acceptResponse(
        subprotocol: String? = nil, extensions: [ExtensionOffer] = [], headers: [HTTPField] = []
    ) -> [UInt8] {
        var fields = [
            HTTPField(name: "Upgrade", value: "websocket"),
            HTTPField(name: "Connection", value: "Upgrade"),
            HTTPField(name: "Sec-WebSocket-Accept", value: HandshakeCrypto.acceptValue(forKey: self.key)),
        ]
        if let p = subprotocol { fields.append(HTTPField(name: "Sec-WebSocket-Protocol", value: p)) }
        if !extensions.isEmpty {
            fields.append(HTTPField(name: "Sec-WebSocket-Extensions", value: ExtensionOffer.format(extensions)))
        }
        fields.append(contentsOf: headers)
        return HTTPResponse.make(status: 101, headers: fields)
    }
}

