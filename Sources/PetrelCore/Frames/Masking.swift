/// RFC 6455 §5.3 masking: `payload[i] ^= key[(offset + i) % 4]`.
///
/// Works word-wide (four unrolled 64-bit lanes, then single words, then bytes); the byte loop
/// is kept as `applyReference` for tests. The key is the four mask bytes exactly as they
/// appear on the wire, loaded as a little-endian `UInt32`.
public enum Masking {
    /// XORs `buffer` in place with `key`, starting `offset` bytes into the masked payload
    /// (so a payload can be unmasked in pieces as it arrives).
    @inlinable
    public static func apply(key: UInt32, offset: Int, to buffer: UnsafeMutableRawBufferPointer) {
        guard let base = buffer.baseAddress, buffer.count > 0 else { return }
        // Rotate the key so that byte 0 of `buffer` meets key byte `offset % 4`.
        let shift = UInt32(truncatingIfNeeded: (offset & 3) * 8)
        let k32 = shift == 0 ? key : (key >> shift) | (key << (32 - shift))
        let k64 = UInt64(k32) | (UInt64(k32) << 32)
        var i = 0
        let n = buffer.count
        while i + 32 <= n {
            let p = base + i
            let a = p.loadUnaligned(fromByteOffset: 0, as: UInt64.self) ^ k64
            let b = p.loadUnaligned(fromByteOffset: 8, as: UInt64.self) ^ k64
            let c = p.loadUnaligned(fromByteOffset: 16, as: UInt64.self) ^ k64
            let d = p.loadUnaligned(fromByteOffset: 24, as: UInt64.self) ^ k64
            p.storeBytes(of: a, toByteOffset: 0, as: UInt64.self)
            p.storeBytes(of: b, toByteOffset: 8, as: UInt64.self)
            p.storeBytes(of: c, toByteOffset: 16, as: UInt64.self)
            p.storeBytes(of: d, toByteOffset: 24, as: UInt64.self)
            i &+= 32
        }
        while i + 8 <= n {
            let p = base + i
            p.storeBytes(of: p.loadUnaligned(as: UInt64.self) ^ k64, as: UInt64.self)
            i &+= 8
        }
        if i + 4 <= n {
            let p = base + i
            p.storeBytes(of: p.loadUnaligned(as: UInt32.self) ^ k32, as: UInt32.self)
            i &+= 4
        }
        var k = k32
        while i < n {
            let p = base + i
            p.storeBytes(of: p.load(as: UInt8.self) ^ UInt8(truncatingIfNeeded: k), as: UInt8.self)
            k = (k >> 8) | (k << 24)
            i &+= 1
        }
    }

    /// The byte-at-a-time definition, for tests and as the reference the fast path is checked against.
    public static func applyReference(key: UInt32, offset: Int, to buffer: UnsafeMutableRawBufferPointer) {
        for i in 0..<buffer.count {
            let keyByte = UInt8(truncatingIfNeeded: key >> (UInt32((offset + i) & 3) * 8))
            buffer[i] ^= keyByte
        }
    }
}
