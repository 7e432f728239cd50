import CPetrelABI
import Glibc
import PetrelCore
import PetrelRuntime

// Connection operations by id. Safe from any thread: the runtime queues them to the loop.

private func lookup(_ server: OpaquePointer?, _ conn: UInt64) -> Result<Connection, CStatusError> {
    guard let s = CServer.from(server) else { return .failure(CStatusError(PETREL_E_NULL)) }
    guard let c = s.server.connection(ConnectionID(rawValue: conn)) else {
        return .failure(CStatusError(PETREL_E_UNKNOWN_CONNECTION))
    }
    return .success(c)
}

@_cdecl("petrel_conn_send")
public func petrel_conn_send(_ server: OpaquePointer?, _ conn: UInt64, _ kind: Int32, _ data: UnsafeRawPointer?, _ len: Int) -> Int32 {
    guard data != nil || len == 0 else { return PETREL_E_NULL }
    guard len >= 0, kind == 1 || kind == 2, let k = MessageKind(rawValue: UInt8(kind)) else { return PETREL_E_INVALID_ARGUMENT }
    guard let server else { return PETREL_E_NULL }
    let payload = UnsafeRawBufferPointer(start: data, count: len)
    let box = Unmanaged<CServer>.fromOpaque(UnsafeRawPointer(server))
    let (slots, maxMessageSize) = box._withUnsafeGuaranteedRef { ($0.inCallback, $0.maxMessageSize) }
    if len > maxMessageSize { return PETREL_E_TOO_BIG }
    // Inside that connection's own on_message (a reply, an echo): no lookup, and text that is
    // the received message itself is already known to be UTF-8. An event stream has no
    // on_message, so this is a WebSocket.
    let slot = slots + Int(conn & 0xFF)
    if CServer.isCurrent(slot, conn), let c = slot.pointee.connection {
        if k == .text && !(slot.pointee.payload.baseAddress == payload.baseAddress && slot.pointee.payload.count == len)
            && !UTF8Validator.isValid(payload) {
            return PETREL_E_INVALID_ARGUMENT
        }
        return c._withUnsafeGuaranteedRef { Status.of($0.sendOnLoop(k, payload, accepted: false)) }
    }
    return box._withUnsafeGuaranteedRef { s in
        guard let c = s.server.connection(ConnectionID(rawValue: conn)) else { return PETREL_E_UNKNOWN_CONNECTION }
        if k == .text && !UTF8Validator.isValid(payload) { return PETREL_E_INVALID_ARGUMENT }
        if k == .binary && c.isEventStream { return PETREL_E_INVALID_ARGUMENT }
        return Status.of(c.send(k, payload))
    }
}

@_cdecl("petrel_conn_pause_reading")
public func petrel_conn_pause_reading(_ server: OpaquePointer?, _ conn: UInt64, _ paused: Int32) -> Int32 {
    guard paused == 0 || paused == 1 else { return PETREL_E_INVALID_ARGUMENT }
    switch lookup(server, conn) {
    case .failure(let e): return e.status
    case .success(let c):
        c.holdReading(paused == 1)
        return PETREL_OK
    }
}

@_cdecl("petrel_conn_send_event")
public func petrel_conn_send_event(_ server: OpaquePointer?, _ conn: UInt64, _ eventID: UInt64, _ data: UnsafeRawPointer?, _ len: Int) -> Int32 {
    guard data != nil || len == 0 else { return PETREL_E_NULL }
    guard len >= 0 else { return PETREL_E_INVALID_ARGUMENT }
    let c: Connection
    switch lookup(server, conn) {
    case .failure(let e): return e.status
    case .success(let found): c = found
    }
    let payload = UnsafeRawBufferPointer(start: data, count: len)
    guard UTF8Validator.isValid(payload) else { return PETREL_E_INVALID_ARGUMENT }
    if let s = CServer.from(server), len > s.server.configuration.options.session.maxMessageSize { return PETREL_E_TOO_BIG }
    return Status.of(c.send(text: String(decoding: payload, as: UTF8.self), eventID: eventID))
}

@_cdecl("petrel_conn_last_event_id")
public func petrel_conn_last_event_id(_ server: OpaquePointer?, _ conn: UInt64, _ idOut: UnsafeMutablePointer<UInt64>?) -> Int32 {
    guard let idOut else { return PETREL_E_NULL }
    switch lookup(server, conn) {
    case .failure(let e): return e.status
    case .success(let c):
        guard let id = c.lastEventID else { return PETREL_E_AGAIN }
        idOut.pointee = id
        return PETREL_OK
    }
}

@_cdecl("petrel_conn_subscribe_after")
public func petrel_conn_subscribe_after(_ server: OpaquePointer?, _ conn: UInt64, _ topic: UnsafePointer<CChar>?, _ after: UInt64) -> Int32 {
    var resumed = false
    let status = topicCall(server, conn, topic) { resumed = $0.subscribe($1, after: after) }
    return status == PETREL_OK && !resumed ? PETREL_E_REPLAY_GONE : status
}

