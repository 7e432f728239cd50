import Foundation
import Glibc
import PetrelCore
@testable import PetrelRuntime
import Testing

extension RuntimeTests {
    @Suite("The real client address: PROXY protocol headers and trusted proxies' Forwarded / X-Forwarded-For")
    struct RealClientTests {
        /// A server whose /who answers the client address its route sees; the accept hook's and
        /// the open connection's go to `seen`.
        final class Seen: Sendable {
            let lock = Lock<[String]>([])
            func add(_ s: String) { self.lock.withLock { $0.append(s) } }
            var all: [String] { self.lock.withLock { $0 } }
        }

        static func server(_ tune: @escaping (inout ServerConfiguration) -> Void, seen: Seen) throws -> Server {
            try startEchoServer { c, h in
                tune(&c)
                h.onHTTPRequest = { r, _ in .response(status: 200, contentType: "text/plain", body: Array(r.clientAddress.utf8)) }
                h.onUpgrade = { u in
                    seen.add("hook \(u.clientAddress)")
                    return .accept()
                }
                h.onOpen = { conn in seen.add("open \(conn.clientAddress)") }
            }
        }

        func who(_ port: UInt16, _ bytes: [UInt8]) -> (String, eof: Bool) {
            guard let raw = try? RawSocket(port: port) else { return ("", false) }
            raw.write(bytes)
            let r = raw.read(timeout: 2)
            let text = String(decoding: r.bytes, as: UTF8.self)
            return (text.components(separatedBy: "\r\n\r\n").last ?? "", r.eof)
        }

        @Test("PROXY v1 and v2 before the request name the client, in any split; without one the connection is closed")
        func proxyProtocol() throws {
            let seen = Seen()
            let server = try Self.server({ $0.proxyProtocol = true }, seen: seen)
            defer { server.stop(grace: 100) }
            let request = Array("GET /who HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".utf8)
            let v1 = Array("PROXY TCP4 203.0.113.7 192.0.2.1 56324 443\r\n".utf8)
            #expect(who(server.port, v1 + request).0 == "203.0.113.7:56324")
            // Split: the header in two writes, then the request.
            let raw = try RawSocket(port: server.port)
            raw.write(Array(v1[..<10]))
            usleep(30_000)
            raw.write(Array(v1[10...]) + Array(request[..<5]))
            usleep(30_000)
            raw.write(Array(request[5...]))
            #expect(String(decoding: raw.read(timeout: 2).bytes, as: UTF8.self).hasSuffix("203.0.113.7:56324"))
            let sig: [UInt8] = [0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A]
            let src: [UInt8] = [0x20, 0x01, 0x0D, 0xB8] + [UInt8](repeating: 0, count: 11) + [7]
            let v2 = sig + [0x21, 0x21, 0x00, 0x24] + src + [UInt8](repeating: 0, count: 16) + [0x12, 0x67, 0x01, 0xBB]
            #expect(who(server.port, v2 + request).0 == "[2001:db8::7]:4711")
            let local = sig + [0x20, 0x00, 0x00, 0x00]
            #expect(who(server.port, local + request).0.hasPrefix("127.0.0.1:"), "LOCAL: the peer is the client")
            let none = who(server.port, request)
            #expect(none.eof && none.0.isEmpty, "no header: closed without an answer")
            #expect(throws: RuntimeError.self, "a WebSocket client without the header is closed") {
                _ = try TestClient.connect("ws://127.0.0.1:\(server.port)/", timeout: 2)
            }
        }

        @Test("a trusted proxy's X-Forwarded-For and Forwarded are believed, from the right; an untrusted peer's are not")
        func trusted() throws {
            let seen = Seen()
            let server = try Self.server({ $0.trustedProxies = ["127.0.0.1", "10.0.0.0/8"] }, seen: seen)
            defer { server.stop(grace: 100) }
            func get(_ headers: String) -> String {
                who(server.port, Array("GET /who HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\(headers)\r\n".utf8)).0
            }
            #expect(get("X-Forwarded-For: 198.51.100.9, 10.1.2.3\r\n") == "198.51.100.9")
            #expect(get("X-Forwarded-For: 203.0.113.1, 198.51.100.9, 10.1.2.3\r\n") == "198.51.100.9", "the first untrusted from the right")
            #expect(get("Forwarded: for=198.51.100.66\r\nX-Forwarded-For: 198.51.100.9\r\n") == "198.51.100.9",
                    "a Forwarded the client sent is not read when the proxies write X-Forwarded-For")
            #expect(get("X-Forwarded-For: 10.9.9.9\r\n") == "10.9.9.9", "all trusted: the leftmost")
            #expect(get("X-Forwarded-For: unknown, 10.9.9.9\r\n") == "10.9.9.9", "a hidden hop: the proxy that reported it")
            #expect(get("").hasPrefix("127.0.0.1:"))
            // Upgrades: the accept hook and the connection see it too.
            var config = ClientConfiguration()
            config.headers = [HTTPField(name: "X-Forwarded-For", value: "198.51.100.20")]
            let ws = try TestClient.connect("ws://127.0.0.1:\(server.port)/", configuration: config)
            ws.send("x")
            _ = ws.receive()
            #expect(seen.all == ["hook 198.51.100.20", "open 198.51.100.20"])
            let untrusted = try Self.server({ $0.trustedProxies = ["10.0.0.1"] }, seen: seen)
            defer { untrusted.stop(grace: 100) }
            #expect(who(untrusted.port, Array("GET /who HTTP/1.1\r\nHost: x\r\nConnection: close\r\nX-Forwarded-For: 1.2.3.4\r\n\r\n".utf8)).0
                .hasPrefix("127.0.0.1:"))
        }

        @Test("with forwardedHeader = .forwarded, only Forwarded is read (RFC 7239), hidden hops stop the walk")
        func forwarded() throws {
            let seen = Seen()
            let server = try Self.server({
                $0.trustedProxies = ["127.0.0.1"]
                $0.forwardedHeader = .forwarded
            }, seen: seen)
            defer { server.stop(grace: 100) }
            func get(_ headers: String) -> String {
                who(server.port, Array("GET /who HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\(headers)\r\n".utf8)).0
            }
            #expect(get("Forwarded: for=\"[2001:db8::17]:4711\"\r\nX-Forwarded-For: 198.51.100.9\r\n") == "[2001:db8::17]:4711")
            #expect(get("Forwarded: for=unknown\r\n").hasPrefix("127.0.0.1:"))
            #expect(get("X-Forwarded-For: 198.51.100.9\r\n").hasPrefix("127.0.0.1:"))
        }

        @Test("a trusted-proxy entry that is not an address or block fails start")
        func badEntry() {
            var c = ServerConfiguration(host: "127.0.0.1", port: 0)
            c.trustedProxies = ["10.0.0.0/33"]
            #expect(throws: RuntimeError.self) { try Server(configuration: c, handlers: Handlers()).start() }
            #expect(TrustedProxies.bytes("::ffff:10.1.2.3") == [10, 1, 2, 3])
            #expect((try? TrustedProxies(["2001:db8::/32"]))?.contains("2001:db8:1::5") == true)
            #expect((try? TrustedProxies(["2001:db8::/32"]))?.contains("2001:db9::5") == false)
        }
    }
}
