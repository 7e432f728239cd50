import PetrelCore
import Testing

/// Every frame `stream` holds, fed `step` bytes at a time, and the error that ended it, if any.
private func frames(_ stream: [UInt8], step: Int = .max, limits: StompLimits = StompLimits(), version: StompVersion = .v1_2)
    -> ([StompFrame], StompError?)
{
    var parser = StompParser(limits: limits)
    parser.version = version
    var out: [StompFrame] = []
    var at = 0
    repeat {
        let n = min(step, stream.count - at)
        parser.append(Array(stream[at..<at + n]))
        at += n
        do {
            while let f = try parser.next() { out.append(f) }
        } catch {
            return (out, error)
        }
    } while at < stream.count
    return (out, nil)
}

private func bytes(_ s: String) -> [UInt8] { Array(s.utf8) }

@Suite("STOMP frames")
struct StompParserTests {
    @Test("a frame in any split, LF or CR LF line ends, heart-beats between frames")
    func splits() {
        let one = bytes("SEND\ndestination:/topic/a\n\nhello\0")
        let two = bytes("\r\n\nSUBSCRIBE\r\nid:sub-0\r\ndestination:/topic/a\r\n\r\n\0\n")
        for step in [1, 2, 3, 7, 1000] {
            let (got, error) = frames(one + two, step: step)
            #expect(error == nil)
            #expect(got == [
                StompFrame(.send, [StompHeader("destination", "/topic/a")], body: bytes("hello")),
                StompFrame(.subscribe, [StompHeader("id", "sub-0"), StompHeader("destination", "/topic/a")]),
            ])
        }
    }

    @Test("content-length reads a body with NUL octets; without it the body ends at the first NUL")
    func bodies() {
        let (got, error) = frames(bytes("SEND\ndestination:d\ncontent-length:5\n\na\0b\0c\0SEND\ndestination:d\n\nxy\0"), step: 3)
        #expect(error == nil)
        #expect(got.map(\.body) == [[0x61, 0, 0x62, 0, 0x63], bytes("xy")])
        #expect(frames(bytes("SEND\ncontent-length:2\n\nabc\0")).1?.kind == .malformed)
        #expect(frames(bytes("SEND\ncontent-length:-1\n\n\0")).1?.kind == .malformed)
        #expect(frames(bytes("SEND\ncontent-length:\n\n\0")).1?.kind == .malformed)
    }

    @Test("1.2 escapes in headers, none in CONNECT; an undefined escape is an error")
    func escapes() {
        let (got, _) = frames(bytes("SEND\na\\cb:1\\n2\\\\3\\r\n\n\0CONNECT\nlogin:a\\b\n\n\0"))
        #expect(got.first?.headers == [StompHeader("a:b", "1\n2\\3\r")])
        #expect(got.last?["login"] == "a\\b")
        #expect(frames(bytes("SEND\na:\\t\n\n\0")).1?.kind == .badEscape)
        #expect(frames(bytes("SEND\na:x\\\n\n\0")).1?.kind == .badEscape)
        #expect(frames(bytes("SEND\na:\\r\n\n\0"), version: .v1_1).1?.kind == .badEscape)
        #expect(frames(bytes("SEND\na:\\c\n\n\0"), version: .v1_0).0.first?["a"] == "\\c")
    }

    @Test("encoding escapes what decoding unescapes, and adds content-length")
    func roundTrip() {
        let frame = StompFrame(.message, [StompHeader("x:y", "a\nb\\c\rd"), StompHeader("destination", "/q")], body: [1, 0, 2])
        for version in [StompVersion.v1_1, .v1_2] {
            let wire = frame.encoded(version: version)
            let (got, error) = frames(wire, step: 1, version: version)
            #expect(error == nil)
            var expected = frame
            if version == .v1_1 { expected.headers[0].value = "a\nb\\cd" }  // 1.1 cannot write a CR
            expected.headers.append(StompHeader("content-length", "3"))
            #expect(got == [expected])
        }
    }

    @Test("the first of a repeated header counts")
    func repeated() {
        let f = frames(bytes("MESSAGE\nfoo:World\nfoo:Hello\n\n\0")).0.first
        #expect(f?["foo"] == "World" && f?.headers.count == 2)
    }

    @Test("malformed input: unknown command, no colon, empty name, a lone CR, not UTF-8")
    func malformed() {
        for bad in ["HELLO\n\n\0", "SEND\nnocolon\n\n\0", "SEND\n:v\n\n\0", "SEND\na:b\rc\n\n\0", "\rX"] {
            #expect(frames(bytes(bad)).1?.kind == .malformed, "\(bad.debugDescription)")
        }
        #expect(frames(bytes("SEND\n") + [0x61, 0x3A, 0xFF] + bytes("\n\n\0")).1?.kind == .malformed)
    }

    @Test("limits: header count, line length and body size end the stream, before the body arrives")
    func limits() {
        let limits = StompLimits(maxHeaders: 2, maxLineBytes: 16, maxBodyBytes: 4)
        #expect(frames(bytes("SEND\na:1\nb:2\nc:3\n\n\0"), limits: limits).1?.kind == .tooManyHeaders)
        #expect(frames(bytes("SEND\na:12345678901234567\n\n\0"), step: 4, limits: limits).1?.kind == .lineTooLong)
        // No LF yet: refused as soon as the line is over the limit.
        #expect(frames(bytes("SEND\na:" + String(repeating: "x", count: 40)), step: 5, limits: limits).1?.kind == .lineTooLong)
        #expect(frames(bytes("SEND\ncontent-length:5\n\n"), limits: limits).1?.kind == .bodyTooLarge)
        #expect(frames(bytes("SEND\n\n12345"), step: 1, limits: limits).1?.kind == .bodyTooLarge)
        #expect(frames(bytes("SEND\n\n1234\0"), limits: limits).1 == nil)
        // After an error the parser stays failed.
        var p = StompParser(limits: limits)
        p.append(bytes("BAD\n\n\0SEND\n\n\0"))
        #expect(throws: StompError.self) { try p.next() }
        #expect(throws: StompError.self) { try p.next() }
    }

    @Test("an ERROR frame carries the message, and the receipt-id of the frame that caused it")
    func errorFrame() {
        let e = StompError(.protocolViolation, "no", receiptID: "r-1")
        #expect(e.errorFrame["message"] == "no" && e.errorFrame["receipt-id"] == "r-1" && e.errorFrame.body == bytes("no"))
    }
}
