import PetrelCore
import Testing

/// Collects a head from `text` fed in chunks of `step` bytes and parses it as a request.
func readRequest(_ text: String, step: Int = 1, limit: Int = 16 * 1024, maxFields: Int = 100) -> Result<HTTPRequestHead, HandshakeError> {
    var reader = HTTPHeadReader(limit: limit)
    let bytes = Array(text.utf8)
    var at = 0
    while at < bytes.count {
        let n = min(step, bytes.count - at)
        let progress = bytes[at..<at + n].withUnsafeBytes { reader.feed($0) }
        switch progress {
        case .needMore: at += n
        case .tooLarge: return .failure(.headersTooLarge(limit: limit))
        case .complete: return HTTPRequestHead.parse(reader.bytes, maxFieldCount: maxFields)
        }
    }
    return .failure(.malformed("incomplete"))
}

func validateRequest(_ text: String, step: Int = 1, origins: [String]? = nil) -> Result<HandshakeRequest, HandshakeError> {
    switch readRequest(text, step: step) {
    case .failure(let e): return .failure(e)
    case .success(let head): return HandshakeRequest.validate(head, allowedOrigins: origins)
    }
}

let rfcRequest = """
    GET /chat?room=1 HTTP/1.1\r
    Host: server.example.com\r
    Upgrade: websocket\r
    Connection: Upgrade\r
    Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r
    Origin: http://example.com\r
    Sec-WebSocket-Protocol: chat, superchat\r
    Sec-WebSocket-Version: 13\r
    Cookie: session=abc\r
    \r

    """

@Suite("RFC 6455 §4.2 server handshake")
struct ServerHandshakeTests {
    @Test("the RFC's Sec-WebSocket-Accept example")
    func acceptExample() {
        #expect(HandshakeCrypto.acceptValue(forKey: "dGhlIHNhbXBsZSBub25jZQ==") == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=")
    }

    @Test("the RFC's request, one byte at a time, exposes everything the application needs")
    func rfcExample() throws {
        let r = try validateRequest(rfcRequest, step: 1).get()
        #expect(r.path == "/chat" && r.query == "room=1")
        #expect(r.host == "server.example.com" && r.origin == "http://example.com")
        #expect(r.subprotocols == ["chat", "superchat"])
        #expect(r.headers["cookie"] == "session=abc")
        #expect(r.selectSubprotocol(from: ["superchat", "chat"]) == "superchat")
        let response = String(decoding: r.acceptResponse(subprotocol: "chat"), as: UTF8.self)
        #expect(response.hasPrefix("HTTP/1.1 101 Switching Protocols\r\n"))
        #expect(response.contains("Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"))
        #expect(response.contains("Sec-WebSocket-Protocol: chat\r\n"))
        #expect(response.hasSuffix("\r\n\r\n"))
    }

    @Test("bytes after the head are left to the caller")
    func leftover() {
        var reader = HTTPHeadReader()
        let bytes = Array(rfcRequest.utf8) + [0x81, 0x80]
        let progress = bytes.withUnsafeBytes { reader.feed($0) }
        #expect(progress == .complete(consumed: bytes.count - 2))
    }

    @Test("bare LF line endings are accepted")
    func bareLF() throws {
        let lf = rfcRequest.replacingCRLF()
        _ = try validateRequest(lf, step: 3).get()
    }

    struct Bad: CustomTestStringConvertible, Sendable {
        let name: String
        let request: String
        let status: Int
        var testDescription: String { self.name }
    }

    static func edit(_ transform: (String) -> String) -> String { transform(rfcRequest) }

