import CPetrelABI
import Glibc
import PetrelCore
import PetrelRuntime

/// A mutex and condition variable, for the blocking calls of the C client.
final class Monitor: @unchecked Sendable {
    private let mutex = UnsafeMutablePointer<pthread_mutex_t>.allocate(capacity: 1)
    private let cond = UnsafeMutablePointer<pthread_cond_t>.allocate(capacity: 1)

    init() {
        pthread_mutex_init(self.mutex, nil)
        var attr = pthread_condattr_t()
        pthread_condattr_init(&attr)
        pthread_condattr_setclock(&attr, CLOCK_MONOTONIC)
        pthread_cond_init(self.cond, &attr)
        pthread_condattr_destroy(&attr)
    }

    deinit {
        pthread_cond_destroy(self.cond)
        pthread_mutex_destroy(self.mutex)
        self.cond.deallocate()
        self.mutex.deallocate()
    }

    func locked<R>(_ body: () -> R) -> R {
        pthread_mutex_lock(self.mutex)
        defer { pthread_mutex_unlock(self.mutex) }
        return body()
    }

    /// Calls `ready` under the lock until it returns a value or `timeoutMs` passes (negative: forever).
    func wait<R>(timeoutMs: Int32, _ ready: () -> R?) -> R? {
        var deadline = timespec()
        clock_gettime(CLOCK_MONOTONIC, &deadline)
        if timeoutMs >= 0 {
            deadline.tv_sec += Int(timeoutMs / 1000)
            deadline.tv_nsec += Int(timeoutMs % 1000) * 1_000_000
            if deadline.tv_nsec >= 1_000_000_000 {
                deadline.tv_sec += 1
                deadline.tv_nsec -= 1_000_000_000
            }
        }
        pthread_mutex_lock(self.mutex)
        defer { pthread_mutex_unlock(self.mutex) }
        while true {
            if let r = ready() { return r }
            if timeoutMs < 0 {
                pthread_cond_wait(self.cond, self.mutex)
            } else if pthread_cond_timedwait(self.cond, self.mutex, &deadline) == ETIMEDOUT {
                return ready()
            }
        }
    }

    func signal(_ body: () -> Void) {
        pthread_mutex_lock(self.mutex)
        body()
        pthread_cond_broadcast(self.cond)
        pthread_mutex_unlock(self.mutex)
    }
}

/// What a `petrel_client *` points to.
final class CClient: @unchecked Sendable {
    let monitor = Monitor()
    var connection: Connection?
    var opened = false
    var failure: RuntimeError?
    var inbox: [(Int32, [UInt8])] = []
    var inboxHead = 0
    var closed: (UInt16, String)?
    /// Set by petrel_client_destroy: no user callback runs after it.
    var destroyed = false
    /// Held while a user callback runs, and by destroy: no callback runs after destroy returns.
    let callbackLock = Monitor()
    let usesCallbacks: Bool

    init(usesCallbacks: Bool) { self.usesCallbacks = usesCallbacks }

    var handle: OpaquePointer { OpaquePointer(Unmanaged.passUnretained(self).toOpaque()) }

    static func from(_ p: OpaquePointer?) -> CClient? {
        guard let p else { return nil }
        return Unmanaged<CClient>.fromOpaque(UnsafeRawPointer(p)).takeUnretainedValue()
    }
}

@_cdecl("petrel_client_config_init")
public func petrel_client_config_init(_ config: UnsafeMutablePointer<petrel_client_config>?) {
    guard let config else { return }
    let d = ClientConfiguration()
    var c = petrel_client_config()
    c.size = MemoryLayout<petrel_client_config>.size
    c.connect_timeout_ms = UInt32(d.connectTimeout)
    c.handshake_timeout_ms = UInt32(d.options.handshakeTimeout)
    c.max_message_size = UInt64(d.options.session.maxMessageSize)
    c.compression = 1
    c.max_backpressure = UInt64(d.options.maxBackpressure)
    config.pointee = c
}

