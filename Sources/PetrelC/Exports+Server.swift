import CLinux
import CPetrelABI
import Glibc
import PetrelCore
import PetrelRuntime

// The server half of petrel.h: each export checks its arguments, finds the handle, calls the
// runtime and maps the outcome to a status. No protocol logic lives here.

nonisolated(unsafe) private let versionString: UnsafePointer<CChar> = UnsafePointer(strdup("\(PETREL_VERSION_MAJOR).\(PETREL_VERSION_MINOR).\(PETREL_VERSION_PATCH)")!)

@_cdecl("petrel_version")
public func petrel_version() -> UnsafePointer<CChar> { versionString }

@_cdecl("petrel_version_number")
public func petrel_version_number() -> UInt32 {
    // PETREL_VERSION_NUMBER is a macro expression Swift cannot import; the same formula.
    UInt32(PETREL_VERSION_MAJOR * 10000 + PETREL_VERSION_MINOR * 100 + PETREL_VERSION_PATCH)
}

@_cdecl("petrel_strerror")
public func petrel_strerror(_ status: Int32) -> UnsafePointer<CChar> {
    Status.cTexts[status] ?? Status.unknown
}

@_cdecl("petrel_server_config_init")
public func petrel_server_config_init(_ config: UnsafeMutablePointer<petrel_server_config>?) {
    guard let config else { return }
    let d = ServerConfiguration()
    var c = petrel_server_config()
    c.size = MemoryLayout<petrel_server_config>.size
    c.host = nil
    c.port = d.port
    c.threads = 0
    c.max_connections = UInt32(d.maxConnections)
    c.max_message_size = UInt64(d.options.session.maxMessageSize)
    c.max_frame_size = UInt64(d.options.session.maxFrameSize)
    c.max_backpressure = UInt64(d.options.maxBackpressure)
    c.handshake_timeout_ms = UInt32(d.options.handshakeTimeout)
    c.idle_timeout_ms = UInt32(d.options.idleTimeout)
    c.ping_interval_ms = UInt32(d.options.pingInterval)
    c.pong_timeout_ms = UInt32(d.options.pongTimeout)
    c.close_timeout_ms = UInt32(d.options.closeTimeout)
    c.compression = 1
    c.close_on_backpressure = 0
    c.subprotocols = nil
    c.allowed_origins = nil
    c.topic_slow_consumer = Int32(PETREL_SLOW_CLOSE)
    c.topic_max_queued = UInt32(d.defaultTopicPolicy.maxQueuedMessages)
    c.topic_replay = 0
    c.static_root = nil
    c.event_stream_paths = nil
    c.max_request_body = UInt64(d.maxRequestBody)
    c.tls_cert_file = nil
    c.tls_key_file = nil
    c.tls_client_ca_file = nil
    c.tls_sni_certificates = nil
    c.queue_events = 0
    c.event_queue_bytes = 16 << 20
    c.engine_url = nil
    c.engine_timeout_ms = UInt32(d.engineTimeout)
    c.topic_stream_capacity = UInt64(d.defaultTopicPolicy.streamCapacity)
    let stomp = StompServerOptions()
    c.stomp_paths = nil
    c.stomp_heart_beat_ms = UInt32(stomp.heartBeatSend)
    c.stomp_max_unacked = UInt32(stomp.maxUnacknowledged)
    c.stomp_max_body = UInt64(stomp.limits.maxBodyBytes)
    c.keep_alive_timeout_ms = UInt32(d.keepAliveTimeout)
    c.cors_origins = nil
    c.cors_credentials = 0
    c.sse_retry_ms = UInt32(d.eventStreamRetry)
    c.sse_padding = UInt32(d.eventStreamPadding)
    c.access_log_file = nil
    c.proxy_protocol = 0
    c.trusted_proxies = nil
    c.trusted_proxy_header = 0
    c.heartbeat_messages = 0
    config.pointee = c
}

@_cdecl("petrel_server_callbacks_init")
public func petrel_server_callbacks_init(_ callbacks: UnsafeMutablePointer<petrel_server_callbacks>?) {
    guard let callbacks else { return }
    var c = petrel_server_callbacks()
    c.size = MemoryLayout<petrel_server_callbacks>.size
    callbacks.pointee = c
}

