/// Incremental UTF-8 validation (RFC 3629, as RFC 6455 §8.1 requires for text).
///
/// The state survives across calls, so a text message can be checked as its bytes arrive,
/// across reads and fragments, and fails at the first byte that cannot start or continue a
/// valid sequence (overlong forms, surrogates and code points above U+10FFFF included).
public struct UTF8Validator: Sendable {
    /// Continuation bytes still expected by the current sequence.
    @usableFromInline var pending: UInt8 = 0
    /// Bounds for the next continuation byte (the second byte of E0, ED, F0 and F4 is narrower).
    @usableFromInline var low: UInt8 = 0x80
    @usableFromInline var high: UInt8 = 0xBF

    public init() {}

    /// True when the bytes seen so far end on a character boundary.
    @inlinable
    public var isComplete: Bool { self.pending == 0 }

    @inlinable
    public mutating func reset() {
        self = UTF8Validator()
    }

    /// Validates `bytes` as the continuation of what came before.
    /// - Returns: `nil` if every byte is valid so far, else the index of the first invalid byte.
    @inlinable
    public mutating func validate(_ bytes: UnsafeRawBufferPointer) -> Int? {
        guard let base = bytes.baseAddress else { return nil }
        let n = bytes.count
        var i = 0
        var pending = self.pending
        if pending == 0 && n >= 8 {
            // Short ASCII in a few loads: whole words, then the last 8 bytes (which may overlap).
            while i + 8 <= n {
                if base.loadUnaligned(fromByteOffset: i, as: UInt64.self) & 0x8080_8080_8080_8080 != 0 { break }
                i &+= 8
            }
            if i + 8 > n {
                if base.loadUnaligned(fromByteOffset: n - 8, as: UInt64.self) & 0x8080_8080_8080_8080 == 0 { return nil }
            }
        }
        var low = self.low
        var high = self.high
        while i < n {
            if pending == 0 {
                // ASCII fast path, 16 bytes at a time.
                while i + 16 <= n {
                    let a = base.loadUnaligned(fromByteOffset: i, as: UInt64.self)
                    let b = base.loadUnaligned(fromByteOffset: i + 8, as: UInt64.self)
                    if (a | b) & 0x8080_8080_8080_8080 != 0 { break }
                    i &+= 16
                }
                if i >= n { break }
                let byte = base.load(fromByteOffset: i, as: UInt8.self)
                if byte < 0x80 {
                    i &+= 1
                    continue
                }
                switch byte {
                case 0xC2...0xDF: pending = 1; low = 0x80; high = 0xBF
                case 0xE0: pending = 2; low = 0xA0; high = 0xBF
                case 0xE1...0xEC, 0xEE, 0xEF: pending = 2; low = 0x80; high = 0xBF
                case 0xED: pending = 2; low = 0x80; high = 0x9F
                case 0xF0: pending = 3; low = 0x90; high = 0xBF
                case 0xF1...0xF3: pending = 3; low = 0x80; high = 0xBF
                case 0xF4: pending = 3; low = 0x80; high = 0x8F
                default:
                    self.pending = pending
                    return i
                }
            } else {
                let byte = base.load(fromByteOffset: i, as: UInt8.self)
                if byte < low || byte > high {
                    self.pending = pending
                    self.low = low
                    self.high = high
                    return i
                }
                pending &-= 1
                low = 0x80
                high = 0xBF
            }
            i &+= 1
        }
        self.pending = pending
        self.low = low
        self.high = high
        return nil
    }

    /// Validates a complete byte string.
    @inlinable
    public static func isValid(_ bytes: UnsafeRawBufferPointer) -> Bool {
        var v = UTF8Validator()
        return v.validate(bytes) == nil && v.isComplete
    }
}
