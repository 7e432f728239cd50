import Glibc
import PetrelCore

/// A proxy for client connections: `http://[user:pass@]host[:port]` (HTTP CONNECT),
/// `https://…` (TLS to the proxy, then CONNECT inside it), or `socks5://[user:pass@]host[:port]`
/// (RFC 1928, with RFC 1929 username/password; the proxy resolves the target's name).
public struct ProxyURL: Sendable, Hashable, CustomStringConvertible {
    public enum Kind: String, Sendable, Hashable { case http, https, socks5 }

    public var kind: Kind
    public var host: String
    public var port: UInt16
    public var username: String?
    public var password: String?

    public init(_ string: String) throws(RuntimeError) {
        func bad(_ why: String) -> RuntimeError { RuntimeError(.invalidURL, "bad proxy URL \(string): \(why)") }
        guard let colon = string.firstIndex(of: ":"), string[colon...].hasPrefix("://") else { throw bad("expected scheme://host:port") }
        let scheme = string[..<colon].lowercased()
        let afterScheme = string.index(colon, offsetBy: 3)
        switch scheme {
        case "http": self.kind = .http
        case "https": self.kind = .https
        case "socks5", "socks5h": self.kind = .socks5
        default: throw bad("the scheme must be http, https or socks5")
        }
        var rest = Substring(string[afterScheme...])
        if let slash = rest.firstIndex(of: "/") {
            guard rest[slash...].allSatisfy({ $0 == "/" }) else { throw bad("a proxy URL has no path") }
            rest = rest[..<slash]
        }
        if let at = rest.lastIndex(of: "@") {
            let userinfo = rest[..<at]
            rest = rest[rest.index(after: at)...]
            let colon = userinfo.firstIndex(of: ":") ?? userinfo.endIndex
            guard let user = URLEncoding.decode(userinfo[..<colon].utf8) else { throw bad("bad user name encoding") }
            self.username = user
            if colon != userinfo.endIndex {
                guard let pass = URLEncoding.decode(userinfo[userinfo.index(after: colon)...].utf8) else { throw bad("bad password encoding") }
                self.password = pass
            } else {
                self.password = ""
            }
        }
        var host = rest
        var port: UInt16
        switch self.kind {
        case .http: port = 80
        case .https: port = 443
        case .socks5: port = 1080
        }
        if host.hasPrefix("[") {
            guard let close = host.firstIndex(of: "]") else { throw bad("unclosed [") }
            let after = host[host.index(after: close)...]
            if after.hasPrefix(":") {
                guard let p = UInt16(after.dropFirst()) else { throw bad("bad port") }
                port = p
            } else if !after.isEmpty {
                throw bad("junk after ]")
            }
            host = host[host.index(after: host.startIndex)..<close]
        } else if let colon = host.lastIndex(of: ":") {
            guard let p = UInt16(host[host.index(after: colon)...]) else { throw bad("bad port") }
            port = p
            host = host[..<colon]
        }
        guard !host.isEmpty else { throw bad("no host") }
        self.host = String(host)
        self.port = port
        if self.kind == .socks5, let u = self.username, u.utf8.count > 255 || (self.password ?? "").utf8.count > 255 {
            throw bad("SOCKS5 user names and passwords are at most 255 bytes")
        }
    }

    public var description: String { "\(self.kind.rawValue)://\(self.host.contains(":") ? "[\(self.host)]" : self.host):\(self.port)" }

    /// The proxy the usual environment variables name for `target`, honouring NO_PROXY:
    /// `wss_proxy`, then `https_proxy`/`HTTPS_PROXY` for wss://; `ws_proxy`, then
    /// `http_proxy`/`HTTP_PROXY` for ws://.
    public static func fromEnvironment(for target: WebSocketURL, environment: [String: String]? = nil) throws(RuntimeError) -> ProxyURL? {
        func get(_ name: String) -> String? {
            let v = environment.map { $0[name] } ?? getenv(name).map { String(cString: $0) }
            return v.flatMap { $0.isEmpty ? nil : $0 }
        }
        let names = target.secure ? ["wss_proxy", "WSS_PROXY", "https_proxy", "HTTPS_PROXY"] : ["ws_proxy", "WS_PROXY", "http_proxy", "HTTP_PROXY"]
        guard let value = names.lazy.compactMap(get).first else { return nil }
        if let noProxy = get("no_proxy") ?? get("NO_PROXY"), Self.bypasses(noProxy, host: target.host) { return nil }
        return try ProxyURL(value)
    }

    /// NO_PROXY: comma-separated names; `*` matches all; `example.com` and `.example.com` match
    /// the name and its subdomains; an address matches itself.
    static func bypasses(_ noProxy: String, host: String) -> Bool {
        let h = host.lowercased()
        for raw in noProxy.split(separator: ",") {
            var entry = raw.trimmingCharacters().lowercased()
            if entry == "*" { return true }
            if let colon = entry.lastIndex(of: ":"), !entry.contains("]"), entry.filter({ $0 == ":" }).count == 1 { entry = String(entry[..<colon]) }
            while entry.hasPrefix(".") { entry.removeFirst() }
            if entry.isEmpty { continue }
            if h == entry || h.hasSuffix("." + entry) { return true }
        }
        return false
    }

    /// `Proxy-Authorization: Basic …` value, when there are credentials.
    var basicAuthorization: String? {
        self.username.map { ProxyHandshake.basicAuthorization(username: $0, password: self.password) }
    }
}

extension Substring {
    fileprivate func trimmingCharacters() -> String {
        var s = self
        while s.first == " " || s.first == "\t" { s = s.dropFirst() }
        while s.last == " " || s.last == "\t" { s = s.dropLast() }
        return String(s)
    }
}