/// Builds the runtime configuration from a C config, or returns the status that refuses it.
private func configuration(from c: petrel_server_config) -> Result<ServerConfiguration, CStatusError> {
    var config = ServerConfiguration()
    if let host = c.host {
        guard let h = string(host), !h.isEmpty else { return .failure(CStatusError(PETREL_E_INVALID_ARGUMENT)) }
        config.host = h
    }
    config.port = c.port
    config.threads = Int(c.threads)
    guard c.threads <= 255, c.max_message_size > 0, c.max_frame_size > 0,
        let maxMessage = Int(exactly: c.max_message_size), let maxFrame = Int(exactly: c.max_frame_size),
        let backpressure = Int(exactly: c.max_backpressure), c.max_connections > 0
    else { return .failure(CStatusError(PETREL_E_INVALID_ARGUMENT)) }
    // At most 1 TiB: larger values could only overflow arithmetic on sizes.
    guard maxMessage <= 1 << 40, maxFrame <= 1 << 40, backpressure <= 1 << 40 else {
        return .failure(CStatusError(PETREL_E_INVALID_ARGUMENT))
    }
    config.maxConnections = Int(c.max_connections)
    config.options.session.maxMessageSize = maxMessage
    config.options.session.maxFrameSize = min(maxFrame, maxMessage)
    config.options.maxBackpressure = backpressure
    config.options.handshakeTimeout = Int(c.handshake_timeout_ms)
    config.options.idleTimeout = Int(c.idle_timeout_ms)
    config.options.pingInterval = Int(c.ping_interval_ms)
    config.options.pongTimeout = Int(c.pong_timeout_ms)
    config.options.closeTimeout = Int(c.close_timeout_ms)
    config.options.closeOnBackpressure = c.close_on_backpressure != 0
    switch c.compression {
    case 0: config.compression = nil
    case 1: break
    case 2: config.compression?.localNoContextTakeover = false
    default: return .failure(CStatusError(PETREL_E_INVALID_ARGUMENT))
    }
    if c.subprotocols != nil {
        guard let list = commaList(c.subprotocols), list.allSatisfy(ASCII.isToken) else {
            return .failure(CStatusError(PETREL_E_INVALID_ARGUMENT))
        }
        config.subprotocols = list
    }
    if c.allowed_origins != nil {
        guard let list = commaList(c.allowed_origins) else { return .failure(CStatusError(PETREL_E_INVALID_ARGUMENT)) }
        config.allowedOrigins = list
    }
    let policy: SlowConsumerPolicy
    switch c.topic_slow_consumer {
    case Int32(PETREL_SLOW_CLOSE): policy = .close(.policyViolation)
    case Int32(PETREL_SLOW_DROP_OLDEST): policy = .dropOldest
    case Int32(PETREL_SLOW_DROP_NEWEST): policy = .dropNewest
    case Int32(PETREL_SLOW_COALESCE): policy = .coalesceByKey
    default: return .failure(CStatusError(PETREL_E_INVALID_ARGUMENT))
    }
    if let root = c.static_root {
        guard let r = string(root), !r.isEmpty else { return .failure(CStatusError(PETREL_E_INVALID_ARGUMENT)) }
        config.staticRoot = r
    }
    if c.event_stream_paths != nil {
        guard let list = commaList(c.event_stream_paths), list.allSatisfy({ $0.hasPrefix("/") }) else {
            return .failure(CStatusError(PETREL_E_INVALID_ARGUMENT))
        }
        config.eventStreamPaths = list
    }
    guard let maxBody = Int(exactly: c.max_request_body), maxBody <= 1 << 30 else { return .failure(CStatusError(PETREL_E_INVALID_ARGUMENT)) }
    config.maxRequestBody = maxBody
    if c.tls_cert_file != nil || c.tls_key_file != nil {
        guard let certPointer = c.tls_cert_file, let keyPointer = c.tls_key_file, let cert = string(certPointer), let key = string(keyPointer) else {
            return .failure(CStatusError(PETREL_E_INVALID_ARGUMENT))
        }
        var ca: String? = nil
        if let p = c.tls_client_ca_file {
            guard let s = string(p) else { return .failure(CStatusError(PETREL_E_INVALID_ARGUMENT)) }
            ca = s
        }
        config.tls = TLSServerConfiguration(certificateChainFile: cert, privateKeyFile: key, clientCAFile: ca)
        if let p = c.tls_sni_certificates {
            guard let list = string(p) else { return .failure(CStatusError(PETREL_E_INVALID_ARGUMENT)) }
            for entry in list.split(separator: ";") {
                let f = entry.split(separator: ",", omittingEmptySubsequences: false).map { $0.trimmingCharacters() }
                guard f.count == 3, f.allSatisfy({ !$0.isEmpty }) else { return .failure(CStatusError(PETREL_E_INVALID_ARGUMENT)) }
                config.tls?.certificatesByName[f[0]] = TLSCertificateFiles(certificateChainFile: f[1], privateKeyFile: f[2])
            }
        }
    } else if c.tls_client_ca_file != nil || c.tls_sni_certificates != nil {
        return .failure(CStatusError(PETREL_E_INVALID_ARGUMENT))
    }
    guard c.topic_stream_capacity >= 1, c.topic_stream_capacity <= 1 << 40, c.engine_timeout_ms >= 1 else {
        return .failure(CStatusError(PETREL_E_INVALID_ARGUMENT))
    }
    config.defaultTopicPolicy = TopicPolicy(
        slowConsumer: policy, maxQueuedMessages: max(1, Int(c.topic_max_queued)), replayCapacity: Int(c.topic_replay),
        streamCapacity: Int(c.topic_stream_capacity))
    if let p = c.engine_url {
        guard let url = string(p) else { return .failure(CStatusError(PETREL_E_INVALID_ARGUMENT)) }
        do throws(RuntimeError) {
            config.engine = try Engine(url: url)
        } catch {
            LastError.set(error.message)
            return .failure(CStatusError(PETREL_E_URL))
        }
    }
    config.engineTimeout = Int(c.engine_timeout_ms)
    if let p = c.stomp_paths {
        guard let list = commaList(p), list.allSatisfy({ $0.hasPrefix("/") }), c.stomp_max_body <= 1 << 30 else {
            return .failure(CStatusError(PETREL_E_INVALID_ARGUMENT))
        }
        var stomp = StompConfiguration(paths: list)
        stomp.options.heartBeatSend = Int(c.stomp_heart_beat_ms)
        stomp.options.heartBeatReceive = Int(c.stomp_heart_beat_ms)
        stomp.options.maxUnacknowledged = Int(c.stomp_max_unacked)
        stomp.options.limits.maxBodyBytes = Int(c.stomp_max_body)
        config.stomp = stomp
    }
    config.keepAliveTimeout = Int(c.keep_alive_timeout_ms)
    if let p = c.cors_origins {
        guard let list = commaList(p), !list.isEmpty, c.cors_credentials == 0 || c.cors_credentials == 1 else {
            return .failure(CStatusError(PETREL_E_INVALID_ARGUMENT))
        }
        config.cors = CORSConfiguration(allowedOrigins: list, allowCredentials: c.cors_credentials == 1)
    } else if c.cors_credentials != 0 {
        return .failure(CStatusError(PETREL_E_INVALID_ARGUMENT))
    }
    guard c.sse_padding <= 65536 else { return .failure(CStatusError(PETREL_E_INVALID_ARGUMENT)) }
    config.eventStreamRetry = Int(c.sse_retry_ms)
    config.eventStreamPadding = Int(c.sse_padding)
    if let p = c.access_log_file {
        guard let path = string(p), !path.isEmpty else { return .failure(CStatusError(PETREL_E_INVALID_ARGUMENT)) }
        config.accessLog = .file(path)
    }
    guard c.proxy_protocol == 0 || c.proxy_protocol == 1 else { return .failure(CStatusError(PETREL_E_INVALID_ARGUMENT)) }
    config.proxyProtocol = c.proxy_protocol == 1
    guard c.heartbeat_messages == 0 || c.heartbeat_messages == 1 else { return .failure(CStatusError(PETREL_E_INVALID_ARGUMENT)) }
    config.options.heartbeatMessages = c.heartbeat_messages == 1
    if let p = c.trusted_proxies {
        guard let list = commaList(p) else { return .failure(CStatusError(PETREL_E_INVALID_ARGUMENT)) }
        config.trustedProxies = list
    }
    switch c.trusted_proxy_header {
    case 0: config.forwardedHeader = .xForwardedFor
    case 1: config.forwardedHeader = .forwarded
    default: return .failure(CStatusError(PETREL_E_INVALID_ARGUMENT))
    }
    return .success(config)
}