    static let bad: [Bad] = [
        Bad(name: "garbage", request: "\u{1}\u{2}garbage\r\n\r\n", status: 400),
        Bad(name: "no request line parts", request: "GET\r\n\r\n", status: 400),
        Bad(name: "POST", request: edit { $0.replacingPrefix("GET", "POST") }, status: 400),
        Bad(name: "HTTP/1.0", request: edit { $0.replacing("HTTP/1.1\r\nHost", "HTTP/1.0\r\nHost") }, status: 400),
        Bad(name: "absolute target", request: edit { $0.replacing("/chat?room=1", "chat") }, status: 400),
        Bad(name: "no Host", request: edit { $0.removingLine("Host") }, status: 400),
        Bad(name: "two Hosts", request: edit { $0.replacing("Host: server.example.com\r\n", "Host: a\r\nHost: b\r\n") }, status: 400),
        Bad(name: "no Upgrade", request: edit { $0.removingLine("Upgrade") }, status: 426),
        Bad(name: "Upgrade: h2c", request: edit { $0.replacing("Upgrade: websocket", "Upgrade: h2c") }, status: 426),
        Bad(name: "no Connection: Upgrade", request: edit { $0.replacing("Connection: Upgrade", "Connection: keep-alive") }, status: 426),
        Bad(name: "no key", request: edit { $0.removingLine("Sec-WebSocket-Key") }, status: 400),
        Bad(name: "short key", request: edit { $0.replacing("dGhlIHNhbXBsZSBub25jZQ==", "dGhlIHNhbXBsZQ==") }, status: 400),
        Bad(name: "key not base64", request: edit { $0.replacing("dGhlIHNhbXBsZSBub25jZQ==", "dGhlIHNhbXBsZSBub25j!Q==") }, status: 400),
        Bad(name: "two keys", request: edit { $0.replacing("Origin:", "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nOrigin:") }, status: 400),
        Bad(name: "version 8", request: edit { $0.replacing("Version: 13", "Version: 8") }, status: 426),
        Bad(name: "no version", request: edit { $0.removingLine("Sec-WebSocket-Version") }, status: 426),
        Bad(name: "space before colon", request: edit { $0.replacing("Origin:", "Origin :") }, status: 400),
        Bad(name: "obsolete line folding", request: edit { $0.replacing("Origin: http://example.com\r\n", "Origin: http://example.com\r\n continued\r\n") }, status: 400),
        Bad(name: "header without colon", request: edit { $0.replacing("Origin:", "Origin") }, status: 400),
        Bad(name: "control character in a value", request: edit { $0.replacing("session=abc", "session=\u{7}") }, status: 400),
        Bad(name: "bad subprotocol token", request: edit { $0.replacing("chat, superchat", "chat, \"super\"") }, status: 400),
        Bad(name: "malformed extensions", request: edit { $0.replacing("Cookie", "Sec-WebSocket-Extensions: ;x\r\nCookie") }, status: 400),
    ]

    @Test("malformed handshakes get the right status", arguments: bad)
    func malformed(c: Bad) {
        switch validateRequest(c.request, step: 7) {
        case .success: Issue.record("\(c.name) was accepted")
        case .failure(let e):
            #expect(e.httpStatus == c.status, "\(c.name): \(e)")
            let response = String(decoding: e.response, as: UTF8.self)
            #expect(response.hasPrefix("HTTP/1.1 \(c.status) "))
            #expect(response.contains("Content-Length: "))
            if c.status == 426 && c.name.contains("version") { #expect(response.contains("Sec-WebSocket-Version: 13\r\n")) }
        }
    }

    @Test("an origin outside the allow-list is refused with 403")
    func origin() {
        #expect((try? validateRequest(rfcRequest, origins: ["http://example.com"]).get()) != nil)
        guard case .failure(let e) = validateRequest(rfcRequest, origins: ["https://other.example"]) else {
            Issue.record("accepted")
            return
        }
        #expect(e.httpStatus == 403)
    }

    @Test("a head over the size limit is refused with 431, even fed byte by byte")
    func tooLarge() {
        let big = rfcRequest.replacing("Cookie: session=abc", "Cookie: " + String(repeating: "x", count: 20_000))
        for step in [1, 4096, 100_000] {
            guard case .failure(let e) = validateRequest(big, step: step) else {
                Issue.record("accepted")
                return
            }
            #expect(e.httpStatus == 431)
        }
    }

    @Test("more header fields than allowed is refused with 431")
    func tooManyFields() {
        let many = rfcRequest.replacing("Cookie", (0..<10_000).map { "X-\($0): 1\r\n" }.joined() + "Cookie")
        guard case .failure(let e) = readRequest(many, step: 65536, limit: 1 << 20) else {
            Issue.record("accepted")
            return
        }
        #expect(e.httpStatus == 431)
    }
}

@Suite("RFC 6455 §9.1 extension header grammar")
struct ExtensionGrammarTests {
    @Test("valid headers parse into offers")
    func valid() {
        let parsed = ExtensionOffer.parse([
            "permessage-deflate; client_max_window_bits, permessage-deflate; server_max_window_bits=\"10\"",
            "foo;a=1 ; b = \"x\\y\",,bar",
        ])
        #expect(
            parsed == [
                ExtensionOffer(name: "permessage-deflate", parameters: [ExtensionParameter("client_max_window_bits")]),
                ExtensionOffer(name: "permessage-deflate", parameters: [ExtensionParameter("server_max_window_bits", "10")]),
                ExtensionOffer(name: "foo", parameters: [ExtensionParameter("a", "1"), ExtensionParameter("b", "xy")]),
                ExtensionOffer(name: "bar"),
            ])
    }

    @Test("invalid headers are refused", arguments: ["", ";", "a;", "a;=1", "a;b=", "a;b=\"\"", "a;b=\"x y\"", "a;b=\"unterminated", "a b", "a;b=c d", "a/b", ","])
    func invalid(value: String) {
        #expect(ExtensionOffer.parse([value]) == nil, "\(value)")
    }
}