@_cdecl("petrel_client_callbacks_init")
public func petrel_client_callbacks_init(_ callbacks: UnsafeMutablePointer<petrel_client_callbacks>?) {
    guard let callbacks else { return }
    var c = petrel_client_callbacks()
    c.size = MemoryLayout<petrel_client_callbacks>.size
    callbacks.pointee = c
}

@_cdecl("petrel_client_connect")
public func petrel_client_connect(
    _ url: UnsafePointer<CChar>?, _ config: UnsafePointer<petrel_client_config>?, _ callbacks: UnsafePointer<petrel_client_callbacks>?,
    _ clientOut: UnsafeMutablePointer<OpaquePointer?>?
) -> Int32 {
    guard let url, let clientOut else { return PETREL_E_NULL }
    // Blocking here would wait for the very thread that must complete the connect.
    if ClientConnector.isLoopThread { return PETREL_E_WRONG_THREAD }
    LastError.set("")
    LastRefusal.set(nil)
    guard let target = string(url) else { return PETREL_E_INVALID_ARGUMENT }
    var c = petrel_client_config()
    petrel_client_config_init(&c)
    if let config {
        guard readSized(config, size: config.pointee.size, into: &c) else { return PETREL_E_CONFIG_SIZE }
    }
    var cb = petrel_client_callbacks()
    petrel_client_callbacks_init(&cb)
    if let callbacks {
        guard readSized(callbacks, size: callbacks.pointee.size, into: &cb) else { return PETREL_E_CONFIG_SIZE }
    }
    var configuration = ClientConfiguration()
    guard let maxMessage = Int(exactly: c.max_message_size), maxMessage > 0, maxMessage <= 1 << 40 else { return PETREL_E_INVALID_ARGUMENT }
    configuration.connectTimeout = Int(c.connect_timeout_ms)
    configuration.options.handshakeTimeout = Int(c.handshake_timeout_ms)
    configuration.options.session.maxMessageSize = maxMessage
    configuration.options.session.maxFrameSize = maxMessage
    if c.compression == 0 { configuration.compression = nil }
    if c.subprotocols != nil {
        guard let list = commaList(c.subprotocols), list.allSatisfy(ASCII.isToken) else { return PETREL_E_INVALID_ARGUMENT }
        configuration.subprotocols = list
    }
    if let origin = c.origin {
        guard let o = string(origin) else { return PETREL_E_INVALID_ARGUMENT }
        configuration.origin = o
    }
    for (field, pointer) in [(\TLSClientConfiguration.caFile, c.tls_ca_file), (\.serverName, c.tls_server_name),
                             (\.certificateChainFile, c.tls_cert_file), (\.privateKeyFile, c.tls_key_file)] {
        guard let pointer else { continue }
        guard let value = string(pointer), !value.isEmpty else { return PETREL_E_INVALID_ARGUMENT }
        configuration.tls[keyPath: field] = value
    }
    configuration.tls.insecureSkipVerification = c.tls_insecure_skip_verify != 0
    if let p = c.proxy {
        guard let proxy = string(p), !proxy.isEmpty else { return PETREL_E_INVALID_ARGUMENT }
        configuration.proxy = proxy
    }
    configuration.proxyFromEnvironment = c.proxy_from_environment != 0
    if let p = c.headers {
        guard let fields = headerLines(p) else {
            LastError.set("headers: each line is \"Name: value\", lines joined by CRLF")
            return PETREL_E_INVALID_ARGUMENT
        }
        configuration.headers = fields
    }
    guard let maxBackpressure = Int(exactly: c.max_backpressure), maxBackpressure > 0 else { return PETREL_E_INVALID_ARGUMENT }
    configuration.options.maxBackpressure = maxBackpressure
    let client = CClient(usesCallbacks: callbacks != nil)
    let handle = client.handle
    let ptrs = CPointers(userdata: cb.userdata, handle: handle)
    let onMessage = cb.on_message
    let onClose = cb.on_close
    let onDrain = cb.on_drain
    let handlers = Handlers()
    // The connection is known from here: a callback may use the client (say, to pause it)
    // before ClientConnector.connect has returned to this thread.
    handlers.onOpen = { conn in client.monitor.signal {
        client.connection = conn
        client.opened = true
    } }
    handlers.onConnectFailed = { _, error in client.monitor.signal { client.failure = error } }
    handlers.onMessage = { _, kind, payload in
        if client.usesCallbacks {
            client.callbackLock.locked {
                if client.monitor.locked({ client.destroyed }) { return }
                onMessage?(ptrs.userdata, ptrs.handle, Int32(kind.rawValue), payload.baseAddress?.assumingMemoryBound(to: UInt8.self), payload.count)
            }
        } else {
            let copy = [UInt8](payload)
            client.monitor.signal { client.inbox.append((Int32(kind.rawValue), copy)) }
        }
    }
    if let onDrain {
        handlers.onDrain = { _ in
            client.callbackLock.locked {
                if client.monitor.locked({ client.destroyed }) { return }
                onDrain(ptrs.userdata, ptrs.handle)
            }
        }
    }
    handlers.onClose = { _, code, reason in
        if client.usesCallbacks, let onClose {
            client.callbackLock.locked {
                if client.monitor.locked({ client.destroyed }) { return }
                var r = reason
                r.withUTF8 { onClose(ptrs.userdata, ptrs.handle, code.rawValue, UnsafeRawPointer($0.baseAddress)?.assumingMemoryBound(to: CChar.self), $0.count) }
            }
        }
        // Signalled after on_close returned: a destroy waiting for the close cannot overtake it.
        client.monitor.signal { client.closed = (code.rawValue, reason) }
    }
    do throws(RuntimeError) {
        let connection = try ClientConnector.connect(to: target, configuration: configuration, handlers: handlers)
        client.monitor.signal { client.connection = connection }
    } catch {
        LastError.set(error.message)
        return Status.of(error)
    }
    let outcome = client.monitor.wait(timeoutMs: -1) { () -> Int32? in
        if client.opened { return PETREL_OK }
        if let f = client.failure {
            LastError.set(f.message)
            if f.httpStatus != 0 { LastRefusal.set(Refusal(status: UInt16(clamping: f.httpStatus), body: f.responseBody)) }
            return Status.of(f)
        }
        return nil
    }
    guard outcome == PETREL_OK else {
        // Break the client -> connection -> handlers -> client cycle of a failed connect.
        client.monitor.signal { client.connection = nil }
        return outcome ?? PETREL_E_CONNECT
    }
    clientOut.pointee = OpaquePointer(Unmanaged.passRetained(client).toOpaque())
    return PETREL_OK
}

