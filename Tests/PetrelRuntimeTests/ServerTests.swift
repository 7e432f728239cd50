import Foundation
import Glibc
import PetrelCore
@testable import PetrelRuntime
import Synchronization
import Testing

/// Runtime tests share the process (fd counts, ports, threads): they run one at a time.
@Suite("Runtime", .serialized)
struct RuntimeTests {}

extension RuntimeTests {
    @Suite("Server and client over loopback")
    struct EchoTests {
        @Test("text, binary, empty, large and multi-byte messages echo back, with and without compression")
        func echo() throws {
            for compression in [true, false] {
                let server = try startEchoServer { c, _ in
                    c.options.session.maxMessageSize = 32 << 20
                    c.options.session.maxFrameSize = 32 << 20
                    c.options.maxBackpressure = 64 << 20
                }
                defer { server.stop(grace: 100) }
                var config = ClientConfiguration()
                config.compression = compression ? DeflateOptions() : nil
                config.options.session.maxMessageSize = 32 << 20
                config.options.session.maxFrameSize = 32 << 20
                config.options.maxBackpressure = 64 << 20
                let client = try TestClient.connect("ws://127.0.0.1:\(server.port)/echo", configuration: config)
                #expect(client.connection.isClosed == false)
                let big = (0..<(16 << 20)).map { UInt8(truncatingIfNeeded: $0 &* 31 >> 4) }
                let cases: [Received] = [
                    .text("hello"), .text(""), .text("κόσμε 😀"), .binary([]), .binary([0, 1, 2, 255]),
                    .text(String(repeating: "tick ", count: 20_000)), .binary(big),
                ]
                for c in cases {
                    switch c {
                    case .text(let s): #expect(client.send(s) == .ok)
                    case .binary(let b): #expect(client.send(b) == .ok)
                    default: break
                    }
                    #expect(client.receive(timeout: 10) == c, "compression \(compression)")
                }
                client.connection.close(code: CloseCode(4000), reason: "done")
                #expect(client.waitClosed() == .closed(4000, "done"))  // the initiator reports its own code and reason
            }
        }

        @Test("the upgrade request stays readable after onOpen (kept as bytes, parsed again on access)")
        func requestAfterOpen() throws {
            let server = try startEchoServer { _, handlers in
                handlers.onMessage = { c, _, _ in
                    let r = c.request
                    c.send(text: "\(r?.path ?? "-") \(r?.query ?? "-") \(r?.headers.first("X-Trace") ?? "-") \(c.subprotocol ?? "-")")
                }
            }
            defer { server.stop(grace: 100) }
            let raw = try RawSocket(port: server.port)
            let response = raw.handshake(path: "/room/7?user=ann", extra: "X-Trace: abc123\r\n")
            #expect(response.hasPrefix("HTTP/1.1 101"))
            raw.write(clientFrame(0x1, Array("who".utf8)))
            let r = raw.read(until: { $0.count >= 2 && $0.count >= 2 + Int($0[1] & 0x7F) })
            #expect(String(decoding: r.bytes.dropFirst(2), as: UTF8.self) == "/room/7 user=ann abc123 -")
        }

        @Test("a fragmented message from a raw client is reassembled and echoed")
        func fragmented() throws {
            let server = try startEchoServer()
            defer { server.stop(grace: 100) }
            let raw = try RawSocket(port: server.port)
            #expect(raw.handshake().hasPrefix("HTTP/1.1 101"))
            raw.write(clientFrame(0x1, Array("Hel".utf8), fin: false) + clientFrame(0x9, [7]) + clientFrame(0x0, Array("lo".utf8)))
            let r = raw.read(until: { bytes in
                // pong (2 + 1) then text (2 + 5)
                bytes.count >= 10
            })
            #expect(Array(r.bytes.prefix(3)) == [0x8A, 0x01, 7])
            #expect(serverFrame(Array(r.bytes.dropFirst(3)))! == (0x1, Array("Hello".utf8)))
        }

