import CPetrelABI
import Glibc
import PetrelCore

/// What a `petrel_session *` points to: a PetrelCore session plus its opening handshake, with
/// events copied into a queue for `petrel_session_poll_event`.
final class CSession {
    struct QueuedEvent {
        var type: Int32
        var status: Int32 = 0
        var code: UInt16 = 0
        var data: [UInt8] = []
    }

    let role: Role
    var session: Session
    /// The opening handshake while it runs (one of the two, by role); nil once it is over.
    var serverHandshake: ServerHandshake?
    var clientHandshake: ClientHandshake?
    var handshaking: Bool { self.serverHandshake != nil || self.clientHandshake != nil }
    /// The handshake request or response, written before any frame.
    var handshakeOutput: [UInt8] = []
    var handshakeOffset = 0
    var events: [QueuedEvent] = []
    var eventsHead = 0
    /// The data of the event last handed out: borrowed by the caller until its next call.
    var current: [UInt8] = []
    var ended = false
    var closeAfterOutput = false

    init(server policy: ServerHandshake.Policy) {
        self.role = .server
        self.session = Session(role: .server, configuration: policy.session)
        self.serverHandshake = ServerHandshake(policy: policy)
    }

    init(client handshake: ClientHandshake) {
        self.role = .client
        self.session = Session(role: .client, configuration: handshake.session)
        self.clientHandshake = handshake
        self.handshakeOutput = handshake.request
    }

    static func from(_ p: OpaquePointer?) -> CSession? {
        guard let p else { return nil }
        return Unmanaged<CSession>.fromOpaque(UnsafeRawPointer(p)).takeUnretainedValue()
    }

    func push(_ e: QueuedEvent) { self.events.append(e) }

    func feed(_ input: UnsafeRawBufferPointer) {
        var bytes = [UInt8](input)
        bytes.withUnsafeMutableBytes { buf in
            var offset = 0
            if self.handshaking {
                guard let consumed = self.handshake(UnsafeRawBufferPointer(buf)) else { return }
                offset = consumed
            }
            while offset < buf.count && !self.ended {
                let (used, event) = self.session.parse(UnsafeMutableRawBufferPointer(rebasing: buf[offset...]))
                offset += used
                guard let event else { continue }
                switch event {
                case .text(let p): self.push(QueuedEvent(type: PETREL_EVENT_TEXT, data: Array(p)))
                case .binary(let p): self.push(QueuedEvent(type: PETREL_EVENT_BINARY, data: Array(p)))
                case .ping(let p): self.push(QueuedEvent(type: PETREL_EVENT_PING, data: Array(p)))
                case .pong(let p): self.push(QueuedEvent(type: PETREL_EVENT_PONG, data: Array(p)))
                case .close(let code, let reason):
                    self.push(QueuedEvent(type: PETREL_EVENT_CLOSE, code: (code ?? .noStatusReceived).rawValue, data: Array(reason)))
                case .failed(let e):
                    self.push(QueuedEvent(type: PETREL_EVENT_ERROR, status: e.code.rawValue, code: e.closeCode.rawValue, data: Array(e.description.utf8)))
                }
            }
            if !self.session.wantsRead { self.ended = true }
        }
    }

    /// Feeds the opening handshake; returns how many bytes it took once the session is open,
    /// nil while it needs more or after it failed.
    private func handshake(_ input: UnsafeRawBufferPointer) -> Int? {
        if self.serverHandshake != nil {
            // Fed in place: a copy would copy the head gathered so far on every feed.
            let step = self.serverHandshake!.feed(input)
            guard let handshake = self.serverHandshake else { return nil }
            switch step {
            case .needMore:
                return nil
            case .refuse(let e):
                self.serverHandshake = nil
                self.refuse(e)
                return nil
            case .plainRequest:
                // The policy does not answer plain requests: feed never returns this.
                self.serverHandshake = nil
                self.refuse(.notUpgrade)
                return nil
            case .upgrade(let request, let consumed):
                self.serverHandshake = nil
                let agreement = handshake.accept(request)
                self.handshakeOutput = agreement.response
                self.session = agreement.makeSession()
                self.push(QueuedEvent(type: PETREL_EVENT_OPEN, data: Array((agreement.subprotocol ?? "").utf8)))
                return consumed
            }
        }
        guard self.clientHandshake != nil else { return nil }
        let step = self.clientHandshake!.feed(input)
        switch step {
        case .needMore:
            return nil
        case .fail(let e):
            self.clientHandshake = nil
            self.fail(status: e.code.rawValue)
            return nil
        case .open(let agreement, let consumed):
            self.clientHandshake = nil
            self.session = agreement.makeSession()
            self.push(QueuedEvent(type: PETREL_EVENT_OPEN, data: Array((agreement.subprotocol ?? "").utf8)))
            return consumed
        }
    }

