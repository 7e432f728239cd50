import CHiredis
import Glibc

/// Where the Redis engine finds Redis: `redis://host[:port]` (port 6379 by default), or a Unix
/// socket given as `unix:/path`, `unix:///path` or a path starting with `/`.
public struct RedisAddress: Sendable, Hashable, CustomStringConvertible {
    public enum Endpoint: Sendable, Hashable {
        case tcp(host: String, port: Int)
        case unix(path: String)
    }

    public let endpoint: Endpoint

    public init(_ url: String) throws(RuntimeError) {
        if url.hasPrefix("/") {
            self.endpoint = .unix(path: url)
        } else if url.hasPrefix("unix:") {
            var path = Substring(url.dropFirst(5))
            if path.hasPrefix("//") { path = path.dropFirst(2) }  // unix://<empty authority>/path
            guard path.hasPrefix("/") else { throw RuntimeError(.invalidURL, "engine URL \(url): a Unix socket path must be absolute") }
            self.endpoint = .unix(path: String(path))
        } else if url.hasPrefix("redis://") {
            var rest = Substring(url.dropFirst(8))
            if let slash = rest.firstIndex(of: "/") {
                // Database 0 only: the engine's keys would not move with another number.
                guard rest[slash...] == "/" || rest[slash...] == "/0" else {
                    throw RuntimeError(.invalidURL, "engine URL \(url): only database 0 is supported")
                }
                rest = rest[..<slash]
            }
            guard !rest.contains("@") else {
                throw RuntimeError(.invalidURL, "engine URL \(url): user and password are not supported")
            }
            var host = rest
            var port = 6379
            if rest.hasPrefix("[") {
                guard let close = rest.firstIndex(of: "]") else { throw RuntimeError(.invalidURL, "engine URL \(url): unclosed [") }
                host = rest[rest.index(after: rest.startIndex)..<close]
                let after = rest[rest.index(after: close)...]
                if after.hasPrefix(":") {
                    guard let p = Int(after.dropFirst()), (1...65535).contains(p) else { throw RuntimeError(.invalidURL, "engine URL \(url): bad port") }
                    port = p
                } else if !after.isEmpty {
                    throw RuntimeError(.invalidURL, "engine URL \(url): expected :port after ]")
                }
            } else if let colon = rest.lastIndex(of: ":") {
                host = rest[..<colon]
                guard let p = Int(rest[rest.index(after: colon)...]), (1...65535).contains(p) else {
                    throw RuntimeError(.invalidURL, "engine URL \(url): bad port")
                }
                port = p
            }
            guard !host.isEmpty else { throw RuntimeError(.invalidURL, "engine URL \(url): no host") }
            // A name or IPv4 address: letters, digits, '.', '-', '_'; an IPv6 address only in
            // brackets: hex digits, ':', '.', and '%' with a zone.
            let bracketed = rest.hasPrefix("[")
            let allowed = host.utf8.allSatisfy { c in
                (c >= 0x30 && c <= 0x39) || (c >= 0x41 && c <= 0x5A) || (c >= 0x61 && c <= 0x7A) || c == 0x2E
                    || (bracketed ? c == 0x3A || c == 0x25 : c == 0x2D || c == 0x5F)
            }
            guard allowed, !bracketed || host.contains(":") else { throw RuntimeError(.invalidURL, "engine URL \(url): bad host") }
            self.endpoint = .tcp(host: String(host), port: port)
        } else {
            throw RuntimeError(.invalidURL, "engine URL \(url): expected redis://host[:port] or a Unix socket path")
        }
    }

    public var description: String {
        switch self.endpoint {
        case .tcp(let host, let port): return host.contains(":") ? "redis://[\(host)]:\(port)" : "redis://\(host):\(port)"
        case .unix(let path): return "unix://\(path)"
        }
    }
}

/// One reply of Redis, copied out of hiredis's reply object.
enum RedisReply: Equatable, Sendable {
    case string([UInt8])
    case integer(Int64)
    case array([RedisReply])
    case null
    case status(String)
    case error(String)

    init(_ r: UnsafePointer<redisReply>) {
        let reply = r.pointee
        switch reply.type {
        case REDIS_REPLY_STRING:
            self = .string(reply.len == 0 ? [] : Array(UnsafeRawBufferPointer(start: reply.str, count: Int(reply.len))))
        case REDIS_REPLY_INTEGER:
            self = .integer(Int64(reply.integer))
        case REDIS_REPLY_ARRAY:
            self = .array((0..<Int(reply.elements)).map { RedisReply(UnsafePointer(reply.element[$0]!)) })
        case REDIS_REPLY_STATUS:
            self = .status(String(cString: reply.str))
        case REDIS_REPLY_ERROR:
            self = .error(String(cString: reply.str))
        default:
            self = .null
        }
    }

    var bytes: [UInt8]? {
        if case .string(let b) = self { return b }
        return nil
    }

    var text: String? { self.bytes.map { String(decoding: $0, as: UTF8.self) } }

    var integer: Int64? {
        if case .integer(let i) = self { return i }
        return nil
    }

    var elements: [RedisReply]? {
        if case .array(let a) = self { return a }
        return nil
    }
}

/// A blocking connection to Redis through hiredis, used by one thread at a time. Any error of
/// the connection (not an error reply) drops it; the next command connects again.
final class RedisLink {
    let address: RedisAddress
    /// How long a connect, or a reply, may take.
    let timeout: Milliseconds
    private var context: UnsafeMutablePointer<redisContext>?

