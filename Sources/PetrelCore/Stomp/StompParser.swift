/// Limits on what one STOMP frame may hold. Crossing one is a protocol error: the server answers
/// with an `ERROR` frame and closes.
public struct StompLimits: Hashable, Sendable {
    /// Header lines in one frame (default 64).
    public var maxHeaders = 64
    /// Bytes in the command line or in one header line, as written (escapes count twice; default 8 KiB).
    public var maxLineBytes = 8 * 1024
    /// Bytes of one frame's body (default 1 MiB). A `content-length` over it is refused before
    /// any of the body is read.
    public var maxBodyBytes = 1 << 20

    public init(maxHeaders: Int = 64, maxLineBytes: Int = 8 * 1024, maxBodyBytes: Int = 1 << 20) {
        self.maxHeaders = maxHeaders
        self.maxLineBytes = maxLineBytes
        self.maxBodyBytes = maxBodyBytes
    }
}

/// Why STOMP input was refused. Every case ends the connection: its `message` goes into the
/// `ERROR` frame (`errorFrame`).
public struct StompError: Error, Hashable, Sendable, CustomStringConvertible {
    public enum Kind: UInt8, Hashable, Sendable, CaseIterable {
        /// Bytes that are not a frame: an unknown command, a header line without a colon, a CR
        /// not followed by LF, a bad `content-length`, a body not ended by NUL, text not UTF-8.
        case malformed
        /// An escape STOMP does not define (`\t`, a lone `\`, `\r` before 1.2).
        case badEscape
        case tooManyHeaders, lineTooLong, bodyTooLarge
        /// A well-formed frame that breaks the protocol: a missing required header, a frame before
        /// CONNECT, a second CONNECT, no common version, an unknown subscription, ...
        case protocolViolation
    }

    public let kind: Kind
    /// A short, single-line explanation (the ERROR frame's `message` header).
    public let message: String
    /// The `receipt` of the frame that caused it, if it asked for one (the ERROR's `receipt-id`).
    public var receiptID: String?

    public init(_ kind: Kind, _ message: String, receiptID: String? = nil) {
        self.kind = kind
        self.message = message
        self.receiptID = receiptID
    }

    public var description: String { "STOMP \(self.kind): \(self.message)" }

    /// The ERROR frame that reports it; the server closes the connection after sending it.
    public var errorFrame: StompFrame {
        var headers = [StompHeader("message", self.message)]
        if let r = self.receiptID { headers.append(StompHeader("receipt-id", r)) }
        headers.append(StompHeader("content-type", "text/plain"))
        return StompFrame(.error, headers, body: Array(self.message.utf8))
    }
}

/// Reads STOMP frames from bytes that arrive in any split: a frame across several WebSocket
/// messages, or several frames in one. End-of-line is LF or CR LF; any number of EOLs between
/// frames are heart-beats. A body is read by `content-length` when the frame has one (it may
/// then contain NUL octets), else up to the first NUL.
///
/// After an error the parser is done: the connection is to be closed.
public struct StompParser: Sendable {
    public var limits: StompLimits
    /// How header values are unescaped in frames other than CONNECT, STOMP and CONNECTED: set it
    /// once a version is agreed (1.2 until then).
    public var version: StompVersion = .v1_2
    /// EOLs read between frames, in all.
    public private(set) var heartbeats = 0

    private var buffer: [UInt8] = []
    /// The first byte not yet read, and how far the current step has looked.
    private var position = 0
    private var scan = 0
    private var phase = Phase.between
    private var failed: StompError?

    private enum Phase {
        case between
        /// Reading the command and header lines; `lineStart` is the start of the current line.
        case head(command: StompCommand?, headers: [StompHeader], lineStart: Int)
        /// Reading the body, which starts at `start`.
        case body(command: StompCommand, headers: [StompHeader], start: Int, length: Int?)
    }

    public init(limits: StompLimits = StompLimits()) {
        self.limits = limits
    }

    /// Bytes held that are not yet a whole frame.
    public var bufferedBytes: Int { self.buffer.count - self.position }

    public mutating func append(_ bytes: UnsafeRawBufferPointer) {
        if self.position > 0 && (self.position == self.buffer.count || self.position >= 4096) {
            self.buffer.removeSubrange(0..<self.position)
            self.shift(-self.position)
        }
        self.buffer.append(contentsOf: bytes)
    }

    public mutating func append(_ bytes: [UInt8]) {
        bytes.withUnsafeBytes { self.append($0) }
    }

    private mutating func shift(_ by: Int) {
        self.scan += by
        switch self.phase {
        case .between: break
        case .head(let c, let h, let lineStart): self.phase = .head(command: c, headers: h, lineStart: lineStart + by)
        case .body(let c, let h, let start, let length): self.phase = .body(command: c, headers: h, start: start + by, length: length)
        }
        self.position += by
    }

    /// The next whole frame, or nil when more bytes are needed.
    public mutating func next() throws(StompError) -> StompFrame? {
        if let e = self.failed { throw e }
        do {
            return try self.step()
        } catch {
            self.failed = error
            throw error
        }
    }

