import PetrelCore
import Testing

/// A server that refuses the opening handshake (401, 403, 503...): the client's state machine
/// keeps the status and the response's body, bounded, in any split.
@Suite("ClientHandshake: a refusal's status and body")
struct ClientRefusalTests {
    static func handshake() -> ClientHandshake {
        var entropy = EntropySource.seeded(7)
        return ClientHandshake(host: "example.com", target: "/", entropy: &entropy)
    }

    /// Feeds `bytes` in pieces of `piece`; the refusal once it comes, or nil while more is wanted.
    static func refusal(_ bytes: [UInt8], piece: Int, _ h: inout ClientHandshake) -> ClientHandshakeError? {
        var offset = 0
        while offset < bytes.count {
            let end = min(offset + piece, bytes.count)
            switch bytes[offset..<end].withUnsafeBytes({ h.feed($0) }) {
            case .needMore: offset = end
            case .fail(let e): return e
            case .open: Issue.record("a refusal opened")
                return nil
            }
        }
        return nil
    }

    @Test("a Content-Length body is read to its end, in any split", arguments: [1, 5, 4096])
    func contentLength(piece: Int) throws {
        var h = Self.handshake()
        let response = Array("HTTP/1.1 401 Unauthorized\r\nContent-Type: text/plain\r\nContent-Length: 13\r\n\r\ntoken expired".utf8)
        let e = try #require(Self.refusal(response, piece: piece, &h))
        #expect(e.httpStatus == 401)
        #expect(e.body == Array("token expired".utf8))
        #expect(e.code == .hsStatus)
    }

    @Test("a body that has not all come is what refusalSoFar gives (the transport ended or timed out)")
    func partial() {
        var h = Self.handshake()
        let head = Array("HTTP/1.1 503 Service Unavailable\r\nContent-Length: 100\r\n\r\nbusy".utf8)
        #expect(Self.refusal(head, piece: 4096, &h) == nil)
        let so = h.refusalSoFar
        #expect(so?.httpStatus == 503 && so?.body == Array("busy".utf8))
    }

    @Test("without Content-Length the body is what came with the head; chunked gives none")
    func noLength() throws {
        var h = Self.handshake()
        let e = try #require(Self.refusal(Array("HTTP/1.1 403 Forbidden\r\n\r\nnot you".utf8), piece: 4096, &h))
        #expect(e.httpStatus == 403 && e.body == Array("not you".utf8))

        var c = Self.handshake()
        let chunked = Array("HTTP/1.1 403 Forbidden\r\nTransfer-Encoding: chunked\r\n\r\n7\r\nnot you\r\n0\r\n\r\n".utf8)
        let f = try #require(Self.refusal(chunked, piece: 4096, &c))
        #expect(f.httpStatus == 403 && f.body.isEmpty)
    }

    @Test("a body over 16 KiB is cut at 16 KiB, and the refusal comes without waiting for the rest")
    func bounded() throws {
        var h = Self.handshake()
        let big = Array("HTTP/1.1 400 Bad Request\r\nContent-Length: 1000000\r\n\r\n".utf8) + [UInt8](repeating: 0x61, count: 20_000)
        let e = try #require(Self.refusal(big, piece: 3000, &h))
        #expect(e.body.count == ClientHandshake.maxRefusalBody)
    }

    @Test("a failure that is not a refusal has no body, and a 101 that fails a check is not a refusal")
    func notRefusals() throws {
        var h = Self.handshake()
        let e = try #require(Self.refusal(Array("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n".utf8), piece: 4096, &h))
        #expect(e.body.isEmpty && e.code != .hsStatus)
        #expect(h.refusalSoFar == nil)
    }
}
