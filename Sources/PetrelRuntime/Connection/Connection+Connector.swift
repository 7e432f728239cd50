import CLinux
import Glibc
import PetrelCore

/// The client connector: TCP connect with a retry per resolved address, the proxy tunnel
/// (HTTP CONNECT or SOCKS5, optionally over TLS to the proxy), TLS to the server, and the
/// client's opening handshake.
extension Connection {
    /// Registers a connecting client socket with the loop (on the loop thread).
    func attach() {
        self.loop.adopt(self)
        self.deadline = self.loop.now + UInt64(self.clientConfiguration?.connectTimeout ?? 10_000)
        self.loop.register(fd: self.fd, slot: .connection(self), events: UInt32(EPOLLIN.rawValue | EPOLLOUT.rawValue))
        self.writeInterest = true
    }

    func connectCompleted() {
        var err: Int32 = 0
        var len = socklen_t(MemoryLayout<Int32>.size)
        getsockopt(self.fd, SOL_SOCKET, SO_ERROR, &err, &len)
        if err != 0 {
            if !self.pendingAddresses.isEmpty {
                self.retryNextAddress()
            } else {
                self.failConnect(.system(.connect, "connect to \(self.peerAddress)", err))
            }
            return
        }
        Syscall.noDelay(self.fd)
        self.phase = .handshaking
        self.deadline = self.loop.now + UInt64(self.options.handshakeTimeout)
        if let proxy = self.proxy, let target = self.proxyTarget {
            // First the tunnel: TLS to an https:// proxy, then CONNECT, or the SOCKS5 exchange.
            if proxy.kind == .https {
                guard self.startClientTLS(hostname: proxy.host, forProxy: true) else { return }
            }
            switch proxy.kind {
            case .http, .https:
                self.proxyNegotiation = .http(HTTPHeadReader(limit: self.options.maxHeaderBytes))
                self.proxyOut = ProxyNegotiation.connectRequest(host: target.host, port: target.port, proxy: proxy)
            case .socks5:
                self.proxyNegotiation = .socksMethod([])
                self.proxyOut = ProxyNegotiation.socksGreeting(proxy)
            }
            self.loop.markDirty(self)
            return
        }
        self.startWebSocketHandshake()
    }

    /// Starts TLS to the server (wss://) if asked, and queues the opening handshake.
    func startWebSocketHandshake() {
        guard let handshake = self.clientHandshake else { return }
        if self.wantsTLS {
            guard self.startClientTLS(hostname: self.clientConfiguration?.tls.serverName ?? self.tlsHost, forProxy: false) else { return }
        }
        handshake.request.withUnsafeBytes { self.queuePlain($0) }
        self.loop.markDirty(self)
    }

    /// Adds a client TLS layer (to the server, or to an https:// proxy) and sends its hello.
    func startClientTLS(hostname: String?, forProxy: Bool) -> Bool {
        guard let configuration = self.clientConfiguration else { return false }
        do throws(RuntimeError) {
            var tls = configuration.tls
            if forProxy {
                // The proxy's certificate is checked against the same CAs, for the proxy's name.
                tls.serverName = nil
                tls.certificateChainFile = nil
                tls.privateKeyFile = nil
            }
            let session = try TLSSession(
                context: try ClientTLSContexts.context(for: tls), server: false, hostname: hostname,
                verifyHostname: !tls.insecureSkipVerification)
            session.startHandshake()
            self.addLayer(session)
            return true
        } catch {
            self.failConnect(error)
            return false
        }
    }

