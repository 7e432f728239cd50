import Glibc

/// The client side of a proxy tunnel, sans-I/O: HTTP CONNECT (RFC 9110 §9.3.6) or SOCKS5 (RFC 1928,
/// with RFC 1929 username/password). Write `firstBytes`, then feed what the proxy sends; each step
/// says what to write next, when the tunnel is up, or why it failed.
///
/// Memory is bounded whatever the proxy sends: the CONNECT response head by `maxHeaderBytes` (the
/// reader holds at most one byte more), a SOCKS5 reply by its format (at most 262 bytes).
public struct ProxyHandshake: Sendable {
    public enum Kind: Sendable, Hashable {
        case httpConnect, socks5
    }

    public enum Step: Equatable, Sendable {
        /// All input was taken. Write `send` (possibly empty), then feed the proxy's next bytes.
        case needMore(send: [UInt8])
        /// The tunnel is up: `consumed` bytes of the last input were the proxy's; the rest, if any,
        /// already belong to the connection through the tunnel.
        case established(consumed: Int)
        /// The proxy refused or broke its protocol; close the connection.
        case failed(ProxyHandshakeError)
    }

    /// The longest SOCKS5 reply: VER REP RSV ATYP, a name of 255 bytes with its length, the port.
    public static let maxSOCKSReplyBytes = 4 + 1 + 255 + 2

    public let kind: Kind
    /// The CONNECT request or the SOCKS5 greeting: write it once the connection to the proxy is up.
    public let firstBytes: [UInt8]
    public let maxHeaderBytes: Int
    public let maxHeaderCount: Int

    private enum Phase: Sendable {
        case connectResponse(HTTPHeadReader)
        case socksMethod, socksAuthentication, socksReply
        case established
        case failed(ProxyHandshakeError)
    }

    private var phase: Phase
    /// The SOCKS5 reply collected so far (at most `maxSOCKSReplyBytes`).
    private var reply: [UInt8] = []
    private let hasCredentials: Bool
    private let socksAuthentication: [UInt8]
    private let socksConnect: [UInt8]

    /// - Parameters:
    ///   - targetHost: the server to reach through the proxy: a name, or a numeric IPv4 or IPv6
    ///     address (SOCKS5 sends those as addresses, ATYP 1 and 4, and names as ATYP 3 for the proxy
    ///     to resolve).
    ///   - username: with it, CONNECT carries `Proxy-Authorization: Basic …` and SOCKS5 offers
    ///     username/password; a nil `password` is sent as empty.
    ///   - maxHeaderBytes, maxHeaderCount: limits on the CONNECT response head.
    /// - Throws: `ProxyHandshakeError.invalidTarget` when the request cannot be written: a host with
    ///   a space or control character, or for SOCKS5 a host name, user name or password over 255 bytes.
    public init(
        kind: Kind, targetHost: String, targetPort: UInt16, username: String?, password: String?,
        maxHeaderBytes: Int = 16 * 1024, maxHeaderCount: Int = 100
    ) throws(ProxyHandshakeError) {
        // Nothing from the host may end the request line or the SOCKS5 name early.
        guard !targetHost.utf8.contains(where: { $0 <= 0x20 || $0 == 0x7F }) else {
            throw .invalidTarget("the target host has a space or control character")
        }
        self.kind = kind
        self.maxHeaderBytes = maxHeaderBytes
        self.maxHeaderCount = maxHeaderCount
        self.hasCredentials = username != nil
        switch kind {
        case .httpConnect:
            let authorization = username.map { Self.basicAuthorization(username: $0, password: password) }
            self.firstBytes = Self.connectRequest(host: targetHost, port: targetPort, authorization: authorization)
            self.socksAuthentication = []
            self.socksConnect = []
            self.phase = .connectResponse(HTTPHeadReader(limit: maxHeaderBytes))
        case .socks5:
            let user = Array((username ?? "").utf8), pass = Array((password ?? "").utf8)
            guard user.count <= 255 && pass.count <= 255 else {
                throw .invalidTarget("SOCKS5 user names and passwords are at most 255 bytes")
            }
            guard let connect = Self.socksConnectRequest(host: targetHost, port: targetPort) else {
                throw .invalidTarget("a host name over 255 bytes cannot go through SOCKS5")
            }
            // RFC 1928 §3: no authentication, plus username/password (X'02') when we have credentials.
            self.firstBytes = username == nil ? [5, 1, 0] : [5, 2, 0, 2]
            // RFC 1929 §2: VER=1 ULEN UNAME PLEN PASSWD.
            self.socksAuthentication = [1, UInt8(user.count)] + user + [UInt8(pass.count)] + pass
            self.socksConnect = connect
            self.phase = .socksMethod
        }
    }