struct CStatusError: Error {
    let status: petrel_status
    init(_ s: Int32) { self.status = s }
}

@_cdecl("petrel_server_create")
public func petrel_server_create(
    _ config: UnsafePointer<petrel_server_config>?, _ callbacks: UnsafePointer<petrel_server_callbacks>?,
    _ serverOut: UnsafeMutablePointer<OpaquePointer?>?
) -> Int32 {
    guard let config, let serverOut else { return PETREL_E_NULL }
    var c = petrel_server_config()
    petrel_server_config_init(&c)
    guard readSized(config, size: config.pointee.size, into: &c) else { return PETREL_E_CONFIG_SIZE }
    var cb = petrel_server_callbacks()
    petrel_server_callbacks_init(&cb)
    if let callbacks {
        guard readSized(callbacks, size: callbacks.pointee.size, into: &cb) else { return PETREL_E_CONFIG_SIZE }
    }
    var runtimeConfig: ServerConfiguration
    switch configuration(from: c) {
    case .failure(let e): return e.status
    case .success(let r): runtimeConfig = r
    }
    // The handle exists once the server does: the log's function finds it here, set before start.
    let later = HandleHolder(userdata: cb.userdata)
    if let onLog = cb.on_access_log {
        guard c.access_log_file == nil else { return PETREL_E_INVALID_ARGUMENT }
        later.onLog = onLog
        runtimeConfig.accessLog = .callback { entry in
            lendAccessLogEntry(entry) { later.onLog?(later.userdata, later.handle, $0) }
        }
    }
    guard let queueBytes = Int(exactly: c.event_queue_bytes), queueBytes <= 1 << 40 else { return PETREL_E_INVALID_ARGUMENT }
    // A queued record carries a 32-bit length.
    if c.queue_events != 0 && runtimeConfig.options.session.maxMessageSize > Int(UInt32.max) { return PETREL_E_INVALID_ARGUMENT }
    let handlers = Handlers()
    let server = Server(configuration: runtimeConfig, handlers: handlers)
    let queue = c.queue_events != 0 ? EventQueue(limit: max(64 * 1024, queueBytes)) : nil
    let visiting = VisitLock()
    let box = CServer(server: server, callbacks: cb, queue: queue, visiting: visiting)
    let handle = box.handle
    later.handle = handle
    let ptrs = CPointers(userdata: cb.userdata, handle: handle)
    if let queue {
        // Every loop has finished, however the stop began: the consumer gets what is left, then STOPPED.
        server.onStopped = { queue.close() }
        handlers.onOpen = { conn in
            // The open record carries the request target (path and query), so that a consumer
            // can route on it even if the connection has closed by the time it looks.
            var target = conn.request.map { r in r.query.map { "\(r.path)?\($0)" } ?? r.path }
                ?? conn.httpRequest.map { h in h.query.map { "\(h.path)?\($0)" } ?? h.path } ?? ""
            target.withUTF8 { queue.push(type: Int32(PETREL_QUEUED_OPEN), conn: conn.id.rawValue, UnsafeRawBufferPointer($0)) }
        }
        handlers.onMessage = { conn, kind, payload in
            queue.push(type: Int32(PETREL_QUEUED_MESSAGE), conn: conn.id.rawValue, kind: Int32(kind.rawValue), payload)
        }
        handlers.onClose = { conn, code, reason in
            var r = reason
            r.withUTF8 { queue.push(type: Int32(PETREL_QUEUED_CLOSE), conn: conn.id.rawValue, code: code.rawValue, UnsafeRawBufferPointer($0)) }
        }
        handlers.onDrain = { conn in queue.push(type: Int32(PETREL_QUEUED_DRAIN), conn: conn.id.rawValue, UnsafeRawBufferPointer(start: nil, count: 0)) }
    } else if let onOpen = cb.on_open {
        handlers.onOpen = { conn in
            var data = conn.cData
            onOpen(ptrs.userdata, ptrs.handle, conn.id.rawValue, &data)
            conn.cData = data
        }
    }
    if queue == nil, let onMessage = cb.on_message {
        let slots = CSlots(base: box.inCallback)
        handlers.onMessage = { conn, kind, payload in
            let id = conn.id.rawValue
            let slot = slots.base + Int(id & 0xFF)
            slot.pointee.connection = .passUnretained(conn)
            slot.pointee.payload = payload
            petrel_store_relaxed(&slot.pointee.thread, UInt64(UInt(pthread_self())))
            petrel_store_relaxed(&slot.pointee.id, id)
            onMessage(ptrs.userdata, ptrs.handle, id, conn.cData, Int32(kind.rawValue), payload.baseAddress?.assumingMemoryBound(to: UInt8.self), payload.count)
            petrel_store_relaxed(&slot.pointee.id, 0)
        }
    }
    if queue == nil, let onClose = cb.on_close {
        handlers.onClose = { conn, code, reason in
            var r = reason
            let data = visiting.withLock { conn.takeDataForClose() }
            r.withUTF8 { onClose(ptrs.userdata, ptrs.handle, conn.id.rawValue, data, code.rawValue, UnsafeRawPointer($0.baseAddress)?.assumingMemoryBound(to: CChar.self), $0.count) }
        }
    }
    if queue == nil, let onDrain = cb.on_drain {
        handlers.onDrain = { conn in onDrain(ptrs.userdata, ptrs.handle, conn.id.rawValue, conn.cData) }
    }
    if let onHTTP = cb.on_http {
        handlers.onHTTPRequest = { request, conn in
            CHTTPExchange(request, connectionID: conn.id.rawValue).lend { onHTTP(ptrs.userdata, ptrs.handle, $0) }
        }
    }
    if let onStomp = cb.on_stomp {
        installStompHooks(handlers, onStomp: onStomp, ptrs: ptrs)
    }
    if let onAck = cb.on_stomp_ack {
        handlers.onStompAck = { conn, ack in
            ack.subscription.withCString { name in
                ack.eventIDs.withUnsafeBufferPointer { ids in
                    onAck(ptrs.userdata, ptrs.handle, conn.id.rawValue, conn.cData, name, ids.baseAddress, ids.count, ack.negative ? 1 : 0, ack.position)
                }
            }
        }
    }
    if let onUpgrade = cb.on_upgrade {
        handlers.onUpgrade = { upgrade in
            let exchange = CHTTPExchange(
                HTTPRequest(head: upgrade.request.head, body: [], peer: upgrade.peer, clientAddress: upgrade.clientAddress),
                connectionID: upgrade.connectionID.rawValue,
                offeredSubprotocols: upgrade.request.subprotocols)
            _ = exchange.lend { onUpgrade(ptrs.userdata, ptrs.handle, $0) }
            if let refusal = exchange.refusal {
                return .refuse(status: refusal.status, contentType: refusal.contentType, body: refusal.body)
            }
            let accepted = exchange.acceptance
            return .accept(subprotocol: accepted?.subprotocol, userData: UInt(bitPattern: accepted?.data))
        }
    }
    serverOut.pointee = OpaquePointer(Unmanaged.passRetained(box).toOpaque())
    return PETREL_OK
}

