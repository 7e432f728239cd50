import CLinux
import Glibc

/// An IPv4 or IPv6 socket address.
public struct SocketAddress: Sendable, CustomStringConvertible {
    /// Room for a sockaddr_in6 (28 bytes), which also holds a sockaddr_in: every connection
    /// keeps its peer's address, so not a 128-byte sockaddr_storage.
    var storage = sockaddr_in6()
    var length: socklen_t = 0

    init() {}

    /// From what accept(2) or getaddrinfo(3) filled in (IPv4 or IPv6 only).
    init(_ sa: UnsafeRawPointer, length: socklen_t) {
        let n = min(Int(length), MemoryLayout<sockaddr_in6>.size)
        withUnsafeMutableBytes(of: &self.storage) { $0.baseAddress!.copyMemory(from: sa, byteCount: n) }
        self.length = socklen_t(n)
    }

    /// A numeric address (`127.0.0.1`, `::1`, `0.0.0.0`, `::`); nil if `host` is not one.
    public init?(numericHost host: String, port: UInt16) {
        var h = host
        if h.hasPrefix("[") && h.hasSuffix("]") { h = String(h.dropFirst().dropLast()) }
        var v4 = in_addr()
        var v6 = in6_addr()
        if inet_pton(AF_INET, h, &v4) == 1 {
            var sin = sockaddr_in()
            sin.sin_family = sa_family_t(AF_INET)
            sin.sin_port = port.bigEndian
            sin.sin_addr = v4
            withUnsafeBytes(of: sin) { src in
                withUnsafeMutableBytes(of: &self.storage) { $0.copyMemory(from: src) }
            }
            self.length = socklen_t(MemoryLayout<sockaddr_in>.size)
        } else if inet_pton(AF_INET6, h, &v6) == 1 {
            var sin6 = sockaddr_in6()
            sin6.sin6_family = sa_family_t(AF_INET6)
            sin6.sin6_port = port.bigEndian
            sin6.sin6_addr = v6
            withUnsafeBytes(of: sin6) { src in
                withUnsafeMutableBytes(of: &self.storage) { $0.copyMemory(from: src) }
            }
            self.length = socklen_t(MemoryLayout<sockaddr_in6>.size)
        } else {
            return nil
        }
    }

    /// Resolves `host` (a name or a numeric address) with getaddrinfo; blocks the calling thread.
    public static func resolve(host: String, port: UInt16) throws(RuntimeError) -> [SocketAddress] {
        if let numeric = SocketAddress(numericHost: host, port: port) { return [numeric] }
        var hints = addrinfo()
        hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
        hints.ai_family = AF_UNSPEC
        var result: UnsafeMutablePointer<addrinfo>?
        let rc = getaddrinfo(host, String(port), &hints, &result)
        guard rc == 0, let first = result else {
            throw RuntimeError(.resolve, "cannot resolve \(host): \(String(cString: gai_strerror(rc)))")
        }
        defer { freeaddrinfo(first) }
        var out: [SocketAddress] = []
        var p: UnsafeMutablePointer<addrinfo>? = first
        while let ai = p {
            let family = ai.pointee.ai_family
            if let sa = ai.pointee.ai_addr, family == AF_INET || family == AF_INET6 {
                out.append(SocketAddress(sa, length: ai.pointee.ai_addrlen))
            }
            p = ai.pointee.ai_next
        }
        if out.isEmpty { throw RuntimeError(.resolve, "no address for \(host)") }
        return out
    }

    public var family: Int32 { Int32(self.storage.sin6_family) }

    /// The address in network order: 4 bytes (IPv4) or 16 (IPv6).
    var addressBytes: [UInt8] {
        withUnsafeBytes(of: self.storage) { raw in
            self.family == AF_INET6 ? Array(raw[8..<24]) : Array(raw[4..<8])
        }
    }

    public var port: UInt16 {
        withUnsafeBytes(of: self.storage) { raw in
            self.family == AF_INET6
                ? UInt16(bigEndian: raw.load(fromByteOffset: 2, as: UInt16.self))
                : UInt16(bigEndian: raw.load(fromByteOffset: 2, as: UInt16.self))
        }
    }

    /// The host part, numeric (`127.0.0.1` or `::1`).
    public var host: String {
        var buf = [CChar](repeating: 0, count: Int(INET6_ADDRSTRLEN) + 1)
        withUnsafeBytes(of: self.storage) { raw in
            if self.family == AF_INET6 {
                var a = raw.load(fromByteOffset: 8, as: in6_addr.self)
                _ = inet_ntop(AF_INET6, &a, &buf, socklen_t(buf.count))
            } else {
                var a = raw.load(fromByteOffset: 4, as: in_addr.self)
                _ = inet_ntop(AF_INET, &a, &buf, socklen_t(buf.count))
            }
        }
        return String(decoding: buf.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }

    public var description: String {
        self.family == AF_INET6 ? "[\(self.host)]:\(self.port)" : "\(self.host):\(self.port)"
    }

    func withSockaddr<R>(_ body: (UnsafePointer<sockaddr>, socklen_t) -> R) -> R {
        withUnsafeBytes(of: self.storage) { body($0.baseAddress!.assumingMemoryBound(to: sockaddr.self), self.length) }
    }
}

