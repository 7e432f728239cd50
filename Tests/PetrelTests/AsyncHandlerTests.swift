import Glibc
@testable import Petrel
import Testing

/// The structured-concurrency API: a server whose connections are child tasks of `run()`, the
/// bounded inbound sequence, `outbound.send` that waits, and cancellation of both sides.
@Suite("Swift async handlers")
struct AsyncHandlerTests {
    static func configuration() -> WebSocketServer.Configuration {
        var config = WebSocketServer.Configuration(host: "127.0.0.1", port: 0)
        config.threads = 1
        config.options.pingInterval = 0
        // Uncompressed: the backpressure tests count bytes on the wire (16 KiB of one byte
        // value would deflate to a few dozen).
        config.compression = nil
        return config
    }

    /// Starts `server.run()` in a task and waits for the port.
    static func running(_ server: WebSocketServer) async throws -> Task<Void, any Error> {
        let task = Task { try await server.run(gracePeriod: .milliseconds(500)) }
        for _ in 0..<500 where !server.isRunning { try await Task.sleep(for: .milliseconds(10)) }
        try #require(server.isRunning)
        return task
    }

    /// A socket connected to 127.0.0.1:port, or nil.
    static func connected(port: UInt16) -> Int32? {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_port = port.bigEndian
        addr.sin_addr.s_addr = inet_addr("127.0.0.1")
        let size = socklen_t(MemoryLayout<sockaddr_in>.size)
        let rc = withUnsafeBytes(of: addr) { connect(fd, $0.baseAddress!.assumingMemoryBound(to: sockaddr.self), size) }
        if rc != 0 {
            close(fd)
            return nil
        }
        return fd
    }

    /// Runs `body` on a thread of its own, started before this returns (a task could wait for a
    /// cooperative-pool thread; under a busy run that wait outlasted the client's handshake
    /// timeout). Join it with `pthread_join` once the test is done with it.
    static func startThread(_ body: @escaping @Sendable () -> Void) -> pthread_t {
        final class Job {
            let run: () -> Void
            init(_ run: @escaping () -> Void) { self.run = run }
        }
        let job = Unmanaged.passRetained(Job(body)).toOpaque()
        var thread = pthread_t()
        let rc = pthread_create(&thread, nil, { p in
            Unmanaged<Job>.fromOpaque(p!).takeRetainedValue().run()
            return nil
        }, job)
        precondition(rc == 0, "pthread_create: \(rc)")
        return thread
    }

    /// A socket listening on 127.0.0.1 that nobody accepts on, and its port.
    static func listener() -> (Int32, UInt16)? {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_addr.s_addr = inet_addr("127.0.0.1")
        let size = socklen_t(MemoryLayout<sockaddr_in>.size)
        guard withUnsafeBytes(of: addr, { bind(fd, $0.baseAddress!.assumingMemoryBound(to: sockaddr.self), size) }) == 0,
              listen(fd, 4) == 0 else {
            close(fd)
            return nil
        }
        var bound = sockaddr_in()
        var length = size
        let rc = withUnsafeMutableBytes(of: &bound) { getsockname(fd, $0.baseAddress!.assumingMemoryBound(to: sockaddr.self), &length) }
        guard rc == 0 else {
            close(fd)
            return nil
        }
        return (fd, UInt16(bigEndian: bound.sin_port))
    }

    @Test("an async echo: the handler's return closes with 1000; cancelling run() stops the server within the grace")
    func echoAndCancel() async throws {
        let server = WebSocketServer(configuration: Self.configuration()) { inbound, outbound, context in
            for try await message in inbound {
                if case .text("bye") = message { return }
                try await outbound.send(message)
            }
        }
        let task = try await Self.running(server)
        let url = "ws://127.0.0.1:\(server.port)/echo"
        let code = try await WebSocketClient.connect(to: url) { inbound, outbound, client in
            try await outbound.send(.text("hi"))
            try await outbound.send(.binary([1, 2, 3]))
            var it = inbound.makeAsyncIterator()
            #expect(try await it.next() == .text("hi"))
            #expect(try await it.next() == .binary([1, 2, 3]))
            try await outbound.send(.text("bye"))
            #expect(try await it.next() == nil)
            return client.closeCode
        }
        #expect(code == .normalClosure)

        // A client that stays: cancelling the server's task closes it with 1001 and run() returns.
        let ws = try await WebSocketClient.connect(to: url)
        let clock = ContinuousClock()
        let began = clock.now
        task.cancel()
        try await task.value
        let took = clock.now - began
        #expect(took < .milliseconds(1_500), "run() returned \(took) after the cancel (grace 500 ms)")
        #expect(!server.isRunning)
        for try await _ in ws.inbound {}
        #expect(ws.closeCode == .goingAway)
    }