@_cdecl("petrel_conn_close")
public func petrel_conn_close(_ server: OpaquePointer?, _ conn: UInt64, _ code: UInt16, _ reason: UnsafePointer<CChar>?) -> Int32 {
    var text = ""
    if let reason {
        guard let r = string(reason) else { return PETREL_E_INVALID_ARGUMENT }
        text = r
    }
    guard CloseCode(code).isValidOnWire, text.utf8.count <= 123 else { return PETREL_E_INVALID_ARGUMENT }
    switch lookup(server, conn) {
    case .failure(let e): return e.status
    case .success(let c):
        c.close(code: CloseCode(code), reason: text)
        return PETREL_OK
    }
}

private func topicCall(_ server: OpaquePointer?, _ conn: UInt64, _ topic: UnsafePointer<CChar>?, _ body: (Connection, String) -> Void) -> Int32 {
    guard let topic else { return PETREL_E_NULL }
    guard let t = string(topic) else { return PETREL_E_INVALID_ARGUMENT }
    switch lookup(server, conn) {
    case .failure(let e): return e.status
    case .success(let c):
        body(c, t)
        return PETREL_OK
    }
}

@_cdecl("petrel_conn_subscribe")
public func petrel_conn_subscribe(_ server: OpaquePointer?, _ conn: UInt64, _ topic: UnsafePointer<CChar>?) -> Int32 {
    topicCall(server, conn, topic) { $0.subscribe($1) }
}

@_cdecl("petrel_conn_unsubscribe")
public func petrel_conn_unsubscribe(_ server: OpaquePointer?, _ conn: UInt64, _ topic: UnsafePointer<CChar>?) -> Int32 {
    topicCall(server, conn, topic) { $0.unsubscribe($1) }
}

@_cdecl("petrel_conn_data")
public func petrel_conn_data(_ server: OpaquePointer?, _ conn: UInt64, _ out: UnsafeMutablePointer<UnsafeMutableRawPointer?>?) -> Int32 {
    guard let out else { return PETREL_E_NULL }
    switch lookup(server, conn) {
    case .failure(let e): return e.status
    case .success(let c):
        let value = c.userData
        if value == closedData { return PETREL_E_UNKNOWN_CONNECTION }
        out.pointee = UnsafeMutableRawPointer(bitPattern: value)
        return PETREL_OK
    }
}

@_cdecl("petrel_server_each_conn")
public func petrel_server_each_conn(_ server: OpaquePointer?, _ fn: petrel_conn_visitor?, _ userdata: UnsafeMutableRawPointer?) -> Int32 {
    guard let box = CServer.from(server), let fn else { return PETREL_E_NULL }
    for c in box.server.openConnectionsNow() {
        // Under the lock on_close's trampoline takes the pointer with: a pointer seen here is not
        // freed until fn returns.
        box.visiting.withLock {
            let value = c.userData
            guard value != closedData, c.isOpen else { return }
            fn(userdata, server, c.id.rawValue, UnsafeMutableRawPointer(bitPattern: value))
        }
    }
    return PETREL_OK
}

@_cdecl("petrel_conn_set_data")
public func petrel_conn_set_data(_ server: OpaquePointer?, _ conn: UInt64, _ data: UnsafeMutableRawPointer?) -> Int32 {
    switch lookup(server, conn) {
    case .failure(let e): return e.status
    case .success(let c):
        // Not after on_close has taken the pointer: it would reach no callback.
        return c.replaceUserData(UInt(bitPattern: data), unless: closedData) ? PETREL_OK : PETREL_E_UNKNOWN_CONNECTION
    }
}

@_cdecl("petrel_conn_ping")
public func petrel_conn_ping(_ server: OpaquePointer?, _ conn: UInt64, _ data: UnsafeRawPointer?, _ len: Int) -> Int32 {
    guard data != nil || len == 0 else { return PETREL_E_NULL }
    guard len >= 0, len <= 125 else { return PETREL_E_INVALID_ARGUMENT }
    switch lookup(server, conn) {
    case .failure(let e): return e.status
    case .success(let c):
        if c.isEventStream { return PETREL_E_INVALID_ARGUMENT }
        c.ping(Array(UnsafeRawBufferPointer(start: data, count: len)))
        return PETREL_OK
    }
}

@_cdecl("petrel_conn_rtt")
public func petrel_conn_rtt(_ server: OpaquePointer?, _ conn: UInt64, _ out: UnsafeMutablePointer<UInt32>?) -> Int32 {
    guard let out else { return PETREL_E_NULL }
    switch lookup(server, conn) {
    case .failure(let e): return e.status
    case .success(let c):
        guard let rtt = c.roundTripTime else { return PETREL_E_AGAIN }
        out.pointee = UInt32(clamping: rtt)
        return PETREL_OK
    }
}