        @Test("close codes travel both ways and reach onClose")
        func closeCodes() throws {
            let closes = Lock<[(UInt16, String)]>([])
            let server = try startEchoServer { _, h in
                h.onClose = { _, code, reason in closes.withLock { $0.append((code.rawValue, reason)) } }
                h.onMessage = { c, _, payload in
                    if String(decoding: payload, as: UTF8.self) == "close me" { c.close(code: CloseCode(4321), reason: "as asked") }
                }
            }
            defer { server.stop(grace: 100) }
            let a = try TestClient.connect("ws://127.0.0.1:\(server.port)/")
            a.send("close me")
            #expect(a.waitClosed() == .closed(4321, "as asked"))
            let b = try TestClient.connect("ws://127.0.0.1:\(server.port)/")
            b.connection.close(code: .goingAway, reason: "leaving")
            #expect(b.waitClosed() == .closed(1001, "leaving"))
            #expect(waitUntil { closes.withLock { $0.count } == 2 })
            let seen = closes.withLock { $0.map { "\($0.0) \($0.1)" } }.sorted()
            #expect(seen == ["1001 leaving", "4321 as asked"])
        }

        @Test("the accept hook sees the request and can refuse with a status")
        func acceptHook() throws {
            let server = try startEchoServer { c, h in
                c.subprotocols = ["v1", "v2"]
                h.onUpgrade = { req in
                    guard req.request.headers["Authorization"] == "Bearer good" else { return .reject(status: 401, body: "who are you?") }
                    #expect(req.request.path == "/feed" && req.request.query == "a=1")
                    return .accept(subprotocol: "v2", userData: 42)
                }
                h.onOpen = { c in #expect(c.userData == 42 && c.subprotocol == "v2") }
            }
            defer { server.stop(grace: 100) }
            var config = ClientConfiguration()
            config.subprotocols = ["v1", "v2"]
            config.headers = [HTTPField(name: "Authorization", value: "Bearer good")]
            let ok = try TestClient.connect("ws://127.0.0.1:\(server.port)/feed?a=1", configuration: config)
            #expect(ok.connection.subprotocol == "v2")
            config.headers = []
            #expect(throws: RuntimeError.self) { try TestClient.connect("ws://127.0.0.1:\(server.port)/feed?a=1", configuration: config) }
            let raw = try RawSocket(port: server.port)
            #expect(raw.handshake(path: "/feed").hasPrefix("HTTP/1.1 401"))
        }

        @Test("an IPv6 server and client")
        func ipv6() throws {
            var c = ServerConfiguration(host: "::1", port: 0)
            c.threads = 1
            let h = Handlers()
            h.onMessage = { conn, k, p in conn.send(k, p) }
            let server = Server(configuration: c, handlers: h)
            do { try server.start() } catch {
                // No IPv6 loopback in this environment.
                return
            }
            defer { server.stop(grace: 100) }
            let client = try TestClient.connect("ws://[::1]:\(server.port)/")
            client.send("six")
            #expect(client.receive() == .text("six"))
        }

        @Test("connecting to a closed port fails with a clear error")
        func refused() throws {
            let server = try startEchoServer()
            let port = server.port
            server.stop(grace: 0)
            #expect(throws: RuntimeError.self) { try TestClient.connect("ws://127.0.0.1:\(port)/") }
            #expect(throws: RuntimeError.self) { try WebSocketURL("http://x/") }
            #expect(try WebSocketURL("ws://[::1]:9001/a?b").hostHeader == "[::1]:9001")
            #expect(try WebSocketURL("wss://example.com").port == 443)
            #expect(try WebSocketURL("ws://example.com?x=1").target == "/?x=1")
        }
    }

