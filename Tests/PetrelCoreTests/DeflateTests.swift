import Foundation
@testable import PetrelCore
import Testing

func compressingPair(_ serverParameters: DeflateParameters = DeflateParameters(), options: DeflateOptions = DeflateOptions(), pool: ZlibPool? = nil)
    -> (server: Compression, client: Compression)
{
    let mirrored = DeflateParameters(
        localNoContextTakeover: serverParameters.remoteNoContextTakeover,
        remoteNoContextTakeover: serverParameters.localNoContextTakeover,
        localMaxWindowBits: serverParameters.remoteMaxWindowBits, remoteMaxWindowBits: serverParameters.localMaxWindowBits)
    return (Compression(parameters: serverParameters, options: options), Compression(parameters: mirrored, options: options))
}

@Suite("RFC 7692 §7.2.3 examples, byte for byte")
struct DeflateExampleTests {
    static let hello = Array("Hello".utf8)
    /// zlib's bytes: the RFC's examples were made with it (ISA-L's differ, and are checked for
    /// meaning, not bytes, in DeflateEngineTests).
    static var options: DeflateOptions {
        var o = DeflateOptions()
        o.minimumSize = 0
        o.engine = .zlib
        return o
    }

    @Test("\"Hello\" compressed, then again with the shared sliding window", arguments: [1, 6, 9])
    func contextTakeover(level: Int) throws {
        var options = Self.options
        options.compressionLevel = level
        var server = Session(role: .server, compression: Compression(parameters: DeflateParameters(), options: options))
        try server.send(.text, bytes: Self.hello)
        #expect(server.takeOutput() == [UInt8](hex: "c1 07 f2 48 cd c9 c9 07 00"))
        try server.send(.text, bytes: Self.hello)
        #expect(server.takeOutput() == [UInt8](hex: "c1 05 f2 00 11 00 00"))
        var client = Session(role: .client, compression: Compression(parameters: DeflateParameters(), options: options))
        #expect(feed(&client, [UInt8](hex: "c1 07 f2 48 cd c9 c9 07 00 c1 05 f2 00 11 00 00")) == [.text("Hello"), .text("Hello")])
    }

    @Test("without context takeover the second \"Hello\" is compressed alone again")
    func noContextTakeover() throws {
        let pool = ZlibPool()
        var server = Session(
            role: .server,
            compression: Compression(parameters: DeflateParameters(localNoContextTakeover: true), options: Self.options), zlibPool: pool)
        try server.send(.text, bytes: Self.hello)
        try server.send(.text, bytes: Self.hello)
        #expect(server.takeOutput() == [UInt8](hex: "c1 07 f2 48 cd c9 c9 07 00 c1 07 f2 48 cd c9 c9 07 00"))
        // Between messages the session holds no zlib stream: it went back to the pool.
        #expect(pool.idleCount == 1)
    }

    @Test("a compressed message split into fragments")
    func fragmented() {
        var client = Session(role: .client, compression: Compression(parameters: DeflateParameters()))
        #expect(feed(&client, [UInt8](hex: "41 03 f2 48 cd 80 04 c9 c9 07 00"), chunks: [2]) == [.text("Hello")])
        var server = Session(role: .server, compression: Compression(parameters: DeflateParameters(), options: Self.options))
        try! server.send(.text, bytes: Self.hello, fragmentSize: 3)
        #expect(server.takeOutput() == [UInt8](hex: "41 03 f2 48 cd 00 03 c9 c9 07 80 01 00"))
    }

    @Test("a DEFLATE block with no compression")
    func storedBlock() {
        var client = Session(role: .client, compression: Compression(parameters: DeflateParameters()))
        #expect(feed(&client, [UInt8](hex: "c1 0b 00 05 00 fa ff 48 65 6c 6c 6f 00")) == [.text("Hello")])
    }

    @Test("a DEFLATE block with BFINAL set, and context kept after it")
    func finalBlock() {
        var client = Session(role: .client, compression: Compression(parameters: DeflateParameters()))
        #expect(feed(&client, [UInt8](hex: "c1 08 f3 48 cd c9 c9 07 00 00")) == [.text("Hello")])
        // The next message may refer back into the first one's window.
        #expect(feed(&client, [UInt8](hex: "c1 05 f2 00 11 00 00")) == [.text("Hello")])
    }

