import Petrel

/// An async echo on `/echo` and a feed on `/feed`: a ticker publishes a price to the topic
/// `ticks` every `interval`; a feed client gets every tick after the event id it last saw
/// (`?last_event_id=N`), replayed from the topic's ring, then live.
public struct AsyncFeed: Sendable {
    public let server: WebSocketServer
    public let interval: Duration

    public init(host: String = "127.0.0.1", port: UInt16 = 0, interval: Duration = .milliseconds(100)) {
        var config = WebSocketServer.Configuration(host: host, port: port)
        config.threads = 1
        config.topicPolicies["ticks"] = WebSocketServer.TopicPolicy(replayCapacity: 256)
        self.interval = interval
        self.server = WebSocketServer(configuration: config) { inbound, outbound, context in
            switch context.path {
            case "/echo":
                for try await message in inbound { try await outbound.send(message) }
            case "/feed":
                if !context.subscribe(to: "ticks", after: context.lastEventID ?? 0) {
                    // The ring no longer holds everything after that id: start from now.
                    context.subscribe(to: "ticks")
                }
                // Topic messages go out from the loop; the handler only waits for the close.
                for try await _ in inbound {}
            default:
                outbound.close(code: .policyViolation, reason: "no such path")
            }
        }
    }

    /// Runs the server and the ticker until the calling task is cancelled (or the server is
    /// stopped); returns once both have ended. The server then gets `gracePeriod` to close.
    public func run(gracePeriod: Duration = .seconds(2)) async throws {
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { await self.tick() }
            try await self.server.run(gracePeriod: gracePeriod)
            // The server ended (a cancel, a stop, a signal): so does the ticker.
            group.cancelAll()
        }
    }

    /// Publishes a price every `interval` until cancelled.
    func tick() async {
        var price = 100.0
        var step: UInt64 = 0
        while !Task.isCancelled {
            try? await Task.sleep(for: self.interval)
            guard self.server.isRunning, !Task.isCancelled else { continue }
            step &+= 1
            price += step % 3 == 0 ? -0.25 : 0.5
            _ = try? self.server.publish(.text("{\"symbol\":\"PTRL\",\"price\":\(price)}"), to: "ticks")
        }
    }
}
