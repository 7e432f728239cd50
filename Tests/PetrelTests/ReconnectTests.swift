import Petrel
import Synchronization
import Testing

/// A count shared with the server's loop thread.
private final class Counter: Sendable {
    let value = Atomic<Int>(0)
    func next() -> Int { self.value.add(1, ordering: .relaxed).newValue }
}

/// The states a client reported, gathered through a stream (onState is synchronous).
private struct StateLog: Sendable {
    let stream: AsyncStream<ReconnectState>
    let continuation: AsyncStream<ReconnectState>.Continuation
    init() { (self.stream, self.continuation) = AsyncStream.makeStream() }
    func record(_ s: ReconnectState) { self.continuation.yield(s) }
    func all() async -> [ReconnectState] {
        self.continuation.finish()
        var out: [ReconnectState] = []
        for await s in self.stream { out.append(s) }
        return out
    }
}

@Suite("Swift reconnecting client")
struct ReconnectTests {
    /// A server that greets each connection with the id it resumes after and restarts the
    /// first two (1012); on /policy it closes with 1008.
    private static func restartingServer() throws -> WebSocketServer {
        var config = WebSocketServer.Configuration(host: "127.0.0.1", port: 0)
        config.threads = 1
        let opens = Counter()
        let server = WebSocketServer(
            configuration: config,
            onOpen: { c in
                let n = opens.next()
                let after = c.lastEventID.map { "after \($0) q=\(c.queryParameter("last_event_id") ?? "-")" } ?? "after none"
                try? c.send(.text(after))
                if c.path == "/policy" { return c.close(code: .policyViolation, reason: "not you") }
                if n <= 2 { c.close(code: WebSocketCloseCode(1012), reason: "restarting") }
            },
            onMessage: { _, _ in })
        try server.start()
        return server
    }

    @Test("a lost connection comes back after the policy's delay, resuming after the last event id; a close the server means ends the sequence")
    func restarts() async throws {
        let server = try Self.restartingServer()
        defer { server.stop(grace: .milliseconds(100)) }
        let resume = ResumePoint()
        let states = StateLog()
        var greetings: [String] = []
        var turns = 0
        for try await ws in WebSocketClient.connections(
            to: "ws://127.0.0.1:\(server.port)/feed", policy: .init(initialDelay: 20, maxDelay: 100), resume: resume,
            onState: { s in states.record(s) })
        {
            turns += 1
            do {
                for try await message in ws.inbound {
                    if case .text(let t) = message { greetings.append(t) }
                    resume.lastEventID = 7
                    if turns == 3 { ws.close(code: .goingAway) }  // the application's own close ends it, whatever the code
                }
            } catch {
                Issue.record("inbound threw \(error)")
            }
        }
        #expect(turns == 3)
        #expect(greetings == ["after none", "after 7 q=7", "after 7 q=7"])
        let seen = await states.all()
        #expect(seen.count == 8)
        #expect(seen.first == .open(attempt: 0) && seen.last == .closed(reason: "closed by the application with 1001"))
        #expect(seen.filter { if case .reconnecting(attempt: 1, _, let why) = $0 { return why.contains("1012") } else { return false } }.count == 2)
        #expect(seen.filter { $0 == .open(attempt: 1) }.count == 2)
    }

    @Test("a 1008 ends it at once; nothing listening: max attempts, then the error")
    func endings() async throws {
        let server = try Self.restartingServer()
        var turns = 0
        for try await ws in WebSocketClient.connections(to: "ws://127.0.0.1:\(server.port)/policy", policy: .init(initialDelay: 10)) {
            turns += 1
            for try await _ in ws.inbound {}
            #expect(ws.closeCode == .policyViolation)
        }
        #expect(turns == 1)

        let port = server.port
        let states = StateLog()
        let connections = WebSocketClient.connections(
            to: "ws://127.0.0.1:\(port)/feed", policy: .init(initialDelay: 10, maxDelay: 20, maxAttempts: 3),
            onState: { s in states.record(s) })
        var iterator = connections.makeAsyncIterator()
        let first = try #require(try await iterator.next())
        for try await _ in first.inbound {}  // restarted by the server (1012)
        server.stop(grace: .milliseconds(100))
        await #expect(throws: PetrelError.self) { _ = try await iterator.next() }
        let seen = await states.all()
        #expect(seen.filter { if case .connecting = $0 { return true } else { return false } }.count == 3)
        if case .closed(let why) = seen.last { #expect(why.hasPrefix("gave up after 3 attempts")) } else { Issue.record("no closed state: \(seen)") }
    }

    @Test("the policy: doubling delays within the bounds, jitter taken off, attempts bounded")
    func policy() {
        let p = WebSocketClient.ReconnectPolicy(initialDelay: 100, maxDelay: 1_000, jitter: 0.5, maxAttempts: 4)
        #expect((1...6).map { p.delay(attempt: $0, random: 0) } == [100, 200, 400, 800, 1_000, 1_000])
        #expect(p.delay(attempt: 3, random: 0.999) == 201)  // 400 less 0.5 × 0.999 of it (199.8, taken whole)
        #expect(p.allows(attempt: 4) && !p.allows(attempt: 5))
        #expect(WebSocketClient.ReconnectPolicy(maxDelay: 10).problem != nil)
        #expect(WebSocketClient.ReconnectPolicy(jitter: 2).problem != nil)
        #expect(WebSocketClient.ReconnectPolicy().problem == nil)
        #expect(WebSocketClient.ReconnectPolicy(initialDelay: 3_000_000, maxDelay: 3_600_000).delay(attempt: 60, random: 0) == 3_600_000)
    }

    @Test("which ends are tried again, and the resume URL")
    func classification() {
        typealias P = WebSocketClient.ReconnectPolicy
        #expect([1001, 1006, 1011, 1012, 1013, 1014].allSatisfy { P.reconnects(after: WebSocketCloseCode(UInt16($0))) })
        #expect(![1000, 1002, 1003, 1007, 1008, 1009, 1010, 4000].contains { P.reconnects(after: WebSocketCloseCode(UInt16($0))) })
        #expect(P.retries(PetrelError(.connect, "refused")))
        #expect(P.retries(PetrelError(.handshake, "busy", httpStatus: 503)))
        #expect(P.retries(PetrelError(.handshake, "slow down", httpStatus: 429)))
        #expect(P.retries(PetrelError(.handshake, "cut short")))
        #expect(!P.retries(PetrelError(.handshake, "forbidden", httpStatus: 403)))
        #expect(!P.retries(PetrelError(.tls, "certificate has expired")))
        #expect(P.resumeTarget("ws://h/feed", lastEventID: 5) == "ws://h/feed?last_event_id=5")
        #expect(P.resumeTarget("ws://h/feed?a=1&last_event_id=2&b", lastEventID: 9) == "ws://h/feed?a=1&b&last_event_id=9")
        #expect(P.resumeTarget("ws://h/?last_event_id#frag", lastEventID: 3) == "ws://h/?last_event_id=3")
    }
}