    @Test("two DEFLATE blocks in one message")
    func twoBlocks() {
        var client = Session(role: .client, compression: Compression(parameters: DeflateParameters()))
        #expect(feed(&client, [UInt8](hex: "c1 0d f2 48 05 00 00 00 ff ff ca c9 c9 07 00")) == [.text("Hello")])
    }

    @Test("an uncompressed message on a compressing connection has RSV1 clear")
    func uncompressed() throws {
        var server = Session(role: .server, compression: Compression(parameters: DeflateParameters(), options: Self.options))
        try Self.hello.withUnsafeBytes { try server.send(.text, $0, compress: false) }
        #expect(server.takeOutput() == [0x81, 0x05] + Self.hello)
        var defaults = Session(role: .server, compression: Compression(parameters: DeflateParameters()))
        try defaults.send(.binary, bytes: [1, 2, 3])  // under the default minimum size
        #expect(defaults.takeOutput() == [0x82, 0x03, 1, 2, 3])
    }

    @Test("control frames are never compressed, and RSV1 on one fails the connection")
    func controlFrames() throws {
        var server = Session(role: .server, compression: Compression(parameters: DeflateParameters(), options: Self.options))
        try server.sendPing(bytes: Self.hello)
        #expect(server.takeOutput() == [0x89, 0x05] + Self.hello)
        var s = Session(role: .server, compression: Compression(parameters: DeflateParameters()))
        #expect(feed(&s, frame(0x9, [1], rsv: 4)) == [.failed(1002, "reserved bit set without a negotiated extension")])
        var t = Session(role: .server, compression: Compression(parameters: DeflateParameters()))
        #expect(feed(&t, frame(0x1, [0xF2], fin: false, rsv: 4) + frame(0x0, [0x48], rsv: 4)).last == .failed(1002, "reserved bit set without a negotiated extension"))
    }

    @Test("corrupt compressed data fails with 1002")
    func corrupt() {
        var s = Session(role: .server, compression: Compression(parameters: DeflateParameters()))
        #expect(feed(&s, frame(0x2, [0xFF, 0xFF, 0xFF, 0xFF], rsv: 4)) == [.failed(1002, "invalid compressed data")])
    }

    @Test("invalid UTF-8 inside compressed text fails with 1007")
    func compressedBadUTF8() throws {
        var client = Session(role: .client, compression: Compression(parameters: DeflateParameters(), options: Self.options), entropy: .seeded(5))
        // Send invalid text as "binary" then flip the opcode to text in the wire bytes.
        try client.send(.binary, bytes: [0x61, 0xFF, 0x62] + Array(repeating: 0x61, count: 40))
        var wire = client.takeOutput()
        wire[0] = (wire[0] & 0xF0) | 0x1
        var server = Session(role: .server, compression: Compression(parameters: DeflateParameters()))
        #expect(feed(&server, wire) == [.failed(1007, "invalid UTF-8 in text message")])
    }
}

@Suite("RFC 7692 §7.1 negotiation")
struct DeflateNegotiationTests {
    static func negotiate(_ header: String, _ configure: (inout DeflateOptions) -> Void = { _ in }) -> String? {
        var options = DeflateOptions()
        configure(&options)
        guard let offers = ExtensionOffer.parse([header]) else { return "unparsable" }
        return PerMessageDeflate.negotiate(offers: offers, options: options).map { $0.response.description }
    }