@Suite("RFC 6455 §4.1 client handshake")
struct ClientHandshakeTests {
    static func handshake(subprotocols: [String] = ["chat"], extensions: [ExtensionOffer] = []) -> ClientHandshake {
        var entropy = EntropySource.system
        return ClientHandshake(
            host: "[::1]:9001", target: "/feed?x=1", origin: "http://localhost", subprotocols: subprotocols,
            extensions: extensions, headers: [HTTPField(name: "Authorization", value: "Bearer t")], entropy: &entropy)
    }

    /// The server side of the same handshake, so requests and responses are checked against each other.
    static func serverResponse(to h: ClientHandshake, subprotocol: String? = "chat", extensions: [ExtensionOffer] = []) -> [UInt8] {
        let head = try! HTTPRequestHead.parse(h.request).get()
        let request = try! HandshakeRequest.validate(head).get()
        return request.acceptResponse(subprotocol: subprotocol, extensions: extensions)
    }

    static func validate(_ h: ClientHandshake, _ response: [UInt8]) -> Result<ClientHandshake.Accepted, ClientHandshakeError> {
        var reader = HTTPHeadReader()
        guard case .complete = response.withUnsafeBytes({ reader.feed($0) }) else { return .failure(.malformedResponse("incomplete")) }
        switch HTTPResponseHead.parse(reader.bytes) {
        case .failure(let e): return .failure(e)
        case .success(let head): return h.validate(head)
        }
    }

    @Test("the request carries a fresh 16-byte key and what was asked for")
    func request() throws {
        let h = Self.handshake()
        let text = String(decoding: h.request, as: UTF8.self)
        #expect(text.hasPrefix("GET /feed?x=1 HTTP/1.1\r\nHost: [::1]:9001\r\n"))
        #expect(HandshakeCrypto.isValidKey(h.key))
        #expect(h.key != Self.handshake().key)
        #expect(text.contains("Origin: http://localhost\r\n") && text.contains("Authorization: Bearer t\r\n"))
        let head = try HTTPRequestHead.parse(h.request).get()
        let r = try HandshakeRequest.validate(head).get()
        #expect(r.subprotocols == ["chat"])
    }

    @Test("a matching response is accepted")
    func accepted() throws {
        let h = Self.handshake()
        let accepted = try Self.validate(h, Self.serverResponse(to: h)).get()
        #expect(accepted.subprotocol == "chat")
    }

    @Test("each way a response can be wrong gives its own error")
    func failures() {
        let h = Self.handshake()
        let good = String(decoding: Self.serverResponse(to: h), as: UTF8.self)
        let cases: [(String, ClientHandshakeError)] = [
            ("HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n", .unexpectedStatus(403, reason: "")),
            ("HTTP/1.1 200 OK\r\n\r\n", .unexpectedStatus(200, reason: "")),
            ("garbage\r\n\r\n", .malformedResponse("")),
            ("HTTP/1.1 003 Filtered\r\n\r\n", .malformedResponse("")),
            ("HTTP/1.1 600 Nope\r\n\r\n", .malformedResponse("")),
            (good.replacing("Upgrade: websocket\r\n", ""), .missingUpgrade),
            (good.replacing("Connection: Upgrade\r\n", "Connection: close\r\n"), .missingConnection),
            (good.replacing("Sec-WebSocket-Accept: ", "Sec-WebSocket-Accept: x"), .acceptMismatch),
            (good.replacing("Sec-WebSocket-Protocol: chat", "Sec-WebSocket-Protocol: other"), .unexpectedSubprotocol("")),
            (good.replacing("\r\n\r\n", "\r\nSec-WebSocket-Extensions: x-foo\r\n\r\n"), .unexpectedExtension("")),
        ]
        for (response, expected) in cases {
            switch Self.validate(h, Array(response.utf8)) {
            case .success: Issue.record("accepted: \(response)")
            case .failure(let e): #expect(e.matches(expected), "\(e) for \(response)")
            }
        }
        if case .failure(let e) = Self.validate(h, Array("HTTP/1.1 403 Forbidden\r\n\r\n".utf8)) {
            #expect(e.httpStatus == 403)
        }
    }
}

extension String {
    func replacing(_ a: String, _ b: String) -> String {
        var out = ""
        var rest = self[...]
        while let r = rest.range(of: a) {
            out += rest[..<r.lowerBound] + b
            rest = rest[r.upperBound...]
        }
        return out + rest
    }

    func replacingPrefix(_ a: String, _ b: String) -> String { b + self.dropFirst(a.count) }

    func removingLine(_ name: String) -> String {
        self.split(separator: "\r\n", omittingEmptySubsequences: false)
            .filter { !$0.hasPrefix(name + ":") }.joined(separator: "\r\n")
    }

    func replacingCRLF() -> String { self.replacing("\r\n", "\n") }
}

extension Substring {
    func range(of needle: String) -> Range<Substring.Index>? {
        var i = self.startIndex
        while i < self.endIndex {
            if self[i...].hasPrefix(needle) { return i..<self.index(i, offsetBy: needle.count) }
            i = self.index(after: i)
        }
        return nil
    }
}
