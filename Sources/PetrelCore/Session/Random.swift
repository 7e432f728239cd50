import CLinux
import Glibc

/// Source of mask keys and handshake nonces.
///
/// `.system` draws from the kernel CSPRNG (`getrandom`), 64 bytes per system call rather than one
/// call per frame (RFC 6455 §5.3: keys must be unpredictable). `.seeded` is a deterministic
/// generator for tests; it must never be used on a network.
public struct EntropySource: Sendable {
    @usableFromInline var pool: (UInt64, UInt64, UInt64, UInt64, UInt64, UInt64, UInt64, UInt64) =
        (0, 0, 0, 0, 0, 0, 0, 0)
    @usableFromInline var poolIndex: Int = 8
    @usableFromInline var seed: UInt64
    @usableFromInline let deterministic: Bool

    /// The kernel's CSPRNG.
    public static var system: EntropySource { EntropySource(seed: 0, deterministic: false) }

    /// A reproducible stream for tests (splitmix64).
    public static func seeded(_ seed: UInt64) -> EntropySource { EntropySource(seed: seed, deterministic: true) }

    @usableFromInline
    init(seed: UInt64, deterministic: Bool) {
        self.seed = seed
        self.deterministic = deterministic
    }

    @inlinable
    public mutating func next64() -> UInt64 {
        if self.deterministic {
            self.seed &+= 0x9E37_79B9_7F4A_7C15
            var z = self.seed
            z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
            z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
            return z ^ (z >> 31)
        }
        if self.poolIndex == 8 { self.refill() }
        let i = self.poolIndex
        self.poolIndex += 1
        return withUnsafeBytes(of: &self.pool) { $0.load(fromByteOffset: i * 8, as: UInt64.self) }
    }

    @inlinable
    public mutating func next32() -> UInt32 { UInt32(truncatingIfNeeded: self.next64()) }

    @usableFromInline
    mutating func refill() {
        withUnsafeMutableBytes(of: &self.pool) { pool in
            var filled = 0
            while filled < pool.count {
                let n = getrandom(pool.baseAddress! + filled, pool.count - filled, 0)
                if n > 0 {
                    filled += n
                } else if n < 0 && errno != EINTR {
                    // getrandom only fails like this on kernels older than 3.17; /dev/urandom is the fallback.
                    let fd = open("/dev/urandom", O_RDONLY | O_CLOEXEC)
                    precondition(fd >= 0, "no source of randomness: getrandom and /dev/urandom both failed")
                    while filled < pool.count {
                        let r = read(fd, pool.baseAddress! + filled, pool.count - filled)
                        if r > 0 { filled += r } else if r < 0 && errno != EINTR { break }
                    }
                    close(fd)
                    precondition(filled == pool.count, "short read from /dev/urandom")
                }
            }
        }
        self.poolIndex = 0
    }
}

/// An entropy source held by reference, so that only the sessions that mask (clients) pay for it.
final class EntropyBox {
    var source: EntropySource
    init(_ source: EntropySource) { self.source = source }
}
