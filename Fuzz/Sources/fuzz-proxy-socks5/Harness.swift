// The SOCKS5 client (RFC 1928, RFC 1929) against a proxy's replies. Input: a configuration byte
// (bit 0: credentials; bits 1-2: target by name, IPv4, IPv6, or a 255-byte name), then the Chunks
// selector and the proxy's bytes. Oracle: the outcome is the one a byte-by-byte reading of the
// RFC gives (a reference model below), except that a reply arriving in the same piece as the one
// before it may fail as out of turn; the tunnel starts exactly where the reply ends; we send only
// the authentication and CONNECT requests, each once, in order; at most 262 bytes are held.
import FuzzSupport
import PetrelCore

let targets = ["example.com", "192.0.2.1", "2001:db8::1", String(repeating: "n", count: 255)]

/// What a byte-at-a-time reading of `s` must end in: the end of the reply (the tunnel's start)
/// or the failure, or nil when `s` stops before either.
func reference(_ s: [UInt8], credentials: Bool) -> (tunnelAt: Int?, error: ProxyHandshakeError?)? {
    guard s.count >= 2 else { return nil }
    guard s[0] == 5 else { return (nil, .notSOCKS5) }
    var p = 2
    switch s[1] {
    case 0: break
    case 2 where credentials:
        guard s.count >= 4 else { return nil }
        guard s[2] == 1 else { return (nil, .malformedAuthenticationReply) }
        guard s[3] == 0 else { return (nil, .authenticationFailed(status: s[3])) }
        p = 4
    case 2: return (nil, .credentialsRequired)
    default: return (nil, .noAcceptableMethod)
    }
    guard s.count >= p + 5 else { return nil }
    let length: Int
    switch s[p + 3] {
    case 1: length = 10
    case 3: length = 7 + Int(s[p + 4])
    case 4: length = 22
    default: return (nil, .malformedReply)
    }
    guard s.count >= p + length else { return nil }
    guard s[p] == 5 else { return (nil, .malformedReply) }
    guard s[p + 1] == 0 else { return (nil, .socksRefused(reply: s[p + 1])) }
    return (p + length, nil)
}

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>, _ size: Int) -> Int32 {
    guard size > 0 else { return 0 }
    let credentials = data[0] & 1 == 1
    let target = targets[Int(data[0] >> 1) & 3]
    guard
        var handshake = try? ProxyHandshake(
            kind: .socks5, targetHost: target, targetPort: 443, username: credentials ? "ada" : nil, password: credentials ? "pw" : nil)
    else {
        require(false, "a valid target refused")
        return 0
    }
    let authentication: [UInt8] = [1, 3, 0x61, 0x64, 0x61, 2, 0x70, 0x77]
    require(handshake.firstBytes == (credentials ? [5, 2, 0, 2] : [5, 1, 0]), "wrong greeting")
    let chunks = Chunks(data + 1, size - 1)
    let stream = chunks.stream
    let expected = reference(stream, credentials: credentials)
    var sent: [[UInt8]] = []
    var offset = 0
    var outcome: (tunnelAt: Int?, error: ProxyHandshakeError?)?
    var bytewise = true
    chunks.forEach { piece in
        if piece.count > 1 { bytewise = false }
        let step = piece.withUnsafeBytes { handshake.feed($0) }
        require(handshake.bufferedByteCount <= ProxyHandshake.maxSOCKSReplyBytes, "holds \(handshake.bufferedByteCount) bytes")
        switch step {
        case .needMore(let send):
            if !send.isEmpty { sent.append(send) }
            offset += piece.count
            return true
        case .established(let consumed):
            require(consumed >= 1 && consumed <= piece.count, "consumed \(consumed) of \(piece.count)")
            require(handshake.bufferedByteCount == 0, "holds bytes after the tunnel is up")
            outcome = (offset + consumed, nil)
            return false
        case .failed(let e):
            require(!e.message.isEmpty && e.httpStatus == nil, "a failure without a message, or with an HTTP status")
            require(e.socksReply == nil || e.message.hasSuffix("(reply \(e.socksReply!))"), "reply code not in the message")
            require(handshake.bufferedByteCount == 0, "holds bytes after a failure")
            require(piece.withUnsafeBytes { handshake.feed($0) } == .failed(e), "a failure does not stick")
            outcome = (nil, e)
            return false
        }
    }
    // What we wrote: authentication (only when the proxy chose it), then CONNECT to the target.
    require(sent.count <= 2, "\(sent.count) requests")
    if sent.count == 2 { require(credentials && sent[0] == authentication, "authentication not first") }
    if let last = sent.last, last != authentication {
        require(last.starts(with: [5, 1, 0]) && last.suffix(2) == [1, 0xBB], "malformed CONNECT request")
        switch target {
        case "192.0.2.1": require(last == [5, 1, 0, 1, 192, 0, 2, 1, 1, 0xBB], "IPv4 CONNECT")
        case "2001:db8::1": require(last.count == 22 && last[3] == 4 && last[4...7] == [0x20, 0x01, 0x0D, 0xB8], "IPv6 CONNECT")
        default: require(last[3] == 3 && Int(last[4]) == target.utf8.count && last.count == 7 + target.utf8.count, "name CONNECT")
        }
    }
    if outcome == nil {
        // Every piece was taken in turn, so the reference cannot have finished either.
        require(expected == nil, "still waiting, but the reference says \(String(describing: expected))")
    } else if bytewise {
        // A byte at a time the exchange can never be out of turn: the outcome is the reference's.
        require(outcome?.tunnelAt == expected?.tunnelAt && outcome?.error == expected?.error,
                "outcome \(String(describing: outcome)) but the reference says \(String(describing: expected))")
    } else if let outcome {
        if let at = outcome.tunnelAt {
            require(at == expected?.tunnelAt, "tunnel at \(at), the reply ends at \(String(describing: expected?.tunnelAt))")
        } else if let e = outcome.error, e != .outOfTurn {
            require(e == expected?.error, "failed with \(e), the reference says \(String(describing: expected))")
        }
    }
    return 0
}

@_cdecl("fuzz_proxy_socks5_main")
public func harnessMain(_ argc: Int32, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?) -> Int32 {
    runFuzzer(argc, argv, fuzz)
}
