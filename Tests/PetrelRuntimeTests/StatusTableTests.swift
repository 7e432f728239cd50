import Foundation
import PetrelCore
@testable import PetrelRuntime
import Testing

/// The one table of status numbers (PetrelCore's `StatusCode`) against everything that repeats
/// it: the C header, the Python binding's `_status.py`, and the Swift error types' `code`.
@Suite("Status numbers: one table, checked against the header, Python and the error types")
struct StatusTableTests {
    static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()

    /// `NAME -> number` for every line that `pattern` matches (two groups: name, number).
    static func definitions(in path: String, _ pattern: String) throws -> [String: Int32] {
        let text = try String(contentsOf: Self.root.appendingPathComponent(path), encoding: .utf8)
        let regex = try NSRegularExpression(pattern: pattern, options: [.anchorsMatchLines])
        var out: [String: Int32] = [:]
        for m in regex.matches(in: text, range: NSRange(text.startIndex..., in: text)) {
            let name = String(text[Range(m.range(at: 1), in: text)!])
            let value = Int32(text[Range(m.range(at: 2), in: text)!])!
            #expect(out[name] == nil, "\(path) defines \(name) twice")
            out[name] = value
        }
        return out
    }

    /// Each name whose number differs, or that only one side has: "NAME: found vs table".
    static func differences(_ found: [String: Int32], _ expected: [String: Int32]) -> [String] {
        Set(found.keys).union(expected.keys).sorted().compactMap { name in
            found[name] == expected[name] ? nil : "\(name): \(found[name].map(String.init) ?? "absent") vs \(expected[name].map(String.init) ?? "absent")"
        }
    }

    static var table: [String: Int32] {
        Dictionary(uniqueKeysWithValues: StatusCode.allCases.map { ($0.cName, $0.rawValue) })
    }

    @Test("the table has no number twice, and the names are petrel.h's spelling")
    func tableIsOneToOne() {
        #expect(Set(StatusCode.allCases.map(\.rawValue)).count == StatusCode.allCases.count)
        #expect(StatusCode.hsHTTPVersion.cName == "PETREL_E_HS_HTTP_VERSION")
        #expect(StatusCode.invalidUTF8.cName == "PETREL_E_INVALID_UTF8")
        #expect(StatusCode.closeReasonUTF8.cName == "PETREL_E_CLOSE_REASON_UTF8")
        #expect(StatusCode.ok.cName == "PETREL_OK")
    }

    @Test("include/petrel.h defines exactly the table's names with the table's numbers")
    func header() throws {
        let header = try Self.definitions(in: "include/petrel.h", #"^#define (PETREL_(?:OK|E_\w+)) \(?(-?\d+)\)?"#)
        #expect(Self.differences(header, Self.table).isEmpty, "\(Self.differences(header, Self.table))")
    }

    @Test("the Python binding's _status.py has exactly the table's names and numbers")
    func python() throws {
        let python = try Self.definitions(in: "bindings/python/src/petrel/_status.py", #"^((?:OK|E_\w+)) = (-?\d+)$"#)
        let expected = Dictionary(uniqueKeysWithValues: Self.table.map { (String($0.key.dropFirst("PETREL_".count)), $0.value) })
        #expect(Self.differences(python, expected).isEmpty, "\(Self.differences(python, expected))")
    }

    @Test("each error type's cases have distinct codes in their band")
    func errorTypes() {
        func check(_ codes: [StatusCode], _ band: ClosedRange<Int32>, _ what: String) {
            #expect(Set(codes).count == codes.count, "\(what): two cases share a code")
            for c in codes { #expect(band.contains(c.rawValue), "\(what): \(c) outside \(band)") }
        }
        check(ProtocolError.allCases.map(\.code), -239 ... -201, "ProtocolError")
        check(HandshakeError.allCases.map(\.code), -259 ... -240, "HandshakeError")
        check(ClientHandshakeError.allCases.map(\.code), -269 ... -260, "ClientHandshakeError")
        check(UsageError.allCases.map(\.code), -329 ... -320, "UsageError")
        for kind in RuntimeError.Kind.allCases {
            let code = RuntimeError(kind, "").code
            #expect(code.rawValue < 0, "RuntimeError.\(kind) maps to \(code)")
        }
    }
}
