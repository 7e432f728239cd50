import PetrelCore
import Testing

@Suite("RFC 6455 §5 framing: malformed input fails the connection with the right code")
struct MalformedFrameTests {
    struct Case: CustomTestStringConvertible, Sendable {
        let name: String
        let bytes: [UInt8]
        let role: Role
        let code: UInt16
        var testDescription: String { self.name }
    }

    static let cases: [Case] = [
        Case(name: "reserved opcode 3", bytes: frame(0x3, []), role: .server, code: 1002),
        Case(name: "reserved opcode 7", bytes: frame(0x7, [1]), role: .server, code: 1002),
        Case(name: "reserved control opcode 0xB", bytes: frame(0xB, []), role: .server, code: 1002),
        Case(name: "reserved opcode 0xF", bytes: frame(0xF, []), role: .server, code: 1002),
        Case(name: "RSV1 without an extension", bytes: frame(0x1, Array("a".utf8), rsv: 4), role: .server, code: 1002),
        Case(name: "RSV2", bytes: frame(0x1, Array("a".utf8), rsv: 2), role: .server, code: 1002),
        Case(name: "RSV3", bytes: frame(0x2, [], rsv: 1), role: .server, code: 1002),
        Case(name: "ping of 126 bytes", bytes: frame(0x9, Array(repeating: 0, count: 126)), role: .server, code: 1002),
        Case(name: "fragmented ping", bytes: frame(0x9, [1], fin: false), role: .server, code: 1002),
        Case(name: "fragmented close", bytes: frame(0x8, closePayload(1000), fin: false), role: .server, code: 1002),
        Case(name: "64-bit length with top bit set", bytes: frame(0x2, [], length: 1 << 63), role: .server, code: 1002),
        Case(name: "unmasked frame to a server", bytes: frame(0x1, Array("hi".utf8), mask: nil), role: .server, code: 1002),
        Case(name: "masked frame to a client", bytes: frame(0x1, Array("hi".utf8)), role: .client, code: 1002),
        Case(name: "continuation with nothing to continue", bytes: frame(0x0, [1, 2]), role: .server, code: 1002),
        Case(
            name: "new text frame inside a fragmented message",
            bytes: frame(0x1, Array("a".utf8), fin: false) + frame(0x1, Array("b".utf8)), role: .server, code: 1002),
        Case(
            name: "new binary frame inside a fragmented message",
            bytes: frame(0x2, [1], fin: false) + frame(0x2, [2]), role: .server, code: 1002),
        Case(name: "close with a 1-byte payload", bytes: frame(0x8, [0x03]), role: .server, code: 1002),
        Case(name: "close code 0", bytes: frame(0x8, closePayload(0)), role: .server, code: 1002),
        Case(name: "close code 999", bytes: frame(0x8, closePayload(999)), role: .server, code: 1002),
        Case(name: "close code 1004", bytes: frame(0x8, closePayload(1004)), role: .server, code: 1002),
        Case(name: "close code 1005", bytes: frame(0x8, closePayload(1005)), role: .server, code: 1002),
        Case(name: "close code 1006", bytes: frame(0x8, closePayload(1006)), role: .server, code: 1002),
        Case(name: "close code 1015", bytes: frame(0x8, closePayload(1015)), role: .server, code: 1002),
        Case(name: "close code 1016", bytes: frame(0x8, closePayload(1016)), role: .server, code: 1002),
        Case(name: "close code 2999", bytes: frame(0x8, closePayload(2999)), role: .server, code: 1002),
        Case(name: "close code 5000", bytes: frame(0x8, closePayload(5000)), role: .server, code: 1002),
        Case(name: "close code 65535", bytes: frame(0x8, closePayload(65535)), role: .server, code: 1002),
        Case(name: "close reason not UTF-8", bytes: frame(0x8, closePayload(1000) + [0xFF]), role: .server, code: 1007),
        Case(name: "text not UTF-8", bytes: frame(0x1, [0x61, 0xC0, 0xAF]), role: .server, code: 1007),
        Case(name: "text ending mid-character", bytes: frame(0x1, [0x61, 0xE2, 0x82]), role: .server, code: 1007),
        Case(
            name: "fragmented text ending mid-character",
            bytes: frame(0x1, [0xE2], fin: false) + frame(0x0, [0x82]), role: .server, code: 1007),
        Case(name: "surrogate in text", bytes: frame(0x1, [0xED, 0xA0, 0x80]), role: .server, code: 1007),
        Case(name: "unmasked server frame to a client, reserved opcode", bytes: frame(0x4, [], mask: nil), role: .client, code: 1002),
    ]

