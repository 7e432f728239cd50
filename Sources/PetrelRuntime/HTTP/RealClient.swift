import Glibc
import PetrelCore

/// Addresses whose word about the client is believed (`ServerConfiguration.trustedProxies`):
/// single addresses and CIDR blocks, IPv4 and IPv6 (an IPv4-mapped IPv6 peer counts as IPv4).
struct TrustedProxies: Sendable {
    struct Block: Sendable {
        let bytes: [UInt8]
        let bits: Int
    }
    let blocks: [Block]

    init(_ entries: [String]) throws(RuntimeError) {
        var blocks: [Block] = []
        for entry in entries {
            let parts = entry.split(separator: "/", maxSplits: 1).map(String.init)
            guard let address = parts.first, let bytes = TrustedProxies.bytes(address) else {
                throw RuntimeError(.configuration, "trusted proxy \(entry): not an IP address or CIDR block")
            }
            var bits = bytes.count * 8
            if parts.count == 2 {
                guard let b = Int(parts[1]), b >= 0, b <= bytes.count * 8 else {
                    throw RuntimeError(.configuration, "trusted proxy \(entry): bad prefix length")
                }
                bits = b
            }
            blocks.append(Block(bytes: bytes, bits: bits))
        }
        self.blocks = blocks
    }

    /// 4 bytes for IPv4 (also an IPv4-mapped IPv6 address), 16 for IPv6; nil if not an address.
    static func bytes(_ host: String) -> [UInt8]? {
        var h = host
        if h.hasPrefix("[") && h.hasSuffix("]") { h = String(h.dropFirst().dropLast()) }
        var v4 = in_addr()
        if inet_pton(AF_INET, h, &v4) == 1 { return withUnsafeBytes(of: v4) { Array($0) } }
        var v6 = in6_addr()
        guard inet_pton(AF_INET6, h, &v6) == 1 else { return nil }
        let b = withUnsafeBytes(of: v6) { Array($0) }
        if b[0..<10].allSatisfy({ $0 == 0 }) && b[10] == 0xFF && b[11] == 0xFF { return Array(b[12...]) }
        return b
    }

    func contains(_ host: String) -> Bool {
        guard !self.blocks.isEmpty, let b = TrustedProxies.bytes(host) else { return false }
        return self.blocks.contains { block in
            guard block.bytes.count == b.count else { return false }
            var left = block.bits
            var i = 0
            while left > 0 {
                let mask: UInt8 = left >= 8 ? 0xFF : ~(0xFF >> UInt8(left))
                if block.bytes[i] & mask != b[i] & mask { return false }
                left -= 8
                i += 1
            }
            return true
        }
    }
}

extension Connection {
    /// The address a PROXY protocol header or a trusted proxy's headers name, as text.
    static func describe(host: String, port: UInt16?) -> String {
        let h = host.contains(":") ? "[\(host)]" : host
        return port.map { "\(h):\($0)" } ?? h
    }

    /// The PROXY protocol header, before anything else on a connection that must send one:
    /// collected until whole, then what follows goes on as if it had come first.
    func proxyHeaderBytes(_ bytes: UnsafeRawBufferPointer) {
        let e = self.more
        e.proxyHeader.append(contentsOf: bytes)
        let outcome = e.proxyHeader.withUnsafeBytes { ProxyProtocol.parse($0) }
        switch outcome {
        case .needMore:
            return
        case .invalid(let why):
            self.state.pointee.awaitingProxyHeader = false
            return self.closeTransport(reason: .abnormalClosure, message: "PROXY protocol: \(why)")
        case .header(let source, let length):
            self.state.pointee.awaitingProxyHeader = false
            switch source {
            case .text(let host, let port)?:
                guard SocketAddress(numericHost: host, port: port) != nil else {
                    return self.closeTransport(reason: .abnormalClosure, message: "PROXY protocol: bad address \(host)")
                }
                e.forwardedFor = Connection.describe(host: host, port: port)
            case .ipv4(let b, let port)?:
                e.forwardedFor = "\(b[0]).\(b[1]).\(b[2]).\(b[3]):\(port)"
            case .ipv6(let b, let port)?:
                var a = in6_addr()
                withUnsafeMutableBytes(of: &a) { $0.copyBytes(from: b) }
                var text = [UInt8](repeating: 0, count: Int(INET6_ADDRSTRLEN))
                _ = text.withUnsafeMutableBufferPointer { inet_ntop(AF_INET6, &a, $0.baseAddress, socklen_t($0.count)) }
                let host = String(decoding: text.prefix(while: { $0 != 0 }), as: UTF8.self)
                e.forwardedFor = Connection.describe(host: host, port: port)
            case nil:
                break
            }
            e.proxyAddress = e.forwardedFor
            var rest = Array(e.proxyHeader[length...])
            e.proxyHeader = []
            guard !rest.isEmpty else { return }
            rest.withUnsafeMutableBytes { self.afterProxyHeader($0) }
        }
    }

    /// What the socket gave after the PROXY header, on the usual path.
    func afterProxyHeader(_ bytes: UnsafeMutableRawBufferPointer) {
        if self.wantsTLS || self.refusedPlaintext {
            self.receiveThroughLayers(UnsafeRawBufferPointer(bytes))
        } else {
            self.consume(bytes)
        }
    }

    /// With trusted proxies: the client a request's `X-Forwarded-For` (or `Forwarded`, as
    /// configured) names,
    /// when the connection's own peer (or the PROXY header's source) is trusted. The hops are
    /// read from the right, where the nearest proxy wrote; the first one not trusted is the
    /// client (all trusted: the leftmost). A hidden hop (`unknown`, `_name`) stops the walk at
    /// the hop that reported it.
    func applyForwarded(_ head: HTTPRequestHead) {
        guard let trusted = self.server?.trustedProxies, !trusted.blocks.isEmpty else { return }
        let e = self.more
        let nearest = e.proxyAddress.map { Connection.hostPart($0) } ?? self.peerAddress.host
        e.forwardedFor = e.proxyAddress
        guard trusted.contains(nearest),
            let hops = self.server?.configuration.forwardedHeader == .forwarded
                ? ForwardedFor.hops(forwarded: head.headers.values("Forwarded"), xForwardedFor: [])
                : ForwardedFor.hops(forwarded: [], xForwardedFor: head.headers.values("X-Forwarded-For"))
        else { return }
        var client: ForwardedFor.Node? = nil
        for hop in hops.reversed() {
            guard let node = hop else { break }
            client = node
            if !trusted.contains(node.host) { break }
        }
        if let c = client { e.forwardedFor = Connection.describe(host: c.host, port: c.port) }
    }

    /// "192.0.2.1" of "192.0.2.1:443", "2001:db8::1" of "[2001:db8::1]:443".
    static func hostPart(_ address: String) -> String {
        if address.hasPrefix("["), let close = address.firstIndex(of: "]") { return String(address[address.index(after: address.startIndex)..<close]) }
        if let colon = address.lastIndex(of: ":"), address.firstIndex(of: ":") == colon { return String(address[..<colon]) }
        return address
    }
}
