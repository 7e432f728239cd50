/// What Petrel reports after the handshake: each violation has its RFC close code, its status
/// (`code`, a case of the one table in Status.swift) and its message.

// MARK: - Protocol errors (the connection is failed with a close code)

/// A violation by the peer after the handshake. The session has queued a close frame carrying
/// `closeCode` and `reason` and will not read further input.
public struct ProtocolError: Error, Hashable, Sendable, CustomStringConvertible {
    @usableFromInline
    enum Kind: Sendable, CaseIterable {
        case reservedOpcode, reservedBits, controlFrameTooLong, fragmentedControlFrame, lengthTopBitSet
        case unmaskedFrame, maskedFrame, unexpectedContinuation, expectedContinuation
        case closePayloadOneByte, invalidCloseCode, invalidUTF8, invalidCloseReason
        case frameTooBig, messageTooBig, inflateFailed, abnormalClosure
    }

    @usableFromInline let kind: Kind
    /// The configured limit that was crossed, for the size errors; otherwise 0.
    public let limit: Int

    @usableFromInline
    init(_ kind: Kind, limit: Int = 0) {
        self.kind = kind
        self.limit = limit
    }

    public static let reservedOpcode = ProtocolError(.reservedOpcode)
    public static let reservedBits = ProtocolError(.reservedBits)
    public static let controlFrameTooLong = ProtocolError(.controlFrameTooLong)
    public static let fragmentedControlFrame = ProtocolError(.fragmentedControlFrame)
    public static let lengthTopBitSet = ProtocolError(.lengthTopBitSet)
    public static let unmaskedFrame = ProtocolError(.unmaskedFrame)
    public static let maskedFrame = ProtocolError(.maskedFrame)
    public static let unexpectedContinuation = ProtocolError(.unexpectedContinuation)
    public static let expectedContinuation = ProtocolError(.expectedContinuation)
    public static let closePayloadOneByte = ProtocolError(.closePayloadOneByte)
    public static let invalidCloseCode = ProtocolError(.invalidCloseCode)
    public static let invalidUTF8 = ProtocolError(.invalidUTF8)
    public static let invalidCloseReason = ProtocolError(.invalidCloseReason)
    public static func frameTooBig(limit: Int) -> ProtocolError { ProtocolError(.frameTooBig, limit: limit) }
    public static func messageTooBig(limit: Int) -> ProtocolError { ProtocolError(.messageTooBig, limit: limit) }
    public static let inflateFailed = ProtocolError(.inflateFailed)
    /// The transport ended before a close frame arrived (reported, never sent).
    public static let abnormalClosure = ProtocolError(.abnormalClosure)

    /// Every kind once (size errors with limit 0), for tables and tests.
    public static var allCases: [ProtocolError] { Kind.allCases.map { ProtocolError($0) } }

    /// The close code sent to the peer.
    public var closeCode: CloseCode {
        switch self.kind {
        case .invalidUTF8, .invalidCloseReason: return .invalidPayloadData
        case .frameTooBig, .messageTooBig: return .messageTooBig
        case .abnormalClosure: return .abnormalClosure
        default: return .protocolError
        }
    }

    /// The status the C API reports for this error (`PETREL_E_*` in petrel.h).
    public var code: StatusCode {
        switch self.kind {
        case .reservedOpcode: return .reservedOpcode
        case .reservedBits: return .reservedBits
        case .controlFrameTooLong: return .controlTooLong
        case .fragmentedControlFrame: return .fragmentedControl
        case .lengthTopBitSet: return .lengthTopBit
        case .unmaskedFrame: return .unmaskedFrame
        case .maskedFrame: return .maskedFrame
        case .unexpectedContinuation: return .unexpectedContinuation
        case .expectedContinuation: return .expectedContinuation
        case .closePayloadOneByte: return .closePayload
        case .invalidCloseCode: return .closeCode
        case .invalidUTF8: return .invalidUTF8
        case .invalidCloseReason: return .closeReasonUTF8
        case .frameTooBig: return .frameTooBig
        case .messageTooBig: return .messageTooBig
        case .inflateFailed: return .inflate
        case .abnormalClosure: return .abnormalClosure
        }
    }