    /// The `Proxy-Authorization` value for a user name and password (RFC 7617).
    public static func basicAuthorization(username: String, password: String?) -> String {
        "Basic " + HandshakeCrypto.base64(Array("\(username):\(password ?? "")".utf8))
    }

    /// Bytes held while waiting for the rest of a reply: at most `maxHeaderBytes + 1` for CONNECT,
    /// `maxSOCKSReplyBytes` for SOCKS5, and none once the handshake has finished.
    public var bufferedByteCount: Int {
        switch self.phase {
        case .connectResponse(let reader): return reader.bytes.count
        case .socksMethod, .socksAuthentication, .socksReply: return self.reply.count
        case .established, .failed: return 0
        }
    }

    /// Takes the proxy's next bytes, in any split. After `.failed` every call returns the same
    /// failure; feeding after `.established` is a programming error (the bytes are the tunnel's).
    public mutating func feed(_ input: UnsafeRawBufferPointer) -> Step {
        switch self.phase {
        case .established:
            preconditionFailure("ProxyHandshake fed after the tunnel was established")
        case .failed(let error):
            return .failed(error)
        case .connectResponse(var reader):
            self.phase = .established  // drops our reference, so the reader's bytes are not copied on write
            switch reader.feed(input) {
            case .needMore:
                self.phase = .connectResponse(reader)
                return .needMore(send: [])
            case .tooLarge:
                return self.fail(.responseTooLarge)
            case .complete(let consumed):
                switch HTTPResponseHead.parse(reader.bytes, maxFieldCount: self.maxHeaderCount) {
                case .failure(let e):
                    return self.fail(.malformedResponse(e.message))
                case .success(let head):
                    // RFC 9110 §9.3.6: any 2xx means the tunnel is up; the response has no content.
                    guard (200...299).contains(head.status) else {
                        return self.fail(.connectRefused(status: head.status, reason: head.reason))
                    }
                    return .established(consumed: consumed)
                }
            }
        case .socksMethod:
            // RFC 1928 §3: VER METHOD.
            let used = self.collect(input, upTo: 2)
            guard self.reply.count == 2 else { return .needMore(send: []) }
            guard self.reply[0] == 5 else { return self.fail(.notSOCKS5) }
            let send: [UInt8]
            switch self.reply[1] {
            case 0:
                self.phase = .socksReply
                send = self.socksConnect
            case 2 where self.hasCredentials:
                self.phase = .socksAuthentication
                send = self.socksAuthentication
            case 2:
                return self.fail(.credentialsRequired)
            default:
                return self.fail(.noAcceptableMethod)
            }
            guard used == input.count else { return self.fail(.outOfTurn) }
            self.reply.removeAll(keepingCapacity: true)
            return .needMore(send: send)
        case .socksAuthentication:
            // RFC 1929 §2: VER STATUS, X'00' is success.
            let used = self.collect(input, upTo: 2)
            guard self.reply.count == 2 else { return .needMore(send: []) }
            guard self.reply[0] == 1 else { return self.fail(.malformedAuthenticationReply) }
            guard self.reply[1] == 0 else { return self.fail(.authenticationFailed(status: self.reply[1])) }
            guard used == input.count else { return self.fail(.outOfTurn) }
            self.reply.removeAll(keepingCapacity: true)
            self.phase = .socksReply
            return .needMore(send: self.socksConnect)
        case .socksReply:
            // RFC 1928 §6: VER REP RSV ATYP BND.ADDR BND.PORT; the address type gives the length,
            // so the reply is read exactly and whatever follows is the tunnel's.
            var used = 0
            var length = 5
            while true {
                if self.reply.count >= 5 { length = Self.socksReplyLength(self.reply) }
                if self.reply.count >= length { break }
                if used == input.count { return .needMore(send: []) }
                used += self.collect(UnsafeRawBufferPointer(rebasing: input[used...]), upTo: length)
            }
            guard self.reply[0] == 5, length > 4 else { return self.fail(.malformedReply) }
            guard self.reply[1] == 0 else { return self.fail(.socksRefused(reply: self.reply[1])) }
            self.reply = []
            self.phase = .established
            return .established(consumed: used)
        }
    }

