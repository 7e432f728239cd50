import Foundation
@testable import PetrelCore
import Testing

/// The two compressors behind `DeflateOptions.engine`: each one's output is what any inflater with
/// the agreed window reads, with context kept or dropped, and ISA-L is really the one used.
@Suite("permessage-deflate engines: zlib and ISA-L")
struct DeflateEngineTests {
    static func options(_ engine: DeflateEngine) -> DeflateOptions {
        var o = DeflateOptions()
        o.minimumSize = 0
        o.engine = engine
        return o
    }

    /// The test command installs libisal-dev and sets PETREL_REQUIRE_ISAL=1: there, a build that
    /// silently fell back to zlib is a failure, not a skip.
    @Test("ISA-L is built in and loads where the test command asks for it")
    func available() {
        if ProcessInfo.processInfo.environment["PETREL_REQUIRE_ISAL"] == "1" {
            #expect(DeflateEngine.isalAvailable)
        }
        // Without it, asking for ISA-L gives zlib rather than failing.
        let key = Self.options(.isal).deflaterKey(windowBits: 15)
        #expect(key.engine == (DeflateEngine.isalAvailable ? .isal : .zlib))
        #expect(makeDeflater(key) is DeflateStream == !DeflateEngine.isalAvailable)
    }

    @Test("automatic is ISA-L at compression level 1 and zlib above it; explicit choices stand")
    func automatic() {
        var o = DeflateOptions()
        let isal: DeflateEngine.Resolved = DeflateEngine.isalAvailable ? .isal : .zlib
        // The test command leaves PETREL_DEFLATE_ENGINE unset; with it set, automatic follows it.
        let env = DeflateEngine.fromEnvironment
        #expect(o.deflaterKey(windowBits: 15).engine == (env == .zlib ? .zlib : isal))
        o.compressionLevel = 6
        #expect(o.deflaterKey(windowBits: 15).engine == (env == .isal ? isal : .zlib))
        o.engine = .zlib
        o.compressionLevel = 1
        #expect(o.deflaterKey(windowBits: 15).engine == .zlib)
        o.engine = .isal
        o.compressionLevel = 9
        #expect(o.deflaterKey(windowBits: 15).engine == isal)
    }

    static let engineAndWindow: [(DeflateEngine, Int)] = [DeflateEngine.zlib, .isal].flatMap { e in (8...15).map { (e, $0) } }

    @Test("Python's zlib inflates each engine's messages with the agreed window, context kept and dropped", arguments: engineAndWindow)
    func pythonInflates(engine: DeflateEngine, bits: Int) throws {
        let script = """
            import sys
            import zlib
            bits, keep = int(sys.argv[1]), sys.argv[2] == "keep"
            d = zlib.decompressobj(-bits)
            for h in sys.stdin.read().split():
                if not keep:
                    d = zlib.decompressobj(-bits)
                print(d.decompress(bytes.fromhex(h) + b"\\x00\\x00\\xff\\xff").hex())
            """
        for keep in [true, false] {
            var server = Session(
                role: .server,
                compression: Compression(
                    parameters: DeflateParameters(localNoContextTakeover: !keep, localMaxWindowBits: bits), options: Self.options(engine)),
                zlibPool: ZlibPool())
            var payloads: [String] = []
            for m in DeflateZlibInteropTests.messages + DeflateZlibInteropTests.messages {
                try server.send(.binary, bytes: m)
                let out = server.takeOutput()
                let headerSize = out[1] & 0x7F < 126 ? 2 : 4
                #expect(out[0] == 0xC2)
                payloads.append(DeflateZlibInteropTests.hex(Array(out[headerSize...])))
            }
            let inflated = try DeflateZlibInteropTests.python(script, args: [String(bits), keep ? "keep" : "drop"], input: payloads.joined(separator: " "))
                .split(separator: "\n").map(DeflateZlibInteropTests.unhex)
            #expect(inflated == DeflateZlibInteropTests.messages + DeflateZlibInteropTests.messages, "\(engine) w\(bits) keep=\(keep)")
        }
    }