    @Test("server responses to offers")
    func table() {
        #expect(Self.negotiate("permessage-deflate") == "permessage-deflate")
        #expect(Self.negotiate("permessage-deflate; client_max_window_bits") == "permessage-deflate")
        #expect(Self.negotiate("permessage-deflate; client_max_window_bits") { $0.remoteMaxWindowBits = 10 } == "permessage-deflate; client_max_window_bits=10")
        #expect(Self.negotiate("permessage-deflate; client_max_window_bits=12") == "permessage-deflate; client_max_window_bits=12")
        #expect(Self.negotiate("permessage-deflate; server_max_window_bits=10") == "permessage-deflate; server_max_window_bits=10")
        #expect(Self.negotiate("permessage-deflate; server_max_window_bits=10") { $0.localMaxWindowBits = 9 } == "permessage-deflate; server_max_window_bits=9")
        #expect(Self.negotiate("permessage-deflate; server_max_window_bits=8") == "permessage-deflate; server_max_window_bits=8")
        #expect(Self.negotiate("permessage-deflate; server_no_context_takeover; client_no_context_takeover") == "permessage-deflate; server_no_context_takeover; client_no_context_takeover")
        #expect(Self.negotiate("permessage-deflate") { $0.remoteNoContextTakeover = true } == "permessage-deflate; client_no_context_takeover")
        #expect(Self.negotiate("permessage-deflate") { $0.localNoContextTakeover = true } == "permessage-deflate; server_no_context_takeover")
        #expect(Self.negotiate("permessage-deflate; server_max_window_bits=\"11\"") == "permessage-deflate; server_max_window_bits=11")
        #expect(Self.negotiate("PerMessage-Deflate; Client_Max_Window_Bits") == "permessage-deflate")
    }

    @Test("invalid offers are declined and the next acceptable one is taken")
    func declined() {
        for bad in [
            "permessage-deflate; foo", "permessage-deflate; server_max_window_bits", "permessage-deflate; server_max_window_bits=7",
            "permessage-deflate; server_max_window_bits=16", "permessage-deflate; server_max_window_bits=010",
            "permessage-deflate; client_max_window_bits=abc", "permessage-deflate; server_no_context_takeover=1",
            "permessage-deflate; client_no_context_takeover; client_no_context_takeover",
            "permessage-deflate; server_max_window_bits=10; server_max_window_bits=11", "x-webkit-deflate-frame",
        ] {
            #expect(Self.negotiate(bad) == nil, "\(bad)")
            #expect(Self.negotiate(bad + ", permessage-deflate; client_max_window_bits=9") == "permessage-deflate; client_max_window_bits=9", "\(bad)")
        }
    }

    @Test("the agreed parameters match the response")
    func agreed() throws {
        let offers = ExtensionOffer.parse(["permessage-deflate; server_max_window_bits=10; client_max_window_bits=11; client_no_context_takeover"])!
        let c = try #require(PerMessageDeflate.negotiate(offers: offers, options: DeflateOptions())).compression.parameters
        #expect(c == DeflateParameters(localNoContextTakeover: false, remoteNoContextTakeover: true, localMaxWindowBits: 10, remoteMaxWindowBits: 11))
    }

    @Test("the client's offer and its check of the server's answer")
    func client() throws {
        var options = DeflateOptions()
        #expect(PerMessageDeflate.offer(options: options).description == "permessage-deflate; client_max_window_bits")
        #expect(ExtensionOffer.format(PerMessageDeflate.offers(options: options)) == "permessage-deflate; client_max_window_bits, permessage-deflate; client_no_context_takeover; client_max_window_bits")
        // A server that wants no client context takeover takes the fallback; others take the first.
        let offered = ExtensionOffer.parse([ExtensionOffer.format(PerMessageDeflate.offers(options: options))])!
        #expect(PerMessageDeflate.negotiate(offers: offered, options: DeflateOptions())?.response.description == "permessage-deflate")
        options.remoteMaxWindowBits = 10
        options.remoteNoContextTakeover = true
        options.localMaxWindowBits = 12
        #expect(PerMessageDeflate.offer(options: options).description == "permessage-deflate; server_no_context_takeover; server_max_window_bits=10; client_max_window_bits=12")
        func check(_ response: String) -> Result<Compression, ClientHandshakeError> {
            PerMessageDeflate.accept(response: ExtensionOffer.parse([response])![0], options: options)
        }
        let ok = try check("permessage-deflate; server_no_context_takeover; server_max_window_bits=9; client_max_window_bits=11; client_no_context_takeover").get()
        #expect(ok.parameters == DeflateParameters(localNoContextTakeover: true, remoteNoContextTakeover: true, localMaxWindowBits: 11, remoteMaxWindowBits: 9))
        for bad in [
            "permessage-deflate; server_max_window_bits=11",  // more than offered
            "permessage-deflate; client_max_window_bits=13",  // more than offered
            "permessage-deflate; client_max_window_bits",  // a response must give a value
            "permessage-deflate; foo", "permessage-deflate; server_no_context_takeover; server_no_context_takeover",
        ] {
            guard case .failure(let e) = check(bad) else {
                Issue.record("accepted \(bad)")
                continue
            }
            #expect(e.matches(.invalidExtensionParameters("")), "\(bad): \(e)")
        }
    }
}