@_cdecl("petrel_server_start")
public func petrel_server_start(_ server: OpaquePointer?) -> Int32 {
    guard let s = CServer.from(server) else { return PETREL_E_NULL }
    do throws(RuntimeError) {
        try s.server.start()
        return PETREL_OK
    } catch {
        return LastError.failed(error)
    }
}

@_cdecl("petrel_server_run")
public func petrel_server_run(_ server: OpaquePointer?) -> Int32 {
    guard let s = CServer.from(server) else { return PETREL_E_NULL }
    do throws(RuntimeError) {
        try s.server.run()
        return PETREL_OK
    } catch {
        return LastError.failed(error)
    }
}

@_cdecl("petrel_server_stop")
public func petrel_server_stop(_ server: OpaquePointer?, _ graceMs: UInt32) -> Int32 {
    guard let s = CServer.from(server) else { return PETREL_E_NULL }
    guard s.server.isRunning else { return PETREL_E_STOPPED }
    // Loop threads must not wait for queue room while they close their connections.
    s.queue?.beginStop()
    s.server.stop(grace: Int(graceMs))
    return PETREL_OK
}

@_cdecl("petrel_server_destroy")
public func petrel_server_destroy(_ server: OpaquePointer?) -> Int32 {
    guard let server, let s = CServer.from(server) else { return PETREL_OK }
    if s.server.isCurrentLoopThread || s.server.isCurrentEngineThread { return PETREL_E_WRONG_THREAD }
    // Started and not yet fully stopped (even if a stop is under way): stop and wait, so that no
    // callback can run with this handle after it is released.
    if s.server.needsStop {
        s.queue?.beginStop()
        s.server.stop(grace: 1_000)
        // External-poll mode: the caller is the host thread; finish the shutdown here.
        if s.server.external { while s.server.service(timeout: 10) {} }
    }
    s.queue?.close()
    Unmanaged<CServer>.fromOpaque(UnsafeRawPointer(server)).release()
    return PETREL_OK
}

