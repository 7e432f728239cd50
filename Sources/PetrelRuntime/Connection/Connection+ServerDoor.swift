import CLinux
import Glibc
import PetrelCore

/// The server's door: the opening request routed to a WebSocket upgrade (through the accept hook),
/// the application's HTTP routes, an event stream, static files, or an HTTP refusal.
extension Connection {
    /// Bytes of the opening request (or of a plain request's body), through the core's
    /// `ServerHandshake`.
    func serverHandshake(_ bytes: UnsafeMutableRawBufferPointer) {
        if self.pendingRequest != nil { return self.requestBody(UnsafeRawBufferPointer(bytes)) }
        guard let box = self.handshakeBox else { return }
        let step = box.handshake.feed(UnsafeRawBufferPointer(bytes))
        switch step {
        case .needMore:
            return
        case .refuse(let e):
            self.handshakeBox = nil
            self.respondAndClose(e.response)
        case .plainRequest(let head, let consumed):
            self.handshakeBox = nil
            self.plainRequest(head, leftover: UnsafeRawBufferPointer(rebasing: bytes[consumed...]))
        case .upgrade(let request, let consumed):
            self.handshakeBox = nil
            self.upgrade(request, handshake: box.handshake, leftover: UnsafeMutableRawBufferPointer(rebasing: bytes[consumed...]))
        }
    }

    /// A valid upgrade request: the accept hook decides, the handshake agrees, the 101 is queued
    /// and the connection opens.
    func upgrade(_ request: HandshakeRequest, handshake: ServerHandshake, leftover: UnsafeMutableRawBufferPointer) {
        var chosen: String? = nil
        var extraHeaders: [HTTPField] = []
        if let hook = self.handlers.onUpgrade {
            switch hook(UpgradeRequest(request: request, peer: self.peerAddress, connectionID: self.id)) {
            case .reject(let status, let body):
                return self.respondAndClose(HTTPResponse.error(status: status, body: body))
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
        self.loop.openingRequest = (self.id, request)
        self.releaseBuffersAfterFlush = true
        self.open(leftover: leftover)
        self.loop.openingRequest = nil
    }

    /// A request that is not an upgrade: its body is read by Content-Length, then it is answered.
    func plainRequest(_ head: HTTPRequestHead, leftover: UnsafeRawBufferPointer) {
        guard let server = self.server else { return }
        switch HTTPRequestBodyReader.start(head: head, maxBodyBytes: server.configuration.maxRequestBody) {
        case .failure(let e):
            self.respondAndClose(e.response)
        case .success(let reader):
            self.pendingRequest = (head, reader)
            self.requestBody(leftover)
        }
    }

    /// Bytes of a plain request's body, through the core's `HTTPRequestBodyReader`; the
    /// request is answered once the body is complete.
    func requestBody(_ bytes: UnsafeRawBufferPointer) {
        guard self.pendingRequest != nil else { return }
        guard case .complete = self.more.pendingRequest!.reader.feed(bytes), let pending = self.pendingRequest else { return }
        self.pendingRequest = nil
        self.answer(HTTPRequest(head: pending.head, body: pending.reader.body, peer: self.peerAddress))
    }

    func answer(_ request: HTTPRequest) {
        guard let server = self.server else { return }
        if let answer = self.handlers.onHTTPRequest?(request, self) {
            switch answer {
            case .respond(let bytes): return self.respondAndClose(bytes)
            case .eventStream: return self.openEventStream(request.head)
            }
        }
        if server.configuration.eventStreamPaths.contains(request.path) {
            guard request.method == "GET" else {
                return self.respondAndClose(HTTPResponse.error(status: 405, body: "method not allowed", headers: [HTTPField(name: "Allow", value: "GET")]))
            }
            return self.openEventStream(request.head)
        }
        if let files = server.staticFiles { return self.respondAndClose(files.respond(request.head)) }
        self.respondAndClose(HandshakeError.notUpgrade.response)
    }

    func openEventStream(_ head: HTTPRequestHead) {
        self.httpRequest = head
        self.eventStream = true
        self.transportFlag.store(Connection.eventStreamTransport, ordering: .releasing)
        self.phase = .open
        self.deadline = 0
        self.lastPing = self.loop.now
        self.openNotified = true
        self.armTimer()
        ServerSentEvents.head.withUnsafeBytes { self.queuePlain($0) }
        self.loop.markDirty(self)
        self.handlers.onOpen?(self)
    }

    /// Answers with a complete HTTP response (an error, a route's answer, a static file) and
    /// closes once it is written.
    func respondAndClose(_ response: [UInt8]) {
        response.withUnsafeBytes { self.queuePlain($0) }
        self.closeAfterFlush = true
        self.loop.markDirty(self)
    }
}
