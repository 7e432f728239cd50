import Glibc
import PetrelCore

/// A plain HTTP request on the server's port (not a WebSocket upgrade), with its body.
public struct HTTPRequest: Sendable {
    public let head: HTTPRequestHead
    /// The body (requests with `Content-Length`, up to `ServerConfiguration.maxRequestBody`).
    public let body: [UInt8]
    public let peer: SocketAddress

    public init(head: HTTPRequestHead, body: [UInt8], peer: SocketAddress) {
        self.head = head
        self.body = body
        self.peer = peer
    }

    public var method: String { self.head.method }
    public var path: String { self.head.path }
    public func queryParameter(_ name: String) -> String? { self.head.queryParameter(name) }
}

/// How the server answers a plain HTTP request on its port.
public enum HTTPAnswer: Sendable {
    /// A complete response (status line, fields and body); the connection closes after it.
    case respond([UInt8])
    /// Turn the request into a Server-Sent Events stream: the server writes the
    /// `text/event-stream` head, `onOpen` fires, and what is sent to the connection (messages,
    /// topic messages) goes out as events.
    case eventStream

    /// A response with a body of type `contentType`.
    public static func response(status: Int, contentType: String, body: [UInt8], headers: [HTTPField] = []) -> HTTPAnswer {
        var fields = headers
        fields.append(HTTPField(name: "Content-Type", value: contentType))
        fields.append(HTTPField(name: "Cache-Control", value: "no-store"))
        fields.append(HTTPField(name: "Connection", value: "close"))
        return .respond(HTTPResponse.make(status: status, headers: fields, body: body))
    }
}

/// Server-Sent Events framing (HTML Living Standard, "Server-sent events").
public enum ServerSentEvents {
    /// The response head that opens a stream. It has no length: the stream ends when the
    /// connection does.
    static let head = Array(
        ("HTTP/1.1 200 OK\r\nContent-Type: text/event-stream; charset=utf-8\r\nCache-Control: no-store\r\n"
            + "X-Accel-Buffering: no\r\nConnection: close\r\n\r\n").utf8)

    /// A comment line that keeps intermediaries from timing the stream out.
    static let keepalive = Array(": keepalive\n\n".utf8)

    /// One event: `id:` (when nonzero), then a `data:` line per line of `payload` (CR, LF and
    /// CRLF all end a line, as the parser on the other side splits them).
    public static func event(id: UInt64, payload: UnsafeRawBufferPointer) -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(payload.count + 32)
        if id != 0 { out += Array("id: \(id)\n".utf8) }
        out += Array("data: ".utf8)
        var i = 0
        while i < payload.count {
            let b = payload[i]
            if b == 0x0D || b == 0x0A {
                out += Array("\ndata: ".utf8)
                if b == 0x0D && i + 1 < payload.count && payload[i + 1] == 0x0A { i += 1 }
            } else {
                out.append(b)
            }
            i += 1
        }
        out += [0x0A, 0x0A]
        return out
    }
}

/// Static files under a root folder, for GET and HEAD. Files are read whole on the loop thread:
/// meant for a page and its assets, not for large downloads.
struct StaticFiles: Sendable {
    /// The root, resolved (no symbolic links, no trailing slash).
    let root: String
    let maxFileSize: Int

    init?(root: String, maxFileSize: Int) {
        guard let resolved = realpath(root, nil) else { return nil }
        defer { free(resolved) }
        var r = String(cString: resolved)
        while r.count > 1 && r.hasSuffix("/") { r.removeLast() }
        self.root = r
        self.maxFileSize = maxFileSize
    }

    /// The response for `head`: the file, 304, or an error status.
    func respond(_ head: HTTPRequestHead) -> [UInt8] {
        guard head.method == "GET" || head.method == "HEAD" else {
            return HTTPResponse.error(status: 405, body: "method not allowed", headers: [HTTPField(name: "Allow", value: "GET, HEAD")])
        }
        guard let decoded = URLEncoding.decode(head.path.utf8), decoded.hasPrefix("/"), !decoded.utf8.contains(0) else {
            return HTTPResponse.error(status: 400, body: "bad path")
        }
        let segments = decoded.split(separator: "/", omittingEmptySubsequences: true)
        if segments.contains(where: { $0 == ".." || $0 == "." || $0.hasPrefix(".") }) {
            return HTTPResponse.error(status: 404, body: "not found")
        }
        var relative = segments.joined(separator: "/")
        if decoded.hasSuffix("/") { relative += relative.isEmpty ? "index.html" : "/index.html" }
        // Resolve links and check that the file is still under the root.
        guard let resolvedC = realpath(self.root + "/" + relative, nil) else {
            return HTTPResponse.error(status: 404, body: "not found")
        }
        let resolved = String(cString: resolvedC)
        free(resolvedC)
        guard resolved.hasPrefix(self.root == "/" ? "/" : self.root + "/") else { return HTTPResponse.error(status: 404, body: "not found") }
        let fd = open(resolved, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return HTTPResponse.error(status: 404, body: "not found") }
        defer { close(fd) }
        var st = stat()
        guard fstat(fd, &st) == 0, (st.st_mode & S_IFMT) == S_IFREG else {
            return HTTPResponse.error(status: 404, body: "not found")
        }
        let size = Int(st.st_size)
        guard size <= self.maxFileSize else { return HTTPResponse.error(status: 403, body: "file over the static size limit") }
        let etag = "\"\(String(UInt64(st.st_mtim.tv_sec) &* 1_000_000_000 &+ UInt64(st.st_mtim.tv_nsec), radix: 16))-\(String(size, radix: 16))\""
        var fields = [
            HTTPField(name: "Content-Type", value: Self.contentType(of: resolved)),
            HTTPField(name: "ETag", value: etag),
            HTTPField(name: "Cache-Control", value: "no-cache"),
            HTTPField(name: "X-Content-Type-Options", value: "nosniff"),
            HTTPField(name: "Connection", value: "close"),
        ]
        if head.headers.listElements("If-None-Match").contains(etag) {
            fields.removeFirst()
            return HTTPResponse.make(status: 304, headers: fields)
        }
        var body = [UInt8](repeating: 0, count: size)
        var got = 0
        while got < size {
            let n = body.withUnsafeMutableBytes { pread(fd, $0.baseAddress! + got, size - got, off_t(got)) }
            if n < 0 && errno == EINTR { continue }
            guard n > 0 else { return HTTPResponse.error(status: 500, body: "read failed") }
            got += n
        }
        if head.method == "HEAD" {
            var response = HTTPResponse.make(status: 200, headers: fields, body: body)
            response.removeLast(size)
            return response
        }
        return HTTPResponse.make(status: 200, headers: fields, body: body)
    }

    static func contentType(of path: String) -> String {
        let ext = path.split(separator: ".").last.map { $0.lowercased() } ?? ""
        switch ext {
        case "html", "htm": return "text/html; charset=utf-8"
        case "js", "mjs": return "text/javascript; charset=utf-8"
        case "css": return "text/css; charset=utf-8"
        case "json": return "application/json"
        case "csv": return "text/csv; charset=utf-8"
        case "txt": return "text/plain; charset=utf-8"
        case "svg": return "image/svg+xml"
        case "png": return "image/png"
        case "jpg", "jpeg": return "image/jpeg"
        case "gif": return "image/gif"
        case "webp": return "image/webp"
        case "ico": return "image/x-icon"
        case "wasm": return "application/wasm"
        case "woff2": return "font/woff2"
        default: return "application/octet-stream"
        }
    }
}
