/// The HTTP/1.1 pieces the opening handshake needs (RFC 9110/9112): reading a head that may arrive
/// one byte at a time, parsing the start line and fields, and writing responses.

/// One header field, in the order and spelling it arrived.
public struct HTTPField: Hashable, Sendable {
    public var name: String
    public var value: String

    public init(name: String, value: String) {
        self.name = name
        self.value = value
    }
}

/// The fields of a request or response head.
public struct HTTPHeaders: Hashable, Sendable, Sequence {
    public var fields: [HTTPField]

    public init(_ fields: [HTTPField] = []) { self.fields = fields }

    public func makeIterator() -> IndexingIterator<[HTTPField]> { self.fields.makeIterator() }

    /// Every value of the fields named `name` (compared without regard to ASCII case).
    public func values(_ name: String) -> [String] {
        self.fields.lazy.filter { ASCII.equalsIgnoringCase($0.name, name) }.map(\.value)
    }

    /// The value of the first field named `name`.
    public func first(_ name: String) -> String? {
        self.fields.first { ASCII.equalsIgnoringCase($0.name, name) }?.value
    }

    public subscript(_ name: String) -> String? { self.first(name) }

    /// The comma-separated elements of every field named `name` (RFC 9110 §5.6.1), trimmed,
    /// with empty elements dropped.
    public func listElements(_ name: String) -> [String] {
        var out: [String] = []
        for value in self.values(name) {
            for piece in value.utf8.split(separator: UInt8(ascii: ","), omittingEmptySubsequences: false) {
                let trimmed = ASCII.trim(piece)
                if !trimmed.isEmpty { out.append(String(decoding: trimmed, as: UTF8.self)) }
            }
        }
        return out
    }

    /// Whether any element of the list field `name` equals `token`, ignoring ASCII case.
    public func containsToken(_ name: String, _ token: String) -> Bool {
        self.listElements(name).contains { ASCII.equalsIgnoringCase($0, token) }
    }
}

/// Collects an HTTP head (start line and fields, up to the empty line) from bytes that may arrive
/// in any split, up to a size limit. Bytes after the head are left to the caller.
public struct HTTPHeadReader: Sendable {
    public enum Progress: Equatable, Sendable {
        /// All input was taken; the head is not complete yet.
        case needMore
        /// The head is complete; `consumed` bytes of the last input belonged to it, the rest did not.
        case complete(consumed: Int)
        /// The head exceeds `limit` bytes.
        case tooLarge
    }

    public let limit: Int
    /// The head's bytes so far (complete after `.complete`).
    public private(set) var bytes: [UInt8] = []
    private var scanned = 0
    private var done = false

    public init(limit: Int = 16 * 1024) {
        self.limit = limit
    }

    public mutating func feed(_ input: UnsafeRawBufferPointer) -> Progress {
        precondition(!self.done, "HTTPHeadReader fed after the head was complete")
        let before = self.bytes.count
        // Never hold more than limit + 1 bytes, whatever arrives at once.
        let room = self.limit + 1 - before
        let take = min(input.count, room)
        self.bytes.append(contentsOf: UnsafeRawBufferPointer(rebasing: input[0..<take]))
        // A head ends at an empty line: CRLF CRLF, or bare LF LF (RFC 9112 §2.2 lets us accept LF).
        var i = max(self.scanned, 1)
        let n = self.bytes.count
        while i < n {
            if self.bytes[i] == 0x0A {
                if self.bytes[i - 1] == 0x0A {
                    return self.finish(end: i + 1, before: before)
                }
                if i >= 2 && self.bytes[i - 1] == 0x0D && self.bytes[i - 2] == 0x0A {
                    return self.finish(end: i + 1, before: before)
                }
            }
            i += 1
        }
        self.scanned = n
        return n > self.limit ? .tooLarge : .needMore
    }

    private mutating func finish(end: Int, before: Int) -> Progress {
        if end > self.limit { return .tooLarge }
        self.bytes.removeSubrange(end...)
        self.done = true
        return .complete(consumed: end - before)
    }
}

