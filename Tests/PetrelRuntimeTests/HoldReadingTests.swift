import Foundation
import Glibc
import PetrelCore
@testable import PetrelRuntime
import Testing

extension RuntimeTests {
    /// `holdReading`: the application's own flow control. While held, nothing more is read, TCP
    /// pushes back until the sender's send buffer is over its limit, and letting go delivers
    /// everything, in order.
    @Suite("Holding reading")
    struct HoldReadingTests {
        @Test("a held connection reads nothing, pushes back on the sender, and delivers all in order when let go")
        func holdAndRelease() throws {
            let received = Lock<[Int]>([])
            let opened = Lock<Connection?>(nil)
            let server = try startEchoServer { _, h in
                h.onOpen = { c in
                    c.holdReading(true)  // on the loop thread: in force at once
                    opened.withLock { $0 = c }
                }
                h.onMessage = { _, _, payload in
                    let n = Int(String(decoding: payload.prefix(8), as: UTF8.self).trimmingCharacters(in: .whitespaces)) ?? -1
                    received.withLock { $0.append(n) }
                }
            }
            defer { server.stop(grace: 100) }
            var config = ClientConfiguration()
            config.compression = nil
            config.options.maxBackpressure = 256 * 1024
            let client = try TestClient.connect("ws://127.0.0.1:\(server.port)/", configuration: config)
            #expect(waitUntil { opened.withLock { $0 != nil } })
            let filler = [UInt8](repeating: 0x61, count: 16 * 1024 - 8)
            var sent = 0
            var pushedBack = false
            // The socket buffers on both sides fill, then the client's own queue: its sends are
            // refused once that is over 256 KiB. Bounded: 64 MiB would mean nothing pushed back.
            while sent < 4096 {
                let head = Array(String(sent).padding(toLength: 8, withPad: " ", startingAt: 0).utf8)
                let message = head + filler
                let status = message.withUnsafeBytes { client.connection.send(.binary, $0) }
                if status == .backpressure {
                    pushedBack = true
                    break
                }
                #expect(status == .ok)
                sent += 1
                if sent % 64 == 0 { usleep(1_000) }
            }
            #expect(pushedBack, "the sender was never pushed back")
            usleep(200_000)
            #expect(received.withLock { $0.isEmpty }, "messages were read while held")
            opened.withLock { $0 }!.holdReading(false)  // from another thread: queued to the loop
            #expect(waitUntil(timeout: 10) { received.withLock { $0.count } == sent })
            #expect(received.withLock { $0 } == Array(0..<sent))
        }

        @Test("closing a held connection still reads the peer's close frame: a clean 1000, not a timeout")
        func closeWhileHeld() throws {
            let closed = Lock<(UInt16, Double)?>(nil)
            let server = try startEchoServer { c, h in
                c.options.closeTimeout = 5_000
                h.onOpen = { c in
                    c.holdReading(true)
                    c.close(code: .normalClosure, reason: "bye")
                    c.holdReading(true)  // refused once the close has begun
                }
                h.onClose = { _, code, _ in closed.withLock { $0 = (code.rawValue, Date().timeIntervalSince1970) } }
            }
            defer { server.stop(grace: 100) }
            let started = Date().timeIntervalSince1970
            let client = try TestClient.connect("ws://127.0.0.1:\(server.port)/")
            #expect(client.waitClosed() == .closed(1000, "bye"))
            #expect(waitUntil { closed.withLock { $0 != nil } })
            let (code, at) = closed.withLock { $0 }!
            #expect(code == 1000)
            #expect(at - started < 2, "the close waited for the close timeout")
        }

        @Test("a held connection whose peer resets is closed at once (no loop spinning on the error)")
        func resetWhileHeld() throws {
            let closed = Lock<UInt16?>(nil)
            let server = try startEchoServer { _, h in
                h.onOpen = { c in c.holdReading(true) }
                h.onClose = { _, code, _ in closed.withLock { $0 = code.rawValue } }
            }
            defer { server.stop(grace: 100) }
            // A socket of the test's own (RawSocket closes its descriptor when it goes): the
            // handshake by hand, then a close with SO_LINGER 0, which sends a reset.
            let address = SocketAddress(numericHost: "127.0.0.1", port: server.port)!
            let fd = socket(address.family, Int32(SOCK_STREAM.rawValue), 0)
            #expect(address.withSockaddr { Glibc.connect(fd, $0, $1) } == 0)
            let request = "GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                + "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
            _ = Array(request.utf8).withUnsafeBytes { Glibc.send(fd, $0.baseAddress, $0.count, 0) }
            var response = [UInt8](repeating: 0, count: 1024)
            let n = response.withUnsafeMutableBytes { Glibc.recv(fd, $0.baseAddress, $0.count, 0) }
            #expect(n > 12 && String(decoding: response[0..<12], as: UTF8.self) == "HTTP/1.1 101")
            usleep(50_000)
            var linger = Glibc.linger(l_onoff: 1, l_linger: 0)
            _ = setsockopt(fd, SOL_SOCKET, SO_LINGER, &linger, socklen_t(MemoryLayout<Glibc.linger>.size))
            Glibc.close(fd)
            #expect(waitUntil(timeout: 3) { closed.withLock { $0 } != nil })
            #expect(closed.withLock { $0 } == 1006)
        }

        @Test("extra request headers reach the server; reserved names and control characters are refused")
        func extraHeaders() throws {
            let seen = Lock<String?>(nil)
            let server = try startEchoServer { _, h in
                h.onUpgrade = { req in
                    seen.withLock { $0 = req.request.headers["X-Token"] }
                    return .accept(subprotocol: nil, userData: 0)
                }
            }
            defer { server.stop(grace: 100) }
            let url = "ws://127.0.0.1:\(server.port)/"
            var config = ClientConfiguration()
            config.headers = [HTTPField(name: "X-Token", value: "abc def")]
            _ = try TestClient.connect(url, configuration: config)
            #expect(seen.withLock { $0 } == "abc def")
            for bad in [HTTPField(name: "Host", value: "evil"), HTTPField(name: "sec-websocket-key", value: "x"),
                        HTTPField(name: "Sec-WebSocket-Accept", value: "x"),
                        HTTPField(name: "X-A", value: "1\r\nX-B: 2"), HTTPField(name: "Bad Name", value: "1"),
                        HTTPField(name: "", value: "1")] {
                config.headers = [bad]
                #expect(throws: RuntimeError.self) { try TestClient.connect(url, configuration: config) }
            }
        }
    }
}
