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

/// What a `petrel_client *` points to: the connection of the moment and, with reconnecting on,
/// what the next attempt needs (`ReconnectPolicy` decides; `Reconnector` waits and connects).
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
    let url: String
    let configuration: ClientConfiguration
    let callbacks: petrel_client_callbacks
    /// Nil: the client does not reconnect.
    let policy: ReconnectPolicy?
    let queueWhileReconnecting: Bool

    // Under `monitor`:
    /// Between connections: lost, waiting or attempting.
    var reconnecting = false
    /// Attempts since the last open.
    var attempt = 0
    /// petrel_client_close or _destroy was called: no more attempts.
    var userClosed = false
    /// `finish` has begun: nothing more is delivered.
    var finishing = false
    var lastEventID: UInt64?
    /// Receive mode: messages taken by petrel_client_receive since the application last named an id.
    var takenSinceNamed = 0
    /// What on_state last reported (PETREL_CLIENT_*) and its attempt.
    var state: (Int32, UInt32) = (PETREL_CLIENT_CONNECTING, 0)
    /// Messages sent between connections (queue_while_reconnecting), and their bytes.
    var pending: [(MessageKind, [UInt8])] = []
    var pendingBytes = 0

    init(url: String, configuration: ClientConfiguration, callbacks: petrel_client_callbacks, usesCallbacks: Bool,
         policy: ReconnectPolicy?, queueWhileReconnecting: Bool) {
        self.url = url
        self.configuration = configuration
        self.callbacks = callbacks
        self.usesCallbacks = usesCallbacks
        self.policy = policy
        self.queueWhileReconnecting = queueWhileReconnecting
    }

    var handle: OpaquePointer { OpaquePointer(Unmanaged.passUnretained(self).toOpaque()) }

    static func from(_ p: OpaquePointer?) -> CClient? {
        guard let p else { return nil }
        return Unmanaged<CClient>.fromOpaque(UnsafeRawPointer(p)).takeUnretainedValue()
    }

    /// Runs a user callback unless the client was destroyed; none runs after destroy returns.
    func callback(_ body: (UnsafeMutableRawPointer?, OpaquePointer) -> Void) {
        self.callbackLock.locked {
            if self.monitor.locked({ self.destroyed }) { return }
            body(self.callbacks.userdata, self.handle)
        }
    }

    /// Records a state and reports it to on_state, in order (under the callback lock); nothing
    /// but CLOSED once the end has begun.
    func report(_ state: Int32, attempt: Int, delay: Int = 0, reason: String = "") {
        self.callbackLock.locked {
            let deliver = self.monitor.locked { () -> Bool in
                if self.finishing && state != PETREL_CLIENT_CLOSED { return false }
                self.state = (state, UInt32(clamping: attempt))
                return !self.destroyed
            }
            guard deliver, let onState = self.callbacks.on_state else { return }
            var r = reason
            r.withUTF8 {
                onState(self.callbacks.userdata, self.handle, state, UInt32(clamping: attempt), UInt32(clamping: delay),
                        UnsafeRawPointer($0.baseAddress)?.assumingMemoryBound(to: CChar.self), $0.count)
            }
        }
    }

    /// Starts one attempt (the first, on petrel_client_connect's thread; later ones on the
    /// reconnect thread), resuming after the last event id the application named.
    func startAttempt() throws(RuntimeError) -> Connection {
        var url = self.url
        var configuration = self.configuration
        // Resuming: what the lost connection left unread in the inbox comes again after the id
        // the application named, so it goes (else it would come twice). A message the
        // application has taken but not yet named the id of would come again too: wait a moment
        // for the name (it is given right after the take, by contract).
        let named = Reconnector.now() + 200
        let resumeFrom = self.monitor.wait(timeoutMs: 200) { () -> UInt64?? in
            guard self.lastEventID != nil else { return .some(nil) }
            if self.takenSinceNamed > 0 && Reconnector.now() < named { return nil }
            if self.inboxHead < self.inbox.count {
                self.inbox.removeAll()
                self.inboxHead = 0
            }
            return .some(self.lastEventID)
        } ?? self.monitor.locked { self.lastEventID }
        if let id = resumeFrom {
            url = ReconnectPolicy.resumeTarget(url, lastEventID: id)
            configuration.headers.removeAll { $0.name.lowercased() == "last-event-id" }
            configuration.headers.append(HTTPField(name: "Last-Event-ID", value: String(id)))
        }
        let connection = try ClientConnector.connect(to: url, configuration: configuration, handlers: self.makeHandlers())
        self.monitor.signal { if self.connection == nil || self.connection!.isClosed { self.connection = connection } }
        return connection
    }

    /// A reconnect attempt, when its wait is over (on the reconnect thread).
    func reconnectNow() {
        let n: Int? = self.monitor.locked {
            guard self.reconnecting, !self.userClosed, !self.destroyed, self.closed == nil else { return nil }
            return self.attempt
        }
        guard let n else { return }
        self.report(PETREL_CLIENT_CONNECTING, attempt: n)
        do throws(RuntimeError) {
            _ = try self.startAttempt()
        } catch {
            self.attemptFailed(error)
        }
    }

    /// The connection was lost or an attempt failed: waits and tries again, or ends with `code`
    /// and `reason` (the close's, or the failure's). `why` is what on_state reports.
    func lost(code: UInt16, reason: String, why: String, retry: Bool) {
        guard let policy = self.policy else { return self.finish(code: code, reason: reason, why: why) }
        var gaveUp = false
        let n: Int? = self.monitor.locked {
            guard retry, !self.userClosed, !self.destroyed, self.closed == nil, !self.finishing else { return nil }
            self.reconnecting = true
            self.attempt += 1
            gaveUp = !policy.allows(attempt: self.attempt)
            return gaveUp ? nil : self.attempt
        }
        guard let n else {
            let failed = self.monitor.locked { self.attempt } - 1
            return self.finish(code: code, reason: reason, why: gaveUp && failed > 0 ? "gave up after \(failed) attempts: \(why)" : why)
        }
        let delay = policy.delay(attempt: n, random: Double.random(in: 0..<1))
        self.report(PETREL_CLIENT_RECONNECTING, attempt: n, delay: delay, reason: why)
        Reconnector.shared.schedule(self, after: delay)
    }

    func attemptFailed(_ error: RuntimeError) {
        self.lost(code: CloseCode.abnormalClosure.rawValue, reason: error.message, why: error.message, retry: ReconnectPolicy.retries(error))
    }

    /// The end, once: CLOSED, on_close, and petrel_client_receive's PETREL_E_CLOSED.
    func finish(code: UInt16, reason: String, why: String) {
        let first = self.monitor.locked { () -> Bool in
            guard self.closed == nil, !self.finishing else { return false }
            self.finishing = true
            self.reconnecting = false
            self.pending = []
            self.pendingBytes = 0
            return true
        }
        guard first else { return }
        Reconnector.shared.cancel(self)
        self.report(PETREL_CLIENT_CLOSED, attempt: 0, reason: why)
        if let onClose = self.callbacks.on_close {
            self.callback { userdata, handle in
                var r = reason
                r.withUTF8 { onClose(userdata, handle, code, UnsafeRawPointer($0.baseAddress)?.assumingMemoryBound(to: CChar.self), $0.count) }
            }
        }
        // Signalled after on_close returned: a destroy waiting for the close cannot overtake it.
        self.monitor.signal { self.closed = (code, reason) }
    }

    /// One attempt's handlers: each opens into this client.
    func makeHandlers() -> Handlers {
        let handlers = Handlers()
        handlers.onOpen = { [self] conn in
            var first = false, abandon = false, n = 0
            var queued: [(MessageKind, [UInt8])] = []
            self.monitor.signal {
                first = !self.opened
                n = self.attempt
                self.connection = conn
                self.opened = true
                self.reconnecting = false
                self.attempt = 0
                queued = self.pending
                self.pending = []
                self.pendingBytes = 0
                abandon = self.userClosed || self.destroyed || self.finishing
            }
            if abandon && !first { return conn.close(code: .normalClosure, reason: "") }
            for (kind, bytes) in queued { _ = bytes.withUnsafeBytes { conn.send(kind, $0) } }
            self.report(PETREL_CLIENT_OPEN, attempt: n)
        }
        handlers.onConnectFailed = { [self] _, error in
            if self.monitor.locked({ self.opened }) {
                self.attemptFailed(error)
            } else {
                self.monitor.signal { self.failure = error }
            }
        }
        let onMessage = self.callbacks.on_message
        handlers.onMessage = { [self] _, kind, payload in
            if self.usesCallbacks {
                self.callbackLock.locked {
                    if self.monitor.locked({ self.destroyed || self.finishing }) { return }
                    onMessage?(self.callbacks.userdata, self.handle, Int32(kind.rawValue),
                               payload.baseAddress?.assumingMemoryBound(to: UInt8.self), payload.count)
                }
            } else {
                let copy = [UInt8](payload)
                self.monitor.signal { if !self.finishing { self.inbox.append((Int32(kind.rawValue), copy)) } }
            }
        }
        if let onDrain = self.callbacks.on_drain {
            handlers.onDrain = { [self] _ in self.callback { userdata, handle in onDrain(userdata, handle) } }
        }
        handlers.onClose = { [self] _, code, reason in
            self.lost(code: code.rawValue, reason: reason, why: reason.isEmpty ? "closed with \(code.rawValue)" : "closed with \(code.rawValue): \(reason)",
                      retry: ReconnectPolicy.reconnects(after: code))
        }
        return handlers
    }
}