/// A parsed request head.
public struct HTTPRequestHead: Sendable {
    public var method: String
    /// The request target as sent (origin-form: path plus optional `?query`).
    public var target: String
    public var version: String
    public var headers: HTTPHeaders

    /// The target up to `?`.
    public var path: String {
        guard let q = self.target.utf8.firstIndex(of: UInt8(ascii: "?")) else { return self.target }
        return String(self.target[..<q])
    }

    /// The target after `?`, or nil when there is none.
    public var query: String? {
        guard let q = self.target.utf8.firstIndex(of: UInt8(ascii: "?")) else { return nil }
        return String(self.target[self.target.utf8.index(after: q)...])
    }

    /// The decoded value of the first query parameter `name` (`application/x-www-form-urlencoded`:
    /// `+` is a space, `%XX` a byte), or nil when absent or not valid UTF-8 after decoding.
    public func queryParameter(_ name: String) -> String? {
        guard let query = self.query else { return nil }
        for pair in query.utf8.split(separator: UInt8(ascii: "&")) {
            let eq = pair.firstIndex(of: UInt8(ascii: "=")) ?? pair.endIndex
            guard let key = URLEncoding.decode(pair[..<eq], plusIsSpace: true), key == name else { continue }
            return eq == pair.endIndex ? "" : URLEncoding.decode(pair[pair.index(after: eq)...], plusIsSpace: true)
        }
        return nil
    }

    public init(method: String, target: String, version: String = "HTTP/1.1", headers: HTTPHeaders) {
        self.method = method
        self.target = target
        self.version = version
        self.headers = headers
    }

    /// Parses a complete head as collected by `HTTPHeadReader`.
    public static func parse(_ head: [UInt8], maxFieldCount: Int = 100) -> Result<HTTPRequestHead, HandshakeError> {
        switch HTTPParse.head(head, maxFieldCount: maxFieldCount) {
        case .failure(let e): return .failure(e)
        case .success(let (start, headers)):
            let parts = start.split(separator: UInt8(ascii: " "), omittingEmptySubsequences: false)
            guard parts.count == 3, !parts[0].isEmpty, !parts[1].isEmpty, parts[0].allSatisfy(ASCII.isTokenChar),
                parts[1].allSatisfy({ $0 > 0x20 && $0 < 0x7F })
            else { return .failure(.malformed("malformed request line")) }
            return .success(
                HTTPRequestHead(
                    method: String(decoding: parts[0], as: UTF8.self), target: String(decoding: parts[1], as: UTF8.self),
                    version: String(decoding: parts[2], as: UTF8.self), headers: headers))
        }
    }
}

/// Percent-decoding (RFC 3986 §2.1).
public enum URLEncoding {
    /// Decodes `%XX` escapes (and `+` as a space when asked); nil for a malformed escape or a
    /// result that is not UTF-8.
    public static func decode<C: Collection>(_ bytes: C, plusIsSpace: Bool = false) -> String? where C.Element == UInt8 {
        var out: [UInt8] = []
        out.reserveCapacity(bytes.count)
        var i = bytes.startIndex
        while i != bytes.endIndex {
            let b = bytes[i]
            if b == UInt8(ascii: "%") {
                let h = bytes.index(after: i)
                guard h != bytes.endIndex, bytes.index(after: h) != bytes.endIndex,
                    let hi = hex(bytes[h]), let lo = hex(bytes[bytes.index(after: h)])
                else { return nil }
                out.append(hi << 4 | lo)
                i = bytes.index(h, offsetBy: 2)
                continue
            }
            out.append(plusIsSpace && b == UInt8(ascii: "+") ? 0x20 : b)
            i = bytes.index(after: i)
        }
        var validator = UTF8Validator()
        guard out.withUnsafeBytes({ validator.validate($0) }) == nil, validator.isComplete else { return nil }
        return String(decoding: out, as: UTF8.self)
    }

