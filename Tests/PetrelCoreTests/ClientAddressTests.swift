import PetrelCore
import Testing

@Suite("PROXY protocol headers and Forwarded / X-Forwarded-For hops")
struct ClientAddressTests {
    func parse(_ bytes: [UInt8]) -> ProxyProtocol.Outcome { bytes.withUnsafeBytes { ProxyProtocol.parse($0) } }

    static let v2Signature: [UInt8] = [0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A]

    @Test("version 1: TCP4, TCP6 and UNKNOWN, whole or cut anywhere; what follows is not taken")
    func v1() {
        let line = Array("PROXY TCP4 203.0.113.7 192.0.2.1 56324 443\r\n".utf8)
        let rest = Array("GET / HTTP/1.1\r\n".utf8)
        #expect(parse(line + rest) == .header(source: .text(host: "203.0.113.7", port: 56324), length: line.count))
        for cut in 0..<line.count { #expect(parse(Array(line[..<cut])) == .needMore, "cut at \(cut)") }
        let six = Array("PROXY TCP6 2001:db8::7 2001:db8::1 4711 443\r\n".utf8)
        #expect(parse(six) == .header(source: .text(host: "2001:db8::7", port: 4711), length: six.count))
        let unknown = Array("PROXY UNKNOWN whatever follows\r\n".utf8)
        #expect(parse(unknown) == .header(source: nil, length: unknown.count))
    }

    @Test("version 1: what the specification does not allow is refused")
    func v1Invalid() {
        for bad in [
            "PROXY TCP4 203.0.113.7 192.0.2.1 56324 443\n", "PROXY TCP4 203.0.113.7 192.0.2.1 56324\r\n",
            "PROXY TCP4 256.0.0.1 192.0.2.1 1 2\r\n", "PROXY TCP4 01.0.0.1 192.0.2.1 1 2\r\n", "PROXY TCP4 1.2.3.4 5.6.7.8 65536 2\r\n",
            "PROXY TCP4 1.2.3.4 5.6.7.8 01 2\r\n", "PROXY TCP6 1.2.3.4 5.6.7.8 1 2\r\n", "PROXY UDP4 1.2.3.4 5.6.7.8 1 2\r\n",
            "PROXY  TCP4 1.2.3.4 5.6.7.8 1 2\r\n", "PROXX TCP4", "GET / HTTP/1.1\r\n",
        ] {
            guard case .invalid = parse(Array(bad.utf8)) else {
                Issue.record("accepted \(bad.debugDescription)")
                continue
            }
        }
        let long = Array(("PROXY UNKNOWN " + String(repeating: "x", count: 100)).utf8)
        guard case .invalid = parse(long) else {
            Issue.record("a v1 line over 107 bytes was not refused")
            return
        }
    }

    @Test("version 2: PROXY over IPv4 and IPv6 with TLVs, LOCAL, and every cut short of the end")
    func v2() {
        let v4 = Self.v2Signature + [0x21, 0x11, 0x00, 0x12] + [203, 0, 113, 7, 192, 0, 2, 1, 0xDC, 0x04, 0x01, 0xBB] + [0x04, 0x00, 0x03, 1, 2, 3]
        #expect(parse(v4 + [0x16, 0x03]) == .header(source: .ipv4([203, 0, 113, 7], port: 56324), length: v4.count))
        for cut in 0..<v4.count { #expect(parse(Array(v4[..<cut])) == .needMore, "cut at \(cut)") }
        let src: [UInt8] = [0x20, 0x01, 0x0D, 0xB8] + [UInt8](repeating: 0, count: 11) + [7]
        let v6 = Self.v2Signature + [0x21, 0x21, 0x00, 0x24] + src + [UInt8](repeating: 0, count: 16) + [0x12, 0x67, 0x01, 0xBB]
        #expect(parse(v6) == .header(source: .ipv6(src, port: 4711), length: v6.count))
        let local = Self.v2Signature + [0x20, 0x00, 0x00, 0x00]
        #expect(parse(local) == .header(source: nil, length: 16))
    }

    @Test("version 2: a wrong version, command, family, short addresses or an oversized block are refused")
    func v2Invalid() {
        let body: [UInt8] = [203, 0, 113, 7, 192, 0, 2, 1, 0, 1, 0, 2]
        for header in [
            [0x11, 0x11, 0x00, 0x0C] + body, [0x22, 0x11, 0x00, 0x0C] + body, [0x21, 0x51, 0x00, 0x0C] + body,
            [0x21, 0x11, 0x00, 0x08] + Array(body[..<8]), [0x21, 0x21, 0x00, 0x0C] + body, [0x21, 0x11, 0x08, 0x01],
        ] as [[UInt8]] {
            guard case .invalid = parse(Self.v2Signature + header) else {
                Issue.record("accepted \(header)")
                continue
            }
        }
        guard case .invalid = parse(Array(Self.v2Signature[..<5]) + [0x00]) else {
            Issue.record("a broken signature was accepted")
            return
        }
    }

    @Test("Forwarded (RFC 7239 §7.4's examples) is preferred; X-Forwarded-For otherwise; hidden hops are nil")
    func hops() {
        typealias N = ForwardedFor.Node
        #expect(ForwardedFor.hops(forwarded: ["for=192.0.2.43, for=198.51.100.17"], xForwardedFor: ["10.0.0.1"])
            == [N(host: "192.0.2.43", port: nil), N(host: "198.51.100.17", port: nil)])
        #expect(ForwardedFor.hops(forwarded: ["for=\"[2001:db8:cafe::17]:4711\";proto=https;by=203.0.113.43"], xForwardedFor: [])
            == [N(host: "2001:db8:cafe::17", port: 4711)])
        #expect(ForwardedFor.hops(forwarded: ["For=\"_gazonk\", for=unknown", "proto=http;for=192.0.2.60:80"], xForwardedFor: [])
            == [nil, nil, N(host: "192.0.2.60", port: 80)])
        #expect(ForwardedFor.hops(forwarded: [], xForwardedFor: ["203.0.113.7, 2001:db8::1", "10.0.0.2"])
            == [N(host: "203.0.113.7", port: nil), N(host: "2001:db8::1", port: nil), N(host: "10.0.0.2", port: nil)])
        #expect(ForwardedFor.hops(forwarded: [], xForwardedFor: []) == nil)
        let many = (0..<100).map { "10.0.0.\($0 % 250)" }.joined(separator: ",")
        #expect(ForwardedFor.hops(forwarded: [], xForwardedFor: [many])?.count == ForwardedFor.maxHops)
    }
}
