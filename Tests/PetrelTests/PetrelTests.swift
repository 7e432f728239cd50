import Petrel
import Testing

@Suite("Swift async API")
struct PetrelAPITests {
    @Test("an async client talks to a closure server; inbound ends at close")
    func roundTrip() async throws {
        var config = WebSocketServer.Configuration(host: "127.0.0.1", port: 0)
        config.threads = 1
        let server = WebSocketServer(
            configuration: config,
            onOpen: { c in c.subscribe(to: "news") },
            onMessage: { c, m in
                if case .text("bye") = m { return c.close(code: WebSocketCloseCode(4002), reason: "see you") }
                try? c.send(m)
            })
        try server.start()
        defer { server.stop(grace: .milliseconds(100)) }
        let ws = try await WebSocketClient.connect(to: "ws://127.0.0.1:\(server.port)/chat")
        try ws.send(.text("hi"))
        try ws.send(.binary([1, 2, 3]))
        var iterator = ws.inbound.makeAsyncIterator()
        #expect(try await iterator.next() == .text("hi"))
        #expect(try await iterator.next() == .binary([1, 2, 3]))
        // onOpen subscribed on the loop thread before the 101 went out, so this is delivered.
        #expect(server.publish(.text("extra"), to: "news") == 1)
        #expect(try await iterator.next() == .text("extra"))
        try ws.send(.text("bye"))
        #expect(try await iterator.next() == nil)
        #expect(ws.closeCode == WebSocketCloseCode(4002))
        #expect(ws.closeReason == "see you")
        #expect(throws: WebSocketError.closed) { try ws.send(.text("late")) }
    }

    @Test("connecting to nothing throws")
    func refused() async {
        await #expect(throws: (any Error).self) { _ = try await WebSocketClient.connect(to: "ws://127.0.0.1:1/") }
        await #expect(throws: PetrelError.self) { _ = try await WebSocketClient.connect(to: "http://nope/") }
    }
}