    private static func hex(_ b: UInt8) -> UInt8? {
        switch b {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): return b - 0x30
        case UInt8(ascii: "a")...UInt8(ascii: "f"): return b - 0x57
        case UInt8(ascii: "A")...UInt8(ascii: "F"): return b - 0x37
        default: return nil
        }
    }
}

/// A parsed response head.
public struct HTTPResponseHead: Sendable {
    public var version: String
    public var status: Int
    public var reason: String
    public var headers: HTTPHeaders

    public init(version: String = "HTTP/1.1", status: Int, reason: String, headers: HTTPHeaders) {
        self.version = version
        self.status = status
        self.reason = reason
        self.headers = headers
    }

    public static func parse(_ head: [UInt8], maxFieldCount: Int = 100) -> Result<HTTPResponseHead, ClientHandshakeError> {
        switch HTTPParse.head(head, maxFieldCount: maxFieldCount) {
        case .failure(let e): return .failure(.malformedResponse(e.message))
        case .success(let (start, headers)):
            // status-line = HTTP-version SP status-code SP [ reason-phrase ]
            let parts = start.split(separator: UInt8(ascii: " "), maxSplits: 2, omittingEmptySubsequences: false)
            guard parts.count >= 2, parts[0].starts(with: Array("HTTP/1.".utf8)), parts[1].count == 3,
                parts[1].allSatisfy({ $0 >= 0x30 && $0 <= 0x39 })
            else { return .failure(.malformedResponse("malformed status line")) }
            let status = parts[1].reduce(0) { $0 * 10 + Int($1 - 0x30) }
            // RFC 9110 §15: every valid status code is within 100–599.
            guard (100...599).contains(status) else { return .failure(.malformedResponse("status code \(status) outside 100-599")) }
            return .success(
                HTTPResponseHead(
                    version: String(decoding: parts[0], as: UTF8.self), status: status,
                    reason: parts.count > 2 ? String(decoding: parts[2], as: UTF8.self) : "", headers: headers))
        }
    }
}

enum HTTPParse {
    /// Splits a head into its start line and fields. Rejects obsolete line folding, whitespace
    /// before a colon (RFC 9112 §5.1), control characters, and more than `maxFieldCount` fields.
    static func head(_ head: [UInt8], maxFieldCount: Int) -> Result<(ArraySlice<UInt8>, HTTPHeaders), HandshakeError> {
        var lines = head.split(separator: 0x0A, omittingEmptySubsequences: false).map { line -> ArraySlice<UInt8> in
            line.last == 0x0D ? line.dropLast() : line
        }
        while let last = lines.last, last.isEmpty { lines.removeLast() }
        guard let start = lines.first, !start.isEmpty else { return .failure(.malformed("empty request")) }
        if start.contains(where: { $0 < 0x20 || $0 == 0x7F }) { return .failure(.malformed("control character in start line")) }
        var fields: [HTTPField] = []
        fields.reserveCapacity(min(lines.count, 32))
        for line in lines.dropFirst() {
            if fields.count >= maxFieldCount { return .failure(.tooManyHeaders(limit: maxFieldCount)) }
            guard let first = line.first else { return .failure(.malformed("empty header line")) }
            if first == 0x20 || first == 0x09 { return .failure(.malformed("obsolete header line folding")) }
            guard let colon = line.firstIndex(of: UInt8(ascii: ":")) else {
                return .failure(.malformed("header line without a colon"))
            }
            let name = line[line.startIndex..<colon]
            guard !name.isEmpty, name.allSatisfy(ASCII.isTokenChar) else {
                return .failure(.malformed("invalid header name"))
            }
            let value = ASCII.trim(line[line.index(after: colon)...])
            if value.contains(where: { ($0 < 0x20 && $0 != 0x09) || $0 == 0x7F }) {
                return .failure(.malformed("control character in header value"))
            }
            fields.append(
                HTTPField(name: String(decoding: name, as: UTF8.self), value: String(decoding: value, as: UTF8.self)))
        }
        return .success((start, HTTPHeaders(fields)))
    }