@_cdecl("petrel_conn_subprotocol")
public func petrel_conn_subprotocol(_ server: OpaquePointer?, _ conn: UInt64, _ buf: UnsafeMutablePointer<CChar>?, _ cap: Int, _ lenOut: UnsafeMutablePointer<Int>?) -> Int32 {
    requestField(server, conn, buf, cap, lenOut) { $0.subprotocol }
}

@_cdecl("petrel_conn_is_stomp")
public func petrel_conn_is_stomp(_ server: OpaquePointer?, _ conn: UInt64, _ out: UnsafeMutablePointer<Int32>?) -> Int32 {
    guard let out else { return PETREL_E_NULL }
    switch lookup(server, conn) {
    case .failure(let e): return e.status
    case .success(let c):
        out.pointee = c.isStomp ? 1 : 0
        return PETREL_OK
    }
}

@_cdecl("petrel_conn_buffered_amount")
public func petrel_conn_buffered_amount(_ server: OpaquePointer?, _ conn: UInt64, _ bytesOut: UnsafeMutablePointer<UInt64>?) -> Int32 {
    guard let bytesOut else { return PETREL_E_NULL }
    switch lookup(server, conn) {
    case .failure(let e): return e.status
    case .success(let c):
        bytesOut.pointee = UInt64(max(0, c.bufferedAmount))
        return PETREL_OK
    }
}

private func requestField(
    _ server: OpaquePointer?, _ conn: UInt64, _ buf: UnsafeMutablePointer<CChar>?, _ cap: Int, _ lenOut: UnsafeMutablePointer<Int>?,
    _ field: (Connection) -> String?
) -> Int32 {
    guard lenOut != nil else { return PETREL_E_NULL }
    guard cap >= 0 else { return PETREL_E_INVALID_ARGUMENT }
    switch lookup(server, conn) {
    case .failure(let e): return e.status
    case .success(let c):
        guard let value = field(c) else { return PETREL_E_AGAIN }
        return copyOut(value, buf, cap, lenOut)
    }
}

@_cdecl("petrel_conn_path")
public func petrel_conn_path(_ server: OpaquePointer?, _ conn: UInt64, _ buf: UnsafeMutablePointer<CChar>?, _ cap: Int, _ lenOut: UnsafeMutablePointer<Int>?) -> Int32 {
    requestField(server, conn, buf, cap, lenOut) { ($0.request?.head ?? $0.httpRequest)?.path }
}

@_cdecl("petrel_conn_query")
public func petrel_conn_query(_ server: OpaquePointer?, _ conn: UInt64, _ buf: UnsafeMutablePointer<CChar>?, _ cap: Int, _ lenOut: UnsafeMutablePointer<Int>?) -> Int32 {
    requestField(server, conn, buf, cap, lenOut) { ($0.request?.head ?? $0.httpRequest)?.query }
}

@_cdecl("petrel_conn_header")
public func petrel_conn_header(
    _ server: OpaquePointer?, _ conn: UInt64, _ name: UnsafePointer<CChar>?, _ buf: UnsafeMutablePointer<CChar>?, _ cap: Int,
    _ lenOut: UnsafeMutablePointer<Int>?
) -> Int32 {
    guard let name else { return PETREL_E_NULL }
    guard let n = string(name) else { return PETREL_E_INVALID_ARGUMENT }
    return requestField(server, conn, buf, cap, lenOut) { ($0.request?.head ?? $0.httpRequest)?.headers.first(n) }
}

@_cdecl("petrel_conn_query_param")
public func petrel_conn_query_param(
    _ server: OpaquePointer?, _ conn: UInt64, _ name: UnsafePointer<CChar>?, _ buf: UnsafeMutablePointer<CChar>?, _ cap: Int,
    _ lenOut: UnsafeMutablePointer<Int>?
) -> Int32 {
    guard let name else { return PETREL_E_NULL }
    guard let n = string(name) else { return PETREL_E_INVALID_ARGUMENT }
    return requestField(server, conn, buf, cap, lenOut) { ($0.request?.head ?? $0.httpRequest)?.queryParameter(n) }
}

@_cdecl("petrel_conn_client_address")
public func petrel_conn_client_address(_ server: OpaquePointer?, _ conn: UInt64, _ buf: UnsafeMutablePointer<CChar>?, _ cap: Int, _ lenOut: UnsafeMutablePointer<Int>?) -> Int32 {
    requestField(server, conn, buf, cap, lenOut) { $0.clientAddress }
}

@_cdecl("petrel_conn_peer_address")
public func petrel_conn_peer_address(_ server: OpaquePointer?, _ conn: UInt64, _ buf: UnsafeMutablePointer<CChar>?, _ cap: Int, _ lenOut: UnsafeMutablePointer<Int>?) -> Int32 {
    requestField(server, conn, buf, cap, lenOut) { $0.peerAddress.description }
}