@Suite("permessage-deflate data path")
struct DeflateDataTests {
    static func randomPayload(_ rng: inout SplitMix, size: Int, text: Bool) -> [UInt8] {
        if text {
            let words = ["price", "ticker", "AAPL", "change", "κόσμε", "東京", "😀", " ", "{", "}", "\"", ":", "1", "2"]
            var s = ""
            while s.utf8.count < size { s += words.randomElement(using: &rng)! }
            return Array(s.utf8)
        }
        return (0..<size).map { _ in rng.next() % 3 == 0 ? UInt8.random(in: 0...255, using: &rng) : 0x41 }
    }

    @Test("round trips across every window-bits pair, with and without context takeover", arguments: 8...15)
    func windowBits(serverBits: Int) throws {
        var rng = SplitMix(seed: UInt64(serverBits))
        for clientBits in 8...15 {
            for noContext in [false, true] {
                let params = DeflateParameters(
                    localNoContextTakeover: noContext, remoteNoContextTakeover: noContext, localMaxWindowBits: serverBits,
                    remoteMaxWindowBits: clientBits)
                var options = DeflateOptions()
                options.minimumSize = 0
                let (sc, cc) = compressingPair(params, options: options)
                let pool = ZlibPool()
                var server = Session(role: .server, compression: sc, zlibPool: noContext ? pool : nil)
                var client = Session(role: .client, compression: cc, zlibPool: noContext ? pool : nil, entropy: .seeded(rng.next()))
                for i in 0..<4 {
                    let text = i % 2 == 0
                    let payload = Self.randomPayload(&rng, size: [0, 1, 700, 40_000][i], text: text)
                    try client.send(text ? .text : .binary, bytes: payload)
                    let toServer = feed(&server, client.takeOutput(), chunks: [97])
                    #expect(toServer == [text ? .text(String(decoding: payload, as: UTF8.self)) : .binary(payload)], "bits \(serverBits)/\(clientBits) nct \(noContext)")
                    try server.send(text ? .text : .binary, bytes: payload)
                    let toClient = feed(&client, server.takeOutput(), chunks: [1000])
                    #expect(toClient == toServer)
                }
            }
        }
    }

    @Test("a compression bomb fails with 1009 without inflating past the limit")
    func bomb() throws {
        var options = DeflateOptions()
        options.compressionLevel = 9
        var client = Session(role: .client, compression: Compression(parameters: DeflateParameters(), options: options), entropy: .seeded(1))
        let zeros = [UInt8](repeating: 0, count: 64 * 1024 * 1024)
        try client.send(.binary, bytes: zeros)
        let wire = client.takeOutput()
        #expect(wire.count < 100_000)  // 64 MiB of zeros is ~64 KiB compressed
        let limit = 1024 * 1024
        var server = Session(role: .server, configuration: SessionConfiguration(maxMessageSize: limit), compression: Compression(parameters: DeflateParameters()))
        #expect(feed(&server, wire) == [.failed(1009, "message exceeds 1048576 bytes")])
        // The inflate buffer never grew much beyond the limit.
        #expect(server.message.capacity <= 2 * limit + 8192)
    }

    @Test("a message that inflates to exactly the limit is accepted")
    func exactlyTheLimit() throws {
        var client = Session(role: .client, compression: Compression(parameters: DeflateParameters()), entropy: .seeded(2))
        try client.send(.binary, bytes: [UInt8](repeating: 7, count: 100_000))
        var server = Session(role: .server, configuration: SessionConfiguration(maxMessageSize: 100_000), compression: Compression(parameters: DeflateParameters()))
        #expect(feed(&server, client.takeOutput()) == [.binary([UInt8](repeating: 7, count: 100_000))])
    }
}