    @Test("fails with the expected close code, whole and byte by byte", arguments: cases)
    func failsWithCode(c: Case) {
        for chunks in [[], [1], [2, 5]] {
            var s = Session(role: c.role)
            let events = feed(&s, c.bytes, chunks: chunks)
            guard case .failed(let code, _)? = events.last else {
                Issue.record("\(c.name): expected a failure, got \(events)")
                continue
            }
            #expect(code == c.code, "\(c.name)")
            do { let ok = s.state == .closed && s.failed && s.shouldCloseTransport; #expect(ok) }
            // The close frame we queued carries the same code.
            var peer = Session(role: c.role == .server ? .client : .server)
            let out = feed(&peer, s.takeOutput())
            guard case .close(let sent, _)? = out.last else {
                Issue.record("\(c.name): no close frame queued")
                continue
            }
            #expect(sent == c.code)
        }
    }

    @Test("a frame over the frame limit fails with 1009 as soon as its header is read")
    func frameTooBig() {
        var s = Session(role: .server, configuration: SessionConfiguration(maxFrameSize: 1000, maxMessageSize: 5000))
        // Only the header of a 1001-byte frame arrives.
        let header = Array(frame(0x2, Array(repeating: 0, count: 1001)).prefix(8))
        let events = feed(&s, header)
        #expect(events == [.failed(1009, "frame exceeds 1000 bytes")])
    }

    @Test("a message over the message limit across fragments fails with 1009")
    func messageTooBig() {
        var s = Session(role: .server, configuration: SessionConfiguration(maxFrameSize: 1000, maxMessageSize: 1500))
        let bytes = frame(0x2, Array(repeating: 1, count: 1000), fin: false) + frame(0x0, Array(repeating: 2, count: 600))
        #expect(feed(&s, bytes) == [.failed(1009, "message exceeds 1500 bytes")])
    }

    @Test("a 1 GiB length announced is refused at the header, with no allocation")
    func hugeLength() {
        var s = Session(role: .server)
        let events = feed(&s, Array(frame(0x2, [], length: 1 << 30).prefix(14)))
        #expect(events == [.failed(1009, "frame exceeds 16777216 bytes")])
    }
}

@Suite("RFC 6455 §5.4–5.5 messages, fragmentation and control frames")
struct MessageTests {
    @Test("fragments are reassembled with control frames in between")
    func interleavedControl() {
        var s = Session(role: .server)
        let bytes = frame(0x1, Array("Hel".utf8), fin: false) + frame(0x9, [7]) + frame(0x0, Array("l".utf8), fin: false)
            + frame(0xA, [8]) + frame(0x0, Array("o".utf8))
        #expect(feed(&s, bytes, chunks: [3]) == [.ping([7]), .pong([8]), .text("Hello")])
        var client = Session(role: .client)
        #expect(feed(&client, s.takeOutput()) == [.pong([7])])
    }

    @Test("an empty text message and an empty binary message")
    func empty() {
        var s = Session(role: .server)
        #expect(feed(&s, frame(0x1, []) + frame(0x2, [])) == [.text(""), .binary([])])
    }

