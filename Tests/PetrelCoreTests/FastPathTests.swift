import PetrelCore
import Testing

/// The short cuts of the hot path must not change a single answer: a whole small data frame
/// parsed in one step (`Session.takeWholeDataFrame`, which `parse` and the runtime's read path
/// both use), a server's short message queued in one step (`Session.sendShort`), ASCII checked
/// in whole words, unmasking that tests for ASCII in the same pass, masking's word-wide tail.
/// Each is compared with the general path on the same input.
@Suite("Fast paths agree with the general path")
struct FastPathTests {
    /// A stream of frames of every kind the fast path takes or must refuse: text (ASCII, multi-
    /// byte, invalid), binary, lengths around the 7-bit and 16-bit encodings, fragments, pings,
    /// frames with RSV bits, and (for a server) unmasked ones.
    static func stream(role: Role, seed: UInt64, frames: Int) -> [UInt8] {
        var rng = SplitMix(seed: seed)
        let masked = role == .server
        var out: [UInt8] = []
        var inFragmentedMessage = false
        for _ in 0..<frames {
            let length = [0, 1, 7, 8, 15, 16, 20, 100, 125, 126, 127, 150, 300, 70_000][Int(rng.next() % 14)]
            var payload = (0..<length).map { _ in UInt8(0x20 + rng.next() % 0x5F) }
            switch rng.next() % 16 {
            case 0 where length > 0: payload[Int(rng.next() % UInt64(length))] = 0xFF  // never valid UTF-8
            case 1 where length >= 3:
                let at = Int(rng.next() % UInt64(length - 2))
                payload.replaceSubrange(at..<at + 3, with: [0xE2, 0x82, 0xAC])  // €
            default: break
            }
            let mask: UInt32? = masked ? UInt32(truncatingIfNeeded: rng.next()) : nil
            switch rng.next() % 10 {
            case 0:
                out += frame(0x9, Array(payload.prefix(20)), mask: mask)  // ping
            case 1:
                out += frame(inFragmentedMessage ? 0x0 : 0x1, payload, fin: false, mask: mask)
                inFragmentedMessage = true
            case 2 where inFragmentedMessage:
                out += frame(0x0, payload, mask: mask)
                inFragmentedMessage = false
            case 3:
                out += frame(0x2, payload, rsv: 4, mask: mask)  // RSV1 without compression: an error
            case 4:
                out += frame(0x2, payload, mask: masked && rng.next() % 4 == 0 ? nil : mask)
            default:
                out += frame(rng.next() % 2 == 0 ? 0x1 : 0x2, payload, mask: mask)
            }
        }
        return out
    }

    @Test("a stream parses the same whole as byte by byte, in both roles and under tight limits", arguments: [Role.server, .client])
    func sameEvents(role: Role) {
        for seed in UInt64(1)...40 {
            let wire = Self.stream(role: role, seed: seed, frames: 30)
            for limits in [
                SessionConfiguration(), SessionConfiguration(maxFrameSize: 100, maxMessageSize: 200),
                SessionConfiguration(maxFrameSize: 300, maxMessageSize: 120),
            ] {
                // The same mask keys on both sides, so that a client's replies compare too.
                var whole = Session(role: role, configuration: limits, entropy: .seeded(seed))
                var bytewise = Session(role: role, configuration: limits, entropy: .seeded(seed))
                let a = feed(&whole, wire)
                let b = feed(&bytewise, wire, chunks: [1])
                #expect(a == b, "seed \(seed), role \(role), limits \(limits.maxFrameSize) \(limits.maxMessageSize)")
                #expect(whole.takeOutput() == bytewise.takeOutput(), "replies differ: seed \(seed), role \(role)")
            }
        }
    }

    @Test("the one-step parse takes 7-bit and 16-bit lengths and hands out the payload in place")
    func lengths() {
        for n in [0, 1, 125, 126, 1_000, 65_535] {
            let payload = [UInt8](repeating: 0x61, count: n)
            var server = Session(role: .server)
            #expect(feed(&server, frame(0x1, payload)) == [.text(String(repeating: "a", count: n))])
            var client = Session(role: .client)
            #expect(feed(&client, frame(0x2, payload, mask: nil)) == [.binary(payload)])
        }
    }

