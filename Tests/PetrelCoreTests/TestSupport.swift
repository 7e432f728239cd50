import PetrelCore

/// An event with its payload copied out, so tests can compare and keep them.
enum Recorded: Equatable, CustomStringConvertible {
    case text(String)
    case binary([UInt8])
    case ping([UInt8])
    case pong([UInt8])
    case close(UInt16?, String)
    case failed(UInt16, String)

    init(_ e: Event) {
        switch e {
        case .text(let p): self = .text(String(decoding: p, as: UTF8.self))
        case .binary(let p): self = .binary(Array(p))
        case .ping(let p): self = .ping(Array(p))
        case .pong(let p): self = .pong(Array(p))
        case .close(let c, let r): self = .close(c?.rawValue, String(decoding: r, as: UTF8.self))
        case .failed(let e): self = .failed(e.closeCode.rawValue, e.description)
        }
    }

    var description: String {
        switch self {
        case .text(let s): return "text(\(s.prefix(40)) [\(s.utf8.count)])"
        case .binary(let b): return "binary[\(b.count)]"
        case .ping(let b): return "ping\(b)"
        case .pong(let b): return "pong\(b)"
        case .close(let c, let r): return "close(\(c.map(String.init) ?? "none"), \(r))"
        case .failed(let c, let r): return "failed(\(c), \(r))"
        }
    }
}

/// Feeds `bytes` to `session` in the given chunk sizes (cycled), recording every event.
func feed(_ session: inout Session, _ bytes: [UInt8], chunks: [Int] = []) -> [Recorded] {
    var events: [Recorded] = []
    var data = bytes
    var offset = 0
    var c = 0
    data.withUnsafeMutableBytes { all in
        while offset < all.count {
            let size = chunks.isEmpty ? all.count - offset : max(1, min(chunks[c % chunks.count], all.count - offset))
            c += 1
            let piece = UnsafeMutableRawBufferPointer(rebasing: all[offset..<offset + size])
            var used = 0
            while used < piece.count {
                let (n, event) = session.parse(UnsafeMutableRawBufferPointer(rebasing: piece[used...]))
                used += n
                if let event { events.append(Recorded(event)) }
            }
            offset += size
        }
    }
    return events
}

/// Builds one frame by hand, so tests can write frames no session would produce.
func frame(
    _ opcode: UInt8, _ payload: [UInt8], fin: Bool = true, rsv: UInt8 = 0, mask: UInt32? = 0x1234_5678,
    length: UInt64? = nil
) -> [UInt8] {
    var out: [UInt8] = [(fin ? 0x80 : 0) | (rsv << 4) | opcode]
    let maskBit: UInt8 = mask == nil ? 0 : 0x80
    let len = length ?? UInt64(payload.count)
    if len < 126 {
        out.append(maskBit | UInt8(len))
    } else if len <= 0xFFFF {
        out.append(maskBit | 126)
        out += [UInt8(len >> 8), UInt8(len & 0xFF)]
    } else {
        out.append(maskBit | 127)
        for s in stride(from: 56, through: 0, by: -8) { out.append(UInt8((len >> UInt64(s)) & 0xFF)) }
    }
    var body = payload
    if let key = mask {
        withUnsafeBytes(of: key) { out += $0 }
        body.withUnsafeMutableBytes { Masking.applyReference(key: key, offset: 0, to: $0) }
    }
    return out + body
}

func closePayload(_ code: UInt16, _ reason: String = "") -> [UInt8] {
    [UInt8(code >> 8), UInt8(code & 0xFF)] + Array(reason.utf8)
}

/// A small deterministic generator for property tests.
struct SplitMix: RandomNumberGenerator {
    var state: UInt64
    init(seed: UInt64) { self.state = seed }
    mutating func next() -> UInt64 {
        self.state &+= 0x9E37_79B9_7F4A_7C15
        var z = self.state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

extension Array where Element == UInt8 {
    init(hex: String) {
        let digits = hex.split(separator: " ")
        self = digits.map { UInt8($0, radix: 16)! }
    }
}

/// Test conveniences that keep each buffer alive for the duration of the call.
extension Session {
    mutating func send(_ kind: MessageKind, bytes: [UInt8]) throws { try bytes.withUnsafeBytes { try self.send(kind, $0) } }
    mutating func send(_ kind: MessageKind, bytes: [UInt8], fragmentSize: Int) throws {
        try bytes.withUnsafeBytes { try self.send(kind, $0, fragmentSize: fragmentSize) }
    }
    mutating func sendFragment(_ kind: MessageKind, bytes: [UInt8], isFinal: Bool) throws {
        try bytes.withUnsafeBytes { try self.sendFragment(kind, $0, isFinal: isFinal) }
    }
    mutating func sendPing(bytes: [UInt8]) throws { try bytes.withUnsafeBytes { try self.sendPing($0) } }
    mutating func sendPong(bytes: [UInt8]) throws { try bytes.withUnsafeBytes { try self.sendPong($0) } }
}
