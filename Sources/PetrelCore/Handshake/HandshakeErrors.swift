/// Why a server refuses an opening handshake, and the HTTP response it sends.
public struct HandshakeError: Error, Hashable, Sendable, CustomStringConvertible {
    @usableFromInline
    enum Kind: Sendable, CaseIterable {
        case malformed, tooLarge, tooManyHeaders, notGet, httpVersion, missingHost, notUpgrade
        case invalidKey, unsupportedVersion, originRefused, invalidExtensions, invalidSubprotocols
        case serviceUnavailable, timeout
    }

    @usableFromInline let kind: Kind
    /// A detail for the response body and logs.
    public let message: String

    @usableFromInline
    init(_ kind: Kind, _ message: String) {
        self.kind = kind
        self.message = message
    }

    public static func malformed(_ detail: String) -> HandshakeError { HandshakeError(.malformed, detail) }
    public static func headersTooLarge(limit: Int) -> HandshakeError {
        HandshakeError(.tooLarge, "request header exceeds \(limit) bytes")
    }
    public static func tooManyHeaders(limit: Int) -> HandshakeError {
        HandshakeError(.tooManyHeaders, "more than \(limit) header fields")
    }
    public static let notGet = HandshakeError(.notGet, "WebSocket upgrade requires GET")
    public static let httpVersion = HandshakeError(.httpVersion, "WebSocket upgrade requires HTTP/1.1")
    public static let missingHost = HandshakeError(.missingHost, "missing or repeated Host header")
    public static let notUpgrade = HandshakeError(
        .notUpgrade, "expected Upgrade: websocket and Connection: Upgrade")
    public static let invalidKey = HandshakeError(
        .invalidKey, "Sec-WebSocket-Key must be one base64 value of 16 bytes")
    public static let unsupportedVersion = HandshakeError(
        .unsupportedVersion, "unsupported Sec-WebSocket-Version (this server speaks 13)")
    public static let originRefused = HandshakeError(.originRefused, "origin not allowed")
    public static let invalidExtensions = HandshakeError(.invalidExtensions, "malformed Sec-WebSocket-Extensions")
    public static let invalidSubprotocols = HandshakeError(.invalidSubprotocols, "malformed Sec-WebSocket-Protocol")
    public static let serviceUnavailable = HandshakeError(.serviceUnavailable, "server is at its connection limit")
    public static let timeout = HandshakeError(.timeout, "handshake not completed in time")

    /// Every kind once, for tables and tests.
    public static var allCases: [HandshakeError] {
        Kind.allCases.map { HandshakeError($0, HandshakeError.defaultMessage($0)) }
    }

    static func defaultMessage(_ kind: Kind) -> String {
        switch kind {
        case .malformed: return "malformed request"
        case .tooLarge: return "request header too large"
        case .tooManyHeaders: return "too many header fields"
        case .notGet: return HandshakeError.notGet.message
        case .httpVersion: return HandshakeError.httpVersion.message
        case .missingHost: return HandshakeError.missingHost.message
        case .notUpgrade: return HandshakeError.notUpgrade.message
        case .invalidKey: return HandshakeError.invalidKey.message
        case .unsupportedVersion: return HandshakeError.unsupportedVersion.message
        case .originRefused: return HandshakeError.originRefused.message
        case .invalidExtensions: return HandshakeError.invalidExtensions.message
        case .invalidSubprotocols: return HandshakeError.invalidSubprotocols.message
        case .serviceUnavailable: return HandshakeError.serviceUnavailable.message
        case .timeout: return HandshakeError.timeout.message
        }
    }

    /// The HTTP status of the refusal.
    public var httpStatus: Int {
        switch self.kind {
        case .tooLarge, .tooManyHeaders: return 431
        case .notUpgrade, .unsupportedVersion: return 426
        case .originRefused: return 403
        case .serviceUnavailable: return 503
        case .timeout: return 408
        default: return 400
        }
    }

    /// The status the C API reports (`PETREL_E_HS_*`, the -24x band).
    public var code: StatusCode {
        switch self.kind {
        case .malformed: return .hsMalformed
        case .tooLarge: return .hsTooLarge
        case .tooManyHeaders: return .hsTooManyHeaders
        case .notGet: return .hsNotGet
        case .httpVersion: return .hsHTTPVersion
        case .missingHost: return .hsHost
        case .notUpgrade: return .hsNotUpgrade
        case .invalidKey: return .hsKey
        case .unsupportedVersion: return .hsVersion
        case .originRefused: return .hsOrigin
        case .invalidExtensions: return .hsExtensions
        case .invalidSubprotocols: return .hsSubprotocols
        case .serviceUnavailable: return .hsUnavailable
        case .timeout: return .hsTimeout
        }
    }

    public var description: String { "\(self.httpStatus): \(self.message)" }