@_cdecl("petrel_client_send")
public func petrel_client_send(_ client: OpaquePointer?, _ kind: Int32, _ data: UnsafeRawPointer?, _ len: Int) -> Int32 {
    guard let c = CClient.from(client), let conn = c.connection, data != nil || len == 0 else { return PETREL_E_NULL }
    guard len >= 0, kind == 1 || kind == 2, let k = MessageKind(rawValue: UInt8(kind)) else { return PETREL_E_INVALID_ARGUMENT }
    let payload = UnsafeRawBufferPointer(start: data, count: len)
    if k == .text && !UTF8Validator.isValid(payload) { return PETREL_E_INVALID_ARGUMENT }
    return Status.of(conn.send(k, payload))
}

@_cdecl("petrel_client_receive")
public func petrel_client_receive(
    _ client: OpaquePointer?, _ timeoutMs: Int32, _ kindOut: UnsafeMutablePointer<Int32>?, _ buf: UnsafeMutableRawPointer?, _ cap: Int,
    _ lenOut: UnsafeMutablePointer<Int>?
) -> Int32 {
    guard let c = CClient.from(client), let kindOut, let lenOut else { return PETREL_E_NULL }
    guard cap >= 0 else { return PETREL_E_INVALID_ARGUMENT }
    if c.usesCallbacks { return PETREL_E_STATE }
    return c.monitor.wait(timeoutMs: timeoutMs) { () -> Int32? in
        if c.inboxHead < c.inbox.count {
            let (kind, bytes) = c.inbox[c.inboxHead]
            lenOut.pointee = bytes.count
            guard bytes.count <= cap, buf != nil || bytes.isEmpty else { return PETREL_E_BUFFER_TOO_SMALL }
            if let buf, !bytes.isEmpty { bytes.withUnsafeBytes { buf.copyMemory(from: $0.baseAddress!, byteCount: bytes.count) } }
            kindOut.pointee = kind
            c.inboxHead += 1
            if c.inboxHead == c.inbox.count {
                c.inbox.removeAll()
                c.inboxHead = 0
            }
            return PETREL_OK
        }
        return c.closed != nil ? PETREL_E_CLOSED : nil
    } ?? PETREL_E_TIMEOUT
}

