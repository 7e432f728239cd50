/// STOMP (1.0, 1.1, 1.2) frames: the commands, headers and body of one frame, and its encoding.
/// The grammar is the STOMP 1.2 specification's "Augmented BNF" section; the parser is
/// `StompParser`.

/// A STOMP protocol version. The order is the order of the versions.
public enum StompVersion: UInt8, Comparable, Sendable, CaseIterable, CustomStringConvertible {
    case v1_0, v1_1, v1_2

    /// As written in `accept-version` and `version` headers.
    public var description: String {
        switch self {
        case .v1_0: return "1.0"
        case .v1_1: return "1.1"
        case .v1_2: return "1.2"
        }
    }

    public init?(_ text: Substring) {
        switch text {
        case "1.0": self = .v1_0
        case "1.1": self = .v1_1
        case "1.2": self = .v1_2
        default: return nil
        }
    }

    /// The WebSocket subprotocol that names this version (`v12.stomp`, …).
    public var subprotocol: String {
        switch self {
        case .v1_0: return "v10.stomp"
        case .v1_1: return "v11.stomp"
        case .v1_2: return "v12.stomp"
        }
    }

    public init?(subprotocol: String) {
        guard let v = StompVersion.allCases.first(where: { $0.subprotocol == subprotocol }) else { return nil }
        self = v
    }

    public static func < (a: StompVersion, b: StompVersion) -> Bool { a.rawValue < b.rawValue }
}

/// The fifteen commands of STOMP 1.2: eleven a client sends, four a server sends.
public enum StompCommand: String, Sendable, CaseIterable {
    case connect = "CONNECT", stomp = "STOMP", send = "SEND", subscribe = "SUBSCRIBE", unsubscribe = "UNSUBSCRIBE"
    case ack = "ACK", nack = "NACK", begin = "BEGIN", commit = "COMMIT", abort = "ABORT", disconnect = "DISCONNECT"
    case connected = "CONNECTED", message = "MESSAGE", receipt = "RECEIPT", error = "ERROR"

    /// CONNECT, STOMP and CONNECTED carry their headers unescaped (STOMP 1.2, "Value Encoding"),
    /// so that a 1.0 peer reads them before a version is agreed.
    public var escapesHeaders: Bool { self != .connect && self != .stomp && self != .connected }

    /// Whether a server sends this command (else a client does).
    public var isServerCommand: Bool { self == .connected || self == .message || self == .receipt || self == .error }
}

/// One header line. Names and values are UTF-8 text, stored decoded (without escapes).
public struct StompHeader: Hashable, Sendable {
    public var name: String
    public var value: String

    public init(_ name: String, _ value: String) {
        self.name = name
        self.value = value
    }
}

/// One frame. When a header is repeated, the first one counts (STOMP 1.2, "Repeated Header
/// Entries"); the others are kept, in order, as they arrived.
public struct StompFrame: Hashable, Sendable {
    public var command: StompCommand
    public var headers: [StompHeader]
    public var body: [UInt8]

    public init(_ command: StompCommand, _ headers: [StompHeader] = [], body: [UInt8] = []) {
        self.command = command
        self.headers = headers
        self.body = body
    }

    /// The first header called `name`, if any (names are case-sensitive).
    public subscript(_ name: String) -> String? {
        for h in self.headers where h.name == name { return h.value }
        return nil
    }

    /// The frame in wire form for a peer that speaks `version`: headers escaped as that version
    /// escapes them (none in 1.0, or in CONNECT, STOMP and CONNECTED), a `content-length` header
    /// added when the body is not empty and the frame has none, the body and the closing NUL.
    public func encoded(version: StompVersion = .v1_2) -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(64 + self.body.count + self.headers.reduce(0) { $0 + $1.name.utf8.count + $1.value.utf8.count + 2 })
        self.encode(into: &out, version: version)
        return out
    }

    public func encode(into out: inout [UInt8], version: StompVersion = .v1_2) {
        out.append(contentsOf: self.command.rawValue.utf8)
        out.append(0x0A)
        let escape = self.command.escapesHeaders && version > .v1_0
        for h in self.headers {
            StompFrame.appendHeaderText(h.name, to: &out, escape: escape, version: version)
            out.append(UInt8(ascii: ":"))
            StompFrame.appendHeaderText(h.value, to: &out, escape: escape, version: version)
            out.append(0x0A)
        }
        if !self.body.isEmpty && self["content-length"] == nil {
            out.append(contentsOf: "content-length:\(self.body.count)\n".utf8)
        }
        out.append(0x0A)
        out.append(contentsOf: self.body)
        out.append(0)
    }

    /// Escapes as STOMP 1.1 (`\n`, `\c`, `\\`) and 1.2 (also `\r`) do. Where nothing is escaped
    /// (1.0, the CONNECT family) a CR or LF cannot be written at all and is dropped.
    static func appendHeaderText(_ text: String, to out: inout [UInt8], escape: Bool, version: StompVersion) {
        for byte in text.utf8 {
            switch byte {
            case 0x0A:
                if escape { out.append(0x5C); out.append(UInt8(ascii: "n")) }
            case 0x0D:
                if escape && version >= .v1_2 { out.append(0x5C); out.append(UInt8(ascii: "r")) }
            case UInt8(ascii: ":"):
                if escape { out.append(0x5C); out.append(UInt8(ascii: "c")) } else { out.append(byte) }
            case 0x5C:
                if escape { out.append(0x5C); out.append(0x5C) } else { out.append(byte) }
            default:
                out.append(byte)
            }
        }
    }
}
