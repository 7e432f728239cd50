/// Where a connection really came from, when something stands between the client and the
/// server: the PROXY protocol header a load balancer sends before anything else (HAProxy's
/// "PROXY protocol", versions 1 and 2), and the `Forwarded` (RFC 7239) and `X-Forwarded-For`
/// headers an HTTP proxy adds. Sans-I/O: these parse; the runtime decides whom to believe.
public enum ProxyProtocol {
    /// The client's address as the header gives it.
    public enum Source: Equatable, Sendable {
        /// Version 1: the address as text (`TCP4`: checked dotted quad; `TCP6`: hex digits,
        /// colons and dots, for the runtime to check with `inet_pton`).
        case text(host: String, port: UInt16)
        case ipv4([UInt8], port: UInt16)
        case ipv6([UInt8], port: UInt16)
    }

    public enum Outcome: Equatable, Sendable {
        /// Not enough bytes yet to decide.
        case needMore
        /// A whole header of `length` bytes. `source` is nil for `LOCAL` (a health check by the
        /// balancer itself), `UNKNOWN`, and families with no IP address: the peer is the client.
        case header(source: Source?, length: Int)
        /// Not a PROXY header, or a malformed one: the connection must be closed.
        case invalid(String)
    }

    /// Version 1's longest header, CR LF included (the specification's 107 bytes).
    public static let maxV1Length = 107
    /// The longest address block (addresses and TLVs) accepted in version 2 (the format allows
    /// 65,535; a balancer's TLVs take a few hundred at most).
    public static let maxV2Block = 2048

    static let v1Prefix = Array("PROXY ".utf8)
    static let v2Signature: [UInt8] = [0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A]

    /// Reads the header at the start of `bytes` (which may hold what follows it too).
    public static func parse(_ bytes: UnsafeRawBufferPointer) -> Outcome {
        guard let first = bytes.first else { return .needMore }
        if first == UInt8(ascii: "P") { return self.parseV1(bytes) }
        if first == 0x0D { return self.parseV2(bytes) }
        return .invalid("no PROXY protocol header")
    }

    private static func parseV1(_ bytes: UnsafeRawBufferPointer) -> Outcome {
        let prefix = min(bytes.count, self.v1Prefix.count)
        guard bytes.prefix(prefix).elementsEqual(self.v1Prefix.prefix(prefix)) else { return .invalid("no PROXY protocol header") }
        guard let lf = bytes.prefix(self.maxV1Length).firstIndex(of: 0x0A) else {
            return bytes.count >= self.maxV1Length ? .invalid("PROXY v1 header over 107 bytes") : .needMore
        }
        guard lf > 0, bytes[lf - 1] == 0x0D else { return .invalid("PROXY v1 header not ended by CR LF") }
        let line = Array(bytes[self.v1Prefix.count..<(lf - 1)])
        let fields = line.split(separator: 0x20, omittingEmptySubsequences: false).map { String(decoding: $0, as: UTF8.self) }
        guard let proto = fields.first else { return .invalid("PROXY v1 header without a protocol") }
        switch proto {
        case "UNKNOWN":
            return .header(source: nil, length: lf + 1)
        case "TCP4", "TCP6":
            guard fields.count == 5, let port = self.port(fields[3]), self.port(fields[4]) != nil else {
                return .invalid("PROXY v1 header: want TCP4|TCP6 source destination source-port destination-port")
            }
            let valid = proto == "TCP4" ? (self.ipv4(fields[1]) != nil && self.ipv4(fields[2]) != nil)
                : (self.ipv6Text(fields[1]) && self.ipv6Text(fields[2]))
            guard valid else { return .invalid("PROXY v1 header: bad \(proto) address") }
            return .header(source: .text(host: fields[1], port: port), length: lf + 1)
        default:
            return .invalid("PROXY v1 header: unknown protocol")
        }
    }

