import PetrelCore
import Testing

@Suite("RFC 6455 §5.7 examples, byte for byte")
struct FrameExampleTests {
    static let hello = Array("Hello".utf8)

    @Test("a single-frame unmasked text message")
    func unmaskedText() {
        let wire: [UInt8] = [0x81, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f]
        var server = Session(role: .server)
        try! server.send(.text, bytes: Self.hello)
        #expect(server.takeOutput() == wire)
        var client = Session(role: .client)
        #expect(feed(&client, wire) == [.text("Hello")])
    }

    @Test("a single-frame masked text message")
    func maskedText() {
        let wire: [UInt8] = [0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58]
        // The key 37 fa 21 3d, as the little-endian word the encoder takes.
        let key: UInt32 = 0x3D21_FA37
        var out = [UInt8](repeating: 0, count: 11)
        out.withUnsafeMutableBytes { p in
            let n = FrameHeader.encode(fin: true, opcode: .text, payloadLength: 5, maskKey: key, into: p.baseAddress!)
            #expect(n == 6)
            Self.hello.withUnsafeBytes { (p.baseAddress! + n).copyMemory(from: $0.baseAddress!, byteCount: 5) }
            Masking.apply(key: key, offset: 0, to: UnsafeMutableRawBufferPointer(rebasing: p[6...]))
        }
        #expect(out == wire)
        var server = Session(role: .server)
        #expect(feed(&server, wire) == [.text("Hello")])
    }

    @Test("a fragmented unmasked text message")
    func fragmented() {
        let first: [UInt8] = [0x01, 0x03, 0x48, 0x65, 0x6c]
        let second: [UInt8] = [0x80, 0x02, 0x6c, 0x6f]
        var server = Session(role: .server)
        try! server.sendFragment(.text, bytes: Array("Hel".utf8), isFinal: false)
        try! server.sendFragment(.text, bytes: Array("lo".utf8), isFinal: true)
        #expect(server.takeOutput() == first + second)
        var client = Session(role: .client)
        #expect(feed(&client, first) == [])
        #expect(feed(&client, second) == [.text("Hello")])
    }

    @Test("an unmasked ping and its masked pong")
    func pingPong() {
        let ping: [UInt8] = [0x89, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f]
        let pong: [UInt8] = [0x8a, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58]
        var server = Session(role: .server)
        try! server.sendPing(bytes: Self.hello)
        #expect(server.takeOutput() == ping)
        var server2 = Session(role: .server)
        #expect(feed(&server2, pong) == [.pong(Self.hello)])
        // A client answers the ping automatically with a pong carrying the same (masked) payload.
        var client = Session(role: .client)
        #expect(feed(&client, ping) == [.ping(Self.hello)])
        var echo = Session(role: .server)
        #expect(feed(&echo, client.takeOutput()) == [.pong(Self.hello)])
    }

    @Test("256 bytes in a single unmasked binary frame: 16-bit length")
    func binary256() {
        let payload = (0..<256).map { UInt8($0 & 0xFF) }
        var server = Session(role: .server)
        try! server.send(.binary, bytes: payload)
        let out = server.takeOutput()
        #expect(Array(out.prefix(4)) == [0x82, 0x7E, 0x01, 0x00])
        #expect(Array(out.dropFirst(4)) == payload)
        var client = Session(role: .client)
        #expect(feed(&client, out) == [.binary(payload)])
    }

    @Test("64 KiB in a single unmasked binary frame: 64-bit length")
    func binary64K() {
        let payload = (0..<65536).map { UInt8(truncatingIfNeeded: $0 * 7) }
        var server = Session(role: .server)
        try! server.send(.binary, bytes: payload)
        let out = server.takeOutput()
        #expect(Array(out.prefix(10)) == [0x82, 0x7F, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00])
        #expect(out.count == 65546)
        var client = Session(role: .client)
        #expect(feed(&client, out, chunks: [1000, 3, 7]) == [.binary(payload)])
    }

    @Test("header sizes at the length encoding boundaries", arguments: [0, 125, 126, 65535, 65536])
    func headerSizes(length: Int) {
        var buf = [UInt8](repeating: 0, count: 14)
        let n = buf.withUnsafeMutableBytes {
            FrameHeader.encode(fin: true, opcode: .binary, payloadLength: length, maskKey: nil, into: $0.baseAddress!)
        }
        #expect(n == FrameHeader.size(payloadLength: length, masked: false))
        #expect(n == (length < 126 ? 2 : length <= 65535 ? 4 : 10))
    }
}
