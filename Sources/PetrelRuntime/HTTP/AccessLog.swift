import Glibc
import PetrelCore

/// Where the server's access log goes (`ServerConfiguration.accessLog`): one entry per plain
/// HTTP request answered, per upgrade (WebSocket, STOMP, or an event stream opening) and per
/// close of an upgraded connection.
public enum AccessLog: Sendable {
    /// Lines (`AccessLogEntry.line`) appended to this file, opened when the server starts
    /// (created with mode 0644 if missing). Each line is one `write`, from the loop thread
    /// that served it: lines from several loops do not interleave.
    case file(String)
    /// Each entry to this function, on the loop thread that served it (keep it short: the
    /// loop waits for it).
    case callback(@Sendable (AccessLogEntry) -> Void)
}

/// One line of the access log.
public struct AccessLogEntry: Sendable {
    public enum Event: String, Sendable {
        /// A plain HTTP request and its response (routes, static files, refusals).
        case request
        /// A WebSocket upgrade answered 101, or an event stream opened (200).
        case upgrade
        /// An upgraded connection ended: its totals.
        case close
    }

    public var event: Event
    /// Wall-clock time of the entry, in milliseconds since 1970 (UTC).
    public var time: UInt64
    /// The client's address: the peer, or the address a trusted proxy reported for it.
    public var peer: String
    public var connection: ConnectionID
    /// "-" when the request did not parse.
    public var method: String
    public var path: String
    /// The HTTP status; for a close, the WebSocket close code (an event stream's close: 0).
    public var status: Int
    /// "http", "websocket", "stomp" or "sse".
    public var transport: String
    /// Bytes read and written on the socket (TLS records included) for the request and its
    /// response; for a close, over the connection's life.
    public var bytesIn: UInt64
    public var bytesOut: UInt64
    /// From the request's first byte to its response queued; for a close, since the upgrade.
    public var durationMilliseconds: UInt64

    /// `2026-12-01T04:10:00.123Z 192.0.2.1:5555 request GET /ack 200 http in=182 out=97 1ms #3.17`
    public var line: String {
        "\(AccessLogEntry.timestamp(self.time)) \(self.peer) \(self.event.rawValue) \(self.method) \(self.path) \(self.status) "
            + "\(self.transport) in=\(self.bytesIn) out=\(self.bytesOut) \(self.durationMilliseconds)ms #\(self.connection)"
    }

    /// ISO 8601 in UTC, to the millisecond.
    static func timestamp(_ ms: UInt64) -> String {
        var seconds = time_t(ms / 1000)
        var t = tm()
        gmtime_r(&seconds, &t)
        func two(_ v: Int32) -> String { v < 10 ? "0\(v)" : "\(v)" }
        let millis = ms % 1000
        let m = millis < 10 ? "00\(millis)" : millis < 100 ? "0\(millis)" : "\(millis)"
        return "\(t.tm_year + 1900)-\(two(t.tm_mon + 1))-\(two(t.tm_mday))T\(two(t.tm_hour)):\(two(t.tm_min)):\(two(t.tm_sec)).\(m)Z"
    }

    static func now() -> UInt64 {
        var ts = timespec()
        clock_gettime(CLOCK_REALTIME, &ts)
        return UInt64(ts.tv_sec) * 1000 + UInt64(ts.tv_nsec) / 1_000_000
    }
}

/// The server's open access log.
final class AccessLogWriter: Sendable {
    let fd: Int32
    let callback: (@Sendable (AccessLogEntry) -> Void)?

    init(_ log: AccessLog) throws(RuntimeError) {
        switch log {
        case .file(let path):
            let fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0o644)
            guard fd >= 0 else { throw RuntimeError(.configuration, "access log \(path): \(String(cString: strerror(errno)))", errno: errno) }
            self.fd = fd
            self.callback = nil
        case .callback(let f):
            self.fd = -1
            self.callback = f
        }
    }

    deinit { if self.fd >= 0 { close(self.fd) } }

    func write(_ entry: AccessLogEntry) {
        if let f = self.callback { return f(entry) }
        let bytes = Array((entry.line + "\n").utf8)
        var done = 0
        while done < bytes.count {
            let n = bytes.withUnsafeBytes { Glibc.write(self.fd, $0.baseAddress! + done, bytes.count - done) }
            if n < 0 && errno == EINTR { continue }
            guard n > 0 else { return }  // a full disk loses lines, not the server
            done += n
        }
    }
}

/// The counts behind a connection's entries (in its extras, made when the server logs).
struct AccessCounts {
    var bytesIn: UInt64 = 0
    var bytesOut: UInt64 = 0
    /// Where the current request (or the upgraded connection) started: time and byte counts.
    var startedAt: UInt64 = AccessLogEntry.now()
    var inAtStart: UInt64 = 0
    var outAtStart: UInt64 = 0
    var transport = "http"
    var method = "-"
    var path = "-"
}

extension Connection {
    /// Counts `n` bytes read or written, when the server keeps an access log.
    @inline(__always)
    func countIn(_ n: Int) { if self.state.pointee.counting { self.more.access.bytesIn &+= UInt64(n) } }
    @inline(__always)
    func countOut(_ n: Int) { if self.state.pointee.counting { self.more.access.bytesOut &+= UInt64(n) } }

    /// Writes an entry for what just happened and starts counting afresh: `out` is the size of
    /// the response just queued (a request's or an upgrade's), nil for a close (the bytes
    /// written since the upgrade).
    func logAccess(_ event: AccessLogEntry.Event, status: Int, out: Int? = nil) {
        guard self.state.pointee.counting, let log = self.server?.accessLog else { return }
        let e = self.more
        let now = AccessLogEntry.now()
        let a = e.access
        let written = out.map { UInt64($0) } ?? (a.bytesOut > a.outAtStart ? a.bytesOut - a.outAtStart : 0)
        log.write(AccessLogEntry(
            event: event, time: now, peer: self.clientAddress, connection: self.id, method: a.method, path: a.path, status: status,
            transport: a.transport, bytesIn: a.bytesIn - a.inAtStart, bytesOut: written,
            durationMilliseconds: now >= a.startedAt ? now - a.startedAt : 0))
        e.access.startedAt = now
        e.access.inAtStart = a.bytesIn
        e.access.outAtStart = a.bytesOut + UInt64(out ?? 0)
    }

    /// The request being answered, for its entry.
    func noteRequest(_ head: HTTPRequestHead) {
        guard self.state.pointee.counting else { return }
        self.more.access.method = head.method
        self.more.access.path = head.path
    }
}