/// The thread that makes the C clients' reconnect attempts: it waits out each attempt's delay,
/// then starts the attempt (resolving the name here, not on the client loop). It also ends a
/// client closed between connections, so that CLOSED and on_close never run inside the
/// petrel_client_close that asked for them (which may be called from a callback). One for the
/// process, started on first use.
final class Reconnector: @unchecked Sendable {
    enum Job {
        case attempt
        case finish(code: UInt16, reason: String, why: String)

        var isAttempt: Bool {
            if case .attempt = self { return true }
            return false
        }
    }
    static let shared = Reconnector()
    private let monitor = Monitor()
    private var waiting: [(due: UInt64, client: CClient, job: Job)] = []
    private var generation = 0
    private var started = false

    func schedule(_ client: CClient, after ms: Int, _ job: Job = .attempt) {
        let due = Reconnector.now() + UInt64(max(ms, 0))
        let start = self.monitor.locked { () -> Bool in
            self.waiting.append((due, client, job))
            self.generation += 1
            defer { self.started = true }
            return !self.started
        }
        self.monitor.signal {}
        guard start else { return }
        do throws(RuntimeError) {
            try runDetached(name: "petrel-reconnect") { self.run() }
        } catch {
            self.monitor.locked { self.started = false }
            client.finish(code: CloseCode.abnormalClosure.rawValue, reason: error.message, why: error.message)
        }
    }