    @Test("auto-pong can be turned off")
    func noAutoPong() {
        var s = Session(role: .server, configuration: SessionConfiguration(autoPong: false))
        #expect(feed(&s, frame(0x9, [1, 2])) == [.ping([1, 2])])
        do { let ok = s.pendingOutputCount == 0; #expect(ok) }
    }

    @Test("send with a fragment size produces fragments that reassemble")
    func sendFragmented() {
        var client = Session(role: .client, entropy: .seeded(1))
        let payload = Array("abcdefghij".utf8)
        try! client.send(.text, bytes: payload, fragmentSize: 3)
        let out = client.takeOutput()
        #expect(out.count == 4 * 6 + 10)  // four masked frames with short headers
        var server = Session(role: .server)
        #expect(feed(&server, out) == [.text("abcdefghij")])
    }

    @Test("the client masks every frame with a fresh key")
    func freshKeys() {
        var client = Session(role: .client, entropy: .seeded(42))
        try! client.send(.binary, bytes: [0, 0, 0, 0])
        try! client.send(.binary, bytes: [0, 0, 0, 0])
        let out = client.takeOutput()
        #expect(out[1] & 0x80 != 0 && out[11] & 0x80 != 0)
        #expect(Array(out[2..<6]) != Array(out[12..<16]))
        // A zero payload masked shows the key itself.
        #expect(Array(out[6..<10]) == Array(out[2..<6]))
    }
}

@Suite("Strict order: what came before an error is handled first")
struct StrictOrderTests {
    @Test("a message and a ping before a bad frame are delivered and answered before the failure")
    func beforeError() {
        var s = Session(role: .server)
        let bytes = frame(0x1, Array("a".utf8)) + frame(0x9, Array("p".utf8)) + frame(0x3, [])
        for chunks in [[], [1], [4]] {
            var s2 = Session(role: .server)
            #expect(feed(&s2, bytes, chunks: chunks) == [.text("a"), .ping(Array("p".utf8)), .failed(1002, "reserved opcode")])
        }
        _ = feed(&s, bytes)
        var client = Session(role: .client)
        #expect(feed(&client, s.takeOutput()) == [.pong(Array("p".utf8)), .close(1002, "reserved opcode")])
    }

    @Test("invalid UTF-8 fails at the byte, before the rest of the frame arrives")
    func failFastUTF8() {
        var s = Session(role: .server)
        // A text frame announcing 100 bytes; only the first 4 arrive, the third is invalid.
        let full = frame(0x1, [0x61, 0x62, 0xFF] + Array(repeating: 0x61, count: 97))
        let events = feed(&s, Array(full.prefix(6 + 4)))
        #expect(events == [.failed(1007, "invalid UTF-8 in text message")])
    }

    @Test("invalid UTF-8 in a later fragment fails before the message ends")
    func failFastFragment() {
        var s = Session(role: .server)
        let bytes = frame(0x1, Array("κόσμε".utf8), fin: false) + frame(0x0, [0xCE, 0xFF], fin: false)
        #expect(feed(&s, bytes) == [.failed(1007, "invalid UTF-8 in text message")])
    }