@_cdecl("petrel_server_port")
public func petrel_server_port(_ server: OpaquePointer?, _ portOut: UnsafeMutablePointer<UInt16>?) -> Int32 {
    guard let s = CServer.from(server), let portOut else { return PETREL_E_NULL }
    guard s.server.port != 0 else { return PETREL_E_STOPPED }
    portOut.pointee = s.server.port
    return PETREL_OK
}

@_cdecl("petrel_server_reload_tls")
public func petrel_server_reload_tls(_ server: OpaquePointer?) -> Int32 {
    guard let s = CServer.from(server) else { return PETREL_E_NULL }
    do throws(RuntimeError) {
        try s.server.reloadTLS()
        return PETREL_OK
    } catch {
        return LastError.failed(error)
    }
}

@_cdecl("petrel_server_connection_count")
public func petrel_server_connection_count(_ server: OpaquePointer?, _ countOut: UnsafeMutablePointer<UInt64>?) -> Int32 {
    guard let s = CServer.from(server), let countOut else { return PETREL_E_NULL }
    countOut.pointee = UInt64(max(0, s.server.connectionCount))
    return PETREL_OK
}

@_cdecl("petrel_server_publish")
public func petrel_server_publish(
    _ server: OpaquePointer?, _ topic: UnsafePointer<CChar>?, _ kind: Int32, _ data: UnsafeRawPointer?, _ len: Int,
    _ key: UnsafePointer<CChar>?, _ eventIDOut: UnsafeMutablePointer<UInt64>?
) -> Int32 {
    guard let s = CServer.from(server), let topic, data != nil || len == 0 else { return PETREL_E_NULL }
    guard len >= 0 else { return PETREL_E_INVALID_ARGUMENT }
    let stamp = kind & Int32(PETREL_STAMP_ID) != 0
    let bare = kind & ~Int32(PETREL_STAMP_ID)
    guard let t = string(topic), let k = MessageKind(rawValue: UInt8(truncatingIfNeeded: bare)), bare == 1 || bare == 2 else {
        return PETREL_E_INVALID_ARGUMENT
    }
    let payload = UnsafeRawBufferPointer(start: data, count: len)
    if k == .text && !UTF8Validator.isValid(payload) { return PETREL_E_INVALID_ARGUMENT }
    if stamp && IDStamp.find(in: payload) == nil { return PETREL_E_INVALID_ARGUMENT }
    var keyString: String? = nil
    if let key {
        guard let ks = string(key) else { return PETREL_E_INVALID_ARGUMENT }
        keyString = ks
    }
    guard s.server.isRunning else { return PETREL_E_STOPPED }
    do throws(RuntimeError) {
        // Not `eventIDOut?.pointee = try publish(...)`: with a NULL pointer, optional chaining
        // would skip the publish itself.
        let id = try s.server.publish(t, k, [UInt8](payload), key: keyString, stampID: stamp)
        eventIDOut?.pointee = id
        return PETREL_OK
    } catch {
        return LastError.failed(error)
    }
}