    /// The complete HTTP response to send before closing the connection.
    public var response: [UInt8] {
        var headers: [HTTPField] = []
        switch self.kind {
        case .unsupportedVersion: headers.append(HTTPField(name: "Sec-WebSocket-Version", value: "13"))
        case .notUpgrade: headers.append(HTTPField(name: "Upgrade", value: "websocket"))
        default: break
        }
        return HTTPResponse.error(status: self.httpStatus, body: self.message, headers: headers)
    }
}

/// Why a client rejects a server's handshake response. Each failure is distinct.
public struct ClientHandshakeError: Error, Hashable, Sendable, CustomStringConvertible {
    @usableFromInline
    enum Kind: Sendable, CaseIterable {
        case malformedResponse, responseTooLarge, unexpectedStatus, missingUpgrade, missingConnection
        case acceptMismatch, unexpectedSubprotocol, unexpectedExtension, invalidExtensionParameters
    }

    @usableFromInline let kind: Kind
    /// The HTTP status for `unexpectedStatus`, else 101 or 0.
    public let httpStatus: Int
    public let message: String
    /// For `unexpectedStatus`: the response's body as far as it came (at most
    /// `ClientHandshake.maxRefusalBody` bytes; see `ClientHandshake.feed`), else empty.
    public let body: [UInt8]

    @usableFromInline
    init(_ kind: Kind, status: Int = 0, _ message: String, body: [UInt8] = []) {
        self.kind = kind
        self.httpStatus = status
        self.message = message
        self.body = body
    }

    /// The same refusal with its body.
    func with(body: [UInt8]) -> ClientHandshakeError {
        ClientHandshakeError(self.kind, status: self.httpStatus, self.message, body: body)
    }

    public static func malformedResponse(_ detail: String) -> ClientHandshakeError {
        ClientHandshakeError(.malformedResponse, "malformed handshake response: \(detail)")
    }
    public static func responseTooLarge(limit: Int) -> ClientHandshakeError {
        ClientHandshakeError(.responseTooLarge, "handshake response exceeds \(limit) bytes")
    }
    public static func unexpectedStatus(_ status: Int, reason: String) -> ClientHandshakeError {
        ClientHandshakeError(.unexpectedStatus, status: status, "server answered \(status) \(reason), not 101")
    }
    public static let missingUpgrade = ClientHandshakeError(.missingUpgrade, "response lacks Upgrade: websocket")
    public static let missingConnection = ClientHandshakeError(.missingConnection, "response lacks Connection: Upgrade")
    public static let acceptMismatch = ClientHandshakeError(
        .acceptMismatch, "Sec-WebSocket-Accept does not match the key sent")
    public static func unexpectedSubprotocol(_ name: String) -> ClientHandshakeError {
        ClientHandshakeError(.unexpectedSubprotocol, "server chose subprotocol '\(name)', which was not offered")
    }
    public static func unexpectedExtension(_ name: String) -> ClientHandshakeError {
        ClientHandshakeError(.unexpectedExtension, "server accepted extension '\(name)', which was not offered")
    }
    public static func invalidExtensionParameters(_ detail: String) -> ClientHandshakeError {
        ClientHandshakeError(.invalidExtensionParameters, "server's extension parameters are invalid: \(detail)")
    }

    /// Every kind once, for tables and tests.
    public static var allCases: [ClientHandshakeError] {
        Kind.allCases.map { kind in
            switch kind {
            case .malformedResponse: return .malformedResponse("not HTTP")
            case .responseTooLarge: return ClientHandshakeError(.responseTooLarge, "handshake response too large")
            case .unexpectedStatus: return ClientHandshakeError(.unexpectedStatus, "the server answered with a status other than 101")
            case .missingUpgrade: return .missingUpgrade
            case .missingConnection: return .missingConnection
            case .acceptMismatch: return .acceptMismatch
            case .unexpectedSubprotocol: return ClientHandshakeError(.unexpectedSubprotocol, "the server chose a subprotocol that was not offered")
            case .unexpectedExtension: return ClientHandshakeError(.unexpectedExtension, "the server accepted an extension that was not offered")
            case .invalidExtensionParameters: return ClientHandshakeError(.invalidExtensionParameters, "the server's extension parameters are invalid")
            }
        }
    }

    /// Compares the failure, not its detail text.
    public func matches(_ other: ClientHandshakeError) -> Bool { self.kind == other.kind }

    /// The status the C API reports (`PETREL_E_HS_*`, the -26x band).
    public var code: StatusCode {
        switch self.kind {
        case .malformedResponse: return .hsBadResponse
        case .responseTooLarge: return .hsResponseTooLarge
        case .unexpectedStatus: return .hsStatus
        case .missingUpgrade: return .hsNoUpgrade
        case .missingConnection: return .hsNoConnection
        case .acceptMismatch: return .hsAccept
        case .unexpectedSubprotocol: return .hsSubprotocol
        case .unexpectedExtension: return .hsExtension
        case .invalidExtensionParameters: return .hsExtensionParams
        }
    }

    public var description: String { self.message }
}