    @Test("dropping a client closes its connection; a server runs once (a second run() throws, the first still stops)")
    func dropAndRunTwice() async throws {
        let ended = AsyncStream<String>.makeStream()
        let server = WebSocketServer(configuration: Self.configuration()) { inbound, _, _ in
            do {
                for try await _ in inbound {}
                ended.continuation.yield("ended")
            } catch {
                ended.continuation.yield("threw")
            }
        }
        let task = try await Self.running(server)
        await #expect(throws: PetrelError.self) { try await server.run() }
        do {
            let ws = try await WebSocketClient.connect(to: "ws://127.0.0.1:\(server.port)/")
            try await ws.outbound.send(.text("hi"))
        }
        // The client is gone: its inbound's end closed the connection (1001), which ends the
        // handler's inbound without an error.
        let outcome = try await Self.first(ended.stream, within: .seconds(3))
        #expect(outcome == "ended")
        task.cancel()
        try await task.value
        #expect(!server.isRunning)
    }

    /// The first element of `stream`, or nil after `limit`.
    static func first<T: Sendable>(_ stream: AsyncStream<T>, within limit: Duration) async throws -> T? {
        try await withThrowingTaskGroup(of: T?.self) { group in
            group.addTask {
                var it = stream.makeAsyncIterator()
                return await it.next()
            }
            group.addTask {
                try await Task.sleep(for: limit)
                return nil
            }
            let r = try await group.next() ?? nil
            group.cancelAll()
            return r
        }
    }

    @Test("a handler that throws closes its connection with 1011; the server goes on")
    func handlerThrows() async throws {
        struct Boom: Error {}
        let server = WebSocketServer(configuration: Self.configuration()) { inbound, _, _ in
            for try await _ in inbound { throw Boom() }
        }
        let task = try await Self.running(server)
        defer { task.cancel() }
        for _ in 0..<2 {
            let ws = try await WebSocketClient.connect(to: "ws://127.0.0.1:\(server.port)/")
            try await ws.outbound.send(.text("x"))
            for try await _ in ws.inbound {}
            #expect(ws.closeCode == .internalError)
        }
    }

    @Test("a handler that does not read stops the server reading (TCP pushes back); every message then arrives in order")
    func inboundBackpressure() async throws {
        let gate = AsyncStream<Void>.makeStream()
        let peak = AsyncStream<Int>.makeStream()
        let total = 300
        let server = WebSocketServer(configuration: Self.configuration(), inboundLimits: InboundLimits(highWaterMessages: 4)) { inbound, _, _ in
            var g = gate.stream.makeAsyncIterator()
            await g.next()
            var n = 0
            for try await message in inbound {
                guard case .binary(let b) = message, b.count == 16_384, Int(b[0]) == n % 256 else { throw WebSocketError.closed }
                n += 1
                if n == total { break }
            }
            peak.continuation.yield(inbound.flow.peakMessages)
        }
        let task = try await Self.running(server)
        defer { task.cancel() }
        var config = WebSocketClient.Configuration()
        config.options.maxBackpressure = 64 * 1024
        let ws = try await WebSocketClient.connect(to: "ws://127.0.0.1:\(server.port)/", configuration: config)
        let sender = Task {
            for i in 0..<total { try await ws.outbound.send(.binary([UInt8](repeating: UInt8(i % 256), count: 16_384))) }
        }
        // The handler reads nothing for a while: the server holds at most the high-water mark
        // plus what one read of the socket brought (64 KiB: 4 messages).
        try await Task.sleep(for: .milliseconds(300))
        gate.continuation.yield()
        try await sender.value
        var it = peak.stream.makeAsyncIterator()
        let most = try #require(await it.next())
        #expect(most <= 4 + 5, "the server's inbound held \(most) messages for a handler that did not read")
        ws.close()
    }

    @Test("outbound.send waits while a client that does not read is full, then completes; the client's inbound is bounded too")
    func outboundWaits() async throws {
        let finished = AsyncStream<Int>.makeStream()
        var config = Self.configuration()
        config.options.maxBackpressure = 64 * 1024
        let server = WebSocketServer(configuration: config) { _, outbound, _ in
            // 16 MB: more than the kernel's socket buffers hold for a peer that does not read
            // (about 4 MB here), so the handler must wait for the client to read.
            for i in 0..<1_000 {
                try await outbound.send(.binary([UInt8](repeating: UInt8(i % 256), count: 16_384)))
            }
            finished.continuation.yield(1_000)
            try await Task.sleep(for: .seconds(30))
        }
        let task = try await Self.running(server)
        defer { task.cancel() }
        let ws = try await WebSocketClient.connect(
            to: "ws://127.0.0.1:\(server.port)/", inboundLimits: InboundLimits(highWaterMessages: 8))
        // Not reading: the handler cannot have sent 16 MB into the client's 8-message inbound.
        try await Task.sleep(for: .milliseconds(300))
        let early = Task { () -> Int? in
            var done = finished.stream.makeAsyncIterator()
            return await done.next()
        }
        try await Task.sleep(for: .milliseconds(200))
        early.cancel()
        #expect(await early.value == nil, "the handler sent everything while the client read nothing")
        #expect(ws.inbound.flow.peakMessages <= 8 + 5, "the client's inbound held \(ws.inbound.flow.peakMessages) messages")
        var n = 0
        for try await message in ws.inbound {
            guard case .binary(let b) = message, Int(b[0]) == n % 256 else { break }
            n += 1
            if n == 1_000 { break }
        }
        #expect(n == 1_000)
        ws.close()
    }

