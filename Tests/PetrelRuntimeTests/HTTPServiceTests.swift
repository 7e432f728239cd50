import Foundation
import Glibc
import PetrelCore
@testable import PetrelRuntime
import Synchronization
import Testing

extension RuntimeTests {
    @Suite("Plain HTTP on the WebSocket port: routes, bodies, static files, event streams")
    struct HTTPServiceTests {
        /// A folder with a page, a nested asset, a hidden file and a link out of the root.
        static func makeRoot() throws -> String {
            let root = NSTemporaryDirectory() + "petrel-static-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
            try FileManager.default.createDirectory(atPath: root + "/css", withIntermediateDirectories: true)
            try "<h1>hi</h1>".write(toFile: root + "/index.html", atomically: true, encoding: .utf8)
            try "body{}".write(toFile: root + "/css/a b.css", atomically: true, encoding: .utf8)
            try "secret".write(toFile: root + "/.env", atomically: true, encoding: .utf8)
            try "outside".write(toFile: root + "-outside.txt", atomically: true, encoding: .utf8)
            try FileManager.default.createSymbolicLink(atPath: root + "/escape.txt", withDestinationPath: root + "-outside.txt")
            return root
        }

        /// One request on its own connection, which asks to be closed after the response
        /// (keep-alive has its own tests: HTTPKeepAliveTests).
        func request(_ port: UInt16, _ text: String) throws -> String {
            let raw = try RawSocket(port: port)
            raw.write(text.replacingOccurrences(of: " HTTP/1.1\r\n", with: " HTTP/1.1\r\nConnection: close\r\n"))
            let r = raw.read()
            #expect(r.eof, "the connection closes after a plain response when the client asks")
            return String(decoding: r.bytes, as: UTF8.self)
        }

