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

/// Errors of the runtime's own (sockets, threads, configuration).
public struct RuntimeError: Error, Hashable, Sendable, CustomStringConvertible {
    public enum Kind: UInt8, Sendable {
        case resolve, socket, bind, listen, connect, connectTimeout, thread, stopped, invalidURL, handshake, closed, configuration, tls, proxy
    }

    public let kind: Kind
    public let message: String
    /// The errno behind a system-call failure, else 0.
    public let errno: Int32

    public init(_ kind: Kind, _ message: String, errno: Int32 = 0) {
        self.kind = kind
        self.message = message
        self.errno = errno
    }

    static func system(_ kind: Kind, _ what: String, _ code: Int32 = Glibc.errno) -> RuntimeError {
        RuntimeError(kind, "\(what): \(String(cString: strerror(code)))", errno: code)
    }

    public var description: String { self.message }
}

/// What a non-blocking read or write did.
enum IOResult {
    case done(Int)
    case wouldBlock
    case eof
    case failed(Int32)
}

enum Sys {
    static func read(_ fd: Int32, _ buffer: UnsafeMutableRawBufferPointer) -> IOResult {
        while true {
            let n = Glibc.read(fd, buffer.baseAddress, buffer.count)
            if n > 0 { return .done(n) }
            if n == 0 { return .eof }
            let e = errno
            if e == EINTR { continue }
            if e == EAGAIN || e == EWOULDBLOCK { return .wouldBlock }
            return .failed(e)
        }
    }

    static func write(_ fd: Int32, _ bytes: UnsafeRawBufferPointer) -> IOResult {
        while true {
            let n = petrel_send(fd, bytes.baseAddress, bytes.count)
            if n >= 0 { return .done(n) }
            let e = errno
            if e == EINTR { continue }
            if e == EAGAIN || e == EWOULDBLOCK { return .wouldBlock }
            return .failed(e)
        }
    }

    /// Gathers `count` buffers into one system call.
    static func writev(_ fd: Int32, _ iov: UnsafePointer<iovec>, _ count: Int) -> IOResult {
        while true {
            let n = petrel_sendv(fd, iov, Int32(count))
            if n >= 0 { return .done(n) }
            let e = errno
            if e == EINTR { continue }
            if e == EAGAIN || e == EWOULDBLOCK { return .wouldBlock }
            return .failed(e)
        }
    }

    static func close(_ fd: Int32) {
        _ = Glibc.close(fd)
    }

    /// A listening socket on `address`, non-blocking, with SO_REUSEADDR and SO_REUSEPORT so every
    /// loop thread can have its own.
    static func listen(_ address: SocketAddress, backlog: Int32) throws(RuntimeError) -> Int32 {
        let fd = petrel_socket(address.family)
        guard fd >= 0 else { throw .system(.socket, "socket") }
        _ = petrel_set_int_option(fd, SOL_SOCKET, SO_REUSEADDR, 1)
        _ = petrel_set_int_option(fd, SOL_SOCKET, SO_REUSEPORT, 1)
        if address.family == AF_INET6 { _ = petrel_set_int_option(fd, Int32(IPPROTO_IPV6), IPV6_V6ONLY, 1) }
        let rc = address.withSockaddr { Glibc.bind(fd, $0, $1) }
        guard rc == 0 else {
            let e = RuntimeError.system(.bind, "bind \(address)")
            Sys.close(fd)
            throw e
        }
        guard Glibc.listen(fd, backlog) == 0 else {
            let e = RuntimeError.system(.listen, "listen \(address)")
            Sys.close(fd)
            throw e
        }
        return fd
    }

    static func localAddress(_ fd: Int32) -> SocketAddress {
        var a = SocketAddress()
        a.length = socklen_t(MemoryLayout<sockaddr_in6>.size)
        withUnsafeMutableBytes(of: &a.storage) { raw in
            _ = getsockname(fd, raw.baseAddress!.assumingMemoryBound(to: sockaddr.self), &a.length)
        }
        return a
    }

    static func noDelay(_ fd: Int32) {
        _ = petrel_set_int_option(fd, Int32(IPPROTO_TCP), TCP_NODELAY, 1)
    }

    /// Number of open file descriptors of this process (for leak tests and health).
    public static func openFileCount() -> Int {
        guard let dir = opendir("/proc/self/fd") else { return -1 }
        defer { closedir(dir) }
        var n = 0
        while readdir(dir) != nil { n += 1 }
        return n - 3  // ".", ".." and the directory itself
    }
}

/// Monotonic clock in milliseconds.
@inline(__always) func monotonicMilliseconds() -> UInt64 { petrel_monotonic_ms() }
