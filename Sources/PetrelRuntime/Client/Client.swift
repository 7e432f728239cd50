import CLinux
import Glibc
import PetrelCore
import Synchronization

/// The loop thread that client connections run on, started on first use and kept for the life of
/// the process. Client callbacks run on it.
final class ClientLoop: @unchecked Sendable {
    /// Nil if the loop could not be started (out of descriptors or threads); connects then fail.
    static let shared: ClientLoop? = try? ClientLoop()

    let loop: EventLoop

    private init() throws(RuntimeError) {
        self.loop = try EventLoop(index: 0, timerResolution: 50)
        let loop = self.loop
        // Work queued before the thread reaches epoll_wait waits in the eventfd.
        _ = try spawnThread(name: "petrel-client") { loop.run() }
    }
}

/// Opening client connections.
public enum ClientConnector {
    /// Whether the calling thread is the client loop (a client callback is running).
    public static var isLoopThread: Bool { ClientLoop.shared?.loop.isCurrentThread ?? false }

    /// Starts connecting to `url` (`ws://host[:port]/path?query`). The name is resolved on the
    /// calling thread; the connect and the handshake run on the client loop, which then calls
    /// `handlers.onOpen`, or `handlers.onConnectFailed` with the reason.
    public static func connect(
        to url: String, configuration: ClientConfiguration = ClientConfiguration(), handlers: Handlers
    ) throws(RuntimeError) -> Connection {
        let target = try WebSocketURL(url)
        for field in configuration.headers {
            if let why = ClientHandshake.refusal(ofExtraHeader: field) { throw RuntimeError(.configuration, why) }
        }
        // Made (and its files checked) here, so that a bad CA file fails this call.
        if target.secure { _ = try ClientTLSContexts.context(for: configuration.tls) }
        var proxy: ProxyURL? = nil
        if let p = configuration.proxy {
            proxy = try ProxyURL(p)
        } else if configuration.proxyFromEnvironment {
            proxy = try ProxyURL.fromEnvironment(for: target)
        }
        if let p = proxy, p.kind == .https { _ = try ClientTLSContexts.context(for: configuration.tls) }
        // The tunnel's exchange, made (and its target checked) here, so that a host SOCKS5 cannot
        // carry fails this call.
        var tunnel: ProxyHandshake? = nil
        if let p = proxy {
            do throws(ProxyHandshakeError) {
                tunnel = try ProxyHandshake(
                    kind: p.kind == .socks5 ? .socks5 : .httpConnect, targetHost: target.host, targetPort: target.port,
                    username: p.username, password: p.password, maxHeaderBytes: configuration.options.maxHeaderBytes,
                    maxHeaderCount: configuration.options.maxHeaderCount)
            } catch {
                throw RuntimeError(.invalidURL, error.message)
            }
        }
        // Through a proxy, only the proxy's name is resolved here (SOCKS5 and CONNECT resolve
        // the server's name at the proxy).
        var addresses = try SocketAddress.resolve(host: proxy?.host ?? target.host, port: proxy?.port ?? target.port)
        var entropy = EntropySource.system
        let handshake = ClientHandshake(
            host: target.hostHeader, target: target.target, origin: configuration.origin,
            subprotocols: configuration.subprotocols, compression: configuration.compression, headers: configuration.headers,
            maxHeaderBytes: configuration.options.maxHeaderBytes, maxHeaderCount: configuration.options.maxHeaderCount,
            session: configuration.options.session, entropy: &entropy)
        guard let loop = ClientLoop.shared?.loop else {
            throw RuntimeError(.thread, "the client loop thread could not be started")
        }
        while true {
            let address = addresses.removeFirst()
            let fd = petrel_socket(address.family)
            guard fd >= 0 else { throw .system(.socket, "socket") }
            let rc = address.withSockaddr { Glibc.connect(fd, $0, $1) }
            if rc != 0 && errno != EINPROGRESS {
                let error = RuntimeError.system(.connect, "connect to \(address)")
                Syscall.close(fd)
                if addresses.isEmpty { throw error }
                continue
            }
            let c = Connection(clientOn: loop, fd: fd, peer: address, configuration: configuration, handlers: handlers, handshake: handshake)
            c.pendingAddresses = addresses
            c.wantsTLS = target.secure
            c.tlsHost = target.host
            if let proxy, let tunnel {
                c.proxy = proxy
                c.proxyHandshake = tunnel
            }
            loop.execute(.attach(c))
            return c
        }
    }
}

/// Client TLS contexts, one per distinct configuration, kept for the life of the process (the
/// system CA store is read once).
enum ClientTLSContexts {
    private static let cache = Lock<[TLSClientConfiguration: TLSContext]>([:])

    static func context(for c: TLSClientConfiguration) throws(RuntimeError) -> TLSContext {
        if let hit = self.cache.withLock({ $0[c] }) { return hit }
        let made = try TLSContext.client(c)
        return self.cache.withLock { cache in
            if let raced = cache[c] { return raced }
            cache[c] = made
            return made
        }
    }
}
