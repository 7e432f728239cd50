// The client's side: the server's response to our handshake, in any split. Oracle: every
// outcome is a documented ClientHandshakeError or an acceptance whose extension parameters
// are ones we offered and can run.
import FuzzSupport
import PetrelCore

/// The key is deterministic (seeded), so the seed corpus can hold valid Sec-WebSocket-Accept values.
nonisolated(unsafe) let handshake: ClientHandshake = {
    var entropy = EntropySource.seeded(42)
    return ClientHandshake(
        host: "example.com", target: "/chat", subprotocols: ["chat", "superchat"],
        extensions: PerMessageDeflate.offers(options: DeflateOptions()), entropy: &entropy)
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
    var reader = HTTPHeadReader(limit: 4096)
    Chunks(input).forEach { piece in
        switch piece.withUnsafeBytes({ reader.feed($0) }) {
        case .needMore:
            return true
        case .tooLarge:
            require(reader.bytes.count <= 4097, "the head reader holds more than its limit")
            return false
        case .complete:
            switch HTTPResponseHead.parse(reader.bytes, maxFieldCount: 32).flatMap(handshake.validate) {
            case .failure(let e):
                require(!e.message.isEmpty && e.cStatus <= -260 && e.cStatus >= -269, "undocumented error \(e)")
            case .success(let accepted):
                require(accepted.subprotocol == nil || ["chat", "superchat"].contains(accepted.subprotocol!), "a subprotocol we did not offer")
                require(accepted.extensions.count <= 1, "more than one extension accepted")
                if let ext = accepted.extensions.first {
                    switch PerMessageDeflate.accept(response: ext, options: DeflateOptions()) {
                    case .failure(let e): require(!e.message.isEmpty, "empty error")
                    case .success(let c):
                        require((8...15).contains(c.parameters.localMaxWindowBits) && (8...15).contains(c.parameters.remoteMaxWindowBits), "window bits out of range")
                    }
                }
            }
            return false
        }
    }
    return 0
}

@_cdecl("fuzz_client_handshake_main")
public func harnessMain(_ argc: Int32, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?) -> Int32 {
    runFuzzer(argc, argv, fuzz)
}