    /// Appends input to `reply` until it holds `count` bytes; returns how many bytes it took.
    private mutating func collect(_ input: UnsafeRawBufferPointer, upTo count: Int) -> Int {
        let take = min(max(count - self.reply.count, 0), input.count)
        self.reply.append(contentsOf: UnsafeRawBufferPointer(rebasing: input[0..<take]))
        return take
    }

    private mutating func fail(_ error: ProxyHandshakeError) -> Step {
        self.phase = .failed(error)
        self.reply = []
        return .failed(error)
    }

    // MARK: The messages

    /// `CONNECT host:port` with Host (RFC 9110 §7.2: the same authority) and, with credentials,
    /// Proxy-Authorization. An IPv6 address is bracketed (RFC 3986 §3.2.2).
    static func connectRequest(host: String, port: UInt16, authorization: String?) -> [UInt8] {
        let authority = (host.contains(":") && !host.hasPrefix("[") ? "[\(host)]" : host) + ":\(port)"
        var s = "CONNECT \(authority) HTTP/1.1\r\nHost: \(authority)\r\n"
        if let authorization { s += "Proxy-Authorization: \(authorization)\r\n" }
        return Array((s + "\r\n").utf8)
    }

    /// RFC 1928 §4: CONNECT to the target by address (ATYP 1 or 4) or by name (ATYP 3, which the
    /// proxy resolves); nil for a name over 255 bytes.
    static func socksConnectRequest(host: String, port: UInt16) -> [UInt8]? {
        var out: [UInt8] = [5, 1, 0]
        if let v4 = NumericAddress.ipv4(host) {
            out += [1] + v4
        } else if let v6 = NumericAddress.ipv6(host) {
            out += [4] + v6
        } else {
            let name = Array(host.utf8)
            guard name.count <= 255 else { return nil }
            out += [3, UInt8(name.count)] + name
        }
        return out + [UInt8(port >> 8), UInt8(port & 0xFF)]
    }

    /// The length of the reply that starts `reply` (at least 5 bytes), from its address type; 4
    /// for an unknown type, which the caller rejects.
    static func socksReplyLength(_ reply: [UInt8]) -> Int {
        switch reply[3] {
        case 1: return 4 + 4 + 2
        case 4: return 4 + 16 + 2
        case 3: return 4 + 1 + Int(reply[4]) + 2
        default: return 4
        }
    }

    /// RFC 1928 §6 reply codes.
    public static func socksReplyText(_ code: UInt8) -> String {
        switch code {
        case 1: return "general SOCKS server failure"
        case 2: return "connection not allowed by ruleset"
        case 3: return "network unreachable"
        case 4: return "host unreachable"
        case 5: return "connection refused"
        case 6: return "TTL expired"
        case 7: return "command not supported"
        case 8: return "address type not supported"
        default: return "unknown reply"
        }
    }
}

/// Numeric host parsing by the C library (inet_pton, as the runtime's addresses parse them), with
/// brackets around the address allowed.
enum NumericAddress {
    static func ipv4(_ host: String) -> [UInt8]? {
        var a = in_addr()
        guard inet_pton(AF_INET, self.unbracketed(host), &a) == 1 else { return nil }
        return withUnsafeBytes(of: &a) { Array($0) }
    }

    static func ipv6(_ host: String) -> [UInt8]? {
        var a = in6_addr()
        guard inet_pton(AF_INET6, self.unbracketed(host), &a) == 1 else { return nil }
        return withUnsafeBytes(of: &a) { Array($0) }
    }

    private static func unbracketed(_ host: String) -> String {
        host.hasPrefix("[") && host.hasSuffix("]") ? String(host.dropFirst().dropLast()) : host
    }
}
