/// Why a plain HTTP request's body cannot be read, and the response that says so.
public struct HTTPRequestBodyError: Error, Hashable, Sendable, CustomStringConvertible {
    @usableFromInline
    enum Kind: UInt8, Sendable, CaseIterable {
        case lengthRequired, badContentLength, tooLarge
    }

    @usableFromInline let kind: Kind
    /// A detail for the response body and logs.
    public let message: String

    @usableFromInline
    init(_ kind: Kind, _ message: String) {
        self.kind = kind
        self.message = message
    }

    /// The request has a Transfer-Encoding (chunked or another): bodies are read by Content-Length only.
    public static let lengthRequired = HTTPRequestBodyError(.lengthRequired, "a request body needs Content-Length")
    /// RFC 9112 §6.3: an invalid Content-Length, or several that differ, is unrecoverable.
    public static let badContentLength = HTTPRequestBodyError(.badContentLength, "bad Content-Length")
    public static func tooLarge(limit: Int) -> HTTPRequestBodyError {
        HTTPRequestBodyError(.tooLarge, "request body over \(limit) bytes")
    }

    /// The HTTP status of the refusal: 411, 400 or 413.
    public var httpStatus: Int {
        switch self.kind {
        case .lengthRequired: return 411
        case .badContentLength: return 400
        case .tooLarge: return 413
        }
    }

    public var description: String { "\(self.httpStatus): \(self.message)" }

    /// The complete HTTP response to send before closing the connection.
    public var response: [UInt8] { HTTPResponse.error(status: self.httpStatus, body: self.message) }
}

/// Reads a plain (non-upgrade) HTTP request's body by its Content-Length (RFC 9112 §6), from bytes
/// that may arrive in any split. A request without Content-Length has no body. The body is held
/// whole, so `maxBodyBytes` bounds the memory.
public struct HTTPRequestBodyReader: Sendable {
    public enum Progress: Equatable, Sendable {
        /// All input was taken; the body is not complete yet.
        case needMore
        /// The body is complete; `consumed` bytes of the last input belonged to it, the rest did not.
        case complete(consumed: Int)
    }

    /// The body's length, from Content-Length (0 without one).
    public let length: Int
    /// The body so far (all of it after `.complete`).
    public private(set) var body: [UInt8] = []

    private init(length: Int) {
        self.length = length
        // Room for the start of the body only: the declared length is the peer's word.
        self.body.reserveCapacity(min(length, 16 * 1024))
    }

    /// Checks the head's framing fields and returns a reader for the body they announce.
    ///
    /// - Returns: the reader, or the refusal: a Transfer-Encoding field, whatever its value (411);
    ///   Content-Length values that differ, or one that is empty, not all digits or over 18 digits
    ///   (400); a length over `maxBodyBytes` (413).
    public static func start(head: HTTPRequestHead, maxBodyBytes: Int) -> Result<HTTPRequestBodyReader, HTTPRequestBodyError> {
        // RFC 9112 §7 asks a recipient to parse chunked; we read no transfer coding, and answer 411
        // (RFC 9110 §15.5.12) so the client can send the body again with a Content-Length.
        if head.headers["Transfer-Encoding"] != nil { return .failure(.lengthRequired) }
        let lengths = head.headers.values("Content-Length")
        var length = 0
        if let first = lengths.first {
            // RFC 9112 §6.3 item 5: Content-Length = 1*DIGIT; repeated fields must agree. 18 digits
            // cannot overflow an Int.
            guard lengths.allSatisfy({ $0 == first }), !first.isEmpty, first.utf8.count <= 18,
                first.utf8.allSatisfy({ $0 >= 0x30 && $0 <= 0x39 }), let n = Int(first)
            else { return .failure(.badContentLength) }
            length = n
        }
        if length > maxBodyBytes { return .failure(.tooLarge(limit: maxBodyBytes)) }
        return .success(HTTPRequestBodyReader(length: length))
    }

    /// Whether the whole body has arrived (at once for a length of 0).
    public var isComplete: Bool { self.body.count == self.length }

    /// Takes body bytes from the start of `input`. Once complete, every call returns
    /// `.complete(consumed: 0)`: what follows the body is not the reader's.
    public mutating func feed(_ input: UnsafeRawBufferPointer) -> Progress {
        let take = min(input.count, self.length - self.body.count)
        if take > 0 { self.body.append(contentsOf: UnsafeRawBufferPointer(rebasing: input[0..<take])) }
        return self.body.count == self.length ? .complete(consumed: take) : .needMore
    }
}
