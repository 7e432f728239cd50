import Dispatch
import Foundation
import Glibc
import PetrelCore
@testable import PetrelRuntime
import Synchronization

/// A message or an end, as a test client saw it.
enum Received: Equatable, Sendable {
    case text(String)
    case binary([UInt8])
    case closed(UInt16, String)
}

/// A blocking wrapper over the runtime's client: connect, send, receive with timeouts.
final class TestClient: @unchecked Sendable {
    private let lock = NSLock()
    private var inbox: [Received] = []
    private let arrived = DispatchSemaphore(value: 0)
    private let opened = DispatchSemaphore(value: 0)
    private var failure: RuntimeError?
    var connection: Connection!

    static func connect(_ url: String, configuration: ClientConfiguration = ClientConfiguration(), timeout: Double = 5) throws -> TestClient {
        let c = TestClient()
        let handlers = Handlers()
        handlers.onOpen = { _ in c.opened.signal() }
        handlers.onMessage = { _, kind, payload in
            c.push(kind == .text ? .text(String(decoding: payload, as: UTF8.self)) : .binary(Array(payload)))
        }
        handlers.onClose = { _, code, reason in c.push(.closed(code.rawValue, reason)) }
        handlers.onConnectFailed = { _, error in
            c.lock.withLock { c.failure = error }
            c.opened.signal()
        }
        c.connection = try ClientConnector.connect(to: url, configuration: configuration, handlers: handlers)
        guard c.opened.wait(timeout: .now() + timeout) == .success else { throw RuntimeError(.connectTimeout, "test: no open") }
        if let f = c.lock.withLock({ c.failure }) { throw f }
        return c
    }

    private func push(_ r: Received) {
        self.lock.withLock { self.inbox.append(r) }
        self.arrived.signal()
    }

    func receive(timeout: Double = 5) -> Received? {
        guard self.arrived.wait(timeout: .now() + timeout) == .success else { return nil }
        return self.lock.withLock { self.inbox.removeFirst() }
    }

    @discardableResult
    func send(_ text: String) -> SendStatus { self.connection.send(text: text) }

    @discardableResult
    func send(_ bytes: [UInt8]) -> SendStatus { self.connection.send(binary: bytes) }

    /// Receives until the close arrives; returns it.
    func waitClosed(timeout: Double = 5) -> Received? {
        let end = Date().addingTimeInterval(timeout)
        while Date() < end {
            guard let r = self.receive(timeout: end.timeIntervalSinceNow) else { return nil }
            if case .closed = r { return r }
        }
        return nil
    }
}

/// A plain blocking TCP socket, for feeding a server what no WebSocket client would send.
final class RawSocket: @unchecked Sendable {
    let fd: Int32

    /// `receiveBuffer`: a small SO_RCVBUF (set before connecting) makes the server's socket
    /// fill up soon when this end does not read.
    init(port: UInt16, host: String = "127.0.0.1", receiveBuffer: Int32? = nil) throws {
        let addr = SocketAddress(numericHost: host, port: port)!
        self.fd = socket(addr.family, Int32(SOCK_STREAM.rawValue), 0)
        if var size = receiveBuffer {
            _ = setsockopt(self.fd, SOL_SOCKET, SO_RCVBUF, &size, socklen_t(MemoryLayout<Int32>.size))
        }
        let rc = addr.withSockaddr { Glibc.connect(self.fd, $0, $1) }
        if rc != 0 { throw RuntimeError.system(.connect, "raw connect") }
    }

    deinit { Glibc.close(self.fd) }

    func write(_ bytes: [UInt8]) {
        var off = 0
        while off < bytes.count {
            let n = bytes[off...].withUnsafeBytes { Glibc.send(self.fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            if n <= 0 { return }
            off += n
        }
    }

    func write(_ s: String) { self.write(Array(s.utf8)) }

    /// Reads until EOF, `until` is satisfied, or `timeout` seconds pass.
    func read(timeout: Double = 5, until: ([UInt8]) -> Bool = { _ in false }) -> (bytes: [UInt8], eof: Bool) {
        var out: [UInt8] = []
        let end = Date().addingTimeInterval(timeout)
        var buf = [UInt8](repeating: 0, count: 65536)
        while Date() < end {
            var pfd = pollfd(fd: self.fd, events: Int16(POLLIN), revents: 0)
            let ms = Int32(max(1, end.timeIntervalSinceNow * 1000))
            if poll(&pfd, 1, ms) <= 0 { break }
            let n = buf.withUnsafeMutableBytes { Glibc.recv(self.fd, $0.baseAddress, $0.count, 0) }
            if n <= 0 { return (out, true) }
            out += buf[0..<n]
            if until(out) { break }
        }
        return (out, false)
    }

    /// Performs a WebSocket handshake by hand; returns the response head.
    func handshake(path: String = "/", extra: String = "") -> String {
        self.write("GET \(path) HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\(extra)\r\n")
        let r = self.read(until: { $0.count >= 4 && $0.suffix(4) == [13, 10, 13, 10] })
        return String(decoding: r.bytes, as: UTF8.self)
    }
}

/// A masked client frame.
func clientFrame(_ opcode: UInt8, _ payload: [UInt8], fin: Bool = true, length: UInt64? = nil) -> [UInt8] {
    var out: [UInt8] = [(fin ? 0x80 : 0) | opcode]
    let len = length ?? UInt64(payload.count)
    if len < 126 {
        out.append(0x80 | UInt8(len))
    } else if len <= 0xFFFF {
        out += [0x80 | 126, UInt8(len >> 8), UInt8(len & 0xFF)]
    } else {
        out.append(0x80 | 127)
        for s in stride(from: 56, through: 0, by: -8) { out.append(UInt8((len >> UInt64(s)) & 0xFF)) }
    }
    let key: [UInt8] = [1, 2, 3, 4]
    out += key
    for (i, b) in payload.enumerated() { out.append(b ^ key[i % 4]) }
    return out
}

/// Parses the first server frame of `bytes`: (opcode, payload).
func serverFrame(_ bytes: [UInt8]) -> (UInt8, [UInt8])? {
    guard bytes.count >= 2 else { return nil }
    var len = Int(bytes[1] & 0x7F)
    var at = 2
    if len == 126 {
        guard bytes.count >= 4 else { return nil }
        len = Int(bytes[2]) << 8 | Int(bytes[3])
        at = 4
    } else if len == 127 {
        guard bytes.count >= 10 else { return nil }
        len = bytes[2..<10].reduce(0) { $0 << 8 | Int($1) }
        at = 10
    }
    guard bytes.count >= at + len else { return nil }
    return (bytes[0] & 0x0F, Array(bytes[at..<at + len]))
}

/// A started echo server on an ephemeral port; stopped by `stop()`.
func startEchoServer(_ configure: (inout ServerConfiguration, Handlers) -> Void = { _, _ in }) throws -> Server {
    var configuration = ServerConfiguration(host: "127.0.0.1", port: 0)
    configuration.threads = 2
    let handlers = Handlers()
    handlers.onMessage = { c, kind, payload in c.send(kind, payload) }
    configure(&configuration, handlers)
    let server = Server(configuration: configuration, handlers: handlers)
    try server.start()
    return server
}

func waitUntil(timeout: Double = 5, _ condition: () -> Bool) -> Bool {
    let end = Date().addingTimeInterval(timeout)
    while Date() < end {
        if condition() { return true }
        usleep(2_000)
    }
    return condition()
}