    /// Server: answers the HTTP error and closes after it.
    private func refuse(_ e: HandshakeError) {
        self.handshakeOutput = e.response
        self.closeAfterOutput = true
        self.ended = true
        self.push(QueuedEvent(type: PETREL_EVENT_ERROR, status: e.code.rawValue, code: 0, data: Array(e.message.utf8)))
    }

    /// Client: the handshake failed; the transport should close.
    private func fail(status: Int32) {
        self.closeAfterOutput = true
        self.ended = true
        self.push(QueuedEvent(type: PETREL_EVENT_ERROR, status: status, code: CloseCode.abnormalClosure.rawValue))
    }

    var pendingOutput: Int { (self.handshakeOutput.count - self.handshakeOffset) + self.session.pendingOutputCount }
}

@_cdecl("petrel_session_config_init")
public func petrel_session_config_init(_ config: UnsafeMutablePointer<petrel_session_config>?) {
    guard let config else { return }
    var c = petrel_session_config()
    c.size = MemoryLayout<petrel_session_config>.size
    c.role = Int32(PETREL_ROLE_SERVER)
    c.max_message_size = UInt64(SessionConfiguration().maxMessageSize)
    let defaults = ServerHandshake.Policy()
    c.max_header_bytes = UInt32(defaults.maxHeaderBytes)
    c.max_header_count = UInt32(defaults.maxHeaderCount)
    c.compression = 1
    c.auto_pong = 1
    config.pointee = c
}

@_cdecl("petrel_session_create")
public func petrel_session_create(_ config: UnsafePointer<petrel_session_config>?, _ sessionOut: UnsafeMutablePointer<OpaquePointer?>?) -> Int32 {
    guard let config, let sessionOut else { return PETREL_E_NULL }
    var c = petrel_session_config()
    petrel_session_config_init(&c)
    guard readSized(config, size: config.pointee.size, into: &c) else { return PETREL_E_CONFIG_SIZE }
    guard c.role == Int32(PETREL_ROLE_SERVER) || c.role == Int32(PETREL_ROLE_CLIENT),
        let maxMessage = Int(exactly: c.max_message_size), maxMessage > 0, maxMessage <= 1 << 40, c.max_header_bytes >= 256
    else { return PETREL_E_INVALID_ARGUMENT }
    var subprotocols: [String] = []
    if c.subprotocols != nil {
        guard let list = commaList(c.subprotocols), list.allSatisfy(ASCII.isToken) else { return PETREL_E_INVALID_ARGUMENT }
        subprotocols = list
    }
    guard c.max_header_count >= 1 else { return PETREL_E_INVALID_ARGUMENT }
    let sc = SessionConfiguration(maxFrameSize: maxMessage, maxMessageSize: maxMessage, autoPong: c.auto_pong != 0)
    let s: CSession
    if c.role == Int32(PETREL_ROLE_SERVER) {
        var policy = ServerHandshake.Policy()
        policy.maxHeaderBytes = Int(c.max_header_bytes)
        policy.maxHeaderCount = Int(c.max_header_count)
        policy.subprotocols = subprotocols
        if c.compression == 0 { policy.compression = nil }
        policy.session = sc
        if c.allowed_origins != nil {
            guard let list = commaList(c.allowed_origins) else { return PETREL_E_INVALID_ARGUMENT }
            policy.allowedOrigins = list
        }
        s = CSession(server: policy)
    } else {
        guard let hostPointer = c.host, let host = string(hostPointer), !host.isEmpty, isHeaderSafe(host) else {
            return PETREL_E_INVALID_ARGUMENT
        }
        var path = "/"
        if let p = c.path {
            guard let v = string(p), v.hasPrefix("/"), isHeaderSafe(v), !v.contains(" ") else { return PETREL_E_INVALID_ARGUMENT }
            path = v
        }
        var origin: String? = nil
        if let o = c.origin {
            guard let v = string(o), isHeaderSafe(v) else { return PETREL_E_INVALID_ARGUMENT }
            origin = v
        }
        var entropy = EntropySource.system
        s = CSession(client: ClientHandshake(
            host: host, target: path, origin: origin, subprotocols: subprotocols,
            compression: c.compression != 0 ? DeflateOptions() : nil, maxHeaderBytes: Int(c.max_header_bytes),
            maxHeaderCount: Int(c.max_header_count), session: sc, entropy: &entropy))
    }
    sessionOut.pointee = OpaquePointer(Unmanaged.passRetained(s).toOpaque())
    return PETREL_OK
}