    private mutating func step() throws(StompError) -> StompFrame? {
        while true {
            switch self.phase {
            case .between:
                guard self.position < self.buffer.count else { return nil }
                let b = self.buffer[self.position]
                if b == 0x0A {
                    self.heartbeats += 1
                    self.position += 1
                } else if b == 0x0D {
                    guard self.position + 1 < self.buffer.count else { return nil }
                    guard self.buffer[self.position + 1] == 0x0A else { throw StompError(.malformed, "CR not followed by LF") }
                    self.heartbeats += 1
                    self.position += 2
                } else {
                    self.phase = .head(command: nil, headers: [], lineStart: self.position)
                    self.scan = self.position
                }
            case .head(let command, var headers, let lineStart):
                guard let lf = self.findByte(0x0A, from: self.scan) else {
                    self.scan = self.buffer.count
                    if self.buffer.count - lineStart > self.limits.maxLineBytes + 1 { throw self.lineTooLong() }
                    return nil
                }
                var end = lf
                if end > lineStart && self.buffer[end - 1] == 0x0D { end -= 1 }
                guard end - lineStart <= self.limits.maxLineBytes else { throw self.lineTooLong() }
                self.scan = lf + 1
                guard let command else {
                    self.phase = .head(command: try self.command(lineStart, end), headers: [], lineStart: lf + 1)
                    continue
                }
                if end == lineStart {
                    let length = try self.contentLength(headers)
                    self.phase = .body(command: command, headers: headers, start: lf + 1, length: length)
                    self.scan = lf + 1
                    continue
                }
                guard headers.count < self.limits.maxHeaders else {
                    throw StompError(.tooManyHeaders, "more than \(self.limits.maxHeaders) headers")
                }
                headers.append(try self.header(lineStart, end, escaped: command.escapesHeaders && self.version > .v1_0))
                self.phase = .head(command: command, headers: headers, lineStart: lf + 1)
            case .body(let command, let headers, let start, let length):
                let end: Int
                if let length {
                    guard self.buffer.count > start + length else { return nil }
                    guard self.buffer[start + length] == 0 else {
                        throw StompError(.malformed, "the body is not ended by NUL after content-length octets")
                    }
                    end = start + length
                } else {
                    guard let nul = self.findByte(0, from: self.scan) else {
                        self.scan = self.buffer.count
                        if self.buffer.count - start > self.limits.maxBodyBytes { throw self.bodyTooLarge() }
                        return nil
                    }
                    guard nul - start <= self.limits.maxBodyBytes else { throw self.bodyTooLarge() }
                    end = nul
                }
                let frame = StompFrame(command, headers, body: Array(self.buffer[start..<end]))
                self.position = end + 1
                self.phase = .between
                return frame
            }
        }
    }

    private func findByte(_ byte: UInt8, from: Int) -> Int? {
        self.buffer.withUnsafeBufferPointer { b in
            var i = from
            while i < b.count {
                if b[i] == byte { return i }
                i += 1
            }
            return nil
        }
    }

    private func lineTooLong() -> StompError {
        StompError(.lineTooLong, "a line over \(self.limits.maxLineBytes) bytes")
    }

    private func bodyTooLarge() -> StompError {
        StompError(.bodyTooLarge, "a body over \(self.limits.maxBodyBytes) bytes")
    }

    private func command(_ start: Int, _ end: Int) throws(StompError) -> StompCommand {
        let text = String(decoding: self.buffer[start..<end], as: UTF8.self)
        guard let c = StompCommand(rawValue: text) else {
            let shown = text.utf8.count <= 32 && text.utf8.allSatisfy({ $0 >= 0x20 && $0 < 0x7F }) ? text : "(not shown)"
            throw StompError(.malformed, "unknown command \(shown)")
        }
        return c
    }

    private func header(_ start: Int, _ end: Int, escaped: Bool) throws(StompError) -> StompHeader {
        guard let colon = self.buffer[start..<end].firstIndex(of: UInt8(ascii: ":")) else {
            throw StompError(.malformed, "a header line without a colon")
        }
        guard colon > start else { throw StompError(.malformed, "a header with an empty name") }
        let name = try self.text(start, colon, escaped: escaped)
        let value = try self.text(colon + 1, end, escaped: escaped)
        return StompHeader(name, value)
    }

    /// Header text, unescaped when `escaped`. A CR is never literal in a header (1.2 writes it
    /// `\r`; the line's own CR was taken off).
    private func text(_ start: Int, _ end: Int, escaped: Bool) throws(StompError) -> String {
        var bytes: [UInt8] = []
        bytes.reserveCapacity(end - start)
        var i = start
        while i < end {
            let b = self.buffer[i]
            if b == 0x0D { throw StompError(.malformed, "CR not followed by LF") }
            if b == 0x5C && escaped {
                guard i + 1 < end else { throw StompError(.badEscape, "a header ends with a lone backslash") }
                switch self.buffer[i + 1] {
                case UInt8(ascii: "n"): bytes.append(0x0A)
                case UInt8(ascii: "c"): bytes.append(UInt8(ascii: ":"))
                case 0x5C: bytes.append(0x5C)
                case UInt8(ascii: "r") where self.version >= .v1_2: bytes.append(0x0D)
                default: throw StompError(.badEscape, "an undefined escape sequence in a header")
                }
                i += 2
                continue
            }
            bytes.append(b)
            i += 1
        }
        guard let s = String(validating: bytes, as: UTF8.self) else { throw StompError(.malformed, "a header that is not UTF-8") }
        return s
    }

    /// The first `content-length` header's value, if any: 1 to 18 ASCII digits, at most the limit.
    private func contentLength(_ headers: [StompHeader]) throws(StompError) -> Int? {
        guard let h = headers.first(where: { $0.name == "content-length" }) else { return nil }
        let digits = h.value.utf8
        guard (1...18).contains(digits.count), digits.allSatisfy({ $0 >= 0x30 && $0 <= 0x39 }) else {
            throw StompError(.malformed, "a bad content-length")
        }
        let n = digits.reduce(0) { $0 * 10 + Int($1 - 0x30) }
        guard n <= self.limits.maxBodyBytes else { throw self.bodyTooLarge() }
        return n
    }
}
