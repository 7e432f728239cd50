import PetrelCore
import Testing

@Suite("RFC 3629 UTF-8 validation, incremental (RFC 6455 §8.1)")
struct UTF8ValidatorTests {
    static let valid: [[UInt8]] = [
        [], Array("hello".utf8), Array("κόσμε".utf8), Array("Hello-µ@ßöäüàá-UTF-8!!".utf8),
        [0xC2, 0x80], [0xDF, 0xBF], [0xE0, 0xA0, 0x80], [0xED, 0x9F, 0xBF], [0xEE, 0x80, 0x80],
        [0xEF, 0xBF, 0xBF], [0xF0, 0x90, 0x80, 0x80], [0xF4, 0x8F, 0xBF, 0xBF],
        Array(String(repeating: "a", count: 100).utf8) + [0xF0, 0x9F, 0x98, 0x80],
    ]

    /// Each invalid input with the index of the first byte that cannot be valid.
    static let invalid: [([UInt8], Int)] = [
        ([0x80], 0), ([0xBF], 0), ([0xC0, 0x80], 0), ([0xC1, 0xBF], 0),  // continuation first, overlong 2-byte
        ([0xE0, 0x80, 0x80], 1), ([0xE0, 0x9F, 0xBF], 1),  // overlong 3-byte
        ([0xED, 0xA0, 0x80], 1), ([0xED, 0xBF, 0xBF], 1),  // UTF-16 surrogates
        ([0xF0, 0x80, 0x80, 0x80], 1), ([0xF0, 0x8F, 0xBF, 0xBF], 1),  // overlong 4-byte
        ([0xF4, 0x90, 0x80, 0x80], 1), ([0xF5, 0x80, 0x80, 0x80], 0), ([0xFF], 0), ([0xFE], 0),
        ([0xC2, 0x41], 1), ([0xE1, 0x80, 0x41], 2), ([0x61, 0x62, 0xCE, 0xBA, 0xE1, 0xBD, 0xB9, 0xCF, 0x83, 0xCE, 0xBC, 0xCE, 0xB5, 0xED, 0xA0, 0x80, 0x65, 0x64], 14),
        (Array(repeating: 0x61, count: 40) + [0xFF], 40),
    ]

    @Test("valid sequences pass, whole and byte by byte", arguments: valid)
    func validInput(bytes: [UInt8]) {
        #expect(bytes.withUnsafeBytes { UTF8Validator.isValid($0) })
        var v = UTF8Validator()
        for b in bytes { #expect([b].withUnsafeBytes { v.validate($0) } == nil) }
        #expect(v.isComplete)
    }

    @Test("invalid sequences fail at the first bad byte", arguments: invalid)
    func invalidInput(bytes: [UInt8], at index: Int) {
        var v = UTF8Validator()
        #expect(bytes.withUnsafeBytes { v.validate($0) } == index)
        // Fed one byte at a time, the failure comes at the same byte.
        var w = UTF8Validator()
        var failedAt: Int? = nil
        for (i, b) in bytes.enumerated() where failedAt == nil {
            if [b].withUnsafeBytes({ w.validate($0) }) != nil { failedAt = i }
        }
        #expect(failedAt == index)
    }

    @Test("a sequence cut short is not complete")
    func truncated() {
        var v = UTF8Validator()
        #expect([UInt8]([0xF0, 0x9F, 0x98]).withUnsafeBytes { v.validate($0) } == nil)
        #expect(!v.isComplete)
    }

    @Test("agrees with the standard library on random input")
    func randomAgreement() {
        var rng = SplitMix(seed: 99)
        for _ in 0..<3000 {
            let n = Int.random(in: 0...24, using: &rng)
            // Bias towards bytes that form or nearly form multi-byte sequences.
            let pool: [UInt8] = [0x41, 0x7F, 0x80, 0x8F, 0x90, 0x9F, 0xA0, 0xBF, 0xC0, 0xC2, 0xDF, 0xE0, 0xED, 0xEF, 0xF0, 0xF4, 0xF5, 0xFF]
            let bytes = (0..<n).map { _ in pool.randomElement(using: &rng)! }
            let expected = String(validating: bytes, as: UTF8.self) != nil
            #expect(bytes.withUnsafeBytes { UTF8Validator.isValid($0) } == expected, "\(bytes)")
        }
    }
}
