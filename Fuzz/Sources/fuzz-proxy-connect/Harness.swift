// The HTTP CONNECT client (RFC 9110 §9.3.6) against a proxy's response. Input: a configuration
// byte (bit 0: credentials; bits 1-2: maxHeaderBytes 64, 256, 1024 or 4096; bit 3: maxHeaderCount
// 4 or 32), then the Chunks selector and the proxy's bytes. Oracle: the outcome does not depend on
// the split (the whole stream at once gives the same); we send nothing after the request; the
// tunnel starts right after the first empty line, within the limit, and only after a 2xx head;
// a refusal names the status it carries; at most maxHeaderBytes + 1 bytes are held.
import FuzzSupport
import PetrelCore

let limits = [64, 256, 1024, 4096]

/// Where the head that starts `s` ends (just after its empty line: LF LF or LF CR LF), if it does.
func headEnd(_ s: [UInt8]) -> Int? {
    var i = 1
    while i < s.count {
        if s[i] == 0x0A && (s[i - 1] == 0x0A || (i >= 2 && s[i - 1] == 0x0D && s[i - 2] == 0x0A)) { return i + 1 }
        i += 1
    }
    return nil
}

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>, _ size: Int) -> Int32 {
    guard size > 0 else { return 0 }
    let credentials = data[0] & 1 == 1
    let maxHeaderBytes = limits[Int(data[0] >> 1) & 3]
    let maxHeaderCount = data[0] & 8 == 0 ? 4 : 32
    func make() -> ProxyHandshake {
        try! ProxyHandshake(
            kind: .httpConnect, targetHost: "example.com", targetPort: 443, username: credentials ? "ada" : nil,
            password: credentials ? "pw" : nil, maxHeaderBytes: maxHeaderBytes, maxHeaderCount: maxHeaderCount)
    }
    var handshake = make()
    let chunks = Chunks(data + 1, size - 1)
    let stream = chunks.stream
    var offset = 0
    var outcome: ProxyHandshake.Step?
    var tunnelAt: Int?
    chunks.forEach { piece in
        let step = piece.withUnsafeBytes { handshake.feed($0) }
        require(handshake.bufferedByteCount <= maxHeaderBytes + 1, "holds \(handshake.bufferedByteCount) bytes")
        switch step {
        case .needMore(let send):
            require(send.isEmpty, "CONNECT sends nothing after its request")
            offset += piece.count
            return true
        case .established(let consumed):
            require(consumed >= 1 && consumed <= piece.count, "consumed \(consumed) of \(piece.count)")
            tunnelAt = offset + consumed
        case .failed(let e):
            require(!e.message.isEmpty && e.socksReply == nil, "a failure without a message, or with a SOCKS reply code")
            if let status = e.httpStatus {
                // RFC 9110 §15: the shared parser takes 100-599 only.
                require(!(200...299).contains(status) && (100...599).contains(status), "refused with status \(status)")
                require(e.message.hasPrefix("CONNECT refused: \(status) "), "status not in the message")
            }
            require(piece.withUnsafeBytes { handshake.feed($0) } == step, "a failure does not stick")
        }
        require(handshake.bufferedByteCount == 0, "holds bytes after the handshake")
        outcome = step
        return false
    }
    if let at = tunnelAt {
        require(at == headEnd(stream) && at <= maxHeaderBytes, "tunnel at \(at), the head ends at \(String(describing: headEnd(stream)))")
        guard case .success(let head) = HTTPResponseHead.parse(Array(stream[..<at]), maxFieldCount: maxHeaderCount) else {
            require(false, "established on a head that does not parse")
            return 0
        }
        require((200...299).contains(head.status), "established on \(head.status)")
    }
    // The same stream in one piece ends the same way.
    var whole = make()
    let once = stream.withUnsafeBytes { whole.feed($0) }
    switch (outcome, once) {
    case (nil, .needMore(let send)):
        require(send.isEmpty, "CONNECT sends nothing after its request")
    case (.failed(let a)?, .failed(let b)):
        require(a == b, "\(a) in pieces, \(b) at once")
    case (.established?, .established(let consumed)):
        require(consumed == tunnelAt, "tunnel at \(String(describing: tunnelAt)) in pieces, \(consumed) at once")
    default:
        require(false, "\(String(describing: outcome)) in pieces, \(once) at once")
    }
    return 0
}

@_cdecl("fuzz_proxy_connect_main")
public func harnessMain(_ argc: Int32, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?) -> Int32 {
    runFuzzer(argc, argv, fuzz)
}
