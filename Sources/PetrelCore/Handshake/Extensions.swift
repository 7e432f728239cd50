/// `Sec-WebSocket-Extensions` (RFC 6455 §9.1):
///
///     extension-list  = 1#extension
///     extension       = extension-token *( ";" extension-param )
///     extension-param = token [ "=" (token | quoted-string) ]
///
/// A quoted-string value must be a token once unescaped.
public struct ExtensionParameter: Hashable, Sendable {
    public var name: String
    public var value: String?

    public init(_ name: String, _ value: String? = nil) {
        self.name = name
        self.value = value
    }
}

/// One extension with its parameters, as offered by a client or accepted by a server.
public struct ExtensionOffer: Hashable, Sendable, CustomStringConvertible {
    public var name: String
    public var parameters: [ExtensionParameter]

    public init(name: String, parameters: [ExtensionParameter] = []) {
        self.name = name
        self.parameters = parameters
    }

    /// The header form: `name; p1; p2=v`.
    public var description: String {
        var s = self.name
        for p in self.parameters {
            s += "; " + p.name
            if let v = p.value { s += "=" + v }
        }
        return s
    }

    /// Parses every `Sec-WebSocket-Extensions` value, in order (repeated fields are one list).
    /// - Returns: nil if any value breaks the grammar.
    public static func parse(_ values: [String]) -> [ExtensionOffer]? {
        var out: [ExtensionOffer] = []
        for value in values {
            var p = ExtensionScanner(Array(value.utf8))
            guard p.parseList(into: &out) else { return nil }
        }
        return out
    }

    /// Formats a list for the header.
    public static func format(_ list: [ExtensionOffer]) -> String {
        list.map(\.description).joined(separator: ", ")
    }
}

private struct ExtensionScanner {
    let b: [UInt8]
    var i = 0

    init(_ bytes: [UInt8]) { self.b = bytes }

    mutating func skipOWS() {
        while self.i < self.b.count, self.b[self.i] == 0x20 || self.b[self.i] == 0x09 { self.i += 1 }
    }

    mutating func token() -> String? {
        let start = self.i
        while self.i < self.b.count, ASCII.isTokenChar(self.b[self.i]) { self.i += 1 }
        return self.i > start ? String(decoding: self.b[start..<self.i], as: UTF8.self) : nil
    }

    /// quoted-string = DQUOTE *( qdtext / quoted-pair ) DQUOTE; the result must be a token.
    mutating func quotedToken() -> String? {
        guard self.i < self.b.count, self.b[self.i] == UInt8(ascii: "\"") else { return nil }
        self.i += 1
        var v: [UInt8] = []
        while self.i < self.b.count {
            let c = self.b[self.i]
            if c == UInt8(ascii: "\"") {
                self.i += 1
                guard !v.isEmpty, v.allSatisfy(ASCII.isTokenChar) else { return nil }
                return String(decoding: v, as: UTF8.self)
            }
            if c == UInt8(ascii: "\\") {
                self.i += 1
                guard self.i < self.b.count else { return nil }
            }
            v.append(self.b[self.i])
            self.i += 1
        }
        return nil
    }

    mutating func parseList(into out: inout [ExtensionOffer]) -> Bool {
        var sawElement = false
        while true {
            self.skipOWS()
            if self.i == self.b.count { return sawElement || out.count > 0 }
            if self.b[self.i] == UInt8(ascii: ",") {  // empty list element (RFC 9110 §5.6.1)
                self.i += 1
                continue
            }
            guard let name = self.token() else { return false }
            var ext = ExtensionOffer(name: name)
            self.skipOWS()
            while self.i < self.b.count, self.b[self.i] == UInt8(ascii: ";") {
                self.i += 1
                self.skipOWS()
                guard let pname = self.token() else { return false }
                self.skipOWS()
                var value: String? = nil
                if self.i < self.b.count, self.b[self.i] == UInt8(ascii: "=") {
                    self.i += 1
                    self.skipOWS()
                    guard let v = self.token() ?? self.quotedToken() else { return false }
                    value = v
                    self.skipOWS()
                }
                ext.parameters.append(ExtensionParameter(pname, value))
            }
            out.append(ext)
            sawElement = true
            if self.i == self.b.count { return true }
            guard self.b[self.i] == UInt8(ascii: ",") else { return false }
            self.i += 1
        }
    }
}
