import COpenSSL
import Glibc
import Synchronization

/// A TLS server's certificate and key (PEM files), and optional client-certificate checking.
public struct TLSServerConfiguration: Sendable, Hashable {
    /// The certificate chain, leaf first (PEM).
    public var certificateChainFile: String
    public var privateKeyFile: String
    /// If set, clients must present a certificate signed by a CA in this PEM file.
    public var clientCAFile: String? = nil
    /// More certificates, chosen by the name a client sends (SNI): a host name, or a wildcard
    /// `*.example.com` for one label, to a chain and key. Other names, and clients that send
    /// none, get the one above.
    public var certificatesByName: [String: TLSCertificateFiles] = [:]

    public init(certificateChainFile: String, privateKeyFile: String, clientCAFile: String? = nil) {
        self.certificateChainFile = certificateChainFile
        self.privateKeyFile = privateKeyFile
        self.clientCAFile = clientCAFile
    }
}

/// A certificate chain and its key, PEM files.
public struct TLSCertificateFiles: Sendable, Hashable {
    public var certificateChainFile: String
    public var privateKeyFile: String

    public init(certificateChainFile: String, privateKeyFile: String) {
        self.certificateChainFile = certificateChainFile
        self.privateKeyFile = privateKeyFile
    }
}

/// How a client checks the server (and proves itself, optionally).
public struct TLSClientConfiguration: Sendable, Hashable {
    /// Trusted CAs (PEM); nil uses the system store.
    public var caFile: String? = nil
    /// The name sent as SNI and checked against the certificate; nil: the URL's host.
    public var serverName: String? = nil
    /// A client certificate chain and key (PEM), for servers that ask for one.
    public var certificateChainFile: String? = nil
    public var privateKeyFile: String? = nil
    /// Accept any certificate for any name. For tests against throwaway certificates only:
    /// with it, TLS no longer protects against an attacker on the path.
    public var insecureSkipVerification = false

    public init() {}
}

/// An OpenSSL context (`SSL_CTX`), shared by the connections made from it.
final class TLSContext: @unchecked Sendable {
    let ctx: OpaquePointer

    private init(method: OpaquePointer?) throws(RuntimeError) {
        guard let ctx = SSL_CTX_new(method) else { throw TLSContext.error("SSL_CTX_new") }
        petrel_ssl_ctx_setup(ctx)
        self.ctx = ctx
    }

    deinit { SSL_CTX_free(self.ctx) }

    static func server(_ c: TLSServerConfiguration) throws(RuntimeError) -> TLSContext {
        let t = try TLSContext(method: TLS_server_method())
        ERR_clear_error()
        guard SSL_CTX_use_certificate_chain_file(t.ctx, c.certificateChainFile) == 1 else {
            throw error("certificate chain \(c.certificateChainFile)")
        }
        guard SSL_CTX_use_PrivateKey_file(t.ctx, c.privateKeyFile, SSL_FILETYPE_PEM) == 1 else {
            let reason = lastErrorText()
            if reason.contains("mismatch") {
                throw RuntimeError(.tls, "TLS: the private key \(c.privateKeyFile) does not match the certificate")
            }
            throw RuntimeError(.tls, "TLS: private key \(c.privateKeyFile): \(reason)")
        }
        guard SSL_CTX_check_private_key(t.ctx) == 1 else { throw error("the private key does not match the certificate") }
        if let ca = c.clientCAFile {
            guard SSL_CTX_load_verify_locations(t.ctx, ca, nil) == 1 else { throw error("client CA file \(ca)") }
            SSL_CTX_set_verify(t.ctx, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, nil)
        }
        petrel_ssl_ctx_alpn_http11(t.ctx)
        return t
    }

    static func client(_ c: TLSClientConfiguration) throws(RuntimeError) -> TLSContext {
        let t = try TLSContext(method: TLS_client_method())
        ERR_clear_error()
        if let ca = c.caFile {
            guard SSL_CTX_load_verify_locations(t.ctx, ca, nil) == 1 else { throw error("CA file \(ca)") }
        } else {
            guard SSL_CTX_set_default_verify_paths(t.ctx) == 1 else { throw error("the system CA store") }
        }
        if let chain = c.certificateChainFile {
            guard SSL_CTX_use_certificate_chain_file(t.ctx, chain) == 1 else { throw error("client certificate \(chain)") }
            guard SSL_CTX_use_PrivateKey_file(t.ctx, c.privateKeyFile ?? chain, SSL_FILETYPE_PEM) == 1 else {
                throw error("client key \(c.privateKeyFile ?? chain)")
            }
        }
        SSL_CTX_set_verify(t.ctx, c.insecureSkipVerification ? SSL_VERIFY_NONE : SSL_VERIFY_PEER, nil)
        return t
    }