    @Test("empty, incompressible, 1 MiB and fragmented messages round-trip through each engine", arguments: [DeflateEngine.zlib, .isal])
    func roundTrip(engine: DeflateEngine) throws {
        var rng = SystemRandomNumberGenerator()
        let random = (0..<(1 << 20)).map { _ in UInt8.random(in: 0...255, using: &rng) }
        let text = Array(String(repeating: "Zürich κόσμε 0123456789 ", count: 40_000).utf8)
        let (serverSide, clientSide) = compressingPair(options: Self.options(engine))
        var server = Session(role: .server, compression: serverSide)
        var client = Session(role: .client, compression: clientSide)
        try server.send(.binary, bytes: [])
        try server.send(.binary, bytes: random)
        try server.send(.text, bytes: text)
        try server.send(.text, bytes: text, fragmentSize: 7_777)
        try server.send(.binary, bytes: Array(random.prefix(100)))
        let wire = server.takeOutput()
        // The incompressible megabyte may grow a little, never by more than 1%.
        #expect(wire.count < (random.count + 2 * text.count) * 101 / 100 + 100)
        let got = feed(&client, wire, chunks: [1, 13, 4096, 65536])
        #expect(got == [.binary([]), .binary(random), .text(String(decoding: text, as: UTF8.self)),
                        .text(String(decoding: text, as: UTF8.self)), .binary(Array(random.prefix(100)))])
    }

    @Test("an empty message, or an empty last fragment, right after a sync flush is one 0x00 octet or an empty block", arguments: [DeflateEngine.zlib, .isal])
    func emptyAfterFlush(engine: DeflateEngine) throws {
        let (serverSide, clientSide) = compressingPair(options: Self.options(engine))
        var server = Session(role: .server, compression: serverSide)
        var client = Session(role: .client, compression: clientSide)
        let hello = Array("Hello, hello, hello".utf8)
        try server.send(.text, bytes: hello)
        try server.send(.text, bytes: [])
        try server.send(.text, bytes: [])
        try hello.withUnsafeBytes { try server.sendFragment(.binary, $0, isFinal: false) }
        try [UInt8]().withUnsafeBytes { try server.sendFragment(.binary, $0, isFinal: true) }
        try server.send(.text, bytes: hello)
        let wire = server.takeOutput()
        #expect(feed(&client, wire) == [.text("Hello, hello, hello"), .text(""), .text(""), .binary(hello), .text("Hello, hello, hello")])
    }

    @Test("compress-once frames for fan-out stand alone with each engine", arguments: [DeflateEngine.zlib, .isal])
    func standalone(engine: DeflateEngine) {
        let pool = ZlibPool()
        var client = Session(role: .client, compression: Compression(parameters: DeflateParameters()))
        for m in DeflateZlibInteropTests.messages + DeflateZlibInteropTests.messages {
            let frame = m.withUnsafeBytes {
                PerMessageDeflate.encodeStandaloneFrame(.binary, $0, windowBits: 15, options: Self.options(engine), pool: pool)
            }
            #expect(frame[0] == 0xC2)
            #expect(feed(&client, frame) == [.binary(m)])
        }
        // One compressor, reused from the pool for every frame.
        #expect(pool.idleCount == 1)
    }

    @Test("ISA-L's stream for a repeated tick refers back to the previous one (context kept)")
    func isalKeepsContext() throws {
        guard DeflateEngine.isalAvailable else { return }
        let tick = DeflateZlibInteropTests.messages[0]
        var server = Session(role: .server, compression: Compression(parameters: DeflateParameters(), options: Self.options(.isal)))
        try server.send(.text, bytes: tick)
        let first = server.takeOutput().count
        try server.send(.text, bytes: tick)
        let second = server.takeOutput().count
        // A whole-message back-reference: a handful of bytes, against dozens for the first.
        #expect(second < 10 && first > 40, "first \(first), second \(second)")
    }
}