@_cdecl("petrel_session_feed")
public func petrel_session_feed(_ session: OpaquePointer?, _ data: UnsafeRawPointer?, _ len: Int) -> Int32 {
    guard let s = CSession.from(session), data != nil || len == 0 else { return PETREL_E_NULL }
    guard len >= 0 else { return PETREL_E_INVALID_ARGUMENT }
    if s.ended { return PETREL_E_CLOSED }
    s.feed(UnsafeRawBufferPointer(start: data, count: len))
    return PETREL_OK
}

@_cdecl("petrel_session_end_of_stream")
public func petrel_session_end_of_stream(_ session: OpaquePointer?) -> Int32 {
    guard let s = CSession.from(session) else { return PETREL_E_NULL }
    if s.handshaking {
        s.serverHandshake = nil
        s.clientHandshake = nil
        s.ended = true
        s.push(CSession.QueuedEvent(type: PETREL_EVENT_ERROR, status: ProtocolError.abnormalClosure.code.rawValue, code: 1006))
        return PETREL_OK
    }
    s.ended = true
    if let e = s.session.receiveEndOfStream() {
        s.push(CSession.QueuedEvent(type: PETREL_EVENT_ERROR, status: e.code.rawValue, code: e.closeCode.rawValue, data: Array(e.description.utf8)))
    }
    return PETREL_OK
}

@_cdecl("petrel_session_poll_event")
public func petrel_session_poll_event(_ session: OpaquePointer?, _ eventOut: UnsafeMutablePointer<petrel_event>?) -> Int32 {
    guard let s = CSession.from(session), let eventOut else { return PETREL_E_NULL }
    guard s.eventsHead < s.events.count else { return PETREL_E_AGAIN }
    let e = s.events[s.eventsHead]
    s.eventsHead += 1
    if s.eventsHead == s.events.count {
        s.events.removeAll(keepingCapacity: true)
        s.eventsHead = 0
    }
    s.current = e.data
    var out = petrel_event()
    out.type = e.type
    out.status = e.status
    out.close_code = e.code
    out.len = s.current.count
    out.data = s.current.withUnsafeBufferPointer { $0.baseAddress }
    eventOut.pointee = out
    return PETREL_OK
}

private func sessionSend(_ session: OpaquePointer?, _ body: (inout Session) throws(UsageError) -> Void) -> Int32 {
    guard let s = CSession.from(session) else { return PETREL_E_NULL }
    if s.handshaking || (s.closeAfterOutput && !s.session.wantsRead) { return PETREL_E_STATE }
    do throws(UsageError) {
        try body(&s.session)
        return PETREL_OK
    } catch {
        return error.code.rawValue
    }
}

@_cdecl("petrel_session_send")
public func petrel_session_send(_ session: OpaquePointer?, _ kind: Int32, _ data: UnsafeRawPointer?, _ len: Int) -> Int32 {
    guard data != nil || len == 0 else { return PETREL_E_NULL }
    guard len >= 0, kind == 1 || kind == 2, let k = MessageKind(rawValue: UInt8(kind)) else { return PETREL_E_INVALID_ARGUMENT }
    let payload = UnsafeRawBufferPointer(start: data, count: len)
    if k == .text && !UTF8Validator.isValid(payload) { return PETREL_E_INVALID_ARGUMENT }
    return sessionSend(session) { (s: inout Session) throws(UsageError) in try s.send(k, payload) }
}