    /// A RuntimeError with OpenSSL's reason for the last failure.
    static func error(_ what: String) -> RuntimeError {
        RuntimeError(.tls, "TLS: \(what): \(lastErrorText())")
    }

    static func lastErrorText() -> String {
        var text = ""
        while case let code = ERR_get_error(), code != 0 {
            var buf = [UInt8](repeating: 0, count: 256)
            buf.withUnsafeMutableBufferPointer { p in
                p.baseAddress!.withMemoryRebound(to: CChar.self, capacity: p.count) { ERR_error_string_n(code, $0, p.count) }
            }
            let s = String(decoding: buf.prefix { $0 != 0 }, as: UTF8.self)
            // "error:0A000086:SSL routines::certificate verify failed" -> the reason
            text = s.split(separator: ":").last.map(String.init) ?? s
        }
        return text.isEmpty ? "failed" : text
    }
}

/// A server's TLS context, replaceable while it runs: new connections use the newest.
final class TLSServerContexts: @unchecked Sendable {
    struct Set {
        let primary: TLSContext
        let byName: [String: TLSContext]
    }

    private let current: Lock<Set?> = Lock(nil)
    private let configuration: Lock<TLSServerConfiguration>

    init(_ c: TLSServerConfiguration) throws(RuntimeError) {
        self.configuration = Lock(c)
        try self.reload(c)
    }

    /// The context new connections start with (SNI may switch them to another).
    var context: TLSContext { self.current.withLock { $0!.primary } }

    func reload(_ c: TLSServerConfiguration?) throws(RuntimeError) {
        let config = c ?? self.configuration.withLock { $0 }
        let primary = try TLSContext.server(config)
        var byName: [String: TLSContext] = [:]
        for (name, files) in config.certificatesByName {
            var one = config
            one.certificateChainFile = files.certificateChainFile
            one.privateKeyFile = files.privateKeyFile
            byName[name.lowercased()] = try TLSContext.server(one)
        }
        if !byName.isEmpty { petrel_ssl_ctx_set_sni(primary.ctx, sniCallback, Unmanaged.passUnretained(self).toOpaque()) }
        self.current.withLock { $0 = Set(primary: primary, byName: byName) }
        self.configuration.withLock { $0 = config }
    }

    /// The context for a name the client sent: an exact entry, else a one-label wildcard.
    func context(forName name: String) -> TLSContext? {
        let n = name.lowercased()
        return self.current.withLock { set -> TLSContext? in
            guard let set else { return nil }
            if let exact = set.byName[n] { return exact }
            guard let dot = n.firstIndex(of: ".") else { return nil }
            return set.byName["*" + n[dot...]]
        }
    }
}

/// OpenSSL's SNI callback: switches the connection to the certificate for the name it sent.
private let sniCallback: @convention(c) (OpaquePointer?, UnsafeMutablePointer<Int32>?, UnsafeMutableRawPointer?) -> Int32 = { ssl, _, arg in
    guard let ssl, let arg, let name = SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name) else { return SSL_TLSEXT_ERR_OK }
    let contexts = Unmanaged<TLSServerContexts>.fromOpaque(arg).takeUnretainedValue()
    if let ctx = contexts.context(forName: String(cString: name)) { _ = SSL_set_SSL_CTX(ssl, ctx.ctx) }
    return SSL_TLSEXT_ERR_OK
}

/// One TLS session over memory BIOs: ciphertext in with `feed`, plaintext out with `read`;
/// plaintext in with `write`, ciphertext out with `takeOutput`. No sockets.
final class TLSSession {
    let ssl: OpaquePointer
    private let rbio: OpaquePointer
    private let wbio: OpaquePointer
    /// Keeps the context alive as long as the session (SSL holds a reference too).
    private let context: TLSContext
    let isServer: Bool