    private static func parseV2(_ bytes: UnsafeRawBufferPointer) -> Outcome {
        let prefix = min(bytes.count, self.v2Signature.count)
        guard bytes.prefix(prefix).elementsEqual(self.v2Signature.prefix(prefix)) else { return .invalid("no PROXY protocol header") }
        guard bytes.count >= 16 else { return .needMore }
        let versionCommand = bytes[12]
        guard versionCommand >> 4 == 2 else { return .invalid("PROXY v2 header: version \(versionCommand >> 4)") }
        let command = versionCommand & 0x0F
        guard command <= 1 else { return .invalid("PROXY v2 header: command \(command)") }
        let family = bytes[13] >> 4
        let transport = bytes[13] & 0x0F
        guard family <= 3, transport <= 2 else { return .invalid("PROXY v2 header: family/transport \(bytes[13])") }
        let block = Int(bytes[14]) << 8 | Int(bytes[15])
        guard block <= self.maxV2Block else { return .invalid("PROXY v2 header: \(block) bytes of addresses and TLVs") }
        guard bytes.count >= 16 + block else { return .needMore }
        let length = 16 + block
        // LOCAL: the balancer's own connection (a health check); what follows is ignored.
        guard command == 1 else { return .header(source: nil, length: length) }
        func port(_ at: Int) -> UInt16 { UInt16(bytes[at]) << 8 | UInt16(bytes[at + 1]) }
        switch family {
        case 1:
            guard block >= 12 else { return .invalid("PROXY v2 header: IPv4 addresses need 12 bytes") }
            return .header(source: .ipv4(Array(bytes[16..<20]), port: port(24)), length: length)
        case 2:
            guard block >= 36 else { return .invalid("PROXY v2 header: IPv6 addresses need 36 bytes") }
            return .header(source: .ipv6(Array(bytes[16..<32]), port: port(48)), length: length)
        case 3:
            guard block >= 216 else { return .invalid("PROXY v2 header: Unix addresses need 216 bytes") }
            return .header(source: nil, length: length)
        default:
            return .header(source: nil, length: length)  // UNSPEC
        }
    }

    /// A decimal port: 0 to 65535, no sign, no leading zero.
    static func port(_ s: String) -> UInt16? {
        let u = Array(s.utf8)
        guard !u.isEmpty, u.count <= 5, u.allSatisfy({ $0 >= 0x30 && $0 <= 0x39 }), u.count == 1 || u[0] != 0x30 else { return nil }
        return UInt16(exactly: u.reduce(0) { $0 * 10 + Int($1) - 48 })
    }

    /// A dotted quad, each part 0 to 255 with no leading zero.
    public static func ipv4(_ s: String) -> [UInt8]? {
        let parts = s.utf8.split(separator: UInt8(ascii: "."), omittingEmptySubsequences: false)
        guard parts.count == 4 else { return nil }
        var out: [UInt8] = []
        for p in parts {
            guard !p.isEmpty, p.count <= 3, p.allSatisfy({ $0 >= 0x30 && $0 <= 0x39 }), p.count == 1 || p.first != 0x30,
                let v = UInt8(exactly: p.reduce(0) { $0 * 10 + Int($1) - 48 })
            else { return nil }
            out.append(v)
        }
        return out
    }

    /// Looks like an IPv6 address in text (hex digits, colons, dots for an IPv4 tail).
    static func ipv6Text(_ s: String) -> Bool {
        let u = s.utf8
        return u.count >= 2 && u.count <= 45 && u.contains(UInt8(ascii: ":"))
            && u.allSatisfy { ($0 >= 0x30 && $0 <= 0x39) || ($0 >= 0x61 && $0 <= 0x66) || ($0 >= 0x41 && $0 <= 0x46) || $0 == 0x3A || $0 == 0x2E }
    }
}

/// The hops a request passed through, as HTTP proxies report them: `Forwarded` (RFC 7239 §4,
/// its `for=` parameters) when present, else `X-Forwarded-For`. Leftmost is the furthest from
/// the server (the client, if every proxy told the truth).
public enum ForwardedFor {
    /// One hop: an IP address (IPv6 without brackets) and its port if the header gave one, or
    /// nil for a hop the proxy hid (`unknown`, an obfuscated `_name`, or something unreadable).
    public struct Node: Equatable, Sendable {
        public var host: String
        public var port: UInt16?

        public init(host: String, port: UInt16?) {
            self.host = host
            self.port = port
        }
    }

    /// At most this many hops are read (the rightmost ones, where trusted proxies write).
    public static let maxHops = 32

