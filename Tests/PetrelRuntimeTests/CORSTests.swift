import Foundation
import Glibc
import PetrelCore
@testable import PetrelRuntime
import Testing

extension RuntimeTests {
    @Suite("CORS for plain requests and event streams; SSE retry and padding; /petrel.js")
    struct CORSTests {
        func exchange(_ port: UInt16, _ request: String, until: String = "\r\n\r\n") -> String {
            guard let raw = try? RawSocket(port: port) else { return "" }
            raw.write(request)
            return String(decoding: raw.read(timeout: 2) { String(decoding: $0, as: UTF8.self).contains(until) }.bytes, as: UTF8.self)
        }

        func server(_ cors: CORSConfiguration?, root: String? = nil) throws -> Server {
            try startEchoServer { c, h in
                c.cors = cors
                c.staticRoot = root
                c.eventStreamPaths = ["/events"]
                c.eventStreamRetry = 1500
                c.eventStreamPadding = 2048
                h.onHTTPRequest = { request, _ in
                    request.path == "/ack" ? .response(status: 200, contentType: "text/plain", body: Array("ok".utf8)) : nil
                }
            }
        }

        @Test("an allowed origin gets Allow-Origin (and Credentials), a preflight 204; another origin 403; the server's own none")
        func origins() throws {
            var cors = CORSConfiguration(allowedOrigins: ["http://app.example"], allowCredentials: true)
            cors.maxAge = 60
            let server = try server(cors)
            defer { server.stop(grace: 100) }
            let p = server.port
            let allowed = exchange(p, "POST /ack HTTP/1.1\r\nHost: h:1\r\nOrigin: http://app.example\r\nContent-Length: 0\r\n\r\n", until: "ok")
            #expect(allowed.hasPrefix("HTTP/1.1 200") && allowed.contains("Access-Control-Allow-Origin: http://app.example\r\n"))
            #expect(allowed.contains("Access-Control-Allow-Credentials: true\r\n") && allowed.contains("Vary: Origin\r\n"))
            let preflight = exchange(p, "OPTIONS /ack HTTP/1.1\r\nHost: h:1\r\nOrigin: http://app.example\r\nAccess-Control-Request-Method: POST\r\n\r\n")
            #expect(preflight.hasPrefix("HTTP/1.1 204") && preflight.contains("Access-Control-Allow-Methods: GET, HEAD, POST, OPTIONS\r\n"))
            #expect(preflight.contains("Access-Control-Max-Age: 60\r\n") && preflight.contains("Access-Control-Allow-Origin: http://app.example\r\n"))
            let refused = exchange(p, "POST /ack HTTP/1.1\r\nHost: h:1\r\nOrigin: http://evil.example\r\nContent-Length: 0\r\n\r\n")
            #expect(refused.hasPrefix("HTTP/1.1 403") && !refused.contains("Access-Control"))
            let refusedStream = exchange(p, "GET /events HTTP/1.1\r\nHost: h:1\r\nOrigin: http://evil.example\r\n\r\n")
            #expect(refusedStream.hasPrefix("HTTP/1.1 403"))
            let own = exchange(p, "POST /ack HTTP/1.1\r\nHost: h:1\r\nOrigin: http://h:1\r\nContent-Length: 0\r\n\r\n", until: "ok")
            #expect(own.hasPrefix("HTTP/1.1 200") && !own.contains("Access-Control"))
            // An allowed page's event stream: the fields, then retry and padding before the first event.
            let stream = exchange(p, "GET /events HTTP/1.1\r\nHost: h:1\r\nOrigin: http://app.example\r\n\r\n", until: "\n\n:")
            #expect(stream.contains("Content-Type: text/event-stream") && stream.contains("Access-Control-Allow-Origin: http://app.example\r\n"))
            #expect(stream.contains("\r\n\r\nretry: 1500\n\n:"))
        }

        @Test("without a CORS configuration nothing changes: no fields, no 403; the stream has retry and padding")
        func off() throws {
            let server = try server(nil)
            defer { server.stop(grace: 100) }
            let r = exchange(server.port, "POST /ack HTTP/1.1\r\nHost: h\r\nOrigin: http://other\r\nContent-Length: 0\r\n\r\n", until: "ok")
            #expect(r.hasPrefix("HTTP/1.1 200") && !r.contains("Access-Control"))
            let stream = exchange(server.port, "GET /events HTTP/1.1\r\nHost: h\r\n\r\n", until: "\n\n")
            let padded = exchange(server.port, "GET /events HTTP/1.1\r\nHost: h\r\n\r\n", until: String(repeating: " ", count: 2048) + "\n\n")
            #expect(stream.contains("retry: 1500\n\n") && padded.contains(":" + String(repeating: " ", count: 2048) + "\n\n"))
        }

        @Test("a * origin list allows any origin, without credentials")
        func any() throws {
            let server = try server(CORSConfiguration(allowedOrigins: ["*"], allowCredentials: true))
            defer { server.stop(grace: 100) }
            let r = exchange(server.port, "POST /ack HTTP/1.1\r\nHost: h\r\nOrigin: http://whoever\r\nContent-Length: 0\r\n\r\n", until: "ok")
            #expect(r.contains("Access-Control-Allow-Origin: *\r\n") && !r.contains("Credentials"))
        }

        @Test("the served /petrel.js is js/petrel.js, with an ETag and 304; a file of the root's own wins")
        func petrelJS() throws {
            let repo = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
            let source = try String(contentsOf: repo.appendingPathComponent("js/petrel.js"), encoding: .utf8)
            let root = NSTemporaryDirectory() + "petrel-js-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
            try FileManager.default.createDirectory(atPath: root, withIntermediateDirectories: true)
            let server = try server(nil, root: root)
            defer { server.stop(grace: 100) }
            let r = exchange(server.port, "GET /petrel.js HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n", until: "\u{0}never")
            #expect(r.hasPrefix("HTTP/1.1 200") && r.contains("Content-Type: text/javascript; charset=utf-8\r\n"))
            #expect(r.components(separatedBy: "\r\n\r\n").dropFirst().joined(separator: "\r\n\r\n") == source, "run tools/embed-petrel-js.sh")
            let etag = r.split(separator: "\r\n").first { $0.hasPrefix("ETag: ") }!.dropFirst(6)
            #expect(exchange(server.port, "GET /petrel.js HTTP/1.1\r\nHost: h\r\nIf-None-Match: \(etag)\r\n\r\n").hasPrefix("HTTP/1.1 304"))
            try "// mine".write(toFile: root + "/petrel.js", atomically: true, encoding: .utf8)
            #expect(exchange(server.port, "GET /petrel.js HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n", until: "mine").hasSuffix("// mine"))
        }
    }
}