    @Test("topics, event ids and event streams from the async API")
    func topicsAndEventStreams() async throws {
        var config = Self.configuration()
        config.eventStreamPaths = ["/events"]
        config.topicPolicies["news"] = WebSocketServer.TopicPolicy(replayCapacity: 16)
        let streamEnded = AsyncStream<Bool>.makeStream()
        let server = WebSocketServer(configuration: config) { inbound, outbound, context in
            if context.isEventStream {
                try await outbound.send("hello", eventID: 7)
                context.subscribe(to: "news")
                // A browser going away ends an event stream's inbound without an error.
                var ended = false
                do {
                    for try await _ in inbound {}
                    ended = true
                } catch {}
                streamEnded.continuation.yield(ended)
                return
            }
            context.subscribe(to: "news", after: context.lastEventID ?? 0)
            for try await _ in inbound {}
        }
        let task = try await Self.running(server)
        defer { task.cancel() }
        _ = try server.publish(.text("one"), to: "news")
        let ws = try await WebSocketClient.connect(to: "ws://127.0.0.1:\(server.port)/?last_event_id=0")
        var it = ws.inbound.makeAsyncIterator()
        #expect(try await it.next() == .text("one"))
        _ = try server.publish(.text("two"), to: "news")
        #expect(try await it.next() == .text("two"))
        ws.close()

        // The event stream: a raw HTTP GET.
        let fd = try #require(Self.connected(port: server.port))
        let request = Array("GET /events HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n\r\n".utf8)
        _ = request.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
        var text = ""
        var buffer = [UInt8](repeating: 0, count: 4096)
        for _ in 0..<50 where !text.contains("id: 7") {
            let n = read(fd, &buffer, buffer.count)
            if n <= 0 { break }
            text += String(decoding: buffer[..<n], as: UTF8.self)
        }
        #expect(text.contains("id: 7") && text.contains("data: hello"))
        close(fd)
        #expect(try await Self.first(streamEnded.stream, within: .seconds(3)) == true)
    }

    @Test("cancelling a connect that waits for a handshake answer throws CancellationError at once")
    func connectCancelled() async throws {
        // A listener that never accepts: the TCP connect completes, the handshake never does.
        let (fd, port) = try #require(Self.listener())
        defer { close(fd) }
        let attempt = Task { try await WebSocketClient.connect(to: "ws://127.0.0.1:\(port)/") }
        try await Task.sleep(for: .milliseconds(200))
        let clock = ContinuousClock()
        let began = clock.now
        attempt.cancel()
        await #expect(throws: CancellationError.self) { _ = try await attempt.value }
        #expect(clock.now - began < .milliseconds(500))
    }

    @Test("a refusal whose body stops short (the server closes) still reports the status and what came")
    func refusalCutShort() async throws {
        let (fd, port) = try #require(Self.listener())
        defer { close(fd) }
        // A thread of its own, started now: a task that accepts could wait for a pool thread
        // past the client's handshake timeout (seen under AddressSanitizer in CI).
        let server = Self.startThread {
            let c = accept(fd, nil, nil)
            // The whole request first, and the close as a FIN with nothing unread: a close with
            // unread bytes would be a reset, which may discard what the client has not read yet.
            var request: [UInt8] = []
            var buffer = [UInt8](repeating: 0, count: 4096)
            while !request.reversed().starts(with: Array("\n\r\n\r".utf8)) {
                let n = read(c, &buffer, buffer.count)
                if n <= 0 { break }
                request += buffer[..<n]
            }
            let answer = Array("HTTP/1.1 503 Service Unavailable\r\nContent-Length: 100\r\n\r\nbusy".utf8)
            _ = answer.withUnsafeBytes { write(c, $0.baseAddress, $0.count) }
            shutdown(c, Int32(SHUT_WR))
            while read(c, &buffer, buffer.count) > 0 {}
            close(c)
        }
        do {
            _ = try await WebSocketClient.connect(to: "ws://127.0.0.1:\(port)/")
            Issue.record("the connect succeeded")
        } catch let e as PetrelError {
            #expect(e.httpStatus == 503, "\(e)")
            #expect(e.responseBody == Array("busy".utf8), "\(e)")
        }
        pthread_join(server, nil)  // it ends once the client has closed its socket
    }

    @Test("a refused handshake's status and body reach the Swift caller")
    func refusal() async throws {
        let server = WebSocketServer(configuration: Self.configuration()) { _, _, _ in }
        server.handlers.onUpgrade = { _ in .reject(status: 401, body: "token expired") }
        let task = try await Self.running(server)
        defer { task.cancel() }
        do {
            _ = try await WebSocketClient.connect(to: "ws://127.0.0.1:\(server.port)/")
            Issue.record("the connect succeeded")
        } catch let e as PetrelError {
            #expect(e.httpStatus == 401)
            // The server's error bodies end with a line feed.
            #expect(String(decoding: e.responseBody, as: UTF8.self) == "token expired\n")
        }
    }
}