    /// The hops, left to right, or nil when neither header is there.
    public static func hops(forwarded: [String], xForwardedFor: [String]) -> [Node?]? {
        if !forwarded.isEmpty {
            var out: [Node?] = []
            for value in forwarded {
                for element in self.split(value, on: UInt8(ascii: ",")) {
                    var node: Node?? = nil
                    for pair in self.split(element, on: UInt8(ascii: ";")) {
                        guard let eq = pair.firstIndex(of: UInt8(ascii: "=")) else { continue }
                        let name = String(decoding: pair[..<eq], as: UTF8.self)
                        guard ASCII.equalsIgnoringCase(name, "for") else { continue }
                        node = .some(self.node(self.unquote(Array(pair[(eq + 1)...]))))
                    }
                    if let n = node { out.append(n) }
                }
            }
            return Array(out.suffix(self.maxHops))
        }
        guard !xForwardedFor.isEmpty else { return nil }
        var out: [Node?] = []
        for value in xForwardedFor {
            for item in self.split(value, on: UInt8(ascii: ",")) { out.append(self.node(item)) }
        }
        return Array(out.suffix(self.maxHops))
    }

    /// Splits on `separator` outside double quotes, trimming spaces; empty items dropped.
    static func split(_ s: some StringProtocol, on separator: UInt8) -> [[UInt8]] {
        var out: [[UInt8]] = []
        var current: [UInt8] = []
        var quoted = false
        var escaped = false
        for b in s.utf8 {
            if escaped {
                escaped = false
            } else if quoted && b == UInt8(ascii: "\\") {
                escaped = true
            } else if b == UInt8(ascii: "\"") {
                quoted.toggle()
            } else if b == separator && !quoted {
                out.append(Array(ASCII.trim(current)))
                current = []
                continue
            }
            current.append(b)
        }
        out.append(Array(ASCII.trim(current)))
        return out.filter { !$0.isEmpty }
    }

    static func split(_ bytes: [UInt8], on separator: UInt8) -> [[UInt8]] {
        self.split(String(decoding: bytes, as: UTF8.self), on: separator)
    }

    /// A quoted-string's content (RFC 9110 §5.6.4), or the token as it is.
    static func unquote(_ v: [UInt8]) -> [UInt8] {
        guard v.count >= 2, v.first == UInt8(ascii: "\""), v.last == UInt8(ascii: "\"") else { return v }
        var out: [UInt8] = []
        var escaped = false
        for b in v.dropFirst().dropLast() {
            if !escaped && b == UInt8(ascii: "\\") {
                escaped = true
                continue
            }
            escaped = false
            out.append(b)
        }
        return out
    }

    /// `192.0.2.60`, `192.0.2.60:4711`, `[2001:db8::17]`, `[2001:db8::17]:4711`, or a bare
    /// IPv6 address (X-Forwarded-For writes them so); anything else is a hidden hop.
    static func node(_ v: [UInt8]) -> Node? {
        let s = String(decoding: v, as: UTF8.self)
        if v.first == UInt8(ascii: "[") {
            guard let close = v.firstIndex(of: UInt8(ascii: "]")) else { return nil }
            let host = String(decoding: v[1..<close], as: UTF8.self)
            guard ProxyProtocol.ipv6Text(host) else { return nil }
            let rest = v[(close + 1)...]
            if rest.isEmpty { return Node(host: host, port: nil) }
            guard rest.first == UInt8(ascii: ":"), let port = ProxyProtocol.port(String(decoding: rest.dropFirst(), as: UTF8.self)) else { return nil }
            return Node(host: host, port: port)
        }
        if ProxyProtocol.ipv4(s) != nil { return Node(host: s, port: nil) }
        if let colon = v.lastIndex(of: UInt8(ascii: ":")), v.filter({ $0 == UInt8(ascii: ":") }).count == 1 {
            let host = String(decoding: v[..<colon], as: UTF8.self)
            guard ProxyProtocol.ipv4(host) != nil, let port = ProxyProtocol.port(String(decoding: v[(colon + 1)...], as: UTF8.self)) else { return nil }
            return Node(host: host, port: port)
        }
        return ProxyProtocol.ipv6Text(s) ? Node(host: s, port: nil) : nil
    }
}