@_cdecl("petrel_session_ping")
public func petrel_session_ping(_ session: OpaquePointer?, _ data: UnsafeRawPointer?, _ len: Int) -> Int32 {
    guard data != nil || len == 0 else { return PETREL_E_NULL }
    guard len >= 0 else { return PETREL_E_INVALID_ARGUMENT }
    let payload = UnsafeRawBufferPointer(start: data, count: len)
    return sessionSend(session) { (s: inout Session) throws(UsageError) in try s.sendPing(payload) }
}

@_cdecl("petrel_session_close")
public func petrel_session_close(_ session: OpaquePointer?, _ code: UInt16, _ reason: UnsafePointer<CChar>?) -> Int32 {
    var text = ""
    if let reason {
        guard let r = string(reason) else { return PETREL_E_INVALID_ARGUMENT }
        text = r
    }
    return sessionSend(session) { (s: inout Session) throws(UsageError) in try s.close(code: CloseCode(code), reason: text) }
}

@_cdecl("petrel_session_take_output")
public func petrel_session_take_output(_ session: OpaquePointer?, _ buf: UnsafeMutableRawPointer?, _ cap: Int, _ lenOut: UnsafeMutablePointer<Int>?) -> Int32 {
    guard let s = CSession.from(session), let buf, let lenOut else { return PETREL_E_NULL }
    guard cap >= 0 else { return PETREL_E_INVALID_ARGUMENT }
    guard s.pendingOutput > 0 else { return PETREL_E_AGAIN }
    var written = 0
    let fromHandshake = min(cap, s.handshakeOutput.count - s.handshakeOffset)
    if fromHandshake > 0 {
        s.handshakeOutput[s.handshakeOffset..<s.handshakeOffset + fromHandshake].withUnsafeBytes { buf.copyMemory(from: $0.baseAddress!, byteCount: fromHandshake) }
        s.handshakeOffset += fromHandshake
        written = fromHandshake
        if s.handshakeOffset == s.handshakeOutput.count {
            s.handshakeOutput = []
            s.handshakeOffset = 0
        }
    }
    if s.handshakeOutput.isEmpty && written < cap {
        let n = s.session.withPendingOutput { out -> Int in
            let n = min(cap - written, out.count)
            if n > 0 { (buf + written).copyMemory(from: out.baseAddress!, byteCount: n) }
            return n
        }
        s.session.consumeOutput(n)
        written += n
    }
    lenOut.pointee = written
    return PETREL_OK
}

@_cdecl("petrel_session_pending_output")
public func petrel_session_pending_output(_ session: OpaquePointer?) -> Int {
    CSession.from(session)?.pendingOutput ?? 0
}

@_cdecl("petrel_session_want_read")
public func petrel_session_want_read(_ session: OpaquePointer?) -> Int32 {
    guard let s = CSession.from(session) else { return 0 }
    return !s.ended && (s.handshaking || s.session.wantsRead) ? 1 : 0
}

@_cdecl("petrel_session_want_write")
public func petrel_session_want_write(_ session: OpaquePointer?) -> Int32 {
    (CSession.from(session)?.pendingOutput ?? 0) > 0 ? 1 : 0
}

@_cdecl("petrel_session_should_close")
public func petrel_session_should_close(_ session: OpaquePointer?) -> Int32 {
    guard let s = CSession.from(session) else { return 0 }
    return s.closeAfterOutput || (!s.handshaking && s.session.shouldCloseTransport) ? 1 : 0
}

@_cdecl("petrel_session_destroy")
public func petrel_session_destroy(_ session: OpaquePointer?) {
    guard let session else { return }
    Unmanaged<CSession>.fromOpaque(UnsafeRawPointer(session)).release()
}

/// No CR, LF or other control character that could end a header line early.
private func isHeaderSafe(_ s: String) -> Bool {
    !s.utf8.contains { $0 < 0x20 || $0 == 0x7F }
}