        @Test("static files: index, content types, HEAD, 304, and nothing outside the root")
        func staticFiles() throws {
            let root = try Self.makeRoot()
            let server = try startEchoServer { c, _ in c.staticRoot = root }
            defer { server.stop(grace: 100) }
            let p = server.port
            let index = try request(p, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            #expect(index.hasPrefix("HTTP/1.1 200 OK\r\n"))
            #expect(index.contains("Content-Type: text/html; charset=utf-8\r\n"))
            #expect(index.contains("Content-Length: 11\r\n") && index.hasSuffix("\r\n\r\n<h1>hi</h1>"))
            let css = try request(p, "GET /css/a%20b.css?v=1 HTTP/1.1\r\nHost: x\r\n\r\n")
            #expect(css.hasPrefix("HTTP/1.1 200") && css.contains("text/css") && css.hasSuffix("body{}"))
            let head = try request(p, "HEAD /index.html HTTP/1.1\r\nHost: x\r\n\r\n")
            #expect(head.hasPrefix("HTTP/1.1 200") && head.contains("Content-Length: 11\r\n") && head.hasSuffix("\r\n\r\n"))
            let etag = index.split(separator: "\r\n").first { $0.hasPrefix("ETag: ") }!.dropFirst(6)
            let cached = try request(p, "GET / HTTP/1.1\r\nHost: x\r\nIf-None-Match: \(etag)\r\n\r\n")
            #expect(cached.hasPrefix("HTTP/1.1 304"))
            for path in ["/../etc/passwd", "/%2e%2e/%2e%2e/etc/passwd", "/.env", "/escape.txt", "/missing", "/css", "/css/"] {
                let r = try request(p, "GET \(path) HTTP/1.1\r\nHost: x\r\n\r\n")
                #expect(r.hasPrefix("HTTP/1.1 404"), "\(path): \(r.prefix(40))")
            }
            #expect(try request(p, "GET /%zz HTTP/1.1\r\nHost: x\r\n\r\n").hasPrefix("HTTP/1.1 400"))
            #expect(try request(p, "GET /%00 HTTP/1.1\r\nHost: x\r\n\r\n").hasPrefix("HTTP/1.1 400"))
            let post = try request(p, "DELETE / HTTP/1.1\r\nHost: x\r\n\r\n")
            #expect(post.hasPrefix("HTTP/1.1 405") && post.contains("Allow: GET, HEAD\r\n"))
            // The WebSocket side is untouched.
            let c = try TestClient.connect("ws://127.0.0.1:\(p)/")
            c.send("still")
            #expect(c.receive() == .text("still"))
        }

        @Test("a static file over maxStaticFileSize gets 403")
        func staticTooLarge() throws {
            let root = try Self.makeRoot()
            try String(repeating: "z", count: 5000).write(toFile: root + "/big.txt", atomically: true, encoding: .utf8)
            let server = try startEchoServer { c, _ in
                c.staticRoot = root
                c.maxStaticFileSize = 4096
            }
            defer { server.stop(grace: 100) }
            #expect(try request(server.port, "GET /big.txt HTTP/1.1\r\nHost: x\r\n\r\n").hasPrefix("HTTP/1.1 403"))
            #expect(try request(server.port, "GET /index.html HTTP/1.1\r\nHost: x\r\n\r\n").hasPrefix("HTTP/1.1 200"))
        }

        @Test("a static root that does not exist fails start with a configuration error")
        func missingRoot() throws {
            var configuration = ServerConfiguration(host: "127.0.0.1", port: 0)
            configuration.staticRoot = "/nonexistent/petrel"
            let server = Server(configuration: configuration, handlers: Handlers())
            #expect(throws: RuntimeError.self) { try server.start() }
        }

        @Test("routes see method, query and body; bodies over the limit get 413, chunked 411")
        func routesAndBodies() throws {
            let seen = Lock<[String]>([])
            let server = try startEchoServer { c, h in
                c.maxRequestBody = 100
                h.onHTTPRequest = { request, _ in
                    guard request.path == "/ack" else { return nil }
                    let body = String(decoding: request.body, as: UTF8.self)
                    seen.withLock { $0.append("\(request.method) \(request.queryParameter("client") ?? "-") \(body)") }
                    return .response(status: 200, contentType: "application/json", body: Array("{\"ok\":true}".utf8))
                }
            }
            defer { server.stop(grace: 100) }
            let p = server.port
            // The body may arrive in pieces, after the head.
            let raw = try RawSocket(port: p)
            raw.write("POST /ack?client=a%2Bb+c HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: 5\r\n\r\n12")
            usleep(50_000)
            raw.write("345")
            let r = String(decoding: raw.read().bytes, as: UTF8.self)
            #expect(r.hasPrefix("HTTP/1.1 200") && r.hasSuffix("{\"ok\":true}"))
            #expect(seen.withLock { $0 } == ["POST a+b c 12345"])
            let big = try request(p, "POST /ack HTTP/1.1\r\nHost: x\r\nContent-Length: 101\r\n\r\n")
            #expect(big.hasPrefix("HTTP/1.1 413"))
            let chunked = try request(p, "POST /ack HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n")
            #expect(chunked.hasPrefix("HTTP/1.1 411"))
            let bad = try request(p, "POST /ack HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n")
            #expect(bad.hasPrefix("HTTP/1.1 400"))
            let conflicting = try request(p, "POST /ack HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab")
            #expect(conflicting.hasPrefix("HTTP/1.1 400"))
            // Not routed and no static root: 426 as before.
            #expect(try request(p, "GET /other HTTP/1.1\r\nHost: x\r\n\r\n").hasPrefix("HTTP/1.1 426"))
        }

        /// Reads SSE events (id, data) from a raw socket until `count` have arrived.
        func events(_ raw: RawSocket, count: Int, after head: inout [UInt8]) -> [(UInt64, String)] {
            var bytes = head
            func parse() -> [(UInt64, String)] {
                let text = String(decoding: bytes, as: UTF8.self)
                guard let start = text.range(of: "\r\n\r\n") else { return [] }
                var out: [(UInt64, String)] = []
                for block in text[start.upperBound...].components(separatedBy: "\n\n").dropLast() {
                    var id: UInt64 = 0
                    var data: [String] = []
                    for line in block.split(separator: "\n") {
                        if line.hasPrefix("id: ") { id = UInt64(line.dropFirst(4)) ?? 0 }
                        if line.hasPrefix("data: ") { data.append(String(line.dropFirst(6))) }
                    }
                    if !data.isEmpty { out.append((id, data.joined(separator: "\n"))) }
                }
                return out
            }
            let r = raw.read(timeout: 5) { got in bytes = head + got; return parse().count >= count }
            bytes = head + r.bytes
            head = bytes
            return parse()
        }

        @Test("an event-stream path opens, gets sends and topic messages as events with ids")
        func eventStream() throws {
            let opened = Lock<[String]>([])
            let server = try startEchoServer { c, h in
                c.eventStreamPaths = ["/events"]
                c.topicPolicies["t"] = TopicPolicy(replayCapacity: 4)
                h.onOpen = { conn in
                    opened.withLock { $0.append("\(conn.isEventStream) \(conn.lastEventID.map(String.init) ?? "nil")") }
                    if conn.isEventStream {
                        conn.send(text: "hello\nworld")
                        if !conn.subscribe("t", after: conn.lastEventID ?? 0) {
                            conn.send(text: "snapshot", eventID: owner(conn).statistics(topic: "t").lastEventID)
                            conn.subscribe("t", after: owner(conn).statistics(topic: "t").lastEventID)
                        }
                    }
                }
            }
            defer { server.stop(grace: 100) }
            let raw = try RawSocket(port: server.port)
            raw.write("GET /events HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n\r\n")
            var seen: [UInt8] = []
            #expect(events(raw, count: 1, after: &seen).map { $0.1 } == ["hello\nworld"])
            let head = String(decoding: seen, as: UTF8.self)
            #expect(head.hasPrefix("HTTP/1.1 200 OK\r\nContent-Type: text/event-stream"))
            #expect(!head.contains("Content-Length"))
            for i in 1...6 { try! server.publish("t", text: "m\(i)") }
            let got = events(raw, count: 7, after: &seen)
            #expect(got.dropFirst().map { $0.0 } == [1, 2, 3, 4, 5, 6])
            #expect(got.last?.1 == "m6")
            // Resume after 3: 4...6 replayed, then live ones.
            let again = try RawSocket(port: server.port)
            again.write("GET /events HTTP/1.1\r\nHost: x\r\nLast-Event-ID: 3\r\n\r\n")
            var seen2: [UInt8] = []
            _ = events(again, count: 4, after: &seen2)
            try! server.publish("t", text: "m7")
            #expect(events(again, count: 5, after: &seen2).dropFirst().map { $0.0 } == [4, 5, 6, 7])
            // Too old (the ring holds 4): a snapshot with the last id, then live ones only.
            let old = try RawSocket(port: server.port)
            old.write("GET /events?last_event_id=1 HTTP/1.1\r\nHost: x\r\n\r\n")
            var seen3: [UInt8] = []
            let snap = events(old, count: 2, after: &seen3)
            #expect(snap.last?.0 == 7 && snap.last?.1 == "snapshot")
            try! server.publish("t", text: "m8")
            #expect(events(old, count: 3, after: &seen3).last.map { ($0.0, $0.1) } ?? (0, "") == (8, "m8"))
            #expect(opened.withLock { $0 } == ["true nil", "true 3", "true 1"])
            // Only GET opens a stream.
            let post = try request(server.port, "POST /events HTTP/1.1\r\nHost: x\r\n\r\n")
            #expect(post.hasPrefix("HTTP/1.1 405"))
        }

        @Test("a resume whose replay overflows a slow subscriber's queue applies the policy (no deadlock)")
        func resumeOverflow() throws {
            let server = try startEchoServer { c, h in
                c.threads = 1
                c.options.maxBackpressure = 1024
                c.topicPolicies["big"] = TopicPolicy(slowConsumer: .dropNewest, maxQueuedMessages: 5, replayCapacity: 1000)
                h.onOpen = { conn in #expect(conn.subscribe("big", after: 0)) }
            }
            defer { server.stop(grace: 100) }
            for i in 1...500 { try! server.publish("big", text: String(repeating: "x", count: 100) + "\(i)") }
            let client = try TestClient.connect("ws://127.0.0.1:\(server.port)/")
            var got = 0
            while got < 10, client.receive(timeout: 2) != nil { got += 1 }
            #expect(got == 10)
            #expect(server.statistics(topic: "big").dropped > 0)
        }

        @Test("subscribe(after:) delivers each message once, in order, while publishes race it")
        func resumeRace() throws {
            let server = try startEchoServer { c, _ in
                c.threads = 1
                c.topicPolicies["race"] = TopicPolicy(slowConsumer: .dropNewest, maxQueuedMessages: 100_000, replayCapacity: 100_000)
            }
            defer { server.stop(grace: 100) }
            let client = try TestClient.connect("ws://127.0.0.1:\(server.port)/")
            let conn = try #require(waitUntil { server.connectionCount == 1 } ? server.loops[0].registry.withLock { $0.values.first } : nil)
            let publisher = Thread { for i in 1...20_000 { try! server.publish("race", text: "\(i)") } }
            publisher.start()
            while server.statistics(topic: "race").lastEventID < 5_000 { usleep(100) }
            // Resume from an id the ring still holds, from another thread, mid-stream.
            #expect(conn.subscribe("race", after: 1_000))
            while server.statistics(topic: "race").lastEventID < 20_000 { usleep(1_000) }
            var ids: [UInt64] = []
            while ids.count < 19_000, let r = client.receive(timeout: 5) {
                if case .text(let t) = r { ids.append(UInt64(t)!) }
            }
            #expect(ids.count == 19_000)
            #expect(ids == Array(1_001...20_000))
            #expect(!conn.subscribe("race", after: 30_000), "an id never given out cannot be resumed")
        }
    }
}

/// The server a connection belongs to (tests only).
private func owner(_ c: Connection) -> Server { c.server! }
