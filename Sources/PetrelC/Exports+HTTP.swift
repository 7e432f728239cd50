import CPetrelABI
import Glibc
import PetrelCore
import PetrelRuntime

// Plain HTTP requests for on_http: the request is lent to the callback as a C struct whose
// `internal_` points to this exchange, which collects the answer.

final class CHTTPExchange {
    let request: HTTPRequest
    let connectionID: UInt64
    /// An upgrade (on_upgrade): the subprotocols the client offered.
    let offeredSubprotocols: [String]?
    var answer: HTTPAnswer?
    /// on_upgrade's refusal (status and body), or acceptance.
    var refusal: (status: Int, contentType: String, body: [UInt8])?
    var acceptance: (subprotocol: String?, data: UnsafeMutableRawPointer?)?

    init(_ request: HTTPRequest, connectionID: UInt64, offeredSubprotocols: [String]? = nil) {
        self.request = request
        self.connectionID = connectionID
        self.offeredSubprotocols = offeredSubprotocols
    }

    static func from(_ r: UnsafePointer<petrel_http_request>?) -> CHTTPExchange? {
        guard let p = r?.pointee.internal_ else { return nil }
        return Unmanaged<CHTTPExchange>.fromOpaque(p).takeUnretainedValue()
    }

    /// Calls `callback` with the request as a C struct; returns the answer it gave, if any.
    func lend(_ callback: (UnsafePointer<petrel_http_request>) -> Void) -> HTTPAnswer? {
        let head = self.request.head
        withCStrings([head.method, head.path, head.query ?? "", self.request.peer.description, self.request.clientAddress]) { s in
            self.request.body.withUnsafeBufferPointer { body in
                var c = petrel_http_request()
                c.method = s[0]
                c.path = s[1]
                c.query = s[2]
                c.peer = s[3]
                c.client = s[4]
                c.body = body.count > 0 ? body.baseAddress : nil
                c.body_len = body.count
                c.conn = self.connectionID
                c.internal_ = Unmanaged.passUnretained(self).toOpaque()
                withUnsafePointer(to: &c) { callback($0) }
            }
        }
        return self.answer
    }
}

@_cdecl("petrel_http_respond")
public func petrel_http_respond(
    _ request: UnsafePointer<petrel_http_request>?, _ status: UInt16, _ contentType: UnsafePointer<CChar>?, _ body: UnsafeRawPointer?,
    _ len: Int
) -> Int32 {
    guard let exchange = CHTTPExchange.from(request), let contentType, body != nil || len == 0 else { return PETREL_E_NULL }
    guard (200...599).contains(status), len >= 0, let type = string(contentType), !type.isEmpty,
        !type.utf8.contains(where: { $0 < 0x20 || $0 == 0x7F })
    else { return PETREL_E_INVALID_ARGUMENT }
    guard exchange.answer == nil, exchange.acceptance == nil else { return PETREL_E_STATE }
    let bytes = [UInt8](UnsafeRawBufferPointer(start: body, count: len))
    exchange.answer = .response(status: Int(status), contentType: type, body: bytes)
    exchange.refusal = (Int(status), type, bytes)
    return PETREL_OK
}

@_cdecl("petrel_upgrade_accept")
public func petrel_upgrade_accept(_ request: UnsafePointer<petrel_http_request>?, _ subprotocol: UnsafePointer<CChar>?, _ data: UnsafeMutableRawPointer?) -> Int32 {
    guard let exchange = CHTTPExchange.from(request) else { return PETREL_E_NULL }
    guard let offered = exchange.offeredSubprotocols, exchange.answer == nil, exchange.acceptance == nil else { return PETREL_E_STATE }
    var chosen: String? = nil
    if let subprotocol {
        guard let s = string(subprotocol), offered.contains(s) else { return PETREL_E_INVALID_ARGUMENT }
        chosen = s
    }
    exchange.acceptance = (chosen, data)
    return PETREL_OK
}

/// Copies a field of the request that `field` picks (a header, a query parameter) by name.
private func requestText(
    _ request: UnsafePointer<petrel_http_request>?, _ name: UnsafePointer<CChar>?, _ buf: UnsafeMutablePointer<CChar>?, _ cap: Int,
    _ lenOut: UnsafeMutablePointer<Int>?, _ field: (HTTPRequest, String) -> String?
) -> Int32 {
    guard let exchange = CHTTPExchange.from(request), let name, lenOut != nil else { return PETREL_E_NULL }
    guard let n = string(name), cap >= 0 else { return PETREL_E_INVALID_ARGUMENT }
    guard let value = field(exchange.request, n) else { return PETREL_E_AGAIN }
    return copyOut(value, buf, cap, lenOut)
}

@_cdecl("petrel_http_header")
public func petrel_http_header(
    _ request: UnsafePointer<petrel_http_request>?, _ name: UnsafePointer<CChar>?, _ buf: UnsafeMutablePointer<CChar>?, _ cap: Int,
    _ lenOut: UnsafeMutablePointer<Int>?
) -> Int32 {
    requestText(request, name, buf, cap, lenOut) { $0.head.headers.first($1) }
}

@_cdecl("petrel_http_query_param")
public func petrel_http_query_param(
    _ request: UnsafePointer<petrel_http_request>?, _ name: UnsafePointer<CChar>?, _ buf: UnsafeMutablePointer<CChar>?, _ cap: Int,
    _ lenOut: UnsafeMutablePointer<Int>?
) -> Int32 {
    requestText(request, name, buf, cap, lenOut) { $0.queryParameter($1) }
}
