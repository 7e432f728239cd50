// The server's opening-handshake path: head reading in any split, parsing, RFC 6455 checks,
// negotiation, and the 101 it writes. Oracle: a refusal has a 4xx/5xx status; a 101 is one
// well-formed head (nothing from the request can inject a line into it).
import FuzzSupport
import PetrelCore

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>, _ size: Int) -> Int32 {
    var reader = HTTPHeadReader(limit: 4096)
    Chunks(data, size).forEach { piece in
        switch piece.withUnsafeBytes({ reader.feed($0) }) {
        case .needMore:
            require(reader.bytes.count <= 4097, "the head reader holds more than its limit")
            return true
        case .tooLarge:
            require(reader.bytes.count <= 4097, "the head reader holds more than its limit")
            return false
        case .complete(let consumed):
            require(consumed > 0 && consumed <= piece.count && reader.bytes.count <= 4096, "bad consumed count")
            switch HTTPRequestHead.parse(reader.bytes, maxFieldCount: 32) {
            case .failure(let e):
                require((400...599).contains(e.status), "refusal status \(e.status)")
            case .success(let head):
                _ = head.queryParameter("token")
                switch HandshakeRequest.validate(head, allowedOrigins: nil) {
                case .failure(let e):
                    require((400...599).contains(e.status), "refusal status \(e.status)")
                case .success(let request):
                    var options = DeflateOptions()
                    options.localNoContextTakeover = true
                    let negotiated = PerMessageDeflate.negotiate(offers: request.extensions, options: options)
                    let response = request.acceptResponse(
                        subprotocol: request.selectSubprotocol(from: ["chat", "superchat"]),
                        extensions: negotiated.map { [$0.response] } ?? [])
                    let text = String(decoding: response, as: UTF8.self)
                    require(text.hasPrefix("HTTP/1.1 101 Switching Protocols\r\n") && text.hasSuffix("\r\n\r\n"), "malformed 101")
                    // Every line ends in CRLF, and the only empty line is the last.
                    let lines = Array(response.split(separator: 0x0A, omittingEmptySubsequences: false).dropLast())
                    require(lines.allSatisfy { $0.last == 0x0D }, "a bare LF in the 101")
                    require(lines.dropLast().allSatisfy { $0.count > 1 } && lines.last == [0x0D], "a blank line inside the 101")
                }
            }
            return false
        }
    }
    return 0
}

@_cdecl("fuzz_server_handshake_main")
public func harnessMain(_ argc: Int32, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?) -> Int32 {
    runFuzzer(argc, argv, fuzz)
}
