/// Every status number the C ABI reports, written out once: the one table. `include/petrel.h`
/// defines each as `PETREL_E_<NAME>` (the case name in upper snake case; `ok` is `PETREL_OK`),
/// and a test checks the header, the Swift error types and the Python binding against this
/// table, both ways. Numbers come in bands (wslay): -1xx try again or backpressure, -2xx the
/// peer broke the protocol (-24x a refused request, -26x a refused response), -3xx a bad
/// argument or state, -5xx resources and limits, -6xx I/O, TLS and proxies. A number, once
/// given out, is never reused or renumbered; reordering these cases changes nothing.
public enum StatusCode: Int32, CaseIterable, Sendable {
    case ok = 0

    case again = -101
    case backpressure = -102
    case timeout = -103
    case replayGone = -104
    case reconnecting = -105

    case reservedOpcode = -201
    case reservedBits = -202
    case controlTooLong = -203
    case fragmentedControl = -204
    case lengthTopBit = -205
    case unmaskedFrame = -206
    case maskedFrame = -207
    case unexpectedContinuation = -208
    case expectedContinuation = -209
    case closePayload = -210
    case closeCode = -211
    case invalidUTF8 = -212
    case closeReasonUTF8 = -213
    case frameTooBig = -214
    case messageTooBig = -215
    case inflate = -216
    case abnormalClosure = -217

    case hsMalformed = -240
    case hsTooLarge = -241
    case hsTooManyHeaders = -242
    case hsNotGet = -243
    case hsHTTPVersion = -244
    case hsHost = -245
    case hsNotUpgrade = -246
    case hsKey = -247
    case hsVersion = -248
    case hsOrigin = -249
    case hsExtensions = -250
    case hsSubprotocols = -251
    case hsUnavailable = -252
    case hsTimeout = -253

    case hsBadResponse = -260
    case hsResponseTooLarge = -261
    case hsStatus = -262
    case hsNoUpgrade = -263
    case hsNoConnection = -264
    case hsAccept = -265
    case hsSubprotocol = -266
    case hsExtension = -267
    case hsExtensionParams = -268

    case null = -301
    case invalidArgument = -302
    case unknownConnection = -303
    case stopped = -304
    case wrongThread = -305
    case closed = -306
    case state = -307
    case bufferTooSmall = -308
    case configSize = -309
    case sendingClosed = -320
    case controlPayload = -321
    case badCloseCode = -322
    case closeReasonLong = -323
    case badOpcode = -324
    case noMessage = -325
    case messageInProgress = -326

    case nomem = -501
    case tooBig = -502

    case resolve = -601
    case socket = -602
    case bind = -603
    case connect = -604
    case connectTimeout = -605
    case url = -606
    case thread = -607
    case handshake = -608
    case tls = -609
    case proxy = -610
    case engine = -611

    /// The name in `petrel.h`: `PETREL_OK`, or `PETREL_E_` and the case name in upper snake
    /// case (a word starts at an uppercase letter after a lowercase one or a digit, and at the
    /// last capital of an acronym followed by lowercase: `hsHTTPVersion` is `HS_HTTP_VERSION`).
    public var cName: String {
        if self == .ok { return "PETREL_OK" }
        let name = Array(String(describing: self).utf8)
        var out: [UInt8] = Array("PETREL_E_".utf8)
        func isUpper(_ c: UInt8) -> Bool { c >= 0x41 && c <= 0x5A }
        func isLower(_ c: UInt8) -> Bool { (c >= 0x61 && c <= 0x7A) || (c >= 0x30 && c <= 0x39) }
        for (i, c) in name.enumerated() {
            if i > 0 && isUpper(c) && (isLower(name[i - 1]) || (i + 1 < name.count && isUpper(name[i - 1]) && isLower(name[i + 1]) && !(name[i + 1] >= 0x30 && name[i + 1] <= 0x39))) {
                out.append(UInt8(ascii: "_"))
            }
            out.append(ASCII.upper(c))
        }
        return String(decoding: out, as: UTF8.self)
    }
}