@_cdecl("petrel_server_observe")
public func petrel_server_observe(
    _ server: OpaquePointer?, _ topic: UnsafePointer<CChar>?, _ observer: petrel_topic_observer?, _ userdata: UnsafeMutableRawPointer?
) -> Int32 {
    guard let s = CServer.from(server), let topic, let observer else { return PETREL_E_NULL }
    guard let t = string(topic) else { return PETREL_E_INVALID_ARGUMENT }
    // The handle and userdata as integers: the observer is @Sendable, raw pointers are not.
    let handleBits = UInt(bitPattern: s.handle)
    let context = UInt(bitPattern: userdata)
    do throws(RuntimeError) {
        try s.server.observe(t) { frame in
            let user = UnsafeMutableRawPointer(bitPattern: context)
            let handle = OpaquePointer(bitPattern: handleBits)
            frame.topic.withCString { topicC in
                frame.payload.withUnsafeBufferPointer { p in
                    if let key = frame.key {
                        key.withCString { observer(user, handle, topicC, frame.eventID, Int32(frame.kind.rawValue), p.baseAddress, p.count, $0) }
                    } else {
                        observer(user, handle, topicC, frame.eventID, Int32(frame.kind.rawValue), p.baseAddress, p.count, nil)
                    }
                }
            }
        }
        return PETREL_OK
    } catch {
        return LastError.failed(error)
    }
}

