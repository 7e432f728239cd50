// The client's side, through the core's ClientHandshake (the state machine the runtime and the C
// session drive): the server's response to our handshake, in any split. Oracle: every
// outcome is a documented ClientHandshakeError (a refusal's body bounded) or an acceptance
// whose extension parameters are ones we offered and can run.
import FuzzSupport
import PetrelCore

/// The key is deterministic (seeded), so the seed corpus can hold valid Sec-WebSocket-Accept values.
nonisolated(unsafe) let handshake: ClientHandshake = {
    var entropy = EntropySource.seeded(42)
    return ClientHandshake(
        host: "example.com", target: "/chat", subprotocols: ["chat", "superchat"],
        compression: DeflateOptions(), maxHeaderBytes: 4096, maxHeaderCount: 32, entropy: &entropy)
}()

/// The right Sec-WebSocket-Accept for our key: "@@" in an input stands for it, so the fuzzer can
/// get past the check (it cannot invert SHA-1) and reach the subprotocol and extension checks.
let accept = Array(HandshakeCrypto.acceptValue(forKey: handshake.key).utf8)

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>, _ size: Int) -> Int32 {
    var input: [UInt8] = []
    var i = 0
    while i < size {
        if i + 1 < size && data[i] == UInt8(ascii: "@") && data[i + 1] == UInt8(ascii: "@") {
            input += accept
            i += 2
        } else {
            input.append(data[i])
            i += 1
        }
    }
    var client = handshake
    Chunks(input).forEach { piece in
        switch piece.withUnsafeBytes({ client.feed($0) }) {
        case .needMore:
            return true
        case .fail(let e):
            require(!e.message.isEmpty && e.code.rawValue <= -260 && e.code.rawValue >= -269, "undocumented error \(e)")
            // A refusal's body is kept only for a status other than 101, and bounded.
            require(e.body.count <= ClientHandshake.maxRefusalBody, "a refusal body over the limit")
            require(e.body.isEmpty || (e.httpStatus != 0 && e.httpStatus != 101), "a body on a failure that is not a refusal")
            return false
        case .open(let agreement, let consumed):
            require(consumed > 0 && consumed <= piece.count, "bad consumed count")
            require(agreement.subprotocol == nil || ["chat", "superchat"].contains(agreement.subprotocol!), "a subprotocol we did not offer")
            if let c = agreement.compression {
                require((8...15).contains(c.parameters.localMaxWindowBits) && (8...15).contains(c.parameters.remoteMaxWindowBits), "window bits out of range")
            }
            let session = agreement.makeSession()
            require(session.state == .open, "the agreed session is not open")
            _ = session.pendingOutputCount
            return false
        }
    }
    return 0
}

@_cdecl("fuzz_client_handshake_main")
public func harnessMain(_ argc: Int32, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?) -> Int32 {
    runFuzzer(argc, argv, fuzz)
}
