// The server's opening handshake, through the core's ServerHandshake (the state machine the
// runtime and the C session drive): head reading in any split, parsing, RFC 6455 checks,
// negotiation, and the 101 it writes. Oracle: a refusal has a 4xx/5xx status; a 101 is one
// well-formed head (nothing from the request can inject a line into it); the head reader never
// holds more than its limit.
import FuzzSupport
import PetrelCore

let policy: ServerHandshake.Policy = {
    var p = ServerHandshake.Policy()
    p.maxHeaderBytes = 4096
    p.maxHeaderCount = 32
    p.subprotocols = ["chat", "superchat"]
    return p
}()

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>, _ size: Int) -> Int32 {
    var handshake = ServerHandshake(policy: policy)
    Chunks(data, size).forEach { piece in
        let step = piece.withUnsafeBytes { handshake.feed($0) }
        require(handshake.headBytes.count <= 4097, "the head reader holds more than its limit")
        switch step {
        case .needMore:
            return true
        case .refuse(let e):
            require((400...599).contains(e.httpStatus), "refusal status \(e.httpStatus)")
            return false
        case .plainRequest:
            require(false, "a plain request without answersPlainRequests")
            return false
        case .upgrade(let request, let consumed):
            require(consumed > 0 && consumed <= piece.count && handshake.headBytes.count <= 4096, "bad consumed count")
            _ = request.head.queryParameter("token")
            let agreement = handshake.accept(request)
            require(agreement.subprotocol == nil || request.subprotocols.contains(agreement.subprotocol!), "a subprotocol not offered")
            let response = agreement.response
            let text = String(decoding: response, as: UTF8.self)
            require(text.hasPrefix("HTTP/1.1 101 Switching Protocols\r\n") && text.hasSuffix("\r\n\r\n"), "malformed 101")
            // Every line ends in CRLF, and the only empty line is the last.
            let lines = Array(response.split(separator: 0x0A, omittingEmptySubsequences: false).dropLast())
            require(lines.allSatisfy { $0.last == 0x0D }, "a bare LF in the 101")
            require(lines.dropLast().allSatisfy { $0.count > 1 } && lines.last == [0x0D], "a blank line inside the 101")
            let session = agreement.makeSession()
            require(session.state == .open, "the agreed session is not open")
            _ = session.pendingOutputCount
            return false
        }
    }
    return 0
}

@_cdecl("fuzz_server_handshake_main")
public func harnessMain(_ argc: Int32, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?) -> Int32 {
    runFuzzer(argc, argv, fuzz)
}