@_cdecl("petrel_server_start_external")
public func petrel_server_start_external(_ server: OpaquePointer?, _ fdOut: UnsafeMutablePointer<Int32>?) -> Int32 {
    guard let s = CServer.from(server), let fdOut else { return PETREL_E_NULL }
    // The host's thread runs the loop and is usually the queue's consumer too: a loop that
    // waited for queue room would wait for itself.
    s.queue?.neverWait()
    do throws(RuntimeError) {
        fdOut.pointee = try s.server.startExternal()
        return PETREL_OK
    } catch {
        return LastError.failed(error)
    }
}

@_cdecl("petrel_server_service")
public func petrel_server_service(_ server: OpaquePointer?, _ timeoutMs: Int32) -> Int32 {
    guard let s = CServer.from(server) else { return PETREL_E_NULL }
    guard s.server.external else { return PETREL_E_STATE }
    return s.server.service(timeout: Int(timeoutMs)) ? PETREL_OK : PETREL_E_STOPPED
}

/// Set once, before the server starts (and so before any loop thread reads it).
final class HandleHolder: @unchecked Sendable {
    var handle: OpaquePointer? = nil
    let userdata: UnsafeMutableRawPointer?
    var onLog: (@convention(c) (UnsafeMutableRawPointer?, OpaquePointer?, UnsafePointer<petrel_access_log_entry>?) -> Void)? = nil
    init(userdata: UnsafeMutableRawPointer?) { self.userdata = userdata }
}

/// Lends `entry` to C as a `petrel_access_log_entry` for the duration of `body`.
func lendAccessLogEntry(_ entry: AccessLogEntry, _ body: (UnsafePointer<petrel_access_log_entry>) -> Void) {
    withCStrings([entry.event.rawValue, entry.peer, entry.method, entry.path, entry.transport, entry.line]) { s in
        var e = petrel_access_log_entry()
        e.event = s[0]
        e.time_ms = entry.time
        e.peer = s[1]
        e.conn = entry.connection.rawValue
        e.method = s[2]
        e.path = s[3]
        e.status = Int32(truncatingIfNeeded: entry.status)
        e.transport = s[4]
        e.bytes_in = entry.bytesIn
        e.bytes_out = entry.bytesOut
        e.duration_ms = entry.durationMilliseconds
        e.line = s[5]
        withUnsafePointer(to: &e) { body($0) }
    }
}
