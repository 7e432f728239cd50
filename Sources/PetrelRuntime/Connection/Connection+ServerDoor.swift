import CLinux
import Glibc
import PetrelCore

/// The server's door: the opening request routed to a WebSocket upgrade (through the accept hook),
/// the application's HTTP routes, an event stream, static files, or an HTTP refusal.
extension Connection {
    /// Bytes of the opening request (or of a plain request's body), through the core's
    /// `ServerHandshake`. Requests pipelined on a kept connection are taken one after another
    /// from the same bytes, while the responses queued stay under `pipelineOutputLimit`; past
    /// it, the rest waits (reading paused) until they are written.
    func serverHandshake(_ bytes: UnsafeMutableRawBufferPointer) {
        var offset = 0
        while offset < bytes.count {
            guard let used = self.serverHandshakeStep(UnsafeMutableRawBufferPointer(rebasing: bytes[offset...])) else { return }
            offset += used
            guard offset < bytes.count, self.phase == .handshaking, self.handshakeBox != nil, !self.closeAfterFlush else { return }
            if self.plaintextPending >= Connection.pipelineOutputLimit {
                self.unparsedInput = Array(UnsafeRawBufferPointer(rebasing: bytes[offset...]))
                self.pauseReading()
                return
            }
        }
    }

    /// Responses queued on a kept connection past which pipelined requests wait to be read.
    static let pipelineOutputLimit = 64 * 1024

    /// One step of the door: returns how many bytes a plain request took once it was answered
    /// (the rest may be the next request), or nil when every byte was taken (more needed, an
    /// upgrade, a refusal).
    private func serverHandshakeStep(_ bytes: UnsafeMutableRawBufferPointer) -> Int? {
        if self.pendingRequest != nil { return self.requestBody(UnsafeRawBufferPointer(bytes)) }
        guard let box = self.handshakeBox else { return nil }
        if let e = self.extras, e.keptAliveIdle {
            // The next request on a kept connection: it has the handshake's time from here, and
            // its access log entry starts here.
            e.keptAliveIdle = false
            self.deadline = self.loop.now + UInt64(self.options.handshakeTimeout)
            self.armTimer()
            if self.state.pointee.counting {
                e.access.startedAt = AccessLogEntry.now()
                e.access.inAtStart = e.access.bytesIn >= UInt64(bytes.count) ? e.access.bytesIn - UInt64(bytes.count) : 0
                e.access.method = "-"
                e.access.path = "-"
            }
        }
        let step = box.handshake.feed(UnsafeRawBufferPointer(bytes))
        switch step {
        case .needMore:
            return nil
        case .refuse(let e):
            self.handshakeBox = nil
            self.respondAndClose(e.response)
            return nil
        case .plainRequest(let head, let consumed):
            self.handshakeBox = nil
            guard let used = self.plainRequest(head, leftover: UnsafeRawBufferPointer(rebasing: bytes[consumed...])) else { return nil }
            return consumed + used
        case .upgrade(let request, let consumed):
            self.handshakeBox = nil
            self.upgrade(request, handshake: box.handshake, leftover: UnsafeMutableRawBufferPointer(rebasing: bytes[consumed...]))
            return nil
        }
    }

    /// The client's address: the peer, or what a trusted proxy said of the client.
    public var clientAddress: String { self.extras?.forwardedFor ?? self.peerAddress.description }

