import Foundation
import Glibc
import PetrelCore
@testable import PetrelRuntime
import Synchronization
import Testing

extension RuntimeTests {
    @Suite("Bad input at the socket level: the right status or close code, and the server goes on")
    struct BadInputTests {
        /// After each abuse, a fresh client must still be served.
        func stillServes(_ server: Server) throws {
            let c = try TestClient.connect("ws://127.0.0.1:\(server.port)/")
            c.send("alive")
            #expect(c.receive() == .text("alive"))
            c.connection.close()
        }

        @Test("garbage instead of a handshake gets 400 and the connection closed")
        func garbage() throws {
            let server = try startEchoServer()
            defer { server.stop(grace: 100) }
            let raw = try RawSocket(port: server.port)
            raw.write([0x16, 0x03, 0x01, 0x00, 0xA5, 0x01] + Array("\r\n\r\n".utf8))
            let r = raw.read()
            #expect(String(decoding: r.bytes, as: UTF8.self).hasPrefix("HTTP/1.1 400"))
            #expect(r.eof)
            try self.stillServes(server)
        }

        @Test("a plain GET without Upgrade gets 426 with Upgrade: websocket")
        func notUpgrade() throws {
            let server = try startEchoServer()
            defer { server.stop(grace: 100) }
            let raw = try RawSocket(port: server.port)
            raw.write("GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            let text = String(decoding: raw.read().bytes, as: UTF8.self)
            #expect(text.hasPrefix("HTTP/1.1 426") && text.contains("Upgrade: websocket"))
        }

        @Test("a handshake dribbled one byte at a time is cut at the handshake timeout")
        func slowloris() throws {
            let server = try startEchoServer { c, _ in
                c.options.handshakeTimeout = 600
                c.timerResolution = 50
            }
            defer { server.stop(grace: 100) }
            let raw = try RawSocket(port: server.port)
            let start = Date()
            var cut = false
            for b in Array("GET / HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\n".utf8) {
                raw.write([b])
                let r = raw.read(timeout: 0.1)
                if r.eof || !r.bytes.isEmpty {
                    #expect(String(decoding: r.bytes, as: UTF8.self).hasPrefix("HTTP/1.1 408") || r.bytes.isEmpty)
                    cut = true
                    break
                }
            }
            let elapsed = Date().timeIntervalSince(start)
            #expect(cut)
            #expect(elapsed > 0.5 && elapsed < 2.0, "cut after \(elapsed) s")
            try self.stillServes(server)
        }

        @Test("10,000 header fields get 431")
        func manyHeaders() throws {
            let server = try startEchoServer()
            defer { server.stop(grace: 100) }
            let raw = try RawSocket(port: server.port)
            var req = "GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            for i in 0..<10_000 { req += "X-\(i): y\r\n" }
            raw.write(req + "\r\n")
            #expect(String(decoding: raw.read().bytes, as: UTF8.self).hasPrefix("HTTP/1.1 431"))
            try self.stillServes(server)
        }

        @Test("a request head over 16 KiB gets 431")
        func headTooLarge() throws {
            let server = try startEchoServer()
            defer { server.stop(grace: 100) }
            let raw = try RawSocket(port: server.port)
            raw.write("GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + String(repeating: "y", count: 20_000) + "\r\n\r\n")
            #expect(String(decoding: raw.read().bytes, as: UTF8.self).hasPrefix("HTTP/1.1 431"))
            try self.stillServes(server)
        }

        /// The close code and reason of the first server frame, after a handshake and `frames`.
        func closeAfter(_ server: Server, extensions: String = "", _ frames: [UInt8]) throws -> (UInt16, String)? {
            let raw = try RawSocket(port: server.port)
            let head = raw.handshake(extra: extensions)
            #expect(head.hasPrefix("HTTP/1.1 101"))
            raw.write(frames)
            let r = raw.read()
            guard let (op, payload) = serverFrame(r.bytes), op == 0x8, payload.count >= 2 else { return nil }
            return (UInt16(payload[0]) << 8 | UInt16(payload[1]), String(decoding: payload.dropFirst(2), as: UTF8.self))
        }

        @Test("a message over the limit in fragments gets 1009 when the fragment that crosses it starts")
        func messageTooBig() throws {
            let server = try startEchoServer { c, _ in c.options.session.maxMessageSize = 1000 }
            defer { server.stop(grace: 100) }
            let frames = clientFrame(0x2, [UInt8](repeating: 1, count: 600), fin: false) + clientFrame(0x0, [UInt8](repeating: 2, count: 600))
            let close = try closeAfter(server, frames)
            #expect(close?.0 == 1009 && close?.1 == "message exceeds 1000 bytes", "\(String(describing: close))")
        }

        @Test("a compressed message that inflates past the limit gets 1009")
        func inflatedTooBig() throws {
            let server = try startEchoServer { c, _ in c.options.session.maxMessageSize = 10_000 }
            defer { server.stop(grace: 100) }
            // 1 MB of zeros compresses to about 1 KB: a small bomb.
            let zeros = [UInt8](repeating: 0, count: 1_000_000)
            let serverStyle = zeros.withUnsafeBytes {
                PerMessageDeflate.encodeStandaloneFrame(.binary, $0, windowBits: 15, options: DeflateOptions(), pool: ZlibPool())
            }
            guard let (_, compressed) = serverFrame(serverStyle) else {
                Issue.record("no frame")
                return
            }
            var frame = clientFrame(0x2, compressed)
            frame[0] |= 0x40  // RSV1: compressed
            let close = try closeAfter(server, extensions: "Sec-WebSocket-Extensions: permessage-deflate\r\n", frame)
            #expect(close?.0 == 1009, "\(String(describing: close))")
        }

        @Test("a 1 GiB frame length announced gets close 1009 at once")
        func hugeFrame() throws {
            let server = try startEchoServer()
            defer { server.stop(grace: 100) }
            let raw = try RawSocket(port: server.port)
            #expect(raw.handshake().hasPrefix("HTTP/1.1 101"))
            raw.write(Array(clientFrame(0x2, [], length: 1 << 30).prefix(14)))
            let r = raw.read()
            guard let (op, payload) = serverFrame(r.bytes) else {
                Issue.record("no close frame")
                return
            }
            #expect(op == 0x8)
            #expect(payload.prefix(2) == [0x03, 0xF1])  // 1009
            #expect(String(decoding: payload.dropFirst(2), as: UTF8.self) == "frame exceeds 16777216 bytes")
            #expect(r.eof)
            try self.stillServes(server)
        }

        @Test("an unmasked frame gets close 1002 with its reason")
        func unmasked() throws {
            let server = try startEchoServer()
            defer { server.stop(grace: 100) }
            let raw = try RawSocket(port: server.port)
            _ = raw.handshake()
            raw.write([0x81, 0x02, 0x68, 0x69])
            let (op, payload) = serverFrame(raw.read().bytes)!
            #expect(op == 0x8 && payload.prefix(2) == [0x03, 0xEA])
            #expect(String(decoding: payload.dropFirst(2), as: UTF8.self) == "client frame not masked")
        }

        @Test("a client that never reads: the buffer limit holds and others are still served")
        func neverReads() throws {
            let server = try startEchoServer { c, _ in c.options.maxBackpressure = 256 * 1024 }
            defer { server.stop(grace: 100) }
            let raw = try RawSocket(port: server.port)
            _ = raw.handshake()
            // Send 64 MiB of echo requests without reading a byte of the echoes.
            let chunk = clientFrame(0x2, [UInt8](repeating: 9, count: 64 * 1024))
            let writer = Thread {
                for _ in 0..<1024 { raw.write(chunk) }
            }
            writer.start()
            Thread.sleep(forTimeInterval: 1.0)
            let connection = server.loops.flatMap { $0.registry.withLock { Array($0.values) } }.first!
            // What the server holds for it stays near the limit (plus one read's worth), however much was sent.
            #expect(connection.bufferedAmount < 256 * 1024 + EventLoop.readBufferSize + 128 * 1024, "buffered \(connection.bufferedAmount)")
            try self.stillServes(server)
            shutdown(raw.fd, Int32(SHUT_RDWR))
        }

        @Test("over the connection limit, a request gets 503")
        func connectionLimit() throws {
            let server = try startEchoServer { c, _ in c.maxConnections = 2 }
            defer { server.stop(grace: 100) }
            let a = try TestClient.connect("ws://127.0.0.1:\(server.port)/")
            let b = try TestClient.connect("ws://127.0.0.1:\(server.port)/")
            let raw = try RawSocket(port: server.port)
            #expect(raw.handshake().hasPrefix("HTTP/1.1 503"))
            a.connection.close()
            _ = a.waitClosed()
            _ = b
            #expect(waitUntil { server.connectionCount <= 1 })
            #expect(raw.handshake().isEmpty)  // that socket is closed
            try self.stillServes(server)
        }
    }

    @Suite("Timers, keepalive, shutdown and leaks")
    struct LifecycleTests {
        @Test("ping/pong measures a round-trip time; a peer that never answers is closed with 1011")
        func keepalive() throws {
            let server = try startEchoServer { c, _ in
                c.options.pingInterval = 200
                c.options.pongTimeout = 300
                c.options.closeTimeout = 300
                c.timerResolution = 50
            }
            defer { server.stop(grace: 100) }
            let client = try TestClient.connect("ws://127.0.0.1:\(server.port)/")
            let serverSide = { server.loops.flatMap { $0.registry.withLock { Array($0.values) } } }
            #expect(waitUntil { serverSide().first?.roundTripTime != nil })
            _ = client
            // A raw peer that ignores pings.
            let raw = try RawSocket(port: server.port)
            _ = raw.handshake()
            let r = raw.read(timeout: 3)
            let frames = String(decoding: r.bytes, as: UTF8.self)
            #expect(frames.contains("no pong within 300 ms"))
        }

        @Test("an idle connection is closed after the idle timeout with 1001")
        func idle() throws {
            let server = try startEchoServer { c, _ in
                c.options.idleTimeout = 300
                c.timerResolution = 50
            }
            defer { server.stop(grace: 100) }
            let client = try TestClient.connect("ws://127.0.0.1:\(server.port)/")
            #expect(client.waitClosed(timeout: 3) == .closed(1001, "idle for 300 ms"))
        }

        @Test("stop sends 1001 to every peer and returns within the grace period")
        func gracefulStop() throws {
            let server = try startEchoServer()
            let clients = try (0..<20).map { _ in try TestClient.connect("ws://127.0.0.1:\(server.port)/") }
            let start = Date()
            server.stop(grace: 2_000)
            #expect(Date().timeIntervalSince(start) < 2.5)
            for c in clients { #expect(c.waitClosed() == .closed(1001, "server shutting down")) }
            #expect(server.connectionCount == 0)
        }

        @Test("starting and stopping servers leaves no thread behind")
        func noThreadLeak() throws {
            // The loop threads of the servers this test starts must be gone once each has stopped.
            // (Counting every thread of the process is flaky: the test runner's Dispatch workers
            // and other suites' servers come and go.)
            var loopThreads: [Int32] = []
            for _ in 0..<5 {
                let server = try startEchoServer { c, _ in c.threads = 4 }
                let c = try TestClient.connect("ws://127.0.0.1:\(server.port)/")
                c.send("x")
                #expect(c.receive() == .text("x"))
                #expect(waitUntil { server.loopKernelThreadIDs.count == 4 })
                loopThreads += server.loopKernelThreadIDs
                server.stop(grace: 100)
            }
            let alive = loopThreads.filter { access("/proc/self/task/\($0)", F_OK) == 0 }
            #expect(loopThreads.count == 20 && alive.isEmpty, "loop threads still running: \(alive)")
        }

        @Test("after 10,000 connections open and close, the fd count is back where it started")
        func noFDLeak() throws {
            let server = try startEchoServer()
            defer { server.stop(grace: 100) }
            // Warm up the client loop and the server's first connection.
            let warm = try TestClient.connect("ws://127.0.0.1:\(server.port)/")
            warm.connection.close()
            _ = warm.waitClosed()
            #expect(waitUntil { server.connectionCount == 0 })
            let before = openFileDescriptorCount()
            for i in 0..<10_000 {
                let raw = try RawSocket(port: server.port)
                if i % 3 == 0 {
                    _ = raw.handshake()
                    raw.write(clientFrame(0x8, [0x03, 0xE8]))
                    _ = raw.read(timeout: 2)
                } else if i % 3 == 1 {
                    _ = raw.handshake()  // then an abrupt close
                } else {
                    raw.write("GET / HT")  // half a handshake, then gone
                }
            }
            #expect(waitUntil(timeout: 10) { server.connectionCount == 0 }, "still open: \(server.connectionCount)")
            // Not above where it started (other suites run beside this one and may close their own).
            #expect(openFileDescriptorCount() <= before, "fds: \(before) -> \(openFileDescriptorCount())")
        }
    }
}