    /// Bytes from the proxy while the tunnel is being set up.
    func proxyBytes(_ bytes: UnsafeRawBufferPointer) {
        guard let negotiation = self.proxyNegotiation, let proxy = self.proxy, let target = self.proxyTarget else { return }
        func fail(_ why: String) { self.failConnect(RuntimeError(.proxy, "proxy \(proxy): \(why)")) }
        switch negotiation {
        case .http(var reader):
            switch reader.feed(bytes) {
            case .needMore:
                self.proxyNegotiation = .http(reader)
            case .tooLarge:
                fail("response head too large")
            case .complete(let consumed):
                switch HTTPResponseHead.parse(reader.bytes, maxFieldCount: self.options.maxHeaderCount) {
                case .failure(let e):
                    fail(e.message)
                case .success(let head):
                    guard (200...299).contains(head.status) else {
                        return fail("CONNECT refused: \(head.status) \(head.reason)")
                    }
                    self.tunnelEstablished(leftover: UnsafeRawBufferPointer(rebasing: bytes[consumed...]))
                }
            }
        case .socksMethod(var got), .socksAuth(var got), .socksConnect(var got):
            got.append(contentsOf: bytes)
            switch negotiation {
            case .socksMethod:
                guard got.count >= 2 else { return self.proxyNegotiation = .socksMethod(got) }
                guard got[0] == 5 else { return fail("not a SOCKS5 server") }
                switch got[1] {
                case 0:
                    self.proxyNegotiation = .socksConnect(Array(got[2...]))
                    self.proxyOut += ProxyNegotiation.socksConnect(host: target.host, port: target.port)
                case 2 where proxy.username != nil:
                    self.proxyNegotiation = .socksAuth(Array(got[2...]))
                    self.proxyOut += ProxyNegotiation.socksAuth(proxy)
                case 2:
                    return fail("SOCKS5 proxy wants a user name and password")
                default:
                    return fail("SOCKS5 proxy accepts none of our authentication methods")
                }
                self.loop.markDirty(self)
            case .socksAuth:
                guard got.count >= 2 else { return self.proxyNegotiation = .socksAuth(got) }
                guard got[0] == 1 else { return fail("malformed SOCKS5 authentication reply") }
                guard got[1] == 0 else { return fail("SOCKS5 authentication failed (status \(got[1]))") }
                self.proxyNegotiation = .socksConnect(Array(got[2...]))
                self.proxyOut += ProxyNegotiation.socksConnect(host: target.host, port: target.port)
                self.loop.markDirty(self)
            default:
                guard let n = ProxyNegotiation.socksReplyLength(got) else { return self.proxyNegotiation = .socksConnect(got) }
                guard got[0] == 5, n > 4 else { return fail("malformed SOCKS5 reply") }
                guard got[1] == 0 else {
                    return fail("SOCKS5 CONNECT refused: \(ProxyNegotiation.socksReplyText(got[1])) (reply \(got[1]))")
                }
                got.removeFirst(n)
                got.withUnsafeBytes { self.tunnelEstablished(leftover: $0) }
            }
        }
    }

    /// The tunnel is up: what follows is the connection to the server.
    func tunnelEstablished(leftover: UnsafeRawBufferPointer) {
        let depth = self.tlsLayers.count
        self.proxyNegotiation = nil
        self.proxyOut = []
        self.startWebSocketHandshake()
        guard self.phase != .closed, leftover.count > 0 else { return }
        self.receive(leftover, depth: depth)
    }

    func retryNextAddress() {
        self.loop.unregister(fd: self.fd)
        Syscall.close(self.fd)
        self.fd = -1
        while !self.pendingAddresses.isEmpty {
            let next = self.pendingAddresses.removeFirst()
            let fd = petrel_socket(next.family)
            guard fd >= 0 else { return self.failConnect(.system(.socket, "socket")) }
            self.peerAddress = next
            let rc = next.withSockaddr { Glibc.connect(fd, $0, $1) }
            if rc != 0 && errno != EINPROGRESS {
                let error = RuntimeError.system(.connect, "connect to \(next)")
                Syscall.close(fd)
                if self.pendingAddresses.isEmpty { return self.failConnect(error) }
                continue
            }
            self.fd = fd
            self.loop.register(fd: fd, slot: .connection(self), events: UInt32(EPOLLIN.rawValue | EPOLLOUT.rawValue))
            return
        }
        self.failConnect(RuntimeError(.connect, "no address of \(self.peerAddress.host) accepted the connection"))
    }

    /// Bytes of the server's handshake response, through the core's `ClientHandshake`.
    func clientHandshakeBytes(_ bytes: UnsafeMutableRawBufferPointer) {
        guard self.clientHandshake != nil else { return }
        switch self.more.clientHandshake!.feed(UnsafeRawBufferPointer(bytes)) {
        case .needMore:
            return
        case .fail(let e):
            self.failConnect(RuntimeError(.handshake, e.message))
        case .open(let agreement, let consumed):
            self.session = agreement.makeSession(zlibPool: self.loop.zlibPool)
            self.subprotocol = agreement.subprotocol
            self.clientHandshake = nil
            self.open(leftover: UnsafeMutableRawBufferPointer(rebasing: bytes[consumed...]))
        }
    }

    func failConnect(_ error: RuntimeError) {
        guard self.phase != .closed else { return }
        self.connectError = error
        self.closeTransport(reason: .abnormalClosure, message: error.message)
    }
}