    init(_ address: RedisAddress, timeout: Milliseconds) {
        self.address = address
        self.timeout = timeout
    }

    deinit { self.disconnect() }

    var isConnected: Bool { self.context != nil }

    func disconnect() {
        if let c = self.context { redisFree(c) }
        self.context = nil
    }

    private func interval(_ ms: Milliseconds) -> timeval {
        timeval(tv_sec: ms / 1000, tv_usec: suseconds_t((ms % 1000) * 1000))
    }

    func connect() throws(RuntimeError) {
        if self.context != nil { return }
        let tv = self.interval(self.timeout)
        let made: UnsafeMutablePointer<redisContext>?
        switch self.address.endpoint {
        case .tcp(let host, let port): made = redisConnectWithTimeout(host, Int32(port), tv)
        case .unix(let path): made = redisConnectUnixWithTimeout(path, tv)
        }
        guard let c = made else { throw RuntimeError(.engine, "Redis at \(self.address): out of memory") }
        if c.pointee.err != 0 {
            let why = Self.errorString(c)
            redisFree(c)
            throw RuntimeError(.engine, "Redis at \(self.address): \(why)")
        }
        if case .tcp = self.address.endpoint { _ = redisEnableKeepAlive(c) }
        _ = redisSetTimeout(c, tv)
        self.context = c
    }

    private static func errorString(_ c: UnsafeMutablePointer<redisContext>) -> String {
        withUnsafeBytes(of: c.pointee.errstr) { raw in
            String(decoding: raw.prefix { $0 != 0 }, as: UTF8.self)
        }
    }

    /// Sends one command and waits for its reply. A broken or timed-out connection throws (and
    /// is dropped); so does an error reply (`-LOADING`, `-WRONGTYPE`...), which keeps the link,
    /// unless `errorReplies` is set: then it comes back as `.error`. `readTimeout` overrides the
    /// link's timeout for this command (for a blocking read).
    ///
    /// hiredis writes with plain `write`: on a connection Redis has closed, that raises SIGPIPE,
    /// which would end a process that does not ignore it. The signal is blocked on this thread
    /// for the call and a SIGPIPE it raised is taken off the thread before it is unblocked.
    func command(_ arguments: [[UInt8]], readTimeout: Milliseconds? = nil, errorReplies: Bool = false) throws(RuntimeError) -> RedisReply {
        var pipe = sigset_t()
        sigemptyset(&pipe)
        sigaddset(&pipe, SIGPIPE)
        var previous = sigset_t()
        pthread_sigmask(SIG_BLOCK, &pipe, &previous)
        defer {
            var pending = sigset_t()
            sigpending(&pending)
            if sigismember(&pending, SIGPIPE) == 1 && sigismember(&previous, SIGPIPE) == 0 {
                var now = timespec(tv_sec: 0, tv_nsec: 0)
                _ = sigtimedwait(&pipe, nil, &now)
            }
            pthread_sigmask(SIG_SETMASK, &previous, nil)
        }
        let reply = try self.send(arguments, readTimeout: readTimeout)
        if case .error(let message) = reply, !errorReplies {
            throw RuntimeError(.engine, "Redis at \(self.address): \(message)")
        }
        return reply
    }

    private func send(_ arguments: [[UInt8]], readTimeout: Milliseconds?) throws(RuntimeError) -> RedisReply {
        try self.connect()
        guard let c = self.context else { throw RuntimeError(.engine, "Redis at \(self.address): not connected") }
        if let t = readTimeout { _ = redisSetTimeout(c, self.interval(t)) }
        defer { if readTimeout != nil, let c = self.context { _ = redisSetTimeout(c, self.interval(self.timeout)) } }
        var pointers: [UnsafePointer<CChar>?] = []
        var lengths: [Int] = []
        let storage = arguments.map { argument -> UnsafeMutableRawBufferPointer in
            let b = UnsafeMutableRawBufferPointer.allocate(byteCount: max(argument.count, 1), alignment: 1)
            if !argument.isEmpty { argument.withUnsafeBytes { b.copyMemory(from: $0) } }
            return b
        }
        defer { for b in storage { b.deallocate() } }
        for (b, argument) in zip(storage, arguments) {
            pointers.append(UnsafePointer(b.baseAddress!.assumingMemoryBound(to: CChar.self)))
            lengths.append(argument.count)
        }
        let raw = pointers.withUnsafeMutableBufferPointer { p in
            lengths.withUnsafeBufferPointer { l in redisCommandArgv(c, Int32(arguments.count), p.baseAddress, l.baseAddress) }
        }
        guard let reply = raw?.assumingMemoryBound(to: redisReply.self) else {
            let why = Self.errorString(c)
            self.disconnect()
            throw RuntimeError(.engine, "Redis at \(self.address): \(why.isEmpty ? "connection lost" : why)")
        }
        defer { freeReplyObject(raw) }
        return RedisReply(UnsafePointer(reply))
    }

    /// `command` with string arguments.
    func command(_ arguments: String..., readTimeout: Milliseconds? = nil) throws(RuntimeError) -> RedisReply {
        try self.command(arguments.map { Array($0.utf8) }, readTimeout: readTimeout)
    }
}