    enum ReadResult {
        case data(Int)
        case needMore
        /// The peer sent close_notify, or the transport ended.
        case closed
        case failed(String)
    }

    init(context: TLSContext, server: Bool, hostname: String? = nil, verifyHostname: Bool = true) throws(RuntimeError) {
        guard let ssl = SSL_new(context.ctx), let rbio = BIO_new(BIO_s_mem()), let wbio = BIO_new(BIO_s_mem()) else {
            throw TLSContext.error("SSL_new")
        }
        SSL_set_bio(ssl, rbio, wbio)  // the SSL owns both BIOs now
        self.ssl = ssl
        self.rbio = rbio
        self.wbio = wbio
        self.context = context
        self.isServer = server
        if server {
            SSL_set_accept_state(ssl)
        } else {
            SSL_set_connect_state(ssl)
            // SNI is not sent for IP literals (RFC 6066 §3).
            let isAddress = hostname.map { SocketAddress(numericHost: $0, port: 0) != nil } ?? true
            guard petrel_ssl_client_setup(ssl, isAddress ? nil : hostname) == 1 else { throw TLSContext.error("SNI/ALPN") }
            if let name = hostname, verifyHostname {
                let ok = isAddress ? X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl), name) : SSL_set1_host(ssl, name)
                guard ok == 1 else { throw TLSContext.error("hostname \(name)") }
            }
        }
    }

    deinit { SSL_free(self.ssl) }

    var handshakeComplete: Bool { SSL_is_init_finished(self.ssl) == 1 }

    /// Ciphertext from the peer.
    func feed(_ bytes: UnsafeRawBufferPointer) {
        guard bytes.count > 0 else { return }
        _ = BIO_write(self.rbio, bytes.baseAddress, Int32(bytes.count))
    }

    /// Runs the handshake as far as the input allows, and reads plaintext.
    func read(into buffer: UnsafeMutableRawBufferPointer) -> ReadResult {
        ERR_clear_error()
        let n = SSL_read(self.ssl, buffer.baseAddress, Int32(min(buffer.count, Int(Int32.max))))
        if n > 0 { return .data(Int(n)) }
        switch SSL_get_error(self.ssl, n) {
        case SSL_ERROR_WANT_READ, SSL_ERROR_WANT_WRITE: return .needMore
        case SSL_ERROR_ZERO_RETURN: return .closed
        default: return .failed(self.failureText())
        }
    }

    /// Encrypts plaintext; returns how much was taken (0 while the handshake is not done), or
    /// nil on failure.
    func write(_ bytes: UnsafeRawBufferPointer) -> Int? {
        guard bytes.count > 0 else { return 0 }
        ERR_clear_error()
        let n = SSL_write(self.ssl, bytes.baseAddress, Int32(min(bytes.count, 1 << 20)))
        if n > 0 { return Int(n) }
        switch SSL_get_error(self.ssl, n) {
        case SSL_ERROR_WANT_READ, SSL_ERROR_WANT_WRITE: return 0
        default: return nil
        }
    }

    /// Starts the handshake (a client's ClientHello) without application data.
    func startHandshake() {
        ERR_clear_error()
        _ = SSL_do_handshake(self.ssl)
    }

    /// Queues close_notify.
    func shutdown() {
        ERR_clear_error()
        _ = SSL_shutdown(self.ssl)
    }

    var pendingOutput: Int { Int(BIO_ctrl_pending(self.wbio)) }

    /// Moves the ciphertext waiting to be sent to the end of `out`.
    func takeOutput(into out: inout [UInt8]) {
        let n = self.pendingOutput
        guard n > 0 else { return }
        let start = out.count
        out.append(contentsOf: repeatElement(0, count: n))
        let got = out.withUnsafeMutableBytes { BIO_read(self.wbio, $0.baseAddress! + start, Int32(n)) }
        out.removeLast(n - Int(max(0, got)))
    }

    /// Why the session failed: the certificate check's reason when that is what failed.
    func failureText() -> String {
        let verify = SSL_get_verify_result(self.ssl)
        if verify != X509_V_OK {
            return "certificate verify failed: \(String(cString: X509_verify_cert_error_string(verify)))"
        }
        return TLSContext.lastErrorText()
    }
}
