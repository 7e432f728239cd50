/// A frame opcode (RFC 6455 §5.2). A struct, not an enum: the reserved values exist on the wire.
public struct Opcode: RawRepresentable, Hashable, Sendable {
    public var rawValue: UInt8

    @inlinable
    public init(rawValue: UInt8) { self.rawValue = rawValue & 0x0F }

    public static let continuation = Opcode(rawValue: 0x0)
    public static let text = Opcode(rawValue: 0x1)
    public static let binary = Opcode(rawValue: 0x2)
    public static let close = Opcode(rawValue: 0x8)
    public static let ping = Opcode(rawValue: 0x9)
    public static let pong = Opcode(rawValue: 0xA)

    /// Control opcodes have the high bit of the nibble set (§5.5).
    @inlinable
    public var isControl: Bool { self.rawValue & 0x8 != 0 }

    /// 0x3–0x7 and 0xB–0xF are reserved for future non-control and control frames.
    @inlinable
    public var isReserved: Bool {
        switch self.rawValue {
        case 0x0, 0x1, 0x2, 0x8, 0x9, 0xA: return false
        default: return true
        }
    }
}

/// Which kind a complete message is.
public enum MessageKind: UInt8, Sendable {
    case text = 1
    case binary = 2

    @inlinable
    public var opcode: Opcode { Opcode(rawValue: self.rawValue) }
}

/// Frame header encoding, shared by the session and by the runtime's pub/sub, which encodes a
/// frame once and writes the same bytes to every subscriber.
public enum FrameHeader {
    /// The largest header: 2 bytes + 8 bytes of length + 4 bytes of mask key.
    public static let maxSize = 14

    /// The size of the header for a payload of `length` bytes.
    @inlinable
    public static func size(payloadLength length: Int, masked: Bool) -> Int {
        let base = length < 126 ? 2 : (length <= 0xFFFF ? 4 : 10)
        return masked ? base + 4 : base
    }

    /// Writes a header at `out` (which has room for `maxSize` bytes) and returns its size.
    /// - Parameters:
    ///   - maskKey: the four key bytes as a little-endian word, or nil for an unmasked frame.
    @inlinable
    public static func encode(
        fin: Bool, rsv1: Bool = false, opcode: Opcode, payloadLength length: Int, maskKey: UInt32?,
        into out: UnsafeMutableRawPointer
    ) -> Int {
        var b0 = opcode.rawValue
        if fin { b0 |= 0x80 }
        if rsv1 { b0 |= 0x40 }
        out.storeBytes(of: b0, as: UInt8.self)
        let maskBit: UInt8 = maskKey == nil ? 0 : 0x80
        var n: Int
        if length < 126 {
            out.storeBytes(of: maskBit | UInt8(truncatingIfNeeded: length), toByteOffset: 1, as: UInt8.self)
            n = 2
        } else if length <= 0xFFFF {
            out.storeBytes(of: maskBit | 126, toByteOffset: 1, as: UInt8.self)
            out.storeBytes(of: UInt16(truncatingIfNeeded: length).bigEndian, toByteOffset: 2, as: UInt16.self)
            n = 4
        } else {
            out.storeBytes(of: maskBit | 127, toByteOffset: 1, as: UInt8.self)
            out.storeBytes(of: UInt64(truncatingIfNeeded: length).bigEndian, toByteOffset: 2, as: UInt64.self)
            n = 10
        }
        if let key = maskKey {
            out.storeBytes(of: key, toByteOffset: n, as: UInt32.self)
            n += 4
        }
        return n
    }
}