    @Suite("Pub/sub")
    struct PubSubTests {
        @Test("publishing from 8 threads reaches 100 subscribers, every message, in per-topic order")
        func fanOut() throws {
            let server = try startEchoServer { c, h in
                c.defaultTopicPolicy = TopicPolicy(slowConsumer: .close(.policyViolation), maxQueuedMessages: 100_000)
                h.onOpen = { c in c.subscribe("ticks") }
            }
            defer { server.stop(grace: 100) }
            var config = ClientConfiguration()
            config.compression = nil
            let clients = try (0..<100).map { _ in try TestClient.connect("ws://127.0.0.1:\(server.port)/", configuration: config) }
            #expect(waitUntil { server.loops.map { $0.topics["ticks"]?.count ?? 0 }.reduce(0, +) == 100 })
            let perThread = 50
            DispatchQueue.concurrentPerform(iterations: 8) { t in
                for i in 0..<perThread { try! server.publish("ticks", text: "\(t):\(i)") }
            }
            #expect(server.statistics(topic: "ticks").lastEventID == UInt64(8 * perThread))
            for c in clients {
                var next = [Int](repeating: 0, count: 8)
                for _ in 0..<(8 * perThread) {
                    guard case .text(let s)? = c.receive(timeout: 10) else {
                        Issue.record("a message is missing")
                        return
                    }
                    let parts = s.split(separator: ":").map { Int($0)! }
                    #expect(parts[1] == next[parts[0]], "per-publisher order")
                    next[parts[0]] += 1
                }
            }
        }

        @Test("a subscriber that does not read for a while gets every topic frame and direct send, in order, intact")
        func sharedFramesThroughPartialWrites() throws {
            // Topic frames go out by writev straight from the shared frames; a full socket splits
            // them anywhere; a direct send in between must keep its place.
            let opened = Lock<ConnectionID?>(nil)
            let server = try startEchoServer { c, h in
                c.options.maxBackpressure = 64 << 20
                c.defaultTopicPolicy = TopicPolicy(slowConsumer: .close(.policyViolation), maxQueuedMessages: 1_000_000)
                h.onOpen = { conn in
                    conn.subscribe("t")
                    opened.withLock { $0 = conn.id }
                }
            }
            defer { server.stop(grace: 100) }
            let raw = try RawSocket(port: server.port, receiveBuffer: 4096)
            #expect(raw.handshake().hasPrefix("HTTP/1.1 101"))
            #expect(waitUntil { opened.withLock { $0 } != nil && server.loops.map { $0.topics["t"]?.count ?? 0 }.reduce(0, +) == 1 })
            let id = opened.withLock { $0 }!
            let filler = String(repeating: "x", count: 6000)
            var expected: [String] = []
            for i in 0..<3000 {
                let t = "t:\(i):" + filler.prefix(i * 7 % 6000)
                try! server.publish("t", text: t)
                expected.append(t)
                if i >= 2000 && i % 10 == 0 {  // topic frames alone first, then mixed
                    let d = "d:\(i)"
                    _ = d.utf8.withContiguousStorageIfAvailable { server.send(to: id, .text, UnsafeRawBufferPointer($0)) }
                    expected.append(d)
                }
            }
            // Only now read: megabytes have piled up behind a full socket.
            var bytes: [UInt8] = []
            var got: [String] = []
            var offset = 0
            let end = Date().addingTimeInterval(20)
            while got.count < expected.count && Date() < end {
                bytes += raw.read(timeout: 0.5, until: { $0.count >= 1 << 16 }).bytes
                while bytes.count - offset >= 2 {
                    var len = Int(bytes[offset + 1] & 0x7F)
                    var at = offset + 2
                    if len == 126 {
                        guard bytes.count - offset >= 4 else { break }
                        len = Int(bytes[offset + 2]) << 8 | Int(bytes[offset + 3])
                        at = offset + 4
                    }
                    guard bytes.count >= at + len else { break }
                    #expect(bytes[offset] == 0x81)
                    got.append(String(decoding: bytes[at..<at + len], as: UTF8.self))
                    offset = at + len
                }
            }
            #expect(got.count == expected.count)
            #expect(got == expected)
        }

