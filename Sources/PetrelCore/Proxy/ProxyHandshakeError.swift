/// Why a proxy tunnel could not be set up: the proxy refused, answered something that is not its
/// protocol, or the target cannot be sent through it. Each failure is distinct; `message` is the
/// text the runtime reports after "proxy <url>: ".
public struct ProxyHandshakeError: Error, Hashable, Sendable, CustomStringConvertible {
    @usableFromInline
    enum Kind: UInt8, Sendable, CaseIterable {
        case invalidTarget, responseTooLarge, malformedResponse, connectRefused
        case notSOCKS5, credentialsRequired, noAcceptableMethod, malformedAuthenticationReply, authenticationFailed
        case malformedReply, socksRefused, outOfTurn
    }

    @usableFromInline let kind: Kind
    public let message: String
    /// The proxy's HTTP status, when it answered CONNECT with one other than 2xx.
    public let httpStatus: Int?
    /// The SOCKS5 reply code (RFC 1928 §6 REP), when the proxy refused the CONNECT.
    public let socksReply: UInt8?

    @usableFromInline
    init(_ kind: Kind, _ message: String, httpStatus: Int? = nil, socksReply: UInt8? = nil) {
        self.kind = kind
        self.message = message
        self.httpStatus = httpStatus
        self.socksReply = socksReply
    }

    /// The target cannot be put into the proxy's request (a control character, or over SOCKS5's 255 bytes).
    public static func invalidTarget(_ detail: String) -> ProxyHandshakeError { ProxyHandshakeError(.invalidTarget, detail) }
    /// The CONNECT response head is over `maxHeaderBytes`.
    public static let responseTooLarge = ProxyHandshakeError(.responseTooLarge, "response head too large")
    /// The CONNECT response head does not parse (the detail is `ClientHandshakeError`'s text).
    public static func malformedResponse(_ detail: String) -> ProxyHandshakeError { ProxyHandshakeError(.malformedResponse, detail) }
    /// The proxy answered CONNECT with a status other than 2xx (RFC 9110 §9.3.6).
    public static func connectRefused(status: Int, reason: String) -> ProxyHandshakeError {
        ProxyHandshakeError(.connectRefused, "CONNECT refused: \(status) \(reason)", httpStatus: status)
    }
    public static let notSOCKS5 = ProxyHandshakeError(.notSOCKS5, "not a SOCKS5 server")
    /// The proxy chose username/password (RFC 1929), and we have none.
    public static let credentialsRequired = ProxyHandshakeError(.credentialsRequired, "SOCKS5 proxy wants a user name and password")
    /// The proxy chose no method we offered (RFC 1928 §3: X'FF', or any other).
    public static let noAcceptableMethod = ProxyHandshakeError(
        .noAcceptableMethod, "SOCKS5 proxy accepts none of our authentication methods")
    public static let malformedAuthenticationReply = ProxyHandshakeError(
        .malformedAuthenticationReply, "malformed SOCKS5 authentication reply")
    /// RFC 1929 §2: a status other than X'00' is a failure.
    public static func authenticationFailed(status: UInt8) -> ProxyHandshakeError {
        ProxyHandshakeError(.authenticationFailed, "SOCKS5 authentication failed (status \(status))")
    }
    public static let malformedReply = ProxyHandshakeError(.malformedReply, "malformed SOCKS5 reply")
    /// RFC 1928 §6: a REP other than X'00'.
    public static func socksRefused(reply: UInt8) -> ProxyHandshakeError {
        ProxyHandshakeError(
            .socksRefused, "SOCKS5 CONNECT refused: \(ProxyHandshake.socksReplyText(reply)) (reply \(reply))", socksReply: reply)
    }
    /// Bytes followed a SOCKS5 method or authentication reply in the same input: the proxy sent them
    /// before it could have read our next request, so they answer nothing we asked.
    public static let outOfTurn = ProxyHandshakeError(.outOfTurn, "SOCKS5 proxy sent data before our request")

    /// Compares the failure, not its detail text.
    public func matches(_ other: ProxyHandshakeError) -> Bool { self.kind == other.kind }

    public var description: String { self.message }
}
