import CPetrelABI
import Foundation
import Glibc
import PetrelC
import PetrelCore
@testable import PetrelRuntime
import Testing

extension RuntimeTests {
    /// The opening handshake exists once (PetrelCore's ServerHandshake): the runtime's server and
    /// the C session API, each with its defaults, answer the same request with the same bytes.
    @Suite("Handshake parity: the runtime and the C session answer alike")
    struct HandshakeParityTests {
        static let key = "dGhlIHNhbXBsZSBub25jZQ=="

        static func request(_ lines: [String], method: String = "GET", version: String = "HTTP/1.1") -> String {
            "\(method) /chat HTTP/\(version.dropFirst(5))\r\n" + lines.map { $0 + "\r\n" }.joined() + "\r\n"
        }

        static let upgrade = ["Host: localhost", "Upgrade: websocket", "Connection: Upgrade", "Sec-WebSocket-Key: \(key)", "Sec-WebSocket-Version: 13"]

        /// Requests that cover every decision: accepted plain and compressed, subprotocols, and
        /// each refusal (a bad key, version, method, HTTP version, too many or too large headers,
        /// no upgrade at all, the origin check).
        static let requests: [(String, String)] = [
            ("plain upgrade", request(upgrade)),
            ("permessage-deflate offered", request(upgrade + ["Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits"])),
            ("deflate with context takeover refused by the client", request(upgrade + ["Sec-WebSocket-Extensions: permessage-deflate; client_no_context_takeover; server_max_window_bits=10"])),
            ("subprotocols offered", request(upgrade + ["Sec-WebSocket-Protocol: chat, superchat"])),
            ("bad key", request(upgrade.map { $0.hasPrefix("Sec-WebSocket-Key") ? "Sec-WebSocket-Key: short" : $0 })),
            ("version 8", request(upgrade.map { $0.hasPrefix("Sec-WebSocket-Version") ? "Sec-WebSocket-Version: 8" : $0 })),
            ("POST upgrade", request(upgrade, method: "POST")),
            ("HTTP/1.0", request(upgrade, version: "HTTP/1.0")),
            ("too many header fields", request(upgrade + (0..<100).map { "X-Filler-\($0): x" })),
            ("header over 16 KiB", request(upgrade + ["X-Big: " + String(repeating: "a", count: 17 * 1024)])),
            ("no upgrade", request(["Host: localhost"])),
            ("malformed header line", request(upgrade + ["no colon here"])),
            ("origin allowed", request(upgrade + ["Origin: https://a.example"])),
            ("origin refused", request(upgrade + ["Origin: https://evil.example"])),
        ]

        /// What the runtime's server writes back, up to the end of its head (101) or until it closes.
        static func runtimeAnswer(port: UInt16, _ request: String) throws -> [UInt8] {
            let socket = try RawSocket(port: port)
            socket.write(request)
            let (bytes, _) = socket.read(timeout: 5) { b in
                // A 101 stays open: stop at its blank line.
                b.starts(with: Array("HTTP/1.1 101".utf8)) && b.count >= 4 && b.suffix(4) == [13, 10, 13, 10]
            }
            return bytes
        }

        /// What a C session with the same settings writes back.
        static func sessionAnswer(_ request: String, origins: String?) -> [UInt8] {
            var config = petrel_session_config()
            petrel_session_config_init(&config)
            var session: OpaquePointer? = nil
            let created: Int32 = origins.map { o in
                o.withCString { p in
                    config.allowed_origins = p
                    return petrel_session_create(&config, &session)
                }
            } ?? petrel_session_create(&config, &session)
            #expect(created == 0)
            defer { petrel_session_destroy(session) }
            let bytes = Array(request.utf8)
            #expect(bytes.withUnsafeBytes { petrel_session_feed(session, $0.baseAddress, $0.count) } == 0)
            var out = [UInt8](repeating: 0, count: 64 * 1024)
            var n = 0
            _ = out.withUnsafeMutableBytes { petrel_session_take_output(session, $0.baseAddress, $0.count, &n) }
            return Array(out[0..<n])
        }

        @Test("every request gets the same answer from both, byte for byte", arguments: [false, true])
        func parity(restrictOrigins: Bool) throws {
            let server = try startEchoServer { c, _ in
                if restrictOrigins { c.allowedOrigins = ["https://a.example"] }
            }
            defer { server.stop() }
            for (name, request) in Self.requests {
                if !restrictOrigins && name.hasPrefix("origin") { continue }
                let fromRuntime = try Self.runtimeAnswer(port: server.port, request)
                let fromSession = Self.sessionAnswer(request, origins: restrictOrigins ? "https://a.example" : nil)
                #expect(!fromRuntime.isEmpty, "\(name): no answer from the runtime")
                #expect(
                    fromRuntime == fromSession,
                    "\(name):\nruntime: \(String(decoding: fromRuntime, as: UTF8.self))\nsession: \(String(decoding: fromSession, as: UTF8.self))")
            }
        }
    }
}
