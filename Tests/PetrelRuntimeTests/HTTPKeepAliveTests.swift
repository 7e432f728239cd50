import Foundation
import Glibc
import PetrelCore
@testable import PetrelRuntime
import Testing

extension RuntimeTests {
    @Suite("HTTP/1.1 keep-alive for plain requests")
    struct HTTPKeepAliveTests {
        /// Responses read off one connection: each head, then its Content-Length of body.
        static func responses(_ raw: RawSocket, count: Int, timeout: Double = 5) -> (texts: [String], eof: Bool) {
            func split(_ bytes: [UInt8]) -> [String] {
                var out: [String] = []
                var rest = bytes[...]
                while let end = rest.firstRange(of: Array("\r\n\r\n".utf8)) {
                    let head = String(decoding: rest[..<end.upperBound], as: UTF8.self)
                    let length = head.split(separator: "\r\n").first { $0.lowercased().hasPrefix("content-length: ") }
                        .flatMap { Int($0.dropFirst(16)) } ?? 0
                    guard rest.count - (end.upperBound - rest.startIndex) >= length else { break }
                    out.append(head + String(decoding: rest[end.upperBound..<(end.upperBound + length)], as: UTF8.self))
                    rest = rest[(end.upperBound + length)...]
                }
                return out
            }
            let r = raw.read(timeout: timeout) { split($0).count >= count }
            return (split(r.bytes), r.eof)
        }

        static func server(_ tune: (inout ServerConfiguration) -> Void = { _ in }) throws -> Server {
            try startEchoServer { c, h in
                c.keepAliveTimeout = 500
                c.maxKeepAliveRequests = 3
                tune(&c)
                h.onHTTPRequest = { request, _ in
                    guard request.path == "/ack" else { return nil }
                    return .response(status: 200, contentType: "text/plain", body: Array("ok \(String(decoding: request.body, as: UTF8.self))".utf8))
                }
            }
        }

        @Test("requests one after another on one connection, pipelined ones too; the last allowed says close")
        func sequentialAndPipelined() throws {
            let server = try Self.server()
            defer { server.stop(grace: 100) }
            let raw = try RawSocket(port: server.port)
            raw.write("POST /ack HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\n\r\na")
            let first = Self.responses(raw, count: 1)
            #expect(first.texts.count == 1 && first.texts[0].hasSuffix("ok a") && !first.eof)
            #expect(!first.texts[0].contains("Connection: close"))
            // Two more in one write: the second of them is the third request, the last one allowed.
            raw.write("POST /ack HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\n\r\nbPOST /ack HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\n\r\nc")
            let rest = Self.responses(raw, count: 2)
            #expect(rest.texts.map { $0.hasSuffix("ok b") || $0.hasSuffix("ok c") } == [true, true])
            #expect(rest.texts.last?.contains("Connection: close\r\n") == true)
            #expect(rest.eof || raw.read(timeout: 2).eof)
        }

        @Test("an idle kept connection closes quietly after keepAliveTimeout; a half request gets 408")
        func idle() throws {
            let server = try Self.server { $0.options.handshakeTimeout = 1_500 }
            defer { server.stop(grace: 100) }
            let raw = try RawSocket(port: server.port)
            raw.write("GET /ack HTTP/1.1\r\nHost: x\r\n\r\n")
            let start = Date()
            let r = Self.responses(raw, count: 2, timeout: 3)
            #expect(r.texts.count == 1 && r.eof)
            #expect(Date().timeIntervalSince(start) >= 0.4)
            #expect(r.texts.first.map { !$0.contains("Connection: close") } == true, "closed by the wait, not by the response")
            // A request begun after a response has the handshake's time (1.5 s here), then 408.
            let slow = try RawSocket(port: server.port)
            let begun = Date()
            slow.write("GET /ack HTTP/1.1\r\nHost: x\r\n\r\nGET /ack HTTP/1.1\r\n")
            let s = slow.read(timeout: 4)
            let text = String(decoding: s.bytes, as: UTF8.self)
            #expect(s.eof && text.components(separatedBy: "HTTP/1.1 200").count == 2 && text.contains("HTTP/1.1 408"))
            #expect(Date().timeIntervalSince(begun) >= 1.3)
        }

