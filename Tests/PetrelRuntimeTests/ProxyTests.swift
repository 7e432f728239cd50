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
        let p = try ProxyURL("socks5://ada:pw@h")
        #expect(String(decoding: ProxyNegotiation.connectRequest(host: "::1", port: 443, proxy: try ProxyURL("http://h")), as: UTF8.self)
            == "CONNECT [::1]:443 HTTP/1.1\r\nHost: [::1]:443\r\n\r\n")
        #expect(ProxyNegotiation.socksGreeting(p) == [5, 2, 0, 2])
        #expect(ProxyNegotiation.socksGreeting(try ProxyURL("socks5://h")) == [5, 1, 0])
        #expect(ProxyNegotiation.socksAuth(p) == [1, 3] + Array("ada".utf8) + [2] + Array("pw".utf8))
        #expect(ProxyNegotiation.socksConnect(host: "example.com", port: 443) == [5, 1, 0, 3, 11] + Array("example.com".utf8) + [1, 0xBB])
        #expect(ProxyNegotiation.socksConnect(host: "127.0.0.1", port: 80) == [5, 1, 0, 1, 127, 0, 0, 1, 0, 80])
        #expect(ProxyNegotiation.socksConnect(host: "::1", port: 1).count == 4 + 16 + 2)
        #expect(ProxyNegotiation.socksReplyLength([5, 0, 0, 1, 1, 2, 3]) == nil)
        #expect(ProxyNegotiation.socksReplyLength([5, 0, 0, 1, 1, 2, 3, 4, 0, 80]) == 10)
        #expect(ProxyNegotiation.socksReplyLength([5, 0, 0, 3, 2, 65, 66, 0, 80]) == 9)
        #expect(ProxyNegotiation.socksReplyText(5) == "connection refused")
    }
}
