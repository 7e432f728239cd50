import PetrelCore
import Testing

/// The opening handshake as the runtime, the C session and the fuzzers drive it: the two state
/// machines, fed in any split.
@Suite("Handshake state machines: ServerHandshake and ClientHandshake")
struct HandshakeStateMachineTests {
    static let request = Array(
        ("GET /chat?x=1 HTTP/1.1\r\nHost: example.com\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            + "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
            + "Sec-WebSocket-Protocol: chat, superchat\r\nSec-WebSocket-Extensions: permessage-deflate\r\n\r\n").utf8)

    /// Feeds `bytes` in pieces of `piece` bytes; returns the first step that is not `.needMore`
    /// and the offset in `bytes` where the handshake's input ended.
    static func feed(_ h: inout ServerHandshake, _ bytes: [UInt8], piece: Int) -> (ServerHandshake.Step, Int)? {
        var offset = 0
        while offset < bytes.count {
            let end = min(offset + piece, bytes.count)
            let step = bytes[offset..<end].withUnsafeBytes { h.feed($0) }
            switch step {
            case .needMore: offset = end
            case .upgrade(_, let consumed), .plainRequest(_, let consumed): return (step, offset + consumed)
            case .refuse: return (step, end)
            }
        }
        return nil
    }

    @Test("an upgrade in any split: the request, where the frames start, and the agreement", arguments: [1, 7, 4096])
    func upgrade(piece: Int) throws {
        var policy = ServerHandshake.Policy()
        policy.subprotocols = ["superchat", "chat"]
        var h = ServerHandshake(policy: policy)
        let frames: [UInt8] = [0x81, 0x80, 1, 2, 3, 4]
        let (step, end) = try #require(Self.feed(&h, Self.request + frames, piece: piece))
        guard case .upgrade(let request, _) = step else { Issue.record("\(step)"); return }
        #expect(end == Self.request.count)
        #expect(request.path == "/chat" && request.subprotocols == ["chat", "superchat"])
        #expect(h.headBytes == Self.request)
        let agreement = h.accept(request)
        #expect(agreement.subprotocol == "superchat")
        #expect(agreement.compression?.parameters.localNoContextTakeover == true, "a server keeps no context by default")
        let text = String(decoding: agreement.response, as: UTF8.self)
        #expect(text.hasPrefix("HTTP/1.1 101 Switching Protocols\r\n"))
        #expect(text.contains("Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"))
        #expect(text.contains("Sec-WebSocket-Extensions: permessage-deflate; server_no_context_takeover"))
        #expect(h.accept(request, subprotocol: "chat").subprotocol == "chat", "the application's choice wins")
        let session = agreement.makeSession()
        let compressing = session.isCompressing
        #expect(compressing)
        #expect(ServerHandshake.reparse(h.headBytes)?.key == request.key)
    }

    @Test("a plain request is handed back only when the policy answers plain requests")
    func plainRequest() throws {
        let get = Array("GET /index.html HTTP/1.1\r\nHost: x\r\n\r\n".utf8)
        var refusing = ServerHandshake()
        guard case .refuse(let e)? = Self.feed(&refusing, get, piece: 100)?.0 else { Issue.record("not refused"); return }
        #expect(e.httpStatus == 426)
        var policy = ServerHandshake.Policy()
        policy.answersPlainRequests = true
        var routing = ServerHandshake(policy: policy)
        guard case .plainRequest(let head, let consumed)? = Self.feed(&routing, get, piece: 100)?.0 else {
            Issue.record("not handed back")
            return
        }
        #expect(head.path == "/index.html" && consumed == get.count)
    }

    @Test("at capacity: a request that parses gets 503 before its upgrade is checked; a malformed one still 400")
    func atCapacity() throws {
        for (request, status) in [
            (Self.request, 503),
            (Array("GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n".utf8), 503),
            (Array("GET / HTTP/1.1\r\nno colon\r\n\r\n".utf8), 400),
        ] {
            var h = ServerHandshake()
            h.atCapacity = true
            guard case .refuse(let e)? = Self.feed(&h, request, piece: 5)?.0 else { Issue.record("not refused"); continue }
            #expect(e.httpStatus == status)
        }
    }

    @Test("limits and origins are the policy's", arguments: [false, true])
    func limits(tooMany: Bool) throws {
        var policy = ServerHandshake.Policy()
        policy.maxHeaderCount = tooMany ? 6 : 8  // the request has 7 fields, 8 with an Origin
        policy.allowedOrigins = ["https://a.example"]
        var h = ServerHandshake(policy: policy)
        let extra = tooMany ? [UInt8]() : Array("Origin: https://b.example\r\n".utf8)
        let request = tooMany ? Self.request : Array(Self.request.dropLast(2)) + extra + [13, 10]
        guard case .refuse(let e)? = Self.feed(&h, request, piece: 3)?.0 else { Issue.record("not refused"); return }
        #expect(e.httpStatus == (tooMany ? 431 : 403))
    }

    @Test("the client's side: the response in any split opens a session with what was agreed", arguments: [1, 5, 4096])
    func client(piece: Int) throws {
        var entropy = EntropySource.seeded(7)
        var client = ClientHandshake(
            host: "example.com", target: "/chat", subprotocols: ["chat"], compression: DeflateOptions(), entropy: &entropy)
        var server = ServerHandshake(policy: { var p = ServerHandshake.Policy(); p.subprotocols = ["chat"]; return p }())
        guard case .upgrade(let request, _)? = Self.feed(&server, client.request, piece: 4096)?.0 else { Issue.record("refused"); return }
        let response = server.accept(request).response + [0x81, 0x00]
        var offset = 0
        var opened: (HandshakeAgreement, Int)? = nil
        while offset < response.count && opened == nil {
            let end = min(offset + piece, response.count)
            switch response[offset..<end].withUnsafeBytes({ client.feed($0) }) {
            case .needMore: offset = end
            case .open(let agreement, let consumed): opened = (agreement, offset + consumed)
            case .fail(let e): Issue.record("\(e)"); return
            }
        }
        let (agreement, end) = try #require(opened)
        #expect(end == response.count - 2, "the frame after the 101 is left to the session")
        #expect(agreement.subprotocol == "chat" && agreement.role == .client)
        #expect(agreement.compression?.parameters.remoteNoContextTakeover == true)
        let session = agreement.makeSession()
        let compressing = session.isCompressing
        #expect(compressing)
    }

    @Test("the client refuses a response head over its limit")
    func clientLimit() {
        var entropy = EntropySource.seeded(7)
        var client = ClientHandshake(host: "h", target: "/", maxHeaderBytes: 64, entropy: &entropy)
        let big = Array(("HTTP/1.1 101 Switching Protocols\r\nX: " + String(repeating: "a", count: 100) + "\r\n\r\n").utf8)
        guard case .fail(let e) = big.withUnsafeBytes({ client.feed($0) }) else { Issue.record("not refused"); return }
        #expect(e.matches(.responseTooLarge(limit: 64)))
        #expect(e.code == .hsResponseTooLarge)
    }
}
