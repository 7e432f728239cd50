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
        if let proxy = self.proxy, let tunnel = self.proxyHandshake {
            // First the tunnel: TLS to an https:// proxy, then CONNECT, or the SOCKS5 exchange.
            if proxy.kind == .https {
                guard self.startClientTLS(hostname: proxy.host, forProxy: true) else { return }
            }
            self.proxyOut = tunnel.firstBytes
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

    /// Bytes from the proxy while the tunnel is being set up, through the core's `ProxyHandshake`.
    func proxyBytes(_ bytes: UnsafeRawBufferPointer) {
        guard self.proxyHandshake != nil, let proxy = self.proxy else { return }
        switch self.more.proxyHandshake!.feed(bytes) {
        case .needMore(let send):
            guard !send.isEmpty else { return }
            self.proxyOut += send
            self.loop.markDirty(self)
        case .failed(let e):
            self.failConnect(RuntimeError(.proxy, "proxy \(proxy): \(e.message)"))
        case .established(let consumed):
            self.tunnelEstablished(leftover: UnsafeRawBufferPointer(rebasing: bytes[consumed...]))
        }
    }

    /// The tunnel is up: what follows is the connection to the server.
    func tunnelEstablished(leftover: UnsafeRawBufferPointer) {
        let depth = self.tlsLayers.count
        self.proxyHandshake = nil
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
            self.failConnect(.handshake(e))
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