        @Test("compressed subscribers receive the shared compressed frame")
        func compressedFanOut() throws {
            let server = try startEchoServer { _, h in h.onOpen = { c in c.subscribe("t") } }
            defer { server.stop(grace: 100) }
            let a = try TestClient.connect("ws://127.0.0.1:\(server.port)/")
            var plain = ClientConfiguration()
            plain.compression = nil
            let b = try TestClient.connect("ws://127.0.0.1:\(server.port)/", configuration: plain)
            #expect(waitUntil { server.loops.map { $0.topics["t"]?.count ?? 0 }.reduce(0, +) == 2 })
            let tick = #"{"ticker":"AAPL","company":"Apple Inc.","price":189.25,"change":0.42,"changePercent":0.22}"#
            for _ in 0..<3 { try! server.publish("t", text: tick, key: "AAPL") }
            for c in [a, b] {
                for _ in 0..<3 { #expect(c.receive() == .text(tick)) }
            }
        }

        @Test("a slow subscriber's queue coalesces by key, drops oldest, or closes, per topic policy")
        func slowConsumerPolicies() throws {
            let server = try startEchoServer { c, h in
                c.options.maxBackpressure = 1024
                c.topicPolicies["coalesce"] = TopicPolicy(slowConsumer: .coalesceByKey, maxQueuedMessages: 100)
                c.topicPolicies["oldest"] = TopicPolicy(slowConsumer: .dropOldest, maxQueuedMessages: 10)
                c.topicPolicies["close"] = TopicPolicy(slowConsumer: .close(.tryAgainLater), maxQueuedMessages: 10)
                h.onOpen = { c in c.subscribe(c.request!.path == "/c" ? "coalesce" : c.request!.path == "/o" ? "oldest" : "close") }
            }
            defer { server.stop(grace: 100) }
            // Raw subscribers that never read: the kernel buffers fill, then the policies apply.
            let subs = try ["/c", "/o", "/x"].map { path -> RawSocket in
                let r = try RawSocket(port: server.port)
                #expect(r.handshake(path: path).hasPrefix("HTTP/1.1 101"))
                return r
            }
            #expect(waitUntil { server.loops.map { $0.topics.count }.reduce(0, +) == 3 })
            let payload = String(repeating: "x", count: 2000)
            for i in 0..<3000 {
                for t in ["coalesce", "oldest", "close"] { try! server.publish(t, text: "\(i % 5) \(payload)", key: "k\(i % 5)") }
            }
            #expect(waitUntil { server.statistics(topic: "coalesce").coalesced > 0 })
            #expect(waitUntil { server.statistics(topic: "oldest").dropped > 0 })
            #expect(waitUntil { server.statistics(topic: "close").dropped > 0 })
            // The closed subscriber got a 1013 close frame after what it was sent.
            let r = subs[2].read(timeout: 10)
            let text = String(decoding: r.bytes, as: UTF8.self)
            #expect(text.contains("subscriber too slow") && r.eof)
        }

        @Test("the replay ring returns what a late client missed, or nil when it is too old")
        func replay() throws {
            let server = try startEchoServer { c, _ in c.topicPolicies["r"] = TopicPolicy(replayCapacity: 5) }
            defer { server.stop(grace: 100) }
            for i in 1...8 { try! server.publish("r", text: "m\(i)") }
            #expect(server.replay(topic: "r", after: 5)?.map(\.eventID) == [6, 7, 8])
            #expect(server.replay(topic: "r", after: 3)?.map(\.eventID) == [4, 5, 6, 7, 8])
            #expect(server.replay(topic: "r", after: 2) == nil)
            #expect(server.replay(topic: "r", after: 8)?.isEmpty == true)
            #expect(String(decoding: server.replay(topic: "r", after: 7)![0].sseEvent, as: UTF8.self) == "id: 8\ndata: m8\n\n")
        }
    }
}