    static func reasonPhrase(_ status: Int) -> String {
        switch status {
        case 101: return "Switching Protocols"
        case 200: return "OK"
        case 204: return "No Content"
        case 304: return "Not Modified"
        case 400: return "Bad Request"
        case 401: return "Unauthorized"
        case 403: return "Forbidden"
        case 404: return "Not Found"
        case 405: return "Method Not Allowed"
        case 408: return "Request Timeout"
        case 411: return "Length Required"
        case 413: return "Content Too Large"
        case 426: return "Upgrade Required"
        case 429: return "Too Many Requests"
        case 431: return "Request Header Fields Too Large"
        case 500: return "Internal Server Error"
        case 503: return "Service Unavailable"
        default: return "Error"
        }
    }
}

/// Writes an HTTP/1.1 response head and body.
public enum HTTPResponse {
    /// A complete response with a `text/plain` body and `Connection: close`.
    public static func error(status: Int, body: String, headers: [HTTPField] = []) -> [UInt8] {
        var extra = headers
        extra.append(HTTPField(name: "Content-Type", value: "text/plain; charset=utf-8"))
        extra.append(HTTPField(name: "Connection", value: "close"))
        return self.make(status: status, headers: extra, body: Array((body + "\n").utf8))
    }

    /// A response head with `Content-Length` for `body` (omitted for 1xx), then the body.
    public static func make(status: Int, reason: String? = nil, headers: [HTTPField], body: [UInt8] = []) -> [UInt8] {
        var s = "HTTP/1.1 \(status) \(reason ?? HTTPParse.reasonPhrase(status))\r\n"
        for f in headers { s += "\(f.name): \(f.value)\r\n" }
        if status >= 200 { s += "Content-Length: \(body.count)\r\n" }
        s += "\r\n"
        return Array(s.utf8) + body
    }
}

/// ASCII helpers; header names and tokens are ASCII and case-insensitive (RFC 9110 §5.1).
public enum ASCII {
    @inlinable
    public static func lower(_ b: UInt8) -> UInt8 { (b >= 0x41 && b <= 0x5A) ? b | 0x20 : b }

    @inlinable
    public static func upper(_ b: UInt8) -> UInt8 { (b >= 0x61 && b <= 0x7A) ? b & ~0x20 : b }

    public static func equalsIgnoringCase(_ a: String, _ b: String) -> Bool {
        a.utf8.count == b.utf8.count && zip(a.utf8, b.utf8).allSatisfy { lower($0) == lower($1) }
    }

    /// tchar (RFC 9110 §5.6.2).
    @inlinable
    public static func isTokenChar(_ b: UInt8) -> Bool {
        switch b {
        case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "0")...UInt8(ascii: "9"):
            return true
        case UInt8(ascii: "!"), UInt8(ascii: "#"), UInt8(ascii: "$"), UInt8(ascii: "%"), UInt8(ascii: "&"),
            UInt8(ascii: "'"), UInt8(ascii: "*"), UInt8(ascii: "+"), UInt8(ascii: "-"), UInt8(ascii: "."),
            UInt8(ascii: "^"), UInt8(ascii: "_"), UInt8(ascii: "`"), UInt8(ascii: "|"), UInt8(ascii: "~"):
            return true
        default:
            return false
        }
    }

    public static func isToken(_ s: String) -> Bool { !s.isEmpty && s.utf8.allSatisfy(isTokenChar) }

    /// Drops optional whitespace (SP, HTAB) at both ends.
    static func trim<C: BidirectionalCollection>(_ c: C) -> C.SubSequence where C.Element == UInt8 {
        var s = c[...]
        while let f = s.first, f == 0x20 || f == 0x09 { s = s.dropFirst() }
        while let l = s.last, l == 0x20 || l == 0x09 { s = s.dropLast() }
        return s
    }
}
