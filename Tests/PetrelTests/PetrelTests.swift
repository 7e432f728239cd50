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
        #expect(try! server.publish(.text("extra"), to: "news") == 1)
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

    @Test("topics from the Swift API: statistics, replay after an id, and a connection's counters and ping")
    func topicsAndCounters() async throws {
        var config = WebSocketServer.Configuration(host: "127.0.0.1", port: 0)
        config.threads = 1
        config.topicPolicies["news"] = WebSocketServer.TopicPolicy(replayCapacity: 8)
        config.options.pingInterval = 0
        let opened = AsyncStream<WebSocketConnection>.makeStream()
        let server = WebSocketServer(configuration: config, onOpen: { c in opened.continuation.yield(c) }, onMessage: { _, _ in })
        try server.start()
        defer { server.stop(grace: .milliseconds(100)) }
        #expect(try! server.publish(.text("one"), to: "news") == 1)
        #expect(try! server.publish(.binary([2]), to: "news") == 2)
        #expect(server.statistics(topic: "news").published == 2)
        #expect(server.statistics(topic: "news").lastEventID == 2)
        let after1 = try #require(server.replay(topic: "news", after: 1))
        #expect(after1.count == 1 && after1[0].eventID == 2 && after1[0].message == .binary([2]))
        #expect(server.replay(topic: "news", after: 0)?.map(\.message) == [.text("one"), .binary([2])])
        let ws = try await WebSocketClient.connect(to: "ws://127.0.0.1:\(server.port)/")
        var connections = opened.stream.makeAsyncIterator()
        let c = try #require(await connections.next())
        #expect(c.bufferedAmount == 0)
        #expect(c.roundTripTime == nil)
        c.ping()
        for _ in 0..<200 where c.roundTripTime == nil { try await Task.sleep(for: .milliseconds(10)) }
        #expect(c.roundTripTime != nil)
        #expect(c.droppedMessages == 0 && c.coalescedMessages == 0)
        ws.close()
    }

    @Test("openConnections: the connections open now, from any thread; a closed one leaves")
    func openConnections() async throws {
        var config = WebSocketServer.Configuration(host: "127.0.0.1", port: 0)
        config.threads = 2
        config.options.pingInterval = 0
        let server = WebSocketServer(configuration: config, onOpen: { _ in }, onMessage: { _, _ in })
        try server.start()
        defer { server.stop(grace: .milliseconds(100)) }
        #expect(server.openConnections.isEmpty)
        var clients: [WebSocketClient] = []
        for _ in 0..<3 { clients.append(try await WebSocketClient.connect(to: "ws://127.0.0.1:\(server.port)/")) }
        let open = server.openConnections
        #expect(open.count == 3)
        #expect(Set(open.map(\.id)).count == 3)
        clients[0].close()
        for _ in 0..<300 where server.openConnections.count != 2 { try await Task.sleep(for: .milliseconds(10)) }
        #expect(server.openConnections.count == 2)
        for c in clients.dropFirst() { c.close() }
    }
}