    @Test("nothing after a close frame is read")
    func afterClose() {
        var s = Session(role: .server)
        let bytes = frame(0x8, closePayload(1000)) + frame(0x1, Array("late".utf8)) + [0xFF, 0xFF]
        #expect(feed(&s, bytes) == [.close(1000, "")])
        do { let ok = !s.wantsRead; #expect(ok) }
    }
}

@Suite("RFC 6455 §7 closing handshake")
struct CloseTests {
    @Test("the server echoes the peer's code and then closes the transport")
    func serverEcho() {
        var s = Session(role: .server)
        #expect(feed(&s, frame(0x8, closePayload(3000, "bye"))) == [.close(3000, "bye")])
        do { let ok = s.state == .closed && s.shouldCloseTransport && !s.failed; #expect(ok) }
        var client = Session(role: .client)
        #expect(feed(&client, s.takeOutput()) == [.close(3000, "")])
        do { let ok = client.state == .closed; #expect(ok) }
        // A client that closed cleanly waits for the server to close the TCP connection.
        do { let ok = !client.shouldCloseTransport; #expect(ok) }
    }

    @Test("an empty close is answered with an empty close")
    func emptyClose() {
        var s = Session(role: .server)
        #expect(feed(&s, frame(0x8, [])) == [.close(nil, "")])
        do { let ok = s.closeCodeReceived == .noStatusReceived; #expect(ok) }
        #expect(s.takeOutput() == [0x88, 0x00])
    }

    @Test("valid codes are accepted", arguments: [1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014, 3000, 3999, 4000, 4999] as [UInt16])
    func validCodes(code: UInt16) {
        var s = Session(role: .server)
        #expect(feed(&s, frame(0x8, closePayload(code, "ok"))) == [.close(code, "ok")])
    }

    @Test("a locally started close: closing, then closed when the peer answers; nothing else is sent")
    func localClose() throws {
        var client = Session(role: .client, entropy: .seeded(3))
        try client.close(code: .goingAway, reason: "done")
        do { let ok = client.state == .closing; #expect(ok) }
        #expect(throws: UsageError.closing) { try client.send(.text, bytes: [0x61]) }
        #expect(throws: UsageError.closing) { try client.close() }
        var server = Session(role: .server)
        #expect(feed(&server, client.takeOutput()) == [.close(1001, "done")])
        #expect(feed(&client, server.takeOutput()) == [.close(1001, "")])
        do { let ok = client.state == .closed; #expect(ok) }
        #expect(client.receiveEndOfStream() == nil)
    }

    @Test("closing with a code that may not be sent is refused", arguments: [0, 1005, 1006, 1015, 2000, 5000] as [UInt16])
    func badLocalCode(code: UInt16) {
        var s = Session(role: .server)
        #expect(throws: UsageError.invalidCloseCode) { try s.close(code: CloseCode(code)) }
        do { let ok = s.state == .open; #expect(ok) }
    }

    @Test("end of stream before the closing handshake is an abnormal closure (1006)")
    func abnormal() {
        var s = Session(role: .server)
        #expect(s.receiveEndOfStream() == .abnormalClosure)
        do { let ok = s.state == .closed && s.failed; #expect(ok) }
    }
}

@Suite("Any split of a valid stream yields the same events as the whole stream")
struct ChunkingPropertyTests {
    /// A random valid client stream: text (multi-byte UTF-8), binary, fragmented messages with
    /// interleaved pings and pongs, sizes across every length encoding, then a close.
    static func randomStream(_ rng: inout SplitMix) -> [UInt8] {
        var client = Session(role: .client, entropy: .seeded(rng.next()))
        let alphabet = Array("aé€😀z".unicodeScalars.map(String.init))
        for _ in 0..<Int.random(in: 1...12, using: &rng) {
            let sizeClass = Int.random(in: 0...9, using: &rng)
            let size = sizeClass < 6 ? Int.random(in: 0...130, using: &rng) : (sizeClass < 9 ? Int.random(in: 126...70_000, using: &rng) : 0)
            switch Int.random(in: 0...4, using: &rng) {
            case 0:
                var s = ""
                while s.utf8.count < size { s += alphabet.randomElement(using: &rng)! }
                let bytes = Array(s.utf8)
                try! client.send(.text, bytes: bytes, fragmentSize: Int.random(in: 1...max(1, bytes.count + 1), using: &rng))
            case 1:
                let bytes = (0..<size).map { _ in UInt8.random(in: 0...255, using: &rng) }
                try! client.send(.binary, bytes: bytes)
            case 2:
                try! client.sendFragment(.binary, bytes: [1, 2, 3], isFinal: false)
                try! client.sendPing(bytes: [9])
                try! client.sendPong(bytes: [8, 8])
                try! client.sendFragment(.binary, bytes: [4], isFinal: true)
            case 3:
                try! client.sendPing(bytes: (0..<Int.random(in: 0...125, using: &rng)).map { UInt8($0) })
            default:
                try! client.send(.text, bytes: [UInt8]())
            }
        }
        try! client.close(code: .normalClosure, reason: "end")
        return client.takeOutput()
    }

    @Test("random streams fed whole, byte by byte and in random splits")
    func splits() {
        var rng = SplitMix(seed: 2024)
        for round in 0..<60 {
            let stream = Self.randomStream(&rng)
            var whole = Session(role: .server)
            let expected = feed(&whole, stream)
            #expect(expected.last == .close(1000, "end"), "round \(round)")
            #expect(!expected.contains { if case .failed = $0 { return true } else { return false } })
            let splitSets: [[Int]] = [
                stream.count < 20_000 ? [1] : [7],
                (0..<50).map { _ in Int.random(in: 1...64, using: &rng) },
                (0..<20).map { _ in Int.random(in: 1...5000, using: &rng) },
            ]
            for chunks in splitSets {
                var s = Session(role: .server)
                #expect(feed(&s, stream, chunks: chunks) == expected, "round \(round) chunks \(chunks.prefix(3))")
            }
        }
    }
}
