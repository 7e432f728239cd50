import Foundation
import Glibc
import PetrelCore
@testable import PetrelRuntime
import Testing

extension RuntimeTests {
    @Suite("The access log: a line per request, upgrade and close, to a function or a file")
    struct AccessLogTests {
        @Test("requests (kept alive and refused), a WebSocket's upgrade and close, an event stream's: each entry's fields")
        func entries() throws {
            let entries = Lock<[AccessLogEntry]>([])
            let server = try startEchoServer { c, h in
                c.accessLog = .callback { e in entries.withLock { $0.append(e) } }
                c.eventStreamPaths = ["/events"]
                h.onHTTPRequest = { r, _ in r.path == "/ack" ? .response(status: 200, contentType: "text/plain", body: Array("ok".utf8)) : nil }
            }
            defer { server.stop(grace: 100) }
            let raw = try RawSocket(port: server.port)
            let first = "POST /ack HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc"
            raw.write(first)
            _ = raw.read(timeout: 2) { String(decoding: $0, as: UTF8.self).hasSuffix("ok") }
            raw.write("GET /missing HTTP/1.1\r\nHost: x\r\n\r\n")
            #expect(raw.read(timeout: 2).eof)
            let ws = try TestClient.connect("ws://127.0.0.1:\(server.port)/chat")
            ws.send("hello")
            #expect(ws.receive() == .text("hello"))
            ws.connection.close()
            _ = ws.waitClosed()
            // The server's close entry comes once its side of the connection is gone.
            let closed = Date().addingTimeInterval(8)
            while entries.withLock({ $0.count }) < 4 && Date() < closed { usleep(10_000) }
            let sse = try RawSocket(port: server.port)
            sse.write("GET /events HTTP/1.1\r\nHost: x\r\n\r\n")
            _ = sse.read(timeout: 1) { String(decoding: $0, as: UTF8.self).contains("retry") }
            Glibc.shutdown(sse.fd, Int32(SHUT_RDWR))
            let deadline = Date().addingTimeInterval(3)
            while entries.withLock({ $0.count }) < 6 && Date() < deadline { usleep(10_000) }
            let got = entries.withLock { $0 }
            #expect(got.map { "\($0.event.rawValue) \($0.method) \($0.path) \($0.status) \($0.transport)" } == [
                "request POST /ack 200 http", "request GET /missing 426 http",
                "upgrade GET /chat 101 websocket", "close GET /chat 1000 websocket",
                "upgrade GET /events 200 sse", "close GET /events 0 sse",
            ])
            #expect(got[0].bytesIn == UInt64(first.utf8.count) && got[0].bytesOut > 2)
            #expect(got[1].connection == got[0].connection, "the second request came on the kept connection")
            #expect(got[3].bytesIn > 0 && got[3].bytesOut >= 7, "a close counts the frames both ways after the upgrade")
            #expect(got.allSatisfy { $0.peer.hasPrefix("127.0.0.1:") })
            let now = AccessLogEntry.now()
            #expect(got.allSatisfy { $0.time <= now && now - $0.time < 10_000 })
        }

        @Test("to a file: one line per entry, appended; a file that cannot be opened fails start")
        func file() throws {
            let path = NSTemporaryDirectory() + "petrel-access-\(getpid())-\(UInt32.random(in: 0...UInt32.max)).log"
            try "earlier line\n".write(toFile: path, atomically: true, encoding: .utf8)
            let server = try startEchoServer { c, _ in c.accessLog = .file(path) }
            let raw = try RawSocket(port: server.port)
            raw.write("GET /x HTTP/1.1\r\nHost: x\r\n\r\n")
            _ = raw.read(timeout: 2)
            server.stop(grace: 100)
            let lines = try String(contentsOfFile: path, encoding: .utf8).split(separator: "\n")
            #expect(lines.count == 2 && lines[0] == "earlier line")
            let fields = lines[1].split(separator: " ")
            #expect(fields.count == 11 && fields[0].hasSuffix("Z") && fields[2] == "request" && fields[3] == "GET" && fields[4] == "/x")
            #expect(fields[5] == "426" && fields[6] == "http" && fields[7] == "in=\("GET /x HTTP/1.1\r\nHost: x\r\n\r\n".utf8.count)")
            var c = ServerConfiguration(host: "127.0.0.1", port: 0)
            c.accessLog = .file("/nonexistent-dir/access.log")
            #expect(throws: RuntimeError.self) { try Server(configuration: c, handlers: Handlers()).start() }
        }

        @Test("timestamps are ISO 8601 in UTC to the millisecond")
        func timestamp() {
            #expect(AccessLogEntry.timestamp(0) == "1970-01-01T00:00:00.000Z")
            #expect(AccessLogEntry.timestamp(1_795_000_000_007) == "2026-11-18T11:06:40.007Z")
        }
    }
}
