import PetrelCore
@testable import PetrelRuntime
import Testing

@Suite("Proxy URLs, the environment, and the proxy protocols' messages")
struct ProxyTests {
    @Test("proxy URLs: schemes, default ports, credentials, IPv6, and what is refused")
    func urls() throws {
        let p = try ProxyURL("http://ada:s%40cret@proxy.example:3128")
        #expect(p.kind == .http && p.host == "proxy.example" && p.port == 3128 && p.username == "ada" && p.password == "s@cret")
        #expect(p.basicAuthorization == "Basic YWRhOnNAY3JldA==")
        #expect(try ProxyURL("https://[::1]").port == 443)
        #expect(try ProxyURL("https://[::1]:8443/").host == "::1")
        #expect(try ProxyURL("socks5h://h").port == 1080)
        #expect(try ProxyURL("SOCKS5://h:9").kind == .socks5)
        for bad in ["ftp://h:1", "http://", "http://h:99999", "http://h:1/path", "h:1", "http://[::1", "http://:80"] {
            #expect(throws: RuntimeError.self, "\(bad)") { try ProxyURL(bad) }
        }
    }

    @Test("the environment: per-scheme variables and NO_PROXY")
    func environment() throws {
        let wss = try WebSocketURL("wss://api.example.com/x"), ws = try WebSocketURL("ws://10.0.0.1:8080/")
        let env = ["HTTPS_PROXY": "http://secure-proxy:1", "http_proxy": "socks5://plain-proxy:2"]
        #expect(try ProxyURL.fromEnvironment(for: wss, environment: env)?.host == "secure-proxy")
        #expect(try ProxyURL.fromEnvironment(for: ws, environment: env)?.host == "plain-proxy")
        #expect(try ProxyURL.fromEnvironment(for: wss, environment: env.merging(["wss_proxy": "http://ws-first:3"]) { a, _ in a })?.host == "ws-first")
        #expect(try ProxyURL.fromEnvironment(for: wss, environment: env.merging(["NO_PROXY": "other.org, .example.com"]) { a, _ in a }) == nil)
        #expect(try ProxyURL.fromEnvironment(for: ws, environment: env.merging(["no_proxy": "10.0.0.1"]) { a, _ in a }) == nil)
        #expect(try ProxyURL.fromEnvironment(for: ws, environment: env.merging(["NO_PROXY": "*"]) { a, _ in a }) == nil)
        #expect(try ProxyURL.fromEnvironment(for: wss, environment: env.merging(["NO_PROXY": "ample.com"]) { a, _ in a }) != nil)
        #expect(try ProxyURL.fromEnvironment(for: wss, environment: [:]) == nil)
    }

    @Test("CONNECT and SOCKS5 messages, byte for byte")
    func messages() throws {
        func tunnel(_ kind: ProxyHandshake.Kind, _ host: String, _ port: UInt16, _ user: String? = nil, _ pass: String? = nil) throws -> ProxyHandshake {
            try ProxyHandshake(kind: kind, targetHost: host, targetPort: port, username: user, password: pass)
        }
        /// What the handshake sends after the proxy's `reply`, and whether it finished.
        func after(_ t: inout ProxyHandshake, _ reply: [UInt8]) -> ProxyHandshake.Step { reply.withUnsafeBytes { t.feed($0) } }
        #expect(String(decoding: try tunnel(.httpConnect, "::1", 443).firstBytes, as: UTF8.self)
            == "CONNECT [::1]:443 HTTP/1.1\r\nHost: [::1]:443\r\n\r\n")
        var withCredentials = try tunnel(.socks5, "example.com", 443, "ada", "pw")
        #expect(withCredentials.firstBytes == [5, 2, 0, 2])
        #expect(try tunnel(.socks5, "example.com", 443).firstBytes == [5, 1, 0])
        #expect(after(&withCredentials, [5, 2]) == .needMore(send: [1, 3] + Array("ada".utf8) + [2] + Array("pw".utf8)))
        #expect(after(&withCredentials, [1, 0]) == .needMore(send: [5, 1, 0, 3, 11] + Array("example.com".utf8) + [1, 0xBB]))
        var byAddress = try tunnel(.socks5, "127.0.0.1", 80)
        #expect(after(&byAddress, [5, 0]) == .needMore(send: [5, 1, 0, 1, 127, 0, 0, 1, 0, 80]))
        var v6 = try tunnel(.socks5, "::1", 1)
        guard case .needMore(let connect) = after(&v6, [5, 0]) else { throw RuntimeError(.proxy, "no connect request") }
        #expect(connect.count == 4 + 16 + 2)
        // The connect reply's length depends on its address type: incomplete, IPv4, a name.
        #expect(after(&byAddress, [5, 0, 0, 1, 1, 2, 3]) == .needMore(send: []))
        #expect(after(&byAddress, [4, 0, 80]) == .established(consumed: 3))
        var named = try tunnel(.socks5, "127.0.0.1", 80)
        _ = after(&named, [5, 0])
        #expect(after(&named, [5, 0, 0, 3, 2, 65, 66, 0, 80]) == .established(consumed: 9))
        #expect(ProxyHandshake.socksReplyText(5) == "connection refused")
    }
}
