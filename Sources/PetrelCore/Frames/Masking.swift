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

    /// Unmasks `count` bytes at `base` (a payload from its first byte) and returns the OR of
    /// the unmasked bytes' high bits: zero when they are all ASCII. One pass serves masking and
    /// the ASCII test of UTF-8 validation.
    @inlinable @inline(__always)
    public static func unmaskFromStart(key: UInt32, _ base: UnsafeMutableRawPointer, count n: Int) -> UInt64 {
        let k64 = UInt64(key) | (UInt64(key) << 32)
        var seen: UInt64 = 0
        var i = 0
        while i + 16 <= n {
            let a = base.loadUnaligned(fromByteOffset: i, as: UInt64.self) ^ k64
            let b = base.loadUnaligned(fromByteOffset: i + 8, as: UInt64.self) ^ k64
            base.storeBytes(of: a, toByteOffset: i, as: UInt64.self)
            base.storeBytes(of: b, toByteOffset: i + 8, as: UInt64.self)
            seen |= a | b
            i &+= 16
        }
        if i + 8 <= n {
            let a = base.loadUnaligned(fromByteOffset: i, as: UInt64.self) ^ k64
            base.storeBytes(of: a, toByteOffset: i, as: UInt64.self)
            seen |= a
            i &+= 8
        }
        if i + 4 <= n {
            let a = base.loadUnaligned(fromByteOffset: i, as: UInt32.self) ^ key
            base.storeBytes(of: a, toByteOffset: i, as: UInt32.self)
            seen |= UInt64(a)
            i &+= 4
        }
        var k = key
        while i < n {
            let a = base.load(fromByteOffset: i, as: UInt8.self) ^ UInt8(truncatingIfNeeded: k)
            base.storeBytes(of: a, toByteOffset: i, as: UInt8.self)
            seen |= UInt64(a)
            k >>= 8
            i &+= 1
        }
        return seen & 0x8080_8080_8080_8080
    }

    /// The byte-at-a-time definition, for tests and as the reference the fast path is checked against.
    public static func applyReference(key: UInt32, offset: Int, to buffer: UnsafeMutableRawBufferPointer) {
        for i in 0..<buffer.count {
            let keyByte = UInt8(truncatingIfNeeded: key >> (UInt32((offset + i) & 3) * 8))
            buffer[i] ^= keyByte
        }
    }
}
