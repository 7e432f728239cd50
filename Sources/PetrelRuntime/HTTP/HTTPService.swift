import Glibc
import PetrelCore

/// A plain HTTP request on the server's port (not a WebSocket upgrade), with its body.
public struct HTTPRequest: Sendable {
    public let head: HTTPRequestHead
    /// The body (requests with `Content-Length`, up to `ServerConfiguration.maxRequestBody`).
    public let body: [UInt8]
    public let peer: SocketAddress
    /// The client's address: the peer's, or what a PROXY header or a trusted proxy's
    /// `Forwarded`/`X-Forwarded-For` said (`ServerConfiguration.trustedProxies`).
    public let clientAddress: String

    public init(head: HTTPRequestHead, body: [UInt8], peer: SocketAddress, clientAddress: String? = nil) {
        self.head = head
        self.body = body
        self.peer = peer
        self.clientAddress = clientAddress ?? peer.description
    }

    public var method: String { self.head.method }
    public var path: String { self.head.path }
    public func queryParameter(_ name: String) -> String? { self.head.queryParameter(name) }
}

/// How the server answers a plain HTTP request on its port.
public enum HTTPAnswer: Sendable {
    /// A complete response (status line, fields and body). The connection is kept for the next
    /// request (HTTP/1.1 keep-alive) when the response says how long it is and does not say
    /// `Connection: close`, and the client and `ServerConfiguration.keepAliveTimeout` allow it;
    /// the server adds `Connection: close` when it will close.
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

    /// The head, and what goes first on the stream: CORS fields when the page's origin is
    /// allowed, a `retry:` field, and padding for proxies that buffer.
    static func opening(fields: String, retry: Int, padding: Int) -> [UInt8] {
        guard !fields.isEmpty || retry > 0 || padding > 0 else { return self.head }
        var out = ResponseHead.inserting(fields, into: self.head) ?? self.head
        if retry > 0 { out += Array("retry: \(retry)\n\n".utf8) }
        if padding > 0 {
            out.append(UInt8(ascii: ":"))
            out += [UInt8](repeating: 0x20, count: padding)
            out += [0x0A, 0x0A]
        }
        return out
    }

    /// A comment line that keeps intermediaries from timing the stream out.
    static let keepalive = Array(": keepalive\n\n".utf8)
    /// An empty event: a heartbeat scripts see (`ConnectionOptions.heartbeatMessages`).
    static let heartbeat = Array("data:\n\n".utf8)

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

    /// `/petrel.js`: the root's own file if it has one, else the copy built into the library.
    func respondPetrelJS(_ head: HTTPRequestHead) -> [UInt8] {
        if access(self.root + "/petrel.js", F_OK) == 0 { return self.respond(head) }
        guard head.method == "GET" || head.method == "HEAD" else {
            return HTTPResponse.error(status: 405, body: "method not allowed", headers: [HTTPField(name: "Allow", value: "GET, HEAD")])
        }
        let js = Self.builtInPetrelJS
        return Self.file(head, contentType: "text/javascript; charset=utf-8", etag: js.etag, size: js.body.count) { js.body }
    }

    /// The built-in copy, and its tag: FNV-1a of the text, so that the same library gives the
    /// same tag in every process.
    static let builtInPetrelJS: (body: [UInt8], etag: String) = {
        let body = Array(PetrelJS.source.utf8)
        var hash: UInt64 = 0xcbf2_9ce4_8422_2325
        for b in body { hash = (hash ^ UInt64(b)) &* 0x100_0000_01b3 }
        return (body, "\"petrel-\(String(hash, radix: 16))\"")
    }()