    /// A valid upgrade request: the accept hook decides, the handshake agrees, the 101 is queued
    /// and the connection opens.
    func upgrade(_ request: HandshakeRequest, handshake: ServerHandshake, leftover: UnsafeMutableRawBufferPointer) {
        if self.state.pointee.counting {
            self.more.access.method = "GET"
            self.more.access.path = request.path
        }
        self.applyForwarded(request.head)
        var chosen: String? = nil
        var extraHeaders: [HTTPField] = []
        if let hook = self.handlers.onUpgrade {
            switch hook(UpgradeRequest(request: request, peer: self.peerAddress, connectionID: self.id, clientAddress: self.clientAddress)) {
            case .reject(let status, let body):
                return self.respondAndClose(HTTPResponse.error(status: status, body: body))
            case .refuse(let status, let contentType, let body):
                return self.respondAndClose(HTTPResponse.make(
                    status: status,
                    headers: [HTTPField(name: "Content-Type", value: contentType), HTTPField(name: "Connection", value: "close")],
                    body: body))
            case .accept(let subprotocol, let userData, let headers):
                if let s = subprotocol, !request.subprotocols.contains(s) {
                    return self.respondAndClose(HTTPResponse.error(status: 500, body: "accept hook chose a subprotocol the client did not offer"))
                }
                chosen = subprotocol
                self.userData = userData
                extraHeaders = headers
            }
        }
        let agreement = handshake.accept(request, subprotocol: chosen, headers: extraHeaders)
        self.session = agreement.makeSession(zlibPool: self.loop.zlibPool)
        _ = agreement.response.withUnsafeBytes { try? self.session.queueEncoded($0) }
        // Kept in an exactly sized array: the reader's may have grown with room to spare.
        let raw = handshake.headBytes
        self.requestBytes = [UInt8](unsafeUninitializedCapacity: raw.count) { buffer, n in
            n = buffer.initialize(fromContentsOf: raw)
        }
        if agreement.subprotocol != nil { self.subprotocol = agreement.subprotocol }
        self.startStompIfAsked(request, subprotocol: agreement.subprotocol)
        if self.state.pointee.counting {
            self.more.access.transport = self.isStomp ? "stomp" : "websocket"
            self.logAccess(.upgrade, status: 101, out: agreement.response.count)
        }
        self.loop.openingRequest = (self.id, request)
        self.releaseBuffersAfterFlush = true
        self.open(leftover: leftover)
        self.loop.openingRequest = nil
    }

    /// A request that is not an upgrade: its body is read by Content-Length, then it is
    /// answered. Returns what `requestBody` returns.
    func plainRequest(_ head: HTTPRequestHead, leftover: UnsafeRawBufferPointer) -> Int? {
        guard let server = self.server else { return nil }
        switch HTTPRequestBodyReader.start(head: head, maxBodyBytes: server.configuration.maxRequestBody) {
        case .failure(let e):
            self.respondAndClose(e.response)
            return nil
        case .success(let reader):
            self.pendingRequest = (head, reader)
            return self.requestBody(leftover)
        }
    }

    /// Bytes of a plain request's body, through the core's `HTTPRequestBodyReader`; the
    /// request is answered once the body is complete. Returns how many of `bytes` it took then
    /// (what follows may be the next request, pipelined), nil while the body is incomplete.
    func requestBody(_ bytes: UnsafeRawBufferPointer) -> Int? {
        guard self.pendingRequest != nil else { return nil }
        guard case .complete(let consumed) = self.more.pendingRequest!.reader.feed(bytes), let pending = self.pendingRequest else { return nil }
        self.pendingRequest = nil
        self.applyForwarded(pending.head)
        self.answer(HTTPRequest(head: pending.head, body: pending.reader.body, peer: self.peerAddress, clientAddress: self.clientAddress))
        return consumed
    }

    func answer(_ request: HTTPRequest) {
        guard let server = self.server else { return }
        self.noteRequest(request.head)
        self.applyForwarded(request.head)
        var cors = ""
        if let policy = server.configuration.cors {
            switch policy.verdict(request.head) {
            case .sameOrigin:
                cors = "Vary: Origin\r\n"
            case .refused(let origin):
                return self.respondAndClose(HTTPResponse.error(status: 403, body: "origin \(origin) is not allowed"))
            case .allowed(_, let fields):
                if request.method == "OPTIONS" && request.head.headers["Access-Control-Request-Method"] != nil {
                    return self.respond(policy.preflight(request.head, fields: fields), to: request.head)
                }
                cors = fields
            }
        }
        if let answer = self.handlers.onHTTPRequest?(request, self) {
            switch answer {
            case .respond(let bytes): return self.respond(bytes, to: request.head, fields: cors)
            case .eventStream: return self.openEventStream(request.head, fields: cors)
            }
        }
        if server.configuration.eventStreamPaths.contains(request.path) {
            guard request.method == "GET" else {
                return self.respondAndClose(HTTPResponse.error(status: 405, body: "method not allowed", headers: [HTTPField(name: "Allow", value: "GET")]))
            }
            return self.openEventStream(request.head, fields: cors)
        }
        if request.path == "/petrel.js", let files = server.staticFiles {
            return self.respond(files.respondPetrelJS(request.head), to: request.head, fields: cors)
        }
        if let files = server.staticFiles { return self.respond(files.respond(request.head), to: request.head, fields: cors) }
        self.respondAndClose(HandshakeError.notUpgrade.response)
    }

