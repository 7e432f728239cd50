import COpenSSL

/// RFC 6455 §4.2.2 step 5: the GUID appended to the key before hashing.
private let acceptGUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

/// SHA-1 and Base64 for the handshake come from libcrypto (OpenSSL), the maintained implementation
/// already on every system with libssl: no hand-rolled crypto.
public enum HandshakeCrypto {
    /// `base64(SHA-1(key + GUID))`.
    public static func acceptValue(forKey key: String) -> String {
        var input = Array(key.utf8)
        input.append(contentsOf: acceptGUID.utf8)
        var digest = [UInt8](repeating: 0, count: Int(SHA_DIGEST_LENGTH))
        _ = input.withUnsafeBufferPointer { inp in
            digest.withUnsafeMutableBufferPointer { SHA1(inp.baseAddress, inp.count, $0.baseAddress) }
        }
        return self.base64(digest)
    }

    public static func base64(_ bytes: [UInt8]) -> String {
        var out = [UInt8](repeating: 0, count: 4 * ((bytes.count + 2) / 3) + 1)
        let n = bytes.withUnsafeBufferPointer { inp in
            out.withUnsafeMutableBufferPointer { EVP_EncodeBlock($0.baseAddress, inp.baseAddress, Int32(inp.count)) }
        }
        return String(decoding: out[0..<Int(n)], as: UTF8.self)
    }

    /// A fresh `Sec-WebSocket-Key`: 16 bytes from the kernel CSPRNG, base64-encoded.
    public static func makeKey(using entropy: inout EntropySource) -> String {
        var raw: [UInt8] = []
        raw.reserveCapacity(16)
        for _ in 0..<2 {
            let w = entropy.next64()
            for s in 0..<8 { raw.append(UInt8(truncatingIfNeeded: w >> (UInt64(s) * 8))) }
        }
        return self.base64(raw)
    }

    /// Whether `key` is the base64 form of exactly 16 bytes: 22 alphabet characters then `==`.
    public static func isValidKey(_ key: String) -> Bool {
        let b = Array(key.utf8)
        guard b.count == 24, b[22] == UInt8(ascii: "="), b[23] == UInt8(ascii: "=") else { return false }
        return b[0..<22].allSatisfy { c in
            (c >= 0x41 && c <= 0x5A) || (c >= 0x61 && c <= 0x7A) || (c >= 0x30 && c <= 0x39) || c == 0x2B || c == 0x2F
        }
    }
}

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

/// The client side of the opening handshake (RFC 6455 §4.1).
public struct ClientHandshake: Sendable {
    public let key: String
    public let subprotocols: [String]
    public let extensionOffers: [ExtensionOffer]
    /// The request to send.
    public let request: [UInt8]

    /// - Parameters:
    ///   - host: the `Host` value: the host, in brackets for an IPv6 literal, plus `:port` when not the default.
    ///   - target: the path and query, starting with `/`.
    ///   - entropy: where the 16-byte nonce comes from (`.system` on a network).
    public init(
        host: String, target: String, origin: String? = nil, subprotocols: [String] = [],
        extensions: [ExtensionOffer] = [], headers: [HTTPField] = [], entropy: inout EntropySource
    ) {
        self.key = HandshakeCrypto.makeKey(using: &entropy)
        self.subprotocols = subprotocols
        self.extensionOffers = extensions
        var s = "GET \(target.isEmpty ? "/" : target) HTTP/1.1\r\nHost: \(host)\r\n"
        s += "Upgrade: websocket\r\nConnection: Upgrade\r\n"
        s += "Sec-WebSocket-Key: \(self.key)\r\nSec-WebSocket-Version: 13\r\n"
        if let o = origin { s += "Origin: \(o)\r\n" }
        if !subprotocols.isEmpty { s += "Sec-WebSocket-Protocol: \(subprotocols.joined(separator: ", "))\r\n" }
        if !extensions.isEmpty { s += "Sec-WebSocket-Extensions: \(ExtensionOffer.format(extensions))\r\n" }
        for f in headers { s += "\(f.name): \(f.value)\r\n" }
        s += "\r\n"
        self.request = Array(s.utf8)
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