        @Test("Connection: close, HTTP/1.0, an error status and keepAliveTimeout 0 each close after the response")
        func closes() throws {
            let server = try Self.server()
            defer { server.stop(grace: 100) }
            for request in ["GET /ack HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", "GET /ack HTTP/1.0\r\n\r\n",
                            "GET /nothing HTTP/1.1\r\nHost: x\r\n\r\n"] {
                let raw = try RawSocket(port: server.port)
                raw.write(request)
                let r = raw.read(timeout: 2)
                let text = String(decoding: r.bytes, as: UTF8.self)
                #expect(r.eof && text.contains("Connection: close\r\n"), "\(request): \(text.prefix(60))")
            }
            let off = try Self.server { $0.keepAliveTimeout = 0 }
            defer { off.stop(grace: 100) }
            let raw = try RawSocket(port: off.port)
            raw.write("GET /ack HTTP/1.1\r\nHost: x\r\n\r\n")
            let r = raw.read(timeout: 2)
            #expect(r.eof && String(decoding: r.bytes, as: UTF8.self).contains("Connection: close\r\n"))
        }

        @Test("many pipelined requests in one write: answered in order, one batch of responses at a time")
        func manyPipelined() throws {
            let server = try startEchoServer { c, h in
                c.maxKeepAliveRequests = 10_000
                h.onHTTPRequest = { r, _ in
                    .response(status: 200, contentType: "text/plain", body: Array((r.queryParameter("n")! + String(repeating: ".", count: 1000)).utf8))
                }
            }
            defer { server.stop(grace: 100) }
            let raw = try RawSocket(port: server.port)
            let count = 300  // 300 KB of responses: past the 64 KiB a connection answers before it waits
            raw.write((0..<count).map { "GET /r?n=\($0) HTTP/1.1\r\nHost: x\r\n\r\n" }.joined())
            usleep(200_000)
            let r = Self.responses(raw, count: count, timeout: 10)
            #expect(r.texts.count == count)
            #expect(r.texts.enumerated().allSatisfy { i, t in t.hasPrefix("HTTP/1.1 200") && t.contains("\r\n\r\n\(i)...") })
        }

        @Test("HEAD to a route: the head only, and the connection stays usable")
        func headToRoute() throws {
            let server = try Self.server()
            defer { server.stop(grace: 100) }
            let raw = try RawSocket(port: server.port)
            raw.write("HEAD /ack HTTP/1.1\r\nHost: x\r\n\r\nPOST /ack HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\n\r\nz")
            let text = String(decoding: raw.read(timeout: 2) { String(decoding: $0, as: UTF8.self).hasSuffix("ok z") }.bytes, as: UTF8.self)
            let parts = text.components(separatedBy: "HTTP/1.1 200 OK")
            #expect(parts.count == 3 && parts[1].hasSuffix("Content-Length: 3\r\n\r\n") && parts[2].hasSuffix("\r\n\r\nok z"))
        }

        @Test("a kept connection can still upgrade to a WebSocket on its next request")
        func upgradeAfterPlain() throws {
            let server = try Self.server()
            defer { server.stop(grace: 100) }
            let raw = try RawSocket(port: server.port)
            raw.write("GET /ack HTTP/1.1\r\nHost: x\r\n\r\n")
            #expect(Self.responses(raw, count: 1).texts.count == 1)
            raw.write("GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
            let r = raw.read(timeout: 2) { String(decoding: $0, as: UTF8.self).contains("\r\n\r\n") }
            #expect(String(decoding: r.bytes, as: UTF8.self).hasPrefix("HTTP/1.1 101"))
        }
    }
}