    /// Forgets a client's waiting attempts (it ended).
    func cancel(_ client: CClient) {
        self.monitor.locked { self.waiting.removeAll { $0.client === client && $0.job.isAttempt } }
    }

    private func run() {
        while true {
            let (next, seen) = self.monitor.locked { (self.waiting.map(\.due).min(), self.generation) }
            let now = Reconnector.now()
            let timeout = next.map { Int32(clamping: $0 > now ? $0 - now : 0) } ?? -1
            let due = self.monitor.wait(timeoutMs: timeout) { () -> [(CClient, Job)]? in
                let now = Reconnector.now()
                let ready = self.waiting.filter { $0.due <= now }.map { ($0.client, $0.job) }
                if !ready.isEmpty {
                    self.waiting.removeAll { $0.due <= now }
                    return ready
                }
                return self.generation != seen ? [] : nil
            } ?? []
            for (client, job) in due {
                switch job {
                case .attempt: client.reconnectNow()
                case .finish(let code, let reason, let why): client.finish(code: code, reason: reason, why: why)
                }
            }
        }
    }

    static func now() -> UInt64 {
        var t = timespec()
        clock_gettime(CLOCK_MONOTONIC, &t)
        return UInt64(t.tv_sec) * 1000 + UInt64(t.tv_nsec) / 1_000_000
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
    c.ping_interval_ms = UInt32(d.options.pingInterval)
    c.pong_timeout_ms = UInt32(d.options.pongTimeout)
    let p = ReconnectPolicy()
    c.reconnect = 0
    c.reconnect_initial_delay_ms = UInt32(p.initialDelay)
    c.reconnect_max_delay_ms = UInt32(p.maxDelay)
    c.reconnect_jitter_percent = UInt32(p.jitter * 100)
    c.reconnect_max_attempts = UInt32(p.maxAttempts)
    c.queue_while_reconnecting = 0
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
    guard c.pong_timeout_ms > 0 || c.ping_interval_ms == 0 else { return PETREL_E_INVALID_ARGUMENT }
    configuration.options.pingInterval = Int(c.ping_interval_ms)
    configuration.options.pongTimeout = Int(c.pong_timeout_ms)
    var policy: ReconnectPolicy? = nil
    switch c.reconnect {
    case 0: break
    case 1:
        let p = ReconnectPolicy(
            initialDelay: Int(c.reconnect_initial_delay_ms), maxDelay: Int(c.reconnect_max_delay_ms),
            jitter: Double(c.reconnect_jitter_percent) / 100, maxAttempts: Int(c.reconnect_max_attempts))
        if let problem = p.problem {
            LastError.set(problem)
            return PETREL_E_INVALID_ARGUMENT
        }
        policy = p
    default: return PETREL_E_INVALID_ARGUMENT
    }
    guard c.queue_while_reconnecting == 0 || c.queue_while_reconnecting == 1 else { return PETREL_E_INVALID_ARGUMENT }
    let client = CClient(
        url: target, configuration: configuration, callbacks: cb, usesCallbacks: cb.on_message != nil, policy: policy,
        queueWhileReconnecting: c.queue_while_reconnecting == 1)
    do throws(RuntimeError) {
        _ = try client.startAttempt()
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
    guard let c = CClient.from(client), data != nil || len == 0 else { return PETREL_E_NULL }
    guard len >= 0, kind == 1 || kind == 2, let k = MessageKind(rawValue: UInt8(kind)) else { return PETREL_E_INVALID_ARGUMENT }
    let payload = UnsafeRawBufferPointer(start: data, count: len)
    if k == .text && !UTF8Validator.isValid(payload) { return PETREL_E_INVALID_ARGUMENT }
    // Between connections (or lost a moment ago, its close not handled yet): queued or refused,
    // under the lock the next open takes the queue with.
    let between = { () -> Int32? in
        guard c.policy != nil, !c.finishing, !c.userClosed, c.closed == nil else { return nil }
        guard c.queueWhileReconnecting else { return PETREL_E_RECONNECTING }
        if c.pendingBytes + len > c.configuration.options.maxBackpressure { return PETREL_E_BACKPRESSURE }
        c.pending.append((k, Array(payload)))
        c.pendingBytes += len
        return PETREL_OK
    }
    let (conn, early) = c.monitor.locked { () -> (Connection?, Int32?) in
        if c.reconnecting { return (nil, between() ?? PETREL_E_CLOSED) }
        return (c.connection, nil)
    }
    if let early { return early }
    guard let conn else { return PETREL_E_CLOSED }
    let status = Status.of(conn.send(k, payload))
    guard status == PETREL_E_CLOSED else { return status }
    return c.monitor.locked { c.connection === conn || c.reconnecting ? between() : nil } ?? PETREL_E_CLOSED
}

@_cdecl("petrel_client_set_last_event_id")
public func petrel_client_set_last_event_id(_ client: OpaquePointer?, _ id: UInt64) -> Int32 {
    guard let c = CClient.from(client) else { return PETREL_E_NULL }
    c.monitor.signal {
        c.lastEventID = id
        c.takenSinceNamed = 0
    }
    return PETREL_OK
}

@_cdecl("petrel_client_last_event_id")
public func petrel_client_last_event_id(_ client: OpaquePointer?, _ out: UnsafeMutablePointer<UInt64>?) -> Int32 {
    guard let c = CClient.from(client), let out else { return PETREL_E_NULL }
    guard let id = c.monitor.locked({ c.lastEventID }) else { return PETREL_E_AGAIN }
    out.pointee = id
    return PETREL_OK
}

@_cdecl("petrel_client_state")
public func petrel_client_state(_ client: OpaquePointer?, _ stateOut: UnsafeMutablePointer<Int32>?, _ attemptOut: UnsafeMutablePointer<UInt32>?) -> Int32 {
    guard let c = CClient.from(client), let stateOut, let attemptOut else { return PETREL_E_NULL }
    let (state, attempt) = c.monitor.locked { c.state }
    stateOut.pointee = state
    attemptOut.pointee = attempt
    return PETREL_OK
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
            c.takenSinceNamed += 1
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
    guard let c = CClient.from(client) else { return PETREL_E_NULL }
    var text = ""
    if let reason {
        guard let r = string(reason) else { return PETREL_E_INVALID_ARGUMENT }
        text = r
    }
    guard CloseCode(code).isValidOnWire, text.utf8.count <= 123 else { return PETREL_E_INVALID_ARGUMENT }
    let (ended, between, conn) = c.monitor.locked { () -> (Bool, Bool, Connection?) in
        let ended = c.userClosed || c.finishing || c.closed != nil
        c.userClosed = true
        return (ended, c.reconnecting, c.connection)
    }
    if ended { return PETREL_E_CLOSED }
    if between {
        // No connection to close: the client ends, on the reconnect thread (this call may come
        // from a callback, and CLOSED and on_close are callbacks). An attempt in flight is
        // closed when it opens.
        Reconnector.shared.schedule(c, after: 0, .finish(code: code, reason: text, why: text.isEmpty ? "closed by the application" : text))
        return PETREL_OK
    }
    guard let conn, !conn.isClosed else { return PETREL_E_CLOSED }
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
    let (conn, between) = c.monitor.locked { () -> (Connection?, Bool) in
        let between = c.reconnecting && !c.userClosed && !c.finishing && c.closed == nil
        c.userClosed = true
        return (c.connection, between)
    }
    if between {
        // As for a close between connections: the end is reported, on the reconnect thread.
        Reconnector.shared.schedule(c, after: 0, .finish(code: CloseCode.goingAway.rawValue, reason: "client destroyed", why: "client destroyed"))
        _ = c.monitor.wait(timeoutMs: 2_000) { c.closed != nil ? true : nil }
    } else if let conn, !conn.isClosed {
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
