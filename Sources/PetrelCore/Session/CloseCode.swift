/// A close status code (RFC 6455 §7.4). Open-ended: 3000–4999 belong to libraries and applications.
public struct CloseCode: RawRepresentable, Hashable, Sendable, CustomStringConvertible {
    public var rawValue: UInt16

    @inlinable
    public init(rawValue: UInt16) { self.rawValue = rawValue }

    @inlinable
    public init(_ rawValue: UInt16) { self.rawValue = rawValue }

    public static let normalClosure = CloseCode(1000)
    public static let goingAway = CloseCode(1001)
    public static let protocolError = CloseCode(1002)
    public static let unsupportedData = CloseCode(1003)
    /// Reserved: never sent on the wire; reported when a close frame had no status code.
    public static let noStatusReceived = CloseCode(1005)
    /// Reserved: never sent on the wire; reported when the transport closed without a close frame.
    public static let abnormalClosure = CloseCode(1006)
    public static let invalidPayloadData = CloseCode(1007)
    public static let policyViolation = CloseCode(1008)
    public static let messageTooBig = CloseCode(1009)
    public static let mandatoryExtension = CloseCode(1010)
    public static let internalError = CloseCode(1011)
    public static let serviceRestart = CloseCode(1012)
    public static let tryAgainLater = CloseCode(1013)
    public static let badGateway = CloseCode(1014)

    /// Whether a peer may put this code in a close frame (RFC 6455 §7.4.1–7.4.2 and the IANA registry):
    /// 1000–1003, 1007–1014 and 3000–4999. 0–999, 1004–1006, 1015, 1016–2999 and 5000+ are not.
    @inlinable
    public var isValidOnWire: Bool {
        switch self.rawValue {
        case 1000...1003, 1007...1014, 3000...4999: return true
        default: return false
        }
    }

    public var description: String { String(self.rawValue) }
}
