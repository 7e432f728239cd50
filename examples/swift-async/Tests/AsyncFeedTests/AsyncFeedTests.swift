import AsyncFeed
import Petrel
import Testing

@Suite("the async example")
struct AsyncFeedTests {
    @Test("echo and feed work; cancelling the task that runs them stops the server within its grace period")
    func echoFeedAndCancel() async throws {
        let feed = AsyncFeed(interval: .milliseconds(20))
        let grace = Duration.milliseconds(500)
        let running = Task { try await feed.run(gracePeriod: grace) }
        for _ in 0..<500 where !feed.server.isRunning { try await Task.sleep(for: .milliseconds(10)) }
        try #require(feed.server.isRunning)
        let base = "ws://127.0.0.1:\(feed.server.port)"

        let echoed = try await WebSocketClient.connect(to: "\(base)/echo") { inbound, outbound, _ in
            try await outbound.send(.text("ping"))
            var it = inbound.makeAsyncIterator()
            return try await it.next()
        }
        #expect(echoed == .text("ping"))

        // Five ticks in order, then a second client resumes after the third and gets the rest.
        let ticks = try await WebSocketClient.connect(to: "\(base)/feed") { inbound, _, _ in
            var seen: [String] = []
            for try await case .text(let t) in inbound {
                seen.append(t)
                if seen.count == 5 { break }
            }
            return seen
        }
        #expect(ticks.count == 5 && ticks.allSatisfy { $0.contains("\"symbol\":\"PTRL\"") })

        let feedClient = try await WebSocketClient.connect(to: "\(base)/feed")
        var it = feedClient.inbound.makeAsyncIterator()
        #expect(try await it.next() != nil)

        let clock = ContinuousClock()
        let began = clock.now
        running.cancel()
        try await running.value
        let took = clock.now - began
        #expect(took < grace + .milliseconds(500), "stopped \(took) after the cancel")
        #expect(!feed.server.isRunning)
        // The feed client was told the server is going away.
        while try await it.next() != nil {}
        #expect(feedClient.closeCode == .goingAway)
    }
}