    /// A file's response: 304 when the client has `etag`, else 200 with the body `read` gives
    /// (not read at all for a 304; sent without it for HEAD), or `read`'s error response.
    static func file(_ head: HTTPRequestHead, contentType: String, etag: String, size: Int, read: () -> [UInt8]?) -> [UInt8] {
        var fields = [
            HTTPField(name: "Content-Type", value: contentType),
            HTTPField(name: "ETag", value: etag),
            HTTPField(name: "Cache-Control", value: "no-cache"),
            HTTPField(name: "X-Content-Type-Options", value: "nosniff"),
        ]
        if head.headers.listElements("If-None-Match").contains(etag) {
            fields.removeFirst()
            return HTTPResponse.make(status: 304, headers: fields)
        }
        guard let body = read() else { return HTTPResponse.error(status: 500, body: "read failed") }
        var response = HTTPResponse.make(status: 200, headers: fields, body: body)
        if head.method == "HEAD" { response.removeLast(size) }
        return response
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
        return Self.file(head, contentType: Self.contentType(of: resolved), etag: etag, size: size) {
            var body = [UInt8](repeating: 0, count: size)
            var got = 0
            while got < size {
                let n = body.withUnsafeMutableBytes { pread(fd, $0.baseAddress! + got, size - got, off_t(got)) }
                if n < 0 && errno == EINTR { continue }
                guard n > 0 else { return nil }
                got += n
            }
            return body
        }
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

/// What the server needs to know of a complete response before it goes out, and the fields it
/// adds (CORS, `Connection: close`).
enum ResponseHead {
    struct Facts {
        let status: Int
        /// Where the status line's CR LF starts: fields are inserted there.
        let statusLineEnd: Int
        /// The response says `Connection: close`.
        let closes: Bool
        /// Its end is known without a close: `Content-Length`, or a status that has no body.
        let delimited: Bool
        /// The bytes after the head.
        let bodyCount: Int
        /// `Content-Length` (or its absence on a status with no body) agrees with those bytes.
        let lengthMatches: Bool
    }

    /// Nil when `response` has no complete head (then it is sent as it is and the connection closes).
    static func inspect(_ response: [UInt8]) -> Facts? {
        let crlf: [UInt8] = [0x0D, 0x0A]
        guard let lineEnd = self.find(crlf, in: response, from: 0), response.count >= 12,
            response.starts(with: Array("HTTP/1.".utf8))
        else { return nil }
        let status = response[9..<12].reduce(0) { $0 * 10 + Int($1) - 48 }
        var closes = false
        var length = false
        var declared: Int? = nil
        var at = lineEnd + 2
        while let end = self.find(crlf, in: response, from: at), end > at {
            let line = response[at..<end]
            if let colon = line.firstIndex(of: UInt8(ascii: ":")) {
                let name = String(decoding: line[..<colon], as: UTF8.self)
                let value = String(decoding: line[(colon + 1)...], as: UTF8.self)
                if ASCII.equalsIgnoringCase(name, "Connection") {
                    closes = closes || value.split(separator: ",").contains { ASCII.equalsIgnoringCase(String($0.trimmingSpaces), "close") }
                } else if ASCII.equalsIgnoringCase(name, "Content-Length") {
                    length = true
                    declared = Int(String(value[...].trimmingSpaces))
                }
            }
            at = end + 2
        }
        guard self.find(crlf, in: response, from: at) == at else { return nil }  // no blank line: incomplete
        let bodiless = status < 200 || status == 204 || status == 304
        let bodyCount = response.count - (at + 2)
        let matches = bodiless ? bodyCount == 0 : declared == bodyCount
        return Facts(status: status, statusLineEnd: lineEnd, closes: closes, delimited: length || bodiless, bodyCount: bodyCount, lengthMatches: matches)
    }

    /// `response` with `fields` (whole lines, each ending CR LF) after its status line.
    static func inserting(_ fields: String, into response: [UInt8]) -> [UInt8]? {
        guard let facts = self.inspect(response) else { return nil }
        return self.inserting(fields, into: response, at: facts.statusLineEnd)
    }

    static func inserting(_ fields: String, into response: [UInt8], at statusLineEnd: Int) -> [UInt8] {
        guard !fields.isEmpty else { return response }
        var out: [UInt8] = []
        out.reserveCapacity(response.count + fields.utf8.count)
        out += response[..<(statusLineEnd + 2)]
        out += Array(fields.utf8)
        out += response[(statusLineEnd + 2)...]
        return out
    }

    private static func find(_ needle: [UInt8], in bytes: [UInt8], from: Int) -> Int? {
        var i = from
        while i + needle.count <= bytes.count {
            if bytes[i] == needle[0] && bytes[i + 1] == needle[1] { return i }
            i += 1
        }
        return nil
    }
}

extension Substring {
    fileprivate var trimmingSpaces: Substring {
        var s = self
        while let f = s.first, f == " " || f == "\t" { s = s.dropFirst() }
        while let l = s.last, l == " " || l == "\t" { s = s.dropLast() }
        return s
    }
}

extension CORSConfiguration {
    enum Verdict {
        /// No `Origin`, or the server's own: only `Vary: Origin` (a shared cache must not give
        /// this response to another origin).
        case sameOrigin
        /// The fields to add to the response.
        case allowed(origin: String, fields: String)
        case refused(origin: String)
    }

    func verdict(_ head: HTTPRequestHead) -> Verdict {
        guard let origin = head.headers["Origin"] else { return .sameOrigin }
        let u = Array(origin.utf8)
        if let host = head.headers["Host"], let colon = u.firstIndex(of: UInt8(ascii: ":")),
            u[colon...].starts(with: Array("://".utf8)),
            ASCII.equalsIgnoringCase(String(decoding: u[(colon + 3)...], as: UTF8.self), host)
        {
            return .sameOrigin
        }
        if self.allowedOrigins.contains("*") {
            return .allowed(origin: origin, fields: "Access-Control-Allow-Origin: *\r\n")
        }
        guard self.allowedOrigins.contains(where: { ASCII.equalsIgnoringCase($0, origin) }) else { return .refused(origin: origin) }
        var fields = "Access-Control-Allow-Origin: \(origin)\r\nVary: Origin\r\n"
        if self.allowCredentials { fields += "Access-Control-Allow-Credentials: true\r\n" }
        return .allowed(origin: origin, fields: fields)
    }

    /// The answer to a preflight from an allowed origin (its fields are already in `fields`).
    func preflight(_ head: HTTPRequestHead, fields: String) -> [UInt8] {
        var headers = [
            HTTPField(name: "Access-Control-Allow-Methods", value: "GET, HEAD, POST, OPTIONS"),
            HTTPField(name: "Access-Control-Max-Age", value: String(self.maxAge)),
        ]
        if !self.allowedHeaders.isEmpty {
            headers.append(HTTPField(name: "Access-Control-Allow-Headers", value: self.allowedHeaders.joined(separator: ", ")))
        }
        return ResponseHead.inserting(fields, into: HTTPResponse.make(status: 204, headers: headers)) ?? []
    }
}