    /// Sends a response to a plain request, with `fields` (CORS) added; keeps the connection
    /// for the next request (HTTP/1.1 keep-alive) when the response's end is known, neither side
    /// asked to close and the server's limits allow, else adds `Connection: close` and closes.
    func respond(_ response: [UInt8], to head: HTTPRequestHead, fields: String = "") {
        guard let server = self.server, let facts = ResponseHead.inspect(response) else { return self.respondAndClose(response) }
        let e = self.more
        e.requestsServed += 1
        let configuration = server.configuration
        var response = response
        if head.method == "HEAD" && facts.bodyCount > 0 {
            response.removeLast(facts.bodyCount)  // a HEAD response has no body (RFC 9110 §9.3.2)
        }
        let keep = configuration.keepAliveTimeout > 0 && !facts.closes && facts.delimited && (facts.lengthMatches || head.method == "HEAD")
            && e.requestsServed < configuration.maxKeepAliveRequests && head.version == "HTTP/1.1"
            && !head.headers.listElements("Connection").contains { ASCII.equalsIgnoringCase($0, "close") }
            && !self.loop.stopping
        let added = keep || facts.closes ? fields : fields + "Connection: close\r\n"
        let bytes = ResponseHead.inserting(added, into: response, at: facts.statusLineEnd)
        self.logAccess(.request, status: facts.status, out: bytes.count)
        guard keep else { return self.closeAfterResponse(bytes) }
        bytes.withUnsafeBytes { self.queuePlain($0) }
        self.loop.markDirty(self)
        self.handshakeBox = ServerHandshakeBox(ServerHandshake(policy: server.handshakePolicy))
        e.keptAliveIdle = true
        self.deadline = self.loop.now + UInt64(configuration.keepAliveTimeout)
        self.armTimer()
    }

    func openEventStream(_ head: HTTPRequestHead, fields: String = "") {
        self.httpRequest = head
        self.eventStream = true
        self.transportFlag.store(Connection.eventStreamTransport, ordering: .releasing)
        self.phase = .open
        self.deadline = 0
        self.lastPing = self.loop.now
        self.openNotified = true
        self.armTimer()
        let c = self.server?.configuration
        let opening = ServerSentEvents.opening(fields: fields, retry: c?.eventStreamRetry ?? 0, padding: c?.eventStreamPadding ?? 0)
        opening.withUnsafeBytes { self.queuePlain($0) }
        if self.state.pointee.counting {
            self.noteRequest(head)
            self.more.access.transport = "sse"
            self.logAccess(.upgrade, status: 200, out: opening.count)
        }
        self.loop.markDirty(self)
        self.handlers.onOpen?(self)
        self.noteOpened()
    }

    /// Answers with a complete HTTP response (an error, a route's answer, a static file) and
    /// closes once it is written.
    func respondAndClose(_ response: [UInt8]) {
        if !response.isEmpty && self.state.pointee.counting {
            let status = response.count >= 12 ? response[9..<12].reduce(0) { $0 * 10 + Int($1) - 48 } : 0
            self.logAccess(.request, status: status, out: response.count)
        }
        self.closeAfterResponse(response)
    }

    /// Queues `response` (already logged) and closes once it is written.
    private func closeAfterResponse(_ response: [UInt8]) {
        response.withUnsafeBytes { self.queuePlain($0) }
        self.closeAfterFlush = true
        self.loop.markDirty(self)
    }
}
