import PetrelCore
import Testing

@Suite("RFC 6455 §5.3 masking")
struct MaskingTests {
    @Test("word-wide masking equals the byte-at-a-time definition", arguments: [0, 1, 3, 7, 8, 31, 32, 33, 100, 4099])
    func matchesReference(size: Int) {
        var rng = SplitMix(seed: UInt64(size))
        for offset in 0..<5 {
            let key = UInt32.random(in: .min ... .max, using: &rng)
            let input = (0..<size).map { _ in UInt8.random(in: 0...255, using: &rng) }
            var fast = input
            var slow = input
            fast.withUnsafeMutableBytes { Masking.apply(key: key, offset: offset, to: $0) }
            slow.withUnsafeMutableBytes { Masking.applyReference(key: key, offset: offset, to: $0) }
            #expect(fast == slow, "size \(size) offset \(offset)")
        }
    }

    @Test("unmasking in pieces with running offsets equals unmasking whole")
    func pieces() {
        var rng = SplitMix(seed: 7)
        let key: UInt32 = 0xA1B2_C3D4
        let input = (0..<1000).map { _ in UInt8.random(in: 0...255, using: &rng) }
        var whole = input
        whole.withUnsafeMutableBytes { Masking.apply(key: key, offset: 0, to: $0) }
        var split = input
        split.withUnsafeMutableBytes { all in
            var at = 0
            while at < all.count {
                let n = min(Int.random(in: 1...37, using: &rng), all.count - at)
                Masking.apply(key: key, offset: at, to: UnsafeMutableRawBufferPointer(rebasing: all[at..<at + n]))
                at += n
            }
        }
        #expect(whole == split)
    }

    @Test("masking twice restores the payload")
    func involution() {
        var bytes = Array("The quick brown fox jumps over the lazy dog".utf8)
        let original = bytes
        bytes.withUnsafeMutableBytes { Masking.apply(key: 0xDEAD_BEEF, offset: 2, to: $0) }
        #expect(bytes != original)
        bytes.withUnsafeMutableBytes { Masking.apply(key: 0xDEAD_BEEF, offset: 2, to: $0) }
        #expect(bytes == original)
    }
}