    @Test("invalid UTF-8 in a whole frame fails with 1007, at any position")
    func invalidText() {
        for n in [1, 7, 8, 9, 20, 125] {
            for at in [0, n / 2, n - 1] {
                var payload = [UInt8](repeating: 0x61, count: n)
                payload[at] = 0xC0
                var server = Session(role: .server)
                let events = feed(&server, frame(0x1, payload))
                #expect(events.count == 1)
                if case .failed(let code, _) = events.first { #expect(code == 1007) } else { Issue.record("not failed: \(events)") }
            }
        }
    }

    @Test("a server's short frames are written as the general encoder writes them")
    func shortFramesWritten() {
        for n in [0, 1, 20, 125, 126, 200] {
            let payload = (0..<n).map { UInt8(truncatingIfNeeded: $0) }
            var server = Session(role: .server)
            try! server.send(.binary, bytes: payload)
            #expect(server.takeOutput() == frame(0x2, payload, mask: nil))
            var pinger = Session(role: .server)
            try! pinger.sendPing(UnsafeRawBufferPointer(start: nil, count: 0))
            #expect(pinger.takeOutput() == [0x89, 0x00])
        }
    }

    @Test("ASCII in whole words: the first invalid byte is found wherever it is")
    func utf8Words() {
        for n in 0...40 {
            let ascii = [UInt8](repeating: 0x41, count: n)
            #expect(ascii.withUnsafeBytes { UTF8Validator.isValid($0) } || n == 0)
            for at in 0..<n {
                for bad: [UInt8] in [[0xFF], [0xC3, 0xA9], [0xED, 0xA0]] where at + bad.count <= n {
                    var bytes = ascii
                    bytes.replaceSubrange(at..<at + bad.count, with: bad)
                    var fast = UTF8Validator()
                    let found = bytes.withUnsafeBytes { fast.validate($0) }
                    // Byte by byte: never the word-wide path.
                    var slow = UTF8Validator()
                    var slowFound: Int? = nil
                    for i in 0..<n where slowFound == nil {
                        if bytes.withUnsafeBytes({ slow.validate(UnsafeRawBufferPointer(rebasing: $0[i..<i + 1])) }) != nil { slowFound = i }
                    }
                    #expect(found == slowFound, "n \(n), at \(at), \(bad)")
                    #expect(fast.isComplete == slow.isComplete || found != nil)
                }
            }
        }
    }

    @Test("masking with a 4-byte tail equals the byte-wise reference, at every offset")
    func maskingTail() {
        for n in 0...40 {
            for offset in 0..<4 {
                let bytes = (0..<n).map { UInt8(truncatingIfNeeded: $0 &* 37) }
                var fast = bytes
                var reference = bytes
                fast.withUnsafeMutableBytes { Masking.apply(key: 0xA1B2_C3D4, offset: offset, to: $0) }
                reference.withUnsafeMutableBytes { Masking.applyReference(key: 0xA1B2_C3D4, offset: offset, to: $0) }
                #expect(fast == reference, "n \(n), offset \(offset)")
            }
        }
    }

    @Test("unmasking from the start equals the reference and reports exactly when a byte is not ASCII")
    func unmaskFromStart() {
        for n in 0...70 {
            for high in [-1, 0, n / 2, n - 1] where high < n {
                var plain = (0..<n).map { UInt8(truncatingIfNeeded: 0x20 + $0 % 0x5F) }
                if high >= 0 { plain[high] = 0xE9 }
                var wire = plain
                wire.withUnsafeMutableBytes { Masking.applyReference(key: 0x1234_5678, offset: 0, to: $0) }
                let seen = wire.withUnsafeMutableBytes { Masking.unmaskFromStart(key: 0x1234_5678, $0.baseAddress ?? UnsafeMutableRawPointer(bitPattern: 8)!, count: n) }
                #expect(wire == plain, "n \(n)")
                #expect((seen != 0) == (high >= 0), "n \(n), high byte at \(high)")
            }
        }
    }

    @Test("a whole frame the one-step parse refuses is left as it came, for the general path")
    func refusedFrameUntouched() {
        // Text that is not UTF-8 (unmasked, found invalid, masked again), a fragment, a ping.
        for wire in [frame(0x1, [0x61, 0xC0, 0x62]), frame(0x1, [0x61], fin: false), frame(0x9, [1, 2])] {
            var server = Session(role: .server)
            var bytes = wire
            let taken = bytes.withUnsafeMutableBytes { server.takeWholeDataFrame($0) }
            #expect(taken == nil)
            #expect(bytes == wire)
        }
        // And what it takes is exactly one frame, with the rest left for the next call.
        var server = Session(role: .server)
        var two = frame(0x1, Array("hello".utf8)) + frame(0x2, [1, 2, 3])
        let first = two.withUnsafeMutableBytes { server.takeWholeDataFrame($0).map { ($0.used, $0.kind, [UInt8]($0.payload)) } }
        #expect(first?.0 == 11 && first?.1 == .text && first?.2 == Array("hello".utf8))
    }

    @Test("a short message queued in one step is the frame send writes; anything else is refused untouched")
    func sendShortAgrees() {
        for n in [0, 1, 7, 8, 15, 16, 17, 20, 31, 32, 33, 64, 125] {
            for kind in [MessageKind.text, .binary] {
                let payload = (0..<n).map { UInt8(truncatingIfNeeded: 0x41 + $0) }
                var fast = Session(role: .server)
                var general = Session(role: .server)
                #expect(payload.withUnsafeBytes { fast.sendShort(kind, $0) })
                try! payload.withUnsafeBytes { try general.send(kind, $0) }
                #expect(fast.takeOutput() == general.takeOutput(), "n \(n), \(kind)")
            }
        }
        let long = [UInt8](repeating: 1, count: 126)
        var server = Session(role: .server)
        #expect(!long.withUnsafeBytes { server.sendShort(.binary, $0) })
        var client = Session(role: .client)
        #expect(![UInt8(1)].withUnsafeBytes { client.sendShort(.binary, $0) })
        var compressing = Session(role: .server, compression: Compression(parameters: DeflateParameters()))
        #expect(![UInt8(1)].withUnsafeBytes { compressing.sendShort(.binary, $0) })
        var closing = Session(role: .server)
        try! closing.close(code: .normalClosure, reason: "")
        _ = closing.takeOutput()
        #expect(![UInt8(1)].withUnsafeBytes { closing.sendShort(.binary, $0) })
        #expect(closing.takeOutput().isEmpty)
    }
}