    /// The reason sent in the close frame (ASCII, at most 123 bytes).
    public var description: String {
        switch self.kind {
        case .reservedOpcode: return "reserved opcode"
        case .reservedBits: return "reserved bit set without a negotiated extension"
        case .controlFrameTooLong: return "control frame payload over 125 bytes"
        case .fragmentedControlFrame: return "fragmented control frame"
        case .lengthTopBitSet: return "64-bit payload length with the most significant bit set"
        case .unmaskedFrame: return "client frame not masked"
        case .maskedFrame: return "server frame masked"
        case .unexpectedContinuation: return "continuation frame without a message to continue"
        case .expectedContinuation: return "new data frame inside a fragmented message"
        case .closePayloadOneByte: return "close frame with a 1-byte payload"
        case .invalidCloseCode: return "invalid close code"
        case .invalidUTF8: return "invalid UTF-8 in text message"
        case .invalidCloseReason: return "invalid UTF-8 in close reason"
        case .frameTooBig: return "frame exceeds \(self.limit) bytes"
        case .messageTooBig: return "message exceeds \(self.limit) bytes"
        case .inflateFailed: return "invalid compressed data"
        case .abnormalClosure: return "connection closed without a close frame"
        }
    }
}

// MARK: - Misuse of the session by the local application

/// A call the session cannot honour in its current state; nothing was queued.
public struct UsageError: Error, Hashable, Sendable, CustomStringConvertible {
    @usableFromInline
    enum Kind: Sendable, CaseIterable {
        case closing, controlPayloadTooLong, invalidCloseCode, closeReasonTooLong, invalidOpcode
        case noMessageInProgress, messageInProgress
    }

    @usableFromInline let kind: Kind

    @usableFromInline
    init(_ kind: Kind) { self.kind = kind }

    /// A close frame was sent or received: no more data or pings may be sent.
    public static let closing = UsageError(.closing)
    public static let controlPayloadTooLong = UsageError(.controlPayloadTooLong)
    /// Codes a local endpoint may send: 1000–1003, 1007–1014, 3000–4999.
    public static let invalidCloseCode = UsageError(.invalidCloseCode)
    public static let closeReasonTooLong = UsageError(.closeReasonTooLong)
    public static let invalidOpcode = UsageError(.invalidOpcode)
    public static let noMessageInProgress = UsageError(.noMessageInProgress)
    public static let messageInProgress = UsageError(.messageInProgress)

    public static var allCases: [UsageError] { Kind.allCases.map { UsageError($0) } }

    /// The status the C API reports (`PETREL_E_*`): the -3xx band, bad argument or state.
    public var code: StatusCode {
        switch self.kind {
        case .closing: return .sendingClosed
        case .controlPayloadTooLong: return .controlPayload
        case .invalidCloseCode: return .badCloseCode
        case .closeReasonTooLong: return .closeReasonLong
        case .invalidOpcode: return .badOpcode
        case .noMessageInProgress: return .noMessage
        case .messageInProgress: return .messageInProgress
        }
    }

    public var description: String {
        switch self.kind {
        case .closing: return "the connection is closing"
        case .controlPayloadTooLong: return "control frame payload over 125 bytes"
        case .invalidCloseCode: return "close code may not be sent (valid: 1000-1003, 1007-1014, 3000-4999)"
        case .closeReasonTooLong: return "close reason over 123 bytes"
        case .invalidOpcode: return "opcode is not text, binary or continuation"
        case .noMessageInProgress: return "no fragmented message in progress"
        case .messageInProgress: return "a fragmented message is in progress"
        }
    }
}