@Suite("Interop with Python's zlib (wbits = -N)")
struct DeflateZlibInteropTests {
    /// Runs python3 with `script`, feeding `input` on stdin; returns stdout.
    static func python(_ script: String, args: [String] = [], input: String) throws -> String {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        p.arguments = ["python3", "-c", script] + args
        let stdin = Pipe(), stdout = Pipe()
        p.standardInput = stdin
        p.standardOutput = stdout
        try p.run()
        stdin.fileHandleForWriting.write(Data(input.utf8))
        try stdin.fileHandleForWriting.close()
        let out = stdout.fileHandleForReading.readDataToEndOfFile()
        p.waitUntilExit()
        #expect(p.terminationStatus == 0)
        return String(decoding: out, as: UTF8.self)
    }

    static func hex(_ b: [UInt8]) -> String { b.map { String(format: "%02x", $0) }.joined() }
    static func unhex(_ s: Substring) -> [UInt8] {
        var out: [UInt8] = []
        var i = s.startIndex
        while i < s.endIndex {
            let j = s.index(i, offsetBy: 2)
            out.append(UInt8(s[i..<j], radix: 16)!)
            i = j
        }
        return out
    }

    static let messages: [[UInt8]] = [
        Array(#"{"id":1,"ticker":"AAPL","company":"Apple Inc.","price":189.25,"change":0.42}"#.utf8),
        Array(#"{"id":2,"ticker":"MSFT","company":"Microsoft Corporation","price":411.8,"change":-1.02}"#.utf8),
        Array(String(repeating: "Zürich κόσμε ", count: 300).utf8),
        (0..<5000).map { UInt8(truncatingIfNeeded: $0 &* 7919 >> 3) },
    ]

    @Test("Python compresses, Petrel inflates; Petrel compresses, Python inflates", arguments: 9...15)
    func interop(bits: Int) throws {
        // Python: one compressobj per direction (context takeover), sync flush, tail stripped.
        let script = """
            import sys, zlib
            bits = int(sys.argv[1]) if len(sys.argv) > 1 else \(bits)
            lines = sys.stdin.read().split()
            mode = lines[0]
            if mode == "compress":
                c = zlib.compressobj(6, zlib.DEFLATED, -bits)
                for h in lines[1:]:
                    out = c.compress(bytes.fromhex(h)) + c.flush(zlib.Z_SYNC_FLUSH)
                    assert out.endswith(b"\\x00\\x00\\xff\\xff")
                    print(out[:-4].hex())
            else:
                d = zlib.decompressobj(-bits)
                for h in lines[1:]:
                    print(d.decompress(bytes.fromhex(h) + b"\\x00\\x00\\xff\\xff").hex())
            """
        let compressed = try Self.python(script, input: "compress " + Self.messages.map(Self.hex).joined(separator: " "))
            .split(separator: "\n").map(Self.unhex)
        #expect(compressed.count == Self.messages.count)
        var client = Session(role: .client, compression: Compression(parameters: DeflateParameters(remoteMaxWindowBits: bits)))
        for (payload, original) in zip(compressed, Self.messages) {
            var wire: [UInt8] = [0xC2]
            wire += payload.count < 126 ? [UInt8(payload.count)] : [126, UInt8(payload.count >> 8), UInt8(payload.count & 0xFF)]
            #expect(feed(&client, wire + payload) == [.binary(original)])
        }
        // And back: Petrel's server compresses with window `bits`; Python inflates with the same window.
        var options = DeflateOptions()
        options.minimumSize = 0
        var server = Session(role: .server, compression: Compression(parameters: DeflateParameters(localMaxWindowBits: bits), options: options))
        var payloads: [[UInt8]] = []
        for m in Self.messages {
            try server.send(.binary, bytes: m)
            let out = server.takeOutput()
            let headerSize = out[1] & 0x7F < 126 ? 2 : 4
            #expect(out[0] == 0xC2)
            payloads.append(Array(out[headerSize...]))
        }
        let inflated = try Self.python(script, input: "decompress " + payloads.map(Self.hex).joined(separator: " "))
            .split(separator: "\n").map(Self.unhex)
        #expect(inflated == Self.messages)
    }
}