@_cdecl("petrel_client_close")
public func petrel_client_close(_ client: OpaquePointer?, _ code: UInt16, _ reason: UnsafePointer<CChar>?) -> Int32 {
    guard let c = CClient.from(client), let conn = c.connection else { return PETREL_E_NULL }
    var text = ""
    if let reason {
        guard let r = string(reason) else { return PETREL_E_INVALID_ARGUMENT }
        text = r
    }
    guard CloseCode(code).isValidOnWire, text.utf8.count <= 123 else { return PETREL_E_INVALID_ARGUMENT }
    if conn.isClosed { return PETREL_E_CLOSED }
    conn.close(code: CloseCode(code), reason: text)
    return PETREL_OK
}

@_cdecl("petrel_client_pause_reading")
public func petrel_client_pause_reading(_ client: OpaquePointer?, _ paused: Int32) -> Int32 {
    guard let c = CClient.from(client), let conn = c.monitor.locked({ c.connection }) else { return PETREL_E_NULL }
    guard paused == 0 || paused == 1 else { return PETREL_E_INVALID_ARGUMENT }
    if conn.isClosed { return PETREL_E_CLOSED }
    conn.holdReading(paused == 1)
    return PETREL_OK
}

@_cdecl("petrel_client_ping")
public func petrel_client_ping(_ client: OpaquePointer?, _ data: UnsafeRawPointer?, _ len: Int) -> Int32 {
    guard let c = CClient.from(client), let conn = c.monitor.locked({ c.connection }), data != nil || len == 0 else { return PETREL_E_NULL }
    guard len >= 0, len <= 125 else { return PETREL_E_INVALID_ARGUMENT }
    if conn.isClosed { return PETREL_E_CLOSED }
    conn.ping(Array(UnsafeRawBufferPointer(start: data, count: len)))
    return PETREL_OK
}

@_cdecl("petrel_client_rtt")
public func petrel_client_rtt(_ client: OpaquePointer?, _ out: UnsafeMutablePointer<UInt32>?) -> Int32 {
    guard let c = CClient.from(client), let conn = c.monitor.locked({ c.connection }), let out else { return PETREL_E_NULL }
    guard let rtt = conn.roundTripTime else { return PETREL_E_AGAIN }
    out.pointee = UInt32(clamping: rtt)
    return PETREL_OK
}

@_cdecl("petrel_client_subprotocol")
public func petrel_client_subprotocol(_ client: OpaquePointer?, _ buf: UnsafeMutablePointer<CChar>?, _ cap: Int, _ lenOut: UnsafeMutablePointer<Int>?) -> Int32 {
    guard let c = CClient.from(client), let conn = c.monitor.locked({ c.connection }), lenOut != nil else { return PETREL_E_NULL }
    guard cap >= 0 else { return PETREL_E_INVALID_ARGUMENT }
    guard let chosen = conn.subprotocol else { return PETREL_E_AGAIN }
    return copyOut(chosen, buf, cap, lenOut)
}

/// The HTTP status and body of the last handshake petrel_client_connect saw refused, per thread.
struct Refusal {
    var status: UInt16
    var body: [UInt8]
}

enum LastRefusal {
    final class Box {
        let value: Refusal
        init(_ value: Refusal) { self.value = value }
    }
    private static let key: pthread_key_t = {
        var k = pthread_key_t()
        pthread_key_create(&k) { if let p = $0 { Unmanaged<Box>.fromOpaque(p).release() } }
        return k
    }()

    static func set(_ value: Refusal?) {
        if let old = pthread_getspecific(key) { Unmanaged<Box>.fromOpaque(old).release() }
        pthread_setspecific(key, value.map { Unmanaged.passRetained(Box($0)).toOpaque() })
    }

    static var current: Refusal? { pthread_getspecific(key).map { Unmanaged<Box>.fromOpaque($0).takeUnretainedValue().value } }
}

@_cdecl("petrel_last_refusal")
public func petrel_last_refusal(
    _ statusOut: UnsafeMutablePointer<UInt16>?, _ body: UnsafeMutablePointer<CChar>?, _ cap: Int, _ lenOut: UnsafeMutablePointer<Int>?
) -> Int32 {
    guard let statusOut, let lenOut else { return PETREL_E_NULL }
    guard cap >= 0 else { return PETREL_E_INVALID_ARGUMENT }
    guard let r = LastRefusal.current else { return PETREL_E_AGAIN }
    statusOut.pointee = r.status
    return copyOut(r.body, body, cap, lenOut)
}

/// "Name: value" lines joined by CRLF (a bare LF is taken too; empty lines are skipped); nil
/// when a line has no colon. The fields themselves are checked by the connector.
private func headerLines(_ p: UnsafePointer<CChar>) -> [HTTPField]? {
    guard let text = string(p) else { return nil }
    var fields: [HTTPField] = []
    // By bytes: to a String, "\r\n" is one character, not a "\n".
    for raw in text.utf8.split(separator: UInt8(ascii: "\n"), omittingEmptySubsequences: true) {
        var line = raw[...]
        if line.last == UInt8(ascii: "\r") { line = line.dropLast() }
        if line.isEmpty { continue }
        guard let colon = line.firstIndex(of: UInt8(ascii: ":")) else { return nil }
        let value = line[line.index(after: colon)...].drop(while: { $0 == 0x20 || $0 == 0x09 })
        fields.append(HTTPField(name: String(decoding: line[..<colon], as: UTF8.self), value: String(decoding: value, as: UTF8.self)))
    }
    return fields
}

@_cdecl("petrel_client_close_status")
public func petrel_client_close_status(
    _ client: OpaquePointer?, _ codeOut: UnsafeMutablePointer<UInt16>?, _ reason: UnsafeMutablePointer<CChar>?, _ cap: Int,
    _ lenOut: UnsafeMutablePointer<Int>?
) -> Int32 {
    guard let c = CClient.from(client), let codeOut, let lenOut else { return PETREL_E_NULL }
    guard let (code, text) = c.monitor.locked({ c.closed }) else { return PETREL_E_AGAIN }
    let status = copyOut(text, reason, cap, lenOut)
    if status == PETREL_OK { codeOut.pointee = code }
    return status
}

@_cdecl("petrel_client_destroy")
public func petrel_client_destroy(_ client: OpaquePointer?) {
    guard let client, let c = CClient.from(client) else { return }
    if let conn = c.connection, !conn.isClosed {
        conn.close(code: .goingAway, reason: "client destroyed")
        _ = c.monitor.wait(timeoutMs: 2_000) { c.closed != nil ? true : nil }
    }
    // The connection's handlers hold the client; dropping our hold on the connection breaks the
    // cycle, so both are freed once the loop forgets the connection.
    // Taking the callback lock waits for a callback in progress; none starts after this.
    c.callbackLock.locked {
        c.monitor.signal {
            c.destroyed = true
            c.connection = nil
        }
    }
    Unmanaged<CClient>.fromOpaque(UnsafeRawPointer(client)).release()
}
